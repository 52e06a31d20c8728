"""Several relays on one PostgreSQL behind HAProxy (deploy/cluster.py, as `./dev cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import protocol
from tests.helpers.wire import next_of, receive

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy"))
from cluster import ROOT, Cluster

pytestmark = pytest.mark.cluster
WAIT_S = 30  # generous: the machine is shared; a hang fails the test instead of blocking it
SCREENS = [{"x": 0, "y": 0, "width": 640, "height": 480},
           {"x": 0, "y": 0, "width": 640, "height": 480}]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """PostgreSQL, three relays and HAProxy; david and petur can log in."""
    running = Cluster.start(3, grace=6, extra_args=("--ping-interval", "1",
                                                      "--ping-timeout", "2"))
    try:
        running.cli("add-technician", "david", "--name", "David", password="david-pw")
        running.cli("add-technician", "petur", "--name", "Petur", password="petur-pw")
        yield running
    finally:
        running.stop()


def agent_hello(technician: str = "david", resume: str = "") -> str:
    return json.dumps({"type": "hello", "role": "agent", "version": protocol.PROTOCOL_VERSION,
                       "technician": technician, "machine": "PC-1", "user": "anna",
                       "screens": SCREENS, "resume": resume})


def viewer_hello(user: str = "david", token: str = "") -> str:
    fields: dict[str, Any] = {"type": "hello", "role": "viewer",
                              "version": protocol.PROTOCOL_VERSION}
    fields.update({"token": token} if token else {"user": user, "password": f"{user}-pw"})
    return json.dumps(fields)


_OPENED: list[ClientConnection] = []


def run(scenario: Any) -> Any:
    """Run a test's async part, then close every connection it opened."""
    async def main() -> Any:
        try:
            return await scenario
        finally:
            while _OPENED:
                ws = _OPENED.pop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
                ws.transport.abort()

    return asyncio.run(main())


async def open_ws(url: str) -> ClientConnection:
    ws = await asyncio.wait_for(connect(url, compression=None), WAIT_S)
    _OPENED.append(ws)
    return ws


def served_by(base_url: str, technician: str) -> str:
    """Which relay HAProxy sends this support person's requests to (its /healthz says);
    retried like a client's backoff while HAProxy has no relay for them (502, 503)."""
    for _ in range(WAIT_S * 4):
        try:
            with urllib.request.urlopen(f"{base_url}/healthz?technician={technician}",
                                        timeout=WAIT_S) as reply:
                return json.loads(reply.read())["relay"]
        except urllib.error.HTTPError as error:
            if error.code not in (502, 503):
                raise
            error.close()
        time.sleep(0.25)
    pytest.fail(f"HAProxy found no relay for {technician}")


def ledger(cluster: Cluster) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(cluster.cli("ledger", "--csv").stdout)))


def test_an_old_program_without_the_url_parameter_is_told_to_download_again(cluster):
    """No ?technician= on a cluster: the plain update-required refusal, then a close."""
    async def scenario() -> tuple[dict, int | None]:
        ws = await open_ws(cluster.ws_url + "/ws/agent")
        await ws.send(agent_hello())
        refusal = await receive(ws)
        await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        return refusal, ws.close_code

    refusal, code = run(scenario())
    assert refusal == {"type": "error", "code": "update-required",
                       "message": protocol.customer_words("update-required")}
    assert code == protocol.CLOSE_POLICY


@pytest.mark.parametrize("role", ["agent", "viewer"])
def test_a_hello_naming_someone_else_than_the_url_is_refused(cluster, role: str):
    """?technician=petur with a hello for david: a protocol error, nothing registered."""
    async def scenario() -> dict:
        ws = await open_ws(f"{cluster.ws_url}/ws/{role}?technician=petur")
        await ws.send(agent_hello("david") if role == "agent" else viewer_hello("david"))
        return await receive(ws)

    answer = run(scenario())
    assert (answer["type"], answer["code"]) == ("error", "protocol")


def test_a_whole_session_through_haproxy(cluster):
    """Agent and viewer meet on david's relay: accept, control, input, end, one ledger row."""
    async def scenario() -> str:
        agent = await open_ws(f"{cluster.ws_url}/ws/agent?technician=david")
        await agent.send(agent_hello())
        registered = await receive(agent)
        assert registered["type"] == "registered", registered
        viewer = await open_ws(f"{cluster.ws_url}/ws/viewer?technician=david")
        await viewer.send(viewer_hello())
        assert (await receive(viewer))["type"] == "welcome"
        session = registered["session"]
        queue = await next_of(viewer, "queue")
        while session not in [s["session"] for s in queue["sessions"]]:
            queue = await next_of(viewer, "queue")
        await viewer.send(json.dumps({"type": "accept", "session": session}))
        assert (await next_of(viewer, "accepted"))["session"] == session
        assert (await next_of(agent, "accepted"))["session"] == session
        await viewer.send(json.dumps({"type": "take_control", "session": session}))
        assert (await next_of(viewer, "control"))["granted"] is True
        await viewer.send(json.dumps({"type": "key", "session": session, "code": "KeyA",
                                      "key": "a", "down": True}))
        assert (await next_of(agent, "key"))["key"] == "a"
        await viewer.send(json.dumps({"type": "end", "session": session, "reason": ""}))
        assert (await next_of(agent, "ended"))["reason"] == "technician-ended"
        await agent.close()
        await viewer.close()
        return session

    session = run(scenario())
    rows = [row for row in ledger(cluster) if row["session"] == session]
    assert [(r["technician"], r["end_reason"]) for r in rows] == [("david", "technician-ended")]


def test_a_failed_relay_coming_back_gets_none_of_a_moved_support_persons_connections(
        cluster):
    """Kill david's relay: he moves to another; restarted, it does not take him back."""
    first = served_by(cluster.url, "david")
    relay = next(r for r in cluster.relays if r.name == first)
    cluster.kill_relay(relay)
    others = [r for r in cluster.relays if r is not relay]
    moved = served_by(cluster.url, "david")  # HAProxy redispatches from the dead server
    assert moved != first
    cluster.start_relay(relay)
    cluster.wait_healthy(cluster.relays)
    # Once HAProxy has checked it back in (marker: it gets new people again; each probe
    # name is new, as the stick table keeps where any name was first sent).
    for attempt in range(WAIT_S * 4):
        if any(served_by(cluster.url, f"probe{attempt}x{n}") == first for n in range(6)):
            break
        time.sleep(0.25)
    else:
        pytest.fail(f"{first} never came back into HAProxy's rotation")
    assert served_by(cluster.url, "david") == moved
    assert moved in {r.name for r in others}


def test_disabling_a_support_person_closes_their_viewers_on_every_relay(cluster):
    """disable-technician once: logged-in viewers on two different relays both get
    login-expired (each relay heard it)."""
    cluster.cli("add-technician", "maria", "--name", "Maria", password="maria-pw")

    async def scenario() -> list[str]:
        viewers = []
        for relay in cluster.relays[:2]:  # straight to two relays, past HAProxy
            ws = await open_ws(f"ws://127.0.0.1:{relay.port}/ws/viewer?technician=maria")
            await ws.send(viewer_hello("maria"))
            assert (await receive(ws))["type"] == "welcome"
            viewers.append(ws)
        await asyncio.to_thread(cluster.cli, "disable-technician", "maria")
        return [(await next_of(ws, "error"))["code"] for ws in viewers]

    assert run(scenario()) == ["login-expired", "login-expired"]


async def directory_control(cluster: Cluster, session: str) -> str | None:
    """Who holds control of the session as the shared directory has it (None: not there)."""
    return await directory_column(cluster, session, "control")


async def directory_column(cluster: Cluster, session: str, column: str) -> str | None:
    """One column of the session's row in the shared directory (None: not there)."""
    import asyncpg

    assert column in ("control", "note")  # a name, not a value: it goes into the SQL
    connection = await asyncpg.connect(cluster.postgres.url)
    try:
        return await connection.fetchval(
            f"SELECT {column} FROM session_directory WHERE session = $1", session)
    finally:
        await connection.close()


async def rejoin_agent(cluster: Cluster, resume: str, technician: str = "david"
                       ) -> tuple[ClientConnection, dict]:
    """The agent's reconnect loop: retry (as its backoff does) until the relay answers."""
    for _ in range(WAIT_S * 2):
        try:
            ws = await open_ws(f"{cluster.ws_url}/ws/agent?technician={technician}")
        except Exception:  # refused, or HAProxy's 502/503 while no relay is up for them
            await asyncio.sleep(0.5)
            continue
        await ws.send(agent_hello(technician, resume=resume))
        return ws, await receive(ws)
    pytest.fail("the agent found no relay to come back to")


NOTE = "Ticket 4711: printer driver"


@pytest.mark.timing
def test_kill_9_of_the_relay_holding_a_controlled_session(cluster):
    """The viewer and the agent are back in the same session on another relay within 10 s,
    control released, the session's note kept; the ledger has one row, billed from the
    first acceptance."""
    async def scenario() -> tuple[str, float, float, float]:
        agent = await open_ws(f"{cluster.ws_url}/ws/agent?technician=david")
        await agent.send(agent_hello())
        registered = await receive(agent)
        session = registered["session"]
        viewer = await open_ws(f"{cluster.ws_url}/ws/viewer?technician=david")
        await viewer.send(viewer_hello())
        token = (await receive(viewer))["token"]
        await viewer.send(json.dumps({"type": "accept", "session": session}))
        await next_of(viewer, "accepted")
        accepted_at = time.time()
        await viewer.send(json.dumps({"type": "take_control", "session": session}))
        assert (await next_of(agent, "control"))["granted"] is True
        await viewer.send(json.dumps({"type": "note", "session": session, "text": NOTE}))
        await next_of(viewer, "noted")
        while (await directory_control(cluster, session) != "david"  # published
               or await directory_column(cluster, session, "note") != NOTE):
            await asyncio.sleep(0.1)
        holder = served_by(cluster.url, "david")
        killed_at = time.monotonic()
        cluster.kill_relay(next(r for r in cluster.relays if r.name == holder))

        agent2, again = await rejoin_agent(cluster, registered["resume"])
        assert (again["type"], again["session"]) == ("registered", session), again
        assert (await next_of(agent2, "accepted"))["session"] == session
        viewer2 = await open_ws(f"{cluster.ws_url}/ws/viewer?technician=david")
        await viewer2.send(viewer_hello(token=token))
        assert (await receive(viewer2))["type"] == "welcome"
        await viewer2.send(json.dumps({"type": "accept", "session": session}))
        rejoined = await next_of(viewer2, "accepted")
        back_s = time.monotonic() - killed_at
        assert (await next_of(viewer2, "note"))["text"] == NOTE  # from the directory
        assert rejoined["session"] == session
        assert rejoined["elapsed_s"] >= time.time() - accepted_at - 2  # the same clock
        await viewer2.send(json.dumps({"type": "take_control", "session": session}))
        assert (await next_of(agent2, "control"))["granted"] is True  # it had been released
        await viewer2.send(json.dumps({"type": "end", "session": session, "reason": ""}))
        await next_of(agent2, "ended")
        ended_at = time.time()
        for relay in cluster.relays:  # the killed one back for the next tests
            if not relay.alive():
                cluster.start_relay(relay)
        return session, back_s, accepted_at, ended_at

    try:
        session, back_s, accepted_at, ended_at = run(scenario())
    except BaseException:
        for relay in cluster.relays:
            print(relay.name, "".join(relay.output[-30:]))
        raise
    assert back_s < 10
    rows = [row for row in ledger(cluster) if row["session"] == session]
    assert len(rows) == 1 and rows[0]["end_reason"] == "technician-ended"
    assert rows[0]["note"] == NOTE
    assert abs(int(rows[0]["billable_seconds"]) - (ended_at - accepted_at)) <= 2


def test_a_dead_relays_session_nobody_resumes_is_ended_relay_lost_by_a_live_relay(cluster):
    """Kill the relay and never come back: another relay ends the session (relay-lost),
    billed to the dead relay's last sign of life, not to when it was noticed."""
    async def scenario() -> tuple[str, float]:
        agent = await open_ws(f"{cluster.ws_url}/ws/agent?technician=petur")
        await agent.send(agent_hello("petur"))
        session = (await receive(agent))["session"]
        viewer = await open_ws(f"{cluster.ws_url}/ws/viewer?technician=petur")
        await viewer.send(viewer_hello("petur"))
        await viewer.send(json.dumps({"type": "accept", "session": session}))
        await next_of(viewer, "accepted")
        while await directory_control(cluster, session) is None:  # published
            await asyncio.sleep(0.1)
        holder = next(r for r in cluster.relays if r.name == served_by(cluster.url, "petur"))
        cluster.kill_relay(holder)
        killed_at = time.time()
        for ws in (agent, viewer):  # neither side comes back
            ws.transport.abort()
        return session, killed_at

    session, killed_at = run(scenario())
    try:
        for _ in range(WAIT_S * 4):  # the grace window, the margin, then a sweep
            rows = [r for r in ledger(cluster) if r["session"] == session]
            if rows[0]["ended_at"]:
                break
            time.sleep(1)
        assert (rows[0]["ended_by"], rows[0]["end_reason"]) == ("relay", "relay-lost")
        ended = datetime.fromisoformat(rows[0]["ended_at"].replace("Z", "+00:00")).timestamp()
        assert killed_at - 10 <= ended <= killed_at + 1  # at its last heartbeat
    finally:
        for relay in cluster.relays:
            if not relay.alive():
                cluster.start_relay(relay)


# --- a relay whose database stopped answering still stops ----------------------------------


def _process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    return [pid, *(p for child in children for p in _process_tree(int(child)))]


@pytest.fixture
def frozen_database_relay() -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """A relay on its own PostgreSQL, which is then frozen (SIGSTOP: connections stay open,
    nothing answers, as with a database host that hangs or a network that drops packets)."""
    from localpg import LocalPostgres, free_port

    postgres = LocalPostgres.start()
    env = {**os.environ, "RELAY_DATABASE_URL": postgres.url}
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--port",
         str(free_port()), "--relay-id", "relay-frozen"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output: list[str] = []
    assert relay.stdout is not None
    for line in relay.stdout:
        output.append(line)
        if "listening on" in line:
            break
    assert postgres.process is not None
    frozen = _process_tree(postgres.process.pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    reader = threading.Thread(target=lambda: output.extend(relay.stdout), daemon=True)
    reader.start()
    try:
        yield relay, output
    finally:
        if relay.poll() is None:
            relay.kill()
        relay.wait()
        reader.join(timeout=10)
        relay.stdout.close()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        postgres.stop()


@pytest.mark.timing
def test_a_relay_whose_database_hangs_still_stops_on_sigterm(frozen_database_relay):
    """SIGTERM with the database frozen: the relay gives up the unwritten rows and exits
    within 20 s (deploy/relay@.service gives it 30: TimeoutStopSec) instead of waiting for
    the database for ever."""
    relay, output = frozen_database_relay
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(timeout=20) == 0, "".join(output)
    assert any("ledger writes not done" in line for line in output), "".join(output)


def test_a_second_sigterm_stops_a_relay_at_once(frozen_database_relay):
    """A second SIGTERM during the shutdown's wait for the database: exit now (code 1)."""
    relay, output = frozen_database_relay
    relay.send_signal(signal.SIGTERM)
    while not any("stopping: " in line for line in output):
        assert relay.poll() is None, "".join(output)
        time.sleep(0.05)
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(timeout=WAIT_S) == 1, "".join(output)
    assert any("stopping at once" in line for line in output), "".join(output)


# --- a rolling restart (systemd restarts each relay in turn) keeps every session ----------


@dataclass
class Held:
    """One accepted, controlled session as its two ends see it."""

    technician: str
    session: str
    resume: str
    token: str
    accepted_at: float
    agent: ClientConnection
    viewer: ClientConnection


async def hold_session(cluster: Cluster, technician: str) -> Held:
    agent = await open_ws(f"{cluster.ws_url}/ws/agent?technician={technician}")
    await agent.send(agent_hello(technician))
    registered = await receive(agent)
    session = registered["session"]
    viewer = await open_ws(f"{cluster.ws_url}/ws/viewer?technician={technician}")
    await viewer.send(viewer_hello(technician))
    token = (await receive(viewer))["token"]
    await viewer.send(json.dumps({"type": "accept", "session": session}))
    await next_of(viewer, "accepted")
    accepted_at = time.time()
    await viewer.send(json.dumps({"type": "take_control", "session": session}))
    assert (await next_of(agent, "control"))["granted"] is True
    while await directory_control(cluster, session) != technician:  # published
        await asyncio.sleep(0.1)
    return Held(technician, session, registered["resume"], token, accepted_at, agent, viewer)


async def come_back(cluster: Cluster, held: Held) -> None:
    """What the agent and the viewer do on CLOSE_RESTART: reconnect and resume."""
    held.agent, again = await rejoin_agent(cluster, held.resume, held.technician)
    assert (again["type"], again["session"]) == ("registered", held.session), again
    held.resume = again["resume"]
    assert (await next_of(held.agent, "accepted"))["session"] == held.session
    held.viewer = await open_ws(f"{cluster.ws_url}/ws/viewer?technician={held.technician}")
    await held.viewer.send(viewer_hello(held.technician, token=held.token))
    assert (await receive(held.viewer))["type"] == "welcome"
    await held.viewer.send(json.dumps({"type": "accept", "session": held.session}))
    rejoined = await next_of(held.viewer, "accepted")
    assert rejoined["session"] == held.session
    assert rejoined["elapsed_s"] >= time.time() - held.accepted_at - 2  # the same clock
    await held.viewer.send(json.dumps({"type": "take_control", "session": held.session}))
    assert (await next_of(held.agent, "control"))["granted"] is True


async def still_there(held: Held) -> None:
    """A marker round trip: the viewer's key reaches the agent over the links it has."""
    await held.viewer.send(json.dumps({"type": "key", "session": held.session,
                                       "code": "KeyM", "key": "m", "down": True}))
    assert (await next_of(held.agent, "key"))["key"] == "m"


def test_a_rolling_restart_of_every_relay_keeps_every_session(cluster):
    """SIGTERM and start again each relay in turn: the sessions on it are handed over
    (links closed with CLOSE_RESTART, agents and viewers resume elsewhere, control to take
    again; a session nobody accepted yet ends relay-shutdown); at the end each session has
    one ledger row, billed from its first acceptance."""
    async def scenario() -> tuple[list[Held], list[int], float]:
        held = [await hold_session(cluster, who) for who in ("david", "petur")]
        waiting: ClientConnection | None = await open_ws(
            f"{cluster.ws_url}/ws/agent?technician=petur")
        await waiting.send(agent_hello("petur"))  # never accepted: nothing to resume
        assert (await receive(waiting))["type"] == "registered"
        restarted_with = []
        for relay in cluster.relays:
            holder = {h.technician: served_by(cluster.url, h.technician) for h in held}
            assert await asyncio.to_thread(cluster.stop_relay, relay) == 0
            moved = [h for h in held if holder[h.technician] == relay.name]
            restarted_with.append(len(moved))
            if waiting is not None and holder["petur"] == relay.name:
                assert (await next_of(waiting, "ended"))["reason"] == "relay-shutdown"
                waiting = None  # checked: it was on the first relay of petur's to restart
            for h in moved:
                for ws in (h.agent, h.viewer):
                    await asyncio.wait_for(ws.wait_closed(), WAIT_S)
                    assert ws.close_code == protocol.CLOSE_RESTART
                await come_back(cluster, h)
            await asyncio.to_thread(cluster.start_relay, relay)
            await asyncio.to_thread(cluster.wait_healthy, [relay])
            for h in held:
                await still_there(h)
        for h in held:
            await h.viewer.send(json.dumps({"type": "end", "session": h.session,
                                            "reason": ""}))
            assert (await next_of(h.agent, "ended"))["reason"] == "technician-ended"
        return held, restarted_with, time.time()

    try:
        held, restarted_with, ended_at = run(scenario())
    except BaseException:
        for relay in cluster.relays:
            print(relay.name, "".join(relay.output[-30:]))
        raise
    finally:
        for relay in cluster.relays:
            if not relay.alive():
                cluster.start_relay(relay)
    assert sum(restarted_with) >= 2  # each session was on a relay that restarted
    rows = ledger(cluster)
    for h in held:
        (row,) = [r for r in rows if r["session"] == h.session]
        assert row["end_reason"] == "technician-ended"
        assert abs(int(row["billable_seconds"]) - (ended_at - h.accepted_at)) <= 2



def test_a_relay_restarted_quickly_takes_its_own_sessions_back(cluster):
    """Straight to one relay (as with a single relay behind HAProxy): SIGTERM, start it
    again, and the agent and the viewer resume the same session on it, the same clock."""
    relay = cluster.relays[-1]
    direct = f"ws://127.0.0.1:{relay.port}"

    async def rejoin(path: str) -> ClientConnection:
        for _ in range(WAIT_S * 4):  # the agent's backoff while the relay restarts
            try:
                return await open_ws(f"{direct}{path}")
            except OSError:
                await asyncio.sleep(0.25)
        pytest.fail(f"{relay.name} did not come back")

    async def scenario() -> None:
        agent = await open_ws(f"{direct}/ws/agent?technician=david")
        await agent.send(agent_hello())
        registered = await receive(agent)
        session = registered["session"]
        viewer = await open_ws(f"{direct}/ws/viewer?technician=david")
        await viewer.send(viewer_hello())
        token = (await receive(viewer))["token"]
        await viewer.send(json.dumps({"type": "accept", "session": session}))
        await next_of(viewer, "accepted")
        accepted_at = time.time()
        while await directory_control(cluster, session) is None:  # published
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(cluster.stop_relay, relay) == 0
        await asyncio.wait_for(agent.wait_closed(), WAIT_S)
        assert agent.close_code == protocol.CLOSE_RESTART
        restarting = asyncio.create_task(asyncio.to_thread(cluster.start_relay, relay))
        agent = await rejoin("/ws/agent?technician=david")
        await agent.send(agent_hello(resume=registered["resume"]))
        again = await receive(agent)
        assert (again["type"], again["session"]) == ("registered", session), again
        await restarting
        viewer = await rejoin("/ws/viewer?technician=david")
        await viewer.send(viewer_hello(token=token))
        assert (await receive(viewer))["type"] == "welcome"
        await viewer.send(json.dumps({"type": "accept", "session": session}))
        rejoined = await next_of(viewer, "accepted")
        assert rejoined["elapsed_s"] >= time.time() - accepted_at - 2  # the same clock
        await viewer.send(json.dumps({"type": "end", "session": session, "reason": ""}))
        assert (await next_of(agent, "ended"))["reason"] == "technician-ended"

    try:
        run(scenario())
    except BaseException:
        print(relay.name, "".join(relay.output[-30:]))
        raise
    finally:
        if not relay.alive():
            cluster.start_relay(relay)


# --- revocation's promise: every relay within 2 s -----------------------------------------

PASSWORD = {"rosa": "rosa-password", "omar": "omar-password"}  # 8 characters at least
REVOCATION_PROMISE_S = 2.0  # issue 16: "Revocation (disable, new password) reaches every
# relay within 2 s"


@pytest.mark.timing
@pytest.mark.parametrize("change", ["disable", "set_password"])
def test_revocation_on_one_relay_ends_the_viewer_on_another_within_2_s(cluster, change: str):
    """Disable or a new password, committed through relay-1's store: the person's viewer on
    relay-2 gets login-expired within the issue's promise of 2 s (measured from the call)."""
    from relay.pgstore import PostgresStore

    person = {"disable": "rosa", "set_password": "omar"}[change]
    cluster.cli("add-technician", person, "--name", person.title(), password=PASSWORD[person])
    first, second = cluster.relays[:2]

    async def scenario() -> tuple[str, float]:
        viewer = await open_ws(f"ws://127.0.0.1:{second.port}/ws/viewer?technician={person}")
        await viewer.send(json.dumps({"type": "hello", "role": "viewer",
                                      "version": protocol.PROTOCOL_VERSION, "user": person,
                                      "password": PASSWORD[person]}))
        assert (await receive(viewer))["type"] == "welcome"
        await next_of(viewer, "queue")  # logged in and listed: the relay knows this viewer
        store = await PostgresStore.open(cluster.postgres.url, first.name, create=False)
        try:
            started = time.monotonic()
            if change == "disable":
                await store.disable(person)
            else:
                await store.set_password(person, "a brand new password")
            code = (await next_of(viewer, "error"))["code"]
            return code, time.monotonic() - started
        finally:
            await store.close()

    code, took_s = run(scenario())
    print(f"{change}: viewer on {second.name} closed {took_s * 1000:.0f} ms after the call")
    assert code == "login-expired"
    assert took_s < REVOCATION_PROMISE_S
