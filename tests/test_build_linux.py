"""The Linux one-file binary built from build.spec, run on Xvfb against a real relay.

Also home of the scripted support person (``ScriptedViewer``) and the screen checks that
tests/test_wine.py uses for the Windows exe.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mss
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

import protocol as p

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = (0x33, 0x66, 0xCC)  # the X root window's colour, set with xsetroot
BACKGROUND_NAME = "#3366cc"
MAX_MEAN_DIFF = 6.0  # mean absolute difference per channel between drawn and real screen

pytestmark = [pytest.mark.build, pytest.mark.x11]


# --- the scripted support person --------------------------------------------------------


class ScriptedViewer:
    """A support person's viewer without a browser: logs in, accepts, draws and acknowledges."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[p.Message | None] = asyncio.Queue()
        self.session = ""
        self.screens: tuple[p.Screen, ...] = ()
        self.monitor = -1  # the monitor of the last update drawn
        self.canvas: Image.Image | None = None
        self.updates = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def login(cls, relay, user: str, password: str) -> ScriptedViewer:
        ws = await connect(f"{relay.ws_url}/ws/viewer", origin=relay.http_url,
                           max_size=p.MAX_MESSAGE_BYTES)
        await ws.send(p.encode_control(p.ViewerHello("viewer", p.PROTOCOL_VERSION,
                                                     user=user, password=password)))
        viewer = cls(ws)
        await viewer.expect(p.Welcome)
        return viewer

    async def send(self, message: p.Message) -> None:
        await self.ws.send(p.encode_control(message))

    async def expect(self, kind: type, where: Callable[[p.Message], bool] = lambda m: True,
                     timeout: float = 60) -> p.Message:
        """The next message of ``kind`` matching ``where``; others are passed over."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {kind.TYPE} in {timeout} s; saw {seen[-10:]}")
            try:
                message = await asyncio.wait_for(self.messages.get(), left)
            except TimeoutError:
                continue
            if message is None:
                pytest.fail(f"the relay closed the viewer before {kind.TYPE}; saw {seen[-10:]}")
            if isinstance(message, kind) and where(message):
                return message
            seen.append(message)

    async def wait_for_pending(self, timeout: float = 60) -> p.Waiting:
        """The first session waiting (pending) in this support person's queue."""
        queue = await self.expect(
            p.Queue, lambda q: any(s.state == "waiting" for s in q.sessions), timeout)
        return next(s for s in queue.sessions if s.state == "waiting")

    async def accept_waiting(self, timeout: float = 60) -> None:
        """Wait for a pending session, accept it and take control."""
        await self.accept((await self.wait_for_pending(timeout)).session)

    async def accept(self, session: str) -> None:
        """Accept ``session`` and take control of it."""
        self.session = session
        await self.send(p.Accept(session))
        accepted = await self.expect(p.Accepted, lambda m: m.session == self.session)
        self.screens = accepted.screens
        await self.send(p.TakeControl(self.session))
        await self.expect(p.Control, lambda m: m.session == self.session and m.granted)

    async def click(self, x: int, y: int) -> None:
        monitor = max(self.monitor, 0)
        for down in (True, False):
            await self.send(p.Button(self.session, monitor, x, y, "left", down))
        await asyncio.sleep(0.5)

    async def type_keys(self, *keys: tuple[str, str]) -> None:
        """Press and release physical keys, as (KeyboardEvent.code, KeyboardEvent.key)."""
        for code, key in keys:
            await self.send(p.Key(self.session, code, key, True))
            await self.send(p.Key(self.session, code, key, False))

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                if isinstance(data, bytes):
                    frame = p.decode_frame(data)
                    self._draw(frame)
                    if frame.last:
                        self.updates += 1
                        await self.ws.send(p.encode_control(p.Ack(self.session, frame.seq)))
                else:
                    await self.messages.put(p.decode_control(data))
        except Exception as error:  # the test fails on the None below, saying so
            print(f"viewer connection ended: {error!r}", file=sys.stderr)
        finally:
            await self.messages.put(None)

    def _draw(self, frame: p.Frame) -> None:
        area = self.screens[frame.monitor]
        if self.canvas is None or frame.monitor != self.monitor:
            self.canvas = Image.new("RGB", (area.width, area.height))
            self.monitor = frame.monitor
        image = Image.open(io.BytesIO(frame.image)).convert("RGB")
        self.canvas.paste(image, (frame.x, frame.y))


def grab_screen(area: p.Screen) -> Image.Image:
    """What the X server shows in ``area`` right now."""
    with mss.MSS() as capture:
        shot = capture.grab({"left": area.x, "top": area.y, "width": area.width,
                             "height": area.height})
    return Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


async def wait_for_screen(viewer: ScriptedViewer, timeout: float = 60) -> float:
    """Wait until the updates drawn by the viewer match the real screen; the difference."""
    deadline = time.monotonic() + timeout
    difference = float("inf")
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        if viewer.canvas is None:
            continue
        reference = grab_screen(viewer.screens[viewer.monitor])
        if reference.size != viewer.canvas.size:
            continue
        difference = mean_difference(viewer.canvas, reference)
        if difference <= MAX_MEAN_DIFF:
            return difference
    pytest.fail(f"the updates never matched the screen (mean difference {difference:.1f}, "
                f"{viewer.updates} updates)")


def assert_background(viewer: ScriptedViewer, x: int, y: int) -> None:
    """The root window's solid colour came through at (x, y) of the drawn screen."""
    assert viewer.canvas is not None
    pixel = viewer.canvas.getpixel((x, y))
    assert all(abs(c - e) <= 12 for c, e in zip(pixel, BACKGROUND, strict=True)), pixel


def ledger_rows(relay) -> list[dict[str, str]]:
    result = relay.cli("ledger", "--csv")
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def window_geometry(window: str) -> tuple[int, int, int, int]:
    """x, y, width, height of an X window, from xdotool."""
    out = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


def pointer_location() -> tuple[int, int]:
    out = subprocess.run(["xdotool", "getmouselocation", "--shell"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["X"]), int(values["Y"])


def wait_for_file(path: Path, expected: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if expected in text:
            return text
        time.sleep(0.2)
    return text


class Output:
    """A child's combined output, drained in a thread (never a full pipe, never a file)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(process,), daemon=True)
        self._thread.start()

    def _drain(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.lines.append(line)

    def wait(self) -> None:
        """After the child has exited: the rest of its output."""
        self._thread.join(timeout=10)

    def text(self) -> str:
        return "".join(self.lines[-60:])


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (./dev test installs them)")


# --- the test ---------------------------------------------------------------------------


def build_linux_binary() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build-linux.sh")], cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=540,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    binary = ROOT / "dist" / "linux" / "spotlight-support"
    assert binary.is_file()
    return binary


@pytest.mark.timeout(600)
def test_linux_binary_is_accepted_streams_the_screen_takes_keys_and_closes(
        xvfb, relay, tmp_path):
    """The frozen Linux agent streams the X screen, types into an xterm, and Close is billed."""
    require_tools("xterm", "xdotool", "xsetroot")
    binary = build_linux_binary()
    subprocess.run(["xsetroot", "-solid", BACKGROUND_NAME], check=True, timeout=10)
    typed = tmp_path / "typed.txt"
    title = f"spotlight-receiver-{os.getpid()}"
    xterm = subprocess.Popen(
        ["xterm", "-T", title, "-geometry", "40x8+640+360", "-e", "sh", "-c",
         f"cat > {typed}"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = None
    try:
        window = subprocess.run(["xdotool", "search", "--sync", "--name", title],
                                capture_output=True, text=True, timeout=30).stdout.split()[0]
        agent = subprocess.Popen(
            [str(binary), "--relay", relay.ws_url, "--technician", "david"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        output = Output(agent)
        asyncio.run(_drive_linux_agent(relay, agent, output, window, typed))
        assert agent.wait(timeout=15) == 0, output.text()
    finally:
        if agent is not None:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            output.wait()
        xterm.terminate()
        xterm.wait(timeout=10)

    rows = [row for row in ledger_rows(relay) if row.get("technician") == "david"]
    assert len(rows) == 1, rows
    assert rows[0]["ended_by"] == "customer", rows


async def _drive_linux_agent(relay, agent: subprocess.Popen, output: Output, window: str,
                             typed: Path) -> None:
    viewer = await ScriptedViewer.login(relay, "david", "david-pw")
    try:
        await viewer.accept_waiting()
        await wait_for_screen(viewer)
        height = viewer.screens[viewer.monitor].height
        assert_background(viewer, 8, height - 8)

        x, y, width, height = window_geometry(window)
        centre = (x + width // 2, y + height // 2)
        await viewer.click(*centre)
        assert pointer_location() == centre
        await viewer.type_keys(("KeyH", "h"), ("KeyI", "i"), ("Enter", "Enter"))
        assert wait_for_file(typed, "hi\n") == "hi\n", output.text()

        agent.send_signal(signal.SIGTERM)  # takes the same path as Close in the tray menu
        ended = await viewer.expect(p.Ended, lambda m: m.session == viewer.session)
        assert ended.by == "customer", ended
    finally:
        await viewer.close()
