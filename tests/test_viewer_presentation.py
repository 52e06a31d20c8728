"""How the viewer presents updates in motion, in Debian's Chromium: viewer/display.js on a page
of its own (its files served by request routing), images decoded by the browser, and only the
moment each decode finishes in the test's hands (a decoder behind display.js's own interface
whose bitmaps are released together), so that several updates become ready in one task, as
when decodes finish while the page's thread is busy."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import protocol

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://display.test"
WIDTH, HEIGHT = 640, 360

HARNESS = """async () => {
    const { Display, covers } = await import("/display.js");
    document.body.innerHTML = '<div id="viewport" style="width: 800px; height: 500px">' +
        '<div id="stage"><canvas></canvas><img id="pointer" hidden></div></div>';
    const canvas = document.querySelector("canvas");
    const display = new Display(canvas, document.getElementById("viewport"),
        document.getElementById("stage"), document.getElementById("pointer"));
    display.reset([]);
    const harness = {
        display, covers, tick: 0, painted: [], resolved: [], made: [], gates: [],
        // each draw onto the canvas: [animation frame, x, y] of its rectangle
        record() {
            const draw = display.context.drawImage;
            display.context.drawImage = (...args) => {
                harness.painted.push([harness.tick, args[5], args[6]]);
                return draw.apply(display.context, args);
            };
        },
        // every frame's decode finished, the bitmaps handed over only at release()
        async feed(frames) {
            const done = frames.map((f) => {
                const image = Uint8Array.from(atob(f.image), (c) => c.charCodeAt(0));
                return display.draw({ ...f, image }).then(() => {
                    if (f.flags & 1) harness.resolved.push([harness.tick, f.seq]);
                });
            });
            await Promise.all(harness.made);
            return done;
        },
        release() {
            for (const open of harness.gates.splice(0)) open();
            harness.made = [];
        },
        frames(count) {
            return new Promise((resolve) => {
                const step = () => (count-- > 0 ? requestAnimationFrame(step) : resolve());
                step();
            });
        },
    };
    display._decoder = {
        decode(frame) {
            const type = frame.kind === 2 ? "image/png" : "image/jpeg";
            const made = createImageBitmap(new Blob([frame.image], { type }));
            harness.made.push(made);
            return new Promise((resolve, reject) => {
                harness.gates.push(() => made.then(resolve, reject));
            });
        },
    };
    const step = () => { harness.tick += 1; requestAnimationFrame(step); };
    requestAnimationFrame(step);
    window.harness = harness;
}"""


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A page that imports viewer/display.js, with a Display on a canvas and the harness."""
    def serve(route: Any) -> None:
        path = route.request.url[len(ORIGIN):] or "/"
        if path == "/":
            route.fulfill(status=200, content_type="text/html",
                          body=b"<!doctype html><meta charset=utf-8><title>display</title>")
        elif (file := ROOT / "viewer" / path.lstrip("/")).is_file() and "/" not in path[1:]:
            route.fulfill(status=200, content_type="text/javascript", body=file.read_bytes())
        else:
            route.fulfill(status=404, body=b"not found")

    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.evaluate(HARNESS)
    yield page
    context.close()
    assert errors == []


def encoded(image: Image.Image, kind: int, subsampling: int = 2) -> str:
    buffer = io.BytesIO()
    if kind == protocol.FRAME_PNG:
        image.save(buffer, "PNG")
    else:
        image.save(buffer, "JPEG", quality=80, subsampling=subsampling)
    return base64.b64encode(buffer.getvalue()).decode()


def rect(seq: int, colour, x=0, y=0, width=WIDTH, height=HEIGHT, kind=protocol.FRAME_JPEG,
         subsampling=2, half=True, last=True, flags=0) -> dict[str, Any]:
    """A frame of one flat colour: by default what motion sends (JPEG 4:2:0, half size)."""
    size = ((width + 1) // 2, (height + 1) // 2) if half else (width, height)
    return {"kind": kind, "flags": flags | (protocol.FLAG_LAST if last else 0), "monitor": 1,
            "seq": seq, "x": x, "y": y, "width": width, "height": height,
            "image": encoded(Image.new("RGB", size, colour), kind, subsampling)}


def show(page, *updates: list[dict[str, Any]]) -> None:
    """Hand ``updates`` to the display, every decode finished, the bitmaps released in one
    task; then wait until three animation frames have passed."""
    page.evaluate("async (frames) => { await harness.feed(frames); harness.release(); }",
                  [frame for update in updates for frame in update])
    page.evaluate("() => harness.frames(3)")


def painted(page) -> list[tuple[int, int, int]]:
    """(animation frame, x, y) of each draw since the last call, frames counted from the
    first of them."""
    draws = page.evaluate("() => harness.painted.splice(0)")
    return [(tick - draws[0][0], x, y) for tick, x, y in draws] if draws else []


def first_image(page) -> None:
    show(page, [rect(1, (0, 0, 0), kind=protocol.FRAME_PNG, half=False,
                     flags=protocol.FLAG_FULL)])
    page.evaluate("() => harness.record()")


def test_two_motion_updates_ready_in_one_frame_are_painted_in_two(page):
    """Two whole updates in motion (two strips each) ready in one task: the first is painted
    at once, the second in the next animation frame, each update's strips together; both
    are resolved (acknowledged) at once, not at their paint."""
    first_image(page)
    top, rest = HEIGHT // 2, HEIGHT - HEIGHT // 2
    show(page, [rect(2, (200, 0, 0), height=top, last=False),
                rect(2, (200, 0, 0), y=top, height=rest)],
         [rect(3, (0, 200, 0), height=top, last=False),
          rect(3, (0, 200, 0), y=top, height=rest)])
    assert painted(page) == [(0, 0, 0), (0, 0, top), (1, 0, 0), (1, 0, top)]
    resolved = page.evaluate("() => harness.resolved.slice(-2)")
    assert [seq for _, seq in resolved] == [2, 3]
    assert resolved[0][0] == resolved[1][0]


def test_a_third_motion_update_replaces_the_held_one(page):
    """Three whole-screen updates in motion ready in one task: the first painted at once, the
    third in the next frame, the second (covered by the third) never painted and counted as
    dropped; all three resolved."""
    first_image(page)
    show(page, [rect(2, (200, 0, 0), x=0)], [rect(3, (0, 200, 0), x=0)],
         [rect(4, (0, 0, 200), x=0)])
    assert painted(page) == [(0, 0, 0), (1, 0, 0)]
    assert page.evaluate("() => harness.display.droppedUpdates") == 1
    assert [seq for _, seq in page.evaluate("() => harness.resolved")][-3:] == [2, 3, 4]
    pixel = page.evaluate("() => [...harness.display.context.getImageData(5, 5, 1, 1).data]")
    assert max(abs(a - b) for a, b in zip(pixel[:3], (0, 0, 200), strict=True)) <= 8


def test_a_held_update_the_newer_does_not_cover_is_painted_with_it(page):
    """A held update of the top half, then one of the bottom half: neither hides the other,
    so both are painted in the next frame, in the order they came."""
    first_image(page)
    top = HEIGHT // 2
    show(page, [rect(2, (200, 0, 0))], [rect(3, (0, 200, 0), height=top)],
         [rect(4, (0, 0, 200), y=top, height=HEIGHT - top)])
    assert painted(page) == [(0, 0, 0), (1, 0, 0), (1, 0, top)]
    assert page.evaluate("() => harness.display.droppedUpdates") == 0


def test_a_typed_echo_is_painted_at_once_after_any_held_update(page):
    """A small PNG (a typed glyph) ready in the same task as two updates in motion is not
    held: the held motion update is painted before it, in the same frame, in wire order."""
    first_image(page)
    show(page, [rect(2, (200, 0, 0))], [rect(3, (0, 200, 0))],
         [rect(4, (250, 250, 250), x=40, y=40, width=9, height=18, kind=protocol.FRAME_PNG,
               half=False)])
    assert painted(page) == [(0, 0, 0), (0, 0, 0), (0, 40, 40)]


@pytest.mark.parametrize("subsampling, held", [(2, True), (1, True), (0, False)])
def test_only_subsampled_or_half_size_images_are_motion(page, subsampling, held):
    """Full-size JPEGs at 4:2:0 or 4:2:2 (how the agent sends a region in motion) are held
    for a frame of their own; at 4:4:4 (text and interface content) they are painted at
    once, in the frame of the one before."""
    first_image(page)
    show(page, [rect(2, (200, 0, 0), half=False, subsampling=subsampling)],
         [rect(3, (0, 200, 0), half=False, subsampling=subsampling)])
    assert painted(page) == [(0, 0, 0), (1 if held else 0, 0, 0)]


def test_covers_is_true_only_when_the_newer_rectangles_hide_every_older_pixel(page):
    """covers(later, earlier): a whole rectangle, or strips that stack over it, hide it; a
    gap of one pixel, or a rectangle beside it, do not."""
    cases = page.evaluate("""() => {
        const r = (x, y, width, height) => ({ x, y, width, height });
        const { covers } = harness;
        return [
            covers([r(0, 0, 100, 100)], [r(10, 10, 20, 20)]),
            covers([r(0, 0, 100, 50), r(0, 50, 100, 50)], [r(0, 0, 100, 100)]),
            covers([r(0, 0, 100, 50), r(0, 51, 100, 49)], [r(0, 0, 100, 100)]),
            covers([r(0, 0, 50, 100)], [r(0, 0, 100, 100)]),
            covers([r(200, 0, 100, 100)], [r(0, 0, 100, 100)]),
            covers([r(0, 0, 60, 60), r(40, 0, 60, 60), r(0, 40, 100, 60)],
                   [r(0, 0, 100, 100), r(20, 20, 10, 10)]),
            covers([], [r(0, 0, 1, 1)]),
        ];
    }""")
    assert cases == [True, True, False, False, False, True, False]


def test_a_small_png_is_drawn_in_the_task_it_arrives_in(page):
    """A typed glyph's PNG, with the display's real decoder, is decoded on the page
    (viewer/png.js) and on the canvas before any other task runs: no hop to another thread
    between its message and its draw."""
    first_image(page)
    glyph = rect(2, (250, 250, 250), x=40, y=40, width=9, height=18, kind=protocol.FRAME_PNG,
                 half=False)
    other_task_ran, pixel = page.evaluate("""async (frame) => {
        const { Decoder } = await import("/decoder.js");
        harness.display._decoder = new Decoder();
        let ran = false;
        const channel = new MessageChannel();
        channel.port1.onmessage = () => { ran = true; };
        channel.port2.postMessage(0);
        const image = Uint8Array.from(atob(frame.image), (c) => c.charCodeAt(0));
        await harness.display.draw({ ...frame, image });
        return [ran, [...harness.display.context.getImageData(44, 50, 1, 1).data]];
    }""", glyph)
    assert pixel == [250, 250, 250, 255]
    assert not other_task_ran
