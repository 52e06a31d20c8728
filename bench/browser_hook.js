// Injected by bench/browser.py into every page before the page's own scripts: it records,
// in one clock (performance.timeOrigin + performance.now(), shared by pages and workers),
// each keydown and each draw onto a canvas on the page, so that our viewer, noVNC and the
// echo page are timed the same way without touching their code.
//
// A draw is a drawImage / putImageData / fillRect / transferFromImageBitmap onto a canvas that
// is in the document (noVNC draws into an off-screen back buffer first: only its copy to the
// visible canvas counts), or onto any OffscreenCanvas in a worker (a viewer that decodes and
// draws off the main thread: the worker's draws reach the page through a BroadcastChannel).
(() => {
    const now = () => performance.timeOrigin + performance.now();
    const CHANNEL = "bench-draws";

    function hookContexts(scope, visible, onDraw) {
        const wrap = (proto, name) => {
            if (!proto || !proto[name]) return;
            const original = proto[name];
            proto[name] = function (...args) {
                const result = original.apply(this, args);
                if (visible(this.canvas)) onDraw(now());
                return result;
            };
        };
        for (const proto of [scope.CanvasRenderingContext2D?.prototype,
                             scope.OffscreenCanvasRenderingContext2D?.prototype]) {
            for (const name of ["drawImage", "putImageData", "fillRect"]) wrap(proto, name);
        }
        wrap(scope.ImageBitmapRenderingContext?.prototype, "transferFromImageBitmap");
    }

    if (typeof window === "undefined") {  // in a worker: report draws to the page
        const channel = new BroadcastChannel(CHANNEL);
        hookContexts(self, () => true, (t) => channel.postMessage(t));
        return;
    }

    const bench = {
        keyAt: 0, echoAt: 0, lastDraw: 0, draws: 0, frames: 0, drewThisFrame: false,
        messages: 0, messageBytes: 0,  // binary websocket messages received (our strips)
        // a key's way through the page: its keydown's dispatch, the first websocket send
        // after it, and the last message that arrived before its echo was drawn (the one
        // that drew it)
        dispatchAt: 0, sentAt: 0, lastMessage: 0, echoMessageAt: 0,
        arm() {
            this.keyAt = 0; this.echoAt = 0;
            this.dispatchAt = 0; this.sentAt = 0; this.echoMessageAt = 0;
        },
        // While recording (full motion): each burst of draws (the draws of one task, as our
        // viewer paints an update's strips) as [time, animation frame], and each animation
        // frame's start; bench/browser.py makes the histograms of bursts per animation frame
        // and of the frames between two that drew.
        tick: 0, inBurst: false, bursts: null, ticks: null,
        record(on) {
            this.bursts = on ? [] : null;
            this.ticks = on ? [] : null;
        },
    };
    const RECORD_MAX = 20000;  // about 5 minutes of bursts at 60 a second
    window.__bench = bench;
    // Binary messages in: with the viewer's count of whole updates, the strips an update
    // was cut into and its size (what the browser has to decode per update).
    const NativeWebSocket = window.WebSocket;
    window.WebSocket = function (...args) {
        const socket = new NativeWebSocket(...args);
        socket.addEventListener("message", (event) => {
            bench.lastMessage = now();  // this listener runs before the page's own
            const data = event.data;
            if (typeof data === "string") return;
            bench.messages += 1;
            bench.messageBytes += data.byteLength ?? data.size ?? 0;
        });
        return socket;
    };
    window.WebSocket.prototype = NativeWebSocket.prototype;
    const nativeSend = NativeWebSocket.prototype.send;
    NativeWebSocket.prototype.send = function (...args) {
        if (bench.keyAt && !bench.sentAt) bench.sentAt = now();
        return nativeSend.apply(this, args);
    };
    for (const name of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) {
        window.WebSocket[name] = NativeWebSocket[name];
    }
    const drawn = (t) => {
        bench.draws += 1;
        bench.lastDraw = t;
        bench.drewThisFrame = true;
        if (bench.bursts && !bench.inBurst && bench.bursts.length < RECORD_MAX) {
            // a microtask runs once the painting task's synchronous code is done
            bench.inBurst = true;
            bench.bursts.push([t, bench.tick]);
            queueMicrotask(() => { bench.inBurst = false; });
        }
        if (bench.keyAt && !bench.echoAt && t >= bench.keyAt) {
            bench.echoAt = t;
            bench.echoMessageAt = bench.lastMessage;
            // in a Chrome trace (bench/browser.py --trace), where a key's echo was drawn
            performance.mark("bench-echo-drawn");
        }
    };
    hookContexts(window, (canvas) => canvas instanceof OffscreenCanvas || canvas.isConnected,
                 drawn);
    new BroadcastChannel(CHANNEL).onmessage = (event) => drawn(event.data);
    window.addEventListener("keydown", (event) => {
        if (!bench.keyAt) {
            bench.keyAt = performance.timeOrigin + event.timeStamp;
            bench.dispatchAt = now();
        }
    }, true);
    // A delivered frame: an animation frame in which at least one draw landed.
    const tick = (time) => {
        if (bench.drewThisFrame) bench.frames += 1;
        bench.drewThisFrame = false;
        bench.tick += 1;
        if (bench.ticks && bench.ticks.length < RECORD_MAX) bench.ticks.push(time);
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);

    // Workers get the same hook first: bench/browser.py defines __benchHookSource (this
    // file's text) before it, and runs the page with CSP bypassed so a blob worker may start.
    const NativeWorker = window.Worker;
    const blobUrl = (text) => URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
    let hookModule = "";
    window.Worker = function (url, options) {
        const absolute = JSON.stringify(new URL(url, location.href).href);
        // eslint-disable-next-line no-undef
        const hook = __benchHookSource;
        let source;
        if (options && options.type === "module") {
            // Static imports run in order, both before the worker takes its first message.
            hookModule = hookModule || blobUrl(hook);
            source = `import ${JSON.stringify(hookModule)};\nimport ${absolute};`;
        } else {
            source = `${hook}\nimportScripts(${absolute});`;
        }
        return new NativeWorker(blobUrl(source), options);
    };
    window.Worker.prototype = NativeWorker.prototype;
})();
