"""The agent's session core (agent_session.py) as a table: a state, one event, the actions that
must come out and the state after. No sockets, no asyncio, no clock."""

from __future__ import annotations

import pytest

import agent_session as core
import protocol as p
from agent_session import (
    ACCEPTED,
    CONNECTING,
    ENDED,
    IN_CONTROL,
    PAUSED,
    RECONNECTING,
    WAITING,
    Balloon,
    End,
    Inject,
    Outcome,
    Reconnect,
    Send,
    StopStream,
    Stopwatch,
    Stream,
)

SESSION = "session-0123456789abcdef"
OTHER = "other-session-123456789"
RESUME = "resume-0123456789abcdef"
SCREENS = (p.Screen(0, 0, 576, 200), p.Screen(0, 0, 320, 200), p.Screen(320, 40, 256, 128))
KEYS = {"KeyA", "ShiftLeft"}
NOW = 100.0
CODE = "482913"
REGISTERED = p.Registered(SESSION, "David", 600, RESUME, CODE)
ACCEPT = p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, CODE)
ACCEPT_PAUSED = p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, CODE, 30.0, True)
GRANT, RELEASE = p.Control(SESSION, True), p.Control(SESSION, False)
KEY_A = p.Key(SESSION, "KeyA", "a", True)


def session_in(state: str) -> core.Session:
    """A session brought to ``state`` the way the relay would bring it there."""
    session = core.Session("david", "pc-1", "anna", KEYS)
    session.connected(SCREENS)
    steps = {WAITING: [REGISTERED], ACCEPTED: [REGISTERED, ACCEPT],
             IN_CONTROL: [REGISTERED, ACCEPT, GRANT], PAUSED: [REGISTERED, ACCEPT, GRANT],
             ENDED: [p.Ended(SESSION, "relay", "x")]}
    for message in steps.get(state, []):
        session.receive(message, NOW)
    if state == PAUSED:
        session.pause(NOW)
    if state == RECONNECTING:
        for message in (REGISTERED, ACCEPT):
            session.receive(message, NOW)
        session.link_lost(None, "", NOW)
    assert session.state == state
    return session


def held(session: core.Session) -> core.Session:
    """The support person holds Shift and the left button."""
    session.receive(p.Key(SESSION, "ShiftLeft", "Shift", True), NOW)
    session.receive(p.Button(SESSION, 1, 5, 5, "left", True), NOW)
    return session


UPS = [Inject("key", ("ShiftLeft", False)), Inject("button", ("left", False))]
LOST = Outcome(core.EXIT_FAILED, core.LOST)


def receive(message: p.Message):
    return lambda s: s.receive(message, NOW)


TABLE = [
    # (name, start, event, actions, state after)
    ("registered: the balloon of the yellow icon", CONNECTING, receive(REGISTERED),
     [Balloon("Connection active")], WAITING),
    ("a refusal ends with the sentence for its code", CONNECTING,
     receive(p.refusal("technician-unknown", "agent")),
     [StopStream(), End(Outcome(1, p.customer_words("technician-unknown")))], ENDED),
    ("a refusal this side has no words for ends with the relay's sentence", CONNECTING,
     receive(p.Error("from-a-newer-relay", "Nobody called david works here.")),
     [StopStream(), End(Outcome(1, "Nobody called david works here."))], ENDED),
    ("the link lost before registration cannot resume", CONNECTING,
     lambda s: s.link_lost(None, "", NOW), [StopStream(), End(LOST)], ENDED),
    ("accepted says who sees the screen and streams a whole image", WAITING, receive(ACCEPT),
     [Balloon("David can see your screen"), Stream(full=True)], ACCEPTED),
    ("no input while waiting", WAITING, receive(KEY_A), [], WAITING),
    ("no control while waiting", WAITING, receive(GRANT), [], WAITING),
    ("another session's acceptance is ignored",
     WAITING, receive(p.Accepted(OTHER, "Eve", "pc", "u", SCREENS, CODE)), [], WAITING),
    ("no input while accepted without control", ACCEPTED, receive(KEY_A), [], ACCEPTED),
    ("control granted", ACCEPTED, receive(GRANT), [], IN_CONTROL),
    ("another session's control is ignored", ACCEPTED, receive(p.Control(OTHER, True)), [],
     ACCEPTED),
    ("a key in control is pressed", IN_CONTROL, receive(KEY_A),
     [Inject("key", ("KeyA", True))], IN_CONTROL),
    ("text in control is typed", IN_CONTROL, receive(p.Text(SESSION, "hé\n")),
     [Inject("type", ("hé\n",))], IN_CONTROL),
    ("a point on monitor 2 lands at its desktop offset", IN_CONTROL,
     receive(p.PointerMove(SESSION, 2, 10, 20)), [Inject("move", (330, 60))], IN_CONTROL),
    ("a click moves, then presses", IN_CONTROL, receive(p.Button(SESSION, 1, 5, 6, "right", True)),
     [Inject("move", (5, 6)), Inject("button", ("right", True))], IN_CONTROL),
    ("a wheel moves, then scrolls", IN_CONTROL, receive(p.Wheel(SESSION, 1, 5, 6, 0, -2)),
     [Inject("move", (5, 6)), Inject("scroll", (0, -2))], IN_CONTROL),
    ("a point past the monitor's edge is dropped", IN_CONTROL,
     receive(p.PointerMove(SESSION, 2, 256, 0)), [], IN_CONTROL),
    ("an unknown monitor is dropped", IN_CONTROL, receive(p.PointerMove(SESSION, 5, 1, 1)), [],
     IN_CONTROL),
    ("a key the backend cannot press is dropped", IN_CONTROL,
     receive(p.Key(SESSION, "F13", "", True)), [], IN_CONTROL),
    ("another session's input is dropped", IN_CONTROL, receive(p.Key(OTHER, "KeyA", "a", True)),
     [], IN_CONTROL),
    ("release of control lets go of what is held", IN_CONTROL,
     lambda s: held(s).receive(RELEASE, NOW), UPS, ACCEPTED),
    ("ended by the support person: held released, capture stopped, exit 0", IN_CONTROL,
     lambda s: held(s).receive(p.Ended(SESSION, "technician", "done"), NOW),
     [*UPS, StopStream(), End(Outcome(core.EXIT_OK))], ENDED),
    ("ended by the relay: a sentence, never the code", IN_CONTROL,
     receive(p.Ended(SESSION, "relay", "expired")),
     [StopStream(), End(Outcome(1, p.customer_words("expired")))], ENDED),
    ("a refresh selects the monitor and asks for a whole image", ACCEPTED,
     receive(p.Refresh(SESSION, 2)), [Stream(full=True)], ACCEPTED),
    ("a refresh of an unknown monitor is ignored", ACCEPTED, receive(p.Refresh(SESSION, 9)), [],
     ACCEPTED),
    ("a broken link may resume", IN_CONTROL, lambda s: held(s).link_lost(None, "", NOW),
     [*UPS, StopStream(), Reconnect(0)], RECONNECTING),
    ("a relay restart may resume", ACCEPTED, lambda s: s.link_lost(1012, "restart", NOW),
     [StopStream(), Reconnect(0)], RECONNECTING),
    ("a deliberate close may not resume", ACCEPTED, lambda s: s.link_lost(1008, "no", NOW),
     [StopStream(), End(LOST)], ENDED),
    ("a normal close without an end may not resume", ACCEPTED,
     lambda s: s.link_lost(1000, "", NOW), [StopStream(), End(LOST)], ENDED),
    ("a close whose reason is a known code ends in that code's words", ACCEPTED,
     lambda s: s.link_lost(p.CLOSE_POLICY, "resume-failed", NOW),
     [StopStream(), End(Outcome(1, p.customer_words("resume-failed")))], ENDED),
    ("resumed: accepted follows, nothing yet", RECONNECTING, receive(REGISTERED), [],
     RECONNECTING),
    ("resumed and accepted: sharing again without a balloon", RECONNECTING, receive(ACCEPT),
     [Stream(full=True)], ACCEPTED),
    ("no input while reconnecting", RECONNECTING, receive(KEY_A), [], RECONNECTING),
    ("Close: held released, capture stopped, then the relay told", IN_CONTROL,
     lambda s: held(s).close(NOW),
     [*UPS, StopStream(), End(Outcome(core.EXIT_OK), p.Close("customer-closed"))], ENDED),
    ("Close while reconnecting ends at once", RECONNECTING, lambda s: s.close(NOW),
     [StopStream(), End(Outcome(core.EXIT_OK), p.Close("customer-closed"))], ENDED),
    ("a capture failure tells the relay and the customer", ACCEPTED,
     lambda s: s.capture_failed(NOW),
     [StopStream(), End(Outcome(1, core.CAPTURE_FAILED), p.Close("agent-error"))], ENDED),
    ("a bad message closes with 1008 and its reason", IN_CONTROL,
     lambda s: held(s).bad_message("unknown type", NOW),
     [*UPS, StopStream(), End(Outcome(1, "The support server sent something this program "
                                         "does not understand; the session was ended."),
                              None, p.CLOSE_POLICY, "unknown type")], ENDED),
    ("an untrusted certificate is never retried", RECONNECTING,
     lambda s: s.untrusted("expired", NOW),
     [StopStream(), End(Outcome(1, "The support server's certificate is not trusted "
                                   "(expired). Please call your support company before "
                                   "trying again."))], ENDED),
    ("a new monitor layout is announced and sent whole", ACCEPTED,
     lambda s: s.layout(SCREENS[:2]), [Send(p.Screens(SCREENS[:2])), Stream(full=True)],
     ACCEPTED),
    ("the same layout says nothing", ACCEPTED, lambda s: s.layout(SCREENS), [], ACCEPTED),
    ("ended is final: acceptance", ENDED, receive(ACCEPT), [], ENDED),
    ("ended is final: control", ENDED, receive(GRANT), [], ENDED),
    ("ended is final: a lost link", ENDED, lambda s: s.link_lost(None, "", NOW), [], ENDED),
    ("ended is final: Close", ENDED, lambda s: s.close(NOW), [StopStream()], ENDED),
    ("ended is final: Pause", ENDED, lambda s: s.pause(NOW), [], ENDED),
    # the customer's pause
    ("Pause: held released, capture stopped, then the relay told", IN_CONTROL,
     lambda s: held(s).pause(NOW), [*UPS, StopStream(), Send(p.Pause(True))], PAUSED),
    ("Pause while accepted", ACCEPTED, lambda s: s.pause(NOW),
     [StopStream(), Send(p.Pause(True))], PAUSED),
    ("no Pause before acceptance", WAITING, lambda s: s.pause(NOW), [], WAITING),
    ("no Pause while the link is down", RECONNECTING, lambda s: s.pause(NOW), [], RECONNECTING),
    ("Pause twice says it once", PAUSED, lambda s: s.pause(NOW), [], PAUSED),
    ("Resume: the relay told, then a whole image; control back as it was", PAUSED,
     lambda s: s.unpause(NOW), [Send(p.Pause(False)), Stream(full=True)], IN_CONTROL),
    ("Resume when not paused does nothing", ACCEPTED, lambda s: s.unpause(NOW), [], ACCEPTED),
    ("no input while paused, even with control", PAUSED, receive(KEY_A), [], PAUSED),
    ("no refresh while paused", PAUSED, receive(p.Refresh(SESSION, 0)), [], PAUSED),
    ("an ack while paused wakes no capture", PAUSED, receive(p.Ack(SESSION, 0)), [], PAUSED),
    ("a new layout while paused is told, no image sent", PAUSED,
     lambda s: s.layout(SCREENS[:2]), [Send(p.Screens(SCREENS[:2]))], PAUSED),
    ("control released while paused: still paused", PAUSED, receive(RELEASE), [], PAUSED),
    ("the viewer rejoins while paused: no image, pause held", PAUSED, receive(ACCEPT_PAUSED),
     [], PAUSED),
    ("a rejoin that missed the pause is told again", PAUSED, receive(ACCEPT),
     [Send(p.Pause(True))], PAUSED),
    ("a relay that thinks it paused is told it is not", ACCEPTED, receive(ACCEPT_PAUSED),
     [Send(p.Pause(False)), Stream(full=True)], ACCEPTED),
    ("ended while paused: nothing held, capture stopped", PAUSED,
     receive(p.Ended(SESSION, "technician", "technician-ended")),
     [StopStream(), End(Outcome(core.EXIT_OK))], ENDED),
    ("Close while paused", PAUSED, lambda s: s.close(NOW),
     [StopStream(), End(Outcome(core.EXIT_OK), p.Close("customer-closed"))], ENDED),
]


@pytest.mark.parametrize(("start", "event", "actions", "after"),
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_each_event_gives_these_actions_in_this_order(start, event, actions, after) -> None:
    """One row of the session's transition table."""
    session = session_in(start)
    assert event(session) == actions
    assert session.state == after
    if after != IN_CONTROL:
        assert session.held_keys == session.held_buttons == set()


def test_the_hello_carries_the_resume_secret_once_registered() -> None:
    """The first hello has no secret; after registration every new connection resumes."""
    session = core.Session("david", "pc\x00-1", "anna", KEYS)
    [first] = session.connected(SCREENS)
    assert first == Send(p.AgentHello("agent", p.PROTOCOL_VERSION, "david", "pc-1", "anna",
                                      SCREENS, ""))
    session.receive(REGISTERED, NOW)
    session.link_lost(None, "", NOW)
    [again] = session.connected(SCREENS)
    assert again.message.resume == RESUME


def test_a_waiting_session_that_resumed_is_waiting_again() -> None:
    """Lost while waiting, resumed: yellow again (no balloon), no acceptance to wait for."""
    session = session_in(WAITING)
    session.link_lost(1001, "", NOW)
    session.connected(SCREENS)
    assert session.receive(REGISTERED, NOW) == []  # no second "Connection active"
    assert session.state == WAITING


def test_reconnecting_backs_off_and_gives_up_after_the_grace_period() -> None:
    """Failed attempts wait 0.5, 1, 2, 4, then 5 s each; after RECONNECT_GRACE_S from the
    loss, the session ends saying the connection was lost. A connection resets the backoff."""
    session = session_in(RECONNECTING)  # lost at NOW
    delays = [session.connect_failed("refused", NOW + i) for i in range(6)]
    assert delays == [[Reconnect(d)] for d in (0.5, 1, 2, 4, 5, 5)]
    session.connected(SCREENS)
    assert session.connect_failed("refused", NOW + 10) == [Reconnect(0.5)]
    assert session.connect_failed("refused", NOW + core.RECONNECT_GRACE_S + 1) == [
        End(Outcome(1, "Could not reach the support server: the connection was lost."))]
    assert session.state == ENDED


def test_a_first_connection_that_fails_ends_with_why() -> None:
    """Never connected: no retry, the reason in the sentence."""
    session = core.Session("david", "pc", "anna", KEYS)
    assert session.connect_failed("it did not answer in time", NOW) == [
        End(Outcome(1, "Could not reach the support server: it did not answer in time."))]


def test_flow_control_holds_updates_until_an_ack_and_a_refresh_starts_over() -> None:
    """MAX_UPDATES_IN_FLIGHT - 1 bulk updates may wait for acks (the last place is input's
    echo's); the ack that frees a held-back update wakes the streamer (Stream, not full),
    other acks say nothing; a refresh forgets them."""
    session = session_in(ACCEPTED)
    flow = session.flow
    seqs = [flow.next_seq() for _ in range(p.MAX_UPDATES_IN_FLIGHT - 1)]
    for seq in seqs:
        assert flow.may_send()
        flow.started(seq, NOW)
        flow.wrote(seq, 1000, NOW)
    assert not flow.may_send()
    assert session.receive(p.Ack(SESSION, 999), NOW) == []  # never sent
    assert session.receive(p.Ack(SESSION, seqs[0]), NOW) == [Stream(full=False)]
    assert session.receive(p.Ack(SESSION, seqs[1]), NOW) == []  # nothing was held back
    assert flow.may_send() and flow.next_seq() == seqs[-1] + 1
    session.receive(p.Refresh(SESSION, 1), NOW)
    assert flow.in_flight == {}


def test_input_beyond_the_burst_is_dropped_until_time_passes() -> None:
    """INPUT_BURST events at one instant; more only as time refills the bucket."""
    session = session_in(IN_CONTROL)
    moves = [session.receive(p.PointerMove(SESSION, 1, i % 300, 1), NOW)
             for i in range(p.INPUT_BURST + 10)]
    assert sum(1 for m in moves if m) == p.INPUT_BURST
    assert session.receive(p.PointerMove(SESSION, 1, 1, 1), NOW + 1) != []


def test_the_view_follows_the_session_and_says_how_it_ended() -> None:
    """on_change sees each state once, with the support person's name, the session code
    and the end's sentence: what the customer's panel renders."""
    views: list[core.View] = []
    session = core.Session("david", "pc", "anna", KEYS, on_change=views.append)
    session.connected(SCREENS)
    for message in (REGISTERED, ACCEPT, GRANT, RELEASE, p.Ended(SESSION, "relay", "expired")):
        session.receive(message, NOW)
    running, stopped = Stopwatch(0.0, NOW), Stopwatch(0.0)
    live = {"technician_name": "David", "code": CODE, "accepted": True}
    assert views == [core.View(WAITING, "David", code=CODE),
                     core.View(ACCEPTED, billed=running, **live),
                     core.View(IN_CONTROL, billed=running, **live),
                     core.View(ACCEPTED, billed=running, **live),
                     core.View(ENDED, sentence=p.customer_words("expired"), billed=stopped,
                               failed=True, **live)]
    assert session.view == views[-1]


def test_the_billed_clock_takes_the_relays_count_and_stands_still_while_paused() -> None:
    """The meter is the ledger's: accepted.elapsed_s is its base, a pause stops it (and
    runs the paused time instead), a resume restarts it; a rejoin's count replaces ours."""
    session = session_in(WAITING)
    session.receive(p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, CODE, 12.5), NOW)
    assert session.view.billed.seconds(NOW + 10) == 22.5
    session.pause(NOW + 10)
    assert session.view.billed.seconds(NOW + 100) == 22.5
    assert session.view.paused.seconds(NOW + 100) == 90
    session.unpause(NOW + 100)
    view = session.view
    assert (view.billed.seconds(NOW + 101), view.paused.seconds(NOW + 101)) == (23.5, 90)
    rejoin = p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, CODE, 20.0)
    session.receive(rejoin, NOW + 101)
    assert session.view.billed.seconds(NOW + 102) == 21.0
    session.close(NOW + 103)
    assert session.view.billed.seconds(NOW + 500) == 22.0


def test_the_receipt_takes_the_ledgers_reference_and_billed_seconds() -> None:
    """`ended` carries the ledger's reference and billed seconds: the view shows those, both
    when the relay ends the session and when it answers the customer's own Close."""
    by_relay = session_in(ACCEPTED)
    by_relay.receive(p.Ended(SESSION, "technician", "technician-ended", 123, 750), NOW + 5)
    view = by_relay.view
    assert (view.ref, view.billed.seconds(NOW + 999), view.failed) == (123, 750, False)
    assert view.sentence == p.customer_words("technician-ended")
    closed = session_in(ACCEPTED)
    closed.close(NOW + 5)
    assert closed.view.ref == 0
    closed.receipt(p.Ended(OTHER, "customer", "customer-closed", 9, 1))  # not ours
    closed.receipt(p.Ended(SESSION, "customer", "customer-closed", 124, 4))
    assert (closed.view.ref, closed.view.billed.seconds(NOW + 999)) == (124, 4)
    assert not closed.view.failed and closed.view.sentence == ""


def test_a_pause_outlasts_a_lost_link_and_the_relay_is_reminded() -> None:
    """Lost while paused: back as paused after the resume, no image, control not restored;
    a relay whose accepted says not paused gets pause{true} again."""
    session = session_in(PAUSED)
    assert session.link_lost(None, "", NOW) == [StopStream(), Reconnect(0)]
    session.connected(SCREENS)
    assert session.receive(REGISTERED, NOW) == []
    assert session.receive(ACCEPT, NOW) == [Send(p.Pause(True))]
    assert session.state == PAUSED
    assert session.unpause(NOW) == [Send(p.Pause(False)), Stream(full=True)]
    assert session.state == ACCEPTED  # control ended with the link


@pytest.mark.parametrize(("code", "resumable"), [
    (None, True), (p.CLOSE_GOING_AWAY, True), (p.CLOSE_INTERNAL, True), (p.CLOSE_RESTART, True),
    (p.CLOSE_TRY_AGAIN, True), (p.CLOSE_NORMAL, False), (p.CLOSE_POLICY, False),
    (p.CLOSE_TOO_BIG, False), (p.CLOSE_REPLACED, False)])
def test_only_a_broken_link_or_a_relay_going_away_may_resume(code, resumable) -> None:
    """The agent resumes by protocol's one rule (None: no close frame at all): after a broken
    link or a relay going away, never after a deliberate close."""
    session = session_in(ACCEPTED)
    assert core.can_resume(code) is resumable
    assert (session.link_lost(code, "", NOW)[-1] == Reconnect(0)) is resumable
