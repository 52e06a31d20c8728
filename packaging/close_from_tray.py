"""Close the running agent the way its customer does: the tray icon's menu, then "Close".

    python packaging/close_from_tray.py [--timeout SECONDS]

Windows only; ctypes and the standard library, so it also runs on the build's embeddable
Python under Wine (tests/test_wine.py ends its session with it). Exit 0 once "Close" was
clicked, 1 with the reason when it could not be.

The tray icon is pystray's: a hidden window of the class "spotlight<n>SystemTrayIcon" gets
the shell's notifications for it. This posts that window the notification the shell sends
on a right-click, so the agent opens the icon's menu itself, exactly as after a real
right-click; then it clicks the menu's "Close" item with real mouse input at the item's
rectangle. (Right-clicking the icon itself would need its place in the notification area,
which Windows may hide in the overflow.)
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
import time
from ctypes import wintypes

# pystray names the window class f"{icon name}{id(icon)}SystemTrayIcon"; agent.py names the
# icon "spotlight".
TRAY_CLASS = re.compile(r"spotlight\d+SystemTrayIcon")
PYSTRAY_NOTIFY = 0x400 + 11  # pystray._util.win32.WM_NOTIFY: the icon's callback message
# pystray opens the menu on the button-down notification in some versions and on the
# button-up one in others: both are posted, the other one is ignored.
RIGHT_CLICK = (0x0204, 0x0205)  # WM_RBUTTONDOWN, WM_RBUTTONUP
MENU_CLASS = "#32768"  # the window class of every popup menu
MN_GETHMENU = 0x01E1
MF_BYPOSITION = 0x400
MOUSEEVENTF_LEFTDOWN, MOUSEEVENTF_LEFTUP = 0x0002, 0x0004
VK_END, VK_RETURN, KEYEVENTF_KEYUP = 0x23, 0x0D, 0x0002


class TrayError(Exception):
    """The agent's tray menu could not be found or used."""


def user32():
    api = ctypes.WinDLL("user32", use_last_error=True)
    api.GetMenuItemRect.argtypes = (wintypes.HWND, wintypes.HMENU, wintypes.UINT,
                                    ctypes.POINTER(wintypes.RECT))
    api.GetMenuStringW.argtypes = (wintypes.HMENU, wintypes.UINT, wintypes.LPWSTR,
                                   ctypes.c_int, wintypes.UINT)
    api.GetMenuItemCount.argtypes = (wintypes.HMENU,)
    api.SendMessageW.argtypes = (wintypes.HWND, wintypes.UINT, wintypes.WPARAM,
                                 wintypes.LPARAM)
    api.SendMessageW.restype = ctypes.c_ssize_t
    api.PostMessageW.argtypes = (wintypes.HWND, wintypes.UINT, wintypes.WPARAM,
                                 wintypes.LPARAM)
    return api


def set_dpi_aware(api) -> None:
    """Physical pixels, like the agent: menu rectangles and the pointer then agree."""
    try:
        if api.SetProcessDpiAwarenessContext(ctypes.c_void_p(-4)):  # per-monitor v2
            return
    except AttributeError:
        pass
    try:
        api.SetProcessDPIAware()
    except AttributeError:
        pass


def top_windows(api, class_name: re.Pattern[str] | str) -> list[int]:
    """Top-level windows whose class is ``class_name`` (an exact name or a pattern)."""
    found: list[int] = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
    def visit(hwnd, _):
        buffer = ctypes.create_unicode_buffer(256)
        api.GetClassNameW(hwnd, buffer, 256)
        if (class_name.fullmatch(buffer.value) if isinstance(class_name, re.Pattern)
                else buffer.value == class_name):
            found.append(hwnd)
        return True

    api.EnumWindows(visit, 0)
    return found


def thread_of(api, hwnd: int) -> int:
    return api.GetWindowThreadProcessId(hwnd, None)


def open_menu(api, timeout: float) -> tuple[int, int]:
    """Open the tray icon's menu; (menu window, its HMENU or 0 when it cannot be had)."""
    deadline = time.monotonic() + timeout
    trays: list[int] = []
    while not trays:
        trays = top_windows(api, TRAY_CLASS)
        if time.monotonic() > deadline:
            raise TrayError("no tray icon window of the agent (is it running?)")
        time.sleep(0.2)
    threads = {thread_of(api, hwnd) for hwnd in trays}
    # The menu opens at the pointer: put it in the middle of the main screen.
    api.SetCursorPos(api.GetSystemMetrics(0) // 2, api.GetSystemMetrics(1) // 2)
    for hwnd in trays:  # pystray's second window (for its menu) ignores the notification
        for message in RIGHT_CLICK:
            api.PostMessageW(hwnd, PYSTRAY_NOTIFY, 0, message)
    while time.monotonic() < deadline:
        for menu in top_windows(api, MENU_CLASS):
            if api.IsWindowVisible(menu) and thread_of(api, menu) in threads:
                return menu, api.SendMessageW(menu, MN_GETHMENU, 0, 0)
        time.sleep(0.1)
    raise TrayError(f"the tray icon's menu did not open in {timeout:.0f} s")


def menu_items(api, hmenu: int) -> list[str]:
    items: list[str] = []
    for index in range(api.GetMenuItemCount(hmenu) if hmenu else 0):
        buffer = ctypes.create_unicode_buffer(256)
        api.GetMenuStringW(hmenu, index, buffer, 256, MF_BYPOSITION)
        items.append(buffer.value)
    return items


def click_item(api, hmenu: int, index: int) -> tuple[int, int]:
    """A real left click in the middle of the menu item; where it clicked."""
    rect = wintypes.RECT()
    if not api.GetMenuItemRect(None, hmenu, index, ctypes.byref(rect)):
        raise TrayError(f"no rectangle for menu item {index}: {ctypes.get_last_error()}")
    x, y = (rect.left + rect.right) // 2, (rect.top + rect.bottom) // 2
    api.SetCursorPos(x, y)
    time.sleep(0.3)  # the menu highlights the item it is hovered over before the click
    api.mouse_event(MOUSEEVENTF_LEFTDOWN, 0, 0, 0, 0)
    time.sleep(0.05)
    api.mouse_event(MOUSEEVENTF_LEFTUP, 0, 0, 0, 0)
    return x, y


def close_from_tray(item: str = "Close", timeout: float = 20) -> str:
    """Open the agent's tray menu and click ``item``; what was done, in words."""
    if sys.platform != "win32":
        raise TrayError("the tray menu is clicked on Windows only")
    api = user32()
    set_dpi_aware(api)
    _, hmenu = open_menu(api, timeout)
    items = menu_items(api, hmenu)
    if not items:
        # Under Wine another process reads no items from the menu (its handle is no use
        # outside the agent). "Close" is the last item of agent.py's menu: the keyboard
        # chooses it in the open menu.
        for key in (VK_END, VK_RETURN):
            api.keybd_event(key, 0, 0, 0)
            api.keybd_event(key, 0, KEYEVENTF_KEYUP, 0)
        return "chose the tray menu's last item (Close) with End and Enter: its items " \
               "cannot be read from another process here"
    if item not in items:
        raise TrayError(f"the tray menu has no {item!r}: {items}")
    x, y = click_item(api, hmenu, items.index(item))
    return f"clicked {item!r} at ({x}, {y}) in the tray menu {items}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=20,
                        help="seconds to wait for the tray icon and its menu (default 20)")
    args = parser.parse_args(argv)
    try:
        print(close_from_tray(timeout=args.timeout), flush=True)
    except TrayError as error:
        print(f"close_from_tray: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
