"""The relay's plain HTTP answers: the customer's page, the console's files, the downloads.

    /                      the customer's page (relay/download.py), rendered per request
    /customer.css, /favicon.svg   its stylesheet and icon
    /download/<name>       the files of --downloads, listed per request (a new exe is
                           offered without a restart) and read in chunks
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
import re
from dataclasses import dataclass
from pathlib import Path

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
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class StaticFile:
    path: Path
    content_type: str
    attachment: bool = False


def _listed(folder: Path | None) -> list[Path]:
    """The folder's regular files with safe names (no symlinks, no dot files: an admin can
    copy a new exe in under a dot name and rename it once complete)."""
    if folder is None or not folder.is_dir():
        return []
    return [entry for entry in sorted(folder.iterdir())
            if _SAFE_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink()]


def viewer_files(folder: Path) -> dict[str, StaticFile]:
    """File name -> file, from the folder's listing now; nothing built from a URL later."""
    return {entry.name: StaticFile(entry, CONTENT_TYPES[entry.suffix])
            for entry in _listed(folder) if entry.suffix in CONTENT_TYPES}


def download_files(folder: Path | None) -> dict[str, StaticFile]:
    """URL -> file for each program in --downloads, as the folder is now."""
    return {DOWNLOAD_PREFIX + entry.name: StaticFile(entry, "application/octet-stream",
                                                     attachment=True)
            for entry in _listed(folder)}


def response(status: int, body: bytes, content_type: str,
             extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        *extra,
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def plain(status: int, text: str) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8")


def redirect(location: str) -> Response:
    """301 to ``location``, which is always one of our own fixed paths, never the URL's."""
    return response(301, f"Moved to {location}\n".encode(), "text/plain; charset=utf-8",
                    (("Location", location),))


class StaticSite:
    """Everything the relay serves over plain HTTP."""

    def __init__(self, viewer_dir: Path, downloads: Path | None, company: str,
                 phones: tuple[str, ...] = (), customer_dir: Path = CUSTOMER_DIR) -> None:
        self.downloads = downloads
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

    async def answer(self, path: str) -> Response:
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
        if found is None:
            return plain(404, "Not found\n")
        try:
            body = await asyncio.to_thread(found.path.read_bytes)
        except OSError:
            return plain(404, "Not found\n")
        extra: tuple[tuple[str, str], ...] = ()
        if found.attachment:
            extra = (("Content-Disposition", f'attachment; filename="{found.path.name}"'),)
        return response(200, body, found.content_type, extra)

    def _customer_page(self) -> bytes:
        programs = []
        for url, found in download_files(self.downloads).items():
            try:
                programs.append(Program(url, found.path.name, found.path.stat().st_size))
            except OSError:  # removed since the listing
                continue
        return render_customer_page(self.company, self.phones, programs)
