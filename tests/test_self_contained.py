"""The test suite ships with the code: it reads only files in the repository and imports
only offrl and its own helpers (never ``benchmarks/``), so a fresh clone runs it whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tests.shared_data as shared_data

TESTS = Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("*.py"))
OTHER_FILES = [p for p in TEST_FILES if p.name != Path(__file__).name]  # not this one


def test_every_vendored_data_path_exists() -> None:
    paths = [v for k, v in vars(shared_data).items() if k.isupper() and isinstance(v, Path)]
    assert len(paths) >= 5
    for path in paths:
        assert path.exists(), f"{path} is missing: tests/data/ must be complete in the repository"
        assert TESTS in path.resolve().parents, f"{path} is outside tests/"
    assert (shared_data.RLLIB_DATA / "README.md").exists()  # where each file came from


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_no_test_imports_the_benchmarks(path: Path) -> None:
    imported = _imported_modules(path)
    assert not [m for m in imported if m == "benchmarks" or m.startswith("benchmarks.")]


@pytest.mark.parametrize("path", OTHER_FILES, ids=[p.name for p in OTHER_FILES])
def test_no_test_names_a_machine_path_or_the_shared_folder(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for outside in ("/work/", "../shared", "shared/data", "Path.home()"):
        assert outside not in text, f"{path.name} reads {outside!r}, outside the repository"
