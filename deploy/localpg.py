"""A throwaway PostgreSQL on 127.0.0.1 for `./dev cluster` and the tests (Debian's packages).

initdb and postgres refuse to run as root, so when we are root both run as the ``postgres``
user, with the data folder in a fresh temporary folder that user owns. Loopback only, a
free port, trust authentication (nobody but this machine's users can reach it, and it
holds nothing worth keeping).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class LocalPostgres:
    """One running server; ``url`` reaches its database ``relay``."""

    folder: Path
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/relay"

    @classmethod
    def start(cls) -> LocalPostgres:
        folder = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        folder.chmod(0o755)  # the postgres user must reach its data folder inside
        data = folder / "data"
        data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        server = cls(folder, free_port())
        subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres",
                                     "-A", "trust", "-E", "UTF8", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        with (folder / "postgres.log").open("wb") as log:  # the child keeps its own copy
            server.process = subprocess.Popen(
                _as_postgres([_bin("postgres"), "-D", str(data), "-p", str(server.port),
                              "-c", "listen_addresses=127.0.0.1",
                              "-c", f"unix_socket_directories={data}",
                              "-c", "fsync=off", "-c", "max_connections=200"]),
                stdout=subprocess.DEVNULL, stderr=log, cwd="/")
        server._wait_ready(data)
        subprocess.run(_as_postgres([_bin("createdb"), "-h", "127.0.0.1", "-p",
                                     str(server.port), "-U", "postgres", "relay"]),
                       check=True, capture_output=True, cwd="/")
        return server

    def _wait_ready(self, data: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError("postgres exited:\n" + self.log())
            ready = subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("postgres did not start within 30 s:\n" + self.log())

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: postgres's "smart" shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
