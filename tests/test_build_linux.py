"""The Linux one-file binary built from build.spec, run on Xvfb against a real relay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import protocol as p
from tests.helpers.desktop import (
    BACKGROUND_NAME,
    Output,
    assert_background,
    find_window,
    pointer_location,
    require_tools,
    until,
    wait_for_file,
    wait_for_screen,
    window_geometry,
)
from tests.helpers.relay import ledger_csv
from tests.helpers.viewer import ScriptedViewer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.build, pytest.mark.x11]


# --- the test ---------------------------------------------------------------------------


def build_linux_binary() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build-linux.sh")], cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=540,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    binary = ROOT / "dist" / "linux" / "spotlight-support"
    assert binary.is_file()
    return binary


@pytest.mark.timeout(600)
def test_linux_binary_is_accepted_streams_the_screen_takes_keys_and_closes(
        xvfb, relay, tmp_path):
    """The frozen Linux agent streams the X screen, types into an xterm, and Close is billed."""
    require_tools("xterm", "xdotool", "xsetroot")
    binary = build_linux_binary()
    subprocess.run(["xsetroot", "-solid", BACKGROUND_NAME], check=True, timeout=10)
    typed = tmp_path / "typed.txt"
    title = f"spotlight-receiver-{os.getpid()}"
    xterm = subprocess.Popen(
        ["xterm", "-T", title, "-geometry", "40x8+640+360", "-e", "sh", "-c",
         f"cat > {typed}"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = None
    try:
        window = find_window(title, timeout=30)
        agent = subprocess.Popen(
            [str(binary), "--relay", relay.ws_url, "--technician", "david"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        output = Output(agent)
        asyncio.run(_drive_linux_agent(relay, agent, output, window, typed))
        assert agent.wait(timeout=15) == 0, output.text()
    finally:
        if agent is not None:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            output.wait()
        xterm.terminate()
        xterm.wait(timeout=10)

    rows = [row for row in ledger_csv(relay) if row.get("technician") == "david"]
    assert len(rows) == 1, rows
    assert rows[0]["ended_by"] == "customer", rows


async def _drive_linux_agent(relay, agent: subprocess.Popen, output: Output, window: str,
                             typed: Path) -> None:
    viewer = await ScriptedViewer.login(relay, "david", "david-pw")
    try:
        await viewer.accept_waiting()
        await viewer.take_control()
        await wait_for_screen(viewer)
        height = viewer.screens[viewer.monitor].height
        assert_background(viewer, 8, height - 8)

        x, y, width, height = window_geometry(window)
        centre = (x + width // 2, y + height // 2)
        await viewer.click(*centre)
        assert await until(lambda: pointer_location() == centre), pointer_location()
        await viewer.type_keys(("KeyH", "h"), ("KeyI", "i"), ("Enter", "Enter"))
        assert wait_for_file(typed, "hi\n") == "hi\n", output.text()

        agent.send_signal(signal.SIGTERM)  # takes the same path as Close in the tray menu
        ended = await viewer.expect(p.Ended, lambda m: m.session == viewer.session)
        assert ended.by == "customer", ended
    finally:
        await viewer.close()
