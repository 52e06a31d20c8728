"""The support person's console in Debian's chromium (Playwright) against a real relay on
127.0.0.1 port 0: confirmations, the queue's waiting times, the arrival chime, the notice
when the link is down, keyboard use (leaving the screen, the special-keys menu), full screen,
the compact layout on small screens, and keys typed as typed, down to a real xterm."""

from __future__ import annotations

import contextlib
import functools
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import protocol
from tests.helpers import browser as browser_tab
from tests.helpers.agent import ScriptedAgent
from tests.helpers.browser import WAIT_S, launch
from tests.helpers.desktop import agent_from_source, xterm_running_cat

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def agents(agents):
    """The customers here have one 1600x900 monitor."""
    return functools.partial(agents, size=(1600, 900))


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_driver) -> Iterator:
    chromium = launch(playwright_driver)
    yield chromium
    chromium.close()


class Viewer(browser_tab.Viewer):
    """A support person's tab (tests/helpers/browser.py) on a console whose link to the relay
    this module cuts on purpose."""

    def _console(self, message) -> None:
        # A refused websocket while the link is cut is expected; script errors are not.
        if message.type == "error" and "WebSocket" not in message.text:
            self.errors.append(message.text)

    def accept(self, agent: ScriptedAgent) -> None:
        super().accept(agent)
        agent.expect(protocol.Accepted)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"))


@pytest.fixture
def open_viewer(browser, relay) -> Iterator[Callable[..., Viewer]]:
    viewers: list[Viewer] = []

    def open_one(size: tuple[int, int] = (1280, 800), url: str | None = None,
                 on=None) -> Viewer:
        viewer = Viewer(on or browser, relay, size, url)
        viewers.append(viewer)
        return viewer

    yield open_one
    for viewer in viewers:
        assert viewer.errors == [], viewer.errors
        viewer.close()


def in_session(open_viewer, agents, size=(1280, 800), **agent_args):
    viewer = open_viewer(size).signed_in()
    agent = agents(**agent_args)
    viewer.accept(agent)
    agent.send_screen((40, 90, 140))
    agent.expect(protocol.Ack)
    return viewer, agent


def inputs_until_marker(viewer: Viewer, agent: ScriptedAgent) -> list[tuple]:
    """Press KeyM in the screen and return what the agent got before it, as tuples."""
    viewer.page.keyboard.press("KeyM")
    got = agent.inputs_until("KeyM")[:-1]
    agent.expect(protocol.Key, lambda m: m.code == "KeyM" and not m.down)
    return [(m.text,) if isinstance(m, protocol.Text) else (m.code, m.down) for m in got]


def key_event(viewer: Viewer, kind: str, **init) -> None:
    """A keydown or keyup on the screen as a keyboard of another kind would send it."""
    viewer.page.evaluate(
        """([kind, init]) => document.querySelector('[data-testid=screen]')
               .dispatchEvent(new KeyboardEvent(kind, {bubbles: true, cancelable: true,
                                                       ...init}))""", [kind, init])


# --- confirmations -------------------------------------------------------------------------


def test_end_session_asks_first_and_esc_keeps_the_session(open_viewer, agents):
    """End session opens a confirmation naming the computer (as text): Esc keeps the
    session, Enter ends it."""
    viewer, agent = in_session(open_viewer, agents, machine="<b>ACCOUNTS-7</b>")
    viewer.by("end-session").click()
    confirm = viewer.by("confirm-end")
    confirm.wait_for(state="visible")
    assert viewer.focused() == "confirm-end"
    title = viewer.page.locator("#end-title")
    assert title.text_content() == "End the session with <b>ACCOUNTS-7</b>?"
    assert title.locator("b").count() == 0
    viewer.page.keyboard.press("Escape")
    confirm.wait_for(state="hidden")
    assert viewer.focused() == "end-session"    # back where the person was
    viewer.take_control(agent)                  # a marker: the session is still on
    assert "end" not in [m["type"] for m in viewer.sent]

    viewer.by("end-session").click()
    confirm.wait_for(state="visible")
    viewer.page.keyboard.press("Enter")
    assert agent.expect(protocol.Ended).by == "technician"
    viewer.by("queue").wait_for(state="visible")


def test_sign_out_during_a_session_asks_first_and_traps_the_focus(open_viewer, agents):
    """Sign out in a session asks first; Tab stays inside the dialog; confirming ends and
    signs out."""
    viewer, agent = in_session(open_viewer, agents)
    viewer.by("logout").click()
    viewer.by("confirm-signout").wait_for(state="visible")
    visited = []
    for key in ["Tab", "Tab", "Tab", "Shift+Tab", "Shift+Tab"]:
        viewer.page.keyboard.press(key)
        visited.append(viewer.focused())
    in_dialog = viewer.page.evaluate(
        "() => document.activeElement.closest('dialog')?.id")
    assert in_dialog == "signout-dialog"
    assert visited[0] != "confirm-signout" and visited[1] == "confirm-signout"
    assert visited[2] == visited[0] and visited[3] == "confirm-signout"
    viewer.page.get_by_role("button", name="Cancel").click()
    viewer.by("confirm-signout").wait_for(state="hidden")
    assert viewer.by("screen").is_visible()
    assert "logout" not in [m["type"] for m in viewer.sent]

    viewer.by("logout").click()
    viewer.by("confirm-signout").click()
    assert agent.expect(protocol.Ended).by == "technician"
    viewer.by("login-user").wait_for(state="visible")
    assert {"type": "logout"} in viewer.sent


# --- the queue ------------------------------------------------------------------------------


def test_queue_tells_two_starts_of_one_computer_apart_by_waiting_time(open_viewer, agents):
    """Two rows with the same names differ by how long each has waited."""
    viewer = open_viewer().signed_in()
    first = agents(machine="TWIN-PC", user="bob")
    waited = viewer.item(first.session).get_by_test_id("waited")
    waited.wait_for(state="visible")
    viewer.page.wait_for_function(
        """(id) => { const row = document.querySelector(`[data-session-id="${id}"] .waited`);
                     return /Waiting 0:0[2-9]/.test(row.textContent); }""", arg=first.session)
    second = agents(machine="TWIN-PC", user="bob")
    viewer.item(second.session).wait_for(state="visible")
    texts = [viewer.item(a.session).get_by_test_id("waited").text_content()
             for a in (first, second)]
    assert texts[0] != texts[1], texts
    assert all(t.startswith("Waiting ") for t in texts)
    assert waited.get_attribute("title").startswith("Since ")
    viewer.screenshot("queue")


# --- the arrival chime --------------------------------------------------------------------

COUNT_TONES = """
    window.tones = 0;
    const start = OscillatorNode.prototype.start;
    OscillatorNode.prototype.start = function (...args) {
        window.tones += 1;
        return start.apply(this, args);
    };
"""


def test_chime_sounds_after_a_reload_when_the_browser_allows_sound(
        playwright_driver, relay, open_viewer, agents):
    """In a browser that lets the page play sound, an arrival after a reload chimes with no
    click, and no sound control is offered."""
    allowing = launch(playwright_driver, "--autoplay-policy=no-user-gesture-required")
    try:
        viewer = open_viewer(on=allowing)
        viewer.page.add_init_script(COUNT_TONES)
        viewer.signed_in()
        viewer.page.reload()
        viewer.wait_true("document.querySelector('[data-testid=status]').textContent"
                         " === 'Connected'")
        agent = agents(machine="CALLER-1")
        viewer.item(agent.session).wait_for(state="visible")
        assert viewer.page.evaluate("window.tones") == 2  # the two notes of the chime
        assert viewer.by("sound-on").is_hidden()
        viewer.close()
    finally:
        allowing.close()


RECORD_AUDIO_STATES = """
    window.audioStates = [];  // every state change of every audio context, in order
    const NativeContext = window.AudioContext;
    window.AudioContext = function (...args) {
        const context = new NativeContext(...args);
        context.addEventListener("statechange", () => window.audioStates.push(context.state));
        return context;
    };
    window.AudioContext.prototype = NativeContext.prototype;
"""


def test_the_chimes_audio_context_runs_only_while_a_chime_plays(
        playwright_driver, relay, open_viewer, agents):
    """The chime's audio context, once the browser lets it run, rests (suspended) while the
    queue waits, runs for an arrival's chime and rests again (a running one costs the
    browser CPU rendering silence)."""
    allowing = launch(playwright_driver, "--autoplay-policy=no-user-gesture-required")
    try:
        viewer = open_viewer(on=allowing)
        viewer.page.add_init_script(COUNT_TONES + RECORD_AUDIO_STATES)
        viewer.signed_in()
        viewer.page.reload()
        viewer.wait_true("window.audioStates.at(-1) === 'suspended'")
        viewer.page.evaluate("() => { window.audioStates = []; }")
        agent = agents(machine="CALLER-1")
        viewer.item(agent.session).wait_for(state="visible")
        assert viewer.page.evaluate("window.tones") == 2
        viewer.wait_true("window.audioStates.join() === 'running,suspended'")
        assert viewer.by("sound-on").is_hidden()
        viewer.close()
    finally:
        allowing.close()


def test_blocked_sound_shows_a_click_to_turn_on_control_that_works(open_viewer, agents):
    """When the browser keeps a reloaded page silent, the page says so; one click turns the
    chime on for the next arrival."""
    viewer = open_viewer()
    viewer.page.add_init_script(COUNT_TONES)
    viewer.signed_in()
    viewer.page.reload()
    button = viewer.by("sound-on")
    button.wait_for(state="visible")
    assert "Click to turn on sound" in button.text_content()
    viewer.screenshot("sound-blocked")
    silent = agents(machine="CALLER-1")
    viewer.item(silent.session).wait_for(state="visible")
    assert viewer.page.evaluate("window.tones") == 0
    button.click()
    button.wait_for(state="hidden")
    heard = agents(machine="CALLER-2")
    viewer.item(heard.session).wait_for(state="visible")
    assert viewer.page.evaluate("window.tones") == 2


# --- when the link is down -----------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of the relay whose links can be cut and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepting = threading.Event()
        self.accepting.set()
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.accepting.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.accepting.clear()
        with self.lock:
            links, self.links = self.links, []
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv
            link.close()

    def restore(self) -> None:
        self.accepting.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.fixture
def proxy(relay) -> Iterator[CuttableProxy]:
    running = CuttableProxy(relay.port)
    yield running
    running.close()


def test_frozen_screen_says_the_link_is_down_until_it_is_back(open_viewer, agents, proxy):
    """Losing the relay puts a notice over the frozen picture; it goes once the link and the
    session are back."""
    viewer = open_viewer(url=proxy.url).signed_in()
    agent = agents(machine="FAR-AWAY")
    viewer.accept(agent)
    agent.send_screen((200, 120, 40))
    agent.expect(protocol.Ack)
    notice = viewer.by("link-down")
    assert notice.is_hidden()
    proxy.cut()
    notice.wait_for(state="visible")
    assert "frozen" in notice.text_content()
    assert viewer.by("screen").is_visible()    # the last picture stays under the notice
    viewer.screenshot("link-down")
    proxy.restore()
    notice.wait_for(state="hidden", timeout=30_000)
    agent.expect(protocol.Refresh)              # the rejoin asks the agent for a new picture
    assert viewer.page.locator("#session-machine").text_content() == "FAR-AWAY"


# --- keyboard use ---------------------------------------------------------------------------


def test_leave_key_takes_the_focus_out_of_the_screen_and_is_not_sent(open_viewer, agents):
    """In control Esc and Tab go to the customer; Ctrl+Alt+Home (documented in the page)
    moves the focus to the toolbar, releases the modifiers and sends no Home."""
    viewer, agent = in_session(open_viewer, agents)
    viewer.take_control(agent)
    help_line = viewer.by("key-help")
    assert help_line.is_visible() and "Ctrl+Alt+Home" in help_line.inner_text()
    assert viewer.by("screen").get_attribute("aria-keyshortcuts") == "Control+Alt+Home"
    viewer.page.keyboard.press("Escape")
    viewer.page.keyboard.press("Tab")
    assert viewer.focused() == "screen"
    viewer.page.keyboard.press("Control+Alt+Home")
    assert viewer.focused() == "control-toggle"
    viewer.by("screen").focus()
    assert inputs_until_marker(viewer, agent) == [
        ("Escape", True), ("Escape", False), ("Tab", True), ("Tab", False),
        ("ControlLeft", True), ("AltLeft", True), ("AltLeft", False), ("ControlLeft", False)]


def test_special_keys_menu_works_with_the_arrow_keys(open_viewer, agents):
    """Down opens the menu on its first item; Up/Down wrap, Home/End jump, Enter presses the
    item, Esc closes the menu back onto its button."""
    viewer, agent = in_session(open_viewer, agents)
    viewer.take_control(agent)
    button = viewer.by("special-keys")
    button.focus()
    viewer.page.keyboard.press("ArrowDown")
    assert button.get_attribute("aria-expanded") == "true"

    def item() -> str:
        return viewer.page.evaluate("() => document.activeElement.textContent.trim()")

    assert item().startswith("Ctrl+Alt+Del")
    steps = {"ArrowDown": "Windows key", "End": "Alt+F4", "Home": "Ctrl+Alt+Del"}
    for key, expected in steps.items():
        viewer.page.keyboard.press(key)
        assert item().startswith(expected), (key, item())
    viewer.page.keyboard.press("ArrowUp")
    assert item() == "Alt+F4"                   # wrapped from the first to the last
    viewer.page.keyboard.press("Escape")
    assert viewer.focused() == "special-keys"
    assert viewer.page.locator("#keys-list").is_hidden()
    viewer.page.keyboard.press("ArrowUp")       # opens on the last item
    assert item() == "Alt+F4"
    viewer.page.keyboard.press("ArrowUp")
    viewer.page.keyboard.press("Enter")
    assert viewer.page.locator("#keys-list").is_hidden()
    assert viewer.focused() == "screen"
    assert inputs_until_marker(viewer, agent) == [
        ("ControlLeft", True), ("Escape", True), ("Escape", False), ("ControlLeft", False)]
    # Enter on the unavailable item does nothing but close nothing either.
    button.focus()
    viewer.page.keyboard.press("ArrowDown")
    viewer.page.keyboard.press("Enter")
    assert button.get_attribute("aria-expanded") == "true"
    viewer.page.keyboard.press("Escape")
    viewer.by("screen").focus()
    assert inputs_until_marker(viewer, agent) == []


# --- keys typed as typed -----------------------------------------------------------------------


def test_characters_the_key_alone_would_not_give_travel_as_text(open_viewer, agents):
    """A capital without Shift and a character of another layout arrive as text; plain keys,
    Shift, Ctrl chords and CapsLock letters keep the physical-key path."""
    viewer, agent = in_session(open_viewer, agents)
    viewer.take_control(agent)
    page = viewer.page
    page.keyboard.press("D")                    # a capital without Shift (on-screen keyboard)
    assert inputs_until_marker(viewer, agent) == [("D",)]
    page.keyboard.press("Shift+KeyD")           # a capital with Shift: the key itself
    assert inputs_until_marker(viewer, agent) == [
        ("ShiftLeft", True), ("KeyD", True), ("KeyD", False), ("ShiftLeft", False)]
    key_event(viewer, "keydown", key="é", code="Digit2")    # a French layout's 2 key
    key_event(viewer, "keyup", key="é", code="Digit2")
    assert inputs_until_marker(viewer, agent) == [("é",)]
    key_event(viewer, "keydown", key="\\", code="IntlRo")   # a key the agent has no name for
    assert inputs_until_marker(viewer, agent) == [("\\",)]
    for kind in ("keydown", "keyup"):                       # a dead key, then its accent
        key_event(viewer, kind, key="Dead", code="BracketLeft")
    key_event(viewer, "keydown", key="ê", code="KeyE")
    assert inputs_until_marker(viewer, agent) == [("ê",)]
    page.keyboard.press("Control+KeyD")
    assert inputs_until_marker(viewer, agent) == [
        ("ControlLeft", True), ("KeyD", True), ("KeyD", False), ("ControlLeft", False)]
    key_event(viewer, "keydown", key="A", code="KeyA", modifierCapsLock=True)
    key_event(viewer, "keyup", key="A", code="KeyA", modifierCapsLock=True)
    assert inputs_until_marker(viewer, agent) == [("KeyA", True), ("KeyA", False)]


def test_no_modifier_stays_held_around_text_typed_with_shift_down(open_viewer, agents):
    """Shift held while a character goes as text is lifted for the text, pressed again for
    the keys after it, and released at the end: nothing is left held."""
    viewer, agent = in_session(open_viewer, agents)
    viewer.take_control(agent)
    page = viewer.page
    page.keyboard.down("Shift")
    key_event(viewer, "keydown", key="Ö", code="Semicolon", shiftKey=True)
    key_event(viewer, "keyup", key="Ö", code="Semicolon", shiftKey=True)
    page.keyboard.press("KeyB")
    page.keyboard.up("Shift")
    assert inputs_until_marker(viewer, agent) == [
        ("ShiftLeft", True), ("ShiftLeft", False), ("Ö",), ("ShiftLeft", True),
        ("KeyB", True), ("KeyB", False), ("ShiftLeft", False)]


# --- full screen and small screens ------------------------------------------------------


def toolbars(viewer: Viewer) -> dict:
    """Heights of the bars and of the area left for the customer's screen, in CSS pixels."""
    return viewer.page.evaluate("""() => {
        const box = (s) => document.querySelector(s).getBoundingClientRect();
        const shown = (s) => { const b = box(s);
            return Math.max(0, Math.min(b.bottom, innerHeight) - Math.max(b.top, 0)); };
        return {top: shown('.topbar'), bar: shown('.session-bar'), foot: shown('.session-foot'),
                viewport: box('#viewport').height, window: innerHeight};
    }""")


def test_full_screen_hides_the_toolbars_until_the_pointer_or_a_key_asks(open_viewer, agents):
    """In full screen the picture takes the whole screen; the top edge or Ctrl+Alt+Home
    brings the toolbars back; the button leaves full screen."""
    for size in [(1920, 1080), (1024, 600)]:
        viewer, agent = in_session(open_viewer, agents, size=size)
        viewer.by("fullscreen").click()
        viewer.wait_true("document.fullscreenElement?.id === 'session-view'")
        viewer.page.mouse.move(size[0] / 2, size[1] / 2)
        viewer.wait_true("document.querySelector('.session-bar').getBoundingClientRect()"
                         ".bottom <= 0")
        bars = toolbars(viewer)
        assert bars["bar"] == bars["foot"] == 0 and bars["viewport"] == size[1], bars
        viewer.screenshot(f"fullscreen-{size[0]}")
        viewer.page.mouse.move(size[0] / 2, 1)
        viewer.wait_true("document.querySelector('.session-bar').getBoundingClientRect()"
                         ".top === 0")
        viewer.screenshot(f"fullscreen-revealed-{size[0]}")
        viewer.page.mouse.move(size[0] / 2, size[1] / 2)
        viewer.wait_true("document.querySelector('.session-bar').getBoundingClientRect()"
                         ".bottom <= 0")
        viewer.by("screen").focus()
        viewer.page.keyboard.press("Control+Alt+Home")
        assert viewer.focused() == "control-toggle"
        viewer.wait_true("document.querySelector('.session-bar').getBoundingClientRect()"
                         ".top === 0")
        viewer.by("fullscreen").click()
        # the element is gone before the fullscreenchange event that relabels the button
        # has run: wait for the label, not only for the element
        viewer.wait_true("document.fullscreenElement === null && "
                         "document.getElementById('fullscreen').textContent === 'Full screen'")
        assert viewer.by("fullscreen").get_attribute("aria-pressed") == "false"
        viewer.close()
        agent.close()


def test_toolbars_leave_most_of_a_1024x600_screen_to_the_picture(open_viewer, agents):
    """At 1024x600 the bars take under a fifth of the height (they took 27%), every tool
    fits on one line beside part of the machine's name; the confirm dialog fits too."""
    viewer, agent = in_session(open_viewer, agents, size=(1024, 600))
    viewer.take_control(agent)
    bars = toolbars(viewer)
    assert bars["top"] + bars["bar"] + bars["foot"] < 600 / 5, bars
    tops = viewer.page.evaluate(
        "() => [...document.querySelectorAll('.session-tools > *:not([hidden])')]"
        ".map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(set(tops)) == 1, tops
    overflow = viewer.page.evaluate(
        "() => [...document.querySelectorAll('.session-bar, .session-foot, .topbar')]"
        ".filter(e => e.scrollWidth > e.clientWidth).map(e => e.className)")
    assert overflow == []
    # The machine's name keeps some width beside the tools (it shrank to nothing before).
    assert viewer.page.locator("#session-machine").bounding_box()["width"] >= 50
    viewer.screenshot("session-1024")
    viewer.by("end-session").click()
    viewer.by("confirm-end").wait_for(state="visible")
    assert viewer.by("confirm-end").bounding_box()["y"] < 600
    viewer.screenshot("confirm-1024")


def test_console_at_1920x1080_keeps_full_size_toolbars(open_viewer, agents):
    """On a large screen the bars keep their comfortable size and the dialog is centred."""
    viewer, agent = in_session(open_viewer, agents, size=(1920, 1080))
    viewer.take_control(agent)
    bars = toolbars(viewer)
    assert bars["top"] == 56, bars
    viewer.screenshot("session-1920")
    viewer.by("logout").click()
    viewer.by("confirm-signout").wait_for(state="visible")
    box = viewer.page.locator("#signout-dialog").bounding_box()
    assert abs(box["x"] + box["width"] / 2 - 960) <= 2
    viewer.screenshot("confirm-1920")


# --- end to end: the real agent on Xvfb typing into a real xterm -----------------------------


def wait_until(what: str, check: Callable, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def xterm_cat(xvfb, tmp_path) -> Iterator[tuple[Path, tuple[int, int, int, int]]]:
    """An xterm running `cat > FILE`, and where its window is on the X screen."""
    typed = tmp_path / "typed.txt"
    env = {**xvfb.env(), "LC_ALL": "C.UTF-8"}
    with xterm_running_cat(env, typed, "spotlight-console-keys", "50x8+300+200") as window:
        yield typed, window


@pytest.fixture
def real_agent(xvfb, relay, tmp_path) -> Iterator[subprocess.Popen]:
    """agent.py from source on the Xvfb screen, choosing david, its tray as log lines."""
    with agent_from_source(xvfb.env(), relay.ws_url, tmp_path / "agent.log") as process:
        yield process


@pytest.mark.x11
def test_capital_typed_without_shift_reaches_a_real_xterm_as_a_capital(
        open_viewer, xterm_cat, real_agent, tmp_path):
    """A capital D keydown without Shift in the page types "D" in the customer's xterm:
    "David" arrives as typed, and no Shift is left held for the next line."""
    typed, (wx, wy, ww, wh) = xterm_cat
    viewer = open_viewer().signed_in()
    item = viewer.page.locator("[data-testid=queue-item]").first
    item.get_by_test_id("accept").click()
    viewer.wait_true("document.querySelector('[data-testid=screen]').width === 1280")
    viewer.by("control-toggle").click()
    viewer.wait_true("document.querySelector('[data-testid=control-toggle]').textContent"
                     " === 'Release control'")
    box = viewer.by("screen").bounding_box()
    scale = box["width"] / 1280
    # No window manager: X keyboard focus follows the pointer, so click into the xterm.
    viewer.page.mouse.click(box["x"] + (wx + ww / 2) * scale, box["y"] + (wy + wh / 2) * scale)
    viewer.page.keyboard.press("D")     # key "D", code KeyD, shiftKey false
    viewer.page.keyboard.type("avid")
    viewer.page.keyboard.press("Enter")
    viewer.page.keyboard.type("ok")
    viewer.page.keyboard.press("Enter")
    wait_until("the typed lines in the file", lambda: typed.read_text() == "David\nok\n")
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
