"""Our side: the real relay and the real agent (from source), and a scripted viewer.

The scripted viewer speaks protocol.py like viewer/ does: log in, accept the one waiting
session, take control, decode every rectangle with Pillow, acknowledge each update once its
FLAG_LAST rectangle and all before it are decoded. Like the browser's createImageBitmap,
decoding runs in background threads (two) while the socket is read on. It draws nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

import protocol as p
from bench.desktop import Desktop, stop
from bench.measure import DrawnRect, UpdateCounter, Viewer, jpeg_settings, tcp_bytes_received

ROOT = Path(__file__).resolve().parent.parent
TECHNICIAN, PASSWORD = "bench", "bench-password-1"
KEYS = {"a": ("KeyA", "a"), "BackSpace": ("Backspace", "Backspace")}
DECODE_THREADS = 2
_LISTENING = re.compile(r"listening on https?://[^\s:]+:(\d+)", re.IGNORECASE)


class RelayProcess:
    """`python -m relay serve` on 127.0.0.1 port 0, with one support person for the bench."""

    def __init__(self, data: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.data = data
        self.tls = tls  # (certificate, key): serve wss:// as a real deployment does
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.output: list[str] = []

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    def cli(self, *args: str, password: str | None = None) -> None:
        env = {**os.environ, **({"RELAY_PASSWORD": password} if password else {})}
        result = subprocess.run(
            [sys.executable, "-m", "relay", *args, "--data", str(self.data)], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"relay {' '.join(args)} failed: {result.stderr.strip()}")

    def start(self, technicians: tuple[str, ...] = (TECHNICIAN,)) -> RelayProcess:
        self.data.mkdir(parents=True, exist_ok=True)
        for technician in technicians:
            self.cli("add-technician", technician, "--name", technician.title(),
                     password=PASSWORD)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", "0",
             "--data", str(self.data),
             *(("--cert", str(self.tls[0]), "--key", str(self.tls[1])) if self.tls else ())],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        stop(self.process)
        raise RuntimeError("the relay did not start:\n" + "".join(self.output[-20:]))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]

    def stop(self) -> None:
        stop(self.process)


def start_agent(desktop: Desktop, relay: RelayProcess, url: str = "",
                env: dict[str, str] | None = None, root: Path = ROOT) -> subprocess.Popen:
    """The customer's program from source, as a customer would run it, on `desktop`;
    `url` reaches the relay some other way (a slow link in front of it), `env` adds to its
    environment; `root`: another checkout's agent (a before/after comparison). Run as a
    module (``-m agent``, from ``root``), as the frozen exe runs compiled code: run as a
    script, Python keeps the script's syntax tree for as long as it runs (3.8 MB of
    agent.py's, resident all session, bench/memory), which the exe never holds."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--relay", url or relay.ws_url,
         "--technician", TECHNICIAN],
        cwd=root, env={**desktop.env(), "SPOTLIGHT_TRAY": "log", "SPOTLIGHT_DIALOGS": "stderr",
                       **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def login(url: str, user: str = TECHNICIAN, password: str = PASSWORD,
                token: str = "") -> tuple[object, str]:
    """A viewer websocket after hello/welcome; returns it and the login token."""
    from websockets.asyncio.client import connect

    ws = await connect(f"{url}/ws/viewer", max_size=p.MAX_MESSAGE_BYTES, compression=None,
                       open_timeout=10)
    hello = p.ViewerHello("viewer", p.PROTOCOL_VERSION, user if not token else "",
                          password if not token else "", token)
    await ws.send(p.encode_control(hello))
    while True:
        message = p.decode_control(await asyncio.wait_for(ws.recv(), 30))
        if isinstance(message, p.Welcome):
            return ws, message.token
        if isinstance(message, p.Error):
            raise RuntimeError(f"login refused: {message.message}")


def _decode(image: bytes) -> tuple[str, int] | None:
    """Decode, as the viewer must; a JPEG's subsampling and quality."""
    picture = Image.open(io.BytesIO(image))
    picture.load()
    return jpeg_settings(picture) if picture.format == "JPEG" else None


class SpotlightViewer(Viewer):
    """A scripted support person: accepts the first waiting session and watches it."""

    def __init__(self) -> None:
        self.updates = UpdateCounter()
        self.first_update = asyncio.Event()
        self.session = ""
        self.controlling = asyncio.Event()
        self.frames = 0
        self.kinds = {p.FRAME_JPEG: 0, p.FRAME_PNG: 0}
        self.jpegs: Counter[tuple[str, int]] = Counter()  # (subsampling, quality) -> count
        self.half_images = 0  # images at half their rectangle's resolution (image_scale)
        self._ws = None
        self._task: asyncio.Task | None = None
        self._rects = 0
        self.ended = asyncio.Event()
        self._decoder = ThreadPoolExecutor(DECODE_THREADS, "decode")
        self._decoding: list[asyncio.Future] = []
        self._acks: asyncio.Future | None = None  # the latest update's ack, after the earlier
        self.rect_listeners: list = []

    async def connect(self, url: str, timeout_s: float = 30, accept_after_s: float = 0.0
                      ) -> None:
        """Log in and accept the first waiting session, ``accept_after_s`` after it showed."""
        self._ws, _ = await login(url)
        deadline = time.monotonic() + timeout_s
        while not self.session:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no agent session appeared in the queue")
            message = p.decode_control(await asyncio.wait_for(self._ws.recv(), left))
            if isinstance(message, p.Queue):
                waiting = [e for e in message.sessions if e.state == "waiting"]
                if waiting:
                    self.session = waiting[0].session
        await asyncio.sleep(accept_after_s)
        self.asked_at = time.perf_counter()
        await self._ws.send(p.encode_control(p.Accept(self.session)))
        await self._ws.send(p.encode_control(p.TakeControl(self.session)))
        self._task = asyncio.create_task(self._read_loop())

    def bytes_received(self) -> int:
        return tcp_bytes_received(self._ws.transport.get_extra_info("socket"))

    async def press(self, key: str) -> None:
        code, name = KEYS[key]
        for down in (True, False):
            await self._ws.send(p.encode_control(p.Key(self.session, code, name, down)))

    async def _read_loop(self) -> None:
        async for data in self._ws:
            if isinstance(data, str):
                message = p.decode_control(data)
                if isinstance(message, p.Control):
                    (self.controlling.set if message.granted else self.controlling.clear)()
                elif isinstance(message, p.Ended):
                    self.ended.set()
                continue
            frame = p.decode_frame(data)
            # checked before decoding, as viewer/display.js does (this viewer only decodes:
            # a half-resolution image would be scaled up on drawing, and it draws nothing)
            self.half_images += p.image_scale(frame) == 2
            loop = asyncio.get_running_loop()
            decoding = loop.run_in_executor(self._decoder, _decode, frame.image)
            if self.rect_listeners:
                decoding.add_done_callback(self._drawn_callback(frame))
            self._decoding.append(decoding)
            self.frames += 1
            self.kinds[frame.kind] += 1
            self._rects += 1
            if frame.last:
                self._acks = asyncio.ensure_future(self._ack_when_decoded(
                    self._acks, self._decoding, frame.seq, self._rects))
                self._decoding, self._rects = [], 0

    def _drawn_callback(self, frame: p.Frame):
        # by seq: the agent may interleave an echo's rectangles with a video frame's
        update = frame.seq

        def drawn(decoding: asyncio.Future) -> None:
            if decoding.cancelled() or decoding.exception() is not None:
                return
            rect = DrawnRect(update, frame.x, frame.y, frame.width, frame.height,
                             decoding.result(), time.perf_counter())
            for listener in self.rect_listeners:
                listener(rect)

        return drawn

    async def _ack_when_decoded(self, earlier: asyncio.Future | None,
                                decoding: list[asyncio.Future], seq: int, rects: int) -> None:
        """Acknowledge update `seq` once it and every earlier update are decoded."""
        if earlier is not None:
            await earlier
        for settings in await asyncio.gather(*decoding):
            if settings is not None:
                self.jpegs[settings] += 1
        await self._ws.send(p.encode_control(p.Ack(self.session, seq)))
        self.updates.done(rects)
        if not self.first_update.is_set():
            self.first_update_at = time.perf_counter()
        self.first_update.set()

    async def in_control(self, first_update_s: float = 20, control_s: float = 10) -> None:
        """Wait for the session's first update and then for control (TakeControl granted):
        from here the agent streams and injects as in a support person's session."""
        await asyncio.wait_for(self.first_update.wait(), first_update_s)
        await asyncio.wait_for(self.controlling.wait(), control_s)

    async def close(self) -> None:
        if self._ws is None:
            return
        with contextlib.suppress(Exception):
            if self.session:
                await self._ws.send(p.encode_control(p.End(self.session, "benchmark done")))
                await asyncio.wait_for(self.ended.wait(), 5)
        for task in (self._task, self._acks):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._decoder.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            await self._ws.close()
