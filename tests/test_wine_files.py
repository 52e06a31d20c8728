"""A file sent to the customer of the Windows exe, built under Wine and run under Wine on
Xvfb: the native consent window (file_window.Win32FileWindow) found by its title, answered
with Esc (declined) and then Enter (saved), and the bytes in SPOTLIGHT_DOWNLOADS checked by
SHA-256. The sender is a scripted viewer on the real relay."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator

import mss
import pytest
from PIL import Image

import protocol as p
from tests.helpers.desktop import find_window, require_tools
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wine import (
    CACHE,
    ROOT,
    build_windows_exe,
    clean_prefix,
    running_exe,
    windows_path,
)

RUN_PREFIX = CACHE / "run-prefix"  # recreated here: the exe must need nothing in it
SHOTS = ROOT / "test-artifacts" / "wine-files"
TITLE = "David wants to send you a file"

pytestmark = [pytest.mark.wine, pytest.mark.build, pytest.mark.x11]


@pytest.fixture(scope="module")
def wine_run_env(xvfb) -> Iterator[dict[str, str]]:
    """The exe built by packaging/build-windows.sh (cached toolchain) and a clean prefix."""
    require_tools("wine", "wineserver", "wineboot", "xdotool")
    build_windows_exe()
    with clean_prefix(RUN_PREFIX, xvfb.name) as env:
        yield env


def window(title: str) -> str:
    """The X window id of the exe's window with this title, once it is up (Wine gives each
    top-level Win32 window an X window named by its title)."""
    return find_window(f"^{title}$")


def gone(window_id: str) -> None:
    """Wait until the X window is no longer shown (Wine unmaps a destroyed window a moment
    after DestroyWindow returns: a search for the next dialog could find this one)."""
    deadline = time.monotonic() + 30
    while window_id in subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "."],
                                      capture_output=True, text=True, timeout=30).stdout.split():
        assert time.monotonic() < deadline, f"window {window_id} is still shown"
        time.sleep(0.1)


def press(window_id: str, key: str) -> None:
    """Focus the window and press ``key`` (XTEST), as the customer would."""
    subprocess.run(["xdotool", "windowfocus", "--sync", window_id, "key", key],
                   check=True, timeout=30)


def screenshot(name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with mss.MSS() as grabber:
        shot = grabber.grab(grabber.monitors[1])
        Image.frombytes("RGB", shot.size, shot.rgb).save(SHOTS / f"{name}.png")


def offer(session: str, data: bytes, name: str, transfer: int) -> p.FileOffer:
    return p.FileOffer(session, transfer, name, len(data), hashlib.sha256(data).hexdigest())


async def send(viewer: ScriptedViewer, data: bytes, transfer: int) -> None:
    """The viewer's side after an accepting answer: chunks within the acknowledged window."""
    flow = p.FileWindow(len(data))
    offset = 0
    while offset < len(data):
        length = min(p.FILE_CHUNK_BYTES, flow.room())
        if length == 0:
            ack = await viewer.expect(p.FileAck)
            assert flow.ack(ack.received)
            continue
        assert flow.admit(offset, length)
        await viewer.ws.send(p.encode_file_chunk(
            p.FileChunk(transfer, offset, data[offset:offset + length])))
        offset += length


@pytest.mark.timeout(1800)  # a build from nothing (prefix, Python, packages) takes minutes
def test_the_exe_asks_in_its_own_window_esc_declines_and_enter_saves_with_the_sha256(
        wine_run_env, relay, tmp_path):
    """Under Wine: "David wants to send you a file" appears; Esc declines the first file
    (nothing written), Enter saves the second in SPOTLIGHT_DOWNLOADS with the same SHA-256
    ("File saved"), and Esc in "Receiving big.bin" cancels the third (nothing left of it)."""
    downloads = tmp_path / "Downloads"
    env = {**wine_run_env, "SPOTLIGHT_DOWNLOADS": windows_path(downloads)}
    data = os.urandom(300_000)
    with running_exe(env, tmp_path, "--relay", relay.ws_url, "--technician", "david"
                     ) as (_, output):
        async def scenario() -> tuple[p.FileAnswer, p.FileDone]:
            async with await ScriptedViewer.login(relay, "david", "david-pw") as viewer:
                await viewer.accept((await viewer.wait_for_pending(timeout=90)).session)
                await viewer.send(offer(viewer.session, b"not wanted", "setup.exe", 3))
                first = await asyncio.to_thread(window, TITLE)
                await asyncio.to_thread(press, first, "Escape")
                declined = await viewer.expect(p.FileAnswer, lambda m: m.transfer == 3)
                await asyncio.to_thread(gone, first)
                await viewer.send(offer(viewer.session, data, "report.pdf", 4))
                asking = await asyncio.to_thread(window, TITLE)
                await asyncio.to_thread(screenshot, "consent")
                await asyncio.to_thread(press, asking, "Return")
                answer = await viewer.expect(p.FileAnswer, lambda m: m.transfer == 4)
                assert answer.accept, answer
                await send(viewer, data, 4)
                done = await viewer.expect(p.FileDone, lambda m: m.transfer == 4)
                await asyncio.to_thread(window, "File saved")
                await asyncio.to_thread(screenshot, "saved")

                # a third file, taken and then cancelled by the customer while it waits
                await viewer.send(offer(viewer.session, data, "big.bin", 5))
                await asyncio.to_thread(press, await asyncio.to_thread(window, TITLE), "Return")
                assert (await viewer.expect(p.FileAnswer, lambda m: m.transfer == 5)).accept
                receiving = await asyncio.to_thread(window, "Receiving big.bin")
                await asyncio.to_thread(screenshot, "receiving")
                await asyncio.to_thread(press, receiving, "Escape")
                cancelled = await viewer.expect(p.FileCancel, lambda m: m.transfer == 5)
                assert cancelled.reason == "file-cancelled", cancelled
                await asyncio.to_thread(window, "File not saved")
                return declined, done

        declined, done = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert declined.accept is False, output.text()
    assert done.saved_as == "report.pdf"
    # nothing of the declined file, nor of the cancelled one (not even a temporary file)
    assert sorted(f.name for f in downloads.iterdir()) == ["report.pdf"]
    saved = (downloads / "report.pdf").read_bytes()
    assert hashlib.sha256(saved).hexdigest() == hashlib.sha256(data).hexdigest()
    log = "".join(output.lines)  # the exe's log comes on stdout when stderr is a pipe
    assert "session: accepted" in log, log[-3000:]
    assert "Traceback" not in log and "file window" not in log, log[-3000:]
