"""SECURITY.md's promise -> test map names only tests that exist, in the modules it says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
# `module.py::name` starts naming tests of a module; a bare `name` after it is in the same one
NAMED = re.compile(r"`(?:(?P<module>[\w/]+\.py)::)?(?P<name>[A-Za-z_]\w*)`|`(?P<file>[\w/]+\.py)`")


def promise_map() -> dict[str, list[tuple[str, str]]]:
    """Each row of the map: its promise -> [(module, test name or "" for a whole module)]."""
    text = (ROOT / "SECURITY.md").read_text()
    table = text[text.index("## How each promise is proven"):]
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("promise", "---"):
            continue
        named, module = [], ""
        for match in NAMED.finditer(cells[1]):
            if match["file"]:
                named.append((match["file"], ""))
                continue
            module = match["module"] or module
            assert module, f"{match['name']} names no module in the row {cells[0]!r}"
            named.append((module, match["name"]))
        rows[cells[0]] = named
    return rows


def defined_tests(module: Path) -> set[str]:
    """The test functions and classes a module defines (or assigns, as a hypothesis
    state machine's TestCase is)."""
    tree = ast.parse(module.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {name for name in names if name.startswith(("test_", "Test"))}


def test_every_test_the_security_map_names_exists() -> None:
    """Each promise names at least one test, and every module and test it names exists."""
    rows = promise_map()
    assert len(rows) >= 10, rows  # the table was found and read
    missing = []
    for promise, named in rows.items():
        assert named, f"the promise {promise!r} names no test"
        for module, name in named:
            path = ROOT / module if "/" in module else TESTS / module
            if not path.is_file():
                missing.append(f"{promise}: {module}")
            elif name and name not in defined_tests(path):
                missing.append(f"{promise}: {module}::{name}")
    assert missing == [], "SECURITY.md names tests that do not exist:\n" + "\n".join(missing)
