"""The relay's network side: one asyncio websockets server for agents, viewers and files.

The only relay module doing network I/O. Each connection is a short loop around
relay.pairing (the session rules): read a message, validate it with protocol.py, hand it to
the rules, and let a per-connection ``Link`` write what the rules send, in order.

    /ws/agent    agents (no browser Origin accepted)
    /ws/viewer   viewers (Origin must be this relay's own origin or an --origin value)
    /healthz     200 "ok"
    /download    the customer's page (relay/download.py) linking to --downloads DIR
    /, /<name>   the viewer's files, from an allow-list built at start-up

Flow: frames to a viewer are queued up to MAX_PENDING_FRAME_BYTES; beyond that the unsent
frames are dropped and, once the viewer has drained, the agent is asked for a full image
(`refresh`), so a viewer that never reads neither stalls the agent nor grows memory.
Control messages and input are never dropped: a peer that lets them pile up beyond
MAX_PENDING_CONTROL_BYTES is closed (an agent's session then ends with "agent-stalled").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import http
import ipaddress
import logging
import math
import re
import signal
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import protocol
from relay.accounts import DB_FILE, TOO_MANY_ATTEMPTS, Accounts
from relay.download import DEFAULT_COMPANY, render_download_page
from relay.ledger import Ledger
from relay.login_limits import retry_words
from relay.pairing import DEFAULT_GRACE_S, DEFAULT_WAIT_TIMEOUT_S, Pairing

log = logging.getLogger("relay")

VIEWER_DIR = Path(__file__).resolve().parent.parent / "viewer"
AGENT_PATH = "/ws/agent"
VIEWER_PATH = "/ws/viewer"
HANDSHAKE_TIMEOUT_S = 10.0  # TCP accepted -> websocket upgrade done (slow-loris bound)
HELLO_TIMEOUT_S = 10.0  # upgrade done -> hello received
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0  # no pong by then: the network went silent, a resumable cut
CLOSE_TIMEOUT_S = 5.0
TICK_S = 1.0
HEARTBEAT_S = 5.0
MAX_PENDING_FRAME_BYTES = 2 * protocol.MAX_FRAME_BYTES
# The kernel may hold only this much unsent data for a viewer (TCP's NOTSENT_LOWAT; about
# 100 ms of a 2 Mbit/s link): the rest waits in the Link, and its acknowledgements, which the
# agent paces by, follow the viewer's own link instead of a socket buffer seconds deep.
VIEWER_UNSENT_BYTES = 24 * 1024
MAX_PENDING_CONTROL_BYTES = 512 * 1024
MAX_PENDING_MESSAGES = 4096
SHUTDOWN_DRAIN_S = 2.0

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

LOGIN_FAILED = protocol.refusal("login-failed", "viewer")
LOGIN_EXPIRED = protocol.refusal("login-expired", "viewer")


def _seconds(value: str, *, zero: bool) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a {'non-negative' if zero else 'positive'} number of seconds")
    return seconds


def positive_seconds(value: str) -> float:
    return _seconds(value, zero=False)


def non_negative_seconds(value: str) -> float:
    return _seconds(value, zero=True)


def ip_address(value: str) -> str:
    address = _ip(value)
    if address is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address")
    return str(address)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="TLS certificate chain (PEM): serve wss:// and https://")
    parser.add_argument("--key", type=Path, metavar="FILE", help="TLS private key (PEM)")
    parser.add_argument("--origin", action="append", default=[], metavar="URL",
                        help="another origin allowed to open the viewer's websocket, e.g. "
                             "https://support.example.com (repeatable)")
    parser.add_argument("--trusted-proxy", action="append", default=[], type=ip_address,
                        metavar="ADDR",
                        help="a reverse proxy's address: connections from it are taken to "
                             "come from the last X-Forwarded-For address (repeatable)")
    parser.add_argument("--downloads", type=Path, metavar="DIR",
                        help="folder whose files /download offers (e.g. the agent's exe)")
    parser.add_argument("--company", default=DEFAULT_COMPANY, metavar="NAME",
                        help="the company's name on the customer's download page")
    parser.add_argument("--viewer-dir", type=Path, default=VIEWER_DIR, metavar="DIR",
                        help=argparse.SUPPRESS)
    parser.add_argument("--wait-timeout", type=positive_seconds, default=DEFAULT_WAIT_TIMEOUT_S,
                        metavar="SECONDS", help="how long a session waits to be accepted")
    parser.add_argument("--grace", type=non_negative_seconds, default=DEFAULT_GRACE_S,
                        metavar="SECONDS",
                        help="how long a session survives a lost viewer or agent link")
    # Tuning for tests (a network cut detected in a second, stalled handshakes dropped fast).
    parser.add_argument("--ping-interval", type=float, default=PING_INTERVAL_S,
                        help=argparse.SUPPRESS)
    parser.add_argument("--ping-timeout", type=float, default=PING_TIMEOUT_S,
                        help=argparse.SUPPRESS)
    parser.add_argument("--handshake-timeout", type=float, default=HANDSHAKE_TIMEOUT_S,
                        help=argparse.SUPPRESS)
    parser.add_argument("--hello-timeout", type=float, default=HELLO_TIMEOUT_S,
                        help=argparse.SUPPRESS)


# --- files ----------------------------------------------------------------------------


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


# --- one connection's writer ------------------------------------------------------------


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _close_reason(text: str) -> str:
    return _printable(text, 120).encode()[:120].decode("utf-8", "ignore")


class Link:
    """A connection as relay.pairing sees it: queue messages, one task writes them in order."""

    def __init__(self, ws: ServerConnection, role: str, address: str,
                 on_overflow: Callable[[Link], None],
                 on_caught_up: Callable[[Link, int], None]) -> None:
        self.ws, self.role, self.address = ws, role, address
        self.technician: str | None = None
        self.token = ""
        self._on_overflow, self._on_caught_up = on_overflow, on_caught_up
        self._items: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._frame_bytes = 0
        self._control_bytes = 0
        self._dropped_monitors: set[int] = set()
        self._closing: tuple[int, str] | None = None
        if role == "viewer":  # (where the platform has it)
            with contextlib.suppress(OSError, AttributeError):
                ws.transport.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, VIEWER_UNSENT_BYTES)

    def __repr__(self) -> str:
        return f"{self.role} {self.address}"

    def send(self, message: protocol.Message) -> None:
        if self._closing is not None:
            return
        text = protocol.encode_control(message)
        self._items.append(("text", text))
        self._control_bytes += len(text)
        if (self._control_bytes > MAX_PENDING_CONTROL_BYTES
                or len(self._items) > MAX_PENDING_MESSAGES):
            self._overflow()
        self._wake.set()

    def send_frame(self, data: bytes, monitor: int) -> None:
        if self._closing is not None:
            return
        if self._frame_bytes + len(data) > MAX_PENDING_FRAME_BYTES:
            # A newer image replaces the unsent ones: drop them all, heal with a refresh later.
            self._items = deque(item for item in self._items if item[0] != "frame")
            self._frame_bytes = 0
            self._dropped_monitors.add(monitor)
            return
        self._items.append(("frame", data))
        self._frame_bytes += len(data)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, _close_reason(reason))
            self._wake.set()

    def _overflow(self) -> None:
        log.info("%s is not reading: closing it", self)
        self._items.clear()
        self._frame_bytes = self._control_bytes = 0
        self._closing = (protocol.CLOSE_POLICY, "not reading fast enough")
        # Later: the rules may be in the middle of the call that sent this message.
        asyncio.get_running_loop().call_soon(self._on_overflow, self)

    @property
    def idle(self) -> bool:
        return not self._items

    async def run(self) -> None:
        """Write queued messages until closed; a peer that went away just ends it. Anything
        else failing here is a relay bug: logged, and the link closed rather than left mute."""
        try:
            await self._write_until_closed()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("the writer of a %s link from %s failed; closing it",
                          self.role, self.address)
            self.ws.transport.abort()

    async def _write_until_closed(self) -> None:
        while True:
            if self._items:
                kind, data = self._items.popleft()
                if kind == "frame":
                    self._frame_bytes -= len(data)
                else:
                    self._control_bytes -= len(data)
                await self.ws.send(data)
            elif self._closing is not None:
                await self.ws.close(*self._closing)
                return
            elif self._dropped_monitors:
                monitors, self._dropped_monitors = self._dropped_monitors, set()
                self._on_caught_up(self, monitors.pop() if len(monitors) == 1 else 0)
            else:
                self._wake.clear()
                await self._wake.wait()


# --- the relay --------------------------------------------------------------------------


class LoggedLedger:
    """The ledger, with one log line per session transition the rules record."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def requested(self, session: str, technician: str, machine: str, user: str,
                  address: str, at: float) -> None:
        self.ledger.requested(session, technician, machine, user, address, at)

    def accepted(self, session: str, at: float) -> None:
        log.info("session %s... accepted", session[:8])
        self.ledger.accepted(session, at)

    def control(self, session: str, taken: bool, at: float) -> None:
        log.info("session %s... control %s", session[:8], "taken" if taken else "released")
        self.ledger.control(session, taken, at)

    def ended(self, session: str, by: str, reason: str, at: float) -> None:
        log.info("session %s... ended by %s: %s", session[:8], by, reason)
        self.ledger.ended(session, by, reason, at)

    def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        log.info("session %s %s: %s", f"{session[:8]}..." if session else "-", kind,
                 _printable(detail, 200))
        self.ledger.event(session, kind, detail, at)



class Relay:
    """Accounts, ledger and session rules behind the websocket and HTTP handlers."""

    def __init__(self, args: argparse.Namespace) -> None:
        data: Path = args.data
        self.accounts = Accounts(data / DB_FILE)
        self.ledger = Ledger(data / DB_FILE)
        self.pairing = Pairing(LoggedLedger(self.ledger), wait_timeout=args.wait_timeout,
                               grace=args.grace)
        self.tls = args.cert is not None
        self.hello_timeout: float = args.hello_timeout
        self.origins = {o.rstrip("/").lower() for o in args.origin}
        self.trusted_proxies = {_ip(address) for address in args.trusted_proxy}
        self.files = {**viewer_files(args.viewer_dir), **download_files(args.downloads)}
        self.download_page = render_download_page(args.company, {
            url: f.path.name for url, f in download_files(args.downloads).items()})
        self.links: set[Link] = set()

    # --- HTTP -------------------------------------------------------------------------

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        if getattr(request, "method", "GET") != "GET":  # the files and upgrades are GET only
            return response(405, b"Method not allowed\n", "text/plain; charset=utf-8",
                            (("Allow", "GET"),))
        path = request.path.split("?", 1)[0]
        if path in (AGENT_PATH, VIEWER_PATH):
            refusal = self._check_origin(request, path)
            if refusal:
                origins = ", ".join(request.headers.get_all("Origin"))
                log.info("refused %s %s from %s: %s", path, _printable(origins, 200),
                         self._client_address(connection, request), refusal)
                return plain(403, f"Forbidden: {refusal}\n")
            if path == VIEWER_PATH:
                # Viewers send only control text: a smaller limit keeps a connection that is
                # not logged in yet (and may be waiting out the login throttle) from parking
                # up to max_queue frame-sized messages in the relay's memory.
                connection.protocol.max_message_size = protocol.MAX_CONTROL_BYTES
            return None
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

    def _check_origin(self, request: Request, path: str) -> str:
        """Why this upgrade is refused, or "" to let it through."""
        origins = request.headers.get_all("Origin")
        if path == AGENT_PATH:
            return "browsers may not connect to the agent endpoint" if origins else ""
        if not origins:
            return ""  # not a browser: nobody's cookies or network position to abuse
        hosts = request.headers.get_all("Host")
        if len(origins) != 1 or len(hosts) != 1:
            return "one Origin and one Host header expected"
        own = f"{'https' if self.tls else 'http'}://{hosts[0]}".lower()
        if origins[0].lower() not in self.origins | {own}:
            return "origin not allowed"
        return ""

    def _client_address(self, connection: ServerConnection, request: Request) -> str:
        """The TCP peer's address or, when the peer is a --trusted-proxy, the last
        X-Forwarded-For entry (the address that proxy saw), if it is a valid IP address."""
        peer = _address(connection)
        if self.trusted_proxies and _ip(peer) in self.trusted_proxies:
            forwarded = ",".join(request.headers.get_all("X-Forwarded-For"))
            client = _ip(forwarded.rsplit(",", 1)[-1].strip())
            if client is not None:
                return str(client)
        return peer

    def process_response(self, connection: ServerConnection, request: Request,
                         response: Response) -> None:
        for name, value in SECURITY_HEADERS:
            response.headers[name] = value
        if self.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"

    # --- websockets -------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        role = "agent" if ws.request.path.split("?", 1)[0] == AGENT_PATH else "viewer"
        address = self._client_address(ws, ws.request)
        link = Link(ws, role, address, self._overflowed, self._caught_up)
        self.links.add(link)
        writer = asyncio.create_task(link.run())
        try:
            hello = await self._hello(ws, link)
            if hello is not None:
                if role == "agent":
                    await self._agent(ws, link, hello)  # type: ignore[arg-type]
                else:
                    await self._viewer(ws, link, hello)  # type: ignore[arg-type]
        finally:
            self.links.discard(link)
            link.close(protocol.CLOSE_NORMAL, "")
            try:
                await asyncio.wait_for(writer, timeout=15)
            except TimeoutError:
                writer.cancel()

    async def _hello(self, ws: ServerConnection, link: Link) -> protocol.Message | None:
        try:
            first = await asyncio.wait_for(ws.recv(), self.hello_timeout)
        except TimeoutError:
            self._protocol_error(link, f"no hello within {self.hello_timeout:g} seconds")
            return None
        except ConnectionClosed as closed:
            log.info("%s left before its hello (%s)", link, _closed_text(closed))
            return None
        try:
            if not isinstance(first, str):
                raise protocol.RemoteProtocolError(
                    f"the first message must be hello with role {link.role}")
            message = protocol.decode_control(first)
            protocol.check_hello(message, link.role)
        except protocol.RemoteProtocolError as error:
            self._protocol_error(link, str(error))
            return None
        return message

    def _protocol_error(self, link: Link, text: str) -> None:
        log.info("%s: protocol error: %s", link, _printable(text, 200))
        link.send(protocol.Error("protocol", _printable(text, 500)))
        link.close(protocol.CLOSE_POLICY, text)

    async def _agent(self, ws: ServerConnection, link: Link, hello: protocol.AgentHello) -> None:
        technician = self.accounts.get(hello.technician)
        if not self.pairing.agent_hello(link, hello, technician, time.time()):
            log.info("%s refused (technician %s, resume %s)", link, hello.technician,
                     bool(hello.resume))
            return
        session = self.pairing.agents[link]
        log.info("%s: session %s... for %s (%s)", link, session.id[:8], session.technician,
                 "resumed" if hello.resume else "waiting")
        resumable = False
        try:
            async for data in ws:
                now = time.time()
                if isinstance(data, str):
                    self.pairing.agent_message(link, protocol.decode_control(data), now)
                else:
                    fields = protocol.decode_frame_header(data)
                    self.pairing.agent_frame(link, data, fields[2], now)
        except protocol.RemoteProtocolError as error:
            self._protocol_error(link, str(error))
        except ConnectionClosed as closed:
            resumable = _network_cut(closed)
            log.info("%s: link lost (%s)", link, _closed_text(closed))
        finally:
            self.pairing.agent_gone(link, time.time(), resumable=resumable)
        log.info("%s: gone", link)

    async def _viewer(self, ws: ServerConnection, link: Link,
                      hello: protocol.ViewerHello) -> None:
        technician = await self._login(link, hello)
        if technician is None:
            return
        link.send(protocol.Welcome(technician.id, technician.name, link.token))
        self.pairing.viewer_joined(link, technician, time.time(), link.token)
        try:
            async for data in ws:
                if not isinstance(data, str):
                    raise protocol.RemoteProtocolError("a viewer may not send binary messages")
                message = protocol.decode_control(data)
                if isinstance(message, protocol.Logout):
                    self.accounts.revoke_token(link.token)
                    log.info("%s: %s logged out", link, technician.id)
                    link.close(protocol.CLOSE_NORMAL, "logged out")
                    break
                self.pairing.viewer_message(link, message, time.time())
        except protocol.RemoteProtocolError as error:
            self._protocol_error(link, str(error))
        except ConnectionClosed as closed:
            log.info("%s: link lost (%s)", link, _closed_text(closed))
        finally:
            self.pairing.viewer_gone(link, time.time())
        log.info("%s: %s gone", link, technician.id)

    async def _login(self, link: Link, hello: protocol.ViewerHello) -> Any:
        now = time.time()
        result = await self.accounts.login(hello.user, hello.password, hello.token,
                                           link.address, now)
        if result.technician is not None:
            link.token = result.token
            link.technician = result.technician.id
            log.info("%s: logged in as %s", link, result.technician.id)
            return result.technician
        if result.code == TOO_MANY_ATTEMPTS:
            limited = result.limited
            wait_s = retry_words(limited.retry_after_s)
            if limited.first:  # one row per flood, not one per refused attempt
                await asyncio.to_thread(
                    self.ledger.event, None, "login-throttled", f"user {hello.user!r} from "
                    f"{link.address}: {limited.reason} limit, {wait_s} s", now)
                log.info("%s: login of %r refused (%s limit)", link, hello.user,
                         limited.reason)
            # The table's sentence cannot know the wait: the viewer shows this message.
            refusal = protocol.Error(
                TOO_MANY_ATTEMPTS, f"Too many sign-in attempts. Try again in {wait_s} s.")
        elif result.code == LOGIN_FAILED.code:
            # Off the event loop: each row is a synchronous (fsync) write, and a flood's
            # admitted checks must not stall every other connection's handshake.
            await asyncio.to_thread(self.ledger.event, None, "login-failed",
                                    f"user {hello.user!r} from {link.address}", time.time())
            log.info("%s: login failed for %r", link, hello.user)
            refusal = LOGIN_FAILED
        else:
            log.info("%s: login token refused", link)
            refusal = LOGIN_EXPIRED
        link.send(refusal)
        link.close(protocol.CLOSE_POLICY, refusal.code)
        return None

    def _overflowed(self, link: Link) -> None:
        now = time.time()
        if link.role == "agent":
            self.pairing.agent_stalled(link, now)
        else:
            self.pairing.viewer_gone(link, now)

    def _caught_up(self, link: Link, monitor: int) -> None:
        self.pairing.viewer_caught_up(link, monitor, time.time())

    # --- time -------------------------------------------------------------------------

    async def ticker(self) -> None:
        """Expiry, login re-checks and the ledger heartbeat."""
        last_heartbeat = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time()
            try:
                self.pairing.tick(now)
                for link in list(self.pairing.viewers):  # logged-in viewer links
                    if self.accounts.check_token(link.token, now) is None:
                        log.info("%s: login of %s no longer valid", link, link.technician)
                        self.pairing.viewer_gone(link, now)
                        link.send(LOGIN_EXPIRED)
                        link.close(protocol.CLOSE_POLICY, LOGIN_EXPIRED.code)
                if now - last_heartbeat >= HEARTBEAT_S:
                    self.ledger.heartbeat(now)
                    last_heartbeat = now
            except Exception:
                log.exception("relay tick failed")

    async def shutdown(self) -> None:
        """End every live session (relay-shutdown), tell both sides, let the writers drain."""
        self.pairing.shutdown(time.time())
        self.ledger.heartbeat(time.time())
        deadline = time.monotonic() + SHUTDOWN_DRAIN_S
        while time.monotonic() < deadline and not all(link.idle for link in self.links):
            await asyncio.sleep(0.02)


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return str(remote[0]) if remote else "?"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in ``text`` (an IPv4-mapped IPv6 address as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network_cut(closed: ConnectionClosed) -> bool:
    """True if the agent's session may wait for it to come back (protocol.can_resume, as the
    relay sees it: a link that went silent ends in a keepalive timeout, 1011; a socket closed
    without a close frame means the customer's program died, and its session ends at once)."""
    frame = closed.rcvd or closed.sent
    return protocol.can_resume(frame.code if frame else None, "relay")


def _closed_text(closed: ConnectionClosed) -> str:
    frame = closed.rcvd or closed.sent
    return f"code {frame.code}" if frame else "no close frame"


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def run(args: argparse.Namespace, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the readiness line once bound. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if (args.cert is None) != (args.key is None):
        print("error: --cert and --key go together", file=sys.stderr)
        return 2
    try:
        context = tls_context(args.cert, args.key) if args.cert else None
    except (OSError, ssl.SSLError) as error:
        print(f"error: cannot use the TLS certificate or key: {error}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_serve(args, context, on_ready))
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, context: ssl.SSLContext | None,
                 on_ready: Callable[[str], None] | None) -> int:
    relay = Relay(args)
    recovered = relay.ledger.recover()
    if recovered:
        log.info("closed %d session(s) left open by the last run (relay-restart)", recovered)
    relay.ledger.heartbeat(time.time())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        relay.handler, args.host, args.port,
        process_request=relay.process_request, process_response=relay.process_response,
        max_size=protocol.MAX_MESSAGE_BYTES, max_queue=8, compression=None,
        open_timeout=args.handshake_timeout, ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout, close_timeout=CLOSE_TIMEOUT_S, ssl=context,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"{'https' if context else 'http'}://{host}:{port}"
        print(f"Relay listening on {url}", flush=True)
        if on_ready is not None:
            on_ready(url)
        ticker = asyncio.create_task(relay.ticker())
        await stop.wait()
        log.info("stopping: ending live sessions")
        ticker.cancel()
        await relay.shutdown()
    log.info("stopped")
    return 0
