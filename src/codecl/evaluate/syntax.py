"""Whether generated code parses: Python with the interpreter's parser, the other CodeSearchNet
languages (JavaScript, Go, Java, PHP, Ruby) with tree-sitter.

Generated code is usually one function, and often a method lifted out of its class. A check that
only accepted whole programs would call every JavaScript or PHP method (and Java constructor) wrong,
so fragments are also tried inside the smallest wrapper that makes such a piece of code legal.
"""

from __future__ import annotations

import ast
import functools
import textwrap
import warnings
from typing import Iterable, Sequence

import tree_sitter_go
import tree_sitter_java
import tree_sitter_javascript
import tree_sitter_php
import tree_sitter_ruby
from tree_sitter import Language, Node, Parser

from codecl.errors import UserError

# The grammars are the versions the codebleu package parses with (see pyproject.toml). PHP's
# `language_php_only` reads PHP without the `<?php` tag that CodeSearchNet's functions lack.
TREE_SITTER_GRAMMARS = {
    "javascript": tree_sitter_javascript.language,
    "go": tree_sitter_go.language,
    "java": tree_sitter_java.language,
    "php": tree_sitter_php.language_php_only,
    "ruby": tree_sitter_ruby.language,
}
SUPPORTED_LANGUAGES = ("python", *TREE_SITTER_GRAMMARS)

# Wrappers that turn a fragment into a program. The newlines keep a trailing `//` comment from eating
# the closing brace.
# A method definition: `foo(a) {}`, `async foo() {}`, `get x() {}` (JavaScript); `public function f() {}`
# (PHP); a constructor `public Foo(int a) {}` (Java, whose tree-sitter grammar takes other methods as programs).
_CLASS_PREFIX, _CLASS_SUFFIX = "class _ {\n", "\n}"
# An object-literal property: `foo: function (a) {},`.
_OBJECT_PREFIX, _OBJECT_SUFFIX = "({\n", "\n})"
# Go and Ruby methods are top-level declarations, programs on their own.
_CLASS_MEMBER_LANGUAGES = ("javascript", "java", "php")


def is_valid_syntax(code: str, language: str) -> bool:
    """True when ``code`` parses without error in ``language`` (one of SUPPORTED_LANGUAGES).

    Python: ``ast.parse`` of the dedented code (methods arrive indented), with the grammar of the
    running interpreter, so Python 2 code such as ``print x`` is invalid.
    The others: the language's tree-sitter grammar, valid when the tree has no ERROR and no MISSING
    node, trying the code as a program, then (JavaScript, Java, PHP) as a class member, then (JavaScript)
    as an object-literal property. Empty or whitespace-only code is invalid.
    """
    if language not in SUPPORTED_LANGUAGES:
        raise UserError(
            f"unknown language {language!r} for syntax checking; "
            f"expected one of {', '.join(SUPPORTED_LANGUAGES)}"
        )
    if not code.strip():
        return False
    if language == "python":
        return _is_valid_python(code)
    return _is_valid_tree_sitter(code, language)


def syntax_validity(codes: Sequence[str], language: str) -> float:
    """Fraction in [0, 1] of ``codes`` for which ``is_valid_syntax`` holds."""
    if len(codes) == 0:
        raise UserError("no code to check; syntax validity over zero examples is undefined")
    return sum(is_valid_syntax(code, language) for code in codes) / len(codes)


def _is_valid_python(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like warn but parse; they are not our concern.
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(textwrap.dedent(code))
    # ValueError: null bytes. RecursionError and MemoryError: deeply nested generated garbage.
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _is_valid_tree_sitter(code: str, language: str) -> bool:
    parser = _parser(language)
    if _parses_cleanly(parser.parse(code.encode("utf-8")).root_node):
        return True
    if language not in _CLASS_MEMBER_LANGUAGES:
        return False
    as_class_member = (_CLASS_PREFIX + code + _CLASS_SUFFIX).encode("utf-8")
    root = parser.parse(as_class_member).root_node
    if _parses_cleanly(root) and _is_single_class_spanning(root, len(as_class_member)):
        return True
    if language != "javascript":
        return False
    as_object_property = (_OBJECT_PREFIX + code + _OBJECT_SUFFIX).encode("utf-8")
    root = parser.parse(as_object_property).root_node
    return _parses_cleanly(root) and _is_single_object_spanning(root, len(as_object_property))


# The two checks below make sure the wrapper's own braces enclose the whole fragment. Without them a
# fragment with unbalanced braces, such as `} x = 1; {`, would borrow the wrapper's braces and parse
# as a class followed by a statement and a block.


def _is_single_class_spanning(root: Node, text_length: int) -> bool:
    """The program is one class declaration running from the first byte to the last."""
    if root.named_child_count != 1:
        return False
    declaration = root.named_children[0]
    return declaration.type == "class_declaration" and declaration.end_byte == text_length


def _is_single_object_spanning(root: Node, text_length: int) -> bool:
    """The program is `( object )` with the object running from byte 1 to the byte before `)`."""
    node = root
    for expected_type in ("expression_statement", "parenthesized_expression", "object"):
        if node.named_child_count != 1 or node.named_children[0].type != expected_type:
            return False
        node = node.named_children[0]
    return node.start_byte == 1 and node.end_byte == text_length - 1


def _parses_cleanly(root: Node) -> bool:
    # has_error covers ERROR and MISSING nodes in the whole subtree; the walk double-checks it so
    # that a grammar or binding change cannot silently turn broken code valid.
    return not root.has_error and not any(node.is_error or node.is_missing for node in _walk(root))


def _walk(root: Node) -> Iterable[Node]:
    """Every node under ``root`` (named or not, MISSING included), depth first, no recursion."""
    cursor = root.walk()
    while True:
        yield cursor.node
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return


@functools.lru_cache(maxsize=None)
def _parser(language: str) -> Parser:
    # Building the Language and Parser costs far more than a parse, and a parser keeps no state
    # from one parse to the next.
    return Parser(Language(TREE_SITTER_GRAMMARS[language]()))


def _javascript_parser() -> Parser:
    """The JavaScript parser; `humaneval_js` checks whole programs with it."""
    return _parser("javascript")
