"""What strangers cost the relay: connections that never say hello, and refused hellos.

    python -m bench.strangers [--connections 500] [--hellos 2000]

Prints, for SECURITY.md's figures (issue 11):
- the relay's resident memory at rest, with ``--connections`` upgraded websocket
  connections that never send a hello (each from its own loopback address, as a botnet
  would; one address may hold only MAX_UNAUTHENTICATED_PER_ADDRESS), and after as many
  connections each tried to park a frame of 1 MiB minus its last byte before any hello
  (the attack of issue 11, item 8);
- the ledger rows written while ``--hellos`` agent hellos naming support people who do
  not exist are refused, from 20 addresses, and how fast they were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import protocol as p
from bench.desktop import Meter
from bench.ours import RelayProcess
from relay.accounts import DB_FILE
from relay.ledger import Ledger

SCREENS = [{"x": 0, "y": 0, "width": 1280, "height": 800}] * 2
ADDRESSES_FOR_HELLOS = 20
PARKED_FRAME_BYTES = 1024 * 1024


def address(n: int) -> str:
    """The n-th of many loopback addresses (none of them 127.0.0.1)."""
    return f"127.0.{1 + n // 200}.{1 + n % 200}"


def upgrade(port: int, n: int) -> socket.socket | None:
    """A websocket upgrade on /ws/agent from address n that says nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(address(n), 0))
    sock.sendall((f"GET /ws/agent HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    if not reply.startswith(b"HTTP/1.1 101"):
        sock.close()
        return None
    return sock


def park_a_frame(sock: socket.socket) -> None:
    """Send a masked binary frame announcing PARKED_FRAME_BYTES, all but its last byte."""
    header = bytes([0x82, 0x80 | 127]) + PARKED_FRAME_BYTES.to_bytes(8, "big") + b"\0" * 4
    with contextlib.suppress(OSError):  # the relay closes as soon as it reads the length
        sock.sendall(header + bytes(PARKED_FRAME_BYTES - 1))


def settle(meter: Meter) -> float:
    time.sleep(1.0)
    return meter.rss_kb() / 1024


def memory(relay: RelayProcess, connections: int) -> dict[str, float]:
    meter = Meter(relay.process.pid)
    figures = {"at rest": settle(meter)}
    idle = [upgrade(relay.port, n) for n in range(connections)]
    figures["strangers let in (of the idle)"] = sum(s is not None for s in idle)
    figures[f"with {connections} idle"] = settle(meter)
    for sock in idle:
        if sock is not None:
            sock.close()
    settle(meter)
    parked = [upgrade(relay.port, connections + n) for n in range(connections)]
    for sock in parked:
        if sock is not None:
            park_a_frame(sock)
    figures[f"after {connections} parked frames"] = settle(meter)
    for sock in parked:
        if sock is not None:
            sock.close()
    return figures


async def refused_hellos(relay: RelayProcess, hellos: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    codes: dict[str, int] = {}
    before = ledger_rows(relay.data)
    started = time.perf_counter()
    for n in range(hellos):
        source = address(n % ADDRESSES_FOR_HELLOS)
        async with connect(f"{relay.ws_url}/ws/agent", local_addr=(source, 0),
                           compression=None) as ws:
            await ws.send(json.dumps({
                "type": "hello", "role": "agent", "version": p.PROTOCOL_VERSION,
                "technician": f"guess{n}", "machine": "m", "user": "u", "screens": SCREENS,
                "resume": ""}))
            reply = json.loads(await ws.recv())
            codes[reply.get("code", reply["type"])] = codes.get(
                reply.get("code", reply["type"]), 0) + 1
    elapsed = time.perf_counter() - started
    return {"hellos": hellos, "seconds": elapsed, "answered per s": hellos / elapsed,
            "ledger rows written": ledger_rows(relay.data) - before, **codes}


def ledger_rows(data: Path) -> int:
    """Sessions and events in the ledger (the relay writes both as they happen)."""
    with contextlib.closing(Ledger(data / DB_FILE)) as ledger:
        return len(ledger.rows()) + len(ledger.events())


def show(figures: dict[str, float]) -> None:
    for name, value in figures.items():
        shown = f"{value:8.1f}" if isinstance(value, float) else f"{value:8d}"
        print(f"  {name:32} {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--hellos", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        relay = RelayProcess(Path(folder) / "data").start()
        try:
            figures = memory(relay, args.connections)
            print("Relay resident memory (MB), and how many strangers got in:")
            show(figures)
            print(f"Refused hellos ({ADDRESSES_FOR_HELLOS} addresses, made-up support people):")
            show(asyncio.run(refused_hellos(relay, args.hellos)))
        finally:
            relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
