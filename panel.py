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
import gc
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger("agent.panel")  # the agent's log handlers see it without set-up

# --- constants -------------------------------------------------------------------------

STATES = ("connecting", "error", "waiting", "accepted", "control", "paused", "reconnecting",
          "ended")
RECEIPT_SHOWN_S = 10.0  # a normal end: the receipt closes itself after this
UI_POLL_MS = 40  # how often the Tk thread looks for calls from other threads
START_TIMEOUT_S = 10.0  # a window that cannot appear within this falls back to the log
MARGIN_PX = 24  # from the screen's right edge, and above the taskbar's usual place
TASKBAR_PX = 56
PANEL_WIDTH_PX = 470  # the receipt line fits on one line
CODE_DIGITS = 6

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
    phone: str = ""  # the company's phone number from the configuration, "" if none
    ended_at: datetime | None = None  # local time the session ended
    reference: str = ""  # the ledger row's reference, "" when the relay did not say

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
    action: str  # a PanelActions callback without "on_": pause, resume, end, retry, dismiss
    label: str
    key: str  # Alt+key presses it; its letter is underlined in the label
    name: str  # what a screen reader says
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


def _buttons(state: str, person: str) -> tuple[Button, ...]:
    end = Button("end", "End session", "e", "End session (Alt+E): stop sharing now",
                 state != "ended")
    if state == "paused":
        toggle = Button("resume", "Resume", "p", f"Resume (Alt+P): let {person} see your "
                        "screen again")
    else:
        toggle = Button("pause", "Pause", "p", f"Pause (Alt+P): hide your screen from {person}",
                        state in ("accepted", "control"))
    close = Button("dismiss", "Close", "c", "Close this window (Alt+C)")
    if state == "error":
        return (Button("retry", "Retry", "r", "Retry (Alt+R): connect again"), close)
    if state == "ended":
        return (close,)
    return (toggle, end)


def view(facts: SessionFacts) -> PanelView:
    """What the panel shows for ``facts``: pure, the same facts give the same view."""
    f = facts
    company, person, state = f.company, f.person, f.state
    meter = f"Session time {clock_text(f.elapsed_s)}"
    if state in ("connecting", "waiting", "error"):
        meter += f" (starts when {person} accepts)"
    elif f.paused_s and state != "ended":
        meter += f" · paused {clock_text(f.paused_s)}, not billed"
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
        if f.paused_s:
            parts.append(f"Paused time ({duration_text(f.paused_s)}) was not billed.")
        detail = " ".join(parts) or "To connect again, run the program again."
        dismiss_after = None if f.message else RECEIPT_SHOWN_S  # a problem stays until read
        tooltip = headline
    return PanelView(
        state=state, title=f"{company} support: {title}", headline=headline, detail=detail,
        code=code, meter=meter, phone=phone, progress=state in ("connecting", "reconnecting"),
        buttons=_buttons(state, person), close_action=close_action,
        dismiss_after_s=dismiss_after, tray_state=tray, tooltip=tooltip)


def receipt(f: SessionFacts) -> str:
    """ "Session with David ended 14:32 · 12 min 30 s · ref 123" (parts left out if unknown)."""
    parts = [f"Session with {f.person} ended" + (
        f" {f.ended_at:%H:%M}" if f.ended_at is not None else ""), duration_text(f.elapsed_s)]
    if f.reference:
        parts.append(f"ref {f.reference}")
    return " · ".join(parts)


def group_code(code: str) -> str:
    """ "482913" -> "482 913": two groups of three are easier to read aloud."""
    return f"{code[:3]} {code[3:]}" if code else ""


def clock_text(seconds: float) -> str:
    """A running meter: 0:05, 12:30, 1:02:05."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


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
    w, h = 22 * u, 14 * u
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
    r, w = 18 * u, int(8 * u)
    draw.arc((c - r, c - r, c + r, c + r), 300, 240, fill=INK, width=w)
    # the arrowhead at the arc's open end (the top), pointing clockwise
    draw.polygon([(c - 2 * u, c - r - 11 * u), (c - 2 * u, c - r + 11 * u),
                  (c + 12 * u, c - r)], fill=INK)


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

    def close(self) -> None:
        """Remove the window and end its thread; any thread, more than once is fine."""


class LogPanel:
    """SPOTLIGHT_PANEL=log, or no display: each view written to the log."""

    def show(self, view: PanelView) -> None:
        log.info("panel: %s | %s | %s | %s", view.state, view.title, view.headline, view.meter)

    def to_front(self) -> None:
        pass

    def close(self) -> None:
        log.info("panel: closed")


class _UiThread:
    """One window made, used and dropped on its own thread (Tcl and Win32 both insist on
    that); other threads only queue calls to it, which the window drains as it runs."""

    def __init__(self, make_window: Callable[[_UiThread], Any], what: str) -> None:
        self._make, self._what = make_window, what
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._window: Any = None
        self._thread = threading.Thread(target=self._run, name=what, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise PanelError(f"the {what} did not appear within {START_TIMEOUT_S:.0f} s")
        if self._failure is not None:
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
            self._failure = e
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


class TkPanel:
    """Linux, from source: a Tk window kept on top (Tk sets _NET_WM_STATE_ABOVE for
    -topmost), draggable by its body, Alt+P / Alt+E / Alt+R / Alt+C press its buttons."""

    def __init__(self, actions: PanelActions) -> None:
        import tkinter  # noqa: F401 (fail here, in the caller's thread, when it is missing)

        self._ui = _UiThread(lambda ui: _TkWindow(ui, actions), "session panel")

    def show(self, view: PanelView) -> None:
        self._ui.call("show", view)

    def to_front(self) -> None:
        self._ui.call("to_front")

    def close(self) -> None:
        self._ui.stop()


class _TkWindow:
    """The Tk side of TkPanel: every method runs on the panel's thread."""

    def __init__(self, ui: _UiThread, actions: PanelActions) -> None:
        import tkinter as tk
        from tkinter import font, ttk

        self._ui, self._actions, self._ttk = ui, actions, ttk
        self._view: PanelView | None = None
        self._dragged = False  # once the customer moved it, it stays where they put it
        self._grab = (0, 0)
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
        for widget in (frame, self._headline, self._detail, self._code, self._meter):
            widget.bind("<ButtonPress-1>", self._drag_start)
            widget.bind("<B1-Motion>", self._drag)
        for key in "perc":  # either case: Caps Lock must not break the shortcuts
            for keysym in (key, key.upper()):
                root.bind(f"<Alt-KeyPress-{keysym}>", lambda _e, k=key: self._press_key(k))
        root.after(UI_POLL_MS, self._poll)

    def wake(self) -> None:
        pass  # _poll looks for calls every UI_POLL_MS (Tk offers no thread-safe wake-up)

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
        first, self._view, root = self._view is None, v, self._root
        root.title(v.title)
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
        if not self._dragged:  # bottom right, above where a taskbar usually is
            root.update_idletasks()
            x = root.winfo_screenwidth() - root.winfo_reqwidth() - MARGIN_PX
            y = root.winfo_screenheight() - root.winfo_reqheight() - MARGIN_PX - TASKBAR_PX
            root.geometry(f"+{max(0, x)}+{max(0, y)}")
        if first:
            root.deiconify()

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
        self._grab = (event.x_root - self._root.winfo_x(), event.y_root - self._root.winfo_y())

    def _drag(self, event: Any) -> None:
        self._dragged = True
        dx, dy = self._grab
        self._root.geometry(f"+{event.x_root - dx}+{event.y_root - dy}")


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
            from panel_win32 import Win32Panel

            return Win32Panel(actions)
        if choice == "tk" or (not choice and os.environ.get("DISPLAY")):
            return TkPanel(actions)
    except (ImportError, PanelError) as e:
        if choice:
            raise PanelError(f"the {choice} panel cannot be shown: {e}") from None
        log.warning("no session panel (%s); its states go to the log", e)
    return LogPanel()
