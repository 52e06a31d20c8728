"""The customer's windows around a session: the tray icon, the picker that asks which
support person they are talking to, and message boxes.

Each backend imports its library only when created (the Windows build's embeddable Python has
no tkinter; a headless machine has no display), and is chosen in one place with an environment
override: SPOTLIGHT_TRAY=pystray|log, SPOTLIGHT_DIALOGS=win32|tk|stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

APP_NAME = "Spotlight Remote Support"
TRAY_HIDE_TIMEOUT_S = 1.0
TRAY_COLOURS = {"pending": (242, 190, 0), "active": (40, 170, 70), "reconnecting": (150, 150, 150)}
log = logging.getLogger("agent")


class Tray(Protocol):
    on_close: Callable[[], None]  # the customer chose Close (called from the tray's thread)

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        """Show the icon for ``state`` (a TRAY_COLOURS key); balloon "" shows none."""

    def hide(self) -> None: ...


class Dialogs(Protocol):
    def pick(self, company: str, people: tuple[tuple[str, str], ...]) -> str | None:
        """The id of the support person the customer clicked, or None for Cancel."""

    def message(self, title: str, text: str, error: bool = False) -> None: ...


class PystrayTray:
    """The icon lives in its own thread (win32 wants it created where it runs)."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        import pystray

        self._pystray, self.on_close = pystray, on_close
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
                      item("Close", lambda: self.on_close())))

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

    def __init__(self, on_close: Callable[[], None]) -> None:
        self.on_close = on_close  # no menu to call it: SIGTERM takes the same path

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
        return LogTray(on_close)
    return PystrayTray(on_close)



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
