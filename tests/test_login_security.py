"""Logins over the wire, against a real relay process: nothing before a login, no other kind
of secret is a login, and passwords stored as argon2id at or above OWASP's minimum. The
timed login promises (same time for a wrong user, a revoked login gone within 2 s) are in
tests/test_timing.py; guessing and lockout are tests/test_login_limits.py's."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest

import protocol
from relay.accounts import (
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    DB_FILE,
)
from tests.helpers.wire import (
    EVERY_SESSION_MESSAGE,
    closed_code,
    message,
    open_ws,
    receive,
    run,
    start_agent,
    viewer_hello,
)


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


# --- Logins ------------------------------------------------------------------------
# Also: test_accounts.py::test_password_hash_is_argon2id_at_or_above_owasp_minimum,
# test_unknown_user_costs_the_same_hashing_as_a_wrong_password;
# test_login_limits.py (guessing, lockout and its wait, through a real relay too);
# test_relay_server.py::test_wrong_user_and_wrong_password_get_the_same_answer.

OWASP_ARGON2ID = {"m": 19456, "t": 2, "p": 1}  # OWASP Password Storage Cheat Sheet minimum
def test_stored_hashes_are_argon2id_at_or_above_owasp_minimum(relay):
    """Every hash add-technician stored is argon2id with m >= 19 MiB, t >= 2, p >= 1."""
    # each field on its own: tuples compare lexicographically, so (20000, 1, 1) would pass
    assert ARGON2_MEMORY_KIB >= OWASP_ARGON2ID["m"]
    assert ARGON2_TIME_COST >= OWASP_ARGON2ID["t"]
    assert ARGON2_PARALLELISM >= OWASP_ARGON2ID["p"]
    with contextlib.closing(sqlite3.connect(relay.data / DB_FILE)) as db:
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM technicians")]
    assert len(hashes) == 2
    for stored in hashes:
        _, variant, version, params, _salt, _digest = stored.split("$")
        assert (variant, version) == ("argon2id", "v=19")
        cost = {k: int(v) for k, v in (kv.split("=") for kv in params.split(","))}
        assert all(cost[k] >= OWASP_ARGON2ID[k] for k in OWASP_ARGON2ID), cost
