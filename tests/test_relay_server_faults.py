"""Network and process faults, against a real relay process: a TCP proxy on 127.0.0.1 that
the test can freeze (a silent network), killed agents and relays, closed viewer tabs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

from tests.helpers.relay import (
    ledger_csv,
    relay_events,
)
from tests.helpers.wire import (
    REFUSAL,
    WAIT_S,
    active_session,
    agent_hello,
    closed_code,
    message,
    next_of,
    open_ws,
    receive,
    run,
    start_agent,
    start_viewer,
    viewer_hello,
    without_receipt,
)

# --- Faults (relay side) -----------------------------------------------------------
# Also: test_relay_server.py::test_relay_killed_mid_session_closes_it_on_restart,
# test_sigterm_ends_live_sessions_and_tells_both_sides; test_ledger.py::
# test_sigkill_mid_session_loses_no_finished_row; test_pairing.py::
# test_active_agent_drop_can_resume_within_grace_once, test_detached_session_ends_after_grace.

FAST_PINGS = ("--ping-interval", "0.5", "--ping-timeout", "1")


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 to the relay. freeze() stops forwarding in both directions
    and keeps the sockets open: to both ends the network has gone silent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FreezableProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.flowing.set()
        await asyncio.sleep(0)

    def freeze(self) -> None:
        self.flowing.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


async def proxied_session(relay, proxy: FreezableProxy) -> tuple[Any, Any, dict]:
    """An agent through the proxy, accepted by david's viewer (direct), in control."""
    agent = await open_ws(f"ws://127.0.0.1:{proxy.port}/ws/agent", ping_interval=None)
    await agent.send(agent_hello())
    registered = await receive(agent)
    viewer, _, _ = await start_viewer(relay.ws_url)
    session = registered["session"]
    await viewer.send(message("accept", session=session))
    await next_of(agent, "accepted")
    await viewer.send(message("take_control", session=session))
    await next_of(agent, "control")
    await next_of(viewer, "control")
    return agent, viewer, registered


def test_agent_link_cut_resumes_within_grace_with_no_input_in_the_gap(relay_factory):
    """The agent's network goes silent: the relay notices by keepalive, keeps the session,
    drops control, forwards no input; the agent resumes with its secret; the ledger shows
    the gap and the resume; the session was never ended."""
    relay = relay_factory(*FAST_PINGS, "--grace", "30")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            session = registered["session"]
            proxy.freeze()
            assert (await next_of(viewer, "control"))["granted"] is False
            assert (await next_of(viewer, "error"))["code"] == "agent-reconnecting"
            await viewer.send(message("key", session=session, code="KeyQ", key="q", down=True))
            assert (await next_of(viewer, "error"))["code"] == "no-control"
            resumed = await open_ws(relay.ws_url + "/ws/agent")
            await resumed.send(agent_hello(resume=registered["resume"]))
            again = await receive(resumed)
            assert again["type"] == "registered" and again["session"] == session
            assert again["resume"] != registered["resume"]
            assert (await receive(resumed))["type"] == "accepted"
            assert (await receive(resumed)) == {"type": "refresh", "session": session,
                                                 "monitor": 0}
            await viewer.send(message("take_control", session=session))
            assert (await receive(resumed))["granted"] is True
            await viewer.send(message("key", session=session, code="KeyW", key="w", down=True))
            assert (await receive(resumed))["code"] == "KeyW"  # the gap's KeyQ never came
            await resumed.send(message("close", reason=""))
            await next_of(viewer, "ended")
        return session

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert kinds == ["accepted", "control-taken", "agent-gap", "control-released",
                     "agent-resumed", "control-taken", "ended"], kinds
    row = ledger_csv(relay)[0]
    assert (row["ended_by"], row["end_reason"]) == ("customer", "customer-closed")


def test_agent_cut_longer_than_grace_ends_with_agent_lost(relay_factory):
    """Nobody resumes within the grace window: the session ends by relay, agent-lost, and
    the viewer is told."""
    relay = relay_factory(*FAST_PINGS, "--grace", "2")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            proxy.freeze()
            assert (await next_of(viewer, "error"))["code"] == "agent-reconnecting"
            ended = await next_of(viewer, "ended")
            assert without_receipt(ended) == {
                "type": "ended", "session": registered["session"], "by": "relay",
                "reason": "agent-lost"}
            return registered["session"]

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert kinds[2:] == ["agent-gap", "control-released", "ended"], kinds
    assert ledger_csv(relay)[0]["end_reason"] == "agent-lost"


def test_resume_replaces_a_link_the_relay_still_thinks_alive(relay):
    """The agent notices the cut first (the relay's keepalive has not fired yet): its resume
    replaces the stale link; the old link is closed and gets nothing more."""

    async def scenario():
        async with FreezableProxy(relay.port) as proxy:
            _, viewer, registered = await proxied_session(relay, proxy)
            session = registered["session"]
            proxy.freeze()
            resumed = await open_ws(relay.ws_url + "/ws/agent")
            await resumed.send(agent_hello(resume=registered["resume"]))
            assert (await receive(resumed))["session"] == session
            assert (await next_of(viewer, "control"))["granted"] is False
            await viewer.send(message("take_control", session=session))
            assert (await next_of(resumed, "control"))["granted"] is True
            await viewer.send(message("key", session=session, code="KeyZ", key="z", down=True))
            assert (await next_of(resumed, "key"))["code"] == "KeyZ"
        return session

    session = run(scenario())
    gap = [e[3] for e in relay_events(relay) if e[1] == session and e[2] == "agent-gap"]
    assert gap == ["the customer's link was replaced"]


AGENT_PROCESS = """
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], compression=None) as ws:
        await ws.send(sys.argv[2])
        print(await ws.recv(), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def test_killed_agent_process_ends_its_session_at_once_with_agent_lost(relay_factory):
    """SIGKILL of the agent's process: its OS closes the socket without a close frame and
    the relay ends the session with agent-lost at once, not after the grace (300 s here)."""
    relay = relay_factory("--grace", "300")
    relay.add_technician("david", "David", "david-pw")
    process = subprocess.Popen(
        [sys.executable, "-c", AGENT_PROCESS, relay.ws_url + "/ws/agent", agent_hello()],
        stdout=subprocess.PIPE, text=True)
    try:
        registered = json.loads(process.stdout.readline())

        async def scenario():
            viewer, _, _ = await start_viewer(relay.ws_url)
            session = registered["session"]
            await viewer.send(message("accept", session=session))
            await next_of(viewer, "accepted")
            process.send_signal(signal.SIGKILL)
            ended = await next_of(viewer, "ended")  # within WAIT_S, far below the grace
            assert without_receipt(ended) == {"type": "ended", "session": session,
                                              "by": "relay", "reason": "agent-lost"}

        run(scenario())
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    assert "agent-gap" not in [e[2] for e in relay_events(relay)]


def test_viewer_tab_closing_keeps_the_session_for_the_same_support_person(relay):
    """The viewer's tab closes: control is released, the session is not ended, petur cannot
    take it, and david's reloaded page (token login) finds it detached and rejoins."""

    async def scenario():
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        viewer, welcome, _ = await start_viewer(relay.ws_url)
        await viewer.send(message("accept", session=session))
        await next_of(agent, "accepted")
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        await viewer.close(1001)  # what a closing tab sends
        assert (await next_of(agent, "control"))["granted"] is False
        petur, _, petur_queue = await start_viewer(relay.ws_url, "petur")
        assert petur_queue["sessions"] == []
        await petur.send(message("accept", session=session))
        assert await receive(petur) == REFUSAL
        reloaded = await open_ws(relay.ws_url + "/ws/viewer")
        await reloaded.send(viewer_hello(token=welcome["token"]))
        queue = await next_of(reloaded, "queue")
        assert [(e["session"], e["state"]) for e in queue["sessions"]] == [(session, "detached")]
        await reloaded.send(message("accept", session=session))
        assert (await next_of(reloaded, "accepted"))["session"] == session
        assert await receive(agent) == {"type": "refresh", "session": session, "monitor": 0}
        return session

    session = run(scenario())
    kinds = [e[2] for e in relay_events(relay) if e[1] == session]
    assert "viewer-detached" in kinds and "viewer-rejoined" in kinds
    assert kinds.index("viewer-detached") < kinds.index("viewer-rejoined")


def test_viewer_gone_longer_than_grace_ends_with_viewer_lost(relay_factory):
    """Nobody rejoins within the grace window: ended by relay, viewer-lost; agent told."""
    relay = relay_factory("--grace", "2")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.close(1001)
        assert without_receipt(await next_of(agent, "ended")) == {
            "type": "ended", "session": session, "by": "relay", "reason": "viewer-lost"}
        assert (await closed_code(agent))[0] == 1000

    run(scenario())
    assert ledger_csv(relay)[0]["end_reason"] == "viewer-lost"


def test_relay_sigkill_leaves_no_session_open_and_no_resume(relay, relay_factory):
    """SIGKILL mid-session (one active, one waiting): after restart both rows are closed
    relay-restart, no queue lists them and the old resume secret is refused."""

    async def before_kill():
        agent, viewer, active_id = await active_session(relay)
        waiting, registered = await start_agent(relay.ws_url, machine="PC-2")
        relay.kill()
        for ws in (agent, viewer, waiting):
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        return active_id, registered

    active_id, registered = run(before_kill())
    restarted = relay_factory(data=relay.data)

    async def after_restart():
        _, _, queue = await start_viewer(restarted.ws_url)
        assert queue["sessions"] == []
        ws = await open_ws(restarted.ws_url + "/ws/agent")
        await ws.send(agent_hello(resume=registered["resume"]))
        assert (await receive(ws))["code"] == "resume-failed"

    run(after_restart())
    rows = {r["session"]: r for r in ledger_csv(restarted)}
    assert set(rows) == {active_id, registered["session"]}
    assert all((r["ended_by"], r["end_reason"]) == ("relay", "relay-restart")
               for r in rows.values())
