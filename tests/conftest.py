"""Shared fixtures: a virtual X screen and a real relay process on 127.0.0.1 port 0."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
_LISTENING = re.compile(r"listening on (https?)://[^\s:]+:(\d+)")


@dataclass
class Display:
    """A running Xvfb server."""

    name: str  # ":N"
    width: int
    height: int
    process: subprocess.Popen = field(repr=False)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.name}


def start_xvfb(width: int = 1280, height: int = 800) -> Display:
    """Start Xvfb on a free display number (Xvfb picks it and reports it on a pipe)."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed: run ./dev test, which installs it")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        process.kill()
        pytest.fail("Xvfb did not start")
    return Display(f":{number}", width, height, process)


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


@dataclass
class RelayProcess:
    """`python -m relay serve` running on 127.0.0.1, its data folder, and how to reach it."""

    data: Path
    extra_args: list[str]
    process: subprocess.Popen | None = None
    port: int = 0
    scheme: str = "http"
    output: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> RelayProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--data", str(self.data), *self.extra_args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.scheme, self.port = match.group(1), int(match.group(2))
                # Keep draining the output so the relay never blocks on a full pipe.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        self.process.kill()
        pytest.fail("relay did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def settle(self) -> None:
        """Wait until the running relay has written everything it queued for the ledger
        (its writes are off the event loop, so they land a moment after the replies)."""
        if self.process is None or self.process.poll() is not None:
            return
        import http.client
        import json
        import ssl

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.scheme == "https":
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, timeout=10, context=context)
            else:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/healthz")
                if json.loads(connection.getresponse().read())["ledger_queue"] == 0:
                    return
            finally:
                connection.close()
            time.sleep(0.02)
        pytest.fail("the relay's ledger writes did not finish within 30 s")

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        """Run another `python -m relay` subcommand on the same data folder (once the
        running relay's ledger writes are done)."""
        self.settle()
        env = dict(os.environ)
        if password is not None:
            env["RELAY_PASSWORD"] = password
        return subprocess.run(
            [sys.executable, "-m", "relay", *args, "--data", str(self.data)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def add_technician(self, technician: str, name: str, password: str) -> None:
        result = self.cli("add-technician", technician, "--name", name, password=password)
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_output()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash or a pulled plug."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_output()

    def _close_output(self) -> None:
        # The drain thread ends at EOF (the relay has exited); closing our end after it keeps
        # warnings-as-errors quiet about an unclosed pipe.
        if self._drainer is not None:
            self._drainer.join(timeout=10)
        if self.process and self.process.stdout and not self.process.stdout.closed:
            with contextlib.suppress(ValueError, OSError):
                self.process.stdout.close()


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
