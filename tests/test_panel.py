"""The session panel: the pure view model for every state, the tray icons by shape, the
backend choice, and the real Tk window on Xvfb (found by its title, driven by xdotool)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import mss
import numpy as np
import pytest
from PIL import Image

import panel
import protocol as p
from panel import SessionFacts, view
from tests.helpers import wine as wine_helpers
from tests.helpers.desktop import find_window
from tests.helpers.wine import windows_path

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "panel"
ENDED_AT = datetime(2026, 12, 1, 14, 32, 5)


def facts(state: str, **extra) -> SessionFacts:
    return SessionFacts(state=state, company="Spotlight", person="David", **extra)


def plain(text: str) -> str:
    """The text with its no-break spaces as spaces (as a screen reader says it)."""
    return text.replace("\xa0", " ")


def buttons(state: str, **extra) -> list[tuple[str, bool]]:
    return [(b.action, b.enabled) for b in view(facts(state, **extra)).buttons]


# --- the view model ----------------------------------------------------------------------


def test_connecting_names_the_company_and_shows_progress() -> None:
    """Connecting: "Connecting to Spotlight…" with a moving bar, nothing shared yet."""
    v = view(facts("connecting"))
    assert v.headline == "Connecting to Spotlight…"
    assert v.progress and v.tray_state is None
    assert "Nothing is shared until David accepts" in v.detail
    assert v.title == "Spotlight support: connecting"


def test_error_offers_retry_and_the_companys_phone_number_when_configured() -> None:
    """An error says what failed, offers Retry and Close, and the phone number if any."""
    v = view(facts("error", message="Could not reach the support server.",
                   phone="269 998 1389"))
    assert v.headline == "Could not reach the support server."
    assert v.phone == "If it keeps failing, call Spotlight: 269 998 1389"
    assert [b.action for b in v.buttons] == ["retry", "dismiss"] and not v.progress
    assert view(facts("error")).phone == ""
    assert view(facts("error")).headline == "Could not connect to Spotlight."


def test_waiting_shows_the_code_grouped_and_its_six_digits_in_the_title() -> None:
    """Waiting: "Waiting for David to accept", the code as "482 913", digits in the title."""
    v = view(facts("waiting", code="482913"))
    assert v.headline == "Waiting for David to accept"
    assert v.code == "482 913"
    assert "482913" in v.title and "David" in v.title
    assert v.tray_state == "pending" and v.tooltip == "Waiting for David to accept"


def test_waiting_before_the_relay_gave_a_code_shows_none() -> None:
    """No code yet: no code row and none in the title, but still the waiting sentence."""
    v = view(facts("waiting"))
    assert v.code == "" and "code" not in v.title
    assert v.headline == "Waiting for David to accept"


def test_accepted_says_who_can_see_the_screen() -> None:
    """Accepted: "David (Spotlight) can see your screen", in the title and tooltip too."""
    v = view(facts("accepted", elapsed_s=75))
    assert v.headline == "David (Spotlight) can see your screen"
    assert v.title == "Spotlight support: David (Spotlight) can see your screen"
    assert v.tray_state == "active" and v.tooltip == v.headline
    assert v.meter == "Session time 1 min"


def test_control_says_who_uses_the_mouse_and_keyboard() -> None:
    """In control: "David is using your mouse and keyboard", a tray icon of its own."""
    v = view(facts("control", elapsed_s=750))
    assert v.headline == "David is using your mouse and keyboard"
    assert "David is using your mouse and keyboard" in v.title
    assert v.tray_state == "control"


def test_paused_offers_resume_and_the_meter_counts_paused_time_apart() -> None:
    """Paused: says so, offers Resume, and the meter shows paused time as not billed."""
    v = view(facts("paused", elapsed_s=750, paused_s=65))
    assert v.headline == "Paused: David cannot see your screen"
    assert "Paused" in v.title and v.tray_state == "paused"
    assert v.meter == "Session time 12 min · paused 1 min, not billed"
    assert [b.action for b in v.buttons] == ["resume", "end"]


def test_reconnecting_shows_progress_and_that_nothing_is_seen_meanwhile() -> None:
    """Reconnecting: a moving bar, the grey tray state, and Pause unavailable."""
    v = view(facts("reconnecting", elapsed_s=800))
    assert v.headline == "Reconnecting to Spotlight…" and v.progress
    assert "cannot see your screen" in v.detail
    assert v.tray_state == "reconnecting" and "reconnecting" in v.title


def test_ended_shows_the_receipt_line_and_closes_itself_after_a_few_seconds() -> None:
    """A normal end: the receipt of issue 12, then the window goes by itself."""
    v = view(facts("ended", elapsed_s=750, ended_at=ENDED_AT, reference="123"))
    assert v.headline == "Session with David ended 14:32 · 12\xa0min\xa030\xa0s · ref\xa0123"
    assert 3 <= v.dismiss_after_s <= 30
    assert [b.action for b in v.buttons] == ["dismiss"] and v.close_action == "dismiss"
    assert v.tray_state is None and "ended" in v.title
    assert v.detail == "To connect again, run the program again."


def test_ended_with_a_problem_keeps_the_sentence_until_dismissed() -> None:
    """A lost link or refusal: the plain sentence stays until the customer closes it."""
    sentence = p.customer_words("agent-lost")
    v = view(facts("ended", elapsed_s=30, ended_at=ENDED_AT, message=sentence, failed=True))
    assert v.detail == sentence and v.dismiss_after_s is None
    assert v.headline == "Session with David ended 14:32 · 30\xa0s"


@pytest.mark.parametrize("reason", sorted(p.WORDING))
def test_every_reason_reads_as_the_protocols_plain_sentence(reason: str) -> None:
    """The customer's sentence of protocol.WORDING is shown as it is, never the code."""
    sentence = p.customer_words(reason)
    for state in ("error", "ended"):
        v = view(facts(state, message=sentence, failed=True))
        shown = " ".join((v.title, v.headline, v.detail, v.phone, v.tooltip))
        assert sentence in shown and reason not in shown.replace(sentence, "")


def test_the_receipt_wraps_between_its_parts_and_a_blink_of_a_pause_is_not_mentioned(
        ) -> None:
    """No-break spaces hold "12 min 30 s" and "ref 123" together; a pause under a second is
    not worth a sentence on the receipt."""
    v = view(facts("ended", elapsed_s=750, paused_s=0.4, ended_at=ENDED_AT, reference="123"))
    assert v.headline.split(" · ")[1:] == ["12\xa0min\xa030\xa0s", "ref\xa0123"]
    assert v.detail == "To connect again, run the program again."


def test_ended_after_a_pause_says_the_paused_time_was_not_billed() -> None:
    """The receipt counts billed time only; paused time is named apart."""
    v = view(facts("ended", elapsed_s=3725, paused_s=65, ended_at=ENDED_AT, reference="9"))
    assert plain(v.headline) == "Session with David ended 14:32 · 1 h 2 min 5 s · ref 9"
    assert v.detail == "Paused time (1 min 5 s) was not billed."


@pytest.mark.parametrize("state", panel.STATES)
def test_every_state_shows_the_meter_and_a_titled_window(state: str) -> None:
    """The billed time is always shown; the title names the company and differs by state."""
    v = view(facts(state, code="482913", elapsed_s=5))
    assert v.meter.startswith("Session time ")
    assert v.title.startswith("Spotlight support: ")
    titles = {view(facts(s, code="482913")).title for s in panel.STATES}
    assert len(titles) == len(panel.STATES)


def test_meter_counts_only_after_acceptance() -> None:
    """Before acceptance the meter says when billing starts."""
    assert view(facts("waiting")).meter == "Session time starts when David accepts"
    assert view(facts("control", elapsed_s=3725)).meter == "Session time 1 h 2 min"


@pytest.mark.parametrize(("state", "shown"), [
    ("connecting", [("pause", False), ("end", True)]),
    ("error", [("retry", True), ("dismiss", True)]),
    ("waiting", [("pause", False), ("end", True)]),
    ("accepted", [("pause", True), ("end", True), ("send_file", True)]),
    ("control", [("pause", True), ("end", True), ("send_file", True)]),
    ("paused", [("resume", True), ("end", True)]),
    ("reconnecting", [("pause", False), ("end", True)]),
    ("ended", [("dismiss", True)]),
])
def test_buttons_shown_and_enabled_in_each_state(state: str, shown: list) -> None:
    """Pause only while something is shared; End until the end; Retry after an error."""
    assert buttons(state) == shown


def test_alt_keys_press_the_enabled_button_of_the_state() -> None:
    """Alt+P pauses, and resumes once paused; a disabled Pause is not pressed; Alt+E ends."""
    assert view(facts("accepted")).button("p").action == "pause"
    assert view(facts("paused")).button("p").action == "resume"
    assert view(facts("waiting")).button("p") is None
    assert view(facts("waiting")).button("e").action == "end"
    assert view(facts("ended")).button("e") is None
    pause = view(facts("accepted")).buttons[0]
    assert (pause.win32_text, pause.underline) == ("&Pause", 0)
    resume = view(facts("paused")).buttons[0]
    assert (resume.win32_text, resume.underline) == ("Resume", -1)


def test_the_close_box_ends_a_session_and_dismisses_a_receipt() -> None:
    """Closing the window during a session is End (as tray Close); after it, just Close."""
    assert {s: view(facts(s)).close_action for s in panel.STATES} == {
        **dict.fromkeys(panel.STATES, "end"), "error": "dismiss", "ended": "dismiss"}


@pytest.mark.parametrize("bad", [
    {"state": "sleeping"}, {"code": "48291"}, {"code": "48291x"}, {"code": "٤٨٢٩١٣"},
    {"person": ""}, {"company": ""}, {"elapsed_s": -1}, {"paused_s": -0.5},
])
def test_bad_facts_are_refused_with_a_clear_error(bad: dict) -> None:
    """Our own misuse (unknown state, a code that is not six ASCII digits, ...) raises."""
    args = {"state": "waiting", "company": "Spotlight", "person": "David", **bad}
    with pytest.raises(ValueError, match=r"\w"):
        SessionFacts(**args)


@pytest.mark.parametrize(("seconds", "meter", "words"), [
    (0, "under 1 min", "0 s"), (59.9, "under 1 min", "59 s"), (750, "12 min", "12 min 30 s"),
    (720, "12 min", "12 min"), (3725, "1 h 2 min", "1 h 2 min 5 s"), (7200, "2 h 0 min", "2 h"),
])
def test_times_read_as_a_meter_and_in_words(seconds: float, meter: str, words: str) -> None:
    """The meter in whole minutes (it changes the screen once a minute, not every second);
    the receipt to the second, in words, zero parts left out."""
    assert panel.minutes_text(seconds) == meter
    assert panel.duration_text(seconds) == words


def test_meter_runs_from_acceptance_and_stands_still_while_paused() -> None:
    """Billed seconds exclude pauses, and stop at the end."""
    meter = panel.Meter()
    assert meter.elapsed_s(100) == 0
    meter.start(100)
    meter.pause(160)
    meter.pause(170)  # a second pause while paused changes nothing
    assert (meter.elapsed_s(190), meter.paused_s(190)) == (60, 30)
    meter.resume(200)
    meter.stop(230)
    assert (meter.elapsed_s(999), meter.paused_s(999)) == (90, 40)


def test_meter_stopped_while_paused_bills_nothing_after_the_pause() -> None:
    """Ending during a pause: the pause counts up to the end, and no billed time is added."""
    meter = panel.Meter()
    meter.start(0)
    meter.pause(10)
    meter.stop(25)
    assert (meter.elapsed_s(100), meter.paused_s(100)) == (10, 15)


# --- tray icons --------------------------------------------------------------------------


def symbol_mask(state: str, size: int) -> np.ndarray:
    """The symbol: pixels inside the rim that are not the state's colour."""
    rgba = np.asarray(panel.tray_icon(state, size)).astype(int)
    away = np.abs(rgba[..., :3] - np.array(panel.TRAY_COLOURS[state])).max(axis=2) > 60
    yy, xx = np.mgrid[:size, :size] + 0.5
    return away & (np.hypot(xx - size / 2, yy - size / 2) < 0.36 * size)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_tray_icons_differ_by_shape_not_only_by_colour(size: int) -> None:
    """Every pair of the five states' symbols differs in over a third of their pixels."""
    masks = {state: symbol_mask(state, size) for state in panel.TRAY_STATES}
    for a, b in itertools.combinations(panel.TRAY_STATES, 2):
        union = np.count_nonzero(masks[a] | masks[b])
        differing = np.count_nonzero(masks[a] ^ masks[b]) / union
        assert union >= size and differing > 0.35, \
            f"{a} and {b} look alike at {size} px ({differing:.2f} of {union} px differ)"


@pytest.mark.parametrize("size", [16, 32, 64])
def test_tray_icons_differ_in_greyscale(size: int) -> None:
    """Seen without colour (luminance only), the five icons are still five pictures."""
    greys = {s: np.asarray(panel.tray_icon(s, size).convert("LA")).astype(int)
             for s in panel.TRAY_STATES}
    for a, b in itertools.combinations(panel.TRAY_STATES, 2):
        union = np.count_nonzero(symbol_mask(a, size) | symbol_mask(b, size))
        differing = np.count_nonzero(np.abs(greys[a][..., 0] - greys[b][..., 0]) > 60)
        assert differing / union > 0.35, \
            f"{a} and {b} have nearly the same luminance picture at {size} px"


@pytest.mark.parametrize("size", [32, 64])
def test_tray_icons_stay_yellow_while_waiting_and_green_once_accepted(size: int) -> None:
    """The promise of the company's page: the disc's colour shows beside the symbol."""
    for state in panel.TRAY_STATES:
        pixel = panel.tray_icon(state, size).getpixel((size // 4, size // 2))
        assert max(abs(a - b) for a, b in zip(pixel[:3], panel.TRAY_COLOURS[state],
                                              strict=True)) <= 8, (state, pixel)
    assert panel.TRAY_COLOURS["pending"] == (242, 190, 0)
    assert {panel.TRAY_COLOURS[s] for s in ("active", "control", "paused")} == {(40, 170, 70)}


def test_icon_files_are_the_drawn_icons() -> None:
    """icons/tray-<state>.png are what panel.tray_icon draws (icons/make_icons.py)."""
    for state in panel.TRAY_STATES:
        with Image.open(ROOT / "icons" / f"tray-{state}.png") as stored:
            assert np.array_equal(np.asarray(stored.convert("RGBA")),
                                  np.asarray(panel.tray_icon(state, 64))), state


def test_unknown_tray_state_is_refused() -> None:
    """A misspelt state raises instead of drawing a wrong icon."""
    with pytest.raises(ValueError, match="tray state"):
        panel.tray_icon("green")


# --- choosing the backend ----------------------------------------------------------------


def test_import_panel_needs_no_display_and_loads_no_gui_library() -> None:
    """`import panel` on a headless machine: no tkinter, no Pillow until a window is made."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SPOTLIGHT_PANEL")}
    code = ("import sys, panel; print(sorted(m for m in ('tkinter', 'PIL') if m in "
            "sys.modules)); print(type(panel.make_panel(panel.PanelActions())).__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "LogPanel"]


@pytest.mark.parametrize(("choice", "outcome"), [
    ("", "LogPanel"), ("tk", "PanelError: the tk panel cannot be shown: the session panel "
                            "cannot be shown here: couldn't connect to display"),
])
def test_tk_panel_without_a_reachable_display(choice: str, outcome: str) -> None:
    """DISPLAY names no X server: the default falls back to the log; asked for by name, a
    clear PanelError (and no Tcl crash at exit)."""
    env = {**os.environ, "DISPLAY": ":1999", "SPOTLIGHT_PANEL": choice}
    code = ("import panel\ntry:\n    print(type(panel.make_panel(panel.PanelActions()))"
            ".__name__)\nexcept panel.PanelError as e:\n    print(f'PanelError: {e}')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(outcome), result.stdout


def test_log_panel_does_not_repeat_a_view_that_only_ticked(caplog) -> None:
    """A meter ticking every second is not a log line every second."""
    log_panel = panel.LogPanel()
    with caplog.at_level("INFO", logger="agent.panel"):
        for second in range(5):
            log_panel.show(view(facts("accepted", elapsed_s=second)))
        log_panel.show(view(facts("paused", elapsed_s=5)))
    assert [r.getMessage().split(" | ")[0] for r in caplog.records] == [
        "panel: accepted", "panel: paused"]


def test_panel_choice_log_and_a_wrong_choice(monkeypatch) -> None:
    """SPOTLIGHT_PANEL=log gives the log backend; an unknown value is a clear error."""
    monkeypatch.setenv("SPOTLIGHT_PANEL", "log")
    assert isinstance(panel.make_panel(panel.PanelActions()), panel.LogPanel)
    monkeypatch.setenv("SPOTLIGHT_PANEL", "gtk")
    with pytest.raises(panel.PanelError, match="win32, tk or log"):
        panel.make_panel(panel.PanelActions())


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows refusal")
def test_win32_panel_asked_for_off_windows_says_it_needs_windows(monkeypatch) -> None:
    """SPOTLIGHT_PANEL=win32 on Linux: PanelError, not a ctypes traceback."""
    monkeypatch.setenv("SPOTLIGHT_PANEL", "win32")
    with pytest.raises(panel.PanelError, match="needs Windows"):
        panel.make_panel(panel.PanelActions())


def test_log_panel_writes_each_view_to_the_agents_log(caplog) -> None:
    """The headless backend: state, title and headline in the log."""
    with caplog.at_level("INFO", logger="agent.panel"):
        panel.LogPanel().show(view(facts("waiting", code="482913")))
    assert "waiting" in caplog.text and "Waiting for David to accept" in caplog.text


def test_a_failing_action_is_logged_not_raised(caplog) -> None:
    """A callback that raises must not take the panel's UI thread down."""
    def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level("ERROR", logger="agent.panel"):
        panel.PanelActions(on_end=broken).run("end")
    assert "panel action end failed" in caplog.text


# --- the real Tk panel on Xvfb -----------------------------------------------------------


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run ./dev test, which installs it")


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, timeout=30, capture_output=True,
                          text=True).stdout


def find(title_part: str) -> str:
    """The id of the window whose title contains ``title_part`` (waits for it)."""
    return find_window(re.escape(title_part))


class Pressed:
    """PanelActions that record which callback ran, and on which thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        names = ("pause", "resume", "end", "retry", "dismiss")
        self.actions = panel.PanelActions(**{
            f"on_{n}": (lambda n=n: self.calls.put((n, threading.current_thread().name)))
            for n in names})

    def next(self) -> tuple[str, str]:
        return self.calls.get(timeout=20)


@pytest.fixture
def tk_panel(xvfb, monkeypatch):
    need("xdotool")
    monkeypatch.setenv("SPOTLIGHT_PANEL", "tk")
    pressed = Pressed()
    window = panel.make_panel(pressed.actions)
    assert isinstance(window, panel.TkPanel)
    yield window, pressed
    window.close()


def press(window_id: str, keys: str, click: bool = False) -> None:
    """Type ``keys`` into the window (there is no window manager to give it the focus;
    a Wine window takes the keyboard only once clicked). No --sync on the pointer move:
    xdotool waits 16 s for a move to where the pointer already is."""
    if click:
        xdotool("mousemove", "--window", window_id, "20", "20", "click", "1")
    else:
        xdotool("windowfocus", "--sync", window_id)
    xdotool("key", "--clearmodifiers", keys)


@pytest.mark.x11
def test_tk_panel_found_by_title_keys_call_pause_resume_and_end(tk_panel) -> None:
    """Alt+P pauses, Alt+P again resumes, Alt+E ends; the title follows the state; the
    callbacks run on the panel's thread, not the caller's."""
    window, pressed = tk_panel
    window.show(view(facts("waiting", code="482913")))
    wid = find("482913")
    press(wid, "alt+p")  # Pause is disabled while waiting: nothing happens ...
    press(wid, "alt+e")  # ... as the next recorded press shows
    assert pressed.next() == ("end", "session panel")
    window.show(view(facts("accepted")))
    assert find("can see your screen") == wid
    press(wid, "alt+p")
    assert pressed.next()[0] == "pause"
    window.show(view(facts("paused", paused_s=3)))
    assert find("Paused") == wid
    press(wid, "alt+p")
    assert pressed.next()[0] == "resume"
    window.show(view(facts("control")))
    assert find("mouse and keyboard") == wid
    press(wid, "alt+e")
    assert pressed.next()[0] == "end"


@pytest.mark.x11
def test_tk_panel_retry_after_an_error_and_the_receipt_dismisses_itself(tk_panel) -> None:
    """Alt+R retries after an error; the receipt calls on_dismiss once its time is up."""
    window, pressed = tk_panel
    window.show(view(facts("error")))
    press(find("not connected"), "alt+r")
    assert pressed.next()[0] == "retry"
    receipt = view(facts("ended", elapsed_s=60, ended_at=ENDED_AT, reference="7"))
    window.show(dataclasses.replace(receipt, dismiss_after_s=0.2))
    assert pressed.next()[0] == "dismiss"


@pytest.mark.x11
def test_tk_panel_asks_to_stay_on_top_and_can_be_dragged(tk_panel) -> None:
    """_NET_WM_STATE_ABOVE is set before the window maps; dragging its body moves it."""
    from Xlib import display

    window, _ = tk_panel
    window.show(view(facts("accepted")))
    wid = find("can see your screen")
    d = display.Display()
    try:
        states = d.create_resource_object("window", int(wid)).get_full_property(
            d.intern_atom("_NET_WM_STATE"), 0)
        names = [d.get_atom_name(a) for a in (states.value if states else [])]
    finally:
        d.close()
    assert "_NET_WM_STATE_ABOVE" in names
    before = geometry(wid)
    xdotool("mousemove", "--sync", "--window", wid, "30", "12")
    xdotool("mousedown", "1")
    xdotool("mousemove_relative", "--sync", "--", "-200", "-150")
    xdotool("mouseup", "1")
    moved = (before[0] - 200, before[1] - 150)
    for _ in range(100):  # Tk moves it on its own thread: wait (up to 10 s) until it did
        if geometry(wid) == moved:
            break
        time.sleep(0.1)
    assert geometry(wid) == moved


def geometry(window_id: str) -> tuple[int, int]:
    out = xdotool("getwindowgeometry", "--shell", window_id)
    values = dict(line.split("=") for line in out.split())
    return int(values["X"]), int(values["Y"])


@pytest.mark.x11
def test_tk_panel_draws_every_state_on_a_1280x800_screen(tk_panel) -> None:
    """Each state drawn inside the screen, with the view's headline in the title bar's
    place; screenshots in test-artifacts/panel/ for a person to look at."""
    window, _ = tk_panel
    SHOTS.mkdir(parents=True, exist_ok=True)
    cases = {
        "connecting": {}, "waiting": {"code": "482913"}, "accepted": {"elapsed_s": 75},
        "control": {"elapsed_s": 750}, "paused": {"elapsed_s": 750, "paused_s": 65},
        "reconnecting": {"elapsed_s": 800},
        "error": {"message": "Could not reach the support server.", "phone": "269 998 1389"},
        "ended": {"elapsed_s": 750, "ended_at": ENDED_AT, "reference": "123"},
    }
    for state, extra in cases.items():
        v = view(facts(state, **extra))
        window.show(v)
        wid = find(v.title)
        x, y = geometry(wid)
        size = xdotool("getwindowgeometry", "--shell", wid)
        values = dict(line.split("=") for line in size.split())
        width, height = int(values["WIDTH"]), int(values["HEIGHT"])
        assert 0 <= x and x + width <= 1280 and 0 <= y and y + height <= 800, state
        assert 300 <= width <= 520 and 100 <= height <= 300, (state, width, height)
        with mss.MSS() as sct:
            shot = sct.grab({"left": x, "top": y, "width": width, "height": height})
        image = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
        image.save(SHOTS / f"tk-{state}.png")
        ink = np.count_nonzero(np.asarray(image.convert("L")) < 100)
        assert ink > 400, f"{state}: hardly any text drawn ({ink} dark pixels)"


# --- the real Win32 panel under Wine -----------------------------------------------------

WIN32_DRIVER = r"""
import ctypes, sys
from datetime import datetime
sys.path.insert(0, sys.argv[1])
import panel

def say(text):
    print(text, flush=True)

actions = panel.PanelActions(**{f"on_{n}": (lambda n=n: say(f"action {n}"))
                                for n in ("pause", "resume", "end", "retry", "dismiss")})
window = panel.make_panel(actions)
say(f"backend {type(window).__name__}")
extra = {"waiting": {"code": "482913"}, "paused": {"elapsed_s": 750, "paused_s": 65},
         "control": {"elapsed_s": 750}, "accepted": {"elapsed_s": 75},
         "reconnecting": {"elapsed_s": 800},
         "error": {"message": "Could not reach the support server.", "phone": "269 998 1389"},
         "ended": {"elapsed_s": 750, "ended_at": datetime(2026, 12, 1, 14, 32),
                   "reference": "123"}}
for line in sys.stdin:
    state = line.strip()
    if state == "quit":
        break
    v = panel.view(panel.SessionFacts(state, "Spotlight", "David", **extra.get(state, {})))
    window.show(v)
    user32 = ctypes.WinDLL("user32")
    user32.FindWindowW.restype = ctypes.c_void_p
    user32.GetWindowLongW.argtypes = [ctypes.c_void_p, ctypes.c_int]
    hwnd = None
    while not hwnd:  # the panel's thread sets the title; the test's timeout bounds this
        hwnd = user32.FindWindowW(None, v.title)
    topmost = bool(user32.GetWindowLongW(hwnd, -20) & 0x8)  # GWL_EXSTYLE, WS_EX_TOPMOST
    say(f"shown topmost={topmost} {v.title}")
window.close()
say("closed")
"""


@pytest.fixture(scope="module")
def wine_python(xvfb):
    """The Windows build's python.exe (made by packaging/build-windows.sh when missing) and
    the environment of a Wine prefix of its own to run it in (kept between runs: this test
    runs the panel module from source, not the exe, so nothing installed is at stake)."""
    need("wine", "wineserver", "wineboot", "xdotool")
    python = wine_helpers.CACHE / "python" / "python.exe"
    if not (wine_helpers.CACHE / "python" / ".spotlight-ready").is_file():
        wine_helpers.build_windows_exe()
    prefix = wine_helpers.CACHE / "panel-prefix"
    env = {**wine_helpers.wine_env(prefix, xvfb.name), "SPOTLIGHT_PANEL": "win32"}
    if not (prefix / ".spotlight-ready").is_file():
        wine_helpers.init_prefix(env)
        (prefix / ".spotlight-ready").touch()
    yield python, env
    wine_helpers.stop_wine(env)


class WineDriver:
    """WIN32_DRIVER under Wine: states in on stdin, what happened out on stdout. Wine's
    output goes through a pipe (never a file) and its stdin stays open."""

    def __init__(self, python: Path, env: dict, tmp_path: Path) -> None:
        script = tmp_path / "win32_panel_driver.py"
        script.write_text(WIN32_DRIVER, encoding="utf-8")
        self.process = subprocess.Popen(
            ["wine", str(python), windows_path(script), windows_path(ROOT)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=60)
        self.reader.join(timeout=60)  # it ends at the pipe's end, then the pipes can close
        self.process.stdin.close()
        self.process.stdout.close()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self) -> str:
        line = self.lines.get(timeout=60)
        assert line is not None, "the Windows Python ended early"
        return line

    def show(self, state: str) -> str:
        """Show ``state``; the window's title, once the window has it."""
        self.process.stdin.write(state + "\n")
        self.process.stdin.flush()
        line = self.next()
        assert line.startswith("shown topmost=True "), line
        return line.split(" ", 2)[2]


@pytest.mark.wine
@pytest.mark.build  # builds the Windows toolchain (packaging/build-windows.sh) when missing
@pytest.mark.x11
@pytest.mark.timeout(1800)  # a Windows toolchain made from nothing takes minutes
def test_win32_panel_under_wine_is_topmost_found_by_title_and_keys_work(wine_python,
                                                                        tmp_path) -> None:
    """The ctypes window in the Windows build's Python: WS_EX_TOPMOST, the title follows
    the state, Alt+P pauses/resumes and Alt+E ends; screenshots of every state."""
    python, env = wine_python
    driver = WineDriver(python, env, tmp_path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        assert driver.next() == "backend Win32Panel"
        for state, keys, expected in [
            ("waiting", ["alt+p", "alt+e"], "end"),  # Pause is disabled while waiting
            ("accepted", ["alt+p"], "pause"), ("paused", ["alt+p"], "resume"),
            ("control", ["alt+e"], "end"), ("connecting", [], ""), ("reconnecting", [], ""),
            ("error", ["alt+r"], "retry"), ("ended", ["alt+c"], "dismiss"),
        ]:
            title = driver.show(state)
            wid = find(title)
            if state == "waiting":
                assert "482913" in title
            x, y = geometry(wid)
            size = dict(v.split("=") for v in xdotool("getwindowgeometry", "--shell",
                                                      wid).split())
            with mss.MSS() as sct:
                shot = sct.grab({"left": x, "top": y, "width": int(size["WIDTH"]),
                                 "height": int(size["HEIGHT"])})
            Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX").save(
                SHOTS / f"win32-{state}.png")
            for key in keys:
                press(wid, key, click=True)
            if keys:
                assert driver.next() == f"action {expected}"
        driver.process.stdin.write("quit\n")
        driver.process.stdin.flush()
        assert driver.next() == "closed"
        assert driver.process.wait(timeout=60) == 0
    finally:
        driver.close()


@pytest.mark.x11
def test_tk_file_window_opens_in_the_tk_panels_interpreter_and_the_panel_goes_on(
        tk_panel) -> None:
    """With a Tk panel up, the file window is a Toplevel of its Tk (no second interpreter
    and UI thread): it asks, Enter saves, it closes, and the panel still answers its keys."""
    import file_window

    window, pressed = tk_panel
    window.show(view(facts("accepted")))
    panel_id = find("can see your screen")
    answers: queue.Queue = queue.Queue()
    files = file_window.TkFileWindow()
    try:
        assert panel.tk_host() is not None
        assert "file window" not in [t.name for t in threading.enumerate()]
        files.ask("David sends you a file", "notes.txt", "12 bytes", answers.put,
                  lambda: answers.put("cancelled"))
        press(find("David sends you a file"), "Return")
        assert answers.get(timeout=20) is True
        files.failed("notes.txt was not saved: the disk is full")
        assert find("File not saved")
    finally:
        files.close()
    press(panel_id, "alt+e")
    assert pressed.next() == ("end", "session panel")


@pytest.mark.x11
def test_a_file_window_made_on_the_panels_own_thread_appears_at_once(xvfb, monkeypatch) -> None:
    """A file window made by a panel button's callback (on the panel's thread) is made there
    and then, not queued behind the call that makes it (which would wait for ever)."""
    import file_window

    need("xdotool")
    monkeypatch.setenv("SPOTLIGHT_PANEL", "tk")
    made: queue.Queue = queue.Queue()

    def send_file() -> None:
        files = file_window.TkFileWindow()
        files.sending("Sending to David", "Sending notes.txt to David", lambda: None)
        made.put(files)

    window = panel.make_panel(panel.PanelActions(on_send_file=send_file))
    try:
        window.show(view(facts("accepted")))
        press(find("can see your screen"), "alt+f")
        files = made.get(timeout=20)
        assert find("Sending to David")
        files.close()
    finally:
        window.close()
