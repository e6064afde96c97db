"""Docstrings: finding them, removing them from code, and cutting them down to CodeSearchNet's summary.

CodeSearchNet (Husain et al. 2019, §2.1) keeps only the first paragraph of each function's
documentation as the query, and its Python `code` field still contains the docstring, so a model
asked to write code from a docstring must be given the code with the docstring taken out. In the other
five languages the documentation is the comment before the function, and `code` starts after it.
"""

import ast
import inspect
import re
import textwrap
import warnings
from functools import cache

import tree_sitter_javascript
import tree_sitter_python
from tree_sitter import Language, Node, Parser, Tree

GRAMMARS = {"python": tree_sitter_python.language, "javascript": tree_sitter_javascript.language}

# A paragraph ends at the first blank line; a JSDoc summary also ends where the tags begin.
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
TAG_LINE = re.compile(r"^\s*@\w")
SUMMARY_TOKEN = re.compile(r"\w+|[^\w\s]")
# Comments at the very start of a function's text: `/* ... */` blocks and `//` lines in the C family; PHP
# also has `#` lines (not `#[`, an attribute); Ruby has `#` lines and `=begin ... =end` blocks.
LEADING_C_COMMENT = re.compile(r"\A\s*(?:/\*.*?\*/|//[^\n]*)\s*", re.DOTALL)
LEADING_COMMENTS = {
    "javascript": LEADING_C_COMMENT,
    "java": LEADING_C_COMMENT,
    "go": LEADING_C_COMMENT,
    "php": re.compile(r"\A\s*(?:/\*.*?\*/|//[^\n]*|#(?!\[)[^\n]*)\s*", re.DOTALL),
    "ruby": re.compile(r"\A\s*(?:#[^\n]*|^=begin\b.*?^=end\b[^\n]*)\s*", re.DOTALL | re.MULTILINE),
}
# Only plain and raw string literals are docstrings; f-strings and bytes are not (PEP 257).
DOCSTRING_PREFIX = re.compile(r"\A[rRuU]?['\"]")


@cache
def parser_for(language: str) -> Parser:
    """A tree-sitter parser for "python" or "javascript", built once per process."""
    return Parser(Language(GRAMMARS[language]()))


def parse_source(source: bytes, language: str) -> Tree:
    """Parse source bytes; tree-sitter never fails, it marks what it cannot read as ERROR nodes."""
    return parser_for(language).parse(source)


def first_paragraph(docstring: str) -> str:
    """The summary CodeSearchNet keeps: text up to the first blank line or JSDoc `@tag` line, on one line."""
    paragraph = PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)[0]
    summary_lines = []
    for line in paragraph.splitlines():
        if TAG_LINE.match(line):
            break
        summary_lines.append(line)
    return " ".join(" ".join(summary_lines).split())


def summary_tokens(text: str) -> list[str]:
    """Words and single punctuation marks, e.g. "str->list" -> ["str", "-", ">", "list"]."""
    return SUMMARY_TOKEN.findall(text)


def clean_comment(comment: str) -> str:
    """A JavaScript comment's text without `/**`, `*/`, the leading ` * ` of each line, or `//`."""
    if comment.startswith("/*"):
        body = comment[2:-2] if comment.endswith("*/") else comment[2:]
        lines = [re.sub(r"^\s*\* ?", "", line) for line in body.lstrip("*!").splitlines()]
    else:
        lines = [re.sub(r"^\s*//+ ?", "", line) for line in comment.splitlines()]
    return textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip()


def python_docstring_statement(function: Node) -> Node | None:
    """The `expression_statement` holding a function's docstring: its body's first statement, if a string."""
    body = function.child_by_field_name("body")
    statements = [child for child in body.named_children if child.type != "comment"] if body else []
    if not statements or statements[0].type != "expression_statement":
        return None
    expression = statements[0].named_children
    if len(expression) != 1 or expression[0].type not in ("string", "concatenated_string"):
        return None
    if not DOCSTRING_PREFIX.match(expression[0].text.decode("utf-8", "replace")):
        return None
    return statements[0]


def python_docstring_text(statement: Node) -> str:
    """The docstring's value, indentation cleaned as `inspect.cleandoc` does (what `help()` shows)."""
    literal = statement.text.decode("utf-8", "replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in old docstrings only warn
        try:
            value = ast.literal_eval(literal)
        except (SyntaxError, ValueError):
            value = literal.strip("'\"rRuU")
    return inspect.cleandoc(value) if isinstance(value, str) else ""


def first_python_function(tree: Tree) -> Node | None:
    """The first `function_definition` in source order, e.g. the one a CodeSearchNet `code` string holds."""
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            return node
        stack.extend(reversed(node.children))
    return None


def strip_docstring(code: str, language: str) -> str:
    """The function's code without its documentation; everything else stays byte-identical.

    Python: remove the docstring statement and the lines it stood on, with the blank lines that
    separated it from the code; a body that was only a docstring becomes `pass` so it still parses.
    JavaScript, Java, Go, PHP and Ruby: CodeSearchNet's `code` starts after the documenting comment, so
    only comments at the very start are removed, if there are any (a no-op on CodeSearchNet's own data).
    """
    if language in LEADING_COMMENTS:
        return strip_leading_comments(code, LEADING_COMMENTS[language])
    if language != "python":
        raise ValueError(f"strip_docstring supports {', '.join(['python', *LEADING_COMMENTS])}, not {language!r}")
    source = code.encode("utf-8")
    function = first_python_function(parse_source(source, "python"))
    statement = python_docstring_statement(function) if function else None
    if statement is None:
        return code
    return remove_python_statement(source, statement).decode("utf-8")


def strip_leading_comments(code: str, leading_comment: re.Pattern) -> str:
    """`code` without the comments (and the whitespace around them) that it starts with."""
    stripped = code
    while match := leading_comment.match(stripped):
        if not match.group(0).strip():
            break
        stripped = stripped[match.end():]
    return stripped


def remove_python_statement(source: bytes, statement: Node) -> bytes:
    """`source` without `statement` (a docstring); see `strip_docstring` for what goes with it."""
    start, end = statement.start_byte, statement.end_byte
    siblings = [node for node in statement.parent.named_children if node.type != "comment"]
    if len(siblings) == 1:
        # A body that is only a docstring would be empty, which is not valid Python.
        return source[:start] + b"pass" + source[end:]
    line_start = source.rfind(b"\n", 0, start) + 1
    line_end = source.find(b"\n", end)
    line_end = len(source) if line_end == -1 else line_end
    rest_of_line = source[end:line_end].strip()
    if source[line_start:start].strip() or (rest_of_line and not rest_of_line.startswith(b"#")):
        # Shares its line with code, e.g. `"""Doc."""; x = 1`: remove the literal and its `;`.
        after = re.match(rb"[ \t]*;?[ \t]*", source[end:]).end()
        return source[:start] + source[end + after:]
    cut_end = line_end + 1
    while cut_end < len(source):
        next_end = source.find(b"\n", cut_end)
        if next_end == -1 or source[cut_end:next_end].strip():
            break
        cut_end = next_end + 1
    return source[:line_start] + source[cut_end:]
