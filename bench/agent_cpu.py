"""The agent's CPU on one workload, this checkout against another, alternated in one run.

    python -m bench.agent_cpu --before DIR [--workload typing] [--rounds 3] [--seconds 8]

One Xvfb, one relay and the workload (bench/desktop.py) for the whole run; each round runs
this checkout's agent and DIR's (e.g. `git worktree add --detach DIR main`), one after the
other, each fresh with a scripted viewer in control, the order reversed every other round
(whoever goes second sees the workload warmer). Prints, per run, the agent's CPU (% of one
core, from /proc), the updates a second the viewer decoded, and the load average: on this
shared 2-core machine only figures of the same run compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import desktop as d
from bench.ours import RelayProcess, SpotlightViewer, start_agent

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_S = 1.5


def _load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


async def one_run(screen: d.Desktop, relay: RelayProcess, root: Path, seconds: float
                  ) -> tuple[float, float]:
    """The agent of checkout ``root`` in control for ``seconds``: its CPU %, updates/s."""
    process = start_agent(screen, relay, root=root)
    viewer = SpotlightViewer()
    try:
        await viewer.connect(relay.ws_url)
        await viewer.in_control()
        await asyncio.sleep(WARM_UP_S)
        meter, updates0 = d.Meter(process.pid), viewer.updates.count
        meter.start()
        await asyncio.sleep(seconds)
        return meter.cpu_percent(), (viewer.updates.count - updates0) / seconds
    finally:
        await viewer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        d.stop(process)


async def run(before: Path, workload: str, rounds: int, seconds: float
              ) -> dict[str, list[float]]:
    screen = d.Desktop().start()
    data = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    relay = RelayProcess(data).start()
    cpu: dict[str, list[float]] = {"ours": [], "before": []}
    load = d.WORKLOADS[workload](screen, d.CLIP_SECONDS)
    load.start()
    try:
        await asyncio.sleep(1.0)
        for n in range(rounds):
            order = [("ours", ROOT), ("before", before)]
            for peer, root in order if n % 2 == 0 else order[::-1]:
                at = _load()
                percent, updates = await one_run(screen, relay, root, seconds)
                cpu[peer].append(percent)
                print(f"round {n + 1} {peer:6} agent {percent:5.1f}% of a core, "
                      f"{updates:5.1f} updates/s, load {at} -> {_load()}", flush=True)
    finally:
        load.stop()
        relay.stop()
        screen.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--workload", default="typing", choices=sorted(d.WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    cpu = asyncio.run(run(args.before.resolve(), args.workload, args.rounds, args.seconds))
    for peer, values in cpu.items():
        print(f"{peer:6} median {statistics.median(values):.1f}% "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
