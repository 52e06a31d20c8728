"""The wire format shared by the agent, the relay and (mirrored in viewer/protocol.js) the viewer.

Standard library only, no I/O: bytes and text in, message objects out, and back.
``decode_control``, ``decode_frame`` and ``check_hello`` raise only ``RemoteProtocolError``
on bad input (the peer's fault); building a message object with bad values in our own code
raises ``LocalProtocolError`` (ours). Both are ``ProtocolError``.

Every connection opens with a ``hello`` naming its role and ``PROTOCOL_VERSION``. Control
messages are JSON text frames with a ``type`` key; screen updates are binary frames
(``FRAME_HEADER`` + JPEG or PNG bytes). Unknown fields, unknown types, wrong types and values
out of range are all errors: the peer is closed with code 1008 and the error's text.

Who sends what (A = agent, R = relay, V = viewer; "A -> R -> V" means the relay validates the
message and forwards it unchanged):

    message          direction        fields
    ---------------  ---------------  --------------------------------------------------------
    hello            A -> R           role="agent", version, technician, machine, user,
                                      screens, resume ("" or the secret from `registered`),
                                      handoff ("" or the secret from `handoff_secret`)
    hello            V -> R           role="viewer", version, and user+password or token
    registered       R -> A           session, technician_name, expires_s, resume, code
                                      (code: the 6-digit session code the customer reads out)
    welcome          R -> V           technician, name, token
    queue            R -> V           sessions: [{session, machine, user, waited_s, code, state}],
                                      more (waiting but not listed: the oldest ones)
    accept           V -> R           session, code ("" or the code the customer read out)
    accepted         R -> A, R -> V   session, technician_name, machine, user, screens, code,
                                      elapsed_s (billable seconds so far; 0 when fresh), paused
    take_control     V -> R           session
    release_control  V -> R           session
    control          R -> A, R -> V   session, granted
    pointer_move     V -> R -> A      session, monitor, x, y
    button           V -> R -> A      session, monitor, x, y, button, down
    wheel            V -> R -> A      session, monitor, x, y, dx, dy
    key              V -> R -> A      session, code, key, down
    text             V -> R -> A      session, text
    refresh          V -> R -> A      session, monitor  (full image of that monitor; 0 = all)
    ack              V -> R -> A      session, seq      (update `seq` has been drawn)
    cursor           A -> R -> V      monitor, x, y     (the customer's pointer)
    screens          A -> R -> V      screens           (the monitor layout changed)
    pause            A -> R -> V      paused            (the customer paused or resumed)
    desktop          A -> R -> V      secure            (a Windows administrator prompt is
                                                         up: no picture, no input until false)
    elevate          V -> R -> A      session           (ask the customer to restart the
                                                         program as administrator)
    elevation        A -> R -> V      state             (asked, declined, started, failed)
    handoff          A -> R           (nothing)         (ask for a one-time hand-off secret)
    handoff_secret   R -> A           secret, expires_s (for the elevated copy's hello)
    hello            A -> R           ... handoff=secret: the elevated copy takes over the live
                                      session (same id, code, clock, viewer, control); the old
                                      link is closed with CLOSE_HANDED_OFF
    close            A -> R           reason            (the customer chose Close)
    end              V -> R           session, reason   (the support person ended it)
    decline          V -> R           session           (turn a waiting customer down)
    note             V -> R, R -> V   session, text     (the session's note; replaces it;
                                      the relay sends it to a viewer that rejoins)
    noted            R -> V           session           (the note is saved)
    ended            R -> A, R -> V   session, by, reason, ref (ledger reference), billable_s
    ping / pong      V -> R -> V      t                 (round-trip time; echoed unchanged)
    chat             V -> R -> A      session, text     (a chat line; also A -> R -> V)
    clipboard        V -> R -> A      session, text     (set the customer's clipboard: a paste;
                                                        also A -> R -> V: theirs changed)
    logout           V -> R           (nothing)
    error            R -> A, R -> V   code, message     (a refusal; the relay may then close)
    <binary>         A -> R -> V      FRAME_HEADER + image: one rectangle of update `seq`;
                                      the image is the rectangle's size, or half of it
                                      (image_scale): the viewer scales it up to fill it
    file_offer       S -> R -> D      session, transfer, name, size, sha256  (before any byte;
                                      the relay refuses a file over its cap with file_cancel)
    file_answer      D -> R -> S      session, transfer, accept  (the receiver's yes or no)
    file_ack         D -> R -> S      session, transfer, received  (bytes received so far)
    file_cancel      S, D or R        session, transfer, reason  (one of FILE_CANCEL_REASONS)
    file_done        D -> R -> S      session, transfer, saved_as  (every byte, SHA-256 checked)
    <binary>         S -> R -> D      FILE_CHUNK_HEADER + file bytes at `offset`
                     (S = the sender of a file, D = its receiver: the viewer or the agent)

File chunks are binary messages whose first byte is FILE_CHUNK, never a frame kind. A sender
keeps at most FILE_WINDOW_BYTES sent beyond what the receiver acknowledged (``FileWindow``),
and the relay forwards chunks only after text and screen updates, so files never delay the
screen or input.

`chat` and `clipboard` text over MAX_CHAT_CHARS / MAX_CLIPBOARD_CHARS, or faster than their
rates, is not a protocol error: the relay refuses that one message with an `error` whose code
is in NOTICE_CODES and keeps the link (``over_limit`` is the one size rule). The relay never
stores or logs their text. `clipboard` flows only while the support person holds control and
the customer has not paused.

Every `error` code and `ended` reason has one plain sentence for the customer and one for
the support person in ``WORDING``; ``refusal(code, to)`` builds the `error`. Close codes are
the ``CLOSE_*`` constants, and ``can_resume`` is the one rule for which link losses a session
survives.

Screens follow mss: ``screens[0]`` is the bounding box of all monitors, ``screens[1:]`` the
monitors. Coordinates in frames and input are relative to the top-left of the chosen monitor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

_T = TypeVar("_T")

# 2: session codes, pause, the receipt in `ended`;
# 3: chat, clipboard, files, decline, notes, the elevated hand-off
PROTOCOL_VERSION = 3

# Limits, shared by both ends. websockets' max_size is MAX_MESSAGE_BYTES on every endpoint.
MAX_CONTROL_BYTES = 64 * 1024  # one JSON text message
MAX_HELLO_BYTES = 8 * 1024  # the first message of a connection (the largest hello is ~3 KB)
MAX_FRAME_BYTES = 8 * 1024 * 1024  # one binary update rectangle, header included
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES
# Updates the agent may have unacknowledged (the relay enforces it; the viewer decodes at most
# this many images at once). The agent keeps one of them for input's echo: bulk updates
# (video, scrolling) use the others, and within them it paces by bytes and time
# (agent_session.FlowControl). Rectangles of two updates may interleave on the wire (an echo
# passes the rest of a video frame) only where they do not overlap.
MAX_UPDATES_IN_FLIGHT = 4
MAX_INPUT_EVENTS_PER_S = 250  # sustained rate of input messages from one viewer
INPUT_BURST = 120  # events allowed at once above that rate (a pasted burst of keys)
MAX_WAITING_PER_ADDRESS = 3  # sessions one IP address may have waiting at once
# ... and one network (/24 for IPv4, /64 for IPv6): an office or a carrier NAT puts many
# real customers behind one address or prefix, while one attacker may own a whole IPv6 /64.
MAX_WAITING_PER_SUBNET = 30
MAX_NAME_CHARS = 64  # machine and user names
MAX_TEXT_CHARS = 2000  # one `text` message
MAX_SCREENS = 17  # the bounding box plus 16 monitors
MAX_SCREEN_EDGE = 32767
MAX_QUEUE_ENTRIES = 200
HANDOFF_EXPIRES_S = 60  # a hand-off secret is good once, for this long (the UAC prompt waits
# for the customer's click, and the elevated copy then starts: a minute covers both)
MAX_NOTE_CHARS = 2000  # one session note: a ticket number and a few lines of what was done
# A note stays editable this long after its session ended: time to finish typing after the
# call, short enough that a billed record does not change later without anyone noticing.
NOTE_EDITABLE_S = 600
# File transfer (the relay's own cap, `serve --max-file-mb`, is usually lower than the field limit)
MAX_FILE_NAME_CHARS = 255  # as offered; the receiver cleans and shortens it
MAX_FILE_SIZE_BYTES = 2**40  # what a size field may say
FILE_CHUNK_BYTES = 32 * 1024  # at most this many file bytes in one chunk
FILE_WINDOW_BYTES = 256 * 1024  # sent but not yet acknowledged, per transfer
FILE_ACK_BYTES = 64 * 1024  # the receiver acknowledges at least this often (and at the end)
MAX_TRANSFERS_PER_SESSION = 4  # transfers under way at once, both directions
FILE_CANCEL_REASONS = ("file-cancelled", "file-declined", "file-too-big", "file-corrupt",
                       "file-failed", "file-lost", "file-busy")
MAX_CHAT_CHARS = 1000  # one chat line: a few sentences, not a document
MAX_CLIPBOARD_CHARS = 10000  # clipboard text; even 4 UTF-8 bytes a character fits one message
CHAT_MESSAGES_PER_S = 1  # sustained chat lines a second from one side of a session ...
CHAT_BURST = 5  # ... with this many at once (a few quick lines)
CLIPBOARD_UPDATES_PER_S = 2  # sustained clipboard messages a second from one side ...
CLIPBOARD_BURST = 4  # ... with this many at once

ROLES = ("agent", "viewer")
BUTTONS = ("left", "middle", "right")
ENDED_BY = ("customer", "technician", "relay")
WAITING_STATES = ("waiting", "detached")
ELEVATION_STATES = ("asked", "declined", "started", "failed")

_TECHNICIAN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_KEY_CODE = re.compile(r"[A-Za-z0-9]{1,32}")
_SESSION_CODE = re.compile(r"[0-9]{6}")


class ProtocolError(Exception):
    """Something this protocol does not allow; the text says what. Catch the subclass that
    says whose fault it was: only a ``RemoteProtocolError`` closes the link with
    ``CLOSE_POLICY`` and blames the peer."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something this protocol does not allow (everything the decoders and
    ``check_hello`` raise)."""


class LocalProtocolError(ProtocolError):
    """Our own code built a message this protocol does not allow: a bug on this side, never
    the peer's (constructing a message or frame with bad values raises this)."""


# --- field validation -------------------------------------------------------------------


def _fail(message: str) -> None:
    raise LocalProtocolError(message)


def _from_peer(decode: Callable[..., _T]) -> Callable[..., _T]:
    """``decode`` reads what a peer sent: any value it refuses is the peer's error."""

    @functools.wraps(decode)
    def checked(*args: Any) -> _T:
        try:
            return decode(*args)
        except LocalProtocolError as error:
            raise RemoteProtocolError(str(error)) from None

    return checked


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int:
        _fail(f"{name} must be an integer")
    if not low <= value <= high:
        _fail(f"{name} must be between {low} and {high}")


def _check_str(name: str, value: Any, max_chars: int, *, printable: bool = True) -> None:
    if type(value) is not str:
        _fail(f"{name} must be a string")
    if len(value) > max_chars:
        _fail(f"{name} is longer than {max_chars} characters")
    if printable and not value.isprintable():
        _fail(f"{name} contains control characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape cannot be sent on
            _fail(f"{name} is not valid Unicode")


def _check_seconds(name: str, value: Any) -> None:
    if type(value) not in (int, float) or not 0 <= value < 1e9:
        _fail(f"{name} must be a number of seconds")


# The control characters (below space, and DEL) that each kind of free text may hold; any
# other one is refused. Typed text has let DEL through since the first wire format; chat and
# clipboard text keep \r, so a Windows line break survives the trip.
_TYPED_CONTROLS = "\t\n\x7f"
_NOTE_CONTROLS = "\t\n"
_SHARED_CONTROLS = "\t\n\r"


def _check_controls(subject: str, value: str, allowed: str) -> None:
    """Refuse a control character of ``value`` that is not in ``allowed``; the sentence
    names ``subject`` and says "line breaks" where a carriage return is allowed, else
    "newlines"."""
    if any((c < " " or c == "\x7f") and c not in allowed for c in value):
        breaks = "line breaks" if "\r" in allowed else "newlines"
        _fail(f"{subject} may contain only printable characters, {breaks} and tabs")


def _check_bool(name: str, value: Any) -> None:
    if type(value) is not bool:
        _fail(f"{name} must be true or false")


def _check_session(value: Any) -> None:
    if type(value) is not str or not _TOKEN.fullmatch(value):
        _fail("session must be a session id")


def _check_code(name: str, value: Any) -> None:
    if type(value) is not str or not _SESSION_CODE.fullmatch(value):
        _fail(f"{name} must be 6 digits")


def check_technician_id(value: Any) -> None:
    """Support person ids: lower-case letters, digits, '.', '_', '-'; 1 to 32 characters."""
    if type(value) is not str or not _TECHNICIAN_ID.fullmatch(value):
        _fail("technician must be 1-32 characters of a-z, 0-9, '.', '_' or '-'")


@dataclass(frozen=True)
class Screen:
    """One rectangle of the customer's desktop, in pixels (mss's monitor dictionary)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        _check_int("screen x", self.x, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE)
        _check_int("screen y", self.y, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE)
        _check_int("screen width", self.width, 1, MAX_SCREEN_EDGE)
        _check_int("screen height", self.height, 1, MAX_SCREEN_EDGE)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> Screen:
        if type(value) is not dict or set(value) != {"x", "y", "width", "height"}:
            _fail("a screen must be an object with x, y, width and height")
        return cls(**value)


def _check_screens(screens: Any) -> None:
    if type(screens) is not tuple or not all(isinstance(s, Screen) for s in screens):
        _fail("screens must be a list of screens")
    if not 2 <= len(screens) <= MAX_SCREENS:
        _fail(f"screens must list the whole desktop and 1 to {MAX_SCREENS - 1} monitors")


def _check_monitor(monitor: Any) -> None:
    _check_int("monitor", monitor, 0, MAX_SCREENS - 1)


def _check_point(x: Any, y: Any) -> None:
    _check_int("x", x, 0, MAX_SCREEN_EDGE)
    _check_int("y", y, 0, MAX_SCREEN_EDGE)


# --- control messages -------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A control message. Subclasses name their wire ``type`` and validate on construction."""

    TYPE: ClassVar[str] = ""

    def check(self) -> None:
        """Raise ProtocolError when a field is out of range (overridden per message)."""

    def __post_init__(self) -> None:
        self.check()

    def to_json(self) -> dict[str, Any]:
        fields = {"type": self.TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "screens":
                value = [s.to_json() for s in value]
            elif field.name == "sessions":
                value = [e.to_json() for e in value]
            fields[field.name] = value
        return fields


@dataclass(frozen=True)
class AgentHello(Message):
    TYPE = "hello"
    role: str
    version: int
    technician: str
    machine: str
    user: str
    screens: tuple[Screen, ...]
    resume: str = ""
    handoff: str = ""  # the elevated copy's one-time secret: take over the live session

    def check(self) -> None:
        if self.role != "agent":
            _fail("role must be agent")
        _check_int("version", self.version, 0, 2**31)
        check_technician_id(self.technician)
        _check_str("machine", self.machine, MAX_NAME_CHARS)
        _check_str("user", self.user, MAX_NAME_CHARS)
        _check_screens(self.screens)
        if self.resume != "":  # null, 0, [] and {} are not "no resume"
            _check_session(self.resume)
        if self.handoff != "":
            _check_session(self.handoff)
            if self.resume != "":
                _fail("a hello may resume or take over, not both")


@dataclass(frozen=True)
class ViewerHello(Message):
    TYPE = "hello"
    role: str
    version: int
    user: str = ""
    password: str = ""
    token: str = ""

    def check(self) -> None:
        if self.role != "viewer":
            _fail("role must be viewer")
        _check_int("version", self.version, 0, 2**31)
        _check_str("user", self.user, MAX_NAME_CHARS)
        _check_str("password", self.password, 1024, printable=False)
        _check_str("token", self.token, 128)
        if not self.token and not (self.user and self.password):
            _fail("a viewer hello needs user and password, or a token")


@dataclass(frozen=True)
class Registered(Message):
    TYPE = "registered"
    session: str
    technician_name: str
    expires_s: int
    resume: str
    code: str  # the session code the customer reads to the support person (6 digits)

    def check(self) -> None:
        _check_session(self.session)
        _check_str("technician_name", self.technician_name, MAX_NAME_CHARS)
        _check_int("expires_s", self.expires_s, 0, 86400)
        _check_session(self.resume)
        _check_code("code", self.code)


@dataclass(frozen=True)
class Welcome(Message):
    TYPE = "welcome"
    technician: str
    name: str
    token: str

    def check(self) -> None:
        check_technician_id(self.technician)
        _check_str("name", self.name, MAX_NAME_CHARS)
        _check_session(self.token)


@dataclass(frozen=True)
class Waiting:
    """One entry of a support person's queue.

    state is "waiting" (not yet accepted) or "detached" (accepted by this support person, whose
    viewer has gone: `accept` again rejoins it within the grace window).
    """

    session: str
    machine: str
    user: str
    waited_s: float
    code: str
    state: str = "waiting"

    def __post_init__(self) -> None:
        _check_session(self.session)
        _check_code("code", self.code)
        _check_str("machine", self.machine, MAX_NAME_CHARS)
        _check_str("user", self.user, MAX_NAME_CHARS)
        if type(self.waited_s) not in (int, float) or not 0 <= self.waited_s < 1e9:
            _fail("waited_s must be a number of seconds")
        if self.state not in WAITING_STATES:
            _fail(f"state must be one of {', '.join(WAITING_STATES)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> Waiting:
        if type(value) is not dict or set(value) != _WAITING_FIELDS:
            _fail("a queue entry must have session, machine, user, waited_s, code and state")
        return cls(**value)


_WAITING_FIELDS = {"session", "machine", "user", "waited_s", "code", "state"}


@dataclass(frozen=True)
class Queue(Message):
    """A support person's queue: the newest MAX_QUEUE_ENTRIES sessions, and how many more
    wait (a flood of fake customers must not hide the real one, who is the newest)."""

    TYPE = "queue"
    sessions: tuple[Waiting, ...]
    more: int = 0

    def check(self) -> None:
        entries = self.sessions
        if type(entries) is not tuple or not all(isinstance(e, Waiting) for e in entries):
            _fail("sessions must be a list of queue entries")
        if len(self.sessions) > MAX_QUEUE_ENTRIES:
            _fail("too many queue entries")
        _check_int("more", self.more, 0, 2**31)


@dataclass(frozen=True)
class _SessionMessage(Message):
    session: str

    def check(self) -> None:
        _check_session(self.session)


@dataclass(frozen=True)
class Accept(Message):
    """Accept a waiting session, or rejoin a detached one. ``code`` is the session code the
    customer read out; a relay run with --require-code refuses an accept without it."""

    TYPE = "accept"
    session: str
    code: str = ""

    def check(self) -> None:
        _check_session(self.session)
        if self.code != "":
            _check_code("code", self.code)


@dataclass(frozen=True)
class TakeControl(_SessionMessage):
    TYPE = "take_control"


@dataclass(frozen=True)
class ReleaseControl(_SessionMessage):
    TYPE = "release_control"


@dataclass(frozen=True)
class Accepted(Message):
    TYPE = "accepted"
    session: str
    technician_name: str
    machine: str
    user: str
    screens: tuple[Screen, ...]
    code: str
    elapsed_s: float = 0.0  # billable seconds so far: since first accepted, less paused time
    paused: bool = False  # the customer has paused the session (a rejoin learns it here)

    def check(self) -> None:
        _check_session(self.session)
        _check_str("technician_name", self.technician_name, MAX_NAME_CHARS)
        _check_str("machine", self.machine, MAX_NAME_CHARS)
        _check_str("user", self.user, MAX_NAME_CHARS)
        _check_screens(self.screens)
        _check_code("code", self.code)
        _check_seconds("elapsed_s", self.elapsed_s)
        _check_bool("paused", self.paused)


@dataclass(frozen=True)
class Control(Message):
    TYPE = "control"
    session: str
    granted: bool

    def check(self) -> None:
        _check_session(self.session)
        _check_bool("granted", self.granted)


@dataclass(frozen=True)
class PointerMove(Message):
    TYPE = "pointer_move"
    session: str
    monitor: int
    x: int
    y: int

    def check(self) -> None:
        _check_session(self.session)
        _check_monitor(self.monitor)
        _check_point(self.x, self.y)


@dataclass(frozen=True)
class Button(Message):
    TYPE = "button"
    session: str
    monitor: int
    x: int
    y: int
    button: str
    down: bool

    def check(self) -> None:
        _check_session(self.session)
        _check_monitor(self.monitor)
        _check_point(self.x, self.y)
        if self.button not in BUTTONS:
            _fail(f"button must be one of {', '.join(BUTTONS)}")
        _check_bool("down", self.down)


@dataclass(frozen=True)
class Wheel(Message):
    TYPE = "wheel"
    session: str
    monitor: int
    x: int
    y: int
    dx: int
    dy: int

    def check(self) -> None:
        _check_session(self.session)
        _check_monitor(self.monitor)
        _check_point(self.x, self.y)
        _check_int("dx", self.dx, -100, 100)
        _check_int("dy", self.dy, -100, 100)


@dataclass(frozen=True)
class Key(Message):
    """A physical key (KeyboardEvent.code) and the character it produced (KeyboardEvent.key)."""

    TYPE = "key"
    session: str
    code: str
    key: str
    down: bool

    def check(self) -> None:
        _check_session(self.session)
        if type(self.code) is not str or not _KEY_CODE.fullmatch(self.code):
            _fail("code must be a KeyboardEvent.code such as KeyA or Enter")
        _check_str("key", self.key, 32, printable=False)
        _check_bool("down", self.down)


@dataclass(frozen=True)
class Text(Message):
    TYPE = "text"
    session: str
    text: str

    def check(self) -> None:
        _check_session(self.session)
        _check_str("text", self.text, MAX_TEXT_CHARS, printable=False)
        _check_controls("text", self.text, _TYPED_CONTROLS)


@dataclass(frozen=True)
class Refresh(Message):
    TYPE = "refresh"
    session: str
    monitor: int

    def check(self) -> None:
        _check_session(self.session)
        _check_monitor(self.monitor)


@dataclass(frozen=True)
class Ack(Message):
    TYPE = "ack"
    session: str
    seq: int

    def check(self) -> None:
        _check_session(self.session)
        _check_int("seq", self.seq, 0, 2**32 - 1)


@dataclass(frozen=True)
class Cursor(Message):
    TYPE = "cursor"
    monitor: int
    x: int
    y: int

    def check(self) -> None:
        _check_monitor(self.monitor)
        _check_int("x", self.x, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE)
        _check_int("y", self.y, -MAX_SCREEN_EDGE, MAX_SCREEN_EDGE)


@dataclass(frozen=True)
class Screens(Message):
    TYPE = "screens"
    screens: tuple[Screen, ...]

    def check(self) -> None:
        _check_screens(self.screens)


@dataclass(frozen=True)
class Pause(Message):
    """The customer paused (or resumed) the session: no screen and no input until resumed,
    and the paused time is not billed."""

    TYPE = "pause"
    paused: bool

    def check(self) -> None:
        _check_bool("paused", self.paused)


@dataclass(frozen=True)
class Desktop(Message):
    """The customer's input desktop: ``secure`` while a Windows administrator prompt (the
    secure desktop) is up. No program of the user's can see or click it, so the viewer keeps
    the last image under a notice and no input is sent, forwarded or injected until false."""

    TYPE = "desktop"
    secure: bool

    def check(self) -> None:
        _check_bool("secure", self.secure)


@dataclass(frozen=True)
class Elevate(_SessionMessage):
    """The support person asks the customer to restart the program as administrator (the
    customer decides; Windows asks them once more)."""

    TYPE = "elevate"


@dataclass(frozen=True)
class Elevation(Message):
    """What became of a restart as administrator: "asked" (the customer is being asked),
    "declined" (they said No: the session goes on as it was), "started" (the elevated copy
    is taking over), "failed" (it could not start or take over; the session goes on)."""

    TYPE = "elevation"
    state: str

    def check(self) -> None:
        if self.state not in ELEVATION_STATES:
            _fail(f"state must be one of {', '.join(ELEVATION_STATES)}")


@dataclass(frozen=True)
class Handoff(Message):
    """The agent asks for a one-time secret for its elevated copy."""

    TYPE = "handoff"


@dataclass(frozen=True)
class HandoffSecret(Message):
    """The one-time secret the elevated copy says hello with, good for ``expires_s``."""

    TYPE = "handoff_secret"
    secret: str
    expires_s: int

    def check(self) -> None:
        _check_session(self.secret)
        _check_int("expires_s", self.expires_s, 1, 3600)


@dataclass(frozen=True)
class Close(Message):
    TYPE = "close"
    reason: str

    def check(self) -> None:
        _check_str("reason", self.reason, 200)


@dataclass(frozen=True)
class End(Message):
    TYPE = "end"
    session: str
    reason: str

    def check(self) -> None:
        _check_session(self.session)
        _check_str("reason", self.reason, 200)


@dataclass(frozen=True)
class Decline(_SessionMessage):
    """Turn a waiting customer down: the session ends by "technician", reason "declined",
    never billed. Only a waiting session can be declined (an accepted one is ended)."""

    TYPE = "decline"


@dataclass(frozen=True)
class Note(Message):
    """The support person's note on a session (ticket number, what was done): plain text,
    newlines and tabs allowed, kept in the ledger; each note replaces the one before."""

    TYPE = "note"
    session: str
    text: str

    def check(self) -> None:
        _check_session(self.session)
        _check_str("text", self.text, MAX_NOTE_CHARS, printable=False)
        _check_controls("a note", self.text, _NOTE_CONTROLS)


@dataclass(frozen=True)
class Noted(_SessionMessage):
    """The relay saved the note of ``session``."""

    TYPE = "noted"


@dataclass(frozen=True)
class Ended(Message):
    """The session is over. ``ref`` is its ledger reference and ``billable_s`` the seconds
    billed (both 0 for a session never accepted): the customer's receipt shows them."""

    TYPE = "ended"
    session: str
    by: str
    reason: str
    ref: int = 0
    billable_s: int = 0

    def check(self) -> None:
        _check_session(self.session)
        if self.by not in ENDED_BY:
            _fail(f"by must be one of {', '.join(ENDED_BY)}")
        _check_str("reason", self.reason, 200)
        _check_int("ref", self.ref, 0, 2**53)
        _check_int("billable_s", self.billable_s, 0, 2**31)


@dataclass(frozen=True)
class Ping(Message):
    TYPE = "ping"
    t: float

    def check(self) -> None:
        # 2**53 bounds what JavaScript numbers hold exactly (and keeps huge ints from overflowing)
        if type(self.t) not in (int, float) or not -(2**53) <= self.t <= 2**53:
            _fail("t must be a number")


@dataclass(frozen=True)
class Pong(Ping):
    TYPE = "pong"


@dataclass(frozen=True)
class Logout(Message):
    TYPE = "logout"


@dataclass(frozen=True)
class Error(Message):
    TYPE = "error"
    code: str
    message: str

    def check(self) -> None:
        _check_str("code", self.code, 64)
        _check_str("message", self.message, 500)


# --- file transfer ----------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_transfer(value: Any) -> None:
    _check_int("transfer", value, 1, 2**31 - 1)


def _check_file_name(name: str, value: Any) -> None:
    _check_str(name, value, MAX_FILE_NAME_CHARS, printable=False)
    if not value:
        _fail(f"{name} must not be empty")


@dataclass(frozen=True)
class FileOffer(Message):
    """A file its sender wants to send: nothing of it moves until the receiver accepts. The
    name is the sender's; the receiver cleans it before using it anywhere."""

    TYPE = "file_offer"
    session: str
    transfer: int
    name: str
    size: int
    sha256: str

    def check(self) -> None:
        _check_session(self.session)
        _check_transfer(self.transfer)
        _check_file_name("name", self.name)
        _check_int("size", self.size, 0, MAX_FILE_SIZE_BYTES)
        if type(self.sha256) is not str or not _SHA256.fullmatch(self.sha256):
            _fail("sha256 must be 64 lower-case hex digits")


@dataclass(frozen=True)
class FileAnswer(Message):
    TYPE = "file_answer"
    session: str
    transfer: int
    accept: bool

    def check(self) -> None:
        _check_session(self.session)
        _check_transfer(self.transfer)
        _check_bool("accept", self.accept)


@dataclass(frozen=True)
class FileAck(Message):
    """The receiver has ``received`` bytes of the transfer: progress, and room to send more."""

    TYPE = "file_ack"
    session: str
    transfer: int
    received: int

    def check(self) -> None:
        _check_session(self.session)
        _check_transfer(self.transfer)
        _check_int("received", self.received, 0, MAX_FILE_SIZE_BYTES)


@dataclass(frozen=True)
class FileCancel(Message):
    TYPE = "file_cancel"
    session: str
    transfer: int
    reason: str

    def check(self) -> None:
        _check_session(self.session)
        _check_transfer(self.transfer)
        if self.reason not in FILE_CANCEL_REASONS:
            _fail(f"reason must be one of {', '.join(FILE_CANCEL_REASONS)}")


@dataclass(frozen=True)
class FileDone(Message):
    """The receiver has every byte, its SHA-256 matched, and it is kept as ``saved_as``."""

    TYPE = "file_done"
    session: str
    transfer: int
    saved_as: str

    def check(self) -> None:
        _check_session(self.session)
        _check_transfer(self.transfer)
        _check_file_name("saved_as", self.saved_as)


FILE_TYPES = (FileOffer, FileAnswer, FileAck, FileCancel, FileDone)
def _check_shared_text(name: str, value: Any) -> None:
    """Chat and clipboard text: not empty, printable but for line breaks and tabs. Its size
    cap is not checked here (``over_limit``): over-long text is refused politely, not as a
    protocol error, and MAX_CONTROL_BYTES bounds it anyway."""
    _check_str(name, value, MAX_CONTROL_BYTES, printable=False)
    if not value:
        _fail(f"{name} must not be empty")
    _check_controls(name, value, _SHARED_CONTROLS)


@dataclass(frozen=True)
class Chat(Message):
    """A chat line, viewer to agent or agent to viewer; plain text, never markup."""

    TYPE = "chat"
    session: str
    text: str

    def check(self) -> None:
        _check_session(self.session)
        _check_shared_text("text", self.text)


@dataclass(frozen=True)
class Clipboard(Message):
    """Clipboard text: from the viewer, put it on the customer's clipboard (a paste comes
    next); from the agent, the customer's clipboard changed."""

    TYPE = "clipboard"
    session: str
    text: str

    def check(self) -> None:
        _check_session(self.session)
        _check_shared_text("text", self.text)


def over_limit(message: Message) -> str:
    """The refusal code when a chat or clipboard message is over its size cap, else ""."""
    if isinstance(message, Chat) and len(message.text) > MAX_CHAT_CHARS:
        return "chat-too-long"
    if isinstance(message, Clipboard) and len(message.text) > MAX_CLIPBOARD_CHARS:
        return "clipboard-too-long"
    return ""


# --- refusals, endings and close codes ---------------------------------------------------
#
# One table for every `error` code and every `ended` reason, with the sentence each audience
# reads: the customer (the agent's windows) and the support person (the viewer). Peers show
# these by code; the raw code never reaches a person. viewer/protocol.js mirrors the table and
# tests/vectors.json pins both.


class Wording(NamedTuple):
    customer: str
    technician: str


WORDING: dict[str, Wording] = {
    # ended reasons
    "customer-closed": Wording(
        "You ended the session.",
        "The customer ended the session."),
    "technician-ended": Wording(
        "The support person ended the session.",
        "You ended the session."),
    "agent-lost": Wording(
        "The connection to the support server was lost, so the session has ended. "
        "To get help again, run this program again.",
        "The customer's connection was lost and did not come back, so the session has ended."),
    "viewer-lost": Wording(
        "The support person's connection was lost, so the session has ended. "
        "Please call them if you still need help.",
        "Your connection was lost for too long, so the session has ended."),
    "agent-stalled": Wording(
        "Your internet connection was too slow to keep the session going, so it has ended. "
        "Please run this program again.",
        "The customer's connection could not keep up, so the session has ended."),
    "agent-error": Wording(
        "This program ran into a problem and ended the session. Please run it again.",
        "The customer's program ran into a problem and ended the session."),
    "technician-disabled": Wording(
        "The support person you chose can no longer take sessions. "
        "Please call your support company.",
        "Your account was disabled, so the session has ended."),
    "expired": Wording(
        "Nobody accepted the request in time, so it was cancelled. "
        "Please call your support person and run this program again.",
        "The customer waited too long without being accepted, so the request was cancelled."),
    "relay-shutdown": Wording(
        "The support server was stopped, so the session has ended. "
        "Please run this program again in a few minutes.",
        "The relay was stopped, so the session has ended."),
    "relay-restart": Wording(
        "The support server restarted, so the session has ended. "
        "Please run this program again.",
        "The relay restarted, so the session has ended."),
    "declined": Wording(
        "Your support person could not take your call now. Please call them again.",
        "You declined the call."),
    "relay-lost": Wording(
        "The support server stopped answering, so the session has ended. "
        "Please run this program again.",
        "The relay holding this session stopped and nobody rejoined it in time, "
        "so the session has ended."),
    # error codes (refusals)
    "protocol": Wording(
        "This program and the support server do not understand each other. "
        "Please download the program again.",
        "The relay refused a message from this page. Please reload the page."),
    "update-required": Wording(
        "This program is out of date. Please download it again from your support company's page.",
        "This page is out of date. Please reload the page."),
    "login-failed": Wording(
        "Signing in failed.",
        "The user name or password is not correct."),
    "login-expired": Wording(
        "Signing in has expired.",
        "Your sign-in has expired or was revoked. Please sign in again."),
    "too-many-attempts": Wording(
        "Too many attempts. Please wait a minute and try again.",
        "Too many sign-in attempts. Please wait a minute and try again."),
    "no-such-session": Wording(
        "This support session no longer exists. Please run this program again.",
        "That session is no longer available."),
    "technician-unknown": Wording(
        "That support person is not available. "
        "Please check the name with the person you are talking to.",
        "There is no such support person."),
    "too-many-waiting": Wording(
        "Too many support requests are waiting from your network. "
        "Please try again in a few minutes.",
        "Too many customers are waiting from one network."),
    "resume-failed": Wording(
        "The session could not be resumed. Please run this program again.",
        "The customer's program could not rejoin the session."),
    "no-control": Wording(
        "The support person does not control your computer.",
        "Take control of the session before using the mouse and keyboard."),
    "rate-limited": Wording(
        "Too much input arrived at once, and some of it was dropped.",
        "Too much input at once: some of it was dropped."),
    "busy": Wording(
        "The support person is busy with another session.",
        "You are already watching a session in this window: end it first."),
    "open-elsewhere": Wording(
        "The support person opened this session in another window.",
        "This session is open in another window."),
    "not-watching": Wording(
        "The support person has not accepted the session yet.",
        "Accept the session before taking control."),
    "code-required": Wording(
        "The support person has to type your session code to accept.",
        "Type the session code the customer reads to you, then accept."),
    "wrong-code": Wording(
        "The session code the support person typed is not yours.",
        "That is not this customer's session code. Ask them to read it again."),
    "paused": Wording(
        "You paused the session.",
        "The customer paused the session: no screen and no input until they resume."),
    "not-waiting": Wording(
        "The support person tried to turn down a session that had already started.",
        "Only a waiting customer can be declined: this session has started. End it instead."),
    "note-closed": Wording(
        "The support person's note could not be saved.",
        f"This session's note can no longer be changed: a note closes "
        f"{NOTE_EDITABLE_S // 60} minutes after its session ends."),
    "agent-reconnecting": Wording(
        "Reconnecting to the support server.",
        "The customer's connection dropped; waiting for it to come back."),
    # file transfer: the reasons of `file_cancel`
    "file-cancelled": Wording(
        "The file transfer was cancelled.",
        "The file transfer was cancelled."),
    "file-declined": Wording(
        "You declined the file.",
        "The customer declined the file."),
    "file-too-big": Wording(
        "The file is larger than the support server allows.",
        "The file is larger than this relay allows (serve --max-file-mb)."),
    "file-corrupt": Wording(
        "The file arrived damaged (its SHA-256 did not match), so it was not kept.",
        "The file arrived damaged (its SHA-256 did not match), so it was not kept."),
    "file-failed": Wording(
        "The file could not be saved on this computer.",
        "The file could not be saved on the customer's computer."),
    "file-lost": Wording(
        "The connection dropped, so the file transfer was cancelled.",
        "The connection dropped, so the file transfer was cancelled."),
    "file-busy": Wording(
        "Another file is on its way; please wait until it is done.",
        "Another file is on its way; send this one when it is done."),
    # notices: one message refused, the session goes on (NOTICE_CODES)
    "chat-too-long": Wording(
        f"That message is too long to send (at most {MAX_CHAT_CHARS} characters).",
        f"That message is too long to send (at most {MAX_CHAT_CHARS} characters)."),
    "chat-rate-limited": Wording(
        "Messages are being sent too quickly. Please wait a moment.",
        "Messages are being sent too quickly. Please wait a moment."),
    "clipboard-too-long": Wording(
        f"The copied text is too long to share (at most {MAX_CLIPBOARD_CHARS} characters).",
        f"The clipboard text is too long to send (at most {MAX_CLIPBOARD_CHARS} characters)."),
    "secure-desktop": Wording(
        "The support person cannot see or use your computer while a Windows administrator "
        "prompt is open. Please click Yes or No on it.",
        "The customer sees a Windows administrator prompt. Ask them to click Yes or No."),
    "handoff-failed": Wording(
        "The program could not take over the session as administrator. The session goes on "
        "in the first window, without administrator rights.",
        "The customer's program could not restart as administrator; the session goes on "
        "without administrator rights."),
}
# Refusals of one message that leave the session as it was: the agent shows them, it does
# not end on them (every other `error` to the agent ends its session).
NOTICE_CODES = frozenset({"chat-too-long", "chat-rate-limited", "clipboard-too-long"})
UNKNOWN_WORDING = Wording(
    "The support server ended the connection. Please run this program again.",
    "The relay refused the request.")


def customer_words(code: str, fallback: str = "") -> str:
    """The customer's sentence for an `error` code or an `ended` reason; for a code this
    side does not know (a newer relay), ``fallback`` (the error's own message) or a generic
    sentence."""
    return WORDING[code].customer if code in WORDING else fallback or UNKNOWN_WORDING.customer


def technician_words(code: str, fallback: str = "") -> str:
    """The support person's sentence for an `error` code or an `ended` reason (``fallback``
    as for ``customer_words``)."""
    return WORDING[code].technician if code in WORDING else (
        fallback or UNKNOWN_WORDING.technician)


def refusal(code: str, to: str) -> Error:
    """The `error` message for ``code`` sent to a peer of role ``to`` ("agent": the
    customer's sentence; "viewer": the support person's)."""
    if code not in WORDING:
        raise LocalProtocolError(f"no wording for error code {code!r}")
    if to not in ROLES:
        raise LocalProtocolError(f"role must be one of {', '.join(ROLES)}")
    words = WORDING[code]
    return Error(code, words.customer if to == "agent" else words.technician)


# WebSocket close codes the relay and the agent send. websockets reports a link that closed
# without any close frame as 1006 (never sent); `can_resume` takes None for it.
CLOSE_NORMAL = 1000  # deliberate: this link's session is over
CLOSE_GOING_AWAY = 1001  # the peer's process is stopping
CLOSE_POLICY = 1008  # refused: a message the peer sent, or its login
CLOSE_TOO_BIG = 1009  # a message over MAX_MESSAGE_BYTES
CLOSE_INTERNAL = 1011  # a bug on the sender's side; also websockets' keepalive timeout
CLOSE_RESTART = 1012  # the relay restarts: come back
CLOSE_TRY_AGAIN = 1013  # the relay is overloaded: come back later
CLOSE_REPLACED = 4001  # a viewer link replaced by the same login's newer one: don't retry
CLOSE_HANDED_OFF = 4002  # an agent link whose elevated copy took the session over: exit quietly
RESUMABLE_CLOSE_CODES = frozenset({CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_RESTART,
                                   CLOSE_TRY_AGAIN})
OBSERVERS = ("agent", "relay")


def can_resume(code: int | None, observer: str) -> bool:
    """May a live session survive its agent link closing with ``code`` (None: no close frame
    at all), as seen by ``observer``?

    A close code in RESUMABLE_CLOSE_CODES means the link was lost or its peer is coming
    back: the agent reconnects with its resume secret and the relay keeps the session for the
    grace window. No close frame means the peer's operating system closed the socket. Seen
    by the agent, that is a relay that died or a middlebox that dropped the link: another
    relay may hold the session, so it tries. Seen by the relay, it is the customer's program
    that died (a network cut goes silent and ends in a keepalive timeout, 1011 instead): the
    session ends at once. Every other code is a deliberate end.
    """
    if observer not in OBSERVERS:
        raise LocalProtocolError(f"observer must be one of {', '.join(OBSERVERS)}")
    if code is None:
        return observer == "agent"
    return code in RESUMABLE_CLOSE_CODES


_BY_TYPE: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Registered, Welcome, Queue, Accept, Accepted, TakeControl, ReleaseControl, Control,
        PointerMove, Button, Wheel, Key, Text, Refresh, Ack, Cursor, Screens, Pause, Close,
        End, Decline, Note, Noted, Ended, Ping, Pong, Logout, Error, Chat, Clipboard, Desktop,
        Elevate, Elevation, Handoff, HandoffSecret,
    )
}
_BY_TYPE.update({cls.TYPE: cls for cls in FILE_TYPES})
_HELLO_BY_ROLE: dict[str, type[Message]] = {"agent": AgentHello, "viewer": ViewerHello}

# Messages that carry a support person's input to the customer's machine.
INPUT_TYPES = (PointerMove, Button, Wheel, Key, Text)


def encode_control(message: Message) -> str:
    """The JSON text of a control message."""
    return json.dumps(message.to_json(), separators=(",", ":"), ensure_ascii=False)


@_from_peer
def decode_control(data: str | bytes) -> Message:
    """Parse one JSON text message; raise RemoteProtocolError unless it is exactly a valid
    message."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            _fail("control message is not UTF-8")
    if not isinstance(data, str):
        _fail("control message must be text")
    if len(data) > MAX_CONTROL_BYTES:
        _fail("control message is too long")
    try:
        fields = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        _fail("control message is not valid JSON")
    if type(fields) is not dict:
        _fail("control message must be a JSON object")
    kind = fields.pop("type", None)
    if type(kind) is not str:
        _fail("control message has no type")
    if kind == "hello":
        role = fields.get("role")
        cls = _HELLO_BY_ROLE.get(role) if type(role) is str else None
        if cls is None:
            _fail("hello must name the role agent or viewer")
    else:
        cls = _BY_TYPE.get(kind)
        if cls is None:
            _fail(f"unknown message type {kind[:40]!r}")
    return _construct(cls, fields)


def _reject_constant(name: str) -> None:
    _fail(f"{name} is not allowed")


def _construct(cls: type[Message], fields: dict[str, Any]) -> Message:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(fields) - set(known)
    if unknown:
        _fail(f"{cls.TYPE}: unknown field {sorted(unknown)[0][:40]!r}")
    missing = [
        name
        for name, f in known.items()
        if name not in fields
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        _fail(f"{cls.TYPE}: missing field {missing[0]!r}")
    if "screens" in fields:
        if type(fields["screens"]) is not list:
            _fail("screens must be a list")
        fields["screens"] = tuple(Screen.from_json(s) for s in fields["screens"][:MAX_SCREENS + 1])
    if "sessions" in fields:
        if type(fields["sessions"]) is not list:
            _fail("sessions must be a list")
        fields["sessions"] = tuple(
            Waiting.from_json(e) for e in fields["sessions"][:MAX_QUEUE_ENTRIES + 1]
        )
    return cls(**fields)


@_from_peer
def check_hello(message: Message, role: str) -> None:
    """Raise RemoteProtocolError unless ``message`` is a hello of ``role`` at our protocol
    version."""
    expected = _HELLO_BY_ROLE[role]
    if not isinstance(message, expected):
        _fail(f"the first message must be hello with role {role}")
    if message.version != PROTOCOL_VERSION:  # type: ignore[attr-defined]
        _fail(
            f"protocol version {message.version} is not supported; "  # type: ignore[attr-defined]
            f"this relay speaks version {PROTOCOL_VERSION}"
        )


# --- screen updates (binary) ------------------------------------------------------------

# kind, flags, monitor, reserved (0), seq, x, y, width, height, image length
FRAME_HEADER = struct.Struct("!BBBBIHHHHI")
FRAME_JPEG = 1
FRAME_PNG = 2
FRAME_KINDS = (FRAME_JPEG, FRAME_PNG)
FLAG_LAST = 0x01  # the last rectangle of update `seq`: draw, then acknowledge
FLAG_FULL = 0x02  # the update is a complete image of the monitor
_FLAGS_ALL = FLAG_LAST | FLAG_FULL
_MAGIC = {FRAME_JPEG: b"\xff\xd8\xff", FRAME_PNG: b"\x89PNG\r\n\x1a\n"}


@dataclass(frozen=True)
class Frame:
    """One rectangle of a screen update: where it goes, and its image bytes."""

    kind: int
    flags: int
    monitor: int
    seq: int
    x: int
    y: int
    width: int
    height: int
    image: bytes

    def __post_init__(self) -> None:
        if type(self.kind) is not int or self.kind not in FRAME_KINDS:
            _fail(f"unknown frame kind {self.kind}")
        _check_int("flags", self.flags, 0, 255)
        if self.flags & ~_FLAGS_ALL:
            _fail("unknown frame flags")
        _check_monitor(self.monitor)
        _check_int("seq", self.seq, 0, 2**32 - 1)
        _check_int("x", self.x, 0, MAX_SCREEN_EDGE)
        _check_int("y", self.y, 0, MAX_SCREEN_EDGE)
        _check_int("width", self.width, 1, MAX_SCREEN_EDGE)
        _check_int("height", self.height, 1, MAX_SCREEN_EDGE)
        if not isinstance(self.image, (bytes, bytearray, memoryview)):
            _fail("image must be bytes")
        if not bytes(self.image[: len(_MAGIC[self.kind])]) == _MAGIC[self.kind]:
            _fail("image bytes do not match the frame kind")
        if FRAME_HEADER.size + len(self.image) > MAX_FRAME_BYTES:
            _fail("frame is larger than MAX_FRAME_BYTES")

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)


def encode_frame(frame: Frame) -> bytes:
    header = FRAME_HEADER.pack(
        frame.kind, frame.flags, frame.monitor, 0, frame.seq,
        frame.x, frame.y, frame.width, frame.height, len(frame.image),
    )
    return header + bytes(frame.image)


@_from_peer
def decode_frame_header(data: bytes | bytearray | memoryview) -> tuple[int, ...]:
    """The header fields of a binary update, checked without looking at the image (the relay's
    fast path): every field the relay acts on (kind, flags, monitor) is in range."""
    if len(data) < FRAME_HEADER.size:
        _fail("binary message is shorter than the frame header")
    fields = FRAME_HEADER.unpack_from(data)
    if fields[-1] != len(data) - FRAME_HEADER.size:
        _fail("frame image length does not match the message length")
    if fields[3] != 0:
        _fail("frame header reserved byte must be 0")
    if fields[0] not in FRAME_KINDS:
        _fail(f"unknown frame kind {fields[0]}")
    if fields[1] & ~_FLAGS_ALL:
        _fail("unknown frame flags")
    _check_monitor(fields[2])
    return fields


@_from_peer
def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Parse and fully validate one binary update; raise RemoteProtocolError if it is malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("a frame must be bytes")
    kind, flags, monitor, _, seq, x, y, width, height, _ = decode_frame_header(data)
    return Frame(kind, flags, monitor, seq, x, y, width, height, bytes(data[FRAME_HEADER.size:]))


# JPEG start-of-frame markers: each gives the image's size (not DHT 0xC4, JPG 0xC8, DAC 0xCC)
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                       0xCE, 0xCF})


def image_size(kind: int, image: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(width, height) that a frame's image declares in its own header (PNG's IHDR, JPEG's
    start-of-frame), read without decoding it; None if no size is found before its data.
    (viewer/display.js reads it the same way.)"""
    data = memoryview(image).cast("B")  # (read in place: a frame's image may be megabytes)
    if kind == FRAME_PNG:
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return struct.unpack_from(">II", data, 16)
    at = 2  # after SOI
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        if marker in (0xDA, 0xD9):  # the image data, or its end: no size before it
            return None
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None


@_from_peer
def image_scale(frame: Frame) -> int:
    """How many screen pixels each pixel of the frame's image covers, across and down: 1 when
    the image is the size of its rectangle, 2 when it is half of it (each 2x2 block of the
    screen one pixel, an odd last row or column its own: ceil(width / 2) x ceil(height / 2)),
    which a viewer scales up to fill the rectangle. An agent sends a region in motion so on a
    link or viewer that cannot keep up, and the same rectangle whole once it is still. Any
    other size is the peer's error: a viewer decodes no image without this check (a small
    PNG can declare a gigapixel)."""
    size = image_size(frame.kind, frame.image)
    if size is None:
        _fail("the frame's image declares no size")
    for scale in (1, 2):
        if size == (-(-frame.width // scale), -(-frame.height // scale)):
            return scale
    _fail(f"the frame's image is {size[0]}x{size[1]}: its rectangle is "
          f"{frame.width}x{frame.height}, so it must be that size or half of it")
    raise AssertionError  # (unreachable: _fail raised)


def frame_fits(screens: tuple[Screen, ...], monitor: int, x: int, y: int, width: int,
               height: int) -> bool:
    """True if the rectangle lies inside the announced size of ``monitor`` (0: all of them)."""
    if monitor >= len(screens):
        return False
    screen = screens[monitor]
    return x + width <= screen.width and y + height <= screen.height


# --- flow control: updates in flight ----------------------------------------------------

# How many updates from before a restart the relay still waits acknowledgements for.
_EARLIER_KEPT = 4 * MAX_UPDATES_IN_FLIGHT


class UpdateWindow:
    """The flow-control rule, read by the agent that follows it and the relay that enforces it.

    An update is one ``seq``: rectangles, the last flagged FLAG_LAST, which the viewer
    acknowledges (``ack``) once drawn. At most ``limit`` updates may be unacknowledged: the
    agent starts a new one only while ``may_start()``, and the relay forwards the rectangles
    of a new update only then too, and no more pixels per update than twice the monitor's
    (rectangles of one update do not overlap; twice leaves room for rounding).

    A ``refresh`` or ``accepted`` restarts the stream: the agent forgets what was in flight
    (``restart()``) and its next update is a full image (FLAG_FULL). The relay cannot see when
    the agent read the refresh, so it counts on (``restart_sent()``) until that full image
    arrives and only then sets the earlier updates apart, still taking their acks: an agent
    that keeps the rule is never cut short. An agent that restarts by itself (a new monitor
    layout) says so first with ``screens``, in order: the relay sets them apart at once
    (``restart_seen()``).

    The wire's rule counts updates (the relay cannot see a link's rate). Within it the agent
    paces by bytes and time (agent_session.FlowControl, around this class): bulk updates
    leave one place free for an interactive one (input's echo), whose rectangles may then
    pass the rest of a bulk update's on the wire where they do not overlap.
    """

    def __init__(self, limit: int = MAX_UPDATES_IN_FLIGHT) -> None:
        self.limit = limit
        self.open: dict[int, int] = {}  # seq -> pixels forwarded so far, oldest first
        self.finished: set[int] = set()  # open updates whose FLAG_LAST rectangle went by
        self.earlier: dict[int, None] = {}  # from before the last restart, oldest first
        self.restarts_sent = 0  # restarts the agent's stream has not shown yet

    # --- the agent --------------------------------------------------------------------

    def may_start(self) -> bool:
        return len(self.open) < self.limit

    def started(self, seq: int) -> None:
        self.open[seq] = 0

    def restart(self) -> None:
        self.open.clear()
        self.finished.clear()

    # --- both -------------------------------------------------------------------------

    def acked(self, seq: int) -> None:
        self.open.pop(seq, None)
        self.finished.discard(seq)
        self.earlier.pop(seq, None)

    # --- the relay --------------------------------------------------------------------

    def restart_seen(self) -> None:
        """The agent's own stream restarted here (it sent a new monitor layout, then a full
        image): what was in flight before is set apart at once."""
        self.earlier.update(dict.fromkeys(self.open))
        self.restart()
        while len(self.earlier) > _EARLIER_KEPT:
            del self.earlier[next(iter(self.earlier))]

    def restart_sent(self) -> None:
        # Capped: a refresh the agent ignores (a monitor it no longer has) must not leave
        # credit for ever more restarts.
        self.restarts_sent = min(self.restarts_sent + 1, 2)

    def admit(self, seq: int, flags: int, pixels: int, screen_pixels: int) -> bool:
        """May this rectangle of update ``seq`` be forwarded? False breaks the rule."""
        if seq in self.earlier:  # its rectangles all came before the full image
            return False
        if seq not in self.open:
            if self.restarts_sent and flags & FLAG_FULL:
                self.restarts_sent -= 1
                self.restart_seen()
            if not self.may_start():
                return False
            self.started(seq)
        if seq in self.finished or self.open[seq] + pixels > 2 * screen_pixels:
            return False
        self.open[seq] += pixels
        if flags & FLAG_LAST:
            self.finished.add(seq)
        return True


# --- file chunks (binary) ---------------------------------------------------------------

# kind (FILE_CHUNK), reserved (0), reserved (0), transfer, offset; then the file bytes.
FILE_CHUNK_HEADER = struct.Struct("!BBHIQ")
FILE_CHUNK = 0x10  # never a FRAME_KINDS value: the first byte tells a chunk from a frame


@dataclass(frozen=True)
class FileChunk:
    """``data``: the bytes of transfer ``transfer`` starting at byte ``offset``."""

    transfer: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _check_transfer(self.transfer)
        _check_int("offset", self.offset, 0, MAX_FILE_SIZE_BYTES)
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            _fail("chunk data must be bytes")
        if not 1 <= len(self.data) <= FILE_CHUNK_BYTES:
            _fail(f"a chunk holds 1 to {FILE_CHUNK_BYTES} bytes")


def is_file_chunk(data: bytes | bytearray | memoryview) -> bool:
    """True if this binary message is a file chunk (by its first byte), not a screen update."""
    return len(data) > 0 and data[0] == FILE_CHUNK


def encode_file_chunk(chunk: FileChunk) -> bytes:
    return FILE_CHUNK_HEADER.pack(FILE_CHUNK, 0, 0, chunk.transfer, chunk.offset) + bytes(
        chunk.data)


@_from_peer
def decode_file_chunk(data: bytes | bytearray | memoryview) -> FileChunk:
    """Parse one binary file chunk; RemoteProtocolError if it is malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("a file chunk must be bytes")
    if len(data) < FILE_CHUNK_HEADER.size:
        _fail("binary message is shorter than the file chunk header")
    kind, reserved, reserved16, transfer, offset = FILE_CHUNK_HEADER.unpack_from(data)
    if kind != FILE_CHUNK:
        _fail(f"not a file chunk (kind {kind})")
    if reserved or reserved16:
        _fail("file chunk reserved bytes must be 0")
    return FileChunk(transfer, offset, bytes(data[FILE_CHUNK_HEADER.size:]))


class FileWindow:
    """Flow control of one transfer, by bytes: the sender keeps at most ``limit`` bytes sent
    beyond what the receiver acknowledged; the relay enforces the same rule and drops nothing.

    Bytes, not messages: a file must never take the link from the screen and the input, and
    bytes are what fill a link.
    """

    def __init__(self, size: int, limit: int = FILE_WINDOW_BYTES) -> None:
        self.size, self.limit = size, limit
        self.sent = 0  # bytes sent (forwarded, for the relay) so far, in order
        self.acked = 0  # bytes the receiver said it has

    def room(self) -> int:
        """How many more bytes may go now."""
        return max(0, min(self.size - self.sent, self.acked + self.limit - self.sent))

    def admit(self, offset: int, length: int) -> bool:
        """May a chunk of ``length`` bytes at ``offset`` go? (Next in order, within the window
        and the announced size.) True counts it as sent."""
        if offset != self.sent or length > self.room():
            return False
        self.sent += length
        return True

    def ack(self, received: int) -> bool:
        """The receiver has ``received`` bytes; False if that cannot be (more than was sent,
        or less than it said before)."""
        if not self.acked <= received <= self.sent:
            return False
        self.acked = received
        return True

    @property
    def complete(self) -> bool:
        return self.sent == self.size
