"""The Windows exe under Wine, for the tests that run it (tests/test_wine*.py): its build by
packaging/build-windows.sh, a clean Wine prefix of the caller's, Wine commands run the one
way Wine's Python survives, the exe started and stopped, and its processes in a prefix.

Each module names its own prefix under CACHE: a prefix is ~700 MB and is recreated by the
module that uses it, so the exe is always shown to need nothing installed in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.desktop import Output

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SPOTLIGHT_WINE_CACHE") or ROOT / ".cache" / "wine")
EXE = ROOT / "dist" / "windows" / "SpotlightSupport.exe"


def windows_path(path: Path) -> str:
    """The path as a Windows program under Wine sees it (Wine maps / to Z:)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def wine_env(prefix: Path, display: str) -> dict[str, str]:
    """This process's environment for Wine in ``prefix`` on ``display``. Without the host's
    PIP_* and PYTHON* (Linux paths that break the Windows Python) and SPOTLIGHT_* (the
    exe would pick up fakes and folders meant for the agent run from source): a test adds
    what it means to the copy."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "SPOTLIGHT_"))}
    return {**env, "WINEPREFIX": str(prefix), "WINEARCH": "win64", "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": display}


def wine(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    """Run a Wine command to its end; its output. Output goes to a pipe and stdin stays
    open: Wine's Python dies on a file handle or a closed stdin."""
    result = subprocess.run(list(args), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}"
    return result.stdout


def stop_wine(env: dict[str, str]) -> None:
    """End every Wine process of the prefix (a windowed exe's child outlives a killed
    `wine` launcher)."""
    subprocess.run(["wineserver", "-k"], env=env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60)


def build_windows_exe() -> Path:
    """The exe, built by packaging/build-windows.sh with the cached toolchain."""
    result = subprocess.run(["bash", str(ROOT / "packaging" / "build-windows.sh")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return EXE


def boot_prefix(env: dict[str, str], attempts: int = 2) -> None:
    """``wineboot --init`` of a new prefix, made anew once if that fails. Wine 8 creating
    a prefix has failed once in a CI run with "failed to open
    C:\\windows\\syswow64\\rundll32.exe: c0000135" (a DLL not found in its own half-made
    prefix) and passed on the next try: a flake of Wine's set-up, not of the exe under test."""
    prefix = Path(env["WINEPREFIX"])
    for attempt in range(1, attempts + 1):
        try:
            wine(env, "wineboot", "--init")
            return
        except AssertionError:
            if attempt == attempts:
                raise
            stop_wine(env)
            shutil.rmtree(prefix, ignore_errors=True)


def init_prefix(env: dict[str, str]) -> None:
    """Make the Wine prefix of ``env`` (wine_env) ready for the Windows Python and the exe."""
    boot_prefix(env)
    # Wine 8 says it is Windows 7 by default; the exe's Python 3.13 wants 8.1 or later.
    wine(env, "wine", "reg", "add", "HKCU\\Software\\Wine", "/v", "Version", "/d", "win10", "/f")
    wine(env, "wine", "reg", "add", "HKCU\\Software\\Wine\\WineDbg", "/v", "ShowCrashDialog",
         "/t", "REG_DWORD", "/d", "0", "/f")
    wine(env, "wineserver", "-w")


@contextlib.contextmanager
def clean_prefix(prefix: Path, display: str, *, remove_after: bool = False
                 ) -> Iterator[dict[str, str]]:
    """A Wine prefix made anew at ``prefix``: its environment. Its Wine processes are ended
    afterwards, and the prefix removed too with ``remove_after``."""
    env = wine_env(prefix, display)
    shutil.rmtree(prefix, ignore_errors=True)
    init_prefix(env)
    try:
        yield env
    finally:
        stop_wine(env)
        if remove_after:
            shutil.rmtree(prefix, ignore_errors=True)


@contextlib.contextmanager
def running_exe(env: dict[str, str], cwd: Path, *args: str, exe: Path = EXE
                ) -> Iterator[tuple[subprocess.Popen, Output]]:
    """The exe started with ``args`` (its output piped, stdin open) and its output; on the
    way out, whatever of it still runs in the prefix is ended."""
    process = subprocess.Popen(["wine", str(exe), *args], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        yield process, output
    finally:
        if process.poll() is None:
            process.kill()
        stop_wine(env)
        process.wait(timeout=30)
        output.wait()


def exe_processes(prefix: Path) -> list[int]:
    """Processes running SpotlightSupport.exe in the Wine prefix ``prefix``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"SpotlightSupport.exe" in cmdline and \
                f"WINEPREFIX={prefix}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
