"""The store interface (relay.stores): SQLite and PostgreSQL give the same answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.accounts import AccountError
from relay.directory import Entry, resume_hash
from relay.location import Location
from relay.stores import Store, open_store

T0 = 1_795_652_400.0  # 2026-11-26T00:20:00Z
SESSION = "S" * 43
PASSWORD = "correct horse"


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return Location(path=tmp_path / "data")
    return Location(url=request.getfixturevalue("postgres").fresh_url())


def with_store(location: Location, body: Callable[[Store], Awaitable[Any]],
               relay: str = "relay-a") -> Any:
    async def main() -> Any:
        store = await open_store(location, relay, create=True)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def entry(**changes: Any) -> Entry:
    fields = dict(session=SESSION, technician="david", state="active", accepted_at=T0 + 5,
                  resume_sha256=resume_hash("secret-1"), relay="relay-a", heartbeat_at=T0,
                  code="123-456", paused_s=12.5, paused_at=None, control="david")
    return Entry(**{**fields, **changes})


def test_a_new_store_is_at_the_current_schema_version(location: Location):
    """Opening for the first time creates the tables and records the current version."""
    assert with_store(location, lambda store: store.schema_version()) == 4  # 4: notes


def test_opening_without_create_refuses_a_missing_sqlite_store(tmp_path: Path):
    """A mistyped --data is an error, not a new empty relay."""
    from relay.store import DataError

    with pytest.raises(DataError, match="no relay data"):
        asyncio.run(open_store(Location(path=tmp_path / "nothing")))


def test_accounts_add_list_and_refuse_duplicates(location: Location):
    """Added support people are listed by id; the same id twice is refused."""
    async def body(store: Store) -> None:
        await store.add_technician("petur", "Petur", PASSWORD)
        await store.add_technician("david", "David", PASSWORD)
        with pytest.raises(AccountError, match="already exists"):
            await store.add_technician("david", "Other", PASSWORD)
        assert [t.id for t in await store.technicians()] == ["david", "petur"]
        assert (await store.technician("david")).name == "David"
        assert await store.technician("nobody") is None

    with_store(location, body)


def test_password_login_gives_a_token_that_logs_in_again(location: Location):
    """Right password: the account and a token; the token alone logs in until revoked."""
    async def body(store: Store) -> None:
        await store.add_technician("david", "David", PASSWORD)
        login = await store.login("david", PASSWORD, "", "192.0.2.1", T0)
        assert login.technician is not None and login.token
        again = await store.login("", "", login.token, "192.0.2.1", T0 + 1)
        assert again.technician.id == "david"
        await store.revoke_token(login.token)
        assert (await store.login("", "", login.token, "192.0.2.1", T0 + 2)).code \
            == "login-expired"
        assert (await store.login("david", "wrong password", "", "192.0.2.1", T0)).code \
            == "login-failed"
        assert (await store.login("nobody", PASSWORD, "", "192.0.2.1", T0)).code \
            == "login-failed"

    with_store(location, body)


@pytest.mark.parametrize("change", ["disable", "set_password"])
def test_disable_and_new_password_revoke_tokens(location: Location, change: str):
    """A token from before a disable or a new password no longer logs in."""
    async def body(store: Store) -> None:
        await store.add_technician("david", "David", PASSWORD)
        token = await store.issue_token("david", T0)
        assert await store.check_token(token, T0 + 1) is not None
        if change == "disable":
            await store.disable("david")
        else:
            await store.set_password("david", "another password")
        assert await store.check_token(token, T0 + 2) is None
        with pytest.raises(AccountError, match="no technician"):
            await store.disable("nobody")

    with_store(location, body)


def test_valid_tokens_keeps_only_the_logins_that_still_hold(location: Location):
    """One query sorts many viewers' tokens: a disabled account's, an expired one, a revoked
    one and made-up values drop out; the rest stay, however many there are."""
    async def body(store: Store) -> None:
        await store.add_technician("david", "David", PASSWORD)
        await store.add_technician("petur", "Petur", PASSWORD)
        davids = [await store.issue_token("david", T0) for _ in range(1200)]  # > 999 (SQLite)
        short = await store.issue_token("david", T0, ttl_s=5)
        revoked = await store.issue_token("david", T0)
        await store.revoke_token(revoked)
        peturs = await store.issue_token("petur", T0)
        asked = [*davids, short, revoked, peturs, "made-up-token-value-1234", ""]
        assert await store.valid_tokens(asked, T0 + 1) == {*davids, short, peturs}
        assert await store.valid_tokens(asked, T0 + 10) == {*davids, peturs}
        await store.disable("petur")
        assert await store.valid_tokens(asked, T0 + 10) == set(davids)
        assert await store.valid_tokens([], T0) == set()

    with_store(location, body)


def test_ledger_lifecycle_and_first_end_wins(location: Location):
    """Requested, accepted, control, ended twice: one row, the first end, events in order."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "FRONT-DESK", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0 + 30)
        await store.control(SESSION, True, T0 + 40)
        await store.ended(SESSION, "technician", "technician-ended", T0 + 630)
        await store.ended(SESSION, "relay", "agent-lost", T0 + 700)
        (row,) = await store.rows()
        assert (row.user, row.accepted_at, row.ended_at, row.end_reason) == (
            "anna", T0 + 30, T0 + 630, "technician-ended")
        assert row.billable_s == 600
        assert [e[2] for e in await store.events(SESSION)] == [
            "accepted", "control-taken", "ended"]
        with pytest.raises(ValueError, match="already in the ledger"):
            await store.requested(SESSION, "david", "X", "Y", "203.0.113.7", T0, 0)
        assert await store.rows(technician="petur") == []
        assert await store.rows(since=T0 + 1) == []
        assert len(await store.rows(since=T0, until=T0 + 1)) == 1

    with_store(location, body)


def test_recover_closes_what_a_crash_left_open_at_the_last_heartbeat(location: Location):
    """Open sessions outside the directory end relay-restart at the relay's last heartbeat."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0 + 10)
        await store.heartbeat(T0 + 100)
        assert await store.recover() == 1
        (row,) = await store.rows()
        assert (row.ended_at, row.ended_by, row.end_reason) == (
            T0 + 100, "relay", "relay-restart")

    with_store(location, body)


def test_recover_releases_a_shared_stores_directory_sessions_and_ends_sqlites(
        location: Location):
    """A session the last run left in the directory: on PostgreSQL released to any relay
    (this one included) and still open; on SQLite (one relay, no resume) ended and removed."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0 + 10)
        await store.put(entry())
        await store.put(entry(session="O" * 43, relay="relay-b",
                              resume_sha256=resume_hash("other")))
        await store.heartbeat(T0 + 100)
        closed = await store.recover()
        (row,) = await store.rows()
        other = await store.get("O" * 43)
        if store.shared:
            assert (closed, row.ended_at, (await store.get(SESSION)).relay) == (0, None, "")
            assert other.relay == "relay-b"  # another relay's session stays its own
        else:
            assert (closed, row.end_reason, await store.get(SESSION)) == (
                1, "relay-restart", None)

    with_store(location, body)


def test_directory_keeps_everything_a_resume_needs(location: Location):
    """A put entry comes back whole, by id and by its resume secret (stored only hashed)."""
    async def body(store: Store) -> None:
        await store.put(entry())
        assert await store.get(SESSION) == entry()
        assert await store.by_resume("secret-1") == entry()
        assert await store.by_resume("secret-2") is None
        moved = entry(relay="relay-b", resume_sha256=resume_hash("secret-2"), control="",
                      paused_at=T0 + 50)
        await store.put(moved)
        assert await store.by_resume("secret-2") == moved
        assert await store.by_resume("secret-1") is None
        await store.remove(SESSION)
        assert await store.get(SESSION) is None

    with_store(location, body)


def test_directory_heartbeat_marks_a_relays_sessions_alive(location: Location):
    """The heartbeat vouches for the relay's own sessions only; the rest go stale."""
    async def body(store: Store) -> None:
        await store.put(entry())
        await store.put(entry(session="O" * 43, relay="relay-dead",
                              resume_sha256=resume_hash("other")))
        await store.heartbeat(T0 + 60)
        stale = await store.stale(T0 + 30)
        assert [e.relay for e in stale] == ["relay-dead"]
        assert (await store.get(SESSION)).heartbeat_at == T0 + 60

    with_store(location, body)


def test_postgres_migrate_twice_changes_nothing(postgres):
    """A second migration finds the schema current and leaves the data alone."""
    from relay.pgstore import SCHEMA_VERSION, PostgresStore, migrate

    url = postgres.fresh_url()

    async def main() -> tuple[int, int]:
        store = await PostgresStore.open(url)
        await store.add_technician("david", "David", PASSWORD)
        async with store._pool.acquire() as connection:
            again = await migrate(connection)
        assert [t.id for t in await store.technicians()] == ["david"]
        await store.close()
        return again

    assert asyncio.run(main()) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_postgres_revocation_reaches_another_relay_at_once(postgres):
    """A disable through one relay's store is heard by another relay's listener."""
    from relay.pgstore import PostgresStore

    url = postgres.fresh_url()

    async def main() -> str:
        one = await PostgresStore.open(url, "relay-a")
        two = await PostgresStore.open(url, "relay-b")
        heard: asyncio.Queue[str] = asyncio.Queue()
        try:
            await one.add_technician("david", "David", PASSWORD)
            async with two.revocations(heard.put_nowait):
                await one.disable("david")
                return await asyncio.wait_for(heard.get(), 10)
        finally:
            await one.close()
            await two.close()

    assert asyncio.run(main()) == "david"


def test_postgres_unreachable_is_a_clear_error():
    """A database nobody listens on: DataError naming the problem, no traceback."""
    import socket

    from relay.pgstore import PostgresStore
    from relay.store import DataError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match="cannot reach the database"):
        asyncio.run(PostgresStore.open(f"postgresql://postgres@127.0.0.1:{port}/relay"))


def test_a_claimed_session_is_no_longer_the_old_relays(location: Location):
    """claim moves the session to the new relay; ending it by orphan rules then fails."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0 + 10)
        old = entry(relay="relay-dead")
        await store.put(old)
        assert await store.claim(SESSION, "relay-a", T0 + 70) == old
        assert (await store.get(SESSION)).relay == "relay-a"
        assert await store.end_orphan(old, "relay-lost") is False
        assert (await store.rows())[0].ended_at is None
        assert await store.claim("O" * 43, "relay-a", T0) is None

    with_store(location, body)


def test_an_orphan_ends_relay_lost_at_its_relays_last_sign_of_life(location: Location):
    """Nobody resumed it: ended by relay, relay-lost, billed to the last heartbeat."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0 + 10)
        orphan = entry(relay="relay-dead", heartbeat_at=T0 + 100)
        await store.put(orphan)
        assert await store.end_orphan(orphan, "relay-lost") is True
        (row,) = await store.rows()
        assert (row.ended_at, row.ended_by, row.end_reason, row.billable_s) == (
            T0 + 100, "relay", "relay-lost", 90)
        assert await store.get(SESSION) is None
        assert await store.end_orphan(orphan, "relay-lost") is False

    with_store(location, body)


def test_references_come_in_disjoint_blocks_and_land_on_the_row(location: Location):
    """A reserved reference is the receipt's ref in the ledger; the next block starts past it."""
    async def body(store: Store) -> None:
        first, count = await store.reserve_refs(1000)
        assert first >= 1 and count >= 1
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, first)
        assert [row.ref for row in await store.rows()] == [first]
        second, _ = await store.reserve_refs(1000)
        assert second >= first + count

    with_store(location, body)


def test_a_note_is_kept_in_the_ledger_and_the_directory(location: Location):
    """The support person's note (lines, quotes, astral characters) replaces the one before,
    survives the end, and rides in the directory entry a relay taking over reads."""
    note = 'Ticket 4711\n\tprinter "fixed" 😀'

    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.note(SESSION, "first", T0 + 5)
        await store.note(SESSION, note, T0 + 6)
        await store.ended(SESSION, "technician", "declined", T0 + 7)
        (row,) = await store.rows()
        assert (row.note, row.end_reason, row.billable_whole_s) == (note, "declined", 0)
        await store.put(entry(note=note))
        assert (await store.get(SESSION)).note == note
        assert (await store.claim(SESSION, "relay-b", T0 + 8)).note == note

    with_store(location, body)


def test_paused_time_is_not_billed(location: Location):
    """Two pauses (30 s and 50 s, one paused twice) come off a 600 s session: 520 s billed."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.paused(SESSION, True, T0 + 5)  # before acceptance: changes nothing
        await store.accepted(SESSION, T0 + 10)
        await store.paused(SESSION, True, T0 + 100)
        await store.paused(SESSION, True, T0 + 110)  # already paused: the first start counts
        await store.paused(SESSION, False, T0 + 130)
        await store.paused(SESSION, True, T0 + 400)
        await store.paused(SESSION, False, T0 + 450)
        await store.ended(SESSION, "customer", "customer-closed", T0 + 610)
        await store.paused(SESSION, True, T0 + 620)  # after the end: changes nothing
        (row,) = await store.rows()
        assert (row.paused_s, row.billable_s, row.billable_whole_s) == (80, 520, 520)
        assert [e[2] for e in await store.events(SESSION)] == [
            "accepted", "paused", "resumed", "paused", "resumed", "ended"]

    with_store(location, body)


def test_a_session_ending_while_paused_bills_up_to_the_pause(location: Location):
    """Ended 100 s into a pause: the pause runs to the end and is not billed."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0)
        await store.paused(SESSION, True, T0 + 60)
        await store.ended(SESSION, "technician", "technician-ended", T0 + 160)
        (row,) = await store.rows()
        assert (row.paused_s, row.billable_whole_s) == (100, 60)

    with_store(location, body)


def test_recover_closes_an_open_pause_at_the_last_heartbeat(location: Location):
    """A crash during a pause: the pause ends with the session at the heartbeat, unbilled."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0)
        await store.paused(SESSION, True, T0 + 40)
        await store.heartbeat(T0 + 100)
        assert await store.recover() == 1
        (row,) = await store.rows()
        assert (row.ended_at, row.paused_s, row.billable_whole_s) == (T0 + 100, 60, 40)

    with_store(location, body)


def test_an_orphan_ended_while_paused_is_not_billed_for_the_pause(location: Location):
    """relay-lost during a pause: the pause runs to the dead relay's last sign of life."""
    async def body(store: Store) -> None:
        await store.requested(SESSION, "david", "PC", "anna", "203.0.113.7", T0, 0)
        await store.accepted(SESSION, T0)
        await store.paused(SESSION, True, T0 + 30)
        orphan = entry(relay="relay-dead", heartbeat_at=T0 + 100, paused_at=T0 + 30)
        await store.put(orphan)
        assert await store.end_orphan(orphan, "relay-lost") is True
        (row,) = await store.rows()
        assert (row.end_reason, row.paused_s, row.billable_whole_s) == ("relay-lost", 70, 30)

    with_store(location, body)


def test_a_sqlite_file_from_before_notes_gets_the_note_columns(tmp_path: Path):
    """A relay data folder made before notes opens with empty notes, and takes new ones."""
    import sqlite3

    from relay.accounts import DB_FILE

    data = tmp_path / "data"
    with_store(Location(path=data), lambda store: store.ping())
    db = sqlite3.connect(data / DB_FILE)
    # Rebuild both tables as they were before notes (SQLite 3.35+ can drop a column).
    db.execute("ALTER TABLE sessions DROP COLUMN note")
    db.execute("ALTER TABLE session_directory DROP COLUMN note")
    db.execute("INSERT INTO sessions (session, technician, machine, user, address,"
               " requested_at, ref) VALUES (?, 'david', 'PC', 'anna', '::1', ?, 1)",
               (SESSION, T0))
    db.commit()
    db.close()

    async def body(store: Store) -> None:
        (row,) = await store.rows()
        assert row.note == ""
        await store.note(SESSION, "after the upgrade", T0 + 1)
        await store.put(entry(note="kept"))
        return (await store.rows())[0].note, (await store.get(SESSION)).note

    assert with_store(Location(path=data), body) == ("after the upgrade", "kept")
