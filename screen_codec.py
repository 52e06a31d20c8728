"""Screen updates without I/O: what changed between two screen images, and the frames that
carry it to the viewer (when to look, and at what quality, is screen_pacing's).

Images are C-contiguous (height, width, 4) BGRX buffers (mss's layout, and the agent's
``Screen.grab``), read through memoryviews: no numpy, which would cost the agent 14 MB of
memory and the exe 8.8 MB. ``ScreenDiff`` holds a copy of what the viewer shows and finds the
pixels that differ from it: 64x64 tiles compared band by band (memcmp first, Pillow's
difference of the band's bytes only on bands that differ), runs of changed tiles merged into
rectangles, each cropped to the pixels that really changed. ``encode_update`` turns
rectangles into ``protocol.Frame`` objects, choosing per rectangle (large ones in strips,
which may be encoded in parallel threads):

- an exact palette PNG when it has at most 256 colours (text, anti-aliased text, UI, flat
  backgrounds): lossless, and far smaller than JPEG for such content;
- JPEG 4:4:4 otherwise (4:2:0 smears coloured text), by Pillow's libjpeg-turbo, straight
  from the BGRX pixels (no RGB copy of the rectangle); the caller may ask for 4:2:0 (half the
  encoding work and bytes) while most of the screen is in motion, and resend the area at
  4:4:4 once it is still;
- for small rectangles with many (<= 256) colours, whichever of the two is smaller.

No frame is larger than MAX_FRAME_BYTES: strips are cut by pixels (wide monitors get fewer
rows), and a strip whose image still came out too large is halved and encoded again.

Buffers are reused: the viewer's copy, the palette lookup tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import io
import itertools
import mmap
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PIL import Image, ImageChops, ImageFile, JpegImagePlugin

# Image.save would first import the BMP, GIF, PPM and PNG plugins too (Image.preinit; 0.4 MB at
# the agent's peak, bench/memory): JPEG is the only format Pillow writes here (_png writes
# PNG itself). Marked done once JPEG is registered; Pillow still loads every plugin (init)
# for a format not registered, in Image.save and Image.open alike.
if JpegImagePlugin and getattr(Image, "_initialized", 1) < 1:
    Image._initialized = 1

import protocol as p

TILE_PX = 64  # changed-tile grid
SAMPLE_ROWS = 4  # a sampled compare reads every 4th row first (the next poll the next rows)
STRIP_ROWS = 128  # large rectangles go in strips of this many rows (a multiple of 16)
PALETTE_MAX_COLOURS = 256
# A whole image's columns with at most this many colours are flat (desktop, window fills):
# with more, a 64-pixel column of a video's smooth gradient went as a PNG 3x its JPEG
FLAT_MAX_COLOURS = 8
EVERY_COLUMN_ROWS = 8  # sampled rows checked at a time for "every column differs" (video)
CROP_MAX_TILES = 16  # runs of up to this many tiles are cropped to the changed pixels
SMALL_RECT_PX = 128 * 128  # both encoders are tried on rectangles up to this size
BOTH_ENCODERS_MIN_PX = 32 * 32  # ... and at least this size (a glyph is always PNG)
BOTH_ENCODERS_MIN_COLOURS = 24  # ... when they have at least this many colours
MANY_COLOURS_ROWS = 8  # a rectangle with more than 256 colours in this many rows is JPEG
PYTHON_INDEX_MAX_PX = 1024  # palette indexes of up to this many pixels looked up in Python
PNG_LEVELS = ((64 * 64 * 4, 9), (256 * 256, 6), (1 << 62, 3))  # (up to px, zlib level)
# Strips are planned at this many bytes a pixel (JPEG of noise: 1.6 at quality 85 4:4:4, 4.1
# at 100), so that one rarely has to be encoded again in halves to stay under MAX_FRAME_BYTES.
EXPECTED_BYTES_PER_PX = 2.0

Rect = tuple[int, int, int, int]  # x, y, width, height
# A C-contiguous (height, width, 4) BGRX image: any object with the buffer protocol of that
# shape (the agent's grabs are memoryviews cast to it; tests also pass numpy arrays).
Pixels = Any


def _load_memcmp() -> Callable[[int, int, int], int] | None:
    """The C library's memcmp, to compare bands of two images without allocating."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        if sys.platform == "win32":
            memcmp = ctypes.cdll.msvcrt.memcmp
        else:
            memcmp = ctypes.CDLL(ctypes.util.find_library("c") or None).memcmp
        memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
        memcmp.restype = ctypes.c_int
        return memcmp
    return None


_MEMCMP = _load_memcmp()


class _PyBuffer(ctypes.Structure):  # CPython's Py_buffer (stable since 3.3)
    _fields_ = (("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p))


@contextlib.contextmanager
def _address(buffer: memoryview) -> Iterator[int]:
    """Where a buffer's bytes are, read-only ones too (mss's shared-memory grab), for memcmp:
    ctypes' from_buffer wants a writable buffer."""
    view = _PyBuffer()
    _GET_BUFFER(ctypes.py_object(buffer), ctypes.byref(view), 0)
    try:
        yield view.buf
    finally:
        _RELEASE_BUFFER(ctypes.byref(view))


# function objects of our own (pythonapi["..."], not pythonapi.X, which every module shares):
# another copy of this module (bench/codec_speed's baseline) sets argtypes of its own class
_GET_BUFFER = ctypes.pythonapi["PyObject_GetBuffer"]
_GET_BUFFER.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_RELEASE_BUFFER = ctypes.pythonapi["PyBuffer_Release"]
_RELEASE_BUFFER.argtypes = (ctypes.POINTER(_PyBuffer),)


def _bytes_of(pixels: Pixels) -> tuple[memoryview, int, int]:
    """(the bytes as one flat read-only-or-not view, width, height) of a BGRX image."""
    view = memoryview(pixels)
    if view.ndim != 3 or view.shape[2] != 4 or view.itemsize != 1 or not view.c_contiguous:
        raise ValueError(f"not a C-contiguous (height, width, 4) byte image: {view.shape}")
    return view.cast("B"), view.shape[1], view.shape[0]


def writeable(pixels: Pixels) -> bool:
    """Whether the image's buffer may be written (a grab the caller owns, not a view)."""
    return not memoryview(pixels).readonly


def new_image(width: int, height: int) -> memoryview:
    """A black BGRX image of this size: a (height, width, 4) view of memory of its own (an
    anonymous mapping: dropped, for a grab the viewer's copy now keeps by reference, it goes
    back to the system, where the heap would keep its 8 MB resident)."""
    size = width * height * 4
    memory = mmap.mmap(-1, size) if size else bytearray()
    return memoryview(memory).cast("B", (height, width, 4))


class _Compare:
    """Equality of byte ranges of two buffers at the same offsets: memcmp on their addresses
    (held for the life of the object), or slices compared where there is no memcmp."""

    def __init__(self, old: memoryview, new: memoryview) -> None:
        self.old, self.new = old, new
        self._stack = contextlib.ExitStack()
        if _MEMCMP is not None:
            self._old_at = self._stack.enter_context(_address(old))
            self._new_at = self._stack.enter_context(_address(new))

    def equal(self, start: int, stop: int) -> bool:
        if _MEMCMP is not None:
            return _MEMCMP(self._old_at + start, self._new_at + start, stop - start) == 0
        return self.old[start:stop] == self.new[start:stop]

    def differing_rows(self, ys: range, row_bytes: int) -> list[int]:
        """The rows of ``ys`` (rows of ``row_bytes`` bytes) that differ: memcmp mapped over
        the rows' addresses, not called from a Python loop (270 sampled rows of a 1080p
        screen cost 0.8-1.3 ms of the streamer's poll that way, mostly the loop)."""
        if _MEMCMP is None or not ys:
            return [y for y in ys if not self.equal(y * row_bytes, (y + 1) * row_bytes)]
        first, step = ys.start * row_bytes, ys.step * row_bytes
        stop = first + len(ys) * step
        return list(itertools.compress(ys, map(
            _MEMCMP, range(self._old_at + first, self._old_at + stop, step),
            range(self._new_at + first, self._new_at + stop, step),
            itertools.repeat(row_bytes))))

    def close(self) -> None:
        self._stack.close()


def _bytes_image(data: memoryview, offset: int, width: int, rows: int, stride: int
                 ) -> Image.Image:
    """A Pillow "L" image of ``rows`` rows of ``width`` bytes, ``stride`` apart, mapped onto
    ``data`` (no copy): one byte of BGRX a pixel of it, so a difference shows every byte.
    (Pillow maps only whole strides: the caller keeps ``rows * stride`` inside ``data``.)"""
    return Image.frombuffer("L", (width, rows), data[offset:offset + rows * stride], "raw",
                            "L", stride, 1)


def _differing_columns(old: memoryview, new: memoryview, start: int, width: int, rows: int,
                       stride: int) -> int:
    """A bit for each byte column that differs in one of ``rows`` rows ``stride`` apart."""
    whole = min(rows, (len(old) - start) // stride)  # the last row may end the buffer early
    parts = [(start, whole, stride), (start + whole * stride, rows - whole, width)]
    mask = 0
    for offset, count, step in parts:
        if count:
            difference = ImageChops.difference(_bytes_image(old, offset, width, count, step),
                                               _bytes_image(new, offset, width, count, step))
            mask |= int.from_bytes(difference.im.getprojection()[0], "little")
    return mask


class ScreenDiff:
    """The image the viewer shows (its own copy, or an image given away) and what differs
    from it."""

    def __init__(self, tile: int = TILE_PX) -> None:
        self.tile = tile
        self.shown: Pixels | None = None
        self._phase = 0  # which rows the next sampled compare reads

    def matches(self, pixels: Pixels) -> bool:
        """Whether ``pixels`` can be compared with what is shown (same size, shown at all)."""
        return self.shown is not None and \
            memoryview(self.shown).shape == memoryview(pixels).shape

    def changes(self, pixels: Pixels, sample_rows: int = 1) -> list[Rect]:
        """Rectangles covering every pixel of ``pixels`` that differs from what is shown.

        With ``sample_rows`` > 1 only bands of tiles where one of every ``sample_rows`` rows
        differs (and a neighbour where such a row is near the edge) are compared in full (a
        quarter of the memory read for an unchanged screen, which is most polls): anything at
        least that many rows tall is found at once, and a thinner change by one of the next
        ``sample_rows - 1`` calls, which read the other rows. When the sampled rows differ in
        every band and every column (video), the answer is the whole image, without comparing
        all of it.
        """
        if not self.matches(pixels):
            raise ValueError("nothing comparable is shown: send the whole image first")
        if sample_rows <= 1:
            return changed_rects(self.shown, pixels, self.tile)
        old, width, height = _bytes_of(self.shown)
        new = _bytes_of(pixels)[0]
        compare = _Compare(old, new)
        try:
            self._phase = (self._phase + 1) % sample_rows
            bands = self._sampled_bands(compare, width, height, sample_rows)
            if not bands:
                return []
            if len(bands) >= -(-height // self.tile) and \
                    self._every_column(old, new, width, height, sample_rows):
                return [(0, 0, width, height)]
            return _changed_rects(compare, width, height, self.tile, bands)
        finally:
            compare.close()

    def _sampled_bands(self, compare: _Compare, width: int, height: int, step: int
                       ) -> set[int]:
        ys = compare.differing_rows(range(self._phase, height, step), width * 4)
        tile = self.tile
        bands = {y // tile for y in ys}
        # ... and a neighbour when a changed sampled row is near its edge: a change that crosses
        # into it (by fewer rows than sampled) goes in the same update
        bands.update(y // tile + 1 for y in ys if y % tile >= tile - step and y + step < height)
        bands.update(y // tile - 1 for y in ys if y % tile < step and y >= tile)
        return bands

    def _every_column(self, old: memoryview, new: memoryview, width: int, height: int,
                      step: int) -> bool:
        """Whether every column of words (8 bytes, 4 for odd widths) differs in a sampled
        row: Pillow's difference of the sampled rows (mapped, not copied), projected, a few
        rows at a time (video answers yes within the first few)."""
        row_bytes, word = width * 4, 8 if width % 2 == 0 else 4
        rows = range(self._phase, height, step)
        columns = 0
        for first in range(0, len(rows), EVERY_COLUMN_ROWS):
            count = min(EVERY_COLUMN_ROWS, len(rows) - first)
            columns |= _differing_columns(old, new, rows[first] * row_bytes, row_bytes, count,
                                          row_bytes * step)
            words = memoryview(columns.to_bytes(row_bytes, "little")).cast(
                "Q" if word == 8 else "I")
            if 0 not in words.tolist():
                return True
        return False

    def commit(self, pixels: Pixels, rects: Iterable[Rect], owned: bool = False) -> None:
        """The viewer now shows ``rects`` of ``pixels``: copied, or for a whole image that
        the caller will not change (``owned``), kept as it is."""
        rects = list(rects)
        source, width, height = _bytes_of(pixels)
        whole = [(0, 0, width, height)]
        if owned and rects == whole:
            self.shown = pixels
            return
        if not self.matches(pixels):
            self.shown = new_image(width, height)
            rects = whole
        shown, row_bytes = _bytes_of(self.shown)[0], width * 4
        for x, y, w, h in rects:
            if x == 0 and w == width:  # whole rows: one copy
                shown[y * row_bytes:(y + h) * row_bytes] = \
                    source[y * row_bytes:(y + h) * row_bytes]
                continue
            for start in range(y * row_bytes + x * 4, (y + h) * row_bytes, row_bytes):
                shown[start:start + w * 4] = source[start:start + w * 4]

    def forget(self) -> None:
        self.shown = None


def changed_rects(old: Pixels, new: Pixels, tile: int = TILE_PX,
                  bands: set[int] | None = None) -> list[Rect]:
    """(x, y, width, height) rectangles covering every pixel where ``new`` differs from
    ``old``: runs of changed tiles in a row of tiles, merged downwards while the run keeps its
    tile span, and runs of up to CROP_MAX_TILES tiles cropped to the pixels that changed.
    With ``bands`` only those bands of tiles (0 the top one) are compared."""
    old_bytes, width, height = _bytes_of(old)
    new_bytes, new_width, new_height = _bytes_of(new)
    if (new_width, new_height) != (width, height):
        raise ValueError("the two images differ in size")
    compare = _Compare(old_bytes, new_bytes)
    try:
        return _changed_rects(compare, width, height, tile, bands)
    finally:
        compare.close()


def _changed_rects(compare: _Compare, width: int, height: int, tile: int,
                   bands: set[int] | None) -> list[Rect]:
    row_bytes = width * 4
    rects: list[list[int]] = []  # x0, y0, x1, y1
    open_runs: dict[tuple[int, int], list[int]] = {}
    for y0 in range(0, height, tile):
        y1 = min(height, y0 + tile)
        runs: dict[tuple[int, int], list[int]] = {}
        if (bands is None or y0 // tile in bands) and \
                not compare.equal(y0 * row_bytes, y1 * row_bytes):
            boxes = _tile_boxes(compare, y0, y1 - y0, width, tile)
            start = None
            for i, hit in enumerate([*boxes, None]):
                if hit and start is None:
                    start = i
                elif not hit and start is not None:
                    span = (start, i)
                    if i - start <= CROP_MAX_TILES:  # the changed pixels' bounding box
                        run = boxes[start:i]
                        box = [run[0][0], y0 + min(b[1] for b in run), run[-1][2],
                               y0 + max(b[3] for b in run)]
                    else:
                        box = [start * tile, y0, min(width, i * tile), y1]
                    rect = open_runs.get(span)
                    if rect is None:
                        rects.append(box)
                        rect = box
                    else:  # the run continues downwards: grow it to cover this box too
                        rect[0], rect[2] = min(rect[0], box[0]), max(rect[2], box[2])
                        rect[3] = box[3]
                    runs[span] = rect
                    start = None
        open_runs = runs
    return [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in rects]


def _tile_boxes(compare: _Compare, y0: int, rows: int, width: int, tile: int
                ) -> list[tuple[int, int, int, int] | None]:
    """For each tile of the band of ``rows`` rows from ``y0``: the bounding box of its
    changed pixels (x in the image, y in the band), or None. Pillow's difference of the band's
    bytes (mapped, not copied), then getbbox of each tile of it between the outermost changed
    bytes, on Pillow's core image: the Python wrapper costs more than a tile's work."""
    row_bytes = width * 4
    start = y0 * row_bytes
    differs = ImageChops.difference(_bytes_image(compare.old, start, row_bytes, rows, row_bytes),
                                    _bytes_image(compare.new, start, row_bytes, rows, row_bytes)
                                    ).im
    boxes: list[tuple[int, int, int, int] | None] = [None] * -(-width // tile)
    outer = differs.getbbox(False)
    if outer is None:
        return boxes
    for i in range(outer[0] // (tile * 4), -(-outer[2] // (tile * 4))):
        x0, x1 = i * tile, min(width, (i + 1) * tile)
        box = differs.crop((x0 * 4, 0, x1 * 4, rows)).getbbox(False)
        if box is not None:
            boxes[i] = (x0 + box[0] // 4, box[1], x0 + -(-box[2] // 4), box[3])
    return boxes


# --- encoding ----------------------------------------------------------------------------

# One 65536-entry lookup table (a list: 512 KB), kept zeroed, for every encoding thread in
# turn: one per thread cost 0.5 MB more at the agent's peak (bench/memory), and the table
# is held only for the lookup itself (0.6 ms on a 1080p strip).
_table: list[int] = []
_table_lock = threading.Lock()


def _rgb_image(pixels: Pixels, x: int, y: int, w: int, h: int) -> Image.Image:
    """A Pillow RGB image of one rectangle of a C-contiguous BGRX image (one conversion)."""
    data, width, _ = _bytes_of(pixels)
    return Image.frombuffer("RGB", (w, h), data[(y * width + x) * 4:], "raw", "BGRX",
                            width * 4, 1)


def _bgr_image(pixels: Pixels, x: int, y: int, w: int, h: int) -> Image.Image | None:
    """A Pillow "RGB" image mapped onto one rectangle of a BGRX image, without a copy or a
    conversion: its channels are the pixels' blue, green, red in that order (Pillow keeps RGB
    in four bytes a pixel and ignores the fourth). Its colour count is the rectangle's, and
    the JPEG encoder packs it back to RGB row by row (_jpeg): a 1080p motion strip of 544 rows
    no longer converts 4 MB of RGB first (1.1 ms, and the peak memory of each encoder
    thread). None where Pillow cannot map it (it maps only whole strides: a rectangle right of
    x = 0 in the image's last rows) or cannot map at all: the caller converts instead."""
    data, width, _ = _bytes_of(pixels)
    offset, stride = (y * width + x) * 4, width * 4
    if offset + h * stride > len(data):
        return None
    try:
        return Image.new("RGB", (0, 0))._new(
            Image.core.map_buffer(data, (w, h), "raw", offset, ("RGB", stride, 1)))
    except (AttributeError, TypeError, ValueError):  # a Pillow without this mapping
        return None


_JPEG_CONFIGS: dict[tuple[int, str, bool], tuple] = {}


def _jpeg_config(quality: int, subsampling: str, optimize: bool) -> tuple:
    """Pillow's JPEG encoder settings for these options, as its own JPEG writer makes them
    (from saving one pixel): the encoder is called directly only to give it BGR rows."""
    key = (quality, subsampling, optimize)
    if key not in _JPEG_CONFIGS:
        probe = Image.new("RGB", (1, 1))
        probe.save(io.BytesIO(), "JPEG", quality=quality,
                   subsampling=SUBSAMPLINGS[subsampling], optimize=optimize)
        _JPEG_CONFIGS[key] = probe.encoderconfig
    return _JPEG_CONFIGS[key]


def _jpeg_of_bgr(bgr: Image.Image, quality: int, subsampling: str, optimize: bool) -> bytes:
    """JPEG of a _bgr_image by Pillow's encoder, told its rows are BGR: libjpeg-turbo gets
    RGB rows packed one at a time, the same bytes as Image.save of the converted image."""
    encoder = Image._getencoder("RGB", "jpeg", "BGR",
                                _jpeg_config(quality, subsampling, optimize))
    w, h = bgr.size
    # as Pillow's writer: an optimised JPEG is written in one buffer (a byte a pixel, two
    # from quality 95)
    one_shot = (2 if quality >= 95 else 1) * w * h if optimize else 0
    size = max(ImageFile.MAXBLOCK, w * 4, one_shot)
    try:
        encoder.setimage(bgr.im, (0, 0, w, h))
        chunks = []
        while True:
            _, error, data = encoder.encode(size)
            chunks.append(data)
            if error:
                break
        if error < 0:
            raise OSError(f"JPEG encoder error {error}")
        return b"".join(chunks)
    finally:
        encoder.cleanup()


def _direct_jpeg_works() -> bool:
    """Whether this Pillow encodes a _bgr_image to the very bytes of Image.save of the
    converted image (checked once, on a small image of noise: else JPEG converts first)."""
    noise = bytearray((i * 7919 + i // 5) % 251 for i in range(16 * 32 * 4))
    pixels = memoryview(noise).cast("B", (16, 32, 4))
    try:
        for quality, subsampling, optimize in ((75, "420", False), (85, "444", True)):
            bgr = _bgr_image(pixels, 0, 0, 32, 16)
            if bgr is None:
                return False
            buffer = io.BytesIO()
            _rgb_image(pixels, 0, 0, 32, 16).save(
                buffer, "JPEG", quality=quality, subsampling=SUBSAMPLINGS[subsampling],
                optimize=optimize)
            if _jpeg_of_bgr(bgr, quality, subsampling, optimize) != buffer.getvalue():
                return False
    except (AttributeError, TypeError, ValueError, OSError):
        return False
    return True


def _pairs_to_index(low: bytes, high: bytes, pairs: list[int], width: int,
                    height: int) -> bytes:
    """For each pixel, the position in ``pairs`` of its (low + 256 * high) number, looked up
    by Pillow in C: the bytes interleaved into a 16-bit image, which a 65536-entry table maps
    to 8 bits. Every pixel's number must be in ``pairs``."""
    numbers = bytearray(2 * width * height)
    numbers[0::2], numbers[1::2] = low, high
    wide = Image.frombuffer("I;16", (width, height), numbers, "raw", "I;16", 0, 1).convert("I")
    with _table_lock:
        if not _table:
            _table.extend([0] * 65536)
        for i, pair in enumerate(pairs):
            _table[pair] = i
        try:
            # the core's point (0.6 ms): Image.point rounds the 65536 entries in Python (10 ms)
            indexes = wide.im.point(_table, "L")
        finally:
            for pair in pairs:
                _table[pair] = 0
    return wide._new(indexes).tobytes()


def _palette_indexes(rgb: Image.Image, keys: list[int]) -> bytes:
    """Each pixel's position in ``keys`` (0xRRGGBB, every colour of ``rgb``), row by row:
    exact, unlike Pillow's own conversion to a given palette (which matches colours on 6 bits
    a channel). One 8-bit table when a channel alone tells the colours apart (grey text), one
    16-bit table when a pair of channels does, else (blue, green) pairs numbered, then
    (pair number, red)."""
    count = len(keys)
    for band, shift in (("G", 8), ("R", 16), ("B", 0)):
        values = [(key >> shift) & 255 for key in keys]
        if len(set(values)) == count:
            table = [0] * 256
            for i, value in enumerate(values):
                table[value] = i
            return rgb.getchannel(band).point(table).tobytes()
    width, height = rgb.size
    if width * height <= PYTHON_INDEX_MAX_PX:  # a glyph: cheaper than a 65536-entry table
        position = {key.to_bytes(3): i for i, key in enumerate(keys)}
        data = rgb.tobytes()
        return bytes([position[data[i:i + 3]] for i in range(0, len(data), 3)])
    shifts = {"R": 16, "G": 8, "B": 0}
    for low, high in (("G", "R"), ("B", "G"), ("R", "B")):  # a pair of channels may do
        pairs = [(key >> shifts[low] & 255) | (key >> shifts[high] & 255) << 8 for key in keys]
        if len(set(pairs)) == count:
            return _pairs_to_index(rgb.getchannel(low).tobytes(),
                                   rgb.getchannel(high).tobytes(), pairs, width, height)
    blue, green = rgb.getchannel("B").tobytes(), rgb.getchannel("G").tobytes()
    pairs = list(dict.fromkeys(key & 0xFFFF for key in keys))  # (blue, green), in key order
    numbered = _pairs_to_index(blue, green, pairs, width, height)
    position = {pair: i for i, pair in enumerate(pairs)}
    return _pairs_to_index(numbered, rgb.getchannel("R").tobytes(),
                           [position[key & 0xFFFF] | (key >> 16) << 8 for key in keys],
                           width, height)


def _png(pixels: Pixels, x: int, y: int, w: int, h: int,
         colours: list[tuple[int, tuple[int, int, int]]], rgb: Image.Image | None = None
         ) -> bytes:
    """An exact palette PNG of a rectangle with at most 256 colours, at the smallest bit
    depth that holds them (written here: Pillow's PNG writer costs 20x more on small ones)."""
    keys = [(r << 16) | (g << 8) | b for _, (r, g, b) in colours]
    indexes = _palette_indexes(rgb or _rgb_image(pixels, x, y, w, h), keys)
    bits = next(bits for bits in (1, 2, 4, 8) if len(keys) <= 1 << bits)
    row_bytes = -(-w * bits // 8)
    if bits < 8:  # Pillow's packer for palette images: leftmost pixel in the highest bits
        indexes = Image.frombuffer("P", (w, h), indexes, "raw", "P", 0, 1).tobytes(
            "raw", f"P;{bits}")
    packed = Image.frombuffer("L", (row_bytes, h), indexes, "raw", "L", 0, 1)
    rows = Image.new("L", (1 + row_bytes, h))  # each row: filter type 0, then its data
    rows.paste(packed, (1, 0))
    palette = b"".join(key.to_bytes(3) for key in keys)
    level = next(level for most, level in PNG_LEVELS if w * h <= most)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 3, 0, 0, 0)),
        _chunk(b"PLTE", palette),
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
        _chunk(b"IEND", b"")))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data))


SUBSAMPLINGS = {"444": 0, "420": 2}  # our name -> Pillow's number


def _jpeg(pixels: Pixels, x: int, y: int, w: int, h: int, quality: int,
          subsampling: str = "444", rgb: Image.Image | None = None,
          optimize: bool = False) -> bytes:
    """JPEG of the rectangle, without chroma subsampling unless asked for 4:2:0 (Pillow's
    libjpeg-turbo, from the RGB image that palette detection made already); ``optimize``:
    Huffman tables made for this image (a second pass: 20-30% fewer bytes at low quality)."""
    bgr = None if rgb is not None or not _DIRECT_JPEG else _bgr_image(pixels, x, y, w, h)
    if bgr is not None:
        if optimize:
            with contextlib.suppress(OSError):  # as below
                return _jpeg_of_bgr(bgr, quality, subsampling, True)
        return _jpeg_of_bgr(bgr, quality, subsampling, False)
    image = rgb or _rgb_image(pixels, x, y, w, h)
    if optimize:
        buffer = io.BytesIO()
        try:
            image.save(buffer, "JPEG", quality=quality, subsampling=SUBSAMPLINGS[subsampling],
                       optimize=True)
            return buffer.getvalue()
        except OSError:  # Pillow's one-shot buffer (a byte a pixel) held less than it made
            pass  # (noise at high quality): made the plain way
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=SUBSAMPLINGS[subsampling])
    return buffer.getvalue()


_DIRECT_JPEG = _direct_jpeg_works()


def _half_jpeg(pixels: Pixels, rect: Rect, quality: int, subsampling: str) -> bytes:
    """JPEG of the rectangle at half resolution: each 2x2 block one pixel, their mean
    (Pillow's reduce; a last odd row or column its own pixels'), so the image is
    ceil(w / 2) x ceil(h / 2), which the viewer scales up to fill the rectangle
    (protocol.image_scale). A quarter of the pixels to encode, send and decode: a 1080p
    strip's reduce took 2 ms, and its JPEG at q75 4:2:0 half the time of q35 at full size."""
    x, y, w, h = rect
    bgr = _bgr_image(pixels, x, y, w, h) if _DIRECT_JPEG else None
    if bgr is not None:  # reduced in BGR order, encoded as BGR rows (see _bgr_image)
        return _jpeg_of_bgr(bgr.reduce(2), quality, subsampling, False)
    buffer = io.BytesIO()
    _rgb_image(pixels, x, y, w, h).reduce(2).save(buffer, "JPEG", quality=quality,
                                                  subsampling=SUBSAMPLINGS[subsampling])
    return buffer.getvalue()


def encode_rect(pixels: Pixels, rect: Rect, quality: int,
                subsampling: str = "444", optimize: bool = False, scale: int = 1
                ) -> tuple[int, bytes]:
    """(frame kind, image bytes) of one rectangle of a C-contiguous BGRX image.
    ``optimize`` (a whole image's part): a JPEG's Huffman tables made for it, and a
    rectangle of any size with many colours in whichever format is smaller (PNG of a
    video's smooth gradients within 256 colours came out 3x the JPEG). ``scale`` 2: a JPEG
    at half resolution (each 2x2 block one pixel, _half_jpeg); a palette PNG stays whole
    (exact, and already small)."""
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"unknown chroma subsampling {subsampling!r}")
    if scale not in (1, 2):
        raise ValueError(f"an image is sent whole or at half resolution, not 1/{scale}")
    x, y, w, h = rect
    # more than 256 colours in its first rows (motion, photos): JPEG, straight from BGRX
    # (counting the whole rectangle here would count a palette PNG's pixels twice)
    rows = min(h, MANY_COLOURS_ROWS)
    head = _bgr_image(pixels, x, y, w, rows) if w * rows > PALETTE_MAX_COLOURS else None
    if head is not None and head.getcolors(PALETTE_MAX_COLOURS) is None:
        if scale == 2:
            return p.FRAME_JPEG, _half_jpeg(pixels, rect, quality, subsampling)
        return p.FRAME_JPEG, _jpeg(pixels, x, y, w, h, quality, subsampling, None, optimize)
    rgb = _rgb_image(pixels, x, y, w, h)
    colours = rgb.getcolors(PALETTE_MAX_COLOURS)
    if colours is None:
        if scale == 2:
            return p.FRAME_JPEG, _half_jpeg(pixels, rect, quality, subsampling)
        return p.FRAME_JPEG, _jpeg(pixels, x, y, w, h, quality, subsampling, rgb, optimize)
    png = _png(pixels, x, y, w, h, colours, rgb)
    if (optimize or BOTH_ENCODERS_MIN_PX <= w * h <= SMALL_RECT_PX) and \
            len(colours) >= BOTH_ENCODERS_MIN_COLOURS:
        jpeg = _jpeg(pixels, x, y, w, h, quality, subsampling, rgb, optimize)
        if len(jpeg) < len(png):
            return p.FRAME_JPEG, jpeg
    return p.FRAME_PNG, png


def strips(rects: Iterable[Rect], rows: int = STRIP_ROWS,
           max_px: int | None = None) -> list[Rect]:
    """The rectangles cut into strips of at most ``rows`` rows, in order; with ``max_px``
    also of at most that many pixels (fewer rows for a wide rectangle: a multiple of 16, JPEG's
    MCU height, where the limit allows)."""
    parts = []
    for x, y, w, h in rects:
        step = rows
        if max_px is not None and w * step > max_px:
            step = max(1, max_px // w)
            step = step // 16 * 16 or step
        parts += [(x, y + dy, w, min(step, h - dy)) for dy in range(0, h, step)]
    return parts


def palette_runs(pixels: Pixels, rect: Rect, column: int = TILE_PX) -> list[Rect]:
    """``rect`` cut, on a grid of ``column``-pixel columns, into runs of flat columns (at
    most FLAT_MAX_COLOURS colours each) that share one palette of at most PALETTE_MAX_COLOURS
    colours (an exact PNG), and runs of the other columns (encode_rect chooses), left to
    right. A whole screen's strip through a video beside a flat desktop was one JPEG: its
    flat part cost a third of the first image's bytes (bench/slow_link's desktop: 10 of 35 KB
    at q35), where x11vnc's Tight sends it as fills."""
    x, y, w, h = rect
    runs: list[list] = []  # [x0, x1, its colours, or None: not flat]
    for cx in range(x, x + w, column):
        cw = min(column, x + w - cx)
        column_image = _bgr_image(pixels, cx, y, cw, h) or _rgb_image(pixels, cx, y, cw, h)
        found = column_image.getcolors(FLAT_MAX_COLOURS)  # (only counted: BGR order will do)
        colours = None if found is None else {colour for _, colour in found}
        last = runs[-1] if runs else None
        if last is not None and colours is None and last[2] is None:
            last[1] = cx + cw
        elif last is not None and colours is not None and last[2] is not None and \
                len(union := last[2] | colours) <= PALETTE_MAX_COLOURS:
            last[1], last[2] = cx + cw, union
        else:
            runs.append([cx, cx + cw, colours])
    return [(x0, y, x1 - x0, h) for x0, x1, _ in runs]


def encode_within(pixels: Pixels, rect: Rect, quality: int, subsampling: str,
                  max_bytes: int, optimize: bool = False, scale: int = 1
                  ) -> list[tuple[Rect, int, bytes]]:
    """(rectangle, frame kind, image bytes) covering ``rect``, each image at most
    ``max_bytes``: a rectangle whose image came out larger is halved and encoded again."""
    kind, image = encode_rect(pixels, rect, quality, subsampling, optimize, scale)
    if len(image) <= max_bytes:
        return [(rect, kind, image)]
    x, y, w, h = rect
    if h > 1:
        top = -(-h // 2 // 16) * 16 if h > 32 else h // 2  # MCU rows where there are enough
        halves = [(x, y, w, top), (x, y + top, w, h - top)]
    elif w > 1:
        halves = [(x, y, w // 2, 1), (x + w // 2, y, w - w // 2, 1)]
    else:
        raise ValueError(f"one pixel does not fit in {max_bytes} bytes")
    return [part for half in halves for part in
            encode_within(pixels, half, quality, subsampling, max_bytes, optimize, scale)]


def encode_update(pixels: Pixels, rects: Iterable[Rect], monitor: int, seq: int,
                  quality: int, full: bool, mapper: Callable = map,
                  subsampling: str = "444", rows: int = STRIP_ROWS,
                  max_frame_bytes: int = p.MAX_FRAME_BYTES, scale: int = 1) -> list[p.Frame]:
    """The frames of one update, FLAG_LAST on the last, none larger than ``max_frame_bytes``
    (header included); ``mapper`` (e.g. a thread pool's map) may encode the strips (of at most
    ``rows`` rows, fewer for wide ones) in parallel: Pillow releases the GIL while it works.
    A ``full`` image, rare and the largest, gets more care for its bytes: each strip cut into
    palette_runs (PNG beside JPEG), JPEG Huffman tables made for each image. ``scale`` 2: its
    JPEG images at half resolution (encode_rect; never for a ``full`` image)."""
    return list(encode_frames(pixels, rects, monitor, seq, quality, full, mapper, subsampling,
                              rows, max_frame_bytes, scale=scale))


def encode_frames(pixels: Pixels, rects: Iterable[Rect], monitor: int, seq: int,
                  quality: int, full: bool, mapper: Callable = map,
                  subsampling: str = "444", rows: int = STRIP_ROWS,
                  max_frame_bytes: int = p.MAX_FRAME_BYTES,
                  reuse: Callable[[Rect], list | None] | None = None, scale: int = 1
                  ) -> Iterator[p.Frame]:
    """encode_update's frames, each as soon as it and those before it are encoded (a thread
    pool's map encodes ahead), the one before last held until the last is known: a whole
    image's first strips can be on the link while the rest are encoded (70-90 ms of 1080p
    under load, most of the link time of its 28 KB at 2 Mbit/s). ``reuse``: a strip's
    pieces encoded already (EncodedAhead.pieces().get), or None to encode it: those come
    first, while the others are encoded (the viewer draws an update's strips together, so
    their order is free; a strip's waited 25-45 ms for the pool's threads under load)."""
    if full and scale != 1:  # the first image, and a refresh, are the screen as it is
        raise ValueError("a whole image is never sent at reduced resolution")
    budget = max_frame_bytes - p.FRAME_HEADER.size
    parts = strips(rects, rows, max(1, int(budget / EXPECTED_BYTES_PER_PX)))

    def encode(strip: Rect) -> list[tuple[Rect, int, bytes]]:
        runs = palette_runs(pixels, strip) if full else [strip]
        return [piece for run in runs for piece in
                encode_within(pixels, run, quality, subsampling, budget, full, scale)]

    def frame(piece: tuple[Rect, int, bytes], last: bool) -> p.Frame:
        (x, y, w, h), kind, image = piece
        flags = (p.FLAG_LAST if last else 0) | (p.FLAG_FULL if full else 0)
        return p.Frame(kind, flags, monitor, seq, x, y, w, h, image)

    known = [] if reuse is None else [(strip, reuse(strip)) for strip in parts]
    parts = [strip for strip, done in known if done is None] if known else parts

    def encoded() -> Iterator[list[tuple[Rect, int, bytes]]]:  # (once those known are out:
        yield from (mapper if len(parts) > 1 else map)(encode, parts)  # no GIL shared till then)

    pieces = (piece for pieces in itertools.chain(
        (done for _, done in known if done is not None), encoded()) for piece in pieces)
    held = next(pieces, None)
    for piece in pieces:
        yield frame(held, False)
        held = piece
    if held is not None:
        yield frame(held, True)


def redoer(diff: ScreenDiff, monitor: int, seq: int, quality: int, full: bool,
           subsampling: str = "444", rows: int = STRIP_ROWS, scale: int = 1) -> Callable:
    """Outbox's ``redo`` for a bulk update encoded with these settings: a rectangle's frames
    from the viewer's copy (``diff.shown``) as it is when called."""
    def redo(rect: Rect, last: bool) -> list[tuple[Rect, bytes]]:
        frames = encode_update(diff.shown, [rect], monitor, seq, quality, full,
                               subsampling=subsampling, rows=rows, scale=scale)
        if not last:
            frames = [dataclasses.replace(f, flags=f.flags & ~p.FLAG_LAST) for f in frames]
        return [((f.x, f.y, f.width, f.height), p.encode_frame(f)) for f in frames]
    return redo

class EncodedAhead:
    """A whole image encoded before anyone asked for it (while the customer waits for the
    accept), strip by strip, with the copy of the screen it was encoded from. At the accept
    the streamer grabs once: the strips that still show the same pixels go as encoded, only
    the others are encoded then, so the first image is the screen as it is at the accept and
    its first bytes go at once. Nothing in here leaves the agent by itself. Strips are keyed
    by their rectangle: one cut differently is simply encoded again."""

    def __init__(self, quality: int, subsampling: str, rows: int = STRIP_ROWS) -> None:
        self.quality, self.subsampling, self.rows = quality, subsampling, rows
        self.image: memoryview | None = None  # the copy the pieces were encoded from
        self._pieces: dict[Rect, list[tuple[Rect, int, bytes]]] = {}
        # A strip's pieces are stored, and the copy changed, under this lock: once ``stop``
        # is set, an encoding thread stores nothing more, so the streamer need not wait for
        # it (at load 8 it waited 190 ms for one encoding five strips of video).
        self._lock = threading.Lock()

    def strips(self) -> list[Rect]:
        """The strips of the copy, as encode_frames cuts a whole image of its size."""
        if self.image is None:
            return []
        height, width = self.image.shape[:2]
        budget = p.MAX_FRAME_BYTES - p.FRAME_HEADER.size
        return strips([(0, 0, width, height)], self.rows,
                      max(1, int(budget / EXPECTED_BYTES_PER_PX)))

    def update(self, pixels: Pixels) -> list[Rect]:
        """Bring the copy up to ``pixels``: the strips that differed (all of them for a new
        size), copied, their pieces forgotten; the others keep theirs."""
        with self._lock:
            return self._update(pixels)

    def _update(self, pixels: Pixels) -> list[Rect]:
        source, width, height = _bytes_of(pixels)
        if self.image is None or self.image.shape[:2] != (height, width):
            self.image, self._pieces = new_image(width, height), {}
            changed = self.strips()
        else:
            compare = _Compare(_bytes_of(self.image)[0], source)
            try:  # whole rows: one memcmp a strip
                changed = [s for s in self.strips() if not compare.equal(
                    s[1] * width * 4, (s[1] + s[3]) * width * 4)]
            finally:
                compare.close()
        copy, row_bytes = _bytes_of(self.image)[0], width * 4
        for strip in changed:
            start, stop = strip[1] * row_bytes, (strip[1] + strip[3]) * row_bytes
            copy[start:stop] = source[start:stop]
            self._pieces.pop(strip, None)
        return changed

    def encode(self, rects: Iterable[Rect], stop: threading.Event | None = None) -> int:
        """Encode these strips of the copy (in a thread: update() only once ``stop`` is set),
        one by one until ``stop`` is set; how many were stored."""
        done, image = 0, self.image
        for rect in rects:
            if stop is not None and stop.is_set():
                break
            frames = encode_update(image, [rect], 0, 0, self.quality, True,
                                   subsampling=self.subsampling, rows=self.rows)
            with self._lock:  # (pixels changed meanwhile by update() are not stored)
                if stop is not None and stop.is_set():
                    break
                self._pieces[rect] = [((f.x, f.y, f.width, f.height), f.kind, f.image)
                                      for f in frames]
            done += 1
        return done

    def pieces(self, quality: int, subsampling: str) -> dict[Rect, list]:
        """The strips encoded with these settings (encode_frames' ``reuse``), by rectangle;
        none for other settings."""
        if (quality, subsampling) != (self.quality, self.subsampling):
            return {}
        with self._lock:
            return dict(self._pieces)

    def give(self) -> memoryview | None:
        """The copy, given away (ScreenDiff.commit(..., owned=True): no second 8 MB for the
        viewer's copy of a 1080p screen); the pieces are forgotten with it."""
        with self._lock:
            image, self.image, self._pieces = self.image, None, {}
        return image
