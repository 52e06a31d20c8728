"""The relay's rules for file transfers: forward with flow control, store nothing, record each.

Pure like relay.pairing, which owns one ``Transfers`` and hands it every file message and
chunk of a session, with the time. A file goes from its sender (the viewer or the agent) to
the other side of the same session:

    file_offer   sender -> relay: refused at once (file_cancel "file-too-big") when over the
                 relay's cap, before any byte; otherwise forwarded to the receiver
    file_answer  receiver -> sender; only after an accepting answer may chunks flow
    <chunk>      sender -> receiver, next in order and within protocol.FileWindow (bytes sent
                 beyond the receiver's file_ack); anything else is the sender's protocol error
    file_ack     receiver -> sender (progress; opens the window)
    file_done    receiver -> sender, once every byte went through: the file was kept
    file_cancel  either side -> the other

The relay keeps no file byte: a chunk goes into the receiver's link queue at once, and the
window bounds how much can wait there. Each transfer becomes one ledger row when it ends
(``Outcome``: saved, declined, cancelled, too-big, corrupt, failed, lost, busy). A transfer
lives only on the relay that carries it: when either link of its session drops, it is
cancelled ("file-lost"), and a session moved to another relay starts with none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import protocol
from protocol import FileAck, FileAnswer, FileCancel, FileDone, FileOffer

DEFAULT_MAX_FILE_MB = 200
TO_CUSTOMER, FROM_CUSTOMER = "to-customer", "from-customer"
DIRECTIONS = (TO_CUSTOMER, FROM_CUSTOMER)
OUTCOMES = ("saved", "declined", "cancelled", "too-big", "corrupt", "failed", "lost", "busy")


@dataclass(frozen=True)
class TransferRow:
    """One file transfer as the ledger keeps it."""

    session: str
    technician: str
    transfer: int
    direction: str  # TO_CUSTOMER (viewer -> agent) or FROM_CUSTOMER
    name: str  # as offered by the sender (the receiver may have kept it under a cleaned name)
    size: int
    sha256: str
    outcome: str  # one of OUTCOMES
    sent_bytes: int  # bytes the relay forwarded
    started_at: float
    ended_at: float


class Recorder(Protocol):
    def transfer(self, row: TransferRow) -> None: ...


class Side(Protocol):
    """What the rules need of a session (relay.pairing.Session)."""

    id: str
    technician: str
    agent: Any  # relay.pairing.Peer or None
    viewer: Any


@dataclass(eq=False)
class Transfer:
    offer: FileOffer
    sender: str  # "viewer" or "agent"
    started_at: float
    window: protocol.FileWindow
    accepted: bool = False

    @property
    def receiver(self) -> str:
        return "agent" if self.sender == "viewer" else "viewer"


def _peer(session: Side, role: str) -> Any:
    return session.viewer if role == "viewer" else session.agent


@dataclass
class Transfers:
    """The live transfers of every session on this relay."""

    ledger: Recorder
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024
    live: dict[str, dict[int, Transfer]] = field(default_factory=dict)

    def message(self, session: Side, role: str, message: protocol.Message,
                now: float) -> None:
        """A file control message from ``role`` ("viewer" or "agent") of ``session``, already
        checked to be that session's; RemoteProtocolError if it breaks the rules."""
        if message.session != session.id:  # type: ignore[attr-defined]
            raise protocol.RemoteProtocolError("a file message must name its own session")
        if isinstance(message, FileOffer):
            self._offer(session, role, message, now)
            return
        mine = self.live.get(session.id, {})
        transfer = mine.get(message.transfer)  # type: ignore[attr-defined]
        if transfer is None:
            return  # it ended a moment ago (a cancel crossed this message): nothing to do
        if isinstance(message, FileCancel):
            _send(session, transfer.receiver if role == transfer.sender else transfer.sender,
                  message)
            self._finish(session, transfer, message.reason.removeprefix("file-"), now)
            return
        if role != transfer.receiver:
            raise protocol.RemoteProtocolError(f"only the receiver of a file sends {message.TYPE}")
        if isinstance(message, FileAnswer):
            if transfer.accepted:
                raise protocol.RemoteProtocolError("this file was answered already")
            _send(session, transfer.sender, message)
            if message.accept:
                transfer.accepted = True
            else:
                self._finish(session, transfer, "declined", now)
        elif isinstance(message, FileAck):
            if not transfer.accepted or not transfer.window.ack(message.received):
                raise protocol.RemoteProtocolError("file_ack for bytes that were not sent")
            _send(session, transfer.sender, message)
        elif isinstance(message, FileDone):
            if not transfer.window.complete:
                raise protocol.RemoteProtocolError("file_done before every byte was sent")
            _send(session, transfer.sender, message)
            self._finish(session, transfer, "saved", now)

    def _offer(self, session: Side, role: str, offer: FileOffer, now: float) -> None:
        mine = self.live.setdefault(session.id, {})
        receiver = _peer(session, "agent" if role == "viewer" else "viewer")
        transfer = Transfer(offer, role, now, protocol.FileWindow(offer.size))
        if offer.size > self.max_file_bytes or not self.max_file_bytes:
            reason = "file-too-big"  # before any byte, as the relay's admin set it
        elif offer.transfer in mine or len(mine) >= protocol.MAX_TRANSFERS_PER_SESSION:
            reason = "file-busy"
        elif receiver is None:
            reason = "file-lost"  # the other side is reconnecting
        else:
            mine[offer.transfer] = transfer
            receiver.send(offer)
            return
        _send(session, role, FileCancel(session.id, offer.transfer, reason))
        self._record(session, transfer, reason.removeprefix("file-"), now)
        if not mine:
            del self.live[session.id]

    def chunk(self, session: Side, role: str, data: bytes, now: float) -> bool:
        """A binary chunk from ``role``: forwarded (True) within the rules; dropped (False)
        for a transfer that has just ended; RemoteProtocolError if it breaks them."""
        chunk = protocol.decode_file_chunk(data)
        transfer = self.live.get(session.id, {}).get(chunk.transfer)
        if transfer is None or transfer.sender != role:
            return False
        if not transfer.accepted:
            raise protocol.RemoteProtocolError("a file chunk before the receiver accepted")
        if not transfer.window.admit(chunk.offset, len(chunk.data)):
            raise protocol.RemoteProtocolError(
                "a file chunk out of order, beyond the file's size or beyond the window")
        receiver = _peer(session, transfer.receiver)
        if receiver is None:
            return False
        receiver.send_chunk(data)
        return True

    def link_lost(self, session: Side, now: float) -> None:
        """A link of ``session`` dropped or the session ended: every transfer of it is
        cancelled, and whichever side is still there is told so."""
        for transfer in list(self.live.get(session.id, {}).values()):
            for role in ("viewer", "agent"):
                _send(session, role, FileCancel(session.id, transfer.offer.transfer,
                                                "file-lost"))
            self._finish(session, transfer, "lost", now)

    def _finish(self, session: Side, transfer: Transfer, outcome: str, now: float) -> None:
        mine = self.live.get(session.id, {})
        mine.pop(transfer.offer.transfer, None)
        if not mine:
            self.live.pop(session.id, None)
        self._record(session, transfer, outcome, now)

    def _record(self, session: Side, transfer: Transfer, outcome: str, now: float) -> None:
        offer = transfer.offer
        self.ledger.transfer(TransferRow(
            session.id, session.technician, offer.transfer,
            TO_CUSTOMER if transfer.sender == "viewer" else FROM_CUSTOMER, offer.name,
            offer.size, offer.sha256, outcome, transfer.window.sent, transfer.started_at, now))


def _send(session: Side, role: str, message: protocol.Message) -> None:
    peer = _peer(session, role)
    if peer is not None:
        peer.send(message)
