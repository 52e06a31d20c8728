"""The session directory: what another relay needs to resume a live session after a crash.

One row per live session (removed when it ends): who owns it, its state and billing clock,
the sha256 of its current resume secret (never the secret), which relay holds it and that
relay's last sign of life for it. SQLite here; relay.pgstore keeps the same rows in
PostgreSQL.
"""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from relay.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_directory (
    session TEXT PRIMARY KEY,
    technician TEXT NOT NULL,
    state TEXT NOT NULL,
    accepted_at REAL,
    resume_sha256 TEXT NOT NULL UNIQUE,
    relay TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    code TEXT NOT NULL DEFAULT '',
    paused_s REAL NOT NULL DEFAULT 0,
    paused_at REAL,
    control TEXT NOT NULL DEFAULT '',
    machine TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    requested_at REAL NOT NULL DEFAULT 0,
    screens TEXT NOT NULL DEFAULT '[]',
    ref INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS session_directory_relay ON session_directory (relay);
"""


def resume_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A live session as any relay may resume it."""

    session: str
    technician: str
    state: str  # relay.pairing's WAITING or ACTIVE
    accepted_at: float | None  # the billing clock's start
    resume_sha256: str
    relay: str  # the relay holding its links
    heartbeat_at: float  # that relay's last sign of life for it
    code: str = ""  # the session code the customer read out (issue 12)
    paused_s: float = 0.0  # seconds paused so far, not billed (issue 12)
    paused_at: float | None = None  # paused since then; None while running
    control: str = ""  # who holds control; "" for nobody
    machine: str = ""  # what the support person's queue and session show
    user: str = ""
    address: str = ""
    requested_at: float = 0.0
    screens: str = "[]"  # JSON [[x, y, width, height], ...]: the layout before a resume
    ref: int = 0  # the ledger's reference (the customer's receipt)
    note: str = ""  # the support person's note (issue 13): a relay taking over keeps it


COLUMNS = tuple(f.name for f in fields(Entry))
RELEASED = ""  # Entry.relay of a session no relay holds: its relay restarted (relay.pgstore)


class Directory(Store):
    """The directory in the relay's SQLite file (synchronous; relay.stores runs it in its
    own thread)."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, _SCHEMA)
        with self._lock:  # a file from before notes
            have = {row[1] for row in self._db.execute("PRAGMA table_info(session_directory)")}
            if "note" not in have:
                self._db.execute(
                    "ALTER TABLE session_directory ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    def put(self, entry: Entry) -> None:
        """Insert or replace the session's row."""
        marks = ", ".join("?" * len(COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO session_directory ({', '.join(COLUMNS)})"  # noqa: S608
                f" VALUES ({marks})", astuple(entry))

    def get(self, session: str) -> Entry | None:
        return self._one("session = ?", (session,))

    def by_resume(self, secret: str) -> Entry | None:
        return self._one("resume_sha256 = ?", (resume_hash(secret),))

    def remove(self, session: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM session_directory WHERE session = ?", (session,))

    def claim(self, session: str, relay: str, now: float) -> Entry | None:
        """Move the session to ``relay`` (a resume reached it); the entry as it was."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM session_directory"  # noqa: S608
                " WHERE session = ?", (session,)).fetchone()
            self._db.execute("UPDATE session_directory SET relay = ?, heartbeat_at = ?"
                             " WHERE session = ?", (relay, now, session))
        return Entry(*row) if row else None

    def stale(self, before: float) -> list[Entry]:
        """Sessions whose relay has not vouched for them since ``before``: nobody holds them."""
        return self._many("heartbeat_at < ?", (before,))

    def touch(self, relay: str, at: float) -> None:
        """The relay is alive: every session it holds gets its heartbeat."""
        with self._lock:
            self._db.execute("UPDATE session_directory SET heartbeat_at = ? WHERE relay = ?",
                             (at, relay))

    def _one(self, where: str, values: tuple) -> Entry | None:
        found = self._many(where, values)
        return found[0] if found else None

    def _many(self, where: str, values: tuple) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM session_directory WHERE {where}"  # noqa: S608
                " ORDER BY session", values).fetchall()
        return [Entry(*row) for row in rows]
