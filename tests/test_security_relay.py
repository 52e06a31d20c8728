"""Issue 7, relay side: each promise proven against a real relay process on 127.0.0.1.

Grouped by the promise's number in issue 7. Proofs that already live elsewhere are named in
the section's comment rather than repeated. Network faults use a TCP proxy on 127.0.0.1 that
the test can freeze (a silent network) and source addresses 127.0.0.x for "many addresses".

The hypothesis tests at the end run a fixed budget in CI (profile "relay-ci"); before a
release run the long profile:

    RELAY_FUZZ_PROFILE=relay-release .venv/bin/python -m pytest tests/test_security_relay.py -k fuzz
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import resource
import selectors
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_relay_server import (
    SCREENS,
    WAIT_S,
    active_session,
    agent_hello,
    closed_code,
    frame,
    ledger_csv,
    make_certificate,
    message,
    next_of,
    open_ws,
    receive,
    relay_events,
    run,
    start_agent,
    start_viewer,
    viewer_hello,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protocol
from relay import server
from relay.accounts import ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, ARGON2_TIME_COST, DB_FILE
from relay.pairing import Pairing

MADE_UP = "madeUpSessionId0000000"
REFUSAL = {"type": "error", "code": "no-such-session", "message": "No such session"}

settings.register_profile(
    "relay-ci", max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "relay-release", max_examples=20_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ = settings.get_profile(os.environ.get("RELAY_FUZZ_PROFILE", "relay-ci"))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def no_traceback(relay) -> None:
    output = "".join(relay.output)
    assert "Traceback" not in output, output[-3000:]


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
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


# --- 1. Only the chosen support person ------------------------------------------------
# Also: test_relay_server.py::test_other_support_person_is_refused_exactly_like_a_made_up_session,
# test_pairing.py::test_other_technician_gets_the_same_refusal_as_for_a_made_up_session,
# test_registered_session_appears_only_in_its_owners_queue.

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


@pytest.mark.parametrize("state", ["waiting", "active-with-control", "detached"])
def test_every_viewer_message_on_anothers_session_is_refused_like_a_made_up_one(relay, state):
    """Petur tries every session message on david's session: the answer is byte for byte the
    made-up session's, nothing reaches the agent, petur never sees the id, each is recorded."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        david, welcome, _ = await start_viewer(relay.ws_url)
        if state != "waiting":
            await david.send(message("accept", session=session))
            await next_of(david, "accepted")
            await next_of(agent, "accepted")
            await david.send(message("take_control", session=session))
            await next_of(agent, "control")
        if state == "detached":
            await david.close()  # the tab closed: the session waits for david to come back
            assert (await next_of(agent, "control"))["granted"] is False
        petur, _, petur_queue = await start_viewer(relay.ws_url, "petur")
        seen_by_petur = [json.dumps(petur_queue)]
        for kind, attempt in EVERY_SESSION_MESSAGE.items():
            await petur.send(attempt(session))
            real = await asyncio.wait_for(petur.recv(), WAIT_S)
            await petur.send(attempt(MADE_UP))
            fake = await asyncio.wait_for(petur.recv(), WAIT_S)
            assert real == fake, kind
            assert json.loads(real) == REFUSAL, kind
            seen_by_petur += [real, fake]
        # Nothing reached the agent: the next thing it gets is what david does now.
        if state == "waiting":
            await david.send(message("accept", session=session))
            assert (await receive(agent))["type"] == "accepted"
        elif state == "active-with-control":
            await david.send(message("ack", session=session, seq=7))
            assert await receive(agent) == {"type": "ack", "session": session, "seq": 7}
        else:
            again = await open_ws(relay.ws_url + "/ws/viewer")
            await again.send(viewer_hello(token=welcome["token"]))
            await next_of(again, "queue")
            await again.send(message("accept", session=session))
            assert await receive(agent) == {"type": "refresh", "session": session, "monitor": 0}
        await agent.send(message("close", reason=""))
        await petur.send(message("ping", t=1))
        while (data := await asyncio.wait_for(petur.recv(), WAIT_S)) != '{"type":"pong","t":1}':
            seen_by_petur.append(data)
        assert not any(session in text for text in seen_by_petur)
        return session

    session = run(scenario())
    refused = [e for e in relay_events(relay) if e[2] == "refused"]
    assert len(refused) == 2 * len(EVERY_SESSION_MESSAGE)
    assert sorted(e[1] for e in refused) == sorted([session, MADE_UP] * len(EVERY_SESSION_MESSAGE))
    for kind in EVERY_SESSION_MESSAGE:
        assert sum(f"petur tried {kind} " in e[3] for e in refused) == 2, kind


def test_ended_session_is_refused_even_to_its_owner(relay):
    """After the end, david's own messages about it get the made-up session's answer."""

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("end", session=session, reason="done"))
        await next_of(viewer, "ended")
        for attempt in EVERY_SESSION_MESSAGE.values():
            await viewer.send(attempt(session))
            reply = await receive(viewer)
            if reply.get("code") == "no-control":  # first input after the end: not forwarded
                reply = await receive(viewer)
            assert reply == REFUSAL
        assert (await closed_code(agent))[0] == 1000

    run(scenario())


# --- 4. Cross-site websocket hijacking ------------------------------------------------
# Also: test_relay_server.py::test_viewer_websocket_from_a_foreign_origin_is_refused,
# test_agent_endpoint_refuses_browsers, test_extra_origin_is_accepted.

FOREIGN_ORIGINS = [
    "http://evil.test",
    "null",
    "",
    "http://127.0.0.1.evil.test:{port}",
    "http://127.0.0.1:{port}.evil.test",
    "http://evil-127.0.0.1:{port}",
    "http://127.0.0.1:{port}@evil.test",
    "https://127.0.0.1:{port}",
    "ws://127.0.0.1:{port}",
    "http://127.0.0.1:{other}",
    "http://127.0.0.1",
    "http://127.0.0.2:{port}",
    "http://localhost:{port}",
    "http://127.0.0.1:{port}/",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_gets_403_before_any_websocket_data(relay, origin):
    """Other sites, null, look-alike hosts, another scheme or port: 403 and the connection
    closes; no upgrade, so no session data can flow."""
    value = origin.format(port=relay.port, other=relay.port + 1)
    reply = raw_http(relay.port, upgrade_request(relay.port, "/ws/viewer", f"Origin: {value}"))
    assert status_of(reply) == 403, reply[:200]
    assert b"Upgrade:" not in reply and b"origin not allowed" in reply


def test_two_origin_headers_are_refused_even_if_one_is_right(relay):
    """An upgrade with the right Origin and a second, foreign one gets 403."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, "/ws/viewer", f"Origin: http://127.0.0.1:{relay.port}",
        "Origin: http://evil.test"))
    assert status_of(reply) == 403


@pytest.mark.parametrize("origin", ["null", "http://127.0.0.1:{port}", "http://evil.test", ""])
def test_agent_endpoint_refuses_any_browser_origin(relay, origin):
    """The agent endpoint answers 403 to anything carrying an Origin header (browsers do)."""
    value = origin.format(port=relay.port)
    reply = raw_http(relay.port, upgrade_request(relay.port, "/ws/agent", f"Origin: {value}"))
    assert status_of(reply) == 403 and b"Upgrade:" not in reply


def test_relays_own_origin_upgrades(relay):
    """Control: the relay's own origin gets 101 on the viewer endpoint."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, "/ws/viewer", f"Origin: http://127.0.0.1:{relay.port}"), read_all=False)
    assert status_of(reply) == 101


# --- 5. No route around login ---------------------------------------------------------
# Public (no login): GET of the viewer's files on the allow-list ("/" = index.html, and
# "/<name>" for each regular, non-symlink file of viewer/ named [A-Za-z0-9][A-Za-z0-9._-]*
# with extension .html .js .css .svg .png .ico .wav), /healthz, /download and
# /download/<name> for the files of --downloads. The two websocket endpoints /ws/agent and
# /ws/viewer upgrade without a login, but answer nothing but an error to anything other
# than a hello; the viewer's needs a password or a live token.
# Also: test_relay_server.py::test_path_tricks_get_404, test_files_health_and_headers.

PATH_VARIANTS = [
    "/index.html/", "/%2e%2e/pyproject.toml", "/%2E%2E/pyproject.toml", "/.%2e/protocol.py",
    "/..", "/../relay.sqlite3", "//index.html", "///etc/passwd", "/index.html;",
    "/index.html;.js", "/Index.html", "/INDEX.HTML", "/\\index.html", "/..\\pyproject.toml",
    "/%5c..%5cpyproject.toml", "/%252e%252e/pyproject.toml", "/%25%32%65%25%32%65/x",
    "/index.html%00", "/index.html%00.js", "/%00", "/index.html#x", "/./index.html",
    "/viewer.js/.", "/download/", "/download/../relay.sqlite3", "/download/%2e%2e/agent.exe",
    "/relay.sqlite3", "/relay-data/relay.sqlite3", "/.git/config", "/protocol.py",
    "/notes.txt", "/.hidden.js", "/link.js", "/healthz/", "/HEALTHZ", "/healthz;x",
    "/DOWNLOAD", "/ws/viewer/", "/ws//viewer", "/ws/viewer;x", "/WS/VIEWER", "/ws/viewer%2f",
    "/ws/%76iewer", "/ws/agent/", "http://127.0.0.1/index.html", "*",
]


@pytest.fixture
def file_relay(relay_factory, tmp_path):
    """A relay serving a viewer folder with files that must not be served beside ones that
    must, and a downloads folder."""
    folder = tmp_path / "viewer"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>viewer</title>")
    (folder / "viewer.js").write_text("export const x = 1;\n")
    (folder / "notes.txt").write_text("SECRET-NOTES")
    (folder / ".hidden.js").write_text("SECRET-HIDDEN")
    (tmp_path / "outside.js").write_text("SECRET-OUTSIDE")
    (folder / "link.js").symlink_to(tmp_path / "outside.js")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "agent.exe").write_bytes(b"MZ")
    return relay_factory("--viewer-dir", str(folder), "--downloads", str(downloads))


@pytest.mark.parametrize("path", PATH_VARIANTS)
def test_path_variants_are_refused(file_relay, path):
    """Every path not exactly on the allow-list is refused (404, or 400 when malformed), as a
    plain GET and as a websocket upgrade; never a file's content."""
    port = file_relay.port
    plain_get = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("latin-1")
    for request in (plain_get, upgrade_request(port, path)):
        reply = raw_http(port, request)
        assert status_of(reply) in (400, 404), reply[:200]
        assert b"SECRET" not in reply and b"SQLite" not in reply


def test_raw_nul_and_other_methods_are_refused(file_relay):
    """A NUL byte in the request line, POST, PUT, HEAD and OPTIONS get no file."""
    port = file_relay.port
    requests = ["GET /index.html\0 HTTP/1.1\r\nHost: x\r\n\r\n"] + [
        f"{method} /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        for method in ("POST", "PUT", "HEAD", "OPTIONS", "DELETE")]
    for request in requests:
        reply = raw_http(port, request.encode("latin-1"))
        expected = (400, 404) if "\0" in request else (405,)
        assert status_of(reply) in expected, (request, reply[:200])
        assert b"<title>viewer" not in reply


def test_only_the_allow_list_is_served(file_relay):
    """Control for the variants above: exactly these paths answer 200."""
    port = file_relay.port
    for path in ("/", "/index.html", "/viewer.js", "/healthz", "/download",
                 "/download/agent.exe"):
        reply = raw_http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(reply) == 200, path


@pytest.mark.parametrize("kind", [
    "accept", "take_control", "key", "end", "ping", "logout", "refresh", "ack", "text",
])
def test_viewer_messages_before_login_get_nothing(relay, kind):
    """Any message but a viewer hello as the first one: protocol error and close 1008,
    no queue, no session data."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        ws = await open_ws(relay.ws_url + "/ws/viewer")
        attempt = EVERY_SESSION_MESSAGE.get(kind, lambda s: message(kind, t=1) if kind == "ping"
                                            else message(kind))(session)
        await ws.send(attempt)
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == "protocol"
        assert (await closed_code(ws))[0] == 1008
        assert session not in json.dumps(reply)
        await agent.send(message("ping", t=1))  # agents may not: proves the agent got nothing
        assert (await receive(agent))["code"] == "protocol"

    run(scenario())


def test_secrets_of_other_kinds_are_not_viewer_logins(relay):
    """A session id, an agent's resume secret, an empty password or a made-up token do not
    log a viewer in."""

    async def scenario():
        _, registered = await start_agent(relay.ws_url)
        for hello in (viewer_hello(token=registered["session"]),
                      viewer_hello(token=registered["resume"]),
                      viewer_hello(token="A" * 43),
                      json.dumps({"type": "hello", "role": "viewer", "version": 1,
                                  "user": "david", "password": ""})):
            ws = await open_ws(relay.ws_url + "/ws/viewer")
            await ws.send(hello)
            reply = await receive(ws)
            assert reply["type"] == "error" and reply["code"] in ("login-expired", "protocol")
            assert (await closed_code(ws))[0] == 1008

    run(scenario())
