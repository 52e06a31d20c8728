"""The viewer in Chromium against the real relay and a scripted customer: the Windows
administrator prompt (desktop{secure}) and the request to restart as administrator."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocol
from tests.helpers.agent import ScriptedAgent
from tests.helpers.browser import Viewer

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "viewer"
NOTICE = "The customer sees a Windows administrator prompt. Ask them to click Yes or No."


def in_control(open_viewer, agents) -> tuple[Viewer, ScriptedAgent]:
    viewer = open_viewer().signed_in()
    agent = agents()
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    agent.send_full((200, 30, 30))
    viewer.wait_for_pixel(10, 10, (200, 30, 30), tolerance=8)
    viewer.take_control(agent)
    viewer.by("screen").click()
    return viewer, agent


def test_the_prompt_notice_shows_over_the_last_image_and_keeps_keys_in_the_page(
        open_viewer, agents):
    """desktop{secure}: the notice reads the sentence, the last image stays drawn under it,
    and a key pressed meanwhile is never sent; desktop{false}: keys reach the customer."""
    viewer, agent = in_control(open_viewer, agents)
    agent.send(protocol.Desktop(True))
    notice = viewer.by("secure-desktop")
    notice.wait_for(state="visible")
    assert NOTICE in notice.text_content()
    assert viewer.pixel(10, 10) == pytest.approx((200, 30, 30), abs=8)
    SHOTS.mkdir(parents=True, exist_ok=True)
    viewer.page.screenshot(path=str(SHOTS / "administrator-prompt.png"))
    viewer.page.keyboard.press("KeyQ")
    agent.send(protocol.Desktop(False))
    notice.wait_for(state="hidden")
    viewer.page.keyboard.press("KeyW")
    agent.expect(protocol.Key, lambda m: m.code == "KeyW" and not m.down)
    assert not [m for m in agent.drain() if isinstance(m, protocol.Key) and m.code == "KeyQ"]
    assert not [m for m in viewer.sent if m.get("code") == "KeyQ"]


def test_the_admin_button_asks_the_customer_and_shows_their_answer(open_viewer, agents):
    """"Ask for admin rights" sends `elevate` for the open session; the customer's No comes
    back as a plain sentence, and control is still on."""
    viewer, agent = in_control(open_viewer, agents)
    viewer.by("elevate").click()
    assert agent.expect(protocol.Elevate).session == agent.session
    agent.send(protocol.Elevation("declined"))
    toast = viewer.page.locator("#toast")
    toast.wait_for(state="visible")
    assert toast.text_content() == ("The customer did not restart as administrator; the "
                                    "session goes on as before.")
    assert viewer.by("control-toggle").text_content() == "Release control"
