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
         "--sessions", "4", "--no-slow-links", "--no-browser", "--no-memory", "--out", str(out)],
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


def _table_rows(section: list[str]) -> list[list[str]]:
    """The body rows of every markdown table in `section`, as cells (header rows dropped)."""
    rows, previous = [], ""
    for line in section:
        if line.startswith("|") and not line.startswith("|---") and not previous.startswith("|"):
            previous = line  # a header
            continue
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        previous = line
    return rows


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_issue_14_benchmarks_print_slow_link_browser_and_memory_tables(tmp_path):
    """A tiny run of the slow links, the browser and the memory soak prints sane numbers."""
    missing = [tool for tool in (*TOOLS, "websockify", "chromium") if shutil.which(tool) is None]
    missing += [f for f in ("/usr/share/novnc/core/rfb.js",) if not Path(f).exists()]
    if missing:
        pytest.fail(f"the benchmark needs {', '.join(missing)}: run bench/run.sh or ./dev test")
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--workloads", "", "--no-relay-load",
         "--clip-seconds", "0.2", "--slow-presses", "3", "--slow-seconds", "1",
         "--slow-levels", "3", "--browser-presses", "3", "--browser-seconds", "1",
         "--memory-seconds", "1", "--soak-minutes", "0.05", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=540, stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()

    # Slow links: per link, x11vnc and ours, with the video and without, each with a
    # latency, a first-image time and rates.
    slow = _section(text, "Slow links")
    peers = [row for row in _table_rows(slow) if len(row) == 7]
    assert len(peers) == 8, slow  # 2 links x (x11vnc at one level, ours) x (video, none)
    for row in peers:
        # p50 and p95 ms; of 3 keys at least 2 were echoed (5000 is a key never echoed)
        assert 0 < _number(row[1]) < 5000 and 0 < _number(row[2]) <= 5000, row
        assert 0 < _number(row[3]) < 60, row  # first full image, s
        assert _number(row[4]) >= 0 and _number(row[6]) >= 0, row  # video updates/s, KB/s
    assert sum(_number(row[6]) > 0 for row in peers) >= 4, peers  # the video runs had bytes
    verdicts = [row for row in _table_rows(slow) if len(row) == 3]
    assert verdicts and all(row[1] in ("met", "**missed**") for row in verdicts), verdicts

    # Browser: the floor, ours and noVNC each timed; ours and noVNC delivered frames.
    browser = _section(text, "Browser")
    measured = [row for row in _table_rows(browser) if len(row) == 4]
    latencies = [row for row in measured if all(_number(c) == _number(c) for c in row[1:])]
    assert len(latencies) >= 2, browser  # p50 and p95 rows: three numbers each
    p50, p95 = latencies[:2]
    assert all(0 < _number(cell) < 2000 for cell in p50[1:]), p50  # 2000: never drawn
    assert all(0 < _number(cell) <= 2000 for cell in p95[1:]), p95
    motion = [row for row in measured if row[1] == "-"]
    assert motion and all(_number(cell) > 0 for row in motion for cell in row[2:]), motion

    # Memory: both peers' peaks, and the soak's slope.
    memory = _section(text, "Agent memory")
    peaks = [row for row in _table_rows(memory) if len(row) == 4]
    assert len(peaks) == 2 and all(_number(c) > 1 for row in peaks for c in row[1:3]), peaks
    soaks = [row for row in _table_rows(memory) if len(row) == 7]
    assert len(soaks) == 2, memory
    for row in soaks:
        assert _number(row[2]) >= 2 and _number(row[3]) > 1, row  # samples, first MB
        assert re.fullmatch(r"-?\d+\.\d+", row[5]), row  # the slope, MB/min
