"""The project's packaging names every module it ships."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_top_level_module() -> None:
    """Every module beside agent.py is in pyproject's py-modules: one left out is missing from
    an installed copy (and from an editable install's import map), so `import agent` fails
    there with ModuleNotFoundError although it works from the checkout."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = settings["tool"]["setuptools"]["py-modules"]
    on_disk = sorted(path.stem for path in ROOT.glob("*.py"))
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))
