"""The relay's session rules: who may see, accept, watch, control and end which session.

Pure: no sockets, no clocks, no threads. The server calls one method per event with the
time (UTC epoch seconds) passed in; this module answers by calling the ``Peer`` methods of
the connections involved and writes every transition to the ledger it was given.

A session belongs to the one support person its agent named. Every viewer message is
checked against that owner: anyone else, and anyone naming a session that does not exist,
gets the identical refusal ``no-such-session`` (and the attempt is recorded, kind
"refused").

    waiting --accept--> active --close/end/expiry/loss--> ended
       \\--expired / agent-lost / technician-ended-----------^

- waiting: listed in the owner's queue (the newest ``protocol.MAX_QUEUE_ENTRIES``, and a
  count of the rest); expires after ``wait_timeout`` (reason "expired"). At most
  ``protocol.MAX_WAITING_PER_ADDRESS`` waiting sessions per agent address, and
  ``protocol.MAX_WAITING_PER_SUBNET`` per /24 (IPv4) or /64 (IPv6).
- Refused agent hellos are written to the ledger one by one only up to a budget a minute;
  beyond it they are counted, and one "refused" row says how many (a flood must not fill
  the disk).
- Frames: forwarded only within ``protocol.UpdateWindow`` (the in-flight rule the agent
  keeps) and only inside the announced monitor; a rectangle outside it is a protocol error,
  one beyond the window is dropped and the agent asked for a full image.
- active: one viewer. Frames flow agent -> viewer; input flows viewer -> agent only while
  the viewer holds control. A viewer that goes away releases control and leaves the session
  "detached" (listed again in the owner's queue) for ``grace`` seconds, in which only the
  owner can rejoin by sending ``accept`` again (a viewer with the same login token as the
  attached one replaces that link at once: the tab reconnected before its old link timed
  out); then it ends ("viewer-lost"). An agent whose
  link drops abnormally leaves the session for ``grace`` seconds, in which the agent can
  come back with its single-use resume secret; then it ends ("agent-lost"). Both are billed
  only to the moment the link was lost, not through the grace window. A resume that
  arrives while the old link still looks alive replaces it (the agent noticed the cut
  first). A waiting session whose agent drops ends at once.
- Input rate: a token bucket per viewer (``MAX_INPUT_EVENTS_PER_S`` sustained,
  ``INPUT_BURST`` at once). Input beyond it is dropped (the viewer is told
  ``error{code: "rate-limited"}`` at most once a second); input is never reordered.
  Key and button releases are always forwarded and never charged.
- A viewer connection watches at most one session: binary frames carry no session id.
- Administrator prompt: while the agent says ``desktop{secure: true}`` the viewer is told so
  and input is dropped (the viewer is told ``secure-desktop`` once); a rejoining viewer
  learns it after ``accepted``.
- Hand-off (relay/handoff.py): the agent's elevated copy says hello with a one-time secret
  and takes the live session over: same id, code, clock, viewer and control; the old link
  is closed with ``CLOSE_HANDED_OFF``. A reused or late secret gets ``handoff-failed``.
- decline: the owner turns a waiting session down; it ends by "technician", reason
  "declined", never billed. Any other state gets ``not-waiting``.
- note: the owner's note on a session, live or ended less than ``protocol.NOTE_EDITABLE_S``
  ago (only sessions a support person acted on, accepted or declined, are remembered for
  that: a flood of agents cannot fill it); written to the ledger, answered ``noted``,
  and sent back as ``note`` to a viewer that rejoins the session;
  later ``note-closed``. At most ``NOTES_PER_S`` a second per viewer (the page saves as
  the person types).
- Files (relay.transfers): file messages and chunks of the watched session, either way,
  with the relay's cap checked before any byte; a link that drops cancels its transfers.
- Chat and clipboard (``protocol.Chat``, ``protocol.Clipboard``) pass between the session's
  agent and its watching viewer only, and their text is never stored or logged. Text over
  its cap, or faster than its rate (a token bucket per session and direction), is refused
  to its sender with a notice (``protocol.NOTICE_CODES``) and the link stays up. Clipboard
  text flows only while the viewer holds control and the customer has not paused: from the
  viewer it is input (the same gates and bucket), from the agent it is dropped otherwise.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import protocol
from protocol import (
    Accept,
    Accepted,
    Ack,
    Close,
    Control,
    Cursor,
    Decline,
    End,
    Ended,
    Error,
    Note,
    Noted,
    Ping,
    Pong,
    Queue,
    Refresh,
    Registered,
    ReleaseControl,
    Screens,
    TakeControl,
    Waiting,
)
from relay.handoff import Handoffs
from relay.ledger import billable_seconds
from relay.limits import Budget, subnet
from relay.transfers import DEFAULT_MAX_FILE_MB, Transfers

WAITING, ACTIVE, ENDED = "waiting", "active", "ended"
DEFAULT_WAIT_TIMEOUT_S = 600.0
DEFAULT_GRACE_S = 60.0
MAX_REFUSALS_RECORDED = 100  # per viewer connection: a flood of refusals must not flood the ledger

# Refusals: the code and the sentence come from protocol.WORDING (one table for all sides).
REFUSED = protocol.refusal("no-such-session", "viewer")
TECHNICIAN_UNKNOWN = protocol.refusal("technician-unknown", "agent")
TOO_MANY_WAITING = protocol.refusal("too-many-waiting", "agent")
RESUME_FAILED = protocol.refusal("resume-failed", "agent")
NO_CONTROL = protocol.refusal("no-control", "viewer")
RATE_LIMITED = protocol.refusal("rate-limited", "viewer")
BUSY = protocol.refusal("busy", "viewer")
OPEN_ELSEWHERE = protocol.refusal("open-elsewhere", "viewer")
NOT_WATCHING = protocol.refusal("not-watching", "viewer")
AGENT_RECONNECTING = protocol.refusal("agent-reconnecting", "viewer")
CODE_REQUIRED = protocol.refusal("code-required", "viewer")
WRONG_CODE = protocol.refusal("wrong-code", "viewer")
PAUSED = protocol.refusal("paused", "viewer")
SECURE_DESKTOP = protocol.refusal("secure-desktop", "viewer")
HANDOFF_FAILED = protocol.refusal("handoff-failed", "agent")
NOT_WAITING = protocol.refusal("not-waiting", "viewer")
NOTE_CLOSED = protocol.refusal("note-closed", "viewer")
# A late save of a closed note gets the sentence "note-closed" for this long, not the
# blanket no-such-session.
NOTE_REFUSAL_KEPT_S = 3600.0
NOTES_PER_S, NOTES_BURST = 2.0, 10  # note saves a viewer may make (typing saves every second)


class Peer(Protocol):
    """One connection as the rules see it (the server's writer, or a test's fake)."""

    address: str

    def send(self, message: protocol.Message) -> None:
        """Queue a control message; never dropped."""

    def send_frame(self, data: bytes, monitor: int) -> None:
        """Queue a binary screen update (viewers only); the server may drop it if unread."""

    def send_chunk(self, data: bytes) -> None:
        """Queue a binary file chunk: never dropped, sent after control messages and frames."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection after everything queued before has been sent."""


class Technician(Protocol):
    """What the rules need of an account (relay.accounts.Technician)."""

    id: str
    name: str
    enabled: bool


class Recorder(Protocol):
    """The part of relay.ledger.Ledger the rules write to."""

    def requested(self, session: str, technician: str, machine: str, user: str,
                  address: str, at: float) -> int: ...  # the session's ledger reference
    def accepted(self, session: str, at: float) -> None: ...
    def control(self, session: str, taken: bool, at: float) -> None: ...
    def paused(self, session: str, paused: bool, at: float) -> None: ...
    def ended(self, session: str, by: str, reason: str, at: float) -> None: ...
    def note(self, session: str, text: str, at: float) -> None: ...
    def event(self, session: str | None, kind: str, detail: str, at: float) -> None: ...
    def transfer(self, row: Any) -> None: ...  # relay.transfers.TransferRow


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, float(burst), now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.last)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(eq=False)
class Session:
    id: str
    technician: str
    technician_name: str
    machine: str
    user: str
    address: str
    screens: tuple[protocol.Screen, ...]
    requested_at: float
    resume: str
    agent: Peer | None
    state: str = WAITING
    viewer: Peer | None = None
    control: bool = False
    agent_lost_at: float | None = None
    viewer_lost_at: float | None = None
    accepted_at: float | None = None
    window: protocol.UpdateWindow = field(default_factory=protocol.UpdateWindow)
    refresh_asked: bool = False  # for frames beyond the window, since the last full image
    code: str = ""  # the session code the customer reads out
    ref: int = 0  # the ledger's reference for this session (the customer's receipt)
    paused_at: float | None = None  # the customer paused: no screen and no input since then
    paused_s: float = 0.0  # earlier pauses, not billed
    secure: bool = False  # an administrator prompt is up on the customer's PC: no input
    buckets: dict[str, TokenBucket] = field(default_factory=dict)  # chat/clipboard rates
    note: str = ""  # the support person's note (ticket number, what was done)

    def share_allowed(self, kind: str, rate: float, burst: float, now: float) -> bool:
        """Take one token from this session's ``kind`` bucket (e.g. "chat from agent")."""
        bucket = self.buckets.get(kind)
        if bucket is None:
            bucket = self.buckets[kind] = TokenBucket(rate, burst, now)
        return bucket.take(now)

    def paused_until(self, now: float) -> float:
        """Seconds paused so far, the pause still running included."""
        running = 0.0 if self.paused_at is None else max(0.0, now - self.paused_at)
        return self.paused_s + running

    def accepted_message(self, now: float) -> Accepted:
        billable = 0.0 if self.accepted_at is None else max(
            0.0, now - self.accepted_at - self.paused_until(now))
        return Accepted(self.id, self.technician_name, self.machine, self.user, self.screens,
                        self.code, round(billable, 3), self.paused_at is not None)


@dataclass(eq=False)
class ViewerState:
    technician: str
    bucket: TokenBucket
    session: Session | None = None
    told_no_control: bool = False
    told_paused: bool = False
    told_secure: bool = False
    rate_notice_at: float = 0.0
    refusals_recorded: int = 0
    login: str = ""  # the login token: the same one again is the same browser tab
    notes: TokenBucket | None = None


def _new_secret() -> str:
    """secrets.token_urlsafe(16), never starting with "-": the billing CSV would show such a
    session id with a leading apostrophe (relay.ledger.csv_cell: "-" starts a formula)."""
    while (secret := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return secret


@dataclass
class Pairing:
    """All live sessions and viewers of one relay."""

    ledger: Recorder
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S
    grace: float = DEFAULT_GRACE_S
    new_secret: Callable[[], str] = field(default=_new_secret)
    new_code: Callable[[], str] = field(default=lambda: f"{secrets.randbelow(10**6):06d}")
    require_code: bool = False  # accepting needs the code the customer reads out
    sessions: dict[str, Session] = field(default_factory=dict)
    agents: dict[Peer, Session] = field(default_factory=dict)
    viewers: dict[Peer, ViewerState] = field(default_factory=dict)
    refusals: Budget = field(default_factory=Budget)
    # Ended sessions whose note may still change: id -> (owner, ended at), oldest first.
    noted_until: dict[str, tuple[str, float]] = field(default_factory=dict)
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024  # serve --max-file-mb
    _by_resume: dict[str, Session] = field(default_factory=dict)
    handoffs: Handoffs | None = None  # (made from new_secret in __post_init__)
    files: Transfers = field(init=False)

    def __post_init__(self) -> None:
        self.files = Transfers(self.ledger, self.max_file_bytes)
        if self.handoffs is None:
            self.handoffs = Handoffs(self.new_secret)

    # --- agents ---------------------------------------------------------------------------

    def agent_hello(self, agent: Peer, hello: protocol.AgentHello,
                    technician: Technician | None, now: float) -> bool:
        """Register (or resume) the agent's session; False if refused (the agent is closed)."""
        if hello.resume:
            return self._resume(agent, hello, technician, now)
        if hello.handoff:
            return self._take_over(agent, hello, technician, now)
        if technician is None or not technician.enabled or technician.id != hello.technician:
            self._refuse_agent(agent, TECHNICIAN_UNKNOWN, now,
                               f"agent asked for unknown technician {hello.technician}")
            return False
        network = subnet(agent.address)
        waiting = [s for s in self.sessions.values()
                   if s.state == WAITING and subnet(s.address) == network]
        here = sum(1 for s in waiting if s.address == agent.address)
        if here >= protocol.MAX_WAITING_PER_ADDRESS:
            self._refuse_agent(agent, TOO_MANY_WAITING, now,
                               f"{here} sessions already waiting from {agent.address}")
            return False
        if len(waiting) >= protocol.MAX_WAITING_PER_SUBNET:
            self._refuse_agent(agent, TOO_MANY_WAITING, now,
                               f"{len(waiting)} sessions already waiting from {network}")
            return False
        session_id = self._fresh_secret()
        session = Session(
            session_id, technician.id, technician.name, hello.machine, hello.user,
            agent.address, hello.screens, now, self._fresh_secret(), agent,
        )
        self.sessions[session_id] = session
        self.agents[agent] = session
        self._by_resume[session.resume] = session
        session.code = self._fresh_code(technician.id)
        session.ref = self.ledger.requested(session_id, technician.id, hello.machine,
                                            hello.user, agent.address, now)
        agent.send(Registered(session_id, technician.name,
                              int(min(self.wait_timeout, 86400)), session.resume, session.code))
        self._push_queue(technician.id, now)
        return True

    def _refuse_agent(self, agent: Peer, error: Error, now: float, detail: str) -> None:
        self.record_refusal(f"{detail} (from {agent.address})", now)
        agent.send(error)
        agent.close(protocol.CLOSE_POLICY, error.code)

    def record_refusal(self, detail: str, now: float) -> None:
        """A refused hello, in the ledger while the budget lasts, else only counted."""
        if self.refusals.allow(now):
            self.ledger.event(None, "refused", detail, now)

    def _resume(self, agent: Peer, hello: protocol.AgentHello, technician: Technician | None,
                now: float) -> bool:
        session = self._by_resume.pop(hello.resume, None)
        if (session is not None and session.technician == hello.technician
                and (technician is None or not technician.enabled)):
            # The owner was disabled (or removed) meanwhile: the session may not go on.
            self._end(session, "relay", "technician-disabled", now, at=session.agent_lost_at)
            self._refuse_agent(agent, RESUME_FAILED, now, "agent resume refused: owner disabled")
            return False
        if (session is not None and session.agent is not None and session.state == ACTIVE
                and session.technician == hello.technician and self.grace > 0):
            # The agent saw its link break before the relay did (the relay's keepalive has
            # not timed out yet): the secret proves it is the same agent, so the old link
            # is the stale one.
            self._replace_agent_link(session, now)
        if (session is None or session.agent is not None or session.agent_lost_at is None
                or now - session.agent_lost_at >= self.grace
                or session.technician != hello.technician):
            if session is not None:  # a secret is good for one attempt only
                session.resume = self._fresh_secret()
                self._by_resume[session.resume] = session
            self._refuse_agent(agent, RESUME_FAILED, now, "agent resume refused")
            return False
        session.resume = self._fresh_secret()
        self._by_resume[session.resume] = session
        session.agent, session.agent_lost_at = agent, None
        self.agents[agent] = session
        self.ledger.event(session.id, "agent-resumed", f"from {agent.address}", now)
        agent.send(Registered(session.id, session.technician_name,
                              int(min(self.wait_timeout, 86400)), session.resume, session.code))
        agent.send(session.accepted_message(now))
        session.window.restart_sent()
        if session.screens != hello.screens:
            session.screens = hello.screens
            if session.viewer is not None:
                session.viewer.send(Screens(hello.screens))
        if session.viewer is not None:
            agent.send(Refresh(session.id, 0))
            session.window.restart_sent()
        self._desktop(session, False, now)  # the resumed agent says so again if still up
        return True

    def agent_message(self, agent: Peer, message: protocol.Message, now: float) -> None:
        """A control message from a registered agent; ProtocolError if agents may not send it."""
        session = self.agents.get(agent)
        if session is None:
            return
        if isinstance(message, Close):
            self._end(session, "customer", "customer-closed", now)
        elif isinstance(message, Screens):
            session.screens = message.screens
            session.window.restart_seen()  # the agent starts over with a full image
            if session.state == ACTIVE and session.viewer is not None:
                session.viewer.send(message)
        elif isinstance(message, Cursor):
            if session.state == ACTIVE and session.viewer is not None:
                session.viewer.send(message)
        elif isinstance(message, protocol.Pause):
            self._pause(session, message.paused, now)
        elif isinstance(message, protocol.Desktop):
            self._desktop(session, message.secure, now)
        elif isinstance(message, protocol.Elevation):
            # (not written to the ledger: an agent could send it without end; the takeover
            # itself is recorded, and each one needs a new connection)
            if session.state == ACTIVE and session.viewer is not None:
                session.viewer.send(message)
        elif isinstance(message, protocol.Handoff):
            secret = self.handoffs.issue(session.id, now)
            agent.send(protocol.HandoffSecret(secret, int(self.handoffs.expires_s)))
        elif isinstance(message, protocol.FILE_TYPES):
            if session.state == ACTIVE:
                self.files.message(session, "agent", message, now)
        elif isinstance(message, (protocol.Chat, protocol.Clipboard)):
            self._share_from_agent(agent, session, message, now)
        else:
            raise protocol.RemoteProtocolError(f"an agent may not send {message.TYPE}")

    def _share_from_agent(self, agent: Peer, session: Session,
                          message: protocol.Chat | protocol.Clipboard, now: float) -> None:
        """A chat line or the customer's clipboard: to the watching viewer, or refused."""
        if message.session != session.id:
            raise protocol.RemoteProtocolError(f"{message.TYPE} names another session")
        chat = isinstance(message, protocol.Chat)
        if not chat and not (session.control and session.paused_at is None):
            return  # the agent checks too; a copy racing a release or pause goes nowhere
        refusal = protocol.over_limit(message)
        if refusal:
            agent.send(protocol.refusal(refusal, "agent"))
        elif not session.share_allowed(
                f"{message.TYPE} from agent",
                *((protocol.CHAT_MESSAGES_PER_S, protocol.CHAT_BURST) if chat else
                  (protocol.CLIPBOARD_UPDATES_PER_S, protocol.CLIPBOARD_BURST)), now):
            if chat:  # (the agent polls its clipboard no faster than this rate allows)
                agent.send(protocol.refusal("chat-rate-limited", "agent"))
        elif session.state == ACTIVE and session.viewer is not None:
            session.viewer.send(message)

    def _pause(self, session: Session, paused: bool, now: float) -> None:
        """The customer paused or resumed: no frames and no input while paused, and the
        paused time is not billed. Only an accepted session can pause (before, nothing is
        shown or billed anyway)."""
        if session.state != ACTIVE or paused == (session.paused_at is not None):
            return
        if paused:
            session.paused_at = now
            viewer_state = self.viewers.get(session.viewer) if session.viewer else None
            if viewer_state is not None:
                viewer_state.told_paused = False
        else:
            session.paused_s = session.paused_until(now)
            session.paused_at = None
            session.window.restart_seen()  # the agent starts over with a full image
        self.ledger.paused(session.id, paused, now)
        if session.viewer is not None:
            session.viewer.send(protocol.Pause(paused))

    def _desktop(self, session: Session, secure: bool, now: float) -> None:
        """An administrator prompt opened or closed on the customer's PC. While it is up,
        input is dropped here (the agent refuses it too) and the viewer keeps its last
        image under a notice."""
        if secure == session.secure:
            return
        session.secure = secure  # (not in the ledger: it bills nothing, and an agent could
        # toggle it without end)
        if secure:
            viewer_state = self.viewers.get(session.viewer) if session.viewer else None
            if viewer_state is not None:
                viewer_state.told_secure = False
        if session.state == ACTIVE and session.viewer is not None:
            session.viewer.send(protocol.Desktop(secure))

    def _take_over(self, agent: Peer, hello: protocol.AgentHello,
                   technician: Technician | None, now: float) -> bool:
        """The agent's elevated copy takes the live session over with its one-time secret:
        the same session (id, code, billing clock, viewer, control) on the new link; the old
        link is told to go (CLOSE_HANDED_OFF) only now that the new one holds it."""
        session_id = self.handoffs.take(hello.handoff, now)
        session = self.sessions.get(session_id) if session_id is not None else None
        if (session is None or session.technician != hello.technician or technician is None
                or not technician.enabled):
            self._refuse_agent(agent, HANDOFF_FAILED, now, "agent hand-off refused")
            return False
        old = session.agent
        if old is not None:
            self.agents.pop(old, None)
        session.agent, session.agent_lost_at = agent, None
        self.agents[agent] = session
        self._by_resume.pop(session.resume, None)
        session.resume = self._fresh_secret()
        self._by_resume[session.resume] = session
        self.ledger.event(session.id, "agent-handoff", f"elevated copy from {agent.address}",
                          now)
        agent.send(Registered(session.id, session.technician_name,
                              int(min(self.wait_timeout, 86400)), session.resume, session.code))
        if old is not None:
            old.close(protocol.CLOSE_HANDED_OFF, "handed over to the elevated program")
        if session.state != ACTIVE:
            return True
        if session.screens != hello.screens:
            session.screens = hello.screens
            if session.viewer is not None:
                session.viewer.send(Screens(hello.screens))
        agent.send(session.accepted_message(now))
        session.window.restart_sent()
        if session.control:
            agent.send(Control(session.id, True))
        if session.viewer is not None:
            session.viewer.send(protocol.Elevation("started"))
        self._desktop(session, False, now)  # the new copy says so again if a prompt is up
        return True

    def agent_frame(self, agent: Peer, data: bytes, now: float) -> bool:
        """A binary screen update; forwarded only to the accepted viewer, within the update
        window. True if forwarded; RemoteProtocolError if malformed or outside the screen."""
        _, flags, monitor, _, seq, x, y, width, height, _ = protocol.decode_frame_header(data)
        session = self.agents.get(agent)
        if session is None:
            return False
        if not protocol.frame_fits(session.screens, monitor, x, y, width, height):
            raise protocol.RemoteProtocolError(
                f"frame rectangle {width}x{height}+{x}+{y} is outside monitor {monitor}")
        if session.state != ACTIVE or session.viewer is None or session.paused_at is not None:
            return False  # paused: the customer's screen is not shown, whatever the agent sends
        screen = session.screens[monitor]
        if not session.window.admit(seq, flags, width * height, screen.width * screen.height):
            if not session.refresh_asked:  # one full image heals it: ask once
                session.refresh_asked = True
                agent.send(Refresh(session.id, monitor))
                session.window.restart_sent()
            return False
        if flags & protocol.FLAG_FULL:
            session.refresh_asked = False
        session.viewer.send_frame(data, monitor)
        return True

    def agent_chunk(self, agent: Peer, data: bytes, now: float) -> bool:
        """A binary file chunk from the agent (relay.transfers); True if forwarded."""
        session = self.agents.get(agent)
        if session is None or session.state != ACTIVE:
            return False
        return self.files.chunk(session, "agent", data, now)

    def agent_gone(self, agent: Peer, now: float, *, resumable: bool = False) -> None:
        """The agent's connection closed. ``resumable``: it dropped rather than said goodbye."""
        session = self.agents.pop(agent, None)
        if session is None or session.agent is not agent:
            return
        session.agent = None
        if session.state != ACTIVE or not resumable or self.grace <= 0:
            self._end(session, "relay", "agent-lost", now)
            return
        session.agent_lost_at = now
        self.files.link_lost(session, now)
        self.ledger.event(session.id, "agent-gap", "the customer's link dropped", now)
        self._drop_control(session, now)
        if session.viewer is not None:
            session.viewer.send(AGENT_RECONNECTING)

    def _replace_agent_link(self, session: Session, now: float) -> None:
        old = session.agent
        assert old is not None
        self.agents.pop(old, None)
        session.agent, session.agent_lost_at = None, now
        old.close(protocol.CLOSE_NORMAL, "replaced by a resumed link")
        self.files.link_lost(session, now)
        self.ledger.event(session.id, "agent-gap", "the customer's link was replaced", now)
        self._drop_control(session, now)

    def agent_stalled(self, agent: Peer, now: float) -> None:
        """The agent stopped reading its input: end the session rather than queue input."""
        session = self.agents.get(agent)
        if session is not None:
            self._end(session, "relay", "agent-stalled", now)

    # --- viewers --------------------------------------------------------------------------

    def viewer_joined(self, viewer: Peer, technician: Technician, now: float,
                      login: str = "") -> None:
        """A logged-in viewer (``login``: its login token): remember whose it is and send
        its queue."""
        self.viewers[viewer] = ViewerState(
            technician.id,
            TokenBucket(protocol.MAX_INPUT_EVENTS_PER_S, protocol.INPUT_BURST, now),
            login=login,
        )
        viewer.send(self.queue_for(technician.id, now))

    def viewer_message(self, viewer: Peer, message: protocol.Message, now: float) -> None:
        """A control message from a logged-in viewer; ProtocolError if viewers may not send it."""
        state = self.viewers.get(viewer)
        if state is None:
            return
        if isinstance(message, Ping):
            viewer.send(Pong(message.t))
            return
        if isinstance(message, (*protocol.INPUT_TYPES, protocol.Clipboard)):
            self._input(viewer, state, message, now)
            return
        if isinstance(message, Note):
            self._note(viewer, state, message, now)
            return
        handler = self._SESSION_HANDLERS.get(type(message))
        if handler is None:
            raise protocol.RemoteProtocolError(f"a viewer may not send {message.TYPE}")
        session_id: Any = getattr(message, "session", "")
        session = self._owned(viewer, state, session_id, message.TYPE, now)
        if session is not None:
            handler(self, viewer, state, session, message, now)

    def _owned(self, viewer: Peer, state: ViewerState, session_id: str, what: str,
               now: float) -> Session | None:
        """The session if this viewer's support person owns it; else the one refusal."""
        session = self.sessions.get(session_id)
        if session is not None and session.technician == state.technician:
            return session
        viewer.send(REFUSED)
        if state.refusals_recorded < MAX_REFUSALS_RECORDED:
            state.refusals_recorded += 1
            self.ledger.event(session_id, "refused",
                              f"{state.technician} tried {what} (from {viewer.address})", now)
        return None

    def _accept(self, viewer: Peer, state: ViewerState, session: Session,
                message: Accept, now: float) -> None:
        if session.viewer is viewer:
            viewer.send(session.accepted_message(now))
            return
        if session.viewer is not None:
            old = self.viewers.get(session.viewer)
            if not state.login or old is None or old.login != state.login:
                viewer.send(OPEN_ELSEWHERE)
                return
            # The same tab reconnected (same login) while its old link still looks alive
            # (a silent network change): the old link is the stale one.
            stale = session.viewer
            self.viewer_gone(stale, now)
            stale.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
        if state.session is not None:
            viewer.send(BUSY)
            return
        if session.state == WAITING and self.require_code and message.code != session.code:
            # The code the customer reads out proves the support person picked this caller.
            viewer.send(CODE_REQUIRED if not message.code else WRONG_CODE)
            return
        session.viewer, state.session = viewer, session
        if session.state == WAITING:
            session.state, session.accepted_at = ACTIVE, now
            self.ledger.accepted(session.id, now)
            if session.agent is not None:
                session.agent.send(session.accepted_message(now))
                session.window.restart_sent()
        else:
            session.viewer_lost_at = None
            self.ledger.event(session.id, "viewer-rejoined", f"from {viewer.address}", now)
            if session.agent is not None:
                session.agent.send(Refresh(session.id, 0))
                session.window.restart_sent()
        viewer.send(session.accepted_message(now))
        if session.secure:
            viewer.send(protocol.Desktop(True))
        if session.note:  # a rejoin (a reload, another relay after a fail-over): keep it
            viewer.send(Note(session.id, session.note))
        if session.agent is None:
            viewer.send(AGENT_RECONNECTING)
        self._push_queue(session.technician, now)

    def _control(self, viewer: Peer, state: ViewerState, session: Session,
                 message: TakeControl | ReleaseControl, now: float) -> None:
        if session.viewer is not viewer:
            viewer.send(NOT_WATCHING)
            return
        wanted = isinstance(message, TakeControl)
        if wanted and session.agent is None:
            viewer.send(AGENT_RECONNECTING)
            return
        if wanted == session.control:
            viewer.send(Control(session.id, wanted))
            return
        session.control = wanted
        state.told_no_control = False
        self.ledger.control(session.id, wanted, now)
        viewer.send(Control(session.id, wanted))
        if session.agent is not None:
            session.agent.send(Control(session.id, wanted))

    def _forward(self, viewer: Peer, state: ViewerState, session: Session,
                 message: Ack | Refresh, now: float) -> None:
        if session.viewer is viewer and session.agent is not None:
            session.agent.send(message)
            if isinstance(message, Ack):
                session.window.acked(message.seq)
            else:
                session.window.restart_sent()

    def _elevate(self, viewer: Peer, state: ViewerState, session: Session,
                 message: protocol.Elevate, now: float) -> None:
        """The support person asks the customer to restart as administrator: the agent asks
        the customer, who decides."""
        if session.viewer is not viewer:
            viewer.send(NOT_WATCHING)
        elif session.agent is None:
            viewer.send(AGENT_RECONNECTING)
        else:
            self.ledger.event(session.id, "elevation", "asked by the support person", now)
            session.agent.send(message)
    def _file(self, viewer: Peer, state: ViewerState, session: Session,
              message: protocol.Message, now: float) -> None:
        if session.viewer is not viewer:
            viewer.send(NOT_WATCHING)
        else:
            self.files.message(session, "viewer", message, now)

    def viewer_chunk(self, viewer: Peer, data: bytes, now: float) -> bool:
        """A binary file chunk from a viewer, for the session it watches; True if forwarded."""
        state = self.viewers.get(viewer)
        session = state.session if state is not None else None
        if session is None or session.viewer is not viewer:
            return False
        return self.files.chunk(session, "viewer", data, now)

    def _end_by_viewer(self, viewer: Peer, state: ViewerState, session: Session,
                       message: End, now: float) -> None:
        self._end(session, "technician", "technician-ended", now)

    def _chat_from_viewer(self, viewer: Peer, state: ViewerState, session: Session,
                          message: protocol.Chat, now: float) -> None:
        """A chat line for the customer: only from the watching viewer (paused or not)."""
        if session.viewer is not viewer:
            viewer.send(NOT_WATCHING)
        elif refusal := protocol.over_limit(message):
            viewer.send(protocol.refusal(refusal, "viewer"))
        elif not session.share_allowed("chat from viewer", protocol.CHAT_MESSAGES_PER_S,
                                       protocol.CHAT_BURST, now):
            viewer.send(protocol.refusal("chat-rate-limited", "viewer"))
        elif session.agent is None:
            viewer.send(AGENT_RECONNECTING)
        else:
            session.agent.send(message)
    def _decline(self, viewer: Peer, state: ViewerState, session: Session,
                 message: Decline, now: float) -> None:
        if session.state != WAITING:
            viewer.send(NOT_WAITING)
            return
        self._end(session, "technician", "declined", now)

    _SESSION_HANDLERS: ClassVar[dict[type, Callable]] = {
        Accept: _accept, TakeControl: _control, ReleaseControl: _control,
        Ack: _forward, Refresh: _forward, End: _end_by_viewer, Decline: _decline,
        protocol.Elevate: _elevate,
        **dict.fromkeys(protocol.FILE_TYPES, _file),
        protocol.Chat: _chat_from_viewer,
    }

    def _note(self, viewer: Peer, state: ViewerState, message: Note, now: float) -> None:
        """A live session's note goes through ``_owned`` (strangers get the one refusal); an
        ended one's is checked against the record kept for ``NOTE_EDITABLE_S``."""
        if state.notes is None:
            state.notes = TokenBucket(NOTES_PER_S, NOTES_BURST, now)
        if not state.notes.take(now):
            viewer.send(RATE_LIMITED)
            return
        ended = self.noted_until.get(message.session)
        if message.session not in self.sessions and ended is not None \
                and ended[0] == state.technician:
            if now - ended[1] > protocol.NOTE_EDITABLE_S:
                viewer.send(NOTE_CLOSED)
                return
        else:
            session = self._owned(viewer, state, message.session, message.TYPE, now)
            if session is None:
                return
            session.note = message.text
        self.ledger.note(message.session, message.text, now)
        viewer.send(Noted(message.session))

    def _input(self, viewer: Peer, state: ViewerState, message: protocol.Message,
               now: float) -> None:
        # A release is never dropped (it could leave a key held on the customer's PC) and
        # never charged: there cannot be more releases than the presses charged before.
        release = isinstance(message, (protocol.Key, protocol.Button)) and not message.down
        if not release and not state.bucket.take(now):
            if now >= state.rate_notice_at:
                state.rate_notice_at = now + 1.0
                viewer.send(RATE_LIMITED)
            return
        session_id: Any = getattr(message, "session", "")
        session = self._owned(viewer, state, session_id, message.TYPE, now)
        if session is None:
            return
        if refusal := protocol.over_limit(message):
            viewer.send(protocol.refusal(refusal, "viewer"))
        elif session.paused_at is not None and session.viewer is viewer:
            if not state.told_paused:  # the agent drops it too; say so once per pause
                state.told_paused = True
                viewer.send(PAUSED)
        elif session.secure and session.viewer is viewer:
            if not state.told_secure:  # the agent refuses it too; say so once per prompt
                state.told_secure = True
                viewer.send(SECURE_DESKTOP)
        elif (session.state == ACTIVE and session.viewer is viewer and session.control
                and session.agent is not None):
            session.agent.send(message)
        elif not state.told_no_control:
            state.told_no_control = True
            viewer.send(NO_CONTROL)

    def viewer_gone(self, viewer: Peer, now: float) -> None:
        """The viewer's connection closed (tab closed, logged out, login revoked...)."""
        state = self.viewers.pop(viewer, None)
        if state is None or state.session is None:
            return
        session, state.session = state.session, None
        if session.viewer is not viewer:
            return
        session.viewer, session.viewer_lost_at = None, now
        self._drop_control(session, now)
        self.files.link_lost(session, now)
        if self.grace <= 0:
            self._end(session, "relay", "viewer-lost", now)
            return
        self.ledger.event(session.id, "viewer-detached", "the support person's viewer left", now)
        self._push_queue(session.technician, now)

    def viewer_caught_up(self, viewer: Peer, monitor: int, now: float) -> None:
        """The server dropped unsent frames for this slow viewer and it has drained since:
        ask the agent for a full image so the picture heals."""
        state = self.viewers.get(viewer)
        session = state.session if state is not None else None
        if session is not None and session.viewer is viewer and session.agent is not None:
            session.agent.send(Refresh(session.id, monitor))
            session.window.restart_sent()

    def queue_for(self, technician: str, now: float) -> Queue:
        """Oldest first, but only the newest entries: the real caller has just connected,
        while a flood of fake ones came before. Detached sessions (their own, to rejoin)
        are always listed."""
        mine = [s for s in self.sessions.values() if s.technician == technician
                and (s.state == WAITING or (s.state == ACTIVE and s.viewer is None))]
        detached = [s for s in mine if s.state == ACTIVE]
        waiting = sorted((s for s in mine if s.state == WAITING), key=lambda s: s.requested_at)
        room = max(0, protocol.MAX_QUEUE_ENTRIES - len(detached))
        shown = detached[: protocol.MAX_QUEUE_ENTRIES] + (waiting[-room:] if room else [])
        shown.sort(key=lambda s: s.requested_at)
        return Queue(tuple(
            Waiting(s.id, s.machine, s.user, round(max(0.0, now - s.requested_at), 1), s.code,
                    "waiting" if s.state == WAITING else "detached")
            for s in shown
        ), more=len(mine) - len(shown))

    # --- time and the end -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Expire what waited too long, sum up refusals; call about once a second."""
        self.handoffs.expire(now)
        while self.noted_until:  # oldest first: stop at the first still open
            session_id, (_, ended_at) = next(iter(self.noted_until.items()))
            if now - ended_at <= protocol.NOTE_EDITABLE_S + NOTE_REFUSAL_KEPT_S:
                break
            del self.noted_until[session_id]
        left_out = self.refusals.summary(now)
        if left_out:
            self.ledger.event(None, "refused", f"{left_out} more refused hellos in the last "
                              f"{self.refusals.window_s:g} s (not recorded one by one)", now)
        for session in list(self.sessions.values()):
            if session.state == WAITING and now - session.requested_at >= self.wait_timeout:
                self._end(session, "relay", "expired", now)
            elif session.agent_lost_at is not None and now - session.agent_lost_at >= self.grace:
                self._end(session, "relay", "agent-lost", now, at=session.agent_lost_at)
            elif (session.viewer_lost_at is not None and session.viewer is None
                  and now - session.viewer_lost_at >= self.grace):
                self._end(session, "relay", "viewer-lost", now, at=session.viewer_lost_at)

    def shutdown(self, now: float) -> None:
        """The relay is stopping: end every live session and tell both sides."""
        for session in list(self.sessions.values()):
            self._end(session, "relay", "relay-shutdown", now)

    def _drop_control(self, session: Session, now: float) -> None:
        if not session.control:
            return
        session.control = False
        self.ledger.control(session.id, False, now)
        for peer in (session.viewer, session.agent):
            if peer is not None:
                peer.send(Control(session.id, False))

    def _end(self, session: Session, by: str, reason: str, now: float,
             at: float | None = None) -> None:
        """End the session now; the ledger records it as ended ``at`` (default now): a
        session nobody came back to is billed only to the moment its link was lost."""
        if session.state == ENDED:
            return
        listed = session.state == WAITING or session.viewer is None
        self.files.link_lost(session, now)  # (its peers hear `ended`, which says it all)
        session.state = ENDED
        session.control = False
        end_at = now if at is None else at
        self.ledger.ended(session.id, by, reason, end_at)
        billable = billable_seconds(session.accepted_at, end_at, session.paused_until(end_at))
        ended = Ended(session.id, by, reason, session.ref, billable)
        if session.viewer is not None:
            session.viewer.send(ended)
            state = self.viewers.get(session.viewer)
            if state is not None and state.session is session:
                state.session = None
        if session.agent is not None:
            session.agent.send(ended)
            session.agent.close(protocol.CLOSE_NORMAL, "session ended")
            self.agents.pop(session.agent, None)
        session.viewer = session.agent = None
        self.sessions.pop(session.id, None)
        self._by_resume.pop(session.resume, None)
        self.handoffs.forget(session.id)
        if session.accepted_at is not None or reason == "declined":
            # A support person acted on it: its note may still be written for a while.
            self.noted_until[session.id] = (session.technician, now)
        if listed:
            self._push_queue(session.technician, now)

    def _push_queue(self, technician: str, now: float) -> None:
        queue = None
        for viewer, state in self.viewers.items():
            if state.technician == technician:
                queue = queue or self.queue_for(technician, now)
                viewer.send(queue)

    def _fresh_code(self, technician: str) -> str:
        """A session code no other live session of this support person has, so the code
        the customer reads out names one caller."""
        taken = {s.code for s in self.sessions.values() if s.technician == technician}
        while True:
            code = self.new_code()
            if code not in taken:
                return code

    def _fresh_secret(self) -> str:
        while True:
            secret = self.new_secret()
            if secret not in self.sessions and secret not in self._by_resume:
                return secret

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (for tests)."""
        for session in self.sessions.values():
            assert session.state in (WAITING, ACTIVE), session
            if session.control:
                assert session.state == ACTIVE and session.viewer is not None
                assert session.agent is not None
            if session.state == WAITING:
                assert session.viewer is None and session.agent is not None
            if session.viewer is not None:
                state = self.viewers[session.viewer]
                assert state.session is session
                assert state.technician == session.technician
            if session.agent is not None:
                assert self.agents[session.agent] is session
            else:
                assert session.agent_lost_at is not None
            assert session.viewer is not None or session.state == WAITING \
                or session.viewer_lost_at is not None
            assert self._by_resume[session.resume] is session
        for agent, session in self.agents.items():
            assert self.sessions.get(session.id) is session and session.agent is agent
        for viewer, state in self.viewers.items():
            if state.session is not None:
                assert state.session.viewer is viewer
        assert len(self._by_resume) == len(self.sessions)
        for session_id, transfers in self.files.live.items():  # none outlives its session
            session = self.sessions[session_id]
            assert transfers and session.state == ACTIVE
