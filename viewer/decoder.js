// Decoding large images off the page's main thread: a small pool of workers
// (decode-worker.js), each image's bytes transferred to one, its ImageBitmap transferred
// back. Where workers cannot start, the page decodes with createImageBitmap itself. No
// drawing here: display.js draws the bitmaps in arrival order.

import { FRAME_PNG } from "./protocol.js";
import { decodePng } from "./png.js";

const WORKERS = 2;  // two decodes at once use both cores of a small machine
// Smaller images (typing's echo, a cursor's trail) decode on the page: a round trip to a
// worker costs more than they do, and the support person is waiting for them.
const WORKER_MIN_PIXELS = 256 * 256;

// A small PNG (a typed glyph: the agent never sends one as JPEG) through WebCodecs'
// ImageDecoder: in Chromium an 18x19 glyph was decoded and drawn in 0.6 ms (p50; p90 3.1)
// where createImageBitmap took 3.0 (7.6), same page, load 5; the pixels are the same. Its
// VideoFrame is drawn and closed as an ImageBitmap is, and outlives the decoder.
async function decodeNow(bytes, type) {
    const decoder = new ImageDecoder({ data: bytes, type });
    try {
        return (await decoder.decode()).image;
    } finally {
        decoder.close();
    }
}

export class Decoder {
    constructor(count = WORKERS) {
        this._workers = [];
        this._pending = new Map();  // id -> { resolve, reject }
        this._next = 0;
        try {
            for (let i = 0; i < count; i += 1) {
                const worker = new Worker(new URL("./decode-worker.js", import.meta.url),
                    { type: "module" });
                worker.onmessage = (event) => this._answer(event.data);
                worker.onerror = () => this._fallBack("the decoder stopped");
                this._workers.push(worker);
            }
        } catch {
            this._workers = [];  // decoded on the page instead
        }
    }

    // An ImageBitmap of a frame's image (or, for a small PNG decoded on the page at once, an
    // ImageData of its rectangle's size). The frame's bytes are handed over to the worker:
    // the frame's buffer is unusable afterwards.
    decode(frame) {
        const type = frame.kind === FRAME_PNG ? "image/png" : "image/jpeg";
        const small = frame.width * frame.height < WORKER_MIN_PIXELS;
        if (small && frame.kind === FRAME_PNG) {
            const pixels = decodePng(frame.image, WORKER_MIN_PIXELS);
            if (pixels?.width === frame.width && pixels.height === frame.height) {
                return Promise.resolve(pixels);
            }
            if (typeof ImageDecoder === "function") return decodeNow(frame.image, type);
        }
        if (!this._workers.length || small) {
            return createImageBitmap(new Blob([frame.image], { type }));
        }
        const id = this._next;
        this._next = (this._next + 1) % 2 ** 31;
        const { buffer, byteOffset: offset, byteLength: length } = frame.image;
        const worker = this._workers[id % this._workers.length];
        return new Promise((resolve, reject) => {
            this._pending.set(id, { resolve, reject });
            worker.postMessage({ id, type, buffer, offset, length }, [buffer]);
        });
    }

    _answer({ id, bitmap, error }) {
        const pending = this._pending.get(id);
        if (!pending) {
            bitmap?.close();
            return;
        }
        this._pending.delete(id);
        if (bitmap) pending.resolve(bitmap);
        else pending.reject(new Error(error));
    }

    // A worker that failed (its script not loaded, or it crashed) would never answer the
    // images sent to it after, and each unanswered image holds one of the display's decode
    // slots for ever: every worker is let go, and the page decodes from now on.
    _fallBack(why) {
        for (const worker of this._workers) worker.terminate();
        this._workers = [];
        for (const { reject } of this._pending.values()) reject(new Error(why));
        this._pending.clear();
    }
}
