"""A lossy slow link: netem's rules in user space between two TUN devices (needs root).

    python -m bench.netem --target 127.0.0.1:PORT --rate-kbit 2000 --rtt-ms 60 --loss 0.01

This kernel has no sch_netem (shared/notes/slow-links.md), so this process plays it: two
network namespaces, each with a TUN device, 127.0.100.1 (side A) <-> 127.0.100.2 (side B)
point to point, route_localnet=1 and each namespace's lo narrowed to 127.0.0.1/32 so the
other side's address is not taken as local. Every IP packet read from one TUN is written to
the other after netem's rules: random loss, a packet limit, the rate as serialisation time,
then half the round trip. TCP runs for real in the two namespaces' kernels, so a lost packet
costs what it costs (retransmission, a smaller window).

Nothing else has to run inside a namespace: this process listens on 127.0.0.1 (the host's
loopback) and, for each connection, connects from side A to its own listener on side B,
which connects on to the target on the host's loopback. The bytes cross the emulated link
between A and B; the two host-side hops are plain loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import random
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass

from bench.shaper import LinkShape, loopback_target

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
ADDRESS = {"a": "127.0.100.1", "b": "127.0.100.2"}
LIMIT_PACKETS = 1000  # netem's default limit
DEVICE = "benchtun"
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(namespace: str):
    """Run the block in `namespace` (this thread only), then back in the host's."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/var/run/netns/{namespace}")
        yield
    finally:
        if _libc.setns(host, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the host")
        os.close(host)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _sysctl(namespace: str, *devices: str) -> None:
    """Let 127.0.0.0/8 be routed off lo, and take no packet for spoofed by its source."""
    settings = [f"net.ipv4.conf.{device}.{key}={value}" for device in devices
                for key, value in (("route_localnet", 1), ("rp_filter", 0))]
    subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", *settings],
                   check=True, capture_output=True, timeout=10)


@dataclass
class Namespaces:
    """The two namespaces and their TUN devices; removed again by close()."""

    a: str
    b: str
    tun_a: int = -1
    tun_b: int = -1

    def open(self) -> Namespaces:
        for side, name in (("a", self.a), ("b", self.b)):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
            _sysctl(name, "all", "default")
            _ip("-n", name, "addr", "del", "127.0.0.1/8", "dev", "lo")
            _ip("-n", name, "addr", "add", "127.0.0.1/32", "dev", "lo")
            with inside(name):
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(),
                                                       IFF_TUN | IFF_NO_PI))
            setattr(self, f"tun_{side}", fd)
            other = ADDRESS["b" if side == "a" else "a"]
            _ip("-n", name, "addr", "add", ADDRESS[side], "peer", other, "dev", DEVICE)
            _ip("-n", name, "link", "set", DEVICE, "up")
            _sysctl(name, DEVICE)
        return self

    def close(self) -> None:
        for fd in (self.tun_a, self.tun_b):
            if fd >= 0:
                os.close(fd)
        for name in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class Wire:
    """One direction of the link: netem's loss, limit, rate and delay on IP packets."""

    def __init__(self, shape: LinkShape, loss: float, source: int, sink: int,
                 rng: random.Random) -> None:
        self.shape, self.loss, self.source, self.sink, self.rng = shape, loss, source, sink, rng
        self.loop = asyncio.get_running_loop()
        self.free_at = 0.0
        self.queued = 0
        self.sent = self.dropped = 0

    def readable(self) -> None:
        while True:
            try:
                packet = os.read(self.source, 65535)
            except BlockingIOError:
                return
            if self.queued >= LIMIT_PACKETS or self.rng.random() < self.loss:
                self.dropped += 1
                continue
            now = self.loop.time()
            self.free_at = max(now, self.free_at) + len(packet) / self.shape.bytes_per_s
            self.queued += 1
            self.loop.call_at(self.free_at + self.shape.rtt_ms / 2000, self.deliver, packet)

    def deliver(self, packet: bytes) -> None:
        self.queued -= 1
        self.sent += 1
        with contextlib.suppress(BlockingIOError):  # the far kernel's queue is full: lost
            os.write(self.sink, packet)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()


async def _join(r1, w1, r2, w2) -> None:
    try:
        await asyncio.gather(_copy(r1, w2), _copy(r2, w1))
    except asyncio.CancelledError:
        pass  # the emulator is stopping: end this connection quietly
    finally:
        w1.close()
        w2.close()


def _tcp_socket() -> socket.socket:
    """A TCP socket to which asyncio gives TCP_NODELAY, as it does every real peer's socket:
    it skips one made by socket.socket() (proto 0), and Nagle then held a small message sent
    right behind another until that one's delayed ACK came back (the agent's 'accepted',
    1 ms after its 'registered': 105 ms late on the 2 Mbit/s, 60 ms link)."""
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


async def serve(shape: LinkShape, loss: float, target: tuple[str, int], spaces: Namespaces,
                seed: int) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    for source, sink in ((spaces.tun_a, spaces.tun_b), (spaces.tun_b, spaces.tun_a)):
        loop.add_reader(source, Wire(shape, loss, source, sink, rng).readable)

    async def exit_side(reader, writer) -> None:  # side B -> the target on the host
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except (OSError, asyncio.CancelledError):
            writer.close()
            return
        await _join(reader, writer, up_reader, up_writer)

    with inside(spaces.b):
        listener = _tcp_socket()  # (the sockets it accepts share its proto)
        listener.bind((ADDRESS["b"], 0))
    listener.listen(64)
    far = await asyncio.start_server(exit_side, sock=listener)
    far_port = listener.getsockname()[1]

    async def entry(reader, writer) -> None:  # the host -> side A -> across the link
        with inside(spaces.a):
            sock = _tcp_socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (ADDRESS["b"], far_port))
        except (OSError, asyncio.CancelledError):
            sock.close()
            writer.close()
            return
        down_reader, down_writer = await asyncio.open_connection(sock=sock)
        await _join(reader, writer, down_reader, down_writer)

    near = await asyncio.start_server(entry, "127.0.0.1", 0)
    print(f"netem listening on 127.0.0.1:{near.sockets[0].getsockname()[1]} -> "
          f"{target[0]}:{target[1]} ({shape.describe()}, {loss:.1%} loss)", flush=True)
    # SIGTERM (the bench's stop) ends the loop normally, so main() removes the namespaces.
    stopping = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stopping.done() or stopping.set_result(None))
    async with far, near:
        await stopping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netem's rules between two TUN devices.")
    parser.add_argument("--target", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--rate-kbit", type=float, required=True, help="each way")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip delay")
    parser.add_argument("--loss", type=float, default=0.0, help="per packet, each way (0..1)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    try:
        target = loopback_target(args.target)
        shape = LinkShape(args.rate_kbit, args.rtt_ms)
    except ValueError as error:
        parser.error(str(error))
    if not 0 <= args.loss < 1:
        parser.error("--loss is a fraction of packets, 0 <= loss < 1")
    if os.geteuid() != 0:
        parser.error("the emulator makes network namespaces and TUN devices: run it as root")
    spaces = Namespaces(f"bench-a-{os.getpid()}", f"bench-b-{os.getpid()}")
    try:
        spaces.open()
        asyncio.run(serve(shape, args.loss, target, spaces, args.seed))
    finally:
        spaces.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
