""""Send a file to David…" in the tray's menu: the menu's model (agent_ui.TrayMenu, which
PystrayTray draws) and the path its line takes, the same Controls path as the panel's button."""

from __future__ import annotations

import pytest

import agent_ui

SEND = "Send a file to David\u2026"


class Agent:
    """Records what the Controls ask of the running agent (agent.Agent's request_* calls)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def request_send_file(self) -> None:
        self.asked.append("send_file")

    def request_pause(self, paused: bool) -> None:
        self.asked.append("pause" if paused else "resume")

    def request_close(self) -> None:
        self.asked.append("close")


def menu_of(controls: agent_ui.Controls) -> agent_ui.TrayMenu:
    return agent_ui.TrayMenu(controls.end, controls.pause, controls.send_file, "David")


def line(menu: agent_ui.TrayMenu, state: str, label: str) -> agent_ui.TrayItem:
    found = [item for item in menu.items(state, "status") if item.label == label]
    assert len(found) == 1, menu.items(state, status="status")
    return found[0]


@pytest.mark.parametrize("state", agent_ui.SHARING_TRAY_STATES)
def test_the_tray_offers_send_a_file_while_the_support_person_is_connected(state):
    """Active, in control or paused: the menu has "Send a file to David…", enabled."""
    item = line(menu_of(agent_ui.Controls()), state, SEND)
    assert item.enabled and item.key == "send_file"


@pytest.mark.parametrize("state", ["pending", "reconnecting"])
def test_the_trays_send_a_file_is_greyed_without_a_support_person(state):
    """Waiting or reconnecting: the line is there but cannot be chosen."""
    assert not line(menu_of(agent_ui.Controls()), state, SEND).enabled


def test_choosing_send_a_file_in_the_tray_takes_the_panels_path():
    """The tray's line asks the running agent to send a file, exactly as the panel's button."""
    controls, agent = agent_ui.Controls(), Agent()
    controls.agent = agent
    menu = menu_of(controls)
    menu.choose(line(menu, "active", SEND).key)
    controls.panel_actions().on_send_file()
    assert agent.asked == ["send_file", "send_file"]


def test_the_trays_other_lines_keep_their_actions():
    """Pause, Resume and Close still reach the agent through the same menu model."""
    controls, agent = agent_ui.Controls(), Agent()
    controls.agent = agent
    menu = menu_of(controls)
    for state, label in (("active", "Pause"), ("paused", "Resume"), ("pending", "Close")):
        menu.choose(line(menu, state, label).key)
    assert agent.asked == ["pause", "resume", "close"]
    assert line(menu, "active", "status").key is None
    assert not line(menu, "active", "Restart as administrator").visible  # not offered here


def test_the_tray_names_the_support_person_it_was_started_for():
    """Without a name (a bare id), the line still reads as a sentence."""
    menu = agent_ui.TrayMenu(lambda: None, lambda _p: None, lambda: None)
    assert line(menu, "active", "Send a file to your support person\u2026").enabled
