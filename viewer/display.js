// Drawing: the remote screen on a canvas, in arrival order although decoding is asynchronous,
// scaled to fit the window or shown 1:1 with scroll bars, and the customer's pointer on top.
// No websocket here: the page hands frames in and gets a promise per frame back.

import { FLAG_FULL } from "./protocol.js";
import { Decoder } from "./decoder.js";

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
        this._cursor = null;
        this._chain = Promise.resolve();
        this._generation = 0;
        new ResizeObserver(() => this._layout()).observe(viewport);
    }

    // Forget everything from the previous session (frames still decoding are dropped).
    reset(screens) {
        this._generation += 1;
        this._chain = Promise.resolve();
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

    // Start decoding now (in a worker), draw when every earlier frame has been drawn. The
    // promise resolves once this rectangle is on the canvas (or was dropped), never rejects.
    // The frame's image bytes are handed to the decoder.
    draw(frame) {
        const decoding = this._decoder.decode(frame);
        decoding.catch(() => {});   // reported in order, below
        const generation = this._generation;
        this._chain = this._chain.then(async () => {
            let bitmap;
            try {
                bitmap = await decoding;
            } catch {
                this.decodeErrors += 1;
                return;
            }
            if (generation === this._generation) this._paint(frame, bitmap);
            bitmap.close();
        });
        return this._chain;
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
        this.context.drawImage(bitmap, 0, 0, frame.width, frame.height,
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
