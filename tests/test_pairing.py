"""The relay's session rules without sockets: fakes behind relay.pairing's Peer and Recorder."""

from __future__ import annotations

import inspect
import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import protocol
from relay.pairing import ACTIVE, REFUSED, WAITING, Pairing, Recorder
from tests.fakes import RecordingLedger
from tests.helpers.pairing import DAVID, PETUR, FakePeer, FakeTechnician

SCREENS = (protocol.Screen(0, 0, 1280, 800), protocol.Screen(0, 0, 1280, 800))
T0 = 1_800_000_000.0


def endings(peer: FakePeer) -> list[tuple[str, str, str]]:
    """(session, by, reason) of each `ended` the peer was sent (the receipt apart)."""
    return [(m.session, m.by, m.reason) for m in peer.of(protocol.Ended)]


def frame(seq: int = 1, flags: int = protocol.FLAG_LAST, monitor: int = 1, x: int = 0,
          y: int = 0, width: int = 64, height: int = 64) -> bytes:
    """A binary update rectangle (the rules read only its header)."""
    return protocol.encode_frame(protocol.Frame(protocol.FRAME_JPEG, flags, monitor, seq, x, y,
                                                width, height, b"\xff\xd8\xff image"))


def hello(technician: str = "david", resume: str = "") -> protocol.AgentHello:
    return protocol.AgentHello("agent", protocol.PROTOCOL_VERSION, technician, "PC-1",
                               "anna", SCREENS, resume)


def technician_named(name: str) -> FakeTechnician | None:
    return {"david": DAVID, "petur": PETUR}.get(name)


@pytest.fixture
def ledger() -> RecordingLedger:
    return RecordingLedger()


@pytest.fixture
def pairing(ledger) -> Pairing:
    return Pairing(ledger, wait_timeout=600, grace=60)


def register(pairing: Pairing, address: str = "192.0.2.1", now: float = T0,
             technician: str = "david") -> tuple[FakePeer, str]:
    agent = FakePeer(address)
    assert pairing.agent_hello(agent, hello(technician), technician_named(technician), now)
    registered = agent.of(protocol.Registered)[0]
    return agent, registered.session


def viewer_of(pairing: Pairing, technician=DAVID, now: float = T0) -> FakePeer:
    viewer = FakePeer("198.51.100.7")
    pairing.viewer_joined(viewer, technician, now)
    return viewer


def active(pairing: Pairing, control: bool = False) -> tuple[FakePeer, FakePeer, str]:
    agent, session = register(pairing)
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Accept(session), T0 + 1)
    if control:
        pairing.viewer_message(viewer, protocol.TakeControl(session), T0 + 2)
    return agent, viewer, session


def key(session: str) -> protocol.Key:
    return protocol.Key(session, "KeyA", "a", True)


def test_the_ledger_fake_has_every_method_of_the_recorder_the_rules_write_to():
    """tests.fakes.RecordingLedger takes the same calls as relay.pairing.Recorder: a fake
    missing a method fails here, not in whichever test first reaches that path."""
    wanted = {name: inspect.signature(getattr(Recorder, name)) for name in dir(Recorder)
              if not name.startswith("_")}
    assert wanted, "relay.pairing.Recorder names no methods"
    for name, signature in wanted.items():
        fake = getattr(RecordingLedger, name, None)
        assert callable(fake), f"RecordingLedger has no {name}()"
        assert list(inspect.signature(fake).parameters) == list(signature.parameters), name


def test_registered_session_appears_only_in_its_owners_queue(pairing):
    """A new session is listed live in its technician's queue and nobody else's."""
    david, petur = viewer_of(pairing), viewer_of(pairing, PETUR)
    agent, session = register(pairing)
    assert agent.of(protocol.Registered)[0].technician_name == "David"
    assert [e.session for e in david.last().sessions] == [session]
    assert david.last().sessions[0].state == "waiting"
    assert all(not q.sessions for q in petur.of(protocol.Queue))


def test_unknown_or_disabled_technician_is_refused_with_a_reason(pairing, ledger):
    """An agent naming an unknown or disabled support person gets technician-unknown."""
    for technician in (None, FakeTechnician("david", "David", enabled=False)):
        agent = FakePeer()
        assert not pairing.agent_hello(agent, hello(), technician, T0)
        assert agent.last().code == "technician-unknown"
        assert "not available" in agent.last().message
        assert agent.closed[0] == 1008
    assert not pairing.sessions
    assert ledger.kinds() == ["refused", "refused"]


def test_waiting_sessions_per_address_are_capped(pairing):
    """One address may hold at most MAX_WAITING_PER_ADDRESS waiting sessions."""
    for _ in range(protocol.MAX_WAITING_PER_ADDRESS):
        register(pairing, "203.0.113.5")
    agent = FakePeer("203.0.113.5")
    assert not pairing.agent_hello(agent, hello(), DAVID, T0)
    assert agent.last().code == "too-many-waiting"
    register(pairing, "203.0.113.6")  # another address is not affected


@pytest.mark.parametrize("network, addresses", [
    ("IPv4 /24", [f"203.0.113.{i}" for i in range(1, 255)]),
    ("IPv6 /64", [f"2001:db8:1:2::{i:x}" for i in range(1, 255)]),
])
def test_waiting_sessions_per_subnet_are_capped_well_above_one_address(pairing, network,
                                                                         addresses):
    """Many addresses of one /24 or /64 hold at most MAX_WAITING_PER_SUBNET waiting sessions
    (ten times one address's cap: an office NAT); the next network is not affected."""
    assert protocol.MAX_WAITING_PER_SUBNET >= 10 * protocol.MAX_WAITING_PER_ADDRESS
    for address in addresses[: protocol.MAX_WAITING_PER_SUBNET]:
        register(pairing, address)
    agent = FakePeer(addresses[-1])
    assert not pairing.agent_hello(agent, hello(), DAVID, T0)
    assert agent.last().code == "too-many-waiting"
    register(pairing, "198.51.100.1" if "." in addresses[0] else "2001:db8:1:3::1")


def test_queue_lists_the_newest_sessions_and_counts_the_rest(pairing):
    """Over MAX_QUEUE_ENTRIES waiting: the queue lists the newest (oldest first among them)
    and says how many more wait, so a flood cannot hide the customer who just called; the
    support person's own detached session is listed whatever the flood."""
    _, viewer, mine = active(pairing)
    pairing.viewer_gone(viewer, T0 + 2)  # detached: to rejoin
    flood = protocol.MAX_QUEUE_ENTRIES + 5
    for i in range(flood):
        register(pairing, f"10.{i // 250}.{i % 250}.1", now=T0 + 10 + i)
    _, real = register(pairing, "192.0.2.99", now=T0 + 10 + flood)
    queue = pairing.queue_for("david", T0 + 20 + flood)
    listed = [e.session for e in queue.sessions]
    assert len(listed) == protocol.MAX_QUEUE_ENTRIES
    assert listed[0] == mine and listed[-1] == real
    assert queue.more == flood + 1 + 1 - protocol.MAX_QUEUE_ENTRIES
    assert [e.waited_s for e in queue.sessions[1:]] == sorted(
        (e.waited_s for e in queue.sessions[1:]), reverse=True)


def test_refused_hellos_fill_the_ledger_only_up_to_a_budget_then_one_summary(pairing, ledger):
    """A flood of refused agent hellos writes at most the budget of rows a window, then one
    row saying how many more there were once the window is over."""
    budget = pairing.refusals.lines
    for i in range(500):
        assert not pairing.agent_hello(FakePeer(f"10.0.{i // 200}.{i % 200}"), hello("nobody"),
                                       None, T0 + i * 0.01)
    assert ledger.kinds().count("refused") == budget
    pairing.tick(T0 + pairing.refusals.window_s + 1)
    rows = [c for c in ledger.calls if c[0] == "event" and c[2] == "refused"]
    assert len(rows) == budget + 1
    assert rows[-1][3].startswith(f"{500 - budget} more refused hellos")
    pairing.tick(T0 + 2 * pairing.refusals.window_s + 2)  # nothing more to say
    assert len([c for c in ledger.calls if c[0] == "event"]) == budget + 1


def test_frames_beyond_the_update_window_are_dropped_and_a_full_image_asked_once(pairing):
    """An agent that sends update after update without acknowledgements gets the first
    MAX_UPDATES_IN_FLIGHT through, the rest dropped and one refresh; its full image then
    starts a new window, and acknowledgements make room again."""
    agent, viewer, session = active(pairing)
    limit = protocol.MAX_UPDATES_IN_FLIGHT
    full = protocol.FLAG_LAST | protocol.FLAG_FULL
    assert pairing.agent_frame(agent, frame(0, full), T0)  # its first image since accepted
    assert [pairing.agent_frame(agent, frame(seq), T0) for seq in range(1, 10)] == \
        [True] * (limit - 1) + [False] * (10 - limit)
    assert agent.of(protocol.Refresh) == [protocol.Refresh(session, 1)]
    assert pairing.agent_frame(agent, frame(20, full), T0)  # the restart
    pairing.viewer_message(viewer, protocol.Ack(session, 20), T0)
    assert [pairing.agent_frame(agent, frame(seq), T0) for seq in range(21, 22 + limit)] == \
        [True] * limit + [False]
    pairing.viewer_message(viewer, protocol.Ack(session, 21), T0)
    assert pairing.agent_frame(agent, frame(30), T0)


def test_an_agent_keeping_the_window_is_never_cut_short_across_a_refresh(pairing):
    """A refresh crosses updates already on their way: those still count to the old window,
    the agent's full image opens a new one, and the old ones' acks are still taken."""
    agent, viewer, session = active(pairing)
    window = protocol.UpdateWindow()  # the agent's side of the same rule
    sent = []

    def agent_sends(seq: int, flags: int = protocol.FLAG_LAST) -> None:
        assert window.may_start()
        window.started(seq)
        assert pairing.agent_frame(agent, frame(seq, flags), T0)
        sent.append(seq)

    for seq in range(3):
        agent_sends(seq)
    pairing.viewer_message(viewer, protocol.Ack(session, 0), T0)
    window.acked(0)
    pairing.viewer_message(viewer, protocol.Refresh(session, 1), T0)  # on its way to the agent
    agent_sends(3)  # sent before the agent read the refresh
    window.restart()  # the agent reads it: forgets 1, 2, 3 and sends full images
    for seq in range(4, 7):
        agent_sends(seq, protocol.FLAG_LAST | (protocol.FLAG_FULL if seq == 4 else 0))
    for seq in (1, 2, 3, 4):  # the viewer draws them in order
        pairing.viewer_message(viewer, protocol.Ack(session, seq), T0)
        window.acked(seq)
    agent_sends(7)
    assert len(viewer.frames) == len(sent) == 8


def test_a_new_monitor_layout_starts_a_new_window(pairing):
    """An agent whose monitors changed sends `screens`, forgets what was in flight and
    streams the new layout at once: none of it is cut short, and the old acks still count."""
    agent, viewer, session = active(pairing)
    full = protocol.FLAG_LAST | protocol.FLAG_FULL
    limit = protocol.MAX_UPDATES_IN_FLIGHT
    for seq in range(limit):
        assert pairing.agent_frame(agent, frame(seq, full if seq == 0 else protocol.FLAG_LAST),
                                   T0)
    wider = (protocol.Screen(0, 0, 1920, 1080), protocol.Screen(0, 0, 1920, 1080))
    pairing.agent_message(agent, protocol.Screens(wider), T0)
    assert viewer.last() == protocol.Screens(wider)
    assert [pairing.agent_frame(agent, frame(seq, full, width=1920, height=1080), T0)
            for seq in range(limit, 2 * limit)] == [True] * limit
    pairing.viewer_message(viewer, protocol.Ack(session, 0), T0)  # an old one, drawn late
    assert not pairing.agent_frame(agent, frame(2 * limit), T0)  # the new window is full


def test_a_rectangle_outside_the_announced_monitor_is_a_protocol_error(pairing):
    """A frame beyond its monitor's announced size, or for a monitor the agent does not
    have, is refused as bad data; one update may not carry more than twice its pixels."""
    agent, _, _ = active(pairing)
    for bad in (frame(1, x=1280 - 63), frame(1, y=800 - 63, height=64),
                frame(1, monitor=2), frame(1, width=16384, height=16384)):
        with pytest.raises(protocol.ProtocolError):
            pairing.agent_frame(agent, bad, T0)
    assert pairing.agent_frame(agent, frame(1, x=1280 - 64, y=800 - 64), T0)
    whole = {"x": 0, "y": 0, "width": 1280, "height": 800}
    assert pairing.agent_frame(agent, frame(2, 0, **whole), T0)
    assert pairing.agent_frame(agent, frame(2, 0, **whole), T0)
    assert not pairing.agent_frame(agent, frame(2, 0, **whole), T0)  # a third screenful


def test_accept_tells_both_sides_and_records_it(pairing, ledger):
    """accept -> accepted to agent and viewer with the customer's details; ledger.accepted."""
    agent, viewer, session = active(pairing)
    for peer in (agent, viewer):
        accepted = peer.of(protocol.Accepted)[0]
        assert (accepted.session, accepted.machine, accepted.user) == (session, "PC-1", "anna")
        assert accepted.screens == SCREENS
    assert ("accepted", session, T0 + 1) in ledger.calls
    assert viewer.last().sessions == ()  # no longer waiting


@pytest.mark.parametrize("attempt", [
    protocol.Accept, protocol.TakeControl, protocol.ReleaseControl,
    lambda s: protocol.Refresh(s, 0), lambda s: protocol.Ack(s, 1),
    lambda s: protocol.End(s, "bye"), key,
])
def test_other_technician_gets_the_same_refusal_as_for_a_made_up_session(pairing, ledger,
                                                                         attempt):
    """Petur's attempts on David's session are answered exactly like a made-up id."""
    agent, viewer, session = active(pairing, control=True)
    petur = viewer_of(pairing, PETUR)
    sent_before = (len(agent.sent), len(viewer.sent))
    pairing.viewer_message(petur, attempt(session), T0 + 5)
    pairing.viewer_message(petur, attempt("madeUpSessionId00000000"), T0 + 5)
    assert petur.sent[-2:] == [REFUSED, REFUSED]
    assert (len(agent.sent), len(viewer.sent)) == sent_before
    assert pairing.sessions[session].state == ACTIVE
    refused = [c for c in ledger.calls if c[0] == "event" and c[2] == "refused"]
    assert [c[1] for c in refused] == [session, "madeUpSessionId00000000"]


def test_waiting_session_cannot_be_accepted_by_another_technician(pairing):
    """A waiting session refuses petur's accept and stays waiting for david."""
    _, session = register(pairing)
    petur = viewer_of(pairing, PETUR)
    pairing.viewer_message(petur, protocol.Accept(session), T0)
    assert petur.last() == REFUSED
    assert pairing.sessions[session].state == WAITING


def test_no_frames_before_acceptance(pairing):
    """Screen updates from a waiting session go nowhere; after accept they reach the viewer."""
    agent, session = register(pairing)
    viewer = viewer_of(pairing)
    assert not pairing.agent_frame(agent, frame(1), T0)
    pairing.viewer_message(viewer, protocol.Accept(session), T0)
    assert pairing.agent_frame(agent, frame(2, protocol.FLAG_LAST | protocol.FLAG_FULL), T0)
    assert viewer.frames == [frame(2, protocol.FLAG_LAST | protocol.FLAG_FULL)]


def test_input_needs_an_active_session_and_control(pairing):
    """Input before accept, before take_control and after release never reaches the agent."""
    agent, session = register(pairing)
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, key(session), T0)
    pairing.viewer_message(viewer, protocol.Accept(session), T0)
    pairing.viewer_message(viewer, key(session), T0)
    assert viewer.of(protocol.Error)[0].code == "no-control"
    pairing.viewer_message(viewer, protocol.TakeControl(session), T0)
    pairing.viewer_message(viewer, key(session), T0)
    pairing.viewer_message(viewer, protocol.ReleaseControl(session), T0)
    pairing.viewer_message(viewer, key(session), T0)
    assert len(agent.of(protocol.Key)) == 1
    assert [c.granted for c in agent.of(protocol.Control)] == [True, False]
    assert [c.granted for c in viewer.of(protocol.Control)] == [True, False]


def test_input_is_rate_limited_in_order(pairing):
    """Beyond the burst input is dropped with one rate-limited notice; order is kept."""
    agent, viewer, session = active(pairing, control=True)
    for i in range(protocol.INPUT_BURST + 50):
        pairing.viewer_message(viewer, protocol.Text(session, str(i)), T0 + 3)
    delivered = [int(m.text) for m in agent.of(protocol.Text)]
    assert delivered == list(range(protocol.INPUT_BURST))
    assert [e.code for e in viewer.of(protocol.Error)] == ["rate-limited"]
    pairing.viewer_message(viewer, protocol.Text(session, "later"), T0 + 4)
    assert agent.last() == protocol.Text(session, "later")


def test_rate_limit_never_drops_key_or_button_releases(pairing):
    """Over the limit, presses are dropped but every release reaches the agent, in order."""
    agent, viewer, session = active(pairing, control=True)
    sent = []
    for i in range(2 * protocol.INPUT_BURST + 40):
        sent.append(protocol.Key(session, "KeyA", str(i), i % 2 == 0))
    sent.append(protocol.Button(session, 1, 5, 5, "left", False))
    for message in sent:
        pairing.viewer_message(viewer, message, T0 + 3)
    delivered = [m for m in agent.sent if isinstance(m, (protocol.Key, protocol.Button))]
    assert [m for m in delivered if not m.down] == [m for m in sent if not m.down]
    assert len([m for m in delivered if m.down]) == protocol.INPUT_BURST
    positions = [sent.index(m) for m in delivered]
    assert positions == sorted(positions)  # the order is kept


def test_waiting_session_expires(pairing, ledger):
    """A session nobody accepts ends by relay, reason expired, after wait_timeout."""
    agent, session = register(pairing)
    viewer = viewer_of(pairing)
    pairing.tick(T0 + 599)
    assert session in pairing.sessions
    pairing.tick(T0 + 600)
    assert endings(agent) == [(session, "relay", "expired")]
    assert agent.closed[0] == 1000
    assert viewer.last().sessions == ()
    assert ("ended", session, "relay", "expired", T0 + 600) in ledger.calls


def test_customer_close_ends_and_tells_the_viewer(pairing, ledger):
    """close from the agent -> ended by customer, customer-closed, told to the viewer."""
    agent, viewer, session = active(pairing)
    pairing.agent_message(agent, protocol.Close("done"), T0 + 9)
    assert endings(viewer)[-1:] == [(session, "customer", "customer-closed")]
    assert viewer.last() == viewer.of(protocol.Ended)[-1]
    assert ("ended", session, "customer", "customer-closed", T0 + 9) in ledger.calls
    assert not pairing.sessions and not pairing.agents


def test_viewer_end_ends_and_tells_the_agent(pairing):
    """end from the owner -> ended by technician; the agent is told and closed."""
    agent, viewer, session = active(pairing)
    pairing.viewer_message(viewer, protocol.End(session, "done"), T0 + 9)
    assert (session, "technician", "technician-ended") in endings(agent)
    assert agent.closed == (1000, "session ended")


def test_agent_lost_while_waiting_ends_at_once(pairing):
    """A waiting session whose agent disconnects ends with agent-lost."""
    agent, _session = register(pairing)
    pairing.agent_gone(agent, T0 + 1, resumable=True)
    assert not pairing.sessions


def test_active_agent_drop_can_resume_within_grace_once(pairing, ledger):
    """An active session survives an agent link drop; the resume secret works once."""
    agent, viewer, session = active(pairing, control=True)
    secret = agent.of(protocol.Registered)[0].resume
    pairing.agent_gone(agent, T0 + 10, resumable=True)
    assert viewer.of(protocol.Control)[-1].granted is False
    pairing.viewer_message(viewer, key(session), T0 + 11)
    again = FakePeer()
    assert pairing.agent_hello(again, hello(resume=secret), DAVID, T0 + 20)
    registered = again.of(protocol.Registered)[0]
    assert registered.session == session and registered.resume != secret
    assert again.of(protocol.Accepted) and not again.of(protocol.Key)
    pairing.agent_gone(again, T0 + 30, resumable=True)
    thief = FakePeer()
    assert not pairing.agent_hello(thief, hello(resume=secret), DAVID, T0 + 31)
    assert thief.last().code == "resume-failed"
    pairing.tick(T0 + 30 + 60)
    assert (session, "relay", "agent-lost") in endings(viewer)


def test_resume_is_refused_and_the_session_ended_when_the_owner_is_disabled(pairing, ledger):
    """An agent coming back to a disabled support person's session is refused; it ends."""
    agent, viewer, session = active(pairing)
    secret = agent.of(protocol.Registered)[0].resume
    pairing.agent_gone(agent, T0 + 10, resumable=True)
    again = FakePeer()
    disabled = FakeTechnician("david", "David", enabled=False)
    assert not pairing.agent_hello(again, hello(resume=secret), disabled, T0 + 20)
    assert again.last().code == "resume-failed" and again.closed[0] == 1008
    assert session not in pairing.sessions
    assert (session, "relay", "technician-disabled") in endings(viewer)
    assert ("ended", session, "relay", "technician-disabled", T0 + 10) in ledger.calls
    pairing.check_invariants()


def test_viewer_detach_keeps_session_for_owner_to_rejoin(pairing, ledger):
    """A lost viewer releases control; the session is listed detached; only david rejoins."""
    agent, viewer, session = active(pairing, control=True)
    pairing.viewer_gone(viewer, T0 + 10)
    assert agent.of(protocol.Control)[-1].granted is False
    david2 = viewer_of(pairing, now=T0 + 11)
    assert david2.last().sessions[0].state == "detached"
    petur = viewer_of(pairing, PETUR)
    pairing.viewer_message(petur, protocol.Accept(session), T0 + 12)
    assert petur.last() == REFUSED
    pairing.viewer_message(david2, protocol.Accept(session), T0 + 12)
    assert david2.of(protocol.Accepted)
    assert agent.last() == protocol.Refresh(session, 0)
    pairing.viewer_message(david2, key(session), T0 + 13)
    assert not agent.of(protocol.Key)


def test_accepted_carries_the_time_since_the_first_acceptance(pairing):
    """A fresh accept says elapsed_s 0; a rejoin and a resume say how long it has run."""
    agent, viewer, session = active(pairing)  # accepted at T0 + 1
    assert viewer.of(protocol.Accepted)[0].elapsed_s == 0
    assert agent.of(protocol.Accepted)[0].elapsed_s == 0
    pairing.viewer_gone(viewer, T0 + 10)
    again = viewer_of(pairing, now=T0 + 30)
    pairing.viewer_message(again, protocol.Accept(session), T0 + 31.5)
    assert again.of(protocol.Accepted)[0].elapsed_s == 30.5
    secret = agent.of(protocol.Registered)[0].resume
    pairing.agent_gone(agent, T0 + 40, resumable=True)
    resumed = FakePeer()
    assert pairing.agent_hello(resumed, hello(resume=secret), DAVID, T0 + 42)
    assert resumed.of(protocol.Accepted)[0].elapsed_s == 41


def test_detached_session_ends_after_grace(pairing):
    """Nobody rejoins within grace -> ended by relay, viewer-lost; agent told and closed."""
    agent, viewer, session = active(pairing)
    pairing.viewer_gone(viewer, T0 + 10)
    pairing.tick(T0 + 69)
    assert session in pairing.sessions
    pairing.tick(T0 + 70)
    assert (session, "relay", "viewer-lost") in endings(agent)


def test_sessions_nobody_came_back_to_end_when_the_link_was_lost(pairing, ledger):
    """agent-lost and viewer-lost are recorded at the loss, not after the grace window."""
    agent, _viewer, session = active(pairing)
    pairing.agent_gone(agent, T0 + 10, resumable=True)
    pairing.tick(T0 + 71)
    assert ("ended", session, "relay", "agent-lost", T0 + 10) in ledger.calls
    _agent2, viewer2, session2 = active(pairing)
    pairing.viewer_gone(viewer2, T0 + 20)
    pairing.tick(T0 + 81)
    assert ("ended", session2, "relay", "viewer-lost", T0 + 20) in ledger.calls


def test_one_viewer_per_session(pairing):
    """A second window of the same support person cannot open an attached session."""
    _, _viewer, session = active(pairing)
    other = viewer_of(pairing)
    pairing.viewer_message(other, protocol.Accept(session), T0 + 2)
    assert other.last().code == "open-elsewhere"


def test_same_login_reconnecting_replaces_its_silently_dead_viewer_link(pairing, ledger):
    """accept from a new link with the old link's login token closes the old link and
    attaches the new one; another login still gets open-elsewhere."""
    agent, _ = register(pairing)
    session = agent.of(protocol.Registered)[0].session
    old = FakePeer()
    pairing.viewer_joined(old, DAVID, T0, "login-1")
    pairing.viewer_message(old, protocol.Accept(session), T0 + 1)
    pairing.viewer_message(old, protocol.TakeControl(session), T0 + 2)
    other = FakePeer()
    pairing.viewer_joined(other, DAVID, T0 + 3, "login-2")
    pairing.viewer_message(other, protocol.Accept(session), T0 + 3)
    assert other.last().code == "open-elsewhere"
    new = FakePeer()
    pairing.viewer_joined(new, DAVID, T0 + 5, "login-1")
    pairing.viewer_message(new, protocol.Accept(session), T0 + 5)
    assert old.closed is not None and old.closed[0] == 4001
    assert new.of(protocol.Accepted)[0].elapsed_s == 4
    assert pairing.sessions[session].viewer is new and not pairing.sessions[session].control
    assert agent.of(protocol.Control)[-1].granted is False
    pairing.viewer_gone(old, T0 + 30)  # the old link's ping timeout comes later: no effect
    assert pairing.sessions[session].viewer is new
    pairing.check_invariants()


def test_agent_cannot_send_viewer_messages(pairing):
    """An agent sending a viewer's message is a protocol error."""
    agent, session = register(pairing)
    with pytest.raises(protocol.ProtocolError):
        pairing.agent_message(agent, protocol.Accept(session), T0)


def test_ping_is_answered_by_the_relay(pairing):
    """ping -> pong with the same t."""
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Ping(12.5), T0)
    assert viewer.last() == protocol.Pong(12.5)


def test_shutdown_ends_every_session(pairing):
    """Stopping the relay ends live sessions with relay-shutdown and tells both sides."""
    agent, viewer, session = active(pairing)
    pairing.shutdown(T0 + 5)
    assert endings(viewer)[-1:] == [(session, "relay", "relay-shutdown")]
    assert viewer.last() == viewer.of(protocol.Ended)[-1]
    assert (session, "relay", "relay-shutdown") in endings(agent)
    assert not pairing.sessions


def test_stalled_agent_and_healing_viewer(pairing):
    """agent_stalled ends the session; viewer_caught_up asks the agent for a refresh."""
    agent, viewer, session = active(pairing)
    pairing.viewer_caught_up(viewer, 2, T0 + 3)
    assert agent.last() == protocol.Refresh(session, 2)
    pairing.agent_stalled(agent, T0 + 4)
    assert endings(viewer)[-1:] == [(session, "relay", "agent-stalled")]
    assert viewer.last() == viewer.of(protocol.Ended)[-1]



# --- the session code, pause and the receipt (issue 12) --------------------------------


def test_the_session_code_is_in_registered_the_queue_and_accepted(pairing):
    """The 6 digits the customer reads out are the ones the support person sees."""
    viewer = viewer_of(pairing)
    agent, session = register(pairing)
    code = agent.of(protocol.Registered)[0].code
    assert len(code) == 6 and code.isdigit()
    assert [(e.session, e.code) for e in viewer.last().sessions] == [(session, code)]
    pairing.viewer_message(viewer, protocol.Accept(session), T0 + 1)
    assert viewer.of(protocol.Accepted)[0].code == code
    assert agent.of(protocol.Accepted)[0].code == code


def test_session_codes_differ_among_one_support_persons_callers(ledger):
    """Two live callers of one support person never share a code (another person's may)."""
    codes = iter(["111111", "111111", "222222", "111111"])
    pairing = Pairing(ledger, new_code=lambda: next(codes))
    first, second = register(pairing)[0], register(pairing, "192.0.2.2")[0]
    other = register(pairing, "192.0.2.3", technician="petur")[0]
    assert [a.of(protocol.Registered)[0].code for a in (first, second, other)] == [
        "111111", "222222", "111111"]


def test_with_require_code_only_the_callers_code_accepts(ledger):
    """--require-code: no code or a wrong one is refused with a sentence; the right one
    accepts; rejoining a detached session needs no code."""
    pairing = Pairing(ledger, require_code=True, grace=60)
    agent, session = register(pairing)
    code = agent.of(protocol.Registered)[0].code
    wrong = "000000" if code != "000000" else "111111"
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Accept(session), T0 + 1)
    assert viewer.last().code == "code-required"
    pairing.viewer_message(viewer, protocol.Accept(session, wrong), T0 + 2)
    assert viewer.last().code == "wrong-code"
    assert pairing.sessions[session].state == WAITING
    pairing.viewer_message(viewer, protocol.Accept(session, code), T0 + 3)
    assert pairing.sessions[session].state == ACTIVE
    pairing.viewer_gone(viewer, T0 + 4)
    again = viewer_of(pairing)
    pairing.viewer_message(again, protocol.Accept(session), T0 + 5)
    assert again.of(protocol.Accepted)


def test_a_pause_stops_frames_and_input_until_resumed(pairing, ledger):
    """Paused by the customer: the viewer is told, frames and input stop (one refusal),
    the ledger records it; resumed: both flow again."""
    agent, viewer, session = active(pairing, control=True)
    pairing.agent_message(agent, protocol.Pause(True), T0 + 10)
    assert viewer.last() == protocol.Pause(True)
    assert not pairing.agent_frame(agent, frame(1), T0 + 11)
    pairing.viewer_message(viewer, key(session), T0 + 12)
    pairing.viewer_message(viewer, key(session), T0 + 13)
    assert [m.code for m in viewer.of(protocol.Error)] == ["paused"]
    assert not agent.of(protocol.Key)
    pairing.agent_message(agent, protocol.Pause(False), T0 + 40)
    assert viewer.last() == protocol.Pause(False)
    assert pairing.agent_frame(agent, frame(1, protocol.FLAG_LAST | protocol.FLAG_FULL),
                               T0 + 41)
    pairing.viewer_message(viewer, key(session), T0 + 42)
    assert agent.of(protocol.Key) == [key(session)]
    assert [c for c in ledger.calls if c[0] == "paused"] == [
        ("paused", session, True, T0 + 10), ("paused", session, False, T0 + 40)]


def test_a_pause_before_acceptance_or_repeated_changes_nothing(pairing, ledger):
    """Only an accepted session pauses, and pausing twice is one pause."""
    agent, session = register(pairing)
    pairing.agent_message(agent, protocol.Pause(True), T0 + 1)
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Accept(session), T0 + 2)
    assert not viewer.of(protocol.Pause) and not viewer.of(protocol.Accepted)[0].paused
    pairing.agent_message(agent, protocol.Pause(True), T0 + 3)
    pairing.agent_message(agent, protocol.Pause(True), T0 + 4)
    assert viewer.of(protocol.Pause) == [protocol.Pause(True)]
    assert [c[2] for c in ledger.calls if c[0] == "paused"] == [True]


def test_a_rejoining_viewer_learns_the_pause_and_the_billed_time(pairing):
    """accepted carries paused and the billable seconds so far, paused time excluded."""
    agent, viewer, session = active(pairing)  # accepted at T0 + 1
    pairing.agent_message(agent, protocol.Pause(True), T0 + 11)
    pairing.viewer_gone(viewer, T0 + 20)
    again = viewer_of(pairing)
    pairing.viewer_message(again, protocol.Accept(session), T0 + 31)
    accepted = again.of(protocol.Accepted)[-1]
    assert (accepted.paused, accepted.elapsed_s) == (True, 10)


def test_ended_carries_the_ledger_reference_and_the_billed_seconds(pairing):
    """The customer's receipt: accepted at T0+1, paused 30 s, ended at T0+101: 70 s."""
    agent, viewer, session = active(pairing)
    pairing.agent_message(agent, protocol.Pause(True), T0 + 21)
    pairing.agent_message(agent, protocol.Pause(False), T0 + 51)
    pairing.viewer_message(viewer, protocol.End(session, ""), T0 + 101)
    (ended,) = agent.of(protocol.Ended)
    assert (ended.ref, ended.billable_s) == (1, 70)
    assert viewer.of(protocol.Ended) == [ended]


def test_a_session_never_accepted_bills_nothing_on_its_receipt(pairing):
    """Expired while waiting: its reference, and 0 billed seconds."""
    agent, _ = register(pairing)
    pairing.tick(T0 + 600)
    (ended,) = agent.of(protocol.Ended)
    assert (ended.reason, ended.ref, ended.billable_s) == ("expired", 1, 0)


# --- random operation sequences ---------------------------------------------------------


class PairingMachine(RuleBasedStateMachine):
    """Random agents and viewers of two technicians doing anything in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = RecordingLedger()
        counter = itertools.count()
        self.pairing = Pairing(self.ledger, wait_timeout=50, grace=20,
                               new_secret=lambda: f"secret{next(counter):016d}")
        self.now = T0
        self.agents: list[FakePeer] = []
        self.viewers: list[tuple[FakePeer, FakeTechnician]] = []
        self.session_ids: list[str] = ["madeUpSessionId00000000"]
        self.secrets: list[str] = []
        # every session's owner, kept after it ends: a queue or an acceptance shown to the
        # wrong support person is wrong whenever it happens
        self.owners: dict[str, str] = {}
        self.paused_from: dict[FakePeer, int | None] = {}

    @rule(technician=st.sampled_from(["david", "david", "petur", "nobody"]),
          address=st.sampled_from(["192.0.2.1", "192.0.2.2"]))
    def agent_connects(self, technician, address):
        agent = FakePeer(address)
        if self.pairing.agent_hello(agent, hello(technician), technician_named(technician),
                                    self.now):
            registered = agent.of(protocol.Registered)[0]
            self.session_ids.append(registered.session)
            self.owners[registered.session] = self.pairing.sessions[registered.session].technician
            self.secrets.append(registered.resume)
            self.agents.append(agent)

    @precondition(lambda self: self.secrets)
    @rule(data=st.data())
    def agent_resumes(self, data):
        secret = data.draw(st.sampled_from(self.secrets))
        agent = FakePeer()
        if self.pairing.agent_hello(agent, hello("david", secret), None, self.now):
            self.secrets.append(agent.of(protocol.Registered)[0].resume)
            self.agents.append(agent)

    @rule(technician=st.sampled_from([DAVID, DAVID, PETUR]))
    def viewer_connects(self, technician):
        viewer = FakePeer("198.51.100.7")
        self.pairing.viewer_joined(viewer, technician, self.now)
        self.viewers.append((viewer, technician))

    @precondition(lambda self: self.viewers)
    @rule(data=st.data(), kind=st.sampled_from(
        ["accept", "accept", "take", "take", "release", "key", "key", "key", "end", "ack",
         "refresh"]))
    def viewer_sends(self, data, kind):
        viewer, _ = data.draw(st.sampled_from(self.viewers))
        live = sorted(self.pairing.sessions)
        session = data.draw(st.sampled_from(live + live + self.session_ids[-3:]))
        message = {
            "accept": protocol.Accept(session), "take": protocol.TakeControl(session),
            "release": protocol.ReleaseControl(session), "key": key(session),
            "end": protocol.End(session, ""), "ack": protocol.Ack(session, 1),
            "refresh": protocol.Refresh(session, 0),
        }[kind]
        self.pairing.viewer_message(viewer, message, self.now)

    def owned_pairs(self) -> list[tuple[FakePeer, str]]:
        return [(viewer, s.id) for viewer, technician in self.viewers
                for s in self.pairing.sessions.values() if s.technician == technician.id]

    @precondition(lambda self: self.owned_pairs())
    @rule(data=st.data(), kind=st.sampled_from(["accept", "take", "key", "release", "end"]))
    def owner_sends(self, data, kind):
        """Steer towards the interesting paths: the owner accepting, controlling, typing."""
        viewer, session = data.draw(st.sampled_from(self.owned_pairs()))
        message = {
            "accept": protocol.Accept(session), "take": protocol.TakeControl(session),
            "release": protocol.ReleaseControl(session), "key": key(session),
            "end": protocol.End(session, ""),
        }[kind]
        self.pairing.viewer_message(viewer, message, self.now)

    @precondition(lambda self: self.agents)
    @rule(data=st.data(), kind=st.sampled_from(["frame", "close", "cursor", "pause", "resume"]))
    def agent_sends(self, data, kind):
        agent = data.draw(st.sampled_from(self.agents))
        if kind in ("pause", "resume"):
            self.pairing.agent_message(agent, protocol.Pause(kind == "pause"), self.now)
            session = self.pairing.agents.get(agent)
            paused = session is not None and session.paused_at is not None
            # Where in what the agent was sent its pause starts (None: not paused).
            start = self.paused_from.get(agent)
            self.paused_from[agent] = (len(agent.sent) if start is None else start) \
                if paused else None
        elif kind == "frame":
            self.pairing.agent_frame(agent, frame(data.draw(st.integers(0, 5)),
                                                  data.draw(st.sampled_from([0, 1, 2, 3]))),
                                     self.now)
        elif kind == "close":
            self.pairing.agent_message(agent, protocol.Close(""), self.now)
        else:
            self.pairing.agent_message(agent, protocol.Cursor(1, 2, 3), self.now)

    @precondition(lambda self: self.agents)
    @rule(data=st.data(), resumable=st.booleans())
    def agent_leaves(self, data, resumable):
        agent = data.draw(st.sampled_from(self.agents))
        self.agents.remove(agent)
        self.pairing.agent_gone(agent, self.now, resumable=resumable)

    @precondition(lambda self: self.viewers)
    @rule(data=st.data())
    def viewer_leaves(self, data):
        entry = data.draw(st.sampled_from(self.viewers))
        self.viewers.remove(entry)
        self.pairing.viewer_gone(entry[0], self.now)

    @rule(seconds=st.sampled_from([0.001, 1, 15, 30, 60]))
    def time_passes(self, seconds):
        self.now += seconds
        self.pairing.tick(self.now)

    @invariant()
    def bookkeeping_is_consistent(self):
        self.pairing.check_invariants()

    @invariant()
    def input_only_reaches_agents_in_control(self):
        """From each agent's own view: every key arrived while it had been told control."""
        for agent in self.agents:
            accepted = control = ended = False
            for message in agent.sent:
                if isinstance(message, protocol.Accepted):
                    accepted = True
                elif isinstance(message, protocol.Control):
                    control = message.granted
                elif isinstance(message, protocol.Ended):
                    ended = True
                elif isinstance(message, protocol.Key):
                    assert accepted and control and not ended

    @invariant()
    def no_input_reaches_a_paused_agent(self):
        for agent, start in self.paused_from.items():
            if start is not None:
                assert not [m for m in agent.sent[start:] if isinstance(m, protocol.Key)]

    @invariant()
    def each_session_is_seen_by_its_owner_only(self):
        """Queues and acceptances name only the viewer's own sessions, live or ended."""
        for viewer, technician in self.viewers:
            for message in viewer.sent:
                if isinstance(message, protocol.Queue):
                    for entry in message.sessions:
                        assert self.owners[entry.session] == technician.id, entry
                if isinstance(message, protocol.Accepted):
                    assert self.owners[message.session] == technician.id, message
                    assert message.technician_name == technician.name

    def teardown(self):
        for agent in list(self.agents):
            self.pairing.agent_gone(agent, self.now, resumable=True)
        for viewer, _ in list(self.viewers):
            self.pairing.viewer_gone(viewer, self.now)
        self.pairing.tick(self.now + 1000)
        assert not self.pairing.sessions and not self.pairing.agents
        assert not self.pairing.viewers


PairingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                            deadline=None)
test_random_operation_sequences_keep_the_invariants = PairingMachine.TestCase


# --- decline and the session note (issue 13) ---------------------------------------------


def test_the_owner_declines_a_waiting_session_unbilled(pairing, ledger):
    """decline ends a waiting session by technician, reason declined, billing nothing; the
    customer gets the receipt and the queue empties."""
    agent, session = register(pairing)
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Decline(session), T0 + 5)
    ended = agent.of(protocol.Ended)[0]
    assert (ended.by, ended.reason, ended.billable_s, ended.ref) == (
        "technician", "declined", 0, 1)
    assert agent.closed == (protocol.CLOSE_NORMAL, "session ended")
    assert ("ended", session, "technician", "declined", T0 + 5) in ledger.calls
    assert viewer.last() == protocol.Queue(())
    pairing.check_invariants()


@pytest.mark.parametrize("who", ["stranger", "unknown session"])
def test_decline_by_a_stranger_or_of_an_unknown_session_is_the_one_refusal(pairing, who):
    """Another support person, or a made-up id, gets no-such-session; nothing ends."""
    agent, session = register(pairing)
    viewer = viewer_of(pairing, PETUR if who == "stranger" else DAVID)
    target = session if who == "stranger" else "x" * 22
    pairing.viewer_message(viewer, protocol.Decline(target), T0 + 5)
    assert viewer.last() == REFUSED
    assert not agent.of(protocol.Ended) and pairing.sessions[session].state == WAITING


def test_an_accepted_session_cannot_be_declined(pairing):
    """decline of an active session gets not-waiting, with the sentence; it goes on."""
    agent, viewer, session = active(pairing)
    pairing.viewer_message(viewer, protocol.Decline(session), T0 + 5)
    assert viewer.last() == protocol.refusal("not-waiting", "viewer")
    assert "End it instead" in viewer.last().message
    assert pairing.sessions[session].state == ACTIVE and not agent.of(protocol.Ended)


def test_the_owner_notes_a_live_session_and_gets_noted(pairing, ledger):
    """A note during the session is kept on the session (for the directory), written to the
    ledger and answered with noted."""
    _, viewer, session = active(pairing)
    pairing.viewer_message(viewer, protocol.Note(session, "Ticket 4711"), T0 + 5)
    assert viewer.last() == protocol.Noted(session)
    assert pairing.sessions[session].note == "Ticket 4711"
    assert ("note", session, "Ticket 4711", T0 + 5) in ledger.calls


def test_a_note_stays_editable_until_note_editable_s_after_the_end(pairing, ledger):
    """After the end the owner may still change the note for NOTE_EDITABLE_S; then the
    relay says note-closed (for a while), and later only no-such-session."""
    _, viewer, session = active(pairing)
    pairing.viewer_message(viewer, protocol.End(session, "done"), T0 + 10)
    last_moment = T0 + 10 + protocol.NOTE_EDITABLE_S
    pairing.tick(last_moment)
    pairing.viewer_message(viewer, protocol.Note(session, "done at the end"), last_moment)
    assert viewer.last() == protocol.Noted(session)
    pairing.viewer_message(viewer, protocol.Note(session, "too late"), last_moment + 1)
    assert viewer.last() == protocol.refusal("note-closed", "viewer")
    assert [c[2] for c in ledger.calls if c[0] == "note"] == ["done at the end"]
    pairing.tick(last_moment + 10 * 3600)
    assert not pairing.noted_until
    pairing.viewer_message(viewer, protocol.Note(session, "much later"), last_moment + 36001)
    assert viewer.last() == REFUSED


def test_a_declined_sessions_note_may_be_written_after_the_decline(pairing, ledger):
    """Declining is an act of the support person: its note can say why."""
    _, session = register(pairing)
    viewer = viewer_of(pairing)
    pairing.viewer_message(viewer, protocol.Decline(session), T0 + 5)
    pairing.viewer_message(viewer, protocol.Note(session, "wrong department"), T0 + 6)
    assert viewer.last() == protocol.Noted(session)


def test_a_note_for_another_persons_session_is_refused_live_or_ended(pairing, ledger):
    """Petur can note neither David's live session nor David's just ended one."""
    _, david, session = active(pairing)
    petur = viewer_of(pairing, PETUR)
    pairing.viewer_message(petur, protocol.Note(session, "mine now"), T0 + 5)
    assert petur.last() == REFUSED
    pairing.viewer_message(david, protocol.End(session, "done"), T0 + 6)
    pairing.viewer_message(petur, protocol.Note(session, "mine now"), T0 + 7)
    assert petur.last() == REFUSED
    assert not [c for c in ledger.calls if c[0] == "note"]


def test_a_waiting_session_nobody_acted_on_is_not_remembered_for_notes(pairing):
    """Sessions that expire or whose customer leaves unaccepted keep no note record: a
    flood of agents cannot fill it."""
    agent, _ = register(pairing)
    pairing.agent_message(agent, protocol.Close("bye"), T0 + 1)
    assert not pairing.noted_until


def test_note_saves_beyond_their_rate_are_refused_rate_limited(pairing, ledger):
    """A viewer saves at most NOTES_BURST notes at once, then NOTES_PER_S."""
    from relay.pairing import NOTES_BURST

    _, viewer, session = active(pairing)
    for i in range(NOTES_BURST + 1):
        pairing.viewer_message(viewer, protocol.Note(session, f"v{i}"), T0 + 5)
    assert viewer.last().code == "rate-limited"
    assert len([c for c in ledger.calls if c[0] == "note"]) == NOTES_BURST
    pairing.viewer_message(viewer, protocol.Note(session, "later"), T0 + 6)
    assert viewer.last() == protocol.Noted(session)


def test_a_viewer_rejoining_a_noted_session_gets_the_note_back(pairing):
    """After a reload (or a relay's fail-over) the page shows the note saved before."""
    _, viewer, session = active(pairing)
    pairing.viewer_message(viewer, protocol.Note(session, "Ticket 4711"), T0 + 5)
    pairing.viewer_gone(viewer, T0 + 6)
    again = viewer_of(pairing, now=T0 + 7)
    pairing.viewer_message(again, protocol.Accept(session), T0 + 8)
    accepted = again.of(protocol.Accepted)[0]
    assert again.sent[again.sent.index(accepted) + 1] == protocol.Note(session, "Ticket 4711")
