"""Issue 7, the customer's side: the real agent loop (fake backends that count what they are
asked to do) against a real relay process, driven by a scripted viewer.

Promise 2: nothing happens invisibly (no input injected unless active, in control, green).
Promise 3: ending is local, immediate and final.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import time

from websockets.asyncio.client import connect

import agent
import agent_config
import agent_session as core
import protocol as p
from tests.fakes import FakeInput, FakeScreen, FakeTray

WAIT_S = 10


class ScriptedViewer:
    """david's viewer: a websockets client that logs in and sends what the test says."""

    def __init__(self, ws) -> None:
        self.ws = ws

    @classmethod
    async def login(cls, relay) -> ScriptedViewer:
        ws = await connect(relay.ws_url + "/ws/viewer", compression=None,
                           max_size=p.MAX_MESSAGE_BYTES)
        hello = p.ViewerHello("viewer", p.PROTOCOL_VERSION, "david", "david-pw")
        await ws.send(p.encode_control(hello))
        viewer = cls(ws)
        await viewer.next("welcome")
        return viewer

    @classmethod
    async def accepted(cls, relay) -> ScriptedViewer:
        """Logged in, and has accepted the customer waiting for it."""
        viewer = await cls.login(relay)
        await viewer.waiting_session()
        await viewer.send(p.Accept(viewer.session))
        await viewer.next("accepted")
        return viewer

    @classmethod
    async def in_control(cls, relay) -> ScriptedViewer:
        """Accepted, and has taken control."""
        viewer = await cls.accepted(relay)
        await viewer.send(p.TakeControl(viewer.session))
        await viewer.next("control")
        return viewer

    async def send(self, message: p.Message) -> None:
        await self.ws.send(p.encode_control(message))

    async def next(self, *kinds: str) -> dict:
        """The next control message of one of these types; frames are acknowledged."""
        while True:
            data = await asyncio.wait_for(self.ws.recv(), WAIT_S)
            if isinstance(data, bytes):
                frame = p.decode_frame(data)
                if frame.last:
                    await self.send(p.Ack(self.session, frame.seq))
                continue
            message = json.loads(data)
            if message["type"] in kinds:
                return message

    async def waiting_session(self) -> str:
        while True:
            queue = await self.next("queue")
            if queue["sessions"]:
                self.session = queue["sessions"][0]["session"]
                return self.session

    async def every_input(self) -> None:
        """One of each input kind, all of which would be visible if injected."""
        s = self.session
        for message in (p.PointerMove(s, 1, 10, 10), p.Button(s, 1, 10, 10, "left", True),
                        p.Button(s, 1, 10, 10, "left", False), p.Wheel(s, 1, 10, 10, 0, 1),
                        p.Key(s, "KeyA", "a", True), p.Key(s, "KeyA", "a", False),
                        p.Text(s, "x")):
            await self.send(message)

    async def round_trip(self) -> None:
        """Everything sent before this has been handled by the relay."""
        await self.send(p.Ping(time.time()))
        await self.next("pong")

    async def close(self) -> None:
        await self.ws.close()


def start_agent(relay, screen=None, user_input=None, tray=None):
    tray = tray or FakeTray()
    runner = agent.Agent(url=agent_config.agent_url(relay.ws_url), technician="david",
                         screen=screen or FakeScreen(), input=user_input or FakeInput(),
                         tray=tray, machine="pc-1", user="anna")
    tray.on_close = runner.request_close
    return runner, asyncio.ensure_future(runner.run())


async def agent_sees(runner: agent.Agent, predicate) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate(runner):
        assert time.monotonic() < deadline, "the agent never got there"
        await asyncio.sleep(0.01)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_input_outside_control_of_an_active_session_is_never_injected(relay) -> None:
    """Input before acceptance, without control, after release, after the viewer left and
    after the end injects nothing; only the controlled stretch is injected, while green."""
    async def scenario():
        user_input, tray = FakeInput(), FakeTray()
        runner, task = start_agent(relay, user_input=user_input, tray=tray)
        viewer = await ScriptedViewer.login(relay)
        await viewer.waiting_session()
        await viewer.every_input()  # before acceptance
        await viewer.send(p.Accept(viewer.session))
        await viewer.next("accepted")
        await viewer.every_input()  # accepted, view only
        await viewer.round_trip()
        assert user_input.events == []

        await viewer.send(p.TakeControl(viewer.session))
        await viewer.next("control")
        await agent_sees(runner, lambda r: r.session.state == core.IN_CONTROL)
        assert tray.states[-1] == "control"  # green, and says so, while input can be injected
        await viewer.send(p.Key(viewer.session, "KeyA", "a", True))
        await agent_sees(runner, lambda r: user_input.events)
        await viewer.send(p.ReleaseControl(viewer.session))
        await viewer.next("control")
        await agent_sees(runner, lambda r: r.session.state != core.IN_CONTROL)
        injected = list(user_input.events)
        assert injected == [("key", "KeyA", True), ("key", "KeyA", False)]  # released too

        await viewer.every_input()  # after release of control
        await viewer.round_trip()
        await viewer.send(p.TakeControl(viewer.session))
        await viewer.next("control")
        await agent_sees(runner, lambda r: r.session.state == core.IN_CONTROL)
        await viewer.close()  # the viewer's tab goes away while in control
        await agent_sees(runner, lambda r: r.session.state != core.IN_CONTROL)

        again = await ScriptedViewer.login(relay)  # rejoins within the grace window
        again.session = viewer.session
        await again.send(p.Accept(again.session))
        await again.next("accepted")
        await again.every_input()  # rejoined, control not taken again
        await again.send(p.End(again.session, "done"))
        await again.next("ended")
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
        runner, task = start_agent(relay, OrderedScreen(log), OrderedInput(log), tray)
        viewer = await ScriptedViewer.in_control(relay)
        await viewer.send(p.Key(viewer.session, "ShiftLeft", "Shift", True))
        await agent_sees(runner, lambda r: "key ShiftLeft down" in log)
        tray.click_close()
        ended = await viewer.next("ended")
        log.append("relay told")
        outcome = await asyncio.wait_for(task, WAIT_S)
        await viewer.close()
        assert ended["by"] == "customer" and outcome.code == agent.EXIT_OK
        released = log.index("key ShiftLeft up")
        assert "grab" not in log[released:], "captured after Close"
        assert released < log.index("relay told")
        return ended["session"]
    session = run(scenario())
    rows = csv.DictReader(io.StringIO(relay.cli("ledger", "--csv").stdout))
    row = next(r for r in rows if r["session"] == session)
    assert (row["ended_by"], row["end_reason"]) == ("customer", "customer-closed")


def test_close_with_the_relay_unreachable_still_stops_within_a_second(relay) -> None:
    """With the relay frozen (SIGSTOP), Close still ends the agent within 1 s."""
    async def scenario():
        user_input, tray = FakeInput(), FakeTray()
        runner, task = start_agent(relay, user_input=user_input, tray=tray)
        viewer = await ScriptedViewer.in_control(relay)
        await agent_sees(runner, lambda r: r.session.state == core.IN_CONTROL)
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


def test_an_ended_session_cannot_be_resumed_with_its_secret(relay) -> None:
    """After the customer's Close, the agent's own resume secret opens nothing."""
    async def scenario():
        runner, task = start_agent(relay)
        viewer = await ScriptedViewer.accepted(relay)
        await agent_sees(runner, lambda r: r.session.state == core.ACCEPTED)
        secret = runner.session.resume
        runner.request_close()
        await viewer.next("ended")
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
