"""relay/transfers.py without sockets: the forwarding rules under random operations
(hypothesis), with fake peers behind relay.pairing's Peer interface."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import protocol as p
from relay.transfers import TransferRow, Transfers

SESSION = "Fq3kZ8pL2mN7xR4tW9yB1c"


@dataclass(eq=False)
class FakePeer:
    """What a link would write: control messages and chunks, in order."""

    messages: list[p.Message] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)

    def send(self, message: p.Message) -> None:
        self.messages.append(message)

    def send_chunk(self, data: bytes) -> None:
        self.chunks.append(data)


@dataclass(eq=False)
class FakeSession:
    id: str = SESSION
    technician: str = "david"
    agent: FakePeer | None = field(default_factory=FakePeer)
    viewer: FakePeer | None = field(default_factory=FakePeer)


class FakeLedger:
    def __init__(self) -> None:
        self.rows: list[TransferRow] = []

    def transfer(self, row: TransferRow) -> None:
        self.rows.append(row)


def chunk(transfer: int, offset: int, length: int) -> bytes:
    return p.encode_file_chunk(p.FileChunk(transfer, offset, bytes(length)))


def offer(transfer: int, size: int) -> p.FileOffer:
    return p.FileOffer(SESSION, transfer, "a.bin", size, hashlib.sha256(b"").hexdigest())


def test_an_offer_over_the_cap_is_answered_by_the_relay_and_never_forwarded() -> None:
    """The sender hears file-too-big; the receiver hears nothing; one row, 0 bytes."""
    ledger, session = FakeLedger(), FakeSession()
    rules = Transfers(ledger, max_file_bytes=1000)
    rules.message(session, "viewer", offer(1, 1001), 0.0)
    assert session.viewer.messages == [p.FileCancel(SESSION, 1, "file-too-big")]
    assert session.agent.messages == []
    assert [(r.outcome, r.sent_bytes) for r in ledger.rows] == [("too-big", 0)]


def test_a_message_naming_another_session_is_the_peers_error() -> None:
    """A file message must name the session it arrives on."""
    rules = Transfers(FakeLedger())
    with pytest.raises(p.RemoteProtocolError):
        rules.message(FakeSession(id="X" * 22), "viewer", offer(1, 1), 0.0)


def test_only_the_receiver_answers() -> None:
    """The sender cannot accept its own file."""
    session = FakeSession()
    rules = Transfers(FakeLedger())
    rules.message(session, "viewer", offer(1, 10), 0.0)
    with pytest.raises(p.RemoteProtocolError):
        rules.message(session, "viewer", p.FileAnswer(SESSION, 1, True), 0.0)


class TransferMachine(RuleBasedStateMachine):
    """Random offers, answers, chunks, acks, cancels and link losses, both directions."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = FakeLedger()
        self.session = FakeSession()
        self.rules = Transfers(self.ledger, max_file_bytes=600_000)
        self.offered: dict[int, tuple[str, int]] = {}  # transfer -> (sender, size)
        self.sent: dict[int, int] = {}  # bytes the sender sent (forwarded or not)
        self.acked: dict[int, int] = {}
        self.now = 0.0

    def _receiver(self, sender: str) -> FakePeer | None:
        return self.session.agent if sender == "viewer" else self.session.viewer

    @rule(sender=st.sampled_from(["viewer", "agent"]), transfer=st.integers(1, 6),
          size=st.integers(0, 700_000))
    def offer(self, sender: str, transfer: int, size: int) -> None:
        self.rules.message(self.session, sender, offer(transfer, size), self.now)
        if transfer in self.rules.live.get(SESSION, {}) and transfer not in self.offered:
            self.offered[transfer] = (sender, size)
            self.sent[transfer] = self.acked[transfer] = 0

    @rule(transfer=st.integers(1, 6), accept=st.booleans())
    def answer(self, transfer: int, accept: bool) -> None:
        if transfer not in self.offered:
            return
        sender, _ = self.offered[transfer]
        receiver = "agent" if sender == "viewer" else "viewer"
        live = self.rules.live.get(SESSION, {}).get(transfer)
        try:
            self.rules.message(self.session, receiver, p.FileAnswer(SESSION, transfer, accept),
                               self.now)
        except p.RemoteProtocolError:
            assert live is not None and live.accepted  # only a second answer is refused
        if not accept and live is not None and not live.accepted:
            self.offered.pop(transfer)

    @rule(transfer=st.integers(1, 6), length=st.integers(1, p.FILE_CHUNK_BYTES))
    def send_chunk(self, transfer: int, length: int) -> None:
        if transfer not in self.offered:
            return
        sender, _ = self.offered[transfer]
        live = self.rules.live.get(SESSION, {}).get(transfer)
        offset = self.sent[transfer]
        allowed = live is not None and live.accepted and length <= live.window.room()
        try:
            forwarded = self.rules.chunk(self.session, sender, chunk(transfer, offset, length),
                                         self.now)
        except p.RemoteProtocolError:
            assert not allowed
            return
        assert allowed or not forwarded
        if forwarded:
            self.sent[transfer] += length

    @rule(transfer=st.integers(1, 6))
    def ack_all(self, transfer: int) -> None:
        live = self.rules.live.get(SESSION, {}).get(transfer)
        if transfer not in self.offered or live is None or not live.accepted:
            return
        sender, _ = self.offered[transfer]
        receiver = "agent" if sender == "viewer" else "viewer"
        self.rules.message(self.session, receiver,
                           p.FileAck(SESSION, transfer, live.window.sent), self.now)

    @rule(transfer=st.integers(1, 6), by=st.sampled_from(["viewer", "agent"]))
    def cancel(self, transfer: int, by: str) -> None:
        self.rules.message(self.session, by, p.FileCancel(SESSION, transfer, "file-cancelled"),
                           self.now)
        self.offered.pop(transfer, None)

    @rule()
    def link_lost(self) -> None:
        self.rules.link_lost(self.session, self.now)
        self.offered.clear()

    @rule()
    def tick(self) -> None:
        self.now += 1.0

    @invariant()
    def bytes_in_flight_stay_within_the_window(self) -> None:
        for transfer in self.rules.live.get(SESSION, {}).values():
            assert transfer.window.sent - transfer.window.acked <= p.FILE_WINDOW_BYTES
            assert transfer.window.sent <= transfer.offer.size
            assert transfer.offer.size <= self.rules.max_file_bytes

    @invariant()
    def no_chunk_is_forwarded_to_the_sender_or_before_acceptance(self) -> None:
        for peer, role in ((self.session.viewer, "viewer"), (self.session.agent, "agent")):
            for data in peer.chunks:
                number = p.decode_file_chunk(data).transfer
                assert number not in self.offered or self.offered[number][0] != role

    @invariant()
    def every_ended_transfer_has_one_row(self) -> None:
        live = self.rules.live.get(SESSION, {})
        assert len(live) <= p.MAX_TRANSFERS_PER_SESSION
        for row in self.ledger.rows:
            assert row.outcome in ("saved", "declined", "cancelled", "too-big", "lost", "busy")


TransferMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                             deadline=None)
TestTransferMachine = TransferMachine.TestCase
