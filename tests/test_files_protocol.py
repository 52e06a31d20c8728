"""File transfer on the wire: chunk vectors in protocol.py and viewer/protocol.js, and the
byte window both ends and the relay follow.

The control messages (file_offer ... file_done) are in tests/vectors.json's `control` and
`invalid_control` groups, which tests/test_protocol.py and tests/test_protocol_js.py run in
both languages; the binary chunks are run here. protocol.js has no DOM, so Node runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol as p

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors.json").read_text(encoding="utf-8"))
CHUNKS = VECTORS["file_chunks"]
INVALID = VECTORS["invalid_file_chunks"]


def _data(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["hex"]) + bytes(vector.get("zeros", 0))


@pytest.mark.parametrize("vector", CHUNKS, ids=[v["name"] for v in CHUNKS])
def test_chunk_vector_decodes_and_encodes_exactly(vector: dict[str, Any]) -> None:
    """A chunk vector decodes to its fields and they encode to the same bytes."""
    chunk = p.decode_file_chunk(_data(vector))
    fields = vector["fields"]
    assert (chunk.transfer, chunk.offset, chunk.data.hex()) == (
        fields["transfer"], fields["offset"], fields["data"])
    assert p.encode_file_chunk(chunk) == _data(vector)
    assert p.is_file_chunk(_data(vector))


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_chunk_is_refused_with_its_message(vector: dict[str, Any]) -> None:
    """Each malformed chunk raises RemoteProtocolError with the expected words."""
    with pytest.raises(p.RemoteProtocolError) as refused:
        p.decode_file_chunk(_data(vector))
    assert vector["error"] in str(refused.value)


def test_chunks_and_frames_are_told_apart_by_their_first_byte() -> None:
    """No frame kind is FILE_CHUNK, and a frame vector is never taken for a chunk."""
    assert p.FILE_CHUNK not in p.FRAME_KINDS
    for vector in VECTORS["frames"]:
        assert not p.is_file_chunk(bytes.fromhex(vector["hex"]))
    with pytest.raises(p.RemoteProtocolError):
        p.decode_frame_header(_data(CHUNKS[0]))


def test_a_chunk_message_fits_a_viewer_link() -> None:
    """A full chunk is within the viewer's message limit (the relay's max_size for viewers)."""
    assert p.FILE_CHUNK_HEADER.size + p.FILE_CHUNK_BYTES <= p.MAX_CONTROL_BYTES


@given(st.lists(st.integers(1, p.FILE_CHUNK_BYTES), max_size=40), st.integers(0, 2**22))
def test_window_never_lets_more_than_its_limit_be_unacknowledged(
        lengths: list[int], size: int) -> None:
    """Whatever the sender tries, sent - acked stays within the window and sent within size."""
    window = p.FileWindow(size)
    for i, length in enumerate(lengths):
        if window.admit(window.sent, length):
            assert window.sent - window.acked <= p.FILE_WINDOW_BYTES
            assert window.sent <= size
        if i % 3 == 2:
            assert window.ack(window.sent)


def test_window_refuses_out_of_order_and_impossible_acks() -> None:
    """A chunk must start where the last ended; an ack cannot go back or run ahead."""
    window = p.FileWindow(100_000)
    assert not window.admit(10, 10)
    assert window.admit(0, 10)
    assert not window.ack(11)
    assert window.ack(10)
    assert not window.ack(5)


NODE_RUN = r"""
import * as p from %s;
const vectors = JSON.parse(await (await import("node:fs/promises")).readFile(%s, "utf8"));
const bytes = (v) => {
  const out = new Uint8Array(v.hex.length / 2 + (v.zeros ?? 0));
  for (let i = 0; i < v.hex.length / 2; i += 1) out[i] = parseInt(v.hex.substr(i * 2, 2), 16);
  return out;
};
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const attempt = (f) => {
  try { return { ok: f() }; } catch (e) {
    return { error: e instanceof p.RemoteProtocolError ? e.message : `NOT REMOTE: ${e}` };
  }
};
const out = {
  chunks: vectors.file_chunks.map((v) => attempt(() => {
    const c = p.decodeFileChunk(bytes(v));
    return { transfer: c.transfer, offset: c.offset, data: hex(c.data),
             again: hex(p.encodeFileChunk(c)), is_chunk: p.isFileChunk(bytes(v)) };
  })),
  invalid: vectors.invalid_file_chunks.map((v) => attempt(() => p.decodeFileChunk(bytes(v)))),
  constants: { FILE_CHUNK: p.FILE_CHUNK, FILE_CHUNK_HEADER_BYTES: p.FILE_CHUNK_HEADER_BYTES,
               FILE_CHUNK_BYTES: p.FILE_CHUNK_BYTES, FILE_WINDOW_BYTES: p.FILE_WINDOW_BYTES,
               FILE_ACK_BYTES: p.FILE_ACK_BYTES, MAX_FILE_NAME_CHARS: p.MAX_FILE_NAME_CHARS,
               MAX_FILE_SIZE_BYTES: p.MAX_FILE_SIZE_BYTES,
               MAX_TRANSFERS_PER_SESSION: p.MAX_TRANSFERS_PER_SESSION,
               FILE_CANCEL_REASONS: p.FILE_CANCEL_REASONS, FILE_TYPES: p.FILE_TYPES },
};
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def js() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run viewer/protocol.js outside a browser")
    script = NODE_RUN % (json.dumps(str(ROOT / "viewer" / "protocol.js")),
                         json.dumps(str(ROOT / "tests" / "vectors.json")))
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_js_decodes_and_encodes_chunk_vectors_like_python(js: dict[str, Any]) -> None:
    """protocol.js reads every chunk vector to the same fields and writes the same bytes."""
    for vector, result in zip(CHUNKS, js["chunks"], strict=True):
        fields = vector["fields"]
        assert result["ok"] == {**fields, "again": vector["hex"], "is_chunk": True}


def test_js_refuses_invalid_chunks_with_python_messages(js: dict[str, Any]) -> None:
    """protocol.js refuses each malformed chunk as a RemoteProtocolError with the same words."""
    for vector, result in zip(INVALID, js["invalid"], strict=True):
        assert vector["error"] in result.get("error", ""), vector["name"]


def test_js_file_constants_equal_protocol_py(js: dict[str, Any]) -> None:
    """The file limits and codes in protocol.js are protocol.py's."""
    constants = js["constants"]
    assert constants.pop("FILE_CHUNK_HEADER_BYTES") == p.FILE_CHUNK_HEADER.size
    assert constants.pop("FILE_TYPES") == [cls.TYPE for cls in p.FILE_TYPES]
    for name, value in constants.items():
        expected = getattr(p, name)
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name
