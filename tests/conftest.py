import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "codesearchnet"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test builds into its own cache, never the user's."""
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("codecl-cache")))


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"no CodeSearchNet fixtures at {FIXTURES}")
    return FIXTURES
