"""Property tests: protocol.py decodes anything into a message or a RemoteProtocolError, nothing
else.

The CI budget is small and fixed (profile "protocol-ci", 300 examples a test). For a longer
hunt run, for example:

    PROTOCOL_FUZZ_PROFILE=protocol-release .venv/bin/python -m pytest tests/test_protocol_fuzz.py

(20,000 examples a test; failures found are kept in .hypothesis/ and replayed first next time).
The profiles are applied per test here, never loaded globally, so other modules keep theirs.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    FRAME_HEADER,
    MAX_SCREEN_EDGE,
    MAX_SCREENS,
    Frame,
    Message,
    RemoteProtocolError,
    Screen,
    Waiting,
    decode_control,
    decode_frame,
    decode_frame_header,
    encode_control,
    encode_frame,
)

settings.register_profile(
    "protocol-ci", max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "protocol-release", max_examples=20_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile(os.environ.get("PROTOCOL_FUZZ_PROFILE", "protocol-ci"))

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))
GOLDEN = [v["fields"] for v in VECTORS["control"]]
GOLDEN_FRAMES = [bytes.fromhex(v["hex"]) for v in VECTORS["frames"] if "zeros" not in v]
TYPES = sorted({f["type"] for f in GOLDEN})
FIELD_NAMES = sorted({name for f in GOLDEN for name in f} | {"x", "y", "width", "height"})


def decodes_or_refuses(data: Any) -> Message | None:
    """Decode ``data``; a RemoteProtocolError is fine, any other exception fails the test."""
    try:
        message = decode_control(data)
    except RemoteProtocolError:
        return None
    # Whatever decodes must encode again to text that decodes to the same message.
    assert decode_control(encode_control(message)) == message
    return message


# --- arbitrary input --------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_decode_to_a_message_or_a_protocol_error(data: bytes) -> None:
    """Random bytes, as a control message and as a frame, raise only RemoteProtocolError."""
    decodes_or_refuses(data)
    try:
        decode_frame(data)
    except RemoteProtocolError:
        pass
    try:
        decode_frame_header(data)
    except RemoteProtocolError:
        pass


@FUZZ
@given(st.text(max_size=2048))
def test_random_text_decodes_to_a_message_or_a_protocol_error(text: str) -> None:
    """Random text raises only RemoteProtocolError."""
    decodes_or_refuses(text)


@FUZZ
@given(st.sampled_from(GOLDEN_FRAMES), st.binary(min_size=FRAME_HEADER.size,
                                                   max_size=FRAME_HEADER.size))
def test_random_frame_headers_decode_to_a_frame_or_a_protocol_error(
    golden: bytes, header: bytes,
) -> None:
    """Any 20 header bytes before a golden image, with its length right, give a Frame or a
    RemoteProtocolError."""
    image = golden[FRAME_HEADER.size:]
    data = header[:-4] + struct.pack("!I", len(image)) + image
    try:
        frame = decode_frame(data)
    except RemoteProtocolError:
        return
    assert encode_frame(frame) == data


# --- JSON that looks like a message -----------------------------------------------------

HUGE_NUMBERS = st.sampled_from([
    2**31, 2**32, 2**53 + 1, 2**63, -(2**63), 10**400, 1e308, -1e308, 1e-320,
    math.inf, -math.inf, math.nan, -0.0, 0.5, True, False,
])
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | HUGE_NUMBERS
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> str:
    """JSON text as a careless or hostile peer might send it (NaN and Infinity included)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


@FUZZ
@given(
    st.sampled_from(TYPES),
    st.sampled_from(["agent", "viewer", "", None, 1, ["agent"], {"x": 1}]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), JSON_VALUES,
                    max_size=8),
)
def test_random_json_object_with_a_real_type_decodes_or_is_refused(
    kind: str, role: Any, fields: dict[str, Any],
) -> None:
    """An object with a known type and random fields and values raises only RemoteProtocolError."""
    message = {"type": kind, **fields}
    if kind == "hello":
        message.setdefault("role", role)
    decodes_or_refuses(dumps(message))


def _list_of_dicts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _mutate(fields: dict[str, Any], draw: Any) -> Any:
    """One way a golden message goes wrong: a field dropped, replaced, added, or the whole."""
    fields = dict(fields)
    names = sorted(fields)
    how = draw(st.sampled_from(
        ["drop", "replace", "huge", "nest", "add", "screen", "entry", "list", "string"]
    ))
    name = draw(st.sampled_from(names))
    if how == "drop":
        fields.pop(name)
    elif how == "replace":
        fields[name] = draw(JSON_VALUES)
    elif how == "huge":
        fields[name] = draw(HUGE_NUMBERS)
    elif how == "nest":
        fields[name] = draw(st.sampled_from([[fields[name]], {"value": fields[name]}]))
    elif how == "add":
        fields[draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=8))] = draw(JSON_VALUES)
    elif how == "screen" and _list_of_dicts(fields.get("screens")):
        screens = [dict(s) for s in fields["screens"]]
        i = draw(st.integers(0, len(screens) - 1))
        key = draw(st.sampled_from(["x", "y", "width", "height"]))
        screens[i][key] = draw(HUGE_NUMBERS | JSON_VALUES)
        fields["screens"] = screens
    elif how == "entry" and _list_of_dicts(fields.get("sessions")):
        entries = [dict(e) for e in fields["sessions"]]
        key = draw(st.sampled_from(sorted(entries[0]) or ["session"]))
        entries[0][key] = draw(HUGE_NUMBERS | JSON_VALUES)
        fields["sessions"] = entries
    elif how == "list":
        return [fields]
    elif how == "string":
        return dumps(fields)
    return fields


@FUZZ
@given(st.sampled_from(GOLDEN), st.data())
def test_mutated_golden_messages_decode_or_are_refused(
    golden: dict[str, Any], data: st.DataObject,
) -> None:
    """Golden messages with fields dropped, retyped, huge, NaN or nested raise only
    RemoteProtocolError."""
    mutated = golden
    for _ in range(data.draw(st.integers(1, 3))):
        if not isinstance(mutated, dict) or not mutated:
            break
        mutated = _mutate(mutated, data.draw)
    decodes_or_refuses(dumps(mutated))


# --- valid messages round-trip ----------------------------------------------------------

SESSIONS = st.from_regex(r"[A-Za-z0-9_-]{16,40}", fullmatch=True)
TECHNICIANS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,31}", fullmatch=True)
KEY_CODES = st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True)
PRINTABLE = st.characters(exclude_categories=("C", "Z")) | st.just(" ")


def printable(max_size: int) -> st.SearchStrategy[str]:
    return st.text(PRINTABLE, max_size=max_size).filter(str.isprintable)


def any_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


NAMES = printable(protocol.MAX_NAME_CHARS)
TYPED_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), min_codepoint=0x20) | st.sampled_from("\n\t"),
    max_size=protocol.MAX_TEXT_CHARS,
)
EDGE = st.integers(-MAX_SCREEN_EDGE, MAX_SCREEN_EDGE)
SIZE = st.integers(1, MAX_SCREEN_EDGE)
POINT = st.integers(0, MAX_SCREEN_EDGE)
MONITOR = st.integers(0, MAX_SCREENS - 1)
SCREENS = st.lists(st.builds(Screen, EDGE, EDGE, SIZE, SIZE), min_size=2,
                   max_size=MAX_SCREENS).map(tuple)
SECONDS = st.floats(0, 1e9, exclude_max=True) | st.integers(0, 10**9 - 1)
T = st.floats(-(2.0**53), 2.0**53) | st.integers(-(2**53), 2**53)
CODES = st.from_regex(r"[0-9]{6}", fullmatch=True)

MESSAGES = st.one_of(
    st.builds(protocol.AgentHello, st.just("agent"), st.integers(0, 2**31), TECHNICIANS, NAMES,
              NAMES, SCREENS, st.just("") | SESSIONS),
    st.builds(protocol.ViewerHello, st.just("viewer"), st.integers(0, 2**31), NAMES.filter(bool),
              any_text(1024).filter(bool), st.just("")),
    st.builds(protocol.ViewerHello, st.just("viewer"), st.integers(0, 2**31), NAMES,
              any_text(1024), printable(128).filter(bool)),
    st.builds(protocol.Registered, SESSIONS, NAMES, st.integers(0, 86400), SESSIONS, CODES),
    st.builds(protocol.Welcome, TECHNICIANS, NAMES, SESSIONS),
    st.builds(protocol.Queue, st.lists(
        st.builds(Waiting, SESSIONS, NAMES, NAMES, SECONDS, CODES,
                  st.sampled_from(protocol.WAITING_STATES)), max_size=5).map(tuple)),
    st.builds(protocol.Accept, SESSIONS, st.just("") | CODES),
    st.builds(protocol.Accepted, SESSIONS, NAMES, NAMES, NAMES, SCREENS, CODES, SECONDS,
              st.booleans()),
    st.builds(protocol.TakeControl, SESSIONS),
    st.builds(protocol.ReleaseControl, SESSIONS),
    st.builds(protocol.Control, SESSIONS, st.booleans()),
    st.builds(protocol.PointerMove, SESSIONS, MONITOR, POINT, POINT),
    st.builds(protocol.Button, SESSIONS, MONITOR, POINT, POINT,
              st.sampled_from(protocol.BUTTONS), st.booleans()),
    st.builds(protocol.Wheel, SESSIONS, MONITOR, POINT, POINT, st.integers(-100, 100),
              st.integers(-100, 100)),
    st.builds(protocol.Key, SESSIONS, KEY_CODES, any_text(32), st.booleans()),
    st.builds(protocol.Text, SESSIONS, TYPED_TEXT),
    st.builds(protocol.Refresh, SESSIONS, MONITOR),
    st.builds(protocol.Ack, SESSIONS, st.integers(0, 2**32 - 1)),
    st.builds(protocol.Cursor, MONITOR, EDGE, EDGE),
    st.builds(protocol.Screens, SCREENS),
    st.builds(protocol.Pause, st.booleans()),
    st.builds(protocol.Close, printable(200)),
    st.builds(protocol.End, SESSIONS, printable(200)),
    st.builds(protocol.Ended, SESSIONS, st.sampled_from(protocol.ENDED_BY), printable(200),
              st.integers(0, 2**53), st.integers(0, 2**31)),
    st.builds(protocol.Ping, T),
    st.builds(protocol.Pong, T),
    st.builds(protocol.Logout),
    st.builds(protocol.Error, printable(64), printable(500)),
)


@FUZZ
@given(MESSAGES)
def test_valid_messages_round_trip_exactly(message: Message) -> None:
    """decode(encode(m)) == m, and encode(decode(text)) == text for every valid message."""
    text = encode_control(message)
    decoded = decode_control(text)
    assert decoded == message
    assert type(decoded) is type(message)
    assert encode_control(decoded) == text
    assert decode_control(text.encode("utf-8")) == message


def _image(kind: int) -> st.SearchStrategy[bytes]:
    magic = b"\xff\xd8\xff" if kind == protocol.FRAME_JPEG else b"\x89PNG\r\n\x1a\n"
    return st.binary(max_size=256).map(lambda rest: magic + rest)


FRAMES = st.sampled_from(protocol.FRAME_KINDS).flatmap(lambda kind: st.builds(
    Frame, st.just(kind), st.sampled_from([0, 1, 2, 3]), MONITOR, st.integers(0, 2**32 - 1),
    POINT, POINT, SIZE, SIZE, _image(kind),
))


@FUZZ
@given(FRAMES)
def test_valid_frames_round_trip_exactly(frame: Frame) -> None:
    """decode_frame(encode_frame(f)) == f, and the header fast path agrees with it."""
    data = encode_frame(frame)
    assert decode_frame(data) == frame
    assert encode_frame(decode_frame(data)) == data
    assert decode_frame_header(data)[-1] == len(frame.image)
