"""A slow link in user space: a shaping TCP proxy between two loopback peers.

    python -m bench.shaper --target 127.0.0.1:PORT --rate-kbit 2000 --rtt-ms 60

Each direction is a token bucket (one segment deep, so the rate is netem's serialisation time:
a segment leaves when the link has finished sending the one before it) followed by a delay
line of half the round trip. The link holds at most `queue_ms` of data not yet sent; beyond
that the proxy stops reading, so the rest waits in the sender's socket buffer, as it would
behind a real bottleneck. A TCP proxy cannot lose packets (TCP under it retransmits on
loopback at once), so loss needs the emulator of shared/notes/slow-links.md.

Loopback only: it listens on 127.0.0.1 and connects only to a 127.0.0.0/8 target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

SEGMENT_BYTES = 1448  # a TCP payload on a 1500-byte Ethernet MTU with timestamps
READ_BYTES = 16 * 1024
SOCKET_BUFFER_BYTES = 64 * 1024  # the proxy's own kernel buffers: the backlog stays upstream
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class LinkShape:
    """A symmetric link: rate each way, round-trip delay, the bottleneck's queue."""

    rate_kbit: float
    rtt_ms: float
    queue_ms: float = 100.0

    def __post_init__(self) -> None:
        if not (self.rate_kbit > 0 and self.rtt_ms >= 0 and self.queue_ms > 0):
            raise ValueError(f"a link needs a positive rate and queue and a delay >= 0: {self}")

    @property
    def bytes_per_s(self) -> float:
        return self.rate_kbit * 1000 / 8

    def describe(self) -> str:
        return f"{self.rate_kbit:g} kbit/s, {self.rtt_ms:g} ms RTT"


class Direction:
    """One way of the link: serialise at the rate, deliver a fixed delay later."""

    def __init__(self, shape: LinkShape, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.shape = shape
        self.reader, self.writer = reader, writer
        self.free_at = 0.0  # when the link finishes sending what it already has
        self.line: deque[tuple[float, bytes]] = deque()  # (deliver at, segment)
        self.arrived = asyncio.Event()
        self.eof = False

    async def read_side(self) -> None:
        delay_s = self.shape.rtt_ms / 2000
        queue_s = self.shape.queue_ms / 1000
        try:
            await self._read(delay_s, queue_s)
        except OSError:
            pass  # a reset ends this way like a close: what was read still goes out
        finally:
            self.eof = True
            self.arrived.set()

    async def _read(self, delay_s: float, queue_s: float) -> None:
        while data := await self.reader.read(READ_BYTES):
            for start in range(0, len(data), SEGMENT_BYTES):
                segment = data[start:start + SEGMENT_BYTES]
                now = time.monotonic()
                self.free_at = max(now, self.free_at) + len(segment) / self.shape.bytes_per_s
                self.line.append((self.free_at + delay_s, segment))
                self.arrived.set()
            # The bottleneck's queue is full: read no more until it has room.
            backlog = self.free_at - time.monotonic()
            if backlog > queue_s:
                await asyncio.sleep(backlog - queue_s)

    async def write_side(self) -> None:
        while True:
            while not self.line:
                if self.eof:
                    with contextlib.suppress(OSError):
                        self.writer.write_eof()
                    return
                self.arrived.clear()
                await self.arrived.wait()
            deliver_at, segment = self.line.popleft()
            wait = deliver_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.writer.write(segment)
            await self.writer.drain()


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


async def _pipe(shape: LinkShape, target: tuple[str, int], down_reader: asyncio.StreamReader,
                down_writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError:
        down_writer.close()
        return
    _tune(down_writer)
    _tune(up_writer)
    ways = (Direction(shape, down_reader, up_writer), Direction(shape, up_reader, down_writer))
    tasks = [asyncio.create_task(coro) for way in ways
             for coro in (way.read_side(), way.write_side())]
    try:
        # One side closing or failing ends the whole connection once both writers are done.
        await asyncio.gather(tasks[1], tasks[3])
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (up_writer, down_writer):
            writer.close()


def loopback_target(text: str) -> tuple[str, int]:
    """'127.0.0.1:5900' -> ('127.0.0.1', 5900); anything off loopback is refused."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be HOST:PORT, not {text!r}")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the shaper only forwards to loopback addresses, not {host}")
    return host, int(port)


async def serve(shape: LinkShape, target: tuple[str, int], port: int = 0) -> None:
    server = await asyncio.start_server(
        lambda r, w: _pipe(shape, target, r, w), "127.0.0.1", port)
    print(f"shaper listening on 127.0.0.1:{server.sockets[0].getsockname()[1]} -> "
          f"{target[0]}:{target[1]} ({shape.describe()}, queue {shape.queue_ms:g} ms)",
          flush=True)
    async with server:
        await server.serve_forever()


def netem_available() -> bool:
    """Whether bench/netem.py can run here: root, a TUN device, the ip command."""
    import shutil

    return os.geteuid() == 0 and os.path.exists("/dev/net/tun") and bool(shutil.which("ip"))


class LinkProcess:
    """The link in its own process (its timers must not wait behind a viewer's work): this
    shaper, or with loss bench/netem.py (which can drop packets, and needs root)."""

    def __init__(self, shape: LinkShape, target_port: int, loss: float = 0.0) -> None:
        self.shape, self.target_port, self.loss = shape, target_port, loss
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> LinkProcess:
        module = ["bench.netem", "--loss", str(self.loss)] if self.loss else ["bench.shaper"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", *module, "--target", f"127.0.0.1:{self.target_port}",
             "--rate-kbit", str(self.shape.rate_kbit), "--rtt-ms", str(self.shape.rtt_ms),
             *(() if self.loss else ("--queue-ms", str(self.shape.queue_ms)))],
            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = _LISTENING.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"the link did not start: {line!r}")
        self.port = int(match.group(1))
        return self

    def stop(self) -> None:
        from bench.desktop import stop

        stop(self.process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A shaping TCP proxy on loopback.")
    parser.add_argument("--target", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--rate-kbit", type=float, required=True, help="each way")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip delay")
    parser.add_argument("--queue-ms", type=float, default=100.0,
                        help="the bottleneck's queue, in ms of data at the rate")
    args = parser.parse_args(argv)
    try:
        target = loopback_target(args.target)
        shape = LinkShape(args.rate_kbit, args.rtt_ms, args.queue_ms)
    except ValueError as error:
        parser.error(str(error))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(shape, target, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
