// Drawing: the remote screen on a canvas, in arrival order although decoding is asynchronous,
// scaled to fit the window or shown 1:1 with scroll bars, and the customer's pointer on top.
// No websocket here: the page hands frames in and gets a promise per frame back.
//
// An image is hostile data: a 32 KB PNG can declare 16384x16384 pixels (1 GB decoded). So an
// image is decoded only if its own header declares the frame's rectangle's size or exactly
// half of it (imageScale: protocol.py's image_scale), and at most MAX_UPDATES_IN_FLIGHT
// images are decoded at once (the agent's in-flight rule). A half-size image (a region in
// motion on a link or viewer that cannot keep up) is drawn scaled up to fill its rectangle.

import { FRAME_PNG, FLAG_FULL, FLAG_LAST, MAX_UPDATES_IN_FLIGHT } from "./protocol.js";
import { Decoder } from "./decoder.js";

// A strip with nothing arrived behind it waits this long for the rest of its update (on a
// fast link they come paced a few ms apart); on a slow link a large update takes seconds,
// and is better seen as it comes than all at once at the end.
const HOLD_STRIPS_MS = 100;

const JPEG_SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd,
    0xce, 0xcf]);

// The size an image's own header declares (PNG's IHDR, JPEG's start-of-frame), read without
// decoding it; null when no size can be found before the image data. For a JPEG also whether
// its colour is subsampled (4:2:0 or 4:2:2): the agent's mark of a region in motion, since
// text and interface content go at 4:4:4 or as PNG.
export function imageSize(kind, bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (kind === FRAME_PNG) {
        if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") {
            return null;
        }
        return { width: view.getUint32(16), height: view.getUint32(20) };
    }
    let at = 2;  // after SOI
    while (at + 9 <= bytes.length) {
        if (bytes[at] !== 0xff) return null;
        const marker = bytes[at + 1];
        if (marker === 0xff) {  // fill byte
            at += 1;
            continue;
        }
        if (JPEG_SOF.has(marker)) {
            // components (at + 9), then each one's id and sampling factors: the first's is
            // 0x22 (4:2:0) or 0x21 (4:2:2) when the others' colour is subsampled
            const subsampled = at + 11 < bytes.length && bytes[at + 9] === 3 &&
                bytes[at + 11] !== 0x11;
            return { width: view.getUint16(at + 7), height: view.getUint16(at + 5), subsampled };
        }
        if (marker === 0xda || marker === 0xd9) return null;  // image data or the end: no SOF
        at += 2 + view.getUint16(at + 2);
    }
    return null;
}

// 1 if the image is its frame's rectangle's size, 2 if exactly half of it (each 2x2 block of
// the screen one pixel, an odd last row or column its own), else 0: not to be decoded.
export function imageScale(frame, size) {
    if (!size) return 0;
    for (const scale of [1, 2]) {
        if (size.width === Math.ceil(frame.width / scale) &&
            size.height === Math.ceil(frame.height / scale)) return scale;
    }
    return 0;
}

// Whether every rectangle of the update ``later`` covers every rectangle of ``earlier``
// (their union, each {x, y, width, height}): then painting ``later`` alone leaves the same
// pixels as painting both. Cut into too many pieces to follow: false (paint both).
export function covers(later, earlier) {
    let rest = earlier.map(({ x, y, width, height }) => ({ x, y, width, height }));
    for (const cut of later) {
        rest = rest.flatMap((piece) => uncovered(piece, cut));
        if (!rest.length) return true;
        if (rest.length > 64) return false;
    }
    return !rest.length;
}

// The parts of rectangle ``r`` outside rectangle ``c``: at most four.
function uncovered(r, c) {
    const left = Math.max(r.x, c.x);
    const top = Math.max(r.y, c.y);
    const right = Math.min(r.x + r.width, c.x + c.width);
    const bottom = Math.min(r.y + r.height, c.y + c.height);
    if (left >= right || top >= bottom) return [r];
    const pieces = [];
    if (r.y < top) pieces.push({ x: r.x, y: r.y, width: r.width, height: top - r.y });
    if (bottom < r.y + r.height) {
        pieces.push({ x: r.x, y: bottom, width: r.width, height: r.y + r.height - bottom });
    }
    if (r.x < left) pieces.push({ x: r.x, y: top, width: left - r.x, height: bottom - top });
    if (right < r.x + r.width) {
        pieces.push({ x: right, y: top, width: r.x + r.width - right, height: bottom - top });
    }
    return pieces;
}

export class Display {
    constructor(canvas, viewport, stage, pointer) {
        this.canvas = canvas;
        this.viewport = viewport;   // the scrolling area around the screen
        this.stage = stage;         // sized like the canvas on screen; holds canvas and pointer
        this.pointer = pointer;     // the customer's pointer, drawn over the canvas
        this.context = canvas.getContext("2d", { alpha: false });
        this.mode = "fit";
        this.screens = [];
        this.monitor = null;        // the monitor whose pixels the canvas holds
        this.scale = 1;
        this.decodeErrors = 0;
        this._decoder = new Decoder();  // off the main thread
        this.refusedImages = 0;     // not the size their frame said: never decoded
        this._decoding = 0;         // images being decoded now
        this._waiting = [];         // decodes waiting for a free slot, in arrival order
        this._cursor = null;
        this._chain = Promise.resolve();
        this._generation = 0;
        this._held = [];            // [frame, bitmap, motion] of the update being drawn: draw()
        this._arrived = 0;          // frames given to draw() not yet decoded and drawn or held
        this._holdTimer = null;     // draws the held strips when it fires, and then the rest
        this._flowing = null;       // of their update (this seq) as they come
        this._sharp = false;        // shrunk to fit without filtering: see _shrinkSharply
        this._next = null;          // a motion update held for the next animation frame
        this._painted = false;      // an update was painted since the last animation frame
        this._frameRequest = null;  // the animation frame that paints _next (or clears _painted)
        this.droppedUpdates = 0;    // held, then replaced by a newer one covering it: unseen
        new ResizeObserver(() => this._layout()).observe(viewport);
    }

    // Forget everything from the previous session (frames still decoding are dropped).
    reset(screens) {
        this._generation += 1;
        this._chain = Promise.resolve();
        for (const waiting of this._waiting.splice(0)) waiting.drop();
        for (const [, bitmap] of this._held.splice(0)) bitmap.close?.();
        for (const [, bitmap] of this._next?.splice(0) ?? []) bitmap.close?.();
        this._next = null;
        cancelAnimationFrame(this._frameRequest);
        this._frameRequest = null;
        this._painted = false;
        this._arrived = 0;
        clearTimeout(this._holdTimer);
        this._holdTimer = null;
        this._flowing = null;
        this._setSharp(false);
        this.screens = screens || [];
        this.monitor = null;
        this._cursor = null;
        this.pointer.hidden = true;
        this._resize(1, 1);
    }

    setScreens(screens) {
        this.screens = screens;
        if (this.monitor !== null && this.screens[this.monitor]) {
            const { width, height } = this.screens[this.monitor];
            if (width !== this.canvas.width || height !== this.canvas.height) {
                this._resize(width, height);
            }
        }
    }

    setMode(mode) {
        this.mode = mode;
        this._layout();
    }

    get hasImage() {
        return this.monitor !== null;
    }

    // Start decoding (in a worker) as soon as a slot is free, draw when every earlier frame has
    // been drawn. The strips of one update are drawn together with its last (FLAG_LAST), in one
    // task and so in one animation frame: the support person sees whole updates, never the
    // top of one over the bottom of the one before. Unless the rest is slow to come: held
    // strips with nothing arrived behind them for HOLD_STRIPS_MS are drawn, and the rest of
    // their update as it comes (a slow link). A strip of another update draws the held ones
    // first (the order of pixels stays the wire's). Whole updates in motion get an animation
    // frame each: see _present.
    // The promise resolves once this rectangle is on the canvas, or held for its update's
    // last or for the next animation frame, or was dropped; never rejects. The viewer
    // acknowledges an update then: the agent's flow control learns how fast the viewer takes
    // updates from the acks, and a hold of at most one frame is presentation, not work the
    // viewer is behind on (acknowledged at the paint, each held update would look up to 16 ms
    // slower to the agent, and it would send fewer).
    draw(frame) {
        const size = imageSize(frame.kind, frame.image);
        const generation = this._generation;
        const scale = imageScale(frame, size);
        if (!scale) {
            this.refusedImages += 1;
            console.warn("refused an image not the size its frame says (or half):",
                size ? `${size.width}x${size.height}` : "no size",
                `for ${frame.width}x${frame.height}`);
            if (frame.flags & FLAG_LAST) this._chain = this._chain.then(() => this._drawHeld());
            return this._chain;
        }
        const decoding = this._decode(frame);
        decoding.catch(() => {});   // reported in order, below
        this._arrived += 1;
        this._chain = this._chain.then(async () => {
            let bitmap;
            try {
                bitmap = await decoding;
            } catch {
                if (generation !== this._generation) return;
                this._arrived -= 1;
                this.decodeErrors += 1;
                if (frame.flags & FLAG_LAST) this._drawHeld();  // the update's other strips
                else this._holdOn();
                return;
            }
            if (generation !== this._generation) {
                bitmap.close?.();
                return;
            }
            this._arrived -= 1;
            if (this._held.length && this._held[0][0].seq !== frame.seq) this._drawHeld();
            this._held.push([frame, bitmap, scale === 2 || size.subsampled === true]);
            if (frame.flags & FLAG_LAST || this._flowing === frame.seq) this._drawHeld();
            else this._holdOn();
        });
        return this._chain;
    }

    _decode(frame) {
        return new Promise((resolve, reject) => {
            const start = () => {
                this._decoding += 1;
                this._decoder.decode(frame)  // in a worker; the bytes are handed over
                    .then(resolve, reject)
                    .finally(() => {
                        this._decoding -= 1;
                        this._waiting.shift()?.start();
                    });
            };
            if (this._decoding < MAX_UPDATES_IN_FLIGHT) start();
            else this._waiting.push({ start, drop: () => reject(new Error("dropped")) });
        });
    }

    // Strips are held; with nothing arrived behind them, not for longer than HOLD_STRIPS_MS.
    _holdOn() {
        if (this._arrived || this._holdTimer !== null || !this._held.length) return;
        this._holdTimer = setTimeout(() => {
            this._holdTimer = null;
            this._flowing = this._held[0]?.[0].seq ?? null;
            this._drawHeld();
        }, HOLD_STRIPS_MS);
    }

    _drawHeld() {
        clearTimeout(this._holdTimer);
        this._holdTimer = null;
        const held = this._held.splice(0);
        if (held.length) this._present(held);
    }

    // Each whole update in motion is shown in an animation frame of its own: one that becomes
    // ready in a frame that already painted an update waits for the next frame (two painted in
    // one frame, the eye sees only the second), and if a newer one is ready by then it is
    // painted instead (never more than one frame behind, as a video player drops a late
    // frame). Anything else is painted at once, after a held update (the order of pixels
    // stays the wire's): a typed echo (PNG, or JPEG at 4:4:4) never waits for a frame.
    _present(update) {
        const [last] = update[update.length - 1];
        const motion = (last.flags & FLAG_LAST) !== 0 && last.seq !== this._flowing &&
            update.every(([frame, , moving]) => moving && frame.monitor === this.monitor) &&
            !document.hidden;  // no animation frames come to a hidden page
        if (this._next && motion) {
            if (covers(update.map(([frame]) => frame), this._next.map(([frame]) => frame))) {
                for (const [, bitmap] of this._next) bitmap.close?.();
                this.droppedUpdates += 1;
                this._next = update;
            } else {
                this._next.push(...update);  // both painted next frame, in order
            }
            return;
        }
        if (this._next) {
            this._paintUpdate(this._next);
            this._next = null;
        } else if (motion && this._painted) {
            this._next = update;
            return;
        }
        this._paintUpdate(update);
    }

    _paintUpdate(update) {
        this._shrinkSharply(update);
        for (const [frame, bitmap] of update) {
            this._paint(frame, bitmap);
            bitmap.close?.();
        }
        this._painted = true;
        this._frameRequest ??= requestAnimationFrame(() => {
            this._frameRequest = null;
            this._painted = false;
            const next = this._next;
            this._next = null;
            if (next) this._paintUpdate(next);
        });
    }

    // When one update replaces every pixel of the canvas with half-size images (the whole
    // screen in motion), the compositor shrinks the canvas to fit by picking pixels rather
    // than filtering: in software compositing (no GPU) filtering 1920x1080 down to 1628x916
    // took 10.7 ms of the GPU process per update, picking 6.8 (bare page, Chrome trace). No
    // text is left on the canvas to suffer for it; the next update that is not all motion
    // (the agent refines a still screen at full size) turns filtering back on.
    _shrinkSharply(held) {
        let area = 0;
        for (const [frame, bitmap] of held) {
            if ((bitmap.displayWidth ?? bitmap.width) === frame.width) return this._setSharp(false);
            area += frame.width * frame.height;
        }
        this._setSharp(area === this.canvas.width * this.canvas.height);
    }

    _setSharp(sharp) {
        if (sharp === this._sharp) return;
        this._sharp = sharp;
        this.canvas.style.imageRendering = sharp ? "pixelated" : "";
    }

    _paint(frame, bitmap) {
        if (frame.monitor !== this.monitor) {
            // Rectangles of the monitor we left are stale; a full image starts the new one.
            if (this.monitor !== null && !(frame.flags & FLAG_FULL)) return;
            const screen = this.screens[frame.monitor];
            const width = screen ? screen.width : frame.x + frame.width;
            const height = screen ? screen.height : frame.y + frame.height;
            this.monitor = frame.monitor;
            this._resize(width, height);
        }
        // the bitmap's own size as the source: the rectangle's, or half of it, scaled up
        // here to fill the rectangle. (Scaled in the decode worker instead, by
        // createImageBitmap's resize, the browser spent more per update, same run: 61 ms
        // of CPU against 42, 16.0 whole updates a second against 20.3.)
        const width = bitmap.displayWidth ?? bitmap.width;  // (a VideoFrame: ImageDecoder)
        const height = bitmap.displayHeight ?? bitmap.height;
        // A half-size image (a region in motion) is scaled up by repeating each pixel, not
        // by filtering: Chromium's software canvas spent 8.1-8.5 ms of the page's thread per
        // 1080p update filtering, 1.9-2.5 ms repeating (two 960x270 strips, Chrome trace,
        // same run), and the picture is shrunk to fit with filtering afterwards anyway.
        // A full-size image is drawn 1:1, where the setting changes nothing.
        if (bitmap instanceof ImageData) {  // a small PNG decoded on the page: its own size
            this.context.putImageData(bitmap, frame.x, frame.y);
            return;
        }
        this.context.imageSmoothingEnabled = width === frame.width;
        this.context.drawImage(bitmap, 0, 0, width, height,
            frame.x, frame.y, frame.width, frame.height);
    }

    _resize(width, height) {
        this.canvas.width = width;
        this.canvas.height = height;
        this.context.fillStyle = "#000";
        this.context.fillRect(0, 0, width, height);
        this._layout();
    }

    // The customer's pointer, given in any monitor's coordinates.
    showCursor(monitor, x, y) {
        this._cursor = { monitor, x, y };
        this._placeCursor();
    }

    _placeCursor() {
        const from = this.screens[this._cursor?.monitor];
        const to = this.screens[this.monitor];
        if (!this._cursor || !from || !to) {
            this.pointer.hidden = true;
            return;
        }
        const x = this._cursor.x + from.x - to.x;
        const y = this._cursor.y + from.y - to.y;
        const inside = x >= 0 && y >= 0 && x < to.width && y < to.height;
        this.pointer.hidden = !inside;
        this.pointer.style.transform =
            `translate(${Math.round(x * this.scale)}px, ${Math.round(y * this.scale)}px)`;
    }

    _layout() {
        const width = this.canvas.width;
        const height = this.canvas.height;
        let scale = 1;
        if (this.mode === "fit") {
            const box = this.viewport.getBoundingClientRect();
            // Fit shrinks a large screen but never blows a small one up into blur.
            scale = Math.min(1, box.width / width, box.height / height);
            if (!(scale > 0)) scale = 1;
        }
        this.scale = scale;
        this.viewport.classList.toggle("fit", this.mode === "fit");
        this.stage.style.width = `${Math.floor(width * scale)}px`;
        this.stage.style.height = `${Math.floor(height * scale)}px`;
        if (this._cursor) this._placeCursor();
    }

    // Where a point of the page falls on the remote monitor, in its own pixels.
    toRemote(clientX, clientY) {
        const box = this.canvas.getBoundingClientRect();
        const width = this.canvas.width;
        const height = this.canvas.height;
        const x = Math.floor((clientX - box.left) * width / Math.max(1, box.width));
        const y = Math.floor((clientY - box.top) * height / Math.max(1, box.height));
        return {
            monitor: this.monitor ?? 0,
            x: Math.min(Math.max(x, 0), width - 1),
            y: Math.min(Math.max(y, 0), height - 1),
            inside: x >= 0 && y >= 0 && x < width && y < height,
        };
    }
}
