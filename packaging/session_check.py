"""One real support session on this machine: relay, agent and the test suite's scripted viewer.

    python packaging/session_check.py --exe dist\\SpotlightSupport.exe [--out DIR]
    python packaging/session_check.py --source [--out DIR]     (agent.py; Windows or X11)

What .github/workflows/windows-exe.yml runs on windows-latest, and what anyone can run by hand
on a Windows machine (or on Linux/X11, where tests/test_session_check.py runs it against
agent.py on Xvfb). It needs the project installed with its agent, relay and dev extras
(`pip install -e .[agent,relay,dev]`): the relay is this repository's and the viewer is
tests/helpers/viewer.py's ScriptedViewer. Each step prints what it proved; the first
failure stops it with exit code 1.

1. a relay on 127.0.0.1 (a fresh data folder) with one support person;
2. a receiver window that writes the line typed into it to a file: a console window running
   PowerShell on Windows, an xterm running cat on X11;
3. the agent for that support person; the viewer accepts it and takes control;
4. the updates the viewer drew match a screenshot taken now (both saved in --out);
5. a click sent to the receiver's window moves the pointer there (and focuses it);
6. "hi" and Enter typed through the viewer arrive in the receiver's file;
7. the customer's Close ends the session (the tray icon's menu on Windows, clicked by
   packaging/close_from_tray.py; SIGTERM on X11, which takes the same path in the agent), the
   viewer is told it was the customer, the ledger records it so, and the agent exits with 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "packaging")]

import pytest  # noqa: E402 (the scripted viewer reports a failure through pytest.fail)

import protocol as p  # noqa: E402
from tests.helpers.desktop import (  # noqa: E402
    Output,
    grab_screen,
    until,
    wait_for_file,
    wait_for_screen,
)
from tests.helpers.relay import RelayProcess  # noqa: E402
from tests.helpers.relay import ledger_csv as ledger_rows  # noqa: E402
from tests.helpers.viewer import ScriptedViewer  # noqa: E402

WINDOWS = sys.platform == "win32"
TECHNICIAN, PASSWORD = "ci", "ci-session-check"
RECEIVER_TITLE = "spotlight-session-check-receiver"


class CheckFailed(Exception):
    """A step did not do what it should."""


def step(message: str) -> None:
    print(f"ok: {message}", flush=True)


# --- the receiver: a window that writes what is typed into it to a file --------------------


class Receiver:
    """A window that writes "ready", then the line typed into it, to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process = self._start()
        if "ready" not in wait_for_file(path, "ready", timeout=60):
            raise CheckFailed("the receiver window did not start")

    def _start(self) -> subprocess.Popen:
        raise NotImplementedError

    def click_point(self) -> tuple[int, int]:
        """Desktop coordinates where a click focuses the receiver's window."""
        raise NotImplementedError

    def lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8-sig", errors="replace").splitlines()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)


class PowerShellReceiver(Receiver):
    """Windows: PowerShell in a new console window; the window placed inside the screen."""

    def _start(self) -> subprocess.Popen:
        file = str(self.path).replace("'", "''")
        script = (f"$Host.UI.RawUI.WindowTitle = '{RECEIVER_TITLE}'; "
                  f"Set-Content -LiteralPath '{file}' -Value 'ready'; "
                  f"$line = Read-Host; Add-Content -LiteralPath '{file}' -Value $line")
        return subprocess.Popen(
            ["powershell.exe", "-NoLogo", "-NoProfile", "-Command", script],
            creationflags=subprocess.CREATE_NEW_CONSOLE, stdin=subprocess.DEVNULL)

    def click_point(self) -> tuple[int, int]:
        """The middle of the title bar: a click in the text would start the console's
        QuickEdit selection, which swallows the next key."""
        import ctypes
        from ctypes import wintypes

        user32 = ctypes.windll.user32
        deadline = time.monotonic() + 30
        while not (window := user32.FindWindowW(None, RECEIVER_TITLE)):
            if time.monotonic() > deadline:
                raise CheckFailed(f"no window titled {RECEIVER_TITLE!r}")
            time.sleep(0.2)
        # A new console may reach past the edge of a small screen: put it where a click lands.
        user32.MoveWindow(window, 100, 100, 640, 320, True)
        rect, client = wintypes.RECT(), wintypes.POINT(0, 0)
        user32.GetWindowRect(window, ctypes.byref(rect))
        user32.ClientToScreen(window, ctypes.byref(client))
        return (rect.left + rect.right) // 2, (rect.top + client.y) // 2


class XtermReceiver(Receiver):
    """X11: an xterm running cat."""

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            ["xterm", "-T", RECEIVER_TITLE, "-geometry", "40x8+400+300", "-e", "sh", "-c",
             'echo ready > "$0"; exec cat >> "$0"', str(self.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def click_point(self) -> tuple[int, int]:
        """The middle of the xterm (no window manager: the focus follows the pointer)."""
        from tests.helpers.desktop import window_geometry

        found = subprocess.run(["xdotool", "search", "--sync", "--name", RECEIVER_TITLE],
                               capture_output=True, text=True, timeout=30).stdout.split()
        if not found:
            raise CheckFailed(f"no window titled {RECEIVER_TITLE!r}")
        x, y, width, height = window_geometry(found[0])
        return x + width // 2, y + height // 2


def pointer_location() -> tuple[int, int]:
    if not WINDOWS:
        from tests.helpers.desktop import pointer_location as x11_pointer

        return x11_pointer()
    import ctypes
    from ctypes import wintypes

    point = wintypes.POINT()
    ctypes.windll.user32.GetCursorPos(ctypes.byref(point))
    return point.x, point.y


def set_dpi_aware() -> None:
    """Windows: physical pixels, like the agent, so window rectangles and clicks agree."""
    if WINDOWS:
        import ctypes

        if not ctypes.windll.user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(-4)):
            ctypes.windll.user32.SetProcessDPIAware()


# --- the session -----------------------------------------------------------------------------


def close_as_customer(agent: subprocess.Popen) -> None:
    if WINDOWS:
        from close_from_tray import TrayError, close_from_tray

        try:
            step(close_from_tray())
        except TrayError as error:
            raise CheckFailed(str(error)) from None
    else:
        agent.send_signal(signal.SIGTERM)  # agent.py: the same path as Close in the tray menu


async def drive(relay: RelayProcess, agent: subprocess.Popen, receiver: Receiver,
                started: float, out: Path) -> None:
    viewer = await ScriptedViewer.login(relay, TECHNICIAN, PASSWORD)
    try:
        pending = await viewer.wait_for_pending(timeout=90)
        step(f"the agent is waiting ({pending.user} on {pending.machine}), "
             f"{time.monotonic() - started:.1f} s after launch")
        await viewer.accept(pending.session)
        await viewer.take_control()
        step(f"accepted and in control; screens {viewer.screens}")

        difference = await wait_for_screen(viewer, timeout=90)
        assert viewer.canvas is not None
        viewer.canvas.save(out / "drawn.png")
        grab_screen(viewer.screens[viewer.monitor]).save(out / "screenshot.png")
        step(f"the {viewer.updates} updates drawn match a screenshot (mean difference "
             f"{difference:.1f} per channel; drawn.png and screenshot.png in {out})")

        x, y = receiver.click_point()
        area = viewer.screens[viewer.monitor]
        await viewer.click(x - area.x, y - area.y)
        if not await until(lambda: pointer_location() == (x, y)):
            raise CheckFailed(f"clicked at ({x}, {y}); the pointer is at {pointer_location()}")
        step(f"a click at ({x}, {y}) landed there")

        await viewer.type_keys(("KeyH", "h"), ("KeyI", "i"), ("Enter", "Enter"))
        typed = wait_for_file(receiver.path, "hi", timeout=30)
        if receiver.lines() != ["ready", "hi"]:
            raise CheckFailed(f"typed hi and Enter; the receiver has {typed!r}")
        step("hi and Enter typed through the viewer arrived in the receiver")

        close_as_customer(agent)
        ended = await viewer.expect(p.Ended, lambda m: m.session == viewer.session)
        if ended.by != "customer":
            raise CheckFailed(f"the session ended by {ended.by}, not by the customer")
        step(f"Close ended the session: ended by {ended.by} ({ended.reason})")
    finally:
        await viewer.close()


def agent_command(args: argparse.Namespace, relay: RelayProcess) -> list[str]:
    target = [sys.executable, str(ROOT / "agent.py")] if args.source else [str(args.exe)]
    return [*target, "--relay", relay.ws_url, "--technician", TECHNICIAN]


def run(args: argparse.Namespace, work: Path) -> None:
    set_dpi_aware()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    relay = RelayProcess(work / "relay-data", []).start()
    agent = receiver = None
    try:
        relay.add_technician(TECHNICIAN, "Session check", PASSWORD)
        step(f"relay listening on {relay.http_url}")
        receiver = (PowerShellReceiver if WINDOWS else XtermReceiver)(work / "typed.txt")
        step("the receiver window is up")
        started = time.monotonic()
        agent = subprocess.Popen(agent_command(args, relay), cwd=work,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        output = Output(agent)
        try:
            asyncio.run(drive(relay, agent, receiver, started, out))
            code = agent.wait(timeout=30)
        except BaseException:
            print("agent output:\n" + output.text(), file=sys.stderr)
            raise
        if code != 0:
            raise CheckFailed(f"the agent exited with {code}:\n{output.text()}")
        step("the agent exited with 0")
        rows = [row for row in ledger_rows(relay) if row.get("technician") == TECHNICIAN]
        if [row["ended_by"] for row in rows] != ["customer"]:
            raise CheckFailed(f"the ledger does not bill one session ended by the customer: "
                              f"{rows}")
        step(f"the ledger records it: {rows[0]['billable_seconds']} s, ended by the customer")
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        if receiver is not None:
            receiver.close()
        relay.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--exe", type=Path, help="the built agent to run")
    which.add_argument("--source", action="store_true", help="run agent.py from source")
    parser.add_argument("--out", type=Path, default=Path("session-check"),
                        help="where the drawn image and the screenshot go (default "
                             "./session-check)")
    args = parser.parse_args(argv)
    if args.exe is not None and not args.exe.is_file():
        parser.error(f"no such file: {args.exe}")
    with tempfile.TemporaryDirectory(prefix="spotlight-check-") as work:
        try:
            run(args, Path(work))
        except (CheckFailed, pytest.fail.Exception) as error:
            print(f"FAILED: {error}", file=sys.stderr, flush=True)
            return 1
    print("session check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
