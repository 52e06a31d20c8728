"""Shared fixtures: a virtual X screen, a real relay process on 127.0.0.1 port 0, scripted
customers and Chromium. What they are built from is in tests/helpers/."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.agent import ScriptedAgent
from tests.helpers.browser import Viewer, launch
from tests.helpers.desktop import Display, start_xvfb
from tests.helpers.relay import ROOT, RelayProcess


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


# --- PostgreSQL (issue 16): one throwaway server per run, a fresh database per test -------


@dataclass
class Postgres:
    """A LocalPostgres (deploy/localpg.py) and a way to get an empty database on it."""

    server: object
    made: int = 0

    def fresh_url(self) -> str:
        """The URL of a new, empty database on the server."""
        import asyncpg  # only the tests that use PostgreSQL need the driver

        self.made += 1
        name = f"test_{os.getpid()}_{self.made}"

        async def create() -> None:
            connection = await asyncpg.connect(self.server.url)
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        import asyncio

        asyncio.run(create())
        return self.server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL on 127.0.0.1 (run as the postgres user when we are root)."""
    sys.path.insert(0, str(ROOT / "deploy"))
    from localpg import LocalPostgres

    try:
        server = LocalPostgres.start()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        pytest.fail(f"PostgreSQL did not start ({error}): run ./dev test, which installs it")
    yield Postgres(server)
    server.stop()
