"""Doubles behind relay.pairing's own interfaces (a support person, a peer link), shared by
the pure rule tests of the relay (test_pairing.py, test_handoff.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import protocol


@dataclass(frozen=True)
class FakeTechnician:
    id: str
    name: str
    enabled: bool = True


DAVID = FakeTechnician("david", "David")
PETUR = FakeTechnician("petur", "Petur")


@dataclass(eq=False)
class FakePeer:
    """Records what the rules send it."""

    address: str = "192.0.2.1"
    sent: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    closed: tuple | None = None

    def send(self, message: protocol.Message) -> None:
        assert self.closed is None, f"sent {message} after close"
        self.sent.append(message)

    def send_frame(self, data: bytes, monitor: int) -> None:
        self.frames.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of(self, kind: type) -> list:
        return [m for m in self.sent if isinstance(m, kind)]

    def last(self) -> protocol.Message:
        return self.sent[-1]
