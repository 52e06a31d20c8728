"""relay.login_limits: which password attempts get checked, as pure rules with time passed in."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from websockets.asyncio.client import connect

import protocol
from relay import login_limits
from relay.accounts import DB_FILE
from relay.ledger import Ledger
from relay.login_limits import (
    ADDRESS_BURST,
    ADDRESS_IN_FLIGHT,
    ADDRESS_REFILL_S,
    BUSY,
    BY_ACCOUNT,
    BY_ADDRESS,
    FORGET_FAILURES_S,
    FREE_FAILURES,
    MAX_LOGIN_DELAY_S,
    MAX_LOGINS_IN_FLIGHT,
    LoginLimits,
    account_delay,
    address_key,
    retry_words,
)

T0 = 1_800_000_000.0


def fail(limits: LoginLimits, account: str, now: float, address: str = "203.0.113.1") -> None:
    """One admitted attempt that failed."""
    assert limits.admit(address, account, now) is None
    limits.done(address, account, False, now)


def fail_until_refused(limits: LoginLimits, account: str, now: float) -> float:
    """Fail from fresh addresses until the account refuses; the refusal's wait."""
    for i in range(FREE_FAILURES + 1):
        address = f"198.51.100.{i}"
        refusal = limits.admit(address, account, now)
        if refusal is not None:
            return refusal.retry_after_s
        limits.done(address, account, False, now)
    pytest.fail("the account never refused")


def test_account_delay_doubles_from_one_second_to_the_cap():
    """Free failures first, then 1, 2, 4, 8, 16 and 30 s between attempts."""
    delays = [account_delay(count) for count in range(FREE_FAILURES + 7)]
    assert delays[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert delays[FREE_FAILURES:] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize("count", [1_030, 1_100, 10**6, 10**30])
def test_account_delay_is_bounded_whatever_the_failure_count(count: int):
    """The lockout bug: ~1,030 failures overflowed 2.0 ** (count - 5); now it stays 30 s."""
    assert account_delay(count) == MAX_LOGIN_DELAY_S


def test_a_thousand_spaced_failures_leave_the_right_password_a_bounded_wait():
    """1,100 failures, each as soon as allowed: every refusal asks for at most 30 s, and the
    right password (from another address) is admitted after that wait."""
    limits, now = LoginLimits(), T0
    for i in range(1_100):
        address = f"10.{i // 250}.{i % 250}.1"
        refusal = limits.admit(address, "david", now)
        if refusal is not None:
            assert refusal.reason == BY_ACCOUNT
            assert 0 < refusal.retry_after_s <= MAX_LOGIN_DELAY_S
            now += refusal.retry_after_s
            assert limits.admit(address, "david", now) is None
        limits.done(address, "david", False, now)
    refusal = limits.admit("192.0.2.7", "david", now)
    assert refusal is not None and refusal.retry_after_s <= MAX_LOGIN_DELAY_S
    now += refusal.retry_after_s
    assert limits.admit("192.0.2.7", "david", now) is None
    limits.done("192.0.2.7", "david", True, now)
    assert limits.admit("192.0.2.7", "david", now) is None  # the count started over


def test_guesses_sent_in_parallel_are_admitted_one_per_step():
    """After the free failures, 50 guesses at the same moment: one is checked, 49 refused."""
    limits = LoginLimits()
    wait = fail_until_refused(limits, "david", T0)
    assert wait == 1.0
    now = T0 + wait
    answers = [limits.admit(f"192.0.2.{i}", "david", now) for i in range(50)]
    assert sum(answer is None for answer in answers) == 1
    refused = [answer for answer in answers if answer is not None]
    assert {r.reason for r in refused} == {BY_ACCOUNT}
    assert all(r.retry_after_s == 2.0 for r in refused)  # the checked one counts as a failure


def test_failures_count_against_the_account_whatever_the_address():
    """Each failure from a different address; the account still refuses; others do not."""
    limits = LoginLimits()
    assert fail_until_refused(limits, "david", T0) > 0
    assert limits.admit("192.0.2.99", "petur", T0) is None


def test_unknown_accounts_are_limited_exactly_like_real_ones():
    """Made-up ids get the same answers as a real one: nothing to enumerate by."""
    answers = []
    for account in ("david", "ghost"):
        limits = LoginLimits()
        answers.append([fail_until_refused(limits, account, T0 + s) for s in (0, 0.5, 3)])
    assert answers[0] == answers[1]


def test_one_address_with_many_made_up_accounts_gets_its_burst_then_refusals():
    """1,500 made-up accounts from one address: ADDRESS_BURST are checked, the rest are
    refused at once with a wait under ADDRESS_REFILL_S; another address is untouched."""
    limits = LoginLimits()
    answers = []
    for i in range(1_500):
        answer = limits.admit("203.0.113.66", f"made-up-{i}", T0)
        if answer is None:
            limits.done("203.0.113.66", f"made-up-{i}", False, T0)
        answers.append(answer)
    assert answers[:ADDRESS_BURST] == [None] * ADDRESS_BURST
    refused = answers[ADDRESS_BURST:]
    assert all(r is not None and r.reason == BY_ADDRESS for r in refused)
    assert all(0 < r.retry_after_s <= ADDRESS_REFILL_S for r in refused)
    assert [r.first for r in refused[:3]] == [True, False, False]  # one log line per flood
    assert limits.admit("198.51.100.5", "david", T0) is None


def test_an_address_earns_one_attempt_per_refill_interval():
    """An emptied bucket admits again after ADDRESS_REFILL_S, once."""
    limits = LoginLimits()
    for i in range(ADDRESS_BURST):
        fail(limits, f"made-up-{i}", T0)
    later = T0 + ADDRESS_REFILL_S
    fail(limits, "made-up-x", later)
    assert limits.admit("203.0.113.1", "made-up-y", later).reason == BY_ADDRESS


def test_successful_logins_never_use_up_their_address():
    """Many good logins from one office address in a row are all admitted."""
    limits = LoginLimits()
    for _ in range(ADDRESS_BURST * 3):
        assert limits.admit("203.0.113.1", "david", T0) is None
        limits.done("203.0.113.1", "david", True, T0)


@pytest.mark.parametrize(("first", "second"), [
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
])
def test_addresses_of_one_ipv6_64_share_one_bucket(first: str, second: str):
    """One /64 is one subscriber: its addresses share a bucket; IPv4-mapped is plain IPv4."""
    assert address_key(first) == address_key(second)
    limits = LoginLimits()
    for i in range(ADDRESS_BURST):
        fail(limits, f"made-up-{i}", T0, first)
    assert limits.admit(second, "made-up-x", T0).reason == BY_ADDRESS
    assert limits.admit("2001:db8:1:3::1", "made-up-x", T0) is None


def test_one_address_has_one_check_unfinished_at_a_time():
    """A second attempt from an address whose check is still running is refused for a
    second (so a flood never holds more than one argon2 worker); its end frees the address."""
    limits = LoginLimits()
    assert ADDRESS_IN_FLIGHT == 1
    assert limits.admit("203.0.113.9", "made-up-1", T0) is None
    refusal = limits.admit("203.0.113.9", "made-up-2", T0)
    assert (refusal.reason, refusal.retry_after_s) == (BY_ADDRESS, 1.0)
    assert limits.admit("198.51.100.9", "made-up-2", T0) is None
    limits.done("203.0.113.9", "made-up-1", False, T0)
    assert limits.admit("203.0.113.9", "made-up-2", T0) is None


def test_a_flood_is_reported_once_not_once_per_refusal():
    """Refusals of one flood from one address are `first` once, however often checks are
    admitted in between; after the address was idle long enough to refill, a new flood is
    reported again."""
    limits, firsts = LoginLimits(), []
    for i in range(300):
        now = T0 + i * 0.1
        answer = limits.admit("203.0.113.9", f"made-up-{i}", now)
        if answer is None:
            limits.done("203.0.113.9", f"made-up-{i}", False, now)
        else:
            firsts.append(answer.first)
    assert firsts.count(True) == 1 and len(firsts) > 200
    later = T0 + 30 + ADDRESS_BURST * ADDRESS_REFILL_S
    for i in range(ADDRESS_BURST):
        fail(limits, f"again-{i}", later, "203.0.113.9")
    assert limits.admit("203.0.113.9", "again-x", later).first


def test_checks_in_flight_are_capped_overall_and_a_finished_one_frees_a_place():
    """MAX_LOGINS_IN_FLIGHT unfinished checks from many addresses: the next is refused as
    busy for a second; once one finishes, the next is admitted."""
    limits = LoginLimits()
    for i in range(MAX_LOGINS_IN_FLIGHT):
        assert limits.admit(f"10.0.0.{i}", f"user{i}", T0) is None
    refusal = limits.admit("10.0.1.1", "david", T0)
    assert refusal.reason == BUSY and retry_words(refusal.retry_after_s) == 1
    limits.done("10.0.0.0", "user0", False, T0)
    assert limits.admit("10.0.1.1", "david", T0) is None


def test_guesses_from_elsewhere_cannot_lock_a_support_person_out_at_their_desk():
    """David logged in from 203.0.113.5 before; a thousand guesses at his account from
    other addresses lock it for them, yet he is admitted from his desk at once; failures
    from his desk's address are slowed down on their own count, the same way."""
    limits = LoginLimits()
    assert limits.admit("203.0.113.5", "david", T0) is None
    limits.done("203.0.113.5", "david", True, T0)
    now = T0 + 60
    for i in range(1_000):
        address = f"10.{i // 250}.{i % 250}.1"
        if limits.admit(address, "david", now) is None:
            limits.done(address, "david", False, now)
    assert limits.admit("10.9.9.9", "david", now).reason == BY_ACCOUNT
    assert limits.admit("203.0.113.5", "david", now) is None
    limits.done("203.0.113.5", "david", False, now)
    assert fail_until_known_refused(limits, now) == 1.0


def fail_until_known_refused(limits: LoginLimits, now: float) -> float:
    for _ in range(FREE_FAILURES + 1):
        refusal = limits.admit("203.0.113.5", "david", now)
        if refusal is not None:
            assert refusal.reason == BY_ACCOUNT
            return refusal.retry_after_s
        limits.done("203.0.113.5", "david", False, now)
    pytest.fail("the desk's own count never refused")


def test_a_busy_relay_still_admits_an_account_from_where_it_last_logged_in():
    """With every place taken by checks from many addresses, david from his usual address
    is admitted; from a new address he is told to wait, like everyone else."""
    limits = LoginLimits()
    assert limits.admit("203.0.113.5", "david", T0) is None
    limits.done("203.0.113.5", "david", True, T0)
    for i in range(MAX_LOGINS_IN_FLIGHT):
        assert limits.admit(f"10.0.0.{i}", f"user{i}", T0) is None
    assert limits.admit("198.51.100.5", "david", T0).reason == BUSY
    assert limits.admit("203.0.113.5", "david", T0) is None
    assert limits.admit("203.0.113.6", "petur", T0).reason == BUSY


def test_a_quiet_account_starts_over():
    """A quarter of an hour without failures clears the account's count."""
    limits = LoginLimits()
    fail_until_refused(limits, "david", T0)
    assert limits.admit("192.0.2.1", "david", T0 + FORGET_FAILURES_S + 1) is None


def test_memory_stays_bounded_under_endless_made_up_names(monkeypatch: pytest.MonkeyPatch):
    """More addresses and accounts than MAX_TRACKED: the tables never grow past it."""
    monkeypatch.setattr(login_limits, "MAX_TRACKED", 500)
    limits = LoginLimits()
    for i in range(2_000):
        address = f"10.{i // 250}.{i % 250}.9"
        assert limits.admit(address, f"made-up-{i}", T0 + i) is None
        limits.done(address, f"made-up-{i}", False, T0 + i)
        assert len(limits._addresses) <= 500 and len(limits._accounts) <= 500


@pytest.mark.parametrize(("seconds", "words"), [(0.01, 1), (1.0, 1), (1.2, 2), (29.5, 30)])
def test_waits_are_told_in_whole_seconds_never_zero(seconds: float, words: int):
    """The person is told to wait a whole number of seconds, at least one."""
    assert retry_words(seconds) == words


# --- through a real relay ----------------------------------------------------------------

WAIT_S = 60  # generous: a hang fails the test instead of blocking the suite


async def login_from(relay, source: str, user: str, password: str) -> tuple[dict, int | None]:
    """One password login from a 127.0.0.x source address: the answer and the close code."""
    async with asyncio.timeout(WAIT_S):
        async with connect(relay.ws_url + "/ws/viewer", local_addr=(source, 0),
                           compression=None, open_timeout=WAIT_S) as ws:
            await ws.send(json.dumps({"type": "hello", "role": "viewer",
                                      "version": protocol.PROTOCOL_VERSION,
                                      "user": user, "password": password}))
            answer = json.loads(await ws.recv())
            await ws.close()
            return answer, ws.close_code


def ledger_events(relay, kind: str) -> list[str]:
    relay.settle()  # the relay writes its ledger off the event loop (issue 16)
    with Ledger(relay.data / DB_FILE) as ledger:
        return [detail for _, _, found, detail in ledger.events() if found == kind]


def test_a_guessing_flood_from_one_address_is_refused_fast_and_a_real_login_gets_in(relay):
    """200 guesses at made-up accounts from 127.0.0.2, 20 connections at a time, while david
    logs in from 127.0.0.1: david is welcomed; at most the address's burst of guesses is
    checked (one ledger row each), every other guess is answered too-many-attempts with the
    seconds to wait, and the refusals make one ledger row for the flood, not one each."""
    guesses, at_once = 200, 20  # at_once: under the relay's cap on one address's strangers

    async def scenario():
        pending = iter(range(guesses))
        answers: list[tuple[dict, int | None]] = []

        async def guesser() -> None:
            for i in pending:
                answers.append(await login_from(relay, "127.0.0.2", f"made-up-{i}", "guess"))

        flood = [asyncio.create_task(guesser()) for _ in range(at_once)]
        started = time.monotonic()
        real, _ = await login_from(relay, "127.0.0.1", "david", "david-pw")
        await asyncio.gather(*flood)
        return real, answers, time.monotonic() - started

    real, answers, took = asyncio.run(scenario())
    assert real["type"] == "welcome"
    codes = [answer["code"] for answer, _ in answers]
    refills = int(took / ADDRESS_REFILL_S) + 1
    assert codes.count("login-failed") <= ADDRESS_BURST + refills
    assert codes.count("too-many-attempts") >= guesses - ADDRESS_BURST - refills
    assert set(codes) == {"login-failed", "too-many-attempts"}
    assert {code for _, code in answers} == {1008}
    wait = next(a["message"] for a, _ in answers if a["code"] == "too-many-attempts")
    assert re.fullmatch(r"Too many sign-in attempts\. Try again in [12] s\.", wait), wait
    assert len(ledger_events(relay, "login-failed")) == codes.count("login-failed")
    assert len(ledger_events(relay, "login-throttled")) == 1  # one row for the flood


def test_a_locked_account_answers_the_right_password_with_the_wait(relay):
    """Five wrong passwords for david from five addresses: the right one, from a sixth, is
    answered at once with too-many-attempts and the wait (not closed unanswered); petur's
    account is untouched."""

    async def scenario():
        for i in range(FREE_FAILURES):
            answer, _ = await login_from(relay, f"127.0.0.{i + 2}", "david", "wrong-password")
            assert answer["code"] == "login-failed"
        locked = await login_from(relay, "127.0.0.20", "david", "david-pw")
        other, _ = await login_from(relay, "127.0.0.21", "petur", "petur-pw")
        return locked, other

    (answer, code), other = asyncio.run(scenario())
    assert answer == {"type": "error", "code": "too-many-attempts",
                      "message": "Too many sign-in attempts. Try again in 1 s."}
    assert code == 1008
    assert other["type"] == "welcome"
    assert ledger_events(relay, "login-throttled") == [
        "user 'david' from 127.0.0.20: account limit, 1 s"]


def lock_account(relay, user: str, failures: int) -> None:
    """`failures` wrong passwords from 127.0.0.2, each as soon as the limits allow, so that
    the account's next attempt waits account_delay(failures) seconds from the last one."""
    from websockets.sync.client import connect as connect_sync

    done = 0
    while done < failures:
        with connect_sync(relay.ws_url + "/ws/viewer", open_timeout=WAIT_S) as ws:
            ws.send(json.dumps({"type": "hello", "role": "viewer",
                                "version": protocol.PROTOCOL_VERSION,
                                "user": user, "password": "wrong-password"}))
            answer = json.loads(ws.recv(timeout=WAIT_S))
        if answer["code"] == "too-many-attempts":
            time.sleep(int(re.search(r"in (\d+) s", answer["message"]).group(1)))
        else:
            assert answer["code"] == "login-failed"
            done += 1


@pytest.mark.browser
def test_the_viewer_shows_the_wait_when_the_login_is_refused(relay):
    """In Chromium: a locked account's right password shows the relay's sentence with the
    seconds to wait on the login form (not the bare code, not a dropped connection)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(relay.http_url + "/console/")
            page.get_by_test_id("login-user").fill("david")
            page.get_by_test_id("login-password").fill("david-pw")
            lock_account(relay, "david", FREE_FAILURES + 2)  # the next one waits 4 s
            page.get_by_test_id("login-submit").click()
            error = page.locator("#login-error")
            error.wait_for(state="visible")
            shown = error.text_content()
        finally:
            browser.close()
    assert re.fullmatch(r"Too many sign-in attempts\. Try again in [1-4] s\.", shown), shown


class LimitsMachine(RuleBasedStateMachine):
    """Random admits and outcomes from a few addresses on a few accounts, time moving on."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = LoginLimits()
        self.now = T0
        self.running: list[tuple[str, str]] = []  # admitted checks not yet done

    @rule(address=st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"]),
          account=st.sampled_from(["david", "petur", "ghost"]))
    def attempt(self, address: str, account: str) -> None:
        refusal = self.limits.admit(address, account, self.now)
        if refusal is None:
            self.running.append((address, account))
        else:
            assert 0 < refusal.retry_after_s <= MAX_LOGIN_DELAY_S
            assert refusal.reason in (BY_ADDRESS, BY_ACCOUNT, BUSY)

    @precondition(lambda self: self.running)
    @rule(which=st.integers(min_value=0), succeeded=st.booleans())
    def finish(self, which: int, succeeded: bool) -> None:
        address, account = self.running.pop(which % len(self.running))
        self.limits.done(address, account, succeeded, self.now)

    @rule(seconds=st.sampled_from([0.1, 1.0, 7.5, 31.0, FORGET_FAILURES_S + 1.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def checks_are_counted_exactly(self) -> None:
        assert self.limits.in_flight == len(self.running)
        keys = [address_key(address) for address, _ in self.running]
        assert max([keys.count(key) for key in keys], default=0) <= ADDRESS_IN_FLIGHT

    @invariant()
    def nothing_is_held_once_all_checks_are_done(self) -> None:
        if not self.running:
            assert all(not b.in_flight for b in self.limits._addresses.values())
            assert all(not a.in_flight for a in self.limits._accounts.values())


TestLimitsMachine = LimitsMachine.TestCase
TestLimitsMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
