"""screen_codec's compare and encode on real 1080p captures, against another version of it.

    python -m bench.codec_speed [--baseline GIT_REF] [--repeat 15]

Captures pairs of 1920x1080 frames from an Xvfb (an xterm being typed into, a full page of
text, a full-screen video, and an 800x450 video in a corner of the text) and times, on the
same frames in the same run, this tree's screen_codec.py and the one at GIT_REF (loaded from
git as a module of its own): the sampled compare of an unchanged screen and of each change,
the full compare, and encoding what changed (a full-screen video also as motion goes on a
fast link: one strip per encoder thread). Each time is the median CPU time of --repeat runs
(after one warm-up), the two versions' runs in turn; the results are also checked to be the
same (rectangles, PNG bytes; the JPEG of another encoder build may differ by its bytes, so
only its size is shown). Last, live on the Xvfb while the full-screen video plays: the
streamer's own part of a motion update in the event loop (grab_view, the sampled compare,
the commit into the viewer's copy) with each version's agent.py MssScreen (this tree's
screen_codec for both), updates of the two in turn.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench import desktop as d
from protocol import FRAME_PNG

ROOT = Path(__file__).resolve().parent.parent


def load_module_at(ref: str, name: str) -> ModuleType:
    """The project's module ``name`` (e.g. "screen_codec") as it is at ``ref``, imported as
    ``name``_baseline (its own imports are this tree's modules)."""
    source = subprocess.run(["git", "show", f"{ref}:{name}.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix=f"{name}-baseline-")) / f"{name}_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"{name}_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_baseline(ref: str) -> ModuleType:
    """screen_codec.py as it is at ``ref``, imported under another name."""
    return load_module_at(ref, "screen_codec")


def median_ms(works: list[Callable[[], object]], repeat: int) -> list[float]:
    """The median CPU time of this thread (all the work runs in it) of each of ``works``,
    run in turn (one run of each, in alternating order, ``repeat`` times): on a machine
    shared by many, wall time mostly measures the wait for a core, and the load moves too
    much between one version's runs and the other's for separate series to compare."""
    times: list[list[float]] = [[] for _ in works]
    for work in works:
        work()
    for n in range(repeat):
        order = list(enumerate(works))
        for i, work in order if n % 2 == 0 else reversed(order):
            start = time.thread_time()
            work()
            times[i].append(time.thread_time() - start)
    return [statistics.median(series) * 1000 for series in times]


def capture(screen: d.Desktop) -> dict[str, tuple[bytes, bytes]]:
    """Pairs of frames (before, after), raw BGRX bytes of the whole 1920x1080 screen."""
    import mss

    frames: dict[str, tuple[bytes, bytes]] = {}
    with mss.MSS(display=screen.display) as grabber:
        def grab() -> bytes:
            return bytes(grabber.grab(grabber.monitors[1]).raw)

        def settled() -> bytes:  # the screen once it has not changed for 0.3 s
            last = grab()
            while True:
                time.sleep(0.3)
                if (now := grab()) == last:
                    return now
                last = now

        def changed(before: bytes) -> bytes:  # the screen once it differs, then settles
            deadline = time.monotonic() + 10
            while grab() == before and time.monotonic() < deadline:
                time.sleep(0.02)
            return settled()

        page = screen.xterm("bench-codec", "238x74+0+0", "cat; sleep 600")
        for line in range(3):
            screen.xdotool("type", "--delay", "0", f"{line}: {d.TEXT[:200]}\n")
        before = settled()
        screen.xdotool("type", "--delay", "0", "w")
        frames["typing"] = (before, changed(before))
        for _ in range(70):  # a full page of text, then one more line: the page scrolls
            screen.xdotool("type", "--delay", "0", d.TEXT[:230] + "\n")
        before = settled()
        screen.xdotool("type", "--delay", "0", d.TEXT[40:200] + "\n")
        frames["scroll"] = (before, changed(before))
        d.stop(page)
        video = d.WORKLOADS["motion"](screen)
        video.start()
        time.sleep(1.5)
        first = grab()
        second = first
        while second == first:
            second = grab()
        frames["video"] = (first, second)
        video.stop()
    # issue 14's slow-link scene: an 800x450 video in a corner of a text screen (the two video
    # frames pasted over the scrolled page)
    page = frames["scroll"][1]
    frames["corner video"] = (corner(page, first), corner(page, second))
    return frames


def corner(page: bytes, video: bytes, x: int = 1000, y: int = 500, w: int = 800,
           h: int = 450) -> bytes:
    """``page`` with the (x, y, w, h) rectangle of ``video`` over it."""
    out = bytearray(page)
    row = d.WIDTH * 4
    for top in range(y * row + x * 4, (y + h) * row, row):
        out[top:top + w * 4] = video[top:top + w * 4]
    return bytes(out)


def as_image(codec: ModuleType, raw: bytes):
    """The frame as the version under test takes it (numpy before, a memoryview after)."""
    if "np" in vars(codec):
        return codec.np.frombuffer(bytearray(raw), codec.np.uint8).reshape(d.HEIGHT, d.WIDTH, 4)
    return memoryview(bytearray(raw)).cast("B", (d.HEIGHT, d.WIDTH, 4))


def measure(codecs: list[ModuleType], frames: dict[str, tuple[bytes, bytes]], repeat: int
            ) -> list[dict[str, tuple[float, object]]]:
    """For each version: name -> (median ms, what came out); the versions timed in turn."""
    out: list[dict[str, tuple[float, object]]] = [{} for _ in codecs]
    for name, (before, after) in frames.items():
        steps = [steps_of(codec, name, as_image(codec, before), as_image(codec, after))
                 for codec in codecs]
        for step in steps[0]:
            works = [version[step][0] for version in steps]
            for version, ms in enumerate(median_ms(works, repeat)):
                out[version][step] = (ms, steps[version][step][1]())
    return out


def steps_of(codec: ModuleType, name: str, old, new
             ) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """name -> (the work to time, what it came out as) of one version on one pair of frames."""
    out: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    diff = codec.ScreenDiff()
    diff.commit(old, [])
    out[f"sampled compare, unchanged ({name})"] = (
        lambda: diff.changes(old, codec.SAMPLE_ROWS), lambda: [])

    def sampled():
        diff._phase = 0  # the same rows each time
        return diff.changes(new, codec.SAMPLE_ROWS)

    out[f"sampled compare, {name}"] = (sampled, sampled)
    rects = codec.changed_rects(old, new)
    out[f"full compare, {name}"] = (lambda: codec.changed_rects(old, new), lambda: rects)
    full = name == "video"  # the sampled compare answers the whole screen
    if full:
        rects = [(0, 0, d.WIDTH, d.HEIGHT)]
    subsampling, quality = ("420", 75) if "video" in name else ("444", 85)

    def encode():
        return codec.encode_update(new, rects, 0, 1, quality, full, subsampling=subsampling)

    def result(encoder):
        return lambda: [(f.kind, f.x, f.y, f.width, f.height,
                         f.image if f.kind == FRAME_PNG else len(f.image)) for f in encoder()]

    out[f"encode {name} ({sum(w * h for _, _, w, h in rects)} px)"] = (encode, result(encode))
    if full:  # as the agent sends motion on a fast link: one strip per encoder thread (two)
        rows = -(-d.HEIGHT // 2 // 16) * 16

        def motion():
            return codec.encode_update(new, rects, 0, 1, quality, False, subsampling="420",
                                       rows=rows)

        out[f"encode {name} as motion ({rows}-row strips)"] = (motion, result(motion))
    return out


def load_agent(ref: str) -> ModuleType:
    """agent.py as it is at ``ref``, imported under another name (its own imports are this
    tree's modules: only its MssScreen is used)."""
    return load_module_at(ref, "agent")


def motion_updates(screen: d.Desktop, agents: list[ModuleType], codec: ModuleType,
                   updates: int) -> list[float]:
    """Per version: the median thread CPU ms of the streamer's event-loop part of a whole
    motion update (grab_view as its agent's _stream calls it, the sampled compare, the commit
    as the streamer makes it), on the live full-screen video, the versions in turn."""
    import inspect

    old_display = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = screen.display
    video = d.WORKLOADS["motion"](screen)
    video.start()
    try:
        time.sleep(1.5)
        peers = []
        for agent in agents:
            capture = agent.MssScreen()
            keeps = "keep" in inspect.signature(capture.grab_view).parameters
            peers.append((capture, capture.monitors()[0], codec.ScreenDiff(), keeps, []))
        for n in range(updates * 3):
            order = peers if n % 2 == 0 else peers[::-1]
            for capture, area, diff, keeps, times in order:
                start = time.thread_time()
                pixels = capture.grab_view(area, keep=diff.shown) if keeps else \
                    capture.grab_view(area)
                whole = [(0, 0, area.width, area.height)]
                rects = diff.changes(pixels, codec.SAMPLE_ROWS) if diff.matches(pixels) \
                    else whole
                if rects:
                    diff.commit(pixels, rects, owned=codec.writeable(pixels))
                if rects == whole and n:  # (the first is the session's first image)
                    times.append(time.thread_time() - start)
            time.sleep(1 / 60)
            if min(len(peer[4]) for peer in peers) >= updates:
                break
        for capture, *_ in peers:
            capture.close()
        return [statistics.median(peer[4]) * 1000 if peer[4] else float("nan")
                for peer in peers]
    finally:
        video.stop()
        if old_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old_display


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git ref of the other version")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    d.require("Xvfb", "xterm", "xdotool", "ffmpeg", "ffplay")
    sys.path.insert(0, str(ROOT))
    import agent
    import screen_codec

    baseline = load_baseline(args.baseline)
    screen = d.Desktop().start()
    try:
        frames = capture(screen)
        load = os.getloadavg()[0]
        before, after = measure([baseline, screen_codec], frames, args.repeat)
        live = motion_updates(screen, [load_agent(args.baseline), agent], screen_codec,
                              args.repeat * 10)
    finally:
        screen.close()
    print(f"load average (1 min) at the start: {load:.2f}, at the end: "
          f"{os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; the two versions timed in turn\n")
    print(f"| step | {args.baseline} ms | this tree ms | same result |")
    print("|---|---:|---:|---|")
    for name, (ms, result) in after.items():
        old_ms, old_result = before[name]
        same = "yes" if result == old_result else "**no**"
        if same != "yes" and name.startswith("encode"):  # JPEG bytes from another build
            png_same = [r for r in result if r[0] == FRAME_PNG] == \
                [r for r in old_result if r[0] == FRAME_PNG]
            same = f"PNG {'same' if png_same else '**differs**'}; JPEG bytes " + \
                f"{sum(r[5] for r in old_result if r[0] != FRAME_PNG)} -> " + \
                f"{sum(r[5] for r in result if r[0] != FRAME_PNG)}"
        print(f"| {name} | {old_ms:.2f} | {ms:.2f} | {same} |")
    print(f"| the streamer's grab, compare and commit of a whole motion update (live, each "
          f"version's MssScreen) | {live[0]:.2f} | {live[1]:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
