"""Files between the customer and the support person, seen from the agent: safe names, the
Downloads folder, one incoming file's state (``Incoming``) and one outgoing file
(``Outgoing``), in protocol.py's file_offer ... file_done.

No asyncio, no windows: ``clean_name`` and ``unique_name`` are pure; ``Incoming`` writes
the bytes to a temporary file in the folder it is given, checks the SHA-256 the sender
announced, and only then gives the file its name, never over an existing file and never
outside that folder. Its methods answer with the protocol messages to send back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

import protocol as p

DOWNLOADS_ENV = "SPOTLIGHT_DOWNLOADS"  # a folder instead of the customer's Downloads (tests)
MAX_SAVED_NAME_CHARS = 120  # Windows' MAX_PATH leaves room for the folder
MAX_EXTENSION_CHARS = 16  # ".tar.gz"-like suffixes longer than this are not an extension
FALLBACK_NAME = "file"
TEMP_PREFIX = ".spotlight-"  # hidden on Linux; deleted on every way out
# Windows refuses these as names whatever the extension ("CON.txt" is the console too).
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"123456789", "\u00b9", "\u00b2",
                                                          "\u00b3")})
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')  # Windows' forbidden characters, both separators


def clean_name(name: str) -> str:
    """A name that is safe as one file in one folder on Windows and Linux: no separators or
    characters Windows forbids (each becomes "_"), no control characters, no leading or
    trailing dots and spaces, no reserved device name, at most MAX_SAVED_NAME_CHARS with
    its extension kept. Never empty: whatever was offered is saved under some name."""
    # Control and format characters go; other unprintable ones (odd spaces, line and
    # paragraph separators) become plain spaces.
    text = "".join("" if unicodedata.category(c).startswith("C") else c if c.isprintable()
                   else " " for c in name)
    text = _FORBIDDEN.sub("_", text).strip(" .")
    stem, dot, extension = text.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION_CHARS or " " in extension:
        stem, extension = text, ""
    if stem.split(".")[0].rstrip(" ").upper() in RESERVED_NAMES:
        stem = "_" + stem
    suffix = f".{extension}" if extension else ""
    stem = stem[: MAX_SAVED_NAME_CHARS - len(suffix)]
    if not suffix:  # the end of the whole name: Windows drops trailing dots and spaces
        stem = stem.rstrip(" .")
    return (stem or FALLBACK_NAME) + suffix


def unique_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or "name (2).ext", "name (3).ext"... the first that is not ``taken``."""
    if not taken(name):
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    n = 2
    while True:
        tag = f" ({n})"
        candidate = stem[: MAX_SAVED_NAME_CHARS - len(suffix) - len(tag)] + tag + suffix
        if not taken(candidate):
            return candidate
        n += 1


def size_text(size: int) -> str:
    """1 byte, 980 bytes, 12.4 KB, 3.1 MB, 1.2 GB (decimal units, as Explorer's dialogs)."""
    if size < 1000:
        return "1 byte" if size == 1 else f"{size} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1000
        if size < 999.95 or unit == "TB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def downloads_folder(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """Where received files go: $SPOTLIGHT_DOWNLOADS if set, else the customer's Downloads
    (Windows: the known folder, wherever the customer moved it; elsewhere ~/Downloads),
    created if missing."""
    chosen = environ.get(DOWNLOADS_ENV, "")
    folder = Path(chosen) if chosen else (
        _windows_downloads() if sys.platform == "win32" else Path.home() / "Downloads")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _windows_downloads() -> Path:
    import ctypes
    from ctypes import wintypes

    class GUID(ctypes.Structure):
        _fields_ = [("Data1", wintypes.DWORD), ("Data2", wintypes.WORD),
                    ("Data3", wintypes.WORD), ("Data4", ctypes.c_ubyte * 8)]

    # FOLDERID_Downloads {374DE290-123F-4565-9164-39C4925E467B}
    folder_id = GUID(0x374DE290, 0x123F, 0x4565,
                     (ctypes.c_ubyte * 8)(0x91, 0x64, 0x39, 0xC4, 0x92, 0x5E, 0x46, 0x7B))
    path = ctypes.c_wchar_p()
    shell32, ole32 = ctypes.WinDLL("shell32"), ctypes.WinDLL("ole32")
    if shell32.SHGetKnownFolderPath(ctypes.byref(folder_id), 0, None, ctypes.byref(path)):
        return Path.home() / "Downloads"  # (an HRESULT other than S_OK)
    try:
        return Path(path.value)
    finally:
        ole32.CoTaskMemFree(path)


class Incoming:
    """One file on its way in: accepted into a temporary file in ``folder``, kept under a
    cleaned, unused name once every byte is there and the SHA-256 matches."""

    def __init__(self, offer: p.FileOffer, folder: Path) -> None:
        self.offer, self.folder = offer, folder
        self.received = 0
        self.acked = 0
        self.saved_as = ""
        self._hash = hashlib.sha256()
        self._file: tempfile._TemporaryFileWrapper | None = None

    @property
    def name(self) -> str:
        """The name it will be saved under, as far as it is known yet."""
        return self.saved_as or clean_name(self.offer.name)

    def accept(self) -> list[p.Message]:
        """The customer said yes: open the temporary file and tell the sender."""
        try:
            self._file = tempfile.NamedTemporaryFile(
                dir=self.folder, prefix=TEMP_PREFIX, suffix=".part", delete=False)
        except OSError:
            return [self._cancel("file-failed")]
        answer: list[p.Message] = [p.FileAnswer(self.offer.session, self.offer.transfer, True)]
        if self.offer.size == 0:
            return answer + self._finish()
        return answer

    def decline(self) -> list[p.Message]:
        return [p.FileAnswer(self.offer.session, self.offer.transfer, False)]

    def chunk(self, chunk: p.FileChunk) -> list[p.Message]:
        """Bytes in order: written and hashed; an ack every FILE_ACK_BYTES, and at the end
        the check and the name (file_done) or the refusal (file_cancel)."""
        if self._file is None or chunk.offset != self.received or (
                self.received + len(chunk.data) > self.offer.size):
            raise p.RemoteProtocolError("a file chunk out of order or beyond the file")
        try:
            self._file.write(chunk.data)
        except OSError:
            return [self._cancel("file-failed")]
        self._hash.update(chunk.data)
        self.received += len(chunk.data)
        out: list[p.Message] = []
        if self.received - self.acked >= p.FILE_ACK_BYTES or self.received == self.offer.size:
            self.acked = self.received
            out.append(p.FileAck(self.offer.session, self.offer.transfer, self.received))
        if self.received == self.offer.size:
            out += self._finish()
        return out

    def _finish(self) -> list[p.Message]:
        assert self._file is not None
        temp = Path(self._file.name)
        try:
            self._file.close()
        except OSError:
            return [self._cancel("file-failed")]
        self._file = None
        if self._hash.hexdigest() != self.offer.sha256:
            temp.unlink(missing_ok=True)
            return [self._cancel("file-corrupt", delete=False)]
        try:
            self.saved_as = _move_without_overwriting(temp, self.folder, clean_name(
                self.offer.name))
        except OSError:
            temp.unlink(missing_ok=True)
            return [self._cancel("file-failed", delete=False)]
        return [p.FileDone(self.offer.session, self.offer.transfer, self.saved_as)]

    def cancel(self, reason: str = "file-cancelled") -> list[p.Message]:
        """The customer cancelled: the partial file goes, the sender is told."""
        return [self._cancel(reason)]

    def discard(self) -> None:
        """The sender cancelled or the link dropped: only the partial file goes."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None

    def _cancel(self, reason: str, delete: bool = True) -> p.FileCancel:
        if delete:
            self.discard()
        return p.FileCancel(self.offer.session, self.offer.transfer, reason)


def _move_without_overwriting(temp: Path, folder: Path, name: str) -> str:
    """Give the temporary file ``name`` (or "name (2)"...) in ``folder``; the name taken."""
    while True:
        chosen = unique_name(name, lambda n: (folder / n).exists())
        target = folder / chosen
        # clean_name leaves no separator, so the target is in the folder; check anyway.
        if target.parent.resolve() != folder.resolve():
            raise OSError("a cleaned name left the folder")
        try:
            if sys.platform == "win32":
                os.rename(temp, target)  # Windows' rename never replaces a file
            else:
                os.link(temp, target)  # fails if the name was taken meanwhile
                temp.unlink()
        except FileExistsError:
            continue  # someone took it between the check and the move: the next one
        return chosen


# --- files the customer sends -----------------------------------------------------------


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (read in blocks: a file may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


class Outgoing:
    """One file the customer sends: offered with its SHA-256, then read chunk by chunk only
    as far as the receiver's acknowledgements allow (protocol.FileWindow)."""

    def __init__(self, path: Path, offer: p.FileOffer) -> None:
        self.path, self.offer = path, offer
        self.window = p.FileWindow(offer.size)
        self.accepted = False
        self._file = open(path, "rb")

    @classmethod
    def prepare(cls, path: Path, session: str, transfer: int) -> Outgoing:
        """Size and SHA-256 of ``path`` (blocking: run it in a thread); OSError if unreadable."""
        size = path.stat().st_size
        offer = p.FileOffer(session, transfer, path.name[: p.MAX_FILE_NAME_CHARS] or "file",
                            size, sha256_of(path))
        return cls(path, offer)

    def next_chunk(self) -> bytes | None:
        """The next chunk's message, if the window has room; OSError if the file shrank."""
        length = min(p.FILE_CHUNK_BYTES, self.window.room())
        if not self.accepted or length == 0:
            return None
        offset = self.window.sent
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise OSError("the file changed while it was being sent")
        self.window.admit(offset, length)
        return p.encode_file_chunk(p.FileChunk(self.offer.transfer, offset, data))

    def close(self) -> None:
        self._file.close()
