"""The agent's memory against x11vnc's: peak RSS while typing and in full motion, and a soak.

    python -m bench.memory [--seconds 6] [--soak-minutes 10] [--soak-workload typing]
                           [--before DIR] [--panel tk|log] [--tls]

Each peer runs fresh per workload with its scripted viewer on the loopback (ours through the
relay), so the peak (VmHWM) is that of start-up plus this workload. The soak keeps one
session going for `--soak-minutes`, samples the resident set (VmRSS) every SOAK_SAMPLE_S and
reports its least-squares slope in MB/min, leaving out the first SOAK_SETTLE_FRACTION of the
samples (start-up and the first full images are not growth). `--before DIR` also runs the
agent of another checkout (e.g. main's: `git worktree add /tmp/before main`) as "ours before",
right after ours on the same workload, so that both see the same load. `--panel log` runs
the agents without a window (the lower bound of any panel: what the exe's Win32 panel costs
cannot be measured here). `--tls` serves wss:// (as shipped; the bench's default link is
ws://, for which the agent makes no TLS context at all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import desktop as d
from bench.measure import Viewer
from bench.ours import ROOT, RelayProcess, SpotlightViewer, start_agent
from bench.rfb import X11VNC_TUNING, RfbViewer, start_x11vnc

X11VNC_LEVEL = 7  # 4:4:4 q86, as the main runs
PANEL = "tk"  # the customer's panel (panel.py) shown on the Xvfb, and so counted
BEFORE = "ours before"
SOAK_SAMPLE_S = 1.0
SOAK_SETTLE_FRACTION = 0.1
PEAK_WORKLOADS = ("typing", "motion")
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, where Python names none


@dataclass
class MemoryResult:
    peer: str
    peak_mb: dict[str, float] = field(default_factory=dict)  # workload -> VmHWM
    # workload -> resident MB by kind at the end of it: anonymous (heaps, Python objects),
    # file-backed (libraries, fonts), shared (ours: the grab and the viewer's copy, MIT-SHM)
    parts_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    soak: list[tuple[float, float]] = field(default_factory=list)  # (minutes, MB)


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MB) samples; nan for fewer than two."""
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return float("nan")
    return sum((t - mean_t) * (m - mean_m) for t, m in samples) / spread


@contextlib.asynccontextmanager
async def session(peer: str, screen: d.Desktop, relay: RelayProcess,
                  before: Path | None = None, panel: str = PANEL):
    """A running server (agent or x11vnc) with its scripted viewer; yields its Meter."""
    viewer: Viewer
    if peer in ("ours", BEFORE):
        root = before if peer == BEFORE and before is not None else ROOT
        process = start_agent(screen, relay, env={"SPOTLIGHT_PANEL": panel}, root=root)
        viewer = SpotlightViewer()
        connect = viewer.connect(relay.ws_url)
    else:
        process, port = start_x11vnc(screen, X11VNC_TUNING)
        viewer = RfbViewer(X11VNC_LEVEL)
        connect = viewer.connect(port)
    try:
        await connect
        await asyncio.wait_for(viewer.first_update.wait(), 30)
        yield d.Meter(process.pid)
    finally:
        await viewer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        d.stop(process)


def resident_parts_mb(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and RssShmem of a process, in MB (empty once it has gone)."""
    parts = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                parts[name[3:].lower()] = int(value.split()[0]) / 1024
    return parts


async def peak(peer: str, screen: d.Desktop, relay: RelayProcess, seconds: float,
               **agent: Any) -> tuple[float, dict[str, float]]:
    """VmHWM in MB after `seconds` of the running workload, and the resident parts then."""
    async with session(peer, screen, relay, **agent) as meter:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            meter.rss_kb()
            await asyncio.sleep(0.1)
        return meter.hwm_kb() / 1024, resident_parts_mb(meter.pid)


async def soak(peer: str, screen: d.Desktop, relay: RelayProcess, minutes: float,
               **agent: Any) -> list[tuple[float, float]]:
    samples = []
    async with session(peer, screen, relay, **agent) as meter:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < minutes * 60:
            samples.append((elapsed / 60, meter.rss_kb() / 1024))
            await asyncio.sleep(SOAK_SAMPLE_S)
    return samples


async def run(screen: d.Desktop, relay: RelayProcess, seconds: float, soak_minutes: float,
              soak_workload: str = "typing", clip_seconds: float = d.CLIP_SECONDS,
              before: Path | None = None, panel: str = PANEL) -> list[MemoryResult]:
    peers = ("x11vnc", "ours", BEFORE) if before is not None else ("x11vnc", "ours")
    results = {peer: MemoryResult(peer) for peer in peers}
    agent = {"before": before, "panel": panel}
    workloads = list(PEAK_WORKLOADS)
    if soak_minutes > 0 and soak_workload not in workloads:
        workloads.append(soak_workload)
    for name in workloads:
        workload = d.WORKLOADS[name](screen, clip_seconds)
        workload.start()
        try:
            await asyncio.sleep(1.0)
            for peer, result in results.items():
                if name in PEAK_WORKLOADS:
                    print(f"  memory {name}: {peer} ...", file=sys.stderr, flush=True)
                    result.peak_mb[name], result.parts_mb[name] = await peak(
                        peer, screen, relay, seconds, **agent)
                if soak_minutes > 0 and name == soak_workload:
                    print(f"  memory soak ({name}, {soak_minutes:g} min): {peer} ...",
                          file=sys.stderr, flush=True)
                    result.soak = await soak(peer, screen, relay, soak_minutes, **agent)
        finally:
            workload.stop()
    return list(results.values())


def report_lines(results: list[MemoryResult], soak_workload: str = "typing") -> list[str]:
    by_peer = {r.peer: r for r in results}
    x, o, b = by_peer["x11vnc"], by_peer["ours"], by_peer.get(BEFORE)
    lines = ["## Agent memory (issue 14)", "",
             "Peak resident memory (VmHWM: start-up plus the workload) of a fresh agent and a "
             "fresh x11vnc per workload, each with its scripted viewer on the loopback.", "",
             f"| workload | x11vnc MB | ours MB |{' ours before MB |' if b else ''} "
             "target (ours <= 60 MB) |", f"|---|---:|---:|{'---:|' if b else ''}---|"]
    for name in PEAK_WORKLOADS:
        mine = o.peak_mb.get(name, float("nan"))
        then = f" {b.peak_mb.get(name, float('nan')):.1f} |" if b else ""
        lines.append(f"| {name} | {x.peak_mb.get(name, float('nan')):.1f} | {mine:.1f} |"
                     f"{then} {'met' if mine <= 60 else '**missed**'} |")
    lines += ["", "Resident memory by kind at the end of each run (MB): anonymous (heaps, "
              "Python objects), file-backed (libraries, fonts), shared (the X11 grab images; "
              "ours: the grab and the viewer's copy of the screen).", "",
              "| workload | peer | anonymous | file | shared |", "|---|---|---:|---:|---:|"]
    for name in PEAK_WORKLOADS:
        for r in results:
            parts = r.parts_mb.get(name, {})
            lines.append(f"| {name} | {r.peer} | {parts.get('anon', float('nan')):.1f} | "
                         f"{parts.get('file', float('nan')):.1f} | "
                         f"{parts.get('shmem', float('nan')):.1f} |")
    lines.append("")
    if o.soak or x.soak:
        lines += [f"Soak ({soak_workload}): VmRSS every {SOAK_SAMPLE_S:g} s; the slope is a "
                  "least-squares fit leaving out the first "
                  f"{SOAK_SETTLE_FRACTION:.0%} of the samples.", "",
                  "| peer | minutes | samples | first MB | last MB | slope MB/min | MB/hour |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            if not r.soak:
                continue
            settled = r.soak[int(len(r.soak) * SOAK_SETTLE_FRACTION):]
            slope = slope_mb_per_min(settled)
            lines.append(f"| {r.peer} | {r.soak[-1][0]:.1f} | {len(r.soak)} | "
                         f"{r.soak[0][1]:.1f} | {r.soak[-1][1]:.1f} | {slope:.3f} | "
                         f"{slope * 60:.1f} |")
        lines.append("")
    return lines


def trust_test_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and the system's CA bundle with it
    added made this process's and its children's (the agents') default store
    (SSL_CERT_FILE): a wss:// agent then loads as many CAs as on a customer's machine."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, timeout=60, check=True)
    system = Path(ssl.get_default_verify_paths().cafile or SYSTEM_CA_FILE)
    bundle = folder / "ca-bundle.pem"
    bundle.write_text((system.read_text() if system.exists() else "") + cert.read_text())
    os.environ["SSL_CERT_FILE"] = str(bundle)
    return cert, key


async def _standalone(args: argparse.Namespace) -> list[MemoryResult]:
    screen = d.Desktop().start()
    data = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    tls = trust_test_certificate(data) if args.tls else None
    relay = RelayProcess(data / "relay", tls).start()
    try:
        return await run(screen, relay, args.seconds, args.soak_minutes, args.soak_workload,
                         args.clip_seconds, args.before, args.panel)
    finally:
        relay.stop()
        screen.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The agent's memory against x11vnc's.")
    parser.add_argument("--seconds", type=float, default=6.0, help="per peak run")
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="0: no soak")
    parser.add_argument("--soak-workload", choices=sorted(d.WORKLOADS), default="typing")
    parser.add_argument("--clip-seconds", type=float, default=d.CLIP_SECONDS)
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="also run the agent of this checkout (e.g. `git worktree add "
                             "DIR main`) as 'ours before', right after ours, in the same run")
    parser.add_argument("--tls", action="store_true",
                        help="the relay serves wss:// (a self-signed certificate added to the "
                             "system's CAs): the agents' link as shipped, not ws://")
    parser.add_argument("--panel", choices=("tk", "log"), default=PANEL,
                        help="the agents' SPOTLIGHT_PANEL (log: no window, the lower bound)")
    args = parser.parse_args(argv)
    d.require("Xvfb", "xterm", "xdotool", "x11vnc", "ffmpeg", "ffplay")
    print("\n".join(report_lines(asyncio.run(_standalone(args)), args.soak_workload)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
