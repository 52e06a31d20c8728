"""The Windows exe, built under Wine by packaging/build-windows.sh, run under Wine on Xvfb.

The exe runs in its own clean Wine prefix (nothing installed in it) against the Linux relay.
Keys typed by the support person are checked in a Windows console program in the same
prefix (Wine hands a Windows program's SendInput keys to Wine windows, not to native X
programs): the build's Windows python.exe, in wineconsole, writing each line it reads to a
file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PyInstaller.archive.readers import CArchiveReader
from test_build_linux import (
    BACKGROUND_NAME,
    Output,
    ScriptedViewer,
    assert_background,
    pointer_location,
    require_tools,
    wait_for_file,
    wait_for_screen,
    window_geometry,
)

import protocol as p

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SPOTLIGHT_WINE_CACHE") or ROOT / ".cache" / "wine")
RUN_PREFIX = CACHE / "run-prefix"  # recreated by every run: the exe must need nothing in it
WINDOWS_PYTHON = CACHE / "python" / "python.exe"
EXE = ROOT / "dist" / "windows" / "SpotlightSupport.exe"
READER = """\
import sys
with open(sys.argv[1], "w", encoding="utf-8", newline="\\n") as out:
    out.write("ready\\n")
    out.flush()
    for line in sys.stdin:
        out.write(line)
        out.flush()
"""

pytestmark = [pytest.mark.wine, pytest.mark.build, pytest.mark.x11]


def windows_path(path: Path) -> str:
    """The path as a Windows program under Wine sees it (Wine maps / to Z:)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def wine_env(display: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    return {**env, "WINEPREFIX": str(RUN_PREFIX), "WINEARCH": "win64", "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": display}


def wine(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run a Wine command to its end. Output goes to a pipe (never a file), stdin is open."""
    result = subprocess.run(list(args), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}"
    return result.stdout


def build_windows_exe() -> None:
    result = subprocess.run(["bash", str(ROOT / "packaging" / "build-windows.sh")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert EXE.is_file()


def make_run_prefix(env: dict[str, str]) -> None:
    shutil.rmtree(RUN_PREFIX, ignore_errors=True)
    wine(env, "wineboot", "--init")
    # Wine 8 says it is Windows 7 by default; the exe's Python 3.13 wants 8.1 or later.
    wine(env, "wine", "reg", "add", "HKCU\\Software\\Wine", "/v", "Version", "/d", "win10", "/f")
    wine(env, "wine", "reg", "add", "HKCU\\Software\\Wine\\WineDbg", "/v", "ShowCrashDialog",
         "/t", "REG_DWORD", "/d", "0", "/f")
    wine(env, "wineserver", "-w")


def exe_processes() -> list[int]:
    """Processes running SpotlightSupport.exe in the run prefix."""
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
                f"WINEPREFIX={RUN_PREFIX}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


VERSION_PROBE = """\
import json, sys, pefile
pe = pefile.PE(sys.argv[1])
strings = {}
for info in getattr(pe, "FileInfo", []):
    for entry in info:
        for table in getattr(entry, "StringTable", []):
            strings.update({k.decode(): v.decode() for k, v in table.entries.items()})
icon = pefile.RESOURCE_TYPE["RT_GROUP_ICON"]
groups = [e for e in pe.DIRECTORY_ENTRY_RESOURCE.entries if e.id == icon]
print(json.dumps({"strings": strings, "icon_groups": len(groups),
                  "gui": pe.OPTIONAL_HEADER.Subsystem == 2}))
"""


@pytest.fixture(scope="module")
def wine_run_env(xvfb) -> Iterator[dict[str, str]]:
    """Builds the exe (cached toolchain) and makes a clean run prefix; the Wine environment."""
    require_tools("wine", "wineserver", "wineboot", "xdotool", "xsetroot")
    build_windows_exe()
    env = wine_env(xvfb.name)
    make_run_prefix(env)
    yield env
    subprocess.run(["wineserver", "-k"], env=env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60)


@pytest.mark.timeout(1800)  # a build from nothing (prefix, Python, packages) takes minutes
def test_windows_exe_under_wine_connects_streams_takes_input_and_ends(
        wine_run_env, relay, tmp_path, capsys):
    """The Wine-built exe is accepted, streams the screen, types and clicks, and exits on end."""
    env = wine_run_env
    subprocess.run(["xsetroot", "-solid", BACKGROUND_NAME], check=True, timeout=10)

    reader, typed = tmp_path / "reader.py", tmp_path / "typed.txt"
    reader.write_text(READER, encoding="utf-8")
    console = subprocess.Popen(
        ["wine", "wineconsole", windows_path(WINDOWS_PYTHON), windows_path(reader),
         windows_path(typed)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    console_output = Output(console)
    exe = None
    try:
        assert wait_for_file(typed, "ready", timeout=60) == "ready\n", console_output.text()
        window = subprocess.run(
            ["xdotool", "search", "--sync", "--onlyvisible", "--name", r"python\.exe"],
            capture_output=True, text=True, timeout=30).stdout.split()[0]
        started = time.monotonic()
        exe = subprocess.Popen(
            ["wine", str(EXE), "--relay", relay.ws_url, "--technician", "david"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        output = Output(exe)
        connected_s = asyncio.run(_drive_exe(relay, exe, output, started, window, typed))
        assert exe.wait(timeout=30) == 0, output.text()
        assert exe_processes() == [], output.text()
    finally:
        if exe is not None and exe.poll() is None:
            exe.kill()
        subprocess.run(["wineserver", "-k"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
        for process in (exe, console):
            if process is not None:
                process.wait(timeout=30)
        console_output.wait()
        if exe is not None:
            output.wait()

    with capsys.disabled():
        print(f"\nSpotlightSupport.exe: {EXE.stat().st_size / 1e6:.1f} MB; "
              f"launch to connected under Wine: {connected_s:.1f} s")


async def _drive_exe(relay, exe: subprocess.Popen, output: Output, started: float,
                     window: str, typed: Path) -> float:
    viewer = await ScriptedViewer.login(relay, "david", "david-pw")
    try:
        pending = await viewer.wait_for_pending(timeout=90)
        connected_s = time.monotonic() - started
        assert pending.user and pending.machine, pending
        await viewer.accept(pending.session)

        await wait_for_screen(viewer, timeout=90)
        height = viewer.screens[viewer.monitor].height
        assert_background(viewer, 8, height - 8)

        x, y, width, height = window_geometry(window)
        centre = (x + width // 2, y + height // 2)
        await viewer.click(*centre)
        assert pointer_location() == centre, output.text()
        await viewer.type_keys(("KeyH", "h"), ("KeyI", "i"), ("Enter", "Enter"))
        assert wait_for_file(typed, "hi\n") == "ready\nhi\n", output.text()

        await viewer.send(p.End(viewer.session, "done"))
        ended = await viewer.expect(p.Ended, lambda m: m.session == viewer.session)
        assert ended.by == "technician", ended
        return connected_s
    finally:
        await viewer.close()


@pytest.mark.timeout(1800)
def test_windows_exe_is_windowed_with_icon_version_and_baked_configuration(
        wine_run_env, tmp_path):
    """The exe is a GUI program with an icon, version information and support.json inside."""
    probe = tmp_path / "probe.py"
    probe.write_text(VERSION_PROBE, encoding="utf-8")
    output = wine(wine_run_env, "wine", windows_path(WINDOWS_PYTHON), windows_path(probe),
                  windows_path(EXE))
    facts = json.loads(output.strip().splitlines()[-1])
    config = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert facts["gui"] and facts["icon_groups"] >= 1, facts
    assert facts["strings"]["CompanyName"] == config["company"]
    assert facts["strings"]["ProductName"] == "Spotlight Remote Support"
    assert facts["strings"]["ProductVersion"] == version["project"]["version"]

    archive = CArchiveReader(str(EXE))
    assert json.loads(archive.extract("support.json")) == config
    assert {"icons\\tray-pending.png", "icons\\tray-active.png"} <= set(archive.toc)
