"""Windows administrator prompts, and restarting the customer's program as administrator.

Two small interfaces, each chosen in one place (``make_desktop_watch``, ``make_elevation``):

- ``DesktopWatch``: is the input desktop the secure one? A UAC prompt (and Ctrl+Alt+Del)
  runs on the "Winlogon" desktop, which no program of the user's can see or click: capture
  goes black or fails and input goes nowhere. The agent polls it and tells the relay
  (`desktop`), so the support person reads why, and no input is sent meanwhile.
- ``Elevation``: ask the customer, then start this same program elevated
  (``ShellExecuteExW`` "runas": Windows shows its own Yes/No). The new copy takes the live
  session over with a one-time secret, passed privately in a file only the user and
  administrators can read, removed by the new copy as soon as it has read it (never on a
  command line, which every program of the user can read).

Environment (tests and diagnosis): SPOTLIGHT_DESKTOP=win32|none|fake:PATH (default: win32
on Windows, none elsewhere; fake: secure while PATH exists), SPOTLIGHT_ELEVATION=win32|
spawn|decline (default: win32 on Windows, none elsewhere; spawn: start the same program
again without new rights, as a source run's stand-in; decline: the customer says No).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol

log = logging.getLogger("agent")

STARTED, DECLINED, FAILED = "started", "declined", "failed"  # protocol.ELEVATION_STATES
HANDOFF_PREFIX = "spotlight-handoff-"
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")  # protocol's session-id shape
ERROR_CANCELLED = 1223  # ShellExecuteExW: the customer clicked No on the UAC prompt
UOI_NAME = 2
DESKTOP_READOBJECTS = 0x0001
# Owner and built-in Administrators full access, nobody else; not inherited from %TEMP%.
HANDOFF_FILE_SDDL = "D:P(A;;FA;;;OW)(A;;FA;;;BA)"


class HandoffError(Exception):
    """The hand-off file is missing, unreadable or does not hold a secret."""


# --- the secure desktop ---------------------------------------------------------------------


class DesktopWatch(Protocol):
    def secure(self) -> bool:
        """True while the input desktop is not the user's own (an administrator prompt)."""


class Win32DesktopWatch:
    """OpenInputDesktop names the desktop that gets input now. A program of the user's may
    not open the secure desktop at all (access denied): that too means a prompt is up."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self._ctypes = ctypes
        self._user32 = ctypes.WinDLL("user32", use_last_error=True)
        self._user32.OpenInputDesktop.restype = wintypes.HANDLE
        self._user32.OpenInputDesktop.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        self._user32.GetUserObjectInformationW.argtypes = (
            wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD,
            ctypes.POINTER(wintypes.DWORD))
        self._user32.CloseDesktop.argtypes = (wintypes.HANDLE,)

    def secure(self) -> bool:
        return desktop_is_secure(self.input_desktop_name())

    def input_desktop_name(self) -> str | None:
        """The input desktop's name, or None when this program may not open it."""
        ctypes = self._ctypes
        handle = self._user32.OpenInputDesktop(0, False, DESKTOP_READOBJECTS)
        if not handle:
            return None
        try:
            buffer = ctypes.create_unicode_buffer(256)
            needed = ctypes.c_ulong(0)
            if not self._user32.GetUserObjectInformationW(
                    handle, UOI_NAME, buffer, ctypes.sizeof(buffer), ctypes.byref(needed)):
                return None
            return buffer.value
        finally:
            self._user32.CloseDesktop(handle)


def desktop_is_secure(name: str | None) -> bool:
    """The rule: only the user's "Default" desktop (any case) is the one we can show."""
    return name is None or name.lower() != "default"


class NoDesktopWatch:
    """X11 and source runs: there is no secure desktop."""

    def secure(self) -> bool:
        return False


class FakeDesktopWatch:
    """SPOTLIGHT_DESKTOP=fake:PATH: a prompt is up while PATH exists (tests create and remove
    it to open and close the simulated prompt)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def secure(self) -> bool:
        return self.path.exists()


def make_desktop_watch() -> DesktopWatch:
    choice = os.environ.get("SPOTLIGHT_DESKTOP") or ("win32" if sys.platform == "win32"
                                                      else "none")
    if choice.startswith("fake:"):
        return FakeDesktopWatch(choice[len("fake:"):])
    if choice == "win32":
        try:
            return Win32DesktopWatch()
        except (AttributeError, OSError) as e:  # not Windows after all: nothing to watch
            log.warning("no desktop watch: %r", e)
    return NoDesktopWatch()


# --- restarting as administrator ----------------------------------------------------------


class Elevation(Protocol):
    def available(self) -> bool:
        """Whether a restart as administrator would change anything (offered only then)."""

    def confirm(self, person: str) -> bool:
        """Ask the customer whether ``person``'s request to restart as administrator may go
        ahead (the support person asked for it; the customer's own click needs no asking)."""

    def start(self, secret: str, args: list[str]) -> str:
        """Start this program as administrator with ``args`` and the hand-off ``secret``
        passed privately: STARTED, DECLINED (the customer said No) or FAILED."""


def program() -> list[str]:
    """The command that starts this same program (the exe, or Python and agent.py)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, str(Path(__file__).with_name("agent.py"))]


def confirm_text(person: str) -> str:
    return (f"{person} asks to restart this program as administrator, to help with a "
            "program that needs it. Windows will ask you once more. The session goes on "
            "either way.\n\nRestart as administrator?")


class Win32Elevation:
    """ShellExecuteExW "runas": Windows asks the customer (UAC). The secret goes into a new
    file whose own ACL admits only the user and administrators."""

    def available(self) -> bool:
        import ctypes

        with contextlib.suppress(AttributeError, OSError):
            return not ctypes.windll.shell32.IsUserAnAdmin()  # already elevated: no point
        return False

    def confirm(self, person: str) -> bool:
        import ctypes

        # MB_YESNO | MB_ICONQUESTION | MB_SETFOREGROUND | MB_TOPMOST; IDYES = 6
        return ctypes.windll.user32.MessageBoxW(
            None, confirm_text(person), "Restart as administrator",
            0x4 | 0x20 | 0x10000 | 0x40000) == 6

    def start(self, secret: str, args: list[str]) -> str:
        path = write_secret(secret, _private_file_win32)
        try:
            done = _shell_execute_runas(program(), [*args, "--handoff-file", str(path)])
        except OSError as e:
            log.warning("could not start as administrator: %r", e)
            done = FAILED
        if done != STARTED:
            with contextlib.suppress(OSError):
                path.unlink()
        return done


class SpawnElevation:
    """SPOTLIGHT_ELEVATION=spawn: the customer says Yes and the same program starts again,
    without new rights (Linux, source runs, tests): the hand-off path without Windows."""

    def available(self) -> bool:
        return True

    def confirm(self, person: str) -> bool:
        return True

    def start(self, secret: str, args: list[str]) -> str:
        path = write_secret(secret, _private_file_posix)
        try:
            subprocess.Popen([*program(), *args, "--handoff-file", str(path)],
                             stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            log.warning("could not start the copy: %r", e)
            with contextlib.suppress(OSError):
                path.unlink()
            return FAILED
        return STARTED


class DecliningElevation:
    """SPOTLIGHT_ELEVATION=decline: the customer clicks No (when asked, and on the prompt)."""

    def available(self) -> bool:
        return True

    def confirm(self, person: str) -> bool:
        return False

    def start(self, secret: str, args: list[str]) -> str:
        return DECLINED


class NoElevation:
    """Nothing to elevate to (Linux): the request fails politely."""

    def available(self) -> bool:
        return False

    def confirm(self, person: str) -> bool:
        return False

    def start(self, secret: str, args: list[str]) -> str:
        return FAILED


def make_elevation() -> Elevation:
    choice = os.environ.get("SPOTLIGHT_ELEVATION") or ("win32" if sys.platform == "win32"
                                                        else "none")
    return {"win32": Win32Elevation, "spawn": SpawnElevation,
            "decline": DecliningElevation}.get(choice, NoElevation)()


# --- the secret's file --------------------------------------------------------------------


def write_secret(secret: str, create=None) -> Path:
    """A new file in the temp folder holding ``secret``, readable by the user and
    administrators only; the caller passes its path (not the secret) to the new copy."""
    if not _SECRET.fullmatch(secret):
        raise ValueError("not a hand-off secret")
    create = create or (_private_file_win32 if sys.platform == "win32" else _private_file_posix)
    return create(secret.encode("ascii"))


def _private_file_posix(data: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix=HANDOFF_PREFIX)  # O_EXCL, mode 0600
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def _private_file_win32(data: bytes) -> Path:
    """CreateFileW with CREATE_NEW and an explicit, protected DACL (not the folder's)."""
    import ctypes
    import secrets
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    class SecurityAttributes(ctypes.Structure):
        _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", ctypes.c_void_p),
                    ("bInheritHandle", wintypes.BOOL)]

    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            HANDOFF_FILE_SDDL, 1, ctypes.byref(descriptor), None):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        attributes = SecurityAttributes(ctypes.sizeof(SecurityAttributes), descriptor, False)
        path = Path(tempfile.gettempdir()) / f"{HANDOFF_PREFIX}{secrets.token_hex(8)}"
        kernel32.CreateFileW.restype = wintypes.HANDLE
        kernel32.CreateFileW.argtypes = (wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD,
                                         ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD,
                                         wintypes.HANDLE)
        # GENERIC_WRITE, no sharing, CREATE_NEW, FILE_ATTRIBUTE_TEMPORARY
        handle = kernel32.CreateFileW(str(path), 0x40000000, 0, ctypes.byref(attributes), 1,
                                      0x100, None)
        if handle in (None, wintypes.HANDLE(-1).value):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            written = wintypes.DWORD(0)
            if not kernel32.WriteFile(wintypes.HANDLE(handle), data, len(data),
                                      ctypes.byref(written), None):
                raise ctypes.WinError(ctypes.get_last_error())
        finally:
            kernel32.CloseHandle(wintypes.HANDLE(handle))
        return path
    finally:
        kernel32.LocalFree(descriptor)


def read_secret(path: Path) -> str:
    """The secret in the hand-off file, which is removed at once (read or not)."""
    try:
        data = path.read_bytes()[:200]
    except OSError as e:
        raise HandoffError(f"the hand-off file cannot be read: {e.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    secret = data.decode("ascii", "replace").strip()
    if not _SECRET.fullmatch(secret):
        raise HandoffError("the hand-off file does not hold a secret")
    return secret


def _shell_execute_runas(command: list[str], args: list[str]) -> str:
    import ctypes
    from ctypes import wintypes

    class ShellExecuteInfo(ctypes.Structure):
        _fields_ = [("cbSize", wintypes.DWORD), ("fMask", ctypes.c_ulong),
                    ("hwnd", wintypes.HWND), ("lpVerb", wintypes.LPCWSTR),
                    ("lpFile", wintypes.LPCWSTR), ("lpParameters", wintypes.LPCWSTR),
                    ("lpDirectory", wintypes.LPCWSTR), ("nShow", ctypes.c_int),
                    ("hInstApp", wintypes.HINSTANCE), ("lpIDList", ctypes.c_void_p),
                    ("lpClass", wintypes.LPCWSTR), ("hkeyClass", wintypes.HKEY),
                    ("dwHotKey", wintypes.DWORD), ("hIcon", wintypes.HANDLE),
                    ("hProcess", wintypes.HANDLE)]

    shell32 = ctypes.WinDLL("shell32", use_last_error=True)
    info = ShellExecuteInfo()
    info.cbSize = ctypes.sizeof(info)
    info.fMask = 0x00000040 | 0x00000400  # SEE_MASK_NOCLOSEPROCESS | SEE_MASK_FLAG_NO_UI
    info.lpVerb, info.lpFile = "runas", command[0]
    info.lpParameters = subprocess.list2cmdline([*command[1:], *args])
    info.nShow = 1  # SW_SHOWNORMAL
    if shell32.ShellExecuteExW(ctypes.byref(info)):
        if info.hProcess:
            ctypes.windll.kernel32.CloseHandle(info.hProcess)
        return STARTED
    error = ctypes.get_last_error()
    if error == ERROR_CANCELLED:
        return DECLINED
    log.warning("ShellExecuteExW runas failed: error %d", error)
    return FAILED
