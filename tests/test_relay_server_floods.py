"""Strangers and floods, against a real relay process on 127.0.0.1 (issue 11): what a
connection that has not said hello may hold, hellos throttled per address but answered,
refusals that cannot flood the ledger or the log, fake customers that cannot hide the real
one, and screen updates that cannot overwhelm a viewer. Source addresses 127.0.x.y stand
for "many addresses"; relay/limits.py's rules without sockets are tests/test_limits.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

import protocol
from relay import limits, server
from tests.helpers.relay import (
    no_traceback,
    relay_events,
    rss_bytes,
)
from tests.helpers.wire import (
    SCREENS,
    WAIT_S,
    active_session,
    agent_hello,
    closed_code,
    frame,
    message,
    next_frame,
    next_of,
    open_ws,
    receive,
    run,
    source,
    start_viewer,
    status_of,
    upgrade_request,
)

MIB = 1024 * 1024


# Also: test_pairing.py::test_waiting_sessions_per_subnet_are_capped_well_above_one_address,
# test_queue_lists_the_newest_sessions_and_counts_the_rest,
# test_refused_hellos_fill_the_ledger_only_up_to_a_budget_then_one_summary,
# test_frames_beyond_the_update_window_are_dropped_and_a_full_image_asked_once,
# test_a_rectangle_outside_the_announced_monitor_is_a_protocol_error.


async def agent_from(relay, address: str, technician: str = "david", **hello: Any
                     ) -> tuple[Any, dict]:
    ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(address, 0))
    await ws.send(agent_hello(technician, **hello))
    return ws, await receive(ws)  # type: ignore[return-value]


def raw_upgrade(port: int, address: str, path: str = "/ws/agent") -> tuple[socket.socket, int]:
    """A websocket upgrade from ``address`` over a plain socket: the socket and the status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S,
                                    source_address=(address, 0))
    sock.sendall(upgrade_request(port, path))
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return sock, status_of(reply)


def closed_by_peer(sock: socket.socket) -> bool:
    """Read until the relay closes: True on EOF, a reset or a websocket close frame."""
    sock.settimeout(WAIT_S)
    try:
        while data := sock.recv(65536):
            if b"\x88" in data[:2]:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("endpoint", ["agent", "viewer"])
@pytest.mark.parametrize("change", [{"screens": [SCREENS[0]] * 1000}, {"user": "U" * 60_000}],
                         ids=["thousands of monitors", "huge user"])
def test_a_first_message_larger_than_a_hello_is_refused_with_1009(relay, endpoint, change):
    """Before its hello a connection may send only a hello's size: a hello with thousands of
    monitors or a 60,000-character name (both within a control message's size) closes
    with 1009."""
    hello = {**json.loads(agent_hello()), **change}
    assert protocol.MAX_HELLO_BYTES < len(json.dumps(hello)) < protocol.MAX_CONTROL_BYTES

    async def scenario():
        ws = await open_ws(relay.ws_url + f"/ws/{endpoint}")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(hello))
        return (await closed_code(ws))[0]

    assert run(scenario()) == 1009
    no_traceback(relay)


def test_connections_parking_big_frames_before_hello_are_closed_and_memory_stays_flat(relay):
    """60 connections from two addresses each send a websocket frame announcing 1 MiB and
    all of it but its last byte, before any hello: each is closed at once (the frame is
    refused on its length) and the relay's memory grows by less than 16 MiB."""
    size = MIB
    header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0"  # mask 0

    def attack(address: str) -> bool:
        sock, status = raw_upgrade(relay.port, address)
        with sock:
            assert status == 101
            with contextlib.suppress(OSError):  # the relay may close before it all went out
                sock.sendall(header + b"\0" * (size - 1))
            return closed_by_peer(sock)

    async def scenario():
        before = rss_bytes(relay.process.pid)
        addresses = ["127.0.0.8"] * 30 + ["127.0.0.9"] * 30
        closed = await asyncio.gather(*(asyncio.to_thread(attack, a) for a in addresses))
        return closed, before, rss_bytes(relay.process.pid)

    closed, before, after = run(scenario())
    assert all(closed)
    assert after - before < 16 * MIB, (before, after)
    no_traceback(relay)


def test_connections_before_hello_are_capped_per_address_and_the_rest_still_served(relay):
    """One address holding MAX_UNAUTHENTICATED_PER_ADDRESS upgrades without a hello gets 503
    for the next one; another address still connects and registers; once one of the idle
    connections goes away, the first address may connect again."""
    cap = limits.MAX_UNAUTHENTICATED_PER_ADDRESS
    idle = [raw_upgrade(relay.port, "127.0.0.10") for _ in range(cap)]
    assert [status for _, status in idle] == [101] * cap
    refused, status = raw_upgrade(relay.port, "127.0.0.10")
    refused.close()
    assert status == 503

    async def scenario():
        _, reply = await agent_from(relay, "127.0.0.11")
        assert reply["type"] == "registered"

    run(scenario())
    idle[0][0].close()
    deadline = time.monotonic() + WAIT_S  # the relay notices the close on its own time
    while (status := raw_upgrade(relay.port, "127.0.0.10"))[1] != 101:
        status[0].close()
        assert time.monotonic() < deadline, "the freed slot was never given back"
        time.sleep(0.05)
    for sock, _ in [*idle, status]:
        sock.close()
    no_traceback(relay)


def test_connections_before_hello_are_capped_in_total(relay_factory):
    """With room for 10 connections before their hello, 10 idle ones from 10 addresses make
    an 11th address wait (503); a registered agent does not count."""
    relay = relay_factory("--max-unauthenticated", "10")
    relay.add_technician("david", "David", "david-pw")

    async def scenario():
        _, reply = await agent_from(relay, "127.0.0.30")
        assert reply["type"] == "registered"

    run(scenario())
    idle = [raw_upgrade(relay.port, f"127.0.0.{40 + i}") for i in range(10)]
    assert [status for _, status in idle] == [101] * 10
    refused, status = raw_upgrade(relay.port, "127.0.0.60")
    for sock, _ in [*idle, (refused, status)]:
        sock.close()
    assert status == 503
    no_traceback(relay)


def test_hellos_are_throttled_per_address_but_answered_at_once(relay):
    """One address guessing support people's ids gets HELLO_BURST answers, then a plain
    "too many" sentence at once for every further guess, real ids included; a customer
    elsewhere still gets registered, or for an unknown id the plain sentence, at once."""
    guesses = limits.HELLO_BURST + 30

    async def scenario():
        codes = []
        for i in range(guesses):
            _, reply = await agent_from(relay, "127.0.0.12", f"guess{i}")
            codes.append(reply.get("code"))
        _, reply = await agent_from(relay, "127.0.0.12", "david")
        assert reply["code"] == "too-many-attempts" and "try again" in reply["message"]
        _, elsewhere = await agent_from(relay, "127.0.0.13", "david")
        _, unknown = await agent_from(relay, "127.0.0.13", "nobody")
        return codes, elsewhere, unknown

    codes, elsewhere, unknown = run(scenario())
    burst = limits.HELLO_BURST
    # The bucket refills while the guesses run: a few more may get through, never most.
    assert codes[:burst] == ["technician-unknown"] * burst
    assert codes.count("too-many-attempts") >= guesses - burst - 10
    assert elsewhere["type"] == "registered"
    assert unknown["code"] == "technician-unknown" and "not available" in unknown["message"]
    no_traceback(relay)


def test_a_flood_of_refused_hellos_writes_a_bounded_number_of_rows_and_lines(relay):
    """300 refused hellos (unknown ids and throttled ones) from 10 addresses: the ledger
    gets at most the refusal budget of rows, and the log a bounded number of lines."""

    async def scenario():
        for i in range(300):
            ws, reply = await agent_from(relay, source(i % 10), f"nobody{i}")
            assert reply["type"] == "error", reply
            await closed_code(ws)

    run(scenario())
    refused = [e for e in relay_events(relay) if e[2] == "refused"]
    assert len(refused) <= limits.REFUSAL_LINES_PER_WINDOW, len(refused)
    lines = [line for line in relay.output
             if "technician nobody" in line or "throttled" in line]
    assert len(lines) <= 2 * limits.REFUSAL_LINES_PER_WINDOW, "".join(lines)
    no_traceback(relay)


def test_a_flood_of_fake_customers_cannot_hide_the_real_one(relay):
    """MAX_QUEUE_ENTRIES + 20 fake customers from many addresses: the support person's
    queue lists the newest, the real customer who called last among them, and counts
    the rest; a /24 holds at most MAX_WAITING_PER_SUBNET of them."""
    per_subnet = protocol.MAX_WAITING_PER_SUBNET
    fakes = protocol.MAX_QUEUE_ENTRIES + 20

    async def scenario():
        viewer, _, _ = await start_viewer(relay.ws_url)
        for i in range(fakes):  # per_subnet of them in each /24
            address = f"127.0.{1 + i // per_subnet}.{1 + i % per_subnet}"
            _, reply = await agent_from(relay, address, machine=f"FAKE-{i}")
            assert reply["type"] == "registered", (i, reply)
        _, reply = await agent_from(relay, "127.0.1.200", machine="FAKE-over-the-cap")
        assert reply["code"] == "too-many-waiting"
        _, real = await agent_from(relay, "127.0.200.1", machine="REAL-CUSTOMER")
        while True:
            queue = await next_of(viewer, "queue")
            if queue["sessions"] and queue["sessions"][-1]["session"] == real["session"]:
                return queue

    queue = run(scenario())
    assert len(queue["sessions"]) == protocol.MAX_QUEUE_ENTRIES
    assert queue["sessions"][-1]["machine"] == "REAL-CUSTOMER"
    assert queue["more"] == fakes + 1 - protocol.MAX_QUEUE_ENTRIES
    no_traceback(relay)


def test_churning_agents_do_not_push_a_slow_viewer_off_its_link(relay):
    """200 customers wait (a queue of ~45 KB); one more connects and leaves 200 times. A
    viewer that reads nothing meanwhile is not closed and answers a ping afterwards, and a
    viewer that reads gets at most a few queue updates a second."""
    waiting = protocol.MAX_QUEUE_ENTRIES
    per_subnet = protocol.MAX_WAITING_PER_SUBNET

    async def scenario():
        for i in range(waiting):
            _, reply = await agent_from(relay, f"127.0.{1 + i // per_subnet}.{1 + i % per_subnet}",
                                        machine=f"M{i:03}" + "x" * 60, user="u" * 64)
            assert reply["type"] == "registered"
        slow, _, _ = await start_viewer(relay.ws_url, max_queue=1)
        reading, _, _ = await start_viewer(relay.ws_url)
        updates = 0

        async def read() -> None:
            nonlocal updates
            while True:
                updates += (await next_of(reading, "queue")) is not None

        reader = asyncio.create_task(read())
        started = time.monotonic()
        for i in range(200):  # a fresh address when the throttle would say no
            ws, reply = await agent_from(relay, f"127.0.250.{1 + i // 15}")
            assert reply["type"] == "registered", reply
            await ws.send(message("close", reason=""))
            await closed_code(ws)
        elapsed = time.monotonic() - started
        reader.cancel()
        await slow.send(message("ping", t=1))
        while (data := await receive(slow)) != {"type": "pong", "t": 1}:
            assert not isinstance(data, dict) or data["type"] in ("queue", "pong"), data
        return updates, elapsed

    updates, elapsed = run(scenario())
    assert updates <= elapsed / server.QUEUE_INTERVAL_S + 3, (updates, elapsed)
    no_traceback(relay)


def test_frames_beyond_the_update_window_never_reach_the_viewer(relay):
    """An agent sending ten updates without waiting for acknowledgements: the viewer gets
    MAX_UPDATES_IN_FLIGHT of them, the agent one refresh, and after its full image and
    the viewer's acks the stream goes on."""
    full = protocol.FLAG_LAST | protocol.FLAG_FULL

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await agent.send(frame(0, flags=full))
        for seq in range(1, 10):
            await agent.send(frame(seq))
        await agent.send(message("cursor", monitor=1, x=1, y=1))  # a marker after them
        got = []
        while not isinstance(data := await receive(viewer), dict) or data["type"] != "cursor":
            got += [protocol.decode_frame(data).seq] if isinstance(data, bytes) else []
        assert got == list(range(protocol.MAX_UPDATES_IN_FLIGHT))
        assert (await next_of(agent, "refresh"))["monitor"] == 1
        await agent.send(frame(10, flags=full))
        assert protocol.decode_frame(await next_frame(viewer)).seq == 10
        await viewer.send(message("ack", session=session, seq=10))
        await next_of(agent, "ack")
        await agent.send(frame(11))
        assert protocol.decode_frame(await next_frame(viewer)).seq == 11

    run(scenario())
    no_traceback(relay)


def test_tiny_frames_queued_for_a_viewer_cost_no_more_than_the_bound():
    """A viewer that does not read, sent 28-byte rectangles: what its queue holds stays
    within MAX_PENDING_FRAME_BYTES of memory, each message counted with its bookkeeping."""
    link = server.Link(None, "viewer", "192.0.2.1", lambda _: None,  # type: ignore[arg-type]
                       lambda _, __: None)
    tiny = frame(1, 8)
    assert len(tiny) == 28
    tracemalloc.start()
    try:
        for _ in range(server.MAX_PENDING_FRAME_BYTES // 28 + 1000):
            link.send_frame(bytes(bytearray(tiny)), 1)  # a fresh object, as a socket gives
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < server.MAX_PENDING_FRAME_BYTES * 1.1, peak / MIB


def test_the_relay_raises_its_open_file_limit_to_the_hard_limit(relay_factory):
    """Started with a soft limit of 256 open files, the relay runs with the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the relay inherits it
    try:
        relay = relay_factory()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits_text = Path(f"/proc/{relay.process.pid}/limits").read_text()
    line = next(line for line in limits_text.splitlines() if line.startswith("Max open files"))
    running_soft, running_hard = line.split()[3:5]
    assert running_soft == running_hard != "256", line


def test_refusals_under_a_flood_are_logged_at_a_bounded_rate(relay_factory):
    """With room for 2 connections before their hello, 300 more attempts are refused with
    503 and the log gets at most the budget of lines about them."""
    relay = relay_factory("--max-unauthenticated", "2")
    idle = [raw_upgrade(relay.port, "127.0.0.70") for _ in range(2)]
    statuses = []
    for i in range(300):
        sock, status = raw_upgrade(relay.port, source(i % 50))
        sock.close()
        statuses.append(status)
    for sock, _ in idle:
        sock.close()
    assert statuses == [503] * 300
    lines = [line for line in relay.output if "refused" in line]
    assert len(lines) <= limits.REFUSAL_LINES_PER_WINDOW, len(lines)
    no_traceback(relay)


