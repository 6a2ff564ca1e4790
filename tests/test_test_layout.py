"""The test tree itself: pytest imports test modules by basename (rootdir mode).

Two test files with the same name in different folders make collection fail
with "import file mismatch" on a fresh checkout (no __pycache__ to hide it).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def duplicate_basenames(root: Path) -> list[str]:
    """Basenames of ``test_*.py`` files found more than once below ``root``."""
    names = Counter(path.name for path in root.rglob("test_*.py"))
    return sorted(name for name, count in names.items() if count > 1)


def test_test_module_basenames_are_unique() -> None:
    assert duplicate_basenames(TESTS) == []


def test_the_check_finds_a_duplicate(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "test_same.py").write_text("")
    (tmp_path / "a" / "test_other.py").write_text("")
    assert duplicate_basenames(tmp_path) == ["test_same.py"]
