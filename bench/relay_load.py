"""Relay load test: many simulated sessions through one real relay process.

    python -m bench.relay_load [--seconds 5] [--sessions 100]

Scripted agents send updates the way agent.py does (rectangles, FLAG_LAST on the last one, at
most MAX_UPDATES_IN_FLIGHT unacknowledged); scripted viewers acknowledge each update. Phases:

- throughput: a few sessions sending 100 KB rectangles as fast as acknowledgements allow;
- messages: the same with 1 KB rectangles, 10 to an update;
- sessions: many sessions at a typing-like pace (10 updates/s of 6 KB), the relay's CPU and
  memory per session, and the one-way time of every rectangle from agent to viewer;
- stalled viewer: the same plus one session whose viewer never reads while its agent sends
  200 KB rectangles 30 times a second regardless: relay memory must stay bounded, the other
  sessions' latency must not suffer.

Each session's updates start at a random offset within the period (independent customers
do not type in step). Rates per core are the forwarded rate divided by the relay's own CPU
use (from /proc). Latency measured inside this busy driver process includes its own
scheduling (an upper bound); the relay's added latency comes from bench/relay_probe.py, run
in its own process during the session phases, against an echo-server baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import protocol as p
from bench.desktop import Meter, stop
from bench.measure import percentile
from bench.ours import ROOT, TECHNICIAN, RelayProcess, login
from bench.relay_probe import FRAME_BYTES, PROBE_RATE

PROBE_MARGIN_S = 1.5  # the probe's start-up (Python, login) fits inside the phase
SCREENS = (p.Screen(0, 0, 1920, 1080), p.Screen(0, 0, 1920, 1080))


@dataclass
class Phase:
    name: str
    sessions: int
    seconds: float = 0.0
    bytes: int = 0
    messages: int = 0
    relay_cpu: float = 0.0  # % of one core
    relay_rss_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""
    probe: dict = field(default_factory=dict)  # bench/relay_probe.py's summary, if it ran

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def per_core(self, rate: float) -> float:
        return rate / (self.relay_cpu / 100) if self.relay_cpu > 0 else float("nan")


@dataclass
class LoadResult:
    phases: list[Phase]
    baseline_rss_mb: float
    rss_per_session_kb: float
    stalled_rss_growth_mb: float


def _frame(seq: int, image_bytes: int, last: bool) -> bytes:
    image = b"\xff\xd8\xff" + bytes(image_bytes - 3)
    return p.encode_frame(p.Frame(p.FRAME_JPEG, p.FLAG_LAST if last else 0, 1, seq,
                                  0, 0, 64, 64, image))


class Pair:
    """One simulated session: a scripted agent and a scripted viewer through the relay."""

    def __init__(self, sent_at: dict) -> None:
        self.agent = self.viewer = None
        self.session = ""
        self.sent_at = sent_at  # (id(pair), seq, rect) -> send time, shared for latency
        self.acked = asyncio.Event()
        self.in_flight: set[int] = set()
        self.tasks: list[asyncio.Task] = []
        self.stats: Phase | None = None  # where the viewer counts what arrives

    async def open(self, url: str, token: str, read: bool = True) -> None:
        from websockets.asyncio.client import connect

        self.agent = await connect(f"{url}/ws/agent", max_size=p.MAX_MESSAGE_BYTES,
                                   compression=None)
        await self.agent.send(p.encode_control(p.AgentHello(
            "agent", p.PROTOCOL_VERSION, TECHNICIAN, "load", "load", SCREENS, "")))
        registered = p.decode_control(await self.agent.recv())
        if not isinstance(registered, p.Registered):
            raise RuntimeError(f"agent refused: {registered}")
        self.session = registered.session
        self.viewer, _ = await login(url, token=token)
        await self.viewer.send(p.encode_control(p.Accept(self.session)))
        while not isinstance(p.decode_control(await self.agent.recv()), p.Accepted):
            pass
        self.tasks.append(asyncio.create_task(self._agent_reader()))
        if read:
            self.tasks.append(asyncio.create_task(self._viewer_reader()))

    async def _agent_reader(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.agent:
                message = p.decode_control(data)
                if isinstance(message, p.Ack):
                    self.in_flight.discard(message.seq)
                    self.acked.set()

    async def _viewer_reader(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.viewer:
                if isinstance(data, str):
                    continue
                now = time.perf_counter()
                _, flags, _, _, seq, *_ = p.decode_frame_header(data)
                rect = data[-1]  # the last image byte numbers the rectangle
                sent = self.sent_at.pop((id(self), seq, rect), None)
                stats = self.stats
                if sent is not None and stats is not None:
                    stats.latencies_ms.append((now - sent) * 1000)
                if stats is not None:
                    stats.bytes += len(data)
                    stats.messages += 1
                if flags & p.FLAG_LAST:
                    await self.viewer.send(p.encode_control(p.Ack(self.session, seq)))

    async def send_updates(self, until: float, rect_bytes: int, rects: int,
                           interval_s: float, flow_control: bool = True) -> None:
        frames = [bytearray(_frame(0, rect_bytes, r == rects - 1)) for r in range(rects)]
        for r, frame in enumerate(frames):
            frame[-1] = r
        seq = 0
        # Independent customers do not type in step: each session starts at its own offset
        # within the period (else all of them send in the same millisecond, every period).
        next_at = time.perf_counter() + random.uniform(0, interval_s)
        if interval_s:
            await asyncio.sleep(next_at - time.perf_counter())
        while time.perf_counter() < until:
            if flow_control and len(self.in_flight) >= p.MAX_UPDATES_IN_FLIGHT:
                self.acked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.acked.wait(), 0.5)
                continue
            self.in_flight.add(seq)
            for r, frame in enumerate(frames):
                frame[4:8] = seq.to_bytes(4, "big")
                self.sent_at[(id(self), seq, r)] = time.perf_counter()
                await self.agent.send(bytes(frame))
            seq += 1
            if interval_s:
                next_at += interval_s
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            else:
                await asyncio.sleep(0)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for ws in (self.viewer, self.agent):
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)


async def _phase(phase: Phase, pairs: list[Pair], meter: Meter, seconds: float,
                 rect_bytes: int, rects: int, interval_s: float,
                 extra: list | None = None) -> Phase:
    for pair in pairs:
        pair.stats = phase
    meter.start()
    until = time.perf_counter() + seconds
    start = time.perf_counter()
    senders = [pair.send_updates(until, rect_bytes, rects, interval_s) for pair in pairs]

    async def sample() -> None:
        while time.perf_counter() < until:
            meter.rss_kb()
            await asyncio.sleep(0.1)

    await asyncio.gather(*senders, sample(), *(extra or []))
    phase.seconds = time.perf_counter() - start
    phase.relay_cpu = meter.cpu_percent()
    phase.relay_rss_mb = meter.rss_kb() / 1024
    for pair in pairs:
        pair.stats = None
    await asyncio.sleep(0.5)  # let the last acknowledgements drain
    return phase


def _start_echo() -> tuple[subprocess.Popen, str]:
    """bench/relay_probe.py's echo server in its own process, and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.relay_probe", "--serve-echo"], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("echo listening on "):
        stop(process)
        raise RuntimeError(f"the echo server did not start: {line!r}")
    return process, f"ws://127.0.0.1:{line.split()[-1]}"


async def _probed(phase: asyncio.Future, relay_url: str, echo_url: str,
                  seconds: float) -> Phase:
    """Run `phase` while bench/relay_probe.py measures the relay from its own process."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.relay_probe", "--relay", relay_url, "--echo", echo_url,
        "--seconds", f"{max(0.5, seconds - PROBE_MARGIN_S):g}", cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    result = await phase
    out, _ = await probe.communicate()
    lines = out.decode().strip().splitlines()
    result.probe = json.loads(lines[-1]) if probe.returncode == 0 and lines else {}
    return result


async def run(seconds: float = 5.0, sessions: int = 100) -> LoadResult:
    data = Path(tempfile.mkdtemp(prefix="bench-load-"))
    relay = RelayProcess(data).start()
    echo, echo_url = _start_echo()
    meter = Meter(relay.process.pid)
    sent_at: dict = {}
    pairs: list[Pair] = []
    phases: list[Phase] = []
    try:
        first, token = await login(relay.ws_url)
        await first.close()
        baseline = meter.rss_kb() / 1024

        async def open_pairs(n: int, read: bool = True) -> list[Pair]:
            opened = []
            for _ in range(n):
                pair = Pair(sent_at)
                await pair.open(relay.ws_url, token, read)
                opened.append(pair)
            pairs.extend(opened)
            return opened

        few = await open_pairs(4)
        phases.append(await _phase(Phase("throughput: 100 KB rectangles", 4), few, meter,
                                   seconds, 100_000, 1, 0))
        phases.append(await _phase(Phase("messages: 1 KB rectangles, 10 per update", 4), few,
                                   meter, seconds, 1_000, 10, 0))
        await open_pairs(sessions - len(pairs))
        await asyncio.sleep(0.5)
        with_sessions = meter.rss_kb() / 1024
        phases.append(await _probed(_phase(
            Phase(f"{sessions} sessions typing: 10 updates/s of 6 KB", sessions), pairs,
            meter, seconds, 6_000, 1, 0.1), relay.ws_url, echo_url, seconds))
        stalled = (await open_pairs(1, read=False))[0]
        before = meter.rss_kb() / 1024
        flood = stalled.send_updates(time.perf_counter() + seconds, 200_000, 1, 1 / 30,
                                     flow_control=False)
        phase = await _probed(_phase(
            Phase(f"{sessions} sessions typing + 1 viewer that never reads", sessions + 1),
            pairs[:-1], meter, seconds, 6_000, 1, 0.1, [flood]), relay.ws_url, echo_url,
            seconds)
        growth = max(0.0, meter.peak_rss_kb / 1024 - before)
        phase.note = f"relay RSS peak {meter.peak_rss_kb / 1024:.0f} MB"
        phases.append(phase)
        return LoadResult(phases, baseline,
                          max(0.0, (with_sessions - baseline) * 1024 / sessions), growth)
    finally:
        for pair in pairs:
            await pair.close()
        stop(echo)
        relay.stop()
        import shutil

        shutil.rmtree(data, ignore_errors=True)


def report_lines(result: LoadResult) -> list[str]:
    lines = [
        "## Relay load test (bench/relay_load.py)", "",
        "Scripted agents and viewers in one driver process (each session's updates start at "
        "its own offset in the period, as independent customers do); driver latency is agent "
        "send to viewer receive, measured in that busy process (an upper bound).", "",
        "| phase | sessions | forwarded MB/s | messages/s | relay CPU % | MB/s per core | "
        "messages/s per core | driver latency p50 / p99 ms | relay RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in result.phases:
        lines.append(
            f"| {ph.name} | {ph.sessions} | {ph.mb_per_s:,.1f} | {ph.messages_per_s:,.0f} | "
            f"{ph.relay_cpu:.1f} | {ph.per_core(ph.mb_per_s):,.0f} | "
            f"{ph.per_core(ph.messages_per_s):,.0f} | "
            f"{percentile(ph.latencies_ms, 50):.2f} / {percentile(ph.latencies_ms, 99):.2f} | "
            f"{ph.relay_rss_mb:.0f} |")
    probed = [ph for ph in result.phases if ph.probe]
    if probed:
        lines += [
            "", "The relay's added latency, from bench/relay_probe.py in a separate process "
            f"during the phase: one agent/viewer pair through the relay, {PROBE_RATE} frames "
            f"of {FRAME_BYTES} bytes a second, and the same frames through a minimal websockets "
            "echo server in another process (the baseline: the same two loopback hops and a "
            "Python websockets peer). Added = through the relay minus the echo.", "",
            "| phase | through the relay p50 / p99 ms | echo baseline p50 / p99 ms | "
            "relay added p50 / p99 ms | samples |", "|---|---:|---:|---:|---:|"]
        for ph in probed:
            r = ph.probe
            lines.append(
                f"| {ph.name} | {r['relay_p50']:.2f} / {r['relay_p99']:.2f} | "
                f"{r['echo_p50']:.2f} / {r['echo_p99']:.2f} | "
                f"{r['relay_p50'] - r['echo_p50']:.2f} / {r['relay_p99'] - r['echo_p99']:.2f} | "
                f"{len(r['relay_ms'])} |")
    lines += [
        "",
        f"- relay RSS with no session: {result.baseline_rss_mb:.0f} MB; memory per active "
        f"session: {result.rss_per_session_kb:.0f} KB.",
        f"- a viewer that never reads, its agent sending 200 KB rectangles 30 times a second "
        f"regardless: relay RSS grew {result.stalled_rss_growth_mb:.1f} MB (the relay bounds "
        "unsent frames per viewer; see MAX_PENDING_FRAME_BYTES in relay/server.py).",
        "",
    ]
    throughput = result.phases[0]
    messages = result.phases[1]
    sessions = result.phases[2]
    stalled = result.phases[3]
    checks = [
        ("relay >= 300 MB/s per core", throughput.per_core(throughput.mb_per_s) >= 300,
         f"{throughput.per_core(throughput.mb_per_s):,.0f} MB/s per core"),
        ("relay >= 30,000 messages/s per core",
         messages.per_core(messages.messages_per_s) >= 30_000,
         f"{messages.per_core(messages.messages_per_s):,.0f} messages/s per core"),
        (f"{sessions.sessions} active sessions under 25% of a core", sessions.relay_cpu < 25,
         f"{sessions.relay_cpu:.1f}%"),
        _added_latency_check(sessions),
        ("memory bounded with a viewer that never reads",
         result.stalled_rss_growth_mb < 64, f"+{result.stalled_rss_growth_mb:.1f} MB; "
         f"others' p99 {percentile(stalled.latencies_ms, 99):.2f} ms"),
    ]
    lines += ["| relay target | result | measured |", "|---|---|---|"]
    lines += [f"| {n} | {'met' if ok else '**missed**'} | {got} |" for n, ok, got in checks]
    return [*lines, ""]


def _added_latency_check(phase: Phase) -> tuple[str, bool, str]:
    name = "added latency p99 <= 1 ms"
    r = phase.probe
    if not r:  # the probe could not run: the driver's own figure, an upper bound
        p99 = percentile(phase.latencies_ms, 99)
        return name, p99 <= 1, f"{p99:.2f} ms (driver included; the probe did not run)"
    added = r["relay_p99"] - r["echo_p99"]
    return name, added <= 1, (f"{added:.2f} ms (p99 through the relay {r['relay_p99']:.2f} ms, "
                              f"echo baseline {r['echo_p99']:.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load-test the relay with simulated sessions.")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args(argv)
    print("\n".join(report_lines(asyncio.run(run(args.seconds, args.sessions)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
