"""The desktop the agents stream: an Xvfb server, what the X server shows, where its
windows and pointer are, and waiting for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import mss
import numpy as np
import pytest
from PIL import Image

import protocol as p

if TYPE_CHECKING:
    from tests.helpers.viewer import ScriptedViewer

ROOT = Path(__file__).resolve().parents[2]
BACKGROUND = (0x33, 0x66, 0xCC)  # the X root window's colour, set with xsetroot
BACKGROUND_NAME = "#3366cc"
MAX_MEAN_DIFF = 6.0  # mean absolute difference per channel between drawn and real screen


@dataclass
class Display:
    """A running Xvfb server."""

    name: str  # ":N"
    width: int
    height: int
    process: subprocess.Popen = field(repr=False)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.name}


def start_xvfb(width: int = 1280, height: int = 800) -> Display:
    """Start Xvfb on a free display number (Xvfb picks it and reports it on a pipe)."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed: run ./dev test, which installs it")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        process.kill()
        pytest.fail("Xvfb did not start")
    return Display(f":{number}", width, height, process)


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




async def until(condition: Callable[[], bool], timeout: float = 20, every: float = 0.1
                ) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds (checked every ``every``):
    wait for what a test asserts rather than sleeping a guessed time before it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)
    return True


def find_window(name: str, *, visible: bool = False, timeout: float = 60,
                env: dict[str, str] | None = None) -> str:
    """The X window id of the first window whose name matches the regex ``name`` (only a
    mapped one if ``visible``), waiting up to ``timeout`` seconds for it to appear."""
    command = ["xdotool", "search", "--sync", *(["--onlyvisible"] if visible else []),
               "--name", name]
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = subprocess.run(command, env=env, capture_output=True, text=True,
                                   timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no window named {name!r} within {timeout:.0f} s") from None
        if found.returncode == 0 and found.stdout.split():
            return found.stdout.split()[0]
        # Xlib's default error handler makes xdotool exit 1 when any window is destroyed
        # while it reads that window's name (another dialog closing, a tooltip): look again.
        if time.monotonic() >= deadline:
            raise AssertionError(f"no window named {name!r} within {timeout:.0f} s: "
                                 f"{found.stderr.strip()}")
        time.sleep(0.1)


@contextlib.contextmanager
def xterm_running_cat(env: dict[str, str], typed: Path, title: str, geometry: str
                      ) -> Iterator[tuple[int, int, int, int]]:
    """An xterm titled ``title`` at ``geometry`` running `cat > typed`: what is typed into it
    lands in the file. Yields the window's x, y, width and height once cat runs."""
    require_tools("xterm", "xdotool")
    process = subprocess.Popen(
        ["xterm", "-geometry", geometry, "-title", title,
         "-e", "sh", "-c", f"exec cat > '{typed}'"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        window = find_window(title, env=env, timeout=30)
        deadline = time.monotonic() + 30
        while not typed.exists():  # the shell has opened the file: cat is reading
            assert time.monotonic() < deadline, "the xterm's cat did not start"
            time.sleep(0.1)
        shape = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window], env=env,
                               capture_output=True, text=True, check=True, timeout=10).stdout
        values = dict(line.split("=", 1) for line in shape.split())
        yield int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def agent_from_source(env: dict[str, str], relay_ws_url: str, log: Path
                      ) -> Iterator[subprocess.Popen]:
    """agent.py from source choosing david, its tray as log lines and its dialogs on stderr
    unless ``env`` says otherwise, all its output in ``log``; stopped (killed if it will not
    stop) at the end."""
    env = {"SPOTLIGHT_TRAY": "log", "SPOTLIGHT_DIALOGS": "stderr", **env}
    with log.open("w") as out:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [sys.executable, "agent.py", "--relay", relay_ws_url, "--technician", "david"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
