"""What a stranger can make the relay hold, do or write before being anyone.

Pure: no sockets and no clock; the server passes the time in. Each limit answers one
question the server asks per connection or per line it would write:

- ``Unauthenticated``: may one more connection without a valid hello be held open, for this
  address and in total? (Each one costs memory and a file descriptor.)
- ``HelloThrottle``: may this address say hello again now? (A token bucket per address, so
  support people's ids cannot be guessed at speed.)
- ``Budget``: may one more line about a refusal be written to the ledger or the log now, or is
  it only counted for the summary? (A flood of refusals must not flood the disk.)
- ``subnet``: the network an address belongs to (/24 for IPv4, /64 for IPv6): one office or
  one carrier NAT, or one attacker with a whole IPv6 prefix.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

# Connections that have not sent a valid hello (or finished logging in) yet. A real client
# sends its hello within milliseconds, so even a large office behind one address rarely
# holds more than a few at once.
MAX_UNAUTHENTICATED_PER_ADDRESS = 32
MAX_UNAUTHENTICATED = 2000  # and at most half the open-file limit
# Agent hellos per address: a burst for an office or carrier NAT whose customers start at
# about the same time (or a load test on the relay's own machine), then a steady rate that
# makes guessing support people's ids slow: 3,600 an hour at most, where it took 3 s to try
# 2,441 without it.
HELLO_BURST = 120
HELLOS_PER_S = 1.0
MAX_THROTTLED_ADDRESSES = 100_000  # buckets kept; full (idle) ones are forgotten first
# Lines about refusals (ledger rows, log lines): this many per window, then one summary.
REFUSAL_LINES_PER_WINDOW = 20
REFUSAL_WINDOW_S = 60.0


@functools.lru_cache(maxsize=4096)  # asked for every waiting session at every hello
def subnet(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of ``address``; anything else is its own."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class Unauthenticated:
    """Connections held open before a valid hello, per address and in total."""

    per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS
    total: int = MAX_UNAUTHENTICATED
    _count: Counter[str] = field(default_factory=Counter)

    def refusal(self, address: str) -> str:
        """Why one more from ``address`` is refused, or "" if it may be held."""
        if sum(self._count.values()) >= self.total:
            return "too many connections are opening"
        if self._count[address] >= self.per_address:
            return "too many connections are opening from this address"
        return ""

    def opened(self, address: str) -> None:
        self._count[address] += 1

    def done(self, address: str) -> None:
        """The connection said a valid hello, or went away."""
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]

    def __len__(self) -> int:
        return sum(self._count.values())


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class HelloThrottle:
    """A token bucket per address: ``burst`` hellos at once, then ``rate`` a second."""

    burst: float = HELLO_BURST
    rate: float = HELLOS_PER_S
    max_addresses: int = MAX_THROTTLED_ADDRESSES
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, address: str, now: float) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget_full(now)
            bucket = self._buckets[address] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may say hello again (0 if it may now)."""
        bucket = self._buckets.get(address)
        return 0.0 if bucket is None else max(0.0, (1 - bucket.tokens) / self.rate)

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled says nothing a fresh one would not. If every bucket is
        # still draining (a flood from very many addresses), forget the fuller half: the
        # emptiest buckets are the addresses hammering hardest, and they stay remembered.
        def tokens(address: str) -> float:
            bucket = self._buckets[address]
            return bucket.tokens + max(0.0, now - bucket.at) * self.rate

        refilled = [a for a in self._buckets if tokens(a) >= self.burst]
        fullest = sorted(self._buckets, key=tokens, reverse=True)
        for address in refilled or fullest[: max(1, len(fullest) // 2)]:
            del self._buckets[address]


@dataclass
class Budget:
    """At most ``lines`` lines per ``window_s``; beyond that, lines are only counted, and
    ``summary`` says how many were left out once the window is over."""

    lines: int = REFUSAL_LINES_PER_WINDOW
    window_s: float = REFUSAL_WINDOW_S
    _window_at: float | None = None
    _written: int = 0
    _left_out: int = 0

    def allow(self, now: float) -> bool:
        if self._window_at is None or now - self._window_at >= self.window_s:
            if self._left_out:  # the summary of the last window has not been taken yet
                self._left_out += 1
                return False
            self._window_at, self._written = now, 0
        if self._written < self.lines:
            self._written += 1
            return True
        self._left_out += 1
        return False

    def summary(self, now: float) -> int:
        """How many lines were left out, once their window is over (then 0 until the next)."""
        if not self._left_out or self._window_at is None or now - self._window_at < self.window_s:
            return 0
        left_out, self._left_out = self._left_out, 0
        self._window_at, self._written = None, 0
        return left_out
