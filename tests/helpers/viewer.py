"""The scripted support person: a viewer without a browser, speaking protocol.py over a real
websockets client. It logs in, accepts, takes control, draws every update it receives the
way viewer.js does (so a test can compare it with the real screen) and acknowledges each
whole update, as the relay's flow control expects.

Tests that must send what no viewer would send use helpers/wire.py instead.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

import protocol as p

WAIT_S = 60  # generous: the machine is shared; a hang fails the test instead of blocking it


class ScriptedViewer:
    """One support person's logged-in viewer; messages and drawn updates arrive in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        # control messages, and frames once drawn; None when the connection has ended
        self.messages: asyncio.Queue[p.Message | p.Frame | None] = asyncio.Queue()
        self.session = ""
        self.screens: tuple[p.Screen, ...] = ()
        self.monitor = -1  # the monitor of the last update drawn
        self.canvas: Image.Image | None = None
        self.updates = 0
        self.half_images = 0  # images drawn scaled up from half resolution
        # a viewer slower than the agent's updates (a busy browser): each whole update is
        # acknowledged this long after it is drawn, and nothing is read meanwhile
        self.ack_delay_s = 0.0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def login(cls, relay, user: str = "david", password: str | None = None
                    ) -> ScriptedViewer:
        """Logged in as ``user`` (password ``<user>-pw`` unless given), from the relay's page."""
        ws = await asyncio.wait_for(connect(
            f"{relay.ws_url}/ws/viewer", origin=relay.http_url, compression=None,
            max_size=p.MAX_MESSAGE_BYTES), WAIT_S)
        await ws.send(p.encode_control(p.ViewerHello(
            "viewer", p.PROTOCOL_VERSION, user=user,
            password=f"{user}-pw" if password is None else password)))
        viewer = cls(ws)
        await viewer.expect(p.Welcome)
        return viewer

    @classmethod
    async def accepted(cls, relay, user: str = "david") -> ScriptedViewer:
        """Logged in, and has accepted the first customer waiting for it."""
        viewer = await cls.login(relay, user)
        await viewer.accept_waiting()
        return viewer

    @classmethod
    async def in_control(cls, relay, user: str = "david") -> ScriptedViewer:
        """Accepted, and has taken control."""
        viewer = await cls.accepted(relay, user)
        await viewer.take_control()
        return viewer

    async def send(self, message: p.Message) -> None:
        await self.ws.send(p.encode_control(message))

    async def expect(self, kind: type, where: Callable[[p.Message], bool] = lambda m: True,
                     timeout: float = WAIT_S) -> p.Message:
        """The next message of ``kind`` (p.Frame for updates) matching ``where``; others are
        passed over."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {kind.__name__} in {timeout} s; saw {seen[-10:]}")
            try:
                message = await asyncio.wait_for(self.messages.get(), left)
            except TimeoutError:
                continue
            if message is None:
                pytest.fail(f"the relay closed the viewer before {kind.__name__}; "
                            f"saw {seen[-10:]}")
            if isinstance(message, kind) and where(message):
                return message
            if not isinstance(message, p.Frame):
                seen.append(message)

    async def wait_for_pending(self, timeout: float = WAIT_S) -> p.Waiting:
        """The first session waiting (pending) in this support person's queue."""
        queue = await self.expect(
            p.Queue, lambda q: any(s.state == "waiting" for s in q.sessions), timeout)
        return next(s for s in queue.sessions if s.state == "waiting")

    async def accept_waiting(self, timeout: float = WAIT_S) -> p.Accepted:
        """Wait for a pending session and accept it (view only)."""
        return await self.accept((await self.wait_for_pending(timeout)).session)

    async def accept(self, session: str) -> p.Accepted:
        """Accept ``session``, or rejoin it after this support person's tab went away."""
        self.session = session
        await self.send(p.Accept(session))
        return await self.expect(p.Accepted, lambda m: m.session == self.session)

    async def take_control(self) -> None:
        await self.send(p.TakeControl(self.session))
        await self.expect(p.Control, lambda m: m.session == self.session and m.granted)

    async def release_control(self) -> None:
        await self.send(p.ReleaseControl(self.session))
        await self.expect(p.Control, lambda m: m.session == self.session and not m.granted)

    async def click(self, x: int, y: int) -> None:
        """A left click at (x, y) of the monitor drawn last (sent; the test waits for it)."""
        monitor = max(self.monitor, 0)
        for down in (True, False):
            await self.send(p.Button(self.session, monitor, x, y, "left", down))

    async def type_keys(self, *keys: tuple[str, str]) -> None:
        """Press and release physical keys, as (KeyboardEvent.code, KeyboardEvent.key)."""
        for code, key in keys:
            await self.send(p.Key(self.session, code, key, True))
            await self.send(p.Key(self.session, code, key, False))

    async def every_input(self) -> None:
        """One of each input kind, all of which would be visible if injected."""
        s = self.session
        for message in (p.PointerMove(s, 1, 10, 10), p.Button(s, 1, 10, 10, "left", True),
                        p.Button(s, 1, 10, 10, "left", False), p.Wheel(s, 1, 10, 10, 0, 1),
                        p.Key(s, "KeyA", "a", True), p.Key(s, "KeyA", "a", False),
                        p.Text(s, "x")):
            await self.send(message)

    async def round_trip(self) -> None:
        """Everything sent before this has been handled by the relay (a marker, not a wait)."""
        await self.send(p.Ping(time.time()))
        await self.expect(p.Pong)

    async def settle(self, quiet_s: float = 0.8) -> None:
        """Draw the first whole update, then updates until none has come for ``quiet_s`` (on
        a loaded machine the first may take longer than that)."""
        await self.expect(p.Frame, lambda frame: frame.last)
        while True:
            try:
                message = await asyncio.wait_for(self.messages.get(), quiet_s)
            except TimeoutError:
                return
            if message is None:
                pytest.fail("the relay closed the viewer while the screen was settling")

    def pixels(self) -> np.ndarray:
        """The monitor drawn last, as an RGB array (rows, columns, 3)."""
        assert self.canvas is not None, "no update drawn yet"
        return np.asarray(self.canvas)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def __aenter__(self) -> ScriptedViewer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                if isinstance(data, bytes):
                    frame = p.decode_frame(data)
                    self._draw(frame)
                    if frame.last:
                        self.updates += 1
                        if self.ack_delay_s:
                            await asyncio.sleep(self.ack_delay_s)
                        await self.ws.send(p.encode_control(p.Ack(self.session, frame.seq)))
                    await self.messages.put(frame)
                else:
                    message = p.decode_control(data)
                    if isinstance(message, p.Accepted):  # before its first update is drawn
                        self.screens = message.screens
                    await self.messages.put(message)
        except Exception as error:  # the test fails on the None below, saying so
            print(f"viewer connection ended: {error!r}", file=sys.stderr)
        finally:
            await self.messages.put(None)

    def _draw(self, frame: p.Frame) -> None:
        area = self.screens[frame.monitor]
        if self.canvas is None or frame.monitor != self.monitor:
            self.canvas = Image.new("RGB", (area.width, area.height))
            self.monitor = frame.monitor
        scale = p.image_scale(frame)  # checked before decoding, as viewer/display.js does
        image = Image.open(io.BytesIO(frame.image)).convert("RGB")
        if scale != 1:  # a half-resolution image fills its rectangle (drawImage's scaling)
            self.half_images += 1
            image = image.resize((frame.width, frame.height), Image.Resampling.BILINEAR)
        self.canvas.paste(image, (frame.x, frame.y))
