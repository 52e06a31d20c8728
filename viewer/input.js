// Keyboard and pointer, while the support person has control: physical keys (code) with the
// character they produced (key), pointer moves at most about 60 a second, buttons and wheel,
// the browser's own shortcuts suppressed inside the screen area, and everything held
// released when the page loses focus or control ends. No websocket and no drawing here.
//
// A paste (Ctrl+V, or Cmd+V on a Mac) is let through to the browser so that it fires a paste
// event: the pasted text goes to the customer's clipboard first (`clipboard`), then the V key
// follows, so the customer's program pastes what the support person pasted.

import { MAX_TEXT_CHARS, overLimit } from "./protocol.js";

const POINTER_INTERVAL_MS = 17;
const WHEEL_NOTCH_PX = 100;     // one wheel click in Chromium and Firefox pixel mode
const KEY_CODE = /^[A-Za-z0-9]{1,32}$/;
const BUTTON_NAMES = ["left", "middle", "right"];
const MODIFIER_CODES = new Set([
    "ShiftLeft", "ShiftRight", "ControlLeft", "ControlRight", "AltLeft", "AltRight",
    "MetaLeft", "MetaRight",
]);

// The key that leaves the screen while in control (Esc belongs to the customer); README and
// the page's help line name it. Remote Desktop uses the same chord for its connection bar.
export const LEAVE_KEYS = "Ctrl+Alt+Home";
const isLeaveKey = (e) => e.code === "Home" && e.ctrlKey && e.altKey && !e.metaKey;
const isPasteKey = (e) => e.code === "KeyV" && !e.altKey && !e.shiftKey
    && (e.ctrlKey !== e.metaKey);  // Ctrl+V, or Cmd+V on a Mac

// What a physical key types on the US layout the agent's key table assumes, without and
// with Shift. A `key` that disagrees (a capital without Shift from an on-screen keyboard,
// a character of another layout or an input method) is sent as text instead, so the
// customer gets the character that was typed rather than the one printed on the key.
const US_LAYOUT = (() => {
    const table = new Map();
    for (let i = 0; i < 26; i += 1) {
        const lower = String.fromCharCode(97 + i);
        table.set(`Key${lower.toUpperCase()}`, [lower, lower.toUpperCase()]);
    }
    const shifted = ")!@#$%^&*(";
    for (let i = 0; i < 10; i += 1) {
        table.set(`Digit${i}`, [String(i), shifted[i]]);
        table.set(`Numpad${i}`, [String(i), String(i)]);
    }
    const pairs = {
        Space: "  ", Minus: "-_", Equal: "=+", BracketLeft: "[{", BracketRight: "]}",
        Backslash: "\\|", Semicolon: ";:", Quote: "'\"", Backquote: "`~", Comma: ",<",
        Period: ".>", Slash: "/?", NumpadDecimal: "..", NumpadDivide: "//",
        NumpadMultiply: "**", NumpadSubtract: "--", NumpadAdd: "++",
    };
    for (const [code, [plain, shift]] of Object.entries(pairs)) table.set(code, [plain, shift]);
    return table;
})();

// Whether this keydown's character should travel as text rather than as a physical key.
export function typesAsText(event) {
    const chars = Array.from(event.key);
    if (chars.length !== 1 || chars[0] < " " || chars[0] === "\u007f") return false;
    // Chords are shortcuts (Ctrl+C, Alt+F): the customer's programs want the key, not text.
    // AltGr reports Ctrl+Alt on Windows, but what it produced is a character.
    const altGraph = event.getModifierState?.("AltGraph");
    if ((event.ctrlKey || event.altKey || event.metaKey) && !altGraph) return false;
    const typed = US_LAYOUT.get(event.code);
    if (!typed) return true;
    const shift = event.shiftKey;
    if (event.key === typed[shift ? 1 : 0]) return false;
    // CapsLock turns letters around; the customer's CapsLock follows the physical key.
    const letter = /^Key[A-Z]$/.test(event.code);
    const caps = letter && event.getModifierState?.("CapsLock");
    return !(caps && event.key === typed[shift ? 0 : 1]);
}

// Keys a browser cannot capture, sent as presses in order and releases in reverse.
export const SPECIAL_KEYS = {
    windows: [["MetaLeft", "Meta"]],
    "alt-tab": [["AltLeft", "Alt"], ["Tab", "Tab"]],
    "ctrl-esc": [["ControlLeft", "Control"], ["Escape", "Escape"]],
    "alt-f4": [["AltLeft", "Alt"], ["F4", "F4"]],
};

export class Input {
    // send(message) delivers a message without `session`; the page adds it.
    constructor(canvas, display, send) {
        this.canvas = canvas;
        this.display = display;
        this.send = send;
        this.onleave = () => {};        // the leave key was pressed: the page moves the focus
        this.onrefused = () => {};      // (code) a paste over the clipboard cap was not sent
        this._paste = null;             // {code, key}: a paste key waiting for its paste event
        this.enabled = false;
        this._keys = new Map();         // code -> key, for every key we sent down
        this._buttons = new Set();
        this._lastPoint = null;
        this._pendingMove = null;
        this._moveTimer = null;
        this._lastMoveAt = -Infinity;
        this._wheel = { x: 0, y: 0 };
        this._listen();
    }

    enable() {
        this.enabled = true;
        this.canvas.focus({ preventScroll: true });
    }

    // When the relay already took control away, releases would only be refused: forget them.
    disable({ sendReleases = true } = {}) {
        this._paste = null;
        if (sendReleases) this.releaseAll();
        this._keys.clear();
        this._buttons.clear();
        this._pendingMove = null;
        this.enabled = false;
    }

    // Release every key and button we pressed, so nothing stays stuck on the customer's PC.
    releaseAll() {
        this._flushMove();
        if (!this.enabled) return;
        const point = this._lastPoint || this.display.toRemote(0, 0);
        for (const button of this._buttons) {
            this._send({ type: "button", ...at(point), button, down: false });
        }
        this._buttons.clear();
        for (const [code, key] of [...this._keys].reverse()) {
            this._send({ type: "key", code, key, down: false });
        }
        this._keys.clear();
    }

    pressSequence(name) {
        const keys = SPECIAL_KEYS[name];
        if (!this.enabled || !keys) return;
        for (const [code, key] of keys) this._send({ type: "key", code, key, down: true });
        for (const [code, key] of [...keys].reverse()) {
            this._send({ type: "key", code, key, down: false });
        }
    }

    typeText(text) {
        if (!this.enabled) return 0;
        // Only printable characters, newlines and tabs travel; line ends become "\n".
        // eslint-disable-next-line no-control-regex
        const clean = text.replace(/\r\n?/g, "\n").replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, "");
        const chars = Array.from(clean);
        for (let i = 0; i < chars.length; i += MAX_TEXT_CHARS) {
            this._send({ type: "text", text: chars.slice(i, i + MAX_TEXT_CHARS).join("") });
        }
        return chars.length;
    }

    _send(message) {
        if (this.enabled) this.send(message);
    }

    _listen() {
        const canvas = this.canvas;
        canvas.addEventListener("keydown", (e) => this._onKey(e, true));
        canvas.addEventListener("keyup", (e) => this._onKey(e, false));
        canvas.addEventListener("mousedown", (e) => this._onButton(e, true));
        window.addEventListener("mouseup", (e) => this._onButton(e, false));
        window.addEventListener("mousemove", (e) => this._onMove(e));
        canvas.addEventListener("wheel", (e) => this._onWheel(e), { passive: false });
        canvas.addEventListener("contextmenu", (e) => {
            if (this.enabled) e.preventDefault();
        });
        // The paste event of a paste key let through; the canvas has the focus, but browsers
        // differ on whether a paste in something not editable is fired at it or the body.
        document.addEventListener("paste", (e) => this._onPaste(e));
        canvas.addEventListener("blur", () => this.releaseAll());
        window.addEventListener("blur", () => this.releaseAll());
        document.addEventListener("visibilitychange", () => {
            if (document.hidden) this.releaseAll();
        });
    }

    _onKey(event, down) {
        if (down && isLeaveKey(event)) {
            // Also when only watching, so one key always reaches the toolbar (in full screen
            // it shows itself when it gets the focus).
            event.preventDefault();
            this.releaseAll();
            this.onleave();
            return;
        }
        if (!this.enabled || event.isComposing) return;
        if (down && isPasteKey(event)) {
            // Not prevented, so the browser fires `paste`; the V goes after the clipboard.
            event.stopPropagation();
            this._paste = { code: event.code, key: Array.from(event.key).slice(0, 32).join("") };
            // No paste event by the end of this task (no text, or a browser that fired
            // none): the key still goes, as a plain key.
            setTimeout(() => this._pasteKey(), 0);
            return;
        }
        event.preventDefault();
        event.stopPropagation();
        const { code } = event;
        // A paste key released before its paste event: its press goes first, then this.
        if (!down && this._paste?.code === code) this._pasteKey();
        if (!KEY_CODE.test(code) || (down && typesAsText(event))) {
            // No physical key (a virtual keyboard) or a character the key alone would not
            // give: send the character as typed.
            if (down && Array.from(event.key).length === 1) this._typeAsText(event.key);
            return;
        }
        // A dead key only prepares the next character, which then arrives as text.
        if (event.key === "Dead") return;
        if (down) {
            const key = Array.from(event.key).slice(0, 32).join("");
            this._keys.delete(code);    // keep the map in press order
            this._keys.set(code, key);
            this._send({ type: "key", code, key, down: true });
        } else if (this._keys.has(code)) {
            const key = this._keys.get(code);
            this._keys.delete(code);
            this._send({ type: "key", code, key, down: false });
        }
    }

    // Held modifiers would change what the customer's side types (Shift turns "é" into "É"):
    // lift them around the text, then press them again, so the next physical key is
    // modified as the support person still holds it and nothing stays held afterwards.
    _typeAsText(char) {
        const held = [...this._keys].filter(([code]) => MODIFIER_CODES.has(code));
        for (const [code, key] of [...held].reverse()) {
            this._send({ type: "key", code, key, down: false });
        }
        this.typeText(char);
        for (const [code, key] of held) this._send({ type: "key", code, key, down: true });
    }

    _onPaste(event) {
        if (!this.enabled || !this._paste) return;
        event.preventDefault();
        const pasted = event.clipboardData?.getData("text/plain") || "";
        // eslint-disable-next-line no-control-regex
        const text = pasted.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "");
        if (text) {
            const message = { type: "clipboard", text };
            const refused = overLimit(message);
            if (refused) {
                this._paste = null;  // the customer would paste their old clipboard
                this.onrefused(refused);
                return;
            }
            this._send(message);
        }
        this._pasteKey();
    }

    _pasteKey() {
        const paste = this._paste;
        this._paste = null;
        if (!paste || !this.enabled) return;
        this._keys.delete(paste.code);
        this._keys.set(paste.code, paste.key);  // released by its keyup, as any key
        this._send({ type: "key", code: paste.code, key: paste.key, down: true });
    }

    _onButton(event, down) {
        if (!this.enabled) return;
        const button = BUTTON_NAMES[event.button];
        if (!button) return;
        if (down) {
            event.preventDefault();     // no text selection, no focus change
            this.canvas.focus({ preventScroll: true });
        } else if (!this._buttons.has(button)) {
            return;
        }
        const point = this.display.toRemote(event.clientX, event.clientY);
        this._flushMove();
        this._lastPoint = point;
        if (down) this._buttons.add(button);
        else this._buttons.delete(button);
        this._send({ type: "button", ...at(point), button, down });
    }

    _onMove(event) {
        if (!this.enabled) return;
        const point = this.display.toRemote(event.clientX, event.clientY);
        // Outside the screen only a drag keeps reporting (clamped to the edge).
        if (!point.inside && this._buttons.size === 0) return;
        if (this._lastPoint && point.x === this._lastPoint.x && point.y === this._lastPoint.y &&
            point.monitor === this._lastPoint.monitor) return;
        this._lastPoint = point;
        this._pendingMove = point;
        const wait = this._lastMoveAt + POINTER_INTERVAL_MS - performance.now();
        if (wait <= 0) this._flushMove();
        else if (this._moveTimer === null) {
            this._moveTimer = setTimeout(() => this._flushMove(), wait);
        }
    }

    _flushMove() {
        clearTimeout(this._moveTimer);
        this._moveTimer = null;
        const point = this._pendingMove;
        this._pendingMove = null;
        if (!point) return;
        this._lastMoveAt = performance.now();
        this._send({ type: "pointer_move", ...at(point) });
    }

    _onWheel(event) {
        if (!this.enabled) return;
        event.preventDefault();
        const unit = event.deltaMode === 1 ? WHEEL_NOTCH_PX / 3
            : event.deltaMode === 2 ? WHEEL_NOTCH_PX * 10 : 1;
        this._wheel.x += event.deltaX * unit;
        this._wheel.y += event.deltaY * unit;
        const dx = notches(this._wheel.x);
        const dy = notches(this._wheel.y);
        if (dx === 0 && dy === 0) return;
        this._wheel.x -= dx * WHEEL_NOTCH_PX;
        this._wheel.y -= dy * WHEEL_NOTCH_PX;
        const point = this.display.toRemote(event.clientX, event.clientY);
        this._flushMove();
        this._lastPoint = point;
        // Signs as in the browser: dy > 0 scrolls down, dx > 0 scrolls right.
        this._send({ type: "wheel", ...at(point), dx, dy });
    }
}

// Whole wheel clicks in an accumulated delta; half a click already counts as one.
function notches(px) {
    const count = Math.trunc((px + Math.sign(px) * WHEEL_NOTCH_PX / 2) / WHEEL_NOTCH_PX);
    return Math.max(-100, Math.min(100, count));
}

function at(point) {
    return { monitor: point.monitor, x: point.x, y: point.y };
}
