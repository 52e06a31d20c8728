"""Bounded resources and hostile agent data, against a real relay process on 127.0.0.1: size
limits, no compression, stalled and unread connections, capped waiting sessions and input
rates, and an agent's bad hello or message ending cleanly. Source addresses 127.0.0.x stand
for "many addresses"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

import protocol
from tests.helpers.relay import (
    ledger_csv,
    no_traceback,
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
    next_of,
    open_ws,
    raw_http,
    receive,
    run,
    session_with_a_viewer_that_stops_reading,
    source,
    start_agent,
    start_viewer,
    status_of,
    upgrade_request,
    without_receipt,
)

# --- Bounded resources -------------------------------------------------------------
# Also: test_relay_server.py::test_message_over_the_size_limit_closes_with_1009,
# test_viewer_that_stops_reading_neither_stalls_the_agent_nor_queues_frames;
# test_pairing.py::test_waiting_sessions_per_address_are_capped,
# test_input_is_rate_limited_in_order.

MIB = 1024 * 1024


def test_oversized_messages_close_1009_and_memory_stays_flat(relay):
    """Twenty messages one byte over the limit, on both endpoints: each closed with 1009,
    and the relay's resident memory grows by less than 24 MiB over them."""
    oversized = b"\0" * (protocol.MAX_MESSAGE_BYTES + 1)

    async def attempt(endpoint: str) -> int | None:
        if endpoint == "agent":
            ws, _ = await start_agent(relay.ws_url)
        else:
            ws, _, _ = await start_viewer(relay.ws_url)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(oversized)
        return (await closed_code(ws))[0]

    async def scenario():
        for endpoint in ("agent", "viewer"):  # warm up the allocator
            assert await attempt(endpoint) == 1009
        before = rss_bytes(relay.process.pid)
        for endpoint in ("agent", "viewer") * 10:
            assert await attempt(endpoint) == 1009
        return before, rss_bytes(relay.process.pid)

    before, after = run(scenario())
    assert after - before < 24 * MIB, (before, after)
    no_traceback(relay)


def test_viewers_not_yet_logged_in_cannot_park_large_messages(relay):
    """A viewer may send only control-sized messages, even before login (a login refused
    by the limits is answered at once, so nothing waits there any more): connections that
    send frame-sized data before their hello are closed with 1009 at once, and the relay's
    memory stays flat."""
    big = b"\0" * (protocol.MAX_CONTROL_BYTES + 1)

    async def scenario():
        before = rss_bytes(relay.process.pid)
        parked = []
        for _ in range(8):
            ws = await open_ws(relay.ws_url + "/ws/viewer")
            with contextlib.suppress(ConnectionClosed):
                for _ in range(8):
                    await ws.send(big)
            parked.append(ws)
        codes = [(await closed_code(ws))[0] for ws in parked]
        return codes, before, rss_bytes(relay.process.pid)

    codes, before, after = run(scenario())
    assert codes == [1009] * 8
    assert after - before < 24 * MIB, (before, after)
    no_traceback(relay)


@pytest.mark.parametrize("endpoint", ["agent", "viewer"])
def test_compression_is_never_negotiated(relay, endpoint):
    """A client offering permessage-deflate gets an upgrade without any extension."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, f"/ws/{endpoint}",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Extensions: permessage-deflate"), read_all=False)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert status_of(reply) == 101
    assert b"sec-websocket-extensions" not in head


def test_compressed_frame_is_refused(relay):
    """A frame with the compression bit (RSV1) set anyway closes the connection with 1002."""

    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent")
        masked = bytes(b ^ m for b, m in zip(b"{}", b"\0\0\0\0", strict=False))
        ws.transport.write(bytes([0xC1, 0x82]) + b"\0\0\0\0" + masked)  # FIN|RSV1, text
        return (await closed_code(ws))[0]

    assert run(scenario()) == 1002
    no_traceback(relay)


@dataclass
class StallCrowd:
    """Raw TCP clients that open and then stall: half a request line and nothing, a request
    dribbled a byte at a time, or a finished upgrade and no hello. Runs in a thread."""

    port: int
    stalled: int
    dribbling: int
    silent_upgrades: int
    closed_at: dict[int, float] = field(default_factory=dict)
    opened_at: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def run(self, deadline_s: float) -> None:
        try:
            self._run(deadline_s)
        except BaseException as error:  # reported by the test
            self.error.append(error)
            self.ready.set()

    def _run(self, deadline_s: float) -> None:
        selector = selectors.DefaultSelector()
        sockets: list[socket.socket] = []
        dribble = upgrade_request(self.port, "/ws/agent")
        try:
            for i in range(self.stalled + self.dribbling + self.silent_upgrades):
                # Each from its own address: the per-address cap on connections before their
                # hello is proven elsewhere; here every one must run into the timeouts.
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S,
                                                source_address=(source(i), 0))
                if i < self.stalled:
                    sock.sendall(b"GET /ws/agent HT")
                elif i >= self.stalled + self.dribbling:
                    sock.sendall(upgrade_request(self.port, "/ws/agent"))
                    reply = b""
                    while b"\r\n\r\n" not in reply:
                        reply += sock.recv(4096)
                    assert status_of(reply) == 101
                sock.setblocking(False)
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_READ, i)
            self.opened_at = time.monotonic()
            self.ready.set()
            sent = 0
            end = self.opened_at + deadline_s
            while len(self.closed_at) < len(sockets) and time.monotonic() < end:
                for key, _ in selector.select(timeout=0.5):
                    if self._closed(key.fileobj):  # type: ignore[arg-type]
                        self.closed_at[key.data] = time.monotonic()
                        selector.unregister(key.fileobj)
                if sent < len(dribble) - 4:  # never the final CRLF CRLF
                    for i in range(self.stalled, self.stalled + self.dribbling):
                        if i not in self.closed_at:
                            with contextlib.suppress(OSError):
                                sockets[i].send(dribble[sent:sent + 1])
                    sent += 1
        finally:
            selector.close()
            for sock in sockets:
                sock.close()

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        """EOF, a reset, an HTTP error answer or a websocket close frame (opcode 8)."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return not data or data.startswith(b"HTTP/1.1 4") or b"\x88" in data[:2] or (
            b'"code":"protocol"' in data)


def test_500_stalled_connections_are_closed_while_a_real_session_works(relay_factory):
    """500 connections that stall or dribble before or after the upgrade are all closed
    within the handshake/hello timeout (3 s here) plus a margin, while a real agent and
    viewer connect, accept, stream and type."""
    timeout_s = 3.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < 4096 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))  # the relay inherits it
    relay = relay_factory("--handshake-timeout", str(timeout_s), "--hello-timeout",
                          str(timeout_s))
    relay.add_technician("david", "David", "david-pw")
    limits = Path(f"/proc/{relay.process.pid}/limits").read_text()
    open_files = int(next(line for line in limits.splitlines()
                          if line.startswith("Max open files")).split()[3])
    assert open_files >= 1200, f"the relay may open only {open_files} files"
    crowd = StallCrowd(relay.port, stalled=200, dribbling=150, silent_upgrades=150)
    worker = threading.Thread(target=crowd.run, args=(timeout_s + 20,), daemon=True)
    worker.start()

    async def scenario():
        await asyncio.to_thread(crowd.ready.wait, WAIT_S * 2)
        assert not crowd.error, crowd.error
        agent, viewer, session = await active_session(relay)
        update = frame(1, 20_000)
        await agent.send(update)
        while await receive(viewer) != update:
            pass
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        await viewer.send(message("key", session=session, code="KeyA", key="a", down=True))
        assert (await next_of(agent, "key"))["code"] == "KeyA"

    run(scenario())
    worker.join(timeout_s + 40)
    assert not crowd.error, crowd.error
    assert len(crowd.closed_at) == 500, f"{500 - len(crowd.closed_at)} still open"
    slowest = max(crowd.closed_at.values()) - crowd.opened_at
    assert slowest <= timeout_s + 10, slowest
    no_traceback(relay)


def test_viewer_that_never_reads_does_not_grow_relay_memory(relay):
    """200 MiB of frames for a viewer that reads nothing: the agent is still read and the
    relay's resident memory grows by less than 48 MiB."""

    async def scenario():
        agent, _, _ = await session_with_a_viewer_that_stops_reading(relay)
        before = rss_bytes(relay.process.pid)
        for seq in range(200):
            await agent.send(frame(seq, MIB, monitor=1))
        await asyncio.wait_for(await agent.ping(), WAIT_S)  # the relay still reads the agent
        return before, rss_bytes(relay.process.pid)

    before, after = run(scenario())
    assert after - before < 48 * MIB, (before, after)


def test_waiting_sessions_per_address_are_capped_over_the_wire(relay):
    """Three waiting sessions from 127.0.0.2; the fourth is refused too-many-waiting; another
    address is not affected; when one ends, 127.0.0.2 may register again."""
    cap = protocol.MAX_WAITING_PER_ADDRESS

    async def register(source: str):
        ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(source, 0))
        await ws.send(agent_hello())
        return ws, await receive(ws)

    async def scenario():
        agents = [await register("127.0.0.2") for _ in range(cap)]
        assert all(reply["type"] == "registered" for _, reply in agents)
        refused, reply = await register("127.0.0.2")
        assert reply["code"] == "too-many-waiting"
        assert (await closed_code(refused))[0] == 1008
        assert (await register("127.0.0.3"))[1]["type"] == "registered"
        await agents[0][0].send(message("close", reason=""))
        await closed_code(agents[0][0])
        assert (await register("127.0.0.2"))[1]["type"] == "registered"

    run(scenario())


def test_trusted_proxy_forwarded_address_is_the_client_address(relay_factory):
    """Behind --trusted-proxy the cap and the ledger use the last X-Forwarded-For address;
    from any other peer, or when it is not an IP address, the header is ignored."""
    relay = relay_factory("--trusted-proxy", "127.0.0.1")
    relay.add_technician("david", "David", "david-pw")
    cap = protocol.MAX_WAITING_PER_ADDRESS

    async def register(source: str, forwarded: str):
        ws = await open_ws(relay.ws_url + "/ws/agent", local_addr=(source, 0),
                           additional_headers={"X-Forwarded-For": forwarded})
        await ws.send(agent_hello())
        return (await receive(ws)).get("type", "")

    async def scenario():
        for _ in range(cap):
            assert await register("127.0.0.1", "10.9.9.9, 198.51.100.1") == "registered"
        assert await register("127.0.0.1", "10.9.9.9, 198.51.100.1") == "error"
        assert await register("127.0.0.1", "198.51.100.2") == "registered"
        assert await register("127.0.0.2", "198.51.100.3") == "registered"
        assert await register("127.0.0.1", "not-an-address") == "registered"

    run(scenario())
    addresses = [row["address"] for row in ledger_csv(relay)]
    assert addresses == ["198.51.100.1"] * cap + ["198.51.100.2", "127.0.0.2", "127.0.0.1"]


def test_input_rate_is_capped_without_reordering(relay):
    """2000 text events at once: fewer reach the agent, in their order, and the viewer is
    told rate-limited."""
    count = 2000

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("take_control", session=session))
        await next_of(agent, "control")
        for i in range(count):
            await viewer.send(message("text", session=session, text=str(i)))
        await viewer.send(message("ack", session=session, seq=1))  # marks the end
        delivered = []
        while (data := await receive(agent))["type"] != "ack":
            if data["type"] == "text":
                delivered.append(int(data["text"]))
        assert (await next_of(viewer, "error"))["code"] == "rate-limited"
        return delivered

    delivered = run(scenario())
    assert protocol.INPUT_BURST <= len(delivered) < count
    assert delivered == sorted(delivered) and delivered[:protocol.INPUT_BURST] == list(
        range(protocol.INPUT_BURST))


# --- Agent data is hostile data (relay side) ---------------------------------------

HOSTILE_HELLOS = {
    "escape sequence in machine": ({"machine": "PC\x1b[31mred"}, "machine contains control"),
    "newline in user": ({"user": "anna\nroot"}, "user contains control"),
    "NUL in machine": ({"machine": "PC\x00"}, "machine contains control"),
    "right-to-left override": ({"user": "anna\u202egpj.exe"}, "user contains control"),
    "over-long machine": ({"machine": "M" * 65}, "machine is longer than 64"),
    "machine is a number": ({"machine": 5}, "machine must be a string"),
    "user is a list": ({"user": ["anna"]}, "user must be a string"),
    "machine is null": ({"machine": None}, "machine must be a string"),
    "user is an object": ({"user": {"x": 1}}, "user must be a string"),
    "screen too wide": ({"screens": [{"x": 0, "y": 0, "width": 32768, "height": 800}] * 2},
                        "screen width must be between"),
    "screen astronomically tall": (
        {"screens": [{"x": 0, "y": 0, "width": 800, "height": 10**30}] * 2},
        "screen height must be between"),
    "negative width": ({"screens": [{"x": 0, "y": 0, "width": -1, "height": 800}] * 2},
                       "screen width must be between"),
    "fractional size": ({"screens": [{"x": 0, "y": 0, "width": 1.5, "height": 800}] * 2},
                        "screen width must be an integer"),
    "size as text": ({"screens": [{"x": 0, "y": 0, "width": "1280", "height": 800}] * 2},
                     "screen width must be an integer"),
    "too many monitors": ({"screens": [SCREENS[0]] * 18}, "1 to 16 monitors"),
    "no monitor": ({"screens": [SCREENS[0]]}, "1 to 16 monitors"),
    "screens not a list": ({"screens": "all"}, "screens must be a list"),
    "extra field in a screen": ({"screens": [{**SCREENS[0], "dpi": 96}] * 2},
                                "x, y, width and height"),
    "technician path": ({"technician": "../david"}, "technician must be"),
    "technician upper case": ({"technician": "DAVID"}, "technician must be"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HELLOS))
def test_hostile_agent_hello_is_refused_with_a_clear_error(relay, case):
    """Control characters, over-long or mistyped names, absurd sizes, too many monitors:
    an error naming the field, close 1008, no session and no ledger row."""
    changes, expected = HOSTILE_HELLOS[case]

    async def scenario():
        ws = await open_ws(relay.ws_url + "/ws/agent")
        fields = {**json.loads(agent_hello()), **changes}
        await ws.send(json.dumps(fields))
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == "protocol", reply
        assert expected in reply["message"], reply["message"]
        code, reason = await closed_code(ws)
        assert code == 1008 and reason.isprintable()
        _, _, queue = await start_viewer(relay.ws_url)
        assert queue["sessions"] == []

    run(scenario())
    assert ledger_csv(relay) == []
    no_traceback(relay)


@pytest.mark.parametrize(("case", "data"), [
    ("monitor layout with too many monitors", message("screens", screens=[SCREENS[0]] * 18)),
    ("cursor far outside", message("cursor", monitor=1, x=10**9, y=0)),
    ("frame header lying about its length", frame(1, 1000)[:-1]),
    ("frame header too short", b"\x01\x01"),
    ("frame for monitor 200", frame(1, 1000)[:2] + b"\xc8" + frame(1, 1000)[3:]),
    ("frame of an unknown kind", b"\x09" + frame(1, 1000)[1:]),
    ("frame with unknown flags", frame(1, 1000)[:1] + b"\x81" + frame(1, 1000)[2:]),
])
def test_hostile_agent_message_mid_session_ends_it_cleanly(relay, case, data):
    """After acceptance, a malformed agent message closes the agent with 1008 and ends the
    session (agent-lost) without reaching the viewer."""

    async def scenario():
        agent, viewer, session = await active_session(relay)
        await agent.send(data)
        assert (await next_of(agent, "error"))["code"] == "protocol"
        assert (await closed_code(agent))[0] == 1008
        seen = []
        while not isinstance(got := await receive(viewer), dict) or got["type"] != "ended":
            seen.append(got)
        assert without_receipt(got) == {"type": "ended", "session": session, "by": "relay",
                                        "reason": "agent-lost"}
        assert all(isinstance(m, dict) and m["type"] in ("queue", "error") for m in seen), seen

    run(scenario())
    no_traceback(relay)
