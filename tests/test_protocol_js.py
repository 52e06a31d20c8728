"""viewer/protocol.js against the same golden vectors as protocol.py, in Debian's Chromium.

The page (served through Playwright's request routing, no socket) imports protocol.js as a
module and runs every vector in both directions, every prefix and trailing-junk variant, and
every invalid input; the results come back as plain data and are asserted here.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    PROTOCOL_VERSION,
    Ping,
    ProtocolError,
    check_hello,
    decode_control,
    encode_control,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ORIGIN = "http://protocol.test"
VECTORS = json.loads((ROOT / "tests" / "vectors.json").read_text(encoding="utf-8"))
CONTROL = VECTORS["control"]
FRAMES = VECTORS["frames"]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def _floats() -> list[float]:
    """Fractional floats across the range t allows (seeded, so a failure repeats)."""
    rng = random.Random(20241126)
    values = [0.1, 0.3, 1e-05, 9.999e-05, 0.0001, -2.5e-07, 123456.789, 2.0**52 - 0.5,
              5e-324, 1.7976931348623157e-300, 4503599627370495.5, 1234567890123.0625]
    while len(values) < 400:
        (value,) = struct.unpack("<d", rng.randbytes(8))
        if value == value and abs(value) <= 2**53 and not value.is_integer():
            values.append(value)
        values.append(rng.uniform(-1e6, 1e6))
        values.append(rng.random() * 10.0 ** rng.randint(-12, 15))
    return [v for v in values if not v.is_integer()]


FLOATS = _floats()

RUN_ALL = r"""
async ({vectors, floats}) => {
  const p = await import("/protocol.js");
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const fromHex = (h, zeros = 0) => {
    const out = new Uint8Array(h.length / 2 + zeros);
    for (let i = 0; i < h.length / 2; i += 1) out[i] = parseInt(h.substr(i * 2, 2), 16);
    return out;
  };
  // {ok: value} or {error: message}; an exception other than ProtocolError is marked.
  const attempt = (f) => {
    try {
      return { ok: f() };
    } catch (e) {
      return { error: e instanceof p.ProtocolError ? e.message : `NOT A ProtocolError: ${e}` };
    }
  };
  const keysDeep = (v) => Array.isArray(v) ? v.map(keysDeep)
    : (v && typeof v === "object") ? Object.entries(v).map(([k, x]) => [k, keysDeep(x)]) : v;
  const utf8 = new TextEncoder();
  const refused = (r) => r.error !== undefined && !r.error.startsWith("NOT");
  const notRefused = (inputs) => inputs
    .map((input, i) => [i, attempt(() => p.decodeControl(input))])
    .filter(([, r]) => !refused(r));
  const summary = (image) => image.length > 4096
    ? { length: image.length, head: hex(image.subarray(0, 32)),
        zero_tail: image.subarray(32).every((b) => b === 0) }
    : hex(image);

  const control = vectors.control.map((v) => {
    const decoded = attempt(() => p.decodeControl(v.json));
    const text = v.json.trimEnd();
    const bytes = utf8.encode(text);
    const prefixes = [];
    for (let end = 0; end < bytes.length; end += 1) prefixes.push(bytes.subarray(0, end));
    for (let end = 0; end < text.length; end += 1) prefixes.push(text.slice(0, end));
    return {
      name: v.name,
      decoded,
      decoded_keys: decoded.ok ? keysDeep(decoded.ok) : null,
      encoded: attempt(() => p.encodeControl(v.fields)),
      reencoded: attempt(() => p.encodeControl(p.decodeControl(v.json))),
      from_bytes: attempt(() => p.decodeControl(utf8.encode(v.json))),
      from_buffer: attempt(() => p.decodeControl(utf8.encode(v.json).buffer)),
      prefixes_not_refused: notRefused(prefixes).map(([i]) => i),
      junk_not_refused: ["x", "}", "{}", "\x00", ",", "0"].filter(
        (junk) => !attempt(() => p.decodeControl(v.json + junk)).error?.includes("not valid JSON")),
      whitespace: attempt(() => p.decodeControl(" \t\r\n" + v.json + "\n ")),
    };
  });

  const invalidControl = vectors.invalid_control.map((v) => ({
    name: v.name,
    result: attempt(() => p.decodeControl(
      v.hex !== undefined ? fromHex(v.hex) : v.text.repeat(v.repeat ?? 1))),
  }));
  const invalidObjects = vectors.invalid_objects.map((v) => ({
    name: v.name, result: attempt(() => p.encodeControl(v.fields)),
  }));

  const frames = vectors.frames.map((v) => {
    const data = fromHex(v.hex, v.zeros ?? 0);
    const fields = { ...v.fields, image: fromHex(v.fields.image, v.zeros ?? 0) };
    const decoded = attempt(() => {
      const f = p.decodeFrame(data);
      return { ...f, image: summary(f.image), image_is_view: f.image.buffer === data.buffer };
    });
    const truncated = [];
    const ends = data.length > 4096
      ? [0, 1, 19, 20, 23, data.length >> 1, data.length - 1] : [...Array(data.length).keys()];
    for (const end of ends) {
      const r = attempt(() => p.decodeFrame(data.subarray(0, end)));
      const h = attempt(() => p.decodeFrameHeader(data.subarray(0, end)));
      if (!refused(r) || !refused(h)) truncated.push(end);
    }
    const trailing = [[0], [...utf8.encode("trailing")], [0xff, 0xd8, 0xff]].map((junk) => {
      const longer = new Uint8Array(data.length + junk.length);
      longer.set(data);
      longer.set(junk, data.length);
      return [attempt(() => p.decodeFrame(longer)), attempt(() => p.decodeFrameHeader(longer))];
    }).flat().map((r) => r.error ?? "accepted");
    const encoded = attempt(() => p.encodeFrame(fields));
    return {
      name: v.name,
      decoded,
      from_buffer: attempt(() => summary(p.decodeFrame(data.slice().buffer).image)),
      header: attempt(() => p.decodeFrameHeader(data)),
      encoded: encoded.ok ? summary(encoded.ok) : encoded,
      truncated_not_refused: truncated,
      trailing,
    };
  });
  const invalidFrames = vectors.invalid_frames.map((v) => ({
    name: v.name, result: attempt(() => p.decodeFrame(fromHex(v.hex, v.zeros ?? 0))),
  }));
  const invalidFrameFields = vectors.invalid_frame_fields.map((v) => ({
    name: v.name,
    result: attempt(() => p.encodeFrame({ ...v.fields, image: fromHex(v.fields.image) })),
  }));

  const hellos = vectors.control.filter((v) => v.fields.type === "hello" && !v.encoded);
  const checkHello = [];
  const hello = (text, role) => attempt(() => p.checkHello(p.decodeControl(text), role));
  for (const v of hellos) {
    for (const role of ["agent", "viewer"]) {
      const other = p.encodeControl({ ...v.fields, version: p.PROTOCOL_VERSION + 1 });
      checkHello.push([v.fields.role, role, v.fields.version, hello(v.json, role).error ?? "ok"]);
      const next = p.PROTOCOL_VERSION + 1;
      checkHello.push([v.fields.role, role, next, hello(other, role).error ?? "ok"]);
    }
  }
  const accept = vectors.control.find((v) => v.fields.type === "accept");
  checkHello.push(["accept", "viewer", null, hello(accept.json, "viewer").error ?? "ok"]);

  return {
    constants: {
      PROTOCOL_VERSION: p.PROTOCOL_VERSION, MAX_CONTROL_BYTES: p.MAX_CONTROL_BYTES,
      MAX_FRAME_BYTES: p.MAX_FRAME_BYTES, MAX_MESSAGE_BYTES: p.MAX_MESSAGE_BYTES,
      MAX_UPDATES_IN_FLIGHT: p.MAX_UPDATES_IN_FLIGHT,
      MAX_INPUT_EVENTS_PER_S: p.MAX_INPUT_EVENTS_PER_S, INPUT_BURST: p.INPUT_BURST,
      MAX_WAITING_PER_ADDRESS: p.MAX_WAITING_PER_ADDRESS,
      MAX_WAITING_PER_SUBNET: p.MAX_WAITING_PER_SUBNET, MAX_HELLO_BYTES: p.MAX_HELLO_BYTES,
      MAX_NAME_CHARS: p.MAX_NAME_CHARS,
      MAX_TEXT_CHARS: p.MAX_TEXT_CHARS, MAX_SCREENS: p.MAX_SCREENS,
      MAX_SCREEN_EDGE: p.MAX_SCREEN_EDGE, MAX_QUEUE_ENTRIES: p.MAX_QUEUE_ENTRIES,
      MAX_CHAT_CHARS: p.MAX_CHAT_CHARS, MAX_CLIPBOARD_CHARS: p.MAX_CLIPBOARD_CHARS,
      CHAT_MESSAGES_PER_S: p.CHAT_MESSAGES_PER_S, CHAT_BURST: p.CHAT_BURST,
      CLIPBOARD_UPDATES_PER_S: p.CLIPBOARD_UPDATES_PER_S, CLIPBOARD_BURST: p.CLIPBOARD_BURST,
      MAX_NOTE_CHARS: p.MAX_NOTE_CHARS, NOTE_EDITABLE_S: p.NOTE_EDITABLE_S,
      ROLES: p.ROLES, BUTTONS: p.BUTTONS, ENDED_BY: p.ENDED_BY,
      WAITING_STATES: p.WAITING_STATES, INPUT_TYPES: p.INPUT_TYPES,
      FRAME_HEADER_BYTES: p.FRAME_HEADER_BYTES, FRAME_JPEG: p.FRAME_JPEG, FRAME_PNG: p.FRAME_PNG,
      FRAME_KINDS: p.FRAME_KINDS, FLAG_LAST: p.FLAG_LAST, FLAG_FULL: p.FLAG_FULL,
      CLOSE_NORMAL: p.CLOSE_NORMAL, CLOSE_GOING_AWAY: p.CLOSE_GOING_AWAY,
      CLOSE_POLICY: p.CLOSE_POLICY, CLOSE_TOO_BIG: p.CLOSE_TOO_BIG,
      CLOSE_INTERNAL: p.CLOSE_INTERNAL, CLOSE_RESTART: p.CLOSE_RESTART,
      CLOSE_TRY_AGAIN: p.CLOSE_TRY_AGAIN, CLOSE_REPLACED: p.CLOSE_REPLACED,
      RESUMABLE_CLOSE_CODES: p.RESUMABLE_CLOSE_CODES, OBSERVERS: p.OBSERVERS,
    },
    wording: vectors.wording.map((v) => ({
      code: v.code, customer: p.customerWords(v.code), technician: p.technicianWords(v.code),
    })),
    wordingCodes: Object.keys(p.WORDING),
    unknownWording: {
      customer: p.customerWords(vectors.unknown_wording.code),
      technician: p.technicianWords(vectors.unknown_wording.code),
      prototypeName: p.technicianWords("constructor"),
      fallback: p.customerWords(vectors.unknown_wording.code, "Its own sentence."),
      knownIgnoresFallback: p.technicianWords("busy", "Ignored.") === p.WORDING.busy.technician,
    },
    closeCodes: vectors.close_codes.map((v) => ({
      name: v.name, result: attempt(() => p.canResume(v.code, v.observer)),
    })),
    errorKinds: [
      () => p.decodeControl("x"), () => p.decodeFrame(new Uint8Array(3)),
      () => p.checkHello({ type: "accept" }, "viewer"),
      () => p.encodeControl({ type: "ping", t: NaN }), () => p.canResume(1000, "viewer"),
    ].map((f) => {
      try {
        f();
        return "no error";
      } catch (e) {
        return [e.name, e instanceof p.ProtocolError, e instanceof Error];
      }
    }),
    error_class: (() => {
      const e = new p.ProtocolError("x");
      return { is_error: e instanceof Error, name: e.name, message: e.message };
    })(),
    not_text: [null, 5, ["{}"], { type: "logout" }, undefined].map(
      (v) => attempt(() => p.decodeControl(v))),
    not_bytes: ["\x01".repeat(30), null, Array(30).fill(1)].map(
      (v) => attempt(() => p.decodeFrame(v))),
    not_objects: [null, "logout", ["logout"], 5].map((v) => attempt(() => p.encodeControl(v))),
    local_misuse: [
      attempt(() => p.encodeControl({ type: "ping", t: NaN })),
      attempt(() => p.encodeControl({ type: "ping", t: Infinity })),
      attempt(() => p.encodeControl({ type: "constructor" })),
      attempt(() => p.encodeControl({ type: "toString" })),
      attempt(() => p.decodeControl('{"type":"__proto__"}')),
      attempt(() => p.decodeControl('{"type":"hello","role":"constructor"}')),
      attempt(() => p.encodeControl(
        { type: "text", session: "Fq3kZ8pL2mN7xR4tW9yB1c", text: "\ud800" })),
    ],
    floats: floats.map((t) => attempt(() => p.encodeControl({ type: "ping", t }))),
    control, invalidControl, invalidObjects, frames, invalidFrames, invalidFrameFields, checkHello,
  };
}
"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    """A Chromium page at ORIGIN that can import /protocol.js (served by request routing)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is not installed: run ./dev test, which installs it")
    from playwright.sync_api import sync_playwright

    files = {
        "/": ("text/html", b"<!doctype html><meta charset=utf-8><title>protocol.js</title>"),
        "/protocol.js": ("text/javascript", (ROOT / "viewer" / "protocol.js").read_bytes()),
    }

    def serve(route: Any) -> None:
        path = route.request.url[len(ORIGIN):] or "/"
        if path in files:
            content_type, body = files[path]
            route.fulfill(status=200, content_type=content_type, body=body)
        else:
            route.fulfill(status=404, body=b"not found")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route(f"{ORIGIN}/**", serve)
            page.goto(f"{ORIGIN}/")
            yield page
            assert errors == []
        finally:
            browser.close()


@pytest.fixture(scope="module")
def results(page: Any) -> dict[str, Any]:
    """Every vector run through protocol.js."""
    return page.evaluate(RUN_ALL, {"vectors": VECTORS, "floats": FLOATS})


def _by_name(results: dict[str, Any], group: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in results[group] if r["name"] == name]
    return found


def _keys_deep(value: Any) -> Any:
    if isinstance(value, list):
        return [_keys_deep(v) for v in value]
    if isinstance(value, dict):
        return [[k, _keys_deep(v)] for k, v in value.items()]
    return value


def _summary(data: bytes) -> Any:
    """What the page sends back for bytes: hex, or for megabytes, length, head and zero tail."""
    if len(data) <= 4096:
        return data.hex()
    return {"length": len(data), "head": data[:32].hex(), "zero_tail": not any(data[32:])}


def _image(fields: dict[str, Any], zeros: int) -> Any:
    return _summary(bytes.fromhex(fields["image"]) + bytes(zeros))


# --- module and constants ---------------------------------------------------------------


def test_js_constants_equal_protocol_py(results: dict[str, Any]) -> None:
    """Every limit and constant protocol.js exports has protocol.py's value."""
    import protocol

    for name, value in results["constants"].items():
        expected = protocol.FRAME_HEADER.size if name == "FRAME_HEADER_BYTES" else (
            getattr(protocol, name))
        if name == "INPUT_TYPES":
            expected = [cls.TYPE for cls in protocol.INPUT_TYPES]
        if name == "RESUMABLE_CLOSE_CODES":
            value, expected = sorted(value), sorted(expected)
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name
    assert results["constants"]["PROTOCOL_VERSION"] == PROTOCOL_VERSION


def test_js_protocol_error_is_an_error_named_protocol_error(results: dict[str, Any]) -> None:
    """ProtocolError extends Error and keeps its message."""
    assert results["error_class"] == {"is_error": True, "name": "ProtocolError", "message": "x"}


# --- control messages -------------------------------------------------------------------


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_js_decodes_control_vector_to_its_fields(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """decodeControl gives the vector's fields, keys in protocol.py's order, from text and
    bytes."""
    result = _by_name(results, "control", vector["name"])
    assert result["decoded"] == {"ok": vector["fields"]}
    assert result["decoded_keys"] == _keys_deep(vector["fields"])
    assert result["from_bytes"] == result["decoded"]
    assert result["from_buffer"] == result["decoded"]
    assert result["whitespace"] == result["decoded"]


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_js_encodes_control_vector_to_the_exact_text(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """encodeControl writes exactly the text protocol.encode_control writes."""
    result = _by_name(results, "control", vector["name"])
    expected = vector.get("encoded", vector["json"])
    assert result["encoded"] == {"ok": expected}
    assert result["reencoded"] == {"ok": expected}


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_js_refuses_every_prefix_and_trailing_junk_of_control_vector(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """Fed byte by byte (and unit by unit), every prefix is refused; junk after it too."""
    result = _by_name(results, "control", vector["name"])
    assert result["prefixes_not_refused"] == []
    assert result["junk_not_refused"] == []


@pytest.mark.parametrize("vector", VECTORS["invalid_control"], ids=_ids(VECTORS["invalid_control"]))
def test_js_refuses_invalid_control_with_protocol_py_message(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """Each invalid input throws ProtocolError with the same words as protocol.py."""
    result = _by_name(results, "invalidControl", vector["name"])["result"]
    assert "error" in result, result
    assert vector["error"] in result["error"]


@pytest.mark.parametrize("vector", VECTORS["invalid_objects"], ids=_ids(VECTORS["invalid_objects"]))
def test_js_refuses_to_encode_invalid_object(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """encodeControl validates like protocol.py's constructors."""
    result = _by_name(results, "invalidObjects", vector["name"])["result"]
    assert "error" in result, result
    assert vector["error"] in result["error"]


def test_js_refuses_what_is_not_text_or_not_an_object(results: dict[str, Any]) -> None:
    """decodeControl wants text or bytes; decodeFrame bytes; encodeControl a plain object."""
    assert results["not_text"] == [{"error": "control message must be text"}] * 5
    assert results["not_bytes"] == [{"error": "a frame must be bytes"}] * 3
    assert all("error" in r and not r["error"].startswith("NOT") for r in results["not_objects"])


def test_js_refuses_local_misuse_with_protocol_errors(results: dict[str, Any]) -> None:
    """NaN, Infinity, Object.prototype names as types and lone surrogates are refused."""
    errors = [r.get("error") for r in results["local_misuse"]]
    assert errors == [
        "t must be a number",
        "t must be a number",
        "unknown message type 'constructor'",
        "unknown message type 'toString'",
        "unknown message type '__proto__'",
        "hello must name the role agent or viewer",
        "text is not valid Unicode",
    ]


def test_js_writes_fractional_floats_as_python_does(results: dict[str, Any]) -> None:
    """A fractional ping t is written with Python's repr digits and layout (1e-05, 0.0001)."""
    expected = [{"ok": encode_control(Ping(t))} for t in FLOATS]
    mismatches = [
        (t, got, want) for t, got, want in zip(FLOATS, results["floats"], expected, strict=True)
        if got != want
    ]
    assert mismatches == []


# --- check_hello ------------------------------------------------------------------------


def test_js_check_hello_accepts_and_refuses_like_protocol_py(results: dict[str, Any]) -> None:
    """checkHello passes the right role at our version and refuses others with check_hello's
    words."""
    hellos = {v["fields"]["role"]: v for v in CONTROL
              if v["fields"]["type"] == "hello" and "encoded" not in v}
    accept = next(v for v in CONTROL if v["fields"]["type"] == "accept")
    for sent, role, version, outcome in results["checkHello"]:
        if sent == "accept":
            message = decode_control(accept["json"])
        else:
            message = decode_control(json.dumps({**hellos[sent]["fields"], "version": version}))
        try:
            check_hello(message, role)
        except ProtocolError as error:
            assert outcome == str(error)
        else:
            assert outcome == "ok"
    outcomes = {outcome for *_, outcome in results["checkHello"]}
    assert "ok" in outcomes
    assert len(outcomes) >= 4
    expected_count = sum(v["fields"]["type"] == "hello" and "encoded" not in v for v in CONTROL)
    assert len(results["checkHello"]) == expected_count * 2 * 2 + 1


# --- binary frames ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_js_decodes_frame_vector_to_its_fields(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """decodeFrame gives the header fields and the image (a view, not a copy)."""
    result = _by_name(results, "frames", vector["name"])
    image = _image(vector["fields"], vector.get("zeros", 0))
    assert result["decoded"] == {"ok": {**vector["fields"], "image": image,
                                        "image_is_view": True}}
    assert result["from_buffer"] == {"ok": image}
    f = vector["fields"]
    length = len(bytes.fromhex(vector["hex"])) + vector.get("zeros", 0) - 20
    assert result["header"] == {"ok": [f["kind"], f["flags"], f["monitor"], 0, f["seq"], f["x"],
                                       f["y"], f["width"], f["height"], length]}


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_js_encodes_frame_vector_to_the_exact_bytes(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """encodeFrame writes exactly the vector's bytes."""
    result = _by_name(results, "frames", vector["name"])
    data = bytes.fromhex(vector["hex"]) + bytes(vector.get("zeros", 0))
    assert result["encoded"] == _summary(data)


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_js_refuses_truncated_and_trailing_frame_vector(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """Every prefix (sampled for the largest) and any trailing bytes are refused."""
    result = _by_name(results, "frames", vector["name"])
    assert result["truncated_not_refused"] == []
    assert result["trailing"] == ["frame image length does not match the message length"] * 6


@pytest.mark.parametrize("vector", VECTORS["invalid_frames"], ids=_ids(VECTORS["invalid_frames"]))
def test_js_refuses_invalid_frame_with_protocol_py_message(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """Each malformed binary message throws ProtocolError with protocol.py's words."""
    result = _by_name(results, "invalidFrames", vector["name"])["result"]
    assert "error" in result, result
    assert vector["error"] in result["error"]


@pytest.mark.parametrize(
    "vector", VECTORS["invalid_frame_fields"], ids=_ids(VECTORS["invalid_frame_fields"])
)
def test_js_refuses_to_encode_invalid_frame_fields(
    results: dict[str, Any], vector: dict[str, Any],
) -> None:
    """encodeFrame validates like protocol.Frame."""
    result = _by_name(results, "invalidFrameFields", vector["name"])["result"]
    assert "error" in result, result
    assert vector["error"] in result["error"]


# --- differential: the same random input through both -----------------------------------

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 17, 1.5, -0.5, 2**31, 2**32, 2**53, 2**53 + 1, -(2**53) - 1,
    10**30, 1e308, 1e-320, float("nan"), float("inf"), "", "x", "agent", "viewer", "left",
    "waiting", "customer", "Fq3kZ8pL2mN7xR4tW9yB1c", "😀" * 65, "a\x00b", "\ud800", "it's",
    "\u200b", [], {}, [1, [2, [3]]], {"x": 0, "y": 0, "width": 1, "height": 1},
    {"session": "Fq3kZ8pL2mN7xR4tW9yB1c", "machine": "m", "user": "u", "waited_s": 1,
     "state": "waiting"},
]
ODD_KEYS = ["type", "role", "x", "zz", "it's", 'say "hi"', "both ' \"", "tab\t", "\x7f", "é",
            "\u200b", "\U0001f600", "\ud800", "__proto__", "constructor", "y" * 50]


def _corpus(count: int = 2000) -> list[str]:
    """Seeded mutations of the golden messages, as JSON text (ASCII, NaN and all)."""
    rng = random.Random(26112024)
    golden = [v["fields"] for v in CONTROL]
    texts = []
    for _ in range(count):
        fields: Any = json.loads(json.dumps(rng.choice(golden)))
        for _ in range(rng.randint(1, 3)):
            if not isinstance(fields, dict) or len(fields) < 2:
                break
            name = rng.choice(sorted(set(fields) - {"type"}))
            how = rng.randrange(20)
            if how < 3:
                fields.pop(name)
            elif how < 9:
                fields[name] = rng.choice(ODD_VALUES)
            elif how < 12:
                fields[rng.choice(ODD_KEYS)] = rng.choice(ODD_VALUES)
            elif how < 17 and isinstance(fields[name], list) and fields[name]:
                item = fields[name][rng.randrange(len(fields[name]))]
                if isinstance(item, dict) and item:
                    item[rng.choice(sorted(item))] = rng.choice(ODD_VALUES)
                else:
                    fields[name] = [rng.choice(ODD_VALUES)]
            elif how < 19:
                fields["type"] = rng.choice([*sorted({v["type"] for v in golden}), "hello"])
            else:
                fields = rng.choice([[fields], "text", None])
        texts.append(json.dumps(fields, allow_nan=True))
    return texts


def _python_outcome(text: str) -> dict[str, Any]:
    try:
        message = decode_control(text)
    except ProtocolError as error:
        return {"error": str(error)}
    return {"ok": message.to_json(), "encoded": encode_control(message)}


DIFFERENTIAL = r"""
async (texts) => {
  const p = await import("/protocol.js");
  return texts.map((text) => {
    try {
      const message = p.decodeControl(text);
      return { ok: message, encoded: p.encodeControl(message) };
    } catch (e) {
      return { error: e instanceof p.ProtocolError ? e.message : `NOT A ProtocolError: ${e}` };
    }
  });
}
"""


def _whole_floats(value: Any) -> bool:
    """True if a float field holds a whole number (written 1.0 by Python, 1 by JavaScript)."""
    if isinstance(value, dict):
        return any(_whole_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_whole_floats(v) for v in value)
    return isinstance(value, float) and value.is_integer()


def test_js_and_python_agree_on_mutated_messages(page: Any) -> None:
    """2000 seeded mutations of golden messages: same message or same error in both."""
    corpus = _corpus()
    outcomes = page.evaluate(DIFFERENTIAL, corpus)
    differences = []
    for text, js in zip(corpus, outcomes, strict=True):
        python = _python_outcome(text)
        if "ok" in python and _whole_floats(python["ok"]):
            python.pop("encoded")
            js.pop("encoded", None)
        if js != python:
            differences.append((text, python, js))
    assert differences == []
    assert sum("ok" in _python_outcome(t) for t in corpus) > 50  # not only refusals


# --- refusals, endings and close codes -------------------------------------------------


def test_js_wording_is_the_wording_of_protocol_py(results: dict[str, Any]) -> None:
    """protocol.js has every code of protocol.py's table, with the same two sentences."""
    import protocol

    assert results["wordingCodes"] == list(protocol.WORDING)
    assert results["wording"] == VECTORS["wording"]


def test_js_gives_an_unknown_code_the_generic_sentences(results: dict[str, Any]) -> None:
    """An unknown code, even one named like an Object property, reads as the generic words."""
    unknown = VECTORS["unknown_wording"]
    assert results["unknownWording"] == {
        "customer": unknown["customer"], "technician": unknown["technician"],
        "prototypeName": unknown["technician"], "fallback": "Its own sentence.",
        "knownIgnoresFallback": True}


def test_js_can_resume_agrees_with_protocol_py(results: dict[str, Any]) -> None:
    """The one resume rule gives the vectors' answer in JavaScript too."""
    expected = [{"name": v["name"], "result": {"ok": v["resumable"]}}
                for v in VECTORS["close_codes"]]
    assert results["closeCodes"] == expected


def test_js_blames_the_peer_only_for_what_it_decodes(results: dict[str, Any]) -> None:
    """Decoders throw RemoteProtocolError; building a bad message throws LocalProtocolError."""
    assert results["errorKinds"] == [
        ["RemoteProtocolError", True, True], ["RemoteProtocolError", True, True],
        ["RemoteProtocolError", True, True], ["LocalProtocolError", True, True],
        ["LocalProtocolError", True, True]]
