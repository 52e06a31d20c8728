"""The relay's plain HTTP answers: the viewer's files, /download and its files, /healthz.

Served from an allow-list built once at start-up from the folders' listings: a URL is only
ever looked up in that list, never turned into a path. Every answer closes its connection
(the relay is a websocket server first) and carries the security headers the server adds.
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

from relay.download import render_download_page

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
}
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
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class StaticFile:
    path: Path
    content_type: str
    attachment: bool = False


def viewer_files(folder: Path) -> dict[str, StaticFile]:
    """URL path -> file, from the folder's listing now; nothing built from a URL later."""
    files: dict[str, StaticFile] = {}
    if not folder.is_dir():
        return files
    for entry in sorted(folder.iterdir()):
        content_type = CONTENT_TYPES.get(entry.suffix)
        if (content_type and _SAFE_NAME.fullmatch(entry.name) and entry.is_file()
                and not entry.is_symlink()):
            files["/" + entry.name] = StaticFile(entry, content_type)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def download_files(folder: Path | None) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    if folder is None or not folder.is_dir():
        return files
    for entry in sorted(folder.iterdir()):
        if _SAFE_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            files["/download/" + entry.name] = StaticFile(
                entry, "application/octet-stream", attachment=True)
    return files


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


class StaticSite:
    """Everything the relay serves over plain HTTP, fixed at start-up."""

    def __init__(self, viewer_dir: Path, downloads: Path | None, company: str) -> None:
        offered = download_files(downloads)
        self.files = {**viewer_files(viewer_dir), **offered}
        self.download_page = render_download_page(
            company, {url: f.path.name for url, f in offered.items()})

    async def answer(self, path: str) -> Response:
        """The answer to GET ``path`` (without its query string)."""
        if path == "/healthz":
            return plain(200, "ok\n")
        if path == "/download":
            return response(200, self.download_page, "text/html; charset=utf-8")
        found = self.files.get(path)
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
