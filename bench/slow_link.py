"""Typing on a slow link while a video plays: ours against x11vnc, through bench/shaper.py.

    python -m bench.slow_link [--presses 30] [--seconds 6] [--levels 3,7] [--before DIR]
                              [--rounds 1]

An 800x450 video plays in the bottom-right corner while a scripted viewer types into an
xterm in the top-left. Per link and peer: the first full 1080p image's time, the time from a
key to the first finished rectangle that overlaps the xterm (p50/p95, against the targets of
issue 14), how many updates a second touched the video and with which JPEG settings. The
shaper sits between the agent and the relay (our viewer reaches the relay directly), and
between x11vnc and its RFB client. With --before, another checkout's agent (main's, from git
archive) runs on each link too, as "ours before", alternated with ours --rounds times: the
machine's load changes from minute to minute, so a before/after is only fair in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import desktop as d
from bench.measure import DrawnRect, Viewer, census_text, percentile
from bench.ours import RelayProcess, SpotlightViewer, start_agent
from bench.rfb import X11VNC_TUNING, RfbViewer, start_x11vnc
from bench.shaper import LinkProcess, LinkShape, netem_available

VIDEO_W, VIDEO_H, VIDEO_FPS = 800, 450, 30
VIDEO_BOX = (d.WIDTH - VIDEO_W, d.HEIGHT - VIDEO_H, VIDEO_W, VIDEO_H)
KEY_TIMEOUT_S = 5.0  # a press with no echo by then counts as this (it shows in p95)
PRESS_GAP_S = 0.3  # after an echo, so its last rectangles do not answer the next press
FIRST_IMAGE_TIMEOUT_S = 60.0
# The support person accepts this long after our agent's session shows in their queue: a
# person reads the name and clicks, and the agent encodes the first image ahead while the
# customer waits (agent.Agent._encode_ahead). 0: at once (a script's speed).
ACCEPT_AFTER_S = 2.0
NO_VIDEO = ", no video"  # the label of the runs after the video has stopped
BEFORE = "ours before"


@dataclass(frozen=True)
class Link:
    name: str
    shape: LinkShape
    loss: float  # per packet each way: bench/netem.py applies it (root only), the shaper cannot

    def applied_loss(self) -> float:
        return self.loss if netem_available() else 0.0

    def emulator(self) -> str:
        return "bench/netem.py" if self.applied_loss() else "bench/shaper.py"


LINKS = (
    Link("2 Mbit/s, 60 ms RTT", LinkShape(2000, 60), 0.01),
    Link("512 kbit/s, 150 ms RTT", LinkShape(512, 150), 0.0),
)


@dataclass
class SlowResult:
    peer: str
    link: Link
    first_image_s: float = float("nan")
    first_image_bytes: int = 0  # TCP payload received from asking to the first image
    latencies_ms: list[float] = field(default_factory=list)
    video_updates_per_s: float = 0.0
    video_jpegs: Counter = field(default_factory=Counter)
    bytes_per_s: float = 0.0
    typing_video_updates_per_s: float = 0.0  # ... while the keys were typed
    round: int = 1  # of --rounds
    load: tuple[float, float] = (float("nan"), float("nan"))  # 1-minute load, start and end


# --- the workload ---------------------------------------------------------------------------


def video_clip(seconds: float = 2.0) -> Path:
    """An 800x450 VIDEO_FPS Mandelbrot zoom, raw BGRX (so ffplay only copies frames)."""
    d.require("ffmpeg")
    d.CACHE.mkdir(exist_ok=True)
    clip = d.CACHE / f"mandelbrot-{VIDEO_W}x{VIDEO_H}-{VIDEO_FPS}fps-{seconds:g}s.nut"
    if not clip.exists():
        partial = clip.with_suffix(".part.nut")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
             "-i", f"mandelbrot=s={VIDEO_W}x{VIDEO_H}:r={VIDEO_FPS}:start_scale=0.5",
             "-t", f"{seconds:g}", "-c:v", "rawvideo", "-pix_fmt", "bgr0", str(partial)],
            check=True, timeout=300)
        partial.rename(clip)
    return clip


class VideoBesideXterm(d.Workload):
    """The issue's workload: a video in one corner, an idle xterm (with the focus) elsewhere."""

    name = "video-beside-xterm"
    description = f"an {VIDEO_W}x{VIDEO_H} video in the bottom-right corner, an xterm top-left"

    def __init__(self, desktop: d.Desktop, clip_seconds: float = 2.0) -> None:
        super().__init__(desktop, clip_seconds)
        self.xterm_box = (0, 0, 0, 0)

    def start(self) -> None:
        d.require("ffplay")
        self.processes.append(self.desktop.spawn(
            ["ffplay", "-v", "error", "-an", "-loop", "0", "-noborder",
             "-left", str(VIDEO_BOX[0]), "-top", str(VIDEO_BOX[1]), "-x", str(VIDEO_W),
             "-y", str(VIDEO_H), "-window_title", "bench-video", "-vf", "format=bgr0",
             str(video_clip(self.clip_seconds))]))
        self.desktop.xdotool("search", "--sync", "--onlyvisible", "--name", "bench-video")
        self.processes.append(self.desktop.xterm("bench-slow", "80x24+40+40", "cat >/dev/null"))
        # ffplay (SDL) sets the input focus to its own window: give it to the xterm.
        window = self.desktop.xdotool("search", "--onlyvisible", "--name", "bench-slow").split()[0]
        self.desktop.xdotool("windowfocus", "--sync", window)
        self.xterm_box = window_box(self.desktop, "bench-slow")

    def stop_video(self) -> None:
        """Stop the video; the xterm keeps the focus."""
        video = self.processes.pop(0)
        d.stop(video)
        if video in self.desktop.children:
            self.desktop.children.remove(video)


def window_box(desktop: d.Desktop, title: str) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the visible window named `title`."""
    window = desktop.xdotool("search", "--onlyvisible", "--name", title).split()[0]
    values = {}
    for line in desktop.xdotool("getwindowgeometry", "--shell", window).splitlines():
        key, _, value = line.partition("=")
        values[key] = int(value) if value.isdigit() else value
    return values["X"], values["Y"], values["WIDTH"], values["HEIGHT"]


# --- measuring one peer -----------------------------------------------------------------------


async def echo_latencies(viewer: Viewer, box: tuple[int, int, int, int], presses: int
                         ) -> list[float]:
    """Milliseconds from each key sent to the first finished rectangle overlapping `box`.

    The rest of the screen keeps changing (the video), so there is no quiet screen to wait
    for: only rectangles over the xterm answer a press, and each press waits PRESS_GAP_S after
    the previous echo so that echo's later rectangles are not taken for the next one's.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future = loop.create_future()
    sent = 0.0

    def listener(rect: DrawnRect) -> None:
        if not answer.done() and rect.at >= sent and rect.meets(box):
            answer.set_result(rect.at)

    viewer.rect_listeners.append(listener)
    latencies = []
    try:
        for n in range(presses):
            answer = loop.create_future()
            sent = time.perf_counter()
            await viewer.press("a" if n % 2 == 0 else "BackSpace")
            try:
                latencies.append((await asyncio.wait_for(answer, KEY_TIMEOUT_S) - sent) * 1000)
            except TimeoutError:
                latencies.append(KEY_TIMEOUT_S * 1000)
            await asyncio.sleep(PRESS_GAP_S)
    finally:
        viewer.rect_listeners.remove(listener)
    return latencies


async def watch_video(viewer: Viewer, seconds: float, result: SlowResult) -> None:
    """Updates a second that touched the video, their JPEG settings, and wire bytes/s (over
    the time watched, also when cancelled before ``seconds``)."""
    updates: set[int] = set()

    def listener(rect: DrawnRect) -> None:
        if rect.meets(VIDEO_BOX):
            updates.add(rect.update)
            if rect.jpeg:
                result.video_jpegs[rect.jpeg] += 1

    viewer.rect_listeners.append(listener)
    bytes0, start = viewer.bytes_received(), time.perf_counter()
    try:
        await asyncio.sleep(seconds)
    finally:
        viewer.rect_listeners.remove(listener)
        elapsed = time.perf_counter() - start
        result.video_updates_per_s = len(updates) / elapsed
        result.bytes_per_s = (viewer.bytes_received() - bytes0) / elapsed


async def measure_viewer(viewer: Viewer, box: tuple[int, int, int, int], result: SlowResult,
                         presses: int, seconds: float, asked_bytes: int) -> None:
    """``asked_bytes``: the viewer's bytes received when it asked for the first image."""
    await asyncio.wait_for(viewer.first_update.wait(), FIRST_IMAGE_TIMEOUT_S)
    result.first_image_s = viewer.first_update_at - viewer.asked_at
    result.first_image_bytes = viewer.bytes_received() - asked_bytes
    await asyncio.sleep(1.0)  # past the first image's tail
    await watch_video(viewer, seconds, result)
    typing = SlowResult(result.peer, result.link)  # the video's rate while keys are typed
    watching = asyncio.ensure_future(watch_video(viewer, 1e9, typing))
    try:
        result.latencies_ms = await echo_latencies(viewer, box, presses)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    result.typing_video_updates_per_s = typing.video_updates_per_s


def load_1min() -> float:
    return os.getloadavg()[0]


async def run_x11vnc(screen: d.Desktop, box: tuple[int, int, int, int], link: Link,
                     level: int, presses: int, seconds: float, label: str = "") -> SlowResult:
    result = SlowResult(f"x11vnc level {level}{label}", link)
    result.load = (load_1min(), result.load[1])
    process, port = start_x11vnc(screen, X11VNC_TUNING)
    shaper = LinkProcess(link.shape, port, link.applied_loss())
    viewer = RfbViewer(level)
    try:
        shaper.start()
        await viewer.connect(shaper.port)
        await measure_viewer(viewer, box, result, presses, seconds, viewer.bytes_received())
    finally:
        await viewer.close()
        shaper.stop()
        d.stop(process)
    result.load = (result.load[0], load_1min())
    return result


async def run_ours(screen: d.Desktop, relay: RelayProcess, box: tuple[int, int, int, int],
                   link: Link, presses: int, seconds: float, label: str = "",
                   root: Path | None = None, peer: str = "ours",
                   accept_after_s: float = ACCEPT_AFTER_S, round_: int = 1) -> SlowResult:
    """Our agent (``root``: another checkout's, as ``peer``) across ``link``, accepted
    ``accept_after_s`` after its session showed."""
    result = SlowResult(f"{peer}{label}", link, round=round_)
    result.load = (load_1min(), result.load[1])
    shaper = LinkProcess(link.shape, relay.port, link.applied_loss()).start()
    process = start_agent(screen, relay, f"ws://127.0.0.1:{shaper.port}",
                          **({"root": root} if root is not None else {}))
    viewer = SpotlightViewer()
    try:
        await viewer.connect(relay.ws_url, accept_after_s=accept_after_s)
        asked_bytes = viewer.bytes_received()  # (the Accept just went: no image yet)
        await asyncio.wait_for(viewer.controlling.wait(), FIRST_IMAGE_TIMEOUT_S)
        await measure_viewer(viewer, box, result, presses, seconds, asked_bytes)
    finally:
        await viewer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        d.stop(process)
        shaper.stop()
    result.load = (result.load[0], load_1min())
    return result


async def run(screen: d.Desktop, relay: RelayProcess, presses: int, seconds: float,
              levels: tuple[int, ...], without_video: bool = True,
              links: tuple[Link, ...] = LINKS, before: Path | None = None,
              rounds: int = 1, accept_after_s: float = ACCEPT_AFTER_S) -> list[SlowResult]:
    """Every link, x11vnc at each of `levels` then ours, with the video playing; then, with
    `without_video`, x11vnc at the highest level (if any) and ours again once the video has
    stopped (what the link alone costs a keystroke). `before`: another checkout's agent runs
    beside ours on each link, the pair `rounds` times, which goes first swapped every round
    (the second of a pair measured slower), with and without the video."""
    workload = VideoBesideXterm(screen)
    workload.start()
    results = []
    box = workload.xterm_box

    async def ours_rounds(link: Link, label: str) -> None:
        for n in range(rounds):
            tag = f"{label} #{n + 1}" if n else label
            peers = [(None, "ours")] + ([(before, BEFORE)] if before is not None else [])
            for root, peer in peers if n % 2 else peers[::-1]:
                print(f"  slow link {link.name}: {peer}{tag} ...", file=sys.stderr, flush=True)
                results.append(await run_ours(screen, relay, box, link, presses, seconds, tag,
                                              root, peer, accept_after_s, n + 1))

    try:
        await asyncio.sleep(1.0)
        for link in links:
            for level in levels:
                print(f"  slow link {link.name}: x11vnc level {level} ...", file=sys.stderr,
                      flush=True)
                results.append(await run_x11vnc(screen, box, link, level, presses, seconds))
            await ours_rounds(link, "")
        if without_video:
            workload.stop_video()
            for link in links:
                if levels:
                    print(f"  slow link {link.name}{NO_VIDEO}: x11vnc ...", file=sys.stderr,
                          flush=True)
                    results.append(await run_x11vnc(screen, box, link, max(levels), presses,
                                                    seconds, NO_VIDEO))
                await ours_rounds(link, NO_VIDEO)
    finally:
        workload.stop()
    return results


# --- the report -------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"


def base_peer(result: SlowResult) -> str:
    """The peer without its round's tag: "ours #2" -> "ours"."""
    return result.peer.split(" #")[0]


def pooled(runs: list[SlowResult], peer: str) -> list[float]:
    return [ms for r in runs if base_peer(r) == peer for ms in r.latencies_ms]


def p95_interval(latencies: list[float], draws: int = 1000, seed: int = 14
                 ) -> tuple[float, float]:
    """A 90% bootstrap interval of the p95 of ``latencies`` (presses resampled): how far
    the same number of presses of the same code may land. Rounds differ by more (the
    machine's load moves): the per-round spread beside it says by how much."""
    if not latencies:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    p95s = sorted(percentile(rng.choices(latencies, k=len(latencies)), 95)
                  for _ in range(draws))
    return p95s[int(0.05 * draws)], p95s[int(0.95 * draws) - 1]


def round_lines(runs: list[SlowResult]) -> list[str]:
    """Per peer over its rounds: presses, pooled p50 / p95 with a bootstrap interval, each
    round's p95 and its load; then ours minus before, round by round."""
    peers = list(dict.fromkeys(base_peer(r) for r in runs if not r.peer.startswith("x11vnc")))
    if not any(r.round > 1 for r in runs) and BEFORE not in peers:
        return []
    lines = ["| peer, all rounds | presses | p50 ms | p95 ms (90% interval) | "
             "p95 per round (load) | video updates/s while typing |",
             "|---|---:|---:|---:|---|---|"]
    for peer in peers:
        mine, latencies = [r for r in runs if base_peer(r) == peer], pooled(runs, peer)
        low, high = p95_interval(latencies)
        per_round = ", ".join(f"{_ms(percentile(r.latencies_ms, 95))} ({r.load[0]:.1f})"
                              for r in mine)
        lines.append(f"| {peer} | {len(latencies)} | {_ms(percentile(latencies, 50))} | "
                     f"{_ms(percentile(latencies, 95))} ({_ms(low)}-{_ms(high)}) | "
                     f"{per_round} | "
                     + ", ".join(f"{r.typing_video_updates_per_s:.1f}" for r in mine) + " |")
    for label in dict.fromkeys(p.removeprefix(BEFORE) for p in peers if p.startswith(BEFORE)):
        ours = {r.round: r for r in runs if base_peer(r) == "ours" + label}
        before = {r.round: r for r in runs if base_peer(r) == BEFORE + label}
        deltas = [percentile(ours[n].latencies_ms, 95) - percentile(before[n].latencies_ms, 95)
                  for n in sorted(ours.keys() & before.keys())]
        if deltas:
            lines.append(f"\nours{label} minus before, p95 per round: "
                         + ", ".join(f"{v:+.0f}" for v in deltas) + " ms (better in "
                         f"{sum(v < 0 for v in deltas)} of {len(deltas)})")
    return [*lines, ""]


def report_lines(results: list[SlowResult]) -> list[str]:
    lines = ["## Slow links (issue 14): typing while a video plays", "",
             f"An {VIDEO_W}x{VIDEO_H} {VIDEO_FPS} fps video plays in the bottom-right corner "
             "while the scripted viewer types into an xterm (top-left), one key every "
             f"{PRESS_GAP_S:g} s after the previous echo. Key to screen: from the key sent to "
             "the first finished rectangle that overlaps the xterm (a press with no echo in "
             f"{KEY_TIMEOUT_S:g} s counts as {KEY_TIMEOUT_S:g} s). First image: from asking "
             "(ours: Accept; x11vnc: the first FramebufferUpdateRequest) to the first complete "
             "update, and the KB the viewer's socket received by then (x11vnc: that update; "
             "ours: also the relay's few messages, and the start of the next update if it was "
             "already on its way). Rows marked 'no video' ran after the video stopped "
             "(x11vnc at the highest level asked for). The link sits between the agent and "
             "the relay, and between x11vnc and its client: bench/shaper.py (a shaping TCP "
             "proxy: rate as serialisation time, half the round trip each way, a 100 ms "
             "bottleneck queue; it cannot drop packets), or "
             "for a lossy link bench/netem.py (netem's rules on IP packets between two TUN "
             "devices in two network namespaces; needs root).", ""]
    counts = sorted({len(r.latencies_ms) for r in results})
    lines[-1:-1] = [f"Each row's key to screen is over {' or '.join(map(str, counts))} presses "
                    "(the p95 of 40 is the second-worst, and the same code's p95 moved 41 ms "
                    "between two samples of 40, 24 between two of 200: bench/README.md)."]
    for link in dict.fromkeys(r.link for r in results):
        rtt = link.shape.rtt_ms
        p50_target, p95_target = rtt + 30, 2 * rtt + 30
        runs = [r for r in results if r.link == link]
        if link.applied_loss():
            title = f"{link.name}, {link.loss:.0%} loss ({link.emulator()})"
        elif link.loss:
            title = (f"{link.name} ({link.emulator()}: the issue's {link.loss:.0%} loss is not "
                     "applied, bench/netem.py needs root)")
        else:
            title = f"{link.name} ({link.emulator()})"
        lines += [f"### {title}", "",
                  f"| peer | key to screen p50 ms (target <= {p50_target:g}) | "
                  f"p95 ms (target <= {p95_target:g}) | first full image s | its KB | "
                  "video updates/s | video JPEG | wire KB/s |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        for r in runs:
            p50, p95 = percentile(r.latencies_ms, 50), percentile(r.latencies_ms, 95)
            lines.append(f"| {r.peer} | {_ms(p50)} | {_ms(p95)} | {r.first_image_s:.2f} | "
                         f"{r.first_image_bytes / 1000:,.1f} | {r.video_updates_per_s:.1f} | "
                         f"{census_text(r.video_jpegs)} | "
                         f"{r.bytes_per_s / 1000:,.1f} |")
        lines.append("")
        lines += round_lines(runs)
        ours = next((r for r in runs if r.peer == "ours"), None)
        if ours is None:
            continue
        typed = pooled(runs, "ours")  # every round's presses: the p95 of 30 is a guess
        baselines = [r for r in runs if r.peer.startswith("x11vnc") and NO_VIDEO not in r.peer]
        checks = [(f"key to screen p50 <= {p50_target:g} ms",
                   percentile(typed, 50) <= p50_target, f"{_ms(percentile(typed, 50))} ms"),
                  (f"key to screen p95 <= {p95_target:g} ms",
                   percentile(typed, 95) <= p95_target, f"{_ms(percentile(typed, 95))} ms")]
        for other in baselines:
            checks.append((f"first full image no slower than {other.peer}",
                           ours.first_image_s <= other.first_image_s,
                           f"{ours.first_image_s:.2f} vs {other.first_image_s:.2f} s"))
        lines += ["| target (ours) | result | measured |", "|---|---|---|"]
        lines += [f"| {name} | {'met' if ok else '**missed**'} | {got} |"
                  for name, ok, got in checks]
        lines.append("")
    return lines


async def _standalone(args: argparse.Namespace) -> list[SlowResult]:
    screen = d.Desktop().start()
    data = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    relay = RelayProcess(data).start()
    try:
        links = tuple(link for link in LINKS if link.name in args.link) if args.link else LINKS
        return await run(screen, relay, args.presses, args.seconds, args.levels,
                         args.without_video, links, before=args.before, rounds=args.rounds,
                         accept_after_s=args.accept_after)
    finally:
        relay.stop()
        screen.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)


def levels_arg(text: str) -> tuple[int, ...]:
    levels = tuple(int(v) for v in text.split(",") if v)
    if any(not 0 <= v <= 9 for v in levels):
        raise argparse.ArgumentTypeError("Tight quality levels are 0..9")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Typing on slow links while a video plays.")
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=6.0, help="video watched per run")
    parser.add_argument("--levels", type=levels_arg, default=(3, 7),
                        help="x11vnc Tight quality levels to run (comma-separated)")
    parser.add_argument("--without-video", action=argparse.BooleanOptionalAction,
                        default=True, help="also run each link once the video has stopped")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="also run the agent of this checkout (e.g. main's, from git "
                             "archive) as 'ours before', in the same run")
    parser.add_argument("--accept-after", type=float, default=ACCEPT_AFTER_S, metavar="S",
                        help="our viewer accepts this long after the session showed (0: at "
                             "once)")
    parser.add_argument("--link", choices=[link.name for link in LINKS], action="append",
                        help="only this link (may be given again; default: all)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="ours (and ours before) this many times per link, alternated")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write every run's latencies (ms) and load to FILE")
    args = parser.parse_args(argv)
    d.require("Xvfb", "xterm", "xdotool", "x11vnc", "ffmpeg", "ffplay")
    results = asyncio.run(_standalone(args))
    if args.json is not None:
        args.json.write_text(json.dumps([
            {"peer": r.peer, "link": r.link.name, "round": r.round, "load": r.load,
             "latencies_ms": r.latencies_ms, "video_updates_per_s": r.video_updates_per_s,
             "typing_video_updates_per_s": r.typing_video_updates_per_s,
             "bytes_per_s": r.bytes_per_s}
            for r in results], indent=1))
    print("\n".join(report_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
