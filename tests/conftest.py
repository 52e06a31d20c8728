"""Shared fixtures: a virtual X screen, a real relay process on 127.0.0.1 port 0, scripted
customers and Chromium. What they are built from is in tests/helpers/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.agent import ScriptedAgent
from tests.helpers.browser import Viewer, launch
from tests.helpers.desktop import Display, start_xvfb
from tests.helpers.relay import RelayProcess


@pytest.fixture(scope="session")
def xvfb() -> Iterator[Display]:
    """One Xvfb for the whole run; DISPLAY is set for this process and its children."""
    display = start_xvfb()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display.name
    yield display
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
    display.process.terminate()
    display.process.wait(timeout=10)


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator:
    """Start relays with extra `serve` arguments; all are stopped after the test."""
    started: list[RelayProcess] = []

    def start(*extra_args: str, data: Path | None = None) -> RelayProcess:
        relay = RelayProcess(data or tmp_path / "relay-data", list(extra_args)).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(relay_factory) -> RelayProcess:
    """A relay with two support people: david (password david-pw) and petur (petur-pw)."""
    running = relay_factory()
    running.add_technician("david", "David", "david-pw")
    running.add_technician("petur", "Petur", "petur-pw")
    return running


@pytest.fixture
def agents(relay) -> Iterator[Callable[..., ScriptedAgent]]:
    """Start scripted customers on the relay; all are closed after the test."""
    started: list[ScriptedAgent] = []

    def start(**kwargs) -> ScriptedAgent:
        agent = ScriptedAgent(relay, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's Chromium, headless, for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def open_viewer(browser, relay) -> Iterator[Callable[[], Viewer]]:
    """Open support people's tabs on the relay's page; none may log a script error."""
    viewers: list[Viewer] = []

    def open_one() -> Viewer:
        viewer = Viewer(browser, relay)
        viewers.append(viewer)
        return viewer

    yield open_one
    for viewer in viewers:
        assert viewer.errors == [], viewer.errors
        viewer.close()
