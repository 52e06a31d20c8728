"""The customer's side for tests against a real relay: ``ScriptedAgent``, a websockets client
on /ws/agent that says hello the way agent.py does, sends the screen images the test paints
and records what the relay sends it; and ``start_agent_on_fakes``, the real agent loop
(agent.Agent) with the fake screen, input and tray of tests/fakes.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import threading
import time
from collections.abc import Callable

from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import agent
import agent_config
import protocol
from tests.fakes import FakeInput, FakeScreen, FakeTray

WAIT_S = 15


class ScriptedAgent:
    """A websockets client on /ws/agent that says hello like agent.py and records replies."""

    def __init__(self, relay, technician: str = "david", machine: str = "FRONT-DESK",
                 user: str = "anna", size: tuple[int, int] = (1600, 1000),
                 monitors: int = 1) -> None:
        width, height = size
        screens = [protocol.Screen(0, 0, width * monitors, height)]
        screens += [protocol.Screen(width * i, 0, width, height) for i in range(monitors)]
        self.size = size
        self._exit = contextlib.ExitStack()
        self.socket = self._exit.enter_context(connect(
            f"{relay.ws_url}/ws/agent", max_size=protocol.MAX_MESSAGE_BYTES,
            open_timeout=WAIT_S))
        hello = protocol.AgentHello("agent", protocol.PROTOCOL_VERSION, technician, machine,
                                    user, tuple(screens))
        self.socket.send(protocol.encode_control(hello))
        registered = protocol.decode_control(self.socket.recv(timeout=WAIT_S))
        assert isinstance(registered, protocol.Registered), registered
        self.registered = registered
        self.session = registered.session
        self.inbox: queue.Queue[protocol.Message | None] = queue.Queue()
        self.received: list[protocol.Message] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for data in self.socket:
                self.inbox.put(protocol.decode_control(data))
        except ConnectionClosed:
            pass
        self.inbox.put(None)

    def expect(self, kind: type, where: Callable = lambda m: True) -> protocol.Message:
        """The next message of this class (others are kept in ``received``)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message is None:
                raise AssertionError(f"the relay closed the agent before {kind.__name__}")
            self.received.append(message)
            if isinstance(message, kind) and where(message):
                return message
        raise AssertionError(f"no {kind.__name__} within {WAIT_S} s; got {self.received}")

    def drain(self) -> list[protocol.Message]:
        """Everything received so far that nobody expected."""
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return self.received
            if message is not None:
                self.received.append(message)

    def inputs_until(self, code: str) -> list[protocol.Message]:
        """Every key and text message up to and including the key down of ``code``."""
        seen = []
        while True:
            message = self.expect((protocol.Key, protocol.Text))
            seen.append(message)
            if isinstance(message, protocol.Key) and message.code == code and message.down:
                return seen

    def send_screen(self, colour: tuple[int, int, int], seq: int = 1) -> None:
        """A full image of the one monitor, as PNG."""
        buffer = io.BytesIO()
        Image.new("RGB", self.size, colour).save(buffer, "PNG")
        width, height = self.size
        frame = protocol.Frame(protocol.FRAME_PNG, protocol.FLAG_LAST | protocol.FLAG_FULL, 1,
                               seq, 0, 0, width, height, buffer.getvalue())
        self.socket.send(protocol.encode_frame(frame))

    def send_image(self, image: Image.Image, seq: int, x: int = 0, y: int = 0,
                   kind: int = protocol.FRAME_PNG, flags: int = protocol.FLAG_LAST,
                   monitor: int = 1, size: tuple[int, int] | None = None) -> None:
        """One frame of ``image`` at (x, y); ``size``: its rectangle's, if not the image's
        (twice it: a half-resolution image)."""
        buffer = io.BytesIO()
        if kind == protocol.FRAME_PNG:
            image.save(buffer, "PNG")
        else:
            image.save(buffer, "JPEG", quality=95, subsampling=0)
        width, height = size or image.size
        frame = protocol.Frame(kind, flags, monitor, seq, x, y, width, height,
                               buffer.getvalue())
        self.socket.send(protocol.encode_frame(frame))

    def send_full(self, colour: tuple[int, int, int], seq: int = 0) -> None:
        self.send_image(Image.new("RGB", self.size, colour), seq,
                        flags=protocol.FLAG_LAST | protocol.FLAG_FULL)

    def send(self, message: protocol.Message) -> None:
        self.socket.send(protocol.encode_control(message))

    def close(self) -> None:
        self._exit.close()


def start_agent_on_fakes(relay, screen=None, user_input=None, tray=None
                         ) -> tuple[agent.Agent, asyncio.Future]:
    """The real agent loop for david, on fake backends, connecting to ``relay``: the agent
    and the task running it. The tray's Close calls the agent's request_close."""
    tray = tray or FakeTray()
    runner = agent.Agent(url=agent_config.agent_url(relay.ws_url), technician="david",
                         screen=screen or FakeScreen(), input=user_input or FakeInput(),
                         tray=tray, machine="pc-1", user="anna")
    tray.on_close = runner.request_close
    return runner, asyncio.ensure_future(runner.run())


async def agent_reaches(runner: agent.Agent, predicate: Callable[[agent.Agent], object],
                        timeout: float = WAIT_S) -> None:
    """Wait until ``predicate(runner)`` holds (the agent's own state, seen from the test)."""
    deadline = time.monotonic() + timeout
    while not predicate(runner):
        assert time.monotonic() < deadline, "the agent never got there"
        await asyncio.sleep(0.01)
