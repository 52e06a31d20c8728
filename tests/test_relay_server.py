"""The relay as a process on port 0, driven by scripted agent and viewer clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import ssl
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

import protocol
from tests.helpers.relay import ledger_csv, make_certificate, relay_events
from tests.helpers.wire import (
    SCREENS,
    WAIT_S,
    active_session,
    agent_hello,
    closed_code,
    frame,
    message,
    next_frame,
    next_of,
    open_ws,
    receive,
    run,
    session_with_a_viewer_that_stops_reading,
    start_agent,
    start_viewer,
    viewer_hello,
    without_receipt,
)


def test_happy_path_end_to_end(relay):
    """Register, queue, accept, frames, ack, control, key, customer close, ledger CSV."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        assert registered["type"] == "registered"
        assert registered["technician_name"] == "David"
        session = registered["session"]
        viewer, welcome, queue = await start_viewer(relay.ws_url)
        assert (welcome["technician"], welcome["name"]) == ("david", "David")
        assert [(e["session"], e["machine"], e["user"], e["code"], e["state"])
                for e in queue["sessions"]] == [
                    (session, "PC-1", "anna", registered["code"], "waiting")]
        await viewer.send(message("accept", session=session))
        for peer in (viewer, agent):
            accepted = await next_of(peer, "accepted")
            assert (accepted["session"], accepted["machine"], accepted["user"]) == \
                (session, "PC-1", "anna")
            assert accepted["screens"] == SCREENS
        update = frame(1, 50_000)
        await agent.send(update)
        assert await next_frame(viewer) == update
        await viewer.send(message("ack", session=session, seq=1))
        assert await next_of(agent, "ack") == {"type": "ack", "session": session, "seq": 1}
        await viewer.send(message("take_control", session=session))
        for peer in (viewer, agent):
            assert await next_of(peer, "control") == \
                {"type": "control", "session": session, "granted": True}
        key = {"type": "key", "session": session, "code": "KeyA", "key": "a", "down": True}
        await viewer.send(json.dumps(key))
        assert await next_of(agent, "key") == key
        await viewer.send(message("ping", t=123.5))
        assert await next_of(viewer, "pong") == {"type": "pong", "t": 123.5}
        await agent.send(message("close", reason="thanks"))
        ended = await next_of(viewer, "ended")
        billed = ended.pop("billable_s")
        assert ended == {"type": "ended", "session": session, "by": "customer",
                         "reason": "customer-closed", "ref": 1}
        assert (await closed_code(agent))[0] == 1000
        await viewer.close()
        return session, billed

    session, billed = run(scenario())
    rows = ledger_csv(relay)
    assert [(r["session"], r["technician"], r["machine"], r["user"], r["ended_by"],
             r["end_reason"]) for r in rows] == \
        [(session, "david", "PC-1", "anna", "customer", "customer-closed")]
    assert rows[0]["accepted_at"] and rows[0]["ended_at"]
    assert (rows[0]["ref"], rows[0]["billable_seconds"]) == ("1", str(billed))


ATTEMPTS = [
    lambda s: message("accept", session=s),
    lambda s: message("take_control", session=s),
    lambda s: message("release_control", session=s),
    lambda s: message("refresh", session=s, monitor=0),
    lambda s: message("ack", session=s, seq=1),
    lambda s: message("key", session=s, code="KeyX", key="x", down=True),
    lambda s: message("end", session=s, reason="mine now"),
]


@pytest.mark.parametrize("accepted", [False, True], ids=["waiting", "active"])
def test_other_support_person_is_refused_exactly_like_a_made_up_session(relay, accepted):
    """Petur never sees david's session; every try on it is answered like a made-up id."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        david, _, _ = await start_viewer(relay.ws_url)
        if accepted:
            await david.send(message("accept", session=session))
            await next_of(david, "accepted")
            await next_of(agent, "accepted")
        petur, _, petur_queue = await start_viewer(relay.ws_url, "petur")
        assert petur_queue["sessions"] == []
        made_up = "madeUpSessionId0000000"
        for attempt in ATTEMPTS:
            await petur.send(attempt(session))
            real = await receive(petur)
            await petur.send(attempt(made_up))
            fake = await receive(petur)
            assert real == fake == {"type": "error", "code": "no-such-session",
                                    "message": "That session is no longer available."}
        # Nothing reached the agent: the next thing it gets is what david sends now.
        if accepted:
            await david.send(message("ack", session=session, seq=7))
            assert await receive(agent) == {"type": "ack", "session": session, "seq": 7}
        else:
            await david.send(message("accept", session=session))
            assert (await receive(agent))["type"] == "accepted"
        await agent.send(message("close", reason=""))
        await next_of(david, "ended")
        await petur.send(message("ping", t=1))
        while (data := await receive(petur)) != {"type": "pong", "t": 1}:
            assert data["type"] != "queue" or data["sessions"] == []
        return session

    session = run(scenario())
    refused = [e for e in relay_events(relay) if e[2] == "refused"]
    assert len(refused) == 2 * len(ATTEMPTS)
    assert sum(e[1] == session for e in refused) == len(ATTEMPTS)
    assert all("petur" in e[3] for e in refused)


def test_input_before_acceptance_or_control_is_never_delivered(relay):
    """Keys sent while waiting or without control never reach the agent."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        viewer, _, _ = await start_viewer(relay.ws_url)
        early = message("key", session=session, code="KeyE", key="e", down=True)
        await viewer.send(early)
        assert (await next_of(viewer, "error"))["code"] == "no-control"
        await viewer.send(message("accept", session=session))
        await next_of(viewer, "accepted")
        await viewer.send(early)
        await viewer.send(message("take_control", session=session))
        await next_of(viewer, "control")
        await viewer.send(message("key", session=session, code="KeyG", key="g", down=True))
        received = []
        while not received or received[-1].get("type") != "key":
            received.append(await receive(agent))
        assert [m["type"] for m in received] == ["accepted", "control", "key"]
        assert received[-1]["code"] == "KeyG"
        await viewer.send(message("release_control", session=session))
        await viewer.send(early)
        await viewer.send(message("ack", session=session, seq=3))
        assert (await receive(agent))["granted"] is False
        assert (await receive(agent))["type"] == "ack"

    run(scenario())


@pytest.mark.parametrize("endpoint", ["agent", "viewer"])
def test_message_over_the_size_limit_closes_with_1009(relay, endpoint):
    """One byte over MAX_MESSAGE_BYTES closes the connection with 1009."""

    async def scenario():
        if endpoint == "agent":
            ws, _ = await start_agent(relay.ws_url)
        else:
            ws, _, _ = await start_viewer(relay.ws_url)
        await ws.send(b"\0" * (protocol.MAX_MESSAGE_BYTES + 1))
        assert (await closed_code(ws))[0] == 1009

    run(scenario())


@pytest.mark.parametrize(("endpoint", "first", "expected"), [
    ("agent", "{not json", "not valid JSON"),
    ("agent", b"\x01\x02", "hello with role agent"),
    ("agent", viewer_hello(), "hello with role agent"),
    ("viewer", agent_hello(), "hello with role viewer"),
    ("agent", agent_hello().replace(f'"version": {protocol.PROTOCOL_VERSION}', '"version": 99'),
     "version 99"),
    ("viewer", message("teleport", session="x"), "unknown message type"),
    ("agent", message("hello", role="agent", version=1), "missing field"),
])
def test_bad_first_message_gets_error_and_close_1008(relay, endpoint, first, expected):
    """Malformed JSON, a wrong first message, a version mismatch: error, then 1008."""

    async def scenario():
        ws = await open_ws(f"{relay.ws_url}/ws/{endpoint}")
        await ws.send(first)
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "protocol"
        assert expected in error["message"]
        code, reason = await closed_code(ws)
        assert code == 1008 and expected in reason

    run(scenario())
    assert "Traceback" not in "".join(relay.output)


def test_protocol_errors_after_hello_close_1008(relay):
    """An agent sending a viewer's message, or a viewer sending binary, is closed with 1008."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        await agent.send(message("accept", session=registered["session"]))
        assert (await next_of(agent, "error"))["code"] == "protocol"
        assert (await closed_code(agent))[0] == 1008
        viewer, _, _ = await start_viewer(relay.ws_url)
        await viewer.send(b"\xff\xd8\xff")
        assert (await next_of(viewer, "error"))["code"] == "protocol"
        assert (await closed_code(viewer))[0] == 1008

    run(scenario())
    assert "Traceback" not in "".join(relay.output)


def test_unknown_technician_is_refused_with_a_message_for_the_customer(relay):
    """An agent naming nobody gets technician-unknown with a sentence it can show, then 1008."""

    async def scenario():
        ws, reply = await start_agent(relay.ws_url, technician="nobody")
        assert reply["code"] == "technician-unknown"
        assert "check the name" in reply["message"]
        assert (await closed_code(ws))[0] == 1008

    run(scenario())


def test_wrong_user_and_wrong_password_get_the_same_answer(relay):
    """login-failed for an unknown user and a wrong password alike, then close 1008."""

    async def attempt(user, password):
        ws = await open_ws(relay.ws_url + "/ws/viewer")
        await ws.send(viewer_hello(user, password))
        reply = await receive(ws)
        return reply, await closed_code(ws)

    async def scenario():
        return await attempt("nobody", "whatever1"), await attempt("david", "wrong-pass")

    unknown, wrong = run(scenario())
    assert unknown == wrong
    assert unknown[0] == {"type": "error", "code": "login-failed",
                          "message": "The user name or password is not correct."}
    assert unknown[1][0] == 1008


def test_token_login_and_logout_revokes_it(relay):
    """The welcome token logs in again until logout; after logout it is refused."""

    async def scenario():
        viewer, welcome, _ = await start_viewer(relay.ws_url)
        again = await open_ws(relay.ws_url + "/ws/viewer")
        await again.send(viewer_hello(token=welcome["token"]))
        assert (await receive(again))["type"] == "welcome"
        await viewer.send(message("logout"))
        assert (await closed_code(viewer))[0] == 1000
        late = await open_ws(relay.ws_url + "/ws/viewer")
        await late.send(viewer_hello(token=welcome["token"]))
        assert await receive(late) == {
            "type": "error", "code": "login-expired",
            "message": "Your sign-in has expired or was revoked. Please sign in again."}
        assert (await closed_code(late))[0] == 1008

    run(scenario())


def test_disabling_an_account_closes_its_live_viewer(relay):
    """disable-technician: the live viewer gets login-expired and is closed."""

    async def scenario():
        viewer, _, _ = await start_viewer(relay.ws_url)
        result = await asyncio.to_thread(relay.cli, "disable-technician", "david")
        assert result.returncode == 0, result.stderr
        assert (await next_of(viewer, "error"))["code"] == "login-expired"
        assert (await closed_code(viewer))[0] == 1008

    run(scenario())


@pytest.mark.parametrize("origin", [
    "http://evil.example",
    "null",
    "http://127.0.0.1:{port}.evil.example",
    "https://127.0.0.1:{port}",
    "http://127.0.0.1:1",
    "http://localhost:{port}",
])
def test_viewer_websocket_from_a_foreign_origin_is_refused(relay, origin):
    """Cross-site websocket hijacking: any origin but the relay's own gets 403."""

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(relay.ws_url + "/ws/viewer",
                          origin=origin.format(port=relay.port))
        assert refused.value.response.status_code == 403

    run(scenario())


def test_viewer_websocket_from_the_relays_own_origin_is_accepted(relay):
    """The page the relay served may open the viewer websocket."""

    async def scenario():
        await start_viewer(relay.ws_url, origin=relay.http_url)

    run(scenario())


def test_extra_origin_is_accepted(relay_factory):
    """--origin adds an allowed origin (e.g. the public name behind a proxy)."""
    relay = relay_factory("--origin", "https://support.example.com")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        await start_viewer(relay.ws_url, origin="https://support.example.com")
        with pytest.raises(InvalidStatus):
            await open_ws(relay.ws_url + "/ws/viewer", origin="https://example.com")

    run(scenario())


def test_agent_endpoint_refuses_browsers(relay):
    """Any Origin header on the agent endpoint, even the relay's own, gets 403."""

    async def scenario():
        for origin in (relay.http_url, "http://evil.example"):
            with pytest.raises(InvalidStatus) as refused:
                await open_ws(relay.ws_url + "/ws/agent", origin=origin)
            assert refused.value.response.status_code == 403

    run(scenario())


def get(relay, path: str, context: ssl.SSLContext | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=WAIT_S)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", relay.port, timeout=WAIT_S,
                                                 context=context)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


@pytest.fixture
def viewer_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "viewer"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>viewer</title>")
    (folder / "viewer.js").write_text("export const x = 1;\n")
    (folder / "notes.txt").write_text("not on the allow-list")
    return folder


@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/%2e%2e/protocol.py", "/..%2fprotocol.py", "//index.html",
    "/index.html;x", "/INDEX.HTML", "/viewer.js/", "/notes.txt", "/viewer", "/./index.html",
    "/%69ndex.html", "/download/../pyproject.toml", "/ws/viewer/", "/healthz/",
])
def test_path_tricks_get_404(relay_factory, viewer_dir, path):
    """The file server answers only its allow-list; every variant is a 404."""
    relay = relay_factory("--viewer-dir", str(viewer_dir))
    status, headers, _ = get(relay, path)
    assert status == 404
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_healthz_tells_loopback_the_relay_and_its_session_count(relay):
    """/healthz from this machine: JSON with the relay's id and its live sessions."""
    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent")
        await ws.send(agent_hello())
        assert (await receive(ws))["type"] == "registered"
        status, headers, body = get(relay, "/healthz")
        await ws.close()
        return status, headers, body

    status, headers, body = run(scenario())
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert (health["status"], health["relay"], health["sessions"], health["viewers"]) == (
        "ok", "relay", 1, 0)


def test_files_health_and_headers(relay_factory, viewer_dir, tmp_path):
    """/console/, its files, /healthz and the downloads are served with type and security
    headers."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "agent.exe").write_bytes(b"MZ fake exe")
    relay = relay_factory("--viewer-dir", str(viewer_dir), "--downloads", str(downloads))
    expected = {
        "/console/": (b"<!doctype html><title>viewer</title>", "text/html; charset=utf-8"),
        "/console/index.html": (b"<!doctype html><title>viewer</title>",
                                "text/html; charset=utf-8"),
        "/console/viewer.js": (b"export const x = 1;\n", "text/javascript; charset=utf-8"),
        "/download/agent.exe": (b"MZ fake exe", "application/octet-stream"),
    }
    for path, (body, content_type) in expected.items():
        status, headers, got = get(relay, path)
        assert (status, got, headers["Content-Type"]) == (200, body, content_type), path
        assert headers["Content-Security-Policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data: blob:; media-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
    status, _, page = get(relay, "/")
    assert status == 200 and b'href="/download/agent.exe"' in page


def test_relay_killed_mid_session_closes_it_on_restart(relay, relay_factory):
    """SIGKILL mid-session: on restart the open row ends relay-restart; finished rows stay."""

    async def finished_then_live():
        agent, viewer, finished = await active_session(relay)
        await agent.send(message("close", reason=""))
        await next_of(viewer, "ended")
        await viewer.close()
        before = {r["session"]: r for r in await asyncio.to_thread(ledger_csv, relay)}
        _, _, live = await active_session(relay)
        relay.kill()  # while the agent and the viewer are still connected
        return finished, live, before

    finished, live, before = run(finished_then_live())
    restarted = relay_factory(data=relay.data)
    rows = {r["session"]: r for r in ledger_csv(restarted)}
    assert rows[finished] == before[finished]
    assert (rows[live]["ended_by"], rows[live]["end_reason"]) == ("relay", "relay-restart")
    assert rows[live]["ended_at"] >= rows[live]["accepted_at"]
    assert "closed 1 session" in "".join(restarted.output)


def test_sigterm_ends_live_sessions_and_tells_both_sides(relay):
    """Stopping the relay ends the session (relay-shutdown) and tells agent and viewer."""

    async def scenario():
        agent, viewer, session = await active_session(relay)
        relay.process.send_signal(signal.SIGTERM)
        expected = {"type": "ended", "session": session, "by": "relay",
                    "reason": "relay-shutdown"}
        assert without_receipt(await next_of(agent, "ended")) == expected
        assert without_receipt(await next_of(viewer, "ended")) == expected
        return session

    session = run(scenario())
    relay.process.wait(timeout=WAIT_S)
    assert relay.process.returncode == 0
    row = next(r for r in ledger_csv(relay) if r["session"] == session)
    assert (row["ended_by"], row["end_reason"]) == ("relay", "relay-shutdown")


def test_viewer_that_stops_reading_neither_stalls_the_agent_nor_queues_frames(relay):
    """Frames for a viewer that does not read are dropped, the agent keeps being read,
    and the agent is asked for a refresh, whose full image reaches the viewer."""

    async def scenario():
        agent, viewer, session = await session_with_a_viewer_that_stops_reading(relay)
        for seq in range(60):
            await agent.send(frame(seq, 1_000_000, monitor=1))
        pong = await agent.ping()
        await asyncio.wait_for(pong, WAIT_S)  # the relay still reads the agent
        # The viewer reads again (all of it, as a real one would); once the relay's queue
        # for it has drained, the relay heals the picture by asking the agent for a refresh.
        healed = frame(99, 1000, flags=protocol.FLAG_LAST | protocol.FLAG_FULL)

        async def read_viewer_until_healed() -> int:
            received = 0
            while (data := await receive(viewer)) != healed:
                received += isinstance(data, bytes)
            return received

        reader = asyncio.create_task(read_viewer_until_healed())
        refresh = await next_of(agent, "refresh")
        assert refresh == {"type": "refresh", "session": session, "monitor": 1}
        await agent.send(healed)
        received = await reader
        assert received < 60  # frames were dropped, not all queued
        return received

    run(scenario())


def test_tls_serves_wss_and_https(relay_factory, tmp_path):
    """--cert/--key: the readiness line says https, agents register over wss, files over https."""
    cert, key = make_certificate(tmp_path)
    relay = relay_factory("--cert", str(cert), "--key", str(key))
    assert relay.scheme == "https" and relay.ws_url.startswith("wss://")
    relay.add_technician("david", "David", "david-pw")
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent", ssl=context)
        await ws.send(agent_hello())
        assert (await receive(ws))["type"] == "registered"
        await start_viewer(relay.ws_url, ssl=context, origin=relay.http_url)

    run(scenario())
    status, headers, body = get(relay, "/healthz", context)
    assert (status, json.loads(body)["status"]) == (200, "ok")
    assert headers["Strict-Transport-Security"].startswith("max-age=")


def test_a_paused_session_shows_nothing_takes_no_input_and_bills_no_pause(relay):
    """The customer pauses: the viewer is told, a frame and a key go nowhere (the viewer
    hears why once); resumed, both flow again; the ledger records the pause apart."""

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        await agent.send(message("pause", paused=True))
        assert await next_of(viewer, "pause") == {"type": "pause", "paused": True}
        await agent.send(frame(1, 1000))
        await viewer.send(message("key", session=session, code="KeyA", key="a", down=True))
        refusal = await next_of(viewer, "error")
        assert refusal["code"] == "paused"
        await agent.send(message("pause", paused=False))
        assert await next_of(viewer, "pause") == {"type": "pause", "paused": False}
        update = frame(2, 1000, flags=protocol.FLAG_LAST | protocol.FLAG_FULL)
        await agent.send(update)
        assert await next_frame(viewer) == update  # not the frame sent while paused
        key = {"type": "key", "session": session, "code": "KeyB", "key": "b", "down": True}
        await viewer.send(json.dumps(key))
        assert await next_of(agent, "key") == key  # not the key sent while paused
        await viewer.send(message("end", session=session, reason=""))
        return await next_of(agent, "ended")

    ended = run(scenario())
    (row,) = ledger_csv(relay)
    assert row["paused_seconds"] == "0"  # a pause well under a second here
    assert (ended["ref"], str(ended["billable_s"])) == (1, row["billable_seconds"])
    kinds = [kind for _, _, kind, _ in relay_events(relay)]
    assert kinds.index("paused") < kinds.index("resumed") < kinds.index("ended")


def test_with_require_code_a_caller_is_accepted_only_with_their_code(relay_factory):
    """serve --require-code: accept without the code, or with another, is refused with a
    sentence; the code from the customer's panel accepts."""
    relay = relay_factory("--require-code")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        viewer, _, queue = await start_viewer(relay.ws_url)
        session, code = registered["session"], registered["code"]
        assert queue["sessions"][0]["code"] == code
        await viewer.send(message("accept", session=session))
        assert (await next_of(viewer, "error"))["code"] == "code-required"
        wrong = "000000" if code != "000000" else "999999"
        await viewer.send(message("accept", session=session, code=wrong))
        assert (await next_of(viewer, "error"))["code"] == "wrong-code"
        await viewer.send(message("accept", session=session, code=code))
        assert (await next_of(viewer, "accepted"))["code"] == code
        assert (await next_of(agent, "accepted"))["code"] == code

    run(scenario())
