"""What both scripted viewers share: counting updates and wire bytes, and the latency probe."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

# struct tcp_info (linux/tcp.h): tcpi_bytes_received is a u64 at byte 128 (Linux >= 4.1).
_TCP_INFO_BYTES_RECEIVED = 128


def tcp_bytes_received(sock: socket.socket) -> int:
    """TCP payload bytes this socket has received, from the kernel (so framing is counted)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("<Q", info, _TCP_INFO_BYTES_RECEIVED)[0]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class UpdateCounter:
    """Completed screen updates as a scripted viewer sees them (decoded, or fully received)."""

    count: int = 0
    rectangles: int = 0
    last_done: float = 0.0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def done(self, rectangles: int) -> None:
        self.count += 1
        self.rectangles += rectangles
        self.last_done = time.perf_counter()
        self._changed.set()

    async def wait_beyond(self, count: int, timeout_s: float) -> float | None:
        """The completion time of the first update after `count`, or None on timeout."""
        deadline = time.perf_counter() + timeout_s
        while self.count <= count:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return None
        return self.last_done

    async def quiet(self, quiet_s: float, timeout_s: float) -> bool:
        """Wait until no update has completed for `quiet_s` (False if it never settles)."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            since = time.perf_counter() - self.last_done
            if since >= quiet_s:
                return True
            await asyncio.sleep(quiet_s - since)
        return False


@dataclass(frozen=True)
class DrawnRect:
    """One rectangle a scripted viewer finished (decoded, or fully received), and when."""

    update: int  # the viewer's count of updates started when this rectangle came
    x: int
    y: int
    width: int
    height: int
    jpeg: tuple[str, int] | None  # (subsampling, quality) of a JPEG rectangle
    at: float  # time.perf_counter()

    def meets(self, box: tuple[int, int, int, int]) -> bool:
        """Whether this rectangle overlaps `box` (x, y, width, height)."""
        x, y, w, h = box
        return (self.x < x + w and x < self.x + self.width
                and self.y < y + h and y < self.y + self.height)


class Viewer:
    """The interface both scripted viewers implement for the harness.

    `asked_at` is when the viewer asked for its first image (ours: Accept sent; RFB: the
    first FramebufferUpdateRequest), `first_update_at` when that first update was complete;
    each callable in `rect_listeners` gets every DrawnRect as it is finished.
    """

    updates: UpdateCounter
    asked_at: float = 0.0
    first_update_at: float = 0.0
    rect_listeners: list

    def bytes_received(self) -> int:
        raise NotImplementedError

    async def press(self, key: str) -> None:
        """Press and release `key` ("a" or "BackSpace") on the remote machine."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def key_latencies(viewer: Viewer, presses: int, timeout_s: float = 2.0) -> list[float]:
    """Seconds from a key press sent to the first update completed after it, per press.

    Alternates a letter and BackSpace into an idle xterm, so every press changes the screen
    and nothing else does; waits for a quiet screen before each press. Lost presses (no update
    within timeout_s) are counted as timeout_s, so they show in p99 rather than vanish.
    """
    latencies: list[float] = []
    for n in range(presses):
        await viewer.updates.quiet(0.12, 2.0)
        before = viewer.updates.count
        sent = time.perf_counter()
        await viewer.press("a" if n % 2 == 0 else "BackSpace")
        done = await viewer.updates.wait_beyond(before, timeout_s)
        latencies.append((done - sent) if done is not None else timeout_s)
    return latencies


# --- what quality the JPEGs had ---------------------------------------------------------------

# The IJG luminance quantisation table (JPEG Annex K); libjpeg scales it by the quality.
_IJG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40,
             57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24,
             35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98,
             112, 100, 103, 99)
_SAMPLINGS = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}


def _luma_sum(quality: int) -> int:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return sum(max(1, min(255, (q * scale + 50) // 100)) for q in _IJG_LUMA)


_LUMA_SUMS = {q: _luma_sum(q) for q in range(1, 101)}


def jpeg_settings(image) -> tuple[str, int]:
    """(chroma subsampling, libjpeg quality) of an opened Pillow JPEG, from its header: the
    quality is the one whose scaled IJG luminance table is closest to the image's."""
    sampling = _SAMPLINGS.get(tuple(image.layer[0][1:3]), "other")
    table = image.quantization.get(0, ())
    total = sum(table)
    quality = min(_LUMA_SUMS, key=lambda q: (abs(_LUMA_SUMS[q] - total), -q))
    return sampling, quality


def census_text(census: dict[tuple[str, int], int]) -> str:
    """'4:2:0 q75 (93%), 4:4:4 q85 (7%)' for the JPEGs counted in `census`."""
    total = sum(census.values())
    if not total:
        return "no JPEG"
    parts = sorted(census.items(), key=lambda item: -item[1])
    return ", ".join(f"{s} q{q} ({n / total:.0%})" for (s, q), n in parts)
