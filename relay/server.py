"""The relay's network side: one asyncio websockets server for agents, viewers and files.

The only relay module doing network I/O. Each connection is a short loop around
relay.pairing (the session rules): read a message, validate it with protocol.py, hand it to
the rules, and let a per-connection ``Link`` write what the rules send, in order.

    /ws/agent?technician=ID    agents (no browser Origin accepted)
    /ws/viewer?technician=ID   viewers (Origin must be this relay's own origin or --origin)
                 ID is the support person's: HAProxy sends all of theirs to one relay. A
                 hello naming someone else is refused; without ID (an old program) it is
                 refused only on a shared (PostgreSQL) store, where routing matters.
    /healthz     JSON: this relay's id and session count (to loopback and --trusted-proxy
                 only), 503 when its database cannot be reached
    anything else   plain HTTP GET (relay/static.py): the customer's page at /, the
                    console at /console/, --downloads DIR at /download/<name>

Flow: frames to a viewer are queued up to MAX_PENDING_FRAME_BYTES; beyond that the unsent
frames are dropped and, once the viewer has drained, the agent is asked for a full image
(`refresh`), so a viewer that never reads neither stalls the agent nor grows memory.
Control messages and input are never dropped: a peer that lets them pile up beyond
MAX_PENDING_CONTROL_BYTES is closed (an agent's session then ends with "agent-stalled").
Each queued message is counted with its bookkeeping (QUEUED_MESSAGE_OVERHEAD_BYTES), so a
flood of tiny frames is held to the same bound as a few large ones. A viewer's queue is the
exception that is coalesced: a newer one replaces the unsent one, and at most one goes out
per QUEUE_INTERVAL_S, so churning agents cannot push a slow viewer off its link.
File chunks (relay.transfers) wait in their own queue, bounded by the transfer's window, and
go out only when no control message or frame is waiting: a file never delays the screen or
the input.

Strangers (relay.limits): until its hello is valid (an agent registered, a viewer logged
in), a connection may send one message of at most protocol.MAX_HELLO_BYTES, and only so
many such connections are held per address and in total; agents' hellos are throttled per
address. Lines about refusals are written at a bounded rate, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import signal
import socket
import ssl
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

import protocol
from relay.accounts import TOO_MANY_ATTEMPTS
from relay.download import DEFAULT_COMPANY
from relay.failover import Failover
from relay.limits import MAX_UNAUTHENTICATED, Budget, HelloThrottle, Unauthenticated
from relay.location import Location
from relay.login_limits import retry_words
from relay.pairing import DEFAULT_GRACE_S, DEFAULT_WAIT_TIMEOUT_S, Pairing
from relay.recorder import QueuedRecorder
from relay.static import SECURITY_HEADERS, Download, StaticSite, plain, response
from relay.store import DataError
from relay.stores import Store, open_store
from relay.transfers import DEFAULT_MAX_FILE_MB

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
# What one queued message costs beyond its bytes: the bytes object's header, the queue's
# tuple and slot, rounded up (measured: 28-byte frames cost about 150 bytes each).
QUEUED_MESSAGE_OVERHEAD_BYTES = 128
QUEUE_INTERVAL_S = 0.25  # at most four queue updates a second to one viewer
SHUTDOWN_DRAIN_S = 2.0
SHUTDOWN_FLUSH_S = 10.0  # the last ledger rows' wait for a slow database
HSTS = ("Strict-Transport-Security", "max-age=31536000")

TOO_MANY_HELLOS = protocol.refusal("too-many-attempts", "agent")
UPDATE_REQUIRED = {role: protocol.refusal("update-required", role) for role in ("agent", "viewer")}
LOGIN_FAILED = protocol.refusal("login-failed", "viewer")
LOGIN_EXPIRED = protocol.refusal("login-expired", "viewer")


@dataclass(frozen=True)
class RelayConfig:
    """Everything `serve` needs, whatever built it (relay/__main__.py from the command line)."""

    data: Path
    host: str = "127.0.0.1"
    port: int = 8765
    cert: Path | None = None
    key: Path | None = None
    origins: tuple[str, ...] = ()  # other origins allowed to open the viewer's websocket
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For is believed
    downloads: Path | None = None
    company: str = DEFAULT_COMPANY
    phones: tuple[str, ...] = ()  # "David: 269 998 1389", shown on the customer's page
    viewer_dir: Path = VIEWER_DIR
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S
    grace: float = DEFAULT_GRACE_S
    require_code: bool = False  # accepting a caller needs the code they read out
    max_file_mb: int = DEFAULT_MAX_FILE_MB  # a file offered beyond this is refused at once
    ping_interval: float = PING_INTERVAL_S
    ping_timeout: float = PING_TIMEOUT_S
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S
    hello_timeout: float = HELLO_TIMEOUT_S
    max_unauthenticated: int = MAX_UNAUTHENTICATED  # also held under the open-file limit
    database: Location | None = None  # None: SQLite in ``data`` (relay.location)
    relay_id: str = "relay"  # this relay's name in a shared database


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
        self.stranger = False  # counted in Relay.unauthenticated until its hello is valid
        self.technician: str | None = None
        self.route: str | None = None  # the URL's ?technician=
        self.ledger: QueuedRecorder | None = None  # its rows go out before our messages do
        self.token = ""
        self._on_overflow, self._on_caught_up = on_overflow, on_caught_up
        # (kind, data, the ledger's writes queued when it was: ledger.reached's mark)
        self._items: deque[tuple[str, Any, int]] = deque()
        self._wake = asyncio.Event()
        self._frame_bytes = 0
        self._control_bytes = 0
        # The newest queue, not sent yet; "ready" once everything queued before it was sent.
        self._queue: str | None = None
        self._queue_ready = False
        self._queue_sent_at = -math.inf
        self._dropped_monitors: set[int] = set()
        self._closing: tuple[int, str] | None = None
        self._chunks: deque[bytes] = deque()  # file chunks: after everything else
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
        if isinstance(message, protocol.Queue):
            # It says all there is to say: an unsent older one is of no use.
            if self._queue is None:
                self._items.append(("queue", "", 0))  # its place in the order
            self._queue = text
            self._wake.set()
            return
        # it waits for the ledger's rows queued before it (the transition it tells, among
        # them), not for those queued after it: the agent's `accepted` waited for the
        # support person's `take_control` row and two directory writes too (5-31 ms)
        self._items.append(("text", text, self.ledger.queued if self.ledger else 0))
        self._control_bytes += len(text) + QUEUED_MESSAGE_OVERHEAD_BYTES
        if (self._control_bytes > MAX_PENDING_CONTROL_BYTES
                or len(self._items) > MAX_PENDING_MESSAGES):
            self._overflow()
        self._wake.set()

    def send_frame(self, data: bytes, monitor: int) -> None:
        if self._closing is not None:
            return
        cost = len(data) + QUEUED_MESSAGE_OVERHEAD_BYTES
        if self._frame_bytes + cost > MAX_PENDING_FRAME_BYTES:
            # A newer image replaces the unsent ones: drop them all, heal with a refresh later.
            self._items = deque(item for item in self._items if item[0] != "frame")
            self._frame_bytes = 0
            self._dropped_monitors.add(monitor)
            return
        self._items.append(("frame", data, 0))
        self._frame_bytes += cost
        self._wake.set()

    def send_chunk(self, data: bytes) -> None:
        # Never dropped (a file has no "newer image"); the transfer's window bounds the queue.
        if self._closing is None:
            self._chunks.append(data)
            self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, _close_reason(reason))
            self._wake.set()

    def _overflow(self) -> None:
        log.info("%s is not reading: closing it", self)
        self._items.clear()
        self._chunks.clear()
        self._queue, self._queue_ready = None, False
        self._frame_bytes = self._control_bytes = 0
        self._closing = (protocol.CLOSE_POLICY, "not reading fast enough")
        # Later: the rules may be in the middle of the call that sent this message.
        asyncio.get_running_loop().call_soon(self._on_overflow, self)

    @property
    def idle(self) -> bool:
        return not self._items and not self._queue_ready and not self._chunks

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
            queue_wait = self._queue_sent_at + QUEUE_INTERVAL_S - time.monotonic()
            if self._queue_ready and queue_wait <= 0 and self._queue is not None:
                text, self._queue, self._queue_ready = self._queue, None, False
                self._queue_sent_at = time.monotonic()
                await self.ws.send(text)
            elif self._items:
                kind, data, mark = self._items.popleft()
                cost = len(data) + QUEUED_MESSAGE_OVERHEAD_BYTES
                if kind == "queue":
                    self._queue_ready = True  # sent as soon as its interval allows
                    continue
                if kind == "frame":
                    self._frame_bytes -= cost
                else:
                    self._control_bytes -= cost
                    if self.ledger is not None:
                        await self.ledger.reached(mark)
                await self.ws.send(data)
            elif self._chunks:
                await self.ws.send(self._chunks.popleft())
            elif self._closing is not None:
                await self.ws.close(*self._closing)
                return
            elif self._dropped_monitors:
                monitors, self._dropped_monitors = self._dropped_monitors, set()
                self._on_caught_up(self, monitors.pop() if len(monitors) == 1 else 0)
            else:
                self._wake.clear()
                if not self._queue_ready:
                    await self._wake.wait()
                else:  # a queue waits for its turn
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), queue_wait)


# --- the relay --------------------------------------------------------------------------


class LoggedLedger:
    """The ledger, with one log line per session transition the rules record."""

    def __init__(self, ledger: QueuedRecorder) -> None:
        self.ledger = ledger

    def requested(self, session: str, technician: str, machine: str, user: str,
                  address: str, at: float) -> int:
        return self.ledger.requested(session, technician, machine, user, address, at)

    def accepted(self, session: str, at: float) -> None:
        log.info("session %s... accepted", session[:8])
        self.ledger.accepted(session, at)

    def control(self, session: str, taken: bool, at: float) -> None:
        log.info("session %s... control %s", session[:8], "taken" if taken else "released")
        self.ledger.control(session, taken, at)

    def paused(self, session: str, paused: bool, at: float) -> None:
        log.info("session %s... %s by the customer", session[:8],
                 "paused" if paused else "resumed")
        self.ledger.paused(session, paused, at)

    def ended(self, session: str, by: str, reason: str, at: float) -> None:
        log.info("session %s... ended by %s: %s", session[:8], by, reason)
        self.ledger.ended(session, by, reason, at)

    def note(self, session: str, text: str, at: float) -> None:
        log.info("session %s... note saved (%d characters)", session[:8], len(text))
        self.ledger.note(session, text, at)

    def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        log.info("session %s %s: %s", f"{session[:8]}..." if session else "-", kind,
                 _printable(detail, 200))
        self.ledger.event(session, kind, detail, at)

    def transfer(self, row: Any) -> None:
        log.info("session %s... file %s (%s bytes, %s): %s", row.session[:8],
                 _printable(row.name, 80), row.size, row.direction, row.outcome)
        self.ledger.transfer(row)



class Relay:
    """Accounts, ledger and session rules behind the websocket and HTTP handlers."""

    def __init__(self, config: RelayConfig, store: Store) -> None:
        self.store = store  # accounts, ledger and session directory (relay.stores)
        self.ledger = QueuedRecorder(store)  # the rules' writes, in order, off the loop
        self.pairing = Pairing(LoggedLedger(self.ledger), wait_timeout=config.wait_timeout,
                               grace=config.grace, require_code=config.require_code,
                               max_file_bytes=config.max_file_mb * 1024 * 1024)
        self.failover = Failover(store, self.pairing, self.ledger)  # the session directory
        self.tls = config.cert is not None
        self.hello_timeout = config.hello_timeout
        self.origins = {o.rstrip("/").lower() for o in config.origins}
        self.trusted_proxies = {_ip(address) for address in config.trusted_proxies}
        self.site = StaticSite(config.viewer_dir, config.downloads, config.company,
                               config.phones)
        self.links: set[Link] = set()
        self._rechecks: set[asyncio.Task] = set()
        self.unauthenticated = Unauthenticated(total=config.max_unauthenticated)
        self.hello_throttle = HelloThrottle()
        self.refusal_lines = Budget()  # log lines about strangers refused

    def note_refusal(self, text: str, *args: Any) -> None:
        """Log a refusal of a stranger, at a bounded rate (the ticker logs the count of the
        rest): under a flood the log must not fill the disk."""
        if self.refusal_lines.allow(time.time()):
            log.info(text, *args)

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
                self.note_refusal("refused %s %s from %s: %s", path, _printable(origins, 200),
                                  self._client_address(connection, request), refusal)
                return plain(403, f"Forbidden: {refusal}\n")
            address = self._client_address(connection, request)
            refusal = self.unauthenticated.refusal(address)
            if refusal:
                self.note_refusal("refused %s from %s: %s", path, address, refusal)
                return response(503, f"Service unavailable: {refusal}\n".encode(),
                                "text/plain; charset=utf-8", (("Retry-After", "10"),))
            # Until its hello is valid a connection may send one hello-sized message: a
            # stranger must not park frame-sized data (max_queue of them) in our memory.
            connection.protocol.max_message_size = protocol.MAX_HELLO_BYTES
            return None
        if path == "/healthz":
            return await self._health(connection, request)
        answer = await self.site.answer(path)
        if isinstance(answer, Download):
            transport = _take_over(connection)
            if transport is None:  # the client left while the file was looked up
                answer.file.close()
                return plain(404, "Gone\n")
            extra = tuple(SECURITY_HEADERS) + ((HSTS,) if self.tls else ())
            self.site.stream(answer, transport, answer.head(extra))
            return plain(200, "")  # never sent: websockets now sees a closed connection
        return answer

    async def _health(self, connection: ServerConnection, request: Request) -> Response:
        """For the load balancer and this machine: is the relay of use, and how busy is it.
        Anyone else gets the same 404 as any unknown path (the count is nobody's business)."""
        # The client as a trusted proxy saw it: through HAProxy, a stranger is a stranger.
        peer = _ip(self._client_address(connection, request))
        if peer is None or not (peer.is_loopback or peer in self.trusted_proxies):
            return plain(404, "Not found\n")
        reachable = await self.store.ping()
        body = {"status": "ok" if reachable else "database unreachable",
                "relay": self.store.relay, "sessions": len(self.pairing.sessions),
                "viewers": len(self.pairing.viewers), "ledger_queue": self.ledger.pending}
        return response(200 if reachable else 503, json.dumps(body).encode() + b"\n",
                        "application/json")

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
            response.headers[HSTS[0]] = HSTS[1]

    # --- websockets -------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        role = "agent" if ws.request.path.split("?", 1)[0] == AGENT_PATH else "viewer"
        address = self._client_address(ws, ws.request)
        refusal = self.unauthenticated.refusal(address)  # upgrades that raced past the check
        if refusal:
            self.note_refusal("refused %s %s: %s", role, address, refusal)
            await ws.close(protocol.CLOSE_TRY_AGAIN, refusal)
            return
        link = Link(ws, role, address, self._overflowed, self._caught_up)
        link.route = _route(ws.request.path)
        link.ledger = self.ledger
        self.links.add(link)
        self.unauthenticated.opened(address)
        link.stranger = True
        writer = asyncio.create_task(link.run())
        try:
            hello = await self._hello(ws, link)
            if hello is not None:
                if role == "agent":
                    await self._agent(ws, link, hello)  # type: ignore[arg-type]
                else:
                    await self._viewer(ws, link, hello)  # type: ignore[arg-type]
        finally:
            self._known(link)
            self.links.discard(link)
            link.close(protocol.CLOSE_NORMAL, "")
            try:
                await asyncio.wait_for(writer, timeout=15)
            except TimeoutError:
                writer.cancel()

    def _known(self, link: Link) -> None:
        """The link said a valid hello (or left): it no longer counts as a stranger."""
        if link.stranger:
            link.stranger = False
            self.unauthenticated.done(link.address)

    async def _hello(self, ws: ServerConnection, link: Link) -> protocol.Message | None:
        try:
            first = await asyncio.wait_for(ws.recv(), self.hello_timeout)
        except TimeoutError:
            self._protocol_error(link, f"no hello within {self.hello_timeout:g} seconds")
            return None
        except ConnectionClosed as closed:
            self.note_refusal("%s left before its hello (%s)", link, _closed_text(closed))
            return None
        try:
            if not isinstance(first, str):
                raise protocol.RemoteProtocolError(
                    f"the first message must be hello with role {link.role}")
            message = protocol.decode_control(first)
            protocol.check_hello(message, link.role)
            named = getattr(message, "technician" if link.role == "agent" else "user", "")
            if link.route is not None and named and named != link.route:
                raise protocol.RemoteProtocolError(
                    "the hello names another support person than the URL's ?technician=")
        except protocol.RemoteProtocolError as error:
            self._protocol_error(link, str(error))
            return None
        if link.route is None and self.store.shared:
            # An old program: on a cluster it may have reached the wrong relay.
            self.note_refusal("%s: refused, no ?technician= in the URL (an old program)", link)
            link.send(UPDATE_REQUIRED[link.role])
            link.close(protocol.CLOSE_POLICY, "update-required")
            return None
        return message

    def _protocol_error(self, link: Link, text: str) -> None:
        if link.stranger:
            self.note_refusal("%s: protocol error: %s", link, _printable(text, 200))
        else:
            log.info("%s: protocol error: %s", link, _printable(text, 200))
        link.send(protocol.Error("protocol", _printable(text, 500)))
        link.close(protocol.CLOSE_POLICY, text)

    async def _agent(self, ws: ServerConnection, link: Link, hello: protocol.AgentHello) -> None:
        now = time.time()
        if not self.hello_throttle.allow(link.address, now):
            # Refused at once, whichever support person it names: ids cannot be guessed at
            # speed, and nobody waits on a closed connection.
            wait = math.ceil(self.hello_throttle.retry_after(link.address))
            self.pairing.record_refusal(f"agent hello throttled (from {link.address})", now)
            self.note_refusal("%s: hello throttled, may try again in %d s", link, wait)
            link.send(TOO_MANY_HELLOS)
            link.close(protocol.CLOSE_POLICY, TOO_MANY_HELLOS.code)
            return
        technician = await self.store.technician(hello.technician)
        await self.failover.adopt_for_agent(hello, time.time())  # its relay may have died
        now = time.time()
        registered = self.pairing.agent_hello(link, hello, technician, now)
        self.failover.publish(now)  # the new resume secret, before anything else
        if not registered:
            self.note_refusal("%s refused (technician %s, resume %s)", link, hello.technician,
                              bool(hello.resume))
            return
        self._known(link)
        ws.protocol.max_message_size = protocol.MAX_MESSAGE_BYTES
        session = self.pairing.agents[link]
        log.info("%s: session %s... for %s (%s)", link, session.id[:8], session.technician,
                 "resumed" if hello.resume else "taken over" if hello.handoff else "waiting")
        resumable = False
        try:
            async for data in ws:
                now = time.time()
                if isinstance(data, str):
                    self.pairing.agent_message(link, protocol.decode_control(data), now)
                elif protocol.is_file_chunk(data):
                    self.pairing.agent_chunk(link, data, now)
                else:
                    self.pairing.agent_frame(link, data, now)
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
        self._known(link)
        # Viewers send control text and file chunks (which fit): frame-sized messages stay
        # refused.
        ws.protocol.max_message_size = protocol.MAX_CONTROL_BYTES
        link.send(protocol.Welcome(technician.id, technician.name, link.token))
        self.pairing.viewer_joined(link, technician, time.time(), link.token)
        try:
            async for data in ws:
                if not isinstance(data, str):
                    if not protocol.is_file_chunk(data):
                        raise protocol.RemoteProtocolError(
                            "a viewer may send no binary message but a file chunk")
                    self.pairing.viewer_chunk(link, data, time.time())
                    continue
                message = protocol.decode_control(data)
                if isinstance(message, protocol.Logout):
                    await self.store.revoke_token(link.token)
                    log.info("%s: %s logged out", link, technician.id)
                    link.close(protocol.CLOSE_NORMAL, "logged out")
                    break
                if isinstance(message, protocol.Accept):  # maybe a rejoin after a relay died
                    await self.failover.adopt_for_viewer(technician.id, message.session,
                                                         time.time())
                self.pairing.viewer_message(link, message, time.time())
                if isinstance(message, (protocol.Accept, protocol.TakeControl,
                                        protocol.ReleaseControl)):
                    self.failover.publish(time.time())  # a resume elsewhere needs it now
        except protocol.RemoteProtocolError as error:
            self._protocol_error(link, str(error))
        except ConnectionClosed as closed:
            log.info("%s: link lost (%s)", link, _closed_text(closed))
        finally:
            self.pairing.viewer_gone(link, time.time())
        log.info("%s: %s gone", link, technician.id)

    async def _login(self, link: Link, hello: protocol.ViewerHello) -> Any:
        now = time.time()
        result = await self.store.login(hello.user, hello.password, hello.token,
                                        link.address, now)
        if result.technician is not None and link.route not in (None, result.technician.id):
            # A token login names nobody in its hello: its account must match the URL's.
            self._protocol_error(link, "this login is another support person's than the "
                                       "URL's ?technician=")
            return None
        if result.technician is not None:
            link.token = result.token
            link.technician = result.technician.id
            log.info("%s: logged in as %s", link, result.technician.id)
            return result.technician
        if result.code == TOO_MANY_ATTEMPTS:
            limited = result.limited
            wait_s = retry_words(limited.retry_after_s)
            if limited.first:  # one row per flood, not one per refused attempt
                self.ledger.event(None, "login-throttled", f"user {hello.user!r} from "
                                  f"{link.address}: {limited.reason} limit, {wait_s} s", now)
                log.info("%s: login of %r refused (%s limit)", link, hello.user,
                         limited.reason)
            # The table's sentence cannot know the wait: the viewer shows this message.
            refusal = protocol.Error(
                TOO_MANY_ATTEMPTS, f"Too many sign-in attempts. Try again in {wait_s} s.")
        elif result.code == LOGIN_FAILED.code:
            # Queued for the writer: a flood's rows must not stall any handshake.
            self.ledger.event(None, "login-failed", f"user {hello.user!r} from {link.address}",
                              time.time())
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
                self.failover.publish(now)
                await self.recheck_logins(None)
                left_out = self.refusal_lines.summary(now)
                if left_out:
                    log.info("%d more refusals of connections were not logged one by one in "
                             "the last %g s", left_out, self.refusal_lines.window_s)
                if now - last_heartbeat >= HEARTBEAT_S:
                    self.ledger.call(self.store.heartbeat, now)  # after the directory writes
                    await self.failover.sweep(now)
                    last_heartbeat = now
            except Exception:
                log.exception("relay tick failed")

    async def recheck_logins(self, technician: str | None) -> None:
        """Close the viewers (of ``technician``, or all) whose login is no longer valid: one
        store query for all of them, whatever their number."""
        links = [link for link in self.pairing.viewers  # logged-in viewer links
                 if technician is None or link.technician == technician]
        if not links:
            return
        valid = await self.store.valid_tokens({link.token for link in links}, time.time())
        for link in links:
            now = time.time()
            if link.token not in valid and link in self.pairing.viewers:
                log.info("%s: login of %s no longer valid", link, link.technician)
                self.pairing.viewer_gone(link, now)
                link.send(LOGIN_EXPIRED)
                link.close(protocol.CLOSE_POLICY, LOGIN_EXPIRED.code)

    def revoked(self, technician: str) -> None:
        """Another relay or a command disabled the account or changed its password."""
        task = asyncio.get_running_loop().create_task(self.recheck_logins(technician))
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def shutdown(self) -> None:
        """End every live session (relay-shutdown), tell both sides, let the writers drain."""
        self.pairing.shutdown(time.time())
        self.failover.publish(time.time())  # ended: out of the directory, nobody resumes them
        self.ledger.call(self.store.heartbeat, time.time())
        await self._flush(time.monotonic() + SHUTDOWN_FLUSH_S)
        await self._drain()

    async def hand_over(self, server: Server) -> None:
        """Stop without ending accepted sessions (a shared store: relay.failover.hand_over):
        the directory current first, then every link closed with CLOSE_RESTART, which
        agents and viewers answer by coming back (to another relay, or to this one
        restarted) and resuming. What the rules wrote as the links closed is flushed last."""
        now, deadline = time.time(), time.monotonic() + SHUTDOWN_FLUSH_S
        self.failover.hand_over(now)
        self.ledger.call(self.store.heartbeat, now)  # their last sign of life: now
        if await self._flush(deadline):
            await self._drain()  # the waiting sessions' "ended" reaches their agents
        server.close(close_connections=True, code=protocol.CLOSE_RESTART,
                     reason="relay restart")
        try:
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("stopping with connections still closing")
        await self._flush(deadline)

    async def _flush(self, deadline: float) -> bool:
        """Wait for the ledger writes until ``deadline`` (one budget for the whole stop, so
        a database that stopped answering delays it once); False if some are not done."""
        try:
            await asyncio.wait_for(self.ledger.flush(), max(0.5, deadline - time.monotonic()))
        except TimeoutError:
            log.error("stopping with %d ledger writes not done", self.ledger.pending)
            return False
        return True

    async def _drain(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_DRAIN_S
        while time.monotonic() < deadline and not all(link.idle for link in self.links):
            await asyncio.sleep(0.02)


class _Released:
    """What websockets holds instead of a socket handed to a download: its clean-up after
    a handshake that did not upgrade (abort) must not cut the download."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return True

    def abort(self) -> None:
        pass

    close = abort


def _take_over(connection: ServerConnection) -> Any | None:
    """The connection's socket, for a download to write on at its own pace: websockets lets
    go (it sees a closed connection, so it sends no response of its own), and the handshake's
    timeout no longer bounds how long a slow customer may take to download. It leans on how
    websockets' ServerConnection ends a handshake that did not upgrade (15-17, as pinned);
    test_a_slow_download_outlasts_the_handshake_timeout fails if that changes."""
    transport = connection.transport
    if connection.protocol.state is not State.CONNECTING or transport.is_closing():
        return None
    connection.transport = _Released(transport)
    connection.connection_lost(None)
    return transport


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


def _route(path: str) -> str | None:
    """The ?technician= of a websocket URL (what HAProxy routed on), or None."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("technician")
    return values[0] if values else None


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


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit on open files to the hard limit, and return the limit
    now in force (None where there is no such limit). systemd's default soft limit of 1,024
    let idle connections crowd out real agents."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still cannot go beyond the kernel's nr_open (often 2**20).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 2**20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


def _accept_errors_at_a_bounded_rate(relay: Relay) -> Callable[..., None]:
    """The event loop's exception handler: out of file descriptors, asyncio reports every
    failed accept with a traceback; one line at a bounded rate says it as well."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            relay.note_refusal("cannot accept a connection: %s (the open-file limit?)",
                               context.get("exception"))
            return
        loop.default_exception_handler(context)

    return handle


def run(config: RelayConfig, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the readiness line once bound. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if (config.cert is None) != (config.key is None):
        print("error: --cert and --key go together", file=sys.stderr)
        return 2
    try:
        context = tls_context(config.cert, config.key) if config.cert else None
    except (OSError, ssl.SSLError) as error:
        print(f"error: cannot use the TLS certificate or key: {error}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_serve(config, context, on_ready))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr)
        return 1


async def _serve(config: RelayConfig, context: ssl.SSLContext | None,
                 on_ready: Callable[[str], None] | None) -> int:
    location = config.database or Location(path=config.data)
    store = await open_store(location, config.relay_id, create=True)
    try:
        return await _serve_with(config, context, on_ready, Relay(config, store))
    finally:
        await store.close()


async def _serve_with(config: RelayConfig, context: ssl.SSLContext | None,
                      on_ready: Callable[[str], None] | None, relay: Relay) -> int:
    open_files = raise_open_file_limit()
    if open_files is not None:
        # Connections before their hello may hold at most half the descriptors: the rest
        # stays for sessions, the database and the files served.
        relay.unauthenticated.total = min(relay.unauthenticated.total, open_files // 2)
    asyncio.get_running_loop().set_exception_handler(_accept_errors_at_a_bounded_rate(relay))
    recovered = await relay.store.recover()
    if recovered:
        log.info("closed %d session(s) left open by the last run (relay-restart)", recovered)
    await relay.store.heartbeat(time.time())
    writer = asyncio.create_task(relay.ledger.run())
    await relay.ledger.prepare()
    try:
        async with relay.store.revocations(relay.revoked):
            return await _listen(config, context, on_ready, relay, open_files)
    finally:
        writer.cancel()


async def _listen(config: RelayConfig, context: ssl.SSLContext | None,
                  on_ready: Callable[[str], None] | None, relay: Relay,
                  open_files: int | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_once(signum: int) -> None:
        if stop.is_set():  # a second signal: stop now, whatever is still unwritten
            log.error("stopping at once (signal %d during shutdown)", signum)
            raise SystemExit(1)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_once, signum)
    async with serve(
        relay.handler, config.host, config.port,
        process_request=relay.process_request, process_response=relay.process_response,
        max_size=protocol.MAX_MESSAGE_BYTES, max_queue=8, compression=None,
        open_timeout=config.handshake_timeout, ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout, close_timeout=CLOSE_TIMEOUT_S, ssl=context,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        url = f"{'https' if context else 'http'}://{host}:{port}"
        print(f"Relay listening on {url}", flush=True)
        log.info("open files: up to %s; connections before their hello: up to %d",
                 open_files or "unlimited", relay.unauthenticated.total)
        if on_ready is not None:
            on_ready(url)
        ticker = asyncio.create_task(relay.ticker())
        await stop.wait()
        ticker.cancel()
        if relay.store.shared:
            log.info("stopping: handing live sessions over")
            await relay.hand_over(server)
        else:
            log.info("stopping: ending live sessions")
            await relay.shutdown()
    log.info("stopped")
    return 0
