"""Synthetic Python and JavaScript sources with docstrings, for mining small corpora in tests."""

from pathlib import Path

VERBS = ["scale", "shift", "clip", "count", "merge", "filter", "collect", "render"]
NOUNS = ["values", "items", "rows", "names", "tokens", "scores"]
OPERATORS = ["+", "-", "*", "//", "%"]


def write_sources(root: Path, functions_per_language: int = 120) -> tuple[Path, Path]:
    """Write one Python and one JavaScript package of documented functions; return both folders.

    The miner splits by file, so each function has a file of its own, for every split to get some.
    """
    python_dir, javascript_dir = root / "py", root / "js"
    python_dir.mkdir(parents=True, exist_ok=True)
    javascript_dir.mkdir(parents=True, exist_ok=True)
    for i in range(functions_per_language):
        verb, noun, op = VERBS[i % len(VERBS)], NOUNS[i % len(NOUNS)], OPERATORS[i % len(OPERATORS)]
        python_lines = [
            f"def {verb}_{noun}_{i}(values, factor={i}):",
            f'    """{verb.capitalize()} the {noun} of the given values by {i}.',
            "",
            "    Returns a new list.",
            '    """',
            "    result = []",
            "    for value in values:",
            f"        result.append(value {op} factor)",
            "    return result",
            "",
            "",
        ]
        js_op = "/" if op == "//" else op
        javascript_lines = [
            "/**",
            f" * {verb.capitalize()} the {noun} of the given values by {i}.",
            " * @param {Array} values the input values",
            " */",
            f"function {verb}{noun.capitalize()}{i}(values) {{",
            "  var result = [];",
            "  for (var k = 0; k < values.length; k++) {",
            f"    result.push(values[k] {js_op} {i});",
            "  }",
            "  return result;",
            "}",
            "",
        ]
        (python_dir / f"library_{i}.py").write_text("\n".join(python_lines))
        (javascript_dir / f"library_{i}.js").write_text("\n".join(javascript_lines))
    return python_dir, javascript_dir
