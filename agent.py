"""Spotlight Remote Support: the customer's program.

The customer picks the support person they are talking to; the agent connects out to the
relay (``<relay>/ws/agent``), shows a yellow tray icon while it waits and a green one once the
support person accepted, streams the screen (what changed, encoded by screen_codec.py, paced by
its ``Pacer``, at most ``MAX_UPDATES_IN_FLIGHT`` unacknowledged) and injects the support
person's input while they hold control. Close in the tray menu (or SIGTERM/Ctrl+C, which take
the same path) ends the session.

    python agent.py [--relay URL] [--technician ID] [--config FILE]
    python agent.py --check-config FILE     is FILE a configuration this program accepts?

This file is the program's I/O: the real backends (screen, input), the asyncio loop that
drives the session core (agent_session.py: every rule of the session, no I/O) and main().
The tray and dialogs are in agent_ui.py, the configuration in agent_config.py (which says
what support.json holds). With --relay and --technician no configuration is needed (source
runs and tests). Exit codes: 0 ended normally or cancelled, 1 refused/unreachable/lost,
2 configuration.

Environment (for tests and diagnosis): SPOTLIGHT_SCREEN=mss|dummy, SPOTLIGHT_INPUT=
win32|x11|dummy (default: the platform's), SPOTLIGHT_TRAY=pystray|log (default pystray; "log"
writes the tray's states to the log instead of showing an icon), SPOTLIGHT_DIALOGS=
win32|tk|stderr (default: the platform's), SPOTLIGHT_LOG=debug for a verbose log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import logging
import os
import random
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import agent_session as core
import agent_ui
import protocol as p
from agent_config import (
    CONFIG_NAME,
    Config,
    ConfigError,
    agent_url,
    check_config,
    load_config,
    make_ssl_context,
)
from agent_session import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Outcome
from agent_ui import APP_NAME, Dialogs, Tray, make_dialogs, make_tray

if TYPE_CHECKING:  # numpy and screen_codec are imported where the screen is used, so that
    import numpy as np  # --check-config runs with a bare Python

# --- constants -------------------------------------------------------------------------

ENCODER_THREADS = 2  # strips of a large update are encoded in parallel
INLINE_ENCODE_MAX_PX = 128 * 128  # smaller updates (typing) are encoded in the event loop
CURSOR_INTERVAL_S = 0.045  # the customer's pointer is asked for at most this often
CURSOR_RESTING_INTERVAL_S = 0.1  # ... and this often once it has not moved for CURSOR_REST_S
CURSOR_REST_S = 1.0
LAYOUT_CHECK_INTERVAL_S = 1.0
CLOSE_TIMEOUT_S = 0.5  # telling the relay on Close never takes longer than this
CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 10  # a silent link is noticed within 2x this, well inside the relay's grace
RECONNECT_JITTER = 0.3  # each reconnect delay +-30%: agents cut off together come back spread
DUMMY_SCREEN = p.Screen(0, 0, 1024, 768)
tray_image = agent_ui.tray_image  # icons/make_icons.py draws the exe icon with it
log = logging.getLogger("agent")


# --- interfaces ------------------------------------------------------------------------


class Screen(Protocol):
    def monitors(self) -> tuple[p.Screen, ...]:
        """mss order: [0] the bounding box of all monitors, then each monitor."""

    def grab(self, area: p.Screen) -> np.ndarray:
        """A new C-contiguous (height, width, 4) uint8 BGRX image, the caller's to keep."""

    def grab_view(self, area: p.Screen) -> np.ndarray:
        """The same pixels, possibly a read-only view valid only until the next grab (no
        copy where the platform allows): what the streamer uses."""

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




class MssScreen:
    def __init__(self) -> None:
        import mss

        if sys.platform.startswith("linux"):
            _reuse_large_buffers()
        self._mss, self._sct = mss, mss.MSS()
        self._retired: list[Any] = []  # replaced instances, closed once no view uses them
        self._shm_views = sys.platform.startswith("linux")

    def monitors(self) -> tuple[p.Screen, ...]:
        with self._mss.MSS() as fresh:  # a fresh instance re-reads the monitor layout
            layout = fresh.monitors[: p.MAX_SCREENS]
        if layout != self._sct.monitors[: p.MAX_SCREENS]:
            self._retired.append(self._sct)  # a view of its buffer may still be in use
            self._sct = self._mss.MSS()
        for old in list(self._retired):
            self._close(old)
        return tuple(p.Screen(m["left"], m["top"], m["width"], m["height"]) for m in layout)

    def grab(self, area: p.Screen) -> np.ndarray:
        import numpy as np

        shot = self._sct.grab(
            {"left": area.x, "top": area.y, "width": area.width, "height": area.height}
        )
        return np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4)

    def grab_view(self, area: p.Screen) -> np.ndarray:
        """The pixels without a copy where the platform allows (X11 MIT-SHM: a read-only view
        of mss's shared buffer, valid until the next grab), else a new array as grab()."""
        if self._shm_views:
            try:
                view = self._shm_view(area)
                if view is not None:
                    return view
            except Exception as e:  # an mss without this layout: copy as before
                log.info("capture without a copy is not available: %r", e)
                self._shm_views = False
        return self.grab(area)

    def _shm_view(self, area: p.Screen) -> np.ndarray | None:
        import numpy as np
        from mss.linux import xcb
        from mss.linux.xshmgetimage import ShmStatus

        impl = self._sct._impl
        if getattr(impl, "shm_status", None) is ShmStatus.UNKNOWN:  # mss finds out on a grab:
            self._sct.grab({"left": area.x, "top": area.y, "width": 1, "height": 1})  # 1 px
        if getattr(impl, "shm_status", None) is not ShmStatus.AVAILABLE:
            return None
        size = area.width * area.height * 4
        if size > impl._bufsize:
            return None
        with self._sct._lock:
            reply = xcb.shm_get_image(
                impl.conn, impl.drawable, area.x, area.y, area.width, area.height,
                0xFFFFFFFF, xcb.ImageFormat.ZPixmap, impl._shmseg, 0)
        if reply.depth != impl.drawable_depth or reply.visual != impl.drawable_visual_id:
            raise RuntimeError("the X server answered in another pixel format")
        return np.frombuffer(impl._buf, np.uint8, size).reshape(area.height, area.width, 4)

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


def _reuse_large_buffers() -> None:
    """glibc: take each grab's 8 MB buffer from the heap, not from a fresh mmap that
    page-faults on every frame (that cost more than the grab itself)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD


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

    def grab(self, area: p.Screen) -> np.ndarray:
        import numpy as np

        return np.zeros((area.height, area.width, 4), np.uint8)

    def grab_view(self, area: p.Screen) -> np.ndarray:
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


# --- pure helpers ----------------------------------------------------------------------


def _key_table() -> dict[str, tuple[int, int]]:
    """KeyboardEvent.code -> (X11 keysym, Windows virtual key; bit 8 = extended key)."""
    table = {f"Key{chr(65 + i)}": (97 + i, 65 + i) for i in range(26)}
    table.update({f"Digit{i}": (48 + i, 48 + i) for i in range(10)})
    table.update({f"F{i}": (0xFFBD + i, 0x6F + i) for i in range(1, 25)})
    table.update({f"Numpad{i}": (0xFFB0 + i, 0x60 + i) for i in range(10)})
    named = {
        "Enter": (0xFF0D, 0x0D), "Escape": (0xFF1B, 0x1B), "Backspace": (0xFF08, 0x08),
        "Tab": (0xFF09, 0x09), "Space": (0x20, 0x20), "Minus": (0x2D, 0xBD),
        "Equal": (0x3D, 0xBB), "BracketLeft": (0x5B, 0xDB), "BracketRight": (0x5D, 0xDD),
        "Backslash": (0x5C, 0xDC), "IntlBackslash": (0x3C, 0xE2), "Semicolon": (0x3B, 0xBA),
        "Quote": (0x27, 0xDE), "Backquote": (0x60, 0xC0), "Comma": (0x2C, 0xBC),
        "Period": (0x2E, 0xBE), "Slash": (0x2F, 0xBF), "CapsLock": (0xFFE5, 0x14),
        "PrintScreen": (0xFF61, 0x12C), "ScrollLock": (0xFF14, 0x91), "Pause": (0xFF13, 0x13),
        "Insert": (0xFF63, 0x12D), "Home": (0xFF50, 0x124), "PageUp": (0xFF55, 0x121),
        "Delete": (0xFFFF, 0x12E), "End": (0xFF57, 0x123), "PageDown": (0xFF56, 0x122),
        "ArrowRight": (0xFF53, 0x127), "ArrowLeft": (0xFF51, 0x125),
        "ArrowDown": (0xFF54, 0x128), "ArrowUp": (0xFF52, 0x126), "NumLock": (0xFF7F, 0x190),
        "NumpadDivide": (0xFFAF, 0x16F), "NumpadMultiply": (0xFFAA, 0x6A),
        "NumpadSubtract": (0xFFAD, 0x6D), "NumpadAdd": (0xFFAB, 0x6B),
        "NumpadEnter": (0xFF8D, 0x10D), "NumpadDecimal": (0xFFAE, 0x6E),
        "ContextMenu": (0xFF67, 0x15D), "ShiftLeft": (0xFFE1, 0xA0), "ShiftRight": (0xFFE2, 0xA1),
        "ControlLeft": (0xFFE3, 0xA2), "ControlRight": (0xFFE4, 0x1A3), "AltLeft": (0xFFE9, 0xA4),
        "AltRight": (0xFE03, 0x1A5),  # AltGr: ISO_Level3_Shift / right Alt
        "MetaLeft": (0xFFEB, 0x15B), "MetaRight": (0xFFEC, 0x15C),
    }
    table.update(named)
    return table


KEY_TABLE = _key_table()



def config_paths() -> list[Path]:
    """Where support.json is looked for: next to the exe or script, then inside the exe."""
    if getattr(sys, "frozen", False):
        paths = [Path(sys.executable).resolve().parent / CONFIG_NAME]
        if hasattr(sys, "_MEIPASS"):
            paths.append(Path(sys._MEIPASS) / CONFIG_NAME)
        return paths
    return [Path(__file__).resolve().parent / CONFIG_NAME]


# --- the Agent loop --------------------------------------------------------------------


class Agent:
    """The asyncio loop around one Session (agent_session.py): connects, hands the core what
    arrives with the time, and carries out what it answers on the websocket and the backends.
    Backends, clock and TLS context are passed in; the rules are all in the core."""

    def __init__(self, *, url: str, technician: str, screen: Screen, input: Input,
                 tray: Tray, machine: str, user: str, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.ssl_context = url, ssl_context
        self.screen, self.input, self.tray, self.clock = screen, input, tray, clock
        self.session = core.Session(technician, machine, user, KEY_TABLE, on_change=_log_change)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()  # set before the loop runs is honoured too
        self._closed: asyncio.Event | None = None  # the same, for the loop
        self._wake: asyncio.Event | None = None  # the streamer: ack, refresh or input
        self._streamer: asyncio.Future | None = None
        self._pacer: Any = None  # the streamer's screen_codec.Pacer
        self._full = True
        self._capture_failed = False  # the streamer failed: the session ends

    def request_close(self) -> None:
        """The customer chose Close (any thread: tray menu, signal handler)."""
        self._closing.set()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._closed.set)

    async def run(self) -> Outcome:
        self._wake, self._closed = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # The encoder (numpy, Pillow: 0.3 to 1.5 s to import on a busy machine) is loaded
        # while the customer waits, not after the support person accepted.
        self._loop.run_in_executor(None, importlib.import_module, "screen_codec")
        if self._closing.is_set():
            self._closed.set()
        try:
            return await self._run()
        finally:
            await self._stop_stream()
            for action in self.session.close():  # after an end: nothing (all released)
                if isinstance(action, core.Inject):
                    self._inject(action)
            self.tray.hide()

    async def _run(self) -> Outcome:
        delay = 0.0
        while True:
            if delay:
                jitter = random.uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)
                await self._until_closed(asyncio.sleep(delay * jitter))
            if self._closing.is_set():  # no link: nobody to tell
                done = await self._do(None, self.session.close())
            else:
                try:
                    ws = await self._until_closed(self._connect())
                except ssl.SSLCertVerificationError as e:
                    done = await self._do(None, self.session.untrusted(e.verify_message))
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

    async def _until_closed(self, coro: Any) -> Any:
        """Run ``coro`` unless Close comes first (then cancel it and return None)."""
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self._closed.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return None
        return task.result()

    async def _serve(self, ws: Any) -> core.End | core.Reconnect:
        """One connection, until the session ends or the link is lost."""
        from websockets.exceptions import ConnectionClosed

        session = self.session
        try:
            done = await self._do(ws, session.connected(self.screen.monitors()))
            while done is None:
                data = await self._until_closed(ws.recv())
                if data is None:  # Close, or the streamer failed
                    actions = session.capture_failed() if self._capture_failed else session.close()
                elif not isinstance(data, str):
                    actions = session.bad_message("the relay sent binary data")
                else:
                    try:
                        message = p.decode_control(data)
                    except p.RemoteProtocolError as e:  # (a LocalProtocolError is a bug of ours)
                        log.warning("bad message from the relay: %s", e)
                        actions = session.bad_message(str(e))
                    else:
                        if isinstance(message, (p.Error, p.Ended)):
                            log.info("the relay says %s", p.encode_control(message))
                        actions = session.receive(message, self.clock())
                done = await self._do(ws, actions)
            return done
        except ConnectionClosed as e:
            log.info("connection closed: %s", e)
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (None, "")
            done = await self._do(None, session.link_lost(code, reason, self.clock()))
            return done or core.End(Outcome(EXIT_FAILED, core.LOST))
        finally:
            await self._stop_stream()

    async def _do(self, ws: Any, actions: list) -> core.End | core.Reconnect | None:
        """Carry out the core's actions in order; the End or Reconnect that ends them."""
        for action in actions:
            if isinstance(action, core.Send) and ws is not None:
                await ws.send(p.encode_control(action.message))
            elif isinstance(action, core.Inject):
                self._inject(action)
            elif isinstance(action, core.Tray):
                self.tray.show(action.state, action.tooltip, action.balloon)
            elif isinstance(action, core.Stream):
                self._full = self._full or action.full
                if self._streamer is None and ws is not None:
                    self._full = True
                    self._streamer = asyncio.ensure_future(self._stream(ws))
                    self._streamer.add_done_callback(self._stream_done)
                self._wake.set()
            elif isinstance(action, core.StopStream):
                await self._stop_stream()
            elif isinstance(action, core.End):
                if ws is not None:
                    await self._goodbye(ws, action)
                return action
            elif isinstance(action, core.Reconnect):
                return action
        return None

    async def _goodbye(self, ws: Any, end: core.End) -> None:
        """Tell the relay (``end.farewell``) and close, or drop a link that does not answer."""
        async def tell() -> None:
            if end.farewell is not None:
                await ws.send(p.encode_control(end.farewell))
            await ws.close(end.close_code, end.close_reason)

        try:
            await asyncio.wait_for(tell(), CLOSE_TIMEOUT_S)
        except Exception as e:
            log.info("could not tell the relay: %r", e)
            ws.transport.abort()

    def _inject(self, action: core.Inject) -> None:
        if self._pacer is not None:
            self._pacer.input(self.clock())
            self._wake.set()
        try:
            getattr(self.input, action.method)(*action.args)
        except Exception as e:  # one bad injection must not end the session
            log.warning("input %s%r failed: %r", action.method, action.args, e)

    async def _stop_stream(self) -> None:
        streamer, self._streamer, self._pacer = self._streamer, None, None
        if streamer is not None:
            streamer.cancel()
            with contextlib.suppress(BaseException):
                await streamer

    def _stream_done(self, task: asyncio.Future) -> None:
        from websockets.exceptions import ConnectionClosed

        if task.cancelled() or isinstance(task.exception(), (ConnectionClosed, type(None))):
            return
        log.error("screen capture failed", exc_info=task.exception())
        self._capture_failed = True
        self._closed.set()

    async def _stream(self, ws: Any) -> None:
        """Poll the screen as the Pacer says; encode what changed while flow control allows,
        into the outbox that the sender writes from (interactive updates first)."""
        import screen_codec as codec

        session, flow = self.session, self.session.flow
        diff = codec.ScreenDiff()
        outbox = codec.Outbox()
        cursor = None
        layout_at = polled_at = pointer_at = moved_at = self.clock()
        pacer = self._pacer = codec.Pacer(polled_at, ENCODER_THREADS)
        pool = ThreadPoolExecutor(ENCODER_THREADS, "encoder")
        sendable = asyncio.Event()
        sender = asyncio.ensure_future(self._send(ws, outbox, sendable))
        try:
            while True:
                self._wake.clear()
                delay = polled_at + pacer.interval(self.clock()) - self.clock()
                if delay > 0:  # a fixed cadence: the time spent encoding counts
                    # (a timer that sets the event: wait_for would make a task every poll)
                    timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                if sender.done():
                    sender.result()  # its error (a closed link) ends the stream
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
                bulk = flow.may_start() and not outbox.bulk_waiting()
                interactive = pacer.interactive(polled_at) and flow.may_start(interactive=True)
                if not (bulk or interactive):
                    pacer.held_back()  # held back by the link: the next update is cheaper
                    continue
                # A view without a copy, valid until the next grab: the viewer's copy
                # (diff.shown) takes what changed, and updates are encoded from it.
                pixels = self.screen.grab_view(area)
                full = self._full or not diff.matches(pixels)
                self._full = False  # a refresh while this update is encoded asks for another
                rects = [(0, 0, pixels.shape[1], pixels.shape[0])] if full else \
                    diff.changes(pixels, codec.SAMPLE_ROWS)
                plans = pacer.plan(rects, polled_at, flow.rate, full=full)
                for plan in plans:
                    if not (full or (plan.interactive and flow.may_start(interactive=True))
                            or (bulk and flow.may_start())):
                        pacer.held_back()  # not committed: found again by a later poll
                        continue
                    diff.commit(pixels, plan.rects, owned=pixels.flags.writeable)
                    seq = flow.next_seq()
                    flow.started(seq, self.clock())
                    args = (diff.shown, plan.rects, session.monitor, seq, plan.quality, full)
                    options = {"subsampling": plan.subsampling, "rows": plan.rows}
                    if sum(w * h for _, _, w, h in plan.rects) <= INLINE_ENCODE_MAX_PX:
                        frames = codec.encode_update(*args, **options)  # a hand-off costs more
                    else:
                        frames = await asyncio.to_thread(codec.encode_update, *args, pool.map,
                                                         **options)
                    pacer.encoded(plan, frames, polled_at)
                    encoded = [((f.x, f.y, f.width, f.height), p.encode_frame(f))
                               for f in frames]
                    outbox.add(seq, encoded, plan.interactive)
                    sendable.set()
                    full = False
                    bulk = bulk and plan.interactive  # one bulk update at a time is queued
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            pool.shutdown(wait=False)

    async def _send(self, ws: Any, outbox: Any, sendable: asyncio.Event) -> None:
        """Write the outbox's frames as flow control paces them."""
        flow = self.session.flow
        while True:
            item = outbox.peek()
            if item is None:
                sendable.clear()
                await sendable.wait()
                continue
            seq, interactive, _, data = item
            if seq not in flow.in_flight:  # forgotten by a restart: a full image follows
                outbox.pop()
                continue
            delay = flow.write_delay(len(data), interactive, self.clock())
            if delay > 0:  # an interactive update arriving meanwhile may go first
                sendable.clear()
                timer = asyncio.get_running_loop().call_later(delay, sendable.set)
                try:
                    await sendable.wait()
                finally:
                    timer.cancel()
                continue
            outbox.pop()
            await ws.send(data)
            flow.wrote(seq, len(data), self.clock())


def _log_change(view: core.View) -> None:
    log.info("session: %s%s", view.state, f" ({view.sentence})" if view.sentence else "")


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


def _setup_logging() -> None:
    level = logging.DEBUG if os.environ.get("SPOTLIGHT_LOG") == "debug" else logging.INFO
    if sys.stderr is not None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:  # windowed exe: the only file we ever write, in the temp folder
        path = Path(tempfile.gettempdir()) / "spotlight-agent.log"
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"{APP_NAME}: let a support person help you.")
    parser.add_argument("--relay", help="the support server's URL (wss://...)")
    parser.add_argument("--technician", help="the support person's id (skips the choice)")
    parser.add_argument("--config", type=Path, help=f"a configuration file ({CONFIG_NAME})")
    parser.add_argument("--check-config", type=Path, metavar="FILE",
                        help="only check that FILE is a configuration this program accepts "
                             "(exit 0) or say what is wrong with it (exit 2)")
    args = parser.parse_args(argv)
    if args.check_config is not None:
        ok, line = check_config(args.check_config)
        print(line, file=sys.stdout if ok else sys.stderr)
        return EXIT_OK if ok else EXIT_CONFIG
    _setup_logging()
    if sys.platform == "win32":
        set_dpi_aware()
    dialogs = make_dialogs()
    try:
        config, technician = _config(args, dialogs)
        if technician is None:
            return EXIT_OK
        url, context = agent_url(config.relay), make_ssl_context(config.ca_cert)
    except ConfigError as e:
        log.error("configuration: %s", e)
        dialogs.message(e.company or APP_NAME, e.customer, error=True)
        return EXIT_CONFIG
    holder: list[Agent] = []
    try:
        screen, user_input = make_screen(), make_input()
        tray = make_tray(lambda: holder[0].request_close() if holder else None)
    except Exception as e:  # no display, no permission: say so instead of a traceback
        log.exception("start-up failed")
        dialogs.message(config.company, f"This program cannot run here: {e}", error=True)
        return EXIT_FAILED
    agent = Agent(url=url, technician=technician, screen=screen, input=user_input, tray=tray,
                  machine=socket.gethostname(), user=_user_name(), ssl_context=context)
    holder.append(agent)
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: agent.request_close())
    outcome = asyncio.run(agent.run())
    for backend in (screen, user_input):
        with contextlib.suppress(Exception):
            backend.close()
    log.info("exit %d %s", outcome.code, outcome.message)
    if outcome.message:
        dialogs.message(config.company, outcome.message, error=outcome.code != EXIT_OK)
    return outcome.code


def _config(args: argparse.Namespace, dialogs: Dialogs) -> tuple[Config, str | None]:
    """The configuration, and the support person (None: the customer cancelled the choice)."""
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
    if len(config.people) == 1:
        return config, config.people[0][0]
    return config, dialogs.pick(config.company, config.people)


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
