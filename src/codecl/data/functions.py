"""Functions and their documentation in a source file, found by parsing it with tree-sitter.

Python functions keep their docstring; a JavaScript function's docstring is the block comment right
above it. Undocumented functions come back with an empty docstring, for the miner's filters to drop.
"""

from dataclasses import dataclass
from typing import Iterator

from tree_sitter import Node

from codecl.data.docstrings import (
    clean_comment, parse_source, python_docstring_statement, python_docstring_text, remove_python_statement,
)

# Block comments that are tool directives or licence banners, not documentation.
JS_NON_DOC_COMMENT = (b"/*!", b"/* eslint", b"/*eslint", b"/* global", b"/*global", b"/* jshint", b"/* istanbul")
JS_FUNCTION_TYPES = {"function_expression", "arrow_function", "generator_function", "function"}
# Leaves that tree-sitter splits further but CodeSearchNet keeps as one token.
WHOLE_TOKEN_TYPES = {"string", "template_string", "regex"}


@dataclass(frozen=True)
class FoundFunction:
    name: str  # "func", "Class.method", "exports.name"
    code: str  # as CodeSearchNet stores it: Python keeps its docstring, JavaScript omits its comment
    code_without_docstring: str
    docstring: str  # comment markers and indentation removed
    first_line: int
    last_line: int
    # What code_tokens() reads: tokenising every function was most of the miner's time, and it keeps few.
    node: Node
    source: bytes
    skipped: frozenset[tuple[int, int]]  # byte spans left out of the tokens: a Python docstring

    def code_tokens(self) -> tuple[str, ...]:
        return leaf_tokens(self.node, self.source, self.skipped)


def leaf_tokens(function: Node, source: bytes, skipped: frozenset[tuple[int, int]]) -> tuple[str, ...]:
    """Tree-sitter leaves of `function`, without comments or the nodes whose byte spans are `skipped`."""
    tokens, cursor = [], function.walk()
    while True:
        node = cursor.node
        span = (node.start_byte, node.end_byte)
        if node.type != "comment" and span not in skipped:
            if node.child_count == 0 or node.type in WHOLE_TOKEN_TYPES:
                if span[1] > span[0]:
                    tokens.append(source[span[0]:span[1]].decode("utf-8", "replace"))
            elif cursor.goto_first_child():
                continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return tuple(tokens)


def python_functions(source: bytes) -> Iterator[FoundFunction]:
    """Module-level functions and methods (decorated or not); like CodeSearchNet, not nested functions."""
    stack = [(parse_source(source, "python").root_node, "")]
    while stack:
        node, prefix = stack.pop()
        if node.type == "function_definition":
            yield python_function(node, prefix, source)
            continue
        if node.type == "class_definition":
            prefix = f"{prefix}{node.child_by_field_name('name').text.decode()}."
        stack.extend((child, prefix) for child in reversed(node.named_children))


def python_function(node: Node, prefix: str, source: bytes) -> FoundFunction:
    statement = python_docstring_statement(node)
    code = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
    docstring, code_without_docstring, skipped = "", code, frozenset()
    if statement is not None:
        docstring = python_docstring_text(statement)
        stripped = remove_python_statement(source, statement)
        shift = len(stripped) - len(source)
        code_without_docstring = stripped[node.start_byte:node.end_byte + shift].decode("utf-8", "replace")
        skipped = frozenset({(statement.start_byte, statement.end_byte)})
    return FoundFunction(
        name=prefix + node.child_by_field_name("name").text.decode(), code=code,
        code_without_docstring=code_without_docstring, docstring=docstring,
        first_line=node.start_point[0] + 1, last_line=node.end_point[0] + 1, node=node, source=source, skipped=skipped,
    )


def javascript_name_and_statement(node: Node) -> tuple[str, Node] | None:
    """The name a JavaScript function is known by, and the node its JSDoc comment would precede."""
    parent = node.parent
    if node.type in ("function_declaration", "generator_function_declaration"):
        name, statement = node.child_by_field_name("name").text.decode(), node
    elif node.type == "method_definition":
        name, statement = node.child_by_field_name("name").text.decode().strip("'\""), node
        owner = parent.parent if parent is not None and parent.type == "class_body" else None
        owner_name = owner.child_by_field_name("name") if owner is not None else None
        name = f"{owner_name.text.decode()}.{name}" if owner_name is not None else name
    elif node.type not in JS_FUNCTION_TYPES or parent is None:
        return None
    elif parent.type == "variable_declarator" and parent.child_by_field_name("name").type == "identifier":
        # The comment precedes the whole `const f = ...` declaration, so only its first declarator has one.
        if parent.parent.named_children[0] != parent:
            return None
        name, statement = parent.child_by_field_name("name").text.decode(), parent.parent
    elif parent.type == "assignment_expression" and parent.parent.type == "expression_statement":
        name, statement = "".join(parent.child_by_field_name("left").text.decode().split()), parent.parent
    elif parent.type == "pair":
        name, statement = parent.child_by_field_name("key").text.decode().strip("'\""), parent
    else:
        return None
    if statement.parent is not None and statement.parent.type == "export_statement":
        statement = statement.parent
    return name, statement


def javascript_functions(source: bytes) -> Iterator[FoundFunction]:
    """Named functions, methods and function values with the block comment right above them as docstring."""
    stack = [parse_source(source, "javascript").root_node]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.named_children))
        named = javascript_name_and_statement(node)
        if named is None:
            continue
        name, statement = named
        comment = statement.prev_named_sibling
        docstring = ""
        # "Right above": at most one blank line between, the style of express and mongoose.
        if (comment is not None and comment.type == "comment" and comment.end_point[0] >= statement.start_point[0] - 2
                and comment.text.startswith(b"/*") and not comment.text.startswith(JS_NON_DOC_COMMENT)):
            docstring = clean_comment(comment.text.decode("utf-8", "replace"))
        code = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
        yield FoundFunction(
            name=name, code=code, code_without_docstring=code, docstring=docstring,
            first_line=node.start_point[0] + 1, last_line=node.end_point[0] + 1, node=node, source=source,
            skipped=frozenset(),
        )
