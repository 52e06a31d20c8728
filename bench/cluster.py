"""Relays on one PostgreSQL: per-session cost with 1, 2 and 3 relays, and the store's queries.

    python -m bench.cluster [--sessions 60] [--seconds 5] [--relays 1,2,3] [--count-sessions 20]

For each relay count N: deploy/cluster.py's PostgreSQL, N relays and HAProxy; one support
person per relay (bench-1 ... bench-N), each connected straight to the relay HAProxy would
pick for them (routing is tested in tests/test_cluster.py; here only the relays' cost counts),
and the sessions split evenly among them. Sessions type as in bench/relay_load.py (10 updates
a second of 6 KB each, acknowledged). Measured from /proc: the relays' CPU and memory, and
PostgreSQL's CPU (all its processes), while the sessions type.

Queries: one more relay on the same database, whose store is wrapped (``CountingStore``,
behind relay.stores.Store) to count every call by method, plus relay.pgstore's own count of
SQL statements. Phases: idle, sessions opening (agent, viewer, accept, take control), held
while typing, ended by the support person; each phase less the idle rate.

This machine has 2 cores shared with other work: more relays here cannot show more total
capacity, only that the shared store adds no per-session cost. The model at the end scales
the per-session figures to bigger machines, with the assumptions it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import protocol as p
from bench.desktop import Meter
from bench.relay_load import SCREENS, Pair, Phase

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy"))
from cluster import Cluster, RelayInstance  # noqa: E402  (deploy/ is not a package)
from localpg import free_port  # noqa: E402

PASSWORD = "bench-password-1"
TYPING = dict(rect_bytes=6_000, rects=1, interval_s=0.1)  # bench/relay_load.py's sessions
COUNT_HOLD_S = 5.0
# The model's assumptions (printed with it): a relay is one asyncio thread, so one core each;
# kept below this share of it so that bursts and logins have room.
CORE_BUDGET = 0.70
PG_QUERIES_PER_CORE_S = 5_000  # simple indexed statements a PostgreSQL core sustains (assumed)


# --- the counting store (runs inside a relay process) -------------------------------------


class CountingStore:
    """A relay.stores.Store that counts each call by method, then hands it to the real one."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        counted.__name__ = name
        return counted

    def snapshot(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "statements": getattr(self._store, "queries", 0),
                "at": time.monotonic()}


def counting_relay(argv: list[str], counts: Path) -> int:
    """``python -m relay`` with its store wrapped; SIGUSR1 writes the counts to ``counts``."""
    import relay.server
    from relay.__main__ import main as relay_main

    opened: list[CountingStore] = []
    real_open = relay.server.open_store

    async def open_counting(*args: Any, **kwargs: Any) -> CountingStore:
        store = CountingStore(await real_open(*args, **kwargs))
        opened.append(store)
        return store

    def write(*_: object) -> None:
        if opened:
            counts.write_text(json.dumps(opened[0].snapshot()))

    relay.server.open_store = open_counting
    signal.signal(signal.SIGUSR1, write)
    return relay_main(argv)


# --- sessions ----------------------------------------------------------------------------


async def viewer_login(url: str, technician: str, token: str = "") -> tuple[Any, str]:
    """A viewer websocket on the support person's route, after its welcome; and the token."""
    from websockets.asyncio.client import connect

    ws = await connect(f"{url}/ws/viewer?technician={technician}", compression=None,
                       max_size=p.MAX_MESSAGE_BYTES, open_timeout=30)
    await ws.send(p.encode_control(p.ViewerHello(
        "viewer", p.PROTOCOL_VERSION, "" if token else technician, "" if token else PASSWORD,
        token)))
    while True:
        message = p.decode_control(await asyncio.wait_for(ws.recv(), 30))
        if isinstance(message, p.Welcome):
            return ws, message.token
        if isinstance(message, p.Error):
            raise RuntimeError(f"login refused: {message.message}")


class RoutedPair(Pair):
    """bench/relay_load.py's session, with ``?technician=`` as agents and viewers send it."""

    async def open_routed(self, url: str, technician: str, token: str,
                          control: bool = False) -> None:
        from websockets.asyncio.client import connect

        self.agent = await connect(f"{url}/ws/agent?technician={technician}",
                                   max_size=p.MAX_MESSAGE_BYTES, compression=None)
        await self.agent.send(p.encode_control(p.AgentHello(
            "agent", p.PROTOCOL_VERSION, technician, "load", "load", SCREENS, "")))
        registered = p.decode_control(await self.agent.recv())
        if not isinstance(registered, p.Registered):
            raise RuntimeError(f"agent refused: {registered}")
        self.session = registered.session
        self.viewer, _ = await viewer_login(url, technician, token)
        await self.viewer.send(p.encode_control(p.Accept(self.session)))
        while not isinstance(p.decode_control(await self.agent.recv()), p.Accepted):
            pass
        if control:
            await self.viewer.send(p.encode_control(p.TakeControl(self.session)))
            while not isinstance(p.decode_control(await self.agent.recv()), p.Control):
                pass
        self.tasks.append(asyncio.create_task(self._agent_reader()))
        self.tasks.append(asyncio.create_task(self._viewer_reader()))

    async def end(self) -> None:
        await self.viewer.send(p.encode_control(p.End(self.session, "")))


async def open_sessions(targets: list[tuple[str, str, str]], sessions: int,
                        control: bool = False) -> list[RoutedPair]:
    """``sessions`` sessions spread evenly over (url, technician, token) targets."""
    pairs, sent_at = [], {}
    for n in range(sessions):
        url, technician, token = targets[n % len(targets)]
        pair = RoutedPair(sent_at)
        await pair.open_routed(url, technician, token, control)
        pairs.append(pair)
    return pairs


async def type_for(pairs: list[RoutedPair], seconds: float) -> None:
    until = time.perf_counter() + seconds
    await asyncio.gather(*(pair.send_updates(until, **TYPING) for pair in pairs))


def _process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    return [pid, *(q for child in children for q in _process_tree(int(child)))]


# --- one cluster size ----------------------------------------------------------------------


@dataclass
class Size:
    relays: int
    sessions: int
    relay_cpu: list[float] = field(default_factory=list)  # % of a core, each relay
    relay_rss_mb: list[float] = field(default_factory=list)  # growth with the sessions
    postgres_cpu: float = 0.0
    forwarded: int = 0
    seconds: float = 0.0

    @property
    def cpu_per_session(self) -> float:
        return sum(self.relay_cpu) / self.sessions

    @property
    def cpu_per_typing_session(self) -> float:
        """CPU % per session at the full 10 updates/s: a driver that fell behind on a busy
        machine forwarded fewer, and the relays' CPU follows what they forwarded."""
        per_s = self.forwarded / self.seconds if self.seconds else 0
        return sum(self.relay_cpu) / per_s * 10 if per_s else float("nan")

    @property
    def kb_per_session(self) -> float:
        return sum(self.relay_rss_mb) * 1024 / self.sessions


async def measure_size(cluster: Cluster, sessions: int, seconds: float) -> Size:
    relays = cluster.relays
    targets = []
    for n, relay in enumerate(relays, 1):
        url = f"ws://127.0.0.1:{relay.port}"
        ws, token = await viewer_login(url, f"bench-{n}")
        await ws.close()
        targets.append((url, f"bench-{n}", token))
    meters = [Meter(relay.pid) for relay in relays]
    before = [m.rss_kb() for m in meters]
    pairs = await open_sessions(targets, sessions)
    try:
        await asyncio.sleep(0.5)
        after = [m.rss_kb() for m in meters]
        assert cluster.postgres.process is not None
        pg_meters = [Meter(pid) for pid in _process_tree(cluster.postgres.process.pid)]
        for meter in [*meters, *pg_meters]:
            meter.start()
        size = Size(len(relays), sessions)
        stats = Phase("typing", sessions)
        for pair in pairs:
            pair.stats = stats
        started = time.perf_counter()
        await type_for(pairs, seconds)
        size.seconds = time.perf_counter() - started
        size.relay_cpu = [m.cpu_percent() for m in meters]
        size.postgres_cpu = sum(m.cpu_percent() for m in pg_meters)
        size.relay_rss_mb = [max(0, a - b) / 1024 for a, b in zip(after, before, strict=True)]
        size.forwarded = stats.messages
        return size
    finally:
        for pair in pairs:
            await pair.close()


def run_size(relays: int, sessions: int, seconds: float) -> Size:
    cluster = Cluster.start(relays)
    try:
        for n in range(1, relays + 1):
            cluster.cli("add-technician", f"bench-{n}", "--name", f"Bench {n}", password=PASSWORD)
        return asyncio.run(measure_size(cluster, sessions, seconds))
    finally:
        cluster.stop()


# --- the store's queries --------------------------------------------------------------------


@dataclass
class Counts:
    sessions: int
    idle_per_s: dict[str, float]
    phases: dict[str, dict[str, float]]  # phase -> method -> calls per session (idle removed)
    statements: dict[str, float]  # phase -> SQL statements per session (idle removed)
    held_s: float


def _delta(a: dict, b: dict) -> tuple[Counter, int, float]:
    calls = Counter(b["calls"])
    calls.subtract(a["calls"])
    return calls, b["statements"] - a["statements"], b["at"] - a["at"]


async def count_queries(cluster: Cluster, sessions: int) -> Counts:
    relay = RelayInstance("relay-count", free_port())
    counts = Path(tempfile.mkdtemp(prefix="bench-counts-")) / "counts.json"
    relay.process = subprocess.Popen(
        [sys.executable, "-m", "bench.cluster", "--counting-relay", str(counts), "serve",
         "--host", "127.0.0.1", "--port", str(relay.port), "--relay-id", relay.name],
        cwd=ROOT, env=cluster.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)
    await asyncio.to_thread(cluster.wait_healthy, [relay])

    async def snapshot() -> dict:
        counts.unlink(missing_ok=True)
        relay.process.send_signal(signal.SIGUSR1)
        while not counts.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # written whole (one small write)
        return json.loads(counts.read_text())

    url = f"ws://127.0.0.1:{relay.port}"
    try:
        ws, token = await viewer_login(url, "bench-1")
        await ws.close()
        start = await snapshot()
        await asyncio.sleep(COUNT_HOLD_S)
        idle_end = await snapshot()
        idle, idle_statements, idle_s = _delta(start, idle_end)
        idle_rate = {name: n / idle_s for name, n in idle.items()}
        statement_rate = idle_statements / idle_s
        pairs = await open_sessions([(url, "bench-1", token)], sessions, control=True)
        opened = await snapshot()
        await type_for(pairs, COUNT_HOLD_S)
        held = await snapshot()
        for pair in pairs:
            await pair.end()
        while True:  # every session gone and its ledger rows written, then count
            health = await _healthz(relay.port)
            if health["sessions"] == 0 and health["ledger_queue"] == 0:
                break
            await asyncio.sleep(0.1)
        ended = await snapshot()
        for pair in pairs:
            await pair.close()
    finally:
        relay.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            relay.process.wait(timeout=30)
        if relay.process.poll() is None:
            relay.process.kill()
            relay.process.wait()
    phases, statements = {}, {}
    for name, a, b in (("open", idle_end, opened), ("held", opened, held), ("end", held, ended)):
        calls, sql, seconds = _delta(a, b)
        per_second = name == "held"  # held: per session and second, the rest per session
        scale = sessions * (seconds if per_second else 1)
        phases[name] = {method: (n - idle_rate.get(method, 0) * seconds) / scale
                        for method, n in calls.items() if n and method != "ping"}
        statements[name] = (sql - statement_rate * seconds) / scale
    return Counts(sessions, idle_rate, phases, statements, COUNT_HOLD_S)


async def _healthz(port: int) -> dict:
    def get() -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            return json.loads(reply.read())

    return await asyncio.to_thread(get)


def run_counts(sessions: int) -> Counts:
    cluster = Cluster.start(1)
    try:
        cluster.cli("add-technician", "bench-1", "--name", "Bench 1", password=PASSWORD)
        return asyncio.run(count_queries(cluster, sessions))
    finally:
        cluster.stop()


# --- the report ------------------------------------------------------------------------------


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return (f"Machine: {os.cpu_count()} cores, load average {one:.2f} (1 min) / {five:.2f} "
            "(5 min) when the run ended: shared with other work, so CPU figures are upper "
            "bounds.")


def report_lines(sizes: list[Size], counts: Counts | None, seconds: float) -> list[str]:
    lines = ["## Several relays on one PostgreSQL (bench/cluster.py)", "", load_line(), "",
             f"Sessions typing (10 updates/s of 6 KB) for {seconds:g} s, split evenly over the "
             "relays, one support person per relay.", "",
             "| relays | sessions | updates forwarded/s (of 10 per session) | relay CPU % "
             "(each) | CPU % of a core per session | the same at 10 updates/s | relay RSS KB "
             "per session | PostgreSQL CPU % |",
             "|---:|---:|---:|---|---:|---:|---:|---:|"]
    for s in sizes:
        lines.append(
            f"| {s.relays} | {s.sessions} | {s.forwarded / s.seconds:,.0f} | "
            f"{' / '.join(f'{c:.1f}' for c in s.relay_cpu)} | {s.cpu_per_session:.3f} | "
            f"{s.cpu_per_typing_session:.3f} | {s.kb_per_session:.0f} | "
            f"{s.postgres_cpu:.1f} |")
    if counts is not None:
        lines += ["", f"Store calls per session ({counts.sessions} sessions through a relay "
                  "whose store counts every call; idle rate removed; `held` is per session "
                  "and second):", "",
                  "| phase | store calls by method | all calls | SQL statements |",
                  "|---|---|---:|---:|"]
        for phase, calls in counts.phases.items():
            shown = ", ".join(f"{m} {n:.2f}" for m, n in sorted(calls.items()) if n >= 0.005)
            shown = shown.replace("valid_tokens", "valid_tokens (every viewer's login, "
                                  "in one query a second)") if phase == "held" else shown
            lines.append(f"| {phase} | {shown or '-'} | {sum(calls.values()):.2f} | "
                         f"{counts.statements[phase]:.2f} |")
        idle = ", ".join(f"{m} {n:.2f}" for m, n in sorted(counts.idle_per_s.items())
                         if n >= 0.005)
        lines += ["", f"Idle relay, per second: {idle or 'nothing'} (heartbeat and the sweep "
                  "of dead relays' sessions: every 5 s, whatever the number of sessions). "
                  "The /healthz polls of this bench (ping) are left out; each phase's "
                  "heartbeat and stale are what the idle rate did not remove."]
    lines += model_lines(sizes, counts)
    return [*lines, ""]


def model_lines(sizes: list[Size], counts: Counts | None) -> list[str]:
    if not sizes:
        return []
    # The dearest measured at the full typing rate: conservative.
    per_session = max((s.cpu_per_typing_session for s in sizes
                       if s.cpu_per_typing_session > 0), default=0.0)
    kb = max(s.kb_per_session for s in sizes)
    per_relay = int(CORE_BUDGET * 100 / per_session) if per_session > 0 else 0
    held = sum(counts.phases["held"].values()) if counts else 0.0
    lifecycle = (sum(counts.phases["open"].values()) + sum(counts.phases["end"].values())
                 if counts else 0.0)
    lines = ["", "Model (not measured): one relay per core (a relay is one asyncio thread), "
             f"each loaded to {CORE_BUDGET:.0%} of its core at the dearest per-session CPU "
             f"measured above ({per_session:.3f}% of a core, each relay's fixed cost "
             "included); relay memory from the per-session growth only (plus about 60 MB a "
             f"relay); PostgreSQL at an assumed "
             f"{PG_QUERIES_PER_CORE_S:,} simple statements per core and second; sessions of "
             "30 minutes (open and end spread over that).", "",
             "| relays (cores) | sessions | relay memory MB | store calls/s | PostgreSQL cores |",
             "|---:|---:|---:|---:|---:|"]
    for relays in (1, 2, 3, 4, 8, 16, 32):
        sessions = relays * per_relay
        calls = sessions * (held + lifecycle / 1800)
        lines.append(f"| {relays} | {sessions:,} | {sessions * kb / 1024:,.0f} | "
                     f"{calls:,.0f} | {calls / PG_QUERIES_PER_CORE_S:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--counting-relay"]:
        return counting_relay(argv[2:], Path(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60, help="typing sessions per size")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--relays", default="1,2,3", help="relay counts to measure")
    parser.add_argument("--count-sessions", type=int, default=20,
                        help="sessions for the query count (0: skip it)")
    args = parser.parse_args(argv)
    print(run_report(args.sessions, args.seconds, [int(n) for n in args.relays.split(",") if n],
                     args.count_sessions))
    return 0


def run_report(sessions: int, seconds: float, relay_counts: list[int],
               count_sessions: int) -> str:
    sizes = []
    for relays in relay_counts:
        print(f"  cluster: {relays} relay(s), {sessions} sessions ...", file=sys.stderr,
              flush=True)
        sizes.append(run_size(relays, sessions, seconds))
    counts = None
    if count_sessions:
        print(f"  cluster: store calls of {count_sessions} sessions ...", file=sys.stderr,
              flush=True)
        counts = run_counts(count_sessions)
    return "\n".join(report_lines(sizes, counts, seconds))


if __name__ == "__main__":
    sys.exit(main())
