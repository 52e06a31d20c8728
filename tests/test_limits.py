"""relay/limits.py without sockets: what strangers may make the relay hold, do or write."""

from __future__ import annotations

import pytest

from relay.limits import Budget, HelloThrottle, Unauthenticated, subnet

T0 = 1_800_000_000.0


@pytest.mark.parametrize(("address", "network"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("not-an-address", "not-an-address"),
])
def test_an_address_belongs_to_its_24_or_64(address, network):
    """IPv4 addresses group by /24, IPv6 by /64; anything else is a network of its own."""
    assert subnet(address) == network


def test_connections_before_hello_are_counted_per_address_and_in_total():
    """The per-address cap refuses that address only; the total cap refuses everyone; a
    connection that is done frees its place."""
    held = Unauthenticated(per_address=2, total=3)
    for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        assert held.refusal(address) == ""
        held.opened(address)
    assert held.refusal("192.0.2.1") == held.refusal("192.0.2.3") == \
        "too many connections are opening"
    held.done("192.0.2.2")
    assert held.refusal("192.0.2.3") == ""
    assert held.refusal("192.0.2.1") == "too many connections are opening from this address"
    assert len(held) == 2


def test_hello_throttle_allows_a_burst_then_a_steady_rate_per_address():
    """Burst hellos at once, then one per 1/rate seconds; another address has its own
    bucket; retry_after says when the next one is allowed."""
    throttle = HelloThrottle(burst=3, rate=0.5)
    assert [throttle.allow("192.0.2.1", T0) for _ in range(4)] == [True, True, True, False]
    assert throttle.retry_after("192.0.2.1") == pytest.approx(2.0)
    assert throttle.allow("192.0.2.2", T0)
    assert not throttle.allow("192.0.2.1", T0 + 1.9)
    assert throttle.allow("192.0.2.1", T0 + 2.0)


def test_hello_throttle_keeps_a_bounded_table_forgetting_refilled_buckets_first():
    """Past max_addresses, buckets that have refilled are forgotten; a draining one stays."""
    throttle = HelloThrottle(burst=2, rate=1.0, max_addresses=3)
    throttle.allow("192.0.2.1", T0)
    throttle.allow("192.0.2.1", T0)  # drained
    throttle.allow("192.0.2.2", T0)
    throttle.allow("192.0.2.3", T0)
    throttle.allow("192.0.2.4", T0 + 0.1)  # the table is full: refilled ones go
    assert not throttle.allow("192.0.2.1", T0 + 0.2)  # still remembered as drained
    for n in range(5, 1000):
        throttle.allow(f"192.0.2.{n % 250}", T0 + 0.2)
        assert len(throttle._buckets) <= 3


def test_budget_writes_a_few_lines_a_window_then_one_summary():
    """lines per window are allowed; the rest are counted, and the count is given once the
    window is over (then nothing until more are left out)."""
    budget = Budget(lines=2, window_s=10)
    assert [budget.allow(T0 + i) for i in range(5)] == [True, True, False, False, False]
    assert budget.summary(T0 + 9) == 0  # the window is not over yet
    assert budget.summary(T0 + 10) == 3
    assert budget.summary(T0 + 11) == 0
    assert budget.allow(T0 + 12)
