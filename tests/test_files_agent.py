"""A file sent to the customer: the real agent (python agent.py) on Xvfb, its Tk consent
dialog found by its title and answered with xdotool, the real relay, and a scripted viewer
as the sender. The agent's Downloads folder is set through its own SPOTLIGHT_DOWNLOADS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path

import mss
import pytest
from PIL import Image

import protocol as p
from tests.helpers.desktop import agent_from_source, find_window, require_tools
from tests.helpers.viewer import ScriptedViewer

pytestmark = pytest.mark.x11
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "files"
TITLE = "David wants to send you a file"


def agent_env(tmp_path: Path, downloads: Path, panel: str = "log") -> dict[str, str]:
    """The agent's environment here: Tk dialogs (the consent window), downloads in a folder of
    the test's own."""
    return {**os.environ, "SPOTLIGHT_DIALOGS": "tk", "SPOTLIGHT_PANEL": panel,
            "XDG_RUNTIME_DIR": str(tmp_path), "SPOTLIGHT_DOWNLOADS": str(downloads)}


def dialog(title: str = TITLE) -> str:
    """The window id of the dialog with this title (xdotool takes a regex), once it is up."""
    return find_window(f"^{title}$", timeout=30)


def press(window: str, key: str) -> None:
    """Focus the window and press ``key`` there, as the customer would."""
    subprocess.run(["xdotool", "windowfocus", "--sync", window, "key", key],
                   check=True, timeout=30)


def screenshot(name: str) -> Path:
    """The X screen, into test-artifacts/files/ for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    with mss.MSS() as grabber:
        shot = grabber.grab(grabber.monitors[1])
        Image.frombytes("RGB", shot.size, shot.rgb).save(path)
    return path


async def send(viewer: ScriptedViewer, data: bytes, transfer: int = 5) -> None:
    """The viewer's side after an accepting answer: chunks within the window."""
    window = p.FileWindow(len(data))
    offset = 0
    while offset < len(data):
        length = min(p.FILE_CHUNK_BYTES, window.room())
        if length == 0:
            ack = await viewer.expect(p.FileAck)
            assert window.ack(ack.received)
            continue
        assert window.admit(offset, length)
        await viewer.ws.send(p.encode_file_chunk(
            p.FileChunk(transfer, offset, data[offset:offset + length])))
        offset += length


def offer(session: str, data: bytes, name: str, transfer: int = 5) -> p.FileOffer:
    return p.FileOffer(session, transfer, name, len(data), hashlib.sha256(data).hexdigest())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 180))


def test_a_file_accepted_with_enter_is_saved_in_downloads_with_its_sha256(
        xvfb, relay, tmp_path) -> None:
    """Enter in the dialog titled "David wants to send you a file" saves it: the bytes in
    Downloads have the offered SHA-256, under a new name beside the file already there."""
    require_tools("xdotool")
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "report.pdf").write_bytes(b"the customer's own file")
    data = os.urandom(600_000)
    with agent_from_source(agent_env(tmp_path, downloads), relay.ws_url,
                           tmp_path / "agent.log"):
        async def scenario() -> p.FileDone:
            async with await ScriptedViewer.login(relay) as viewer:
                await viewer.accept_waiting()
                await viewer.send(offer(viewer.session, data, "report.pdf"))
                window = await asyncio.to_thread(dialog)
                await asyncio.to_thread(screenshot, "consent")
                await asyncio.to_thread(press, window, "Return")
                answer = await viewer.expect(p.FileAnswer)
                assert answer.accept is True
                await send(viewer, data)
                done = await viewer.expect(p.FileDone)
                await asyncio.to_thread(dialog, "File saved")
                await asyncio.to_thread(screenshot, "saved")
                return done

        done = run(scenario())
    assert done.saved_as == "report (2).pdf"
    saved = downloads / "report (2).pdf"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert (downloads / "report.pdf").read_bytes() == b"the customer's own file"
    assert sorted(f.name for f in downloads.iterdir()) == ["report (2).pdf", "report.pdf"]
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


def test_escape_declines_and_no_input_is_injected_while_the_dialog_is_up(
        xvfb, relay, tmp_path) -> None:
    """With control taken, the support person's Enter while the dialog is up is not injected
    (else it would save the file): the customer's Esc, pressed after it, is the answer."""
    require_tools("xdotool")
    downloads = tmp_path / "Downloads"
    with agent_from_source(agent_env(tmp_path, downloads), relay.ws_url,
                           tmp_path / "agent.log"):
        async def scenario() -> p.FileAnswer:
            async with await ScriptedViewer.login(relay) as viewer:
                await viewer.accept_waiting()
                await viewer.take_control()
                await viewer.send(offer(viewer.session, b"hello", "evil.exe"))
                window = await asyncio.to_thread(dialog)
                await asyncio.to_thread(subprocess.run, ["xdotool", "windowfocus", "--sync",
                                                         window], check=True, timeout=30)
                for down in (True, False):
                    await viewer.send(p.Key(viewer.session, "Enter", "Enter", down))
                # The marker: a refresh is answered with a full image only after the agent
                # has handled the Enter sent before it.
                await viewer.send(p.Refresh(viewer.session, 0))
                await viewer.expect(p.Frame, lambda f: f.flags & p.FLAG_FULL)
                await asyncio.to_thread(press, window, "Escape")
                return await viewer.expect(p.FileAnswer)

        answer = run(scenario())
    assert answer.accept is False
    assert list(downloads.iterdir()) == []  # not even a temporary file
