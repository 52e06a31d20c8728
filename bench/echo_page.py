"""The browser's floor: a bare page that sends each keydown through a loopback websocket echo
and draws on the reply. Nothing a remote-desktop viewer does can be faster than this in the
same browser on the same machine.

    python -m bench.echo_page        # prints "echo page on http://127.0.0.1:PORT/"
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from http import HTTPStatus

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>echo floor</title></head>
<body style="margin:0">
<canvas id="screen" width="400" height="200" tabindex="0"></canvas>
<script>
  const canvas = document.getElementById("screen");
  const context = canvas.getContext("2d");
  const socket = new WebSocket(`ws://${location.host}/echo`);
  let colour = 0;
  socket.onopen = () => { document.body.dataset.ready = "1"; canvas.focus(); };
  socket.onmessage = () => {
    colour = 1 - colour;
    context.fillStyle = colour ? "#202020" : "#f0f0f0";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  canvas.addEventListener("keydown", (event) => {
    event.preventDefault();
    socket.send(event.code);
  });
</script>
</body></html>
"""


async def serve() -> None:
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    async def echo(ws) -> None:
        with contextlib.suppress(Exception):
            async for data in ws:
                await ws.send(data)

    def page(connection, request):
        if request.path == "/echo":
            return None
        if request.path != "/":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        return Response(HTTPStatus.OK, "OK", Headers([
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE))),
            ("Connection", "close")]), PAGE)

    async with ws_serve(echo, "127.0.0.1", 0, process_request=page,
                        compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"echo page on http://127.0.0.1:{port}/", flush=True)
        await asyncio.Future()


def main() -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
