"""The customer's windows around a session: the tray icon, the picker that asks which
support person they are talking to, message boxes, what the session panel is told (the
panel itself is panel.py), and the lock that keeps one program running at a time.

Each backend imports its library only when created (the Windows build's embeddable Python has
no tkinter; a headless machine has no display), and is chosen in one place with an environment
override: SPOTLIGHT_TRAY=pystray|log, SPOTLIGHT_DIALOGS=win32|tk|stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import agent_session as core
import panel
import panel_chat

APP_NAME = "Spotlight Remote Support"
TRAY_HIDE_TIMEOUT_S = 1.0
SHARING_TRAY_STATES = ("active", "control", "paused")  # the tray's Pause/Resume works here
ELEVATE_TRAY_STATES = ("pending", "active", "control")  # ... and Restart as administrator
log = logging.getLogger("agent")


class Tray(Protocol):
    on_close: Callable[[], None]  # the customer chose Close (called from the tray's thread)
    on_pause: Callable[[bool], None]  # Pause (True) or Resume (False), from the tray's thread

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        """Show the icon for ``state`` (a panel.TRAY_STATES name, drawn by panel.tray_icon)
        with ``tooltip``; balloon "" shows none."""

    def hide(self) -> None: ...


class Dialogs(Protocol):
    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        """The id of the support person the customer clicked, or None for Cancel."""

    def message(self, title: str, text: str, error: bool = False) -> None: ...


class TrayItem(NamedTuple):
    """One line of the tray's menu: ``key`` names what choosing it does (TrayMenu.choose);
    None is a line that only says something."""
    label: str
    key: str | None
    enabled: bool = True
    visible: bool = True


class TrayMenu:
    """The tray's menu without pystray: what it shows in a state, and what each line does
    (the same Controls paths as the panel's buttons). PystrayTray draws it; tests read it."""

    def __init__(self, on_close: Callable[[], None], on_pause: Callable[[bool], None],
                 on_send_file: Callable[[], None], person: str = "",
                 on_elevate: Callable[[], None] | None = None) -> None:
        self.on_close, self.on_pause, self.on_send_file = on_close, on_pause, on_send_file
        self.on_elevate, self.person = on_elevate, person

    def items(self, state: str, status: str, can_elevate: bool = False) -> tuple[TrayItem, ...]:
        sharing = state in SHARING_TRAY_STATES
        return (TrayItem(status, None, enabled=False),
                TrayItem("Resume", "resume", sharing) if state == "paused"
                else TrayItem("Pause", "pause", sharing),
                TrayItem(f"Send a file to {self.person or 'your support person'}\u2026",
                         "send_file", sharing),
                TrayItem("Restart as administrator", "elevate", state in ELEVATE_TRAY_STATES,
                         visible=can_elevate and self.on_elevate is not None),
                TrayItem("Close", "close"))

    def choose(self, key: str) -> None:
        """A line was clicked (on the tray's thread)."""
        if key == "close":
            self.on_close()
        elif key in ("pause", "resume"):
            self.on_pause(key == "pause")
        elif key == "send_file":
            self.on_send_file()
        elif key == "elevate" and self.on_elevate is not None:
            self.on_elevate()


class PystrayTray:
    """The icon lives in its own thread (win32 wants it created where it runs). Its menu
    (TrayMenu): the state in words, Pause or Resume and "Send a file to David…" (while the
    support person is connected), Restart as administrator (where the program can), Close."""

    def __init__(self, on_close: Callable[[], None], on_pause: Callable[[bool], None],
                 on_elevate: Callable[[], None] | None = None,
                 on_send_file: Callable[[], None] = lambda: None, person: str = "") -> None:
        import pystray

        self._pystray, self.on_close, self.on_pause = pystray, on_close, on_pause
        self.on_elevate = on_elevate
        self.can_elevate = False  # SessionDisplay says when the item applies
        self.menu = TrayMenu(lambda: self.on_close(), lambda paused: self.on_pause(paused),
                             on_send_file, person, lambda: self._elevate())
        self._icon: Any = None
        self._status = self._state = ""
        self._ready = threading.Event()

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        self._status, self._state = tooltip, state
        if self._icon is None:
            threading.Thread(target=self._run, args=(state, tooltip), daemon=True).start()
            self._ready.wait(5)
        else:
            self._icon.icon = panel.tray_icon(state)
            self._icon.title = tooltip
            self._icon.update_menu()
        if balloon and self._icon is not None and self._icon.HAS_NOTIFICATION:
            with contextlib.suppress(Exception):
                self._icon.notify(balloon, APP_NAME)

    def _run(self, state: str, tooltip: str) -> None:
        item, menu = self._pystray.MenuItem, self._pystray.Menu

        def line(index: int) -> Any:
            # text and enabled are read again at each update_menu: the state they show changes
            def now() -> TrayItem:
                return self.menu.items(self._state, self._status,
                                       self.can_elevate and self.on_elevate is not None)[index]

            def choose() -> None:
                if (key := now().key) is not None:
                    self.menu.choose(key)

            return item(lambda _: now().label, choose, enabled=lambda _: now().enabled,
                        visible=lambda _: now().visible, default=index == 0)

        count = len(self.menu.items(state, tooltip))
        self._icon = self._pystray.Icon("spotlight", panel.tray_icon(state), tooltip,
                                        menu=menu(*(line(i) for i in range(count))))

        def setup(icon: Any) -> None:
            icon.visible = True
            self._ready.set()

        try:
            self._icon.run(setup)
        finally:
            self._ready.set()

    def _elevate(self) -> None:
        if self.on_elevate is not None:
            self.on_elevate()

    def hide(self) -> None:
        if self._icon is not None:
            icon, self._icon = self._icon, None

            def remove() -> None:
                with contextlib.suppress(Exception):
                    icon.visible = False
                    icon.stop()

            # Removing the icon took 2 s under Wine: wait at most TRAY_HIDE_TIMEOUT_S.
            remover = threading.Thread(target=remove, daemon=True)
            remover.start()
            remover.join(TRAY_HIDE_TIMEOUT_S)


class LogTray:
    """SPOTLIGHT_TRAY=log: no icon, each state written to the log (headless runs, tests)."""

    def __init__(self, on_close: Callable[[], None], on_pause: Callable[[bool], None],
                 on_elevate: Callable[[], None] | None = None) -> None:
        self.on_close, self.on_pause = on_close, on_pause  # no menu: the panel has the buttons
        self.on_elevate = on_elevate
        self.can_elevate = False

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        log.info("tray: %s | %s | %s", state, tooltip, balloon)

    def hide(self) -> None:
        log.info("tray: hidden")


class Win32Dialogs:
    """ctypes only: the embeddable Python of the Windows build has no tkinter."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._user32 = ctypes.WinDLL("user32")

    def message(self, title: str, text: str, error: bool = False) -> None:
        icon = 0x10 if error else 0x40  # MB_ICONERROR / MB_ICONINFORMATION
        self._user32.MessageBoxW(None, text, title, icon | 0x10000 | 0x40000)

    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        try:
            return self._task_dialog(company, people)
        except (AttributeError, OSError):  # no comctl32 v6 in this process: ask one by one
            for pid, name in people:
                answer = self._user32.MessageBoxW(
                    None, f"Are you talking to {name}?", company, 0x3 | 0x20 | 0x10000)
                if answer == 6:  # IDYES
                    return pid
                if answer != 7:  # IDNO; anything else is Cancel
                    return None
            return None

    def _task_dialog(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        c = self._ctypes
        w = c.c_wchar_p

        class Button(c.Structure):
            _pack_ = 1
            _fields_ = [("id", c.c_int), ("text", w)]

        class Config(c.Structure):
            _pack_ = 1
            _fields_ = [
                ("cbSize", c.c_uint), ("hwndParent", c.c_void_p), ("hInstance", c.c_void_p),
                ("dwFlags", c.c_int), ("dwCommonButtons", c.c_int), ("pszWindowTitle", w),
                ("hMainIcon", c.c_void_p), ("pszMainInstruction", w), ("pszContent", w),
                ("cButtons", c.c_uint), ("pButtons", c.POINTER(Button)),
                ("nDefaultButton", c.c_int), ("cRadioButtons", c.c_uint),
                ("pRadioButtons", c.c_void_p), ("nDefaultRadioButton", c.c_int),
                ("pszVerificationText", w), ("pszExpandedInformation", w),
                ("pszExpandedControlText", w), ("pszCollapsedControlText", w),
                ("hFooterIcon", c.c_void_p), ("pszFooter", w), ("pfCallback", c.c_void_p),
                ("lpCallbackData", c.c_void_p), ("cxWidth", c.c_uint)]

        buttons = (Button * len(people))(*[Button(100 + i, n) for i, (_, n) in enumerate(people)])
        config = Config(cbSize=c.sizeof(Config), dwFlags=0x10 | 0x08, dwCommonButtons=0x08,
                        pszWindowTitle=company, pszMainInstruction=company,
                        pszContent="Click the support person you are talking to",
                        cButtons=len(people), pButtons=buttons)
        pressed = c.c_int(0)
        result = c.WinDLL("comctl32").TaskDialogIndirect(c.byref(config), c.byref(pressed),
                                                         None, None)
        if result != 0:
            raise OSError(f"TaskDialogIndirect failed: {result:#x}")
        index = pressed.value - 100
        return people[index][0] if 0 <= index < len(people) else None


class TkDialogs:
    """Linux. When Tk cannot open the display, the text goes to stderr instead."""

    def message(self, title: str, text: str, error: bool = False) -> None:
        import tkinter
        from tkinter import messagebox

        try:
            root = tkinter.Tk()
        except tkinter.TclError:
            return StderrDialogs().message(title, text, error)
        root.withdraw()
        (messagebox.showerror if error else messagebox.showinfo)(title, text, parent=root)
        root.destroy()

    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        import tkinter

        chosen: list[str] = []
        try:
            root = tkinter.Tk()
        except tkinter.TclError:
            return StderrDialogs().pick(company, people)
        root.title(company)
        tkinter.Label(root, text=company, font=("TkDefaultFont", 14, "bold")).pack(padx=24,
                                                                                    pady=(16, 4))
        tkinter.Label(root, text="Click the support person you are talking to").pack(padx=24)
        for pid, name in people:
            tkinter.Button(root, text=name, width=28,
                           command=lambda pid=pid: (chosen.append(pid), root.destroy())).pack(
                padx=24, pady=3)
        tkinter.Button(root, text="Cancel", command=root.destroy).pack(pady=(10, 16))
        root.protocol("WM_DELETE_WINDOW", root.destroy)
        root.bind("<Escape>", lambda _: root.destroy())
        root.eval("tk::PlaceWindow . center")
        root.mainloop()
        return chosen[0] if chosen else None


class StderrDialogs:
    def message(self, title: str, text: str, error: bool = False) -> None:
        if sys.stderr is not None:
            print(f"{title}: {text}", file=sys.stderr, flush=True)

    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        ids = ", ".join(pid for pid, _ in people)
        self.message(company, f"No display to choose on: run with --technician ({ids})")
        return None


def make_dialogs() -> Dialogs:
    choice = os.environ.get("SPOTLIGHT_DIALOGS", "")
    if choice == "win32" or (not choice and sys.platform == "win32"):
        return Win32Dialogs()
    if choice == "tk" or (not choice and os.environ.get("DISPLAY")):
        try:
            import tkinter  # noqa: F401
            return TkDialogs()
        except ImportError:
            pass
    return StderrDialogs()


def make_tray(on_close: Callable[[], None], on_pause: Callable[[bool], None],
              on_elevate: Callable[[], None] | None = None,
              on_send_file: Callable[[], None] = lambda: None, person: str = "") -> Tray:
    if os.environ.get("SPOTLIGHT_TRAY", "pystray") == "log":
        return LogTray(on_close, on_pause, on_elevate)
    return PystrayTray(on_close, on_pause, on_elevate, on_send_file, person)


def tray_image(rgb: tuple[int, int, int], size: int = 64) -> Any:
    """The tray/exe icon: a spotlight disc in the state's colour (drawn 4x, then smoothed)."""
    from PIL import Image, ImageDraw

    big = size * 4
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    edge, r = max(4, big // 16), big // 6
    draw.ellipse((edge, edge, big - edge - 1, big - edge - 1), fill=(*rgb, 255),
                 outline=(40, 40, 40, 255), width=edge)
    draw.ellipse((big // 2 - r, big // 2 - r, big // 2 + r, big // 2 + r), fill=(255,) * 4)
    return image.resize((size, size), Image.Resampling.LANCZOS)


# --- what the session panel is told -------------------------------------------------------

PANEL_STATES = {core.CONNECTING: "connecting", core.WAITING: "waiting",
                core.ACCEPTED: "accepted", core.IN_CONTROL: "control", core.PAUSED: "paused",
                core.RECONNECTING: "reconnecting"}


def panel_facts(view: core.View, now: float, company: str, person: str, phone: str,
                ended_at: datetime | None, can_elevate: bool = False) -> panel.SessionFacts:
    """The session core's view at ``now`` as the panel's facts. A session that failed
    before anyone accepted it is an error (Retry, the phone number); any other end is the
    receipt. ``person`` is the configured name until the relay names the support person."""
    if view.state == core.ENDED:
        state = "error" if view.failed and not view.accepted else "ended"
    else:
        state = PANEL_STATES[view.state]
    return panel.SessionFacts(
        state=state, company=company, person=view.technician_name or person, code=view.code,
        elapsed_s=view.billed.seconds(now), paused_s=view.paused.seconds(now),
        message=view.sentence, failed=view.failed, phone=phone,
        ended_at=ended_at if state == "ended" else None,
        reference=str(view.ref) if view.ref else "", can_elevate=can_elevate)


# --- one program at a time ----------------------------------------------------------------
#
# A second start while a session runs brings the first one's panel to the front instead of
# starting a second session. The running program holds a per-user lock and listens for a
# small local signal; a second start that finds the lock taken sends the signal and exits.
# (The elevated hand-off of the Windows build is started by the running program itself and
# simply does not ask for the lock.)

INSTANCE_NAME = "SpotlightRemoteSupport"
FRONT_RETRY_S = 2.0  # a first program that holds the lock but is not listening yet


class SessionDisplay:
    """What the customer sees of the session core's view: the panel, and the tray (told only
    what changed). The meter's ticks are not logged; each new state is."""

    def __init__(self, window: panel.Panel, tray: Tray, company: str, person: str,
                 phone: str) -> None:
        self.window, self.tray = window, tray
        self.company, self.person, self.phone = company, person, phone
        self.can_elevate = False  # the program can restart as administrator (Agent says)
        self._tray_shown: tuple[str, str] | None = None
        self._ended_at: datetime | None = None
        self._said = ("", "")  # the state and headline last logged
        self._shown: panel.PanelView | None = None  # what the window shows now
        self._chat = panel_chat.ChatHistory()
        self._chat_shown: panel_chat.ChatView | None = None
        self._name = person  # the support person's name, as the chat area calls them

    def show(self, view: core.View, now: float) -> None:
        if view.state == core.ENDED and self._ended_at is None:
            self._ended_at = datetime.now()
        facts = panel_facts(view, now, self.company, self.person, self.phone, self._ended_at,
                            self.can_elevate)
        shown = panel.view(facts)
        if (shown.state, shown.headline) != self._said:
            self._said = (shown.state, shown.headline)
            log.info("session: %s | %s%s", shown.state, shown.headline,
                     f" ({view.sentence})" if view.sentence else "")
        if shown != self._shown:  # the meter's tick mostly changes nothing: no redraw
            self._shown = shown
            self.window.show(shown)
        self._name = view.technician_name or self.person
        self._show_chat(view.accepted and view.state != core.ENDED)
        if shown.tray_state is not None and (shown.tray_state, shown.tooltip) != \
                self._tray_shown:
            self._tray_shown = (shown.tray_state, shown.tooltip)
            self.tray.show(shown.tray_state, shown.tooltip, "")

    def balloon(self, text: str) -> None:
        if self._tray_shown is not None:
            self.tray.show(*self._tray_shown, text)

    def chat(self, who: str, text: str) -> None:
        """A line for the chat area (agent_session.ChatLine); a line from the support person
        also shows in a balloon, in case the panel's chat area is out of sight."""
        self._chat.add(who, text, datetime.now())
        if who == "clipboard":  # the fact, never the text
            log.info("clipboard: shared with %s (%d characters)", self._name, len(text))
        self._show_chat(self._chat_shown is not None and self._chat_shown.visible)
        if who == "technician":
            self.balloon(f"{self._name}: {text[:200]}")

    def _show_chat(self, visible: bool) -> None:
        view = panel_chat.chat_view(self._chat, self._name, visible)
        if view != self._chat_shown:
            self._chat_shown = view
            self.window.chat(view)


NO_WINDOW = ("This program shows a window for as long as your screen is shared, and it cannot "
             "show one on this computer, so it will not share your screen.")


class Controls:
    """What the panel's and the tray's buttons reach, from their own threads: the running
    Agent, and once a session is over the customer's choice (Retry, or Close)."""

    def __init__(self) -> None:
        self.agent: Any = None  # agent.Agent: request_pause, request_close
        self.window: panel.Panel | None = None
        self.choices: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.quitting = False

    def panel_actions(self) -> panel.PanelActions:
        return panel.PanelActions(
            on_pause=lambda: self.pause(True), on_resume=lambda: self.pause(False),
            on_end=self.end, on_retry=lambda: self.choices.put("retry"),
            on_dismiss=lambda: self.choices.put("dismiss"), on_send_file=self.send_file,
            on_elevate=self.elevate, on_chat=self.chat)

    def send_file(self) -> None:
        if self.agent is not None:
            self.agent.request_send_file()

    def elevate(self) -> None:
        """Restart as administrator, from the panel or the tray (agent_elevation.py)."""
        if self.agent is not None:
            self.agent.request_elevate()
    def chat(self, text: str) -> None:
        if self.agent is not None:
            self.agent.request_chat(text)

    def pause(self, paused: bool) -> None:
        if self.agent is not None:
            self.agent.request_pause(paused)

    def end(self) -> None:
        if self.agent is not None:
            self.agent.request_close()

    def quit(self) -> None:
        """SIGTERM, Ctrl+C: end the session and exit without waiting for the customer."""
        self.quitting = True
        self.end()
        self.choices.put("dismiss")

    def front(self) -> None:
        """A second start of the program: the panel comes to the front instead."""
        if self.window is not None:
            self.window.to_front()

    def forget_choices(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.choices.get_nowait()

    def choice(self) -> str:
        """Wait for Retry or Close (a short timeout each time, so signals are handled)."""
        while True:
            with contextlib.suppress(queue.Empty):
                return self.choices.get(timeout=0.25)


def setup_logging(log: logging.Logger) -> None:
    """The agent's log: stderr from source, a file in the temp folder from the windowed exe."""
    level = logging.DEBUG if os.environ.get("SPOTLIGHT_LOG") == "debug" else logging.INFO
    if sys.stderr is not None:
        # UTF-8 whatever the Windows code page (a log line holds names and "…"); a pipe read
        # as UTF-8 must not choke on cp1252 bytes, nor the program on a character it lacks
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:  # windowed exe: the only file we ever write, in the temp folder
        path = Path(tempfile.gettempdir()) / "spotlight-agent.log"
        # opened at the first line written: a second start that only brings the first to
        # the front writes nothing, so it does not empty the first one's log
        handler = logging.FileHandler(path, mode="w", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_one_line_for_libraries)
    for logger in (log, logging.getLogger("pystray")):
        logger.addHandler(handler)
        logger.propagate = False
    log.setLevel(level)


def _one_line_for_libraries(record: logging.LogRecord) -> bool:
    """pystray logs a traceback per icon update when X11 has no system tray: one line is
    enough (the icon is then simply not shown)."""
    if not record.name.startswith("agent"):
        record.exc_info, record.exc_text = None, None
    return True


class Instance(Protocol):
    def acquire(self, on_front: Callable[[], None]) -> bool:
        """True: this is the one program running (``on_front`` is called, on another thread,
        whenever a second start asks). False: another one runs and has been asked to come
        to the front."""

    def release(self) -> None: ...


class LinuxInstance:
    """A lock file (flock) and a local socket in the user's runtime directory, one pair per
    X display: a user's two desktops each run their own."""

    def __init__(self, folder: Path | None = None, display: str | None = None) -> None:
        self.folder = folder or runtime_dir()
        seat = display if display is not None else os.environ.get("DISPLAY", "")
        key = hashlib.sha256(seat.encode()).hexdigest()[:12]
        self.lock_path = self.folder / f"spotlight-support-{key}.lock"
        self.socket_path = self.folder / f"spotlight-support-{key}.sock"
        self._lock: int | None = None
        self._server: socket.socket | None = None

    def acquire(self, on_front: Callable[[], None]) -> bool:
        import fcntl

        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:  # another user's trap
            raise OSError(f"{self.folder} is not private to this user")
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._ask_front()
            return False
        self._lock = fd
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by a program that died: the lock was free
        server = self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen(4)
        threading.Thread(target=self._listen, args=(server, on_front), daemon=True,
                         name="second start").start()
        return True

    def _listen(self, server: socket.socket, on_front: Callable[[], None]) -> None:
        while True:
            try:
                peer, _ = server.accept()
            except OSError:  # released
                return
            with peer:
                peer.settimeout(1)
                with contextlib.suppress(OSError):
                    if peer.recv(16) == b"front\n":
                        on_front()

    def _ask_front(self) -> None:
        deadline = time.monotonic() + FRONT_RETRY_S
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
                    peer.settimeout(1)
                    peer.connect(str(self.socket_path))
                    peer.sendall(b"front\n")
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    log.warning("the running program did not answer: %r", e)
                    return
                time.sleep(0.1)

    def release(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            self._server.close()
            self._server = None
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with the descriptor
            self._lock = None


class Win32Instance:
    """A named mutex in the session's namespace (Local\\), and a named event the second
    start sets, after allowing the first to take the foreground (Windows otherwise refuses a
    background program's SetForegroundWindow)."""

    ERROR_ALREADY_EXISTS, INFINITE, ASFW_ANY = 183, 0xFFFFFFFF, 0xFFFFFFFF

    def __init__(self, name: str = INSTANCE_NAME) -> None:
        import ctypes
        from ctypes import wintypes as w

        self._k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self._u32 = ctypes.WinDLL("user32")
        self._ctypes = ctypes
        for fn, args in (("CreateMutexW", [ctypes.c_void_p, w.BOOL, w.LPCWSTR]),
                         ("CreateEventW", [ctypes.c_void_p, w.BOOL, w.BOOL, w.LPCWSTR])):
            getattr(self._k32, fn).argtypes, getattr(self._k32, fn).restype = args, w.HANDLE
        self._k32.SetEvent.argtypes, self._k32.CloseHandle.argtypes = [w.HANDLE], [w.HANDLE]
        self._k32.WaitForSingleObject.argtypes = [w.HANDLE, w.DWORD]
        self._k32.WaitForSingleObject.restype = w.DWORD
        self._mutex_name, self._event_name = f"Local\\{name}", f"Local\\{name}.front"
        self._mutex: Any = None
        self._event: Any = None

    def acquire(self, on_front: Callable[[], None]) -> bool:
        k32 = self._k32
        self._mutex = k32.CreateMutexW(None, False, self._mutex_name)
        taken = self._ctypes.get_last_error() == self.ERROR_ALREADY_EXISTS
        self._event = k32.CreateEventW(None, False, False, self._event_name)  # auto-reset
        if taken:
            with contextlib.suppress(AttributeError, OSError):
                self._u32.AllowSetForegroundWindow(self.ASFW_ANY)
            k32.SetEvent(self._event)
            self.release()
            return False
        threading.Thread(target=self._listen, args=(on_front,), daemon=True,
                         name="second start").start()
        return True

    def _listen(self, on_front: Callable[[], None]) -> None:
        while self._event is not None and \
                self._k32.WaitForSingleObject(self._event, self.INFINITE) == 0:
            on_front()

    def release(self) -> None:
        for handle in (self._event, self._mutex):
            if handle:
                self._k32.CloseHandle(handle)
        self._event = self._mutex = None


def runtime_dir() -> Path:
    """The user's runtime directory ($XDG_RUNTIME_DIR), else a private one in the temp
    folder."""
    given = os.environ.get("XDG_RUNTIME_DIR")
    if given and Path(given).is_dir():
        return Path(given)
    return Path(tempfile.gettempdir()) / f"spotlight-support-{os.getuid()}"


def make_instance() -> Instance:
    return Win32Instance() if sys.platform == "win32" else LinuxInstance()
