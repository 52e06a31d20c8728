"""Does the built exe run Per-Monitor DPI v2 aware? (packaging/windows-ci.ps1 dpi)

    python packaging/dpi_check.py --exe dist\\SpotlightSupport.exe

Starts the exe against a relay address where nothing listens (it shows its panel with the
error and waits for the customer), asks Windows for that process's DPI awareness context and
ends it. Exit 0 when the context is Per-Monitor v2 (capture and input then both work in
physical pixels on every monitor; tests/test_dpi_mapping.py shows they agree), 1 otherwise.
Windows only (Windows 10 1803 or later: GetDpiAwarenessContextForProcess).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import time
from ctypes import wintypes

PER_MONITOR_AWARE_V2 = -4  # DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
START_S = 20.0  # the one-file exe unpacks itself first


def awareness_of(pid: int) -> bool | None:
    """True if process ``pid`` is Per-Monitor v2 aware; None while it has no context yet."""
    user32 = ctypes.WinDLL("user32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    user32.GetDpiAwarenessContextForProcess.restype = ctypes.c_void_p
    user32.GetDpiAwarenessContextForProcess.argtypes = (wintypes.HANDLE,)
    user32.AreDpiAwarenessContextsEqual.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return None
    try:
        context = user32.GetDpiAwarenessContextForProcess(handle)
        if not context:
            return None
        return bool(user32.AreDpiAwarenessContextsEqual(
            context, ctypes.c_void_p(PER_MONITOR_AWARE_V2)))
    finally:
        kernel32.CloseHandle(handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", required=True)
    args = parser.parse_args()
    if sys.platform != "win32":
        print("dpi_check: Windows only", file=sys.stderr)
        return 2
    # The one-file exe's bootloader starts the real program as a child: check them all.
    exe = subprocess.Popen([args.exe, "--relay", "ws://127.0.0.1:9", "--technician", "david"])
    try:
        deadline, aware = time.monotonic() + START_S, {}
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["powershell", "-NoProfile", "-Command", "(Get-CimInstance Win32_Process "
                 f"-Filter \"ParentProcessId={exe.pid}\").ProcessId"],
                capture_output=True, text=True, timeout=60).stdout.split()
            aware = {pid: awareness_of(pid) for pid in (exe.pid, *map(int, found))}
            if found and aware[int(found[-1])] is not None:
                break  # the program itself (the bootloader's child) is up
            time.sleep(0.5)
        print("Per-Monitor v2 aware, by process:", aware)
        return 0 if aware and list(aware.values())[-1] else 1
    finally:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(exe.pid)], capture_output=True)
        exe.wait(timeout=30)

if __name__ == "__main__":
    sys.exit(main())
