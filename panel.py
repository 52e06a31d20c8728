"""The customer's session panel: a small always-on-top window that says what is happening.

    SessionFacts --view()--> PanelView --Panel.show()--> a window (Tk, Win32) or the log

``view`` is pure: every sentence, the window title, which buttons are shown and enabled, the
tray icon's state and tooltip. The windows only draw a PanelView and report button presses
through ``PanelActions``; they run their own UI thread, their public methods may be called
from any thread (the agent's asyncio loop), and the callbacks run on the UI thread.
``tray_icon`` draws the tray icons: each state has its own symbol, not only its own colour.

Backends, chosen in one place by ``make_panel`` (SPOTLIGHT_PANEL=win32|tk|log overrides):
``Win32Panel`` (ctypes: the Windows build's embeddable Python has no tkinter), ``TkPanel``
(from source on Linux) and ``LogPanel`` (headless: each view goes to the log). Each imports
its library only when created, so ``import panel`` works on a machine without a display.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import panel_chat

log = logging.getLogger("agent.panel")  # the agent's log handlers see it without set-up

# --- constants -------------------------------------------------------------------------

STATES = ("connecting", "error", "waiting", "accepted", "control", "paused", "reconnecting",
          "ended")
RECEIPT_SHOWN_S = 8.0  # a normal end: the receipt closes itself after this
UI_POLL_MS = 40  # how often the Tk thread looks for calls from other threads
START_TIMEOUT_S = 10.0  # a window that cannot appear within this falls back to the log
MARGIN_PX = 24  # from the screen's right edge and the work area's bottom
TASKBAR_PX = 56  # Tk knows no work area: room left at the bottom for a panel or dock
PANEL_WIDTH_PX = 490  # the receipt line fits on one line
CODE_DIGITS = 6
NBSP = "\u00a0"

# Tray icon per state: yellow while waiting and green once accepted, as the customer was
# promised; grey while the link is down. The symbol, not the hue, tells the states apart.
TRAY_STATES = ("pending", "active", "control", "paused", "reconnecting")
TRAY_COLOURS = {"pending": (242, 190, 0), "active": (40, 170, 70), "control": (40, 170, 70),
                "paused": (40, 170, 70), "reconnecting": (150, 150, 150)}
INK = (30, 30, 30, 255)  # symbols and rim: dark reads on yellow, green and grey alike
PAPER = (255, 255, 255, 255)


class PanelError(Exception):
    """The window asked for cannot be shown here (no display, no library)."""


# --- the view model --------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFacts:
    """What the session core knows, all the panel needs. Bad values raise ValueError."""

    state: str
    company: str
    person: str  # the support person's display name
    code: str = ""  # the relay's six-digit session code, "" until known
    elapsed_s: float = 0.0  # billed seconds so far: from acceptance, paused time excluded
    paused_s: float = 0.0
    message: str = ""  # a plain sentence: what failed (error) or why it ended (ended)
    failed: bool = False  # ended by a refusal or a lost link: the sentence stays until read
    phone: str = ""  # the company's phone number from the configuration, "" if none
    ended_at: datetime | None = None  # local time the session ended
    reference: str = ""  # the ledger row's reference, "" when the relay did not say
    can_elevate: bool = False  # Windows, not yet elevated: offer Restart as administrator

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown panel state {self.state!r}")
        if not self.company or not self.person:
            raise ValueError("the panel needs the company's and the support person's names")
        if self.code and not (len(self.code) == CODE_DIGITS and self.code.isascii()
                              and self.code.isdigit()):
            raise ValueError(f"a session code is {CODE_DIGITS} digits, not {self.code!r}")
        if self.elapsed_s < 0 or self.paused_s < 0:
            raise ValueError("elapsed and paused seconds cannot be negative")


@dataclass(frozen=True)
class Button:
    """A push button. Its label is also the name a screen reader says (Win32 buttons are
    named by their text), with Alt+key as the keyboard shortcut."""

    action: str  # a PanelActions callback without "on_": pause, resume, end, retry, dismiss,
    # elevate
    label: str
    key: str  # Alt+key presses it; its letter is underlined in the label
    enabled: bool = True

    @property
    def underline(self) -> int:
        """Index of the mnemonic letter in ``label``; -1 when it has none (Resume: Alt+P
        toggles, as Pause's letter)."""
        return self.label.lower().find(self.key)

    @property
    def win32_text(self) -> str:
        """The label with "&" before the mnemonic (Windows underlines it and reads Alt+key)."""
        i = self.underline
        return f"{self.label[:i]}&{self.label[i:]}" if i >= 0 else self.label


@dataclass(frozen=True)
class PanelView:
    """One rendering of the panel: every text in it, and what each control does."""

    state: str
    title: str  # carries the state, the person once accepted, the code's digits while waiting
    headline: str
    detail: str
    code: str  # grouped for reading aloud ("482 913"), "" when none is shown
    meter: str  # the billed time, always shown
    phone: str  # "" when no number is configured or none is needed
    progress: bool  # a moving bar: something is under way
    buttons: tuple[Button, ...]
    close_action: str  # what the window's close box does (an action name)
    dismiss_after_s: float | None  # the receipt closes itself after this; None: stays
    tray_state: str | None  # a TRAY_STATES icon, None: no icon
    tooltip: str

    def button(self, key: str) -> Button | None:
        """The enabled button Alt+``key`` presses, if any."""
        return next((b for b in self.buttons if b.key == key and b.enabled), None)


def _buttons(state: str, can_elevate: bool = False) -> tuple[Button, ...]:
    if state == "error":
        return (Button("retry", "Retry", "r"), Button("dismiss", "Close", "c"))
    if state == "ended":
        return (Button("dismiss", "Close", "c"),)
    toggle = Button("resume", "Resume", "p") if state == "paused" else \
        Button("pause", "Pause", "p", state in ("accepted", "control"))
    # (agent_elevation.py: the same program restarts with the rights, in the same session)
    elevate = (Button("elevate", "Restart as administrator", "a",
                      state in ("waiting", "accepted", "control")),) if can_elevate else ()
    return (toggle, Button("end", "End session", "e"), *elevate)


def _send_file(state: str, person: str) -> tuple[Button, ...]:
    """Files go to the support person only while they watch (file_window.FileDesk)."""
    if state not in ("accepted", "control"):
        return ()
    return (Button("send_file", f"Send a file to {person}…", "f"),)


def view(facts: SessionFacts) -> PanelView:
    """What the panel shows for ``facts``: pure, the same facts give the same view."""
    f = facts
    company, person, state = f.company, f.person, f.state
    # whole minutes: a meter counting seconds changed the customer's screen every second, so
    # the agent streamed its own panel once a second and never went idle (bench/RESULTS.md)
    meter = f"Session time {minutes_text(f.elapsed_s)}"
    if state in ("connecting", "waiting"):
        meter = f"Session time starts when {person} accepts"
    elif f.paused_s and state != "ended":
        meter += f" · paused {minutes_text(f.paused_s)}, not billed"
    busy = "You can pause or end the session at any time."
    code, tray, dismiss_after, phone = "", None, None, ""
    close_action = "end"
    if state == "connecting":
        title = "connecting"
        headline, detail = f"Connecting to {company}…", f"Nothing is shared until {person} " \
            "accepts."
        tooltip = headline
    elif state == "error":
        title, close_action = "not connected", "dismiss"
        headline = f.message or f"Could not connect to {company}."
        detail = "Press Retry to try again."
        phone = f"If it keeps failing, call {company}: {f.phone}" if f.phone else ""
        tooltip = headline
    elif state == "waiting":
        title = f"waiting for {person}" + (f", code {f.code}" if f.code else "")
        headline, tray = f"Waiting for {person} to accept", "pending"
        detail = f"Your session code, if {person} asks for it:" if f.code else \
            f"Nothing is shared until {person} accepts."
        code = group_code(f.code)
        tooltip = f"Waiting for {person} to accept"
    elif state == "accepted":
        title = headline = tooltip = f"{person} ({company}) can see your screen"
        detail, tray = busy, "active"
    elif state == "control":
        title = headline = tooltip = f"{person} is using your mouse and keyboard"
        detail, tray = busy, "control"
    elif state == "paused":
        title = headline = tooltip = f"Paused: {person} cannot see your screen"
        detail, tray = "Paused time is not billed. Press Resume (Alt+P) to continue.", "paused"
    elif state == "reconnecting":
        title = f"reconnecting, {person}"
        headline, tray = f"Reconnecting to {company}…", "reconnecting"
        detail = f"The connection was interrupted. {person} cannot see your screen meanwhile."
        tooltip = f"Reconnecting to {company}"
    else:  # ended
        title, close_action, headline = f"session with {person} ended", "dismiss", receipt(f)
        parts = [f.message] if f.message else []
        if f.paused_s >= 1:  # a pause shorter than a second is not worth a sentence
            parts.append(f"Paused time ({duration_text(f.paused_s)}) was not billed.")
        detail = " ".join(parts) or "To connect again, run the program again."
        dismiss_after = None if f.failed else RECEIPT_SHOWN_S
        tooltip = headline
    return PanelView(
        state=state, title=f"{company} support: {title}", headline=headline, detail=detail,
        code=code, meter=meter, phone=phone, progress=state in ("connecting", "reconnecting"),
        buttons=_buttons(state, f.can_elevate) + _send_file(state, person),
        close_action=close_action,
        dismiss_after_s=dismiss_after, tray_state=tray, tooltip=tooltip)


def receipt(f: SessionFacts) -> str:
    """ "Session with David ended 14:32 · 12 min 30 s · ref 123" (parts left out if unknown).
    The duration and the reference are each held together by no-break spaces: a line that
    must wrap breaks between the parts, never inside "ref 123"."""
    parts = [f"Session with {f.person} ended" + (
        f" {f.ended_at:%H:%M}" if f.ended_at is not None else ""), duration_text(f.elapsed_s)]
    if f.reference:
        parts.append(f"ref {f.reference}")
    return " · ".join([parts[0], *(part.replace(" ", NBSP) for part in parts[1:])])


def group_code(code: str) -> str:
    """ "482913" -> "482 913": two groups of three are easier to read aloud."""
    return f"{code[:3]} {code[3:]}" if code else ""


def minutes_text(seconds: float) -> str:
    """A running meter in whole minutes: under 1 min, 12 min, 1 h 2 min (the receipt and
    the ledger keep the seconds)."""
    m = int(seconds) // 60
    if not m:
        return "under 1 min"
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def duration_text(seconds: float) -> str:
    """A duration in words for the receipt: 45 s, 12 min 30 s, 1 h 2 min."""
    s = int(seconds)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    parts = [f"{h} h"] * bool(h) + [f"{m} min"] * bool(m) + [f"{s} s"] * bool(s)
    return " ".join(parts) or "0 s"


class Meter:
    """The billed clock: runs from acceptance, stands still while paused. Time passed in."""

    def __init__(self) -> None:
        self._started: float | None = None
        self._paused_at: float | None = None
        self._ended_at: float | None = None
        self._paused_before = 0.0  # in finished pauses

    def start(self, now: float) -> None:
        if self._started is None:
            self._started = now

    def pause(self, now: float) -> None:
        if self._started is not None and self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self._paused_at is not None:
            self._paused_before += now - self._paused_at
            self._paused_at = None

    def stop(self, now: float) -> None:
        self.resume(now)
        if self._ended_at is None:
            self._ended_at = now

    def paused_s(self, now: float) -> float:
        now = min(now, self._ended_at) if self._ended_at is not None else now
        running = now - self._paused_at if self._paused_at is not None else 0.0
        return self._paused_before + running

    def elapsed_s(self, now: float) -> float:
        if self._started is None:
            return 0.0
        end = min(now, self._ended_at) if self._ended_at is not None else now
        return max(0.0, end - self._started - self.paused_s(now))


# --- tray icons ------------------------------------------------------------------------


def tray_icon(state: str, size: int = 64) -> Any:
    """The tray icon for ``state``: a disc in the state's colour with the state's symbol
    (hourglass: waiting; eye: watching; arrow: in control; bars: paused; circling arrow:
    reconnecting), drawn 4x and smoothed. The symbol stays inside the middle half, so the
    disc's colour still shows a quarter of the way in from the left edge."""
    from PIL import Image, ImageDraw

    if state not in TRAY_COLOURS:
        raise ValueError(f"unknown tray state {state!r}")
    big = size * 4
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    rim = max(4, big // 16)
    draw.ellipse((rim // 2, rim // 2, big - rim // 2 - 1, big - rim // 2 - 1),
                 fill=(*TRAY_COLOURS[state], 255), outline=INK, width=rim)
    c, u = big / 2, big / 100  # the centre, and one hundredth of the icon
    _SYMBOLS[state](draw, c, u)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _hourglass(draw: Any, c: float, u: float) -> None:
    w, h = 18 * u, 22 * u
    draw.polygon([(c - w, c - h), (c + w, c - h), (c, c), (c + w, c + h), (c - w, c + h),
                  (c, c)], fill=INK)


def _eye(draw: Any, c: float, u: float) -> None:
    w, h = 19 * u, 13 * u
    draw.ellipse((c - w, c - h, c + w, c + h), fill=PAPER, outline=INK, width=int(4 * u))
    draw.ellipse((c - 8 * u, c - 8 * u, c + 8 * u, c + 8 * u), fill=INK)


def _arrow(draw: Any, c: float, u: float) -> None:
    x, y = c - 12 * u, c - 22 * u  # a mouse pointer, tip at the top left
    tip = [(x, y), (x, y + 38 * u), (x + 10 * u, y + 29 * u), (x + 17 * u, y + 44 * u),
           (x + 24 * u, y + 40 * u), (x + 17 * u, y + 26 * u), (x + 29 * u, y + 26 * u)]
    draw.polygon(tip, fill=PAPER, outline=INK, width=int(4 * u))


def _bars(draw: Any, c: float, u: float) -> None:
    for left in (c - 18 * u, c + 5 * u):
        draw.rectangle((left, c - 20 * u, left + 13 * u, c + 20 * u), fill=INK)


def _circling(draw: Any, c: float, u: float) -> None:
    r, w, end = 17 * u, int(8 * u), 290  # degrees clockwise from 3 o'clock, y down
    draw.arc((c - r, c - r, c + r, c + r), 345, end, fill=INK, width=w)
    # the arrowhead where the arc stops short of 2 o'clock, pointing on clockwise
    a = math.radians(end)
    out, along = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))
    at = (c + r * out[0], c + r * out[1])
    draw.polygon([(at[0] + 11 * u * out[0], at[1] + 11 * u * out[1]),
                  (at[0] - 11 * u * out[0], at[1] - 11 * u * out[1]),
                  (at[0] + 13 * u * along[0], at[1] + 13 * u * along[1])], fill=INK)


_SYMBOLS: dict[str, Callable[[Any, float, float], None]] = {
    "pending": _hourglass, "active": _eye, "control": _arrow, "paused": _bars,
    "reconnecting": _circling}


# --- backends --------------------------------------------------------------------------


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class PanelActions:
    """What the buttons do; called on the panel's UI thread, so each must be thread-safe
    (as Agent.request_close is)."""

    on_pause: Callable[[], None] = _nothing
    on_resume: Callable[[], None] = _nothing
    on_end: Callable[[], None] = _nothing
    on_retry: Callable[[], None] = _nothing
    on_dismiss: Callable[[], None] = _nothing
    on_elevate: Callable[[], None] = _nothing
    on_send_file: Callable[[], None] = _nothing
    on_chat: Callable[[str], None] = lambda _text: None  # the customer sent a chat line

    def run(self, action: str) -> None:
        try:
            getattr(self, f"on_{action}")()
        except Exception:  # a failing callback must not take the window down with it
            log.exception("panel action %s failed", action)


class Panel(Protocol):
    def show(self, view: PanelView) -> None:
        """Show the window (first call) or redraw it; any thread."""

    def to_front(self) -> None:
        """Bring the window up and in front (a second start of the program asks for it)."""

    def chat(self, view: panel_chat.ChatView) -> None:
        """Show the chat area (panel_chat.py); any thread."""

    def close(self) -> None:
        """Remove the window and end its thread; any thread, more than once is fine."""


class LogPanel:
    """SPOTLIGHT_PANEL=log, or no display: each view written to the log (a view that
    differs only by its meter is not, or a ticking meter would write a line a second)."""

    def __init__(self) -> None:
        self._last: tuple = ()
        self._chat: panel_chat.ChatView | None = None

    def chat(self, view: panel_chat.ChatView) -> None:
        panel_chat.log_chat(self._chat, view)
        self._chat = view

    def show(self, view: PanelView) -> None:
        said = (view.state, view.title, view.headline, view.detail, view.code)
        if said != self._last:
            self._last = said
            log.info("panel: %s | %s | %s | %s", view.state, view.title, view.headline,
                     view.meter)

    def to_front(self) -> None:
        log.info("panel: to the front")

    def close(self) -> None:
        log.info("panel: closed")


def _only_the_meter(before: PanelView | None, after: PanelView) -> bool:
    """Whether ``after`` differs from ``before`` in the meter's text alone."""
    return before is not None and before != after and \
        dataclasses.replace(after, meter=before.meter) == before


class _UiThread:
    """One window made, used and dropped on its own thread (Tcl and Win32 both insist on
    that); other threads only queue calls to it, which the window drains as it runs."""

    def __init__(self, make_window: Callable[[_UiThread], Any], what: str) -> None:
        self._make, self._what = make_window, what
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failure = ""
        self._window: Any = None
        self._thread = threading.Thread(target=self._run, name=what, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise PanelError(f"the {what} did not appear within {START_TIMEOUT_S:.0f} s")
        if self._failure:
            raise PanelError(f"the {what} cannot be shown here: {self._failure}")

    def call(self, name: str, *args: Any) -> None:
        """Run ``window.<name>(*args)`` on the UI thread, after the calls queued before it."""
        self._calls.put((name, args))
        window = self._window
        if window is not None:
            window.wake()  # thread-safe by contract

    def drain(self) -> None:
        """The UI thread: run what other threads queued."""
        with contextlib.suppress(queue.Empty):
            while self._window is not None:
                name, args = self._calls.get_nowait()
                getattr(self._window, name)(*args)

    def alive(self) -> bool:
        """Whether the window is up and its thread drains calls."""
        return self._window is not None and self._thread.is_alive()

    def on_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def run_here(self, name: str, *args: Any) -> None:
        """The UI thread: run ``window.<name>(*args)`` now, ahead of the queued calls."""
        getattr(self._window, name)(*args)

    def stop(self) -> None:
        """Close the window and wait (briefly) for its thread to end."""
        if self._thread.is_alive():
            self.call("close")
            if self._thread is not threading.current_thread():
                self._thread.join(START_TIMEOUT_S)

    def _run(self) -> None:
        try:
            self._window = self._make(self)
        except Exception as e:  # no display, no library: the caller falls back to the log
            # only the words leave this thread: the traceback's frames hold Tcl objects
            self._failure = str(e) or type(e).__name__
            del e
            gc.collect()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._window.loop()
        except Exception:
            log.exception("the %s failed", self._what)
        finally:
            self._window = None
            gc.collect()  # Tcl objects caught in cycles must die on this thread, not later


class _ThreadedPanel:
    """A Panel whose window lives on its own UI thread; every public method is thread-safe."""

    def __init__(self, make_window: Callable[[_UiThread], Any]) -> None:
        self._ui = _UiThread(make_window, "session panel")

    def show(self, view: PanelView) -> None:
        self._ui.call("show", view)

    def to_front(self) -> None:
        self._ui.call("to_front")

    def chat(self, view: panel_chat.ChatView) -> None:
        self._ui.call("chat", view)

    def close(self) -> None:
        self._ui.stop()


_tk_host: _UiThread | None = None  # the live TkPanel's UI thread (tk_host)


def tk_host() -> _UiThread | None:
    """The UI thread of the Tk panel that is up, if any: other Tk windows (the file window)
    are made there, as Toplevels in the panel's Tcl interpreter: a Tk of their own costs
    5-6 MB more (a second interpreter, its fonts and its thread)."""
    host = _tk_host
    return host if host is not None and host.alive() else None


class TkPanel(_ThreadedPanel):
    """Linux, from source: a Tk window kept on top (Tk sets _NET_WM_STATE_ABOVE for
    -topmost), draggable by its body, Alt+P / Alt+E / Alt+R / Alt+C press its buttons.
    Its Tk also hosts the file window (tk_host)."""

    def __init__(self, actions: PanelActions) -> None:
        import tkinter  # noqa: F401 (fail here, in the caller's thread, when it is missing)

        global _tk_host
        super().__init__(lambda ui: _TkWindow(ui, actions))
        _tk_host = self._ui

    def close(self) -> None:
        global _tk_host
        if _tk_host is self._ui:
            _tk_host = None
        super().close()


class Win32Panel(_ThreadedPanel):
    """Windows (the exe, whose embeddable Python has no tkinter): a native window through
    ctypes, WS_EX_TOPMOST, dragged by its body, the same Alt+ shortcuts through an
    accelerator table, buttons named by their text for screen readers."""

    def __init__(self, actions: PanelActions) -> None:
        import ctypes

        if not hasattr(ctypes, "WinDLL"):
            raise PanelError("the Win32 panel needs Windows")
        super().__init__(lambda ui: _Win32Window(ui, actions))


class _TkWindow:
    """The Tk side of TkPanel: every method runs on the panel's thread."""

    def __init__(self, ui: _UiThread, actions: PanelActions) -> None:
        import tkinter as tk
        from tkinter import font, ttk

        self._ui, self._actions, self._ttk = ui, actions, ttk
        self._view: PanelView | None = None
        self._dragged = False  # once the customer moved it, it stays where they put it
        self._grab: tuple[int, int] | None = None
        root = self._root = tk.Tk(className="SpotlightPanel")
        root.withdraw()  # mapped by the first view, placed and on top before it shows
        root.resizable(False, False)
        root.attributes("-topmost", True)
        root.report_callback_exception = lambda *exc: log.error("panel: %r", exc[1],
                                                                exc_info=exc)
        root.protocol("WM_DELETE_WINDOW", self._close_box)
        ttk.Style(root).theme_use("clam")
        family = font.nametofont("TkDefaultFont").actual()["family"]
        bold = font.Font(root, family=family, size=11, weight="bold")
        big = font.Font(root, family=family, size=20, weight="bold")
        frame = ttk.Frame(root, padding=(14, 12, 14, 12))
        frame.pack(fill="both", expand=True)
        wrap = PANEL_WIDTH_PX - 28
        ttk.Frame(frame, width=wrap, height=0).pack()  # one width for every state
        self._headline = ttk.Label(frame, font=bold, wraplength=wrap, justify="left")
        self._detail = ttk.Label(frame, wraplength=wrap, justify="left")
        self._code = ttk.Label(frame, font=big)
        self._progress = ttk.Progressbar(frame, mode="indeterminate", length=wrap)
        self._phone = ttk.Label(frame, wraplength=wrap, justify="left")
        self._meter = ttk.Label(frame, foreground="#444444")
        self._row = ttk.Frame(frame)
        self._buttons: list[Any] = []
        self._dismiss_timer: str | None = None
        root.bind("<ButtonPress-1>", self._drag_start)  # the toplevel's tag: every widget
        root.bind("<B1-Motion>", self._drag)
        for key in KEYS:  # either case: Caps Lock must not break the shortcuts
            for keysym in (key, key.upper()):
                root.bind(f"<Alt-KeyPress-{keysym}>", lambda _e, k=key: self._press_key(k))
        root.after(UI_POLL_MS, self._poll)
        self._chat = panel_chat.TkChat(root, wrap, actions.on_chat)

    def chat(self, view: panel_chat.ChatView) -> None:
        if self._chat.show(view) and self._view is not None:
            self._place()

    def wake(self) -> None:
        pass  # _poll looks for calls every UI_POLL_MS (Tk offers no thread-safe wake-up)

    def guest(self, run: Callable[[Any], None]) -> None:
        """Run ``run(root)`` here: a window hosted in this Tk (tk_host) made or used."""
        run(self._root)

    def loop(self) -> None:
        try:
            self._root.mainloop()
        finally:
            with contextlib.suppress(Exception):
                self._root.destroy()

    def _poll(self) -> None:
        self._ui.drain()
        self._root.after(UI_POLL_MS, self._poll)

    def close(self) -> None:
        self._root.quit()

    def show(self, v: PanelView) -> None:
        if _only_the_meter(self._view, v):  # the meter's tick: buttons and focus stay put
            self._view = v
            self._meter.configure(text=v.meter)
            return
        first, self._view, root = self._view is None, v, self._root
        for label, text in ((self._headline, v.headline), (self._detail, v.detail),
                            (self._code, v.code), (self._phone, v.phone),
                            (self._meter, v.meter)):
            label.configure(text=text)
        rows = [(self._headline, True), (self._detail, bool(v.detail)),
                (self._code, bool(v.code)), (self._progress, v.progress),
                (self._phone, bool(v.phone)), (self._meter, True), (self._row, True)]
        for widget, _ in rows:
            widget.pack_forget()
        for widget, shown in rows:
            if shown:
                widget.pack(anchor="w", pady=(6, 0) if widget is self._row else (0, 6))
        (self._progress.start if v.progress else self._progress.stop)()
        self._show_buttons(v.buttons)
        if self._dismiss_timer is not None:
            root.after_cancel(self._dismiss_timer)
            self._dismiss_timer = None
        if v.dismiss_after_s is not None:
            self._dismiss_timer = root.after(int(v.dismiss_after_s * 1000),
                                             lambda: self._actions.run("dismiss"))
        self._place()
        if first:
            root.deiconify()
        root.update_idletasks()
        root.title(v.title)  # last: whoever finds the window by its title finds it drawn

    def _place(self) -> None:
        if not self._dragged:  # bottom right, above where a taskbar usually is
            root = self._root
            root.update_idletasks()
            x = root.winfo_screenwidth() - root.winfo_reqwidth() - MARGIN_PX
            y = root.winfo_screenheight() - root.winfo_reqheight() - MARGIN_PX - TASKBAR_PX
            root.geometry(f"+{max(0, x)}+{max(0, y)}")

    def _show_buttons(self, buttons: tuple[Button, ...]) -> None:
        for widget in self._buttons:
            widget.destroy()
        self._buttons = []
        for b in buttons:
            widget = self._ttk.Button(self._row, text=b.label, underline=b.underline,
                                      command=lambda a=b.action: self._actions.run(a))
            widget.state(["!disabled"] if b.enabled else ["disabled"])
            widget.pack(side="left", padx=(0, 8))
            self._buttons.append(widget)

    def _press_key(self, key: str) -> None:
        button = self._view.button(key) if self._view is not None else None
        if button is not None:
            self._actions.run(button.action)

    def _close_box(self) -> None:
        if self._view is not None:
            self._actions.run(self._view.close_action)

    def to_front(self) -> None:
        self._root.deiconify()
        self._root.lift()
        self._root.attributes("-topmost", True)

    def _drag_start(self, event: Any) -> None:
        if getattr(event.widget, "winfo_class", str)() in ("TButton", "TEntry", "Text"):
            self._grab = None  # a press on a button or in the chat is a click, not a drag
        else:
            self._grab = (event.x_root - self._root.winfo_x(),
                          event.y_root - self._root.winfo_y())

    def _drag(self, event: Any) -> None:
        if self._grab is None:
            return
        self._dragged = True
        dx, dy = self._grab
        self._root.geometry(f"+{event.x_root - dx}+{event.y_root - dy}")


# Win32 messages and styles used by _Win32Window (winuser.h)
WM_DESTROY, WM_CLOSE, WM_SETFONT, WM_NCHITTEST, WM_COMMAND = 0x02, 0x10, 0x30, 0x84, 0x111
WM_TIMER, WM_EXITSIZEMOVE, WM_APP, PBM_SETPOS = 0x113, 0x232, 0x8000, 0x402
WS_CHILD, WS_VISIBLE, WS_CAPTION, WS_SYSMENU = 0x40000000, 0x10000000, 0xC00000, 0x80000
WS_MINIMIZEBOX, WS_TABSTOP, WS_EX_TOPMOST, WS_EX_CONTROLPARENT = 0x20000, 0x10000, 0x8, 0x10000
SS_NOPREFIX, DT_CALCRECT, DT_WORDBREAK, DT_NOPREFIX = 0x80, 0x400, 0x10, 0x800
HTCLIENT, HTCAPTION, SW_HIDE, SW_SHOWNOACTIVATE, SW_RESTORE = 1, 2, 0, 4, 9
SWP_NOACTIVATE, HWND_TOPMOST, SPI_GETWORKAREA, COLOR_BTNFACE = 0x10, -1, 0x30, 15
FALT, FVIRTKEY, ICC_PROGRESS_CLASS, IDC_ARROW = 0x10, 0x01, 0x20, 32512
RDW_INVALIDATE, RDW_UPDATENOW, RDW_ALLCHILDREN = 0x1, 0x100, 0x80
PROGRESS_TIMER, DISMISS_TIMER, PROGRESS_STEP_MS = 1, 2, 50
ACTIONS = ("pause", "resume", "end", "retry", "dismiss", "send_file",
           "elevate")  # button ids 101...
KEYS = "percfa"  # accelerator ids 201... (f: Send a file, a: Restart as administrator)


class _Win32Window:
    """The Win32 side of Win32Panel: every method runs on the panel's thread."""

    def __init__(self, ui: _UiThread, actions: PanelActions) -> None:
        import ctypes
        from ctypes import wintypes as w

        self._ui, self._actions, self._c, self._w = ui, actions, ctypes, w
        self._view: PanelView | None = None
        self._dragged = False
        self._placed_at = (0, 0)
        self._progress_at = 0
        u32, gdi = self._u32, self._gdi = _win32_api(ctypes, w)
        self._proc = _WNDPROC(ctypes, w)(self._window_proc)  # kept: Windows calls it
        self._class = f"SpotlightPanel{id(self)}"
        self._style = WS_CAPTION | WS_SYSMENU | WS_MINIMIZEBOX
        self._ex_style = WS_EX_TOPMOST | WS_EX_CONTROLPARENT
        frame = Win32Frame(ctypes, w, u32, gdi, self._proc, self._class, self._style,
                           self._ex_style)
        self._hwnd, self._scale, child = frame.hwnd, frame.scale, frame.child
        self._fonts = [frame.font(10), frame.font(11, True), frame.font(20, True)]
        body, bold, big = self._fonts
        self._texts = {name: (child("STATIC", SS_NOPREFIX, 0, f), f) for name, f in (
            ("headline", bold), ("detail", body), ("code", big), ("phone", body),
            ("meter", body))}
        self._progress = child("msctls_progress32", 0, 0, body)
        self._buttons = {a: child("BUTTON", WS_TABSTOP, 101 + i, body)
                         for i, a in enumerate(ACTIONS)}
        accel = _ACCEL(ctypes, w)
        table = (accel * len(KEYS))(*[accel(FALT | FVIRTKEY, ord(k.upper()), 201 + i)
                                      for i, k in enumerate(KEYS)])
        self._accel = u32.CreateAcceleratorTableW(table, len(KEYS))
        self._chat = panel_chat.make_win32_chat(self._hwnd, u32, body, actions.on_chat)

    def chat(self, view: panel_chat.ChatView) -> None:
        if self._chat.show(view) and self._view is not None:
            self.show(self._view)  # lay out again: the chat area came, went or grew

    def wake(self) -> None:
        self._u32.PostMessageW(self._hwnd, WM_APP, 0, 0)  # thread-safe

    def loop(self) -> None:
        c, u32 = self._c, self._u32
        msg = self._w.MSG()
        try:
            while u32.GetMessageW(c.byref(msg), None, 0, 0) > 0:
                if u32.TranslateAcceleratorW(self._hwnd, self._accel, c.byref(msg)):
                    continue
                if u32.IsDialogMessageW(self._hwnd, c.byref(msg)):  # Tab between buttons
                    continue
                u32.TranslateMessage(c.byref(msg))
                u32.DispatchMessageW(c.byref(msg))
        finally:
            u32.DestroyAcceleratorTable(self._accel)
            for f in self._fonts:
                self._gdi.DeleteObject(f)
            u32.UnregisterClassW(self._class, None)

    def close(self) -> None:
        self._u32.DestroyWindow(self._hwnd)  # WM_DESTROY ends the loop

    def to_front(self) -> None:
        self._u32.ShowWindow(self._hwnd, SW_RESTORE)
        self._u32.SetForegroundWindow(self._hwnd)

    def show(self, v: PanelView) -> None:
        if _only_the_meter(self._view, v):  # the meter's tick: buttons and focus stay put
            self._view = v
            self._u32.SetWindowTextW(self._texts["meter"][0], v.meter)
            return
        first, self._view, u32 = self._view is None, v, self._u32
        s = self._scale
        pad, gap, inner = round(14 * s), round(6 * s), round((PANEL_WIDTH_PX - 28) * s)
        y = pad
        for name, text in (("headline", v.headline), ("detail", v.detail), ("code", v.code),
                           ("progress", "-" if v.progress else ""), ("phone", v.phone),
                           ("meter", v.meter)):
            if name == "progress":
                hwnd, height = self._progress, round(14 * s)
            else:
                hwnd, f = self._texts[name]
                u32.SetWindowTextW(hwnd, text)
                height = self._text_height(text, f, inner)
            u32.ShowWindow(hwnd, SW_SHOWNOACTIVATE if text else SW_HIDE)
            if text:
                u32.MoveWindow(hwnd, pad, y, inner, height, True)
                y += height + gap
        u32.KillTimer(self._hwnd, PROGRESS_TIMER)
        if v.progress:
            u32.SetTimer(self._hwnd, PROGRESS_TIMER, PROGRESS_STEP_MS, None)
        y += gap
        x, height = pad, round(30 * s)
        shown = {b.action: b for b in v.buttons}
        for action, hwnd in self._buttons.items():
            b = shown.get(action)
            u32.ShowWindow(hwnd, SW_SHOWNOACTIVATE if b else SW_HIDE)
            if b is not None and action == "elevate":  # a long label: a row of its own
                y += height + round(8 * s)
                u32.SetWindowTextW(hwnd, b.win32_text)
                u32.EnableWindow(hwnd, b.enabled)
                u32.MoveWindow(hwnd, pad, y, inner, height, True)
            elif b is not None:
                u32.SetWindowTextW(hwnd, b.win32_text)
                u32.EnableWindow(hwnd, b.enabled)
                wide = round(max(110, 8 * len(b.label)) * s)  # "Send a file to David…"
                u32.MoveWindow(hwnd, x, y, wide, height, True)
                x += wide + round(8 * s)
        y = self._chat.layout(pad, y + height + gap, inner, s) - gap
        self._place(inner + 2 * pad, y + pad)
        u32.KillTimer(self._hwnd, DISMISS_TIMER)
        if v.dismiss_after_s is not None:
            u32.SetTimer(self._hwnd, DISMISS_TIMER, int(v.dismiss_after_s * 1000), None)
        if first:
            u32.ShowWindow(self._hwnd, SW_SHOWNOACTIVATE)  # never takes the customer's focus
        u32.RedrawWindow(self._hwnd, None, None, RDW_INVALIDATE | RDW_UPDATENOW | RDW_ALLCHILDREN)
        # the title last: whoever finds the window by its title finds it drawn
        u32.SetWindowTextW(self._hwnd, v.title)

    def _text_height(self, text: str, font: Any, width: int) -> int:
        c, u32, gdi = self._c, self._u32, self._gdi
        rect = self._w.RECT(0, 0, width, 0)
        dc = u32.GetDC(self._hwnd)
        old = gdi.SelectObject(dc, font)
        u32.DrawTextW(dc, text or " ", -1, c.byref(rect),
                      DT_CALCRECT | DT_WORDBREAK | DT_NOPREFIX)
        gdi.SelectObject(dc, old)
        u32.ReleaseDC(self._hwnd, dc)
        return rect.bottom - rect.top

    def _place(self, client_w: int, client_h: int) -> None:
        """Size the window to its content; bottom right of the work area until dragged."""
        c, u32 = self._c, self._u32
        rect = self._w.RECT(0, 0, client_w, client_h)
        u32.AdjustWindowRectEx(c.byref(rect), self._style, False, self._ex_style)
        width, height = rect.right - rect.left, rect.bottom - rect.top
        now = self._w.RECT()
        u32.GetWindowRect(self._hwnd, c.byref(now))
        x, y = now.left, now.top
        if not self._dragged:
            area = self._w.RECT()
            u32.SystemParametersInfoW(SPI_GETWORKAREA, 0, c.byref(area), 0)
            margin = round(MARGIN_PX * self._scale)
            x, y = area.right - width - margin, area.bottom - height - margin
        u32.SetWindowPos(self._hwnd, c.c_void_p(HWND_TOPMOST), x, y, width, height,
                         SWP_NOACTIVATE)
        self._placed_at = (x, y)

    def _moved(self) -> bool:
        """Whether the window is elsewhere than where _place put it (a click on the body
        starts a move that may go nowhere)."""
        now = self._w.RECT()
        self._u32.GetWindowRect(self._hwnd, self._c.byref(now))
        return (now.left, now.top) != self._placed_at

    def _window_proc(self, hwnd: Any, msg: int, wparam: int, lparam: int) -> int:
        try:
            if msg == WM_NCHITTEST:  # the body drags the window, as its title bar does
                hit = self._u32.DefWindowProcW(hwnd, msg, wparam, lparam)
                return HTCAPTION if hit == HTCLIENT else hit
            if msg == WM_EXITSIZEMOVE:
                self._dragged = self._dragged or self._moved()
            elif msg == WM_APP:
                self._ui.drain()
                return 0
            elif msg == WM_COMMAND:
                self._command(wparam & 0xFFFF)
                return 0
            elif msg == WM_TIMER:
                self._timer(wparam)
                return 0
            elif msg == WM_CLOSE:  # the close box: End during a session, Close after it
                if self._view is not None:
                    self._actions.run(self._view.close_action)
                return 0
            elif msg == WM_DESTROY:
                self._u32.PostQuitMessage(0)
                return 0
        except Exception:  # an exception must not cross back into Windows
            log.exception("panel: message %#x failed", msg)
        return self._u32.DefWindowProcW(hwnd, msg, wparam, lparam)

    def _command(self, ident: int) -> None:
        v = self._view
        if v is None or self._chat.command(ident):
            return
        if 201 <= ident < 201 + len(KEYS):
            button = v.button(KEYS[ident - 201])
        else:
            action = ACTIONS[ident - 101] if 101 <= ident < 101 + len(ACTIONS) else ""
            button = next((b for b in v.buttons if b.action == action and b.enabled), None)
        if button is not None:
            self._actions.run(button.action)

    def _timer(self, ident: int) -> None:
        if ident == PROGRESS_TIMER:  # comctl32 v5 has no marquee: a bar that keeps filling
            self._progress_at = (self._progress_at + 4) % 104
            self._u32.SendMessageW(self._progress, PBM_SETPOS, self._progress_at, 0)
        elif ident == DISMISS_TIMER:
            self._u32.KillTimer(self._hwnd, DISMISS_TIMER)
            self._actions.run("dismiss")


class Win32Frame:
    """A hidden top-level window of a window class of its own, sized to the system's DPI, and
    what its controls are made with: fonts at that DPI and child controls (the common
    controls' progress bar included). The panel's and the file window's."""

    def __init__(self, c: Any, w: Any, u32: Any, gdi: Any, proc: Any, class_name: str,
                 style: int, ex_style: int) -> None:
        self._c, self._u32, self._gdi = c, u32, gdi
        self.instance = c.WinDLL("kernel32").GetModuleHandleW(None)
        wc = _WNDCLASSEXW(c, w)(
            lpfnWndProc=proc, hInstance=self.instance, lpszClassName=class_name,
            hCursor=u32.LoadCursorW(None, c.c_void_p(IDC_ARROW)),
            hbrBackground=c.c_void_p(COLOR_BTNFACE + 1))
        wc.cbSize = c.sizeof(wc)
        if not u32.RegisterClassExW(c.byref(wc)):
            raise c.WinError(c.get_last_error())
        self.hwnd = u32.CreateWindowExW(ex_style, class_name, "", style, 0, 0, 100, 100, None,
                                        None, self.instance, None)
        if not self.hwnd:
            raise c.WinError(c.get_last_error())
        dpi_for = getattr(u32, "GetDpiForWindow", None)
        self.scale = (dpi_for(self.hwnd) or 96) / 96 if dpi_for else 1.0
        icc = (c.c_uint32 * 2)(8, ICC_PROGRESS_CLASS)  # INITCOMMONCONTROLSEX
        c.WinDLL("comctl32").InitCommonControlsEx(c.byref(icc))

    def font(self, points: int, bold: bool = False) -> Any:
        px = -round(points * 96 * self.scale / 72)
        return self._gdi.CreateFontW(px, 0, 0, 0, 700 if bold else 400, 0, 0, 0, 1, 0, 0, 5, 0,
                                     "Segoe UI")

    def child(self, cls: str, style: int, ident: int, font: Any) -> Any:
        """A control of window class ``cls`` (hidden until laid out) with ``font``."""
        hwnd = self._u32.CreateWindowExW(0, cls, "", WS_CHILD | style, 0, 0, 10, 10, self.hwnd,
                                         self._c.c_void_p(ident), self.instance, None)
        self._u32.SendMessageW(hwnd, WM_SETFONT, font, 1)
        return hwnd


def _WNDPROC(c: Any, w: Any) -> Any:
    return c.WINFUNCTYPE(c.c_ssize_t, w.HWND, w.UINT, w.WPARAM, w.LPARAM)


def _WNDCLASSEXW(c: Any, w: Any) -> Any:
    class WNDCLASSEXW(c.Structure):
        _fields_ = [("cbSize", w.UINT), ("style", w.UINT), ("lpfnWndProc", _WNDPROC(c, w)),
                    ("cbClsExtra", c.c_int), ("cbWndExtra", c.c_int),
                    ("hInstance", w.HINSTANCE), ("hIcon", w.HICON), ("hCursor", w.HANDLE),
                    ("hbrBackground", w.HBRUSH), ("lpszMenuName", w.LPCWSTR),
                    ("lpszClassName", w.LPCWSTR), ("hIconSm", w.HICON)]

    return WNDCLASSEXW


def _ACCEL(c: Any, w: Any) -> Any:
    class ACCEL(c.Structure):
        _fields_ = [("fVirt", w.BYTE), ("key", w.WORD), ("cmd", w.WORD)]

    return ACCEL


def _win32_api(c: Any, w: Any) -> tuple[Any, Any]:
    """user32 and gdi32 with argument types: handles are 64-bit, ctypes' default is int."""
    u32, gdi = c.WinDLL("user32", use_last_error=True), c.WinDLL("gdi32")
    ptr, i, msg, rect = c.c_void_p, c.c_int, c.POINTER(w.MSG), c.POINTER(w.RECT)
    wm = [w.HWND, w.UINT, w.WPARAM, w.LPARAM]
    for lib, name, args, result in [
        (u32, "RegisterClassExW", [ptr], w.ATOM),
        (u32, "UnregisterClassW", [w.LPCWSTR, w.HINSTANCE], w.BOOL),
        (u32, "CreateWindowExW", [w.DWORD, w.LPCWSTR, w.LPCWSTR, w.DWORD, i, i, i, i, w.HWND,
                                  ptr, w.HINSTANCE, ptr], w.HWND),
        (u32, "DefWindowProcW", wm, c.c_ssize_t), (u32, "SendMessageW", wm, c.c_ssize_t),
        (u32, "PostMessageW", wm, w.BOOL), (u32, "GetMessageW", [msg, w.HWND, w.UINT, w.UINT],
                                            w.BOOL),
        (u32, "TranslateAcceleratorW", [w.HWND, w.HANDLE, msg], i),
        (u32, "IsDialogMessageW", [w.HWND, msg], w.BOOL),
        (u32, "TranslateMessage", [msg], w.BOOL), (u32, "DispatchMessageW", [msg], c.c_ssize_t),
        (u32, "CreateAcceleratorTableW", [ptr, i], w.HANDLE),
        (u32, "DestroyAcceleratorTable", [w.HANDLE], w.BOOL),
        (u32, "SetWindowTextW", [w.HWND, w.LPCWSTR], w.BOOL),
        (u32, "ShowWindow", [w.HWND, i], w.BOOL), (u32, "EnableWindow", [w.HWND, w.BOOL], w.BOOL),
        (u32, "MoveWindow", [w.HWND, i, i, i, i, w.BOOL], w.BOOL),
        (u32, "SetWindowPos", [w.HWND, ptr, i, i, i, i, w.UINT], w.BOOL),
        (u32, "GetWindowRect", [w.HWND, rect], w.BOOL),
        (u32, "AdjustWindowRectEx", [rect, w.DWORD, w.BOOL, w.DWORD], w.BOOL),
        (u32, "SystemParametersInfoW", [w.UINT, w.UINT, ptr, w.UINT], w.BOOL),
        (u32, "SetTimer", [w.HWND, c.c_size_t, w.UINT, ptr], c.c_size_t),
        (u32, "KillTimer", [w.HWND, c.c_size_t], w.BOOL),
        (u32, "DestroyWindow", [w.HWND], w.BOOL), (u32, "PostQuitMessage", [i], None),
        (u32, "LoadCursorW", [w.HINSTANCE, ptr], w.HANDLE),
        (u32, "SetForegroundWindow", [w.HWND], w.BOOL),
        (u32, "RedrawWindow", [w.HWND, ptr, ptr, w.UINT], w.BOOL),
        (u32, "GetDC", [w.HWND], w.HDC), (u32, "ReleaseDC", [w.HWND, w.HDC], i),
        (u32, "DrawTextW", [w.HDC, w.LPCWSTR, i, rect, w.UINT], i),
        (gdi, "CreateFontW", [i] * 5 + [w.DWORD] * 8 + [w.LPCWSTR], w.HFONT),
        (gdi, "SelectObject", [w.HDC, w.HGDIOBJ], w.HGDIOBJ),
        (gdi, "DeleteObject", [w.HGDIOBJ], w.BOOL),
    ]:
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    with contextlib.suppress(AttributeError):  # Windows 10 1607 and later
        u32.GetDpiForWindow.argtypes, u32.GetDpiForWindow.restype = [w.HWND], w.UINT
    return u32, gdi


def make_panel(actions: PanelActions) -> Panel:
    """The platform's panel; SPOTLIGHT_PANEL=win32|tk|log chooses (a chosen backend that
    cannot start raises PanelError; the platform's default falls back to the log)."""
    choice = os.environ.get("SPOTLIGHT_PANEL", "")
    if choice not in ("", "win32", "tk", "log"):
        raise PanelError(f"SPOTLIGHT_PANEL={choice!r}: use win32, tk or log")
    if choice == "log":
        return LogPanel()
    try:
        if choice == "win32" or (not choice and sys.platform == "win32"):
            return Win32Panel(actions)
        if choice == "tk" or (not choice and os.environ.get("DISPLAY")):
            return TkPanel(actions)
    except (ImportError, PanelError) as e:
        if choice:
            raise PanelError(f"the {choice} panel cannot be shown: {e}") from None
        log.warning("no session panel (%s); its states go to the log", e)
    return LogPanel()
