"""Where a poll's compare runs (agent.compare_in_thread) and what it reports costing."""

from __future__ import annotations

import agent
import screen_codec as codec

CHEAP_S = agent.INLINE_COMPARE_MAX_S / 3
EXPENSIVE_S = agent.INLINE_COMPARE_MAX_S * 3


def test_a_cheap_compare_with_nothing_in_motion_stays_on_the_event_loop() -> None:
    """Typing: the last compare cost little and nothing moves, so no hand-off to a thread."""
    assert not agent.compare_in_thread(False, CHEAP_S, False)
    assert not agent.compare_in_thread(False, 0.0, False)


def test_an_expensive_last_compare_sends_the_next_to_a_thread() -> None:
    """A compare that cost INLINE_COMPARE_MAX_S or more: the next one runs off the loop."""
    assert agent.compare_in_thread(False, EXPENSIVE_S, False)
    assert agent.compare_in_thread(False, agent.INLINE_COMPARE_MAX_S, False)


def test_a_region_in_motion_sends_the_compare_to_a_thread_however_cheap_the_last() -> None:
    """A video playing: its compare goes to a thread even after a cheap one."""
    assert agent.compare_in_thread(False, CHEAP_S, True)


def test_a_poll_for_inputs_echo_compares_on_the_loop_even_when_expensive() -> None:
    """The echo's poll never waits for a hand-off, whatever the compare costs or moves."""
    assert not agent.compare_in_thread(True, EXPENSIVE_S, True)
    assert not agent.compare_in_thread(True, CHEAP_S, False)


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
