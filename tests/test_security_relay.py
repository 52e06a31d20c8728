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
import tracemalloc
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
    next_frame,
    next_of,
    open_ws,
    receive,
    relay_events,
    run,
    session_with_a_viewer_that_stops_reading,
    start_agent,
    start_viewer,
    viewer_hello,
    without_receipt,
)
from websockets.exceptions import ConnectionClosed

import protocol
from relay import limits, server
from relay.accounts import (
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    DB_FILE,
)
from relay.pairing import Pairing

MADE_UP = "madeUpSessionId0000000"
REFUSAL = {"type": "error", "code": "no-such-session",
           "message": "That session is no longer available."}

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
                      json.dumps({"type": "hello", "role": "viewer",
                                  "version": protocol.PROTOCOL_VERSION,
                                  "user": "david", "password": ""})):
            ws = await open_ws(relay.ws_url + "/ws/viewer")
            await ws.send(hello)
            reply = await receive(ws)
            assert reply["type"] == "error" and reply["code"] in ("login-expired", "protocol")
            assert (await closed_code(ws))[0] == 1008

    run(scenario())


# --- 6. Logins ------------------------------------------------------------------------
# Also: test_accounts.py::test_password_hash_is_argon2id_at_or_above_owasp_minimum,
# test_unknown_user_costs_the_same_hashing_as_a_wrong_password;
# test_login_limits.py (guessing, lockout and its wait, through a real relay too);
# test_relay_server.py::test_wrong_user_and_wrong_password_get_the_same_answer.

OWASP_ARGON2ID = {"m": 19456, "t": 2, "p": 1}  # OWASP Password Storage Cheat Sheet minimum


def test_stored_hashes_are_argon2id_at_or_above_owasp_minimum(relay):
    """Every hash add-technician stored is argon2id with m >= 19 MiB, t >= 2, p >= 1."""
    with contextlib.closing(sqlite3.connect(relay.data / DB_FILE)) as db:
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM technicians")]
    assert len(hashes) == 2
    for stored in hashes:
        _, variant, version, params, _salt, _digest = stored.split("$")
        assert (variant, version) == ("argon2id", "v=19")
        cost = {k: int(v) for k, v in (kv.split("=") for kv in params.split(","))}
        assert all(cost[k] >= OWASP_ARGON2ID[k] for k in OWASP_ARGON2ID), cost
    assert (ARGON2_MEMORY_KIB, ARGON2_TIME_COST, ARGON2_PARALLELISM) >= (19456, 2, 1)


async def login_attempt(relay, user: str, password: str, source: str = "127.0.0.1"
                        ) -> tuple[dict, float]:
    """One password login from a source address: the answer and how long it took."""
    ws = await open_ws(relay.ws_url + "/ws/viewer", local_addr=(source, 0))
    started = time.perf_counter()
    await ws.send(viewer_hello(user, password))
    reply = await receive(ws)
    elapsed = time.perf_counter() - started
    await ws.close()
    return reply, elapsed


def test_wrong_user_and_wrong_password_take_the_same_time(relay):
    """Interleaved attempts: the medians of an unknown user and a wrong password agree
    within a factor of two (both do the full argon2 work), and the answers are identical."""
    rounds = 10

    async def scenario():
        unknown, wrong, answers = [], [], set()
        for i in range(rounds):
            reply, elapsed = await login_attempt(relay, f"nobody{i}", "wrong-password")
            unknown.append(elapsed)
            answers.add(json.dumps(reply))
            reply, elapsed = await login_attempt(relay, "david", "wrong-password")
            wrong.append(elapsed)
            answers.add(json.dumps(reply))
            reply, _ = await login_attempt(relay, "david", "david-pw")  # no throttling
            assert reply["type"] == "welcome"
        return unknown, wrong, answers

    unknown, wrong, answers = run(scenario())
    assert [json.loads(a) for a in answers] == [
        {"type": "error", "code": "login-failed",
         "message": "The user name or password is not correct."}]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 <= ratio <= 2.0, (ratio, unknown, wrong)
    assert "login-throttled" not in [e[2] for e in relay_events(relay)]


@pytest.mark.parametrize("change", ["disable-technician", "set-password"])
def test_account_change_closes_live_viewers_within_two_seconds(relay, change):
    """disable-technician or set-password: david's two live viewers are told login-expired
    and closed within 2 s of the command; petur's viewer is untouched; the token is dead."""

    async def scenario():
        first, welcome, _ = await start_viewer(relay.ws_url)
        second, _, _ = await start_viewer(relay.ws_url)
        petur, _, _ = await start_viewer(relay.ws_url, "petur")
        result = await asyncio.to_thread(relay.cli, change, "david", password="new-password-1")
        assert result.returncode == 0, result.stderr
        changed = time.monotonic()
        for viewer in (first, second):
            assert (await next_of(viewer, "error"))["code"] == "login-expired"
            assert (await closed_code(viewer))[0] == 1008
        took = time.monotonic() - changed
        await petur.send(message("ping", t=2))
        assert await next_of(petur, "pong") == {"type": "pong", "t": 2}
        late = await open_ws(relay.ws_url + "/ws/viewer")
        await late.send(viewer_hello(token=welcome["token"]))
        assert (await receive(late))["code"] == "login-expired"
        return took

    assert run(scenario()) <= 2.0


# --- 7. Bounded resources -------------------------------------------------------------
# Also: test_relay_server.py::test_message_over_the_size_limit_closes_with_1009,
# test_viewer_that_stops_reading_neither_stalls_the_agent_nor_queues_frames;
# test_pairing.py::test_waiting_sessions_per_address_are_capped,
# test_input_is_rate_limited_in_order.

MIB = 1024 * 1024


def test_oversized_messages_close_1009_and_memory_stays_flat(relay):
    """Twenty messages one byte over the limit, on both endpoints: each closed with 1009,
    and the relay's resident memory grows by less than 24 MiB over them."""
    oversized = b"\0" * (protocol.MAX_MESSAGE_BYTES + 1)

    async def attempt(endpoint: str) -> int | None:
        if endpoint == "agent":
            ws, _ = await start_agent(relay.ws_url)
        else:
            ws, _, _ = await start_viewer(relay.ws_url)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(oversized)
        return (await closed_code(ws))[0]

    async def scenario():
        for endpoint in ("agent", "viewer"):  # warm up the allocator
            assert await attempt(endpoint) == 1009
        before = rss_bytes(relay.process.pid)
        for endpoint in ("agent", "viewer") * 10:
            assert await attempt(endpoint) == 1009
        return before, rss_bytes(relay.process.pid)

    before, after = run(scenario())
    assert after - before < 24 * MIB, (before, after)
    no_traceback(relay)


def test_viewers_not_yet_logged_in_cannot_park_large_messages(relay):
    """A viewer may send only control-sized messages, even before login (a login refused
    by the limits is answered at once, so nothing waits there any more): connections that
    send frame-sized data before their hello are closed with 1009 at once, and the relay's
    memory stays flat."""
    big = b"\0" * (protocol.MAX_CONTROL_BYTES + 1)

    async def scenario():
        before = rss_bytes(relay.process.pid)
        parked = []
        for _ in range(8):
            ws = await open_ws(relay.ws_url + "/ws/viewer")
            with contextlib.suppress(ConnectionClosed):
                for _ in range(8):
                    await ws.send(big)
            parked.append(ws)
        codes = [(await closed_code(ws))[0] for ws in parked]
        return codes, before, rss_bytes(relay.process.pid)

    codes, before, after = run(scenario())
    assert codes == [1009] * 8
    assert after - before < 24 * MIB, (before, after)
    no_traceback(relay)


@pytest.mark.parametrize("endpoint", ["agent", "viewer"])
def test_compression_is_never_negotiated(relay, endpoint):
    """A client offering permessage-deflate gets an upgrade without any extension."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, f"/ws/{endpoint}",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Extensions: permessage-deflate"), read_all=False)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert status_of(reply) == 101
    assert b"sec-websocket-extensions" not in head


def test_compressed_frame_is_refused(relay):
    """A frame with the compression bit (RSV1) set anyway closes the connection with 1002."""

    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent")
        masked = bytes(b ^ m for b, m in zip(b"{}", b"\0\0\0\0", strict=False))
        ws.transport.write(bytes([0xC1, 0x82]) + b"\0\0\0\0" + masked)  # FIN|RSV1, text
        return (await closed_code(ws))[0]

    assert run(scenario()) == 1002
    no_traceback(relay)


@dataclass
class StallCrowd:
    """Raw TCP clients that open and then stall: half a request line and nothing, a request
    dribbled a byte at a time, or a finished upgrade and no hello. Runs in a thread."""

    port: int
    stalled: int
    dribbling: int
    silent_upgrades: int
    closed_at: dict[int, float] = field(default_factory=dict)
    opened_at: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def run(self, deadline_s: float) -> None:
        try:
            self._run(deadline_s)
        except BaseException as error:  # reported by the test
            self.error.append(error)
            self.ready.set()

    def _run(self, deadline_s: float) -> None:
        selector = selectors.DefaultSelector()
        sockets: list[socket.socket] = []
        dribble = upgrade_request(self.port, "/ws/agent")
        try:
            for i in range(self.stalled + self.dribbling + self.silent_upgrades):
                # Each from its own address: the per-address cap on connections before their
                # hello is proven elsewhere; here every one must run into the timeouts.
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S,
                                                source_address=(source(i), 0))
                if i < self.stalled:
                    sock.sendall(b"GET /ws/agent HT")
                elif i >= self.stalled + self.dribbling:
                    sock.sendall(upgrade_request(self.port, "/ws/agent"))
                    reply = b""
                    while b"\r\n\r\n" not in reply:
                        reply += sock.recv(4096)
                    assert status_of(reply) == 101
                sock.setblocking(False)
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_READ, i)
            self.opened_at = time.monotonic()
            self.ready.set()
            sent = 0
            end = self.opened_at + deadline_s
            while len(self.closed_at) < len(sockets) and time.monotonic() < end:
                for key, _ in selector.select(timeout=0.5):
                    if self._closed(key.fileobj):  # type: ignore[arg-type]
                        self.closed_at[key.data] = time.monotonic()
                        selector.unregister(key.fileobj)
                if sent < len(dribble) - 4:  # never the final CRLF CRLF
                    for i in range(self.stalled, self.stalled + self.dribbling):
                        if i not in self.closed_at:
                            with contextlib.suppress(OSError):
                                sockets[i].send(dribble[sent:sent + 1])
                    sent += 1
        finally:
            selector.close()
            for sock in sockets:
                sock.close()

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        """EOF, a reset, an HTTP error answer or a websocket close frame (opcode 8)."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return not data or data.startswith(b"HTTP/1.1 4") or b"\x88" in data[:2] or (
            b'"code":"protocol"' in data)


def test_500_stalled_connections_are_closed_while_a_real_session_works(relay_factory):
    """500 connections that stall or dribble before or after the upgrade are all closed
    within the handshake/hello timeout (3 s here) plus a margin, while a real agent and
    viewer connect, accept, stream and type."""
    timeout_s = 3.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < 4096 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))  # the relay inherits it
    relay = relay_factory("--handshake-timeout", str(timeout_s), "--hello-timeout",
                          str(timeout_s))
    relay.add_technician("david", "David", "david-pw")
    limits = Path(f"/proc/{relay.process.pid}/limits").read_text()
    open_files = int(next(line for line in limits.splitlines()
                          if line.startswith("Max open files")).split()[3])
    assert open_files >= 1200, f"the relay may open only {open_files} files"
    crowd = StallCrowd(relay.port, stalled=200, dribbling=150, silent_upgrades=150)
    worker = threading.Thread(target=crowd.run, args=(timeout_s + 20,), daemon=True)
    worker.start()

    async def scenario():
        await asyncio.to_thread(crowd.ready.wait, WAIT_S * 2)
        assert not crowd.error, crowd.error
        agent, viewer, session = await active_session(relay)
        update = frame(1, 20_000)
        await agent.send(update)
        while await receive(viewer) != update:
            pass
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        await viewer.send(message("key", session=session, code="KeyA", key="a", down=True))
        assert (await next_of(agent, "key"))["code"] == "KeyA"

    run(scenario())
    worker.join(timeout_s + 40)
    assert not crowd.error, crowd.error
    assert len(crowd.closed_at) == 500, f"{500 - len(crowd.closed_at)} still open"
    slowest = max(crowd.closed_at.values()) - crowd.opened_at
    assert slowest <= timeout_s + 10, slowest
    no_traceback(relay)


def test_viewer_that_never_reads_does_not_grow_relay_memory(relay):
    """200 MiB of frames for a viewer that reads nothing: the agent is still read and the
    relay's resident memory grows by less than 48 MiB."""

    async def scenario():
        agent, _, _ = await session_with_a_viewer_that_stops_reading(relay)
        before = rss_bytes(relay.process.pid)
        for seq in range(200):
            await agent.send(frame(seq, MIB, monitor=1))
        await asyncio.wait_for(await agent.ping(), WAIT_S)  # the relay still reads the agent
        return before, rss_bytes(relay.process.pid)

    before, after = run(scenario())
    assert after - before < 48 * MIB, (before, after)


def test_waiting_sessions_per_address_are_capped_over_the_wire(relay):
    """Three waiting sessions from 127.0.0.2; the fourth is refused too-many-waiting; another
    address is not affected; when one ends, 127.0.0.2 may register again."""
    cap = protocol.MAX_WAITING_PER_ADDRESS

    async def register(source: str):
        ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(source, 0))
        await ws.send(agent_hello())
        return ws, await receive(ws)

    async def scenario():
        agents = [await register("127.0.0.2") for _ in range(cap)]
        assert all(reply["type"] == "registered" for _, reply in agents)
        refused, reply = await register("127.0.0.2")
        assert reply["code"] == "too-many-waiting"
        assert (await closed_code(refused))[0] == 1008
        assert (await register("127.0.0.3"))[1]["type"] == "registered"
        await agents[0][0].send(message("close", reason=""))
        await closed_code(agents[0][0])
        assert (await register("127.0.0.2"))[1]["type"] == "registered"

    run(scenario())


def test_trusted_proxy_forwarded_address_is_the_client_address(relay_factory):
    """Behind --trusted-proxy the cap and the ledger use the last X-Forwarded-For address;
    from any other peer, or when it is not an IP address, the header is ignored."""
    relay = relay_factory("--trusted-proxy", "127.0.0.1")
    relay.add_technician("david", "David", "david-pw")
    cap = protocol.MAX_WAITING_PER_ADDRESS

    async def register(source: str, forwarded: str):
        ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(source, 0),
                           additional_headers={"X-Forwarded-For": forwarded})
        await ws.send(agent_hello())
        return (await receive(ws)).get("type", "")

    async def scenario():
        for _ in range(cap):
            assert await register("127.0.0.1", "10.9.9.9, 198.51.100.1") == "registered"
        assert await register("127.0.0.1", "10.9.9.9, 198.51.100.1") == "error"
        assert await register("127.0.0.1", "198.51.100.2") == "registered"
        assert await register("127.0.0.2", "198.51.100.3") == "registered"
        assert await register("127.0.0.1", "not-an-address") == "registered"

    run(scenario())
    addresses = [row["address"] for row in ledger_csv(relay)]
    assert addresses == ["198.51.100.1"] * cap + ["198.51.100.2", "127.0.0.2", "127.0.0.1"]


def test_input_rate_is_capped_without_reordering(relay):
    """2000 text events at once: fewer reach the agent, in their order, and the viewer is
    told rate-limited."""
    count = 2000

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        for i in range(count):
            await viewer.send(message("text", session=session, text=str(i)))
        await viewer.send(message("ack", session=session, seq=1))  # marks the end
        delivered = []
        while (data := await receive(agent))["type"] != "ack":
            if data["type"] == "text":
                delivered.append(int(data["text"]))
        assert (await next_of(viewer, "error"))["code"] == "rate-limited"
        return delivered

    delivered = run(scenario())
    assert protocol.INPUT_BURST <= len(delivered) < count
    assert delivered == sorted(delivered) and delivered[:protocol.INPUT_BURST] == list(
        range(protocol.INPUT_BURST))


# --- 7, continued: strangers and floods (issue 11) ------------------------------------
# Also: test_pairing.py::test_waiting_sessions_per_subnet_are_capped_well_above_one_address,
# test_queue_lists_the_newest_sessions_and_counts_the_rest,
# test_refused_hellos_fill_the_ledger_only_up_to_a_budget_then_one_summary,
# test_frames_beyond_the_update_window_are_dropped_and_a_full_image_asked_once,
# test_a_rectangle_outside_the_announced_monitor_is_a_protocol_error.


async def agent_from(relay, address: str, technician: str = "david", **hello: Any
                     ) -> tuple[Any, dict]:
    ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(address, 0))
    await ws.send(agent_hello(technician, **hello))
    return ws, await receive(ws)  # type: ignore[return-value]


def raw_upgrade(port: int, address: str, path: str = "/ws/agent") -> tuple[socket.socket, int]:
    """A websocket upgrade from ``address`` over a plain socket: the socket and the status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S,
                                    source_address=(address, 0))
    sock.sendall(upgrade_request(port, path))
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return sock, status_of(reply)


def closed_by_peer(sock: socket.socket) -> bool:
    """Read until the relay closes: True on EOF, a reset or a websocket close frame."""
    sock.settimeout(WAIT_S)
    try:
        while data := sock.recv(65536):
            if b"\x88" in data[:2]:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("endpoint", ["agent", "viewer"])
@pytest.mark.parametrize("change", [{"screens": [SCREENS[0]] * 1000}, {"user": "U" * 60_000}],
                         ids=["thousands of monitors", "huge user"])
def test_a_first_message_larger_than_a_hello_is_refused_with_1009(relay, endpoint, change):
    """Before its hello a connection may send only a hello's size: a hello with thousands of
    monitors or a 60,000-character name (both within a control message's size) closes
    with 1009."""
    hello = {**json.loads(agent_hello()), **change}
    assert protocol.MAX_HELLO_BYTES < len(json.dumps(hello)) < protocol.MAX_CONTROL_BYTES

    async def scenario():
        ws = await open_ws(relay.ws_url + f"/ws/{endpoint}")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(hello))
        return (await closed_code(ws))[0]

    assert run(scenario()) == 1009
    no_traceback(relay)


def test_connections_parking_big_frames_before_hello_are_closed_and_memory_stays_flat(relay):
    """60 connections from two addresses each send a websocket frame announcing 1 MiB and
    all of it but its last byte, before any hello: each is closed at once (the frame is
    refused on its length) and the relay's memory grows by less than 16 MiB."""
    size = MIB
    header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0"  # mask 0

    def attack(address: str) -> bool:
        sock, status = raw_upgrade(relay.port, address)
        with sock:
            assert status == 101
            with contextlib.suppress(OSError):  # the relay may close before it all went out
                sock.sendall(header + b"\0" * (size - 1))
            return closed_by_peer(sock)

    async def scenario():
        before = rss_bytes(relay.process.pid)
        addresses = ["127.0.0.8"] * 30 + ["127.0.0.9"] * 30
        closed = await asyncio.gather(*(asyncio.to_thread(attack, a) for a in addresses))
        return closed, before, rss_bytes(relay.process.pid)

    closed, before, after = run(scenario())
    assert all(closed)
    assert after - before < 16 * MIB, (before, after)
    no_traceback(relay)


def test_connections_before_hello_are_capped_per_address_and_the_rest_still_served(relay):
    """One address holding MAX_UNAUTHENTICATED_PER_ADDRESS upgrades without a hello gets 503
    for the next one; another address still connects and registers; once one of the idle
    connections goes away, the first address may connect again."""
    cap = limits.MAX_UNAUTHENTICATED_PER_ADDRESS
    idle = [raw_upgrade(relay.port, "127.0.0.10") for _ in range(cap)]
    assert [status for _, status in idle] == [101] * cap
    refused, status = raw_upgrade(relay.port, "127.0.0.10")
    refused.close()
    assert status == 503

    async def scenario():
        _, reply = await agent_from(relay, "127.0.0.11")
        assert reply["type"] == "registered"

    run(scenario())
    idle[0][0].close()
    deadline = time.monotonic() + WAIT_S  # the relay notices the close on its own time
    while (status := raw_upgrade(relay.port, "127.0.0.10"))[1] != 101:
        status[0].close()
        assert time.monotonic() < deadline, "the freed slot was never given back"
        time.sleep(0.05)
    for sock, _ in [*idle, status]:
        sock.close()
    no_traceback(relay)


def test_connections_before_hello_are_capped_in_total(relay_factory):
    """With room for 10 connections before their hello, 10 idle ones from 10 addresses make
    an 11th address wait (503); a registered agent does not count."""
    relay = relay_factory("--max-unauthenticated", "10")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        _, reply = await agent_from(relay, "127.0.0.30")
        assert reply["type"] == "registered"

    run(scenario())
    idle = [raw_upgrade(relay.port, f"127.0.0.{40 + i}") for i in range(10)]
    assert [status for _, status in idle] == [101] * 10
    refused, status = raw_upgrade(relay.port, "127.0.0.60")
    for sock, _ in [*idle, (refused, status)]:
        sock.close()
    assert status == 503
    no_traceback(relay)


def test_hellos_are_throttled_per_address_but_answered_at_once(relay):
    """One address guessing support people's ids gets HELLO_BURST answers, then a plain
    "too many" sentence at once for every further guess, real ids included; a customer
    elsewhere still gets registered, or for an unknown id the plain sentence, at once."""
    guesses = limits.HELLO_BURST + 30

    async def scenario():
        codes = []
        for i in range(guesses):
            _, reply = await agent_from(relay, "127.0.0.12", f"guess{i}")
            codes.append(reply.get("code"))
        _, reply = await agent_from(relay, "127.0.0.12", "david")
        assert reply["code"] == "too-many-attempts" and "try again" in reply["message"]
        _, elsewhere = await agent_from(relay, "127.0.0.13", "david")
        _, unknown = await agent_from(relay, "127.0.0.13", "nobody")
        return codes, elsewhere, unknown

    codes, elsewhere, unknown = run(scenario())
    burst = limits.HELLO_BURST
    # The bucket refills while the guesses run: a few more may get through, never most.
    assert codes[:burst] == ["technician-unknown"] * burst
    assert codes.count("too-many-attempts") >= guesses - burst - 10
    assert elsewhere["type"] == "registered"
    assert unknown["code"] == "technician-unknown" and "not available" in unknown["message"]
    no_traceback(relay)


def test_a_flood_of_refused_hellos_writes_a_bounded_number_of_rows_and_lines(relay):
    """300 refused hellos (unknown ids and throttled ones) from 10 addresses: the ledger
    gets at most the refusal budget of rows, and the log a bounded number of lines."""

    async def scenario():
        for i in range(300):
            ws, reply = await agent_from(relay, source(i % 10), f"nobody{i}")
            assert reply["type"] == "error", reply
            await closed_code(ws)

    run(scenario())
    refused = [e for e in relay_events(relay) if e[2] == "refused"]
    assert len(refused) <= limits.REFUSAL_LINES_PER_WINDOW, len(refused)
    lines = [line for line in relay.output
             if "technician nobody" in line or "throttled" in line]
    assert len(lines) <= 2 * limits.REFUSAL_LINES_PER_WINDOW, "".join(lines)
    no_traceback(relay)


def test_a_flood_of_fake_customers_cannot_hide_the_real_one(relay):
    """MAX_QUEUE_ENTRIES + 20 fake customers from many addresses: the support person's
    queue lists the newest, the real customer who called last among them, and counts
    the rest; a /24 holds at most MAX_WAITING_PER_SUBNET of them."""
    per_subnet = protocol.MAX_WAITING_PER_SUBNET
    fakes = protocol.MAX_QUEUE_ENTRIES + 20

    async def scenario():
        viewer, _, _ = await start_viewer(relay.ws_url)
        for i in range(fakes):  # per_subnet of them in each /24
            address = f"127.0.{1 + i // per_subnet}.{1 + i % per_subnet}"
            _, reply = await agent_from(relay, address, machine=f"FAKE-{i}")
            assert reply["type"] == "registered", (i, reply)
        _, reply = await agent_from(relay, "127.0.1.200", machine="FAKE-over-the-cap")
        assert reply["code"] == "too-many-waiting"
        _, real = await agent_from(relay, "127.0.200.1", machine="REAL-CUSTOMER")
        while True:
            queue = await next_of(viewer, "queue")
            if queue["sessions"] and queue["sessions"][-1]["session"] == real["session"]:
                return queue

    queue = run(scenario())
    assert len(queue["sessions"]) == protocol.MAX_QUEUE_ENTRIES
    assert queue["sessions"][-1]["machine"] == "REAL-CUSTOMER"
    assert queue["more"] == fakes + 1 - protocol.MAX_QUEUE_ENTRIES
    no_traceback(relay)


def test_churning_agents_do_not_push_a_slow_viewer_off_its_link(relay):
    """200 customers wait (a queue of ~45 KB); one more connects and leaves 200 times. A
    viewer that reads nothing meanwhile is not closed and answers a ping afterwards, and a
    viewer that reads gets at most a few queue updates a second."""
    waiting = protocol.MAX_QUEUE_ENTRIES
    per_subnet = protocol.MAX_WAITING_PER_SUBNET

    async def scenario():
        for i in range(waiting):
            _, reply = await agent_from(relay, f"127.0.{1 + i // per_subnet}.{1 + i % per_subnet}",
                                        machine=f"M{i:03}" + "x" * 60, user="u" * 64)
            assert reply["type"] == "registered"
        slow, _, _ = await start_viewer(relay.ws_url, max_queue=1)
        reading, _, _ = await start_viewer(relay.ws_url)
        updates = 0

        async def read() -> None:
            nonlocal updates
            while True:
                updates += (await next_of(reading, "queue")) is not None

        reader = asyncio.create_task(read())
        started = time.monotonic()
        for i in range(200):  # a fresh address when the throttle would say no
            ws, reply = await agent_from(relay, f"127.0.250.{1 + i // 15}")
            assert reply["type"] == "registered", reply
            await ws.send(message("close", reason=""))
            await closed_code(ws)
        elapsed = time.monotonic() - started
        reader.cancel()
        await slow.send(message("ping", t=1))
        while (data := await receive(slow)) != {"type": "pong", "t": 1}:
            assert not isinstance(data, dict) or data["type"] in ("queue", "pong"), data
        return updates, elapsed

    updates, elapsed = run(scenario())
    assert updates <= elapsed / server.QUEUE_INTERVAL_S + 3, (updates, elapsed)
    no_traceback(relay)


def test_frames_beyond_the_update_window_never_reach_the_viewer(relay):
    """An agent sending ten updates without waiting for acknowledgements: the viewer gets
    MAX_UPDATES_IN_FLIGHT of them, the agent one refresh, and after its full image and
    the viewer's acks the stream goes on."""
    full = protocol.FLAG_LAST | protocol.FLAG_FULL

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await agent.send(frame(0, flags=full))
        for seq in range(1, 10):
            await agent.send(frame(seq))
        await agent.send(message("cursor", monitor=1, x=1, y=1))  # a marker after them
        got = []
        while not isinstance(data := await receive(viewer), dict) or data["type"] != "cursor":
            got += [protocol.decode_frame(data).seq] if isinstance(data, bytes) else []
        assert got == list(range(protocol.MAX_UPDATES_IN_FLIGHT))
        assert (await next_of(agent, "refresh"))["monitor"] == 1
        await agent.send(frame(10, flags=full))
        assert protocol.decode_frame(await next_frame(viewer)).seq == 10
        await viewer.send(message("ack", session=session, seq=10))
        await next_of(agent, "ack")
        await agent.send(frame(11))
        assert protocol.decode_frame(await next_frame(viewer)).seq == 11

    run(scenario())
    no_traceback(relay)


def test_tiny_frames_queued_for_a_viewer_cost_no_more_than_the_bound():
    """A viewer that does not read, sent 28-byte rectangles: what its queue holds stays
    within MAX_PENDING_FRAME_BYTES of memory, each message counted with its bookkeeping."""
    link = server.Link(None, "viewer", "192.0.2.1", lambda _: None,  # type: ignore[arg-type]
                       lambda _, __: None)
    tiny = frame(1, 8)
    assert len(tiny) == 28
    tracemalloc.start()
    try:
        for _ in range(server.MAX_PENDING_FRAME_BYTES // 28 + 1000):
            link.send_frame(bytes(bytearray(tiny)), 1)  # a fresh object, as a socket gives
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < server.MAX_PENDING_FRAME_BYTES * 1.1, peak / MIB


def test_the_relay_raises_its_open_file_limit_to_the_hard_limit(relay_factory):
    """Started with a soft limit of 256 open files, the relay runs with the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the relay inherits it
    try:
        relay = relay_factory()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits_text = Path(f"/proc/{relay.process.pid}/limits").read_text()
    line = next(line for line in limits_text.splitlines() if line.startswith("Max open files"))
    running_soft, running_hard = line.split()[3:5]
    assert running_soft == running_hard != "256", line


def test_refusals_under_a_flood_are_logged_at_a_bounded_rate(relay_factory):
    """With room for 2 connections before their hello, 300 more attempts are refused with
    503 and the log gets at most the budget of lines about them."""
    relay = relay_factory("--max-unauthenticated", "2")
    idle = [raw_upgrade(relay.port, "127.0.0.70") for _ in range(2)]
    statuses = []
    for i in range(300):
        sock, status = raw_upgrade(relay.port, source(i % 50))
        sock.close()
        statuses.append(status)
    for sock, _ in idle:
        sock.close()
    assert statuses == [503] * 300
    lines = [line for line in relay.output if "refused" in line]
    assert len(lines) <= limits.REFUSAL_LINES_PER_WINDOW, len(lines)
    no_traceback(relay)


# --- 8. Agent data is hostile data (relay side) ---------------------------------------

HOSTILE_HELLOS = {
    "escape sequence in machine": ({"machine": "PC\x1b[31mred"}, "machine contains control"),
    "newline in user": ({"user": "anna\nroot"}, "user contains control"),
    "NUL in machine": ({"machine": "PC\x00"}, "machine contains control"),
    "right-to-left override": ({"user": "anna\u202egpj.exe"}, "user contains control"),
    "over-long machine": ({"machine": "M" * 65}, "machine is longer than 64"),
    "machine is a number": ({"machine": 5}, "machine must be a string"),
    "user is a list": ({"user": ["anna"]}, "user must be a string"),
    "machine is null": ({"machine": None}, "machine must be a string"),
    "user is an object": ({"user": {"x": 1}}, "user must be a string"),
    "screen too wide": ({"screens": [{"x": 0, "y": 0, "width": 32768, "height": 800}] * 2},
                        "screen width must be between"),
    "screen astronomically tall": (
        {"screens": [{"x": 0, "y": 0, "width": 800, "height": 10**30}] * 2},
        "screen height must be between"),
    "negative width": ({"screens": [{"x": 0, "y": 0, "width": -1, "height": 800}] * 2},
                       "screen width must be between"),
    "fractional size": ({"screens": [{"x": 0, "y": 0, "width": 1.5, "height": 800}] * 2},
                        "screen width must be an integer"),
    "size as text": ({"screens": [{"x": 0, "y": 0, "width": "1280", "height": 800}] * 2},
                     "screen width must be an integer"),
    "too many monitors": ({"screens": [SCREENS[0]] * 18}, "1 to 16 monitors"),
    "no monitor": ({"screens": [SCREENS[0]]}, "1 to 16 monitors"),
    "screens not a list": ({"screens": "all"}, "screens must be a list"),
    "extra field in a screen": ({"screens": [{**SCREENS[0], "dpi": 96}] * 2},
                                "x, y, width and height"),
    "technician path": ({"technician": "../david"}, "technician must be"),
    "technician upper case": ({"technician": "DAVID"}, "technician must be"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HELLOS))
def test_hostile_agent_hello_is_refused_with_a_clear_error(relay, case):
    """Control characters, over-long or mistyped names, absurd sizes, too many monitors:
    an error naming the field, close 1008, no session and no ledger row."""
    changes, expected = HOSTILE_HELLOS[case]

    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent")
        fields = {**json.loads(agent_hello()), **changes}
        await ws.send(json.dumps(fields))
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == "protocol", reply
        assert expected in reply["message"], reply["message"]
        code, reason = await closed_code(ws)
        assert code == 1008 and reason.isprintable()
        _, _, queue = await start_viewer(relay.ws_url)
        assert queue["sessions"] == []

    run(scenario())
    assert ledger_csv(relay) == []
    no_traceback(relay)


@pytest.mark.parametrize(("case", "data"), [
    ("monitor layout with too many monitors", message("screens", screens=[SCREENS[0]] * 18)),
    ("cursor far outside", message("cursor", monitor=1, x=10**9, y=0)),
    ("frame header lying about its length", frame(1, 1000)[:-1]),
    ("frame header too short", b"\x01\x01"),
    ("frame for monitor 200", frame(1, 1000)[:2] + b"\xc8" + frame(1, 1000)[3:]),
    ("frame of an unknown kind", b"\x09" + frame(1, 1000)[1:]),
    ("frame with unknown flags", frame(1, 1000)[:1] + b"\x81" + frame(1, 1000)[2:]),
])
def test_hostile_agent_message_mid_session_ends_it_cleanly(relay, case, data):
    """After acceptance, a malformed agent message closes the agent with 1008 and ends the
    session (agent-lost) without reaching the viewer."""

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await agent.send(data)
        assert (await next_of(agent, "error"))["code"] == "protocol"
        assert (await closed_code(agent))[0] == 1008
        seen = []
        while not isinstance(got := await receive(viewer), dict) or got["type"] != "ended":
            seen.append(got)
        assert without_receipt(got) == {"type": "ended", "session": session, "by": "relay",
                                        "reason": "agent-lost"}
        assert all(isinstance(m, dict) and m["type"] in ("queue", "error") for m in seen), seen

    run(scenario())
    no_traceback(relay)


# --- 9. TLS (relay side) ---------------------------------------------------------------
# Also: test_relay_server.py::test_tls_serves_wss_and_https.


def old_tls_client() -> ssl.SSLContext:
    """A client that offers only TLS 1.0/1.1. OpenSSL 3's default security level forbids
    them even to offer, so this client lowers it (@SECLEVEL=0) on purpose; the control
    server below proves it really can speak TLS 1.1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def tls_version_against(port: int, client: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock, \
            client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        return tls.version() or ""


def test_tls_relay_refuses_tls_1_1_and_speaks_1_2_and_1_3(relay_factory, tmp_path):
    """--cert/--key: a TLS 1.0/1.1-only client fails the handshake (while a permissive
    server accepts the same client); TLS 1.2 and 1.3 clients get through."""
    cert, key = make_certificate(tmp_path)
    relay = relay_factory("--cert", str(cert), "--key", str(key))
    with pytest.raises(ssl.SSLError):
        tls_version_against(relay.port, old_tls_client())

    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve_one():
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), permissive.wrap_socket(conn, server_side=True):
                pass
        control = threading.Thread(target=serve_one)
        control.start()
        assert tls_version_against(listener.getsockname()[1], old_tls_client()) == "TLSv1.1"
        control.join(WAIT_S)

    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        client = ssl.create_default_context(cafile=str(cert))
        client.minimum_version = client.maximum_version = version
        assert tls_version_against(relay.port, client) == name


def test_tls_context_has_a_tls_1_2_minimum(tmp_path):
    """The relay's server context itself sets TLS 1.2 as the minimum version."""
    cert, key = make_certificate(tmp_path)
    assert server.tls_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2


# --- 10. Faults (relay side) -----------------------------------------------------------
# Also: test_relay_server.py::test_relay_killed_mid_session_closes_it_on_restart,
# test_sigterm_ends_live_sessions_and_tells_both_sides; test_ledger.py::
# test_sigkill_mid_session_loses_no_finished_row; test_pairing.py::
# test_active_agent_drop_can_resume_within_grace_once, test_detached_session_ends_after_grace.

FAST_PINGS = ("--ping-interval", "0.5", "--ping-timeout", "1")


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 to the relay. freeze() stops forwarding in both directions
    and keeps the sockets open: to both ends the network has gone silent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FreezableProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.flowing.set()
        await asyncio.sleep(0)

    def freeze(self) -> None:
        self.flowing.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


async def proxied_session(relay, proxy: FreezableProxy) -> tuple[Any, Any, dict]:
    """An agent through the proxy, accepted by david's viewer (direct), in control."""
    agent = await open_ws(f"ws://127.0.0.1:{proxy.port}/ws/agent", ping_interval=None)
    await agent.send(agent_hello())
    registered = await receive(agent)
    viewer, _, _ = await start_viewer(relay.ws_url)
    session = registered["session"]
    await viewer.send(message("accept", session=session))
    await next_of(agent, "accepted")
    await viewer.send(message("take_control", session=session))
    await next_of(agent, "control")
    await next_of(viewer, "control")
    return agent, viewer, registered


def test_agent_link_cut_resumes_within_grace_with_no_input_in_the_gap(relay_factory):
    """The agent's network goes silent: the relay notices by keepalive, keeps the session,
    drops control, forwards no input; the agent resumes with its secret; the ledger shows
    the gap and the resume; the session was never ended."""
    relay = relay_factory(*FAST_PINGS, "--grace", "30")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            session = registered["session"]
            proxy.freeze()
            assert (await next_of(viewer, "control"))["granted"] is False
            assert (await next_of(viewer, "error"))["code"] == "agent-reconnecting"
            await viewer.send(message("key", session=session, code="KeyQ", key="q", down=True))
            assert (await next_of(viewer, "error"))["code"] == "no-control"
            resumed = await open_ws(relay.ws_url + "/ws/agent")
            await resumed.send(agent_hello(resume=registered["resume"]))
            again = await receive(resumed)
            assert again["type"] == "registered" and again["session"] == session
            assert again["resume"] != registered["resume"]
            assert (await receive(resumed))["type"] == "accepted"
            assert (await receive(resumed)) == {"type": "refresh", "session": session,
                                                 "monitor": 0}
            await viewer.send(message("take_control", session=session))
            assert (await receive(resumed))["granted"] is True
            await viewer.send(message("key", session=session, code="KeyW", key="w", down=True))
            assert (await receive(resumed))["code"] == "KeyW"  # the gap's KeyQ never came
            await resumed.send(message("close", reason=""))
            await next_of(viewer, "ended")
        return session

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert kinds == ["accepted", "control-taken", "agent-gap", "control-released",
                     "agent-resumed", "control-taken", "ended"], kinds
    row = ledger_csv(relay)[0]
    assert (row["ended_by"], row["end_reason"]) == ("customer", "customer-closed")


def test_agent_cut_longer_than_grace_ends_with_agent_lost(relay_factory):
    """Nobody resumes within the grace window: the session ends by relay, agent-lost, and
    the viewer is told."""
    relay = relay_factory(*FAST_PINGS, "--grace", "2")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            proxy.freeze()
            assert (await next_of(viewer, "error"))["code"] == "agent-reconnecting"
            ended = await next_of(viewer, "ended")
            assert without_receipt(ended) == {
                "type": "ended", "session": registered["session"], "by": "relay",
                "reason": "agent-lost"}
            return registered["session"]

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert kinds[2:] == ["agent-gap", "control-released", "ended"], kinds
    assert ledger_csv(relay)[0]["end_reason"] == "agent-lost"


def test_resume_replaces_a_link_the_relay_still_thinks_alive(relay):
    """The agent notices the cut first (the relay's keepalive has not fired yet): its resume
    replaces the stale link; the old link is closed and gets nothing more."""

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            session = registered["session"]
            proxy.freeze()
            resumed = await open_ws(relay.ws_url + "/ws/agent")
            await resumed.send(agent_hello(resume=registered["resume"]))
            assert (await receive(resumed))["session"] == session
            assert (await next_of(viewer, "control"))["granted"] is False
            await viewer.send(message("take_control", session=session))
            assert (await next_of(resumed, "control"))["granted"] is True
            await viewer.send(message("key", session=session, code="KeyZ", key="z", down=True))
            assert (await next_of(resumed, "key"))["code"] == "KeyZ"
        return session

    session = run(scenario())
    gap = [e[3] for e in relay_events(relay) if e[1] == session and e[2] == "agent-gap"]
    assert gap == ["the customer's link was replaced"]


AGENT_PROCESS = """
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], compression=None) as ws:
        await ws.send(sys.argv[2])
        print(await ws.recv(), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def test_killed_agent_process_ends_its_session_at_once_with_agent_lost(relay_factory):
    """SIGKILL of the agent's process: its OS closes the socket without a close frame and
    the relay ends the session with agent-lost at once, not after the grace (300 s here)."""
    relay = relay_factory("--grace", "300")
    relay.add_technician("david", "David", "david-pw")
    process = subprocess.Popen(
        [sys.executable, "-c", AGENT_PROCESS, relay.ws_url + "/ws/agent", agent_hello()],
        stdout=subprocess.PIPE, text=True)
    try:
        registered = json.loads(process.stdout.readline())

        async def scenario():
            viewer, _, _ = await start_viewer(relay.ws_url)
            session = registered["session"]
            await viewer.send(message("accept", session=session))
            await next_of(viewer, "accepted")
            process.send_signal(signal.SIGKILL)
            ended = await next_of(viewer, "ended")  # within WAIT_S, far below the grace
            assert without_receipt(ended) == {"type": "ended", "session": session,
                                              "by": "relay", "reason": "agent-lost"}

        run(scenario())
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    assert "agent-gap" not in [e[2] for e in relay_events(relay)]


def test_viewer_tab_closing_keeps_the_session_for_the_same_support_person(relay):
    """The viewer's tab closes: control is released, the session is not ended, petur cannot
    take it, and david's reloaded page (token login) finds it detached and rejoins."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        viewer, welcome, _ = await start_viewer(relay.ws_url)
        await viewer.send(message("accept", session=session))
        await next_of(agent, "accepted")
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        await viewer.close(1001)  # what a closing tab sends
        assert (await next_of(agent, "control"))["granted"] is False
        petur, _, petur_queue = await start_viewer(relay.ws_url, "petur")
        assert petur_queue["sessions"] == []
        await petur.send(message("accept", session=session))
        assert await receive(petur) == REFUSAL
        reloaded = await open_ws(relay.ws_url + "/ws/viewer")
        await reloaded.send(viewer_hello(token=welcome["token"]))
        queue = await next_of(reloaded, "queue")
        assert [(e["session"], e["state"]) for e in queue["sessions"]] == [(session, "detached")]
        await reloaded.send(message("accept", session=session))
        assert (await next_of(reloaded, "accepted"))["session"] == session
        assert await receive(agent) == {"type": "refresh", "session": session, "monitor": 0}
        return session

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert "viewer-detached" in kinds and "viewer-rejoined" in kinds
    assert kinds.index("viewer-detached") < kinds.index("viewer-rejoined")


def test_viewer_gone_longer_than_grace_ends_with_viewer_lost(relay_factory):
    """Nobody rejoins within the grace window: ended by relay, viewer-lost; agent told."""
    relay = relay_factory("--grace", "2")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.close(1001)
        assert without_receipt(await next_of(agent, "ended")) == {
            "type": "ended", "session": session, "by": "relay", "reason": "viewer-lost"}
        assert (await closed_code(agent))[0] == 1000

    run(scenario())
    assert ledger_csv(relay)[0]["end_reason"] == "viewer-lost"


def test_relay_sigkill_leaves_no_session_open_and_no_resume(relay, relay_factory):
    """SIGKILL mid-session (one active, one waiting): after restart both rows are closed
    relay-restart, no queue lists them and the old resume secret is refused."""

    async def before_kill():
        agent, viewer, active_id = await active_session(relay)
        waiting, registered = await start_agent(relay.ws_url, machine="PC-2")
        relay.kill()
        for ws in (agent, viewer, waiting):
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        return active_id, registered

    active_id, registered = run(before_kill())
    restarted = relay_factory(data=relay.data)

    async def after_restart():
        _, _, queue = await start_viewer(restarted.ws_url)
        assert queue["sessions"] == []
        ws = await open_ws(restarted.ws_url + "/ws/agent")
        await ws.send(agent_hello(resume=registered["resume"]))
        assert (await receive(ws))["code"] == "resume-failed"

    run(after_restart())
    rows = {r["session"]: r for r in ledger_csv(restarted)}
    assert set(rows) == {active_id, registered["session"]}
    assert all((r["ended_by"], r["end_reason"]) == ("relay", "relay-restart")
               for r in rows.values())


# --- 11. Fuzzing the relay's message handling ------------------------------------------
# Also: test_pairing.py::test_random_operation_sequences_keep_the_invariants (random
# operation sequences), test_protocol_fuzz.py (the decoder).

GOLDEN = [v["fields"] for v in json.loads(
    (Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))["control"]]
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=80), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@dataclass(eq=False)
class RecordingPeer:
    address: str = "192.0.2.1"
    sent: list = field(default_factory=list)
    closed: bool = False

    def send(self, message: protocol.Message) -> None:
        self.sent.append(message)

    def send_frame(self, data: bytes, monitor: int) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = True


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    enabled: bool = True


@st.composite
def mutated_messages(draw, sessions: list[str]) -> str:
    """A golden message with its session pointed anywhere and a field added, dropped or
    given an odd value; sometimes not even JSON."""
    fields = dict(draw(st.sampled_from(GOLDEN)))
    if "session" in fields:
        fields["session"] = draw(st.sampled_from(sessions))
    mutation = draw(st.sampled_from(["none", "none", "drop", "odd", "add", "text"]))
    names = sorted(fields)
    if mutation == "drop":
        fields.pop(draw(st.sampled_from(names)))
    elif mutation == "odd":
        fields[draw(st.sampled_from(names))] = draw(ODD_VALUES)
    elif mutation == "add":
        fields[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
    text = json.dumps(fields)
    if mutation == "text":
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=4)) + text[cut + 1:]
    return text


@FUZZ
@given(st.data())
def test_fuzz_mutated_messages_keep_the_session_rules(data):
    """Mutated messages from both of david's and petur's viewers and the agents, fed through
    the relay's decode-and-handle path: only ProtocolError escapes, the invariants hold, no
    input reaches an agent without control, petur learns nothing of david's sessions."""
    counter = itertools.count()
    pairing = Pairing(RecordingLedger(), wait_timeout=600, grace=60,
                      new_secret=lambda: f"secret{next(counter):016d}")
    david, petur = Person("david", "David"), Person("petur", "Petur")
    agents = [RecordingPeer(f"192.0.2.{i}") for i in range(3)]
    for agent in agents:
        hello = protocol.AgentHello("agent", protocol.PROTOCOL_VERSION, "david", "PC", "anna",
                                    tuple(protocol.Screen(0, 0, 800, 600) for _ in range(2)))
        assert pairing.agent_hello(agent, hello, david, 0.0)
    sessions = sorted(pairing.sessions)
    viewers = {RecordingPeer(): david, RecordingPeer(): petur}
    for viewer, person in viewers.items():
        pairing.viewer_joined(viewer, person, 0.0)
    # Let david accept one and control it, so input has somewhere to go.
    david_viewer = next(iter(viewers))
    pairing.viewer_message(david_viewer, protocol.Accept(sessions[0]), 1.0)
    pairing.viewer_message(david_viewer, protocol.TakeControl(sessions[0]), 1.0)
    targets = [*sessions, MADE_UP]
    for step in range(data.draw(st.integers(1, 30))):
        text = data.draw(mutated_messages(targets))
        sender = data.draw(st.sampled_from([*viewers, *agents]))
        try:
            decoded = protocol.decode_control(text)
            if sender in viewers:
                pairing.viewer_message(sender, decoded, 2.0 + step)
            else:
                pairing.agent_message(sender, decoded, 2.0 + step)
        except protocol.ProtocolError:
            pass
        pairing.check_invariants()
    petur_viewer = list(viewers)[1]
    assert not any(s in protocol.encode_control(m) for m in petur_viewer.sent
                   for s in sessions), petur_viewer.sent
    for agent in agents:
        control = False
        for sent in agent.sent:
            if isinstance(sent, protocol.Control):
                control = sent.granted
            elif isinstance(sent, protocol.INPUT_TYPES):
                assert control, agent.sent


def ledger_rows(relay) -> list:
    with contextlib.closing(sqlite3.connect(relay.data / DB_FILE)) as db:
        return db.execute("SELECT session FROM sessions").fetchall()


class RecordingLedger:
    def requested(self, *args: Any) -> int:
        return 1

    def accepted(self, *args: Any) -> None: ...
    def control(self, *args: Any) -> None: ...
    def paused(self, *args: Any) -> None: ...
    def ended(self, *args: Any) -> None: ...
    def event(self, *args: Any) -> None: ...


def test_fuzz_live_relay_answers_mutated_messages_cleanly(relay):
    """Mutated messages over real websockets, from a logged-in viewer and a registered
    agent: each gets an answer or a clean 1008 close, never a traceback or a hang, and the
    relay still serves a normal session afterwards."""
    budget = FUZZ.max_examples // 6  # each example is a few round trips on a shared machine

    async def scenario(texts: list[tuple[str, str]]):
        _, welcome, _ = await start_viewer(relay.ws_url)
        for role, text in texts:
            if role == "viewer":
                ws = await open_ws(relay.ws_url + "/ws/viewer")
                await ws.send(viewer_hello(token=welcome["token"]))
                await next_of(ws, "queue")
            else:
                ws, registered = await start_agent(relay.ws_url)
                assert registered["type"] == "registered", registered
            try:
                await ws.send(text)
                if role == "viewer":  # the relay answers a ping after whatever came before
                    await ws.send(message("ping", t=7))
                    while await receive(ws) != {"type": "pong", "t": 7}:
                        pass
                else:  # agents have no ping message: a websocket ping shows it still reads
                    await asyncio.wait_for(await ws.ping(), WAIT_S)
            except ConnectionClosed:
                assert ws.close_code in (1000, 1008), (text, ws.close_code)
            await ws.close()
            if role == "agent":  # its waiting slot is free again before the next agent
                while len([e for e in await asyncio.to_thread(relay_events, relay)
                           if e[2] == "ended"]) < len(ledger_rows(relay)):
                    await asyncio.sleep(0.01)
        await active_session(relay)

    @settings(FUZZ, max_examples=budget)
    @given(st.lists(st.tuples(st.sampled_from(["viewer", "agent"]),
                              mutated_messages([MADE_UP])), min_size=1, max_size=3))
    def check(texts):
        run(scenario(texts))

    check()
    no_traceback(relay)
