"""The relay's wire spoken by hand: raw JSON and frames over real websockets clients, for
tests that must send what no well-behaved peer would (bad first messages, oversize frames,
floods, other people's sessions). Every connection opened inside ``run`` is closed after it.

``ScriptedViewer`` (helpers/viewer.py) and ``ScriptedAgent`` (helpers/agent.py) are the
well-behaved peers built on protocol.py; this module is one level below them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import socket
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

import protocol

SCREENS = [{"x": 0, "y": 0, "width": 1280, "height": 800},
           {"x": 0, "y": 0, "width": 1280, "height": 800}]
WAIT_S = 30  # generous: the machine is shared; a hang fails the test instead of blocking it
MADE_UP = "madeUpSessionId0000000"
# the one answer to a session that is not yours, has ended or never existed
REFUSAL = {"type": "error", "code": "no-such-session",
           "message": "That session is no longer available."}


def agent_hello(technician: str = "david", machine: str = "PC-1", user: str = "anna",
                resume: str = "") -> str:
    return json.dumps({"type": "hello", "role": "agent", "version": protocol.PROTOCOL_VERSION,
                       "technician": technician, "machine": machine, "user": user,
                       "screens": SCREENS, "resume": resume})


def viewer_hello(user: str = "david", password: str | None = None, token: str = "") -> str:
    fields: dict[str, Any] = {"type": "hello", "role": "viewer",
                              "version": protocol.PROTOCOL_VERSION}
    if token:
        fields["token"] = token
    else:
        fields.update(user=user, password=f"{user}-pw" if password is None else password)
    return json.dumps(fields)


def without_receipt(ended: dict) -> dict:
    """An `ended` message without its receipt (ledger reference, billed seconds)."""
    return {k: v for k, v in ended.items() if k not in ("ref", "billable_s")}


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def frame(seq: int, size: int = 1000, monitor: int = 1,
          flags: int = protocol.FLAG_LAST) -> bytes:
    image = b"\xff\xd8\xff" + bytes(range(256)) * (size // 256 + 1)
    return protocol.encode_frame(protocol.Frame(
        protocol.FRAME_JPEG, flags, monitor, seq, 0, 0, 64, 64, image[:size]))


_OPENED: contextvars.ContextVar[list[ClientConnection]] = contextvars.ContextVar("opened")


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    """Run a test's async part, then close every connection it opened."""

    async def main() -> Any:
        opened: list[ClientConnection] = []
        _OPENED.set(opened)
        try:
            return await scenario
        finally:
            for ws in opened:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
                ws.transport.abort()

    return asyncio.run(main())


async def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("max_size", protocol.MAX_MESSAGE_BYTES + 1024)
    ws = await asyncio.wait_for(connect(url, compression=None, **kwargs), WAIT_S)
    _OPENED.get().append(ws)
    return ws


async def receive(ws: ClientConnection) -> dict | bytes:
    data = await asyncio.wait_for(ws.recv(), WAIT_S)
    return data if isinstance(data, bytes) else json.loads(data)


async def next_of(ws: ClientConnection, *kinds: str) -> dict:
    """The next message of one of these types (others in between are skipped)."""
    while True:
        data = await receive(ws)
        if isinstance(data, dict) and data["type"] in kinds:
            return data


async def next_frame(ws: ClientConnection) -> bytes:
    """The next binary message (control messages in between are skipped)."""
    while True:
        data = await receive(ws)
        if isinstance(data, bytes):
            return data


async def start_agent(ws_url: str, technician: str = "david", **hello: Any
                      ) -> tuple[ClientConnection, dict]:
    ws = await open_ws(ws_url + "/ws/agent")
    await ws.send(agent_hello(technician, **hello))
    return ws, await receive(ws)  # type: ignore[return-value]


async def start_viewer(ws_url: str, user: str = "david", **kwargs: Any
                       ) -> tuple[ClientConnection, dict, dict]:
    """A logged-in viewer: its websocket, the welcome and the first queue."""
    ws = await open_ws(ws_url + "/ws/viewer", **kwargs)
    await ws.send(viewer_hello(user))
    welcome = await receive(ws)
    assert isinstance(welcome, dict) and welcome["type"] == "welcome", welcome
    queue = await next_of(ws, "queue")
    return ws, welcome, queue


async def closed_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the relay to close this connection; its close code and reason."""
    await asyncio.wait_for(ws.wait_closed(), WAIT_S)
    return ws.close_code, ws.close_reason


async def active_session(relay) -> tuple[ClientConnection, ClientConnection, str]:
    """David's viewer has accepted a fresh session of an agent: (agent, viewer, session)."""
    agent, registered = await start_agent(relay.ws_url)
    viewer, _, _ = await start_viewer(relay.ws_url)
    session = registered["session"]
    await viewer.send(message("accept", session=session))
    await next_of(viewer, "accepted")
    await next_of(agent, "accepted")
    return agent, viewer, session


async def session_with_a_viewer_that_stops_reading(
        relay) -> tuple[ClientConnection, ClientConnection, str]:
    """An accepted session whose viewer's client buffers one message and then reads nothing
    more until the test reads it: (agent, viewer, session)."""
    agent, registered = await start_agent(relay.ws_url)
    session = registered["session"]
    viewer, _, _ = await start_viewer(relay.ws_url, max_queue=1)
    await viewer.send(message("accept", session=session))
    await next_of(viewer, "accepted")
    await next_of(agent, "accepted")
    return agent, viewer, session


def source(n: int) -> str:
    """The n-th of many loopback addresses, 200 to a /24 (127.0.0.x is left to the tests)."""
    return f"127.0.{1 + n // 200}.{1 + n % 200}"


def raw_http(port: int, request: bytes, *, read_all: bool = True) -> bytes:
    """Send raw bytes; the reply until the relay closes (or the headers, if not read_all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(request)
        reply = b""
        while read_all or b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def upgrade_request(port: int, path: str, *extra: str) -> bytes:
    """A websocket upgrade request for ``path``, with ``extra`` header lines."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(reply: bytes) -> int:
    """The HTTP status of a raw reply (0 if it is not HTTP/1.1)."""
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


# every viewer message that names a session, as the JSON a viewer would send
EVERY_SESSION_MESSAGE = {
    "accept": lambda s: message("accept", session=s),
    "take_control": lambda s: message("take_control", session=s),
    "release_control": lambda s: message("release_control", session=s),
    "refresh": lambda s: message("refresh", session=s, monitor=0),
    "ack": lambda s: message("ack", session=s, seq=1),
    "pointer_move": lambda s: message("pointer_move", session=s, monitor=1, x=5, y=5),
    "button": lambda s: message("button", session=s, monitor=1, x=5, y=5, button="left",
                                down=True),
    "wheel": lambda s: message("wheel", session=s, monitor=1, x=5, y=5, dx=0, dy=3),
    "key": lambda s: message("key", session=s, code="KeyX", key="x", down=True),
    "text": lambda s: message("text", session=s, text="rm -rf"),
    "end": lambda s: message("end", session=s, reason="mine now"),
}
