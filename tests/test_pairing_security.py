"""Only the chosen support person, over the wire: every viewer message on another person's
session, or on an ended one, gets the answer a made-up session gets; and fuzzed messages,
to the pure Pairing and to a live relay, keep the session rules.

The hypothesis tests run a fixed budget in CI (profile "relay-ci"); before a release run the
long profile:

    RELAY_FUZZ_PROFILE=relay-release .venv/bin/python -m pytest \
        tests/test_pairing_security.py -k fuzz
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

import protocol
from relay.accounts import (
    DB_FILE,
)
from relay.pairing import Pairing
from tests.fakes import RecordingLedger
from tests.helpers.relay import (
    no_traceback,
    relay_events,
)
from tests.helpers.wire import (
    EVERY_SESSION_MESSAGE,
    MADE_UP,
    REFUSAL,
    WAIT_S,
    active_session,
    closed_code,
    message,
    next_of,
    open_ws,
    receive,
    run,
    start_agent,
    start_viewer,
    viewer_hello,
)

settings.register_profile(
    "relay-ci", max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "relay-release", max_examples=20_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ = settings.get_profile(os.environ.get("RELAY_FUZZ_PROFILE", "relay-ci"))

# --- Only the chosen support person ------------------------------------------------
# Also: test_relay_server.py::test_other_support_person_is_refused_exactly_like_a_made_up_session,
# test_pairing.py::test_other_technician_gets_the_same_refusal_as_for_a_made_up_session,
# test_registered_session_appears_only_in_its_owners_queue.



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
            reply = await reply_past_queue_updates(viewer, session)
            if reply.get("code") == "no-control":  # first input after the end: not forwarded
                reply = await reply_past_queue_updates(viewer, session)
            assert reply == REFUSAL
        assert (await closed_code(agent))[0] == 1000

    run(scenario())


async def reply_past_queue_updates(viewer, session: str) -> dict:
    """The viewer's next message that is not a queue update. The relay sends a viewer at most
    one queue update per relay.server.QUEUE_INTERVAL_S and lets later replies overtake the one
    it holds, so the update the accept caused can come after the end, between any two
    replies (on a loaded machine it did). Such an update may not list the ended session."""
    while (reply := await receive(viewer))["type"] == "queue":
        assert all(entry["session"] != session for entry in reply["sessions"]), reply
    return reply


# --- Fuzzing the relay's message handling ------------------------------------------
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
    relay.settle()  # the relay writes its ledger off the event loop (issue 16)
    with contextlib.closing(sqlite3.connect(relay.data / DB_FILE)) as db:
        return db.execute("SELECT session FROM sessions").fetchall()


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
