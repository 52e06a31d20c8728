"""agent_elevation's Win32 parts on real Windows (packaging/windows-ci.ps1 units; on Linux
these tests are skipped, their rules are tested in tests/test_agent_elevation.py): the input
desktop of a logged-in session with no prompt is "Default", and the hand-off file is made,
read back once and gone."""

from __future__ import annotations

import sys

import pytest

import agent_elevation

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Win32 only (real Windows CI)")
SECRET = "hX7-Qm2Lp9Xz4Vn7Tb1Wc6"


def test_the_input_desktop_without_a_prompt_is_the_default_one() -> None:
    """OpenInputDesktop names "Default" on the runner's desktop: no prompt is reported."""
    watch = agent_elevation.Win32DesktopWatch()
    assert watch.input_desktop_name() == "Default"
    assert not watch.secure()


def test_the_handoff_file_is_written_with_its_own_acl_and_removed_when_read() -> None:
    """The file made with the protected DACL holds the secret; reading it removes it."""
    path = agent_elevation.write_secret(SECRET)
    assert path.name.startswith(agent_elevation.HANDOFF_PREFIX)
    assert agent_elevation.read_secret(path) == SECRET
    assert not path.exists()
