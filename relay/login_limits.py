"""How many password logins the relay will check: per address, per account and overall.

Pure rules with time passed in (UTC epoch seconds), no I/O and no locks; relay.accounts
calls them under its own lock. Checking a password costs ~19 MiB and tens of milliseconds
of argon2 on purpose, so every attempt the rules admit is work an attacker makes the relay
do. Each call to ``admit`` that returns None must be followed by one call to ``done``.

- Per address (IPv6: per /64, which one subscriber gets whole): a token bucket of
  ADDRESS_BURST attempts refilled one per ADDRESS_REFILL_S, and at most ADDRESS_IN_FLIGHT
  of its checks unfinished at once; a successful login gives its token back, so a real
  support person is never limited by their own logins. One address trying endless made-up
  accounts gets a quick "try again in N s" instead of argon2 work, and never has more than
  ADDRESS_IN_FLIGHT checks ahead of anyone else's.
- Per account (whatever the address, made-up ids alike so that nothing tells them apart):
  FREE_FAILURES failures, then one attempt per 1, 2, 4 ... up to MAX_LOGIN_DELAY_S seconds.
  Attempts still being checked count as failures, so guesses sent in parallel do not slip
  through together. The delay's exponent is bounded: a thousand failures cannot overflow it.
  An account's attempts from one of the KNOWN_ADDRESSES it last logged in from are counted
  apart, with the same schedule (OWASP's "device cookie" defence against lockout, by
  address): guesses from elsewhere cannot lock a support person out at their usual desk,
  and a guesser sharing that desk's address is slowed down just the same.
- Overall: at most MAX_LOGINS_IN_FLIGHT checks admitted and unfinished at once; beyond that
  a login is refused for BUSY_RETRY_S. Admission happens before any check is queued, so
  with a small argon2 semaphore behind it a real login waits behind at most that many
  checks, never behind a flood's whole backlog. Nor does the overall cap refuse an account
  from one of its known addresses: a flood from many addresses then delays a support
  person at their usual desk by a few checks instead of turning them away.

A refusal is answered at once with the seconds to wait; nothing here sleeps.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

ADDRESS_BURST = 30
ADDRESS_REFILL_S = 2.0
ADDRESS_IN_FLIGHT = 1  # so one address never holds more than one of the argon2 workers
FREE_FAILURES = 5
MAX_LOGIN_DELAY_S = 30.0
MAX_DELAY_DOUBLINGS = 5  # 2**5 = 32 > MAX_LOGIN_DELAY_S: more doublings change nothing
FORGET_FAILURES_S = 15 * 60  # a quiet account starts over
MAX_LOGINS_IN_FLIGHT = 8
KNOWN_ADDRESSES = 8  # per account: where it last logged in successfully
BUSY_RETRY_S = 1.0
MAX_TRACKED = 50_000  # addresses and accounts remembered; bounds memory under a flood

# Why an attempt was refused.
BY_ADDRESS = "address"
BY_ACCOUNT = "account"
BUSY = "busy"


@dataclass(frozen=True)
class Refusal:
    """An attempt not admitted: why, and when the same attempt could be admitted."""

    reason: str  # BY_ADDRESS | BY_ACCOUNT | BUSY
    retry_after_s: float
    first: bool  # the first of a flood: since the address was last idle or logged in, the
    #               account last quiet or logged in, or the relay last had no check running


@dataclass
class _Bucket:
    tokens: float
    at: float
    in_flight: int = 0
    refused: bool = False
    checking: str = ""  # the account count its check runs under (ADDRESS_IN_FLIGHT is 1)


@dataclass
class _Account:
    failures: int = 0
    last_failure: float = 0.0
    last_admitted: float = 0.0
    in_flight: int = 0
    refused: bool = False


def address_key(address: str) -> str:
    """The unit an address is limited by: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def account_delay(count: int) -> float:
    """Seconds between attempts on an account with `count` failures (and checks running)."""
    if count < FREE_FAILURES:
        return 0.0
    return min(MAX_LOGIN_DELAY_S, 2.0 ** min(count - FREE_FAILURES, MAX_DELAY_DOUBLINGS))


class LoginLimits:
    """The login limits' state: buckets per address, failure counts per account."""

    def __init__(self) -> None:
        self._addresses: dict[str, _Bucket] = {}
        self._accounts: dict[str, _Account] = {}
        self._known: dict[str, list[str]] = {}  # account -> address keys, newest last
        self.in_flight = 0
        self._busy_refused = False

    def admit(self, address: str, account: str, now: float) -> Refusal | None:
        """None to go ahead and check the password (then call ``done``), else a Refusal."""
        key = address_key(address)
        bucket = self._bucket(key, now)
        if bucket.tokens < 1.0 or bucket.in_flight >= ADDRESS_IN_FLIGHT:
            refill_s = max(0.0, 1.0 - bucket.tokens) * ADDRESS_REFILL_S
            busy_s = BUSY_RETRY_S if bucket.in_flight >= ADDRESS_IN_FLIGHT else 0.0
            first, bucket.refused = not bucket.refused, True
            return Refusal(BY_ADDRESS, max(refill_s, busy_s), first)
        if self.in_flight >= MAX_LOGINS_IN_FLIGHT and key not in self._known.get(account, ()):
            first, self._busy_refused = not self._busy_refused, True
            return Refusal(BUSY, BUSY_RETRY_S, first)
        counted_as = self._counted_as(account, key)
        state = self._account(counted_as, now)
        ready_at = state.last_admitted + account_delay(state.failures + state.in_flight)
        if now < ready_at:
            first, state.refused = not state.refused, True
            return Refusal(BY_ACCOUNT, ready_at - now, first)
        bucket.tokens -= 1.0
        bucket.in_flight += 1
        bucket.checking = counted_as
        state.in_flight += 1
        state.last_admitted = now
        self.in_flight += 1
        return None

    def done(self, address: str, account: str, succeeded: bool, now: float) -> None:
        """An admitted attempt's outcome: a success clears the account's failures and gives
        the address its token back; a failure counts against the account."""
        self.in_flight = max(0, self.in_flight - 1)
        if not self.in_flight:
            self._busy_refused = False
        key = address_key(address)
        bucket = self._bucket(key, now)
        bucket.in_flight = max(0, bucket.in_flight - 1)
        counted_as, bucket.checking = bucket.checking or self._counted_as(account, key), ""
        state = self._account(counted_as, now)
        state.in_flight = max(0, state.in_flight - 1)
        if succeeded:
            state.failures = 0
            if not state.in_flight:
                del self._accounts[counted_as]
            bucket.tokens = min(float(ADDRESS_BURST), bucket.tokens + 1.0)
            bucket.refused = False
            self._remember(account, key)
        else:
            state.failures += 1
            state.last_failure = now

    def _counted_as(self, account: str, key: str) -> str:
        """Whose failure count an attempt on `account` from address `key` goes to."""
        # "\n" cannot be in a user name (protocol: printable), so no name can pose as this.
        return f"{account}\n{key}" if key in self._known.get(account, ()) else account

    def _remember(self, account: str, key: str) -> None:
        if account not in self._known and len(self._known) >= MAX_TRACKED:
            del self._known[next(iter(self._known))]
        known = self._known.setdefault(account, [])
        if key in known:
            known.remove(key)
        known.append(key)
        del known[:-KNOWN_ADDRESSES]

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._addresses.get(key)
        if bucket is None:
            if len(self._addresses) >= MAX_TRACKED:
                self._forget_addresses(now)
            bucket = self._addresses[key] = _Bucket(float(ADDRESS_BURST), now)
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(ADDRESS_BURST), bucket.tokens + elapsed / ADDRESS_REFILL_S)
        bucket.at = max(bucket.at, now)
        if bucket.tokens == ADDRESS_BURST and not bucket.in_flight:
            bucket.refused = False  # idle long enough to be a new flood, if it comes back
        return bucket

    def _account(self, account: str, now: float) -> _Account:
        state = self._accounts.get(account)
        if state is None:
            if len(self._accounts) >= MAX_TRACKED:
                self._forget_accounts(now)
            state = self._accounts[account] = _Account()
        if state.failures and now - state.last_failure > FORGET_FAILURES_S:
            state.failures = 0
            state.refused = False
        return state

    def _forget_addresses(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: those go first.
        full_after_s = ADDRESS_BURST * ADDRESS_REFILL_S
        for key, bucket in list(self._addresses.items()):
            if now - bucket.at >= full_after_s and not bucket.in_flight:
                del self._addresses[key]
        _drop_oldest(self._addresses)

    def _forget_accounts(self, now: float) -> None:
        for key, state in list(self._accounts.items()):
            if not state.in_flight and now - state.last_failure > FORGET_FAILURES_S:
                del self._accounts[key]
        _drop_oldest(self._accounts)


def _drop_oldest(table: dict) -> None:
    """Still over three quarters full after forgetting the stale entries: drop the oldest
    (insertion order) down to that, so the scan before it runs once per many new entries."""
    excess = len(table) - MAX_TRACKED * 3 // 4
    for key in list(table)[:max(0, excess)]:
        del table[key]


def retry_words(seconds: float) -> int:
    """Whole seconds to tell a person, never 0 (they would retry at once and be refused)."""
    return max(1, math.ceil(seconds))
