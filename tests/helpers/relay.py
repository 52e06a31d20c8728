"""The relay as a real process: `python -m relay serve` on 127.0.0.1 port 0, its data
folder and command line, and a throwaway TLS certificate for it."""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.accounts import DB_FILE
from relay.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (https?)://[^\s:]+:(\d+)")


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
        # reaped and its pipe closed here, or a warning about them fails a later test
        self.kill()
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


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"openssl could not make a test certificate: {result.stderr}"
    return cert, key


def ledger_csv(relay) -> list[dict[str, str]]:
    """The ledger as `relay ledger --csv` prints it, one dict per row."""
    result = relay.cli("ledger", "--csv")
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def relay_events(relay) -> list[tuple]:
    """The ledger's event rows (refusals, floods, ...), read from its database."""
    relay.settle()
    ledger = Ledger(relay.data / DB_FILE)
    try:
        return ledger.events()
    finally:
        ledger.close()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def no_traceback(relay) -> None:
    """The relay printed no traceback (bad input gets a clear error or a clean close)."""
    output = "".join(relay.output)
    assert "Traceback" not in output, output[-3000:]
