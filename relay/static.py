"""The relay's plain HTTP answers: the customer's page, the console's files, the downloads.

    /                      the customer's page (relay/download.py), rendered per request
    /customer.css, /favicon.svg   its stylesheet and icon
    /download/<name>       the files of --downloads, listed per request (a new exe is
                           offered without a restart) and streamed (class Download)
    /console/, /console/<name>    the support staff's console: the files of viewer/
    /healthz               200 "ok"
    redirects (301)        /console -> /console/; /download, /download/ -> /; a console
                           file's old path /<name> (and /index.html) -> /console/<name>

Only ever looked up in allow-lists built from the folders' listings (the console's at
start-up, the downloads' per request): a URL is never turned into a path. Every answer
closes its connection (the relay is a websocket server first) and carries the security
headers the server adds.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from websockets.datastructures import Headers
from websockets.http11 import Response

from relay.download import CONSOLE_URL, Program, render_customer_page

CUSTOMER_DIR = Path(__file__).resolve().parent.parent / "customer"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
}
HTML = CONTENT_TYPES[".html"]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)
DOWNLOAD_PREFIX = "/download/"
CHUNK_BYTES = 64 * 1024  # what a download holds in memory, about (plus the transport's buffer)
STALL_S = 60.0  # a download whose client reads nothing for this long is cut
MAX_DOWNLOADS = 256  # streamed at once; more get 503 (each holds a socket and a file)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class StaticFile:
    path: Path
    content_type: str


def _listed(folder: Path | None) -> list[Path]:
    """The folder's regular files with safe names (no symlinks, no dot files: an admin can
    copy a new exe in under a dot name and rename it once complete)."""
    if folder is None:
        return []
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # gone or unreadable now: nothing offered, not an error page
        return []
    return [entry for entry in entries
            if _SAFE_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink()]


def viewer_files(folder: Path) -> dict[str, StaticFile]:
    """File name -> file, from the folder's listing now; nothing built from a URL later."""
    return {entry.name: StaticFile(entry, CONTENT_TYPES[entry.suffix])
            for entry in _listed(folder) if entry.suffix in CONTENT_TYPES}


def download_files(folder: Path | None) -> dict[str, StaticFile]:
    """URL -> file for each program in --downloads, as the folder is now."""
    return {DOWNLOAD_PREFIX + entry.name: StaticFile(entry, "application/octet-stream")
            for entry in _listed(folder)}


def _headers(length: int, content_type: str, extra: tuple[tuple[str, str], ...]) -> Headers:
    return Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(length)),
        ("Content-Type", content_type),
        *extra,
    ])


def response(status: int, body: bytes, content_type: str,
             extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = _headers(len(body), content_type, extra)
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def plain(status: int, text: str) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8")


def redirect(location: str) -> Response:
    """301 to ``location``, which is always one of our own fixed paths, never the URL's."""
    return response(301, f"Moved to {location}\n".encode(), "text/plain; charset=utf-8",
                    (("Location", location),))


class _Writable(asyncio.Protocol):
    """The socket's side of a download: flow control and loss, nothing read."""

    def __init__(self) -> None:
        self.gone = False
        self._ready = asyncio.Event()
        self._ready.set()

    def pause_writing(self) -> None:
        self._ready.clear()

    def resume_writing(self) -> None:
        self._ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._ready.set()

    def data_received(self, data: bytes) -> None:
        pass  # a download's client has nothing more to say

    def eof_received(self) -> bool:
        return True  # a client that half-closes still gets the rest of the file

    async def writable(self) -> None:
        await asyncio.wait_for(self._ready.wait(), STALL_S)


class Download:
    """A file of --downloads, opened, to be streamed: a 20 MB exe is never held in memory,
    and a slow customer's download is not bound by the websocket handshake's timeout."""

    def __init__(self, file: BinaryIO, name: str, size: int) -> None:
        self.file, self.name, self.size = file, name, size

    def head(self, extra: tuple[tuple[str, str], ...]) -> bytes:
        headers = _headers(self.size, "application/octet-stream", (
            ("Content-Disposition", f'attachment; filename="{self.name}"'), *extra))
        return b"HTTP/1.1 200 OK\r\n" + headers.serialize()

    async def send(self, transport: asyncio.Transport, head: bytes) -> None:
        """Write the head and the file on ``transport``, ours alone now, then close it."""
        writable = _Writable()
        transport.set_protocol(writable)
        left = self.size
        try:
            transport.write(head)
            while left > 0 and not writable.gone:
                await writable.writable()
                chunk = await asyncio.to_thread(self.file.read, min(CHUNK_BYTES, left))
                if not chunk:
                    break  # the file shrank since: the client must not take it as whole
                transport.write(chunk)
                left -= len(chunk)
        except (TimeoutError, OSError):
            pass  # a stalled client or an unreadable file: cut below
        finally:  # also when the relay stops (cancelled)
            self.file.close()
            if left:
                transport.abort()  # cut: a short file is never taken for the whole one
            else:
                transport.close()  # after what is buffered has been sent


class StaticSite:
    """Everything the relay serves over plain HTTP."""

    def __init__(self, viewer_dir: Path, downloads: Path | None, company: str,
                 phones: tuple[str, ...] = (), customer_dir: Path = CUSTOMER_DIR) -> None:
        self.downloads = downloads
        self.streaming: set[asyncio.Task] = set()
        self.company, self.phones = company, phones
        console = viewer_files(viewer_dir)
        self.files = {CONSOLE_URL + name: found for name, found in console.items()}
        if "index.html" in console:
            self.files[CONSOLE_URL] = console["index.html"]
        # The console's old paths, from before it moved under /console/.
        self.moved = {"/" + name: CONSOLE_URL + name for name in console}
        customer = viewer_files(customer_dir)
        if "customer.css" in customer:
            self.files["/customer.css"] = customer["customer.css"]
        if "favicon.svg" in console:  # the one icon, for both pages
            self.files["/favicon.svg"] = console["favicon.svg"]
        self.moved.update({"/console": CONSOLE_URL, "/download": "/",
                           DOWNLOAD_PREFIX: "/"})
        for path in self.files:
            self.moved.pop(path, None)

    async def answer(self, path: str) -> Response | Download:
        """The answer to GET ``path`` (without its query string)."""
        if path == "/healthz":
            return plain(200, "ok\n")
        if path == "/":
            return response(200, await asyncio.to_thread(self._customer_page), HTML)
        if path in self.moved:
            return redirect(self.moved[path])
        found = self.files.get(path)
        if found is None and path.startswith(DOWNLOAD_PREFIX):
            found = (await asyncio.to_thread(download_files, self.downloads)).get(path)
            if found is not None:
                return await self._download(found.path)
        if found is None:
            return plain(404, "Not found\n")
        try:
            body = await asyncio.to_thread(found.path.read_bytes)
        except OSError:
            return plain(404, "Not found\n")
        return response(200, body, found.content_type)

    async def _download(self, path: Path) -> Response | Download:
        if len(self.streaming) >= MAX_DOWNLOADS:
            return response(503, b"Too many downloads at once; try again in a minute\n",
                            "text/plain; charset=utf-8", (("Retry-After", "30"),))
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except OSError:
            return plain(404, "Not found\n")
        # The size of what was opened: a file replaced meanwhile is sent whole, old or new.
        return Download(file, path.name, os.fstat(file.fileno()).st_size)

    def stream(self, download: Download, transport: asyncio.Transport, head: bytes) -> None:
        task = asyncio.create_task(download.send(transport, head))
        self.streaming.add(task)
        task.add_done_callback(self.streaming.discard)

    def _customer_page(self) -> bytes:
        programs = []
        for url, found in download_files(self.downloads).items():
            try:
                programs.append(Program(url, found.path.name, found.path.stat().st_size))
            except OSError:  # removed since the listing
                continue
        return render_customer_page(self.company, self.phones, programs)
