"""The customer's side of a file the support person sends: the consent dialog, its progress
and its outcome (``FileWindow``), and ``FileDesk``, which the agent's loop hands every file
message and chunk.

    file_offer --> dialog "David wants to send you a file": name, size; Save (Enter) or
                   Decline (Esc, the close box). No input is injected while it is up.
    Save       --> progress and Cancel, in the same window
    file_done  <-- the SHA-256 matched and the file has its name: "Open folder", "Close"

Backends, chosen like the agent's other windows (SPOTLIGHT_DIALOGS=win32|tk|stderr):
``TkFileWindow`` (from source on Linux), ``Win32FileWindow`` (a native window through ctypes:
the Windows build has no tkinter) and ``LogFileWindow`` (no display: nobody can say yes, so
every file is declined and the log says why). Windows run on their own UI thread
(panel._UiThread); their methods may be called from any thread, and the answers come back
on the UI thread, which FileDesk hands to the agent's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import agent_files
import agent_session as core
import protocol as p
from panel import START_TIMEOUT_S, UI_POLL_MS, PanelError, _UiThread, tk_host

log = logging.getLogger("agent.files")

WINDOW_WIDTH_PX = 420
SEND_POLL_S = 0.02  # a chunk waiting for the link's buffer to drain looks again after this


def consent_title(person: str) -> str:
    """The dialog's title: whoever sends, by the name the customer knows them by."""
    return f"{person or 'Your support person'} wants to send you a file"


class FileWindow(Protocol):
    """One incoming file's window; every method may be called from any thread."""

    def ask(self, title: str, name: str, size: str,
            answer: Callable[[bool], None], cancel: Callable[[], None]) -> None:
        """Show the question; ``answer(True/False)`` once, then ``cancel()`` if the customer
        cancels the transfer later (both on the UI thread)."""

    def progress(self, received: int, size: int) -> None: ...

    def saved(self, sentence: str, folder: Path) -> None:
        """The file is kept: say so, with "Open folder"."""

    def failed(self, sentence: str) -> None: ...

    def pick(self, title: str, picked: Callable[[Path | None], None]) -> None:
        """Let the customer choose a file to send; ``picked(path or None)`` on the UI thread."""

    def sending(self, title: str, sentence: str, cancel: Callable[[], None]) -> None:
        """A file of the customer's is on its way: the words, progress, Cancel."""

    def sent(self, sentence: str) -> None: ...

    def close(self) -> None: ...


def open_folder(folder: Path) -> None:
    """Show the folder in the platform's file manager."""
    if sys.platform == "win32":
        os.startfile(folder)  # type: ignore[attr-defined]  # noqa: S606 (a folder of ours)
    else:
        subprocess.Popen(["xdg-open", str(folder)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)


# --- backends ------------------------------------------------------------------------


class LogFileWindow:
    """No display: nobody can say yes, so the file is declined (never saved unasked)."""

    def ask(self, title: str, name: str, size: str,
            answer: Callable[[bool], None], cancel: Callable[[], None]) -> None:
        log.info("%s: %r (%s); no window to ask the customer, so it is declined",
                 title, name, size)
        answer(False)

    def progress(self, received: int, size: int) -> None:
        pass

    def saved(self, sentence: str, folder: Path) -> None:
        log.info("%s", sentence)

    def failed(self, sentence: str) -> None:
        log.info("%s", sentence)

    def pick(self, title: str, picked: Callable[[Path | None], None]) -> None:
        log.info("%s: no window to choose a file in", title)
        picked(None)

    def sending(self, title: str, sentence: str, cancel: Callable[[], None]) -> None:
        log.info("%s", sentence)

    def sent(self, sentence: str) -> None:
        log.info("%s", sentence)

    def close(self) -> None:
        pass


class _OnItsUiThread:
    """A file window whose calls are each carried out on its window's UI thread (``_ui``:
    a _UiThread, or a _Guest on the Tk panel's)."""

    _ui: Any

    def ask(self, title: str, name: str, size: str,
            answer: Callable[[bool], None], cancel: Callable[[], None]) -> None:
        self._ui.call("ask", title, name, size, answer, cancel)

    def progress(self, received: int, size: int) -> None:
        self._ui.call("progress", received, size)

    def saved(self, sentence: str, folder: Path) -> None:
        self._ui.call("saved", sentence, folder)

    def failed(self, sentence: str) -> None:
        self._ui.call("failed", sentence)

    def pick(self, title: str, picked: Callable[[Path | None], None]) -> None:
        self._ui.call("pick", title, picked)

    def sending(self, title: str, sentence: str, cancel: Callable[[], None]) -> None:
        self._ui.call("sending", title, sentence, cancel)

    def sent(self, sentence: str) -> None:
        self._ui.call("sent", sentence)

    def close(self) -> None:
        self._ui.stop()


class TkFileWindow(_OnItsUiThread):
    """Linux, from source: a small Tk window on top of the others: a Toplevel of the Tk
    panel's when one is up (one Tcl interpreter: panel.tk_host), else a Tk of its own on its
    own thread."""

    def __init__(self) -> None:
        import tkinter  # noqa: F401 (fail here, in the caller's thread, when it is missing)

        host = tk_host()
        self._ui: _UiThread | _Guest = _UiThread(_TkFile, "file window") if host is None \
            else _Guest(host, _TkFile)


class _Guest:
    """A window made and used on another window's UI thread (the Tk panel's: ``host``);
    the calls of _UiThread, queued there."""

    def __init__(self, host: _UiThread, make_window: Callable[[Any, Any], Any]) -> None:
        self._host, self._window = host, None
        made, failure = threading.Event(), []

        def make(root: Any) -> None:
            try:
                self._window = make_window(self, root)
            except Exception as e:  # as _UiThread: only the words leave the UI thread
                failure.append(str(e) or type(e).__name__)
            finally:
                made.set()

        if host.on_thread():  # (made from the panel's own thread: at once, not queued)
            host.run_here("guest", make)
        else:
            host.call("guest", make)
            if not made.wait(START_TIMEOUT_S):
                raise PanelError(f"the file window did not appear within {START_TIMEOUT_S:.0f} s")
        if failure:
            raise PanelError(f"the file window cannot be shown here: {failure[0]}")

    def call(self, name: str, *args: Any) -> None:
        """Run ``window.<name>(*args)`` on the host's thread, in order with other calls."""
        self._host.call("guest", lambda _root: self._run(name, args))

    def _run(self, name: str, args: tuple) -> None:
        window = self._window
        if window is None:  # closed: as a _UiThread whose window went
            return
        try:
            getattr(window, name)(*args)
        except Exception:  # never into the host's loop: its panel must go on
            log.exception("the file window failed")

    def gone(self) -> None:
        """The window closed itself (its Close, Decline): later calls are dropped."""
        self._window = None

    def stop(self) -> None:
        self.call("close")


class _TkFile:
    """The Tk side of TkFileWindow: every method runs on its UI thread. With ``parent`` (a
    Tk panel's root) a Toplevel of it, whose loop is the panel's, else a Tk of its own."""

    def __init__(self, ui: _UiThread | _Guest, parent: Any = None) -> None:
        import tkinter as tk
        from tkinter import font, ttk

        self._ui, self._ttk, self._hosted = ui, ttk, parent is not None
        root = self._root = tk.Tk(className="SpotlightFile") if parent is None else \
            tk.Toplevel(parent, class_="SpotlightFile")
        root.withdraw()
        root.resizable(False, False)
        root.attributes("-topmost", True)
        ttk.Style(root).theme_use("clam")
        family = font.nametofont("TkDefaultFont").actual()["family"]
        bold = font.Font(root, family=family, size=11, weight="bold")
        frame = ttk.Frame(root, padding=(14, 12, 14, 12))
        frame.pack(fill="both", expand=True)
        wrap = WINDOW_WIDTH_PX - 28
        ttk.Frame(frame, width=wrap, height=0).pack()
        self._headline = ttk.Label(frame, font=bold, wraplength=wrap, justify="left")
        self._detail = ttk.Label(frame, wraplength=wrap, justify="left")
        self._bar = ttk.Progressbar(frame, mode="determinate", length=wrap, maximum=1000)
        self._row = ttk.Frame(frame)
        for widget in (self._headline, self._detail, self._bar):
            widget.pack(anchor="w", pady=(0, 6))
        self._row.pack(anchor="w", pady=(6, 0))
        self._buttons: list[Any] = []
        self._enter: Callable[[], None] = lambda: None
        self._escape: Callable[[], None] = lambda: None
        root.bind("<KeyPress-Return>", lambda _e: self._enter())
        root.bind("<KeyPress-KP_Enter>", lambda _e: self._enter())
        root.bind("<KeyPress-Escape>", lambda _e: self._escape())
        root.protocol("WM_DELETE_WINDOW", lambda: self._escape())
        if not self._hosted:  # (a hosted window's calls are drained by its host)
            root.after(UI_POLL_MS, self._poll)

    def wake(self) -> None:
        pass  # _poll looks for calls every UI_POLL_MS

    def loop(self) -> None:
        try:
            self._root.mainloop()
        finally:
            self._root.destroy()

    def _poll(self) -> None:
        self._ui.drain()
        self._root.after(UI_POLL_MS, self._poll)

    def close(self) -> None:
        if self._hosted:
            self._root.destroy()  # the host's loop goes on
            self._ui.gone()  # type: ignore[union-attr] (hosted: a _Guest)
        else:
            self._root.quit()

    def _buttons_are(self, *buttons: tuple[str, Callable[[], None]]) -> None:
        for widget in self._buttons:
            widget.destroy()
        self._buttons = [self._ttk.Button(self._row, text=label, command=action)
                         for label, action in buttons]
        for widget in self._buttons:
            widget.pack(side="left", padx=(0, 8))
        if self._buttons:
            self._buttons[0].focus_set()

    def ask(self, title: str, name: str, size: str,
            answer: Callable[[bool], None], cancel: Callable[[], None]) -> None:
        once = _Once()

        def save() -> None:
            if once():
                answer(True)
                self._receiving(name, cancel)

        def decline() -> None:
            if once():
                answer(False)
                self.close()

        self._headline.configure(text=title)
        self._detail.configure(text=f"{name}\n{size}\n\nSave puts it in your Downloads folder.")
        self._bar.pack_forget()
        self._buttons_are(("Save", save), ("Decline", decline))
        self._enter, self._escape = save, decline
        self._place()
        root = self._root
        root.deiconify()
        root.lift()
        root.focus_force()
        root.update_idletasks()
        root.title(title)  # last: whoever finds the window by its title finds it drawn

    def _receiving(self, name: str, cancel: Callable[[], None]) -> None:
        once = _Once()

        def stop() -> None:
            if once():
                cancel()

        self._headline.configure(text=f"Receiving {name}")
        self._detail.configure(text="")
        self._bar.configure(value=0)
        self._bar.pack(anchor="w", pady=(0, 6), after=self._detail)
        self._buttons_are(("Cancel", stop))
        self._enter, self._escape = lambda: None, stop
        self._root.title(f"Receiving {name}")

    def progress(self, received: int, size: int) -> None:
        self._bar.configure(value=1000 * received // max(1, size))
        self._detail.configure(text=f"{agent_files.size_text(received)} of "
                                    f"{agent_files.size_text(size)}")

    def saved(self, sentence: str, folder: Path) -> None:
        self._bar.pack_forget()
        self._headline.configure(text=sentence)
        self._detail.configure(text=f"in {folder}")
        self._buttons_are(("Open folder", lambda: open_folder(folder)), ("Close", self.close))
        self._enter, self._escape = self.close, self.close
        self._root.title("File saved")

    def failed(self, sentence: str) -> None:
        self._bar.pack_forget()
        self._headline.configure(text=sentence)
        self._detail.configure(text="")
        self._buttons_are(("Close", self.close))
        self._enter, self._escape = self.close, self.close
        self._root.title("File not saved")

    def pick(self, title: str, picked: Callable[[Path | None], None]) -> None:
        from tkinter import filedialog

        chosen = filedialog.askopenfilename(parent=self._root, title=title,
                                            initialdir=str(Path.home()))
        picked(Path(chosen) if chosen else None)

    def sending(self, title: str, sentence: str, cancel: Callable[[], None]) -> None:
        once = _Once()

        def stop() -> None:
            if once():
                cancel()

        self._headline.configure(text=sentence)
        self._detail.configure(text="")
        self._bar.configure(value=0)
        self._bar.pack(anchor="w", pady=(0, 6), after=self._detail)
        self._buttons_are(("Cancel", stop))
        self._enter, self._escape = lambda: None, stop
        self._place()
        self._root.deiconify()
        self._root.lift()
        self._root.title(title)

    def sent(self, sentence: str) -> None:
        self._bar.pack_forget()
        self._headline.configure(text=sentence)
        self._detail.configure(text="")
        self._buttons_are(("Close", self.close))
        self._enter, self._escape = self.close, self.close
        self._root.title("File sent")

    def _place(self) -> None:
        root = self._root
        root.update_idletasks()
        x = (root.winfo_screenwidth() - root.winfo_reqwidth()) // 2
        y = (root.winfo_screenheight() - root.winfo_reqheight()) // 3
        root.geometry(f"+{max(0, x)}+{max(0, y)}")


class _Once:
    """True the first time it is called: one answer per question, however many key presses."""

    def __init__(self) -> None:
        self._done = False

    def __call__(self) -> bool:
        first, self._done = not self._done, True
        return first


class Win32FileWindow(_OnItsUiThread):
    """Windows: a small native window through ctypes (the exe has no tkinter) on its own UI
    thread, in the style of panel.Win32Panel: the question with Save (Enter) and Decline
    (Esc, the close box), then a progress bar with Cancel, then "Open folder" and Close."""

    def __init__(self) -> None:
        import ctypes

        if not hasattr(ctypes, "WinDLL"):
            raise PanelError("the Win32 file window needs Windows")
        self._ui = _UiThread(_Win32File, "file window")

    def pick(self, title: str, picked: Callable[[Path | None], None]) -> None:
        # GetOpenFileNameW is modal with its own message loop: its own thread, so the
        # window's thread keeps taking calls
        threading.Thread(target=lambda: picked(_win32_open_file(title)),
                         name="file picker", daemon=True).start()


# winuser.h, beyond what panel.py names
WM_KEYDOWN, VK_RETURN, VK_ESCAPE, PBM_SETRANGE32 = 0x100, 0x0D, 0x1B, 0x406
BS_DEFPUSHBUTTON, SW_SHOW = 0x1, 5
BUTTON_IDS = (101, 102)


class _Win32File:
    """The Win32 side of Win32FileWindow: every method runs on its UI thread. Enter and Esc
    are taken in the message loop before any control sees them, so they mean Save and
    Decline wherever the focus is (as the Tk window's bindings on its root do)."""

    def __init__(self, ui: _UiThread) -> None:
        import ctypes
        from ctypes import wintypes as w

        import panel

        self._ui, self._c, self._w, self._panel = ui, ctypes, w, panel
        u32, gdi = self._u32, self._gdi = panel._win32_api(ctypes, w)
        for name, args, result in (("SetFocus", [w.HWND], w.HWND),
                                   ("IsChild", [w.HWND, w.HWND], w.BOOL),
                                   ("BringWindowToTop", [w.HWND], w.BOOL)):
            function = getattr(u32, name)
            function.argtypes, function.restype = args, result
        self._proc = panel._WNDPROC(ctypes, w)(self._window_proc)  # kept: Windows calls it
        self._class = f"SpotlightFile{id(self)}"
        self._style = panel.WS_CAPTION | panel.WS_SYSMENU
        self._ex_style = panel.WS_EX_TOPMOST | panel.WS_EX_CONTROLPARENT
        frame = panel.Win32Frame(ctypes, w, u32, gdi, self._proc, self._class, self._style,
                                 self._ex_style)
        self._hwnd, self._scale, child = frame.hwnd, frame.scale, frame.child
        self._fonts = [frame.font(10), frame.font(11, True)]
        body, bold = self._fonts
        self._headline = (child("STATIC", panel.SS_NOPREFIX, 0, bold), bold)
        self._detail = (child("STATIC", panel.SS_NOPREFIX, 0, body), body)
        self._bar = child("msctls_progress32", 0, 0, body)
        u32.SendMessageW(self._bar, PBM_SETRANGE32, 0, 1000)
        self._buttons = [child("BUTTON", panel.WS_TABSTOP | (BS_DEFPUSHBUTTON if i == 0 else 0),
                               ident, body) for i, ident in enumerate(BUTTON_IDS)]
        self._actions: list[Callable[[], None]] = []
        self._enter: Callable[[], None] = lambda: None
        self._escape: Callable[[], None] = lambda: None
        self._texts = ("", "")
        self._shown = False

    def wake(self) -> None:
        self._u32.PostMessageW(self._hwnd, self._panel.WM_APP, 0, 0)  # thread-safe

    def loop(self) -> None:
        c, u32 = self._c, self._u32
        msg = self._w.MSG()
        try:
            while u32.GetMessageW(c.byref(msg), None, 0, 0) > 0:
                if msg.message == WM_KEYDOWN and msg.wParam in (VK_RETURN, VK_ESCAPE) and (
                        msg.hWnd == self._hwnd or u32.IsChild(self._hwnd, msg.hWnd)):
                    self._guarded(self._enter if msg.wParam == VK_RETURN else self._escape)
                    continue
                if u32.IsDialogMessageW(self._hwnd, c.byref(msg)):  # Tab between buttons
                    continue
                u32.TranslateMessage(c.byref(msg))
                u32.DispatchMessageW(c.byref(msg))
        finally:
            for f in self._fonts:
                self._gdi.DeleteObject(f)
            u32.UnregisterClassW(self._class, None)

    def close(self) -> None:
        self._u32.DestroyWindow(self._hwnd)  # WM_DESTROY ends the loop

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # an exception must not end the window's loop
            log.exception("file window: an action failed")

    # --- what the window says --------------------------------------------------------

    def _show(self, title: str, headline: str, detail: str, bar: bool,
              *buttons: tuple[str, Callable[[], None]], front: bool = False) -> None:
        u32, s, panel = self._u32, self._scale, self._panel
        self._texts = (headline, detail)
        pad, gap = round(14 * s), round(6 * s)
        inner = round((WINDOW_WIDTH_PX - 28) * s)
        y = pad
        for (hwnd, font), text in ((self._headline, headline), (self._detail, detail)):
            u32.SetWindowTextW(hwnd, text)
            u32.ShowWindow(hwnd, panel.SW_SHOWNOACTIVATE if text else panel.SW_HIDE)
            if text:
                height = self._text_height(text, font, inner)
                u32.MoveWindow(hwnd, pad, y, inner, height, True)
                y += height + gap
        u32.ShowWindow(self._bar, panel.SW_SHOWNOACTIVATE if bar else panel.SW_HIDE)
        if bar:
            u32.SendMessageW(self._bar, panel.PBM_SETPOS, 0, 0)
            u32.MoveWindow(self._bar, pad, y, inner, round(14 * s), True)
            y += round(14 * s) + gap
        y += gap
        x, height = pad, round(30 * s)
        self._actions = [action for _label, action in buttons]
        for i, hwnd in enumerate(self._buttons):
            u32.ShowWindow(hwnd, panel.SW_SHOWNOACTIVATE if i < len(buttons) else panel.SW_HIDE)
            if i < len(buttons):
                label = buttons[i][0]
                u32.SetWindowTextW(hwnd, label)
                wide = round(max(90, 8 * len(label)) * s)
                u32.MoveWindow(hwnd, x, y, wide, height, True)
                x += wide + round(8 * s)
        self._place(inner + 2 * pad, y + height + pad)
        if front or not self._shown:
            self._shown = True
            u32.ShowWindow(self._hwnd, SW_SHOW)
            u32.BringWindowToTop(self._hwnd)
            u32.SetForegroundWindow(self._hwnd)
            if buttons:
                u32.SetFocus(self._buttons[0])
        u32.RedrawWindow(self._hwnd, None, None, panel.RDW_INVALIDATE | panel.RDW_UPDATENOW |
                         panel.RDW_ALLCHILDREN)
        u32.SetWindowTextW(self._hwnd, title)  # last: found by its title, it is drawn

    def _text_height(self, text: str, font: Any, width: int) -> int:
        c, u32, gdi, panel = self._c, self._u32, self._gdi, self._panel
        rect = self._w.RECT(0, 0, width, 0)
        dc = u32.GetDC(self._hwnd)
        old = gdi.SelectObject(dc, font)
        u32.DrawTextW(dc, text or " ", -1, c.byref(rect),
                      panel.DT_CALCRECT | panel.DT_WORDBREAK | panel.DT_NOPREFIX)
        gdi.SelectObject(dc, old)
        u32.ReleaseDC(self._hwnd, dc)
        return rect.bottom - rect.top

    def _place(self, client_w: int, client_h: int) -> None:
        """Size the window to its content, centred a third of the way down the work area."""
        c, u32, panel = self._c, self._u32, self._panel
        rect = self._w.RECT(0, 0, client_w, client_h)
        u32.AdjustWindowRectEx(c.byref(rect), self._style, False, self._ex_style)
        width, height = rect.right - rect.left, rect.bottom - rect.top
        area = self._w.RECT()
        u32.SystemParametersInfoW(panel.SPI_GETWORKAREA, 0, c.byref(area), 0)
        x = area.left + max(0, (area.right - area.left - width) // 2)
        y = area.top + max(0, (area.bottom - area.top - height) // 3)
        u32.SetWindowPos(self._hwnd, c.c_void_p(panel.HWND_TOPMOST), x, y, width, height,
                         panel.SWP_NOACTIVATE)

    def ask(self, title: str, name: str, size: str,
            answer: Callable[[bool], None], cancel: Callable[[], None]) -> None:
        once = _Once()

        def save() -> None:
            if once():
                answer(True)
                self._receiving(name, cancel)

        def decline() -> None:
            if once():
                self.close()  # first: the window goes as the answer leaves
                answer(False)

        self._enter, self._escape = save, decline
        self._show(title, title, f"{name}\n{size}\n\nSave puts it in your Downloads folder.",
                   False, ("Save", save), ("Decline", decline), front=True)

    def _receiving(self, name: str, cancel: Callable[[], None]) -> None:
        once = _Once()

        def stop() -> None:
            if once():
                cancel()

        self._enter, self._escape = lambda: None, stop
        self._show(f"Receiving {name}", f"Receiving {name}", " ", True, ("Cancel", stop))

    def progress(self, received: int, size: int) -> None:
        self._u32.SendMessageW(self._bar, self._panel.PBM_SETPOS,
                               1000 * received // max(1, size), 0)
        self._u32.SetWindowTextW(self._detail[0], f"{agent_files.size_text(received)} of "
                                                  f"{agent_files.size_text(size)}")

    def saved(self, sentence: str, folder: Path) -> None:
        self._enter, self._escape = self.close, self.close
        self._show("File saved", sentence, f"in {folder}", False,
                   ("Open folder", lambda: open_folder(folder)), ("Close", self.close))

    def failed(self, sentence: str) -> None:
        self._enter, self._escape = self.close, self.close
        self._show("File not saved", sentence, "", False, ("Close", self.close))

    def sending(self, title: str, sentence: str, cancel: Callable[[], None]) -> None:
        once = _Once()

        def stop() -> None:
            if once():
                cancel()

        self._enter, self._escape = lambda: None, stop
        self._show(title, sentence, " ", True, ("Cancel", stop), front=True)

    def sent(self, sentence: str) -> None:
        self._enter, self._escape = self.close, self.close
        self._show("File sent", sentence, "", False, ("Close", self.close))

    def _window_proc(self, hwnd: Any, msg: int, wparam: int, lparam: int) -> int:
        panel = self._panel
        try:
            if msg == panel.WM_APP:
                self._ui.drain()
                return 0
            if msg == panel.WM_COMMAND:
                ident = wparam & 0xFFFF
                if ident in BUTTON_IDS and BUTTON_IDS.index(ident) < len(self._actions):
                    self._actions[BUTTON_IDS.index(ident)]()
                return 0
            if msg == panel.WM_CLOSE:  # the close box: Decline, Cancel or Close
                self._escape()
                return 0
            if msg == panel.WM_DESTROY:
                self._u32.PostQuitMessage(0)
                return 0
        except Exception:  # an exception must not cross back into Windows
            log.exception("file window: message %#x failed", msg)
        return self._u32.DefWindowProcW(hwnd, msg, wparam, lparam)


def _win32_open_file(title: str) -> Path | None:
    """GetOpenFileNameW: the customer's choice, or None if they cancelled."""
    import ctypes
    from ctypes import wintypes

    class OPENFILENAMEW(ctypes.Structure):
        _fields_ = [
            ("lStructSize", wintypes.DWORD), ("hwndOwner", wintypes.HWND),
            ("hInstance", wintypes.HINSTANCE), ("lpstrFilter", wintypes.LPCWSTR),
            ("lpstrCustomFilter", wintypes.LPWSTR), ("nMaxCustFilter", wintypes.DWORD),
            ("nFilterIndex", wintypes.DWORD), ("lpstrFile", wintypes.LPWSTR),
            ("nMaxFile", wintypes.DWORD), ("lpstrFileTitle", wintypes.LPWSTR),
            ("nMaxFileTitle", wintypes.DWORD), ("lpstrInitialDir", wintypes.LPCWSTR),
            ("lpstrTitle", wintypes.LPCWSTR), ("Flags", wintypes.DWORD),
            ("nFileOffset", wintypes.WORD), ("nFileExtension", wintypes.WORD),
            ("lpstrDefExt", wintypes.LPCWSTR), ("lCustData", wintypes.LPARAM),
            ("lpfnHook", ctypes.c_void_p), ("lpTemplateName", wintypes.LPCWSTR),
            ("pvReserved", ctypes.c_void_p), ("dwReserved", wintypes.DWORD),
            ("FlagsEx", wintypes.DWORD)]

    buffer = ctypes.create_unicode_buffer(32768)
    dialog = OPENFILENAMEW(lStructSize=ctypes.sizeof(OPENFILENAMEW), lpstrFile=buffer,
                           nMaxFile=len(buffer), lpstrTitle=title,
                           lpstrFilter="All files\0*.*\0\0",
                           Flags=0x1000 | 0x800 | 0x80000)  # FILEMUSTEXIST|PATHMUSTEXIST|EXPLORER
    if not ctypes.WinDLL("comdlg32").GetOpenFileNameW(ctypes.byref(dialog)):
        return None
    return Path(buffer.value)


def make_file_window() -> FileWindow:
    """The platform's file window; SPOTLIGHT_DIALOGS=win32|tk|stderr chooses, as for the
    agent's other dialogs. No window at all means every file is declined."""
    choice = os.environ.get("SPOTLIGHT_DIALOGS", "")
    try:
        if choice == "win32" or (not choice and sys.platform == "win32"):
            return Win32FileWindow()
        if choice == "tk" or (not choice and os.environ.get("DISPLAY")):
            return TkFileWindow()
    except (ImportError, PanelError) as e:
        log.warning("no file window (%s): files sent to this customer are declined", e)
    return LogFileWindow()


# --- the agent's side of a transfer ----------------------------------------------------


class FileDesk:
    """Files for the agent's loop. Incoming: ``receive`` and ``chunk`` answer with core
    actions (Send, and the input block of core.Session.asking_customer); the customer's
    answers arrive on the window's thread and are carried out through ``run`` on the loop.
    One file at a time: a second offer meanwhile is refused "file-busy". Outgoing (the
    customer's "Send a file to David…"): ``send_file`` lets them pick one, offers it, and
    sends its chunks through ``send_binary`` as the support person's acks allow, waiting
    while the link's buffer holds screen updates."""

    def __init__(self, make_window: Callable[[], FileWindow] = make_file_window,
                 folder: Callable[[], Path] = agent_files.downloads_folder) -> None:
        self._make_window, self._folder = make_window, folder
        self.incoming: agent_files.Incoming | None = None
        self.window: FileWindow | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run: Callable[[list], None] = lambda actions: None
        self._send_binary: Callable[[bytes], Any] | None = None
        self._buffered: Callable[[], int] = lambda: 0
        self.outgoing: agent_files.Outgoing | None = None
        self.out_window: FileWindow | None = None
        self._pump_task: asyncio.Future | None = None
        self._tasks: set[asyncio.Future] = set()

    def attach(self, loop: asyncio.AbstractEventLoop, run: Callable[[list], None],
               send_binary: Callable[[bytes], Any] | None = None,
               buffered: Callable[[], int] = lambda: 0) -> None:
        """The loop; how it carries out actions (the agent's _do on its current link); how
        it sends a chunk (a coroutine, False when there is no link) and how many bytes wait
        in the link's buffer."""
        self._loop, self._run = loop, run
        self._send_binary, self._buffered = send_binary, buffered

    def receive(self, message: p.Message, session: core.Session) -> list[core.Action]:
        """A file message from the relay (protocol.FILE_TYPES)."""
        if message.session != session.session:  # type: ignore[attr-defined]
            return []
        incoming = self.incoming
        if isinstance(message, p.FileOffer):
            if incoming is not None or session.state not in core.SHARING:
                return [core.Send(p.FileCancel(session.session, message.transfer,
                                               "file-busy"))]
            return self._ask(message, session)
        outgoing = self.outgoing
        if outgoing is not None and message.transfer == outgoing.offer.transfer:  # type: ignore
            self._outgoing_message(message, outgoing, session)
            return []
        if incoming is None or message.transfer != incoming.offer.transfer:  # type: ignore
            return []
        if isinstance(message, p.FileCancel):
            incoming.discard()
            self._failed(p.customer_words(message.reason))
            return session.asking_customer(False)
        return []  # the agent sends no file, so nothing else is for it

    def _ask(self, offer: p.FileOffer, session: core.Session) -> list[core.Action]:
        try:
            folder = self._folder()
        except OSError as e:
            log.warning("no Downloads folder: %r", e)
            return [core.Send(p.FileCancel(offer.session, offer.transfer, "file-failed"))]
        if self.window is not None:
            self.window.close()
        self.incoming = agent_files.Incoming(offer, folder)
        self.window = self._make_window()
        transfer = offer.transfer
        self.window.ask(consent_title(session.name), self.incoming.name,
                        agent_files.size_text(offer.size),
                        lambda yes: self._later(self._answered, transfer, yes, session),
                        lambda: self._later(self._cancelled, transfer))
        return session.asking_customer(True)

    def _later(self, function: Callable[..., None], *args: Any) -> None:
        """From the window's thread: run ``function`` on the agent's loop."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(function, *args)
            except RuntimeError:  # the loop has just closed: the session is over anyway
                pass

    def _answered(self, transfer: int, yes: bool, session: core.Session) -> None:
        incoming = self.incoming
        actions: list[core.Action] = list(session.asking_customer(False))
        if incoming is not None and incoming.offer.transfer == transfer:
            messages = incoming.accept() if yes else incoming.decline()
            actions += [core.Send(m) for m in messages]
            self._after(messages)
        self._run(actions)

    def _cancelled(self, transfer: int) -> None:
        incoming = self.incoming
        if incoming is not None and incoming.offer.transfer == transfer:
            self.incoming = None
            self._run([core.Send(m) for m in incoming.cancel()])
            self._failed(p.customer_words("file-cancelled"))

    def chunk(self, data: bytes) -> list[core.Action]:
        """A binary file chunk: RemoteProtocolError if malformed or out of order."""
        chunk = p.decode_file_chunk(data)
        incoming = self.incoming
        if incoming is None or chunk.transfer != incoming.offer.transfer:
            return []  # a transfer cancelled a moment ago: its last chunks are dropped
        messages = incoming.chunk(chunk)
        if self.window is not None:
            self.window.progress(incoming.received, incoming.offer.size)
        self._after(messages)
        return [core.Send(m) for m in messages]

    def _after(self, messages: list[p.Message]) -> None:
        """What the answers sent mean for the window and the state."""
        incoming = self.incoming
        for message in messages:
            if isinstance(message, p.FileDone) and incoming is not None:
                self.incoming = None
                if self.window is not None:
                    self.window.saved(f"Saved {message.saved_as}", incoming.folder)
            elif isinstance(message, p.FileCancel):
                self.incoming = None
                self._failed(p.customer_words(message.reason))
            elif isinstance(message, p.FileAnswer) and not message.accept:
                self.incoming = None

    def _failed(self, sentence: str) -> None:
        self.incoming = None
        if self.window is not None:
            self.window.failed(sentence)

    # --- the customer sends ------------------------------------------------------------

    def send_file(self, session: core.Session) -> None:
        """On the loop: "Send a file to David…" was pressed."""
        if self.outgoing is not None or session.state not in core.SHARING:
            return
        if self.out_window is not None:
            self.out_window.close()
        window = self.out_window = self._make_window()
        title = f"Send a file to {session.name or 'your support person'}"
        window.pick(title, lambda path: self._later(self._picked, path, session, title))

    def _picked(self, path: Path | None, session: core.Session, title: str) -> None:
        if path is not None and self._loop is not None:
            task = self._loop.create_task(self._offer(path, session, title))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self.out_window is not None:
            self.out_window.close()
            self.out_window = None

    async def _offer(self, path: Path, session: core.Session, title: str) -> None:
        window = self.out_window
        if self.outgoing is not None or session.state not in core.SHARING or window is None:
            return
        transfer = 1 + secrets.randbelow(2**31 - 2)
        try:
            outgoing = await asyncio.to_thread(agent_files.Outgoing.prepare, path,
                                               session.session, transfer)
        except OSError as e:
            log.info("cannot send %s: %r", path, e)
            window.failed(f"{path.name} could not be read.")
            return
        self.outgoing = outgoing
        person = session.name or "your support person"
        window.sending(title, f"Waiting for {person} to take {outgoing.offer.name}…",
                       lambda: self._later(self._cancel_outgoing, transfer))
        self._run([core.Send(outgoing.offer)])

    def _outgoing_message(self, message: p.Message, outgoing: agent_files.Outgoing,
                          session: core.Session) -> None:
        window, person = self.out_window, session.name or "Your support person"
        if isinstance(message, p.FileAnswer):
            if message.accept:
                outgoing.accepted = True
                self._pump()
            else:
                self._outgoing_over(f"{person} did not take {outgoing.offer.name}.")
        elif isinstance(message, p.FileAck):
            if outgoing.window.ack(message.received):
                if window is not None:
                    window.progress(message.received, outgoing.offer.size)
                self._pump()
        elif isinstance(message, p.FileDone):
            self._outgoing_over(f"{person} received {outgoing.offer.name}.", sent=True)
        elif isinstance(message, p.FileCancel):
            self._outgoing_over(p.customer_words(message.reason))

    def _pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._send_chunks())

    async def _send_chunks(self) -> None:
        """Chunks while the window has room; the screen and the keys' echoes go first: a
        chunk waits while the link's buffer holds more than one chunk's worth."""
        while (outgoing := self.outgoing) is not None and self._send_binary is not None:
            if self._buffered() > p.FILE_CHUNK_BYTES:
                await asyncio.sleep(SEND_POLL_S)
                continue
            try:
                data = outgoing.next_chunk()
            except OSError as e:
                log.info("sending a file failed: %r", e)
                self._cancel_outgoing(outgoing.offer.transfer, "file-failed")
                return
            if data is None or not await self._send_binary(data):
                return

    def _cancel_outgoing(self, transfer: int, reason: str = "file-cancelled") -> None:
        outgoing = self.outgoing
        if outgoing is not None and outgoing.offer.transfer == transfer:
            self._run([core.Send(p.FileCancel(outgoing.offer.session, transfer, reason))])
            self._outgoing_over(p.customer_words(reason))

    def _outgoing_over(self, sentence: str, sent: bool = False) -> None:
        if self.outgoing is not None:
            self.outgoing.close()
            self.outgoing = None
        if self.out_window is not None:
            (self.out_window.sent if sent else self.out_window.failed)(sentence)

    def link_lost(self, session: core.Session) -> list[core.Action]:
        """The link dropped or the session ended: the relay cancelled the transfer."""
        if self.outgoing is not None:
            self._outgoing_over(p.customer_words("file-lost"))
        if self.incoming is not None:
            self.incoming.discard()
            self._failed(p.customer_words("file-lost"))
        return session.asking_customer(False) if session.asking else []

    def close(self) -> None:
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None
        if self.outgoing is not None:
            self.outgoing.close()
            self.outgoing = None
        for window in (self.window, self.out_window):
            if window is not None:
                window.close()
        self.window = self.out_window = None
