"""A file from the viewer in Chromium to the real agent on Xvfb, through the real relay:
chosen with data-testid="send-file" or dropped onto the screen, consented to (or not) in
the agent's dialog found by its title, and the outcome shown in words on the page."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.browser import Viewer
from tests.helpers.desktop import agent_from_source, find_window, require_tools

pytestmark = [pytest.mark.x11, pytest.mark.browser]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "files"
TITLE = "David wants to send you a file"


def agent_env(tmp_path: Path, downloads: Path, panel: str = "log") -> dict[str, str]:
    """The agent's environment here: Tk dialogs (the consent window), downloads in a folder of
    the test's own."""
    return {**os.environ, "SPOTLIGHT_DIALOGS": "tk", "SPOTLIGHT_PANEL": panel,
            "XDG_RUNTIME_DIR": str(tmp_path), "SPOTLIGHT_DOWNLOADS": str(downloads)}


def answer_dialog(key: str) -> None:
    """Find the consent dialog by its title (xdotool takes a regex) and press ``key``."""
    window = find_window(f"^{TITLE}$", timeout=30)
    subprocess.run(["xdotool", "windowfocus", "--sync", window, "key", key],
                   check=True, timeout=30)


def in_session(viewer: Viewer) -> None:
    viewer.signed_in()
    viewer.by("queue-item").first.get_by_test_id("accept").click()
    viewer.by("screen").wait_for(state="visible")


def test_a_file_chosen_in_the_viewer_reaches_the_customers_downloads(
        xvfb, relay, open_viewer, tmp_path) -> None:
    """send-file -> the dialog -> Enter: the file is in Downloads with the same SHA-256, and
    the page says where it was saved."""
    require_tools("xdotool")
    downloads = tmp_path / "Downloads"
    data = os.urandom(700_000)
    with agent_from_source(agent_env(tmp_path, downloads), relay.ws_url,
                           tmp_path / "agent.log"):
        viewer = open_viewer()
        in_session(viewer)
        viewer.by("send-file").set_input_files(
            files=[{"name": "setup notes.txt", "mimeType": "text/plain", "buffer": data}])
        answer_dialog("Return")
        state = viewer.by("file-state").first
        state.filter(has_text="Saved on the customer's computer as setup notes.txt").wait_for()
        SHOTS.mkdir(parents=True, exist_ok=True)
        viewer.page.screenshot(path=str(SHOTS / "viewer-saved.png"))
        file_messages = [m["type"] for m in viewer.sent if m["type"].startswith("file_")]
    saved = downloads / "setup notes.txt"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert file_messages == ["file_offer"]  # the rest went as binary chunks


def test_a_file_dropped_on_the_screen_and_declined_says_so(
        xvfb, relay, open_viewer, tmp_path) -> None:
    """A drop onto the screen offers the file; Esc in the dialog declines it and the page
    says "The customer declined the file."; nothing is written."""
    require_tools("xdotool")
    downloads = tmp_path / "Downloads"
    with agent_from_source(agent_env(tmp_path, downloads), relay.ws_url,
                           tmp_path / "agent.log"):
        viewer = open_viewer()
        in_session(viewer)
        viewer.page.evaluate("""() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["not wanted"], "tool.exe"));
            const target = document.getElementById("viewport");
            for (const type of ["dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer,
                                                           bubbles: true, cancelable: true }));
            }
        }""")
        answer_dialog("Escape")
        viewer.by("file-state").first.filter(
            has_text="The customer declined the file.").wait_for()
    assert not downloads.exists() or list(downloads.iterdir()) == []


def test_a_file_the_customer_sends_is_offered_as_a_download_with_its_sha256(
        xvfb, relay, open_viewer, tmp_path) -> None:
    """"Send a file to David…" on the customer's panel (Alt+F), the file picked in the Tk
    dialog: the viewer checks its SHA-256 and offers it as a download of the same bytes."""
    require_tools("xdotool")
    data = os.urandom(400_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    with agent_from_source(agent_env(tmp_path, tmp_path / "Downloads", panel="tk"), relay.ws_url,
                           tmp_path / "agent.log"):
        viewer = open_viewer()
        in_session(viewer)
        subprocess.run(["xdotool", "windowfocus", "--sync",
                        find_window("can see your screen", timeout=30), "key", "alt+f"],
                       check=True, timeout=30)
        window = find_window("^Send a file to David$", timeout=30)
        SHOTS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["xdotool", "windowfocus", "--sync", window, "type", "--delay", "5",
                        str(upload)], check=True, timeout=60)
        subprocess.run(["xdotool", "key", "Return"], check=True, timeout=30)
        link = viewer.by("file-download")
        link.wait_for()
        assert link.text_content() == "Download upload.bin"
        viewer.page.screenshot(path=str(SHOTS / "viewer-received.png"))
        with viewer.page.expect_download() as download:
            link.click()
        received = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
