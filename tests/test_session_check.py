"""packaging/session_check.py, the real-Windows job's session, run here on Xvfb against agent.py.

Everything but its two Windows-only parts runs here: the relay, the scripted viewer, the
comparison of drawn updates with a screenshot, the click and the typed keys (into an xterm
instead of a PowerShell window) and the customer's Close (SIGTERM, which takes the agent's
Close path, instead of the tray menu; tests/test_wine.py ends the Windows exe's session through
its tray menu with packaging/close_from_tray.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "session_check.py"


@pytest.mark.x11
@pytest.mark.timeout(300)
def test_session_check_passes_a_whole_session_with_the_agent_from_source(xvfb, tmp_path):
    """The script connects, matches a screenshot, clicks, types and closes as the customer."""
    subprocess.run(["xsetroot", "-solid", "#3366cc"], check=True, timeout=10)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--source", "--out", str(out)], cwd=tmp_path,
        env={**os.environ, "DISPLAY": xvfb.name}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=280)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for proof in ("updates drawn match a screenshot", "landed there",
                  "arrived in the receiver", "ended by customer",
                  "ledger records it", "session check passed"):
        assert proof in result.stdout, output
    with Image.open(out / "drawn.png") as drawn, Image.open(out / "screenshot.png") as shot:
        assert drawn.size == shot.size == (xvfb.width, xvfb.height)


def test_session_check_refuses_a_missing_exe(tmp_path):
    """An exe that is not there is a one-line usage error, not a traceback."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--exe", str(tmp_path / "nothing.exe")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
