"""The customer's session without I/O: what the agent does, decided from what it hears.

Standard library and protocol.py only; no asyncio, no clock, no platform. The agent's loop
(agent.py) feeds a ``Session`` what happens, with the time, and carries out the actions it
returns, in order:

    event in                                   actions out (typical)
    -----------------------------------------  -----------------------------------------------
    connected(screens)                         Send(hello)
    receive(registered)                        Balloon("Connection active") the first time
    receive(accepted)                          Balloon(name), Stream(full)  (paused: neither)
    receive(control granted / released)        (released: Inject key/button ups)
    receive(input), in control                 Inject(move / button / scroll / key / type)
    receive(refresh) / layout(screens)         (Send(screens)), Stream(full)
    receive(ack) that frees a held-back update Stream(not full)
    pause() / unpause(), customer       Inject ups, StopStream, Send(pause) /
                                               Send(pause), Stream(full)
    receive(ended / error)                     Inject ups, StopStream, End
    bad_message(text)                          Inject ups, StopStream, End(CLOSE_POLICY)
    link_lost(close code)                      Inject ups, StopStream, Reconnect, or End when
                                               it cannot resume
    connect_failed / untrusted                 Reconnect(after a delay) or End
    close() / capture_failed()                 Inject ups, StopStream, End(farewell: close)
    receipt(ended), after our close            (the view gains the ledger's reference)
    desktop(secure), the desktop watch         Inject ups, StopStream, Send(desktop) /
                                               Send(desktop), Stream(full)
    receive(elevate)                           Send(elevation asked), AskElevation
    elevate() (the customer's click or Yes)    Send(handoff)
    receive(handoff_secret)                    StartElevated(secret)
    elevation_result(declined / failed)        Send(elevation)
    link_lost(CLOSE_HANDED_OFF)                End (quietly: the elevated copy has it now)
    receive(chat) / chat(text), customer       ChatLine / Send(chat), ChatLine
    receive(clipboard), in control             SetClipboard(text)
    clipboard_changed(text), in control        Send(clipboard), ChatLine("clipboard")
    receive(error) with a NOTICE_CODES code    ChatLine("notice"): the session goes on

States: connecting -> waiting -> accepted <-> in_control, either <-> paused, -> ended; and
from any live state reconnecting -> (waiting | accepted | in_control | paused) when the link
is lost in a way that may resume. Input is injected only in ``in_control``, and never while
a question to the customer (a file's consent dialog) is up (``asking_customer``) or an
administrator prompt is (``secure``); every way out of it (pause included) releases what the
support person holds. Nothing is captured while paused, nor during an administrator prompt.
``ended`` is final. ``view`` is what the customer's windows (the panel, the tray)
show; ``on_change`` is called with it whenever it changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

import protocol as p

CONNECTING, WAITING, ACCEPTED, IN_CONTROL = "connecting", "waiting", "accepted", "in_control"
PAUSED, RECONNECTING, ENDED = "paused", "reconnecting", "ended"
SHARING = (ACCEPTED, IN_CONTROL, PAUSED)  # accepted by the support person, link up
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
RECONNECT_DELAYS_S = (0.5, 1, 2, 4, 5)  # capped backoff (the loop adds +-30% jitter)
RECONNECT_GRACE_S = 60  # how long after the link was lost connecting again is worth trying
# Pacing (FlowControl): at most a round trip plus this much data unacknowledged. It is the
# queue that video keeps at the link's bottleneck, and input's echo waits behind it: 100 ms
# left typing at 2 Mbit/s 60-80 ms over the round trip (issue 14's target: 30 ms).
UNACKED_EXTRA_S = 0.03
MIN_BUDGET_BYTES = 8 * 1024  # ... but never less (a slow ack path must not stall the stream;
#                              16 KiB was a 250 ms queue at 512 kbit/s)
RATE_WINDOW_S = 10.0  # the link's rate: the largest delivery rate seen this long
RTT_WINDOW_S = 10.0  # its round trip: the smallest seen this long
MIN_RTT_S = 0.001
PACING_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # probe up, drain, cruise
PACING_PHASE_S = 0.1
# ... but first a startup, as BBR's: paced (and budgeted) at twice the estimate, so the rate
# learnt doubles every round trip, until STARTUP_FLAT_ROUNDS round trips of link-limited
# samples raised it by less than STARTUP_GROWTH; then a drain at the inverse gain until
# what is unacknowledged fits one round trip at the rate; then the cycle above.
# (From the first sample at gain 1.25 one phase in 8, a loopback link whose first sample
# was slow took many seconds to be believed fast.)
STARTUP_GAIN = 2.0
STARTUP_GROWTH = 1.25
STARTUP_FLAT_ROUNDS = 3
STARTUP, DRAIN, CRUISE = "startup", "drain", "cruise"
# On a near path (a smallest round trip of at most NEAR_RTT_S: the loopback, a LAN, a relay
# close by; issue 14's slow links have 60 and 150 ms; Chromium's acks on the loopback came 8
# ms after the last write at load 4 but 28 ms at load 11, so 30 ms was too tight) a bulk
# update encoded ahead is written unpaced now and then, alone, as a probe (FlowControl's
# docstring says why); not in the
# startup (which probes by its gain, and whose first updates met a cold viewer: 0.36 s for
# 205 KB in Chromium). At most every PROBE_EVERY_S, twice as long after each probe that found
# the link no faster than the delivery rate (a near but slow link, whose echoes such a burst
# delays), up to PROBE_EVERY_MAX_S. A probe at least PROBE_FASTER times the delivery rate
# says the rate is the viewer's (Chromium on the loopback, load 6-10: 1.4 to 2.2 times).
NEAR_RTT_S = 0.05
# A rate sample's round trip (FlowControl._elapsed) is the smallest of updates of at most
# one TCP segment (input's echoes: 110-320 bytes), whose own time on the link is nothing: a
# video update's round trip from its last write holds that write's time on the link (a 32
# ms strip on 2 Mbit/s), and taking that off too made the link seem 30% faster than it was.
# Kept longer than RTT_WINDOW_S: a minute without input must not lose it, and an older,
# smaller one only makes a sample lower.
IDLE_RTT_MAX_BYTES = 1448
IDLE_RTT_WINDOW_S = 60.0
# While the support person types on a far path, bulk frames (the video) are paced at
# TYPING_GAIN of the rate too: a segment of them lost in the round trip before an echo holds
# the echo back at the receiver until its retransmission (TCP delivers in order), a round
# trip or more; at 85% of 2 Mbit/s with 1% loss that was 11-19% of the echoes (p95 185-269 ms
# on 2 Mbit/s, 60 ms, 200 presses). Input within TYPING_S counts; such holds are not the
# link's (their rate samples count only when they raise the estimate, as app-limited ones).
TYPING_S = 2.0
TYPING_GAIN = 0.5
PROBE_EVERY_S = 2.0
PROBE_EVERY_MAX_S = 64.0
PROBE_FASTER = 1.25
LOST = "The connection to the support server was lost. Please run this program again."
HANDED_OFF = "The session goes on in the program running as administrator."
CAPTURE_FAILED = ("The screen could not be captured, so the session has ended. Please run this "
                  "program again.")


def can_resume(close_code: int | None) -> bool:
    """Whether the agent may resume after its link closed with ``close_code`` (None: no close
    frame at all): protocol.can_resume, the one rule, as the agent sees it."""
    return p.can_resume(close_code, "agent")


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the exit code and, when the customer should know, why."""

    code: int
    message: str = ""


@dataclass(frozen=True)
class Send:
    message: p.Message


@dataclass(frozen=True)
class Inject:
    """Call ``Input.<method>(*args)``."""

    method: str
    args: tuple


@dataclass(frozen=True)
class Balloon:
    """Tell the customer ``text`` in a notification by the tray icon."""

    text: str


@dataclass(frozen=True)
class Stream:
    """Stream the screen (start if not streaming); ``full``: a whole image next."""

    full: bool


@dataclass(frozen=True)
class StopStream:
    """Stop capturing now (before anything else is said to the relay)."""


@dataclass(frozen=True)
class Reconnect:
    """The link is gone but the session may go on: connect again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True)
class End:
    """Say ``farewell`` (if any) and close the link with ``close_code`` (both within a short
    time; a link that does not answer is dropped), then exit with ``outcome``."""

    outcome: Outcome
    farewell: p.Message | None = None
    close_code: int = p.CLOSE_NORMAL
    close_reason: str = ""


@dataclass(frozen=True)
class AskElevation:
    """Ask the customer whether the support person ``person`` may have the program restart
    as administrator; the answer comes back as elevate() or elevation_result(DECLINED)."""

    person: str


@dataclass(frozen=True)
class StartElevated:
    """Start this program as administrator, passing ``secret`` privately; the outcome comes
    back as elevation_result()."""

    secret: str


@dataclass(frozen=True)
class ChatLine:
    """A line for the customer's chat area. ``who``: "technician" (their message), "customer"
    (ours, sent), "notice" (a refusal in the customer's words) or "clipboard" (the customer's
    clipboard text was shared; ``text`` is never shown, only its length)."""

    who: str
    text: str


@dataclass(frozen=True)
class SetClipboard:
    """Put ``text`` on the customer's clipboard (the support person pastes it next)."""

    text: str


Action = (Send | Inject | Balloon | Stream | StopStream | Reconnect | End | AskElevation
          | StartElevated | ChatLine | SetClipboard)


@dataclass(frozen=True)
class Stopwatch:
    """``base_s`` seconds counted up to ``since``, and counting on from it unless ``since`` is
    None (stopped). Time passed in; frozen, so a View holding one compares by value."""

    base_s: float = 0.0
    since: float | None = None

    def seconds(self, now: float) -> float:
        running = max(0.0, now - self.since) if self.since is not None else 0.0
        return self.base_s + running

    def run(self, now: float) -> Stopwatch:
        return self if self.since is not None else Stopwatch(self.base_s, now)

    def stop(self, now: float) -> Stopwatch:
        return Stopwatch(self.seconds(now)) if self.since is not None else self


@dataclass(frozen=True)
class View:
    """What the customer's windows show about the session."""

    state: str
    technician_name: str = ""
    sentence: str = ""  # once ended: what the customer is told
    code: str = ""  # the session code from `registered`, for the customer to read out
    billed: Stopwatch = Stopwatch()  # the ledger's clock: accepted.elapsed_s as its base
    paused: Stopwatch = Stopwatch()  # time paused by the customer (not billed)
    accepted: bool = False  # the support person accepted at some point
    failed: bool = False  # once ended: by a refusal, a lost link or a fault
    ref: int = 0  # once ended: the ledger's reference (0: the relay did not say)


# --- rules with time passed in --------------------------------------------------------------


class RateLimit:
    """Token bucket: ``rate`` events a second with bursts of ``burst``; time passed in."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), None

    def allow(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class InFlight:
    """An update not yet acknowledged: what FlowControl learns from when its ack comes."""

    started_at: float  # when it began: it counts against the wire's allowance from here
    holds: int  # FlowControl.holds then: none more by its ack makes its sample app-limited
    size: int = 0  # bytes written so far
    written_at: float | None = None  # its first write: its rate counts from there ...
    delivered: int = 0  # ... FlowControl.delivered, delivered_at and sent_at then
    delivered_at: float = 0.0
    sent_at: float = 0.0
    last_at: float = 0.0  # its last write: its round trip counts from there
    oldest_at: float = 0.0  # the first write of the oldest update on the link at its own


class FlowControl:
    """What the link to the viewer can take now, from its acknowledgements (time passed in).

    The wire's rule (protocol.MAX_UPDATES_IN_FLIGHT, which the relay enforces) caps the updates
    unacknowledged; within it the agent paces by bytes and time, as TCP's BBR does: each
    acknowledgement gives a delivery-rate sample (bytes acknowledged since the update's first
    write, over the time, and never above the rate they were written at: acknowledgements that
    arrive bunched, after a viewer's decode, must not make the link seem faster than it is, as
    BBR bounds its sample by the send rate; on a far path, with the two corrections of
    _elapsed() for acks that come an update at a time) and a round-trip sample; the estimate
    is the largest rate of the last RATE_WINDOW_S and the smallest round trip of the last
    RTT_WINDOW_S. Bulk updates (video, scrolling) start only while at most one round trip plus
    UNACKED_EXTRA_S of data is unacknowledged, their frames are written no faster than the
    rate (so they wait here, where an echo of input can pass them, not in a socket buffer),
    and they leave one update of the wire's allowance free: an interactive update (input's
    echo) may always start. The pacing gain cycles (PACING_GAINS) to find a faster link and
    drain what a slower one queued, after a startup at STARTUP_GAIN that finds the link's rate
    in a few round trips. While the support person types on a far path, bulk frames go at
    TYPING_GAIN of the rate (typing()): an echo waits at the receiver behind any video segment
    lost in the round trip before it. Before any
    acknowledgement nothing is known: only the count applies.

    A sample is app-limited when nothing was held back while its update was in flight (typing
    on a fast link: the agent had no more to send, so the sample says how much it sent, not
    what the link takes). As in BBR, such a sample counts only when it raises the estimate:
    otherwise a minute of typing would age out what the link was seen to take, and the next
    bulk update (a scroll, a window opening) would be paced at typing's rate.

    A viewer that decodes (a browser) can set the delivery rate itself: it acks an update once
    it has drawn it. In Chromium on the loopback that held the estimate at about one 1080p
    update at a time (0.5 to 1.1 MB/s, wherever the startup left it, in runs of the same
    code): the budget held less than an update and its frames were paced at the estimate, so
    no sample could rise above it, and thin strips (Pacer.plan) made the viewer slower still.
    So on a near path (NEAR_RTT_S) a probe now and then: one bulk update written unpaced while
    nothing else is in flight. Its bytes over the time from its start to its ack (the link's
    transfer, the viewer's decode: a lower bound of the link's rate) against the delivery
    rate tell the two apart: on a slow link it is no faster and changes nothing; when it is
    PROBE_FASTER times faster the rate is the viewer's (``viewer_limited``): the estimate is
    at least the probe's, the budget's round trip at least the probe's time (so that one
    update is on its way while the viewer decodes the one before, as BBR budgets for a
    receiver that acks late), frames are not paced (the budget alone holds bulk updates
    back), and Pacer.plan does not cut motion thin for it. That holds, without more probes
    (behind another update a probe would time the viewer's decode of both), while the path
    stays near.
    """

    def __init__(self, limit: int = p.MAX_UPDATES_IN_FLIGHT) -> None:
        self.limit = limit
        self.window = p.UpdateWindow(limit)  # the wire's rule, as the relay enforces it
        self.seq = 0
        self.in_flight: dict[int, InFlight] = {}
        self.unacked = 0  # bytes written and not yet acknowledged
        self.delivered = 0  # bytes acknowledged since the start
        self.delivered_at: float | None = None
        self.sent_at = 0.0  # when the last byte acknowledged was written (BBR's first_sent)
        self.rates: deque[tuple[float, float]] = deque()  # (at, bytes/s)
        self.probes: set[int] = set()  # updates written unpaced (NEAR_RTT_S)
        self.probe_every = PROBE_EVERY_S
        self.probe_at = 0.0  # ... the next from this time
        self.probed: tuple[float, float] | None = None  # (bytes/s, seconds) of the last probe,
        #                                                 if PROBE_FASTER than delivery
        self.rtts: deque[tuple[float, float]] = deque()  # (at, seconds)
        self.idle_rtts: deque[tuple[float, float]] = deque()  # (at, seconds): _elapsed()
        self.next_write_at = 0.0
        self.input_at = float("-inf")  # the support person's last input (TYPING_S)
        self.typing_write_at = 0.0  # ... the next bulk frame's time at TYPING_GAIN
        self.waiting = False  # something was held back: the next ack wakes the streamer
        self.holds = 0  # times a bulk update or frame was held back (app-limited samples)
        self.ahead: dict[int, float] = {}  # encoded ahead -> when; each starts when written
        self.mode = STARTUP
        self.full_rate = 0.0  # startup: the rate last seen to grow by STARTUP_GROWTH
        self.flat_rounds = 0  # ... round trips since, of link-limited samples
        self.round_at = 0.0  # ... the next of which ends at this time

    @property
    def rate(self) -> float | None:
        """The link's estimated rate in bytes a second (None before any acknowledgement):
        the largest delivery rate of the window, at least the probe's while the rate is the
        viewer's."""
        samples = [r for _, r in self.rates]
        if self.probed is not None and self.viewer_limited:
            samples.append(self.probed[0])
        return max(samples) if samples else None

    @property
    def viewer_limited(self) -> bool:
        """Whether a probe found the link PROBE_FASTER than the delivery rate, on a path still
        near: the rate is the viewer's, no reason to cut motion thin."""
        return self.probed is not None and self.rtt is not None and self.rtt <= NEAR_RTT_S

    @property
    def rtt(self) -> float | None:
        return min(r for _, r in self.rtts) if self.rtts else None

    def budget(self) -> float:
        """Bytes that may be unacknowledged before a bulk update waits: one round trip plus
        UNACKED_EXTRA_S at the estimated rate (unlimited while nothing is known). While the
        rate is the viewer's, the round trip is a probe's, an update's own (acks come once it
        is drawn, as a receiver's that aggregates: BBR adds that time too): one update in
        flight while the viewer decodes the one before, not one at a time."""
        rate, rtt = self.rate, self.rtt
        if rate is None or rtt is None:
            return float("inf")
        if self.probed is not None and self.viewer_limited:
            rtt = max(rtt, self.probed[1])
        gain = STARTUP_GAIN if self.mode == STARTUP else 1.0
        return max(MIN_BUDGET_BYTES, gain * rate * (rtt + UNACKED_EXTRA_S))

    def may_start(self, interactive: bool = False, now: float | None = None) -> bool:
        """May a new update begin? Interactive ones only need a free place in the wire's
        allowance; bulk ones leave one free and wait for the byte budget. With ``now``, on a
        far path, the bytes of the oldest update written that a TCP ack would have freed by
        now do not count (see carried())."""
        allowed = self.window.may_start() and (interactive or (
            len(self.window.open) < self.limit - 1 and
            self.unacked - self.carried(now) < self.budget()))
        self.waiting = self.waiting or not allowed
        self.holds += not allowed and not interactive
        return allowed

    def carried(self, now: float | None) -> float:
        """Bytes of the oldest update on the link that its first round trip at the estimated
        rate has delivered by ``now`` (0 on a near path, or without ``now``). Acks come an
        update at a time, so an update's bytes counted against the budget until its last one
        was drawn, though the link had carried most of them (a TCP ack frees each segment's):
        a video update larger than the budget went alone with an idle round trip after it,
        and on 2 Mbit/s whether the budget (20-23 KB) was just under or over an update (22-24
        KB) set the video at 4-5 or 8-9 updates a second between runs of the same code. So
        the next may begin as the last of one is written, not a round trip later; frames are
        still paced at the rate. (On a near path the budget's round trip already holds an
        update while the viewer is the limit: PROBE_FASTER.)"""
        oldest = self._oldest() if now is not None else None
        if oldest is None:
            return 0.0
        return min(oldest.size, self.rate * max(0.0, now - self.rtt - oldest.written_at))

    def start_delay(self, now: float) -> float | None:
        """Seconds until carried() lets a bulk update begin (0: now); None when only an ack
        can (the wire's allowance, or more than the oldest update over the budget)."""
        oldest, budget = self._oldest(), self.budget()
        if oldest is None or len(self.window.open) >= self.limit - 1 or \
                self.unacked - oldest.size >= budget:
            return None
        at = oldest.written_at + self.rtt + (self.unacked - budget) / self.rate
        return max(0.0, at - now) + MIN_RTT_S  # (past the boundary: carried() is continuous)

    def _oldest(self) -> InFlight | None:
        """The update written first of those in flight, on a far path with a rate known."""
        if self.rate is None or self.rtt is None or self.rtt <= NEAR_RTT_S:
            return None
        return min((e for e in self.in_flight.values() if e.written_at is not None),
                   key=lambda e: e.written_at, default=None)

    def may_send(self) -> bool:
        return self.may_start(interactive=False)

    def next_seq(self) -> int:
        seq, self.seq = self.seq, (self.seq + 1) % 2**32
        return seq

    def started(self, seq: int, now: float) -> None:
        """Update ``seq`` begins (its frames may wait to be written): it counts from now
        against the wire's allowance, and its delivery rate from its first write."""
        self.in_flight[seq] = InFlight(now, self.holds)
        self.window.started(seq)

    def ahead_of_time(self, seq: int, now: float) -> None:
        """Bulk update ``seq`` is encoded before the link may take it (so that the next
        video frame is ready when an acknowledgement frees a place, not encoded only then):
        it starts with its first write, once may_write_ahead() allows."""
        self.ahead[seq] = now

    def held_for(self, now: float) -> float:
        """Seconds the update encoded ahead has waited to begin, counted from ahead_of_time()
        (its grab: its encoding counts) (0: none waits). One is encoded ahead while another
        is in flight, as a rule: only a long wait says the link (or the viewer) takes fewer
        updates than the screen offers."""
        return max((now - at for at in self.ahead.values()), default=0.0)

    def may_write_ahead(self, seq: int, now: float) -> bool | None:
        """May update ``seq``, encoded ahead, begin now? (It begins: started().) None when it
        is not one: already started, or forgotten by a restart."""
        if seq not in self.ahead:
            return None
        if not self.may_start(now=now):
            return False
        del self.ahead[seq]
        probe = not self.in_flight and self.rtt is not None and self.rtt <= NEAR_RTT_S and \
            now >= self.probe_at and not self.viewer_limited and self.mode == CRUISE
        self.started(seq, now)
        if probe:
            self.probes.add(seq)
            self.probe_at = now + self.probe_every
        return True

    def write_delay(self, size: int, interactive: bool, now: float,
                    seq: int | None = None) -> float:
        """Seconds until a frame of ``size`` bytes (of update ``seq``) may be written (0:
        now). Interactive frames never wait: they are small, and they are what the support
        person waits for; nor do a probe's, nor any while the rate is the viewer's (paced at
        the probe's rate, an update took as long to write as the probe took to be drawn, and
        updates went no faster than one at a time: the budget holds them back)."""
        if interactive or self.rate is None or seq in self.probes or self.viewer_limited:
            return 0.0
        delay = max(0.0, self.next_write_at - now)
        if self.typing(now):  # the agent's own choice, not the link's: not a hold
            return max(delay, self.typing_write_at - now)
        self.holds += delay > 0
        return delay

    def input(self, now: float) -> None:
        """The support person's input came (a key, a button, a wheel): TYPING_S."""
        self.input_at = now

    def typing(self, now: float) -> bool:
        """Whether bulk frames are paced at TYPING_GAIN: input within TYPING_S, on a far
        path (near ones lose little, and their video would lose frames for nothing)."""
        rtt = self.rtt
        return now - self.input_at < TYPING_S and rtt is not None and rtt > NEAR_RTT_S

    def wrote(self, seq: int, size: int, now: float) -> None:
        """``size`` bytes of update ``seq``, begun with started() or may_write_ahead(), were
        written to the link. Nothing for an update no longer in flight: acknowledged already
        (the agent records a write before awaiting it, but the rule does not lean on that) or
        forgotten by a restart; a new entry for it would never be acknowledged, and would
        hold a place of the wire's allowance and its bytes of the budget until the next
        restart."""
        entry = self.in_flight.get(seq)
        if entry is None:
            return
        if entry.written_at is None:  # its rate counts from here: its encoding is not the link's
            if not self.unacked:  # after a pause, not from before it
                self.delivered_at = self.sent_at = now
            entry.written_at, entry.delivered = now, self.delivered
            entry.delivered_at, entry.sent_at = self.delivered_at, self.sent_at
            entry.oldest_at = min((e.written_at for e in self.in_flight.values()
                                   if e.written_at is not None), default=now)
        entry.size += size
        entry.last_at = now
        self.unacked += size
        rate = self.rate
        if rate is not None and seq not in self.probes:
            self.next_write_at = max(now, self.next_write_at) + size / (rate * self.gain(now))
            if self.typing(now):
                self.typing_write_at = max(now, self.typing_write_at) + size / (
                    rate * TYPING_GAIN)

    def gain(self, now: float) -> float:
        """The pacing gain now: STARTUP_GAIN in startup, its inverse in the drain, then the
        cycle's, a phase of PACING_PHASE_S (at least a round trip) each."""
        if self.mode == STARTUP:
            return STARTUP_GAIN
        if self.mode == DRAIN:
            return 1 / STARTUP_GAIN
        phase = max(PACING_PHASE_S, self.rtt or 0.0)
        return PACING_GAINS[int(now / phase) % len(PACING_GAINS)]

    def acked(self, seq: int, now: float = 0.0) -> bool:
        """Forget ``seq`` and learn from it; True when that lets a held-back update go."""
        entry = self.in_flight.pop(seq, None)
        if entry is None:
            return False
        self.window.acked(seq)
        idle_rtt = min((r for _, r in self.idle_rtts), default=None)  # (before its own)
        if seq in self.probes:
            self.probes.discard(seq)
            self._probed(entry.size, max(MIN_RTT_S, now - entry.started_at), now)
        self.unacked -= entry.size
        self.delivered += entry.size
        self.delivered_at = now
        if entry.written_at is not None:
            # from its last write: its earlier frames' time on the link is not the round
            # trip (subtracting size/rate for it took the whole sample away, to the 1 ms
            # floor, whenever the rate was underestimated: in the startup, on a lossy link)
            self._sample(self.rtts, max(MIN_RTT_S, now - entry.last_at), now, RTT_WINDOW_S)
            if entry.size <= IDLE_RTT_MAX_BYTES:
                self._sample(self.idle_rtts, max(MIN_RTT_S, now - entry.last_at), now,
                             IDLE_RTT_WINDOW_S)
        if entry.written_at is not None and now > entry.delivered_at:
            rate = (self.delivered - entry.delivered) / self._elapsed(entry, now, idle_rtt)
            self.sent_at = entry.last_at
            limited = self.holds > entry.holds  # by the link, not by what there was to send
            if limited or rate >= (self.rate or 0.0):  # (app-limited: above)
                self._sample(self.rates, rate, now, RATE_WINDOW_S)
            if limited:
                self._startup(now)
        if self.mode == DRAIN and self.rate and self.rtt and \
                self.unacked <= self.rate * self.rtt:
            self.mode = CRUISE
        woken, self.waiting = self.waiting, False
        return woken

    @staticmethod
    def _elapsed(entry: InFlight, now: float, idle_rtt: float | None) -> float:
        """The time over which the bytes acknowledged since ``entry``'s first write crossed
        the link, its ack at ``now``: BBR's, the longer of the times to acknowledge and to
        write them, and on a far path (beyond NEAR_RTT_S) two corrections for acks that come
        an update at a time, not a packet at a time as TCP's do.

        After an idle link (the time to acknowledge counts from the oldest update's first
        write, nothing being unacknowledged then: an update at a time, while the budget is
        smaller than one, or the next begun while it is on the link, see carried()) the time
        to acknowledge holds a round trip in which the link carried nothing of it: they were
        below the rate the update was written at, so each lowered the estimate, the pacing
        and the next sample (on 2 Mbit/s the rate learnt sank from 213 to 96 KB/s in 20 s).
        So a round trip comes off (``idle_rtt``: the smallest of IDLE_RTT_WINDOW_S before
        this ack, of updates too small to take time on the link themselves), but never
        below the time it took to write them, and only for a transfer of two round trips or
        more (for a shorter one the round trip's noise would be most of the sample).

        Otherwise its bytes crossed the link between the oldest update's first write and a
        round trip before now at the earliest: an update acknowledged whole counts all of
        its bytes at its ack, though they crossed since its own first write, and an echo's
        short interval that held such an ack said 81 KB/s on a 64 KB/s link."""
        written = entry.last_at - entry.sent_at
        elapsed = max(now - entry.delivered_at, written)
        if idle_rtt is None or idle_rtt <= NEAR_RTT_S:
            return elapsed
        crossed = now - idle_rtt - entry.oldest_at
        if entry.delivered_at == entry.oldest_at:  # after an idle link
            return max(crossed, written) if now - entry.oldest_at >= 2 * idle_rtt else elapsed
        return max(elapsed, crossed)

    def _startup(self, now: float) -> None:
        """A link-limited sample came: has the rate stopped growing? (App-limited samples
        say nothing: typing alone must not end the startup.)"""
        if self.mode != STARTUP:
            return
        rate = self.rate or 0.0
        if rate >= self.full_rate * STARTUP_GROWTH:
            self.full_rate, self.flat_rounds, self.round_at = rate, 0, now + (self.rtt or 0)
        elif now >= self.round_at:
            self.flat_rounds += 1
            self.round_at = now + (self.rtt or 0)
            if self.flat_rounds >= STARTUP_FLAT_ROUNDS:
                self.mode = DRAIN

    def _probed(self, size: int, took: float, now: float) -> None:
        """A probe of ``size`` bytes was acked ``took`` seconds after it started."""
        rate = size / took
        faster = rate >= PROBE_FASTER * max((r for _, r in self.rates), default=0.0)
        self.probed = (rate, took) if faster else None
        self.probe_every = PROBE_EVERY_S if faster else \
            min(PROBE_EVERY_MAX_S, 2 * self.probe_every)
        self.probe_at = now + self.probe_every

    @staticmethod
    def _sample(samples: deque, value: float, now: float, window: float) -> None:
        samples.append((now, value))
        while len(samples) > 1 and samples[0][0] < now - window:
            samples.popleft()

    def reset(self) -> None:
        """A full image comes next: nothing older waits for an acknowledgement. (What was
        learnt about the link stays: it is the same link.)"""
        self.in_flight.clear()
        self.ahead.clear()
        self.probes.clear()
        self.window.restart()
        self.unacked = 0
        self.next_write_at = self.typing_write_at = 0.0


def to_desktop(screens: tuple[p.Screen, ...], monitor: int, x: int, y: int) -> tuple | None:
    """Desktop coordinates of a point given relative to ``monitor``; None when outside it."""
    if not 0 <= monitor < len(screens):
        return None
    area = screens[monitor]
    if not (0 <= x < area.width and 0 <= y < area.height):
        return None
    return area.x + x, area.y + y


def clean_name(text: str) -> str:
    """A host or user name the relay will accept: printable, at most MAX_NAME_CHARS."""
    return "".join(c for c in text if c.isprintable())[: p.MAX_NAME_CHARS] or "unknown"


# --- the session ----------------------------------------------------------------------------


class Session:
    """One customer session, from the first connection to the end, across reconnections."""

    def __init__(self, technician: str, machine: str, user: str, keys: Collection[str],
                 on_change: Callable[[View], None] | None = None, handoff: str = "") -> None:
        self.technician, self.machine, self.user = technician, clean_name(machine), \
            clean_name(user)
        self.keys = frozenset(keys)  # the key codes the input backend can press
        self.on_change = on_change
        self.session = self.resume = self.name = self.code = ""
        self.screens: tuple[p.Screen, ...] = ()
        self.monitor = 0
        self.flow = FlowControl()
        self.rate = RateLimit(p.MAX_INPUT_EVENTS_PER_S, p.INPUT_BURST)
        self.chat_rate = RateLimit(p.CHAT_MESSAGES_PER_S, p.CHAT_BURST)
        self.clipboard_rate = RateLimit(p.CLIPBOARD_UPDATES_PER_S, p.CLIPBOARD_BURST)
        self.held_keys: set[str] = set()
        self.held_buttons: set[str] = set()
        self.paused = False  # the customer's wish: it outlasts a lost link
        self.granted = False  # the relay's word: the support person holds control
        self.secure = False  # an administrator prompt is up (the desktop watch's word)
        self.handoff = handoff  # the elevated copy's one-time secret, for its first hello
        self._taking_over = bool(handoff)  # the relay's pause state is ours, not our wish
        self._elevating = False  # a restart as administrator is under way
        self.asking = False  # a question to the customer is up (a file's consent dialog)
        self.control_epoch = 0  # counts the times control began (the clipboard's watch)
        self._state = CONNECTING
        self._before_loss = CONNECTING  # the state the lost link interrupted
        self._lost_at: float | None = None
        self._attempt = 0
        self._sentence = ""
        self._billed = self._paused_for = Stopwatch()
        self._accepted = self._failed = False
        self._ref = 0

    @property
    def state(self) -> str:
        return self._state

    @property
    def view(self) -> View:
        return View(self._state, self.name, self._sentence, self.code, self._billed,
                    self._paused_for, self._accepted, self._failed, self._ref)

    def _become(self, state: str, sentence: str = "") -> None:
        before = self.view
        self._state, self._sentence = state, sentence or self._sentence
        self._changed(before)

    def _changed(self, before: View) -> None:
        if self._state == IN_CONTROL and before.state != IN_CONTROL:
            self.control_epoch += 1
        if self.on_change is not None and self.view != before:
            self.on_change(self.view)

    def _sharing_state(self) -> str:
        """Where an accepted session stands: paused wins, then control."""
        return PAUSED if self.paused else IN_CONTROL if self.granted else ACCEPTED

    # --- the link ---

    def connected(self, screens: tuple[p.Screen, ...]) -> list[Action]:
        """A new connection to the relay is open: say hello (with the resume secret, if any)."""
        self.screens = screens
        self.monitor = self.monitor if self.monitor < len(screens) else 0
        self.flow.reset()
        self._attempt = 0
        return [Send(p.AgentHello("agent", p.PROTOCOL_VERSION, self.technician, self.machine,
                                  self.user, screens, self.resume,
                                  "" if self.resume else self.handoff))]

    def link_lost(self, close_code: int | None, reason: str, now: float) -> list[Action]:
        """The connection closed without an end: resume if the rule allows, else end."""
        if self._state == ENDED:
            return []
        actions = [*self._release(), StopStream()]
        if close_code == p.CLOSE_HANDED_OFF and self.session:
            # The elevated copy holds the session now: this one bows out without a word.
            return [*actions, *self._end(Outcome(EXIT_OK, HANDED_OFF), now)]
        if not (self.session and self.resume and can_resume(close_code)):
            why = p.customer_words(reason) if reason in p.WORDING else LOST
            return [*actions, *self._end(Outcome(EXIT_FAILED, why), now)]
        if self._state != RECONNECTING:  # lost again after a resume: a new grace period
            self._lost_at, self._before_loss = now, self._state
        self._become(RECONNECTING)
        return [*actions, Reconnect(0)]

    def connect_failed(self, why: str, now: float) -> list[Action]:
        """Connecting failed (``why``: one phrase); try again while the grace period lasts."""
        if self._state == ENDED:
            return []
        if self._lost_at is None or now - self._lost_at > RECONNECT_GRACE_S:
            why = "the connection was lost" if self._lost_at is not None else why
            return self._end(Outcome(EXIT_FAILED, f"Could not reach the support server: "
                                                  f"{why}."), now)
        delay = RECONNECT_DELAYS_S[min(self._attempt, len(RECONNECT_DELAYS_S) - 1)]
        self._attempt += 1
        return [Reconnect(delay)]

    def untrusted(self, why: str, now: float) -> list[Action]:
        """The relay's certificate failed verification: never retried."""
        return [*self._release(), StopStream(), *self._end(Outcome(
            EXIT_FAILED, f"The support server's certificate is not trusted ({why}). Please "
                         "call your support company before trying again."), now)]

    def bad_message(self, error: str, now: float) -> list[Action]:
        """The relay sent something the protocol does not allow."""
        if self._state == ENDED:
            return []
        return [*self._release(), StopStream(), *self._end(
            Outcome(EXIT_FAILED, "The support server sent something this program does not "
                                 "understand; the session was ended."), now,
            close_code=p.CLOSE_POLICY, close_reason=error[:120])]

    # --- the customer ---

    def close(self, now: float) -> list[Action]:
        """The customer chose Close: input and capture stop first, then the relay is told."""
        return [*self._release(), StopStream(),
                *self._end(Outcome(EXIT_OK), now, farewell=p.Close("customer-closed"))]

    def pause(self, now: float) -> list[Action]:
        """The customer paused: what the support person holds is released and capture stops
        before the relay (and so the viewer) is told; the billed clock stands still."""
        if self._state not in (ACCEPTED, IN_CONTROL):
            return []
        before = self.view
        actions = [*self._release(keep_control=True), StopStream()]
        self.paused = True
        self._billed, self._paused_for = self._billed.stop(now), self._paused_for.run(now)
        self._state = PAUSED
        self._changed(before)
        return [*actions, Send(p.Pause(True))]

    def unpause(self, now: float) -> list[Action]:
        """The customer resumed: the relay is told, then a whole image follows."""
        if self._state != PAUSED:
            return []
        before = self.view
        self.paused = False
        self._billed, self._paused_for = self._billed.run(now), self._paused_for.stop(now)
        self._state = self._sharing_state()
        self._changed(before)
        self.flow.reset()
        return [Send(p.Pause(False)), *([] if self.secure else [Stream(full=True)])]

    def chat(self, text: str, now: float) -> list[Action]:
        """The customer typed a chat line: sent while accepted (paused too), refused in words
        when over the size cap or the rate (the relay would refuse it anyway)."""
        text = "".join(c for c in text if c.isprintable() or c in "\n\t").strip()
        if not text or self._state not in SHARING:
            return []
        message = p.Chat(self.session, text)
        refusal = p.over_limit(message) or ("" if self.chat_rate.allow(now) else
                                             "chat-rate-limited")
        if refusal:
            return [ChatLine("notice", p.customer_words(refusal))]
        return [Send(message), ChatLine("customer", text)]

    @property
    def shares_clipboard(self) -> bool:
        """The customer's clipboard goes to the support person only while they hold control
        and the customer has not paused (the relay checks this too)."""
        return self._state == IN_CONTROL

    def clipboard_changed(self, text: str, now: float) -> list[Action]:
        """The customer's clipboard text changed: offered to the support person while in
        control; the customer's chat area says it was shared (copied passwords are a risk)."""
        if not self.shares_clipboard or not text:
            return []
        text = "".join(c for c in text if c.isprintable() or c in "\r\n\t")
        if not text:
            return []
        message = p.Clipboard(self.session, text)
        if refusal := p.over_limit(message):
            return [ChatLine("notice", p.customer_words(refusal))]
        if not self.clipboard_rate.allow(now):
            return []
        return [Send(message), ChatLine("clipboard", text)]

    def capture_failed(self, now: float) -> list[Action]:
        """Capturing the screen failed (the loop logs why): the relay and the customer are
        told the session ended."""
        return [*self._release(), StopStream(), *self._end(
            Outcome(EXIT_FAILED, CAPTURE_FAILED), now, farewell=p.Close("agent-error"))]

    def layout(self, screens: tuple[p.Screen, ...]) -> list[Action]:
        """The monitor layout is now ``screens``: tell the viewer, send a whole image."""
        if screens == self.screens or self._state == ENDED:
            return []
        self.screens = screens
        self.monitor = self.monitor if self.monitor < len(screens) else 0
        self.flow.reset()
        return [Send(p.Screens(screens)),
                *([] if self.paused or self.secure else [Stream(full=True)])]

    def desktop(self, secure: bool, now: float) -> list[Action]:
        """The desktop watch: an administrator prompt opened (``secure``) or closed. While it
        is up nothing is captured or injected; the relay hears it when it can show it."""
        if secure == self.secure or self._state == ENDED:
            return []
        self.secure = secure
        if self._state not in (ACCEPTED, IN_CONTROL, PAUSED):
            return []  # `accepted` after a resume or a wait says it (_accepted_by)
        if secure:
            return [*self._release(keep_control=True), StopStream(), Send(p.Desktop(True))]
        self.flow.reset()
        return [Send(p.Desktop(False)), *([] if self.paused else [Stream(full=True)])]

    def elevate(self, now: float) -> list[Action]:
        """The customer chose Restart as administrator (or said Yes to the support person's
        request): ask the relay for a hand-off secret."""
        if self._elevating or self._state not in (WAITING, *SHARING):
            return []
        self._elevating = True
        return [Send(p.Handoff())]

    def elevation_result(self, result: str, now: float) -> list[Action]:
        """What became of the restart: "started" waits for the new copy to take over (the
        relay then closes this link); "declined" or "failed" and the session goes on."""
        if result == "started" or self._state == ENDED:
            return []
        self._elevating = False
        if self._state not in (WAITING, *SHARING):
            return []
        return [Send(p.Elevation(result))]

    # --- the relay ---

    def receive(self, msg: p.Message, now: float) -> list[Action]:
        """One control message from the relay."""
        if self._state == ENDED:  # final: nothing revives an ended session
            return []
        if isinstance(msg, p.INPUT_TYPES):
            return self._input(msg, now)
        if isinstance(msg, p.Ended):
            return [*self._release(), StopStream(), *self._ended(msg, now)]
        if isinstance(msg, p.Error) and msg.code in p.NOTICE_CODES:  # one message refused
            return [ChatLine("notice", p.customer_words(msg.code, msg.message))]
        if isinstance(msg, p.Error):  # by code; a code this side does not know: its message
            why = p.customer_words(msg.code, msg.message)
            return [*self._release(), StopStream(), *self._end(Outcome(EXIT_FAILED, why), now)]
        if isinstance(msg, p.Registered):
            return self._registered(msg)
        if isinstance(msg, p.HandoffSecret):
            return [StartElevated(msg.secret)] if self._elevating else []
        if getattr(msg, "session", None) != self.session:
            return []
        if isinstance(msg, p.Accepted):
            return self._accepted_by(msg, now)
        if isinstance(msg, p.Elevate):
            if self._elevating or self._state not in SHARING:
                return []
            return [Send(p.Elevation("asked")), AskElevation(self.name)]
        if isinstance(msg, p.Control):
            self.granted = msg.granted and self._state in (*SHARING, RECONNECTING)
            if self.granted and self._state == ACCEPTED:
                self._become(IN_CONTROL)
                return []
            if self.granted:
                return []
            actions = self._release()
            if self._state == IN_CONTROL:
                self._become(ACCEPTED)
            return actions
        if isinstance(msg, p.Refresh):
            if (msg.monitor >= len(self.screens) or self._state not in (ACCEPTED, IN_CONTROL)
                    or self.secure):
                return []
            self.monitor = msg.monitor
            self.flow.reset()
            return [Stream(full=True)]
        if isinstance(msg, p.Ack):
            held_back = self.flow.acked(msg.seq, now)
            return [Stream(full=False)] if held_back and not (self.paused or self.secure) \
                else []
        if isinstance(msg, p.Chat) and self._state in SHARING:
            return [ChatLine("technician", msg.text)]
        if isinstance(msg, p.Clipboard) and self.shares_clipboard:
            return [SetClipboard(msg.text)]
        return []

    def receipt(self, msg: p.Ended) -> None:
        """The relay's `ended` answering our own close: the receipt's reference and billed
        seconds (the ledger's, which the relay knows best)."""
        if self._state == ENDED and msg.session == self.session and msg.ref:
            before = self.view
            self._ref, self._billed = msg.ref, Stopwatch(msg.billable_s)
            self._changed(before)

    def _registered(self, msg: p.Registered) -> list[Action]:
        resumed = self._state == RECONNECTING and msg.session == self.session
        self.session, self.resume, self.name = msg.session, msg.resume, msg.technician_name
        self.handoff = ""  # spent: from now on this copy resumes like any other
        before = self.view
        self.code = msg.code
        if self._state in SHARING or (resumed and self._before_loss != WAITING):
            self._changed(before)
            return []  # resumed: `accepted` follows and says where the session stands
        first = self._state == CONNECTING
        self._become(WAITING)
        return [Balloon("Connection active")] if first else []

    def _accepted_by(self, msg: p.Accepted, now: float) -> list[Action]:
        """Accepted (or told again after a resume or the viewer's rejoin): the billed clock
        takes the relay's count; the customer's pause holds whatever the relay thought."""
        fresh = self._state == WAITING and not self._taking_over
        if self._taking_over:  # the session's pause is the relay's, not a wish of this copy
            self._taking_over, self.paused = False, msg.paused
        before = self.view
        self.name, self.code, self._accepted = msg.technician_name, msg.code, True
        self._billed = Stopwatch(msg.elapsed_s, None if self.paused else now)
        if self._state not in SHARING:
            self._state = self._sharing_state()
        self._changed(before)
        actions: list[Action] = [Balloon(f"{self.name} can see your screen")] if fresh else []
        if msg.paused != self.paused:  # the relay missed the customer's last word
            actions.append(Send(p.Pause(self.paused)))
        if self.secure:  # the relay forgot it across the new link: say it again
            actions.append(Send(p.Desktop(True)))
        if self.paused or self.secure:
            return actions
        self.flow.reset()
        return [*actions, Stream(full=True)]

    def asking_customer(self, asking: bool) -> list[Action]:
        """A question to the customer (a file's consent dialog) is up, or gone. While it is
        up no input is injected, or the support person could answer it for the customer;
        what they held is released when it appears."""
        self.asking = asking
        return self._release(keep_control=True) if asking else []

    def _input(self, msg: p.Message, now: float) -> list[Action]:
        if (self._state != IN_CONTROL or msg.session != self.session or self.asking
                or self.secure):  # (the relay drops input during an administrator prompt too)
            return []
        if not self.rate.allow(now):
            return []
        if not isinstance(msg, p.PointerMove):
            self.flow.input(now)
        if isinstance(msg, p.Key):
            if msg.code not in self.keys:
                return []
            (self.held_keys.add if msg.down else self.held_keys.discard)(msg.code)
            return [Inject("key", (msg.code, msg.down))]
        if isinstance(msg, p.Text):
            return [Inject("type", (msg.text,))]
        point = to_desktop(self.screens, msg.monitor, msg.x, msg.y)
        if point is None:
            return []
        actions = [Inject("move", point)]
        if isinstance(msg, p.Button):
            (self.held_buttons.add if msg.down else self.held_buttons.discard)(msg.button)
            actions.append(Inject("button", (msg.button, msg.down)))
        elif isinstance(msg, p.Wheel):
            actions.append(Inject("scroll", (msg.dx, msg.dy)))
        return actions

    # --- ways out ---

    def _release(self, keep_control: bool = False) -> list[Action]:
        """Leave control: everything held is released; no input until granted again (a pause
        keeps the grant, so that Resume gives control back as it was). The caller moves on
        to the next state (no passing "accepted" on the way to the end)."""
        actions = [Inject("key", (code, False)) for code in sorted(self.held_keys)]
        actions += [Inject("button", (name, False)) for name in sorted(self.held_buttons)]
        self.held_keys.clear()
        self.held_buttons.clear()
        self.granted = self.granted and keep_control
        return actions

    def _ended(self, msg: p.Ended, now: float) -> list[Action]:
        """The relay ended the session: its receipt, and its reason in the customer's words."""
        if msg.ref:
            self._ref, self._billed = msg.ref, Stopwatch(msg.billable_s)
        by_a_person = msg.by in ("customer", "technician")
        sentence = p.customer_words(msg.reason) if msg.reason in p.WORDING else ""
        outcome = Outcome(EXIT_OK) if by_a_person else \
            Outcome(EXIT_FAILED, p.customer_words(msg.reason))
        return self._end(outcome, now, sentence=sentence)

    def _end(self, outcome: Outcome, now: float, farewell: p.Message | None = None,
             close_code: int = p.CLOSE_NORMAL, close_reason: str = "",
             sentence: str = "") -> list[Action]:
        if self._state == ENDED:
            return []
        self._billed, self._paused_for = self._billed.stop(now), self._paused_for.stop(now)
        self._failed = outcome.code != EXIT_OK
        self._become(ENDED, outcome.message or sentence)
        return [End(outcome, farewell, close_code, close_reason)]


# --- the keys a support person may press -------------------------------------------------


def _key_table() -> dict[str, tuple[int, int]]:
    """KeyboardEvent.code -> (X11 keysym, Windows virtual key; bit 8 = extended key)."""
    table = {f"Key{chr(65 + i)}": (97 + i, 65 + i) for i in range(26)}
    table.update({f"Digit{i}": (48 + i, 48 + i) for i in range(10)})
    table.update({f"F{i}": (0xFFBD + i, 0x6F + i) for i in range(1, 25)})
    table.update({f"Numpad{i}": (0xFFB0 + i, 0x60 + i) for i in range(10)})
    named = {
        "Enter": (0xFF0D, 0x0D), "Escape": (0xFF1B, 0x1B), "Backspace": (0xFF08, 0x08),
        "Tab": (0xFF09, 0x09), "Space": (0x20, 0x20), "Minus": (0x2D, 0xBD),
        "Equal": (0x3D, 0xBB), "BracketLeft": (0x5B, 0xDB), "BracketRight": (0x5D, 0xDD),
        "Backslash": (0x5C, 0xDC), "IntlBackslash": (0x3C, 0xE2), "Semicolon": (0x3B, 0xBA),
        "Quote": (0x27, 0xDE), "Backquote": (0x60, 0xC0), "Comma": (0x2C, 0xBC),
        "Period": (0x2E, 0xBE), "Slash": (0x2F, 0xBF), "CapsLock": (0xFFE5, 0x14),
        "PrintScreen": (0xFF61, 0x12C), "ScrollLock": (0xFF14, 0x91), "Pause": (0xFF13, 0x13),
        "Insert": (0xFF63, 0x12D), "Home": (0xFF50, 0x124), "PageUp": (0xFF55, 0x121),
        "Delete": (0xFFFF, 0x12E), "End": (0xFF57, 0x123), "PageDown": (0xFF56, 0x122),
        "ArrowRight": (0xFF53, 0x127), "ArrowLeft": (0xFF51, 0x125),
        "ArrowDown": (0xFF54, 0x128), "ArrowUp": (0xFF52, 0x126), "NumLock": (0xFF7F, 0x190),
        "NumpadDivide": (0xFFAF, 0x16F), "NumpadMultiply": (0xFFAA, 0x6A),
        "NumpadSubtract": (0xFFAD, 0x6D), "NumpadAdd": (0xFFAB, 0x6B),
        "NumpadEnter": (0xFF8D, 0x10D), "NumpadDecimal": (0xFFAE, 0x6E),
        "ContextMenu": (0xFF67, 0x15D), "ShiftLeft": (0xFFE1, 0xA0), "ShiftRight": (0xFFE2, 0xA1),
        "ControlLeft": (0xFFE3, 0xA2), "ControlRight": (0xFFE4, 0x1A3), "AltLeft": (0xFFE9, 0xA4),
        "AltRight": (0xFE03, 0x1A5),  # AltGr: ISO_Level3_Shift / right Alt
        "MetaLeft": (0xFFEB, 0x15B), "MetaRight": (0xFFEC, 0x15C),
    }
    table.update(named)
    return table


KEY_TABLE = _key_table()
