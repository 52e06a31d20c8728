"""The real agent (python agent.py, mss, pynput, pystray) on Xvfb against the real relay,
driven by a scripted viewer (a websockets client speaking protocol.py).

Close is triggered with SIGTERM: agent.py maps SIGTERM/SIGINT to the same request_close()
that the tray menu's Close calls (pystray's X11 backend has no menu to click). Most tests
run the agent with its panel as log lines (SPOTLIGHT_PANEL=log: its ticking meter would
change the screen they compare); the panel's own tests run the real Tk panel, found by its
title and driven with xdotool. Each agent gets its own runtime folder (the one-program
lock)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mss
import numpy as np
import pytest
from PIL import Image

import protocol as p
import screen_pacing as pacing
from tests.helpers.desktop import BACKGROUND, find_window, grab_screen, until
from tests.helpers.relay import ledger_csv
from tests.helpers.viewer import ScriptedViewer

pytestmark = pytest.mark.x11
ROOT = Path(__file__).resolve().parent.parent


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run ./dev test, which installs it")


def start_agent(relay, tmp_path: Path, *, tray: str = "log", technician: str = "david",
                extra: tuple[str, ...] = (), panel: str = "log",
                env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "SPOTLIGHT_DIALOGS": "stderr", "SPOTLIGHT_TRAY": tray,
           "SPOTLIGHT_PANEL": panel, "XDG_RUNTIME_DIR": str(tmp_path), **(env_extra or {})}
    log = open(tmp_path / "agent.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "agent.py"), "--relay", relay.ws_url,
         "--technician", technician, *extra],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return process


def agent_log(tmp_path: Path) -> str:
    return (tmp_path / "agent.log").read_text()


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def typed(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_screen_reaches_the_viewer_and_matches_the_x_screen(xvfb, relay, tmp_path) -> None:
    """The reassembled updates equal a reference grab; the solid background is exact."""
    need("xsetroot", "xterm")
    subprocess.run(["xsetroot", "-solid", "#3366cc"], check=True)
    term = subprocess.Popen(["xterm", "-geometry", "60x10+200+150", "-e", "sh", "-c",
                             "printf 'Spotlight remote support\\n'; sleep 120"])
    agent = start_agent(relay, tmp_path)
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                accepted = await viewer.accept_waiting()
                assert accepted.screens[1] == p.Screen(0, 0, xvfb.width, xvfb.height)
                await viewer.settle()
                reference = np.asarray(grab_screen(accepted.screens[1]))
                drawn = viewer.pixels()
                assert tuple(drawn[5, 5]) == BACKGROUND
                assert tuple(drawn[-5, -5]) == BACKGROUND
                difference = np.abs(drawn.astype(int) - reference.astype(int))
                assert difference.mean() < 1.0, difference.mean()
        run(scenario())
    finally:
        term.kill()
        term.wait()
        stop(agent)
    assert "Traceback" not in agent_log(tmp_path)


def screen_still(area: p.Screen, box: tuple[int, int, int, int], for_s: float = 0.5
                 ) -> bool:
    """Whether ``box`` (left, top, right, bottom) of the X screen shows the same pixels over
    ``for_s`` (a video that stopped on its last frame)."""
    first = grab_screen(area).crop(box).tobytes()
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        if grab_screen(area).crop(box).tobytes() != first:
            return False
        time.sleep(0.02)
    return True


def pointer_root_focus() -> None:
    """X keyboard focus follows the pointer again, as on a fresh Xvfb without a window
    manager: SDL (ffplay) sets the focus to its window, and once that is gone X leaves it
    on the root window, where no later test's xterm or Tk window gets a key."""
    from Xlib import X
    from Xlib.display import Display

    display = Display()
    try:
        display.set_input_focus(X.PointerRoot, X.RevertToPointerRoot, X.CurrentTime)
        display.sync()
    finally:
        display.close()


def test_motion_sent_at_half_resolution_ends_as_the_x_screen(xvfb, relay, tmp_path) -> None:
    """A viewer too slow for a video (each update acknowledged 0.15 s after it is drawn)
    gets the region in motion at half resolution, drawn scaled up; once the video stops on
    its last frame, the area is sent again whole: the viewer's screen is the X screen, the
    video's area within JPEG's error and far from what half resolution shows."""
    need("ffmpeg", "ffplay", "xsetroot")
    clip = tmp_path / "zoom.nut"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "mandelbrot=s=640x360:r=25",
                    "-t", "4", "-c:v", "rawvideo", "-pix_fmt", "bgr0", str(clip)],
                   check=True, timeout=120)
    subprocess.run(["xsetroot", "-solid", "#3366cc"], check=True)
    box = (200, 120, 840, 480)  # where the video plays
    agent = start_agent(relay, tmp_path)
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                area = (await viewer.accept_waiting()).screens[1]
                await viewer.settle()
                viewer.ack_delay_s = 0.15
                before = grab_screen(area).crop(box).tobytes()
                video = subprocess.Popen(
                    ["ffplay", "-v", "error", "-an", "-noborder", "-left", str(box[0]),
                     "-top", str(box[1]), str(clip)], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    assert await until(
                        lambda: grab_screen(area).crop(box).tobytes() != before, 30)
                    # its 4 s played (ffplay drops late frames to keep to the clock), then
                    # still: not a stall of a busy machine's
                    played = time.monotonic() + 4
                    deadline = time.monotonic() + 60
                    while not (await asyncio.to_thread(screen_still, area, box)
                               and time.monotonic() > played):
                        assert time.monotonic() < deadline, "the video never stopped"
                    viewer.ack_delay_s = 0.0
                    await viewer.settle(quiet_s=1.5)
                    reference = np.asarray(grab_screen(area)).astype(int)
                finally:
                    video.kill()
                    video.wait()
                    pointer_root_focus()
                assert viewer.half_images > 0
                drawn = viewer.pixels().astype(int)
                left, top, right, bottom = box
                video_area = reference[top:bottom, left:right]
                shown = Image.fromarray(video_area.astype(np.uint8))
                half = shown.reduce(2).resize(shown.size, Image.Resampling.BILINEAR)
                sharp = io.BytesIO()
                shown.save(sharp, "JPEG", quality=pacing.JPEG_QUALITIES[0], subsampling=0)
                error = np.abs(drawn[top:bottom, left:right] - video_area).mean()
                errors = [np.abs(np.asarray(image).astype(int) - video_area).mean()
                          for image in (Image.open(sharp).convert("RGB"), half)]
                # within the top quality's JPEG error (strips cut elsewhere: a little more),
                # far from the half-resolution image's
                assert error < 1.25 * errors[0] + 0.25 < errors[1], (error, errors)
                assert np.abs(drawn - reference).mean() < 1.0
        run(scenario())
    finally:
        stop(agent)
    assert "Traceback" not in agent_log(tmp_path)


def test_the_first_image_is_the_screen_at_the_accept_after_one_encoded_ahead(
        xvfb, relay, tmp_path) -> None:
    """While the customer waits the agent encodes the first image ahead (its log says so);
    the background then turns red below a window that stays: the first update after the
    accept shows the red, and the window."""
    need("xsetroot", "xterm", "xdotool")
    subprocess.run(["xsetroot", "-solid", "#3366cc"], check=True)
    term = subprocess.Popen(["xterm", "-title", "top-window", "-geometry", "150x16+0+0",
                             "-e", "sleep", "120"])
    agent = None
    try:
        find_window("top-window", visible=True, timeout=30)
        agent = start_agent(relay, tmp_path, env_extra={"SPOTLIGHT_LOG": "debug"})

        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                waiting = await viewer.wait_for_pending()
                while "first image encoded ahead" not in agent_log(tmp_path):
                    await asyncio.sleep(0.02)
                subprocess.run(["xsetroot", "-solid", "#cc3333"], check=True)
                accepted = await viewer.accept(waiting.session)
                await viewer.expect(p.Frame, lambda frame: frame.last)  # the first update
                drawn = viewer.pixels()
                reference = np.asarray(grab_screen(accepted.screens[1]))
                assert tuple(drawn[-5, -5]) == (0xCC, 0x33, 0x33)
                assert np.abs(drawn.astype(int) - reference.astype(int)).mean() < 1.0
        run(scenario())
    finally:
        term.kill()
        term.wait()
        if agent is not None:
            stop(agent)
    assert "Traceback" not in agent_log(tmp_path)


def test_keys_and_text_arrive_in_xterm_and_clicks_land(xvfb, relay, tmp_path) -> None:
    """Keys by code and a text message typed into xterm's `cat > FILE`; the click lands."""
    need("xterm", "xdotool")
    target = tmp_path / "typed.txt"
    term = subprocess.Popen(["xterm", "-T", "agent-typing-test", "-geometry", "80x20+0+0",
                             "-e", "sh", "-c", f"cat > {target}"],
                            env={**os.environ, "LC_ALL": "C.UTF-8"})
    find_window("agent-typing-test", timeout=30)
    agent = start_agent(relay, tmp_path)
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                await viewer.accept_waiting()
                await viewer.take_control()
                s = viewer.session
                for down in (True, False):
                    await viewer.send(p.Button(s, 1, 100, 120, "left", down))
                for code in ("KeyH", "KeyI", "Space", "ShiftLeft", "Digit1", "Enter"):
                    await viewer.send(p.Key(s, code, "", True))
                    if code != "ShiftLeft":
                        await viewer.send(p.Key(s, code, "", False))
                await viewer.send(p.Key(s, "ShiftLeft", "", False))
                await viewer.send(p.Text(s, "Ab?é\n"))
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and typed(target).count("\n") < 2:
                    await asyncio.sleep(0.1)
        run(scenario())
        location = subprocess.run(["xdotool", "getmouselocation"], capture_output=True,
                                  text=True, check=True).stdout
    finally:
        stop(agent)
        term.kill()
        term.wait()
    assert location.startswith("x:100 y:120 ")
    assert typed(target) == "hi !\nAb?é\n"


def test_close_ends_the_session_as_the_customer_and_exits(xvfb, relay, tmp_path) -> None:
    """Close (SIGTERM, the tray's code path) records ended_by customer and the agent exits."""
    agent = start_agent(relay, tmp_path)

    async def scenario():
        async with await ScriptedViewer.login(relay) as viewer:
            await viewer.accept_waiting()
            await viewer.take_control()
            agent.send_signal(signal.SIGTERM)
            ended = await viewer.expect(p.Ended)
            assert ended.by == "customer"
    run(scenario())
    assert agent.wait(timeout=15) == 0
    assert [row["ended_by"] for row in ledger_csv(relay)] == ["customer"]
    assert "Traceback" not in agent_log(tmp_path)


class CuttableLink:
    """A TCP proxy on 127.0.0.1:0 in front of the relay. ``cut`` resets the agent's side and
    leaves the relay's side open and silent: the agent notices the drop first, as after a
    Wi-Fi loss, while the relay still holds the stale link."""

    def __init__(self, port: int) -> None:
        self.target, self.links, self.stale = port, [], []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def serve():
            self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
        self.loop.run_until_complete(serve())
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    async def _pipe(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        pair = (writer, up_writer)
        self.links.append(pair)

        async def copy(src, dst):
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            if pair in self.links:
                dst.close()
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    def cut(self) -> None:
        def cut_now():
            for agent_side, relay_side in self.links:
                relay_side.transport.pause_reading()
                self.stale.append(relay_side)
                agent_side.transport.abort()
            self.links.clear()
        self.loop.call_soon_threadsafe(cut_now)

    def close(self) -> None:
        def close_now():
            for writer in [*self.stale, *(w for pair in self.links for w in pair)]:
                writer.transport.abort()
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(close_now)
        self.thread.join(10)


def test_a_cut_link_resumes_the_same_session(xvfb, relay, tmp_path) -> None:
    """The agent's link is cut mid-session: it resumes with its secret and the viewer gets
    a full image again in the same session; Close then ends it as the customer."""
    link = CuttableLink(relay.port)
    agent = start_agent(type("R", (), {"ws_url": f"ws://127.0.0.1:{link.port}"}), tmp_path)
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                await viewer.accept_waiting()
                await viewer.settle()
                link.cut()
                await viewer.expect(p.Frame, lambda frame: frame.flags & p.FLAG_FULL)
                agent.send_signal(signal.SIGTERM)
                ended = await viewer.expect(p.Ended)
                assert (ended.session, ended.by) == (viewer.session, "customer")
        run(scenario())
        assert agent.wait(timeout=15) == 0
    finally:
        stop(agent)
        link.close()
    log = agent_log(tmp_path)
    assert "tray: reconnecting" in log and "Traceback" not in log


def test_unknown_support_person_is_refused_with_a_message(xvfb, relay, tmp_path) -> None:
    """--technician nobody: the relay's refusal is shown and the agent exits 1."""
    agent = start_agent(relay, tmp_path, technician="nobody")
    assert agent.wait(timeout=30) == 1
    log = agent_log(tmp_path)
    refusal = next(line for line in log.splitlines() if '"type":"error"' in line)
    sentence = json.loads(refusal[refusal.index("{"):])["message"]
    assert f"Spotlight Remote Support: {sentence}" in log  # shown as the relay worded it
    assert "Traceback" not in log


def picker_config(relay, tmp_path: Path) -> list[str]:
    config = tmp_path / "support.json"
    config.write_text(json.dumps({
        "company": "Picker Test Company", "relay": relay.ws_url,
        "people": [{"id": "david", "name": "David"}, {"id": "petur", "name": "Petur"}]}))
    return ["--config", str(config)]


def start_picker(relay, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "SPOTLIGHT_TRAY": "log", "SPOTLIGHT_PANEL": "log",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("SPOTLIGHT_DIALOGS", None)
    log = open(tmp_path / "agent.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "agent.py"),
                                *picker_config(relay, tmp_path)],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()
    window_id = find_window("Picker Test Company", timeout=30)
    subprocess.run(["xdotool", "mousemove", "--window", window_id, "20", "20"], check=True)
    return process


def test_picker_window_connects_to_the_person_clicked(xvfb, relay, tmp_path) -> None:
    """The Tk picker with two people: choosing Petur queues the session for Petur."""
    need("xdotool")
    agent = start_picker(relay, tmp_path)
    try:
        subprocess.run(["xdotool", "key", "Tab", "Tab", "space"], check=True)

        async def scenario():
            async with await ScriptedViewer.login(relay, "petur") as viewer:
                accepted = await viewer.accept_waiting()
                assert accepted.technician_name == "Petur"
        run(scenario())
    finally:
        assert stop(agent) == 0
    assert "Traceback" not in agent_log(tmp_path)


def test_picker_cancel_exits_without_connecting(xvfb, relay, tmp_path) -> None:
    """Cancel in the picker: exit code 0 and no session in the ledger."""
    need("xdotool")
    agent = start_picker(relay, tmp_path)
    subprocess.run(["xdotool", "key", "Escape"], check=True)
    assert agent.wait(timeout=30) == 0
    ledger = relay.cli("ledger", "--csv")
    assert ledger.returncode == 0 and len(ledger.stdout.splitlines()) == 1, ledger.stdout


class TrayManager:
    """A minimal XEmbed system tray (the _NET_SYSTEM_TRAY_S0 selection owner) at the
    top-left corner, so pystray's X11 backend can dock a real icon on Xvfb."""

    SIZE = 32

    def __init__(self) -> None:
        from Xlib import X, display

        self.X, self.d = X, display.Display()
        screen = self.d.screen()
        self.window = screen.root.create_window(0, 0, self.SIZE, self.SIZE, 0, screen.root_depth,
                                                background_pixel=screen.black_pixel,
                                                event_mask=X.SubstructureNotifyMask)
        self.window.map()
        self.opcode = self.d.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
        self.window.set_selection_owner(self.d.intern_atom("_NET_SYSTEM_TRAY_S0"),
                                        X.CurrentTime)
        self.d.sync()
        self.docked = threading.Event()
        self.running = True
        self._server = threading.Thread(target=self._serve, daemon=True)
        self._server.start()

    def _serve(self) -> None:
        while self.running:
            if not self.d.pending_events():
                time.sleep(0.02)
                continue
            event = self.d.next_event()
            if event.type == self.X.ClientMessage and event.client_type == self.opcode:
                data = event.data[1]
                if data[1] == 0:  # SYSTEM_TRAY_REQUEST_DOCK
                    icon = self.d.create_resource_object("window", data[2])
                    icon.reparent(self.window, 0, 0)
                    icon.configure(width=self.SIZE, height=self.SIZE)
                    icon.map()
                    self.d.sync()
                    self.docked.set()

    def close(self) -> None:
        self.running = False
        self._server.join(timeout=10)  # no event is read from the display while it closes
        assert not self._server.is_alive(), "the tray manager's thread did not stop"
        self.window.destroy()
        self.d.close()


def icon_colour() -> tuple[int, int, int]:
    with mss.MSS() as sct:
        shot = sct.grab({"left": 8, "top": 16, "width": 1, "height": 1})
        return shot.pixel(0, 0)


def test_pystray_icon_turns_from_yellow_to_green_and_disappears(xvfb, relay, tmp_path) -> None:
    """The real pystray X11 backend docked in a tray: yellow while waiting, green when
    accepted, gone after Close."""
    manager = TrayManager()
    agent = start_agent(relay, tmp_path, tray="pystray")
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                pending = await viewer.wait_for_pending()
                assert manager.docked.wait(20)
                await wait_for_colour((242, 190, 0))
                await viewer.accept(pending.session)
                await wait_for_colour((40, 170, 70))
        run(scenario())
        assert stop(agent) == 0
        run(wait_for_colour((0, 0, 0)))  # the tray's own black background: the icon is gone
    finally:
        stop(agent)
        manager.close()
    assert "Traceback" not in agent_log(tmp_path)


async def wait_for_colour(rgb: tuple[int, int, int]) -> None:
    seen = None
    for _ in range(200):
        seen = icon_colour()
        if max(abs(a - b) for a, b in zip(seen, rgb, strict=True)) <= 8:  # resampling
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"tray icon colour {seen}, expected {rgb}")


# --- the customer's session panel (real Tk, found by its title) ----------------------------

SHOTS = ROOT / "test-artifacts" / "panel"


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, timeout=60, capture_output=True,
                          text=True).stdout


def panel_window(part: str) -> str:
    """The window whose title contains ``part`` (xdotool waits for it)."""
    return find_window(re.escape(part))


async def titled(window: str, part: str) -> str:
    """Until the panel's title contains ``part`` (its own thread sets it)."""
    for _ in range(400):
        title = xdotool("getwindowname", window).strip()
        if part in title:
            return title
        await asyncio.sleep(0.05)
    pytest.fail(f"the panel's title never had {part!r}: {title!r}")


def alt(window: str, key: str) -> None:
    """Alt+``key`` into the panel (no window manager: the focus is given to it first)."""
    xdotool("windowfocus", "--sync", window)
    xdotool("key", "--clearmodifiers", f"alt+{key}")


def shoot(window: str, name: str) -> None:
    """The panel as it is on screen, into test-artifacts/panel/ for a person to look at."""
    shape = dict(v.split("=") for v in xdotool("getwindowgeometry", "--shell", window).split())
    with mss.MSS() as sct:
        shot = sct.grab({"left": int(shape["X"]), "top": int(shape["Y"]),
                         "width": int(shape["WIDTH"]), "height": int(shape["HEIGHT"])})
    SHOTS.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX").save(SHOTS / f"{name}.png")


def test_the_panel_pauses_resumes_and_ends_a_real_session(xvfb, relay, tmp_path) -> None:
    """The real Tk panel, found by the session code the viewer's queue shows: Alt+P stops
    frames and input (the viewer gets pause{true}; a key sent meanwhile is never injected),
    Alt+P again resumes (pause{false}, then a whole image; a key is injected again), Alt+E
    ends the session with the customer recorded as the one who ended it; screenshots of
    each state in test-artifacts/panel/x11-*.png."""
    need("xdotool")
    agent = start_agent(relay, tmp_path, panel="tk", env_extra={"SPOTLIGHT_INPUT": "dummy"})
    try:
        async def scenario():
            async with await ScriptedViewer.login(relay) as viewer:
                entries = (await viewer.expect(p.Queue, lambda q: q.sessions)).sessions
                viewer.session, code = entries[0].session, entries[0].code
                window = await asyncio.to_thread(panel_window, code)
                assert "waiting for David" in await titled(window, code)
                shoot(window, "x11-waiting")
                await viewer.accept(viewer.session)
                await viewer.take_control()
                await titled(window, "mouse and keyboard")
                shoot(window, "x11-control")
                s = viewer.session
                await asyncio.to_thread(alt, window, "p")
                assert (await viewer.expect(p.Pause)).paused
                await titled(window, "Paused")
                for down in (True, False):  # paused: never injected
                    await viewer.send(p.Key(s, "KeyQ", "q", down))
                await viewer.send(p.Refresh(s, 0))  # paused: no image
                await viewer.send(p.Ping(1.0))
                await viewer.expect(p.Pong)  # the relay has passed all that on
                shoot(window, "x11-paused")
                await asyncio.to_thread(alt, window, "p")
                # nothing drawn while paused: the next update or pause message is the resume
                resumed = await viewer.expect(object, lambda m: isinstance(m, p.Frame | p.Pause))
                assert isinstance(resumed, p.Pause) and not resumed.paused, resumed
                frame = await viewer.expect(p.Frame)
                assert frame.flags & p.FLAG_FULL
                await titled(window, "mouse and keyboard")
                for down in (True, False):
                    await viewer.send(p.Key(s, "KeyW", "w", down))
                for _ in range(400):  # control is back: the key is injected (and logged)
                    if "input: key KeyW up" in agent_log(tmp_path):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(alt, window, "e")
                ended = await viewer.expect(p.Ended)
                assert (ended.session, ended.by) == (s, "customer")
                await titled(window, "ended")
                shoot(window, "x11-ended")
        run(scenario())
        assert agent.wait(timeout=30) == 0  # the receipt closes itself
    finally:
        stop(agent)
    log = agent_log(tmp_path)
    assert "input: key KeyW down" in log and "input: key KeyQ" not in log
    assert "Traceback" not in log
    assert [row["ended_by"] for row in ledger_csv(relay)] == ["customer"]
