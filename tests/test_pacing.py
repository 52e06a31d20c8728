"""The pacing rules without I/O: given these acknowledgements and this clock, send this much
(agent_session.FlowControl), in this order (screen_pacing.Outbox), at motion's quality or not
(screen_pacing.Motion), polled when and encoded how (screen_pacing.Pacer)."""

from __future__ import annotations

import pytest

import agent_session as core
import protocol as p
import screen_codec as codec
import screen_pacing as pacing

LIMIT = p.MAX_UPDATES_IN_FLIGHT


def learnt(rate: float = 100_000.0, rtt: float = 0.15,
           mode: str = core.CRUISE) -> core.FlowControl:
    """A FlowControl that has seen one large update and one small echo: ``rate`` bytes a
    second, a round trip of ``rtt`` seconds, nothing in flight, at t=10; past its startup
    unless ``mode`` says (the startup and the drain are tested on their own below)."""
    flow = core.FlowControl()
    flow.mode = mode
    flow.started(0, 0.0)
    flow.wrote(0, int(rate), 0.0)  # a second's worth, acknowledged after a second
    flow.acked(0, 1.0)
    flow.started(1, 1.0)
    flow.wrote(1, 100, 1.0)  # an echo: its own bytes' time on the link is nothing
    flow.acked(1, 1.0 + rtt)
    return flow


def test_before_any_acknowledgement_only_the_count_holds_updates_back() -> None:
    """Nothing known: bulk updates start while fewer than LIMIT - 1 are open (one place is
    kept for input's echo), interactive ones while fewer than LIMIT; no byte budget, no
    pacing delay."""
    flow = core.FlowControl()
    for seq in range(LIMIT - 1):
        assert flow.may_start()
        flow.started(seq, 0.0)
        flow.wrote(seq, 5_000_000, 0.0)
    assert not flow.may_start()
    assert flow.may_start(interactive=True)
    assert flow.write_delay(5_000_000, False, 0.0) == 0.0
    flow.started(LIMIT - 1, 0.0)
    assert not flow.may_start(interactive=True)


def test_the_rate_is_the_delivery_rate_and_the_round_trip_is_the_echos() -> None:
    """100 KB acknowledged a second after it began: 100 KB/s; an echo acknowledged 150 ms
    after it was written: a 150 ms round trip."""
    flow = learnt()
    assert flow.rate == pytest.approx(100_000)
    assert flow.rtt == pytest.approx(0.15)
    assert flow.budget() == pytest.approx(100_000 * (0.15 + core.UNACKED_EXTRA_S))


def test_an_updates_rate_counts_from_its_first_write_not_from_its_encoding() -> None:
    """100 KB begun at t=0, encoded until 0.5 s, written then and acknowledged at 1 s: the
    link took 200 KB/s (the encoder's half second is not the link's)."""
    flow = core.FlowControl()
    flow.started(0, 0.0)
    flow.wrote(0, 100_000, 0.5)
    flow.acked(0, 1.0)
    assert flow.rate == pytest.approx(200_000)


def test_bulk_updates_wait_once_a_round_trip_plus_30_ms_is_unacknowledged() -> None:
    """At 100 KB/s and 150 ms: 18 KB may be unacknowledged; beyond it a bulk update waits
    while an interactive one still starts, and the acknowledgement that frees the budget
    wakes the streamer."""
    flow = learnt()
    flow.started(2, 10.0)
    flow.wrote(2, 17_000, 10.0)
    assert flow.may_start()
    flow.wrote(2, 2_000, 10.2)
    assert flow.unacked == 19_000
    assert not flow.may_start()
    assert flow.may_start(interactive=True)
    assert flow.acked(2, 10.4)  # it had held one back: wake
    assert flow.may_start() and flow.unacked == 0
    flow.started(3, 10.5)
    assert not flow.acked(3, 10.6)  # nothing was held back


def test_bulk_frames_are_written_no_faster_than_the_rate_and_echoes_never_wait() -> None:
    """After 10 KB written at 100 KB/s (a cruising phase, gain 1) the next bulk frame waits
    100 ms; an interactive frame goes at once."""
    flow = learnt()
    now = 10.0 + 2 * core.PACING_PHASE_S * 1.001  # phase 2 of the cycle: gain 1
    assert flow.gain(now) == 1.0
    flow.started(2, now)
    flow.wrote(2, 10_000, now)
    assert flow.write_delay(3_000, False, now) == pytest.approx(0.1)
    assert flow.write_delay(3_000, False, now + 0.1) == 0.0
    assert flow.write_delay(3_000, True, now) == 0.0


def test_while_input_is_recent_on_a_far_path_bulk_frames_go_at_the_typing_gain() -> None:
    """A key came: on a 150 ms path at 100 KB/s, 10 KB of video holds the next bulk frame
    1 / TYPING_GAIN times as long as the rate alone would; an echo still goes at once; once
    no input came for TYPING_S, the rate alone paces again."""
    flow = learnt()
    now = 10.0 + 2 * core.PACING_PHASE_S * 1.001  # gain 1
    flow.input(now - 0.5)
    flow.started(2, now)
    flow.wrote(2, 10_000, now)
    assert flow.write_delay(3_000, False, now) == pytest.approx(0.1 / core.TYPING_GAIN)
    assert flow.write_delay(3_000, True, now) == 0.0
    later = now - 0.5 + core.TYPING_S
    flow.wrote(2, 10_000, later)
    assert flow.write_delay(3_000, False, later) == pytest.approx(0.1)


def test_on_a_near_path_input_does_not_slow_the_bulk_frames() -> None:
    """On a 20 ms path (a LAN) the video goes at the rate while the support person types."""
    flow = learnt(rtt=0.02)
    now = 10.0 + 2 * core.PACING_PHASE_S * 1.001
    flow.input(now)
    flow.started(2, now)
    flow.wrote(2, 10_000, now)
    assert flow.write_delay(3_000, False, now) == pytest.approx(0.1)


def test_frames_held_only_by_the_typing_gain_do_not_lower_the_rate_learnt() -> None:
    """Ten seconds of video paced at TYPING_GAIN while typing, acked at that pace: the
    samples are the agent's own holding, not the link's, and the 100 KB/s stays."""
    flow = learnt()
    now = 2.0
    for seq in range(2, 60):
        flow.input(now)
        flow.started(seq, now)
        flow.wrote(seq, 10_000, now)
        now += flow.write_delay(10_000, False, now)
        flow.acked(seq, now + 0.15)
    assert now > 1.0 + core.RATE_WINDOW_S
    assert flow.rate == pytest.approx(100_000)


def test_the_pacing_gain_probes_up_then_drains_then_cruises() -> None:
    """One phase a quarter faster, one a quarter slower, six at the rate; a phase lasts
    PACING_PHASE_S or the round trip, whichever is longer."""
    flow = learnt(rtt=0.3)
    gains = [flow.gain(0.3 * i + 0.15) for i in range(8)]
    assert gains == list(core.PACING_GAINS) and gains[:2] == [1.25, 0.75]



def held_round(flow: core.FlowControl, seq: int, size: int, now: float, took: float) -> None:
    """Update ``seq`` of ``size`` bytes written at ``now`` while a bulk one was held back
    (link-limited), acknowledged ``took`` seconds later."""
    flow.started(seq, now)
    flow.wrote(seq, size, now)
    flow.holds += 1  # as may_start() / write_delay() count a bulk update held back
    flow.acked(seq, now + took)


def test_startup_paces_and_budgets_at_twice_the_rate_while_the_rate_keeps_growing() -> None:
    """In startup the pacing gain is STARTUP_GAIN and so is the budget's; a link-limited
    sample each round that doubles the rate keeps it in startup."""
    flow = learnt(rtt=0.1, mode=core.STARTUP)
    assert flow.gain(10.0) == core.STARTUP_GAIN == 2.0
    assert flow.budget() == pytest.approx(2 * 100_000 * (0.1 + core.UNACKED_EXTRA_S))
    flow.started(2, 10.0)
    flow.wrote(2, 10_000, 10.0)
    assert flow.write_delay(1000, False, 10.0) == pytest.approx(10_000 / 200_000)
    flow.acked(2, 10.1)
    now, rate = 10.5, 200_000
    for seq in range(3, 9):
        held_round(flow, seq, int(rate * 0.2), now, 0.2 + 0.1)  # 0.2 s of link, a round trip
        assert flow.mode == core.STARTUP and flow.rate == pytest.approx(rate)
        now, rate = now + 0.5, rate * 2


def test_startup_ends_after_three_round_trips_without_growth_then_drains_then_cruises() \
        -> None:
    """Three round trips of link-limited samples that raise the rate by less than a quarter
    end the startup; the drain paces at the inverse gain until what is unacknowledged fits
    one round trip at the rate; then the probing cycle runs."""
    flow = learnt(rate=100_000, rtt=0.1, mode=core.STARTUP)
    now = 2.0  # (the 100 KB/s sample of t=1 is still in the window)
    held_round(flow, 2, 10_000, now, 0.2)  # 100 KB/s: the rate startup last saw grow
    for seq in (3, 4):
        now += 0.3
        held_round(flow, seq, 10_000, now, 0.2)  # no growth
        assert flow.mode == core.STARTUP
    now += 0.3
    flow.started(5, now)
    flow.wrote(5, 10_000, now)
    flow.holds += 1
    for seq in (6, 7):  # bulk written after it, still in flight when it is acknowledged
        flow.started(seq, now)
        flow.wrote(seq, 30_000, now)
    flow.acked(5, now + 0.2)  # the third round without growth
    assert flow.mode == core.DRAIN and flow.gain(now) == 1 / core.STARTUP_GAIN
    assert flow.budget() == pytest.approx(100_000 * (0.1 + core.UNACKED_EXTRA_S))
    flow.acked(6, now + 0.25)
    assert flow.mode == core.DRAIN  # 30 KB still unacknowledged: more than a round trip's
    flow.acked(7, now + 0.3)
    assert flow.mode == core.CRUISE and flow.gain(0.01) == core.PACING_GAINS[0]


def test_app_limited_samples_never_end_the_startup() -> None:
    """Typing alone (nothing held back) measures what there was to send, not the link: a
    minute of small echoes leaves the startup running."""
    flow = learnt(mode=core.STARTUP)
    now = 2.0
    for seq in range(2, 200):
        flow.started(seq, now)
        flow.wrote(seq, 300, now)
        flow.acked(seq, now + 0.02)
        now += 0.3
    assert flow.mode == core.STARTUP



def test_a_bulk_update_encoded_ahead_starts_only_when_its_first_write_is_allowed() -> None:
    """An update encoded ahead takes no place until written: it may begin only once a bulk
    update may start (it then counts), an ack frees its place, and a restart forgets it."""
    flow = core.FlowControl()
    for seq in range(LIMIT - 1):
        flow.started(seq, 0.0)
    flow.ahead_of_time(10, 0.0)
    assert 10 not in flow.in_flight and flow.may_start(interactive=True)
    assert flow.may_write_ahead(10, 0.1) is False
    assert flow.acked(0, 0.2)  # it was held back: the ack wakes the writer
    assert flow.may_write_ahead(10, 0.2) is True
    assert 10 in flow.in_flight and 10 in flow.window.open
    assert flow.may_write_ahead(10, 0.3) is None  # started: written as any other
    flow.ahead_of_time(11, 0.0)
    flow.reset()
    assert flow.may_write_ahead(11, 0.4) is None and 11 not in flow.in_flight


def test_a_slower_link_is_learnt_once_the_faster_samples_are_older_than_the_window() -> None:
    """The rate is the largest of the last RATE_WINDOW_S: a link that became slower is
    believed once the older samples have aged out (samples of updates the link held back)."""
    flow = learnt()
    later = 1.0 + core.RATE_WINDOW_S + 1
    flow.started(2, later)
    flow.wrote(2, 20_000, later)
    assert flow.write_delay(20_000, False, later) > 0  # the next frame waits for the link
    flow.acked(2, later + 1.0 + 0.15)  # a second of link, then the round trip
    assert flow.rate == pytest.approx(20_000)


def test_typing_on_a_fast_link_does_not_lower_the_rate_it_was_seen_to_take() -> None:
    """Samples of updates sent while nothing was held back (app-limited: the agent had no
    more to send) count only when they raise the estimate: after a minute of small echoes
    the next bulk update is still paced at the link's 100 KB/s, not at typing's."""
    flow = learnt()
    now = 2.0
    for seq in range(2, 200):
        flow.started(seq, now)
        flow.wrote(seq, 300, now)
        assert flow.may_start()
        flow.acked(seq, now + 0.02)  # 15 KB/s
        now += 0.3
    assert now > 1.0 + core.RATE_WINDOW_S
    assert flow.rate == pytest.approx(100_000)
    flow.started(200, now)
    flow.wrote(200, 150_000, now)  # a burst: nothing to learn from before it is acked
    flow.acked(200, now + 0.5)  # 300 KB/s, app-limited but faster: believed
    assert flow.rate == pytest.approx(300_000)


def test_a_bulk_update_held_back_by_the_budget_makes_its_sample_count() -> None:
    """An update during which a bulk update could not start measured the link itself: its
    sample counts even when it lowers the estimate, once the older ones aged out."""
    flow = learnt()
    later = 1.0 + core.RATE_WINDOW_S + 1
    flow.started(2, later)
    flow.wrote(2, 40_000, later)
    assert not flow.may_start()  # 40 KB > the 18 KB budget
    flow.acked(2, later + 2.0 + 0.15)
    assert flow.rate == pytest.approx(20_000)


def test_after_an_idle_link_a_round_trip_comes_off_an_updates_time_on_it() -> None:
    """Nothing else on the link at its first write (an update at a time): 40 KB acked 0.55 s
    later on a 150 ms round trip crossed the link in 0.4 s, 100 KB/s; but never faster than
    it was written (over 0.5 s: 80 KB/s)."""
    flow = learnt(rate=50_000)
    flow.started(2, 10.0)
    flow.wrote(2, 40_000, 10.0)
    flow.holds += 1
    flow.acked(2, 10.55)
    assert flow.rate == pytest.approx(100_000)
    flow = learnt(rate=50_000)
    flow.started(2, 10.0)
    for at in (10.0, 10.25, 10.5):
        flow.wrote(2, 40_000 // 4 if at < 10.5 else 20_000, at)
    flow.holds += 1
    flow.acked(2, 10.55)
    assert flow.rate == pytest.approx(80_000)


def test_a_transfer_shorter_than_two_round_trips_keeps_its_whole_time() -> None:
    """5 KB acked 0.2 s after its first write on a 150 ms round trip: 25 KB/s, no round trip
    taken off (its noise would be most of what is left)."""
    flow = learnt(rate=10_000)
    flow.started(2, 10.0)
    flow.wrote(2, 5_000, 10.0)
    flow.holds += 1
    flow.acked(2, 10.2)
    assert flow.rate == pytest.approx(25_000)


def test_on_a_near_path_an_updates_time_keeps_its_round_trip() -> None:
    """Within NEAR_RTT_S (a viewer's decode is as long as the round trip) nothing comes off:
    40 KB acked 0.5 s after its first write on a 10 ms round trip: 80 KB/s."""
    flow = learnt(rate=50_000, rtt=0.01)
    flow.started(2, 10.0)
    flow.wrote(2, 40_000, 10.0)
    flow.holds += 1
    flow.acked(2, 10.5)
    assert flow.rate == pytest.approx(80_000)


def test_an_echo_acked_right_after_a_large_update_does_not_make_the_link_seem_faster() \
        -> None:
    """A 40 KB update crosses a 60 KB/s link from t=10 (a 150 ms round trip); an echo
    written at 10.5, after another echo's ack, is acked just after it: 40 KB in the echo's
    0.35 s would be 115 KB/s, but those bytes crossed since the update's first write, and
    the estimate stays the link's (64 KB/s was measured as 81 before this rule)."""
    flow = learnt(rate=60_000)
    flow.started(2, 10.0)
    for n in range(4):  # written at the link's rate
        flow.wrote(2, 10_000, 10.0 + n / 6)
    flow.holds += 1
    flow.started(3, 10.2)
    flow.wrote(3, 300, 10.2)
    flow.acked(3, 10.45)
    flow.started(4, 10.5)
    flow.wrote(4, 300, 10.5)
    flow.acked(2, 10.0 + 40_000 / 60_000 + 0.15)
    flow.acked(4, 10.85)
    assert flow.rate == pytest.approx(60_000, rel=0.02)


def test_an_update_at_a_time_keeps_the_rate_of_a_link_and_finds_it_from_below() -> None:
    """Updates of 32 KB, more than the budget, so one at a time, each in four frames as the
    pacing lets them go, across a 250 KB/s link with a 65 ms round trip: the estimate, from
    half the link's rate, climbs by the pacing gain's probes to the link's in three rate
    windows and never above it (each sample measured an idle round trip as well before: it
    sank with every window instead)."""
    link, rtt = 250_000.0, 0.065
    flow = learnt(rate=link / 2, rtt=rtt)
    now, seq, highest = 2.0, 2, 0.0
    while now < 2.0 + 3 * core.RATE_WINDOW_S:
        assert flow.may_start()
        flow.started(seq, now)
        at = crossed = now
        for _ in range(4):
            at += flow.write_delay(8_000, False, at, seq)
            flow.wrote(seq, 8_000, at)
            crossed = max(crossed, at) + 8_000 / link  # the link carries it as written
        assert not flow.may_start()
        flow.acked(seq, crossed + rtt)
        highest = max(highest, flow.rate)
        now, seq = crossed + rtt + 0.01, seq + 1  # the next one, encoded meanwhile
    assert 0.9 * link <= flow.rate and highest <= link * 1.001


def test_the_next_bulk_update_begins_as_the_link_carries_the_last_not_at_its_ack() -> None:
    """At 100 KB/s and 150 ms (an 18 KB budget) a 40 KB update written at t=10 holds the next
    back until what a TCP ack would still count, 40 KB less what the link delivered a round
    trip ago, is under the budget: from 10.37 s, not at its ack (10.55 s); told when."""
    flow = learnt()
    flow.started(2, 10.0)
    flow.wrote(2, 40_000, 10.0)
    assert not flow.may_start(now=10.3)
    assert flow.start_delay(10.3) == pytest.approx(0.07 + core.MIN_RTT_S)
    flow.ahead_of_time(3, 10.3)
    assert not flow.may_write_ahead(3, 10.3)
    assert flow.may_write_ahead(3, 10.3 + flow.start_delay(10.3))
    assert not flow.may_start()  # (without the time: every byte unacknowledged counts)


def test_an_update_begun_while_the_last_crosses_an_idle_link_measures_the_link() -> None:
    """40 KB written at t=10 after an idle link, 20 KB more from 10.38 before its ack: the
    100 KB/s link is busy until 10.6; the first's ack comes late (10.65, the viewer's
    decode: 80 KB/s), the second's a round trip after its last byte (10.75), whose sample
    is the link's 100 KB/s, not 80 (60 KB over 0.75 s from the first write)."""
    flow = learnt(rate=50_000)
    flow.started(2, 10.0)
    flow.wrote(2, 40_000, 10.0)
    flow.holds += 1
    flow.started(3, 10.38)
    flow.wrote(3, 20_000, 10.38)
    flow.acked(2, 10.65)
    assert flow.rate == pytest.approx(80_000)
    flow.acked(3, 10.75)
    assert flow.rate == pytest.approx(100_000)


def test_with_the_wires_allowance_for_bulk_taken_only_an_ack_lets_the_next_begin() -> None:
    """Two bulk updates of 20 KB in flight (LIMIT - 1): however much the link has carried,
    the next waits for an ack."""
    flow = learnt()
    for seq, at in ((2, 10.0), (3, 10.1)):
        flow.started(seq, at)
        flow.wrote(seq, 20_000, at)
    assert not flow.may_start(now=20.0) and flow.start_delay(20.0) is None


def test_on_a_near_path_every_unacknowledged_byte_counts() -> None:
    """Within NEAR_RTT_S the ack waits for the viewer's decode, not the link: the budget is
    not eased by what the link has carried."""
    flow = learnt(rtt=0.01)
    flow.started(2, 10.0)
    flow.wrote(2, 40_000, 10.0)
    assert not flow.may_start(now=20.0) and flow.start_delay(20.0) is None


def test_the_budget_never_falls_below_a_floor() -> None:
    """A very slow estimate still lets MIN_BUDGET_BYTES be unacknowledged."""
    flow = learnt(rate=1000.0, rtt=0.01)
    assert flow.budget() == core.MIN_BUDGET_BYTES


def test_a_restart_forgets_what_was_in_flight_but_not_the_link() -> None:
    """reset(): no update in flight, nothing unacknowledged, no pacing debt; rate and
    round trip stay."""
    flow = learnt()
    flow.started(2, 10.0)
    flow.wrote(2, 50_000, 10.0)
    flow.reset()
    assert (flow.in_flight, flow.unacked, flow.write_delay(1000, False, 10.0)) == ({}, 0, 0)
    assert flow.rate == pytest.approx(100_000)
    assert not flow.acked(2, 11.0)  # an ack for a forgotten update says nothing


def frames(*rects):
    return [(rect, b"x" * 10) for rect in rects]


def test_an_echo_goes_ahead_of_video_frames_still_waiting() -> None:
    """An interactive update is written before the bulk frames still waiting, after earlier
    interactive ones, in its own order."""
    outbox = pacing.Outbox()
    outbox.add(1, frames((0, 300, 800, 16), (0, 316, 800, 16)), interactive=False)
    outbox.add(2, frames((10, 10, 8, 16)), interactive=True)
    outbox.add(3, frames((18, 10, 8, 16), (26, 10, 8, 16)), interactive=True)
    assert outbox.bulk_waiting()
    order = [outbox.pop()[:3] for _ in range(5)]
    assert [(seq, rect[0]) for seq, _, rect in order] == [(2, 10), (3, 18), (3, 26), (1, 0),
                                                          (1, 0)]
    assert not outbox.bulk_waiting() and outbox.peek() is None


def test_an_echo_that_overlaps_a_waiting_frame_goes_after_it_but_before_the_rest() -> None:
    """Older pixels never land on newer ones: an interactive update that overlaps a waiting
    strip goes right after it, still ahead of the strips below."""
    outbox = pacing.Outbox()
    outbox.add(1, frames((0, 0, 100, 16), (0, 16, 100, 16), (0, 32, 100, 16)),
               interactive=False)
    outbox.add(2, frames((50, 8, 8, 16)), interactive=True)  # rows 8-23: strips 1 and 2
    assert [outbox.pop()[2][1] for _ in range(4)] == [0, 16, 8, 32]



def test_an_echo_that_overlaps_a_redoable_waiting_strip_supersedes_it_and_goes_first() -> None:
    """A paced strip the echo overlaps is encoded again from the viewer's copy (its pixels
    there become the echo's) in its place, keeping its update's last flag; the echo goes
    ahead of every bulk frame; a later echo supersedes the new frame in turn."""
    calls = []

    def redo(rect, last):
        calls.append((rect, last))
        return [(rect, f"redo{len(calls)}".encode())]

    outbox = pacing.Outbox()
    outbox.add(1, frames((0, 0, 100, 16), (0, 16, 100, 16), (0, 32, 100, 16)),
               interactive=False, redo=redo)
    outbox.pop()  # the first strip is written; the other two wait for the pacing
    outbox.add(2, frames((50, 30, 8, 16)), interactive=True)  # rows 30-45: strips 2 and 3
    assert calls == [((0, 32, 100, 16), True), ((0, 16, 100, 16), False)]
    assert [(seq, interactive, rect[1], data) for seq, interactive, rect, data in
            outbox.items] == [(2, True, 30, b"x" * 10), (1, False, 16, b"redo2"),
                              (1, False, 32, b"redo1")]
    outbox.add(3, frames((60, 40, 8, 8)), interactive=True)  # only strip 3 again
    assert calls[2:] == [((0, 32, 100, 16), True)]
    assert [outbox.pop()[0] for _ in range(4)] == [2, 3, 1, 1]
    assert not outbox.redos  # nothing kept for frames written


def test_an_echo_still_follows_a_waiting_frame_without_redo_or_an_earlier_echo() -> None:
    """Only bulk frames added with redo are superseded: the echo goes after an overlapped
    interactive frame, and after a bulk frame that cannot be encoded again."""
    outbox = pacing.Outbox()
    outbox.add(1, frames((0, 0, 100, 16)), interactive=False)  # no redo
    outbox.add(2, frames((0, 100, 8, 16)), interactive=True)
    outbox.add(3, frames((0, 200, 100, 16)), interactive=False,
               redo=lambda rect, last: [(rect, b"again")])
    outbox.add(4, frames((4, 4, 8, 8), (4, 104, 8, 8), (4, 204, 8, 8)), interactive=True)
    assert [(item[0], item[3]) for item in outbox.items] == [
        (2, b"x" * 10), (1, b"x" * 10), (4, b"x" * 10), (4, b"x" * 10), (4, b"x" * 10),
        (3, b"again")]


def test_what_the_pacing_writes_the_relays_window_admits() -> None:
    """The agent's rule and the relay's agree: bulk updates, an echo passing a waiting video
    frame, acknowledgements and a restart, written as FlowControl and the Outbox say, are
    all admitted by protocol.UpdateWindow as the relay runs it."""
    flow, outbox, relay = learnt(), pacing.Outbox(), p.UpdateWindow()
    screen_px = 1920 * 1080
    now = 10.0

    def start(rects, interactive=False, full=False):
        assert flow.may_start(interactive)
        seq = flow.next_seq()
        flow.started(seq, now)
        last = len(rects) - 1
        outbox.add(seq, [(r, (i == last, full)) for i, r in enumerate(rects)], interactive)
        return seq

    def write(count):
        for _ in range(count):
            seq, _, (_, _, w, h), (last, full) = outbox.pop()
            flags = (p.FLAG_LAST if last else 0) | (p.FLAG_FULL if full else 0)
            assert relay.admit(seq, flags, w * h, screen_px)
            flow.wrote(seq, 1000, now)

    strips = [(1120, 630 + 16 * i, 800, 16) for i in range(4)]
    video = [start(strips) for _ in range(1)]
    write(2)
    echo = start([(40, 40, 8, 16)], interactive=True)
    write(3)  # the echo, then the video's last two strips
    for seq in (*video, echo):
        flow.acked(seq, now + 0.2)
        relay.acked(seq)
    for _ in range(LIMIT - 1):
        start(strips)
        write(4)
    assert not flow.may_start() and flow.may_start(interactive=True)
    start([(40, 40, 8, 16)], interactive=True)
    write(1)
    flow.reset()  # a refresh: the relay counts on until the full image
    relay.restart_sent()
    start([(0, 0, 1920, 1080)], full=True)
    write(1)


def test_a_late_then_bunched_acknowledgement_does_not_make_the_link_seem_faster() -> None:
    """Update 2's ack comes late and update 3's soon after it (a viewer decoding a large
    strip, then acking a small one; no sooner than its bytes could cross the link): update
    4, begun at 2's ack, sees 20 KB acked in 0.15 s (133 KB/s), but those bytes were written
    over 0.3 s: the sample is 67 KB/s, as BBR bounds it by the send rate, and the 100 KB/s
    link is not believed faster."""
    flow = learnt()
    for seq, at in ((2, 10.0), (3, 10.1)):
        flow.started(seq, at)
        flow.wrote(seq, 10_000, at)
    flow.acked(2, 10.30)  # on time: 10.25
    flow.started(4, 10.30)
    flow.wrote(4, 10_000, 10.30)
    flow.acked(3, 10.36)  # on time: 10.35
    flow.acked(4, 10.45)
    assert flow.rate == pytest.approx(100_000)


def test_a_round_trip_counts_from_an_updates_last_write_whatever_the_rate_estimate() -> None:
    """Three 10 KB frames written 0.2 s apart (paced at an estimate of 50 KB/s, half the link)
    and acknowledged 150 ms after the last: a 150 ms round trip, not 1 ms (the 0.6 s that
    30 KB take at the estimate, subtracted from the 0.55 s since the first write)."""
    flow = learnt(rate=50_000, rtt=0.4)
    flow.started(2, 10.0)
    for at in (10.0, 10.2, 10.4):
        flow.wrote(2, 10_000, at)
    flow.acked(2, 10.55)
    assert flow.rtt == pytest.approx(0.15)


def test_a_write_recorded_after_its_updates_acknowledgement_leaves_nothing_in_flight() -> None:
    """An ack handled while the last frame's write was awaited (the viewer drew it first)
    is final: the late record of that write neither brings the update back nor counts its
    bytes as unacknowledged, so the wire's allowance and the byte budget are whole again."""
    flow = learnt()
    flow.started(2, 10.0)
    flow.wrote(2, 10_000, 10.0)
    flow.acked(2, 10.2)
    flow.wrote(2, 5_000, 10.2)
    assert (flow.in_flight, flow.unacked, flow.window.open) == ({}, 0, {})
    for seq in range(3, 3 + LIMIT - 1):  # all of the allowance for bulk updates again
        assert flow.may_start()
        flow.started(seq, 10.2)


def test_a_region_in_motion_that_stalled_is_in_motion_again_at_its_next_change() -> None:
    """A video stalls for longer than MOTION_GAP_S (its player starved of CPU): its next
    frame, within MOTION_RESUME_S, is in motion at once (not three polls of full-quality
    still updates); a glyph typed over a corner of it then is not."""
    motion = pacing.Motion(now=0.0)
    video, glyph = (500, 300, 200, 100), (500, 300, 8, 16)
    for n in range(pacing.MOTION_AFTER_CHANGES):
        motion.saw([video], 0.02 * n)
    assert motion.saw([video], 0.1) == [video]
    assert motion.saw([], 0.1 + 2 * pacing.MOTION_GAP_S) == [] and motion.run == 0
    assert motion.saw([glyph], 0.3) == []
    assert motion.saw([], 0.4) == []
    assert motion.saw([(500, 310, 200, 80)], 0.5) == [(500, 310, 200, 80)]


def _polls(pacer: pacing.Pacer, polled_at: float, until: float,
           echo_at: float | None = None) -> list[float]:
    """The poll times the Pacer asks for from ``polled_at`` up to ``until``, each poll taken
    when due (``echo_at``: from then on a poll finds the echo, a glyph in an xterm)."""
    times = []
    while (polled_at := pacer.due(polled_at, polled_at)) <= until:
        times.append(round(polled_at, 6))
        found = [(5, 5, 8, 16)] if echo_at is not None and polled_at >= echo_at else []
        pacer.plan(found, polled_at)
        echo_at = None if found else echo_at  # the glyph is in the viewer's copy now
    return times


def test_after_a_key_polls_follow_the_ladder_until_one_finds_its_echo() -> None:
    """A key at t=10 on a still screen polled at t=9.995: polls 2, 4 and 6 ms after it; the
    echo drawn 5 ms after it is found by the third, and then the usual 10 ms cadence."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    assert _polls(pacer, 9.995, 10.03, echo_at=10.005) == [10.002, 10.004, 10.006, 10.016,
                                                           10.026]
    assert pacing.ECHO_POLLS_S[:3] == (0.002, 0.004, 0.006)


def test_a_key_whose_echo_never_comes_costs_the_ladders_polls_then_the_cadence() -> None:
    """A key that changes nothing (Shift) is looked for on every rung up to the last, 30 ms
    after it, then every FAST_POLL_INTERVAL_S while the input is recent."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    ladder = [round(10.0 + s, 6) for s in pacing.ECHO_POLLS_S]
    after = [round(ladder[-1] + pacing.FAST_POLL_INTERVAL_S * n, 6) for n in (1, 2)]
    assert _polls(pacer, 9.999, ladder[-1] + 0.025) == ladder + after


def test_a_rung_already_passed_by_a_late_poll_is_skipped() -> None:
    """A poll that came late (7 ms after the key, under load) is followed by the next rung
    after it (9 ms), not by the rungs it passed."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    assert pacer.due(10.007, 10.007) == pytest.approx(10.009)


def test_a_pointer_move_keeps_the_fast_cadence_without_a_ladder() -> None:
    """Moves come up to 60 a second and mostly change nothing: after one the next poll is
    FAST_POLL_INTERVAL_S after the last, as before any ladder."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0, echo=False)
    assert pacer.due(9.999, 10.0) == pytest.approx(9.999 + pacing.FAST_POLL_INTERVAL_S)


def test_while_a_region_is_in_motion_polls_keep_the_cadence_after_a_key() -> None:
    """A video playing (a region in motion): after a key the next poll is the fast cadence's,
    not the ladder's 2 ms."""
    pacer = pacing.Pacer(now=0.0)
    video = (1100, 600, 800, 450)
    for n in range(pacing.MOTION_AFTER_CHANGES + 1):
        pacer.plan([video], 9.9 + 0.016 * n)
    pacer.input(10.0)
    assert pacer.due(9.999, 10.0) == pytest.approx(9.999 + pacing.FAST_POLL_INTERVAL_S)


def test_while_bulk_updates_are_held_back_the_ladder_runs_beside_a_region_in_motion() -> None:
    """A video playing and flow control holding its updates back (one waits, encoded
    ahead): no poll can start the video's update, so after a key the echo is looked for on
    the ladder, 2 ms after it, not at the fast cadence."""
    pacer = pacing.Pacer(now=0.0)
    video = (1100, 600, 800, 450)
    for n in range(pacing.MOTION_AFTER_CHANGES + 1):
        pacer.plan([video], 9.9 + 0.016 * n)
    pacer.input(10.0)
    assert pacer.due(9.999, 10.0, held=True) == pytest.approx(10.002)


def test_once_its_echo_is_found_input_is_followed_at_the_usual_cadence_while_held() -> None:
    """After the echo of a key is found, the rest of the input's window is polled every
    POLL_INTERVAL_S while bulk updates are held back (a poll then can send only what input
    did), and every FAST_POLL_INTERVAL_S while they may go."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    pacer.plan([(5, 5, 8, 16)], 10.002)  # the echo
    assert pacer.due(10.002, 10.003, held=True) == pytest.approx(10.002 + pacing.POLL_INTERVAL_S)
    assert pacer.due(10.002, 10.003) == pytest.approx(10.002 + pacing.FAST_POLL_INTERVAL_S)


def test_while_held_an_echo_not_found_on_the_ladder_is_then_looked_for_at_the_cadence() -> None:
    """A key whose echo the ladder did not find (none by its last rung, 30 ms after it):
    while bulk updates are held back, the next poll is POLL_INTERVAL_S after the last rung's
    (FAST_POLL_INTERVAL_S while they may go); before that, each rung."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    assert pacer.due(10.002, 10.003, held=True) == pytest.approx(10.004)
    last = 10.0 + pacing.ECHO_POLLS_S[-1]
    assert pacer.due(last, last + 0.001, held=True) == pytest.approx(
        last + pacing.POLL_INTERVAL_S)
    pacer.input(20.0)
    last += 10.0
    assert pacer.due(last, last + 0.001) == pytest.approx(last + pacing.FAST_POLL_INTERVAL_S)


def test_a_second_key_starts_the_ladder_again_from_itself() -> None:
    """A key's release 1 ms after its press: the rungs count from the release."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    pacer.input(10.001)
    assert pacer.due(10.0, 10.001) == pytest.approx(10.003)


@pytest.mark.parametrize(("method", "args", "ladder"), [
    ("key", ("KeyA", True), True),
    ("key", ("KeyA", False), False),
    ("key", ("ShiftLeft", True), False),
    ("key", ("MetaLeft", True), False),
    ("type", ("é",), True),
    ("button", ("left", True), True),
    ("button", ("left", False), True),
    ("scroll", (0, 1), True),
    ("move", (10, 10), False),
])
def test_what_input_is_looked_for_on_the_ladder(method: str, args: tuple, ladder: bool) -> None:
    """A key's press (not a modifier's), text, a button either way and a scroll await an
    echo; a key's release, a modifier's press and a pointer move do not."""
    assert pacing.Pacer.awaits_echo(method, args) is ladder


def test_a_slow_poll_spaces_the_ladder_by_its_own_cost() -> None:
    """On a busy machine the poll 2 ms after a key took 3 ms (ended at 5 ms): the next waits
    as long again (8 ms), not the 4 ms rung; one that took 15 ms leaves the cadence."""
    pacer = pacing.Pacer(now=0.0)
    pacer.input(10.0)
    assert pacer.due(10.002, 10.005) == pytest.approx(10.008)
    assert pacer.due(10.002, 10.017) == pytest.approx(10.002 + pacing.FAST_POLL_INTERVAL_S)


def typed(pacer: pacing.Pacer, chars: int, start: float = 0.0) -> list[list[pacing.Encoding]]:
    """``chars`` glyphs typed into an xterm at 20 a second, each with the cursor block after
    it, the screen polled 60 times a second: the plans of the polls that found a change."""
    plans = []
    for n in range(chars):
        t = start + n * 0.05
        glyph_and_cursor = (100 + 9 * n, 191, 18, 19)
        plans.append(pacer.plan([glyph_and_cursor], t))
        for still in (t + 1 / 60, t + 2 / 60):
            pacer.plan([], still)
    return plans


def test_a_line_typed_fast_is_never_a_region_in_motion() -> None:
    """Glyphs typed faster than MOTION_GAP_S apart, each beside the last: the region they
    make stays under MOTION_MIN_PX, so no poll is motion (no 4:2:0, no strips per encoder
    thread, no refinement later), and each glyph goes as one 4:4:4 strip."""
    pacer = pacing.Pacer(now=0.0, threads=2)
    for [plan] in typed(pacer, 40):
        assert (plan.motion, plan.subsampling, plan.rows >= 19) == (False, "444", True)
    assert pacer.motion.moving <= 1
    assert pacer.plan([], 10.0) == []


def test_the_echo_of_a_line_typed_fast_beside_a_video_stays_interactive() -> None:
    """With the support person's input, each glyph typed fast is an interactive update of
    its own; the video beside it remains the region in motion."""
    pacer = pacing.Pacer(now=0.0, threads=2)
    video = (1120, 630, 800, 450)
    for n in range(1, pacing.MOTION_AFTER_CHANGES + 1):
        pacer.plan([video], n / 60)
    for n in range(20):
        t = 0.1 + n * 0.05
        pacer.input(t - 0.005)
        echo, motion = pacer.plan([(100 + 9 * n, 191, 18, 19), video], t)
        assert (echo.interactive, echo.motion, motion.rects, motion.motion) == \
            (True, False, [video], True)


def test_a_region_in_motion_no_taller_than_strip_rows_is_one_strip() -> None:
    """On a fast link a region in motion of up to STRIP_ROWS rows goes in one strip (cut in
    one per encoder thread it only doubled the frames); a taller one in one per thread."""
    for height, rows in ((100, codec.STRIP_ROWS), (codec.STRIP_ROWS, codec.STRIP_ROWS),
                         (400, 208)):
        pacer = pacing.Pacer(now=0.0, threads=2)
        region = [(500, 300, 300, height)]
        plans = [pacer.plan(region, n / 60, rate=100e6) for n in range(1, 5)]
        [plan] = plans[-1]
        assert (plan.motion, plan.rows) == (True, rows), height
        assert len(codec.strips(plan.rects, plan.rows)) == -(-height // rows)


def test_an_update_encoded_ahead_counts_its_wait_from_its_encoding_until_it_begins() -> None:
    """held_for: 0 with none encoded ahead; the seconds since the one encoded ahead was
    announced (grabbed, before its encoding); 0 again once it began (or a restart forgot it)."""
    flow = learnt()
    assert flow.held_for(10.0) == 0.0
    flow.started(2, 10.0)
    flow.wrote(2, 1_000, 10.0)
    flow.ahead_of_time(3, 10.01)
    assert flow.held_for(10.05) == pytest.approx(0.04)
    assert flow.may_write_ahead(3, 10.05) is True
    assert flow.held_for(10.06) == 0.0
    flow.ahead_of_time(4, 10.07)
    flow.reset()
    assert flow.held_for(10.5) == 0.0


def test_quality_steps_down_only_when_an_update_encoded_ahead_waits_long_and_recovers() \
        -> None:
    """An update encoded ahead that waits less than HELD_BACK_AFTER_S to begin (the normal
    state of encoding ahead) keeps the quality; one that waits longer lowers it one step;
    QUALITY_UP_AFTER_UPDATES updates without such a wait bring it back."""
    pacer = pacing.Pacer(now=0.0)
    change = [(0, 0, 10, 10)]  # (never motion, whose quality is capped)
    for _ in range(50):
        pacer.held_back(pacing.HELD_BACK_AFTER_S / 2)
        assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[0]
    pacer.held_back(pacing.HELD_BACK_AFTER_S)
    pacer.held_back(pacing.HELD_BACK_AFTER_S * 3)  # the same wait, seen by two polls: one step
    assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[1]
    for _ in range(pacing.QUALITY_UP_AFTER_UPDATES - 1):
        pacer.held_back(0.0)
        assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[1]
    assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[0]


def in_motion(pacer: pacing.Pacer, region: list, holds: int, start: float = 0.0,
              rate: float | None = None) -> list[tuple[int, int]]:
    """``region`` changing at 60 polls a second from ``start``, an update encoded ahead held
    back (HELD_BACK_AFTER_S) before each of ``holds`` polls once it is in motion: the
    (quality, scale) of each of those polls' motion update, in order."""
    for n in range(1, pacing.MOTION_AFTER_CHANGES):
        pacer.plan(region, start + n / 60, rate)
    rungs = []
    for n in range(holds + 1):
        if n:
            pacer.held_back(pacing.HELD_BACK_AFTER_S)
        [plan] = pacer.plan(region, start + (pacing.MOTION_AFTER_CHANGES + n) / 60, rate)
        assert plan.motion
        rungs.append((plan.quality, plan.scale))
    return rungs


def test_a_large_region_in_motion_goes_at_half_resolution_only_on_the_lower_rungs() -> None:
    """1080p motion: whole at q75, 75, 65, 55 while flow control holds updates back, then at
    half resolution at q75 and q55 (never lower quality); unhindered updates climb back one
    rung each QUALITY_UP_AFTER_UPDATES, to whole resolution again."""
    pacer = pacing.Pacer(now=0.0, threads=2)
    screen = [(0, 0, 1920, 1080)]
    assert in_motion(pacer, screen, holds=6) == \
        [(75, 1), (75, 1), (65, 1), (55, 1), (75, 2), (55, 2), (55, 2)]
    t, rungs = 1.0, []
    for _ in range(2 * pacing.QUALITY_UP_AFTER_UPDATES):
        t += 1 / 60
        [plan] = pacer.plan(screen, t)
        rungs.append((plan.quality, plan.scale))
    assert rungs[pacing.QUALITY_UP_AFTER_UPDATES - 1] == (75, 2)
    assert rungs[-1] == (55, 1)


def test_a_viewer_that_keeps_up_gets_motion_whole() -> None:
    """Without a hold (a scripted viewer on the loopback that keeps up), motion stays whole
    however long it lasts."""
    pacer = pacing.Pacer(now=0.0, threads=2)
    assert set(in_motion(pacer, [(0, 0, 1920, 1080)], holds=0)) == {(75, 1)}
    assert {plan.scale for n in range(200) for plan in pacer.plan([(0, 0, 1920, 1080)],
                                                                   1.0 + n / 60)} == {1}


def test_small_motion_a_whole_image_and_input_echo_stay_whole_on_the_lowest_rung() -> None:
    """On the lowest rung a region in motion under HALF_SCALE_MIN_PX (a spinner, a small
    animation) is still whole, at the still ladder's quality capped at MOTION_JPEG_QUALITY;
    so is a whole image (a refresh) and an echo typed beside a large video."""
    small = [(100, 100, 250, 250)]
    assert 250 * 250 < pacing.HALF_SCALE_MIN_PX
    assert in_motion(pacing.Pacer(now=0.0), small, holds=6)[-1] == (pacing.JPEG_QUALITIES[-1], 1)
    pacer = pacing.Pacer(now=0.0)
    video = [(1120, 630, 800, 450)]
    assert in_motion(pacer, video, holds=6)[-1] == (55, 2)
    pacer.input(0.2)
    echo, motion = pacer.plan([(100, 191, 18, 19), *video], 0.205)
    assert (echo.interactive, echo.scale, motion.scale) == (True, 1, 2)
    [whole] = pacer.plan([(0, 0, 1920, 1080)], 0.22, rate=10e6, full=True)
    assert (whole.scale, whole.subsampling) == (1, "444")


def test_motion_at_half_resolution_is_refined_whole_once_still() -> None:
    """What went at half resolution is sent again whole, at 4:4:4 and the top quality (not
    the lowest rung the ladder fell to), REFINE_AFTER_S after the region was last seen
    moving."""
    pacer = pacing.Pacer(now=0.0)
    video = [(1120, 630, 800, 450)]
    assert in_motion(pacer, video, holds=5)[-1] == (55, 2)
    last = (pacing.MOTION_AFTER_CHANGES + 5) / 60
    assert pacer.plan([], last + 0.05) == []
    [refined] = pacer.plan([], last + pacing.REFINE_AFTER_S + 0.01)
    assert (refined.rects, refined.scale, refined.subsampling, refined.motion,
            refined.quality) == (video, 1, "444", False, pacing.JPEG_QUALITIES[0])


def test_on_a_slow_link_half_resolution_strips_are_cut_by_what_half_resolution_costs() -> None:
    """A video on 2 Mbit/s: whole 4:2:0 strips hold the link STRIP_LINK_S at the 4:2:0
    bytes a pixel (32 rows), half-resolution ones at their own (BYTES_PER_PX["420/2"]: 128);
    what half-resolution updates cost is learnt apart from whole 4:2:0."""
    rate, video = 2e6 / 8, [(1120, 630, 800, 450)]
    pacer = pacing.Pacer(now=0.0)
    in_motion(pacer, video, holds=3, rate=rate)
    [whole] = pacer.plan(video, 0.2, rate)
    pacer.held_back()
    [half] = pacer.plan(video, 0.21, rate)
    expected = [min(codec.STRIP_ROWS, int(rate * pacing.STRIP_LINK_S / (
        800 * pacing.BYTES_PER_PX[key])) // 16 * 16) for key in ("420", "420/2")]
    assert ((whole.scale, whole.rows), (half.scale, half.rows)) == \
        ((1, expected[0]), (2, expected[1])) == ((1, 32), (2, 128))
    frame = p.Frame(p.FRAME_JPEG, p.FLAG_LAST, 1, 9, 1120, 630, 800, 450,
                    b"\xff\xd8\xff" + bytes(36_000 - 3))
    pacer.encoded(half, [frame], 0.22)
    assert pacer.bytes_per_px["420/2"] == pytest.approx(
        0.7 * pacing.BYTES_PER_PX["420/2"] + 0.3 * 36_000 / (800 * 450))
    assert pacer.bytes_per_px["420"] == pacing.BYTES_PER_PX["420"]


def probed(flow: core.FlowControl, seq: int, size: int, now: float, took: float) -> bool:
    """Update ``seq`` of ``size`` bytes, encoded ahead, begins at ``now``, is written at once
    (if it is a probe) and is acked ``took`` seconds later; whether it was a probe."""
    flow.ahead_of_time(seq, now)
    assert flow.may_write_ahead(seq, now)
    probe = seq in flow.probes
    for part in (size // 2, size - size // 2):
        if probe:
            assert flow.write_delay(part, False, now, seq) == 0.0
        flow.wrote(seq, part, now)
    flow.acked(seq, now + took)
    return probe


def test_on_a_near_path_a_probe_far_faster_than_delivery_makes_the_rate_the_viewers() -> None:
    """A 10 ms path paced at 500 KB/s: the next update encoded ahead, alone, goes unpaced;
    100 KB acked 50 ms after its start (2 MB/s, four times the delivery rate) says the rate
    was the viewer's: the rate is the probe's, the budget's round trip its 50 ms, and bulk
    frames are not paced."""
    flow = learnt(rate=500_000, rtt=0.01)
    assert not flow.viewer_limited
    assert flow.budget() == pytest.approx(500_000 * (0.01 + core.UNACKED_EXTRA_S))
    assert probed(flow, 2, 100_000, 10.0, 0.05)
    assert flow.viewer_limited
    assert flow.rate == pytest.approx(2_000_000)
    assert flow.budget() == pytest.approx(2_000_000 * (0.05 + core.UNACKED_EXTRA_S))
    flow.started(3, 10.05)
    flow.wrote(3, 100_000, 10.05)
    assert flow.write_delay(100_000, False, 10.05, 3) == 0.0  # the budget holds, not pacing


def test_a_viewer_limited_rate_keeps_motion_in_one_strip_per_thread() -> None:
    """Given the acks above, 1080p motion goes in two 544-row strips (one per encoder thread);
    at the same rate, not known to be the viewer's, in strips of STRIP_LINK_S of it; and the
    2 Mbit/s link's rate still gives strips thinner than STRIP_ROWS."""
    flow = learnt(rate=500_000, rtt=0.01)
    probed(flow, 2, 100_000, 10.0, 0.05)
    screen = [(0, 0, 1920, 1080)]
    for rate, viewer_limited, rows in ((flow.rate, flow.viewer_limited, 544),
                                       (flow.rate, False, 144), (250_000, False, 16)):
        pacer = pacing.Pacer(now=0.0, threads=2)
        plans = [pacer.plan(screen, n / 60, rate, viewer_limited=viewer_limited)
                 for n in range(1, 5)]
        [plan] = plans[-1]
        assert (plan.motion, plan.rows) == (True, rows), (rate, viewer_limited)


def test_a_probe_no_faster_than_delivery_changes_nothing_and_the_next_waits_longer() -> None:
    """100 KB acked 210 ms after its start on a 500 KB/s path: the link took no more than
    the pacing gave it (a near but slow link): the rate stays, bulk frames stay paced, and
    the next probe comes twice PROBE_EVERY_S later, not PROBE_EVERY_S."""
    flow = learnt(rate=500_000, rtt=0.01)
    assert probed(flow, 2, 100_000, 10.0, 0.21)
    assert not flow.viewer_limited and flow.rate == pytest.approx(500_000)
    acked = 10.21
    assert not probed(flow, 3, 1_000, acked + core.PROBE_EVERY_S, 0.01)
    assert probed(flow, 4, 1_000, acked + 2 * core.PROBE_EVERY_S, 0.01)


def test_no_probe_on_a_far_path_in_the_startup_or_behind_another_update() -> None:
    """A 60 ms path (issue 14's 2 Mbit/s link) is never probed: its bulk frames are paced;
    nor a near one in its startup, nor while another update is in flight (the probe would
    time the viewer's decode of both)."""
    far = learnt(rate=250_000, rtt=0.06)
    far.ahead_of_time(2, 10.0)
    assert far.may_write_ahead(2, 10.0) and 2 not in far.probes
    far.wrote(2, 10_000, 10.0)
    assert far.write_delay(10_000, False, 10.0, 2) > 0
    starting = learnt(rate=500_000, rtt=0.01, mode=core.STARTUP)
    assert not probed(starting, 2, 10_000, 10.0, 0.01)
    near = learnt(rate=500_000, rtt=0.01)
    near.started(2, 10.0)
    near.wrote(2, 1_000, 10.0)
    near.ahead_of_time(3, 10.0)
    assert near.may_write_ahead(3, 10.0) and 3 not in near.probes


def test_a_viewer_limited_path_is_not_probed_again_and_ends_when_no_longer_near() -> None:
    """Once the rate is the viewer's no probe follows (behind the next update in flight it
    would measure less and flip the verdict back); it holds while the path's round trip
    stays within NEAR_RTT_S: once the smallest of the window is longer, the budget's round
    trip is the path's again."""
    flow = learnt(rate=500_000, rtt=0.01)
    assert probed(flow, 2, 100_000, 10.0, 0.08)
    assert flow.viewer_limited
    again = 10.08 + 10 * core.PROBE_EVERY_S
    assert not probed(flow, 3, 1_000, again, 0.01)
    later = again + core.RTT_WINDOW_S + 1
    flow.started(4, later)
    flow.wrote(4, 100, later)
    flow.acked(4, later + 0.08)  # the round trip is now 80 ms
    assert not flow.viewer_limited
    assert flow.budget() == pytest.approx(flow.rate * (0.08 + core.UNACKED_EXTRA_S))


# --- Pacer and Motion: poll cadence, quality, the region in motion, strips -------------


def test_quality_drops_when_acks_hold_updates_back_and_recovers_slowly() -> None:
    """Held back by flow control: the next update is one JPEG step cheaper; many smooth
    updates later the quality climbs back."""
    pacer = pacing.Pacer(now=0.0)
    change = [(0, 0, 10, 10)]
    for step in (1, 2):
        pacer.held_back()
        assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[step]
    for _ in range(pacing.QUALITY_UP_AFTER_UPDATES - 1):
        assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[2]
    assert pacer.plan(change, 1.0)[0].quality == pacing.JPEG_QUALITIES[1]


def test_polling_is_fast_after_input_and_in_motion_and_slow_when_still() -> None:
    """10 ms right after input, 60 polls/s while the screen keeps changing, 30 while it
    changes now and then, 10 once it has been still for a while."""
    pacer = pacing.Pacer(now=99.5)
    assert pacer.interval(100.0) == pacing.POLL_INTERVAL_S
    for t in (100.0, 100.02, 100.04):
        pacer.plan([(0, 0, 5, 5)], t)
    assert pacer.interval(100.05) == pacing.MOTION_POLL_INTERVAL_S
    pacer.plan([], 100.1)
    assert pacer.interval(100.11) == pacing.POLL_INTERVAL_S
    assert pacer.interval(100.05 + pacing.IDLE_AFTER_S + 1) == pacing.IDLE_POLL_INTERVAL_S
    pacer.input(200.0)
    assert pacer.interval(200.05) == pacing.FAST_POLL_INTERVAL_S
    assert pacer.interval(201.0) == pacing.POLL_INTERVAL_S  # input a second ago: not idle yet


def test_a_region_changing_poll_after_poll_is_in_motion_and_refined_once_still() -> None:
    """A region of any size changing MOTION_AFTER_CHANGES polls in a row is in motion (a
    poll within MOTION_GAP_S that does not change it does not end the run); changes
    elsewhere are not; once the region is still for REFINE_AFTER_S the area sent at motion
    quality is handed back once, for full quality."""
    motion = pacing.Motion(now=0.0)
    video, echo = (500, 300, 200, 100), (5, 5, 10, 10)
    assert motion.saw([video], 0.01) == [] and motion.saw([video, echo], 0.02) == []
    assert motion.saw([echo], 0.02 + pacing.MOTION_GAP_S / 2) == []  # between two frames
    assert motion.saw([(500, 320, 200, 80), echo], 0.05) == [(500, 320, 200, 80)]
    assert (motion.changes, motion.moving, motion.run) == (4, 3, 4)
    assert motion.refinement(0.05 + pacing.REFINE_AFTER_S / 2) == []
    assert motion.saw([video], 0.06) == [video]
    assert motion.saw([], 0.07) == []
    assert motion.refinement(0.06 + pacing.REFINE_AFTER_S) == [video]  # lossy area only
    assert motion.refinement(10.0) == []
    motion.saw([], 0.06 + pacing.MOTION_GAP_S * 2)
    assert motion.run == 0


def test_typing_alone_is_never_motion() -> None:
    """Keystrokes a tenth of a second apart, each changing a glyph: no run of changes."""
    motion = pacing.Motion(now=0.0)
    for i in range(20):
        t = i * 0.1
        assert motion.saw([(8 * i, 0, 8, 16)], t) == []
        assert motion.saw([], t + 0.06) == []
    assert motion.moving <= 1


def test_motion_is_planned_apart_at_4_2_0_after_what_input_changed() -> None:
    """A video beside an xterm: once in motion the video goes in its own update, JPEG 4:2:0
    at most MOTION_JPEG_QUALITY in one strip (at most STRIP_ROWS rows high: not split),
    after the xterm's update, which is interactive right after input; still again, the
    video's area comes back at 4:4:4 with what changed then."""
    pacer = pacing.Pacer(now=0.0, threads=2)
    video, echo = (0, 0, 100, 100), (200, 0, 8, 16)
    plans = [pacer.plan([video], t) for t in (0.01, 0.02)]
    assert [[x.subsampling for x in plan] for plan in plans] == [["444"], ["444"]]
    pacer.input(0.025)
    first, second = pacer.plan([video, echo], 0.03)
    assert (first.rects, first.interactive, first.motion) == ([echo], True, False)
    assert (second.rects, second.subsampling, second.quality, second.rows, second.motion) == \
        ([video], "420", pacing.MOTION_JPEG_QUALITY, codec.STRIP_ROWS, True)
    assert pacer.plan([], 0.1) == []
    [plan] = pacer.plan([echo], 0.03 + pacing.REFINE_AFTER_S + 0.1)
    assert (plan.rects, plan.subsampling, plan.interactive) == ([echo, video], "444", False)


def test_a_whole_image_is_one_update_whatever_is_in_motion() -> None:
    """full=True on a fast link: one 4:4:4 update of the rectangles given, never split."""
    pacer = pacing.Pacer(now=0.0)
    whole = [(0, 0, 100, 100)]
    for t in (0.01, 0.02, 0.03):
        pacer.plan(whole, t)
    [plan] = pacer.plan(whole, 0.04, rate=10e6, full=True)
    assert (plan.rects, plan.subsampling, plan.motion) == (whole, "444", False)


def test_a_whole_image_on_a_slow_or_unknown_link_goes_quickly_then_sharp() -> None:
    """The first image (nothing known of the link) or one on a slow link: JPEG 4:2:0 at the
    lowest quality; its JPEG rectangles (not its exact PNG ones) come again at 4:4:4 once
    the screen has been still REFINE_AFTER_S."""
    for rate in (None, pacing.QUICK_FULL_IMAGE_BELOW_BYTES_S / 2):
        pacer = pacing.Pacer(now=0.0)
        whole = [(0, 0, 100, 100)]
        [plan] = pacer.plan(whole, 0.0, rate=rate, full=True)
        assert (plan.quality, plan.subsampling, plan.refine) == \
            (pacing.JPEG_QUALITIES[-1], "420", True)
        png, jpeg = (p.Frame(kind, 0, 1, 0, 0, y, 100, 50, magic + b"...") for kind, y, magic
                     in ((p.FRAME_PNG, 0, b"\x89PNG\r\n\x1a\n"),
                         (p.FRAME_JPEG, 50, b"\xff\xd8\xff")))
        pacer.encoded(plan, [png, jpeg], 0.0)
        assert pacer.plan([], 0.1) == []
        [refined] = pacer.plan([], pacing.REFINE_AFTER_S + 0.01)
        assert (refined.rects, refined.subsampling) == ([(0, 50, 100, 50)], "444")


def test_the_region_in_motion_grows_to_changes_near_it() -> None:
    """A video whose still parts split its changes: rectangles within MOTION_MARGIN_PX of the
    region join it; one far away does not."""
    motion = pacing.Motion(now=0.0)
    left, right = (500, 300, 100, 100), (500 + 100 + pacing.MOTION_MARGIN_PX - 1, 300, 90, 100)
    far = (0, 0, 10, 10)
    for t in (0.01, 0.02):
        motion.saw([left], t)
    assert motion.saw([left, right, far], 0.03) == [left, right]
    assert motion.box == (500, 300, 253, 100)


def test_the_region_in_motion_is_what_moved_in_its_last_polls() -> None:
    """A whole image seeds the region; a video playing in a corner narrows it to the video
    within MOTION_AFTER_CHANGES polls, and an echo far from it stays outside."""
    motion = pacing.Motion(now=0.0)
    video, echo = (1120, 630, 800, 450), (40, 40, 8, 16)
    motion.saw([(0, 0, 1920, 1080)], 0.0)
    for i in range(1, pacing.MOTION_AFTER_CHANGES + 1):
        motion.saw([video], i * 0.02)
    assert motion.box == video
    assert motion.saw([video, echo], 0.1) == [video]


def test_on_a_slow_link_bulk_updates_go_in_strips_of_a_few_tens_of_milliseconds() -> None:
    """Strip height follows the link: at 64 KB/s a 1920-wide 4:4:4 update goes in 16-row
    strips (about STRIP_LINK_S each at the bytes a pixel learnt), on a fast or unknown link
    in STRIP_ROWS."""
    wide = [(0, 0, 1920, 400)]

    def rows(rate: float | None, pacer: pacing.Pacer | None = None) -> int:
        return (pacer or pacing.Pacer(now=0.0)).plan(wide, 1.0, rate=rate)[0].rows

    assert rows(None) == rows(100e6) == codec.STRIP_ROWS
    assert rows(64e3) == 16
    pacer = pacing.Pacer(now=0.0)
    before = rows(1e6, pacer)
    frame = p.Frame(p.FRAME_JPEG, p.FLAG_LAST, 1, 0, 0, 0, 1920, 400,
                    b"\xff\xd8\xff" + bytes(1920 * 400 // 10))
    for _ in range(5):  # cheaper than guessed: taller strips
        pacer.encoded(pacing.Encoding(wide, 85, "444", before), [frame], 1.0)
    assert before < rows(1e6, pacer) <= codec.STRIP_ROWS


def motion_rows(rate: float | None, height: int = 1080, threads: int = 2) -> int:
    """The strip height the Pacer plans for full-screen motion of ``height`` rows."""
    pacer = pacing.Pacer(now=0.0, threads=threads)
    moving = [(0, 0, 1920, height)]
    plans = [pacer.plan(moving, t * 0.016, rate=rate) for t in range(1, 5)]
    [plan] = plans[-1]
    assert plan.motion
    return plan.rows


def test_full_screen_motion_on_a_fast_link_goes_in_one_strip_per_encoder_thread() -> None:
    """1080p motion on a link that carries such a strip within STRIP_LINK_S, or one not yet
    known: one strip per encoder thread (rows a multiple of 16), taller than STRIP_ROWS:
    fewer images for the browser to decode and draw per update."""
    assert motion_rows(None) == motion_rows(100e6) == 544
    assert motion_rows(100e6, threads=4) == 272
    assert motion_rows(100e6) > codec.STRIP_ROWS


def test_full_screen_motion_holds_the_link_at_most_strip_link_s_a_strip_at_any_rate() -> None:
    """At any known rate (64 KB/s to 8 MB/s, across what was FAST_LINK_BYTES_S), a motion
    strip holds the link at most about STRIP_LINK_S (at the bytes a pixel guessed for 4:2:0):
    the most rows, a multiple of 16, that fit, at least 16, at most one strip a thread."""
    row_bytes = 1920 * pacing.BYTES_PER_PX["420"]
    for rate in (64e3, 250e3, 900e3, 1e6 - 1, 1e6, 2e6, 4e6, 8e6):
        rows = motion_rows(rate)
        assert rows % 16 == 0 and 16 <= rows <= 544, (rate, rows)
        assert rows == 16 or rows * row_bytes <= rate * pacing.STRIP_LINK_S, (rate, rows)
        assert rows == 544 or (rows + 16) * row_bytes > rate * pacing.STRIP_LINK_S, (rate, rows)
    assert motion_rows(4e6) > codec.STRIP_ROWS
    assert motion_rows(64e3) == 16


def test_motion_on_a_slow_link_goes_in_strips_of_strip_link_s() -> None:
    """A video on 512 kbit/s, 2 Mbit/s or 1 MB/s: strips of STRIP_LINK_S at the 4:2:0 bytes
    a pixel, at least 16 rows and at most one per encoder thread; on the two slow links as
    thin as any bulk update's (fewer rows than STRIP_ROWS)."""
    video = [(1120, 630, 800, 450)]
    for rate in (64e3, 512e3 / 8, 2e6 / 8, 1e6 - 1):
        pacer = pacing.Pacer(now=0.0, threads=2)
        for t in range(1, 4):
            pacer.plan(video, t * 0.016, rate=rate)
        [motion] = pacer.plan(video, 0.064, rate=rate)
        rows = int(rate * pacing.STRIP_LINK_S / (800 * pacing.BYTES_PER_PX["420"])) // 16 * 16
        assert motion.motion and motion.rows == min(240, max(16, rows)), (rate, motion.rows)
        if rate <= 2e6 / 8:
            assert motion.rows < codec.STRIP_ROWS


def learnt_motion(pacer: pacing.Pacer, rate: float, size: int) -> pacing.Encoding:
    """Full-screen motion on the ladder's half-resolution rung, each update coming out as
    ``size`` bytes (what the Pacer learns its cost from), the link's rate ``rate`` not known
    to be the viewer's: the motion update planned once the cost is learnt."""
    screen = [(0, 0, 1920, 1080)]
    in_motion(pacer, screen, holds=4, rate=rate)  # down to MOTION_RUNGS[4]: (75, 2)
    plan = None
    for n in range(20):  # (fewer than QUALITY_UP_AFTER_UPDATES: the rung stays)
        [plan] = pacer.plan(screen, 1.0 + n / 60, rate)
        frame = p.Frame(p.FRAME_JPEG, p.FLAG_LAST, 1, 0, 0, 0, 1920, 1080,
                        b"\xff\xd8\xff" + bytes(size - 3))
        pacer.encoded(plan, [frame], 1.0 + n / 60)
    assert plan is not None and plan.motion and plan.scale == 2
    return plan


def test_a_rate_just_under_1_mb_s_does_not_cut_motion_into_thin_strips() -> None:
    """The trap Chromium fell into on the loopback: a near path, the rate learnt 0.9 MB/s
    (the viewer's decoding, no probe having shown it 1.25 times faster), 1080p motion at
    half resolution costing 37 KB an update: the update goes in two strips, one per encoder
    thread (the link carries one in 21 ms), not in nine of STRIP_ROWS, which made the viewer
    slower and its rate lower still."""
    flow = learnt(rate=900_000, rtt=0.006)
    assert probed(flow, 2, 37_000, 10.0, 37_000 / 900_000)  # no faster: no verdict
    assert flow.rate == pytest.approx(900_000) and not flow.viewer_limited
    plan = learnt_motion(pacing.Pacer(now=0.0, threads=2), flow.rate, 37_000)
    assert plan.rows == 544
    assert plan.rows * 37_000 / 1080 <= flow.rate * pacing.STRIP_LINK_S


def test_on_a_slow_near_link_motion_strips_stay_thin_for_the_echo() -> None:
    """1 Mbit/s at 20 ms round trip (near: probed, but no faster than delivery): the same
    37 KB half-resolution updates go in strips that hold the link STRIP_LINK_S, 96 rows
    (12 an update), so an echo waits behind at most 30 ms of video."""
    flow = learnt(rate=125_000, rtt=0.02)
    assert probed(flow, 2, 37_000, 10.0, 37_000 / 125_000)
    assert not flow.viewer_limited
    plan = learnt_motion(pacing.Pacer(now=0.0, threads=2), flow.rate, 37_000)
    assert plan.rows == 96 < codec.STRIP_ROWS
    assert plan.rows * 37_000 / 1080 <= flow.rate * pacing.STRIP_LINK_S
