"""Where a poll's compare runs (agent.compare_in_thread) and what it reports costing."""

from __future__ import annotations

import agent
import screen_codec as codec

CHEAP_S = agent.INLINE_COMPARE_MAX_S / 3
EXPENSIVE_S = agent.INLINE_COMPARE_MAX_S * 3


def test_a_cheap_compare_nobody_driving_and_nothing_in_motion_stays_on_the_loop() -> None:
    """The customer typing: the last compare cost little, nothing moves, no input came."""
    assert not agent.compare_in_thread(False, CHEAP_S, False, False)
    assert not agent.compare_in_thread(False, 0.0, False, False)


def test_an_expensive_last_compare_sends_the_next_to_a_thread() -> None:
    """A compare that cost INLINE_COMPARE_MAX_S or more: the next one runs off the loop."""
    assert agent.compare_in_thread(False, EXPENSIVE_S, False, False)
    assert agent.compare_in_thread(False, agent.INLINE_COMPARE_MAX_S, False, False)


def test_a_region_in_motion_sends_the_compare_to_a_thread_however_cheap_the_last() -> None:
    """A video playing: its compare goes to a thread even after a cheap one."""
    assert agent.compare_in_thread(False, CHEAP_S, True, False)


def test_while_the_support_person_drives_even_a_cheap_compare_goes_to_a_thread() -> None:
    """Their next key must not wait unread behind a compare on the loop."""
    assert agent.compare_in_thread(False, CHEAP_S, False, True)


def test_a_poll_for_inputs_echo_compares_on_the_loop_whatever_else_holds() -> None:
    """The echo's poll never waits for a hand-off: expensive, in motion or driven."""
    assert not agent.compare_in_thread(True, EXPENSIVE_S, True, True)
    assert not agent.compare_in_thread(True, CHEAP_S, False, False)


def test_the_timed_compare_returns_the_changes_and_a_cost_in_seconds() -> None:
    """_timed_changes gives diff.changes' rectangles and a non-negative CPU cost."""
    diff = codec.ScreenDiff()
    shown = codec.new_image(256, 128)
    diff.commit(shown, [(0, 0, 256, 128)], owned=True)
    pixels = codec.new_image(256, 128)
    flat = pixels.cast("B")
    for y in range(70, 74):  # a 10x4 white mark: at least one of its rows is sampled
        flat[(y * 256 + 130) * 4:(y * 256 + 140) * 4] = b"\xff" * 40
    rects, cost = agent._timed_changes(diff, pixels)
    assert rects == [(130, 70, 10, 4)]
    assert cost >= 0.0


def test_the_echo_band_is_the_last_echos_rows_of_tiles_and_one_more_each_side() -> None:
    """Rows 170-180 with 64-row tiles: tiles 128-192, widened to 64-256."""
    assert agent.echo_band((170, 180), 1080) == (64, 256)
    assert agent.echo_band((128, 192), 1080) == (64, 256)


def test_the_echo_band_stops_at_the_screens_edges() -> None:
    """At the top it starts at row 0, at the bottom it ends at the screen's height."""
    assert agent.echo_band((3, 10), 1080) == (0, 128)
    assert agent.echo_band((1070, 1080), 1080) == (960, 1080)


def test_a_band_commit_copies_only_the_rects_rows_inside_the_band() -> None:
    """_commit_band puts the band's pixels into the viewer's copy at their screen rows, and
    leaves a rectangle's rows outside the band as they were."""
    diff = codec.ScreenDiff()
    shown = codec.new_image(8, 6)
    diff.commit(shown, [(0, 0, 8, 6)], owned=True)
    band = codec.new_image(8, 2)  # screen rows 2 and 3
    band.cast("B")[:] = b"\x07" * len(band.cast("B"))
    agent._commit_band(diff, band, 2, [(1, 1, 3, 4)])  # rows 1-4, columns 1-3
    rows = [bytes(shown.cast("B")[y * 32:(y + 1) * 32]) for y in range(6)]
    inside = b"\x00" * 4 + b"\x07" * 12 + b"\x00" * 16
    assert rows == [bytes(32), bytes(32), inside, inside, bytes(32), bytes(32)]
