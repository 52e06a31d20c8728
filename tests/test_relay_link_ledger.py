"""What a relay link tells a peer waits for the ledger's rows queued before it (so a relay
killed a moment later bills what its peers saw), and only for those: real websockets on the
loopback, the relay's Link and QueuedRecorder over a store whose writes the test releases."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

import protocol
from relay.recorder import QueuedRecorder
from relay.server import Link

SESSION = "s" * 22
SCREENS = (protocol.Screen(0, 0, 640, 480), protocol.Screen(0, 0, 640, 480))  # desktop, monitor


class GatedStore:
    """relay.stores.Store's two writes used here; each finishes once the test releases it."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {"accepted": asyncio.Event(),
                                                "control": asyncio.Event()}
        self.written: list[str] = []

    async def accepted(self, session: str, at: float) -> None:
        await self.gates["accepted"].wait()
        self.written.append("accepted")

    async def control(self, session: str, taken: bool, at: float) -> None:
        await self.gates["control"].wait()
        self.written.append("control")


def test_a_message_waits_for_the_rows_queued_before_it_not_for_those_after() -> None:
    """The agent's `accepted`, queued after the acceptance's row and before the control row:
    it arrives once the acceptance is written, while the control row is still unwritten."""

    async def scenario() -> tuple[list[str], list[str]]:
        store = GatedStore()
        recorder = QueuedRecorder(store)  # type: ignore[arg-type]
        writer = asyncio.create_task(recorder.run())
        told: list[str] = []

        async def handler(ws) -> None:
            link = Link(ws, "agent", "127.0.0.1", lambda link: None,
                        lambda link, monitor: None)
            link.ledger = recorder
            recorder.accepted(SESSION, 1.0)
            link.send(protocol.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, "482913"))
            recorder.control(SESSION, True, 1.0)  # the support person took control at once
            store.gates["accepted"].set()
            writing = asyncio.create_task(link.run())
            await ws.wait_closed()  # the client has read what it needs
            writing.cancel()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                message = protocol.decode_control(await asyncio.wait_for(ws.recv(), 10))
                told = [type(message).__name__, *store.written]
                store.gates["control"].set()
                await asyncio.wait_for(recorder.flush(), 10)
        writer.cancel()
        return told, store.written

    told, written = asyncio.run(scenario())
    assert told == ["Accepted", "accepted"]  # the acceptance written first, control not yet
    assert written == ["accepted", "control"]
