"""agent_clipboard.py's backends: the dummy, xclip on a real X server, the Win32 one refusing
to start off Windows, and the choice made by make_clipboard."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import agent_clipboard
from agent_clipboard import ClipboardError, DummyClipboard, XclipClipboard


def test_dummy_clipboard_keeps_the_text_and_counts_changes():
    """set_text changes the marker and text returns what was set."""
    board = DummyClipboard()
    before = board.marker()
    board.set_text("hello")
    assert board.text() == "hello" and board.marker() != before


@pytest.mark.x11
def test_xclip_clipboard_round_trips_unicode_text_on_x11(xvfb):
    """set_text puts text on the CLIPBOARD selection that xclip -o reads back, and text reads
    what another program copied; the marker follows the text."""
    if shutil.which("xclip") is None:
        pytest.fail("xclip is not installed: run ./dev test, which installs it")
    board = XclipClipboard()
    text = "line 1\r\nü 😀\tend"
    board.set_text(text)
    read = subprocess.run(["xclip", "-selection", "clipboard", "-o"], env=xvfb.env(),
                          capture_output=True, check=True, timeout=10).stdout.decode()
    assert read == text and board.text() == text
    before = board.marker()
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], env=xvfb.env(),
                   input=b"copied elsewhere", check=True, timeout=10,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert board.text() == "copied elsewhere" and board.marker() != before


def test_xclip_clipboard_without_xclip_says_so(monkeypatch, tmp_path):
    """No xclip on the PATH: a ClipboardError naming it, not a crash later."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClipboardError, match="xclip is not installed"):
        XclipClipboard()


def test_win32_clipboard_refuses_to_start_off_windows():
    """On Linux the Win32 backend cannot be made (ctypes has no WinDLL)."""
    with pytest.raises(ClipboardError, match="needs Windows"):
        agent_clipboard.Win32Clipboard()


def test_make_clipboard_follows_the_override_and_falls_back_to_the_dummy(monkeypatch):
    """SPOTLIGHT_CLIPBOARD=dummy picks the dummy; win32 off Windows falls back to it too."""
    monkeypatch.setenv("SPOTLIGHT_CLIPBOARD", "dummy")
    assert isinstance(agent_clipboard.make_clipboard(), DummyClipboard)
    monkeypatch.setenv("SPOTLIGHT_CLIPBOARD", "win32")
    assert isinstance(agent_clipboard.make_clipboard(), DummyClipboard)
