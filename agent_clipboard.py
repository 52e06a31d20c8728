"""The customer's clipboard, text only, behind one small interface.

    Clipboard.marker() -> a value that changes when the clipboard does (cheap: polled)
    Clipboard.text()   -> the clipboard's text, or "" (nothing, or not text)
    Clipboard.set_text(text)

Backends, chosen in one place by ``make_clipboard`` (SPOTLIGHT_CLIPBOARD=win32|x11|dummy
overrides): ``Win32Clipboard`` (ctypes: OpenClipboard, GetClipboardData(CF_UNICODETEXT),
SetClipboardData, and GetClipboardSequenceNumber as the marker), ``XclipClipboard`` (the
`xclip` program on X11: the CLIPBOARD selection, which Ctrl+C and Ctrl+V use) and
``DummyClipboard`` (no clipboard here: it keeps the text to itself). Each is created only
when asked for, so ``import agent_clipboard`` works anywhere.

Why polling: Windows can notify (AddClipboardFormatListener), but only to a window with a
message loop, and X11 only through the XFixes extension on a connection of our own; a look
every ``POLL_S`` costs one system call on Windows (the sequence number) and is simple on
both. The agent polls only while the support person is in control.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Protocol

log = logging.getLogger("agent.clipboard")

POLL_S = 0.5  # how often the agent looks for a new copy while in control (<= the relay's rate)
XCLIP_TIMEOUT_S = 2.0  # an X selection owner that does not answer must not hang the agent
CF_UNICODETEXT = 13
GMEM_MOVEABLE = 0x0002
OPEN_ATTEMPTS = 10  # another program may hold the Windows clipboard for a moment


class ClipboardError(Exception):
    """The clipboard asked for cannot be used here."""


class Clipboard(Protocol):
    def marker(self) -> object:
        """A value that differs whenever the clipboard has changed since the last look."""

    def text(self) -> str:
        """The clipboard's text; "" when it is empty or holds no text."""

    def set_text(self, text: str) -> None:
        """Put ``text`` on the clipboard (after which ``marker`` has changed)."""


class DummyClipboard:
    """No system clipboard: the text stays in this object (tests, headless runs)."""

    def __init__(self) -> None:
        self._text, self._changes = "", 0

    def marker(self) -> object:
        return self._changes

    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        self._text, self._changes = text, self._changes + 1


class XclipClipboard:
    """X11's CLIPBOARD selection through `xclip` (Debian package xclip)."""

    def __init__(self, display: str | None = None) -> None:
        self._xclip = shutil.which("xclip")
        if self._xclip is None:
            raise ClipboardError("xclip is not installed")
        self._env = dict(os.environ, DISPLAY=display) if display else None

    def marker(self) -> object:
        # X11 has no change counter without XFixes: the text itself is the marker.
        return self.text()

    def text(self) -> str:
        try:
            done = subprocess.run(
                [self._xclip, "-selection", "clipboard", "-o", "-target", "UTF8_STRING"],
                capture_output=True, timeout=XCLIP_TIMEOUT_S, env=self._env, check=False)
        except subprocess.TimeoutExpired:
            return ""
        if done.returncode != 0:  # nothing on the clipboard, or no text target
            return ""
        return done.stdout.decode("utf-8", errors="replace")

    def set_text(self, text: str) -> None:
        # xclip stays in the background as the selection's owner until another copy.
        subprocess.run(
            [self._xclip, "-selection", "clipboard", "-i"],
            input=text.encode("utf-8"), timeout=XCLIP_TIMEOUT_S, env=self._env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Win32Clipboard:
    """The Windows clipboard through ctypes (the exe's Python has no pywin32)."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes as w

        if not hasattr(ctypes, "WinDLL"):
            raise ClipboardError("the Win32 clipboard needs Windows")
        self._c = ctypes
        u32 = self._u32 = ctypes.WinDLL("user32", use_last_error=True)
        k32 = self._k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        u32.OpenClipboard.argtypes, u32.OpenClipboard.restype = [w.HWND], w.BOOL
        u32.CloseClipboard.argtypes, u32.CloseClipboard.restype = [], w.BOOL
        u32.EmptyClipboard.argtypes, u32.EmptyClipboard.restype = [], w.BOOL
        u32.GetClipboardData.argtypes, u32.GetClipboardData.restype = [w.UINT], w.HANDLE
        u32.SetClipboardData.argtypes = [w.UINT, w.HANDLE]
        u32.SetClipboardData.restype = w.HANDLE
        u32.GetClipboardSequenceNumber.argtypes = []
        u32.GetClipboardSequenceNumber.restype = w.DWORD
        u32.IsClipboardFormatAvailable.argtypes = [w.UINT]
        u32.IsClipboardFormatAvailable.restype = w.BOOL
        k32.GlobalAlloc.argtypes, k32.GlobalAlloc.restype = [w.UINT, ctypes.c_size_t], w.HGLOBAL
        k32.GlobalLock.argtypes, k32.GlobalLock.restype = [w.HGLOBAL], w.LPVOID
        k32.GlobalUnlock.argtypes, k32.GlobalUnlock.restype = [w.HGLOBAL], w.BOOL
        k32.GlobalFree.argtypes, k32.GlobalFree.restype = [w.HGLOBAL], w.HGLOBAL

    def marker(self) -> object:
        return self._u32.GetClipboardSequenceNumber()

    def _open(self) -> bool:
        for _ in range(OPEN_ATTEMPTS):
            if self._u32.OpenClipboard(None):
                return True
            time.sleep(0.02)
        return False

    def text(self) -> str:
        if not self._u32.IsClipboardFormatAvailable(CF_UNICODETEXT) or not self._open():
            return ""
        try:
            handle = self._u32.GetClipboardData(CF_UNICODETEXT)
            if not handle:
                return ""
            pointer = self._k32.GlobalLock(handle)
            if not pointer:
                return ""
            try:
                return self._c.wstring_at(pointer)
            finally:
                self._k32.GlobalUnlock(handle)
        finally:
            self._u32.CloseClipboard()

    def set_text(self, text: str) -> None:
        data = self._c.create_unicode_buffer(text)  # NUL-terminated UTF-16
        size = self._c.sizeof(data)
        memory = self._k32.GlobalAlloc(GMEM_MOVEABLE, size)
        if not memory:
            raise OSError("GlobalAlloc failed")
        pointer = self._k32.GlobalLock(memory)
        self._c.memmove(pointer, data, size)
        self._k32.GlobalUnlock(memory)
        if not self._open():
            self._k32.GlobalFree(memory)
            raise OSError("the clipboard is held by another program")
        try:
            self._u32.EmptyClipboard()
            if not self._u32.SetClipboardData(CF_UNICODETEXT, memory):
                self._k32.GlobalFree(memory)  # still ours: the system did not take it
                raise OSError("SetClipboardData failed")
        finally:
            self._u32.CloseClipboard()


def make_clipboard() -> Clipboard:
    """The platform's clipboard; SPOTLIGHT_CLIPBOARD=win32|x11|dummy chooses. A clipboard
    that cannot work here falls back to the dummy (the session goes on without one)."""
    choice = os.environ.get("SPOTLIGHT_CLIPBOARD", "")
    try:
        if choice == "dummy":
            return DummyClipboard()
        if choice == "win32" or (not choice and sys.platform == "win32"):
            return Win32Clipboard()
        if choice == "x11" or (not choice and os.environ.get("DISPLAY")):
            return XclipClipboard()
    except Exception as e:  # whatever the reason, the session goes on without a clipboard
        log.warning("no clipboard sharing: %s", e)
    return DummyClipboard()
