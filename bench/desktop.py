"""The benchmark's desktop: an Xvfb screen, the three workloads on it, and /proc meters.

Everything here starts real programs (Xvfb, xterm, xdotool, ffmpeg, an X client) and stops them
again; the workloads are the same for x11vnc and for our agent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

WIDTH, HEIGHT = 1920, 1080
TYPING_CHARS_PER_S = 10
SCROLL_LINES_PER_S = 40
MOTION_FPS = 60  # more than the 30 updates/s target, so how close to 60 a peer gets shows
CLIP_SECONDS = 0.5  # raw BGRX frames (500 MB a second) so that ffplay only copies them
XTERM_FONT = ("-fa", "DejaVu Sans Mono", "-fs", "11")
CACHE = Path(__file__).resolve().parent / ".cache"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# A paragraph to type and to scroll: ordinary prose and code, so text-like tiles look real.
TEXT = (
    "The quick brown fox jumps over the lazy dog. Remote support should feel local: "
    "def handle(event): return event.kind, event.time  # 0123456789 "
    "Customers call, technicians help; every keystroke must arrive at once. "
)


def require(*tools: str) -> None:
    """Fail with one clear line naming every missing program."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"missing programs: {', '.join(missing)} (bench/run.sh installs them: "
            "apt-get install x11vnc ffmpeg xdotool xterm xvfb)"
        )


# --- processes ----------------------------------------------------------------------------


def stop(process: subprocess.Popen | None, timeout_s: float = 5) -> None:
    """Terminate a child (and its process group when it leads one), then kill if needed."""
    if process is None or process.poll() is not None:
        return
    # A shell loop's running child (xdotool typing on into the next workload's window, where
    # ffplay took the keys as commands and paused) goes with its process group.
    try:
        leads = os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        leads = False
    with contextlib.suppress(ProcessLookupError):
        if leads:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL) if leads else process.kill()
        process.wait()


@dataclass
class Meter:
    """CPU time and memory of one process, read from /proc."""

    pid: int
    peak_rss_kb: int = 0
    _cpu0: float = 0.0
    _t0: float = 0.0

    def cpu_s(self) -> float:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return self._cpu0
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss_kb(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                rss = int(f.read().split()[1]) * _PAGE_KB
        except (FileNotFoundError, ProcessLookupError):
            return 0
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        return rss

    def hwm_kb(self) -> int:
        """Peak resident memory since the process started (VmHWM)."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return max(int(line.split()[1]), self.peak_rss_kb)
        except (FileNotFoundError, ProcessLookupError):
            pass
        return self.peak_rss_kb

    def start(self) -> None:
        self._cpu0, self._t0 = self.cpu_s(), time.monotonic()
        self.rss_kb()

    def cpu_percent(self) -> float:
        """Percent of one core used since start()."""
        elapsed = time.monotonic() - self._t0
        return 100.0 * (self.cpu_s() - self._cpu0) / elapsed if elapsed > 0 else 0.0


# --- the screen ---------------------------------------------------------------------------


@dataclass
class Desktop:
    """An Xvfb screen at 1920x1080x24 on a display number Xvfb chose itself."""

    display: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)
    children: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def start(self) -> Desktop:
        require("Xvfb", "xterm", "xdotool")
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{WIDTH}x{HEIGHT}x24",
             "-nolisten", "tcp", "-noreset", "-br"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            stop(self.process)
            raise SystemExit("Xvfb did not start")
        self.display = f":{number}"
        return self

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}

    def spawn(self, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            args, env={**self.env(), **(extra_env or {})}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.children.append(process)
        return process

    def xdotool(self, *args: str) -> str:
        result = subprocess.run(
            ["xdotool", *args], env=self.env(), capture_output=True, text=True, timeout=30,
            check=False,
        )
        return result.stdout.strip()

    def xterm(
        self, title: str, geometry: str, command: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """An xterm running `command`, mapped, with the pointer (and so the focus) in it."""
        process = self.spawn(
            ["xterm", "-title", title, "-geometry", geometry, *XTERM_FONT,
             "-bg", "white", "-fg", "black", "+sb", "-e", "sh", "-c", command],
            extra_env,
        )
        window = self.xdotool("search", "--sync", "--onlyvisible", "--name", title)
        window = window.split()[0] if window else ""
        if window:
            # No window manager: keyboard focus follows the pointer.
            self.xdotool("mousemove", "--window", window, "40", "40")
        return process

    def close(self) -> None:
        for child in reversed(self.children):
            stop(child)
        self.children.clear()
        stop(self.process)


# --- workloads ----------------------------------------------------------------------------


class Workload:
    """Something that changes the screen the way a real session does, until stopped."""

    name = ""
    description = ""

    def __init__(self, desktop: Desktop, clip_seconds: float = CLIP_SECONDS) -> None:
        self.desktop = desktop
        self.clip_seconds = clip_seconds
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)
            if process in self.desktop.children:
                self.desktop.children.remove(process)
        self.processes.clear()


class Idle(Workload):
    name = "idle"
    description = "an xterm with a cursor, nothing changing"

    def start(self) -> None:
        self.processes.append(
            self.desktop.xterm("bench-idle", "100x30+200+150", "cat >/dev/null")
        )


class Typing(Workload):
    name = "typing"
    description = f"xdotool types ~{TYPING_CHARS_PER_S} chars/s into a 100x30 xterm"

    def start(self) -> None:
        self.processes.append(
            self.desktop.xterm("bench-typing", "100x30+200+150", "cat >/dev/null")
        )
        delay_ms = str(1000 // TYPING_CHARS_PER_S)
        script = f'while :; do xdotool type --delay {delay_ms} "$BENCH_TEXT"; done'
        self.processes.append(self.desktop.spawn(["sh", "-c", script], {"BENCH_TEXT": TEXT}))


_SCROLLER = r"""
import itertools, sys, time
words = sys.argv[1].split()
rate = float(sys.argv[2])
start = time.monotonic()
for n in itertools.count():
    k = n % len(words)
    line = f"{n:7d}  " + " ".join(words[k:] + words[:k])
    sys.stdout.write(line[:140] + "\n")
    sys.stdout.flush()
    time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
"""


class Scrolling(Workload):
    name = "scrolling"
    description = f"a 150x50 xterm printing {SCROLL_LINES_PER_S} lines/s"

    def start(self) -> None:
        command = f"exec {sys.executable} -c '{_SCROLLER}' \"$BENCH_TEXT\" {SCROLL_LINES_PER_S}"
        self.processes.append(
            self.desktop.xterm("bench-scrolling", "150x50+20+20", command, {"BENCH_TEXT": TEXT})
        )


def motion_clip(seconds: float = CLIP_SECONDS) -> Path:
    """A 1920x1080 MOTION_FPS clip of a Mandelbrot zoom (the whole screen changes every frame).

    Stored uncompressed in the X server's own pixel format: decoding and colour conversion
    would cost ffplay more CPU than the peers being measured, and starve the workload.
    """
    require("ffmpeg")
    CACHE.mkdir(exist_ok=True)
    clip = CACHE / f"mandelbrot-{WIDTH}x{HEIGHT}-{MOTION_FPS}fps-{seconds:g}s.nut"
    if not clip.exists():
        partial = clip.with_suffix(".part.nut")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
             "-i", f"mandelbrot=s={WIDTH}x{HEIGHT}:r={MOTION_FPS}:start_scale=0.5",
             "-t", f"{seconds:g}", "-c:v", "rawvideo", "-pix_fmt", "bgr0",
             str(partial)],
            check=True, timeout=300,
        )
        partial.rename(clip)
    return clip


def motion_frames(seconds: float = CLIP_SECONDS) -> Path:
    """motion_clip()'s frames back to back, raw BGRX, for bench/motion_source.py to map."""
    clip = motion_clip(seconds)
    raw = clip.with_suffix(".bgrx")
    if not raw.exists():
        partial = raw.with_suffix(".part")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-f", "rawvideo",
                        "-pix_fmt", "bgr0", str(partial)], check=True, timeout=300)
        partial.rename(raw)
    return raw


class Motion(Workload):
    name = "motion"
    description = (f"bench/motion_source.py puts a 1080p {MOTION_FPS} fps Mandelbrot zoom on "
                   "the whole screen with MIT-SHM, looping")

    def start(self) -> None:
        # Not ffplay: it changed the screen only 4 to 30 times a second on this machine.
        raw = motion_frames(self.clip_seconds)
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("motion_source.py")), str(raw),
             "--fps", str(MOTION_FPS), "--title", "bench-motion"],
            env=self.desktop.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.desktop.children.append(process)
        self.processes.append(process)
        self.put = 0  # frames on the screen so far, as the source reports them
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        self.desktop.xdotool("search", "--sync", "--onlyvisible", "--name", "bench-motion")

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:  # "N frames in T s"
            with contextlib.suppress(ValueError, IndexError):
                self.put = int(line.split()[0])

    def rate_since(self, put: int, since: float) -> float:
        """Frames a second the source put on the screen since it had put ``put`` at
        monotonic time ``since`` (to within its report's 0.2 s)."""
        return (self.put - put) / (time.monotonic() - since)


def screen_changes_per_s(desktop: Desktop, seconds: float = 2.0) -> float:
    """How often the middle of the screen changes: the most updates/s any peer could send."""
    import mss

    probe = {"left": WIDTH // 2 - 128, "top": HEIGHT // 2 - 128, "width": 256, "height": 256}
    changes, previous = 0, b""
    with mss.MSS(display=desktop.display) as grabber:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            raw = bytes(grabber.grab(probe).raw)
            if raw != previous:
                changes, previous = changes + 1, raw
            time.sleep(0.004)
    return max(0, changes - 1) / seconds


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w for w in (Idle, Typing, Scrolling, Motion)
}
