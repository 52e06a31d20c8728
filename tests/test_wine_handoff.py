"""The Windows exe under Wine: the administrator prompt, simulated through the desktop
watch's interface (SPOTLIGHT_DESKTOP=fake:PATH), and the restart as administrator end to end:
the support person asks, the customer's Yes in the exe's own question, ShellExecuteExW
"runas" (Wine 8 starts the process without a UAC prompt), the hand-off file, and the elevated
copy taking the live session over while the viewer stays attached. Also the Win32 panel's
chat both ways (the exe's panel is the Win32 one, which no X11 test runs).

Its own Wine prefix (tests/test_wine.py recreates its run prefix; each prefix is ~700 MB, so
this one is removed at the end). The exe is the one packaging/build-windows.sh builds.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol as p
from tests.helpers.desktop import Output, find_window, grab_screen, require_tools, until
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wine import (
    CACHE,
    ROOT,
    build_windows_exe,
    clean_prefix,
    exe_processes,
    running_exe,
    windows_path,
)

PREFIX = CACHE / "handoff-prefix"
SHOTS = ROOT / "test-artifacts" / "panel"
WAIT_S = 120

pytestmark = [pytest.mark.wine, pytest.mark.build, pytest.mark.x11]


def windows_copies() -> list[bytes]:
    """The command lines of the exe's Windows processes (a drive letter first), not of the
    `wine` commands that started them: Wine's launcher lives on while any process it
    started (the elevated copy included, through ShellExecute) still runs."""
    lines = []
    for pid in exe_processes(PREFIX):
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
    return build_windows_exe()


@pytest.fixture(scope="module")
def env(xvfb, built_exe) -> Iterator[dict[str, str]]:
    """A clean prefix of this module's own (removed afterwards: ~700 MB)."""
    with clean_prefix(PREFIX, xvfb.name, remove_after=True) as environment:
        yield environment


@pytest.mark.timeout(1800)
def test_exe_under_wine_reports_the_prompt_and_hands_the_session_to_its_elevated_copy(
        env, relay, tmp_path):
    """Under Wine: the simulated prompt reaches the viewer and blocks input; then the support
    person asks, the customer clicks Yes, the elevated copy takes over the same session (the
    viewer keeps it and gets frames from the new copy), the first exe exits 0, the hand-off
    file is gone, and ending the session ends the copy."""
    flag = tmp_path / "prompt"
    run_env = {**env, "SPOTLIGHT_DESKTOP": f"fake:{windows_path(tmp_path)}\\prompt"}
    with running_exe(run_env, tmp_path, "--relay", relay.ws_url, "--technician", "david"
                     ) as (exe, output):
        asyncio.run(asyncio.wait_for(_drive(relay, exe, output, flag), 900))
        assert until_sync(lambda: not exe_processes(PREFIX)), windows_copies()


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
        window = await asyncio.to_thread(find_window, "Restart as administrator",
                                         visible=True, timeout=WAIT_S)
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


@pytest.mark.timeout(900)
def test_exe_under_wine_chats_both_ways_in_its_win32_panel(env, relay, tmp_path):
    """Under Wine: the support person's line shows in the Win32 panel's chat (as text), and a
    line the customer types there and sends with Enter reaches the viewer as typed.
    Screenshots in test-artifacts/panel/exe-chat-*.png."""
    with running_exe(env, tmp_path, "--relay", relay.ws_url, "--technician", "david"
                     ) as (exe, output):
        asyncio.run(asyncio.wait_for(_chat(relay, output), 600))
        assert until_sync(lambda: exe.poll() is not None), windows_copies()
        assert exe.returncode == 0, output.text()


async def _chat(relay, output: Output) -> None:
    async def run(*args: str) -> str:
        done = await asyncio.to_thread(subprocess.run, list(args), capture_output=True,
                                       text=True, timeout=WAIT_S, check=True)
        return done.stdout

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with await ScriptedViewer.login(relay, "david", "david-pw") as viewer:
        pending = await viewer.wait_for_pending(timeout=WAIT_S)
        await viewer.accept(pending.session)
        await viewer.expect(p.Frame, timeout=WAIT_S)
        await viewer.send(p.Chat(viewer.session, "Hello <b>from</b> David"))
        # The title is set last, so a panel found by it is laid out (chat area included).
        window = await asyncio.to_thread(find_window, "can see your screen", visible=True,
                                         timeout=WAIT_S)
        geometry = dict(line.strip().split(": ", 1) for line in
                        (await run("xdotool", "getwindowgeometry", window)).splitlines()[1:])
        left, top = map(int, geometry["Position"].split(" ")[0].split(","))
        height = int(geometry["Geometry"].split("x")[1])
        # The chat's input is the panel's last row, at its left (panel_chat.Win32Chat.layout).
        await run("xdotool", "mousemove", str(left + 60), str(top + height - 27), "click", "1")
        await run("xdotool", "type", "--delay", "40", "thanks <i>a lot</i>")
        await run("xdotool", "key", "Return")
        line = await viewer.expect(p.Chat, timeout=WAIT_S)
        assert line.text == "thanks <i>a lot</i>", output.text()
        grab_screen(p.Screen(left, top, int(geometry["Geometry"].split("x")[0]), height)) \
            .save(SHOTS / "exe-chat-panel.png")
        await viewer.send(p.End(viewer.session, "done"))
        await viewer.expect(p.Ended)
