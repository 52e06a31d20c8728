"""The billing ledger: every session's lifecycle, written to SQLite the moment it happens.

Times are UTC epoch seconds passed in by the caller, never read from a clock here. Every
call commits at once (autocommit, synchronous=FULL), so a relay killed with SIGKILL loses
no finished row; ``recover`` closes what a crash left open.
"""

from __future__ import annotations

import csv
import math
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import protocol
from relay.store import Store
from relay.transfers import TransferRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    technician TEXT NOT NULL,
    machine TEXT NOT NULL,
    user TEXT NOT NULL,
    address TEXT NOT NULL,
    requested_at REAL NOT NULL,
    accepted_at REAL,
    ended_at REAL,
    ended_by TEXT,
    end_reason TEXT,
    ref INTEGER,
    paused_seconds REAL NOT NULL DEFAULT 0,
    paused_at REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_requested ON sessions (requested_at);
CREATE TABLE IF NOT EXISTS session_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    session TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_session ON session_events (session);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    technician TEXT NOT NULL,
    transfer INTEGER NOT NULL,
    direction TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    sent_bytes INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_started ON transfers (started_at);
"""

# Columns a ledger made before session references, pauses and notes gets when opened.
_ADDED_COLUMNS = (("ref", "INTEGER"), ("paused_seconds", "REAL NOT NULL DEFAULT 0"),
                  ("paused_at", "REAL"), ("note", "TEXT NOT NULL DEFAULT ''"))

CSV_FIELDS = (
    "ref", "session", "technician", "machine", "user", "address", "requested_at",
    "accepted_at", "ended_at", "paused_seconds", "billable_seconds", "ended_by", "end_reason",
    "note",
)
TRANSFER_COLUMNS = ("session, technician, transfer, direction, name, size, sha256, outcome,"
                    " sent_bytes, started_at, ended_at")
TRANSFER_CSV_FIELDS = ("session", "technician", "direction", "name", "size", "sha256",
                       "outcome", "sent_bytes", "started_at", "ended_at")
_COLUMNS = ("session, technician, machine, user, address, requested_at, accepted_at,"
            " ended_at, ended_by, end_reason, coalesce(ref, 0), paused_seconds, note")


def billable_seconds(accepted_at: float | None, ended_at: float | None,
                     paused_s: float) -> int:
    """What a session bills: ended minus accepted of the whole-second times printed (so the
    columns of one ledger line agree), less the whole seconds paused; 0 if never accepted.
    The relay's `ended` message (the customer's receipt) uses the same rule."""
    if accepted_at is None or ended_at is None:
        return 0
    return max(0, math.floor(ended_at) - math.floor(accepted_at) - whole_seconds(paused_s))


def whole_seconds(seconds: float) -> int:
    return math.floor(seconds + 0.5)


@dataclass(frozen=True)
class LedgerRow:
    """One session as billed."""

    session: str
    technician: str
    machine: str
    user: str
    address: str
    requested_at: float
    accepted_at: float | None
    ended_at: float | None
    ended_by: str | None  # "customer" | "technician" | "relay"
    end_reason: str | None
    ref: int = 0  # the reference on the customer's receipt
    paused_s: float = 0.0  # paused by the customer: not billed
    note: str = ""  # the support person's note (protocol.Note): ticket number, what was done

    @property
    def billable_s(self) -> float:
        """Accepted to ended, less paused time; 0 while open or if never accepted."""
        if self.accepted_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.accepted_at - self.paused_s)

    @property
    def billable_whole_s(self) -> int:
        """Billable seconds as printed (``billable_seconds``)."""
        return billable_seconds(self.accepted_at, self.ended_at, self.paused_s)


# A pause still open at ``?`` is added to the paused seconds and closed.
_CLOSE_PAUSE = ("paused_seconds = paused_seconds"
                " + coalesce(max(0, ? - paused_at), 0), paused_at = NULL")


class Ledger(Store):
    """Sessions and their events in the relay's SQLite file."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, _SCHEMA)
        with self._lock:
            have = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
            # Older rows get references in the order they were requested.
            self._db.execute(
                "UPDATE sessions SET ref = (SELECT count(*) FROM sessions AS earlier"
                " WHERE earlier.rowid <= sessions.rowid) WHERE ref IS NULL")
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS sessions_ref ON sessions (ref)")

    def _write(self, sql: str, values: tuple) -> int:
        with self._lock:
            return self._db.execute(sql, values).rowcount

    # --- transitions --------------------------------------------------------------------

    def requested(self, session: str, technician: str, machine: str, user: str,
                  address: str, at: float) -> int:
        """A new session; returns its reference (1, 2, 3...: short enough to read out from
        a receipt). A session id already in the ledger is a bug (ValueError)."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO sessions (session, technician, machine, user, address,"
                    " requested_at, ref) VALUES (?, ?, ?, ?, ?, ?,"
                    " (SELECT coalesce(max(ref), 0) + 1 FROM sessions))",
                    (session, technician, machine, user, address, at),
                )
                row = self._db.execute("SELECT ref FROM sessions WHERE session = ?",
                                       (session,)).fetchone()
        except sqlite3.IntegrityError:
            raise ValueError(f"session {session!r} is already in the ledger") from None
        return row[0]

    def accepted(self, session: str, at: float) -> None:
        """The support person accepted; only the first acceptance of an open session counts."""
        changed = self._write(
            "UPDATE sessions SET accepted_at = max(?, requested_at)"
            " WHERE session = ? AND accepted_at IS NULL AND ended_at IS NULL",
            (at, session),
        )
        if changed:
            self.event(session, "accepted", "", at)

    def control(self, session: str, taken: bool, at: float) -> None:
        self.event(session, "control-taken" if taken else "control-released", "", at)

    def paused(self, session: str, paused: bool, at: float) -> None:
        """The customer paused (or resumed) an accepted session: paused time is not billed."""
        if paused:
            changed = self._write(
                "UPDATE sessions SET paused_at = max(?, accepted_at)"
                " WHERE session = ? AND accepted_at IS NOT NULL AND paused_at IS NULL"
                " AND ended_at IS NULL", (at, session))
        else:
            changed = self._write(
                f"UPDATE sessions SET {_CLOSE_PAUSE}"  # noqa: S608 (constants)
                " WHERE session = ? AND paused_at IS NOT NULL AND ended_at IS NULL",
                (at, session))
        if changed:
            self.event(session, "paused" if paused else "resumed", "", at)

    def ended(self, session: str, by: str, reason: str, at: float) -> None:
        """The session ended; idempotent: the first end wins, later ones change nothing."""
        if by not in protocol.ENDED_BY:
            raise ValueError(f"ended by must be one of {', '.join(protocol.ENDED_BY)}")
        changed = self._write(
            f"UPDATE sessions SET {_CLOSE_PAUSE}, ended_by = ?, end_reason = ?,"  # noqa: S608
            " ended_at = max(?, coalesce(accepted_at, requested_at))"
            " WHERE session = ? AND ended_at IS NULL",
            (at, by, reason, at, session),
        )
        if changed:
            self.event(session, "ended", f"{by}: {reason}", at)

    def note(self, session: str, text: str, at: float) -> None:
        """The support person's note replaces the one before (relay.pairing decides who may
        write it, and until when)."""
        self._write("UPDATE sessions SET note = ? WHERE session = ?", (text, session))

    def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        """Any other fact worth keeping: refusals, viewer detached/rejoined, link gaps."""
        self._write(
            "INSERT INTO session_events (at, session, kind, detail) VALUES (?, ?, ?, ?)",
            (at, session, kind, detail),
        )

    def transfer(self, row: TransferRow) -> None:
        """One file transfer, written when it ended (relay.transfers)."""
        self._write(f"INSERT INTO transfers ({TRANSFER_COLUMNS})"  # noqa: S608 (constants)
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(row))

    def transfers(self, since: float | None = None, technician: str | None = None,
                  until: float | None = None) -> list[TransferRow]:
        """File transfers started at or after `since` and before `until`, oldest first."""
        sql = f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE 1 = 1"  # noqa: S608
        values: list = []
        for clause, value in (("started_at >= ?", since), ("started_at < ?", until),
                              ("technician = ?", technician)):
            if value is not None:
                sql += f" AND {clause}"
                values.append(value)
        with self._lock:
            found = self._db.execute(sql + " ORDER BY started_at, id", values).fetchall()
        return [TransferRow(*row) for row in found]

    def heartbeat(self, at: float) -> None:
        """The relay's latest sign of life: where a crash's open sessions stop billing."""
        self._write("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", (at,))

    def recover(self) -> int:
        """Close the sessions a crash left open; call at start-up, before the first heartbeat.

        They end by "relay" with reason "relay-restart" at the last heartbeat (never before
        they were requested or accepted). Returns how many were closed.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT at FROM heartbeat WHERE id = 1").fetchone()
                last = row[0] if row else 0.0
                open_rows = self._db.execute(
                    "SELECT session, max(?, coalesce(accepted_at, requested_at)) FROM sessions"
                    " WHERE ended_at IS NULL",
                    (last,),
                ).fetchall()
                for session, at in open_rows:
                    self._db.execute(
                        f"UPDATE sessions SET {_CLOSE_PAUSE}, ended_at = ?,"  # noqa: S608
                        " ended_by = 'relay', end_reason = 'relay-restart' WHERE session = ?",
                        (at, at, session),
                    )
                    self._db.execute(
                        "INSERT INTO session_events (at, session, kind, detail)"
                        " VALUES (?, ?, 'ended', 'relay: relay-restart')",
                        (at, session),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(open_rows)

    # --- reading ------------------------------------------------------------------------

    def rows(self, since: float | None = None, technician: str | None = None,
             until: float | None = None) -> list[LedgerRow]:
        """Sessions requested at or after `since` and before `until`, of one technician if
        given, oldest first."""
        sql = f"SELECT {_COLUMNS} FROM sessions WHERE 1 = 1"  # noqa: S608 (constants)
        values: list = []
        if since is not None:
            sql += " AND requested_at >= ?"
            values.append(since)
        if until is not None:
            sql += " AND requested_at < ?"
            values.append(until)
        if technician is not None:
            sql += " AND technician = ?"
            values.append(technician)
        with self._lock:
            found = self._db.execute(sql + " ORDER BY requested_at, session", values).fetchall()
        return [LedgerRow(*row) for row in found]

    def events(self, session: str | None = None) -> list[tuple[float, str | None, str, str]]:
        """(at, session, kind, detail), oldest first; all of them, or one session's."""
        sql = "SELECT at, session, kind, detail FROM session_events"
        values: tuple = ()
        if session is not None:
            sql += " WHERE session = ?"
            values = (session,)
        with self._lock:
            return [tuple(r) for r in self._db.execute(sql + " ORDER BY id", values)]


def iso_utc(at: float | None) -> str:
    """2026-11-26T01:02:03Z (whole seconds, rounded down), or "" for no time."""
    if at is None:
        return ""
    return datetime.fromtimestamp(math.floor(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# OWASP's CSV-injection guidance: a cell that starts with one of these is a formula to a
# spreadsheet (TAB and CR because some strip them first), so it gets a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Quoting alone is not enough: a spreadsheet told another separator (LibreOffice with ";",
# TAB or space ticked) splits inside our quoted cells, so `X;=1+1;x` became a live formula.
# A trigger right after any such separator, a quote or a line break is defused the same way.
_LIVE_INSIDE = re.compile(r'(?<![^,; \t\r\n"])(?=[=+\-@])')


def csv_cell(value: object) -> str:
    """One cell as text that no spreadsheet will run, whatever separator it assumes."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_STARTS):
        text = "'" + text
    return _LIVE_INSIDE.sub("'", text)


def write_csv_table(out: TextIO, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    """The one way the relay writes CSV: every cell quoted (so a ',' ';' or TAB inside a name
    never splits it) and passed through csv_cell; "\n" line ends."""
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow([csv_cell(name) for name in header])
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])


def write_csv(rows: Iterable[LedgerRow], out: TextIO) -> None:
    """One line per session: times ISO 8601 UTC ("Z", empty when absent), billable seconds
    the difference of the whole seconds shown; quoted and defused by write_csv_table."""
    write_csv_table(out, CSV_FIELDS, (
        (row.ref, row.session, row.technician, row.machine, row.user, row.address,
         iso_utc(row.requested_at), iso_utc(row.accepted_at), iso_utc(row.ended_at),
         whole_seconds(row.paused_s), row.billable_whole_s, row.ended_by or "",
         row.end_reason or "", row.note)
        for row in rows
    ))


def write_transfers_csv(rows: Iterable[TransferRow], out: TextIO) -> None:
    """One line per file transfer, as write_csv: ISO 8601 UTC times, every cell defused (a
    file name is whatever its sender typed)."""
    write_csv_table(out, TRANSFER_CSV_FIELDS, (
        (row.session, row.technician, row.direction, row.name, row.size, row.sha256,
         row.outcome, row.sent_bytes, iso_utc(row.started_at), iso_utc(row.ended_at))
        for row in rows
    ))
