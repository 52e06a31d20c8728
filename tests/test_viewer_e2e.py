"""The whole product on one machine: the real agent on Xvfb, the real relay, and the viewer in
chromium. The support person sees the X screen, types into an xterm and ends the session."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.browser import WAIT_S, Viewer
from tests.helpers.desktop import agent_from_source, xterm_running_cat

pytestmark = [pytest.mark.x11, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BACKGROUND = (0x2E, 0x7D, 0x5B)  # set with xsetroot; JPEG brings it back within a few levels


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run ./dev test, which installs it")


def wait_until(what: str, check, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def xterm_cat(xvfb, tmp_path):
    """An xterm running `cat > FILE` in the lower right of a solid-coloured X screen."""
    need("xsetroot")
    env = xvfb.env()
    colour = "#{:02x}{:02x}{:02x}".format(*BACKGROUND)
    subprocess.run(["xsetroot", "-solid", colour], env=env, check=True)
    typed = tmp_path / "typed.txt"
    with xterm_running_cat(env, typed, "spotlight-e2e", "50x8+160+120") as window:
        yield typed, window


@pytest.fixture
def real_agent(xvfb, relay, tmp_path):
    """agent.py from source, choosing david, with its tray reduced to log lines."""
    with agent_from_source(xvfb.env(), relay.ws_url, tmp_path / "agent.log") as process:
        yield process


def test_support_person_sees_types_into_and_ends_a_real_agent_session(
        browser, relay, xvfb, xterm_cat, real_agent):
    """Login, accept, the X screen on the canvas, typing into xterm, end, and the ledger row."""
    typed, (wx, wy, ww, wh) = xterm_cat
    viewer = Viewer(browser, relay).signed_in()
    item = viewer.page.locator("[data-testid=queue-item]").first
    item.wait_for(state="visible")
    session = item.get_attribute("data-session-id")
    item.get_by_test_id("accept").click()
    viewer.by("screen").wait_for(state="visible")

    # The agent sends the whole desktop (monitor 0 = Xvfb's one 1280x800 screen).
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=screen]').width === 1280")
    viewer.wait_for_pixel(40, 40, BACKGROUND, tolerance=10)
    viewer.wait_for_pixel(wx + ww // 2, wy + wh // 2, (255, 255, 255), tolerance=40)

    viewer.by("control-toggle").click()
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=control-toggle]').textContent"
        " === 'Release control'")
    # No window manager: X keyboard focus follows the pointer, so click into the xterm.
    viewer.page.mouse.click(*viewer.client_point(wx + ww // 2, wy + wh // 2))
    viewer.page.keyboard.type("hello from the viewer")
    viewer.page.keyboard.press("Enter")
    wait_until("the typed line in the file",
               lambda: typed.read_text() == "hello from the viewer\n")

    viewer.by("type-text").fill("Pasted text, 42!\n")
    viewer.page.locator("#type-send").click()
    wait_until("the pasted text in the file",
               lambda: typed.read_text() == "hello from the viewer\nPasted text, 42!\n")

    # The echo of the typing reaches the canvas before the screenshot.
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=session-timer]').textContent !== '0:00:00'")
    ARTIFACTS.mkdir(exist_ok=True)
    viewer.page.screenshot(path=str(ARTIFACTS / "viewer-session.png"))

    viewer.by("end-session").click()
    viewer.by("confirm-end").click()
    viewer.by("queue").wait_for(state="visible")
    assert real_agent.wait(timeout=WAIT_S) == 0
    viewer.close()

    result = relay.cli("ledger", "--csv")
    assert result.returncode == 0, result.stderr
    rows = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["session"] == session]
    assert len(rows) == 1
    row = rows[0]
    assert row["technician"] == "david"
    assert row["ended_by"] == "technician"
    assert row["accepted_at"] and row["ended_at"]
    assert int(row["billable_seconds"]) >= 1
    assert row["machine"] == os.uname().nodename
