"""The agent's security promises: the real agent loop (fake backends that count what they are
asked to do) against a real relay process, driven by the scripted viewer.

Nothing happens invisibly: no input is injected unless the session is accepted, in control
and green. Ending is local and final: Close stops capture and input before the relay is
told, and an ended session cannot be resumed. (Close within a second with the relay
unreachable is in tests/test_timing.py.)
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

import agent
import agent_session as core
import protocol as p
from tests.fakes import FakeInput, FakeScreen, FakeTray
from tests.helpers.agent import agent_reaches, start_agent_on_fakes
from tests.helpers.relay import ledger_csv
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wire import run

WAIT_S = 10


def test_input_outside_control_of_an_active_session_is_never_injected(relay) -> None:
    """Input before acceptance, without control, after release, after the viewer left and
    after the end injects nothing; only the controlled stretch is injected, while green."""
    async def scenario():
        user_input, tray = FakeInput(), FakeTray()
        runner, task = start_agent_on_fakes(relay, user_input=user_input, tray=tray)
        viewer = await ScriptedViewer.login(relay)
        viewer.session = (await viewer.wait_for_pending()).session
        await viewer.every_input()  # before acceptance
        await viewer.accept(viewer.session)
        await viewer.every_input()  # accepted, view only
        await viewer.round_trip()
        assert user_input.events == []

        await viewer.take_control()
        await agent_reaches(runner, lambda r: r.session.state == core.IN_CONTROL)
        assert tray.states[-1] == "control"  # green, and says so, while input can be injected
        await viewer.send(p.Key(viewer.session, "KeyA", "a", True))
        await agent_reaches(runner, lambda r: user_input.events)
        await viewer.release_control()
        await agent_reaches(runner, lambda r: r.session.state != core.IN_CONTROL)
        injected = list(user_input.events)
        assert injected == [("key", "KeyA", True), ("key", "KeyA", False)]  # released too

        await viewer.every_input()  # after release of control
        await viewer.round_trip()
        await viewer.take_control()
        await agent_reaches(runner, lambda r: r.session.state == core.IN_CONTROL)
        await viewer.close()  # the viewer's tab goes away while in control
        await agent_reaches(runner, lambda r: r.session.state != core.IN_CONTROL)

        again = await ScriptedViewer.login(relay)  # rejoins within the grace window
        await again.accept(viewer.session)
        await again.every_input()  # rejoined, control not taken again
        await again.send(p.End(again.session, "done"))
        await again.expect(p.Ended)
        await again.every_input()  # after the end
        outcome = await asyncio.wait_for(task, WAIT_S)
        await again.close()
        assert user_input.events == injected
        assert outcome.code == agent.EXIT_OK and tray.hidden
    run(scenario())


class OrderedScreen(FakeScreen):
    """Writes each grab into a shared log, so the order of stop and tell can be checked."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.changing = True  # full motion: the agent grabs continuously

    def grab(self, area):
        self.log.append("grab")
        return super().grab(area)


class OrderedInput(FakeInput):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def key(self, code, down):
        super().key(code, down)
        self.log.append(f"key {code} {'down' if down else 'up'}")


def test_close_stops_capture_and_input_before_the_relay_is_told(relay) -> None:
    """Close in the tray: held keys released and no grab after, then the relay is told,
    and the ledger records the customer as the one who ended it."""
    async def scenario():
        log: list[str] = []
        tray = FakeTray()
        runner, task = start_agent_on_fakes(relay, OrderedScreen(log), OrderedInput(log), tray)
        viewer = await ScriptedViewer.in_control(relay)
        await viewer.send(p.Key(viewer.session, "ShiftLeft", "Shift", True))
        await agent_reaches(runner, lambda r: "key ShiftLeft down" in log)
        tray.click_close()
        ended = await viewer.expect(p.Ended)
        log.append("relay told")
        outcome = await asyncio.wait_for(task, WAIT_S)
        await viewer.close()
        assert ended.by == "customer" and outcome.code == agent.EXIT_OK
        released = log.index("key ShiftLeft up")
        assert "grab" not in log[released:], "captured after Close"
        assert released < log.index("relay told")
        return ended.session
    session = run(scenario())
    row = next(r for r in ledger_csv(relay) if r["session"] == session)
    assert (row["ended_by"], row["end_reason"]) == ("customer", "customer-closed")


def test_an_ended_session_cannot_be_resumed_with_its_secret(relay) -> None:
    """After the customer's Close, the agent's own resume secret opens nothing."""
    async def scenario():
        runner, task = start_agent_on_fakes(relay)
        viewer = await ScriptedViewer.accepted(relay)
        await agent_reaches(runner, lambda r: r.session.state == core.ACCEPTED)
        secret = runner.session.resume
        runner.request_close()
        await viewer.expect(p.Ended)
        await asyncio.wait_for(task, WAIT_S)
        hello = p.AgentHello("agent", p.PROTOCOL_VERSION, "david", "pc-1", "anna",
                             FakeScreen().monitors(), secret)
        async with connect(relay.ws_url + "/ws/agent", compression=None) as ws:
            await ws.send(p.encode_control(hello))
            answer = p.decode_control(await asyncio.wait_for(ws.recv(), WAIT_S))
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        await viewer.close()
        assert isinstance(answer, p.Error) and answer.code == "resume-failed"
        assert ws.close_code == 1008
    run(scenario())
