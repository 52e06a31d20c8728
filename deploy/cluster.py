"""`./dev cluster [--relays N]`: PostgreSQL, N relays and HAProxy in front, all on loopback.

Prints the public URL (HAProxy), a demo login and each relay's pid and port; Ctrl+C stops
them all. tests/test_cluster.py drives the same ``Cluster`` (kill -9 a relay, start it
again). Only loopback addresses and free ports; every folder is a fresh temporary one.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localpg import LocalPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = Path(__file__).resolve().parent / "haproxy.cfg"
_LISTENING = re.compile(r"listening on http://[^\s:]+:(\d+)")


@dataclass
class RelayInstance:
    """One `python -m relay serve` of the cluster."""

    name: str
    port: int
    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)
    drainer: threading.Thread | None = None

    def close_output(self) -> None:
        """After the process ended: the drain thread has met EOF; close our end of the pipe."""
        if self.drainer is not None:
            self.drainer.join(timeout=10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    postgres: LocalPostgres
    folder: Path
    public_port: int
    relays: list[RelayInstance]
    grace: float = 60.0
    extra_args: tuple[str, ...] = ()
    haproxy: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.public_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RELAY_PASSWORD"}
        env["RELAY_DATABASE_URL"] = self.postgres.url  # never on a command line
        return env

    @classmethod
    def start(cls, relays: int = 3, *, grace: float = 60.0,
              extra_args: tuple[str, ...] = ()) -> Cluster:
        postgres = LocalPostgres.start()
        folder = Path(tempfile.mkdtemp(prefix="relay-cluster-"))
        cluster = cls(postgres, folder, free_port(),
                      [RelayInstance(f"relay-{n}", free_port()) for n in range(1, relays + 1)],
                      grace, extra_args)
        try:
            cluster.cli("migrate")
            for relay in cluster.relays:
                cluster.start_relay(relay)
            cluster.start_haproxy()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        env = self.env()
        if password is not None:
            env["RELAY_PASSWORD"] = password
        result = subprocess.run([sys.executable, "-m", "relay", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"relay {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def start_relay(self, relay: RelayInstance) -> None:
        relay.output.clear()
        relay.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1",
             "--port", str(relay.port), "--relay-id", relay.name,
             "--trusted-proxy", "127.0.0.1", "--grace", str(self.grace), *self.extra_args],
            cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, stdin=subprocess.DEVNULL)
        assert relay.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = relay.process.stdout.readline()
            if not line:
                break
            relay.output.append(line)
            if _LISTENING.search(line):
                # Keep reading so the relay never blocks on a full pipe.
                relay.drainer = threading.Thread(target=_drain, args=(relay,), daemon=True)
                relay.drainer.start()
                return
        relay.process.kill()
        relay.process.wait()
        relay.close_output()
        raise RuntimeError(f"{relay.name} did not start:\n{''.join(relay.output)}")

    def kill_relay(self, relay: RelayInstance) -> None:
        """SIGKILL: the relay vanishes mid-session, as a crashed machine would."""
        if relay.alive():
            assert relay.process is not None
            relay.process.kill()
            relay.process.wait()
            relay.close_output()

    def stop_relay(self, relay: RelayInstance, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops or restarts one: it hands its sessions over and exits.
        Its exit code."""
        assert relay.process is not None
        relay.process.send_signal(signal.SIGTERM)
        code = relay.process.wait(timeout=timeout)
        relay.close_output()
        return code

    def haproxy_config(self) -> str:
        text = HAPROXY_CFG.read_text()
        text = re.sub(r"(?m)^    bind \S+$", f"    bind 127.0.0.1:{self.public_port}", text)
        text = re.sub(r"(?m)^    server .*\n", "", text)
        servers = "".join(f"    server {r.name} 127.0.0.1:{r.port} check\n"
                          for r in self.relays)
        return text.rstrip("\n") + "\n" + servers

    def start_haproxy(self) -> None:
        if shutil.which("haproxy") is None:
            raise RuntimeError("HAProxy is not installed (apt-get install haproxy)")
        config = self.folder / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stderr}")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_healthy(self.relays)

    def wait_healthy(self, relays: list[RelayInstance], timeout: float = 30) -> None:
        """Until each relay answers /healthz and HAProxy serves the viewer."""
        deadline = time.monotonic() + timeout
        for url in [f"{self.url}/"] + [f"http://127.0.0.1:{r.port}/healthz"
                                              for r in relays]:
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not answer within {timeout:g} s")
                time.sleep(0.1)

    def stop(self) -> None:
        for process in [self.haproxy, *(r.process for r in self.relays)]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.haproxy, *(r.process for r in self.relays)]:
            if process is None:
                continue
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for relay in self.relays:
            relay.close_output()
        self.postgres.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _drain(relay: RelayInstance) -> None:
    assert relay.process is not None and relay.process.stdout is not None
    try:
        for line in relay.process.stdout:
            relay.output.append(line)
    except ValueError:  # closed by stop()
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--relays", type=int, default=3, choices=range(1, 10), metavar="N",
                        help="how many relays (1-9, default 3)")
    args = parser.parse_args(argv)
    print(f"Starting PostgreSQL, {args.relays} relays and HAProxy on 127.0.0.1 ...", flush=True)
    try:
        cluster = Cluster.start(args.relays)
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        password = secrets.token_urlsafe(12)
        cluster.cli("add-technician", "demo", "--name", "Demo Support", password=password)
        print(f"\nOpen the viewer at {cluster.url}/ and log in as\n"
              f"    user:     demo\n    password: {password}\n")
        print(f"PostgreSQL  {cluster.postgres.url.rsplit('@', 1)[1]} (pid "
              f"{cluster.postgres.process.pid if cluster.postgres.process else '?'})")
        assert cluster.haproxy is not None
        print(f"HAProxy     127.0.0.1:{cluster.public_port} (pid {cluster.haproxy.pid})")
        for relay in cluster.relays:
            print(f"{relay.name:11} 127.0.0.1:{relay.port} (pid {relay.pid})")
        print("\nCommands on the cluster's database: RELAY_DATABASE_URL="
              f"{cluster.postgres.url} python -m relay ...\nCtrl+C stops them all.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping the cluster ...", flush=True)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
