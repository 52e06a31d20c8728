// The viewer's one websocket to the relay: authentication, reconnection and the token.
// No DOM here: the page listens to the callbacks and sends plain message objects.

import {
    CLOSE_REPLACED, PROTOCOL_VERSION, ProtocolError, encodeControl, decodeControl, decodeFrame,
    isFileChunk, technicianWords,
} from "./protocol.js";

const TOKEN_KEY = "spotlight.token";
const TECHNICIAN_KEY = "spotlight.technician";  // whose token: the URL's ?technician=
const PING_INTERVAL_MS = 2000;
const RECONNECT_DELAYS_S = [1, 2, 4, 8, 10];

// Errors after which reconnecting cannot help: the person has to sign in again.
const FATAL_CODES = new Set(["login-failed", "login-expired", "too-many-attempts"]);

export function viewerSocketUrl(location) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/viewer`;
}

export function storedToken() {
    try {
        return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
        return "";
    }
}

// The support person's id in the socket's URL: a cluster's HAProxy sends all of one
// person's connections to one relay by it.
export function routedUrl(url, technician) {
    return technician ? `${url}?technician=${encodeURIComponent(technician)}` : url;
}

function storedTechnician() {
    try {
        return sessionStorage.getItem(TECHNICIAN_KEY) || "";
    } catch {
        return "";
    }
}

function storeToken(token, technician = "") {
    try {
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        else sessionStorage.removeItem(TOKEN_KEY);
        if (token && technician) sessionStorage.setItem(TECHNICIAN_KEY, technician);
        else if (!token) sessionStorage.removeItem(TECHNICIAN_KEY);
    } catch {
        // Storage can be disabled; the session then lasts as long as the socket.
    }
}

export class Connection {
    constructor(url) {
        this.url = url;
        this.socket = null;
        this.welcomed = false;
        this.rttMs = null;
        this.bytesReceived = 0;
        this._attempt = 0;
        this._retryTimer = null;
        this._pingTimer = null;
        this._stopped = true;
        // Callbacks, set by the page.
        this.onstate = () => {};        // (words, kind) kind: "ok" | "busy" | "down"
        this.onwelcome = () => {};      // (welcome)
        this.onmessage = () => {};      // (message) every control message after welcome
        this.onframe = () => {};        // (frame, byteLength)
        this.onchunk = () => {};        // (ArrayBuffer) a file chunk
        this.onsignedout = () => {};    // (reason words or "")
    }

    // Sign in with a password; on success the relay's token is kept for reconnects.
    login(user, password) {
        this._start({ user, password });
    }

    // Sign in again with the token of this browser tab (after a reload).
    resume() {
        const token = storedToken();
        if (!token) return false;
        this._start({ token });
        return true;
    }

    logout() {
        if (this.welcomed) this.send({ type: "logout" });
        this._finish("");
    }

    send(message) {
        if (!this.socket || this.socket.readyState !== WebSocket.OPEN || !this.welcomed) {
            return false;
        }
        let text;
        try {
            text = encodeControl(message);
        } catch (error) {
            // Our own bug, not the relay's: keep the page working and leave a trace.
            if (!(error instanceof ProtocolError)) throw error;
            console.error("not sent:", error.message, message.type);
            return false;
        }
        this.socket.send(text);
        return true;
    }

    get connected() {
        return this.welcomed && this.socket?.readyState === WebSocket.OPEN;
    }

    _start(credentials) {
        this._stopped = false;
        this._attempt = 0;
        this._open(credentials);
    }

    _open(credentials) {
        this._closeSocket();
        this.welcomed = false;
        this.onstate("Connecting…", "busy");
        let socket;
        try {
            socket = new WebSocket(routedUrl(this.url, credentials.user || storedTechnician()));
        } catch (error) {
            this._finish(`Cannot open a connection to the relay (${error.message}).`);
            return;
        }
        socket.binaryType = "arraybuffer";
        this.socket = socket;
        let fatal = false;
        socket.onopen = () => {
            const hello = { type: "hello", role: "viewer", version: PROTOCOL_VERSION };
            socket.send(encodeControl({ ...hello, ...credentials }));
        };
        socket.onmessage = (event) => {
            if (socket !== this.socket) return;
            if (typeof event.data === "string") {
                this.bytesReceived += event.data.length;
                fatal = this._onText(event.data) || fatal;
            } else {
                this.bytesReceived += event.data.byteLength;
                this._onBinary(event.data);
            }
        };
        socket.onclose = (event) => {
            if (socket !== this.socket) return;
            this._stopPing();
            const wasWelcomed = this.welcomed;
            this.welcomed = false;
            this.socket = null;
            if (fatal || this._stopped) return;
            if (event.code === CLOSE_REPLACED) {
                // This tab's login reconnected on another socket (a duplicated tab): stop
                // here rather than take the session back and forth.
                this._finish("This session was opened in another window.");
                return;
            }
            if (!wasWelcomed && credentials.password) {
                // Never retry a password on its own: say why and let the person decide.
                const why = event.reason ? technicianWords(event.reason)
                    : "The relay could not be reached.";
                this._finish(why);
                return;
            }
            this._scheduleReconnect();
        };
    }

    // Returns true when the error means this connection is over for good.
    _onText(text) {
        let message;
        try {
            message = decodeControl(text);
        } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
            console.warn("ignored a malformed message from the relay:", error.message);
            return false;
        }
        if (message.type === "welcome") {
            this.welcomed = true;
            this._attempt = 0;
            storeToken(message.token, message.technician);
            this.onstate("Connected", "ok");
            this._startPing();
            this.onwelcome(message);
            return false;
        }
        if (message.type === "pong") {
            this.rttMs = Math.max(0, performance.now() - message.t);
            return false;
        }
        if (message.type === "error" && FATAL_CODES.has(message.code)) {
            // The login limits' refusal carries the seconds to wait, which no fixed
            // sentence can: show the relay's own words for it (as text, like all words).
            const words = message.code === "too-many-attempts" && message.message
                ? message.message : technicianWords(message.code);
            this._finish(words);
            return true;
        }
        this.onmessage(message);
        return false;
    }

    _onBinary(buffer) {
        if (isFileChunk(buffer)) {  // a file from the customer (files.js), not the screen
            this.onchunk(buffer);
            return;
        }
        let frame;
        try {
            frame = decodeFrame(buffer);
        } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
            console.warn("ignored a malformed screen update:", error.message);
            return;
        }
        this.onframe(frame, buffer.byteLength);
    }

    _scheduleReconnect() {
        const delay = RECONNECT_DELAYS_S[Math.min(this._attempt, RECONNECT_DELAYS_S.length - 1)];
        this._attempt += 1;
        let left = delay;
        const tick = () => {
            if (left <= 0) {
                this._retryTimer = null;
                if (!storedToken()) {
                    this._finish("Please sign in again.");
                    return;
                }
                this._open({ token: storedToken() });
                return;
            }
            this.onstate(`Connection lost; reconnecting in ${left} s`, "down");
            left -= 1;
            this._retryTimer = setTimeout(tick, 1000);
        };
        tick();
    }

    _startPing() {
        this._stopPing();
        const ping = () => this.send({ type: "ping", t: performance.now() });
        ping();
        this._pingTimer = setInterval(ping, PING_INTERVAL_MS);
    }

    _stopPing() {
        clearInterval(this._pingTimer);
        this._pingTimer = null;
        this.rttMs = null;
    }

    _closeSocket() {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._stopPing();
        const socket = this.socket;
        this.socket = null;
        if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "signed out");
    }

    _finish(reason) {
        this._stopped = true;
        this.welcomed = false;
        storeToken("");
        this._closeSocket();
        this.onstate("Signed out", "down");
        this.onsignedout(reason);
    }
}
