"""The relay's send buffer towards a viewer: the kernel holds little of it, so that frames
wait in the relay's own queue (bounded, measured) and acknowledgements follow the viewer's
link."""

from __future__ import annotations

import asyncio
import socket

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from relay.server import VIEWER_UNSENT_BYTES, Link


def unsent_limit(role: str) -> int:
    """TCP_NOTSENT_LOWAT of the relay's socket for a Link of ``role`` (real sockets)."""
    async def scenario() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handler(ws) -> None:
            Link(ws, role, "127.0.0.1", lambda link: None, lambda link, monitor: None)
            sock = ws.transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}"):
                return await asyncio.wait_for(seen, 10)

    return asyncio.run(scenario())


def test_a_viewers_socket_holds_at_most_viewer_unsent_bytes_unsent() -> None:
    """A viewer's link: the kernel keeps at most VIEWER_UNSENT_BYTES unsent; an agent's link
    is left as the system has it."""
    assert unsent_limit("viewer") == VIEWER_UNSENT_BYTES
    assert unsent_limit("agent") != VIEWER_UNSENT_BYTES
