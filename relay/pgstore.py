"""The relay's store in PostgreSQL, through asyncpg: shared by every relay of a cluster.

Same answers as relay.stores.SqliteStore (tests/test_stores.py runs both); the account rules
(argon2id, login limits, token generations) are relay.accounts' own functions. Every query
is awaited on the event loop's connection pool; the argon2 work runs in a thread.
Changes that revoke logins (disable, new password) NOTIFY every relay on ``revoked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import astuple

import asyncpg

import protocol
from relay.accounts import (
    LOGIN_EXPIRED,
    LOGIN_FAILED,
    TOKEN_TTL_S,
    TOO_MANY_ATTEMPTS,
    AccountError,
    Accounts,
    Login,
    Technician,
    _check_id,
    _token_hash,
    check_name,
    check_password,
)
from relay.directory import COLUMNS, RELEASED, Entry, resume_hash
from relay.ledger import _COLUMNS as LEDGER_COLUMNS
from relay.ledger import TRANSFER_COLUMNS, LedgerRow
from relay.login_limits import LoginLimits
from relay.store import DataError
from relay.transfers import TransferRow

REVOKED_CHANNEL = "revoked"
_DIRECTORY_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)  # "user" is a keyword here

# Each step runs once, in order, in one transaction; the version table says how far a
# database has come. Add steps at the end; never edit one that has shipped.
MIGRATIONS = (
    """
    CREATE TABLE technicians (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        enabled BOOLEAN NOT NULL DEFAULT TRUE,
        generation INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE login_tokens (
        token_sha256 TEXT PRIMARY KEY,
        technician TEXT NOT NULL REFERENCES technicians(id),
        generation INTEGER NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE sessions (
        session TEXT PRIMARY KEY,
        technician TEXT NOT NULL,
        machine TEXT NOT NULL,
        "user" TEXT NOT NULL,
        address TEXT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        accepted_at DOUBLE PRECISION,
        ended_at DOUBLE PRECISION,
        ended_by TEXT,
        end_reason TEXT,
        relay TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_requested ON sessions (requested_at);
    CREATE INDEX sessions_open ON sessions (relay) WHERE ended_at IS NULL;
    CREATE TABLE session_events (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        session TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX session_events_session ON session_events (session);
    CREATE TABLE heartbeat (
        relay TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE session_directory (
        session TEXT PRIMARY KEY,
        technician TEXT NOT NULL,
        state TEXT NOT NULL,
        accepted_at DOUBLE PRECISION,
        resume_sha256 TEXT NOT NULL UNIQUE,
        relay TEXT NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        code TEXT NOT NULL DEFAULT '',
        paused_s DOUBLE PRECISION NOT NULL DEFAULT 0,
        paused_at DOUBLE PRECISION,
        control TEXT NOT NULL DEFAULT '',
        machine TEXT NOT NULL DEFAULT '',
        "user" TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        requested_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        screens TEXT NOT NULL DEFAULT '[]',
        ref BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX session_directory_relay ON session_directory (relay);
    """,
    # 2: the receipt's reference and the customer's pauses (issue 12). References come in
    # blocks of 1000 per relay (each relay hands them out at once, without a round trip).
    """
    ALTER TABLE sessions ADD COLUMN ref BIGINT UNIQUE;
    ALTER TABLE sessions ADD COLUMN paused_seconds DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN paused_at DOUBLE PRECISION;
    CREATE SEQUENCE session_refs INCREMENT BY 1000 START WITH 1;
    """,
    # 3: file transfers (issue 13): one row per transfer, written when it ends.
    """
    CREATE TABLE transfers (
        id BIGSERIAL PRIMARY KEY,
        session TEXT NOT NULL,
        technician TEXT NOT NULL,
        transfer BIGINT NOT NULL,
        direction TEXT NOT NULL,
        name TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        outcome TEXT NOT NULL,
        sent_bytes BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX transfers_started ON transfers (started_at);
    """,
    # 4: the support person's note per session (issue 13), in the ledger and, while the
    # session lives, in the directory so that a relay taking it over keeps it.
    """
    ALTER TABLE sessions ADD COLUMN note TEXT NOT NULL DEFAULT '';
    ALTER TABLE session_directory ADD COLUMN note TEXT NOT NULL DEFAULT '';
    """,
)


def _close_pause(at: str) -> str:
    """SET clause: a pause still open at ``at`` (a parameter like $1) is added to the paused
    seconds and closed, so a session ending while paused never bills the pause."""
    return (f"paused_seconds = paused_seconds + coalesce(greatest(0, {at} - paused_at), 0),"
            " paused_at = NULL")


_CLOSE_PAUSE = _close_pause("$1")
SCHEMA_VERSION = len(MIGRATIONS)
CLOSE_S = 3.0  # a graceful pool close; beyond it the connections are dropped
_MIGRATION_LOCK = 16_2026  # pg_advisory_xact_lock key: one relay migrates at a time


async def migrate(connection: asyncpg.Connection) -> tuple[int, int]:
    """Bring the schema up to SCHEMA_VERSION; (version before, version now)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        before = await connection.fetchval("SELECT max(version) FROM schema_version") or 0
        if before > SCHEMA_VERSION:
            raise DataError(f"the database is at schema version {before}, newer than this "
                            f"relay's {SCHEMA_VERSION}: upgrade the relay")
        for version in range(before + 1, SCHEMA_VERSION + 1):
            await connection.execute(MIGRATIONS[version - 1])
            await connection.execute("INSERT INTO schema_version VALUES ($1)", version)
    return before, SCHEMA_VERSION


class PostgresStore:
    """Accounts, ledger and session directory in PostgreSQL (see relay.stores.Store)."""

    shared = True

    def __init__(self, pool: asyncpg.Pool, url: str, relay: str) -> None:
        self._pool, self._url = pool, url
        self.relay = relay  # this relay's name in the heartbeat and the directory
        self._hasher = Accounts.hasher()
        self._limits = LoginLimits()
        self._limits_lock = threading.Lock()
        self._argon2 = threading.BoundedSemaphore(Accounts.workers())
        self.queries = 0  # how many statements were sent (the bench's queries per session)

    @classmethod
    async def open(cls, url: str, relay: str = "relay", *, create: bool = True,
                   min_size: int = 1, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                             timeout=10, command_timeout=30)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            raise DataError(f"cannot reach the database: {error}") from None
        store = cls(pool, url, relay)
        async with pool.acquire() as connection:
            version = await connection.fetchval(
                "SELECT to_regclass('schema_version') IS NOT NULL")
            if create or version:
                await migrate(connection)
            else:
                await pool.close()
                raise DataError("the database has no relay tables yet: run "
                                "python -m relay migrate (or add-technician) first")
        return store

    async def close(self) -> None:
        """Close the pool; a database that stopped answering gets CLOSE_S, then its
        connections are dropped (a relay told to stop must stop, database or not)."""
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_S)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._pool.terminate()

    async def _execute(self, sql: str, *values: object) -> str:
        self.queries += 1
        return await self._pool.execute(sql, *values)

    async def _fetch(self, sql: str, *values: object) -> list[asyncpg.Record]:
        self.queries += 1
        return await self._pool.fetch(sql, *values)

    async def _fetchrow(self, sql: str, *values: object) -> asyncpg.Record | None:
        self.queries += 1
        return await self._pool.fetchrow(sql, *values)

    async def schema_version(self) -> int:
        return await self._pool.fetchval("SELECT max(version) FROM schema_version") or 0

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), 2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    # --- accounts -------------------------------------------------------------------------

    async def add_technician(self, technician_id: str, name: str, password: str) -> Technician:
        _check_id(technician_id)
        name = check_name(name)
        check_password(technician_id, password)
        password_hash = await asyncio.to_thread(self._hash, password)
        try:
            await self._execute(
                "INSERT INTO technicians (id, name, password_hash) VALUES ($1, $2, $3)",
                technician_id, name, password_hash)
        except asyncpg.UniqueViolationError:
            raise AccountError(f"technician {technician_id!r} already exists") from None
        return Technician(technician_id, name, True, 1)

    async def set_password(self, technician_id: str, password: str) -> None:
        check_password(technician_id, password)
        if await self.technician(technician_id) is None:
            raise AccountError(f"no technician {technician_id!r}")
        password_hash = await asyncio.to_thread(self._hash, password)
        await self._update(technician_id, "password_hash = $2, generation = generation + 1",
                           password_hash)

    async def disable(self, technician_id: str) -> None:
        await self._update(technician_id, "enabled = FALSE, generation = generation + 1")

    async def enable(self, technician_id: str) -> None:
        await self._update(technician_id, "enabled = TRUE, generation = generation + 1")

    async def _update(self, technician_id: str, assignments: str, *values: object) -> None:
        self.queries += 1
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                f"UPDATE technicians SET {assignments} WHERE id = $1",  # noqa: S608 (constants)
                technician_id, *values)
            await connection.execute(
                "DELETE FROM login_tokens WHERE technician = $1 AND generation <"
                " (SELECT generation FROM technicians WHERE id = $1)", technician_id)
            # Delivered to every listening relay when this transaction commits.
            await connection.execute("SELECT pg_notify($1, $2)", REVOKED_CHANNEL,
                                     technician_id)
        if status.endswith(" 0"):
            raise AccountError(f"no technician {technician_id!r}")

    async def technician(self, technician_id: str) -> Technician | None:
        row = await self._fetchrow(
            "SELECT id, name, enabled, generation FROM technicians WHERE id = $1",
            technician_id)
        return Technician(row[0], row[1], row[2], row[3]) if row else None

    async def technicians(self) -> list[Technician]:
        rows = await self._fetch(
            "SELECT id, name, enabled, generation FROM technicians ORDER BY id")
        return [Technician(r[0], r[1], r[2], r[3]) for r in rows]

    async def login(self, user: str, password: str, token: str, address: str,
                    now: float) -> Login:
        """relay.accounts.Accounts.login's rules, with the rows in PostgreSQL."""
        if not (user and password):
            technician = await self.check_token(token, now)
            return Login(technician, token) if technician else Login(code=LOGIN_EXPIRED)
        with self._limits_lock:
            refusal = self._limits.admit(address, user, now)
        if refusal is not None:
            return Login(code=TOO_MANY_ATTEMPTS, limited=refusal)
        technician: Technician | None = None
        try:
            technician = await self._verify(user, password)
        finally:
            with self._limits_lock:
                self._limits.done(address, user, technician is not None, now)
        token = await self._stamp_token(technician, now, TOKEN_TTL_S) if technician else None
        if technician is None or token is None:
            return Login(code=LOGIN_FAILED)
        return Login(technician, token)

    async def _verify(self, technician_id: str, password: str) -> Technician | None:
        row = await self._fetchrow(
            "SELECT password_hash, name, enabled, generation FROM technicians WHERE id = $1",
            technician_id)
        stored = row[0] if row else Accounts._dummy_hash  # the same work for an unknown id
        right = await asyncio.to_thread(self._verify_hash, stored, password)
        if row is None or not right or not row[2]:
            return None
        return Technician(technician_id, row[1], True, row[3])

    async def issue_token(self, technician_id: str, now: float,
                          ttl_s: float = TOKEN_TTL_S) -> str:
        technician = await self.technician(technician_id)
        token = None
        if technician is not None and technician.enabled:
            token = await self._stamp_token(technician, now, ttl_s)
        if token is None:
            raise AccountError(f"no enabled technician {technician_id!r}")
        return token

    async def _stamp_token(self, technician: Technician, now: float,
                           ttl_s: float) -> str | None:
        """A token at exactly the generation the password was verified against (one
        statement, so no change slips in between), or None."""
        token = secrets.token_urlsafe(32)
        await self._execute("DELETE FROM login_tokens WHERE expires_at <= $1", now)
        status = await self._execute(
            "INSERT INTO login_tokens (token_sha256, technician, generation, expires_at)"
            " SELECT $1, id, generation, $2 FROM technicians"
            " WHERE id = $3 AND enabled AND generation = $4",
            _token_hash(token), now + ttl_s, technician.id, technician.generation)
        return token if status.endswith(" 1") else None

    async def check_token(self, token: str, now: float) -> Technician | None:
        if not isinstance(token, str) or not token:
            return None
        row = await self._fetchrow(
            "SELECT t.id, t.name, t.generation FROM login_tokens AS k"
            " JOIN technicians AS t ON t.id = k.technician"
            " WHERE k.token_sha256 = $1 AND k.expires_at > $2 AND t.enabled"
            " AND k.generation = t.generation", _token_hash(token), now)
        return Technician(row[0], row[1], True, row[2]) if row else None

    async def valid_tokens(self, tokens: Iterable[str], now: float) -> set[str]:
        """Those of ``tokens`` that check_token() accepts, in one statement."""
        by_hash = {_token_hash(t): t for t in tokens if isinstance(t, str)}
        if not by_hash:
            return set()
        rows = await self._fetch(
            "SELECT k.token_sha256 FROM login_tokens AS k"
            " JOIN technicians AS t ON t.id = k.technician"
            " WHERE k.token_sha256 = ANY($1::text[]) AND k.expires_at > $2 AND t.enabled"
            " AND k.generation = t.generation", list(by_hash), now)
        return {by_hash[row[0]] for row in rows}

    async def revoke_token(self, token: str) -> None:
        if isinstance(token, str):
            await self._execute("DELETE FROM login_tokens WHERE token_sha256 = $1",
                                _token_hash(token))

    def _hash(self, password: str) -> str:
        return self._hasher.hash(password.encode("utf-8", "surrogatepass"))

    def _verify_hash(self, password_hash: str, password: str) -> bool:
        return Accounts.check_hash(self._hasher, self._argon2, password_hash, password)

    @contextlib.asynccontextmanager
    async def revocations(self, on_revoked: Callable[[str], None]):
        """While inside: ``on_revoked(technician)`` for every disable or new password, from
        any relay or command, the moment it commits."""
        connection = await asyncpg.connect(self._url, timeout=10)

        def heard(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            on_revoked(payload)

        await connection.add_listener(REVOKED_CHANNEL, heard)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await connection.close(timeout=2)

    # --- ledger ---------------------------------------------------------------------------

    async def requested(self, session: str, technician: str, machine: str, user: str,
                        address: str, at: float, ref: int) -> None:
        try:
            await self._execute(
                'INSERT INTO sessions (session, technician, machine, "user", address,'
                " requested_at, relay, ref) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                session, technician, machine, user, address, at, self.relay, ref or None)
        except asyncpg.UniqueViolationError:
            raise ValueError(f"session {session!r} is already in the ledger") from None

    async def reserve_refs(self, count: int) -> tuple[int, int]:
        first = await self._pool.fetchval("SELECT nextval('session_refs')")
        return first, min(count, 1000)

    async def paused(self, session: str, paused: bool, at: float) -> None:
        if paused:
            status = await self._execute(
                "UPDATE sessions SET paused_at = greatest($1, accepted_at) WHERE session = $2"
                " AND accepted_at IS NOT NULL AND paused_at IS NULL AND ended_at IS NULL",
                at, session)
        else:
            status = await self._execute(
                f"UPDATE sessions SET {_CLOSE_PAUSE}"  # noqa: S608 (constants)
                " WHERE session = $2 AND paused_at IS NOT NULL AND ended_at IS NULL",
                at, session)
        if not status.endswith(" 0"):
            await self.event(session, "paused" if paused else "resumed", "", at)

    async def accepted(self, session: str, at: float) -> None:
        status = await self._execute(
            "UPDATE sessions SET accepted_at = greatest($1, requested_at)"
            " WHERE session = $2 AND accepted_at IS NULL AND ended_at IS NULL", at, session)
        if not status.endswith(" 0"):
            await self.event(session, "accepted", "", at)

    async def control(self, session: str, taken: bool, at: float) -> None:
        await self.event(session, "control-taken" if taken else "control-released", "", at)

    async def ended(self, session: str, by: str, reason: str, at: float) -> None:
        if by not in protocol.ENDED_BY:
            raise ValueError(f"ended by must be one of {', '.join(protocol.ENDED_BY)}")
        status = await self._execute(
            f"UPDATE sessions SET {_CLOSE_PAUSE}, ended_by = $2, end_reason = $3,"  # noqa: S608
            " ended_at = greatest($1, coalesce(accepted_at, requested_at))"
            # Only the relay holding it: a relay that lost it to another must not end it.
            " WHERE session = $4 AND ended_at IS NULL AND relay = $5", at, by, reason, session,
            self.relay)
        if not status.endswith(" 0"):
            await self.event(session, "ended", f"{by}: {reason}", at)

    async def note(self, session: str, text: str, at: float) -> None:
        await self._execute("UPDATE sessions SET note = $1 WHERE session = $2", text, session)

    async def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        await self._execute(
            "INSERT INTO session_events (at, session, kind, detail) VALUES ($1, $2, $3, $4)",
            at, session, kind, detail)

    async def heartbeat(self, at: float) -> None:
        """This relay is alive at ``at``, and so is every session it holds."""
        await self._execute(
            "INSERT INTO heartbeat (relay, at) VALUES ($1, $2)"
            " ON CONFLICT (relay) DO UPDATE SET at = excluded.at", self.relay, at)
        await self._execute("UPDATE session_directory SET heartbeat_at = $2 WHERE relay = $1",
                            self.relay, at)

    async def recover(self) -> int:
        """At start-up: what this relay's last run left behind. Its sessions in the directory
        (handed over on SIGTERM, or left by a crash) are released to any relay, this one
        included, to resume within the grace window; the sweep ends them (relay-lost) if
        nobody does. Its other open ledger rows (sessions never accepted) close at its last
        heartbeat (relay-restart). Other relays' sessions are theirs. How many closed."""
        self.queries += 1
        async with self._pool.acquire() as connection, connection.transaction():
            last = await connection.fetchval(
                "SELECT at FROM heartbeat WHERE relay = $1", self.relay) or 0.0
            released = await connection.fetch(
                "UPDATE session_directory SET relay = $2 WHERE relay = $1 RETURNING session",
                self.relay, RELEASED)
            closed = await connection.fetch(
                f"UPDATE sessions SET {_close_pause('$2')}, ended_by = 'relay',"  # noqa: S608
                " end_reason = 'relay-restart',"
                " ended_at = greatest($2, coalesce(accepted_at, requested_at))"
                " WHERE relay = $1 AND ended_at IS NULL AND session <> ALL($3::text[])"
                " RETURNING session, ended_at",
                self.relay, last, [row[0] for row in released])
            await connection.executemany(
                "INSERT INTO session_events (at, session, kind, detail)"
                " VALUES ($1, $2, 'ended', 'relay: relay-restart')",
                [(row[1], row[0]) for row in closed])
        return len(closed)

    async def rows(self, since: float | None = None, technician: str | None = None,
                   until: float | None = None) -> list[LedgerRow]:
        columns = LEDGER_COLUMNS.replace(" user,", ' "user",')
        rows = await self._fetch(
            f"SELECT {columns} FROM sessions"  # noqa: S608 (constants)
            " WHERE ($1::float8 IS NULL OR requested_at >= $1)"
            " AND ($2::float8 IS NULL OR requested_at < $2)"
            " AND ($3::text IS NULL OR technician = $3)"
            " ORDER BY requested_at, session", since, until, technician)
        return [LedgerRow(*row) for row in rows]

    async def events(self, session: str | None = None
                     ) -> list[tuple[float, str | None, str, str]]:
        rows = await self._fetch(
            "SELECT at, session, kind, detail FROM session_events"
            " WHERE $1::text IS NULL OR session = $1 ORDER BY id", session)
        return [tuple(row) for row in rows]

    async def transfer(self, row: TransferRow) -> None:
        await self._execute(
            f"INSERT INTO transfers ({TRANSFER_COLUMNS})"  # noqa: S608 (constants)
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", *astuple(row))

    async def transfers(self, since: float | None = None, technician: str | None = None,
                        until: float | None = None) -> list[TransferRow]:
        rows = await self._fetch(
            f"SELECT {TRANSFER_COLUMNS} FROM transfers"  # noqa: S608 (constants)
            " WHERE ($1::float8 IS NULL OR started_at >= $1)"
            " AND ($2::float8 IS NULL OR started_at < $2)"
            " AND ($3::text IS NULL OR technician = $3)"
            " ORDER BY started_at, id", since, until, technician)
        return [TransferRow(*row) for row in rows]

    # --- the session directory ------------------------------------------------------------

    async def put(self, entry: Entry) -> None:
        marks = ", ".join(f"${n}" for n in range(1, len(COLUMNS) + 1))
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in COLUMNS[1:])
        await self._execute(
            f"INSERT INTO session_directory ({_DIRECTORY_COLUMNS}) VALUES ({marks})"  # noqa: S608
            f" ON CONFLICT (session) DO UPDATE SET {updates}", *astuple(entry))

    async def get(self, session: str) -> Entry | None:
        return await self._one("session = $1", session)

    async def by_resume(self, secret: str) -> Entry | None:
        return await self._one("resume_sha256 = $1", resume_hash(secret))

    async def remove(self, session: str) -> None:
        await self._execute("DELETE FROM session_directory WHERE session = $1", session)

    async def claim(self, session: str, relay: str, now: float) -> Entry | None:
        """Move a live session to ``relay`` (its agent or viewer came back there): the
        directory row and the ledger row, so the old relay, if it comes back, neither
        recovers nor ends it. The entry as it was before, or None."""
        self.queries += 1
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"SELECT {_DIRECTORY_COLUMNS} FROM session_directory"  # noqa: S608
                " WHERE session = $1 FOR UPDATE", session)
            if row is None:
                return None
            await connection.execute(
                "UPDATE session_directory SET relay = $2, heartbeat_at = $3 WHERE session = $1",
                session, relay, now)
            await connection.execute("UPDATE sessions SET relay = $2 WHERE session = $1",
                                     session, relay)
        return Entry(*row)

    async def end_orphan(self, entry: Entry, reason: str) -> bool:
        """End a session whose relay died and nobody resumed, at that relay's last sign of
        life for it; False if another relay claimed or ended it meanwhile."""
        self.queries += 1
        async with self._pool.acquire() as connection, connection.transaction():
            gone = await connection.execute(
                "DELETE FROM session_directory WHERE session = $1 AND relay = $2"
                " AND heartbeat_at = $3", entry.session, entry.relay, entry.heartbeat_at)
            if gone.endswith(" 0"):
                return False
            closed = await connection.execute(
                f"UPDATE sessions SET {_close_pause('$3')}, ended_by = 'relay',"  # noqa: S608
                " end_reason = $2, ended_at = greatest($3, coalesce(accepted_at, requested_at))"
                " WHERE session = $1 AND ended_at IS NULL", entry.session, reason,
                entry.heartbeat_at)
            if not closed.endswith(" 0"):
                await connection.execute(
                    "INSERT INTO session_events (at, session, kind, detail)"
                    " VALUES ($1, $2, 'ended', $3)", entry.heartbeat_at, entry.session,
                    f"relay: {reason}")
        return True

    async def stale(self, before: float) -> list[Entry]:
        return await self._many("heartbeat_at < $1", before)

    async def _one(self, where: str, value: object) -> Entry | None:
        found = await self._many(where, value)
        return found[0] if found else None

    async def _many(self, where: str, *values: object) -> list[Entry]:
        rows = await self._fetch(
            f"SELECT {_DIRECTORY_COLUMNS} FROM session_directory WHERE {where}"  # noqa: S608
            " ORDER BY session", *values)
        return [Entry(*row) for row in rows]
