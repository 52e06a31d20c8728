// The wire format, mirrored from protocol.py (its table says who sends which message).
// No DOM and no I/O: text and bytes in, plain objects out, and back. Decoding throws only
// RemoteProtocolError, with protocol.py's messages; encoding validates with the same rules and
// writes exactly the text protocol.encode_control writes. tests/test_protocol_js.py runs
// tests/vectors.json through this module in Chromium.
//
// Where JavaScript cannot follow Python exactly:
// - A float field (waited_s, t) holding a whole number is written 1 here, 1.0 by Python.
// - Python refuses JSON nested deeper than its recursion limit; JSON.parse does not.

export const PROTOCOL_VERSION = 3;

// Limits, shared by both ends (see protocol.py).
export const MAX_CONTROL_BYTES = 64 * 1024; // counted in characters, as protocol.py does
export const MAX_HELLO_BYTES = 8 * 1024;
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
export const MAX_MESSAGE_BYTES = MAX_FRAME_BYTES;
export const MAX_UPDATES_IN_FLIGHT = 4; // one kept for input's echo (see protocol.py)
export const MAX_INPUT_EVENTS_PER_S = 250;
export const INPUT_BURST = 120;
export const MAX_WAITING_PER_ADDRESS = 3;
export const MAX_WAITING_PER_SUBNET = 30;
export const MAX_NAME_CHARS = 64;
export const MAX_TEXT_CHARS = 2000;
export const MAX_SCREENS = 17;
export const MAX_SCREEN_EDGE = 32767;
export const MAX_QUEUE_ENTRIES = 200;
export const MAX_NOTE_CHARS = 2000;
export const NOTE_EDITABLE_S = 600;
// File transfer (see protocol.py).
export const MAX_FILE_NAME_CHARS = 255;
export const MAX_FILE_SIZE_BYTES = 2 ** 40;
export const FILE_CHUNK_BYTES = 32 * 1024;
export const FILE_WINDOW_BYTES = 256 * 1024;
export const FILE_ACK_BYTES = 64 * 1024;
export const MAX_TRANSFERS_PER_SESSION = 4;
export const FILE_CANCEL_REASONS = Object.freeze([
    "file-cancelled", "file-declined", "file-too-big", "file-corrupt", "file-failed",
    "file-lost", "file-busy",
]);
export const MAX_CHAT_CHARS = 1000;
export const MAX_CLIPBOARD_CHARS = 10000;
export const CHAT_MESSAGES_PER_S = 1;
export const CHAT_BURST = 5;
export const CLIPBOARD_UPDATES_PER_S = 2;
export const CLIPBOARD_BURST = 4;

export const ROLES = Object.freeze(["agent", "viewer"]);
export const BUTTONS = Object.freeze(["left", "middle", "right"]);
export const ENDED_BY = Object.freeze(["customer", "technician", "relay"]);
export const WAITING_STATES = Object.freeze(["waiting", "detached"]);
export const ELEVATION_STATES = Object.freeze(["asked", "declined", "started", "failed"]);
export const HANDOFF_EXPIRES_S = 60; // a hand-off secret is good once, for this long
export const INPUT_TYPES = Object.freeze(["pointer_move", "button", "wheel", "key", "text"]);

// Binary update: kind, flags, monitor, reserved (0), seq, x, y, width, height, image length
// (struct "!BBBBIHHHHI", big-endian), then the image bytes.
export const FRAME_HEADER_BYTES = 20;
export const FRAME_JPEG = 1;
export const FRAME_PNG = 2;
export const FRAME_KINDS = Object.freeze([FRAME_JPEG, FRAME_PNG]);
export const FLAG_LAST = 0x01; // the last rectangle of update `seq`: draw, then acknowledge
export const FLAG_FULL = 0x02; // the update is a complete image of the monitor
const FLAGS_ALL = FLAG_LAST | FLAG_FULL;
const MAGIC = new Map([
    [FRAME_JPEG, [0xff, 0xd8, 0xff]],
    [FRAME_PNG, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
]);

const TOKEN = /^[A-Za-z0-9_-]{16,128}$/;
const TECHNICIAN_ID = /^[a-z0-9][a-z0-9._-]{0,31}$/;
const KEY_CODE = /^[A-Za-z0-9]{1,32}$/;
const SESSION_CODE = /^[0-9]{6}$/;
// Python's str.isprintable(): no character of category Other or Separator but the space.
const NOT_PRINTABLE = /(?! )[\p{C}\p{Z}]/u;
const LONE_SURROGATE = /\p{Cs}/u;
// The control characters (below space, and DEL) each kind of free text may hold, as
// protocol.py's _TYPED_CONTROLS, _NOTE_CONTROLS and _SHARED_CONTROLS.
const TYPED_CONTROLS = "\t\n\x7f";
const NOTE_CONTROLS = "\t\n";
const SHARED_CONTROLS = "\t\n\r";
const PY_INT_MAX_STR_DIGITS = 4300; // Python refuses longer integers in JSON

export class ProtocolError extends Error {
    constructor(message) {
        super(message);
        this.name = "ProtocolError";
    }
}

/** The peer sent something this protocol does not allow (what the decoders throw). */
export class RemoteProtocolError extends ProtocolError {
    constructor(message) {
        super(message);
        this.name = "RemoteProtocolError";
    }
}

/** Our own code built a message this protocol does not allow: a bug on this side. */
export class LocalProtocolError extends ProtocolError {
    constructor(message) {
        super(message);
        this.name = "LocalProtocolError";
    }
}

function fail(message) {
    throw new LocalProtocolError(message);
}

// `decode` reads what a peer sent: any value it refuses is the peer's error.
function fromPeer(decode) {
    return (...args) => {
        try {
            return decode(...args);
        } catch (error) {
            if (error instanceof LocalProtocolError) throw new RemoteProtocolError(error.message);
            throw error;
        }
    };
}

// --- Python's view of values --------------------------------------------------------

// A JSON number written as a float (1.0, 1e3): Python's json makes it a float, which an
// integer field refuses. Only decodeControl makes these, and none leaves this module.
class JsonFloat {
    constructor(value) {
        this.value = value;
    }
}

function isPlainObject(value) {
    if (value === null || typeof value !== "object") return false;
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
}

function hasExactly(object, names) {
    const keys = Object.keys(object);
    return keys.length === names.length && names.every((name) => Object.hasOwn(object, name));
}

// Characters as Python counts them: code points, not UTF-16 units.
function charCount(text) {
    let count = 0;
    for (const _ of text) count += 1;
    return count;
}

function firstChars(text, count) {
    return Array.from(text).slice(0, count).join("");
}

function byCodePoint(a, b) {
    const left = Array.from(a, (c) => c.codePointAt(0));
    const right = Array.from(b, (c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(left.length, right.length); i += 1) {
        if (left[i] !== right[i]) return left[i] - right[i];
    }
    return left.length - right.length;
}

function isPrintable(text) {
    return !NOT_PRINTABLE.test(text);
}

// repr() of a Python str, for error messages that name what the peer sent.
function pyRepr(text) {
    const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
    const hex = (code, width) => code.toString(16).padStart(width, "0");
    let out = quote;
    for (const c of text) {
        const code = c.codePointAt(0);
        if (c === quote || c === "\\") out += "\\" + c;
        else if (c === "\t") out += "\\t";
        else if (c === "\n") out += "\\n";
        else if (c === "\r") out += "\\r";
        else if (code < 0x20 || code === 0x7f) out += "\\x" + hex(code, 2);
        else if (code < 0x7f || isPrintable(c)) out += c;
        else if (code <= 0xff) out += "\\x" + hex(code, 2);
        else if (code <= 0xffff) out += "\\u" + hex(code, 4);
        else out += "\\U" + hex(code, 8);
    }
    return out + quote;
}

// repr() of a Python float that is not a whole number: the shortest digits that read back
// the same (as JavaScript finds them too), in Python's layout (1e-05, 0.0001, 1.5e+16).
function pyFloatRepr(value) {
    const [mantissa, exponentText] = value.toExponential().split("e");
    const exponent = Number(exponentText);
    const sign = mantissa.startsWith("-") ? "-" : "";
    const digits = mantissa.replace("-", "").replace(".", "");
    if (exponent < -4 || exponent >= 16) {
        const fraction = digits.length > 1 ? "." + digits.slice(1) : "";
        const power = String(Math.abs(exponent)).padStart(2, "0");
        return `${sign}${digits[0]}${fraction}e${exponent < 0 ? "-" : "+"}${power}`;
    }
    if (exponent < 0) return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
    if (digits.length <= exponent + 1) {
        return `${sign}${digits}${"0".repeat(exponent + 1 - digits.length)}.0`;
    }
    return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
}

function numberText(value) {
    return Number.isInteger(value) ? String(value) : pyFloatRepr(value);
}

// --- field checks (protocol.py's _check_*) --------------------------------------------

function checkInt(name, value, low, high) {
    if (typeof value !== "number" || !Number.isInteger(value)) fail(`${name} must be an integer`);
    if (!(low <= value && value <= high)) fail(`${name} must be between ${low} and ${high}`);
}

function checkStr(name, value, maxChars, printable = true) {
    if (typeof value !== "string") fail(`${name} must be a string`);
    if (value.length > maxChars && charCount(value) > maxChars) {
        fail(`${name} is longer than ${maxChars} characters`);
    }
    if (printable && !isPrintable(value)) fail(`${name} contains control characters`);
    if (LONE_SURROGATE.test(value)) fail(`${name} is not valid Unicode`);
}

function checkBool(name, value) {
    if (typeof value !== "boolean") fail(`${name} must be true or false`);
}

function checkSession(value) {
    if (typeof value !== "string" || !TOKEN.test(value)) fail("session must be a session id");
}

function checkCode(name, value) {
    if (typeof value !== "string" || !SESSION_CODE.test(value)) fail(`${name} must be 6 digits`);
}

function checkSeconds(name, value) {
    const seconds = pyNumber(value);
    if (seconds === undefined || !(seconds >= 0 && seconds < 1e9)) {
        fail(`${name} must be a number of seconds`);
    }
    return seconds;
}

function checkOneOf(name, value, allowed) {
    if (!allowed.includes(value)) fail(`${name} must be one of ${allowed.join(", ")}`);
}

export function checkTechnicianId(value) {
    if (typeof value !== "string" || !TECHNICIAN_ID.test(value)) {
        fail("technician must be 1-32 characters of a-z, 0-9, '.', '_' or '-'");
    }
}

function checkMonitor(value) {
    checkInt("monitor", value, 0, MAX_SCREENS - 1);
}

function checkPoint(x, y) {
    checkInt("x", x, 0, MAX_SCREEN_EDGE);
    checkInt("y", y, 0, MAX_SCREEN_EDGE);
}

// A number that Python would hold as an int or a float; undefined for anything else.
function pyNumber(value) {
    if (value instanceof JsonFloat) return value.value;
    return typeof value === "number" ? value : undefined;
}

function screenFromJson(value) {
    if (!isPlainObject(value) || !hasExactly(value, ["x", "y", "width", "height"])) {
        fail("a screen must be an object with x, y, width and height");
    }
    checkInt("screen x", value.x, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE);
    checkInt("screen y", value.y, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE);
    checkInt("screen width", value.width, 1, MAX_SCREEN_EDGE);
    checkInt("screen height", value.height, 1, MAX_SCREEN_EDGE);
    return { x: value.x, y: value.y, width: value.width, height: value.height };
}

function checkScreens(screens) {
    if (!(screens.length >= 2 && screens.length <= MAX_SCREENS)) {
        fail(`screens must list the whole desktop and 1 to ${MAX_SCREENS - 1} monitors`);
    }
}

const WAITING_FIELDS = ["session", "machine", "user", "waited_s", "code", "state"];

function waitingFromJson(value) {
    if (!isPlainObject(value) || !hasExactly(value, WAITING_FIELDS)) {
        fail("a queue entry must have session, machine, user, waited_s, code and state");
    }
    checkSession(value.session);
    checkCode("code", value.code);
    checkStr("machine", value.machine, MAX_NAME_CHARS);
    checkStr("user", value.user, MAX_NAME_CHARS);
    const waited = pyNumber(value.waited_s);
    if (waited === undefined || !(waited >= 0 && waited < 1e9)) {
        fail("waited_s must be a number of seconds");
    }
    checkOneOf("state", value.state, WAITING_STATES);
    return {
        session: value.session, machine: value.machine, user: value.user, waited_s: waited,
        code: value.code, state: value.state,
    };
}

// --- control messages: fields in protocol.py's dataclass order, defaults, checks ------

function messageSpec(type, fields, check = () => {}, defaults = {}) {
    return { type, fields, check, defaults };
}

function sessionMessage(type) {
    return messageSpec(type, ["session"], (m) => checkSession(m.session));
}

const AGENT_HELLO = messageSpec(
    "hello",
    ["role", "version", "technician", "machine", "user", "screens", "resume", "handoff"],
    (m) => {
        if (m.role !== "agent") fail("role must be agent");
        checkInt("version", m.version, 0, 2 ** 31);
        checkTechnicianId(m.technician);
        checkStr("machine", m.machine, MAX_NAME_CHARS);
        checkStr("user", m.user, MAX_NAME_CHARS);
        checkScreens(m.screens);
        if (m.resume !== "") checkSession(m.resume);
        if (m.handoff !== "") {
            checkSession(m.handoff);
            if (m.resume !== "") fail("a hello may resume or take over, not both");
        }
    },
    { resume: "", handoff: "" },
);

const VIEWER_HELLO = messageSpec(
    "hello",
    ["role", "version", "user", "password", "token"],
    (m) => {
        if (m.role !== "viewer") fail("role must be viewer");
        checkInt("version", m.version, 0, 2 ** 31);
        checkStr("user", m.user, MAX_NAME_CHARS);
        checkStr("password", m.password, 1024, false);
        checkStr("token", m.token, 128);
        if (!m.token && !(m.user && m.password)) {
            fail("a viewer hello needs user and password, or a token");
        }
    },
    { user: "", password: "", token: "" },
);

const HELLO_BY_ROLE = new Map([["agent", AGENT_HELLO], ["viewer", VIEWER_HELLO]]);

const BY_TYPE = new Map([
    messageSpec(
        "registered", ["session", "technician_name", "expires_s", "resume", "code"],
        (m) => {
            checkSession(m.session);
            checkStr("technician_name", m.technician_name, MAX_NAME_CHARS);
            checkInt("expires_s", m.expires_s, 0, 86400);
            checkSession(m.resume);
            checkCode("code", m.code);
        },
    ),
    messageSpec("welcome", ["technician", "name", "token"], (m) => {
        checkTechnicianId(m.technician);
        checkStr("name", m.name, MAX_NAME_CHARS);
        checkSession(m.token);
    }),
    messageSpec("queue", ["sessions", "more"], (m) => {
        if (m.sessions.length > MAX_QUEUE_ENTRIES) fail("too many queue entries");
        checkInt("more", m.more, 0, 2 ** 31);
    }, { more: 0 }),
    messageSpec("accept", ["session", "code"], (m) => {
        checkSession(m.session);
        if (m.code !== "") checkCode("code", m.code);
    }, { code: "" }),
    messageSpec(
        "accepted",
        ["session", "technician_name", "machine", "user", "screens", "code", "elapsed_s", "paused"],
        (m) => {
            checkSession(m.session);
            checkStr("technician_name", m.technician_name, MAX_NAME_CHARS);
            checkStr("machine", m.machine, MAX_NAME_CHARS);
            checkStr("user", m.user, MAX_NAME_CHARS);
            checkScreens(m.screens);
            checkCode("code", m.code);
            m.elapsed_s = checkSeconds("elapsed_s", m.elapsed_s);
            checkBool("paused", m.paused);
        },
        { elapsed_s: 0, paused: false },
    ),
    sessionMessage("take_control"),
    sessionMessage("release_control"),
    messageSpec("control", ["session", "granted"], (m) => {
        checkSession(m.session);
        checkBool("granted", m.granted);
    }),
    messageSpec("pointer_move", ["session", "monitor", "x", "y"], (m) => {
        checkSession(m.session);
        checkMonitor(m.monitor);
        checkPoint(m.x, m.y);
    }),
    messageSpec("button", ["session", "monitor", "x", "y", "button", "down"], (m) => {
        checkSession(m.session);
        checkMonitor(m.monitor);
        checkPoint(m.x, m.y);
        checkOneOf("button", m.button, BUTTONS);
        checkBool("down", m.down);
    }),
    messageSpec("wheel", ["session", "monitor", "x", "y", "dx", "dy"], (m) => {
        checkSession(m.session);
        checkMonitor(m.monitor);
        checkPoint(m.x, m.y);
        checkInt("dx", m.dx, -100, 100);
        checkInt("dy", m.dy, -100, 100);
    }),
    messageSpec("key", ["session", "code", "key", "down"], (m) => {
        checkSession(m.session);
        if (typeof m.code !== "string" || !KEY_CODE.test(m.code)) {
            fail("code must be a KeyboardEvent.code such as KeyA or Enter");
        }
        checkStr("key", m.key, 32, false);
        checkBool("down", m.down);
    }),
    messageSpec("text", ["session", "text"], (m) => {
        checkSession(m.session);
        checkStr("text", m.text, MAX_TEXT_CHARS, false);
        checkControls("text", m.text, TYPED_CONTROLS);
    }),
    messageSpec("refresh", ["session", "monitor"], (m) => {
        checkSession(m.session);
        checkMonitor(m.monitor);
    }),
    messageSpec("ack", ["session", "seq"], (m) => {
        checkSession(m.session);
        checkInt("seq", m.seq, 0, 2 ** 32 - 1);
    }),
    messageSpec("cursor", ["monitor", "x", "y"], (m) => {
        checkMonitor(m.monitor);
        checkInt("x", m.x, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE);
        checkInt("y", m.y, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE);
    }),
    messageSpec("screens", ["screens"], (m) => checkScreens(m.screens)),
    messageSpec("pause", ["paused"], (m) => checkBool("paused", m.paused)),
    messageSpec("close", ["reason"], (m) => checkStr("reason", m.reason, 200)),
    messageSpec("end", ["session", "reason"], (m) => {
        checkSession(m.session);
        checkStr("reason", m.reason, 200);
    }),
    messageSpec("decline", ["session"], (m) => checkSession(m.session)),
    messageSpec("note", ["session", "text"], (m) => {
        checkSession(m.session);
        checkStr("text", m.text, MAX_NOTE_CHARS, false);
        checkControls("a note", m.text, NOTE_CONTROLS);
    }),
    messageSpec("noted", ["session"], (m) => checkSession(m.session)),
    messageSpec("ended", ["session", "by", "reason", "ref", "billable_s"], (m) => {
        checkSession(m.session);
        checkOneOf("by", m.by, ENDED_BY);
        checkStr("reason", m.reason, 200);
        checkInt("ref", m.ref, 0, 2 ** 53);
        checkInt("billable_s", m.billable_s, 0, 2 ** 31);
    }, { ref: 0, billable_s: 0 }),
    messageSpec("ping", ["t"], checkRoundTripTime),
    messageSpec("pong", ["t"], checkRoundTripTime),
    messageSpec("logout", []),
    messageSpec("desktop", ["secure"], (m) => checkBool("secure", m.secure)),
    sessionMessage("elevate"),
    messageSpec("elevation", ["state"], (m) => checkOneOf("state", m.state, ELEVATION_STATES)),
    messageSpec("handoff", []),
    messageSpec("handoff_secret", ["secret", "expires_s"], (m) => {
        checkSession(m.secret);
        checkInt("expires_s", m.expires_s, 1, 3600);
    }),
    messageSpec("error", ["code", "message"], (m) => {
        checkStr("code", m.code, 64);
        checkStr("message", m.message, 500);
    }),
    messageSpec("chat", ["session", "text"], (m) => {
        checkSession(m.session);
        checkSharedText("text", m.text);
    }),
    messageSpec("clipboard", ["session", "text"], (m) => {
        checkSession(m.session);
        checkSharedText("text", m.text);
    }),
].map((spec) => [spec.type, spec]));

// --- file transfer (protocol.py's FileOffer ... FileDone) -------------------------------

const SHA256_HEX = /^[0-9a-f]{64}$/;

function checkTransfer(value) {
    checkInt("transfer", value, 1, 2 ** 31 - 1);
}

function checkFileName(name, value) {
    checkStr(name, value, MAX_FILE_NAME_CHARS, false);
    if (value === "") fail(`${name} must not be empty`);
}

export const FILE_TYPES = Object.freeze(
    ["file_offer", "file_answer", "file_ack", "file_cancel", "file_done"]);

for (const spec of [
    messageSpec("file_offer", ["session", "transfer", "name", "size", "sha256"], (m) => {
        checkSession(m.session);
        checkTransfer(m.transfer);
        checkFileName("name", m.name);
        checkInt("size", m.size, 0, MAX_FILE_SIZE_BYTES);
        if (typeof m.sha256 !== "string" || !SHA256_HEX.test(m.sha256)) {
            fail("sha256 must be 64 lower-case hex digits");
        }
    }),
    messageSpec("file_answer", ["session", "transfer", "accept"], (m) => {
        checkSession(m.session);
        checkTransfer(m.transfer);
        checkBool("accept", m.accept);
    }),
    messageSpec("file_ack", ["session", "transfer", "received"], (m) => {
        checkSession(m.session);
        checkTransfer(m.transfer);
        checkInt("received", m.received, 0, MAX_FILE_SIZE_BYTES);
    }),
    messageSpec("file_cancel", ["session", "transfer", "reason"], (m) => {
        checkSession(m.session);
        checkTransfer(m.transfer);
        checkOneOf("reason", m.reason, FILE_CANCEL_REASONS);
    }),
    messageSpec("file_done", ["session", "transfer", "saved_as"], (m) => {
        checkSession(m.session);
        checkTransfer(m.transfer);
        checkFileName("saved_as", m.saved_as);
    }),
]) BY_TYPE.set(spec.type, spec);
// Chat and clipboard text (protocol.py's _check_shared_text): its size cap is overLimit's.
function checkSharedText(name, value) {
    checkStr(name, value, MAX_CONTROL_BYTES, false);
    if (value === "") fail(`${name} must not be empty`);
    checkControls(name, value, SHARED_CONTROLS);
}

// protocol.py's _check_controls: a control character not in `allowed` is refused.
function checkControls(subject, value, allowed) {
    for (const c of value) {
        if ((c < " " || c === "\x7f") && !allowed.includes(c)) {
            const breaks = allowed.includes("\r") ? "line breaks" : "newlines";
            fail(`${subject} may contain only printable characters, ${breaks} and tabs`);
        }
    }
}

// The refusal code when a chat or clipboard message is over its size cap, else "" (counted
// in code points, as protocol.py counts).
export function overLimit(message) {
    if (message.type === "chat" && charCount(message.text) > MAX_CHAT_CHARS) {
        return "chat-too-long";
    }
    if (message.type === "clipboard" && charCount(message.text) > MAX_CLIPBOARD_CHARS) {
        return "clipboard-too-long";
    }
    return "";
}

function checkRoundTripTime(m) {
    // 2**53 bounds what a JavaScript number holds exactly, so the echo comes back unchanged.
    const t = pyNumber(m.t);
    if (t === undefined || !(t >= -(2 ** 53) && t <= 2 ** 53)) fail("t must be a number");
    m.t = t;
}

// protocol.py's _construct: unknown and missing fields, nested lists, then the checks.
function construct(spec, fields) {
    const unknown = Object.keys(fields).filter((name) => !spec.fields.includes(name));
    if (unknown.length > 0) {
        const first = unknown.sort(byCodePoint)[0];
        fail(`${spec.type}: unknown field ${pyRepr(firstChars(first, 40))}`);
    }
    const missing = spec.fields.filter(
        (name) => !Object.hasOwn(fields, name) && !Object.hasOwn(spec.defaults, name),
    );
    if (missing.length > 0) fail(`${spec.type}: missing field ${pyRepr(missing[0])}`);
    const result = { type: spec.type };
    for (const name of spec.fields) {
        result[name] = Object.hasOwn(fields, name) ? fields[name] : spec.defaults[name];
    }
    if (spec.fields.includes("screens")) {
        if (!Array.isArray(result.screens)) fail("screens must be a list");
        result.screens = result.screens.slice(0, MAX_SCREENS + 1).map(screenFromJson);
    }
    if (spec.fields.includes("sessions")) {
        if (!Array.isArray(result.sessions)) fail("sessions must be a list");
        result.sessions = result.sessions.slice(0, MAX_QUEUE_ENTRIES + 1).map(waitingFromJson);
    }
    spec.check(result);
    return result;
}

function specOf(kind, fields) {
    if (typeof kind !== "string") fail("control message has no type");
    if (kind === "hello") {
        const role = Object.hasOwn(fields, "role") ? fields.role : undefined;
        const spec = typeof role === "string" ? HELLO_BY_ROLE.get(role) : undefined;
        if (spec === undefined) fail("hello must name the role agent or viewer");
        return spec;
    }
    const spec = BY_TYPE.get(kind);
    if (spec === undefined) fail(`unknown message type ${pyRepr(firstChars(kind, 40))}`);
    return spec;
}

function withoutType(object) {
    const fields = { ...object };
    delete fields.type;
    return fields;
}

function serialize(result) {
    const value = (name, v) => {
        if (name === "screens") {
            return "[" + v.map((s) =>
                `{"x":${s.x},"y":${s.y},"width":${s.width},"height":${s.height}}`).join(",") + "]";
        }
        if (name === "sessions") return "[" + v.map((e) => serialize(e)).join(",") + "]";
        if (typeof v === "number") return numberText(v);
        return JSON.stringify(v); // strings and booleans: the same escapes as Python's json
    };
    return "{" + Object.entries(result)
        .map(([name, v]) => JSON.stringify(name) + ":" + value(name, v)).join(",") + "}";
}

/** The JSON text of a control message given as {type, ...fields}; throws ProtocolError. */
export function encodeControl(object) {
    if (!isPlainObject(object)) fail("a control message must be an object with a type");
    const fields = withoutType(object);
    const kind = Object.hasOwn(object, "type") ? object.type : undefined;
    return serialize(construct(specOf(kind, fields), fields));
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function reviveNumber(key, value, context) {
    if (typeof value !== "number" || context?.source === undefined) return value;
    const source = context.source;
    if (/[.eE]/.test(source)) return new JsonFloat(value);
    const digits = source.startsWith("-") ? source.length - 1 : source.length;
    if (digits > PY_INT_MAX_STR_DIGITS) throw new SyntaxError("integer too long");
    if (Number.isSafeInteger(value)) return value;
    // Rounded to a double, 2**53 + 1 would pass a check that Python's exact int fails. Every
    // integer range here is within +-2**53, so one beyond it stands for the largest number.
    const exact = BigInt(source);
    return exact > 2n ** 53n || exact < -(2n ** 53n) ? Math.sign(value) * Number.MAX_VALUE : value;
}

// Python's json reads NaN, Infinity and -Infinity (protocol.py then refuses them by name);
// JSON.parse only fails. The first such word standing where a value goes, if any.
function constantIn(text) {
    const tokens = /"(?:[^"\\]|\\.)*"?|(-Infinity|Infinity|NaN)|\S/gs;
    let previous = "";
    for (const match of text.matchAll(tokens)) {
        if (match[1] && ["", ":", ",", "["].includes(previous)) return match[1];
        previous = match[0].at(-1);
    }
    return undefined;
}

/** Parse one JSON text message into {type, ...fields}; throws RemoteProtocolError if invalid. */
export const decodeControl = fromPeer(function decodeControl(data) {
    if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        try {
            data = UTF8.decode(data);
        } catch {
            fail("control message is not UTF-8");
        }
    }
    if (typeof data !== "string") fail("control message must be text");
    if (data.length > MAX_CONTROL_BYTES && charCount(data) > MAX_CONTROL_BYTES) {
        fail("control message is too long");
    }
    let parsed;
    try {
        parsed = JSON.parse(data, reviveNumber);
    } catch {
        const constant = constantIn(data);
        fail(constant ? `${constant} is not allowed` : "control message is not valid JSON");
    }
    if (!isPlainObject(parsed)) fail("control message must be a JSON object");
    const fields = withoutType(parsed);
    return construct(specOf(Object.hasOwn(parsed, "type") ? parsed.type : undefined, fields),
        fields);
});

/** Throws RemoteProtocolError unless `message` is a hello of `role` at PROTOCOL_VERSION. */
export const checkHello = fromPeer(function checkHello(message, role) {
    if (message?.type !== "hello" || message.role !== role) {
        fail(`the first message must be hello with role ${role}`);
    }
    if (message.version !== PROTOCOL_VERSION) {
        fail(`protocol version ${message.version} is not supported; ` +
            `this relay speaks version ${PROTOCOL_VERSION}`);
    }
});

// --- refusals, endings and close codes (protocol.py's WORDING, CLOSE_*, can_resume) ---

// One plain sentence per `error` code and `ended` reason for each audience: the page shows
// these by code, never the code itself.
export const WORDING = Object.freeze({
    "customer-closed": Object.freeze({
        customer: "You ended the session.",
        technician: "The customer ended the session.",
    }),
    "technician-ended": Object.freeze({
        customer: "The support person ended the session.",
        technician: "You ended the session.",
    }),
    "agent-lost": Object.freeze({
        customer: "The connection to the support server was lost, so the session has ended. To get help again, run this program again.",
        technician: "The customer's connection was lost and did not come back, so the session has ended.",
    }),
    "viewer-lost": Object.freeze({
        customer: "The support person's connection was lost, so the session has ended. Please call them if you still need help.",
        technician: "Your connection was lost for too long, so the session has ended.",
    }),
    "agent-stalled": Object.freeze({
        customer: "Your internet connection was too slow to keep the session going, so it has ended. Please run this program again.",
        technician: "The customer's connection could not keep up, so the session has ended.",
    }),
    "agent-error": Object.freeze({
        customer: "This program ran into a problem and ended the session. Please run it again.",
        technician: "The customer's program ran into a problem and ended the session.",
    }),
    "technician-disabled": Object.freeze({
        customer: "The support person you chose can no longer take sessions. Please call your support company.",
        technician: "Your account was disabled, so the session has ended.",
    }),
    "expired": Object.freeze({
        customer: "Nobody accepted the request in time, so it was cancelled. Please call your support person and run this program again.",
        technician: "The customer waited too long without being accepted, so the request was cancelled.",
    }),
    "relay-shutdown": Object.freeze({
        customer: "The support server was stopped, so the session has ended. Please run this program again in a few minutes.",
        technician: "The relay was stopped, so the session has ended.",
    }),
    "relay-restart": Object.freeze({
        customer: "The support server restarted, so the session has ended. Please run this program again.",
        technician: "The relay restarted, so the session has ended.",
    }),
    "declined": Object.freeze({
        customer: "Your support person could not take your call now. Please call them again.",
        technician: "You declined the call.",
    }),
    "relay-lost": Object.freeze({
        customer: "The support server stopped answering, so the session has ended. Please run this program again.",
        technician: "The relay holding this session stopped and nobody rejoined it in time, so the session has ended.",
    }),
    "protocol": Object.freeze({
        customer: "This program and the support server do not understand each other. Please download the program again.",
        technician: "The relay refused a message from this page. Please reload the page.",
    }),
    "update-required": Object.freeze({
        customer: "This program is out of date. Please download it again from your support company's page.",
        technician: "This page is out of date. Please reload the page.",
    }),
    "login-failed": Object.freeze({
        customer: "Signing in failed.",
        technician: "The user name or password is not correct.",
    }),
    "login-expired": Object.freeze({
        customer: "Signing in has expired.",
        technician: "Your sign-in has expired or was revoked. Please sign in again.",
    }),
    "too-many-attempts": Object.freeze({
        customer: "Too many attempts. Please wait a minute and try again.",
        technician: "Too many sign-in attempts. Please wait a minute and try again.",
    }),
    "no-such-session": Object.freeze({
        customer: "This support session no longer exists. Please run this program again.",
        technician: "That session is no longer available.",
    }),
    "technician-unknown": Object.freeze({
        customer: "That support person is not available. Please check the name with the person you are talking to.",
        technician: "There is no such support person.",
    }),
    "too-many-waiting": Object.freeze({
        customer: "Too many support requests are waiting from your network. Please try again in a few minutes.",
        technician: "Too many customers are waiting from one network.",
    }),
    "resume-failed": Object.freeze({
        customer: "The session could not be resumed. Please run this program again.",
        technician: "The customer's program could not rejoin the session.",
    }),
    "no-control": Object.freeze({
        customer: "The support person does not control your computer.",
        technician: "Take control of the session before using the mouse and keyboard.",
    }),
    "rate-limited": Object.freeze({
        customer: "Too much input arrived at once, and some of it was dropped.",
        technician: "Too much input at once: some of it was dropped.",
    }),
    "busy": Object.freeze({
        customer: "The support person is busy with another session.",
        technician: "You are already watching a session in this window: end it first.",
    }),
    "open-elsewhere": Object.freeze({
        customer: "The support person opened this session in another window.",
        technician: "This session is open in another window.",
    }),
    "not-watching": Object.freeze({
        customer: "The support person has not accepted the session yet.",
        technician: "Accept the session before taking control.",
    }),
    "code-required": Object.freeze({
        customer: "The support person has to type your session code to accept.",
        technician: "Type the session code the customer reads to you, then accept.",
    }),
    "wrong-code": Object.freeze({
        customer: "The session code the support person typed is not yours.",
        technician: "That is not this customer's session code. Ask them to read it again.",
    }),
    "paused": Object.freeze({
        customer: "You paused the session.",
        technician: "The customer paused the session: no screen and no input until they resume.",
    }),
    "not-waiting": Object.freeze({
        customer: "The support person tried to turn down a session that had already started.",
        technician: "Only a waiting customer can be declined: this session has started. End it instead.",
    }),
    "note-closed": Object.freeze({
        customer: "The support person's note could not be saved.",
        technician: "This session's note can no longer be changed: a note closes 10 minutes after its session ends.",
    }),
    "agent-reconnecting": Object.freeze({
        customer: "Reconnecting to the support server.",
        technician: "The customer's connection dropped; waiting for it to come back.",
    }),
    // file transfer: the reasons of `file_cancel`
    "file-cancelled": Object.freeze({
        customer: "The file transfer was cancelled.",
        technician: "The file transfer was cancelled.",
    }),
    "file-declined": Object.freeze({
        customer: "You declined the file.",
        technician: "The customer declined the file.",
    }),
    "file-too-big": Object.freeze({
        customer: "The file is larger than the support server allows.",
        technician: "The file is larger than this relay allows (serve --max-file-mb).",
    }),
    "file-corrupt": Object.freeze({
        customer: "The file arrived damaged (its SHA-256 did not match), so it was not kept.",
        technician: "The file arrived damaged (its SHA-256 did not match), so it was not kept.",
    }),
    "file-failed": Object.freeze({
        customer: "The file could not be saved on this computer.",
        technician: "The file could not be saved on the customer's computer.",
    }),
    "file-lost": Object.freeze({
        customer: "The connection dropped, so the file transfer was cancelled.",
        technician: "The connection dropped, so the file transfer was cancelled.",
    }),
    "file-busy": Object.freeze({
        customer: "Another file is on its way; please wait until it is done.",
        technician: "Another file is on its way; send this one when it is done.",
    }),
    "chat-too-long": Object.freeze({
        customer: `That message is too long to send (at most ${MAX_CHAT_CHARS} characters).`,
        technician: `That message is too long to send (at most ${MAX_CHAT_CHARS} characters).`,
    }),
    "chat-rate-limited": Object.freeze({
        customer: "Messages are being sent too quickly. Please wait a moment.",
        technician: "Messages are being sent too quickly. Please wait a moment.",
    }),
    "clipboard-too-long": Object.freeze({
        customer: "The copied text is too long to share "
            + `(at most ${MAX_CLIPBOARD_CHARS} characters).`,
        technician: "The clipboard text is too long to send "
            + `(at most ${MAX_CLIPBOARD_CHARS} characters).`,
    }),
    "secure-desktop": Object.freeze({
        customer: "The support person cannot see or use your computer while a Windows administrator prompt is open. Please click Yes or No on it.",
        technician: "The customer sees a Windows administrator prompt. Ask them to click Yes or No.",
    }),
    "handoff-failed": Object.freeze({
        customer: "The program could not take over the session as administrator. The session goes on in the first window, without administrator rights.",
        technician: "The customer's program could not restart as administrator; the session goes on without administrator rights.",
    }),
});
// Refusals of one message that leave the session as it was (protocol.py's NOTICE_CODES).
export const NOTICE_CODES = Object.freeze(["chat-too-long", "chat-rate-limited",
    "clipboard-too-long"]);
export const UNKNOWN_WORDING = Object.freeze({
    customer: "The support server ended the connection. Please run this program again.",
    technician: "The relay refused the request.",
});

/** The customer's sentence for an `error` code or an `ended` reason; for a code this side
 *  does not know (a newer relay), `fallback` (the error's own message) or a generic one. */
export function customerWords(code, fallback = "") {
    if (Object.hasOwn(WORDING, code)) return WORDING[code].customer;
    return fallback || UNKNOWN_WORDING.customer;
}

/** The support person's sentence for an `error` code or an `ended` reason (`fallback` as
 *  for customerWords). */
export function technicianWords(code, fallback = "") {
    if (Object.hasOwn(WORDING, code)) return WORDING[code].technician;
    return fallback || UNKNOWN_WORDING.technician;
}

export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;
export const CLOSE_INTERNAL = 1011;
export const CLOSE_RESTART = 1012;
export const CLOSE_TRY_AGAIN = 1013;
export const CLOSE_REPLACED = 4001; // a viewer link replaced by the same login's newer one
export const CLOSE_HANDED_OFF = 4002; // an agent link whose elevated copy took the session over
export const RESUMABLE_CLOSE_CODES = Object.freeze(
    [CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_TRY_AGAIN]);
export const OBSERVERS = Object.freeze(["agent", "relay"]);

/** Whether a session survives its agent link closing with `code` (null: no close frame),
 *  as seen by `observer`: protocol.can_resume explains the rule. */
export function canResume(code, observer) {
    if (!OBSERVERS.includes(observer)) fail(`observer must be one of ${OBSERVERS.join(", ")}`);
    if (code === null || code === undefined) return observer === "agent";
    return RESUMABLE_CLOSE_CODES.includes(code);
}

// --- screen updates (binary) --------------------------------------------------------

function asBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return undefined;
}

function checkFrame(frame) {
    if (!FRAME_KINDS.includes(frame.kind)) fail(`unknown frame kind ${frame.kind}`);
    checkInt("flags", frame.flags, 0, 255);
    if (frame.flags & ~FLAGS_ALL) fail("unknown frame flags");
    checkMonitor(frame.monitor);
    checkInt("seq", frame.seq, 0, 2 ** 32 - 1);
    checkInt("x", frame.x, 0, MAX_SCREEN_EDGE);
    checkInt("y", frame.y, 0, MAX_SCREEN_EDGE);
    checkInt("width", frame.width, 1, MAX_SCREEN_EDGE);
    checkInt("height", frame.height, 1, MAX_SCREEN_EDGE);
    const image = asBytes(frame.image);
    if (image === undefined) fail("image must be bytes");
    const magic = MAGIC.get(frame.kind);
    if (image.length < magic.length || magic.some((byte, i) => image[i] !== byte)) {
        fail("image bytes do not match the frame kind");
    }
    if (FRAME_HEADER_BYTES + image.length > MAX_FRAME_BYTES) {
        fail("frame is larger than MAX_FRAME_BYTES");
    }
    return image;
}

/** The binary message of one update rectangle; throws ProtocolError on bad fields. */
export function encodeFrame(frame) {
    const image = checkFrame(frame);
    const out = new Uint8Array(FRAME_HEADER_BYTES + image.length);
    const view = new DataView(out.buffer);
    view.setUint8(0, frame.kind);
    view.setUint8(1, frame.flags);
    view.setUint8(2, frame.monitor);
    view.setUint8(3, 0);
    view.setUint32(4, frame.seq);
    view.setUint16(8, frame.x);
    view.setUint16(10, frame.y);
    view.setUint16(12, frame.width);
    view.setUint16(14, frame.height);
    view.setUint32(16, image.length);
    out.set(image, FRAME_HEADER_BYTES);
    return out;
}

/** The header fields [kind, flags, monitor, 0, seq, x, y, width, height, image length],
 *  checked only for shape (as protocol.decode_frame_header). */
export const decodeFrameHeader = fromPeer(function decodeFrameHeader(data) {
    const bytes = asBytes(data);
    if (bytes === undefined) fail("a frame must be bytes");
    if (bytes.length < FRAME_HEADER_BYTES) fail("binary message is shorter than the frame header");
    const view = new DataView(bytes.buffer, bytes.byteOffset, FRAME_HEADER_BYTES);
    const fields = [
        view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3),
        view.getUint32(4), view.getUint16(8), view.getUint16(10), view.getUint16(12),
        view.getUint16(14), view.getUint32(16),
    ];
    if (fields[9] !== bytes.length - FRAME_HEADER_BYTES) {
        fail("frame image length does not match the message length");
    }
    if (fields[3] !== 0) fail("frame header reserved byte must be 0");
    // Every field the relay acts on is checked here too, in the same order as protocol.py.
    if (!FRAME_KINDS.includes(fields[0])) fail(`unknown frame kind ${fields[0]}`);
    if (fields[1] & ~(FLAG_LAST | FLAG_FULL)) fail("unknown frame flags");
    if (fields[2] > MAX_SCREENS - 1) fail(`monitor must be between 0 and ${MAX_SCREENS - 1}`);
    return fields;
});

/** Parse and fully validate one binary update. `image` is a view into `data`, not a copy. */
export const decodeFrame = fromPeer(function decodeFrame(data) {
    const [kind, flags, monitor, , seq, x, y, width, height] = decodeFrameHeader(data);
    const frame = {
        kind, flags, monitor, seq, x, y, width, height,
        image: asBytes(data).subarray(FRAME_HEADER_BYTES),
    };
    checkFrame(frame);
    return frame;
});

// --- file chunks (binary) -----------------------------------------------------------

// kind (FILE_CHUNK), reserved (0), reserved (0), transfer, offset (struct "!BBHIQ"), then bytes.
export const FILE_CHUNK_HEADER_BYTES = 16;
export const FILE_CHUNK = 0x10; // never a frame kind: the first byte tells a chunk from a frame

/** True if this binary message is a file chunk, not a screen update. */
export function isFileChunk(data) {
    const bytes = asBytes(data);
    return bytes !== undefined && bytes.length > 0 && bytes[0] === FILE_CHUNK;
}

function checkChunk(chunk) {
    checkTransfer(chunk.transfer);
    checkInt("offset", chunk.offset, 0, MAX_FILE_SIZE_BYTES);
    const data = asBytes(chunk.data);
    if (data === undefined) fail("chunk data must be bytes");
    if (!(data.length >= 1 && data.length <= FILE_CHUNK_BYTES)) {
        fail(`a chunk holds 1 to ${FILE_CHUNK_BYTES} bytes`);
    }
    return data;
}

/** The binary message of one file chunk {transfer, offset, data}. */
export function encodeFileChunk(chunk) {
    const data = checkChunk(chunk);
    const out = new Uint8Array(FILE_CHUNK_HEADER_BYTES + data.length);
    const view = new DataView(out.buffer);
    view.setUint8(0, FILE_CHUNK);
    view.setUint32(4, chunk.transfer);
    view.setBigUint64(8, BigInt(chunk.offset));
    out.set(data, FILE_CHUNK_HEADER_BYTES);
    return out;
}

/** Parse one file chunk; `data` is a view into the message, not a copy. */
export const decodeFileChunk = fromPeer(function decodeFileChunk(message) {
    const bytes = asBytes(message);
    if (bytes === undefined) fail("a file chunk must be bytes");
    if (bytes.length < FILE_CHUNK_HEADER_BYTES) {
        fail("binary message is shorter than the file chunk header");
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, FILE_CHUNK_HEADER_BYTES);
    if (view.getUint8(0) !== FILE_CHUNK) fail(`not a file chunk (kind ${view.getUint8(0)})`);
    if (view.getUint8(1) !== 0 || view.getUint16(2) !== 0) {
        fail("file chunk reserved bytes must be 0");
    }
    const offset = view.getBigUint64(8);
    const chunk = {
        transfer: view.getUint32(4),
        offset: Number(offset), // (beyond 2**53 inexact, but refused all the same)
        data: bytes.subarray(FILE_CHUNK_HEADER_BYTES),
    };
    checkChunk(chunk);
    return chunk;
});

/** protocol.FileWindow: at most `limit` bytes sent beyond what the receiver acknowledged. */
export class FileWindow {
    constructor(size, limit = FILE_WINDOW_BYTES) {
        this.size = size;
        this.limit = limit;
        this.sent = 0;
        this.acked = 0;
    }

    room() {
        return Math.max(0, Math.min(this.size - this.sent, this.acked + this.limit - this.sent));
    }

    admit(offset, length) {
        if (offset !== this.sent || length > this.room()) return false;
        this.sent += length;
        return true;
    }

    ack(received) {
        if (!(this.acked <= received && received <= this.sent)) return false;
        this.acked = received;
        return true;
    }

    get complete() {
        return this.sent === this.size;
    }
}
