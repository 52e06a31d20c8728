"""Spotlight Remote Support: the customer's program.

The customer picks the support person they are talking to; from then until the end the
session panel (panel.py) says what is happening. The agent connects out to the relay
(``<relay>/ws/agent``), streams the screen once accepted (what changed, encoded by
screen_codec.py, paced by screen_pacing.py) and injects the support person's input while
they hold control and the customer has not paused. A second start while one runs brings
its panel to the front.

    python agent.py [--relay URL] [--technician ID] [--config FILE]
    python agent.py --check-config FILE     is FILE a configuration this program accepts?

This file is the program's I/O: the real backends (screen, input), the asyncio loop that
drives the session core (agent_session.py: every rule of the session, no I/O) and main().
The tray, the dialogs and what the panel is told are in agent_ui.py, the configuration in
agent_config.py (which says what support.json holds). With --relay and --technician no
configuration is needed (source runs and tests). Exit codes: 0 ended normally, cancelled or
already running, 1 refused/unreachable/lost/no window to show, 2 configuration.

Environment (for tests and diagnosis): SPOTLIGHT_SCREEN=mss|dummy, SPOTLIGHT_INPUT=
win32|x11|dummy (default: the platform's), SPOTLIGHT_TRAY=pystray|log (default pystray; "log"
writes the tray's states to the log instead of showing an icon), SPOTLIGHT_PANEL=win32|tk|log
(default: the platform's; "log" writes the panel's states to the log: the only way to share
the screen without a window saying so, for tests), SPOTLIGHT_DIALOGS=win32|tk|stderr
(default: the platform's), SPOTLIGHT_CLIPBOARD=win32|x11|dummy (agent_clipboard.py),
SPOTLIGHT_LOG=debug for a verbose log; SPOTLIGHT_DESKTOP and SPOTLIGHT_ELEVATION: see
agent_elevation.py (the administrator prompt and the restart as administrator, whose
elevated copy starts with --handoff-file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import agent_clipboard
import agent_elevation
import agent_session as core
import agent_ui
import file_window
import panel
import protocol as p
from agent_config import (
    CONFIG_NAME,
    Config,
    ConfigError,
    agent_url,
    check_config,
    config_paths,
    link_ssl_context,
    load_config,
)
from agent_session import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, KEY_TABLE, Outcome
from agent_ui import APP_NAME, Dialogs, Tray, make_dialogs, make_tray
from panel import Panel

# --- constants -------------------------------------------------------------------------

ENCODER_THREADS = 2  # strips of a large update are encoded in parallel
INLINE_ENCODE_MAX_PX = 128 * 128  # smaller updates (typing) are encoded in the event loop
INLINE_COMPARE_MAX_S = 0.003  # a compare that cost less (thread CPU) stays on the event loop
DRIVEN_S = 2.0  # ... unless the support person's input came this recently (compare_in_thread)
WAIT_FOR_ACK_S = 0.1  # an update encoded ahead looks again this soon if no ack woke it
CURSOR_INTERVAL_S = 0.045  # the customer's pointer is asked for at most this often
CURSOR_RESTING_INTERVAL_S = 0.1  # ... and this often once it has not moved for CURSOR_REST_S
CURSOR_REST_S = 1.0
LAYOUT_CHECK_INTERVAL_S = 1.0
CLOSE_TIMEOUT_S = 0.5  # telling the relay on Close never takes longer than this
CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 10  # a silent link is noticed within 2x this, well inside the relay's grace
RECONNECT_JITTER = 0.3  # each reconnect delay +-30%: agents cut off together come back spread
DUMMY_SCREEN = p.Screen(0, 0, 1024, 768)
METER_TICK_S = 1.0  # the meter (whole minutes) is looked at this often; redrawn when it changed
ASKED = object()  # _until_closed: the customer asked to pause or resume
DESKTOP_CHECK_INTERVAL_S = 0.25  # how soon an administrator prompt is noticed
AHEAD_INTERVAL_S = 1.0  # while the customer waits: the first image encoded ahead this often
tray_image = agent_ui.tray_image  # icons/make_icons.py draws the exe icon with it
log = logging.getLogger("agent")


# --- interfaces ------------------------------------------------------------------------


class Screen(Protocol):
    def monitors(self) -> tuple[p.Screen, ...]:
        """mss order: [0] the bounding box of all monitors, then each monitor."""

    def grab(self, area: p.Screen) -> memoryview:
        """A new C-contiguous (height, width, 4) BGRX image (a memoryview of that shape, or
        any buffer of it), the caller's to keep."""

    def grab_view(self, area: p.Screen, keep: Any = None) -> memoryview:
        """The same pixels, possibly a view valid only until a later grab_view (no copy
        where the platform allows): what the streamer uses. ``keep``: an image an earlier
        grab_view gave that the caller still holds (the viewer's copy): not written over."""

    def close(self) -> None: ...


class Input(Protocol):
    def position(self) -> tuple[int, int]:
        """The pointer's position in desktop coordinates."""

    def move(self, x: int, y: int) -> None: ...
    def button(self, name: str, down: bool) -> None: ...
    def scroll(self, dx: int, dy: int) -> None:
        """dx, dy in wheel notches; positive dy scrolls down (as a browser's deltaY)."""

    def key(self, code: str, down: bool) -> None:
        """Press or release the physical key ``code`` (a KEY_TABLE key)."""

    def type(self, text: str) -> None: ...
    def close(self) -> None: ...


# --- real backends ---------------------------------------------------------------------


@dataclass
class _GrabSegment:
    """A MIT-SHM segment of two images on one mss instance's connection, and the last view
    handed out of each image (the streamer may keep one)."""

    instance: Any  # the mss instance whose connection the segment is attached to
    memory: Any  # the segment's mmap
    segment: Any  # its xcb id
    views: list = field(default_factory=lambda: [None, None])


class MssScreen:
    def __init__(self) -> None:
        import mss

        _tune_heap()  # (main() did already; a screen made without it, by bench/ or tests)
        self._mss, self._sct = mss, mss.MSS()
        self._retired: list[Any] = []  # replaced instances, closed once no view uses them
        self._shm_views = sys.platform.startswith("linux")
        self._shared: _GrabSegment | None = None

    def monitors(self) -> tuple[p.Screen, ...]:
        layout = self._layout()[: p.MAX_SCREENS]
        if layout != self._sct.monitors[: p.MAX_SCREENS]:
            self._retired.append(self._sct)  # a view of its buffer may still be in use
            self._sct = self._mss.MSS()
        for old in list(self._retired):
            self._close(old)
        return tuple(p.Screen(m["left"], m["top"], m["width"], m["height"]) for m in layout)

    def _layout(self) -> list[dict]:
        """The monitor layout as it is now, asked on the instance's own connection (mss
        keeps its first answer): a fresh instance, with its own connection and MIT-SHM
        segment, cost 0.7-2.5 ms on the stream path once a second."""
        impl = getattr(self._sct, "_impl", None)
        if impl is not None and hasattr(impl, "monitors"):
            with self._sct._lock:
                return impl.monitors()
        with self._mss.MSS() as fresh:  # an mss without that layout: a fresh instance
            return fresh.monitors

    def grab(self, area: p.Screen) -> memoryview:
        shot = self._sct.grab(
            {"left": area.x, "top": area.y, "width": area.width, "height": area.height}
        )
        return memoryview(shot.raw).cast("B", (shot.height, shot.width, 4))

    def grab_view(self, area: p.Screen, keep: Any = None) -> memoryview:
        """The pixels without a copy where the platform allows (X11 MIT-SHM: a writable view
        of one of two images in shared memory, valid until a grab_view not told to ``keep``
        it), else a new image as grab()."""
        if self._shm_views:
            try:
                view = self._shm_view(area, keep)
                if view is not None:
                    return view
            except Exception as e:  # an mss without this layout: copy as before
                log.info("capture without a copy is not available: %r", e)
                self._shm_views = False
        return self.grab(area)

    def _shm_view(self, area: p.Screen, keep: Any) -> memoryview | None:
        from mss.linux import xcb
        from mss.linux.xshmgetimage import ShmStatus

        impl = self._sct._impl
        if getattr(impl, "shm_status", None) is ShmStatus.UNKNOWN:  # mss finds out on a grab:
            self._sct.grab({"left": area.x, "top": area.y, "width": 1, "height": 1})  # 1 px
        if getattr(impl, "shm_status", None) is not ShmStatus.AVAILABLE:
            return None
        size, room = area.width * area.height * 4, impl._bufsize
        if size > room:
            return None
        if self._shared is None or self._shared.instance is not self._sct:
            self._shared = _GrabSegment(self._sct, *self._attach(impl, 2 * room, xcb))
        memory, segment, views = self._shared.memory, self._shared.segment, self._shared.views
        # Two images' room (mss's own segment is read-only and one image): the grab goes
        # where the viewer's copy is not, so the streamer keeps a whole image by reference
        # and updates it in place (copying a 1080p motion update into a copy of its own cost
        # 2-2.6 ms of the event loop per update); the second image is used (and resident)
        # only once a whole image is kept, as in motion.
        half = 1 if keep is not None and keep is views[0] else 0
        with self._sct._lock:
            reply = xcb.shm_get_image(
                impl.conn, impl.drawable, area.x, area.y, area.width, area.height,
                0xFFFFFFFF, xcb.ImageFormat.ZPixmap, segment, half * room)
        if reply.depth != impl.drawable_depth or reply.visual != impl.drawable_visual_id:
            raise RuntimeError("the X server answered in another pixel format")
        view = memoryview(memory)[half * room:half * room + size].cast(
            "B", (area.height, area.width, 4))
        views[half] = view
        return view

    def _attach(self, impl: Any, size: int, xcb: Any) -> tuple[Any, Any]:
        """A readable and writable MIT-SHM segment of ``size`` bytes on the instance's
        connection (freed by the X server with the connection; here with its last view)."""
        import mmap

        fd = os.memfd_create("spotlight-grabs", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            memory = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            raise
        segment = xcb.ShmSeg(xcb.generate_id(impl.conn).value)
        with self._sct._lock:  # (xcb closes the descriptor, attached or not)
            xcb.shm_attach_fd(impl.conn, segment, fd, read_only=False)
        return memory, segment

    def _close(self, sct: Any) -> None:
        try:
            sct.close()
        except BufferError:  # a view of its buffer is still alive: try again next time
            return
        self._retired.remove(sct)

    def close(self) -> None:
        for old in list(self._retired):
            self._close(old)
        with contextlib.suppress(BufferError):
            self._sct.close()


def _glibc() -> Any:
    """The C library where it is glibc (Linux), whose heap the two functions below tune;
    None elsewhere (Windows' heap is another allocator)."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libc.so.6")
    return None


_LIBC = _glibc()


def _tune_heap() -> None:
    """glibc: take each grab's 8 MB buffer from the heap, not from a fresh mmap that
    page-faults on every frame (that cost more than the grab itself); and one heap for all
    threads (M_ARENA_MAX): glibc gave each thread that allocates (the encoders, asyncio's
    to_thread workers, the panel's) a heap of its own, 1-4 MB resident each with up to half
    of it free, 2-2.5 MB more at the peak (bench/memory). The threads hold the GIL for most
    of their allocations, so one heap's lock is not contended. No-op elsewhere; setting it
    again changes nothing."""
    if _LIBC is not None:
        with contextlib.suppress(OSError, AttributeError):
            _LIBC.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
            _LIBC.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
            _LIBC.mallopt(-8, 1)  # M_ARENA_MAX


def _release_free_heap() -> None:
    """glibc: give the heap's free pages back to the system (malloc_trim). After a whole
    image: its encoding (optimised JPEG 4:4:4, two threads, libjpeg's coefficients of a
    whole strip each) leaves about 3 MB free in the heap that later updates do not use
    (bench/memory with --panel log: typing peak 59.1/59.0 MB with it, 61.7/62.0 without;
    it costs 0.4-1.3 ms, and whole images are rare). No-op elsewhere."""
    if _LIBC is not None:
        with contextlib.suppress(OSError, AttributeError):
            _LIBC.malloc_trim(0)


class _PynputMouse:
    """The mouse through pynput (the same on Windows and X11); keys differ per platform."""

    def __init__(self) -> None:
        from pynput import keyboard, mouse

        self._kb, self._mouse = keyboard.Controller(), mouse.Controller()
        self._keycode, self._buttons = keyboard.KeyCode, mouse.Button

    def position(self) -> tuple[int, int]:
        x, y = self._mouse.position
        return int(x), int(y)

    def move(self, x: int, y: int) -> None:
        self._mouse.position = (x, y)

    def button(self, name: str, down: bool) -> None:
        button = getattr(self._buttons, name)
        (self._mouse.press if down else self._mouse.release)(button)

    def scroll(self, dx: int, dy: int) -> None:
        self._mouse.scroll(dx, -dy)

    def close(self) -> None:
        pass


class Win32Input(_PynputMouse):
    """Keys by virtual key (bit 8 of KEY_TABLE's code marks KEYEVENTF_EXTENDEDKEY keys)."""

    def key(self, code: str, down: bool) -> None:
        vk = KEY_TABLE[code][1]
        key = self._keycode.from_vk(vk & 0xFF, _flags=1) if vk & 0x100 else \
            self._keycode.from_vk(vk)
        (self._kb.press if down else self._kb.release)(key)

    def type(self, text: str) -> None:
        self._kb.type(text)


class X11Input(_PynputMouse):
    """Keys by keysym through XTest: plain characters would be synthetic events, which xterm
    ignores; text through XTest too (_XTestTyper)."""

    def __init__(self) -> None:
        super().__init__()
        self._typer = _XTestTyper()

    def key(self, code: str, down: bool) -> None:
        key = self._keycode.from_vk(KEY_TABLE[code][0])
        (self._kb.press if down else self._kb.release)(key)

    def position(self) -> tuple[int, int]:
        # One round trip on pynput's own connection: its getter also syncs (a second round
        # trip) and swaps Xlib's error handler, 0.6-0.8 ms of the streamer's poll ~10 times a
        # second under load; an X error here raises as there.
        display = getattr(self._mouse, "_display", None)
        if display is None:  # a pynput without it
            return super().position()
        pointer = display.screen().root.query_pointer()
        return int(pointer.root_x), int(pointer.root_y)

    def type(self, text: str) -> None:
        self._typer.type(text)

    def close(self) -> None:
        self._typer.close()


class _XTestTyper:
    """Unicode text on X11: each character's keysym through XTest (borrowing a free keycode
    for characters the keymap lacks), since xterm ignores pynput's synthetic events."""

    def __init__(self) -> None:
        from Xlib import XK, X, display
        from Xlib.ext import xtest

        self._X, self._xtest, self._d = X, xtest, display.Display()
        self._shift = self._d.keysym_to_keycode(XK.XK_Shift_L)

    def _tap(self, keycode: int, shift: bool) -> None:
        X, fake = self._X, self._xtest.fake_input
        if shift:
            fake(self._d, X.KeyPress, self._shift)
        fake(self._d, X.KeyPress, keycode)
        fake(self._d, X.KeyRelease, keycode)
        if shift:
            fake(self._d, X.KeyRelease, self._shift)

    def type(self, text: str) -> None:
        borrowed: dict[int, int] = {}  # keysym -> keycode
        for ch in text:
            keysym = {"\n": 0xFF0D, "\t": 0xFF09}.get(ch) or (
                ord(ch) if ord(ch) < 0x100 else 0x01000000 | ord(ch))
            found = [kc for kc in self._d.keysym_to_keycodes(keysym) if kc[1] in (0, 1)]
            if found:
                self._tap(found[0][0], found[0][1] == 1)
            elif (keycode := borrowed.get(keysym) or self._borrow(keysym, borrowed)):
                self._tap(keycode, False)
            self._d.sync()
        if borrowed:
            time.sleep(0.05)  # let clients read the borrowed mapping before it goes
            for keycode in borrowed.values():
                self._d.change_keyboard_mapping(keycode, [(0,) * 4])
            self._d.sync()

    def _borrow(self, keysym: int, borrowed: dict[int, int]) -> int:
        first = self._d.display.info.min_keycode
        count = self._d.display.info.max_keycode - first + 1
        used = set(borrowed.values())
        for i, syms in enumerate(self._d.get_keyboard_mapping(first, count)):
            if not any(syms) and first + i not in used:
                self._d.change_keyboard_mapping(first + i, [(keysym,) * 4])
                self._d.sync()
                borrowed[keysym] = first + i
                return first + i
        return 0

    def close(self) -> None:
        self._d.close()




class DummyScreen:
    """SPOTLIGHT_SCREEN=dummy: one blank 1024x768 monitor (headless runs)."""

    def monitors(self) -> tuple[p.Screen, ...]:
        return (DUMMY_SCREEN, DUMMY_SCREEN)

    def grab(self, area: p.Screen) -> memoryview:
        return memoryview(bytearray(area.width * area.height * 4)).cast(
            "B", (area.height, area.width, 4))

    def grab_view(self, area: p.Screen, keep: Any = None) -> memoryview:
        return self.grab(area)

    def close(self) -> None:
        pass


class DummyInput:
    """SPOTLIGHT_INPUT=dummy: input is written to the log instead of injected."""

    def __init__(self) -> None:
        self._pointer = (0, 0)

    def position(self) -> tuple[int, int]:
        return self._pointer

    def move(self, x: int, y: int) -> None:
        self._pointer = (x, y)
        log.info("input: move %d %d", x, y)

    def button(self, name: str, down: bool) -> None:
        log.info("input: button %s %s", name, "down" if down else "up")

    def scroll(self, dx: int, dy: int) -> None:
        log.info("input: scroll %d %d", dx, dy)

    def key(self, code: str, down: bool) -> None:
        log.info("input: key %s %s", code, "down" if down else "up")

    def type(self, text: str) -> None:
        log.info("input: type %r", text)

    def close(self) -> None:
        pass


def make_screen() -> Screen:
    """The screen backend: SPOTLIGHT_SCREEN=mss (default) or dummy."""
    if os.environ.get("SPOTLIGHT_SCREEN", "mss") == "dummy":
        return DummyScreen()
    return MssScreen()


def make_input() -> Input:
    """The input backend: SPOTLIGHT_INPUT=win32|x11|dummy, by default the platform's."""
    choice = os.environ.get("SPOTLIGHT_INPUT") or ("win32" if sys.platform == "win32" else "x11")
    if choice == "dummy":
        return DummyInput()
    return Win32Input() if choice == "win32" else X11Input()


def set_dpi_aware() -> None:
    """Windows: capture and input in physical pixels, so they agree on scaled displays."""
    import ctypes

    with contextlib.suppress(AttributeError, OSError):
        if ctypes.windll.user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(-4)):
            return  # per-monitor v2
    with contextlib.suppress(AttributeError, OSError):
        if ctypes.windll.shcore.SetProcessDpiAwareness(2) == 0:
            return
    with contextlib.suppress(AttributeError, OSError):
        ctypes.windll.user32.SetProcessDPIAware()


# --- the Agent loop --------------------------------------------------------------------


class Agent:
    """The asyncio loop around one Session (agent_session.py): connects, hands the core what
    arrives with the time, and carries out what it answers on the websocket and the backends;
    the session panel and the tray show the core's view (agent_ui.panel_facts, panel.view).
    Backends, windows, clock and TLS context are passed in; the rules are all in the core."""

    def __init__(self, *, url: str, technician: str, screen: Screen, input: Input,
                 tray: Tray, machine: str, user: str, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic, window: Panel | None = None,
                 company: str = APP_NAME, person: str = "", phone: str = "",
                 files: file_window.FileDesk | None = None,
                 clipboard: agent_clipboard.Clipboard | None = None,
                 desktop: agent_elevation.DesktopWatch | None = None,
                 elevation: agent_elevation.Elevation | None = None, handoff: str = "",
                 elevate_args: list[str] | None = None) -> None:
        self.url, self.ssl_context = url, ssl_context
        self.clipboard = clipboard if clipboard is not None else \
            agent_clipboard.DummyClipboard()
        self._clipboard_seen: object = None  # the clipboard's marker last looked at
        self._clipboard_written = ""  # the text the support person last pasted
        self.clipboard_watching = 0  # the session's control_epoch watched for copies (0: none)
        self.screen, self.input, self.tray, self.clock = screen, input, tray, clock
        self.display = agent_ui.SessionDisplay(
            window if window is not None else panel.LogPanel(), tray, company,
            person or technician, phone)
        self.session = core.Session(technician, machine, user, KEY_TABLE,
                                    on_change=self._show, handoff=handoff)
        self.desktop = desktop or agent_elevation.NoDesktopWatch()
        self.elevation = elevation or agent_elevation.NoElevation()
        self.elevate_args = elevate_args or ["--technician", technician]
        # Offered to the customer where it means something: Windows, not elevated yet.
        self.display.can_elevate = tray.can_elevate = \
            not handoff and self.elevation.available()
        self._ws: Any = None  # the live link, for what happens outside _serve's turn
        self._tasks: set[asyncio.Future] = set()  # the desktop watch's and elevation's steps
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()  # set before the loop runs is honoured too
        self._closed: asyncio.Event | None = None  # the same, for the loop
        self._asked: asyncio.Event | None = None  # the customer asked to pause or resume
        self._pause_wish: bool | None = None  # what they asked for last
        self._wake: asyncio.Event | None = None  # the streamer: ack, refresh or input
        self._look_now = False  # ... an ack or a refresh: poll at once, not when due
        self._streamer: asyncio.Future | None = None
        self._pacer: Any = None  # the streamer's screen_pacing.Pacer
        self._sendable: asyncio.Event | None = None  # the streamer's: frames may be written
        self._full = True
        self._ahead: Any = None  # the first image encoded ahead (codec.EncodedAhead)
        self._ahead_stop = threading.Event()  # ... whose encoding the streamer stops
        self._capture_failed = False  # the streamer failed: the session ends
        self.files = files if files is not None else file_window.FileDesk()  # files sent in
        self._link: Any = None  # the websocket of the current connection, for file answers and chat
        self._file_tasks: set[asyncio.Future] = set()
        self._show(self.session.view)

    def request_close(self) -> None:
        """The customer chose Close or End session (any thread: tray menu, panel, signal)."""
        self._closing.set()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._closed.set)

    def request_pause(self, paused: bool = True) -> None:
        """The customer chose Pause (``paused``) or Resume (any thread: panel, tray menu)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ask_pause, paused)

    def request_elevate(self) -> None:
        """The customer chose Restart as administrator (any thread: panel, tray menu)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._act, self.session.elevate)

    def _act(self, event: Callable[[float], list]) -> None:
        """Hand the core an event from outside the link's own turn (the desktop watch, the
        customer's answer) and carry out what it says on the live link."""
        actions = event(self.clock())
        if actions:
            self._background(self._do(self._ws, actions))

    def _background(self, coro: Any) -> None:
        """Run ``coro`` beside the link's turn; a link that closes meanwhile is _serve's to
        handle, so its error here is only logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(task: asyncio.Future) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.info("background step failed: %r", task.exception())

        task.add_done_callback(done)

    async def _watch_desktop(self) -> None:
        """Poll the desktop watch: an administrator prompt stops capture and input."""
        secure = False
        while True:
            try:
                now_secure = self.desktop.secure()
            except Exception as e:  # a failing watch must not end the session
                log.warning("desktop watch failed: %r", e)
                now_secure = False
            if now_secure != secure:
                secure = now_secure
                log.info("desktop: %s", "administrator prompt" if secure else "default")
                self._act(lambda now, s=secure: self.session.desktop(s, now))
            await asyncio.sleep(DESKTOP_CHECK_INTERVAL_S)

    async def _ask_elevation(self, person: str) -> None:
        """The support person asked for a restart as administrator: the customer decides
        (in a dialog of their own, off the loop)."""
        yes = await asyncio.to_thread(self.elevation.confirm, person)
        log.info("restart as administrator: the customer said %s", "yes" if yes else "no")
        self._act(self.session.elevate if yes else
                  (lambda now: self.session.elevation_result("declined", now)))

    async def _start_elevated(self, secret: str) -> None:
        result = await asyncio.to_thread(self.elevation.start, secret, self.elevate_args)
        log.info("restart as administrator: %s", result)
        self._act(lambda now: self.session.elevation_result(result, now))
    def request_send_file(self) -> None:
        """The customer chose "Send a file to David…" (any thread: panel, tray menu)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.files.send_file, self.session)

    async def _send_chunk(self, data: bytes) -> bool:
        """One chunk of a file the customer sends, on the current link (False: none)."""
        from websockets.exceptions import ConnectionClosed

        if self._link is None:
            return False
        try:
            await self._link.send(data)
        except ConnectionClosed:
            return False
        return True

    def _buffered(self) -> int:
        """Bytes waiting in the link's buffer (a file's chunks wait for the screen's)."""
        return self._link.transport.get_write_buffer_size() if self._link is not None else 0
    def request_chat(self, text: str) -> None:
        """The customer sent a chat line (any thread: the panel)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(
                    lambda: asyncio.ensure_future(self._chat(text)))

    async def _chat(self, text: str) -> None:
        with contextlib.suppress(Exception):  # a link that just went: the line is not sent
            await self._do(self._link, self.session.chat(text, self.clock()))

    async def _watch_clipboard(self, ws: Any) -> None:
        """Look for a new copy every agent_clipboard.POLL_S (why polling: that module); a
        change is offered only while in control and not paused (the core decides), and one
        made before is not sent later."""
        while True:
            await asyncio.sleep(agent_clipboard.POLL_S)
            if not self.session.shares_clipboard:
                continue  # not looked at: a copy made now is not sent later
            try:
                marker = await asyncio.to_thread(self.clipboard.marker)
                if self.clipboard_watching != self.session.control_epoch:  # control began:
                    self.clipboard_watching = self.session.control_epoch  # what is there stays
                    self._clipboard_seen = marker
                    log.info("clipboard: watching for copies while in control")
                    continue
                if marker == self._clipboard_seen:
                    continue
                self._clipboard_seen = marker
                text = await asyncio.to_thread(self.clipboard.text)
            except Exception as e:  # a clipboard that fails must not end the session
                log.warning("reading the clipboard failed: %r", e)
                continue
            if text != self._clipboard_written:
                await self._do(ws, self.session.clipboard_changed(text, self.clock()))

    async def _set_clipboard(self, text: str) -> None:
        try:
            # Our own write is not a copy of the customer's to send back: the watch skips
            # this text (not the marker read after it, which a quick copy could be).
            self._clipboard_written = text
            await asyncio.to_thread(self.clipboard.set_text, text)
        except Exception as e:  # a clipboard held by another program must not end it
            log.warning("setting the clipboard failed: %r", e)

    def _ask_pause(self, paused: bool) -> None:
        self._pause_wish = paused
        self._asked.set()

    async def run(self) -> Outcome:
        self._wake, self._closed, self._asked = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.files.attach(self._loop, self._file_actions, self._send_chunk, self._buffered)
        if self._closing.is_set():
            self._closed.set()
        meter = asyncio.ensure_future(self._tick())
        watch = asyncio.ensure_future(self._watch_desktop())
        ahead = asyncio.ensure_future(self._encode_ahead())  # while the customer waits
        try:
            return await self._run()
        finally:
            meter.cancel()
            ahead.cancel()
            watch.cancel()
            self.files.close()
            await self._stop_stream()
            for action in self.session.close(self.clock()):  # after an end: nothing
                if isinstance(action, core.Inject):
                    self._inject(action)
            self.tray.hide()

    def _file_actions(self, actions: list) -> None:
        """The customer answered a file's dialog (FileDesk, on this loop): carry it out on
        the current link; a link that has just gone takes the answer with it."""
        async def do() -> None:
            from websockets.exceptions import ConnectionClosed

            with contextlib.suppress(ConnectionClosed):
                await self._do(self._link, actions)

        task = asyncio.ensure_future(do())
        self._file_tasks.add(task)  # (a task nobody holds may be collected mid-way)
        task.add_done_callback(self._file_tasks.discard)

    def _show(self, view: core.View) -> None:
        self.display.show(view, self.clock())

    async def _tick(self) -> None:
        """The panel's meter, looked at once a second while it runs."""
        while True:
            await asyncio.sleep(METER_TICK_S)
            if self.session.state in (*core.SHARING, core.RECONNECTING):
                self._show(self.session.view)

    async def _run(self) -> Outcome:
        delay = 0.0
        while True:
            if delay:
                jitter = random.uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)
                await self._until_closed(asyncio.sleep(delay * jitter))
            if self._closing.is_set():  # no link: nobody to tell
                done = await self._do(None, self.session.close(self.clock()))
            else:
                try:
                    ws = await self._until_closed(self._connect())
                except ssl.SSLCertVerificationError as e:
                    done = await self._do(None, self.session.untrusted(e.verify_message,
                                                                       self.clock()))
                except Exception as e:
                    log.info("connect failed: %r", e)
                    done = await self._do(None, self.session.connect_failed(_describe(e),
                                                                             self.clock()))
                else:
                    if ws is None:
                        continue
                    done = await self._serve(ws)
            if not isinstance(done, core.Reconnect):  # (None: the core had ended already)
                return done.outcome if done is not None else Outcome(EXIT_FAILED, core.LOST)
            delay = done.delay_s

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        return await connect(
            self.url, ssl=self.ssl_context if self.url.startswith("wss:") else None,
            max_size=p.MAX_MESSAGE_BYTES, compression=None, open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S, ping_interval=KEEPALIVE_S, ping_timeout=KEEPALIVE_S,
            user_agent_header=f"{APP_NAME} agent")

    async def _until_closed(self, coro: Any, *, or_asked: bool = False) -> Any:
        """Run ``coro`` unless Close comes first (then cancel it and return None), or, with
        ``or_asked``, a Pause or Resume (then cancel it and return ASKED)."""
        task = asyncio.ensure_future(coro)
        waiters = {asyncio.ensure_future(self._closed.wait())}
        if or_asked:
            waiters.add(asyncio.ensure_future(self._asked.wait()))
        await asyncio.wait({task, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not task.done():  # (cancelling websockets' recv loses nothing)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return None if self._closed.is_set() else ASKED
        return task.result()

    async def _serve(self, ws: Any) -> core.End | core.Reconnect:
        """One connection, until the session ends or the link is lost."""
        from websockets.exceptions import ConnectionClosed

        session = self.session
        self._asked.clear()  # a Pause pressed while the link was down is not kept
        self._ws = ws
        self._link = ws
        watcher = asyncio.ensure_future(self._watch_clipboard(ws))
        try:
            done = await self._do(ws, session.connected(self.screen.monitors()))
            while done is None:
                data = await self._until_closed(ws.recv(), or_asked=True)
                now = self.clock()
                if data is None:  # Close, or the streamer failed
                    actions = session.capture_failed(now) if self._capture_failed else \
                        session.close(now)
                elif data is ASKED:
                    self._asked.clear()
                    actions = session.pause(now) if self._pause_wish else session.unpause(now)
                elif not isinstance(data, str):
                    try:  # a file chunk (file_window.FileDesk); the screen never comes in
                        if not p.is_file_chunk(data):
                            raise p.RemoteProtocolError("the relay sent binary data")
                        actions = self.files.chunk(data)
                    except p.RemoteProtocolError as e:
                        actions = session.bad_message(str(e), now)
                else:
                    try:
                        message = p.decode_control(data)
                    except p.RemoteProtocolError as e:  # (a LocalProtocolError is a bug of ours)
                        log.warning("bad message from the relay: %s", e)
                        actions = session.bad_message(str(e), now)
                    else:
                        if isinstance(message, (p.Error, p.Ended)):
                            log.info("the relay says %s", p.encode_control(message))
                        actions = self.files.receive(message, session) if isinstance(
                            message, p.FILE_TYPES) else session.receive(message, now)
                done = await self._do(ws, actions)
            return done
        except ConnectionClosed as e:
            log.info("connection closed: %s", e)
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (None, "")
            done = await self._do(None, session.link_lost(code, reason, self.clock()))
            return done or core.End(Outcome(EXIT_FAILED, core.LOST))
        finally:
            self._ws = None
            self._link = None
            for action in self.files.link_lost(session):  # (only key and button releases)
                self._inject(action)
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            await self._stop_stream()

    async def _do(self, ws: Any, actions: list) -> core.End | core.Reconnect | None:
        """Carry out the core's actions in order; the End or Reconnect that ends them."""
        for action in actions:
            if isinstance(action, core.Send) and ws is not None:
                await ws.send(p.encode_control(action.message))
            elif isinstance(action, core.Inject):
                self._inject(action)
            elif isinstance(action, core.Balloon):
                self.display.balloon(action.text)
            elif isinstance(action, core.ChatLine):
                self.display.chat(action.who, action.text)
            elif isinstance(action, core.SetClipboard):
                await self._set_clipboard(action.text)
            elif isinstance(action, core.Stream):
                self._full = self._full or action.full
                if self._sendable is not None:
                    self._sendable.set()
                if self._streamer is None and ws is not None:
                    self._full = True
                    self._streamer = asyncio.ensure_future(self._stream(ws))
                    self._streamer.add_done_callback(self._stream_done)
                self._look_now = True
                self._wake.set()
            elif isinstance(action, core.StopStream):
                await self._stop_stream()
            elif isinstance(action, core.End):
                if ws is not None:
                    await self._goodbye(ws, action)
                return action
            elif isinstance(action, core.Reconnect):
                return action
            elif isinstance(action, core.AskElevation):
                self._background(self._ask_elevation(action.person))
            elif isinstance(action, core.StartElevated):
                self._background(self._start_elevated(action.secret))
        return None

    async def _goodbye(self, ws: Any, end: core.End) -> None:
        """Tell the relay (``end.farewell``) and close, or drop a link that does not answer.
        Its `ended` answering our close carries the receipt (the ledger's reference)."""
        async def tell() -> None:
            if end.farewell is not None:
                await ws.send(p.encode_control(end.farewell))
                await self._receipt(ws)
            await ws.close(end.close_code, end.close_reason)

        try:
            await asyncio.wait_for(tell(), CLOSE_TIMEOUT_S)
        except Exception as e:
            log.info("could not tell the relay: %r", e)
            ws.transport.abort()

    async def _receipt(self, ws: Any) -> None:
        """Read what the relay still says until its `ended` (the caller bounds the time)."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await ws.recv()
                with contextlib.suppress(p.RemoteProtocolError):
                    message = p.decode_control(data) if isinstance(data, str) else None
                    if isinstance(message, p.Ended):
                        self.session.receipt(message)
                        return

    def _inject(self, action: core.Inject) -> None:
        if self._pacer is not None:
            self._pacer.input(self.clock(), self._pacer.awaits_echo(action.method, action.args))
            self._wake.set()
        try:
            getattr(self.input, action.method)(*action.args)
        except Exception as e:  # one bad injection must not end the session
            log.warning("input %s%r failed: %r", action.method, action.args, e)

    async def _encode_ahead(self) -> None:
        """While the customer waits for the accept, keep the first image encoded ahead (as
        a fresh Pacer plans it), at most every AHEAD_INTERVAL_S and only the strips that
        changed, off the event loop. Nothing of it is sent: at the accept the streamer grabs
        once and sends as encoded only the strips that still show the same pixels (encoded
        at the accept, 1080p took 50-130 ms under load before its first byte went)."""
        try:
            await asyncio.to_thread(_warm_encoders)
        except Exception as e:  # (a task's error nobody awaits is reported at exit)
            log.info("could not warm the encoders: %r", e)
            return
        import screen_codec as codec
        import screen_pacing as pacing

        while True:
            session = self.session
            if session.state != core.WAITING or session.secure or not session.screens or \
                    self._streamer is not None:
                await asyncio.sleep(AHEAD_INTERVAL_S)
                continue
            try:
                area = session.screens[session.monitor]
                if self._ahead is None:
                    plan = pacing.Pacer(self.clock()).plan(
                        [(0, 0, area.width, area.height)], self.clock(), full=True)[0]
                    self._ahead = codec.EncodedAhead(plan.quality, plan.subsampling, plan.rows)
                changed = self._ahead.update(self.screen.grab_view(area))  # (copied)
                if changed:  # (a stop of its own: the streamer does not wait for it)
                    self._ahead_stop = threading.Event()
                    done = await asyncio.to_thread(self._ahead.encode, changed,
                                                   self._ahead_stop)
                    log.debug("first image encoded ahead: %d of %d strips", done, len(changed))
            except Exception as e:  # the first image is then encoded at the accept
                log.info("encoding ahead stopped: %r", e)
                self._ahead = None
                return
            await asyncio.sleep(AHEAD_INTERVAL_S)

    def _take_ahead(self) -> Any:
        """The first image encoded ahead (its encoding told to store nothing more), once."""
        self._ahead_stop.set()
        ahead, self._ahead = self._ahead, None
        return ahead

    async def _stop_stream(self) -> None:
        streamer, self._streamer, self._pacer = self._streamer, None, None
        self._sendable = None
        if streamer is not None:
            streamer.cancel()
            with contextlib.suppress(BaseException):
                await streamer

    def _stream_done(self, task: asyncio.Future) -> None:
        from websockets.exceptions import ConnectionClosed

        if task.cancelled() or isinstance(task.exception(), (ConnectionClosed, type(None))):
            return
        with contextlib.suppress(Exception):
            if self.desktop.secure():  # capture fails on the secure desktop: not the end
                log.info("capture failed under an administrator prompt: %r", task.exception())
                self._act(lambda now: self.session.desktop(True, now))
                return
        log.error("screen capture failed", exc_info=task.exception())
        self._capture_failed = True
        self._closed.set()

    async def _stream(self, ws: Any) -> None:
        """Poll the screen as the Pacer says; encode what changed while flow control allows,
        into the outbox that the sender writes from (interactive updates first)."""
        import screen_codec as codec
        import screen_pacing as pacing

        session, flow = self.session, self.session.flow
        diff = codec.ScreenDiff()
        outbox = pacing.Outbox()
        cursor = None
        layout_at = polled_at = pointer_at = moved_at = self.clock()
        pacer = self._pacer = pacing.Pacer(polled_at, ENCODER_THREADS)
        pool = ThreadPoolExecutor(ENCODER_THREADS, "encoder")
        sendable, writing = asyncio.Event(), asyncio.Lock()
        self._sendable = sendable  # an ack sets it: an update encoded ahead may go at once
        sender = asyncio.ensure_future(self._send(ws, outbox, sendable, writing))
        bulk_encode = _BulkEncode()
        compared = 0.0  # the last compare's cost (thread CPU seconds): compare_in_thread
        echo_rows: tuple[int, int] | None = None  # the last echo's rows (echo_band)
        band_for: float | None = None  # the input whose echo a band poll looked for
        try:
            ahead = self._take_ahead()  # for the first image
            while True:
                # a fixed cadence: the time spent encoding counts; the session's first
                # image is looked for at once (no update numbered yet: flow.seq is 0), and
                # so is what an ack or a refresh asks for during the wait; input re-times
                # it (Pacer.due: its echo is looked for a few ms on, even when it came
                # while the last poll encoded: a wake cleared here lost it, ~10 ms)
                self._look_now = False
                done_at = self.clock()  # the last poll's work is done
                while flow.seq and not self._look_now and (delay := pacer.due(
                        polled_at, done_at, bool(flow.ahead)) - self.clock()) > 0:
                    self._wake.clear()
                    # (a timer that sets the event: wait_for would make a task every poll)
                    timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                    if asyncio.get_running_loop().time() >= timer.when():
                        break  # the wait is over (a clock of the session's own may stand)
                if sender.done():
                    sender.result()  # its error (a closed link) ends the stream
                bulk_encode.reap()
                sendable.set()  # an ack may have made room for frames waiting
                polled_at = self.clock()
                if polled_at - layout_at > LAYOUT_CHECK_INTERVAL_S:
                    layout_at = polled_at
                    await self._do(ws, session.layout(self.screen.monitors()))
                area = session.screens[session.monitor]
                resting = polled_at - moved_at > CURSOR_REST_S
                if cursor is None or polled_at - pointer_at >= (
                        CURSOR_RESTING_INTERVAL_S if resting else CURSOR_INTERVAL_S):
                    pointer_at = polled_at  # (asking X11 for it costs ~0.3 ms of Python)
                    x, y = self.input.position()
                    if (x - area.x, y - area.y) != cursor:
                        cursor, moved_at = (x - area.x, y - area.y), polled_at
                        await ws.send(p.encode_control(p.Cursor(session.monitor, *cursor)))
                if self._full:
                    outbox.clear()  # a full image replaces whatever was not written yet
                # One bulk update is encoded ahead while the link's places are taken: it is
                # written (and starts) as soon as an ack frees one (FlowControl.ahead_of_time),
                # instead of the grab and encode starting only then. (In motion in Chromium
                # that left 2 updates in flight idle for an encode each: 26 fps, not 40.)
                # Another is encoded once it started, even while its frames are still paced
                # out: the outbox holds at most two bulk updates.
                bulk = not flow.ahead and not bulk_encode.busy
                interactive = pacer.interactive(polled_at) and flow.may_start(interactive=True)
                if not (bulk or interactive):
                    # held back by the link (if for long): the next update is cheaper
                    pacer.held_back(flow.held_for(polled_at))
                    continue
                # A view without a copy, valid until a grab that does not keep it: the
                # viewer's copy (diff.shown: this view itself when a whole image is
                # committed) takes what changed, and updates are encoded from it.
                band = None  # the first poll for input's echo: only rows near the last one
                if not self._full and pacer.echo_awaited_since not in (None, band_for) and \
                        pacer.motion.run < pacing.MOTION_AFTER_CHANGES and \
                        diff.shown is not None and echo_rows is not None and \
                        memoryview(diff.shown).shape[:2] == (area.height, area.width):
                    band_for, band = pacer.echo_awaited_since, echo_band(echo_rows, area.height)
                pixels = self.screen.grab_view(area if band is None else p.Screen(
                    area.x, area.y + band[0], area.width, band[1] - band[0]), keep=diff.shown)
                full = self._full or (band is None and not diff.matches(pixels))
                if full:  # the update being encoded has older pixels: it goes first
                    await bulk_encode.finish()
                self._full = False  # a refresh while this update is encoded asks for another
                if full:
                    rects = [(0, 0, pixels.shape[1], pixels.shape[0])]
                elif band is not None:  # (a full compare of a few rows: cheaper than sampled)
                    rects = [(x, y + band[0], w, h) for x, y, w, h in codec.changed_rects(
                        memoryview(diff.shown)[band[0]:band[1]], pixels)]
                else:
                    rects, compared = await self._compare(diff, pixels, compare_in_thread(
                        pacer.echo_awaited_since is not None, compared,
                        pacer.motion.run >= pacing.MOTION_AFTER_CHANGES,
                        polled_at - pacer.input_at < DRIVEN_S))
                plans = pacer.plan(rects, polled_at, flow.rate, full=full,
                                   viewer_limited=flow.viewer_limited)
                for plan in plans:
                    if bulk_encode.overlaps(plan.rects) or not (full or bulk or (
                            plan.interactive and flow.may_start(interactive=True))):
                        # not committed: found again by a later poll
                        pacer.held_back(flow.held_for(polled_at))
                        continue
                    reuse = None
                    if full and ahead is not None:  # the strips still as encoded ahead
                        ahead.update(pixels)
                        reuse = ahead.pieces(plan.quality, plan.subsampling).get
                        diff.commit(ahead.give(), plan.rects, owned=True)
                        ahead = None
                    elif band is not None:
                        _commit_band(diff, pixels, band[0], plan.rects)
                    else:
                        diff.commit(pixels, plan.rects, owned=codec.writeable(pixels))
                    if plan.interactive:
                        echo_rows = (min(y for _, y, _, _ in plan.rects),
                                     max(y + h for _, y, _, h in plan.rects))
                    seq = flow.next_seq()
                    if full or plan.interactive:
                        flow.started(seq, self.clock())
                    else:
                        flow.ahead_of_time(seq, self.clock())
                    args = (diff.shown, plan.rects, session.monitor, seq, plan.quality, full)
                    options = {"subsampling": plan.subsampling, "rows": plan.rows,
                               "scale": plan.scale}  # 2: half resolution (MOTION_RUNGS)
                    if full:  # on the link strip by strip while the rest is encoded
                        frames = await self._pass_on(
                            codec.encode_frames(*args, pool.map, reuse=reuse, **options), seq,
                            outbox, sendable)
                        _release_free_heap()  # the whole image's encoding buffers
                    elif sum(w * h for _, _, w, h in plan.rects) <= INLINE_ENCODE_MAX_PX:
                        frames = codec.encode_update(*args, **options)  # a hand-off costs more
                    elif not plan.interactive:  # frames to the outbox when encoded
                        bulk_encode.start(plan.rects, self._encode_bulk(
                            diff, pacer, plan, args, options, pool, polled_at, outbox,
                            sendable))
                        bulk = False
                        continue
                    else:
                        frames = await asyncio.to_thread(codec.encode_update, *args, pool.map,
                                                         **options)
                    pacer.encoded(plan, frames, polled_at)
                    # a bulk update's waiting frames that input's echo overlaps are
                    # encoded again instead of holding the echo back (Outbox.add)
                    if not full:  # (a whole image's frames are in the outbox already)
                        outbox.add(seq, _wire_frames(frames), plan.interactive,
                                   None if plan.interactive
                                   else codec.redoer(diff, *args[2:6], **options))
                    if plan.interactive and not writing.locked():
                        # written now, not when the sender task next runs (while it writes,
                        # it writes this next: the streamer never waits for the link)
                        await self._write(ws, outbox, writing, interactive_only=True)
                    sendable.set()
                    full = False
                    bulk = bulk and plan.interactive  # one bulk update at a time is queued
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            await bulk_encode.cancel()
            pool.shutdown(wait=False)

    @staticmethod
    async def _encode_bulk(diff: Any, pacer: Any, plan: Any, args: tuple, options: dict,
                           pool: Any, polled_at: float, outbox: Any, sendable: asyncio.Event
                           ) -> None:
        """Encode bulk update ``plan`` (``args``: codec.encode_update's) in the threads, then
        put it in the outbox, behind any echo added meanwhile."""
        import screen_codec as codec

        frames = await asyncio.to_thread(codec.encode_update, *args, pool.map, **options)
        pacer.encoded(plan, frames, polled_at)
        outbox.add(args[3], _wire_frames(frames), False,
                   codec.redoer(diff, *args[2:6], **options))
        sendable.set()

    @staticmethod
    async def _compare(diff: Any, pixels: Any, in_thread: bool) -> tuple[list, float]:
        """What changed (diff.changes) and what finding it cost (thread CPU seconds),
        ``in_thread`` (compare_in_thread) or on the event loop. Awaited to its end even when
        cancelled: it reads the grab."""
        if not in_thread:
            return _timed_changes(diff, pixels)
        compare = asyncio.ensure_future(asyncio.to_thread(_timed_changes, diff, pixels))
        try:
            return await asyncio.shield(compare)
        finally:
            if not compare.done():
                await asyncio.wait([compare])

    @staticmethod
    async def _pass_on(frames: Iterator, seq: int, outbox: Any, sendable: asyncio.Event
                       ) -> list:
        """Encode ``frames`` (codec.encode_frames) in a thread, each put in the outbox as it
        comes, for the sender to write while the rest are encoded; all of them. (Written only
        once all were encoded, the first image's first byte waited 70-90 ms under load.)"""
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue = asyncio.Queue()
        abandoned = threading.Event()  # the session ended meanwhile: stop encoding

        def encode() -> None:
            try:
                for frame in frames:
                    if abandoned.is_set():
                        return
                    loop.call_soon_threadsafe(ready.put_nowait, frame)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(ready.put_nowait, None)

        encoding = asyncio.ensure_future(asyncio.to_thread(encode))
        done = []
        try:
            while (frame := await ready.get()) is not None:
                done.append(frame)
                outbox.add(seq, _wire_frames([frame]), False)
                sendable.set()
            await encoding  # its error, if any
        finally:
            # cancelled (the session ended): a task left behind would start its thread only
            # once the loop's executor is shut down, and die there unheard
            abandoned.set()
            encoding.cancel()
        return done

    async def _send(self, ws: Any, outbox: Any, sendable: asyncio.Event,
                    writing: asyncio.Lock) -> None:
        """Write the outbox's frames as flow control paces them."""
        while True:
            sendable.clear()  # before looking: what is added while writing sets it again
            delay = await self._write(ws, outbox, writing)
            if outbox.peek() is None or delay > 0:
                # an interactive update arriving meanwhile may go first
                timer = asyncio.get_running_loop().call_later(delay, sendable.set) \
                    if delay > 0 else None
                try:
                    await sendable.wait()
                finally:
                    if timer is not None:
                        timer.cancel()

    async def _write(self, ws: Any, outbox: Any, writing: asyncio.Lock,
                     interactive_only: bool = False) -> float:
        """Write the outbox's frames that may go now (with ``interactive_only``, only while
        the next is interactive); the seconds until the next may go (0: none waits).
        The streamer writes input's echo itself, at once: a hand-off to the sender task
        waited for the event loop to run it, often a whole poll later under load."""
        flow = self.session.flow
        async with writing:  # one writer at a time keeps the outbox's order on the wire
            while (item := outbox.peek()) is not None:
                seq, interactive, _, data = item
                if interactive_only and not interactive:
                    return 0.0
                ahead = flow.may_write_ahead(seq, self.clock())
                if ahead is False:  # an ack sets sendable; the budget may free before one
                    return min(WAIT_FOR_ACK_S, flow.start_delay(self.clock()) or WAIT_FOR_ACK_S)
                if ahead is None and seq not in flow.in_flight:
                    outbox.pop()  # forgotten by a restart: a full image follows
                    continue
                delay = flow.write_delay(len(data), interactive, self.clock(), seq)
                if delay > 0:
                    return delay
                outbox.pop()
                # recorded before the await: websockets hands the bytes to the transport at
                # once, and the viewer's ack may be handled while the send waits to drain
                flow.wrote(seq, len(data), self.clock())
                await ws.send(data)
        return 0.0


def compare_in_thread(echo_awaited: bool, last_cost_s: float, in_motion: bool,
                      driven: bool) -> bool:
    """Whether a poll's compare goes to a thread: while the support person drives
    (``driven``: their input came within DRIVEN_S), while a region is in motion, or after a
    compare that cost INLINE_COMPARE_MAX_S or more; else it stays on the event loop.
    With a video on the screen a compare took 7-15 ms at load 9, and on the loop, polls back
    to back, a key waited in the socket unread for up to 130 ms; in Chromium at load 7-10,
    compares on the loop between keys measured key to canvas p95 55 ms against 39 with them
    in a thread (4 rounds, same run). Nobody driving, no key waits: the hand-off (a future, a
    shield, a thread and back, every poll) cost the typing agent about 2 points of a core
    (12.0% against 10.1%, 3 rounds, load 0.6-0.8). A poll for input's echo compares on the
    loop: the hand-off added 4-6 ms at load 9, and the key is read by then."""
    return not echo_awaited and (driven or in_motion or last_cost_s >= INLINE_COMPARE_MAX_S)


def echo_band(echo_rows: tuple[int, int], height: int) -> tuple[int, int]:
    """The rows (first, end) that the first poll for input's echo grabs and compares: the
    rows of tiles of the last echo (``echo_rows``, first and end) and one more tile above
    and below (the next line), within the screen's ``height``. The echo's poll grabbed and
    compared the whole screen, 4-6 ms of a browser key's 25 ms at load 2-3 (the grab 2.4,
    the sampled compare 1.5, p50); typed text lands where the last did. Found elsewhere
    (or not yet drawn), the next rung's poll looks at the whole screen as before."""
    import screen_codec as codec

    tile = codec.TILE_PX
    first = max(0, (echo_rows[0] // tile - 1) * tile)
    return first, min(height, (-(-echo_rows[1] // tile) + 1) * tile)


def _commit_band(diff: Any, band: Any, first: int, rects: list) -> None:
    """The viewer's copy (diff.shown) takes ``rects`` (screen rows) from ``band``, the grab
    of rows ``first`` on; a rectangle's rows outside the band are left as they were (shown
    is then still what the viewer has: the next whole compare finds what changed there)."""
    shown = memoryview(diff.shown).cast("B")
    source = memoryview(band).cast("B")
    row_bytes = memoryview(band).shape[1] * 4
    end = first + memoryview(band).shape[0]
    for x, y, w, h in rects:
        for row in range(max(y, first), min(y + h, end)):
            at = (row - first) * row_bytes + x * 4
            shown[row * row_bytes + x * 4:row * row_bytes + (x + w) * 4] = source[at:at + w * 4]


def _timed_changes(diff: Any, pixels: Any) -> tuple[list, float]:
    """diff.changes of a sampled compare, and its cost in the calling thread's CPU time (not
    wall time: on a busy machine that measures the wait for a core, not the compare)."""
    import screen_codec as codec

    start = time.thread_time()
    rects = diff.changes(pixels, codec.SAMPLE_ROWS)
    return rects, time.thread_time() - start


def _wire_frames(frames: list) -> list[tuple[tuple[int, int, int, int], bytes]]:
    """Encoded frames as the outbox holds them: each one's rectangle and its wire bytes."""
    return [((f.x, f.y, f.width, f.height), p.encode_frame(f)) for f in frames]


class _BulkEncode:
    """The one bulk update encoded in the encoder threads while polls go on (its task and
    rectangles): input's echo found meanwhile goes first, unless it overlaps what is being
    encoded. (Awaited in the poll loop, an echo waited for a video update's encoding, 100 ms
    at load 8 on 2 Mbit/s.)"""

    def __init__(self) -> None:
        self._task: asyncio.Future | None = None
        self._rects: list = []

    @property
    def busy(self) -> bool:
        return self._task is not None

    def start(self, rects: list, work: Any) -> None:
        """Run coroutine ``work``, the encoding of ``rects``."""
        self._rects, self._task = rects, asyncio.ensure_future(work)

    def reap(self) -> None:
        """Forget it once it ended; its error, if any, is raised here (it ends the stream)."""
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            task.result()

    async def finish(self) -> None:
        """Wait until it is in the outbox."""
        if self._task is not None:
            await self._task
            self._task = None

    def overlaps(self, rects: list) -> bool:
        """Whether any of ``rects`` shares a pixel with what is being encoded."""
        return self._task is not None and any(
            _overlap(r, e) for r in rects for e in self._rects)

    async def cancel(self) -> None:
        """Stop it (the stream ended), waiting for the cancellation to be taken."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether two (x, y, width, height) rectangles share a pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and \
        b[1] < a[1] + a[3]


def _warm_encoders() -> None:
    """Import the codec and run Pillow's JPEG and PNG encoders once, on a tiny image made
    here (nothing of the screen): done at the first image, this cost 90-180 ms of its time
    (bench/slow_link, load 7-9), and the first encode ran 60-200 ms slower than the next."""
    import screen_codec as codec
    import screen_pacing as pacing

    pixels = bytearray(128 * 16 * 4)  # noise on the left (JPEG), black on the right (PNG)
    for row in range(16):
        pixels[row * 512:row * 512 + 256] = os.urandom(256)
    codec.encode_update(memoryview(pixels).cast("B", (16, 128, 4)), [(0, 0, 128, 16)], 0, 0,
                        pacing.JPEG_QUALITIES[-1], True, subsampling="420")


def _describe(error: BaseException) -> str:
    from websockets.exceptions import InvalidStatus

    if isinstance(error, InvalidStatus):
        return f"it answered HTTP {error.response.status_code}"
    if isinstance(error, TimeoutError):
        return "it did not answer in time"
    if isinstance(error, ssl.SSLError):
        return f"the secure connection failed ({error.reason or error})"
    if isinstance(error, ConnectionRefusedError):
        return "nothing answered at its address (is it running?)"
    if isinstance(error, socket.gaierror):
        return "its name was not found (is this computer online?)"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return str(error) or type(error).__name__


# --- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None, instance: agent_ui.Instance | None = None) -> int:
    """The program; ``instance`` (tests) replaces the per-user one-program lock."""
    parser = argparse.ArgumentParser(description=f"{APP_NAME}: let a support person help you.")
    parser.add_argument("--relay", help="the support server's URL (wss://...)")
    parser.add_argument("--technician", help="the support person's id (skips the choice)")
    parser.add_argument("--config", type=Path, help=f"a configuration file ({CONFIG_NAME})")
    parser.add_argument("--check-config", type=Path, metavar="FILE",
                        help="only check that FILE is a configuration this program accepts "
                             "(exit 0) or say what is wrong with it (exit 2)")
    # The elevated copy's hand-off: a file holding a one-time secret, removed at once.
    parser.add_argument("--handoff-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check_config is not None:
        ok, line = check_config(args.check_config)
        print(line, file=sys.stdout if ok else sys.stderr)
        return EXIT_OK if ok else EXIT_CONFIG
    agent_ui.setup_logging(log)
    if sys.platform == "win32":
        set_dpi_aware()
    _tune_heap()  # before the panel's and other threads allocate
    dialogs = make_dialogs()
    try:
        config, technician = _config(args)
        url = agent_url(config.relay)
        context = link_ssl_context(url, config.ca_cert)
    except ConfigError as e:
        log.error("configuration: %s", e)
        dialogs.message(e.company or APP_NAME, e.customer, error=True)
        return EXIT_CONFIG
    handoff = ""
    if args.handoff_file is not None:
        try:
            handoff = agent_elevation.read_secret(args.handoff_file)  # (and removes it)
        except agent_elevation.HandoffError as e:
            log.error("hand-off: %s", e)
            return EXIT_FAILED  # the first copy goes on with the session
    controls = agent_ui.Controls()
    # One program at a time (the elevated hand-off, started by this program, skips this).
    instance = instance or agent_ui.make_instance()
    try:
        first = True if handoff else instance.acquire(controls.front)
    except OSError as e:  # no private place for the lock: run, as before there was one
        log.warning("running without the one-program lock: %r", e)
        first = True
    if not first:
        if sys.stderr is not None:  # (the windowed exe's log file is the first one's)
            log.info("the program is already running: its panel was asked to come to the "
                     "front")
        return EXIT_OK
    try:
        technician = technician or dialogs.pick(config.company, config.people)
        if technician is None:
            return EXIT_OK
        # The panel is up from the click to the end; without one the screen is not shared.
        try:
            window = panel.make_panel(controls.panel_actions())
        except panel.PanelError as e:  # asked for by name (SPOTLIGHT_PANEL), not possible
            log.error("%s", e)
            window = None
        if window is None or (isinstance(window, panel.LogPanel)
                              and os.environ.get("SPOTLIGHT_PANEL") != "log"):
            log.error("no session panel can be shown: the screen is not shared")
            dialogs.message(config.company, agent_ui.NO_WINDOW, error=True)
            return EXIT_FAILED
        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), lambda *_: controls.quit())
        try:
            return _sessions(config, technician, (url, context), controls, window, dialogs,
                             _copy_args(args, technician), handoff)
        finally:
            window.close()
    finally:
        instance.release()


def _copy_args(args: argparse.Namespace, technician: str) -> list[str]:
    """The arguments of the elevated copy: the same relay, configuration and support person
    (the hand-off file is added by the elevation itself)."""
    copy = ["--technician", technician]
    if args.relay:
        copy += ["--relay", args.relay]
    if args.config is not None:
        copy += ["--config", str(args.config.resolve())]
    return copy


def _sessions(config: Config, technician: str, link: tuple[str, ssl.SSLContext | None],
              controls: agent_ui.Controls, window: Panel, dialogs: Dialogs,
              copy_args: list[str] | None = None, handoff: str = "") -> int:
    """Sessions with ``technician`` on ``window`` until one ends without the customer asking
    to Retry (a log panel asks nothing: its sentence goes to a message instead)."""
    controls.window = window
    interactive = not isinstance(window, panel.LogPanel)
    person = dict(config.people).get(technician, technician)
    try:
        screen, user_input = make_screen(), make_input()
        tray = make_tray(controls.end, controls.pause, controls.elevate,
                         on_send_file=controls.send_file, person=person)
        clipboard = agent_clipboard.make_clipboard()
        desktop, elevation = agent_elevation.make_desktop_watch(), \
            agent_elevation.make_elevation()
    except Exception as e:  # no display, no permission: say so instead of a traceback
        log.exception("start-up failed")
        dialogs.message(config.company, f"This program cannot run here: {e}", error=True)
        return EXIT_FAILED
    try:
        while True:
            controls.forget_choices()
            controls.agent = Agent(
                url=agent_url(config.relay, technician),  # ?technician= for HAProxy
                technician=technician, screen=screen, input=user_input,
                tray=tray, machine=socket.gethostname(), user=_user_name(), ssl_context=link[1],
                window=window, company=config.company, person=person, phone=config.phone,
                clipboard=clipboard, desktop=desktop, elevation=elevation, handoff=handoff,
                elevate_args=copy_args)
            handoff = ""  # spent: a Retry starts a session of its own
            outcome = asyncio.run(controls.agent.run())
            log.info("exit %d %s", outcome.code, outcome.message)
            if controls.quitting or outcome.message == core.HANDED_OFF:
                break  # (handed off: no receipt, the elevated copy's panel goes on)
            if not interactive:  # the log panel: the sentence as a message instead
                if outcome.message:
                    dialogs.message(config.company, outcome.message,
                                    error=outcome.code != EXIT_OK)
                break
            if controls.choice() != "retry":  # the receipt or the error stays until then
                break
            log.info("retry")
    finally:
        for backend in (screen, user_input):
            with contextlib.suppress(Exception):
                backend.close()
    return outcome.code


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration, and the support person ("": the customer is to choose)."""
    if args.config is not None:
        config = load_config(args.config)
    else:
        found = [path for path in config_paths() if path.is_file()]
        if found:
            config = load_config(found[0])
        elif args.relay and args.technician:
            config = Config(APP_NAME, args.relay, ((args.technician, args.technician),))
        else:
            raise ConfigError(f"no {CONFIG_NAME} next to the program or inside it, and no "
                              "--relay and --technician")
    if args.relay:
        config = Config(config.company, args.relay, config.people, config.ca_cert, config.phone)
    if args.technician is not None:
        try:
            p.check_technician_id(args.technician)
        except p.ProtocolError as e:
            raise ConfigError(f"--technician: {e}") from None
        return config, args.technician
    return config, config.people[0][0] if len(config.people) == 1 else ""


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
