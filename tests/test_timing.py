"""Product promises with a time in them, gathered here so they are easy to find and to keep
generous: the customer's Close ends the session within a second even with the relay
unreachable; a wrong user name costs the same time as a wrong password; a changed or
disabled account's viewers are gone within 2 s. Each bound is the promise itself (the
machines the tests run on are shared and noisy); exact figures are measured in bench/.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time

import pytest

import agent
import agent_session as core
from tests.fakes import FakeInput, FakeTray
from tests.helpers.agent import agent_reaches, start_agent_on_fakes
from tests.helpers.relay import relay_events
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wire import (
    closed_code,
    message,
    next_of,
    open_ws,
    receive,
    run,
    start_viewer,
    viewer_hello,
)

pytestmark = pytest.mark.timing
WAIT_S = 10


# --- the customer's Close -----------------------------------------------------------------


def test_close_with_the_relay_unreachable_still_stops_within_a_second(relay) -> None:
    """With the relay frozen (SIGSTOP), Close still ends the agent within 1 s."""
    async def scenario():
        user_input, tray = FakeInput(), FakeTray()
        runner, task = start_agent_on_fakes(relay, user_input=user_input, tray=tray)
        viewer = await ScriptedViewer.in_control(relay)
        await agent_reaches(runner, lambda r: r.session.state == core.IN_CONTROL)
        relay.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            tray.click_close()
            outcome = await asyncio.wait_for(task, WAIT_S)
            took = time.monotonic() - started
        finally:
            relay.process.send_signal(signal.SIGCONT)
        viewer.ws.transport.abort()
        assert outcome.code == agent.EXIT_OK and tray.hidden
        assert runner.session.state == core.ENDED
        assert took < 1.0, f"Close took {took:.2f} s with the relay unreachable"
    run(scenario())


# --- logins -------------------------------------------------------------------------------


async def login_attempt(relay, user: str, password: str, source: str = "127.0.0.1"
                        ) -> tuple[dict, float]:
    """One password login from a source address: the answer and how long it took."""
    ws = await open_ws(relay.ws_url + "/ws/viewer", local_addr=(source, 0))
    started = time.perf_counter()
    await ws.send(viewer_hello(user, password))
    reply = await receive(ws)
    elapsed = time.perf_counter() - started
    await ws.close()
    return reply, elapsed


def test_wrong_user_and_wrong_password_take_the_same_time(relay):
    """Interleaved attempts: the medians of an unknown user and a wrong password agree
    within a factor of two (both do the full argon2 work), and the answers are identical."""
    rounds = 10

    async def scenario():
        unknown, wrong, answers = [], [], set()
        for i in range(rounds):
            reply, elapsed = await login_attempt(relay, f"nobody{i}", "wrong-password")
            unknown.append(elapsed)
            answers.add(json.dumps(reply))
            reply, elapsed = await login_attempt(relay, "david", "wrong-password")
            wrong.append(elapsed)
            answers.add(json.dumps(reply))
            reply, _ = await login_attempt(relay, "david", "david-pw")  # no throttling
            assert reply["type"] == "welcome"
        return unknown, wrong, answers

    unknown, wrong, answers = run(scenario())
    assert [json.loads(a) for a in answers] == [
        {"type": "error", "code": "login-failed",
         "message": "The user name or password is not correct."}]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 <= ratio <= 2.0, (ratio, unknown, wrong)
    assert "login-throttled" not in [e[2] for e in relay_events(relay)]


@pytest.mark.parametrize("change", ["disable-technician", "set-password"])
def test_account_change_closes_live_viewers_within_two_seconds(relay, change):
    """disable-technician or set-password: david's two live viewers are told login-expired
    and closed within 2 s of the command; petur's viewer is untouched; the token is dead."""

    async def scenario():
        first, welcome, _ = await start_viewer(relay.ws_url)
        second, _, _ = await start_viewer(relay.ws_url)
        petur, _, _ = await start_viewer(relay.ws_url, "petur")
        result = await asyncio.to_thread(relay.cli, change, "david", password="new-password-1")
        assert result.returncode == 0, result.stderr
        changed = time.monotonic()
        for viewer in (first, second):
            assert (await next_of(viewer, "error"))["code"] == "login-expired"
            assert (await closed_code(viewer))[0] == 1008
        took = time.monotonic() - changed
        await petur.send(message("ping", t=2))
        assert await next_of(petur, "pong") == {"type": "pong", "t": 2}
        late = await open_ws(relay.ws_url + "/ws/viewer")
        await late.send(viewer_hello(token=welcome["token"]))
        assert (await receive(late))["code"] == "login-expired"
        return took

    assert run(scenario()) <= 2.0
