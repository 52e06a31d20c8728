"""The benchmark runs end to end on a very short workload and prints sane numbers (no speeds)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.x11

TOOLS = ("Xvfb", "xterm", "xdotool", "x11vnc", "ffmpeg", "ffplay")


def _section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {heading}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[start:end]


def _row(section: list[str], label: str) -> list[str]:
    row = next(line for line in section if line.startswith(f"| {label}"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def _number(cell: str) -> float:
    return float(cell.replace(",", "")) if re.fullmatch(r"[\d,]+(\.\d+)?", cell) else math.nan


def test_benchmark_prints_tables_for_both_peers_and_the_relay(tmp_path):
    """A one-second run of idle and motion against x11vnc and ours writes every table."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the benchmark needs {', '.join(missing)}: run bench/run.sh or ./dev test")
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--seconds", "1", "--presses", "3",
         "--workloads", "idle,motion", "--clip-seconds", "0.2", "--load-seconds", "0.5",
         "--sessions", "4", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in result.stdout
    assert "## Machine" in text and "x11vnc" in text

    motion = _section(text, "motion")
    wire = _row(motion, "wire KB/s")
    assert _number(wire[1]) > 0 and _number(wire[2]) > 0, wire
    updates = _row(motion, "updates/s")
    assert _number(updates[1]) > 0 and _number(updates[2]) > 0, updates
    cpu = _row(motion, "server CPU")
    assert _number(cpu[1]) >= 0 and _number(cpu[2]) > 0, cpu
    assert any(line.startswith("JPEG rectangles as received") for line in motion), motion
    rss = _row(motion, "server peak RSS")
    assert _number(rss[1]) > 1 and _number(rss[2]) > 1, rss
    # x11vnc also ran at the quality levels either side of our motion JPEG, each with its PSNR
    for run in ("x11vnc level 5", "x11vnc level 4", "ours"):
        row = _row(motion, f"{run} |")
        assert _number(row[4]) > 0, row  # updates/s
        assert all(_number(db) > 10 for db in row[2].split(" / ")), row  # PSNR RGB / luma
    targets = _section(text, "Targets of issue 6")
    assert any(line.startswith("| motion: bytes/s < x11vnc at comparable quality")
               for line in targets), targets

    idle = _section(text, "idle")
    for p in ("p50", "p99"):
        latency = _row(idle, f"keypress to screen {p}")
        assert 0 < _number(latency[1]) < 2000 and 0 < _number(latency[2]) < 2000, latency

    load = _section(text, "Relay load test")
    throughput = _row(load, "throughput")
    assert _number(throughput[2]) > 0 and _number(throughput[3]) > 0, throughput
    assert any(line.startswith("| 4 sessions typing + 1 viewer that never reads") for line in load)
    # the sessions phase is in the load table and in the relay probe's table (vs the echo)
    assert sum(line.startswith("| 4 sessions typing: 10 updates/s") for line in load) == 2, load
    assert any("echo baseline" in line for line in load), load
    assert "## Targets of issue 6" in text
