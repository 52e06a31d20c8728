"""viewer/png.js, the viewer's own decoder of small PNGs (drawn in the task their message
arrives in), in Debian's Chromium against Pillow's decoding of the same bytes: the agent's
palette PNGs at every bit depth, Pillow's RGB and RGBA with its filters, stored blocks, an
image data split in two chunks; what it does not decode gives null, never an exception."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import protocol
import screen_codec

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://png.test"


@pytest.fixture(scope="module")
def page(browser) -> Iterator[Any]:
    """A page whose window.decode(base64) runs png.js's decodePng: [width, height, RGBA] or
    null."""
    def serve(route: Any) -> None:
        path = route.request.url[len(ORIGIN):] or "/"
        if path == "/":
            route.fulfill(status=200, content_type="text/html",
                          body=b"<!doctype html><meta charset=utf-8><title>png</title>")
        elif path == "/png.js":
            route.fulfill(status=200, content_type="text/javascript",
                          body=(ROOT / "viewer" / "png.js").read_bytes())
        else:
            route.fulfill(status=404, body=b"not found")

    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.evaluate("""async () => {
        const { decodePng } = await import("/png.js");
        window.decode = (text) => {
            const image = decodePng(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
            return image && [image.width, image.height, btoa(String.fromCharCode(...image.data))];
        };
    }""")
    yield page
    context.close()
    assert errors == []


def decoded(page, data: bytes) -> Image.Image | None:
    got = page.evaluate("(text) => decode(text)", base64.b64encode(data).decode())
    if got is None:
        return None
    width, height, rgba = got
    return Image.frombytes("RGBA", (width, height), base64.b64decode(rgba))


def saved(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def text_image(width: int, height: int, colours: int, seed: int = 1) -> Image.Image:
    """Random pixels of ``colours`` colours (a glyph's anti-aliased shades, a UI's flats)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    return Image.fromarray(palette[rng.integers(0, colours, (height, width))], "RGB")


def agents_png(image: Image.Image) -> bytes:
    """The PNG the agent sends for ``image`` (screen_codec, from BGRX pixels)."""
    rgba = np.asarray(image.convert("RGBA"))
    bgrx = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    kind, data = screen_codec.encode_rect(bgrx, (0, 0, image.width, image.height), 85)
    assert kind == protocol.FRAME_PNG
    return data


@pytest.mark.parametrize("colours", [2, 3, 4, 13, 16, 200])  # 1, 2, 2, 4, 4 and 8 bits
@pytest.mark.parametrize("width, height", [(1, 1), (9, 18), (37, 5), (200, 120)])
def test_the_agents_palette_pngs_decode_exactly(page, colours, width, height):
    """Every pixel of the agent's palette PNGs, whatever their bit depth and row length (rows
    that end inside a byte), is Pillow's."""
    image = text_image(width, height, min(colours, width * height))
    got = decoded(page, agents_png(image))
    assert got is not None
    assert got.tobytes() == image.convert("RGBA").tobytes()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("level", [0, 1, 9])  # 0: stored blocks; 1: fixed codes; 9: dynamic
def test_pillows_filtered_rgb_and_rgba_pngs_decode_exactly(page, mode, level):
    """Pillow's own PNGs (its filters chosen row by row over a gradient with noise) decode to
    Pillow's pixels, at each compression level."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:60, 0:90]
    channels = 4 if mode == "RGBA" else 3
    pixels = np.stack([(x * 3 + y) % 256, (y * 4) % 256, (x * y) % 256, 255 - x][:channels], -1)
    pixels = (pixels + rng.integers(0, 3, pixels.shape)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode)
    got = decoded(page, saved(image, compress_level=level))
    assert got is not None
    assert got.tobytes() == image.convert("RGBA").tobytes()


def test_image_data_in_two_chunks_and_a_transparent_palette_decode(page):
    """The zlib stream split over two IDAT chunks, and a palette with tRNS alpha."""
    image = text_image(30, 20, 5).convert("P", palette=Image.Palette.ADAPTIVE, colors=5)
    data = saved(image, transparency=1)
    at = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    stream = data[at + 8:at + 8 + length]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc
    split = data[:at] + chunk(b"IDAT", stream[:7]) + chunk(b"IDAT", stream[7:]) + \
        data[at + 12 + length:]
    got = decoded(page, split)
    assert got is not None
    assert got.tobytes() == Image.open(io.BytesIO(data)).convert("RGBA").tobytes()


def test_what_it_does_not_decode_gives_null(page):
    """Grey, 16-bit, interlaced, too large, truncated or corrupt PNGs and a JPEG give null (the
    browser's decoder takes them), never an exception."""
    small = text_image(20, 10, 4)
    good = agents_png(small)
    grey = saved(small.convert("L"))
    deep = saved(Image.new("I;16", (4, 4), 4000))
    interlaced = bytearray(good)
    interlaced[28] = 1  # IHDR's interlace method: Adam7 (Pillow writes none)
    big = saved(text_image(300, 300, 2))
    jpeg = io.BytesIO()
    small.save(jpeg, "JPEG")
    idat = good.index(b"IDAT") + 4
    corrupt = good[:idat + 2] + bytes(b ^ 0x5A for b in good[idat + 2:idat + 12]) + \
        good[idat + 12:]
    assert decoded(page, good) is not None
    for data in (grey, deep, bytes(interlaced), big, jpeg.getvalue(), good[:len(good) // 2],
                 corrupt, b"", good[:40]):
        assert decoded(page, data) is None
