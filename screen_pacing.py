"""When the agent's streamer looks at the screen and how it sends what it found: the poll
cadence (fast after input, on a ladder of polls until a keystroke's echo is found, faster in
motion, slow when still), the region in motion (``Motion``: sent at 4:2:0, down the rungs of
MOTION_RUNGS, refined at full quality once still), JPEG quality lowered before frame rate
while flow control holds updates back, strip heights cut to the link's rate (``Pacer``,
whose plans are ``Encoding``s), and the order frames wait in for the link (``Outbox``: an
echo goes ahead of bulk frames, never over newer pixels).

Apart from screen_codec because these are rules over time, not over pixels: they take the
clock, input and acknowledgements as arguments and never touch an image, so they are tested
as pure rules (given these polls and this clock, this plan) and change for other reasons
than the encoders do. This module uses the codec's grid and strip constants; the codec
knows nothing of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import protocol as p
from screen_codec import STRIP_ROWS, TILE_PX, Rect

POLL_INTERVAL_S = 1 / 30
MOTION_POLL_INTERVAL_S = 1 / 60  # while every recent poll found a change (video, animation)
MOTION_AFTER_CHANGES = 3  # consecutive polls changing one region that mean "in motion":
MOTION_JPEG_QUALITY = 75  # ... JPEG 4:2:0 at most this quality (half the work and bytes),
REFINE_AFTER_S = 0.2  # ... and the area is resent at full quality, 4:4:4, once this still
MOTION_MARGIN_PX = TILE_PX  # changes this near the region in motion are part of it
MOTION_MIN_PX = TILE_PX * TILE_PX  # a region smaller than this is never in motion: a line
#                                    typed fast, a spinner (nothing to gain from 4:2:0, and
#                                    an echo typed there must stay interactive)
MOTION_GAP_S = 0.05  # a poll without a change there this soon does not end the motion (a
#                      video changes the screen 24-50 times a second, polled 60 times)
MOTION_RESUME_S = 1.0  # a region in motion this recently is in motion again at its first
#                        change of at least a quarter of it (a video that stalled: its next
#                        frames are not a still update at full quality, 100 KB that input's
#                        echo waited behind on a slow link; a keystroke's glyph stays still)
IDLE_POLL_INTERVAL_S = 0.1  # once nothing has changed for IDLE_AFTER_S (and no input came)
IDLE_AFTER_S = 2.0
FAST_POLL_INTERVAL_S = 0.010  # right after input, so the support person sees it at once
FAST_POLL_WINDOW_S = 0.300  # ... and what changed then outside the motion is interactive
# After a key, a button or a scroll, polls this long after it until one finds a change (its
# echo), then FAST_POLL_INTERVAL_S; not while a region is in motion (Pacer.due). A poll at
# the injection itself found nothing: xterm drew a key's echo 0.8 / 1.8 / 5.0 / 9.7 ms after
# XTest's call (p10 / p50 / p90 / max), and the echo waited ~7 ms for the next 10 ms poll. A
# poll costs ~1.2 ms, so rungs are a few ms apart, and a pointer move (up to 60 a second, most
# changing nothing) has none.
ECHO_POLLS_S = (0.002, 0.004, 0.006, 0.009, 0.012, 0.016, 0.020, 0.025, 0.030)
# ... nor a key's release or a modifier's press (typed by a person, the release comes ~100 ms
# after the press, whose echo was found: its ladder would be 9 polls for nothing, ~11 ms of
# CPU a key). A button's release has it: a click acts on the release.
ECHOLESS_KEYS = frozenset({"ShiftLeft", "ShiftRight", "ControlLeft", "ControlRight",
                           "AltLeft", "AltRight", "MetaLeft", "MetaRight"})

JPEG_QUALITIES = (85, 75, 65, 55, 45, 35)  # lowered one step while acks hold us back:
# ... and for a region in motion of at least HALF_SCALE_MIN_PX, at each of those steps:
# (JPEG quality, 1 whole or 2 half resolution). Below q55 each step bought few bytes for a
# visibly worse picture (bench's Mandelbrot at 4:2:0, luma PSNR: q75 39.4 dB, q55 35.6, q35
# 33.2; a 1080p update main sent at q35 was 100 KB), while the link or viewer still could
# not keep up; at half resolution a quarter of the pixels go: 35-37 KB an update at q75/q55,
# and in Chromium (a whole 1080p JPEG decodes in 22-26 ms here) 21-23 whole updates a second
# against main's 13-15 (bench/README). So the lower rungs trade resolution, not ever-lower
# quality, for frame rate; a viewer that keeps up stays on the upper rungs, whole, and what
# went at half resolution is refined whole once still (Motion.refinement, Pacer.plan).
MOTION_RUNGS = ((75, 1), (75, 1), (65, 1), (55, 1), (75, 2), (55, 2))
# A region in motion smaller than this stays whole at every rung, at the still ladder's
# quality as before (a spinner, a small animation: few pixels to save, and it may be what
# the support person is reading).
HALF_SCALE_MIN_PX = 256 * 256
HELD_BACK_AFTER_S = 1 / 30  # ... while an update encoded ahead waits this long from its grab
#                             to its start (the link takes fewer than 30 a second; waiting
#                             at all is normal: one is encoded while another is in flight)
QUALITY_UP_AFTER_UPDATES = 30  # unhindered updates before trying a better quality again
# On a slow link a bulk update goes in strips of about this much link time each, so that an
# interactive update waits behind at most one strip (at least 16 rows: JPEG's MCU).
STRIP_LINK_S = 0.03
# first guesses, then learnt from what was sent, per pixel of the screen covered ("420/2":
# 4:2:0 at half resolution, about a third of whole 4:2:0's)
BYTES_PER_PX = {"444": 0.5, "420": 0.2, "420/2": 0.07}
# A whole image while the link is slower than this, or not known yet (a session's first),
# goes first at JPEG 4:2:0 at the lowest quality (palette PNG stays exact), and its JPEG
# rectangles again at full quality once they are still: the support person sees the screen
# in a fraction of the time, and the sharp image follows.
QUICK_FULL_IMAGE_BELOW_BYTES_S = 1_000_000


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and \
        b[1] < a[1] + a[3]


def _bounds(rects: Iterable[Rect]) -> Rect:
    rects = list(rects)
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    return x0, y0, x1 - x0, y1 - y0


class Motion:
    """What the recent polls found: a run of changes (poll faster), and a region in motion:
    one area, of any size, changed poll after poll (a video in a corner, a dragged window, a
    full-screen game), to be sent cheaper while it moves and again at full quality once it is
    still. Changes elsewhere (an echo of typing beside the video) are not part of it. Time is
    passed in."""

    @property
    def run(self) -> int:
        """Polls in a row that count as motion, for the poll interval."""
        return max(self.changes, self.moving)

    def __init__(self, now: float) -> None:
        self.changes = 0  # polls in a row that found a change
        self.moving = 0  # ... that changed the region (polls within MOTION_GAP_S do not break)
        self.box: Rect | None = None  # the region in motion, or its first candidate
        self._recent: deque[Rect] = deque(maxlen=MOTION_AFTER_CHANGES)  # its last polls
        self.changed_at = self.moved_at = now
        self._lossy: Rect | None = None  # the area sent at motion quality
        self._lossy_at = now  # ... last
        self._was: Rect | None = None  # the last region in motion
        self._was_at = -1e9  # ... last seen moving

    def saw(self, rects: list[Rect], now: float) -> list[Rect]:
        """Count one poll; the rectangles of it that are in motion (to send at motion
        quality), none before MOTION_AFTER_CHANGES polls in a row changed the region."""
        if not rects:
            self.changes = 0
            if now - self.moved_at > MOTION_GAP_S:
                self.moving, self.box = 0, None
            return []
        self.changes, self.changed_at = self.changes + 1, now
        near = self.box and (self.box[0] - MOTION_MARGIN_PX, self.box[1] - MOTION_MARGIN_PX,
                             self.box[2] + 2 * MOTION_MARGIN_PX,
                             self.box[3] + 2 * MOTION_MARGIN_PX)
        inside = [r for r in rects if near and _overlaps(r, near)]
        was = self._was
        if not inside and was and now - self._was_at <= MOTION_RESUME_S:
            again = [r for r in rects if _overlaps(r, was)]
            if 4 * sum(w * h for _, _, w, h in again) >= was[2] * was[3]:
                self.box, self.moving, inside = was, MOTION_AFTER_CHANGES - 1, again
                self._recent.clear()
        if not inside:
            if self.box is not None and now - self.moved_at <= MOTION_GAP_S:
                return []  # the region is between two of its frames; this is elsewhere
            seed = max(rects, key=lambda r: r[2] * r[3])  # a new candidate: the largest
            self.box, self.moving, self.moved_at = seed, 1, now
            self._recent.clear()
            self._recent.append(seed)
            return []
        # the region is what moved in and near it in its last few polls (a video whose still
        # parts split its changes into several rectangles, a dragged window), no older: a
        # whole image once sent does not make the whole screen a region for ever
        self._recent.append(_bounds(inside))
        self.box = _bounds(self._recent)
        small = self.box[2] * self.box[3] < MOTION_MIN_PX  # a candidate still, at most
        self.moving, self.moved_at = 1 if small else self.moving + 1, now
        if self.moving < MOTION_AFTER_CHANGES:
            return []
        self._was, self._was_at = self.box, now
        self.sent_lossy(inside, now)
        return inside

    def sent_lossy(self, rects: list[Rect], now: float) -> None:
        """``rects`` went at motion quality: refine them once still."""
        self._lossy = _bounds([*rects, self._lossy] if self._lossy else rects)
        self._lossy_at = now

    def refinement(self, now: float) -> list[Rect]:
        """The area sent at motion quality, once it has been still REFINE_AFTER_S (then
        forgotten); nothing otherwise."""
        if self._lossy is None or now - self._lossy_at < REFINE_AFTER_S:
            return []
        lossy, self._lossy = self._lossy, None
        return [lossy]


@dataclass(frozen=True)
class Encoding:
    """How to encode one update: which rectangles, at what JPEG quality and subsampling, in
    strips of how many rows; ``interactive``: it shows what input just did (it goes ahead of
    bulk updates); ``motion``: the region in motion; ``refine``: a quick whole image."""

    rects: list[Rect]
    quality: int
    subsampling: str
    rows: int
    interactive: bool = False
    motion: bool = False
    refine: bool = False  # its JPEG rectangles are to be sent again at full quality
    scale: int = 1  # 2: its JPEG images at half resolution (only a large region in motion)

    @property
    def cost(self) -> str:
        """Its key in Pacer.bytes_per_px."""
        return self.subsampling if self.scale == 1 else f"{self.subsampling}/{self.scale}"


class Pacer:
    """When to poll the screen and how to encode what changed (the streamer asks; time is
    passed in). Fast right after input and during motion, slow once the screen is still;
    JPEG quality lowered before frame rate while flow control holds updates back, and
    recovered slowly; a region in motion sent cheaply at 4:2:0 in its own update (a large
    one at half resolution on the ladder's lower rungs, MOTION_RUNGS), then refined at full
    quality; what changed elsewhere right after input is an interactive
    update of its own; on a slow link bulk updates go in strips of STRIP_LINK_S each."""

    def __init__(self, now: float, threads: int = 2) -> None:
        self.motion = Motion(now)
        self.threads = threads  # encoder threads: in motion, one strip each
        self.input_at = -1e9
        self.echo_awaited_since: float | None = None  # the ladder's input (ECHO_POLLS_S)
        self.quality_step = 0
        self.smooth_updates = 0
        self.bytes_per_px = dict(BYTES_PER_PX)

    def input(self, now: float, echo: bool = True) -> None:
        """The support person's input was injected: the screen will change, look soon;
        with ``echo`` (a key, a button, a scroll: not a pointer move), on the ladder of
        ECHO_POLLS_S until a poll finds its echo."""
        self.input_at = now
        if echo:
            self.echo_awaited_since = now

    @staticmethod
    def awaits_echo(method: str, args: tuple) -> bool:
        """Whether input injected as ``method(*args)`` (agent_session.Inject) is looked for
        on the ladder of ECHO_POLLS_S."""
        if method == "key":
            code, down = args
            return down and code not in ECHOLESS_KEYS
        return method in ("button", "scroll", "type")

    def interactive(self, now: float) -> bool:
        """Whether what changes now is probably the answer to input."""
        return now - self.input_at < FAST_POLL_WINDOW_S

    def held_back(self, waited: float | None = None) -> None:
        """Flow control stopped an update: the next one is a JPEG step cheaper. ``waited``:
        an update encoded ahead has waited this long to begin; only from HELD_BACK_AFTER_S on
        is that a hold (in motion one is encoded ahead as a rule: at 4:2:0 q75 on the loopback
        that lowered the quality to q35 within half a second, and it stayed there)."""
        if waited is None or waited >= HELD_BACK_AFTER_S:
            self.smooth_updates = -1

    def encoded(self, plan: Encoding, frames: list[p.Frame], now: float) -> None:
        """``plan`` came out as ``frames``: the next strips are cut by what it cost, and a
        quick whole image's JPEG rectangles are refined once still."""
        pixels = sum(w * h for _, _, w, h in plan.rects)
        if pixels:
            old = self.bytes_per_px[plan.cost]
            size = sum(len(frame.image) for frame in frames)
            self.bytes_per_px[plan.cost] = 0.7 * old + 0.3 * size / pixels
        lossy = [(f.x, f.y, f.width, f.height) for f in frames if f.kind == p.FRAME_JPEG]
        if plan.refine and lossy:
            self.motion.sent_lossy(lossy, now)

    def due(self, polled_at: float, now: float, held: bool = False) -> float:
        """When to poll next, the last poll having begun at ``polled_at`` and its work
        (grab, compare, encode) ended at ``now``: the interval's cadence, or sooner the
        ladder's next rung after that poll while an echo is awaited, but no sooner than the
        last poll's work took again after it ended: on a busy machine a poll took 12-25 ms,
        and polls back to back took the CPU that the echo's own program needed to draw it.
        ``held``: flow control holds bulk updates back (see interval)."""
        since, rung = self.echo_awaited_since, None
        # (not while a region is in motion: each rung's poll found the video and started its
        # update, and on 512 kbit/s typing beside a video measured 5-18 ms slower at p50 in
        # 3 rounds of 3, with a worse p95 in all 3: the echo behind a video strip, it seems;
        # unless held: then no poll starts the video's update)
        if since is not None and (held or self.motion.run < MOTION_AFTER_CHANGES):
            rung = next((since + s for s in ECHO_POLLS_S if since + s > polled_at), None)
            if rung is None:  # past the last rung: no echo came, the cadence goes on
                self.echo_awaited_since = None
        at = polled_at + self.interval(now, held)
        return at if rung is None else min(at, max(rung, now + (now - polled_at)))

    def interval(self, now: float, held: bool = False) -> float:
        """The time from one poll to the next. While flow control holds bulk updates back
        (``held``), a poll can send only what input did: after input, once its echo is found
        (the ladder, due()), the rest of it is looked for at POLL_INTERVAL_S, not
        FAST_POLL_INTERVAL_S (on 512 kbit/s with a video playing, polls every 10 ms found
        the video they could not send, 15 ms of work each at load 9, back to back)."""
        if self.interactive(now):
            found = self.echo_awaited_since is None
            return POLL_INTERVAL_S if held and found else FAST_POLL_INTERVAL_S
        if self.motion.run >= MOTION_AFTER_CHANGES:
            return MOTION_POLL_INTERVAL_S
        if now - max(self.motion.changed_at, self.input_at) > IDLE_AFTER_S:
            return IDLE_POLL_INTERVAL_S
        return POLL_INTERVAL_S

    def plan(self, rects: list[Rect], now: float, rate: float | None = None,
             full: bool = False, viewer_limited: bool = False) -> list[Encoding]:
        """How to send what this poll found (``rate``: the link's bytes a second, None if
        unknown; ``full``: ``rects`` are a whole image, sent as one update;
        ``viewer_limited``: the rate is the viewer's decoding, not the link's,
        FlowControl.viewer_limited): the updates, in order (what is still or interactive
        first, then the region in motion); none when nothing changed."""
        moving = self.motion.saw(rects, now)
        if self.echo_awaited_since is not None and now > self.echo_awaited_since and \
                len(moving) < len(rects):  # found: the ladder stops (a video is no echo)
            self.echo_awaited_since = None
        refinement = self.motion.refinement(now)
        still = [r for r in rects if r not in moving] + refinement
        if not still and not moving:
            return []
        self._adapt_quality()
        quality = JPEG_QUALITIES[self.quality_step]
        if full:
            if rate is None or rate < QUICK_FULL_IMAGE_BELOW_BYTES_S:
                return [Encoding(rects, JPEG_QUALITIES[-1], "420",
                                 self._rows(rects, "420", rate), refine=True)]
            return [Encoding(rects, quality, "444", self._rows(rects, "444", rate))]
        plans = []
        if still:
            # what went at motion quality (4:2:0, half resolution) comes back at the top
            # quality, whatever rung the ladder fell to while it moved: the still screen is
            # the sharp one (a detailed video frame refined at q35 4:4:4 was further from
            # the screen than its half-resolution image: mean error 6.0 against 5.6; q85 2.2)
            plans.append(Encoding(still, JPEG_QUALITIES[0] if refinement else quality, "444",
                                  self._rows(still, "444", rate),
                                  interactive=self.interactive(now)))
        if moving:
            # one strip per encoder thread (a tenth less CPU than 128-row strips, and far
            # fewer images for the browser to decode and draw: in Chromium 1080p motion in 9
            # strips drew 5.8 whole updates a second, in 3 strips 9.3, same run), not capped
            # at STRIP_ROWS, but none holding the link longer than STRIP_LINK_S (an echo
            # waits behind at most one), at any rate: capped at STRIP_ROWS below 1 MB/s as
            # still updates are, a viewer-limited rate just under it (Chromium's, 0.6-0.9
            # MB/s, when no probe showed it was the viewer's) cut motion in 9 strips, which
            # made the viewer slower, so its rate lower again: a trap that held for the run.
            # On a slow link STRIP_LINK_S gives fewer rows than STRIP_ROWS anyway. Rows a
            # multiple of 16. A rate that is the viewer's says nothing of the link: no cut.
            # A region of at most STRIP_ROWS rows stays one strip: cut in two, a 100x100
            # video's strips are encoded inline anyway, only twice the frames.
            share = max(STRIP_ROWS, -(-max(h for _, _, _, h in moving) // self.threads))
            rows = -(-share // 16) * 16
            motion_quality, scale = MOTION_RUNGS[self.quality_step]
            if sum(w * h for _, _, w, h in moving) < HALF_SCALE_MIN_PX:
                motion_quality, scale = min(quality, MOTION_JPEG_QUALITY), 1
            cost = "420" if scale == 1 else f"420/{scale}"
            if not viewer_limited:
                rows = min(rows, self._link_rows(moving, cost, rate))
            plans.append(Encoding(moving, motion_quality, "420", rows, motion=True,
                                  scale=scale))
        return plans

    def _rows(self, rects: list[Rect], cost: str, rate: float | None) -> int:
        """Strip height: STRIP_ROWS, or fewer where one strip would hold the link longer
        than STRIP_LINK_S."""
        return min(STRIP_ROWS, self._link_rows(rects, cost, rate))

    def _link_rows(self, rects: list[Rect], cost: str, rate: float | None) -> int:
        """The most rows (a multiple of 16, at least 16) of a strip that the link carries in
        STRIP_LINK_S at ``rate``: an echo waits behind at most one such strip. Unbounded
        (a very large number) while the rate is not known."""
        if rate is None:
            return 1 << 30
        width = max(w for _, _, w, _ in rects)
        rows = int(rate * STRIP_LINK_S / (width * self.bytes_per_px[cost]))
        return max(16, rows // 16 * 16)

    def _adapt_quality(self) -> None:
        if self.smooth_updates < 0:
            self.quality_step = min(len(JPEG_QUALITIES) - 1, self.quality_step + 1)
            self.smooth_updates = 0
        else:
            self.smooth_updates += 1
            if self.smooth_updates >= QUALITY_UP_AFTER_UPDATES and self.quality_step > 0:
                self.quality_step -= 1
                self.smooth_updates = 0


class Outbox:
    """Encoded frames waiting for the link, in the order they are written: the streamer adds
    whole updates, the sender takes frames as flow control lets it. An interactive update
    goes ahead of the bulk frames still waiting (a keystroke's echo never waits behind a
    video frame), but after any it overlaps: older pixels must never land on newer. A bulk
    update added with ``redo`` is superseded instead: a waiting frame the echo overlaps is
    encoded again from the viewer's copy as it is now (so its pixels there are the echo's
    own, no longer older), and the echo still goes first; else the echo would wait for that
    paced strip's turn."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, bool, Rect, bytes]] = deque()  # seq, interactive, ...
        self.redos: dict[tuple[int, Rect], tuple[Callable, bool]] = {}  # -> redo, last

    def add(self, seq: int, frames: list[tuple[Rect, bytes]], interactive: bool,
            redo: Callable[[Rect, bool], list[tuple[Rect, bytes]]] | None = None) -> None:
        """Queue update ``seq``. ``redo(rect, last)``: frames of this bulk update covering
        ``rect`` with the pixels the viewer's copy holds when it is called (FLAG_LAST only
        if ``last``)."""
        new = [(seq, interactive, rect, data) for rect, data in frames]
        at = len(self.items)
        if interactive:  # after the last frame it overlaps, ahead of the other bulk frames
            fresh: set[int] = set()  # frames encoded again just now (from the end: the
            for n in range(len(self.items) - 1, -1, -1):  # indices ahead stay valid)
                other, bulk, rect = self.items[n][0], not self.items[n][1], self.items[n][2]
                if bulk and (other, rect) in self.redos and \
                        any(_overlaps(rect, r) for r, _ in frames):
                    fresh.update(id(item) for item in self._supersede(n))
            overlapping = [n for n, item in enumerate(self.items) if id(item) not in fresh
                           and any(_overlaps(item[2], r) for r, _ in frames)]
            first_bulk = next((n for n, item in enumerate(self.items) if not item[1]),
                              len(self.items))
            at = max(first_bulk, max(overlapping) + 1) if overlapping else first_bulk
        elif redo is not None:
            for n, (rect, _) in enumerate(frames):
                self.redos[(seq, rect)] = (redo, n == len(frames) - 1)
        for offset, item in enumerate(new):
            self.items.insert(at + offset, item)

    def _supersede(self, n: int) -> list[tuple[int, bool, Rect, bytes]]:
        """Encode waiting bulk frame ``n`` again from the viewer's copy, in its place; the
        new frames (a later echo may supersede them in turn)."""
        seq, _, rect, _ = self.items[n]
        redo, last = self.redos.pop((seq, rect))
        del self.items[n]
        parts = redo(rect, last)
        new = [(seq, False, part, data) for part, data in parts]
        for offset, item in enumerate(new):
            self.items.insert(n + offset, item)
            self.redos[(seq, item[2])] = (redo, last and offset == len(new) - 1)
        return new

    def bulk_waiting(self) -> bool:
        """Whether frames of a bulk update are still to be written."""
        return any(not interactive for _, interactive, _, _ in self.items)

    def peek(self) -> tuple[int, bool, Rect, bytes] | None:
        return self.items[0] if self.items else None

    def pop(self) -> tuple[int, bool, Rect, bytes]:
        item = self.items.popleft()
        self.redos.pop((item[0], item[2]), None)
        return item

    def clear(self) -> None:
        self.items.clear()
        self.redos.clear()
