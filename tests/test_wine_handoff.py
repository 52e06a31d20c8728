"""The Windows exe under Wine: the administrator prompt, simulated through the desktop
watch's interface (SPOTLIGHT_DESKTOP=fake:PATH), and the restart as administrator end to end:
the support person asks, the customer's Yes in the exe's own question, ShellExecuteExW
"runas" (Wine 8 starts the process without a UAC prompt), the hand-off file, and the elevated
copy taking the live session over while the viewer stays attached.

Its own Wine prefix (tests/test_wine.py recreates its run prefix; each prefix is ~700 MB, so
this one is removed at the end). The exe is the one packaging/build-windows.sh builds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol as p
from tests.helpers.desktop import Output, require_tools, until
from tests.helpers.viewer import ScriptedViewer

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SPOTLIGHT_WINE_CACHE") or ROOT / ".cache" / "wine")
PREFIX = CACHE / "handoff-prefix"
EXE = ROOT / "dist" / "windows" / "SpotlightSupport.exe"
WAIT_S = 120

pytestmark = [pytest.mark.wine, pytest.mark.build, pytest.mark.x11]


def windows_path(path: Path) -> str:
    """The path as a Windows program under Wine sees it (Wine maps / to Z:)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def wine_env(display: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "SPOTLIGHT_"))}
    return {**env, "WINEPREFIX": str(PREFIX), "WINEARCH": "win64", "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": display}


def wine(env: dict[str, str], *args: str, timeout: float = 180) -> None:
    """A Wine command to its end; output to a pipe (never a file), stdin open."""
    result = subprocess.run(list(args), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}"


def copies_running() -> list[int]:
    """Processes running SpotlightSupport.exe in this module's prefix."""
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
                f"WINEPREFIX={PREFIX}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def windows_copies() -> list[bytes]:
    """The command lines of the exe's Windows processes (a drive letter first), not of the
    `wine` commands that started them: Wine's launcher lives on while any process it
    started (the elevated copy included, through ShellExecute) still runs."""
    lines = []
    for pid in copies_running():
        try:
            line = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if line[1:3] == b":\\":
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def built_exe() -> Path:
    require_tools("wine", "wineserver", "wineboot", "xdotool")
    result = subprocess.run(["bash", str(ROOT / "packaging" / "build-windows.sh")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return EXE


@pytest.fixture(scope="module")
def env(xvfb, built_exe) -> Iterator[dict[str, str]]:
    """A clean prefix of this module's own (removed afterwards: ~700 MB)."""
    environment = wine_env(xvfb.name)
    shutil.rmtree(PREFIX, ignore_errors=True)
    wine(environment, "wineboot", "--init")
    wine(environment, "wine", "reg", "add", "HKCU\\Software\\Wine", "/v", "Version", "/d",
         "win10", "/f")
    wine(environment, "wine", "reg", "add", "HKCU\\Software\\Wine\\WineDbg", "/v",
         "ShowCrashDialog", "/t", "REG_DWORD", "/d", "0", "/f")
    wine(environment, "wineserver", "-w")
    yield environment
    subprocess.run(["wineserver", "-k"], env=environment, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60)
    shutil.rmtree(PREFIX, ignore_errors=True)


@pytest.mark.timeout(1800)
def test_exe_under_wine_reports_the_prompt_and_hands_the_session_to_its_elevated_copy(
        env, relay, tmp_path):
    """Under Wine: the simulated prompt reaches the viewer and blocks input; then the support
    person asks, the customer clicks Yes, the elevated copy takes over the same session (the
    viewer keeps it and gets frames from the new copy), the first exe exits 0, the hand-off
    file is gone, and ending the session ends the copy."""
    flag = tmp_path / "prompt"
    run_env = {**env, "SPOTLIGHT_DESKTOP": f"fake:{windows_path(tmp_path)}\\prompt"}
    exe = subprocess.Popen(
        ["wine", str(EXE), "--relay", relay.ws_url, "--technician", "david"], cwd=tmp_path,
        env=run_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    output = Output(exe)
    try:
        asyncio.run(asyncio.wait_for(_drive(relay, exe, output, flag), 900))
        assert until_sync(lambda: not copies_running()), windows_copies()
    finally:
        if exe.poll() is None:
            exe.kill()
        subprocess.run(["wineserver", "-k"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
        exe.wait(timeout=30)
        output.wait()


def until_sync(condition, timeout: float = 60) -> bool:
    return asyncio.run(until(condition, timeout))


async def _drive(relay, exe: subprocess.Popen, output: Output, flag: Path) -> None:
    async with await ScriptedViewer.login(relay, "david", "david-pw") as viewer:
        pending = await viewer.wait_for_pending(timeout=WAIT_S)
        await viewer.accept(pending.session)
        await viewer.take_control()
        await viewer.expect(p.Frame, timeout=WAIT_S)
        session = viewer.session

        # The administrator prompt, through the desktop watch's interface.
        flag.touch()
        await viewer.expect(p.Desktop, lambda m: m.secure, timeout=WAIT_S)
        await viewer.type_keys(("KeyA", "a"))
        refusal = await viewer.expect(p.Error)
        assert refusal.code == "secure-desktop", output.text()
        flag.unlink()
        await viewer.expect(p.Desktop, lambda m: not m.secure, timeout=WAIT_S)

        # Restart as administrator: the support person asks, the customer says Yes.
        await viewer.send(p.Elevate(session))
        await viewer.expect(p.Elevation, lambda m: m.state == "asked")
        question = await asyncio.to_thread(
            subprocess.run, ["xdotool", "search", "--sync", "--onlyvisible", "--name",
                             "Restart as administrator"],
            capture_output=True, text=True, timeout=WAIT_S)
        window = question.stdout.split()[0]
        await asyncio.to_thread(subprocess.run, ["xdotool", "windowactivate", "--sync",
                                                 window], capture_output=True, timeout=30)
        await asyncio.to_thread(subprocess.run, ["xdotool", "key", "--window", window,
                                                 "Return"], check=True, timeout=30)
        await viewer.expect(p.Elevation, lambda m: m.state == "started", timeout=WAIT_S)

        # The first copy has gone; the elevated one holds the same session.
        def only_the_copy() -> bool:
            lines = windows_copies()
            return len(lines) == 1 and b"--handoff-file" in lines[0]

        assert await until(only_the_copy, WAIT_S), (output.text(), windows_copies())
        assert "exit 0 The session goes on in the program running as administrator." in \
            output.text()
        args = windows_copies()[0].decode(errors="replace").split("\0")
        handoff_file = args[args.index("--handoff-file") + 1]
        assert "spotlight-handoff-" in handoff_file
        drive, _, rest = handoff_file.partition(":\\")
        assert drive.upper() == "C", handoff_file  # the user's own temp folder
        assert not (PREFIX / "drive_c" / rest.replace("\\", "/")).exists()  # read, removed
        await viewer.send(p.Refresh(session, 0))
        await viewer.expect(p.Frame, timeout=WAIT_S)
        await viewer.send(p.End(session, "done"))
        ended = await viewer.expect(p.Ended)
        assert (ended.session, ended.by) == (session, "technician")
        assert await until(lambda: exe.poll() is not None, WAIT_S), windows_copies()
        assert exe.returncode == 0, output.text()  # the first copy's exit code
