"""Spotlight Remote Support: the customer's program.

The customer picks the support person they are talking to; the agent connects out to the
relay (``<relay>/ws/agent``), shows a yellow tray icon while it waits and a green one once the
support person accepted, streams the screen (what changed, encoded by screen_codec.py: exact
palette PNG for up to 256 colours, JPEG 4:4:4 otherwise; at most ``MAX_UPDATES_IN_FLIGHT``
unacknowledged, polled 10-100 times a second by what is happening) and injects the support
person's input while they hold control. Close in the tray menu (or SIGTERM/Ctrl+C, which take
the same path) ends the session.

    python agent.py [--relay URL] [--technician ID] [--config FILE]

Configuration (support.json next to the exe or script, else the one baked into the exe;
support.example.json shows it): {"company", "relay": "wss://host[:port][/prefix]",
"people": [{"id", "name"}], "ca_cert": "" | PEM text | a file name next to the config}.
With --relay and --technician no configuration is needed (source runs and tests).
Exit codes: 0 ended normally or cancelled, 1 refused/unreachable/lost, 2 configuration.

Environment (for tests and diagnosis): SPOTLIGHT_TRAY=pystray|log (default pystray; "log"
writes the tray's states to the log instead of showing an icon), SPOTLIGHT_DIALOGS=
win32|tk|stderr (default: the platform's), SPOTLIGHT_LOG=debug for a verbose log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import ipaddress
import json
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
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import protocol as p
import screen_codec as codec

# --- constants -------------------------------------------------------------------------

APP_NAME = "Spotlight Remote Support"
CONFIG_NAME = "support.json"
POLL_INTERVAL_S = 1 / 30
MOTION_POLL_INTERVAL_S = 1 / 60  # while every recent poll found a change (video, animation)
MOTION_AFTER_CHANGES = 3  # consecutive polls with a change that mean "motion"
MOTION_GAP_S = 0.05  # a still poll this soon after a large change does not end its run (a
#                      video changes the screen 24-50 times a second, polled 60 times)
MOTION_AREA = 0.5  # a run of changes to at least this share of the monitor is "large motion":
MOTION_JPEG_QUALITY = 75  # ... JPEG 4:2:0 at most this quality (half the work and bytes),
REFINE_AFTER_S = 0.2  # ... and the area is resent at full quality, 4:4:4, once this still
IDLE_POLL_INTERVAL_S = 0.1  # once nothing has changed for IDLE_AFTER_S (and no input came)
IDLE_AFTER_S = 2.0
FAST_POLL_INTERVAL_S = 0.010  # right after input, so the support person sees it at once
FAST_POLL_WINDOW_S = 0.300
ENCODER_THREADS = 2  # strips of a large update are encoded in parallel
INLINE_ENCODE_MAX_PX = 128 * 128  # smaller updates (typing) are encoded in the event loop
CURSOR_INTERVAL_S = 0.045  # the customer's pointer is asked for at most this often
CURSOR_RESTING_INTERVAL_S = 0.1  # ... and this often once it has not moved for CURSOR_REST_S
CURSOR_REST_S = 1.0
LAYOUT_CHECK_INTERVAL_S = 1.0
JPEG_QUALITIES = (85, 75, 65, 55, 45, 35)  # lowered one step while acks hold us back
QUALITY_UP_AFTER_UPDATES = 30  # unhindered updates before trying a better quality again
CLOSE_TIMEOUT_S = 0.5  # telling the relay on Close never takes longer than this
TRAY_HIDE_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 10  # a silent link is noticed within 2x this, well inside the relay's grace
RECONNECT_DELAYS_S = (0.5, 1, 2, 4, 5)  # capped backoff, each with +-30% jitter
RECONNECT_GRACE_S = 60
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
TRAY_COLOURS = {"pending": (242, 190, 0), "active": (40, 170, 70), "reconnecting": (150, 150, 150)}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
log = logging.getLogger("agent")


class ConfigError(Exception):
    """The configuration is missing or wrong; the text tells the customer what to do."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the exit code and, when the customer should know, why."""

    code: int
    message: str = ""


# --- interfaces ------------------------------------------------------------------------


class Screen(Protocol):
    def monitors(self) -> tuple[p.Screen, ...]:
        """mss order: [0] the bounding box of all monitors, then each monitor."""

    def grab(self, area: p.Screen) -> np.ndarray:
        """A new C-contiguous (height, width, 4) uint8 BGRX image, the caller's to keep."""

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


class Tray(Protocol):
    def show(self, state: str, tooltip: str, balloon: str) -> None:
        """Show the icon for ``state`` (a TRAY_COLOURS key); balloon "" shows none."""

    def hide(self) -> None: ...


class Dialogs(Protocol):
    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        """The id of the support person the customer clicked, or None for Cancel."""

    def message(self, title: str, text: str, error: bool = False) -> None: ...


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


class PynputInput:
    def __init__(self) -> None:
        from pynput import keyboard, mouse

        self._kb, self._mouse = keyboard.Controller(), mouse.Controller()
        self._keycode, self._buttons = keyboard.KeyCode, mouse.Button
        self._x11 = _XTestTyper() if sys.platform.startswith("linux") else None

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

    def key(self, code: str, down: bool) -> None:
        keysym, vk = KEY_TABLE[code]
        if sys.platform == "win32":  # bit 8 marks keys sent with KEYEVENTF_EXTENDEDKEY
            key = self._keycode.from_vk(vk & 0xFF, _flags=1) if vk & 0x100 else \
                self._keycode.from_vk(vk)
        else:  # keysyms through XTest: plain characters would be synthetic and ignored
            key = self._keycode.from_vk(keysym)
        (self._kb.press if down else self._kb.release)(key)

    def type(self, text: str) -> None:
        if self._x11 is not None:
            self._x11.type(text)
        else:
            self._kb.type(text)

    def close(self) -> None:
        if self._x11 is not None:
            self._x11.close()


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


class PystrayTray:
    """The icon lives in its own thread (win32 wants it created where it runs)."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        import pystray

        self._pystray, self._on_close = pystray, on_close
        self._icon: Any = None
        self._status = ""
        self._ready = threading.Event()

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        self._status = tooltip
        if self._icon is None:
            threading.Thread(target=self._run, args=(state, tooltip), daemon=True).start()
            self._ready.wait(5)
        else:
            self._icon.icon = tray_image(TRAY_COLOURS[state])
            self._icon.title = tooltip
            self._icon.update_menu()
        if balloon and self._icon is not None and self._icon.HAS_NOTIFICATION:
            with contextlib.suppress(Exception):
                self._icon.notify(balloon, APP_NAME)

    def _run(self, state: str, tooltip: str) -> None:
        item, menu = self._pystray.MenuItem, self._pystray.Menu
        self._icon = self._pystray.Icon(
            "spotlight", tray_image(TRAY_COLOURS[state]), tooltip,
            menu=menu(item(lambda _: self._status, None, enabled=False, default=True),
                      item("Close", lambda: self._on_close())))

        def setup(icon: Any) -> None:
            icon.visible = True
            self._ready.set()

        try:
            self._icon.run(setup)
        finally:
            self._ready.set()

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


def make_tray(on_close: Callable[[], None]) -> Tray:
    if os.environ.get("SPOTLIGHT_TRAY", "pystray") == "log":
        return LogTray()
    return PystrayTray(on_close)


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


def to_desktop(screens: tuple[p.Screen, ...], monitor: int, x: int, y: int) -> tuple | None:
    """Desktop coordinates of a point given relative to ``monitor``; None when outside it."""
    if not 0 <= monitor < len(screens):
        return None
    area = screens[monitor]
    if not (0 <= x < area.width and 0 <= y < area.height):
        return None
    return area.x + x, area.y + y


class RateLimit:
    """Token bucket: ``rate`` events a second with bursts of ``burst``; time passed in."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), None

    def allow(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def clean_name(text: str) -> str:
    """A host or user name the relay will accept: printable, at most MAX_NAME_CHARS."""
    return "".join(c for c in text if c.isprintable())[: p.MAX_NAME_CHARS] or "unknown"


@dataclass(frozen=True)
class Config:
    company: str
    relay: str
    people: tuple[tuple[str, str], ...]  # (id, display name)
    ca_cert: str = ""  # PEM text of the one CA to trust, "" for the system's store


def config_paths() -> list[Path]:
    """Where support.json is looked for: next to the exe or script, then inside the exe."""
    if getattr(sys, "frozen", False):
        paths = [Path(sys.executable).resolve().parent / CONFIG_NAME]
        if hasattr(sys, "_MEIPASS"):
            paths.append(Path(sys._MEIPASS) / CONFIG_NAME)
        return paths
    return [Path(__file__).resolve().parent / CONFIG_NAME]


def load_config(path: Path) -> Config:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"The configuration {path} cannot be read ({e.strerror}).") from None
    except ValueError as e:
        raise ConfigError(f"The configuration {path} is not valid JSON ({e}).") from None
    return parse_config(data, path.parent)


def parse_config(data: Any, folder: Path) -> Config:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"The configuration is wrong: {what}.")

    need(isinstance(data, dict), "it must be a JSON object")
    company, relay, people = data.get("company"), data.get("relay"), data.get("people")
    need(isinstance(company, str) and 0 < len(company) <= 100, '"company" must be a name')
    need(isinstance(relay, str) and bool(relay), '"relay" must be the support server\'s URL')
    need(isinstance(people, list) and 0 < len(people) <= 50, '"people" must list 1-50 people')
    pairs = []
    for person in people:
        need(isinstance(person, dict) and isinstance(person.get("name"), str)
             and 0 < len(person["name"]) <= p.MAX_NAME_CHARS,
             'each of "people" needs an "id" and a "name"')
        try:
            p.check_technician_id(person.get("id"))
        except p.ProtocolError as e:
            raise ConfigError(f"The configuration is wrong: support person id: {e}.") from None
        pairs.append((person["id"], person["name"]))
    ca = data.get("ca_cert") or ""
    need(isinstance(ca, str), '"ca_cert" must be PEM text or a file name')
    if ca and "-----BEGIN" not in ca:
        try:
            ca = (folder / ca).read_text(encoding="ascii")
        except (OSError, ValueError) as e:
            raise ConfigError(f"The pinned certificate {ca} cannot be read ({e}).") from None
    agent_url(relay)
    return Config(company, relay, tuple(pairs), ca)


def agent_url(relay: str) -> str:
    """``<relay>/ws/agent`` as a websocket URL; ws:// only to this machine."""
    parts = urllib.parse.urlsplit(relay.strip())
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"The support server address {relay!r} must start with wss://.")
    if scheme == "ws" and not _is_local(parts.hostname):
        raise ConfigError(f"Refusing the unencrypted address {relay!r}: ws:// is only "
                          "allowed to this computer (localhost); use wss://.")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/agent",
                                    "", ""))


def _is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def make_ssl_context(ca_pem: str) -> ssl.SSLContext:
    """Verify the relay's certificate: against the pinned CA only, when one is configured."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else \
        ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- the Agent loop --------------------------------------------------------------------


class Motion:
    """What the recent polls found, for the streamer: a run of changes (poll faster), a run
    of large changes (video, a dragged window: poll faster, cheaper JPEG), and the area sent
    that way, to be sent again at full quality once the screen is still. Time is passed in."""

    @property
    def run(self) -> int:
        """Polls in a row that count as motion, for the poll interval."""
        return max(self.changes, self.large)

    def __init__(self, screen_px: int, now: float) -> None:
        self.screen_px = screen_px
        self.changes = 0  # polls in a row that found a change
        self.large = 0  # ... a large one (still polls within MOTION_GAP_S do not count)
        self.changed_at = now
        self._lossy: list[int] | None = None  # x0, y0, x1, y1 sent at motion quality

    def saw(self, rects: list[codec.Rect], now: float) -> bool:
        """Count one poll; True when its update may be sent at motion quality."""
        if not rects:
            self.changes = 0
            if now - self.changed_at > MOTION_GAP_S:
                self.large = 0
            return False
        self.changes, self.changed_at = self.changes + 1, now
        large = sum(w * h for _, _, w, h in rects) >= MOTION_AREA * self.screen_px
        self.large = self.large + 1 if large else 0
        if self.large < MOTION_AFTER_CHANGES:
            return False
        box = self._lossy or [1 << 30, 1 << 30, 0, 0]
        for x, y, w, h in rects:
            box = [min(box[0], x), min(box[1], y), max(box[2], x + w), max(box[3], y + h)]
        self._lossy = box
        return True

    def refinement(self, now: float) -> list[codec.Rect]:
        """The area sent at motion quality, once the screen has been still REFINE_AFTER_S
        (then forgotten); nothing otherwise."""
        if self._lossy is None or now - self.changed_at < REFINE_AFTER_S:
            return []
        x0, y0, x1, y1 = self._lossy
        self._lossy = None
        return [(x0, y0, x1 - x0, y1 - y0)]


class Agent:
    """One customer session: connect, wait, stream, inject, end. Backends, clock and the
    websocket connect function are passed in; nothing here touches the platform."""

    def __init__(self, *, url: str, technician: str, screen: Screen, input: Input,
                 tray: Tray, machine: str, user: str, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.technician, self.ssl_context = url, technician, ssl_context
        self.screen, self.input, self.tray, self.clock = screen, input, tray, clock
        self.machine, self.user = clean_name(machine), clean_name(user)
        self.state = "connecting"  # -> pending -> active -> ended (reconnecting between)
        self.session = self.resume = self.name = ""
        self.control = False
        self.held_keys: set[str] = set()
        self.held_buttons: set[str] = set()
        self.rate = RateLimit(p.MAX_INPUT_EVENTS_PER_S, p.INPUT_BURST)
        self.monitor, self.seq, self.quality_step, self.smooth_updates = 0, 0, 0, 0
        self.in_flight: dict[int, float] = {}
        self.screens: tuple[p.Screen, ...] = ()
        self.input_at = -1e9
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()  # set before the loop runs is honoured too
        self._closed: asyncio.Event | None = None  # the same, for the loop
        self._wake: asyncio.Event | None = None  # the streamer: ack, refresh or input
        self._full = True
        self._failure = ""  # set when capture fails: the session ends with this message

    def request_close(self) -> None:
        """The customer chose Close (any thread: tray menu, signal handler)."""
        self._closing.set()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._closed.set)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> Outcome:
        self._wake, self._closed = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._closing.is_set():
            self._closed.set()
        try:
            return await self._run()
        finally:
            self._stop_input()
            self.state = "ended"
            self.tray.hide()

    async def _run(self) -> Outcome:
        lost_at, attempt = None, 0
        while not self._closing.is_set():
            try:
                ws = await self._until_closed(self._connect())
            except ssl.SSLCertVerificationError as e:
                return Outcome(EXIT_FAILED, "The support server's certificate is not "
                               f"trusted ({e.verify_message}). Please call your support "
                               "company before trying again.")
            except Exception as e:
                if lost_at is None or self.clock() - lost_at > RECONNECT_GRACE_S:
                    log.info("connect failed: %r", e)
                    why = "the connection was lost" if lost_at else _describe(e)
                    return Outcome(EXIT_FAILED, f"Could not reach the support server: {why}.")
                delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                attempt += 1
                await self._until_closed(asyncio.sleep(delay * random.uniform(0.7, 1.3)))
                continue
            if ws is None:
                break
            attempt = 0
            outcome = await self._serve(ws)
            if outcome is not None:
                return outcome
            if not self.resume:
                return Outcome(EXIT_FAILED, "The connection to the support server was lost.")
            if self.state != "reconnecting":  # lost again after a resume: a new grace period
                lost_at = self.clock()
            self.state = "reconnecting"
            self.tray.show("reconnecting", f"Reconnecting to {self.name}", "")
        return Outcome(EXIT_OK)

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

    async def _serve(self, ws: Any) -> Outcome | None:
        """One connection; None when it was lost and may be resumed."""
        from websockets.exceptions import ConnectionClosed

        self.in_flight.clear()
        self.screens = self.screen.monitors()
        hello = p.AgentHello("agent", p.PROTOCOL_VERSION, self.technician, self.machine,
                             self.user, self.screens, self.resume)
        streamer = None
        try:
            await ws.send(p.encode_control(hello))
            while True:
                data = await self._until_closed(ws.recv())
                if data is None:
                    return await self._close(ws)
                try:
                    if not isinstance(data, str):
                        raise p.ProtocolError("the relay sent binary data")
                    outcome = self._handle(p.decode_control(data))
                except p.ProtocolError as e:
                    log.warning("bad message from the relay: %s", e)
                    await ws.close(1008, str(e)[:120])
                    return Outcome(EXIT_FAILED, "The support server sent something this "
                                   "program does not understand; the session was ended.")
                if outcome is not None:
                    await ws.close()
                    return outcome
                if self.state == "active" and streamer is None:
                    streamer = asyncio.ensure_future(self._stream(ws))
                    streamer.add_done_callback(self._stream_done)
        except ConnectionClosed as e:
            log.info("connection closed: %s", e)
            self._stop_input()
            # Resume after a broken link or a relay restart, not after a deliberate close.
            if self.session and self.resume and self.state != "ended" and (
                    e.rcvd is None or e.rcvd.code in (1001, 1011, 1012, 1013)):
                return None
            why = f" ({e.rcvd.reason})" if e.rcvd is not None and e.rcvd.reason else ""
            return Outcome(EXIT_FAILED, f"The connection to the support server was lost{why}.")
        finally:
            if streamer is not None:
                streamer.cancel()
                with contextlib.suppress(BaseException):
                    await streamer

    def _stream_done(self, task: asyncio.Future) -> None:
        from websockets.exceptions import ConnectionClosed

        if task.cancelled() or isinstance(task.exception(), (ConnectionClosed, type(None))):
            return
        log.error("screen capture failed", exc_info=task.exception())
        self._failure = f"The screen could not be captured ({task.exception()})."
        self._closed.set()

    async def _close(self, ws: Any) -> Outcome:
        """Close from the customer: input and capture stop first, then the relay is told."""
        self._stop_input()
        self.state = "ended"
        reason = "agent-error" if self._failure else "customer-closed"

        async def tell() -> None:
            await ws.send(p.encode_control(p.Close(reason)))
            await ws.close()

        try:
            await asyncio.wait_for(tell(), CLOSE_TIMEOUT_S)
        except Exception as e:
            log.info("could not tell the relay: %r", e)
            ws.transport.abort()
        return Outcome(EXIT_FAILED, self._failure) if self._failure else Outcome(EXIT_OK)

    def _stop_input(self) -> None:
        """Release everything the support person holds down; no more input until granted."""
        self.control = False
        for code in sorted(self.held_keys):
            self._safely(self.input.key, code, False)
        for name in sorted(self.held_buttons):
            self._safely(self.input.button, name, False)
        self.held_keys.clear()
        self.held_buttons.clear()

    def _safely(self, action: Callable, *args: Any) -> None:
        try:
            action(*args)
        except Exception as e:  # one bad injection must not end the session
            log.warning("input %s%r failed: %r", getattr(action, "__name__", "?"), args, e)

    def _handle(self, msg: p.Message) -> Outcome | None:
        if self.state == "ended":  # final: nothing revives an ended session
            return None
        if isinstance(msg, p.Registered):
            resumed = self.state == "reconnecting" and msg.session == self.session
            self.session, self.resume, self.name = msg.session, msg.resume, msg.technician_name
            if not resumed and self.state != "active":  # resumed: `accepted` follows
                first = self.state == "connecting"
                self.state = "pending"
                self.tray.show("pending", f"Waiting for {self.name}",
                               "Connection active" if first else "")
        elif isinstance(msg, p.Accepted) and msg.session == self.session:
            if self.state != "active":
                text = f"{msg.technician_name} is connected"
                self.tray.show("active", text, text if self.state == "pending" else "")
            self.state, self.name = "active", msg.technician_name
            self._restart_stream()
        elif isinstance(msg, p.Control) and msg.session == self.session:
            if not msg.granted:
                self._stop_input()
            self.control = msg.granted and self.state == "active"
        elif isinstance(msg, p.INPUT_TYPES):
            self._inject(msg)
        elif isinstance(msg, p.Refresh) and msg.session == self.session:
            if msg.monitor < len(self.screens):
                self.monitor = msg.monitor
                self._restart_stream()
        elif isinstance(msg, p.Ack) and msg.session == self.session:
            held_back = len(self.in_flight) >= p.MAX_UPDATES_IN_FLIGHT
            self.in_flight.pop(msg.seq, None)
            if held_back:  # otherwise the next poll keeps its cadence
                self._wake_up()
        elif isinstance(msg, p.Ended):
            self._stop_input()
            self.state = "ended"
            if msg.by == "customer" or msg.by == "technician":
                return Outcome(EXIT_OK)
            return Outcome(EXIT_FAILED, f"The support session has ended: {msg.reason}.")
        elif isinstance(msg, p.Error):
            self._stop_input()
            self.state = "ended"
            return Outcome(EXIT_FAILED, f"The support server refused the connection: "
                           f"{msg.message}")
        else:
            log.debug("ignored %s", msg.TYPE)
        return None

    def _restart_stream(self) -> None:
        """A full image next, and nothing older waits for an acknowledgement."""
        self._full = True
        self.in_flight.clear()
        self._wake_up()

    def _inject(self, msg: p.Message) -> None:
        if not (self.state == "active" and self.control and msg.session == self.session):
            log.debug("dropped %s: no control", msg.TYPE)
            return
        if not self.rate.allow(self.clock()):
            log.debug("dropped %s: over the rate limit", msg.TYPE)
            return
        self.input_at = self.clock()
        self._wake_up()
        if isinstance(msg, p.Key):
            if msg.code not in KEY_TABLE:
                return
            (self.held_keys.add if msg.down else self.held_keys.discard)(msg.code)
            self._safely(self.input.key, msg.code, msg.down)
        elif isinstance(msg, p.Text):
            self._safely(self.input.type, msg.text)
        else:
            point = to_desktop(self.screens, msg.monitor, msg.x, msg.y)
            if point is None:
                return
            self._safely(self.input.move, *point)
            if isinstance(msg, p.Button):
                (self.held_buttons.add if msg.down else self.held_buttons.discard)(msg.button)
                self._safely(self.input.button, msg.button, msg.down)
            elif isinstance(msg, p.Wheel):
                self._safely(self.input.scroll, msg.dx, msg.dy)

    async def _stream(self, ws: Any) -> None:
        """Poll the screen; send what changed while fewer than MAX_UPDATES_IN_FLIGHT wait."""
        diff = codec.ScreenDiff()
        cursor = None
        layout_at = polled_at = pointer_at = moved_at = self.clock()
        motion = Motion(1, polled_at)
        # A Screen may offer grab_view: no copy, read-only and valid until the next grab. The
        # viewer's copy (diff.shown) takes what changed, and updates are encoded from it.
        grab = getattr(self.screen, "grab_view", self.screen.grab)
        pool = ThreadPoolExecutor(ENCODER_THREADS, "encoder")
        try:
            while True:
                interval = self._poll_interval(motion.changed_at, motion.run)
                self._wake.clear()
                delay = polled_at + interval - self.clock()
                if delay > 0:  # a fixed cadence: the time spent encoding counts
                    # (a timer that sets the event: wait_for would make a task every poll)
                    timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                polled_at = self.clock()
                if polled_at - layout_at > LAYOUT_CHECK_INTERVAL_S:
                    layout_at = polled_at
                    screens = self.screen.monitors()
                    if screens != self.screens:
                        self.screens = screens
                        self.monitor = self.monitor if self.monitor < len(screens) else 0
                        await ws.send(p.encode_control(p.Screens(screens)))
                        self._restart_stream()
                area = self.screens[self.monitor]
                motion.screen_px = area.width * area.height
                resting = polled_at - moved_at > CURSOR_REST_S
                if cursor is None or polled_at - pointer_at >= (
                        CURSOR_RESTING_INTERVAL_S if resting else CURSOR_INTERVAL_S):
                    pointer_at = polled_at  # (asking X11 for it costs ~0.3 ms of Python)
                    x, y = self.input.position()
                    if (x - area.x, y - area.y) != cursor:
                        cursor, moved_at = (x - area.x, y - area.y), polled_at
                        await ws.send(p.encode_control(p.Cursor(self.monitor, *cursor)))
                if len(self.in_flight) >= p.MAX_UPDATES_IN_FLIGHT:
                    self.smooth_updates = -1  # held back by the link: the next update is cheaper
                    continue
                pixels = grab(area)
                full = self._full or not diff.matches(pixels)
                self._full = False  # a refresh while this update is encoded asks for another
                rects = [(0, 0, pixels.shape[1], pixels.shape[0])] if full else \
                    diff.changes(pixels, codec.SAMPLE_ROWS)
                lossy = motion.saw(rects, polled_at)
                if not rects:  # still: what motion sent cheaply is sent again at full quality
                    rects = motion.refinement(polled_at)
                    if not rects:
                        continue
                diff.commit(pixels, rects, owned=pixels.flags.writeable)  # a view is not
                self._adapt_quality()
                quality = JPEG_QUALITIES[self.quality_step]
                seq, self.seq = self.seq, (self.seq + 1) % 2**32
                args = (diff.shown, rects, self.monitor, seq,
                        min(quality, MOTION_JPEG_QUALITY) if lossy else quality, full)
                subsampling = "420" if lossy else "444"
                # in motion one strip per encoder thread (a tenth less CPU than 128-row strips,
                # and fewer frames to send and decode); rows a multiple of 16 (JPEG's MCU)
                share = -(-max(h for _, _, _, h in rects) // ENCODER_THREADS)
                rows = -(-share // 16) * 16 if lossy else codec.STRIP_ROWS
                if sum(w * h for _, _, w, h in rects) <= INLINE_ENCODE_MAX_PX:
                    # a thread hand-off costs more
                    frames = codec.encode_update(*args, map, subsampling, rows)
                else:
                    frames = await asyncio.to_thread(codec.encode_update, *args, pool.map,
                                                     subsampling, rows)
                for frame in frames:
                    await ws.send(p.encode_frame(frame))
                self.in_flight[seq] = self.clock()
        finally:
            pool.shutdown(wait=False)

    def _poll_interval(self, changed_at: float, changes_in_a_row: int) -> float:
        """Fast right after input and during motion, slow once the screen has been still."""
        now = self.clock()
        if now - self.input_at < FAST_POLL_WINDOW_S:
            return FAST_POLL_INTERVAL_S
        if changes_in_a_row >= MOTION_AFTER_CHANGES:
            return MOTION_POLL_INTERVAL_S
        if now - max(changed_at, self.input_at) > IDLE_AFTER_S:
            return IDLE_POLL_INTERVAL_S
        return POLL_INTERVAL_S

    def _adapt_quality(self) -> None:
        """Lower JPEG quality before frame rate; recover it slowly when the link keeps up."""
        if self.smooth_updates < 0:
            self.quality_step = min(len(JPEG_QUALITIES) - 1, self.quality_step + 1)
            self.smooth_updates = 0
        else:
            self.smooth_updates += 1
            if self.smooth_updates >= QUALITY_UP_AFTER_UPDATES and self.quality_step > 0:
                self.quality_step -= 1
                self.smooth_updates = 0


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
    args = parser.parse_args(argv)
    _setup_logging()
    if sys.platform == "win32":
        set_dpi_aware()
    dialogs = make_dialogs()
    try:
        config = _config(args)
        technician = args.technician
        if technician is not None:
            try:
                p.check_technician_id(technician)
            except p.ProtocolError as e:
                raise ConfigError(f"--technician: {e}.") from None
        elif len(config.people) == 1:
            technician = config.people[0][0]
        else:
            technician = dialogs.pick(config.company, config.people)
            if technician is None:
                return EXIT_OK
        url, context = agent_url(config.relay), make_ssl_context(config.ca_cert)
    except (ConfigError, ssl.SSLError) as e:
        dialogs.message(APP_NAME, f"{e}", error=True)
        return EXIT_CONFIG
    holder: list[Agent] = []
    try:
        screen, user_input = MssScreen(), PynputInput()
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


def _config(args: argparse.Namespace) -> Config:
    if args.config is not None:
        config = load_config(args.config)
    else:
        found = [path for path in config_paths() if path.is_file()]
        if found:
            config = load_config(found[0])
        elif args.relay and args.technician:
            config = Config(APP_NAME, args.relay, ((args.technician, args.technician),))
        else:
            raise ConfigError(f"The configuration ({CONFIG_NAME}) is missing; this program "
                              "cannot connect without it. Please download it again.")
    if args.relay:
        config = Config(config.company, args.relay, config.people, config.ca_cert)
    return config


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
