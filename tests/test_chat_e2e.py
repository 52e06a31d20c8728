"""Chat and the clipboard end to end: the real agent on Xvfb with its Tk panel, the real relay,
the viewer in Chromium, and the X clipboard read and written with xclip."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import protocol
from tests.helpers.browser import WAIT_S, Viewer
from tests.helpers.desktop import find_window, grab_screen

pytestmark = [pytest.mark.x11, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
MARKER = "okapi-fjord-2468"  # a text that appears nowhere else


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


def xclip_out(env: dict) -> str:
    done = subprocess.run(["xclip", "-selection", "clipboard", "-o"], env=env,
                          capture_output=True, timeout=10)
    return done.stdout.decode() if done.returncode == 0 else ""


def xclip_in(env: dict, text: str) -> None:
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], env=env, input=text.encode(),
                   check=True, timeout=10, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def xdotool(env: dict, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, check=True, timeout=30,
                          capture_output=True, text=True).stdout


@pytest.fixture
def desktop(xvfb):
    """The X display's environment, with an empty clipboard and the tools the tests use."""
    for tool in ("xclip", "xdotool"):
        need(tool)
    env = xvfb.env()
    xclip_in(env, "")
    return env


@pytest.fixture
def real_agent(desktop, relay, tmp_path):
    """agent.py from source with its Tk panel, choosing david; the tray is log lines."""
    log_path = tmp_path / "agent.log"
    log = log_path.open("w")
    env = {**desktop, "SPOTLIGHT_TRAY": "log", "SPOTLIGHT_DIALOGS": "stderr",
           "SPOTLIGHT_PANEL": "tk"}
    process = subprocess.Popen(
        [sys.executable, "agent.py", "--relay", relay.ws_url, "--technician", "david"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    yield process, log_path
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def accepted_viewer(browser, relay) -> Viewer:
    viewer = Viewer(browser, relay).signed_in()
    item = viewer.page.locator("[data-testid=queue-item]").first
    item.wait_for(state="visible")
    item.get_by_test_id("accept").click()
    viewer.by("screen").wait_for(state="visible")
    return viewer


def take_control(viewer: Viewer) -> None:
    viewer.by("control-toggle").click()
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=control-toggle]').textContent"
        " === 'Release control'")


def chat_lines(viewer: Viewer) -> list[tuple[str, str]]:
    return [tuple(x) for x in viewer.page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=chat-log] li')]"
        ".map((li) => [li.dataset.who, li.querySelector('.chat-text').textContent])")]


def panel_window(env: dict) -> str:
    return find_window("can see your screen", env=env)


def type_in_panel_chat(env: dict, text: str) -> None:
    """Click the panel's chat input (the bottom row of the window) and type a line."""
    window = panel_window(env)
    geometry = dict(line.split("=", 1) for line in
                    xdotool(env, "getwindowgeometry", "--shell", window).split())
    x, y = int(geometry["X"]) + 60, int(geometry["Y"]) + int(geometry["HEIGHT"]) - 26
    xdotool(env, "mousemove", "--sync", str(x), str(y), "click", "1")
    xdotool(env, "type", "--delay", "20", text)
    xdotool(env, "key", "Return")


def watching(agent_log: Path) -> int:
    """How often the agent began watching the clipboard (each time control was taken)."""
    return agent_log.read_text().count("clipboard: watching for copies while in control")


def screenshot_root(xvfb, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    grab_screen(protocol.Screen(0, 0, xvfb.width, xvfb.height)).save(ARTIFACTS / name)


def test_chat_both_ways_as_plain_text_with_the_real_agent(browser, relay, xvfb, desktop,
                                                          real_agent):
    """The support person's line reaches the customer (the tray's balloon says it); the
    customer's line typed in the Tk panel reaches the chat log; markup stays text; a hidden
    pane counts the unread line; nothing of it is stored or logged by the relay."""
    process, agent_log = real_agent
    viewer = accepted_viewer(browser, relay)

    viewer.by("chat-input").fill(f"<b>Hi</b> {MARKER}")
    viewer.by("chat-send").click()
    wait_until("the line in the agent's balloon",
               lambda: f"David: <b>Hi</b> {MARKER}" in agent_log.read_text())
    assert chat_lines(viewer) == [("you", f"<b>Hi</b> {MARKER}")]
    assert viewer.page.locator("[data-testid=chat-log] b").count() == 0

    wait_until("the chat area in the panel", lambda: panel_window(desktop))
    type_in_panel_chat(desktop, "<i>thanks</i> from the PC")
    viewer.page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=chat-log] li').length === 2")
    assert chat_lines(viewer)[1] == ("customer", "<i>thanks</i> from the PC")
    assert viewer.page.locator("[data-testid=chat-log] i").count() == 0

    viewer.by("chat-toggle").click()  # hidden: a new line is counted
    assert viewer.by("chat-pane").is_hidden()
    type_in_panel_chat(desktop, "one more")
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=chat-unread]').textContent === '1'")
    assert viewer.by("chat-unread").is_visible()
    viewer.by("chat-toggle").click()
    assert viewer.by("chat-unread").is_hidden()

    too_long = "x" * (protocol.MAX_CHAT_CHARS + 1)
    viewer.by("chat-input").fill(too_long)
    viewer.by("chat-send").click()
    viewer.page.get_by_text(protocol.technician_words("chat-too-long")).wait_for()
    viewer.by("chat-input").fill("still connected?")
    viewer.by("chat-send").click()
    wait_until("the next line at the customer",
               lambda: "David: still connected?" in agent_log.read_text())

    ARTIFACTS.mkdir(exist_ok=True)
    viewer.page.screenshot(path=str(ARTIFACTS / "viewer-chat.png"))
    screenshot_root(xvfb, "panel-chat.png")
    assert not viewer.errors, viewer.errors

    viewer.by("end-session").click()
    viewer.by("confirm-end").click()
    viewer.by("queue").wait_for(state="visible")
    assert process.wait(timeout=WAIT_S) == 0
    viewer.close()
    relay.settle()
    for path in (p for p in relay.data.rglob("*") if p.is_file()):
        assert MARKER.encode() not in path.read_bytes(), path
    assert MARKER not in "".join(relay.output)


def test_clipboard_both_ways_with_xclip(browser, relay, xvfb, desktop, real_agent):
    """In control, Ctrl+V in the screen puts the browser's text on the X clipboard before
    the key is sent; a copy on the X side is offered with a Copy button that fills the
    browser's clipboard; a copy made while not in control is never offered."""
    _, agent_log = real_agent
    viewer = accepted_viewer(browser, relay)
    viewer.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                     origin=relay.http_url)
    viewer.page.evaluate("""() => {
        window.offered = [];
        new MutationObserver(() => window.offered.push(
            document.getElementById('remote-clipboard-text').textContent))
            .observe(document.getElementById('remote-clipboard-text'),
                     { childList: true, characterData: true, subtree: true });
    }""")
    take_control(viewer)

    pasted = "pasted from the browser ü 😀"
    viewer.page.evaluate("(text) => navigator.clipboard.writeText(text)", pasted)
    viewer.by("screen").focus()
    viewer.page.keyboard.press("Control+V")
    wait_until("the pasted text on the X clipboard", lambda: xclip_out(desktop) == pasted)
    sent = [m for m in viewer.sent_once(lambda sent: any(
        m.get("code") == "KeyV" and m.get("down") for m in sent))
            if m["type"] in ("clipboard", "key")]
    clip = next(i for i, m in enumerate(sent) if m["type"] == "clipboard")
    key_v = next(i for i, m in enumerate(sent) if m.get("code") == "KeyV" and m["down"])
    assert sent[clip]["text"] == pasted and clip < key_v

    wait_until("the agent watching the clipboard", lambda: watching(agent_log) == 1)
    xclip_in(desktop, "copied on the PC\tcol2")
    viewer.by("remote-clipboard").wait_for(state="visible")
    viewer.page.wait_for_function(
        "() => document.getElementById('remote-clipboard-text').textContent"
        " === 'copied on the PC\\tcol2'")
    viewer.by("remote-clipboard-copy").click()
    viewer.page.wait_for_function(
        "async () => (await navigator.clipboard.readText()) === 'copied on the PC\\tcol2'")
    wait_until("the customer told their clipboard was shared",
               lambda: "clipboard: shared with David (21 characters)" in agent_log.read_text())
    screenshot_root(xvfb, "panel-clipboard.png")
    viewer.page.screenshot(path=str(ARTIFACTS / "viewer-clipboard.png"))

    viewer.by("control-toggle").click()  # released: a copy now is not offered
    wait_until("the agent out of control",
               lambda: agent_log.read_text().count("session: accepted |") == 2)
    xclip_in(desktop, "secret while released")
    take_control(viewer)
    wait_until("the agent watching again", lambda: watching(agent_log) == 2)
    xclip_in(desktop, "after control again")
    viewer.page.wait_for_function(
        "() => document.getElementById('remote-clipboard-text').textContent"
        " === 'after control again'")
    offered = viewer.page.evaluate("() => window.offered")
    assert "secret while released" not in offered
    assert not viewer.errors, viewer.errors
    viewer.close()
