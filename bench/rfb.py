"""The classic peer: x11vnc, and a scripted RFB 3.8 client that keeps asking for updates.

The client asks for Tight (then CopyRect, ZRLE, Raw), JPEG at a chosen quality level (and
TurboVNC's fine quality and subsampling, which x11vnc ignores), and always has exactly one
incremental FramebufferUpdateRequest outstanding: the next one is sent as soon as the previous
update has been fully received. It parses every rectangle far enough to know where it ends
(zlib data is skipped by its length, never inflated), which is all that counting updates and
bytes needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import socket
import struct
import subprocess
import threading
import time
from collections import Counter

from PIL import Image

from bench.desktop import Desktop, require, stop
from bench.measure import DrawnRect, UpdateCounter, Viewer, jpeg_settings, tcp_bytes_received

# Encodings (RFC 6143 and the RFB community registry).
RAW, COPYRECT, TIGHT, ZRLE = 0, 1, 7, 16
QUALITY_LEVEL_0 = -32
COMPRESS_LEVEL_0 = -256
FINE_QUALITY_0 = -512  # TurboVNC's fine-grained JPEG quality, 1..100
SUBSAMP_1X = -768  # TurboVNC's chroma subsampling: 1X (4:4:4), 4X (4:2:0), 2X (4:2:2), gray
SUBSAMP = {"4:4:4": SUBSAMP_1X, "4:2:0": SUBSAMP_1X - 1, "4:2:2": SUBSAMP_1X - 2,
           "gray": SUBSAMP_1X - 3}
RICH_CURSOR, POINTER_POS, LAST_RECT, DESKTOP_SIZE = -239, -232, -224, -223

# What x11vnc 0.9.16 (libvncserver 0.9.14, Debian 12) sends for each Tight quality level,
# read from the JPEG headers it sent (bench/RESULTS.md repeats the census every run). It
# ignores TurboVNC's fine quality and subsampling pseudo-encodings: a level is all it honours.
X11VNC_TIGHT_LEVELS = {0: ("4:2:0", 15), 1: ("4:2:0", 29), 2: ("4:2:0", 41), 3: ("4:2:2", 42),
                       4: ("4:2:2", 62), 5: ("4:2:2", 77), 6: ("4:4:4", 79), 7: ("4:4:4", 86),
                       8: ("4:4:4", 92), 9: ("4:4:4", 100)}

KEYSYMS = {"a": 0x61, "BackSpace": 0xFF08}
_RECT = struct.Struct(">HHHHi")
# 32 bits per pixel, depth 24, little-endian, true colour, 8 bits per channel.
_PIXEL_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


class RfbError(Exception):
    """The server said something this client does not understand."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# At its defaults x11vnc naps and polls every 20 ms and sends ~5 updates/s of full motion at
# a few % CPU; these make it follow the screen as closely as it can (~25 updates/s here).
X11VNC_TUNING = ("-wait", "5", "-defer", "5", "-nonap")


def start_x11vnc(desktop: Desktop, tuning: tuple[str, ...] = X11VNC_TUNING
                 ) -> tuple[subprocess.Popen, int]:
    """x11vnc on `desktop`, loopback only, no password; returns the process and its port."""
    require("x11vnc")
    process = subprocess.Popen(
        ["x11vnc", "-display", desktop.display, "-localhost", "-rfbport", str(_free_port()),
         "-nopw", "-forever", "-shared", "-noipv6", "-nolookup", *tuning],
        env=desktop.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keep reading, so x11vnc never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 20
    output: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        output.append(line)
        if line.startswith("PORT="):
            return process, int(line.split("=", 1)[1])
    stop(process)
    raise RfbError("x11vnc did not start:\n" + "".join(output[-20:]))


class RfbViewer(Viewer):
    """A scripted RFB client measuring what a VNC viewer would receive."""

    def __init__(self, quality_level: int, fine_quality: int | None = None,
                 subsampling: str | None = None) -> None:
        """Ask for Tight JPEG at `quality_level` (0..9, the standard pseudo-encodings), and,
        when given, TurboVNC's fine quality (1..100) and subsampling ("4:4:4", "4:2:0", ...)
        pseudo-encodings; the server honours what it knows (see request_for)."""
        self.quality_level = quality_level
        self.fine_quality = fine_quality
        self.subsampling = subsampling
        self.updates = UpdateCounter()
        self.width = self.height = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self.first_update = asyncio.Event()
        self.jpegs: Counter[tuple[str, int]] = Counter()  # (subsampling, quality) -> count
        self.rect_listeners: list = []
        self._update_no = 0

    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._handshake()
        self._task = asyncio.create_task(self._read_loop())

    def bytes_received(self) -> int:
        assert self._writer is not None
        return tcp_bytes_received(self._writer.get_extra_info("socket"))

    async def press(self, key: str) -> None:
        assert self._writer is not None
        for down in (1, 0):
            self._writer.write(struct.pack(">BBxxI", 4, down, KEYSYMS[key]))
        await self._writer.drain()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    # --- protocol -------------------------------------------------------------------------

    async def _read(self, n: int) -> bytes:
        assert self._reader is not None
        return await self._reader.readexactly(n)

    async def _handshake(self) -> None:
        assert self._writer is not None
        version = await self._read(12)
        if not version.startswith(b"RFB 003."):
            raise RfbError(f"not an RFB server: {version!r}")
        self._writer.write(b"RFB 003.008\n")
        (count,) = await self._read(1)
        if count == 0:
            (length,) = struct.unpack(">I", await self._read(4))
            raise RfbError((await self._read(length)).decode(errors="replace"))
        if 1 not in await self._read(count):
            raise RfbError("the server wants a password (start x11vnc with -nopw)")
        self._writer.write(b"\x01")
        (result,) = struct.unpack(">I", await self._read(4))
        if result != 0:
            raise RfbError("security handshake failed")
        self._writer.write(b"\x01")  # ClientInit: shared
        self.width, self.height = struct.unpack(">HH", await self._read(4))
        await self._read(16)
        (name_length,) = struct.unpack(">I", await self._read(4))
        await self._read(name_length)
        encodings = [TIGHT, COPYRECT, ZRLE, RAW]
        if self.fine_quality is not None:
            encodings.append(FINE_QUALITY_0 + self.fine_quality)
        if self.subsampling is not None:
            encodings.append(SUBSAMP[self.subsampling])
        encodings += [QUALITY_LEVEL_0 + self.quality_level, COMPRESS_LEVEL_0 + 6,
                      RICH_CURSOR, POINTER_POS, LAST_RECT, DESKTOP_SIZE]
        self._writer.write(b"\x00\x00\x00\x00" + _PIXEL_FORMAT)
        self._writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        self._request(incremental=False)
        self.asked_at = time.perf_counter()
        await self._writer.drain()

    def _request(self, incremental: bool) -> None:
        assert self._writer is not None
        self._writer.write(struct.pack(">BBHHHH", 3, incremental, 0, 0, self.width, self.height))

    async def _read_loop(self) -> None:
        while True:
            (kind,) = await self._read(1)
            if kind == 0:
                await self._framebuffer_update()
            elif kind == 1:
                _, _, count = struct.unpack(">xHH", await self._read(5))
                await self._read(count * 6)
            elif kind == 2:
                pass  # bell
            elif kind == 3:
                (length,) = struct.unpack(">xxxI", await self._read(7))
                await self._read(length)
            else:
                raise RfbError(f"unexpected server message type {kind}")

    async def _framebuffer_update(self) -> None:
        (count,) = struct.unpack(">xH", await self._read(3))
        real = 0
        n = 0
        while count == 0xFFFF or n < count:
            x, y, w, h, encoding = _RECT.unpack(await self._read(_RECT.size))
            n += 1
            if encoding == LAST_RECT:
                break
            if encoding == DESKTOP_SIZE:
                self.width, self.height = w, h
                continue
            if encoding == POINTER_POS:
                continue
            if encoding == RICH_CURSOR:
                await self._read(w * h * 4 + (w + 7) // 8 * h)
                continue
            real += 1
            jpeg = await self._rectangle(w, h, encoding)
            for listener in self.rect_listeners:
                listener(DrawnRect(self._update_no, x, y, w, h, jpeg, time.perf_counter()))
        self._update_no += 1
        self._request(incremental=True)
        assert self._writer is not None
        await self._writer.drain()
        if real:
            self.updates.done(real)
            if not self.first_update.is_set():
                self.first_update_at = time.perf_counter()
            self.first_update.set()

    async def _rectangle(self, w: int, h: int, encoding: int) -> tuple[str, int] | None:
        """Read one rectangle; a JPEG's (subsampling, quality)."""
        if encoding == RAW:
            await self._read(w * h * 4)
        elif encoding == COPYRECT:
            await self._read(4)
        elif encoding == ZRLE:
            (length,) = struct.unpack(">I", await self._read(4))
            await self._read(length)
        elif encoding == TIGHT:
            return await self._tight(w, h)
        else:
            raise RfbError(f"unexpected encoding {encoding}")

    async def _compact_length(self) -> int:
        length = 0
        for shift in (0, 7, 14):
            (byte,) = await self._read(1)
            length |= (byte & 0x7F) << shift
            if not byte & 0x80 or shift == 14:
                break
        return length

    async def _tight(self, w: int, h: int) -> tuple[str, int] | None:
        (control,) = await self._read(1)
        method = control >> 4
        if method == 8:  # fill: one TPIXEL (3 bytes at depth 24)
            await self._read(3)
            return None
        if method == 9:  # JPEG: decoded, as a viewer must before asking for more
            data = await self._read(await self._compact_length())
            picture = Image.open(io.BytesIO(data))
            picture.load()
            settings = jpeg_settings(picture)
            self.jpegs[settings] += 1
            return settings
        if method & 0x08:
            raise RfbError(f"unknown Tight compression {method}")
        filter_id = (await self._read(1))[0] if control & 0x40 else 0
        if filter_id == 1:  # palette
            colours = (await self._read(1))[0] + 1
            await self._read(colours * 3)
            size = (w + 7) // 8 * h if colours == 2 else w * h
        elif filter_id in (0, 2):  # copy, gradient: TPIXELs
            size = w * h * 3
        else:
            raise RfbError(f"unknown Tight filter {filter_id}")
        if size < 12:
            await self._read(size)
        else:
            await self._read(await self._compact_length())
        return None
