"""Hand-off secrets: how the customer's program, restarted as administrator, takes over the
live session from the copy that started it.

Pure: no sockets, no clocks. A live takeover is not a resume after a lost link: both copies
are connected at once, and the session never leaves the relay that holds it (its id, code,
billing clock, viewer and control stay as they are; the PostgreSQL session directory keeps
the same owning relay, and HAProxy sends the new copy here because it hashes on the same
support person's id).

    old copy   --handoff-->           relay: issue(session) -> secret (one live secret a session)
    old copy   <--handoff_secret--    secret, HANDOFF_EXPIRES_S
    old copy   passes the secret privately to the elevated copy (never on a command line)
    new copy   --hello{handoff}-->    relay: take(secret) -> the session, once, before expiry
    old copy   <--close 4002--        exits quietly; the viewer never noticed

A secret is good for one hello: taking it (or failing to) spends it, a second use and a late
use are refused with ``handoff-failed``. Asking again replaces the earlier secret. Only the
session's own support person's hello can take it over (the secret is bound to the session,
and the hello must name the same technician).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import protocol


@dataclass(frozen=True)
class Ticket:
    session: str
    expires_at: float


@dataclass
class Handoffs:
    """The live hand-off secrets of one relay, by secret."""

    new_secret: Callable[[], str]
    expires_s: float = protocol.HANDOFF_EXPIRES_S
    tickets: dict[str, Ticket] = field(default_factory=dict)

    def issue(self, session: str, now: float) -> str:
        """A fresh secret for ``session``; any earlier one of the same session is spent."""
        self.forget(session)
        while (secret := self.new_secret()) in self.tickets:
            pass
        self.tickets[secret] = Ticket(session, now + self.expires_s)
        return secret

    def take(self, secret: str, now: float) -> str | None:
        """The session ``secret`` was issued for, if it is unspent and not late; spent either
        way (a guessed or replayed secret gets nothing, and no second try)."""
        ticket = self.tickets.pop(secret, None)
        if ticket is None or now >= ticket.expires_at:
            return None
        return ticket.session

    def forget(self, session: str) -> None:
        """The session ended (or asked again): its secret is worth nothing."""
        for secret in [s for s, t in self.tickets.items() if t.session == session]:
            del self.tickets[secret]

    def expire(self, now: float) -> None:
        """Drop what can no longer be taken (called with the relay's tick)."""
        for secret in [s for s, t in self.tickets.items() if now >= t.expires_at]:
            del self.tickets[secret]
