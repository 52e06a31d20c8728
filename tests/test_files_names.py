"""agent_files without a network or a window: the names files are saved under (fuzzed), and
one incoming file written, checked and named in a real temporary folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agent_files as af
import protocol as p

SESSION = "Fq3kZ8pL2mN7xR4tW9yB1c"
WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


def safe(name: str) -> bool:
    """What every saved name must be, on Windows and Linux alike."""
    stem = name.split(".")[0].rstrip(" ").upper()
    return (0 < len(name) <= af.MAX_SAVED_NAME_CHARS
            and not WINDOWS_FORBIDDEN & set(name)
            and all(c.isprintable() for c in name)
            and name == name.strip(" .")
            and stem not in af.RESERVED_NAMES
            and name not in (".", ".."))


@given(st.text(max_size=400))
def test_any_offered_name_becomes_a_safe_name(name: str) -> None:
    """Whatever the sender names a file, the cleaned name is non-empty, short, printable, has
    no separator or reserved device name, and cleaning it again changes nothing."""
    cleaned = af.clean_name(name)
    assert safe(cleaned), repr(cleaned)
    assert af.clean_name(cleaned) == cleaned


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300), st.integers(1, 30))
def test_unique_names_stay_safe_and_new(name: str, taken_count: int) -> None:
    """With the cleaned name and its first numbered versions taken, the next one is free
    and still safe."""
    base = af.clean_name(name)
    taken = {base}
    for _ in range(taken_count):
        taken.add(af.unique_name(base, taken.__contains__))
    chosen = af.unique_name(base, taken.__contains__)
    assert chosen not in taken and safe(chosen), repr(chosen)


@pytest.mark.parametrize(("offered", "saved"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("..\\..\\Windows\\win.ini", "_.._Windows_win.ini"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("COM1.tar.gz", "_COM1.tar.gz"),
    ("bell\x07and\nnewline.txt", "bellandnewline.txt"),
    ("  .hidden  ", "hidden"),
    ("...", "file"),
    ("a" * 300 + ".docx", "a" * 115 + ".docx"),
    ("what?<is>|this*.txt", "what__is__this_.txt"),
])
def test_examples_of_cleaned_names(offered: str, saved: str) -> None:
    """Separators, reserved names, control characters and length, each cleaned as shown."""
    assert af.clean_name(offered) == saved


def test_a_taken_name_gets_a_number_before_its_extension() -> None:
    """report.pdf, report (2).pdf, report (3).pdf: never over an existing file."""
    taken = {"report.pdf", "report (2).pdf"}
    assert af.unique_name("report.pdf", taken.__contains__) == "report (3).pdf"
    assert af.unique_name("README", {"README"}.__contains__) == "README (2)"


def test_sizes_are_said_in_words() -> None:
    """The dialog says sizes as Explorer does."""
    assert [af.size_text(n) for n in (1, 980, 12_400, 3_100_000, 1_200_000_000)] == [
        "1 byte", "980 bytes", "12.4 KB", "3.1 MB", "1.2 GB"]


def test_downloads_folder_comes_from_the_environment_and_is_created(tmp_path: Path) -> None:
    """SPOTLIGHT_DOWNLOADS points the agent elsewhere (tests); the folder is made if missing."""
    folder = tmp_path / "not" / "there"
    assert af.downloads_folder({af.DOWNLOADS_ENV: str(folder)}) == folder
    assert folder.is_dir()


def incoming(data: bytes, folder: Path, name: str = "notes.txt",
             sha256: str | None = None) -> af.Incoming:
    return af.Incoming(p.FileOffer(SESSION, 3, name, len(data),
                                   sha256 or hashlib.sha256(data).hexdigest()), folder)


def feed(file: af.Incoming, data: bytes) -> list[p.Message]:
    out: list[p.Message] = []
    for offset in range(0, len(data), p.FILE_CHUNK_BYTES):
        out += file.chunk(p.FileChunk(3, offset, data[offset:offset + p.FILE_CHUNK_BYTES]))
    return out


def test_an_accepted_file_is_acked_checked_and_named(tmp_path: Path) -> None:
    """Acks every FILE_ACK_BYTES and at the end, then file_done with the name it got; only
    the file is left in the folder."""
    data = bytes(range(256)) * 1000
    file = incoming(data, tmp_path, "../notes.txt")
    assert file.accept() == [p.FileAnswer(SESSION, 3, True)]
    out = feed(file, data)
    acks = [m.received for m in out if isinstance(m, p.FileAck)]
    assert acks == [65536, 131072, 196608, 256000]
    assert out[-1] == p.FileDone(SESSION, 3, "_notes.txt")
    assert [f.name for f in tmp_path.iterdir()] == ["_notes.txt"]
    assert (tmp_path / "_notes.txt").read_bytes() == data


def test_a_file_whose_sha256_differs_is_not_kept(tmp_path: Path) -> None:
    """Damaged on the way: file_cancel "file-corrupt" and nothing left in the folder."""
    file = incoming(b"abc", tmp_path, sha256="0" * 64)
    file.accept()
    assert feed(file, b"abc")[-1] == p.FileCancel(SESSION, 3, "file-corrupt")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_saved_at_once(tmp_path: Path) -> None:
    """A 0-byte file needs no chunk: accepting it saves it."""
    file = incoming(b"", tmp_path, "empty.txt")
    assert file.accept()[-1] == p.FileDone(SESSION, 3, "empty.txt")
    assert (tmp_path / "empty.txt").read_bytes() == b""


def test_cancelling_leaves_no_partial_file(tmp_path: Path) -> None:
    """The customer cancels half-way: the sender is told and the partial file is gone."""
    file = incoming(bytes(100_000), tmp_path)
    file.accept()
    file.chunk(p.FileChunk(3, 0, bytes(1000)))
    assert file.cancel() == [p.FileCancel(SESSION, 3, "file-cancelled")]
    assert list(tmp_path.iterdir()) == []


def test_chunks_out_of_order_are_the_peers_error(tmp_path: Path) -> None:
    """A chunk that skips bytes or runs past the size is refused, not written."""
    file = incoming(bytes(10), tmp_path)
    file.accept()
    with pytest.raises(p.RemoteProtocolError):
        file.chunk(p.FileChunk(3, 5, bytes(5)))
    with pytest.raises(p.RemoteProtocolError):
        file.chunk(p.FileChunk(3, 0, bytes(11)))
