"""Where codecl keeps what it builds once and reuses: mined corpora, npm tarballs, the tiny model."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$CODECL_CACHE`, else `$XDG_CACHE_HOME/codecl`, else `~/.cache/codecl`."""
    if os.environ.get("CODECL_CACHE"):
        return Path(os.environ["CODECL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "codecl"
