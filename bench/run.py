"""Run every workload against x11vnc and against our relay + agent; print and write the tables.

    python -m bench.run [--seconds 6] [--presses 60] [--workloads idle,typing,scrolling,motion]
                        [--out bench/RESULTS.md] [--relay-load | --no-relay-load]
                        [--slow-links | --no-slow-links] [--browser | --no-browser]
                        [--memory | --no-memory] [--soak-minutes 10]
                        [--cluster [--cluster-sessions 60] [--cluster-relays 1,2,3]]

bench/run.sh installs what this needs and calls it; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import screen_pacing as pacing
from bench import desktop as d
from bench.measure import Viewer, census_text, key_latencies, percentile
from bench.ours import RelayProcess, SpotlightViewer, start_agent
from bench.rfb import X11VNC_TIGHT_LEVELS, X11VNC_TUNING, RfbViewer, start_x11vnc
from bench.slow_link import levels_arg as slow_link_levels

ROOT = Path(__file__).resolve().parent.parent
JPEG_QUALITY = pacing.JPEG_QUALITIES[0]  # x11vnc gets the agent's best quality, at 4:4:4
MOTION_QUALITY = pacing.MOTION_JPEG_QUALITY  # what the agent sends (4:2:0) during motion


def closest_level(quality: int, sampling: str) -> int:
    """The lowest Tight quality level at which x11vnc sends JPEG at least as good as
    (`quality`, `sampling`): no lower quality, no coarser chroma."""
    fineness = {"4:2:0": 0, "4:2:2": 1, "4:4:4": 2}
    return min(level for level, (s, q) in X11VNC_TIGHT_LEVELS.items()
               if q >= quality and fineness[s] >= fineness[sampling])


# x11vnc's main run: 4:4:4 q86 (the agent's interface quality, 85 at 4:4:4). For motion it
# also runs at the levels bracketing the agent's motion JPEG (4:2:0 q75): level 5 (4:2:2
# q77, the closest at least as good) and level 4 (4:2:2 q62, the next below).
X11VNC_LEVEL = closest_level(JPEG_QUALITY, "4:4:4")
MOTION_LEVELS = (closest_level(MOTION_QUALITY, "4:2:0"), closest_level(MOTION_QUALITY, "4:2:0") - 1)
WARM_UP_S = 1.5
SAMPLE_S = 0.1


@dataclass
class Result:
    """One peer on one workload."""

    peer: str
    workload: str
    seconds: float = 0.0
    bytes_per_s: float = 0.0
    updates_per_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> % of one core
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""
    jpegs: dict[tuple[str, int], int] = field(default_factory=dict)  # (subsampling, q) -> n
    level: int | None = None  # x11vnc: the Tight quality level asked for


async def measure(viewer: Viewer, meters: dict[str, d.Meter], seconds: float,
                  result: Result) -> None:
    bytes0, updates0 = viewer.bytes_received(), viewer.updates.count
    for meter in meters.values():
        meter.start()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await asyncio.sleep(SAMPLE_S)
        for meter in meters.values():
            meter.rss_kb()
    elapsed = time.perf_counter() - start
    result.seconds = elapsed
    result.bytes_per_s = (viewer.bytes_received() - bytes0) / elapsed
    result.updates_per_s = (viewer.updates.count - updates0) / elapsed
    for name, meter in meters.items():
        result.cpu[name] = meter.cpu_percent()
        result.peak_rss_mb[name] = meter.hwm_kb() / 1024


async def run_x11vnc(screen: d.Desktop, workload: str, args: argparse.Namespace,
                     level: int = X11VNC_LEVEL) -> Result:
    main_run = level == X11VNC_LEVEL
    result = Result("x11vnc" if main_run else f"x11vnc level {level}", workload, level=level)
    process, port = start_x11vnc(screen, tuple(args.x11vnc_args.split()))
    viewer = (RfbViewer(level, JPEG_QUALITY, "4:4:4") if main_run
              else RfbViewer(level, MOTION_QUALITY, "4:2:0"))
    try:
        await viewer.connect(port)
        await asyncio.wait_for(viewer.first_update.wait(), 20)
        await asyncio.sleep(WARM_UP_S)
        await measure(viewer, {"x11vnc": d.Meter(process.pid)}, args.seconds, result)
        if workload == "idle" and args.presses:
            result.latencies_ms = [s * 1000 for s in await key_latencies(viewer, args.presses)]
        result.jpegs = dict(viewer.jpegs)
    finally:
        await viewer.close()
        d.stop(process)
    return result


async def run_ours(screen: d.Desktop, relay: RelayProcess, workload: str,
                   args: argparse.Namespace) -> Result:
    result = Result("ours", workload)
    process = start_agent(screen, relay)
    viewer = SpotlightViewer()
    try:
        await viewer.connect(relay.ws_url)
        await viewer.in_control()
        await asyncio.sleep(WARM_UP_S)
        meters = {"agent": d.Meter(process.pid), "relay": d.Meter(relay.process.pid)}
        await measure(viewer, meters, args.seconds, result)
        if workload == "idle" and args.presses:
            result.latencies_ms = [s * 1000 for s in await key_latencies(viewer, args.presses)]
        result.note = (f"{viewer.kinds[1]} JPEG ({viewer.half_images} of them at half "
                       f"resolution) / {viewer.kinds[2]} PNG rectangles")
        result.jpegs = dict(viewer.jpegs)
    finally:
        await viewer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        d.stop(process)
    return result


async def issue_14_sections(screen: d.Desktop, relay: RelayProcess,
                            args: argparse.Namespace) -> list[str]:
    """The measurements of issue 14 (slow links, the browser, the agent's memory), each
    against its baseline, as report sections."""
    lines: list[str] = []
    if args.slow_links:
        from bench import slow_link

        lines += slow_link.report_lines(await slow_link.run(
            screen, relay, args.slow_presses, args.slow_seconds, args.slow_levels,
            args.slow_without_video))
    if args.browser:
        from bench import browser

        lines += browser.report_lines(*await browser.run(
            screen, relay, args.browser_presses, args.browser_seconds, args.clip_seconds))
    if args.memory:
        from bench import memory

        lines += memory.report_lines(await memory.run(
            screen, relay, args.memory_seconds, args.soak_minutes, args.soak_workload,
            args.clip_seconds), args.soak_workload)
    return lines


async def run_workloads(args: argparse.Namespace
                        ) -> tuple[list[Result], dict[str, float], list[str]]:
    results: list[Result] = []
    source_rates: dict[str, float] = {}
    screen = d.Desktop().start()
    data = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    relay = RelayProcess(data).start()
    try:
        if "motion" in args.workloads:
            d.motion_clip(args.clip_seconds)  # made before anything is measured
        for name in args.workloads:
            workload = d.WORKLOADS[name](screen, args.clip_seconds)
            workload.start()
            try:
                await asyncio.sleep(1.0)
                if name == "motion":
                    source_rates[name] = d.screen_changes_per_s(screen)
                levels = [X11VNC_LEVEL]
                if name == "motion" and args.comparable:
                    levels += MOTION_LEVELS
                for level in levels:
                    print(f"  {name}: x11vnc level {level} ...", file=sys.stderr, flush=True)
                    results.append(await run_x11vnc(screen, name, args, level))
                print(f"  {name}: ours ...", file=sys.stderr, flush=True)
                results.append(await run_ours(screen, relay, name, args))
            finally:
                workload.stop()
        sections = await issue_14_sections(screen, relay, args)
    finally:
        relay.stop()
        screen.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)
    return results, source_rates, sections


# --- the report ---------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> str:
    if math.isnan(ours) or math.isnan(theirs):
        return "n/a"
    if theirs == 0:
        return "equal (both 0)" if ours == 0 else "n/a (x11vnc 0)"
    return f"{ours / theirs:.2f}x"


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def workload_table(x: Result, o: Result) -> list[str]:
    rows = [
        ("wire KB/s (received by the viewer)", x.bytes_per_s / 1000, o.bytes_per_s / 1000, 1),
        ("updates/s", x.updates_per_s, o.updates_per_s, 1),
        ("server CPU, % of one core (x11vnc / agent)", x.cpu["x11vnc"], o.cpu["agent"], 1),
        ("server peak RSS, MB (x11vnc / agent)", x.peak_rss_mb["x11vnc"],
         o.peak_rss_mb["agent"], 1),
    ]
    lines = ["| metric | x11vnc | ours | ours / x11vnc |", "|---|---:|---:|---:|"]
    for label, theirs, ours, digits in rows:
        lines.append(f"| {label} | {_num(theirs, digits)} | {_num(ours, digits)} | "
                     f"{_ratio(ours, theirs)} |")
    lines.append(f"| relay CPU, % of one core | - | {_num(o.cpu['relay'])} | - |")
    lines.append(f"| relay RSS, MB | - | {_num(o.peak_rss_mb['relay'])} | - |")
    if x.latencies_ms or o.latencies_ms:
        for p in (50, 99):
            theirs, ours = percentile(x.latencies_ms, p), percentile(o.latencies_ms, p)
            lines.append(f"| keypress to screen p{p}, ms | {_num(theirs)} | {_num(ours)} | "
                         f"{_ratio(ours, theirs)} |")
    return lines


def dominant(jpegs: dict[tuple[str, int], int]) -> tuple[str, int] | None:
    """The (subsampling, quality) of most of the JPEG rectangles, None without JPEG."""
    return max(jpegs, key=jpegs.__getitem__) if jpegs else None


def clip_quality(settings: set[tuple[str, int]], clip_seconds: float, frames: int = 3
                 ) -> dict[tuple[str, int], tuple[float, float]]:
    """PSNR (RGB, and luma only) of motion clip frames JPEG-encoded at each (subsampling,
    quality), with libjpeg-turbo as both peers use it: how much each peer's setting loses."""
    import numpy as np
    import simplejpeg

    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(d.motion_clip(clip_seconds)), "-frames:v", str(frames),
         "-f", "rawvideo", "-pix_fmt", "bgr0", "-"], capture_output=True, check=True).stdout
    images = np.frombuffer(raw, np.uint8).reshape(-1, d.HEIGHT, d.WIDTH, 4)
    weights = np.array([0.114, 0.587, 0.299], np.float32)  # B, G, R -> luma

    def psnr(error: np.ndarray) -> float:
        mse = float(np.mean(error ** 2))
        return 10 * math.log10(255 ** 2 / mse) if mse else float("inf")

    out = {}
    for sampling, quality in sorted(settings):
        if sampling not in ("4:4:4", "4:2:2", "4:2:0"):
            continue
        rgb, luma = [], []
        for image in images:
            data = simplejpeg.encode_jpeg(image, quality, "BGRX", sampling.replace(":", ""))
            error = simplejpeg.decode_jpeg(data, "BGRX")[..., :3].astype(np.float32) - \
                image[..., :3]
            rgb.append(psnr(error))
            luma.append(psnr(error @ weights))
        out[(sampling, quality)] = (sum(rgb) / len(rgb), sum(luma) / len(luma))
    return out


def quality_lines(x: Result, o: Result, motion: bool, clip_seconds: float,
                  others: list[Result] = ()) -> list[str]:
    """What the JPEGs each peer sent were, and for motion what that costs in PSNR."""
    runs = [x, *others, o]
    lines = ["JPEG rectangles as received (subsampling and quality read from their headers): "
             + "; ".join(f"{r.peer} {census_text(r.jpegs)}" for r in runs) + ".", ""]
    if motion and any(r.jpegs for r in runs):
        with contextlib.suppress(Exception):  # a report without PSNR beats no report
            settings = {k for r in runs for k, n in r.jpegs.items()
                        if n >= 0.05 * sum(r.jpegs.values())}
            table = clip_quality(settings, clip_seconds)
            lines += ["PSNR of motion clip frames encoded at those settings (libjpeg-turbo, as "
                      "both use; higher is closer to the captured frame):", "",
                      "| JPEG setting | used by | PSNR RGB dB | PSNR luma dB |",
                      "|---|---|---:|---:|"]
            for key, (rgb, luma) in table.items():
                users = " and ".join(r.peer for r in runs if key in r.jpegs)
                lines.append(f"| {key[0]} q{key[1]} | {users} | {rgb:.1f} | {luma:.1f} |")
            lines.append("")
            if others:
                lines += comparable_lines(runs, table)
    return lines


def comparable_run(runs: list[Result], psnr: dict[tuple[str, int], tuple[float, float]]
                   ) -> Result | None:
    """Among the x11vnc runs, the one whose main JPEG setting is the lowest in PSNR that is
    still at least ours in both RGB and luma: bytes against it are at comparable (not lower)
    quality for x11vnc."""
    ours = next(r for r in runs if r.peer == "ours")
    mine = psnr.get(dominant(ours.jpegs) or ("", 0))
    if mine is None:
        return None
    candidates = [(psnr[k], r) for r in runs if r is not ours
                  and (k := dominant(r.jpegs)) in psnr
                  and psnr[k][0] >= mine[0] and psnr[k][1] >= mine[1]]
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def comparable_lines(runs: list[Result], psnr: dict[tuple[str, int], tuple[float, float]]
                     ) -> list[str]:
    """Bytes and updates per peer run next to the quality each sent."""
    ours = next(r for r in runs if r.peer == "ours")
    lines = ["Bytes at comparable quality: x11vnc honours only the Tight quality levels "
             "(-32..-23; each fixes quality and subsampling: level 4 is 4:2:2 q62, 5 is 4:2:2 "
             "q77, 7 is 4:4:4 q86), not TurboVNC's fine quality (-512..-412) nor subsampling "
             "(-768..-763), so it cannot send our motion setting (4:2:0 "
             f"q{MOTION_QUALITY}) exactly; it ran at the levels either side of it. PSNR is of "
             "the run's main JPEG setting.", "",
             "| run | JPEG (main setting) | PSNR RGB / luma dB | wire KB/s | updates/s | "
             "KB per update | server CPU % | ours bytes / this |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        key = dominant(r.jpegs)
        rgb, luma = psnr.get(key, (math.nan, math.nan)) if key else (math.nan, math.nan)
        setting = f"{key[0]} q{key[1]}" if key else "no JPEG"
        if r.level is not None:
            setting += f" (level {r.level})"
        cpu = r.cpu.get("agent", r.cpu.get("x11vnc", math.nan))
        per_update = r.bytes_per_s / 1000 / r.updates_per_s if r.updates_per_s else math.nan
        lines.append(f"| {r.peer} | {setting} | {_num(rgb)} / {_num(luma)} | "
                     f"{_num(r.bytes_per_s / 1000)} | {_num(r.updates_per_s)} | "
                     f"{_num(per_update)} | {_num(cpu)} | "
                     f"{'-' if r is ours else _ratio(ours.bytes_per_s, r.bytes_per_s)} |")
    lines.append("")
    match = comparable_run(runs, psnr)
    if match is not None:
        match.note = "comparable"
        lines += [f"Comparable quality: {match.peer} is the x11vnc run with the lowest PSNR "
                  "that is still at least ours in both RGB and luma, so it is the one the "
                  "motion bytes target is checked against.", ""]
    return lines


def targets(results: dict[tuple[str, str], Result]) -> list[str]:
    """Each target of issue 6 that this run measured, met or missed."""
    checks: list[tuple[str, bool, str]] = []

    def get(peer: str, workload: str) -> Result | None:
        return results.get((peer, workload))

    if (o := get("ours", "idle")) and (x := get("x11vnc", "idle")):
        checks.append(("idle: no updates, only keep-alives", o.updates_per_s == 0,
                       f"{o.updates_per_s:.2f} updates/s, {o.bytes_per_s:.0f} B/s"))
        if o.latencies_ms:
            p50, p99 = percentile(o.latencies_ms, 50), percentile(o.latencies_ms, 99)
            checks.append(("keypress to screen p50 <= 20 ms", p50 <= 20, f"{p50:.1f} ms"))
            checks.append(("keypress to screen p99 <= 35 ms", p99 <= 35, f"{p99:.1f} ms"))
    if (o := get("ours", "typing")) and (x := get("x11vnc", "typing")):
        checks.append(("typing: bytes/s <= x11vnc", o.bytes_per_s <= x.bytes_per_s,
                       f"{o.bytes_per_s / 1000:.1f} vs {x.bytes_per_s / 1000:.1f} KB/s"))
        checks.append(("typing: agent < 5% of one core", o.cpu["agent"] < 5,
                       f"{o.cpu['agent']:.1f}%"))
    if (o := get("ours", "scrolling")) and (x := get("x11vnc", "scrolling")):
        checks.append(("scrolling: bytes/s <= x11vnc", o.bytes_per_s <= x.bytes_per_s,
                       f"{o.bytes_per_s / 1000:.1f} vs {x.bytes_per_s / 1000:.1f} KB/s"))
    if (o := get("ours", "motion")) and (x := get("x11vnc", "motion")):
        checks.append(("motion: >= 30 updates/s (of 60)", o.updates_per_s >= 30,
                       f"{o.updates_per_s:.1f} updates/s"))
        checks.append(("motion: bytes/s < x11vnc at 4:4:4 q86 (level 7)",
                       o.bytes_per_s < x.bytes_per_s,
                       f"{o.bytes_per_s / 1000:.0f} vs {x.bytes_per_s / 1000:.0f} KB/s"))
        match = next((r for r in results.values()
                      if r.workload == "motion" and r.note == "comparable"), None)
        if match is not None:
            checks.append((f"motion: bytes/s < x11vnc at comparable quality ({match.peer}, "
                           f"{census_text(match.jpegs).split(' (')[0]})",
                           o.bytes_per_s < match.bytes_per_s,
                           f"{o.bytes_per_s / 1000:.0f} vs {match.bytes_per_s / 1000:.0f} KB/s"
                           f" at {match.updates_per_s:.1f} vs {o.updates_per_s:.1f} updates/s"))
        elif any(r.workload == "motion" and r.level in MOTION_LEVELS for r in results.values()):
            checks.append(("motion: bytes/s < x11vnc at comparable quality", False,
                           "no x11vnc run at least our PSNR (see the motion section)"))
        checks.append(("motion: agent < 40% of one core", o.cpu["agent"] < 40,
                       f"{o.cpu['agent']:.1f}%"))
    lines = ["| target | result | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'met' if ok else '**missed**'} | {got} |" for name, ok, got in checks]
    return lines


def machine_info() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    x11vnc = subprocess.run(["x11vnc", "-version"], capture_output=True, text=True,
                            check=False).stdout.strip().splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit or 'unknown'}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {memory_gb:.0f} GiB",
        f"- load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- x11vnc: {x11vnc[0] if x11vnc else 'unknown'}",
    ]


def report(results: list[Result], source_rates: dict[str, float], args: argparse.Namespace,
           load_lines: list[str], machine: list[str], sections: list[str] = ()) -> str:
    by_key = {(r.peer, r.workload): r for r in results}
    out = [
        "# Benchmark results", "",
        "Written by `bench/run.sh` (see bench/README.md); every number below comes from that "
        "run. The machine is shared, so trust ratios over absolute figures.", "",
        "## Machine", "", *machine, "",
        "## Set-up", "",
        f"- Xvfb {d.WIDTH}x{d.HEIGHT}x24; each figure measured over {args.seconds:g} s after "
        f"{WARM_UP_S:g} s of warm-up; keypress latency over {args.presses} presses.",
        f"- x11vnc with `{args.x11vnc_args or '(defaults)'}` (at its defaults it naps and "
        "sends ~5 updates/s of full motion), a scripted RFB 3.8 client asking for Tight "
        f"(Tight quality level {X11VNC_LEVEL}, which x11vnc sends as 4:4:4 q86, the closest to "
        f"our {JPEG_QUALITY} at 4:4:4; zlib level 6), CopyRect, ZRLE; one incremental request "
        "outstanding at a time. For motion also at levels "
        f"{' and '.join(map(str, MOTION_LEVELS))}, either side of our motion JPEG (4:2:0 "
        f"q{MOTION_QUALITY}).",
        "- ours: `python -m relay serve` and `python agent.py` from source, a scripted viewer "
        "that decodes every rectangle with Pillow (two background threads, as a browser "
        "decodes off the page's thread) and acknowledges each update once it is decoded.",
        "- wire bytes are the TCP payload bytes the viewer's socket received (kernel "
        "`tcp_info`), so protocol framing counts for both.", "",
    ]
    for name in args.workloads:
        x, o = by_key.get(("x11vnc", name)), by_key.get(("ours", name))
        if not (x and o):
            continue
        out += [f"## {name}: {d.WORKLOADS[name].description}", "", *workload_table(x, o), ""]
        if o.note:
            out += [f"Our agent sent {o.note}.", ""]
        others = [r for r in results if r.workload == name and r.peer.startswith("x11vnc ")]
        out += quality_lines(x, o, name == "motion", args.clip_seconds, others)
        if name in source_rates:
            out += [f"The workload itself changed the screen {source_rates[name]:.1f} times a "
                    "second (sampled with mss before the runs): no peer can send more updates "
                    "than that.", ""]
            if o.updates_per_s > 0:
                per_update = o.cpu["agent"] * 10 / o.updates_per_s  # % of a core -> ms/s
                out += [f"Our agent used {per_update:.1f} ms of CPU per update: on the two "
                        f"cores it could send about {2000 / per_update:.0f} updates/s of such "
                        "a screen, CPU-wise, if the screen changed that often.", ""]
    out += ["## Targets of issue 6", "", *targets(by_key), ""]
    if load_lines:
        out += load_lines
    out += sections
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark our agent and relay against x11vnc.")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--presses", type=int, default=60, help="key presses for latency")
    parser.add_argument("--workloads", default="idle,typing,scrolling,motion",
                        help="comma-separated: idle,typing,scrolling,motion")
    parser.add_argument("--clip-seconds", type=float, default=d.CLIP_SECONDS)
    parser.add_argument("--relay-load", action=argparse.BooleanOptionalAction, default=True,
                        help="also run bench/relay_load.py")
    parser.add_argument("--load-seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=100, help="sessions in the load test")
    parser.add_argument("--x11vnc-args", default=" ".join(X11VNC_TUNING),
                        help="extra x11vnc options ('' for its defaults)")
    parser.add_argument("--comparable", action=argparse.BooleanOptionalAction, default=True,
                        help="for motion, also run x11vnc at the quality levels either side of "
                             "our motion JPEG")
    parser.add_argument("--out", type=Path, help="write the report here (bench/RESULTS.md)")
    issue_14 = parser.add_argument_group("issue 14: slow links, the browser, the agent's memory")
    issue_14.add_argument("--slow-links", action=argparse.BooleanOptionalAction, default=True,
                          help="typing while a video plays, through bench/shaper.py")
    issue_14.add_argument("--slow-presses", type=int, default=100,
                          help="keys per slow-link run: a p95 over fewer moves more than the "
                               "targets' margins (bench/README.md, slow links)")
    issue_14.add_argument("--slow-seconds", type=float, default=6.0,
                          help="seconds of video watched per slow-link run")
    issue_14.add_argument("--slow-levels", type=slow_link_levels, default=(3, 7),
                          help="x11vnc Tight quality levels on the slow links")
    issue_14.add_argument("--slow-without-video", action=argparse.BooleanOptionalAction,
                          default=True, help="also each link once the video has stopped")
    issue_14.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True,
                          help="Chromium: our viewer, noVNC and the echo floor")
    issue_14.add_argument("--browser-presses", type=int, default=40)
    issue_14.add_argument("--browser-seconds", type=float, default=6.0,
                          help="seconds of full motion measured in the browser")
    issue_14.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                          help="peak RSS typing and in full motion, ours vs x11vnc")
    issue_14.add_argument("--memory-seconds", type=float, default=6.0)
    issue_14.add_argument("--soak-minutes", type=float, default=0.0,
                          help="also a soak of this many minutes per peer (RSS slope)")
    issue_14.add_argument("--soak-workload", choices=sorted(d.WORKLOADS), default="typing")
    cluster = parser.add_argument_group("issue 16: several relays on one PostgreSQL")
    cluster.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=False,
                         help="also run bench/cluster.py (PostgreSQL and HAProxy needed)")
    cluster.add_argument("--cluster-sessions", type=int, default=60)
    cluster.add_argument("--cluster-seconds", type=float, default=5.0)
    cluster.add_argument("--cluster-relays", default="1,2,3")
    cluster.add_argument("--cluster-count-sessions", type=int, default=20)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in args.workloads if w not in d.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}")
    d.require("Xvfb", "xterm", "xdotool", "x11vnc", "ffmpeg", "ffplay")
    if args.browser:
        from bench import browser

        browser.require()
    machine = machine_info()
    results, source_rates, sections = asyncio.run(run_workloads(args))
    load_lines: list[str] = []
    if args.relay_load:
        from bench import relay_load

        print("  relay load ...", file=sys.stderr, flush=True)
        load = asyncio.run(relay_load.run(args.load_seconds, args.sessions))
        load_lines = relay_load.report_lines(load)
    if args.cluster:
        from bench import cluster as relay_cluster

        cluster_text = relay_cluster.run_report(
            args.cluster_sessions, args.cluster_seconds,
            [int(n) for n in args.cluster_relays.split(",") if n], args.cluster_count_sessions)
        load_lines += [*cluster_text.splitlines(), ""]
    text = report(results, source_rates, args, load_lines, machine, sections)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
