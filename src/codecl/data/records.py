"""One function and its documentation, with the fields of CodeSearchNet's original release.

Husain et al. 2019, "CodeSearchNet Challenge", and the release's README describe the fields:
https://github.com/github/CodeSearchNet#data-details
"""

import json
from dataclasses import dataclass, fields
from typing import Any

# A row is unusable without these: they are the model's input, its target, and the name that
# keys the deterministic split.
REQUIRED_KEYS = ("code", "docstring", "func_name")
TOKEN_LIST_KEYS = ("code_tokens", "docstring_tokens")


@dataclass(frozen=True)
class CodeRecord:
    """A function (`code`) paired with its documentation (`docstring`), as one CodeSearchNet row."""

    repo: str
    path: str
    func_name: str
    original_string: str
    language: str
    code: str
    code_tokens: list[str]
    docstring: str
    docstring_tokens: list[str]
    sha: str
    url: str
    partition: str

    def to_json(self) -> str:
        """One JSON line, non-ASCII kept as is (CodeSearchNet's files are UTF-8)."""
        # vars, not asdict: the same keys in the same order, without asdict's deep copy of the token lists
        # (6 times faster, and the miner writes some 40,000 records).
        return json.dumps(vars(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, row: dict[str, Any] | str) -> "CodeRecord":
        """Build from a release-schema row (a dict or one JSON line).

        Raises `ValueError` naming the key at fault when a required key is missing, a field has
        the wrong type, or `code` is empty. Optional string fields default to "" and token lists
        to [], except `original_string`, which defaults to `code`.
        """
        if isinstance(row, str):
            row = json.loads(row)
        if not isinstance(row, dict):
            raise ValueError(f"row is a JSON {type(row).__name__}, expected an object")
        for key in REQUIRED_KEYS:
            if key not in row:
                raise ValueError(f"missing key {key!r}")
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = row.get(field.name)
            if field.name in TOKEN_LIST_KEYS:
                value = [] if value is None else value
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise ValueError(f"key {field.name!r} is not a list of strings")
            else:
                if value is None:
                    value = row["code"] if field.name == "original_string" else ""
                if not isinstance(value, str):
                    raise ValueError(f"key {field.name!r} is a {type(value).__name__}, expected a string")
            values[field.name] = value
        if not values["code"].strip():
            raise ValueError("key 'code' is empty")
        return cls(**values)
