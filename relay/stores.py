"""The relay's store behind one small async interface: accounts, ledger, session directory.

Two implementations, chosen in one place (``open_store``): SQLite in --data (the default,
one relay) and PostgreSQL (relay.pgstore, shared by several relays). Both answer alike;
tests/test_stores.py runs the same tests on each. Nothing here blocks the event loop: the
SQLite store runs every call in its own single thread (so writes also keep their order),
the PostgreSQL one awaits asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from relay.accounts import DB_FILE, TOKEN_TTL_S, Accounts, Login, Technician
from relay.directory import Directory, Entry
from relay.ledger import Ledger, LedgerRow
from relay.location import Location
from relay.store import DataError
from relay.transfers import TransferRow

SQLITE_SCHEMA_VERSION = 4  # 2: ledger references and paused time; 3: file transfers;
# 4: session notes (relay.ledger and relay.directory add them)

try:  # what PostgreSQL raises when it refuses or goes away mid-request
    import asyncpg

    # InternalClientError: a pooled connection broken mid-query by the database going away
    StoreFailure: tuple[type[Exception], ...] = (
        asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
except ImportError:  # a relay installed without PostgreSQL support
    StoreFailure = ()


class Store(Protocol):
    """What the relay and its commands need of the database."""

    relay: str
    shared: bool  # other relays use it too (a cluster): connections must say whose they are

    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    async def ping(self) -> bool: ...
    # accounts (relay.accounts.Accounts' rules)
    async def add_technician(self, technician_id: str, name: str,
                             password: str) -> Technician: ...
    async def set_password(self, technician_id: str, password: str) -> None: ...
    async def disable(self, technician_id: str) -> None: ...
    async def enable(self, technician_id: str) -> None: ...
    async def technician(self, technician_id: str) -> Technician | None: ...
    async def technicians(self) -> list[Technician]: ...
    async def login(self, user: str, password: str, token: str, address: str,
                    now: float) -> Login: ...
    async def issue_token(self, technician_id: str, now: float,
                          ttl_s: float = TOKEN_TTL_S) -> str: ...
    async def check_token(self, token: str, now: float) -> Technician | None: ...
    async def valid_tokens(self, tokens: Iterable[str], now: float) -> set[str]: ...
    async def revoke_token(self, token: str) -> None: ...
    def revocations(self, on_revoked: Callable[[str], None]
                    ) -> contextlib.AbstractAsyncContextManager: ...
    # ledger (relay.ledger.Ledger's rules)
    async def requested(self, session: str, technician: str, machine: str, user: str,
                        address: str, at: float, ref: int) -> None: ...
    async def reserve_refs(self, count: int) -> tuple[int, int]: ...
    async def paused(self, session: str, paused: bool, at: float) -> None: ...
    async def accepted(self, session: str, at: float) -> None: ...
    async def control(self, session: str, taken: bool, at: float) -> None: ...
    async def ended(self, session: str, by: str, reason: str, at: float) -> None: ...
    async def note(self, session: str, text: str, at: float) -> None: ...
    async def event(self, session: str | None, kind: str, detail: str, at: float) -> None: ...
    async def heartbeat(self, at: float) -> None: ...
    async def recover(self) -> int: ...
    async def rows(self, since: float | None = None, technician: str | None = None,
                   until: float | None = None) -> list[LedgerRow]: ...
    async def events(self, session: str | None = None
                     ) -> list[tuple[float, str | None, str, str]]: ...
    async def transfer(self, row: TransferRow) -> None: ...
    async def transfers(self, since: float | None = None, technician: str | None = None,
                        until: float | None = None) -> list[TransferRow]: ...
    # the session directory (relay.directory)
    async def put(self, entry: Entry) -> None: ...
    async def get(self, session: str) -> Entry | None: ...
    async def by_resume(self, secret: str) -> Entry | None: ...
    async def remove(self, session: str) -> None: ...
    async def stale(self, before: float) -> list[Entry]: ...
    async def claim(self, session: str, relay: str, now: float) -> Entry | None: ...
    async def end_orphan(self, entry: Entry, reason: str) -> bool: ...


class SqliteStore:
    """The SQLite file in --data, through relay.accounts, relay.ledger and relay.directory,
    each call in the store's one thread."""

    shared = False

    def __init__(self, path: Path, relay: str = "relay") -> None:
        self.relay = relay
        self.accounts = Accounts(path)
        self.ledger = Ledger(path)
        self.directory = Directory(path)
        with self.ledger._lock:
            self.ledger._db.executescript(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
                "INSERT INTO schema_version SELECT 1"
                " WHERE NOT EXISTS (SELECT 1 FROM schema_version);")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._next_ref = 0

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def close(self) -> None:
        await self._run(self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        for part in (self.accounts, self.ledger, self.directory):
            part.close()

    async def schema_version(self) -> int:
        return SQLITE_SCHEMA_VERSION

    async def ping(self) -> bool:
        return True  # a file of our own: it cannot be out of reach while we run

    async def add_technician(self, technician_id: str, name: str, password: str) -> Technician:
        return await self._run(self.accounts.add, technician_id, name, password)

    async def set_password(self, technician_id: str, password: str) -> None:
        await self._run(self.accounts.set_password, technician_id, password)

    async def disable(self, technician_id: str) -> None:
        await self._run(self.accounts.disable, technician_id)

    async def enable(self, technician_id: str) -> None:
        await self._run(self.accounts.enable, technician_id)

    async def technician(self, technician_id: str) -> Technician | None:
        return await self._run(self.accounts.get, technician_id)

    async def technicians(self) -> list[Technician]:
        return await self._run(self.accounts.list)

    async def login(self, user: str, password: str, token: str, address: str,
                    now: float) -> Login:
        if not (user and password):  # a token check is a quick query: keep it in line
            return await self._run(self._token_login, token, now)
        return await self.accounts.login(user, password, token, address, now)

    def _token_login(self, token: str, now: float) -> Login:
        technician = self.accounts.check_token(token, now)
        return Login(technician, token) if technician else Login(code="login-expired")

    async def issue_token(self, technician_id: str, now: float,
                          ttl_s: float = TOKEN_TTL_S) -> str:
        return await self._run(self.accounts.issue_token, technician_id, now, ttl_s)

    async def check_token(self, token: str, now: float) -> Technician | None:
        return await self._run(self.accounts.check_token, token, now)

    async def valid_tokens(self, tokens: Iterable[str], now: float) -> set[str]:
        return await self._run(self.accounts.valid_tokens, list(tokens), now)

    async def revoke_token(self, token: str) -> None:
        await self._run(self.accounts.revoke_token, token)

    @contextlib.asynccontextmanager
    async def revocations(self, on_revoked: Callable[[str], None]):
        """One relay per SQLite file: its once-a-second token check is the whole story."""
        yield

    async def requested(self, session: str, technician: str, machine: str, user: str,
                        address: str, at: float, ref: int) -> None:
        stored = await self._run(self.ledger.requested, session, technician, machine, user,
                                 address, at)
        if ref and stored != ref:  # one relay writes in order: they agree unless a bug
            logging.getLogger("relay").warning("session %s... got ref %s, told %s",
                                               session[:8], stored, ref)

    async def reserve_refs(self, count: int) -> tuple[int, int]:
        """One relay per SQLite file: the next references after those handed out already."""
        if self._next_ref == 0:
            self._next_ref = await self._run(self._first_free_ref)
        first, self._next_ref = self._next_ref, self._next_ref + count
        return first, count

    def _first_free_ref(self) -> int:
        with self.ledger._lock:
            row = self.ledger._db.execute(
                "SELECT coalesce(max(ref), 0) + 1 FROM sessions").fetchone()
        return row[0]

    async def paused(self, session: str, paused: bool, at: float) -> None:
        await self._run(self.ledger.paused, session, paused, at)

    async def accepted(self, session: str, at: float) -> None:
        await self._run(self.ledger.accepted, session, at)

    async def control(self, session: str, taken: bool, at: float) -> None:
        await self._run(self.ledger.control, session, taken, at)

    async def ended(self, session: str, by: str, reason: str, at: float) -> None:
        await self._run(self.ledger.ended, session, by, reason, at)

    async def note(self, session: str, text: str, at: float) -> None:
        await self._run(self.ledger.note, session, text, at)

    async def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        await self._run(self.ledger.event, session, kind, detail, at)

    async def heartbeat(self, at: float) -> None:
        await self._run(self._heartbeat, at)

    def _heartbeat(self, at: float) -> None:
        self.ledger.heartbeat(at)
        self.directory.touch(self.relay, at)

    async def recover(self) -> int:
        return await self._run(self._recover)

    def _recover(self) -> int:
        for entry in self.directory.stale(float("inf")):  # one relay: all of them were ours
            self.directory.remove(entry.session)
        return self.ledger.recover()

    async def rows(self, since: float | None = None, technician: str | None = None,
                   until: float | None = None) -> list[LedgerRow]:
        return await self._run(self.ledger.rows, since, technician, until)

    async def events(self, session: str | None = None
                     ) -> list[tuple[float, str | None, str, str]]:
        return await self._run(self.ledger.events, session)

    async def transfer(self, row: TransferRow) -> None:
        await self._run(self.ledger.transfer, row)

    async def transfers(self, since: float | None = None, technician: str | None = None,
                        until: float | None = None) -> list[TransferRow]:
        return await self._run(self.ledger.transfers, since, technician, until)

    async def put(self, entry: Entry) -> None:
        await self._run(self.directory.put, entry)

    async def get(self, session: str) -> Entry | None:
        return await self._run(self.directory.get, session)

    async def by_resume(self, secret: str) -> Entry | None:
        return await self._run(self.directory.by_resume, secret)

    async def remove(self, session: str) -> None:
        await self._run(self.directory.remove, session)

    async def stale(self, before: float) -> list[Entry]:
        return await self._run(self.directory.stale, before)

    async def claim(self, session: str, relay: str, now: float) -> Entry | None:
        return await self._run(self.directory.claim, session, relay, now)

    async def end_orphan(self, entry: Entry, reason: str) -> bool:
        return await self._run(self._end_orphan, entry, reason)

    def _end_orphan(self, entry: Entry, reason: str) -> bool:
        if self.directory.get(entry.session) != entry:
            return False
        self.directory.remove(entry.session)
        self.ledger.ended(entry.session, "relay", reason, entry.heartbeat_at)
        return True


async def open_store(location: Location, relay: str = "relay", *,
                     create: bool = False) -> Store:
    """The store at ``location``; only commands that add something may create it."""
    if location.is_postgres:
        from relay.pgstore import PostgresStore  # asyncpg only where PostgreSQL is used

        return await PostgresStore.open(location.url, relay, create=create)
    assert location.path is not None
    path = location.path / DB_FILE
    if not create and not path.is_file():
        raise DataError(f"no relay data in {location.path} (no {DB_FILE} there); check --data")
    return await asyncio.to_thread(SqliteStore, path, relay)
