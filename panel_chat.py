"""The chat area of the customer's session panel: chat lines both ways, and when the
customer's clipboard was shared.

    ChatHistory.add(who, text, at) --view()--> ChatView --Panel.chat()--> Tk, Win32 or the log

``ChatHistory`` and ``chat_view`` are pure (time passed in). ``TkChat`` and ``Win32Chat`` draw
a ChatView on the panel's UI thread, inside the panel's window; ``log_chat`` is the log
panel's variant. Text is only ever set as plain text (never markup): a chat line saying
``<b>`` shows ``<b>``. The customer's sent lines go to ``on_send``, called on the UI thread
(Agent.request_chat is thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import protocol

log = logging.getLogger("agent.panel")

MAX_LINES = 200  # kept in the chat area; older lines scroll away for good
LOG_ROWS = 6  # rows of the chat log the Tk and Win32 panels show
WHO = ("technician", "customer", "notice", "clipboard")
TITLE = "Chat"


@dataclass(frozen=True)
class ChatEntry:
    who: str
    text: str  # "" for a shared clipboard: its text is not kept
    at: datetime
    chars: int = 0  # the length of a shared clipboard's text


@dataclass(frozen=True)
class ChatView:
    """What the chat area shows."""

    visible: bool  # only once the support person has accepted, until the end
    lines: tuple[str, ...] = ()
    clipboard_note: str = ""  # when the customer's clipboard was last shared, and with whom
    title: str = ""  # above the chat log: whom the customer chats with
    max_chars: int = protocol.MAX_CHAT_CHARS


def line_text(entry: ChatEntry, name: str) -> str:
    """One line of the chat log, as the customer reads it."""
    at = entry.at.strftime("%H:%M")
    if entry.who == "technician":
        return f"{at} {name}: {entry.text}"
    if entry.who == "customer":
        return f"{at} You: {entry.text}"
    if entry.who == "clipboard":
        return f"{at} Your clipboard was shared with {name} ({entry.chars} characters)."
    return f"{at} {entry.text}"


class ChatHistory:
    """The lines of one session's chat, newest last (the text of a shared clipboard is kept
    only as its length)."""

    def __init__(self) -> None:
        self.entries: list[ChatEntry] = []
        self.clipboard_at: datetime | None = None

    def add(self, who: str, text: str, at: datetime) -> None:
        if who not in WHO:
            raise ValueError(f"who must be one of {', '.join(WHO)}")
        if who == "clipboard":  # only its length is shown: a copied password stays unseen
            self.clipboard_at = at
            self.entries.append(ChatEntry(who, "", at, len(text)))
        else:
            self.entries.append(ChatEntry(who, text, at))
        del self.entries[:-MAX_LINES]


def chat_view(history: ChatHistory, name: str, visible: bool) -> ChatView:
    """The chat area for the support person called ``name``."""
    note = ""
    if history.clipboard_at is not None:
        note = (f"Your clipboard was last shared with {name} at "
                f"{history.clipboard_at.strftime('%H:%M')}.")
    return ChatView(visible, tuple(line_text(e, name) for e in history.entries), note,
                    f"Chat with {name}" if name else TITLE)


def log_chat(before: ChatView | None, view: ChatView) -> None:
    """The log panel's chat area: each new line goes to the log."""
    lines = before.lines if before is not None else ()
    if len(view.lines) > len(lines):
        new = view.lines[len(lines):]
    else:  # full: the oldest scrolled away as the newest came
        new = view.lines[-1:] if view.lines != lines else ()
    for line in new:
        log.info("chat: %s", line)


class TkChat:
    """The chat area in the Tk panel: its own frame below the panel's body, so that the
    panel's redraws never move it. Runs on the panel's Tk thread."""

    def __init__(self, root: Any, width_px: int, on_send: Callable[[str], None]) -> None:
        import tkinter as tk
        from tkinter import ttk

        self._on_send, self._view = on_send, ChatView(False)
        self.frame = ttk.Frame(root, padding=(14, 0, 14, 12))
        self._title = ttk.Label(self.frame, font="TkDefaultFont")
        self._title.pack(anchor="w", pady=(0, 4))
        self._note = ttk.Label(self.frame, foreground="#8a1c00", wraplength=width_px,
                               justify="left")
        self._log = tk.Text(self.frame, height=LOG_ROWS, width=1, wrap="word",
                            state="disabled", relief="solid", borderwidth=1, padx=6, pady=4,
                            background="#ffffff", takefocus=0, font="TkDefaultFont")
        self._log.pack(fill="x", pady=(0, 6))
        row = ttk.Frame(self.frame)
        row.pack(fill="x")
        self._entry = ttk.Entry(row)
        self._entry.pack(side="left", fill="x", expand=True, padx=(0, 8))
        self._entry.bind("<Return>", lambda _e: self._send())
        self._entry.bind("<KP_Enter>", lambda _e: self._send())
        self._button = ttk.Button(row, text="Send", command=self._send)
        self._button.pack(side="left")

    def show(self, view: ChatView) -> bool:
        """Draw ``view``; True when the area appeared or went (the panel's size changed)."""
        before, self._view = self._view, view
        if view.lines != before.lines:
            self._log.configure(state="normal")
            self._log.delete("1.0", "end")
            self._log.insert("end", "\n".join(view.lines))  # plain text, whatever it says
            self._log.configure(state="disabled")
            self._log.see("end")
        self._note.configure(text=view.clipboard_note)
        self._title.configure(text=view.title)
        if bool(view.clipboard_note) != bool(before.clipboard_note):
            self._note.pack_forget()
            if view.clipboard_note:
                self._note.pack(anchor="w", before=self._log, pady=(0, 6))
        if view.visible == before.visible:
            return bool(view.clipboard_note) != bool(before.clipboard_note)
        if view.visible:
            self.frame.pack(fill="x")
        else:
            self.frame.pack_forget()
        return True

    def _send(self) -> None:
        text = self._entry.get()
        if not text.strip() or not self._view.visible:
            return
        self._entry.delete(0, "end")
        self._on_send(text)


# Win32 controls of the chat area (winuser.h)
WS_CHILD, WS_TABSTOP, WS_VSCROLL, WS_EX_CLIENTEDGE = 0x40000000, 0x10000, 0x200000, 0x200
ES_MULTILINE, ES_AUTOVSCROLL, ES_AUTOHSCROLL, ES_READONLY = 0x4, 0x40, 0x80, 0x800
SS_NOPREFIX, WM_SETFONT, EM_SETSEL, EM_SCROLLCARET, EM_LIMITTEXT = 0x80, 0x30, 0xB1, 0xB7, 0xC5
SW_HIDE, SW_SHOWNOACTIVATE, IDOK = 0, 4, 1
SEND_ID, INPUT_ID = 301, 302


class Win32Chat:
    """The chat area in the Win32 panel: child controls under the panel's buttons (the panel
    asks ``layout`` where they go), Send and Enter in the input send. Runs on the panel's
    thread; ``u32`` is the panel's user32 with argument types set."""

    def __init__(self, parent: Any, u32: Any, font: Any, on_send: Callable[[str], None]) -> None:
        import ctypes
        from ctypes import wintypes as w

        self._c, self._u32, self._on_send = ctypes, u32, on_send
        self._view = ChatView(False)
        api = self._api = ctypes.WinDLL("user32", use_last_error=True)
        api.GetWindowTextLengthW.argtypes, api.GetWindowTextLengthW.restype = [w.HWND], ctypes.c_int
        api.GetWindowTextW.argtypes = [w.HWND, w.LPWSTR, ctypes.c_int]
        api.GetWindowTextW.restype = ctypes.c_int
        api.GetFocus.argtypes, api.GetFocus.restype = [], w.HWND
        instance = ctypes.WinDLL("kernel32").GetModuleHandleW(None)

        def child(cls: str, style: int, ident: int, ex: int = 0) -> Any:
            hwnd = u32.CreateWindowExW(ex, cls, "", WS_CHILD | style, 0, 0, 10, 10, parent,
                                       ctypes.c_void_p(ident), instance, None)
            u32.SendMessageW(hwnd, WM_SETFONT, font, 1)
            return hwnd

        self._note = child("STATIC", SS_NOPREFIX, 0)
        self._log = child("EDIT", WS_VSCROLL | ES_MULTILINE | ES_AUTOVSCROLL | ES_READONLY, 0,
                          WS_EX_CLIENTEDGE)
        self._input = child("EDIT", WS_TABSTOP | ES_AUTOHSCROLL, INPUT_ID, WS_EX_CLIENTEDGE)
        u32.SendMessageW(self._input, EM_LIMITTEXT, protocol.MAX_CHAT_CHARS, 0)
        self._send = child("BUTTON", WS_TABSTOP, SEND_ID)
        u32.SetWindowTextW(self._send, "Send")

    def show(self, view: ChatView) -> bool:
        """Take ``view``; True when the panel must lay itself out again."""
        before, self._view = self._view, view
        if view.lines != before.lines:
            # an EDIT shows its text as text: nothing in a line is ever interpreted
            self._u32.SetWindowTextW(self._log, "\r\n".join(view.lines))
            self._u32.SendMessageW(self._log, EM_SETSEL, -1, -1)
            self._u32.SendMessageW(self._log, EM_SCROLLCARET, 0, 0)
        self._u32.SetWindowTextW(self._note, view.clipboard_note)
        return (view.visible, bool(view.clipboard_note)) != (before.visible,
                                                             bool(before.clipboard_note))

    def layout(self, x: int, y: int, width: int, scale: float) -> int:
        """Place the controls from ``y`` down (hidden when not visible); the next free y."""
        u32, shown = self._u32, self._view.visible
        rows = [(self._note, round(36 * scale) if self._view.clipboard_note else 0),
                (self._log, round(LOG_ROWS * 17 * scale))]
        for hwnd, height in rows:
            u32.ShowWindow(hwnd, SW_SHOWNOACTIVATE if shown and height else SW_HIDE)
            if shown and height:
                u32.MoveWindow(hwnd, x, y, width, height, True)
                y += height + round(6 * scale)
        button_w, height = round(80 * scale), round(26 * scale)
        for hwnd in (self._input, self._send):
            u32.ShowWindow(hwnd, SW_SHOWNOACTIVATE if shown else SW_HIDE)
        if not shown:
            return y
        u32.MoveWindow(self._input, x, y, width - button_w - round(8 * scale), height, True)
        u32.MoveWindow(self._send, x + width - button_w, y, button_w, height, True)
        return y + height + round(6 * scale)

    def command(self, ident: int) -> bool:
        """A WM_COMMAND of the panel: True if it was the chat's (Send, or Enter in the input:
        IsDialogMessage turns that into IDOK)."""
        if ident == IDOK and self._api.GetFocus() != self._input:
            return False
        if ident not in (SEND_ID, IDOK):
            return False
        length = self._api.GetWindowTextLengthW(self._input)
        buffer = self._c.create_unicode_buffer(length + 1)
        self._api.GetWindowTextW(self._input, buffer, length + 1)
        if buffer.value.strip() and self._view.visible:
            self._u32.SetWindowTextW(self._input, "")
            self._on_send(buffer.value)
        return True


class NoChat:
    """The chat area that could not be made (the panel goes on without it)."""

    def show(self, view: ChatView) -> bool:
        return False

    def layout(self, x: int, y: int, width: int, scale: float) -> int:
        return y

    def command(self, ident: int) -> bool:
        return False


def make_win32_chat(parent: Any, u32: Any, font: Any,
                    on_send: Callable[[str], None]) -> Win32Chat | NoChat:
    """The Win32 chat area, or none: a failure here must never cost the customer the panel
    (without a panel the screen is not shared at all)."""
    try:
        return Win32Chat(parent, u32, font, on_send)
    except Exception:
        log.exception("panel: the chat area cannot be shown")
        return NoChat()
