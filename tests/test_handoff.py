"""The administrator prompt and the elevated hand-off, as the relay's pure rules see them
(relay/handoff.py and its hooks in relay/pairing.py): fakes behind Peer and Recorder."""

from __future__ import annotations

import itertools

import pytest

import protocol
from relay.handoff import Handoffs
from relay.pairing import HANDOFF_FAILED, SECURE_DESKTOP, Pairing
from tests.fakes import RecordingLedger
from tests.helpers.pairing import DAVID, PETUR, FakePeer

SCREENS = (protocol.Screen(0, 0, 1280, 800), protocol.Screen(0, 0, 1280, 800))
T0 = 1_800_000_000.0


def counter_secrets():
    numbers = itertools.count(1)
    return lambda: f"secret-{next(numbers):09d}-abcdefgh"


def hello(technician: str = "david", handoff: str = "") -> protocol.AgentHello:
    return protocol.AgentHello("agent", protocol.PROTOCOL_VERSION, technician, "PC-1", "anna",
                               SCREENS, "", handoff)


@pytest.fixture
def ledger() -> RecordingLedger:
    return RecordingLedger()


@pytest.fixture
def pairing(ledger) -> Pairing:
    return Pairing(ledger, wait_timeout=600, grace=60)


def live(pairing: Pairing, control: bool = True) -> tuple[FakePeer, FakePeer, str]:
    """An accepted session (controlled by default): its agent, its viewer, its id."""
    agent = FakePeer()
    assert pairing.agent_hello(agent, hello(), DAVID, T0)
    session = agent.of(protocol.Registered)[0].session
    viewer = FakePeer("198.51.100.7")
    pairing.viewer_joined(viewer, DAVID, T0)
    pairing.viewer_message(viewer, protocol.Accept(session), T0 + 1)
    if control:
        pairing.viewer_message(viewer, protocol.TakeControl(session), T0 + 2)
    return agent, viewer, session


def secret_for(pairing: Pairing, agent: FakePeer, now: float = T0 + 10) -> str:
    pairing.agent_message(agent, protocol.Handoff(), now)
    return agent.of(protocol.HandoffSecret)[-1].secret


def key(session: str) -> protocol.Key:
    return protocol.Key(session, "KeyA", "a", True)


# --- the secrets alone --------------------------------------------------------------------


def test_a_handoff_secret_is_good_exactly_once() -> None:
    """The first take names the session; the same secret again names nothing."""
    handoffs = Handoffs(counter_secrets())
    secret = handoffs.issue("session-a", T0)
    assert handoffs.take(secret, T0 + 1) == "session-a"
    assert handoffs.take(secret, T0 + 2) is None


def test_a_late_handoff_secret_is_refused_and_spent() -> None:
    """At or after its expiry the secret names nothing, and cannot be tried again."""
    handoffs = Handoffs(counter_secrets(), expires_s=30)
    secret = handoffs.issue("session-a", T0)
    assert handoffs.take(secret, T0 + 30) is None
    assert secret not in handoffs.tickets


def test_asking_again_spends_the_earlier_secret() -> None:
    """One live secret per session: a second `handoff` replaces the first."""
    handoffs = Handoffs(counter_secrets())
    first = handoffs.issue("session-a", T0)
    second = handoffs.issue("session-a", T0 + 1)
    assert handoffs.take(first, T0 + 2) is None
    assert handoffs.take(second, T0 + 2) == "session-a"


def test_expired_secrets_are_dropped_on_the_tick() -> None:
    """Secrets nobody used do not pile up in the relay's memory."""
    handoffs = Handoffs(counter_secrets(), expires_s=5)
    handoffs.issue("session-a", T0)
    kept = handoffs.issue("session-b", T0 + 4)
    handoffs.expire(T0 + 6)
    assert list(handoffs.tickets) == [kept]


# --- the takeover -------------------------------------------------------------------------


def test_elevated_copy_takes_over_the_live_session_keeping_id_code_viewer_and_control(
        pairing: Pairing, ledger: RecordingLedger) -> None:
    """The new link gets the same session, code and billed time, still in control; the old
    link is closed with CLOSE_HANDED_OFF; the viewer stays attached and sees no end."""
    old, viewer, session = live(pairing)
    code = old.of(protocol.Registered)[0].code
    secret = secret_for(pairing, old)
    new = FakePeer("192.0.2.1")
    assert pairing.agent_hello(new, hello(handoff=secret), DAVID, T0 + 20)
    registered = new.of(protocol.Registered)[0]
    assert (registered.session, registered.code) == (session, code)
    assert registered.resume != old.of(protocol.Registered)[0].resume
    accepted = new.of(protocol.Accepted)[0]
    assert accepted.session == session and accepted.elapsed_s == pytest.approx(19)
    assert new.of(protocol.Control) == [protocol.Control(session, True)]
    assert old.closed == (protocol.CLOSE_HANDED_OFF, "handed over to the elevated program")
    assert not viewer.of(protocol.Ended) and not old.of(protocol.Ended)
    assert protocol.Elevation("started") in viewer.sent
    assert pairing.sessions[session].agent is new and pairing.sessions[session].control
    assert [c[:3] for c in ledger.calls if c[0] in ("ended", "control")] == [
        ("control", session, True)]  # never ended, control never dropped
    assert ("event", session, "agent-handoff", "elevated copy from 192.0.2.1", T0 + 20) \
        in ledger.calls
    pairing.check_invariants()


def test_input_after_the_takeover_reaches_the_new_copy_only(pairing: Pairing) -> None:
    """The support person's keys go to the elevated copy; the old one hears nothing more."""
    old, viewer, session = live(pairing)
    new = FakePeer()
    assert pairing.agent_hello(new, hello(handoff=secret_for(pairing, old)), DAVID, T0 + 20)
    sent_before = len(old.sent)
    pairing.viewer_message(viewer, key(session), T0 + 21)
    assert new.sent[-1] == key(session)
    assert len(old.sent) == sent_before
    pairing.agent_gone(old, T0 + 22, resumable=False)  # its link closing ends nothing
    assert session in pairing.sessions
    pairing.check_invariants()


def test_a_reused_handoff_secret_is_refused_with_a_sentence(pairing: Pairing) -> None:
    """A second hello with the same secret gets handoff-failed and is closed; the session
    stays with the copy that took it."""
    old, _, session = live(pairing)
    secret = secret_for(pairing, old)
    first, second = FakePeer(), FakePeer()
    assert pairing.agent_hello(first, hello(handoff=secret), DAVID, T0 + 20)
    assert not pairing.agent_hello(second, hello(handoff=secret), DAVID, T0 + 21)
    assert second.sent == [HANDOFF_FAILED]
    assert second.closed == (protocol.CLOSE_POLICY, "handoff-failed")
    assert HANDOFF_FAILED.message == protocol.WORDING["handoff-failed"].customer
    assert pairing.sessions[session].agent is first
    pairing.check_invariants()


def test_a_late_handoff_secret_leaves_the_session_with_the_old_copy(pairing: Pairing) -> None:
    """After HANDOFF_EXPIRES_S the secret is refused and the first copy goes on untouched."""
    old, _, session = live(pairing)
    secret = secret_for(pairing, old, T0 + 10)
    late = FakePeer()
    assert not pairing.agent_hello(late, hello(handoff=secret), DAVID,
                                   T0 + 10 + protocol.HANDOFF_EXPIRES_S)
    assert late.sent == [HANDOFF_FAILED]
    assert old.closed is None and pairing.sessions[session].agent is old
    pairing.check_invariants()


def test_another_support_persons_hello_cannot_take_a_session_over(pairing: Pairing) -> None:
    """The secret is bound to its session's support person: a hello naming another is
    refused, and the secret is spent."""
    old, _, session = live(pairing)
    secret = secret_for(pairing, old)
    other = FakePeer()
    assert not pairing.agent_hello(other, hello("petur", secret), PETUR, T0 + 20)
    assert other.sent == [HANDOFF_FAILED]
    assert not pairing.agent_hello(FakePeer(), hello(handoff=secret), DAVID, T0 + 21)
    assert pairing.sessions[session].agent is old


def test_the_secret_of_an_ended_session_takes_nothing_over(pairing: Pairing) -> None:
    """A session that ended between the secret and the hello cannot come back through it."""
    old, viewer, session = live(pairing)
    secret = secret_for(pairing, old)
    pairing.viewer_message(viewer, protocol.End(session, "done"), T0 + 15)
    new = FakePeer()
    assert not pairing.agent_hello(new, hello(handoff=secret), DAVID, T0 + 20)
    assert new.sent == [HANDOFF_FAILED]


def test_a_waiting_session_can_be_handed_over_too(pairing: Pairing) -> None:
    """Restarting as administrator before anyone accepted keeps the place in the queue."""
    old = FakePeer()
    assert pairing.agent_hello(old, hello(), DAVID, T0)
    session = old.of(protocol.Registered)[0].session
    new = FakePeer()
    assert pairing.agent_hello(new, hello(handoff=secret_for(pairing, old)), DAVID, T0 + 5)
    assert new.of(protocol.Registered)[0].session == session
    assert not new.of(protocol.Accepted)
    assert old.closed[0] == protocol.CLOSE_HANDED_OFF
    pairing.check_invariants()


def test_the_viewer_is_told_when_the_customer_declines(pairing: Pairing) -> None:
    """The support person's `elevate` reaches the agent; the customer's No reaches the
    viewer, and the session goes on."""
    agent, viewer, session = live(pairing)
    pairing.viewer_message(viewer, protocol.Elevate(session), T0 + 5)
    assert agent.sent[-1] == protocol.Elevate(session)
    pairing.agent_message(agent, protocol.Elevation("declined"), T0 + 6)
    assert viewer.sent[-1] == protocol.Elevation("declined")
    pairing.viewer_message(viewer, key(session), T0 + 7)
    assert agent.sent[-1] == key(session)


# --- the administrator prompt -------------------------------------------------------------


def test_input_is_dropped_while_the_administrator_prompt_is_up(pairing: Pairing) -> None:
    """desktop{secure} reaches the viewer; its input is dropped, with one secure-desktop
    refusal per prompt; once the prompt is gone input flows again."""
    agent, viewer, session = live(pairing)
    pairing.agent_message(agent, protocol.Desktop(True), T0 + 5)
    assert viewer.sent[-1] == protocol.Desktop(True)
    before = len(agent.sent)
    for t in range(3):
        pairing.viewer_message(viewer, key(session), T0 + 6 + t)
    assert len(agent.sent) == before
    assert viewer.sent.count(SECURE_DESKTOP) == 1
    assert SECURE_DESKTOP.message == ("The customer sees a Windows administrator prompt. "
                                      "Ask them to click Yes or No.")
    pairing.agent_message(agent, protocol.Desktop(False), T0 + 10)
    assert viewer.sent[-1] == protocol.Desktop(False)
    pairing.viewer_message(viewer, key(session), T0 + 11)
    assert agent.sent[-1] == key(session)


def test_a_rejoining_viewer_learns_the_prompt_is_up(pairing: Pairing) -> None:
    """A viewer that comes back while the prompt is up gets desktop{secure} after accepted."""
    agent, viewer, session = live(pairing, control=False)
    pairing.agent_message(agent, protocol.Desktop(True), T0 + 5)
    pairing.viewer_gone(viewer, T0 + 6)
    again = FakePeer("198.51.100.7")
    pairing.viewer_joined(again, DAVID, T0 + 7)
    pairing.viewer_message(again, protocol.Accept(session), T0 + 8)
    kinds = [type(m) for m in again.sent]
    assert kinds.index(protocol.Desktop) > kinds.index(protocol.Accepted)
    assert again.of(protocol.Desktop) == [protocol.Desktop(True)]


def test_a_takeover_clears_the_prompt_until_the_new_copy_reports_it(pairing: Pairing) -> None:
    """The relay forgets the old copy's report: the new copy says desktop again itself."""
    old, viewer, session = live(pairing)
    pairing.agent_message(old, protocol.Desktop(True), T0 + 5)
    new = FakePeer()
    assert pairing.agent_hello(new, hello(handoff=secret_for(pairing, old)), DAVID, T0 + 20)
    assert viewer.sent[-1] == protocol.Desktop(False)
    assert not pairing.sessions[session].secure
