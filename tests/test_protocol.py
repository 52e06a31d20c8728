"""protocol.py against the golden vectors in tests/vectors.json, in both directions.

Every valid vector is decoded and compared with its fields, and its fields are encoded and
compared with the exact text or bytes. Binary vectors are also fed in every shorter prefix
(a message delivered byte by byte) and with trailing bytes, as in h11's tests/test_io.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import protocol
from protocol import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    Error,
    Frame,
    LocalProtocolError,
    Message,
    ProtocolError,
    RemoteProtocolError,
    Screen,
    Waiting,
    check_hello,
    decode_control,
    decode_frame,
    decode_frame_header,
    encode_control,
    encode_frame,
)

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))
CONTROL = VECTORS["control"]
FRAMES = VECTORS["frames"]
SMALL_FRAMES = [v for v in FRAMES if "zeros" not in v]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def _message_classes() -> dict[str, type[Message]]:
    """Every concrete message class by name (subclasses of Message that name a type)."""
    found: dict[str, type[Message]] = {}
    pending = [Message]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.TYPE:
            found[cls.__name__] = cls
    return found


CLASSES = _message_classes()


def build(fields: dict[str, Any]) -> Message:
    """The message object that a vector's fields describe (the object an encoder is given)."""
    fields = dict(fields)
    kind = fields.pop("type")
    if kind == "hello":
        cls = {"agent": protocol.AgentHello, "viewer": protocol.ViewerHello}[fields["role"]]
    else:
        (cls,) = [c for c in CLASSES.values() if c.TYPE == kind]
    if "screens" in fields:
        fields["screens"] = tuple(Screen(**s) for s in fields["screens"])
    if "sessions" in fields:
        fields["sessions"] = tuple(Waiting(**e) for e in fields["sessions"])
    return cls(**fields)


def frame_bytes(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["hex"]) + bytes(vector.get("zeros", 0))


def frame_of(fields: dict[str, Any], zeros: int = 0) -> Frame:
    return Frame(**{**fields, "image": bytes.fromhex(fields["image"]) + bytes(zeros)})


def invalid_input(vector: dict[str, Any]) -> str | bytes:
    if "hex" in vector:
        return bytes.fromhex(vector["hex"])
    return vector["text"] * vector.get("repeat", 1)


# --- coverage of the vectors themselves ------------------------------------------------


def test_every_message_class_has_a_canonical_vector() -> None:
    """Each message class (both hello roles, every type) has a vector that encodes to itself."""
    canonical = {v["class"] for v in CONTROL if "encoded" not in v}
    assert canonical == set(CLASSES)


def test_vectors_name_the_protocol_version() -> None:
    """The vectors were made for this PROTOCOL_VERSION."""
    assert VECTORS["protocol_version"] == PROTOCOL_VERSION


def test_vector_names_are_unique() -> None:
    """Each vector can be found by its name."""
    for group in VECTORS.values():
        if isinstance(group, list) and group and isinstance(group[0], dict):
            names = [v.get("name", v.get("code")) for v in group]
            assert len(names) == len(set(names))


# --- control messages -------------------------------------------------------------------


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_control_vector_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    """Decoding the vector's text gives the message its fields describe, of the right class."""
    message = decode_control(vector["json"])
    assert type(message).__name__ == vector["class"]
    assert message == build(vector["fields"])
    assert message.to_json() == vector["fields"]
    assert list(message.to_json()) == list(vector["fields"])


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_control_vector_encodes_to_its_exact_text(vector: dict[str, Any]) -> None:
    """Encoding the vector's fields gives exactly the canonical text, number types included."""
    text = encode_control(build(vector["fields"]))
    assert text == vector.get("encoded", vector["json"])
    assert encode_control(decode_control(vector["json"])) == text


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_control_vector_decodes_from_utf8_bytes(vector: dict[str, Any]) -> None:
    """The same message arrives as bytes, bytearray or memoryview of its UTF-8 text."""
    data = vector["json"].encode("utf-8")
    expected = decode_control(vector["json"])
    for form in (data, bytearray(data), memoryview(data)):
        assert decode_control(form) == expected


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_control_vector_fed_byte_by_byte_is_refused_until_complete(
    vector: dict[str, Any],
) -> None:
    """Every proper prefix of the UTF-8 text (and of the text) is refused; the whole decodes."""
    data = vector["json"].rstrip().encode("utf-8")
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_control(data[:end])
    text = vector["json"].rstrip()
    for end in range(len(text)):
        with pytest.raises(RemoteProtocolError):
            decode_control(text[:end])
    assert decode_control(data) == decode_control(vector["json"])


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
@pytest.mark.parametrize("junk", ["x", "}", "{}", "\x00", ",", "0"])
def test_control_vector_with_trailing_junk_is_refused(vector: dict[str, Any], junk: str) -> None:
    """Anything but whitespace after the JSON object makes the message invalid JSON."""
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        decode_control(vector["json"] + junk)


@pytest.mark.parametrize("vector", CONTROL, ids=_ids(CONTROL))
def test_control_vector_with_surrounding_whitespace_still_decodes(vector: dict[str, Any]) -> None:
    """JSON whitespace around the object is allowed (as JSON.parse allows it in the viewer)."""
    assert decode_control(" \t\r\n" + vector["json"] + "\n ") == decode_control(vector["json"])


@pytest.mark.parametrize("vector", VECTORS["invalid_control"], ids=_ids(VECTORS["invalid_control"]))
def test_invalid_control_is_refused_with_its_message(vector: dict[str, Any]) -> None:
    """Each invalid input raises ProtocolError (nothing else) with the expected words."""
    with pytest.raises(RemoteProtocolError) as refused:
        decode_control(invalid_input(vector))
    assert vector["error"] in str(refused.value)


@pytest.mark.parametrize("vector", VECTORS["invalid_objects"], ids=_ids(VECTORS["invalid_objects"]))
def test_invalid_object_is_refused_when_built(vector: dict[str, Any]) -> None:
    """A message object with a bad value cannot be built, so it can never be encoded."""
    with pytest.raises(LocalProtocolError) as refused:
        build(vector["fields"])
    assert vector["error"] in str(refused.value)


def test_decode_control_refuses_what_is_not_text() -> None:
    """Neither None, a number nor a list is a control message."""
    for value in (None, 5, ["{}"], {"type": "logout"}):
        with pytest.raises(RemoteProtocolError, match="control message must be text"):
            decode_control(value)  # type: ignore[arg-type]


# --- hello ------------------------------------------------------------------------------


def _hello(role: str) -> Message:
    (vector,) = [v for v in CONTROL if v["fields"].get("role") == role and "encoded" not in v][:1]
    return decode_control(vector["json"])


@pytest.mark.parametrize("role", ["agent", "viewer"])
def test_check_hello_accepts_a_hello_of_the_expected_role_and_version(role: str) -> None:
    """A hello of the right role at PROTOCOL_VERSION passes."""
    check_hello(_hello(role), role)


@pytest.mark.parametrize(("sent", "expected"), [("agent", "viewer"), ("viewer", "agent")])
def test_check_hello_refuses_the_other_role(sent: str, expected: str) -> None:
    """An agent hello on the viewer path (and the reverse) is refused, naming the role."""
    expected_words = f"first message must be hello with role {expected}"
    with pytest.raises(RemoteProtocolError, match=expected_words):
        check_hello(_hello(sent), expected)


@pytest.mark.parametrize("role", ["agent", "viewer"])
def test_check_hello_refuses_a_message_that_is_not_a_hello(role: str) -> None:
    """Any other message first (here an accept, a ping) is refused."""
    for vector in CONTROL:
        if vector["fields"]["type"] in ("accept", "ping"):
            with pytest.raises(RemoteProtocolError, match=f"must be hello with role {role}"):
                check_hello(decode_control(vector["json"]), role)


@pytest.mark.parametrize("role", ["agent", "viewer"])
@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 2**31])
def test_check_hello_refuses_another_version(role: str, version: int) -> None:
    """A hello at another protocol version is refused, naming both versions."""
    fields = {**_hello(role).to_json(), "version": version}
    message = decode_control(json.dumps(fields))
    with pytest.raises(RemoteProtocolError) as refused:
        check_hello(message, role)
    assert str(refused.value) == (
        f"protocol version {version} is not supported; "
        f"this relay speaks version {PROTOCOL_VERSION}"
    )


# --- binary frames ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_frame_vector_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    """Decoding the vector's bytes gives its header fields and image."""
    frame = decode_frame(frame_bytes(vector))
    assert frame == frame_of(vector["fields"], vector.get("zeros", 0))
    assert type(frame.image) is bytes
    assert frame.last == bool(vector["fields"]["flags"] & protocol.FLAG_LAST)


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_frame_vector_encodes_to_its_exact_bytes(vector: dict[str, Any]) -> None:
    """Encoding the vector's fields gives exactly its bytes."""
    assert encode_frame(frame_of(vector["fields"], vector.get("zeros", 0))) == frame_bytes(vector)


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_frame_vector_decodes_from_bytearray_and_memoryview(vector: dict[str, Any]) -> None:
    """A frame arrives as bytes, bytearray or memoryview alike."""
    data = frame_bytes(vector)
    expected = decode_frame(data)
    assert decode_frame(bytearray(data)) == expected
    assert decode_frame(memoryview(data)) == expected


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
def test_frame_vector_header_fast_path_reads_the_same_fields(vector: dict[str, Any]) -> None:
    """decode_frame_header (the relay's forwarding check) reads the header the same way."""
    data = frame_bytes(vector)
    f = vector["fields"]
    assert decode_frame_header(data) == (
        f["kind"], f["flags"], f["monitor"], 0, f["seq"], f["x"], f["y"], f["width"],
        f["height"], len(data) - FRAME_HEADER.size,
    )


@pytest.mark.parametrize("vector", SMALL_FRAMES, ids=_ids(SMALL_FRAMES))
def test_frame_vector_truncated_at_every_length_is_refused(vector: dict[str, Any]) -> None:
    """Fed byte by byte, every prefix is refused by decode and by the header fast path."""
    data = frame_bytes(vector)
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_frame(data[:end])
        with pytest.raises(RemoteProtocolError):
            decode_frame_header(data[:end])
    assert decode_frame(data) == frame_of(vector["fields"])


def test_largest_frame_truncated_is_refused() -> None:
    """The MAX_FRAME_BYTES vector, cut anywhere (sampled), is refused."""
    (vector,) = [v for v in FRAMES if "zeros" in v]
    data = frame_bytes(vector)
    for end in (0, 1, FRAME_HEADER.size - 1, FRAME_HEADER.size, FRAME_HEADER.size + 3,
                len(data) // 2, len(data) - 1):
        with pytest.raises(RemoteProtocolError):
            decode_frame(data[:end])


@pytest.mark.parametrize("vector", FRAMES, ids=_ids(FRAMES))
@pytest.mark.parametrize("junk", [b"\x00", b"trailing", b"\xff\xd8\xff"])
def test_frame_vector_with_trailing_bytes_is_refused(vector: dict[str, Any], junk: bytes) -> None:
    """Bytes after the image the header announced make the message malformed."""
    with pytest.raises(RemoteProtocolError, match="image length does not match"):
        decode_frame(frame_bytes(vector) + junk)
    with pytest.raises(RemoteProtocolError, match="image length does not match"):
        decode_frame_header(frame_bytes(vector) + junk)


@pytest.mark.parametrize("vector", VECTORS["invalid_frames"], ids=_ids(VECTORS["invalid_frames"]))
def test_invalid_frame_is_refused_with_its_message(vector: dict[str, Any]) -> None:
    """Each malformed binary message raises ProtocolError with the expected words."""
    with pytest.raises(RemoteProtocolError) as refused:
        decode_frame(frame_bytes(vector))
    assert vector["error"] in str(refused.value)


@pytest.mark.parametrize(
    "vector", VECTORS["invalid_frame_fields"], ids=_ids(VECTORS["invalid_frame_fields"])
)
def test_invalid_frame_fields_are_refused_when_built(vector: dict[str, Any]) -> None:
    """A frame with a bad header value or mismatched image cannot be built or encoded."""
    with pytest.raises(LocalProtocolError) as refused:
        frame_of(vector["fields"])
    assert vector["error"] in str(refused.value)


def test_decode_frame_refuses_what_is_not_bytes() -> None:
    """Text, None or a list of ints is not a frame."""
    for value in ("\x01" * 30, None, [1] * 30):
        with pytest.raises(RemoteProtocolError):
            decode_frame(value)  # type: ignore[arg-type]


def image_of(kind: int, width: int, height: int) -> bytes:
    """A real PNG or JPEG of this size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(
        buffer, "PNG" if kind == protocol.FRAME_PNG else "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", [protocol.FRAME_PNG, protocol.FRAME_JPEG])
def test_an_image_is_its_rectangles_size_or_exactly_half(kind: int) -> None:
    """image_scale: 1 for an image the size of its rectangle, 2 for half of it (odd sizes
    rounded up: each 2x2 block one pixel); larger, smaller, half one way only, or no size
    at all is the peer's error, saying both sizes."""
    def frame(image: bytes, width: int, height: int) -> Frame:
        return Frame(kind, protocol.FLAG_LAST, 1, 3, 10, 20, width, height, image)

    assert protocol.image_scale(frame(image_of(kind, 101, 50), 101, 50)) == 1
    assert protocol.image_scale(frame(image_of(kind, 51, 25), 101, 50)) == 2
    assert protocol.image_scale(frame(image_of(kind, 1, 1), 2, 1)) == 2
    assert protocol.image_size(kind, image_of(kind, 51, 25)) == (51, 25)
    for (w, h), (width, height) in (((102, 50), (101, 50)), ((50, 25), (101, 50)),
                                    ((51, 50), (101, 50)), ((26, 13), (101, 50)),
                                    ((4096, 4096), (64, 64))):
        with pytest.raises(RemoteProtocolError) as refused:
            protocol.image_scale(frame(image_of(kind, w, h), width, height))
        assert f"image is {w}x{h}: its rectangle is {width}x{height}" in str(refused.value)
    magic = image_of(kind, 1, 1)[:8 if kind == protocol.FRAME_PNG else 3]
    with pytest.raises(RemoteProtocolError, match="declares no size"):
        protocol.image_scale(frame(magic + bytes(40), 64, 64))


# --- refusals, endings and close codes -------------------------------------------------

WORDING_VECTORS = VECTORS["wording"]
RELAY = Path(__file__).parent.parent / "relay"


def test_wording_vectors_are_the_wording_table() -> None:
    """vectors.json pins every code's two sentences, in the table's order, and no more."""
    assert [v["code"] for v in WORDING_VECTORS] == list(protocol.WORDING)
    for v in WORDING_VECTORS:
        assert protocol.WORDING[v["code"]] == (v["customer"], v["technician"])


@pytest.mark.parametrize("vector", WORDING_VECTORS, ids=[v["code"] for v in WORDING_VECTORS])
def test_each_code_has_a_plain_sentence_for_each_audience(vector: dict[str, Any]) -> None:
    """Each sentence is a sentence (capital, full stop) that never shows a raw code."""
    codes = {code for code in protocol.WORDING if "-" in code}  # "busy" is also a word
    for audience in ("customer", "technician"):
        text = getattr(protocol, f"{audience}_words")(vector["code"])
        assert text == vector[audience]
        assert text[0].isupper() and text.endswith("."), text
        assert not codes & set(text.rstrip(".").replace(",", " ").split()), text


def test_an_unknown_code_gets_a_generic_sentence() -> None:
    """A code this side does not know (a newer relay) still reads as a plain sentence."""
    unknown = VECTORS["unknown_wording"]
    assert protocol.customer_words(unknown["code"]) == unknown["customer"]
    assert protocol.technician_words(unknown["code"]) == unknown["technician"]
    assert protocol.customer_words(unknown["code"], "Its own sentence.") == "Its own sentence."
    assert protocol.technician_words("busy", "Ignored.") == protocol.WORDING["busy"].technician


def test_every_code_the_relay_sends_or_records_has_wording() -> None:
    """Each refusal and each end reason written in relay/ is in the table: none can reach a
    person as a bare code."""
    source = "\n".join(path.read_text(encoding="utf-8") for path in RELAY.glob("*.py"))
    refusals = set(re.findall(r'refusal\(\s*"([a-z-]+)"', source))
    endings = set(re.findall(r'_end\(\s*session,\s*"[a-z]+",\s*"([a-z-]+)"', source))
    recorded = set(re.findall(r"end_reason = '([a-z-]+)'", source))
    assert refusals and endings and recorded
    assert refusals | endings | recorded <= set(protocol.WORDING)


def test_refusal_carries_the_sentence_for_the_peer_it_is_sent_to() -> None:
    """An agent gets the customer's sentence, a viewer the support person's."""
    assert protocol.refusal("resume-failed", "agent") == Error(
        "resume-failed", protocol.WORDING["resume-failed"].customer)
    assert protocol.refusal("busy", "viewer") == Error(
        "busy", protocol.WORDING["busy"].technician)


def test_refusal_of_an_unknown_code_or_role_is_our_bug() -> None:
    """Building a refusal the table does not know is local misuse, never the peer's fault."""
    with pytest.raises(LocalProtocolError):
        protocol.refusal("made-up-code", "viewer")
    with pytest.raises(LocalProtocolError):
        protocol.refusal("busy", "relay")


@pytest.mark.parametrize("vector", VECTORS["close_codes"], ids=_ids(VECTORS["close_codes"]))
def test_close_code_vector_says_whether_the_session_can_resume(vector: dict[str, Any]) -> None:
    """The one resume rule, for both observers, as vectors.json pins it."""
    assert protocol.can_resume(vector["code"], vector["observer"]) is vector["resumable"]


def test_a_deliberate_close_never_resumes_and_a_keepalive_timeout_always_does() -> None:
    """1000 (the session is over) and 1008 (refused) end it; 1011 (silent link) resumes."""
    for observer in protocol.OBSERVERS:
        assert not protocol.can_resume(protocol.CLOSE_NORMAL, observer)
        assert not protocol.can_resume(protocol.CLOSE_POLICY, observer)
        assert protocol.can_resume(protocol.CLOSE_INTERNAL, observer)
    with pytest.raises(LocalProtocolError):
        protocol.can_resume(1000, "viewer")


def test_building_a_bad_message_is_local_and_decoding_one_is_remote() -> None:
    """Our own bad message raises LocalProtocolError; the same values from a peer raise
    RemoteProtocolError; both are ProtocolError."""
    with pytest.raises(LocalProtocolError):
        protocol.Ack("Fq3kZ8pL2mN7xR4tW9yB1c", -1)
    with pytest.raises(RemoteProtocolError) as refused:
        decode_control('{"type":"ack","session":"Fq3kZ8pL2mN7xR4tW9yB1c","seq":-1}')
    assert not isinstance(refused.value, LocalProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
