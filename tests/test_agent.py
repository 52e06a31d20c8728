"""The agent's session loop with fake backends against a scripted websockets relay on port 0."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

import agent
import agent_config
import agent_session as core
import agent_ui
import protocol as p
import screen_codec as codec
import screen_pacing as pacing
from tests.fakes import FakeInput, FakeInstance, FakePanel, FakeScreen, FakeTray
from tests.helpers.desktop import find_window, start_xvfb

ROOT = Path(__file__).resolve().parent.parent
SESSION = "session-0123456789abcdef"
RESUME = "resume-0123456789abcdef"
CODE = "482913"


class ScriptedRelay:
    """A websockets server on 127.0.0.1:0 that hands each agent connection to the test."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls

    async def __aenter__(self) -> ScriptedRelay:
        self.connections: asyncio.Queue = asyncio.Queue()
        self.server = await serve(self._handler, "127.0.0.1", 0, max_size=p.MAX_MESSAGE_BYTES,
                                  ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'wss' if self.tls else 'ws'}://127.0.0.1:{port}"
        self.paths: list[str] = []
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handler(self, ws) -> None:
        self.paths.append(ws.request.path)
        await self.connections.put(ws)
        await ws.wait_closed()

    async def next(self) -> Peer:
        return Peer(await asyncio.wait_for(self.connections.get(), 10))


class Peer:
    """The relay's side of one agent connection."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.controls: list[p.Message] = []

    async def send(self, message: p.Message) -> None:
        await self.ws.send(p.encode_control(message))

    async def recv(self, timeout: float = 10):
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return p.decode_frame(data) if isinstance(data, bytes) else p.decode_control(data)

    async def hello(self) -> p.AgentHello:
        hello = await self.recv()
        assert isinstance(hello, p.AgentHello)
        return hello

    async def register(self) -> p.AgentHello:
        hello = await self.hello()
        await self.send(p.Registered(SESSION, "David", 600, RESUME, CODE))
        return hello

    async def accept(self, hello: p.AgentHello, elapsed_s: float = 0.0,
                     paused: bool = False) -> None:
        await self.send(p.Accepted(SESSION, "David", hello.machine, hello.user, hello.screens,
                                   CODE, elapsed_s, paused))

    async def update(self) -> list[p.Frame]:
        """The frames of the next screen update (control messages are kept in controls)."""
        frames = []
        while True:
            message = await self.recv()
            if isinstance(message, p.Frame):
                frames.append(message)
                if message.last:
                    return frames
            else:
                self.controls.append(message)

    async def until_closed(self) -> list:
        """Everything that arrives until the agent closes the connection."""
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(await self.recv())
        return got

    async def refreshed(self) -> list[p.Frame]:
        """A marker round trip: refresh, and the first update that arrives after it (any
        update the agent sent before handling the refresh comes first)."""
        await self.send(p.Refresh(SESSION, 0))
        return await self.update()


async def polls(screen: FakeScreen, count: int) -> None:
    """Until the streamer has grabbed the screen ``count`` more times: the polls before the
    last of them have sent whatever they were going to send."""
    target = screen.grabs + count
    while screen.grabs < target:
        await asyncio.sleep(0.005)


class Clock:
    """A clock the test moves by hand (rate limits, reconnect grace)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_agent(relay, screen=None, user_input=None, tray=None, clock=None,
               ca_pem: str = "", window=None) -> agent.Agent:
    tray = tray or FakeTray()
    runner = agent.Agent(url=agent_config.agent_url(relay.url), technician="david",
                         screen=screen or FakeScreen(), input=user_input or FakeInput(),
                         tray=tray, machine="pc-1", user="anna",
                         ssl_context=agent_config.make_ssl_context(ca_pem),
                         window=window, company="Acme IT", person="David",
                         phone="269 998 1389", **({"clock": clock} if clock else {}))
    if isinstance(tray, FakeTray):
        tray.on_close, tray.on_pause = runner.request_close, runner.request_pause
    return runner


async def started_agent(relay, **agent_args) -> tuple[asyncio.Task, Peer]:
    """An agent running against the scripted relay, and the relay's side of its connection."""
    task = asyncio.create_task(make_agent(relay, **agent_args).run())
    return task, await relay.next()


async def accepted_agent(relay, **agent_args) -> tuple[asyncio.Task, Peer]:
    """The same, registered and accepted by the support person."""
    task, peer = await started_agent(relay, **agent_args)
    await peer.accept(await peer.register())
    return task, peer


def paint(frames: list[p.Frame], canvas: np.ndarray) -> None:
    """Draw decoded frames onto an RGB canvas, as the viewer does."""
    for frame in frames:
        image = Image.open(io.BytesIO(frame.image)).convert("RGB")
        if p.image_scale(frame) != 1:  # half resolution: scaled up to fill its rectangle
            image = image.resize((frame.width, frame.height), Image.Resampling.BILINEAR)
        image = np.asarray(image)
        assert image.shape[:2] == (frame.height, frame.width)
        canvas[frame.y:frame.y + frame.height, frame.x:frame.x + frame.width] = image


def rgb(screen: FakeScreen) -> np.ndarray:
    return screen.image[..., 2::-1]


async def draw_until_screen(peer: Peer, canvas: np.ndarray, screen: FakeScreen) -> None:
    """Draw frames as they come, acknowledging each update on its own last frame as the
    viewer does (updates may interleave: an echo between a bulk update's strips), until the
    canvas is the screen."""
    while not np.array_equal(canvas, rgb(screen)):
        message = await peer.recv()
        if isinstance(message, p.Frame):
            paint([message], canvas)
            if message.last:
                await peer.send(p.Ack(SESSION, message.seq))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_pending_yellow_then_accepted_green_then_ended_by_technician() -> None:
    """registered shows yellow with "Connection active", accepted green naming who sees the
    screen, ended hides the icon; the tooltips name the state in words."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            task, peer = await started_agent(relay, tray=tray)
            hello = await peer.register()
            assert (hello.technician, hello.machine, hello.user) == ("david", "pc-1", "anna")
            assert relay.paths == ["/ws/agent"]
            await peer.accept(hello)
            await peer.update()
            await peer.send(p.Ended(SESSION, "technician", "done"))
            outcome = await task
        waiting, seeing = "Waiting for David to accept", "David (Acme IT) can see your screen"
        assert tray.shown == [("pending", waiting, ""), ("pending", waiting, "Connection active"),
                              ("active", seeing, ""),
                              ("active", seeing, "David can see your screen")]
        assert tray.hidden
        assert outcome == agent.Outcome(agent.EXIT_OK)
    run(scenario())


def test_nothing_is_sent_before_acceptance(monkeypatch) -> None:
    """While pending the agent sends nothing but its hello, though it grabs and encodes the
    first image ahead (kept in the agent): the end of the session is the marker (all it sent
    before, it sent before closing)."""
    monkeypatch.setattr(agent, "AHEAD_INTERVAL_S", 0.01)

    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            task, peer = await started_agent(relay, screen=screen)
            await peer.register()
            await polls(screen, 3)  # encoded ahead, twice at least
            screen.image[:20, :20, :3] = 9
            await polls(screen, 2)
            await peer.send(p.Ended(SESSION, "relay", "expired"))
            assert await peer.until_closed() == []
            outcome = await task
        assert outcome == agent.Outcome(agent.EXIT_FAILED, p.customer_words("expired"))
        assert "expired" not in outcome.message  # a sentence, not the code
    run(scenario())


def test_the_first_image_is_the_screen_at_the_accept_not_the_one_encoded_ahead(monkeypatch
                                                                              ) -> None:
    """The screen changes in its lower strip after the agent encoded the first image ahead:
    the first update after the accept shows the screen as it is then; updates keep working
    from there (the copy encoded ahead became the viewer's)."""
    monkeypatch.setattr(agent, "AHEAD_INTERVAL_S", 0.01)

    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            screen.image[20:30, 10:200, :3] = 255
            task, peer = await started_agent(relay, screen=screen)
            hello = await peer.register()
            await polls(screen, 2)  # the second waited for the first one's encoding
            screen.image[150:160, 10:300, :3] = (0, 200, 0)  # in the strip below row 128
            await peer.accept(hello)
            canvas = np.zeros((200, 320, 3), np.uint8)
            paint(await peer.update(), canvas)
            assert np.array_equal(canvas, rgb(screen))
            screen.image[40:50, 10:100, :3] = 0  # found by comparing with the copy given
            while not np.array_equal(canvas, rgb(screen)):
                paint(await peer.update(), canvas)
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_first_update_is_a_full_lossless_image_of_the_screen() -> None:
    """The first update has FLAG_FULL, ends with FLAG_LAST and reassembles to the screen."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            screen.image[50:60, 10:200, :3] = 255  # a white bar: still few colours
            task, peer = await accepted_agent(relay, screen=screen)
            frames = await peer.update()
            canvas = np.zeros((200, 320, 3), np.uint8)
            paint(frames, canvas)
            assert all(f.flags & p.FLAG_FULL and f.kind == p.FRAME_PNG for f in frames)
            assert [f.last for f in frames] == [False] * (len(frames) - 1) + [True]
            assert np.array_equal(canvas, rgb(screen))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_four_1080p_monitors_of_noise_stream_within_the_frame_limit() -> None:
    """Four 1080p monitors side by side, all noise: the whole desktop (monitor 0) arrives as
    frames none larger than MAX_FRAME_BYTES (the relay's websocket refuses larger), first
    quickly (the link is not known yet), then refined, and reassembles to the screen."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen([(i * 1920, 0, 1920, 1080) for i in range(4)])
            screen.image[...] = np.random.default_rng(4).integers(0, 256, screen.image.shape,
                                                                  dtype=np.uint8)
            task, peer = await accepted_agent(relay, screen=screen)
            frames = await peer.update()
            refined = await peer.update()
            canvas = np.zeros((1080, 7680, 3), np.uint8)
            covered = sum(f.width * f.height for f in frames)
            assert all(len(p.encode_frame(f)) <= p.MAX_FRAME_BYTES for f in frames + refined)
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert covered == 7680 * 1080 and frames[0].flags & p.FLAG_FULL
        paint(frames + refined, canvas)
        assert np.abs(canvas.astype(int) - rgb(screen)).mean() < 16  # JPEG of noise: close
    run(scenario())


def test_changed_region_is_sent_alone_and_idle_screen_sends_nothing() -> None:
    """After the full image only the changed pixels travel; an unchanged screen sends
    nothing."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            task, peer = await accepted_agent(relay, screen=screen)
            canvas = np.zeros((200, 320, 3), np.uint8)
            first = await peer.update()
            paint(first, canvas)
            await peer.send(p.Ack(SESSION, first[0].seq))
            await polls(screen, 3)  # the streamer looked at the unchanged screen twice
            marker = await peer.refreshed()
            assert marker[0].flags & p.FLAG_FULL and marker[0].seq == first[0].seq + 1
            await peer.send(p.Ack(SESSION, marker[0].seq))
            screen.image[70:80, 130:140, :3] = (0, 255, 0)
            second = await peer.update()
            assert not second[0].flags & p.FLAG_FULL
            assert [(f.x, f.y, f.width, f.height) for f in second] == [(130, 70, 10, 10)]
            paint(second, canvas)
            assert np.array_equal(canvas, rgb(screen))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_never_more_than_max_updates_in_flight() -> None:
    """A changing screen without acks stops after MAX_UPDATES_IN_FLIGHT - 1 updates (the
    last place is kept for input's echo); an ack lets one more."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            screen.changing = True
            task, peer = await accepted_agent(relay, screen=screen)
            seqs = [(await peer.update())[0].seq for _ in range(p.MAX_UPDATES_IN_FLIGHT - 1)]
            await peer.send(p.Ack(SESSION, seqs[0]))
            assert (await peer.update())[0].seq == seqs[-1] + 1
            # the marker: a refresh answers with a full image; an update sent without an ack
            # before it would arrive first
            marker = await peer.refreshed()
            assert marker[0].flags & p.FLAG_FULL and marker[0].seq == seqs[-1] + 2
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_refresh_selects_a_monitor_and_sends_it_whole() -> None:
    """refresh{monitor: 2} gives a full image of the second monitor with its size."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen([(0, 0, 320, 200), (320, 0, 256, 128)])
            screen.image[:128, 320:, :3] = (0, 0, 255)
            task, peer = await started_agent(relay, screen=screen)
            hello = await peer.register()
            assert [s.width for s in hello.screens] == [576, 320, 256]
            await peer.accept(hello)
            first = await peer.update()
            assert {f.monitor for f in first} == {0}
            await peer.send(p.Refresh(SESSION, 2))
            frames = await peer.update()
            while frames[0].monitor != 2:
                frames = await peer.update()
            canvas = np.zeros((128, 256, 3), np.uint8)
            paint(frames, canvas)
            assert frames[0].flags & p.FLAG_FULL
            assert (canvas == (255, 0, 0)).all()
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_input_is_injected_only_while_control_is_granted() -> None:
    """Input before control, after release and after the end injects nothing."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input = FakeInput()
            task, peer = await started_agent(relay, user_input=user_input)
            hello = await peer.register()
            await peer.send(p.PointerMove(SESSION, 1, 5, 5))  # pending: not yet accepted
            await peer.accept(hello)
            await peer.send(p.Key(SESSION, "KeyA", "a", True))  # accepted, no control
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.PointerMove(SESSION, 1, 10, 20))
            await peer.send(p.Key(SESSION, "ShiftLeft", "Shift", True))
            await peer.send(p.Button(SESSION, 1, 10, 20, "left", True))
            await peer.send(p.Text(SESSION, "héllo\n"))
            await peer.send(p.Wheel(SESSION, 1, 10, 20, 0, 3))
            await peer.send(p.Control(SESSION, False))
            await peer.send(p.Key(SESSION, "KeyB", "b", True))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert user_input.events == [
            ("move", 10, 20), ("key", "ShiftLeft", True), ("move", 10, 20),
            ("button", "left", True), ("type", "héllo\n"), ("move", 10, 20), ("scroll", 0, 3),
            ("key", "ShiftLeft", False), ("button", "left", False)]
        assert user_input.held == set()
    run(scenario())


def test_out_of_range_unknown_and_foreign_input_is_dropped() -> None:
    """Points outside the monitor, unknown monitors and keys, and another session's input."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input = FakeInput()
            task, peer = await accepted_agent(relay, user_input=user_input)
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.PointerMove(SESSION, 1, 320, 10))  # one past the right edge
            await peer.send(p.PointerMove(SESSION, 1, 10, 200))
            await peer.send(p.PointerMove(SESSION, 5, 1, 1))
            await peer.send(p.Key(SESSION, "NoSuchKey", "x", True))
            await peer.send(p.Key("another-session-123456", "KeyA", "a", True))
            await peer.send(p.PointerMove(SESSION, 1, 319, 199))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert user_input.events == [("move", 319, 199)]
    run(scenario())


def test_input_on_a_second_monitor_lands_at_its_desktop_offset() -> None:
    """Coordinates are relative to the named monitor; the agent adds its desktop origin."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input = FakeInput()
            screen = FakeScreen([(0, 0, 320, 200), (320, 40, 256, 128)])
            task = asyncio.create_task(
                make_agent(relay, screen=screen, user_input=user_input).run())
            peer = await relay.next()
            await peer.accept(await peer.register())
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.PointerMove(SESSION, 2, 10, 20))
            await peer.send(p.PointerMove(SESSION, 0, 500, 150))
            await peer.send(p.PointerMove(SESSION, 2, 256, 1))  # past monitor 2's right edge
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert user_input.events == [("move", 330, 60), ("move", 500, 150)]
    run(scenario())


def test_a_changed_monitor_layout_is_announced_and_sent_whole() -> None:
    """A new monitor layout: screens{...} to the viewer, then a full image."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            task, peer = await accepted_agent(relay, screen=screen)
            first = await peer.update()
            await peer.send(p.Ack(SESSION, first[0].seq))
            screen.layout = [p.Screen(0, 0, 160, 100)]
            frames = await peer.update()
            assert p.Screens((p.Screen(0, 0, 160, 100), p.Screen(0, 0, 160, 100))) \
                in peer.controls
            assert frames[0].flags & p.FLAG_FULL
            assert sum(f.width * f.height for f in frames) == 160 * 100
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_input_rate_is_capped_at_the_burst_when_time_stands_still() -> None:
    """With the clock frozen only INPUT_BURST events get through."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input = FakeInput()
            task = asyncio.create_task(
                make_agent(relay, user_input=user_input, clock=Clock()).run())
            peer = await relay.next()
            await peer.accept(await peer.register())
            await peer.send(p.Control(SESSION, True))
            for i in range(p.INPUT_BURST + 50):
                await peer.send(p.PointerMove(SESSION, 1, i % 300, 1))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert len(user_input.events) == p.INPUT_BURST
    run(scenario())


def test_close_from_tray_releases_keys_and_tells_the_relay() -> None:
    """Close in the tray menu: held keys released, close{customer-closed} sent, icon gone."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input, tray = FakeInput(), FakeTray()
            task, peer = await accepted_agent(relay, user_input=user_input, tray=tray)
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.Key(SESSION, "ControlLeft", "Control", True))
            while "key:ControlLeft" not in user_input.held:
                await asyncio.sleep(0.01)
            tray.click_close()
            messages = []
            with pytest.raises(ConnectionClosed):
                while True:
                    messages.append(await peer.recv())
            outcome = await task
        assert p.Close("customer-closed") in messages
        assert user_input.held == set()
        assert tray.hidden and outcome == agent.Outcome(agent.EXIT_OK)
    run(scenario())


def test_close_while_the_relay_does_not_answer_still_ends() -> None:
    """A relay that stops reading cannot hold Close up (closing handshake abandoned)."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            runner = make_agent(relay, tray=tray)
            task = asyncio.create_task(runner.run())
            peer = await relay.next()
            await peer.accept(await peer.register())
            await peer.update()
            peer.ws.transport.pause_reading()  # the relay hangs: no close frame comes back
            runner.request_close()
            outcome = await asyncio.wait_for(task, 10)
        assert outcome.code == agent.EXIT_OK and tray.hidden
    run(scenario())


def test_refusal_by_the_relay_is_shown_and_ends() -> None:
    """error{technician-unknown}: no tray icon, the customer reads that code's sentence."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            task, peer = await started_agent(relay, tray=tray)
            await peer.hello()
            await peer.send(p.refusal("technician-unknown", "agent"))
            outcome = await task
        assert outcome.code == agent.EXIT_FAILED
        assert outcome.message == p.customer_words("technician-unknown")
        assert tray.shown == []
    run(scenario())


def test_connection_lost_before_registration_ends_with_a_message() -> None:
    """The relay drops the connection before registering: exit with "lost"."""
    async def scenario():
        async with ScriptedRelay() as relay:
            task, peer = await started_agent(relay)
            await peer.hello()
            await peer.ws.close()
            outcome = await task
        assert outcome.code == agent.EXIT_FAILED and "lost" in outcome.message
    run(scenario())


def test_lost_connection_resumes_with_the_secret_and_shows_reconnecting() -> None:
    """A registered session reconnects with its resume secret; no input applies in the gap."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray, user_input = FakeTray(), FakeInput()
            task, peer = await started_agent(relay, tray=tray, user_input=user_input)
            hello = await peer.register()
            await peer.accept(hello)
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.Key(SESSION, "AltLeft", "Alt", True))
            await peer.update()
            peer.ws.transport.abort()  # the link breaks: no closing handshake
            again = await relay.next()
            resumed = await again.hello()
            assert resumed.resume == RESUME
            assert "reconnecting" in tray.states
            assert user_input.held == set()
            await again.send(p.Key(SESSION, "KeyA", "a", True))  # control ended with the link
            await again.accept(resumed)
            await again.update()
            await again.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert tray.states[-1] == "active"
        assert ("key", "KeyA", True) not in user_input.events
    run(scenario())


def test_deliberate_close_by_the_relay_ends_in_plain_words_without_reconnecting() -> None:
    """A close frame (not a broken link) ends the session, no reconnect; the customer reads a
    plain sentence, never the close frame's technical reason."""
    async def scenario():
        async with ScriptedRelay() as relay:
            task, peer = await accepted_agent(relay)
            await peer.ws.close(1008, "session replaced")
            outcome = await task
            assert relay.connections.empty()
        return outcome
    assert run(scenario()) == agent.Outcome(agent.EXIT_FAILED, core.LOST)


def test_capture_failure_ends_the_session_with_a_message() -> None:
    """A screen backend that fails: close{agent-error} to the relay and a clear outcome."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            screen.broken = True
            task, peer = await accepted_agent(relay, screen=screen)
            message = await peer.recv()
            while isinstance(message, p.Cursor):
                message = await peer.recv()
            assert message == p.Close("agent-error")
            return await task
    assert run(scenario()) == agent.Outcome(agent.EXIT_FAILED, core.CAPTURE_FAILED)


def test_unreachable_relay_gives_a_clear_message() -> None:
    """Nothing listening: the outcome says the support server could not be reached."""
    async def scenario():
        async with ScriptedRelay() as relay:
            url = relay.url
        runner = make_agent(type("R", (), {"url": url}))
        return await runner.run()
    outcome = run(scenario())
    assert outcome.code == agent.EXIT_FAILED
    assert outcome.message.startswith("Could not reach the support server")


def test_malformed_message_from_the_relay_closes_without_injecting() -> None:
    """Garbage or binary from the relay: closed with 1008, nothing injected, clear outcome."""
    for bad in ('{"type":"key","session":"' + SESSION + '","code":"KeyA","down":true}',
                b"\x00\x01binary"):
        async def scenario(bad=bad):
            async with ScriptedRelay() as relay:
                user_input = FakeInput()
                task, peer = await accepted_agent(relay, user_input=user_input)
                await peer.send(p.Control(SESSION, True))
                await peer.ws.send(bad)
                outcome = await task
                await peer.ws.wait_closed()
                assert peer.ws.close_code == 1008
            assert outcome.code == agent.EXIT_FAILED and user_input.events == []
        run(scenario())


def test_pointer_position_is_sent_as_cursor_relative_to_the_monitor() -> None:
    """cursor{monitor, x, y} follows the customer's pointer."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input = FakeInput()
            user_input.pointer = (30, 40)
            task, peer = await accepted_agent(relay, user_input=user_input)
            await peer.update()
            user_input.pointer = (31, 45)
            while p.Cursor(0, 31, 45) not in peer.controls:
                peer.controls.append(await peer.recv())
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
        assert p.Cursor(0, 30, 40) in peer.controls
    run(scenario())


# --- the session panel and the tray's menu ---


def panel_agent(relay, **agent_args) -> tuple[agent.Agent, FakePanel, agent_ui.Controls]:
    """An agent whose panel is a FakePanel wired as main() wires the real one."""
    controls = agent_ui.Controls()
    window = FakePanel(controls.panel_actions())
    runner = controls.agent = make_agent(relay, window=window, **agent_args)
    return runner, window, controls


async def until(check, what: str, timeout: float = 10) -> None:
    """Until ``check()`` holds (the agent works on its own loop task meanwhile)."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never: {what}")


async def next_control(peer: Peer, kind: type) -> tuple[p.Message, list]:
    """The next control message of ``kind``, and every frame and message before it."""
    before = []
    while not isinstance(message := await peer.recv(), kind):
        before.append(message)
    return message, before


def test_the_panel_follows_the_session_from_connecting_to_the_receipt() -> None:
    """Connecting, waiting with the code grouped and its digits in the title, accepted, in
    control by name, and the receipt from ended's ledger reference and billed seconds; the
    tray's tooltip names each state."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            runner, window, _ = panel_agent(relay, tray=tray)
            task = asyncio.create_task(runner.run())
            peer = await relay.next()
            assert window.states == ["connecting"]
            hello = await peer.register()
            await until(lambda: window.last.state == "waiting", "waiting")
            assert window.last.code == "482 913" and "482913" in window.last.title
            await peer.accept(hello, elapsed_s=700)
            await peer.update()
            await peer.send(p.Control(SESSION, True))
            await until(lambda: window.last.state == "control", "in control")
            assert window.last.headline == "David is using your mouse and keyboard"
            assert tray.shown[-1] == ("control", window.last.tooltip, "")
            await peer.send(p.Ended(SESSION, "technician", "technician-ended", 123, 750))
            return await task, window
    outcome, window = run(scenario())
    assert outcome == agent.Outcome(agent.EXIT_OK)
    assert window.states == ["connecting", "waiting", "accepted", "control", "ended"]
    receipt = window.last
    assert re.fullmatch(r"Session with David ended \d\d:\d\d · 12 min 30 s · ref 123",
                        receipt.headline.replace("\xa0", " ")), receipt.headline
    assert receipt.detail == p.customer_words("technician-ended")
    assert receipt.dismiss_after_s is not None  # a normal end closes itself


def test_pause_on_the_panel_stops_input_and_frames_and_the_trays_resume_sends_a_whole_image(
        ) -> None:
    """Alt+P: what the support person holds is released, the relay gets pause{true} and no
    frame or input follows; the meter stands still. Resume in the tray's menu: pause{false},
    then a whole image, and control is back as it was."""
    async def scenario():
        async with ScriptedRelay() as relay:
            user_input, tray, clock = FakeInput(), FakeTray(), Clock()
            runner, window, _ = panel_agent(relay, user_input=user_input, tray=tray,
                                            clock=clock)
            task = asyncio.create_task(runner.run())
            peer = await relay.next()
            await peer.accept(await peer.register(), elapsed_s=60)
            await peer.update()
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.Key(SESSION, "ShiftLeft", "Shift", True))
            await until(lambda: "key:ShiftLeft" in user_input.held, "Shift held")
            clock.now += 5
            window.press("p")
            pause, _ = await next_control(peer, p.Pause)
            assert pause == p.Pause(True) and user_input.held == set()
            await until(lambda: window.last.state == "paused", "the panel paused")
            assert tray.shown[-1][0] == "paused" and window.last.meter == "Session time 1 min"
            events = len(user_input.events)
            await peer.send(p.Key(SESSION, "KeyA", "a", True))  # paused: never injected
            await peer.send(p.Refresh(SESSION, 0))  # paused: no image
            clock.now += 60  # the meter would have reached 2 min, had it counted on
            tray.click_pause(False)
            resume, between = await next_control(peer, p.Pause)
            assert resume == p.Pause(False) and between == []  # no frame while paused
            frames = await peer.update()
            assert frames[0].flags & p.FLAG_FULL
            assert user_input.events[events:] == []
            await peer.send(p.Key(SESSION, "KeyB", "b", True))  # control is back
            await until(lambda: ("key", "KeyB", True) in user_input.events, "KeyB")
            assert ("key", "KeyA", True) not in user_input.events
            assert window.last.state == "control"
            assert window.last.meter == "Session time 1 min · paused 1 min, not billed"
            await peer.send(p.Ended(SESSION, "technician", "technician-ended"))
            await task
    run(scenario())


def test_the_meters_ticks_redraw_the_panel_once_a_minute() -> None:
    """A second's tick that leaves the meter's minutes as they were shows nothing new: the
    customer's screen (which the support person watches) does not change every second."""
    window, tray = FakePanel(), FakeTray()
    display = agent_ui.SessionDisplay(window, tray, "Spotlight", "David", "")
    sharing = core.View(core.ACCEPTED, "David", billed=core.Stopwatch(0.0, 100.0),
                        accepted=True)
    for second in range(150):
        display.show(sharing, 100.0 + second)
    assert [v.meter for v in window.views] == [
        "Session time under 1 min", "Session time 1 min", "Session time 2 min"]


def test_end_session_on_the_panel_closes_as_the_customer_with_the_ledgers_receipt() -> None:
    """Alt+E: close{customer-closed} to the relay, whose `ended` answer gives the receipt
    its ledger reference; the tray icon goes, the panel stays with the receipt."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            runner, window, _ = panel_agent(relay, tray=tray)
            task = asyncio.create_task(runner.run())
            peer = await relay.next()
            await peer.accept(await peer.register(), elapsed_s=42)
            await peer.update()
            window.press("e")
            close, _ = await next_control(peer, p.Close)
            assert close == p.Close("customer-closed")
            await peer.send(p.Ended(SESSION, "customer", "customer-closed", 77, 43))
            outcome = await task
        return outcome, window, tray
    outcome, window, tray = run(scenario())
    assert outcome == agent.Outcome(agent.EXIT_OK) and tray.hidden
    assert window.last.state == "ended" and window.last.headline.endswith("· 43\xa0s · ref\xa077")
    assert not window.closed  # main() closes it once read or timed out


def test_a_refusal_before_acceptance_shows_the_error_with_retry_and_the_phone() -> None:
    """error{technician-unknown}: the panel says the sentence for its code, offers Retry and
    the company's phone number, and no tray icon was ever shown."""
    async def scenario():
        async with ScriptedRelay() as relay:
            tray = FakeTray()
            runner, window, _ = panel_agent(relay, tray=tray)
            task = asyncio.create_task(runner.run())
            peer = await relay.next()
            await peer.hello()
            await peer.send(p.refusal("technician-unknown", "agent"))
            return await task, window, tray
    outcome, window, tray = run(scenario())
    assert outcome.code == agent.EXIT_FAILED and tray.shown == []
    error = window.last
    assert error.state == "error" and error.headline == p.customer_words("technician-unknown")
    assert error.phone == "If it keeps failing, call Acme IT: 269 998 1389"
    assert error.button("r").action == "retry"


def test_retry_after_a_connection_error_starts_again_and_close_ends(monkeypatch) -> None:
    """main's session loop: a refusal shows the error; Retry connects again as a new session
    on the same panel; End, then the receipt's Close, ends the program with exit 0."""
    monkeypatch.setenv("SPOTLIGHT_SCREEN", "dummy")
    monkeypatch.setenv("SPOTLIGHT_INPUT", "dummy")
    monkeypatch.setenv("SPOTLIGHT_TRAY", "log")

    async def scenario():
        async with ScriptedRelay() as relay:
            controls = agent_ui.Controls()
            window = FakePanel(controls.panel_actions())
            config = agent_config.Config("Acme IT", relay.url, (("david", "David"),))
            link = (agent_config.agent_url(relay.url), agent_config.make_ssl_context(""))
            program = asyncio.create_task(asyncio.to_thread(
                agent._sessions, config, "david", link, controls, window, None))
            first = await relay.next()
            await first.hello()
            await first.send(p.refusal("too-many-waiting", "agent"))
            await until(lambda: window.last.state == "error", "the error")
            window.press("r")
            again = await relay.next()
            hello = await again.register()
            assert hello.resume == ""  # a new session, not a resumed one
            await until(lambda: window.last.state == "waiting", "waiting again")
            window.press("e")
            await next_control(again, p.Close)
            await again.ws.close()
            await until(lambda: window.last.state == "ended", "the receipt")
            window.press("c")
            return await program
    assert run(scenario()) == agent.EXIT_OK


def test_a_second_start_brings_the_first_to_the_front_and_starts_nothing(tmp_path) -> None:
    """Two starts on one display for one user: the second asks the first (through the lock
    file's local socket) to bring its panel to the front, and exits 0 without connecting."""
    async def scenario():
        async with ScriptedRelay() as relay:
            env = {"PATH": "/usr/bin:/bin", "SPOTLIGHT_SCREEN": "dummy",
                   "SPOTLIGHT_INPUT": "dummy", "SPOTLIGHT_TRAY": "log",
                   "SPOTLIGHT_PANEL": "log", "XDG_RUNTIME_DIR": str(tmp_path)}
            command = [sys.executable, str(ROOT / "agent.py"), "--relay", relay.url,
                       "--technician", "david"]
            first = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
            peer = await relay.next()
            await peer.register()
            second = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
            second_log = (await asyncio.wait_for(second.stderr.read(), 30)).decode()
            assert await second.wait() == 0, second_log
            await peer.send(p.Ended(SESSION, "technician", "technician-ended"))
            first_log = (await asyncio.wait_for(first.stderr.read(), 30)).decode()
            assert await first.wait() == 0, first_log
            assert relay.connections.empty()
            return first_log, second_log
    first_log, second_log = run(scenario())
    assert "already running" in second_log and "panel: to the front" in first_log
    assert "Traceback" not in first_log + second_log


def test_the_lock_is_one_per_user_and_display_and_goes_with_its_holder(tmp_path) -> None:
    """LinuxInstance: a second holder on the same display is refused and the first is asked
    to the front; another display has its own; once released, the lock can be taken again,
    also after a holder that died left its socket file behind."""
    fronted = threading.Event()
    first = agent_ui.LinuxInstance(tmp_path, ":7")
    assert first.acquire(fronted.set)
    assert not agent_ui.LinuxInstance(tmp_path, ":7").acquire(lambda: None)
    assert fronted.wait(10)
    other = agent_ui.LinuxInstance(tmp_path, ":8")
    assert other.acquire(lambda: None)
    other.release()
    first.release()
    first.socket_path.touch()  # as if a program had died holding it
    again = agent_ui.LinuxInstance(tmp_path, ":7")
    assert again.acquire(lambda: None)
    again.release()


def test_the_lock_refuses_a_folder_others_can_write(tmp_path) -> None:
    """A runtime folder other users can write to could hold another user's trap: refused
    (main then runs without the lock rather than not at all)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(OSError, match="not private"):
        agent_ui.LinuxInstance(shared, ":7").acquire(lambda: None)


def test_with_no_window_to_show_the_screen_is_not_shared(tmp_path) -> None:
    """No display for the panel (and none chosen by name): the program says so in a plain
    sentence and exits 1 without connecting (nothing listens at the relay's address, and it
    never says it could not reach it)."""
    result = run_agent("--relay", "ws://127.0.0.1:9", "--technician", "david",
                       SPOTLIGHT_SCREEN="dummy", SPOTLIGHT_INPUT="dummy", SPOTLIGHT_TRAY="log",
                       XDG_RUNTIME_DIR=str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert f"{agent.APP_NAME}: {agent_ui.NO_WINDOW}" in result.stderr
    assert "Could not reach" not in result.stderr and "Traceback" not in result.stderr


def test_main_with_the_lock_held_elsewhere_exits_before_choosing_or_connecting() -> None:
    """main() behind the Instance interface: a fake that says another program runs makes it
    exit 0 at once (no picker, no panel, no connection: the relay address leads nowhere)."""
    instance = FakeInstance(first=False)
    assert agent.main(["--relay", "ws://127.0.0.1:9", "--technician", "david"],
                      instance=instance) == agent.EXIT_OK
    assert instance.asked and instance.released is None  # never held: nothing to release


# --- TLS with a pinned CA ---


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """Two CAs and server certificates from the first: good, expired, for another host."""
    folder = tmp_path_factory.mktemp("pki")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN={ca}", cwd=folder)
    for name, san, days in (("good", "IP:127.0.0.1", "2"), ("expired", "IP:127.0.0.1", "-1"),
                            ("wrong-host", "DNS:other.example", "2")):
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", days,
                "-extfile", f"{name}.ext", cwd=folder)
    return folder


def tls_server(pki: Path, name: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / f"{name}.pem", pki / f"{name}.key")
    return context


def test_pinned_ca_accepts_the_relay_it_signed(pki) -> None:
    """wss:// to a relay whose certificate the pinned CA signed connects and says hello."""
    async def scenario():
        async with ScriptedRelay(tls_server(pki, "good")) as relay:
            task = asyncio.create_task(
                make_agent(relay, ca_pem=(pki / "ca.pem").read_text()).run())
            peer = await relay.next()
            await peer.hello()
            await peer.send(p.Error("unknown-technician", "No such support person"))
            return await task
    assert "No such support person" in run(scenario()).message


@pytest.mark.parametrize(("server", "ca", "why"), [
    ("good", "other-ca", "unable to get local issuer certificate"),
    ("expired", "ca", "certificate has expired"),
    ("wrong-host", "ca", "IP address mismatch"),
])
def test_untrusted_relay_certificate_is_refused_with_a_clear_message(pki, server, ca,
                                                                     why) -> None:
    """Another CA, an expired certificate, another host: refused, the reason is named."""
    async def scenario():
        async with ScriptedRelay(tls_server(pki, server)) as relay:
            return await make_agent(relay, ca_pem=(pki / f"{ca}.pem").read_text()).run()
    outcome = run(scenario())
    assert outcome.code == agent.EXIT_FAILED
    assert "certificate is not trusted" in outcome.message and why in outcome.message


@pytest.mark.parametrize("reused", [False, True])
def test_full_motion_is_sent_at_4_2_0_then_the_still_screen_exactly(reused) -> None:
    """A screen that changes everywhere on every poll is sent as JPEG 4:2:0 after a few
    updates; when it stops, the area follows once more at full quality, so the viewer ends up
    with the exact screen; the same when grabs reuse two images (MssScreen on X11) and the
    streamer keeps whole ones by reference."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen = FakeScreen()
            screen.reused = reused
            task, peer = await accepted_agent(relay, screen=screen)
            canvas = np.zeros((200, 320, 3), np.uint8)
            noise = np.random.default_rng(3).integers(0, 256, (200, 320, 3), dtype=np.uint8)
            sampling = []

            def roll(image: np.ndarray, grabs: int) -> None:
                image[..., :3] = np.roll(noise, grabs * 7, axis=1)

            screen.paint = roll
            for _ in range(pacing.MOTION_AFTER_CHANGES + 3):
                frames = await peer.update()
                paint(frames, canvas)
                await peer.send(p.Ack(SESSION, frames[0].seq))
                sampling.append({Image.open(io.BytesIO(f.image)).layer[0][1:3]
                                 for f in frames if f.kind == p.FRAME_JPEG})
            # a quick first image (the link is not known yet), sharp changes, then motion
            assert sampling[:2] == [{(2, 2)}, {(1, 1)}] and sampling[-1] == {(2, 2)}
            screen.paint = None
            screen.image[..., :3] = 40  # still, and few colours: the refinement is lossless
            frames = await peer.update()  # the last change
            paint(frames, canvas)
            await peer.send(p.Ack(SESSION, frames[0].seq))
            refined = await peer.update()
            assert (refined[0].x, refined[0].y) == (0, 0)
            assert sum(f.width * f.height for f in refined) == 320 * 200
            paint(refined, canvas)
            assert np.array_equal(canvas, rgb(screen))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


def test_input_echo_found_while_a_large_update_is_encoded_goes_out_before_it(monkeypatch
                                                                          ) -> None:
    """A large change is being encoded in the threads when a key's echo appears elsewhere:
    the echo's update is sent first, the large one after it, and the viewer ends up with the
    exact screen (on a slow link the echo waited for a video update's encoding)."""
    encoding_large, release = threading.Event(), threading.Event()
    encode_update = codec.encode_update

    def held_encode(pixels, rects, *args, **kwargs):
        if sum(w * h for _, _, w, h in rects) > agent.INLINE_ENCODE_MAX_PX:
            encoding_large.set()
            release.wait(20)  # the test lets it finish once the echo went out
        return encode_update(pixels, rects, *args, **kwargs)

    monkeypatch.setattr(codec, "encode_update", held_encode)

    async def scenario():
        async with ScriptedRelay() as relay:
            screen, user_input = FakeScreen(), FakeInput()
            task, peer = await accepted_agent(relay, screen=screen, user_input=user_input)
            canvas = np.zeros((200, 320, 3), np.uint8)
            first = await peer.update()
            paint(first, canvas)
            await peer.send(p.Ack(SESSION, first[0].seq))
            # a window opening: 38,400 px (encoded in the threads) of a few colours (lossless)
            screen.image[:120, :, :3] = np.indices((120, 320)).sum(axis=0)[..., None] % 4 * 60
            assert await asyncio.to_thread(encoding_large.wait, 20)
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.Key(SESSION, "KeyA", "a", True))
            while ("key", "KeyA", True) not in user_input.events:
                await asyncio.sleep(0.005)
            screen.image[170:180, 20:28, :3] = 255  # the typed glyph, below the large change
            echo = await peer.update()
            assert [(f.y, f.height) for f in echo] == [(170, 10)]
            release.set()
            paint(echo, canvas)
            await peer.send(p.Ack(SESSION, echo[0].seq))
            await draw_until_screen(peer, canvas, screen)  # the large change, refinements
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    try:
        run(scenario())
    finally:
        release.set()



class BandRecordingScreen(FakeScreen):
    """A FakeScreen that records each grab's rows (first, end)."""

    def __init__(self) -> None:
        super().__init__()
        self.reused = True  # as MssScreen on X11
        self.rows: list[tuple[int, int]] = []

    def grab_view(self, area: p.Screen, keep: np.ndarray | None = None) -> np.ndarray:
        self.rows.append((area.y, area.y + area.height))
        return super().grab_view(area, keep)


def test_a_keys_first_poll_looks_only_near_the_last_echo_and_the_rest_follows() -> None:
    """The first poll for a key's echo grabs and compares only the rows of tiles around the
    last echo: the glyph typed there goes out alone, a change far from it at the same time
    follows in a later update, and the viewer ends with the exact screen."""
    async def scenario():
        async with ScriptedRelay() as relay:
            screen, user_input = BandRecordingScreen(), FakeInput()
            task, peer = await accepted_agent(relay, screen=screen, user_input=user_input)
            canvas = np.zeros((200, 320, 3), np.uint8)
            first = await peer.update()
            paint(first, canvas)
            await peer.send(p.Ack(SESSION, first[0].seq))
            await peer.send(p.Control(SESSION, True))

            def typed(image: np.ndarray, grabs: int) -> None:  # drawn as soon as injected
                if ("key", "KeyA", True) in user_input.events:
                    image[170:180, 20:28, :3] = 255
                if ("key", "KeyB", True) in user_input.events:
                    image[170:180, 28:36, :3] = 255
                    image[10:20, 200:260, :3] = 0  # elsewhere, at the same time

            screen.paint = typed
            await peer.send(p.Key(SESSION, "KeyA", "a", True))
            echo = await peer.update()  # no echo yet: found by a whole poll
            assert [(f.y, f.height) for f in echo] == [(170, 10)]
            paint(echo, canvas)
            await peer.send(p.Ack(SESSION, echo[0].seq))
            before = len(screen.rows)
            await peer.send(p.Key(SESSION, "KeyB", "b", True))
            echo = await peer.update()
            assert [(f.x, f.y, f.width, f.height) for f in echo] == [(28, 170, 8, 10)]
            assert (64, 200) in screen.rows[before:]  # its tile row 128-192, one each side
            paint(echo, canvas)
            await peer.send(p.Ack(SESSION, echo[0].seq))
            await draw_until_screen(peer, canvas, screen)
            await peer.send(p.Ended(SESSION, "technician", "done"))
            await task
    run(scenario())


# --- pure helpers ----------------------------------------------------------------------


def test_every_key_code_is_valid_on_the_wire() -> None:
    """The key table covers letters, digits, F1-F24, numpad, navigation and AltGr."""
    for code in agent.KEY_TABLE:
        p.Key(SESSION, code, "", True)
    for code in ("KeyZ", "Digit9", "F24", "Numpad0", "ArrowUp", "PageDown", "AltRight",
                 "ShiftLeft", "ControlRight", "MetaLeft", "Enter", "Backspace", "Escape"):
        assert code in agent.KEY_TABLE


# --- configuration ---------------------------------------------------------------------

AGENT_MODULES = ("agent.py", "agent_config.py", "agent_elevation.py", "agent_session.py",
                 "agent_ui.py", "panel.py", "protocol.py", "screen_codec.py", "screen_pacing.py",
                 "agent_files.py", "file_window.py", "agent_clipboard.py", "panel_chat.py")
NEW_COPY = ("This program cannot connect because its settings are damaged or missing: please "
            "ask the company that sent you this program for a new copy.")


@pytest.mark.parametrize("url", ["ws://example.com", "ws://10.0.0.1:80", "ftp://x", "x"])
def test_unencrypted_or_unknown_relay_addresses_are_refused(url: str) -> None:
    """ws:// only to localhost; anything that is not a websocket URL is refused."""
    with pytest.raises(agent_config.ConfigError):
        agent_config.agent_url(url)


def test_relay_urls_map_to_the_agent_endpoint() -> None:
    """https/wss/localhost ws map to <relay>/ws/agent."""
    assert agent_config.agent_url("https://help.example.com/") == \
        "wss://help.example.com/ws/agent"
    assert agent_config.agent_url("wss://h.example:8443/r") == "wss://h.example:8443/r/ws/agent"
    assert agent_config.agent_url("ws://[::1]:5/") == "ws://[::1]:5/ws/agent"


def test_only_a_wss_link_gets_a_tls_context_and_it_verifies_the_relay() -> None:
    """ws:// to localhost makes no TLS context (no certificate store loaded); wss:// one that
    checks the certificate and the host name, from TLS 1.2."""
    assert agent_config.link_ssl_context("ws://127.0.0.1:5/ws/agent", "") is None
    context = agent_config.link_ssl_context("wss://help.example.com/ws/agent", "")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname and context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_example_configuration_is_valid() -> None:
    """support.example.json parses."""
    config = agent_config.load_config(ROOT / "support.example.json")
    assert config.people and config.company


GOOD = {"company": "Acme IT", "relay": "wss://help.acme.example",
        "people": [{"id": "david", "name": "David"}]}
BAD_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(("change", "wrong"), [
    ({"company": None}, '"company"'),
    ({"company": "x" * 101}, '"company"'),
    ({"relay": None}, '"relay"'),
    ({"relay": "http://help.acme.example"}, "unencrypted"),
    ({"relay": "ftp://help.acme.example"}, "must start with wss://"),
    ({"people": []}, '"people" must list'),
    ({"people": [{"id": f"p{i}", "name": "P"} for i in range(51)]}, '"people" must list'),
    ({"people": [{"id": "david"}]}, '"name"'),
    ({"people": [{"id": "david", "name": "Da\nvid"}]}, '"name"'),
    ({"people": [{"id": "Bad Id", "name": "B"}]}, "support person id 'Bad Id'"),
    ({"people": [{"id": "d", "name": "D"}, {"id": "d", "name": "E"}]}, "same"),
    ({"ca_cert": 5}, '"ca_cert" must be PEM text or a file name'),
    ({"ca_cert": "missing.pem"}, "missing.pem cannot be read"),
    ({"ca_cert": BAD_PEM}, "not a usable PEM certificate"),
    ({"phone": 2699981389}, '"phone"'),
    ({"phone": "x" * 41}, '"phone"'),
])
def test_parse_config_names_what_is_wrong(tmp_path, change, wrong) -> None:
    """Each wrong field is refused with a detail naming it (for the builder and the log)."""
    data = {**GOOD, **change}
    with pytest.raises(agent_config.ConfigError) as refused:
        agent_config.parse_config({k: v for k, v in data.items() if v is not None}, tmp_path)
    assert wrong in str(refused.value)


def test_parse_config_reads_a_pinned_ca_by_file_name_next_to_it_or_as_text(tmp_path,
                                                                          pki) -> None:
    """ca_cert as a file name is read from the configuration's folder; PEM text is kept;
    the optional phone number is kept; no ca_cert means the system's store."""
    pem = (pki / "ca.pem").read_text()
    (tmp_path / "acme-ca.pem").write_text(pem)
    assert agent_config.parse_config(GOOD, tmp_path) == agent_config.Config(
        "Acme IT", "wss://help.acme.example", (("david", "David"),))
    by_name = agent_config.parse_config({**GOOD, "ca_cert": "acme-ca.pem"}, tmp_path)
    as_text = agent_config.parse_config({**GOOD, "ca_cert": pem, "phone": "269 998 1389"},
                                        ROOT)
    assert by_name.ca_cert == as_text.ca_cert == pem
    assert as_text.phone == "269 998 1389"
    (tmp_path / "support.json").write_text(json.dumps({**GOOD, "ca_cert": "acme-ca.pem"}))
    assert agent_config.load_config(tmp_path / "support.json").ca_cert == pem


def test_the_customer_is_told_whom_to_call_when_the_phone_could_be_read() -> None:
    """A wrong configuration that holds a phone number names the company and the number; one
    without (or unreadable) asks for a new copy; neither repeats the parser's detail."""
    with pytest.raises(agent_config.ConfigError) as with_phone:
        agent_config.parse_config({**GOOD, "relay": "ftp://x", "phone": "269 998 1389"}, ROOT)
    assert with_phone.value.customer == ("This program cannot connect because its settings are "
                                         "wrong: please call Acme IT on 269 998 1389.")
    with pytest.raises(agent_config.ConfigError) as without:
        agent_config.parse_config({**GOOD, "relay": "ftp://x"}, ROOT)
    assert without.value.customer == NEW_COPY


def run_agent(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(cwd / "agent.py"), *args], cwd=cwd, capture_output=True,
        text=True, timeout=60, env={"SPOTLIGHT_DIALOGS": "stderr", "PATH": "/usr/bin:/bin",
                                    **env})


@pytest.mark.parametrize("content", ["{", "[]", "\xff", '{"company": "X", "relay": "wss://x", '
                                     '"people": [{"id": "Bad Id", "name": "B"}]}'])
def test_invalid_configuration_gives_one_plain_sentence_and_exit_code_2(tmp_path,
                                                                        content) -> None:
    """A broken support.json: one plain sentence for the customer (not the parser's
    "Expecting value: line 1 column 2"), exit code 2, no traceback; the detail is logged."""
    config = tmp_path / "support.json"
    config.write_bytes(content.encode("latin-1"))
    result = run_agent("--config", str(config))
    assert result.returncode == 2
    title = "X" if content.startswith('{"') else agent.APP_NAME
    assert f"\n{title}: {NEW_COPY}\n" in "\n" + result.stderr
    assert "configuration:" in result.stderr and "Traceback" not in result.stderr


def test_wrong_configuration_with_a_phone_number_says_whom_to_call(tmp_path) -> None:
    """A readable support.json with a wrong field and a phone: the customer is told to call
    the company on that number."""
    config = tmp_path / "support.json"
    config.write_text(json.dumps({**GOOD, "relay": "http://help.acme.example",
                                  "phone": "269 998 1389"}))
    result = run_agent("--config", str(config))
    assert result.returncode == 2
    assert ("Acme IT: This program cannot connect because its settings are wrong: please call "
            "Acme IT on 269 998 1389.") in result.stderr


def test_picker_without_a_usable_display_explains_and_exits(tmp_path) -> None:
    """Two people, a DISPLAY that cannot be opened: a message naming --technician, exit 0."""
    config = tmp_path / "support.json"
    config.write_text(json.dumps({"company": "X", "relay": "ws://127.0.0.1:1", "people": [
        {"id": "a", "name": "A"}, {"id": "b", "name": "B"}]}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "--config", str(config)],
        capture_output=True, text=True, timeout=60,
        env={"DISPLAY": ":65000", "PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert "--technician (a, b)" in result.stderr and "Traceback" not in result.stderr


def test_missing_configuration_gives_a_message_and_exit_code_2(tmp_path) -> None:
    """The program alone, with no support.json beside it and no --relay/--technician: the
    plain sentence, exit code 2, and the log says none was found."""
    for name in AGENT_MODULES:
        shutil.copy(ROOT / name, tmp_path / name)
    result = run_agent(cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert NEW_COPY in result.stderr and "Traceback" not in result.stderr
    assert "no support.json next to the program" in result.stderr


def test_check_config_accepts_what_the_program_accepts_and_names_what_is_wrong(tmp_path) -> None:
    """--check-config: exit 0 and a summary for a good file; exit 2 and the exact detail for
    a bad one; it needs no display, and reads no other configuration."""
    good = run_agent("--check-config", str(ROOT / "support.example.json"))
    assert good.returncode == 0 and ": ok (" in good.stdout, good.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**GOOD, "people": [{"id": "Bad Id", "name": "B"}]}))
    refused = run_agent("--check-config", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"{bad}: support person id 'Bad Id': technician must be "
                                      "1-32 characters of a-z, 0-9, '.', '_' or '-'")


# --- the session rules under random message sequences -------------------------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OTHER = "other-session-123456789"
_messages = st.one_of(
    st.builds(p.Registered, st.just(SESSION), st.just("David"), st.just(60), st.just(RESUME),
              st.just(CODE)),
    st.builds(p.Accepted, st.sampled_from([SESSION, OTHER]), st.just("David"), st.just("pc"),
              st.just("anna"), st.just((p.Screen(0, 0, 320, 200), p.Screen(0, 0, 320, 200))),
              st.just(CODE), st.just(0.0), st.booleans()),
    st.builds(p.Control, st.sampled_from([SESSION, OTHER]), st.booleans()),
    st.builds(p.PointerMove, st.sampled_from([SESSION, OTHER]), st.integers(0, 3),
              st.integers(0, 400), st.integers(0, 300)),
    st.builds(p.Button, st.just(SESSION), st.just(1), st.integers(0, 330), st.integers(0, 210),
              st.sampled_from(p.BUTTONS), st.booleans()),
    st.builds(p.Key, st.sampled_from([SESSION, OTHER]),
              st.sampled_from(["KeyA", "ShiftLeft", "F24", "Bogus"]), st.just(""),
              st.booleans()),
    st.builds(p.Text, st.just(SESSION), st.text(max_size=5).filter(
        lambda t: all(c >= " " or c in "\n\t" for c in t))),
    st.builds(p.Refresh, st.just(SESSION), st.integers(0, 3)),
    st.builds(p.Ack, st.just(SESSION), st.integers(0, 5)),
    st.builds(p.Ended, st.just(SESSION), st.sampled_from(p.ENDED_BY), st.just("x")),
)


LINK_LOST = "link lost"  # a broken link (no close frame) among the messages
PAUSE, RESUME_SHARING = "pause", "resume"  # the customer's Pause and Resume among them


def carry_out(user_input: FakeInput, actions: list) -> None:
    for action in actions:
        if isinstance(action, core.Inject):
            getattr(user_input, action.method)(*action.args)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_messages, st.sampled_from([LINK_LOST, PAUSE, RESUME_SHARING])),
                max_size=30))
@example([p.Registered(SESSION, "David", 60, RESUME, CODE), p.Ended(SESSION, "relay", "x"),
          p.Accepted(SESSION, "David", "pc", "anna", FakeScreen().monitors(), CODE),
          p.Control(SESSION, True), p.PointerMove(SESSION, 1, 1, 1)])
@example([p.Registered(SESSION, "David", 60, RESUME, CODE),
          p.Accepted(SESSION, "David", "pc", "anna", FakeScreen().monitors(), CODE),
          p.Control(SESSION, True), p.Key(SESSION, "KeyA", "", True), LINK_LOST,
          p.Registered(SESSION, "David", 60, RESUME, CODE), p.Key(SESSION, "KeyA", "", True)])
@example([p.Registered(SESSION, "David", 60, RESUME, CODE),
          p.Accepted(SESSION, "David", "pc", "anna", FakeScreen().monitors(), CODE),
          p.Control(SESSION, True), p.Key(SESSION, "KeyA", "", True), PAUSE,
          p.Key(SESSION, "KeyA", "", True), RESUME_SHARING, p.Key(SESSION, "KeyA", "", True)])
def test_no_input_is_injected_without_an_active_session_and_control(messages) -> None:
    """Any message sequence, with broken links and the customer's Pause and Resume among it,
    through the session core: injection only while in control and not paused, every press
    released when control goes or a pause comes, nothing after the end."""
    user_input = FakeInput()
    session = core.Session("david", "pc", "anna", agent.KEY_TABLE)
    carry_out(user_input, session.connected(FakeScreen().monitors()))
    ended = False
    for now, message in enumerate(messages):
        before = len(user_input.events)
        allowed = session.state == core.IN_CONTROL and not ended
        if message == LINK_LOST:
            actions = session.link_lost(None, "", float(now))
            if any(isinstance(a, core.Reconnect) for a in actions):
                actions += session.connected(FakeScreen().monitors())
        elif message == PAUSE:
            actions = session.pause(float(now))
        elif message == RESUME_SHARING:
            actions = session.unpause(float(now))
        else:
            actions = session.receive(message, float(now))
        carry_out(user_input, actions)
        injected = [e for e in user_input.events[before:] if e[-1] is not False]
        assert allowed or not injected, (message, injected)
        if session.state != core.IN_CONTROL:
            assert user_input.held == set()
        if any(isinstance(a, core.End) for a in actions):
            ended = True
            assert user_input.held == set() and session.state == core.ENDED


@pytest.mark.x11
def test_mss_view_without_a_copy_matches_a_grab_and_follows_the_screen(xvfb) -> None:
    """On X11 grab_view gives the same pixels as grab, and the next grab_view sees what
    changed; re-reading the layout while a view is held does not fail."""
    if shutil.which("xsetroot") is None:
        pytest.fail("this test paints the screen with xsetroot (Debian: x11-xserver-utils)")
    screen = agent.MssScreen()
    try:
        area = screen.monitors()[0]
        first = screen.grab(area)
        view = screen.grab_view(area)
        assert view.shape == first.shape == (area.height, area.width, 4)
        assert bytes(view) == bytes(first)
        before = bytes(view)
        subprocess.run(["xsetroot", "-solid", "#12ab34"], env=os.environ, check=True)
        assert screen.monitors()[0] == area  # with `view` alive
        after = screen.grab_view(area)
        assert bytes(after) != before
        assert bytes(after) == bytes(screen.grab(area))
    finally:
        screen.close()


@pytest.mark.x11
def test_mss_view_kept_by_the_caller_is_not_written_over_by_the_next_grabs(xvfb) -> None:
    """A view given as ``keep`` still holds its pixels after later grabs of a changed screen
    (they go to the other image), and may be written by its holder (the viewer's copy is
    updated in place); a view not kept is the next grab's."""
    if shutil.which("xsetroot") is None:
        pytest.fail("this test paints the screen with xsetroot (Debian: x11-xserver-utils)")
    screen = agent.MssScreen()
    try:
        area = screen.monitors()[0]
        subprocess.run(["xsetroot", "-solid", "#102030"], env=os.environ, check=True)
        kept = screen.grab_view(area)
        assert not kept.readonly
        first = bytes(kept)
        subprocess.run(["xsetroot", "-solid", "#a0b0c0"], env=os.environ, check=True)
        for _ in range(2):
            later = screen.grab_view(area, keep=kept)
            assert bytes(later) == bytes(screen.grab(area)) != first
            assert bytes(kept) == first
        kept.cast("B")[:4] = b"\x01\x02\x03\x00"  # the holder's own change stays
        assert bytes(kept.cast("B")[:4]) == b"\x01\x02\x03\x00"
        assert bytes(screen.grab_view(area, keep=later)) == bytes(screen.grab(area))
        assert bytes(kept) == bytes(screen.grab(area))  # not kept: written by that grab
    finally:
        screen.close()


@pytest.mark.x11
def test_mss_layout_follows_a_resized_screen_and_grabs_at_the_new_size(monkeypatch) -> None:
    """A screen resized after MssScreen started (xrandr) shows in its next monitors() (read
    on its own connection, not the layout mss remembered), and a grab of it has the new
    size."""
    if shutil.which("xrandr") is None:
        pytest.fail("this test resizes the screen with xrandr (Debian: x11-xserver-utils)")
    display = start_xvfb(1280, 800)
    monkeypatch.setenv("DISPLAY", display.name)
    screen = agent.MssScreen()
    try:
        assert screen.monitors()[0] == p.Screen(0, 0, 1280, 800)
        subprocess.run(["xrandr", "--fb", "1024x600"], env=os.environ, capture_output=True,
                       check=False)  # (it complains about the output's mode, and resizes)
        area = screen.monitors()[0]
        assert area == p.Screen(0, 0, 1024, 600)
        assert screen.grab_view(area).shape == (600, 1024, 4)
    finally:
        screen.close()
        display.process.terminate()
        display.process.wait(timeout=10)


@pytest.mark.x11
def test_x11_pointer_position_is_where_the_pointer_was_put(xvfb) -> None:
    """X11Input.position (one query on pynput's connection) answers where a move put the
    pointer, twice in a row."""
    pointer = agent.X11Input()
    try:
        for x, y in ((17, 23), (301, 199)):
            pointer.move(x, y)
            assert pointer.position() == (x, y)
    finally:
        pointer.close()


@pytest.mark.build
def test_a_build_refuses_a_configuration_the_agent_would_refuse(tmp_path) -> None:
    """build.spec (through PyInstaller) and packaging/build-linux.sh stop with the agent's own
    detail before building anything from a configuration the program would refuse."""
    bad = tmp_path / "acme.json"
    bad.write_text(json.dumps({**GOOD, "relay": "http://help.acme.example"}))
    spec = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(tmp_path / "d"),
         "--workpath", str(tmp_path / "w"), str(ROOT / "build.spec")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SPOTLIGHT_CONFIG": str(bad)})
    assert spec.returncode != 0
    assert "build.spec: the agent would refuse this configuration: the unencrypted address" \
        in spec.stderr
    assert not list((tmp_path / "d").glob("*"))  # nothing built
    script = subprocess.run([str(ROOT / "packaging" / "build-linux.sh"), "--config", str(bad)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHON": sys.executable})
    assert script.returncode == 1
    assert f"{bad}: the unencrypted address" in script.stderr


def test_backends_are_chosen_in_one_place_with_an_environment_override(monkeypatch) -> None:
    """SPOTLIGHT_SCREEN / SPOTLIGHT_INPUT pick the dummy backends (no display needed); the
    default input on this platform is the X11 one."""
    monkeypatch.setenv("SPOTLIGHT_SCREEN", "dummy")
    monkeypatch.setenv("SPOTLIGHT_INPUT", "dummy")
    assert isinstance(agent.make_screen(), agent.DummyScreen)
    assert isinstance(agent.make_input(), agent.DummyInput)
    monkeypatch.setenv("SPOTLIGHT_INPUT", "")
    monkeypatch.setattr(agent, "X11Input", lambda: "x11")
    assert agent.make_input() == "x11"


def test_the_program_runs_headless_on_the_dummy_backends(tmp_path) -> None:
    """python agent.py with the dummy screen and input, the log tray and the log panel
    chosen by name, no DISPLAY: it says hello with the dummy monitor, streams it once
    accepted, logs injected keys, and exits 0 when the support person ends the session."""
    async def scenario():
        async with ScriptedRelay() as relay:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "agent.py"), "--relay", relay.url,
                "--technician", "david", stdin=subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "SPOTLIGHT_SCREEN": "dummy",
                     "SPOTLIGHT_INPUT": "dummy", "SPOTLIGHT_TRAY": "log",
                     "SPOTLIGHT_PANEL": "log", "XDG_RUNTIME_DIR": str(tmp_path)})
            peer = await relay.next()
            hello = await peer.register()
            assert hello.screens == (agent.DUMMY_SCREEN, agent.DUMMY_SCREEN)
            await peer.accept(hello)
            frames = await peer.update()
            await peer.send(p.Control(SESSION, True))
            await peer.send(p.Key(SESSION, "KeyA", "a", True))
            await peer.send(p.Ended(SESSION, "technician", "done"))
            log = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
            return frames, await process.wait(), log
    frames, code, log = run(scenario())
    assert sum(f.width * f.height for f in frames) == 1024 * 768
    assert code == 0 and "input: key KeyA down" in log and "Traceback" not in log


# --- the real program's Tk panel on Xvfb, against the scripted relay ----------------------

SHOTS = ROOT / "test-artifacts" / "panel"


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, timeout=60, capture_output=True,
                          text=True).stdout


def window_titled(part: str) -> str:
    """The id of the window whose title contains ``part`` (waits for it; no regex chars)."""
    return find_window(re.escape(part))


def title_of(window: str) -> str:
    return xdotool("getwindowname", window).strip()


async def titled(window: str, part: str) -> str:
    """Until the window's title contains ``part`` (the panel's thread sets it)."""
    await until(lambda: part in title_of(window), f"a title with {part!r}", timeout=20)
    return title_of(window)


def shoot(window: str, name: str) -> None:
    """A screenshot of the window into test-artifacts/panel/ for a person to look at."""
    import mss

    shape = dict(v.split("=") for v in xdotool("getwindowgeometry", "--shell", window).split())
    box = {k: int(shape[v]) for k, v in (("left", "X"), ("top", "Y"), ("width", "WIDTH"),
                                         ("height", "HEIGHT"))}
    SHOTS.mkdir(parents=True, exist_ok=True)
    with mss.MSS() as sct:
        shot = sct.grab(box)
    Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX").save(SHOTS / f"{name}.png")


def alt(window: str, key: str) -> None:
    """Alt+``key`` into the panel (no window manager: the focus is given to it first)."""
    xdotool("windowfocus", "--sync", window)
    xdotool("key", "--clearmodifiers", f"alt+{key}")


@pytest.mark.x11
def test_the_programs_tk_panel_is_found_by_its_code_and_its_keys_pause_resume_and_end(
        xvfb, tmp_path) -> None:
    """python agent.py on Xvfb shows its Tk panel from the start: found by the session code
    in its title while waiting; Alt+P pauses (pause{true} at the relay, no frame after it)
    and resumes (pause{false}, a whole image); Alt+E ends as the customer, the receipt shows
    the ledger's reference, and Alt+C closes it and the program (exit 0). Screenshots of each
    state in test-artifacts/panel/agent-*.png."""
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is not installed: run ./dev test, which installs it")

    async def scenario():
        async with ScriptedRelay() as relay:
            env = {**os.environ, "SPOTLIGHT_SCREEN": "dummy", "SPOTLIGHT_INPUT": "dummy",
                   "SPOTLIGHT_TRAY": "log", "XDG_RUNTIME_DIR": str(tmp_path)}
            env.pop("SPOTLIGHT_PANEL", None)
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "agent.py"), "--relay", relay.url,
                "--technician", "david", stdin=subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env)
            try:
                window = await asyncio.to_thread(window_titled, "support: connecting")
                peer = await relay.next()
                hello = await peer.register()
                assert "482913" in await titled(window, "482913")
                shoot(window, "agent-waiting")
                await peer.accept(hello, elapsed_s=75)
                await titled(window, "can see your screen")
                await peer.update()
                await peer.send(p.Control(SESSION, True))
                await titled(window, "mouse and keyboard")
                shoot(window, "agent-control")
                await asyncio.to_thread(alt, window, "p")
                pause, _ = await next_control(peer, p.Pause)
                assert pause == p.Pause(True)
                await titled(window, "Paused")
                shoot(window, "agent-paused")
                await asyncio.to_thread(alt, window, "p")
                resume, between = await next_control(peer, p.Pause)
                assert resume == p.Pause(False) and not any(
                    isinstance(m, p.Frame) for m in between)
                assert (await peer.update())[0].flags & p.FLAG_FULL
                await titled(window, "mouse and keyboard")
                await asyncio.to_thread(alt, window, "e")
                close, _ = await next_control(peer, p.Close)
                assert close == p.Close("customer-closed")
                await peer.send(p.Ended(SESSION, "customer", "customer-closed", 123, 750))
                await titled(window, "ended")
                await asyncio.sleep(0.5)  # only for the picture: the receipt's second draw
                shoot(window, "agent-ended")
                await asyncio.to_thread(alt, window, "c")
                log = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
                return await asyncio.wait_for(process.wait(), 30), log
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    code, log = run(scenario())
    assert code == 0, log
    assert "session: ended | Session with David ended" in log and "ref\xa0123" in log
    assert "Traceback" not in log


def test_a_whole_image_cut_short_by_the_session_end_leaves_no_error_unheard(caplog):
    """The session ends while its whole image is still encoded, and the encoder pool is shut
    down under the encoding thread: the encoding stops, and no task is left to fail unheard
    (asyncio's 'Task exception was never retrieved')."""
    pixels = memoryview(bytearray(64 * 32 * 4)).cast("B", (32, 64, 4))
    (first, *_) = codec.encode_frames(pixels, [(0, 0, 64, 32)], 0, 0, 85, True)
    resume, finished = threading.Event(), threading.Event()

    def frames():
        try:
            yield first
            resume.wait(timeout=30)
            raise RuntimeError("cannot schedule new futures after shutdown")  # as pool.map
        finally:
            finished.set()

    async def session() -> None:
        outbox, sendable = pacing.Outbox(), asyncio.Event()
        passing = asyncio.ensure_future(agent.Agent._pass_on(frames(), 7, outbox, sendable))
        await sendable.wait()  # the first strip is in the outbox: the encoding thread runs
        assert outbox.peek()[0] == 7
        passing.cancel()  # the session ended
        with pytest.raises(asyncio.CancelledError):
            await passing
        resume.set()
        assert await asyncio.to_thread(finished.wait, 30)
        for _ in range(5):  # the thread's result reaches the loop's callbacks
            await asyncio.sleep(0)
        gc.collect()  # an unretrieved task exception is reported when the task is collected

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(session())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
