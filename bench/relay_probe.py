"""The relay's added latency, measured from outside the load: a separate, lightly loaded
process with one agent/viewer pair through the relay, and the same traffic through a
minimal websockets echo server in yet another process (the baseline: two loopback hops and
a Python websockets peer, as through the relay, but nothing else).

    python -m bench.relay_probe --relay ws://127.0.0.1:PORT --echo ws://127.0.0.1:PORT2
    python -m bench.relay_probe --serve-echo          # prints "echo listening on PORT"

Both paths carry the same small screen frames (FLAG_LAST, 300 bytes) PROBE_RATE times a
second, interleaved in one event loop, so both see the same machine. Every frame's time from
send to receive is one sample (the pair's ends are in this one process: one clock). The
relay's added latency is the relay's percentile minus the echo's. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

import protocol as p
from bench.measure import percentile

PROBE_RATE = 100  # frames a second on each path
FRAME_BYTES = 300


def _frame(seq: int) -> bytes:
    image = b"\xff\xd8\xff" + bytes(FRAME_BYTES - 3)
    return p.encode_frame(p.Frame(p.FRAME_JPEG, p.FLAG_LAST, 1, seq, 0, 0, 8, 8, image))


async def _relay_path(url: str, until: float, latencies: list[float]) -> None:
    from bench.ours import login
    from bench.relay_load import Pair

    _, token = await login(url)
    pair = Pair({})
    await pair.open(url, token, read=False)
    sent: dict[int, float] = {}

    async def read() -> None:
        async for data in pair.viewer:
            if isinstance(data, str):
                continue
            now = time.perf_counter()
            seq = p.decode_frame_header(data)[4]
            if seq in sent:
                latencies.append((now - sent.pop(seq)) * 1000)
            await pair.viewer.send(p.encode_control(p.Ack(pair.session, seq)))

    reader = asyncio.create_task(read())
    try:
        await _send(pair.agent, until, sent)
        await asyncio.sleep(0.2)
    finally:
        reader.cancel()
        await pair.close()


async def _echo_path(url: str, until: float, latencies: list[float]) -> None:
    from websockets.asyncio.client import connect

    sent: dict[int, float] = {}
    async with connect(url, max_size=p.MAX_MESSAGE_BYTES, compression=None) as ws:

        async def read() -> None:
            async for data in ws:
                now = time.perf_counter()
                seq = p.decode_frame_header(data)[4]
                if seq in sent:
                    latencies.append((now - sent.pop(seq)) * 1000)

        reader = asyncio.create_task(read())
        try:
            await _send(ws, until, sent)
            await asyncio.sleep(0.2)
        finally:
            reader.cancel()


async def _send(ws, until: float, sent: dict[int, float]) -> None:
    seq, next_at = 0, time.perf_counter()
    while time.perf_counter() < until:
        frame = _frame(seq)
        sent[seq] = time.perf_counter()
        await ws.send(frame)
        seq += 1
        next_at += 1 / PROBE_RATE
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def probe(relay_url: str, echo_url: str, seconds: float) -> dict:
    relay: list[float] = []
    echo: list[float] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(_relay_path(relay_url, until, relay), _echo_path(echo_url, until, echo))
    summary = {"relay_ms": relay, "echo_ms": echo}
    for name, values in (("relay", relay), ("echo", echo)):
        for q in (50, 99):
            summary[f"{name}_p{q}"] = percentile(values, q)
    return summary


async def serve_echo() -> None:
    from websockets.asyncio.server import serve

    async def echo(ws) -> None:
        with contextlib.suppress(Exception):
            async for data in ws:
                await ws.send(data)

    async with serve(echo, "127.0.0.1", 0, max_size=p.MAX_MESSAGE_BYTES,
                     compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"echo listening on {port}", flush=True)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe the relay's added latency.")
    parser.add_argument("--relay", help="the relay's ws:// URL")
    parser.add_argument("--echo", help="an echo server's ws:// URL (the baseline)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve-echo", action="store_true", help="be the echo server")
    args = parser.parse_args(argv)
    if args.serve_echo:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_echo())
        return 0
    if not (args.relay and args.echo):
        parser.error("--relay and --echo are needed (or --serve-echo)")
    print(json.dumps(asyncio.run(probe(args.relay, args.echo, args.seconds))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
