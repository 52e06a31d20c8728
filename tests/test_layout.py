"""The test suite's own shape: shared code lives in tests/helpers, never in a test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, by its full dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_module_imports_another_or_conftest() -> None:
    """Test modules, helpers and fakes import tests.helpers or tests.fakes, never a test
    module or conftest (which would run its tests' module code twice under two names)."""
    offenders = []
    for path in [*TESTS.glob("*.py"), *TESTS.glob("helpers/*.py")]:
        for module in imported_modules(path):
            last = module.rsplit(".", 1)[-1]
            if last.startswith("test_") or last == "conftest":
                offenders.append(f"{path.relative_to(TESTS)} imports {module}")
    assert offenders == []
