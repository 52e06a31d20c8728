"""Support people's accounts: password storage, logins (and their races) and tokens."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from argon2 import extract_parameters

from relay.accounts import (
    ARGON2_WORKERS,
    LOGIN_EXPIRED,
    LOGIN_FAILED,
    TOO_MANY_ATTEMPTS,
    AccountError,
    Accounts,
    Login,
    Technician,
)
from relay.login_limits import FREE_FAILURES
from relay.store import DataError

PASSWORD = "correct horse battery"
T0 = 1_800_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relay.sqlite3"


@pytest.fixture
def accounts(db: Path) -> Iterator[Accounts]:
    with Accounts(db) as found:
        found.add("david", "David Jones", PASSWORD)
        yield found


def test_password_hash_is_argon2id_at_or_above_owasp_minimum(accounts: Accounts, db: Path):
    """The stored hash is argon2id with m >= 19456 KiB, t >= 2, p >= 1."""
    with closing(sqlite3.connect(db)) as connection, connection:
        (stored,) = connection.execute(
            "SELECT password_hash FROM technicians WHERE id = 'david'").fetchone()
    params = extract_parameters(stored)
    assert stored.startswith("$argon2id$")
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism >= 1


def test_plaintext_password_never_reaches_the_database_files(accounts: Accounts, db: Path):
    """No byte sequence of the password appears in the SQLite file or its WAL."""
    accounts.set_password("david", "second secret value")
    accounts.close()
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        data = path.read_bytes()
        assert PASSWORD.encode() not in data
        assert b"second secret value" not in data


def test_data_folder_and_file_are_private(accounts: Accounts, db: Path):
    """The data folder is created 0700 and the database file 0600."""
    assert db.parent.stat().st_mode & 0o777 == 0o700
    assert db.stat().st_mode & 0o777 == 0o600


def test_verify_accepts_the_right_password(accounts: Accounts):
    """The right password gives the account back."""
    assert accounts.verify("david", PASSWORD) == Technician("david", "David Jones", True, 1)


def test_wrong_user_wrong_password_and_disabled_all_answer_none(accounts: Accounts):
    """Unknown id, wrong password, disabled account and an oversize password: all None."""
    accounts.add("petur", "Petur", "petur-password")
    accounts.disable("petur")
    assert accounts.verify("nobody", PASSWORD) is None
    assert accounts.verify("david", "wrong password") is None
    assert accounts.verify("petur", "petur-password") is None
    assert accounts.verify("david", "x" * 5000) is None
    assert accounts.verify("Not An Id!", PASSWORD) is None


def test_unknown_user_costs_the_same_hashing_as_a_wrong_password(
        accounts: Accounts, monkeypatch: pytest.MonkeyPatch):
    """Unknown, wrong-password and disabled each run one argon2 check with equal parameters."""
    accounts.add("petur", "Petur", "petur-password")
    accounts.disable("petur")
    calls: list[str] = []
    real_verify = accounts._verify_hash

    def counting_verify(password_hash: str, password: str) -> bool:
        calls.append(str(extract_parameters(password_hash)))
        return real_verify(password_hash, password)

    monkeypatch.setattr(accounts, "_verify_hash", counting_verify)
    accounts.verify("nobody", PASSWORD)
    accounts.verify("david", "wrong password")
    accounts.verify("petur", "petur-password")
    assert len(calls) == 3
    assert calls[0] == calls[1] == calls[2]


def test_unknown_users_are_checked_against_a_hash_of_the_current_cost(accounts: Accounts,
                                                                       db: Path):
    """The dummy hash has exactly the parameters new passwords get."""
    with closing(sqlite3.connect(db)) as connection:
        (stored,) = connection.execute(
            "SELECT password_hash FROM technicians WHERE id = 'david'").fetchone()
    assert extract_parameters(accounts._dummy()) == extract_parameters(stored)


def test_verify_rehashes_a_weaker_stored_hash(accounts: Accounts, db: Path):
    """A hash made with older, weaker parameters is upgraded at the next good login."""
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("UPDATE technicians SET password_hash = ? WHERE id = 'david'", (weak,))
    assert accounts.verify("david", PASSWORD) is not None
    with closing(sqlite3.connect(db)) as connection, connection:
        (stored,) = connection.execute(
            "SELECT password_hash FROM technicians WHERE id = 'david'").fetchone()
    assert extract_parameters(stored).memory_cost >= 19456


def test_add_refuses_duplicates_bad_ids_names_and_weak_passwords(accounts: Accounts):
    """Each refusal is an AccountError whose text says what is wrong."""
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("david", "Another David", PASSWORD)
    with pytest.raises(AccountError, match="bad id"):
        accounts.add("David", "Capital", PASSWORD)
    with pytest.raises(AccountError, match="name"):
        accounts.add("anna", "", PASSWORD)
    with pytest.raises(AccountError, match="name"):
        accounts.add("anna", "Anna\x1b[31m", PASSWORD)
    with pytest.raises(AccountError, match="empty"):
        accounts.add("anna", "Anna", "")
    with pytest.raises(AccountError, match="too short"):
        accounts.add("anna", "Anna", "1234567")
    with pytest.raises(AccountError, match="id"):
        accounts.add("anna.smith", "Anna", "anna.smith")
    assert [t.id for t in accounts.list()] == ["david"]


def test_commands_on_an_unknown_technician_are_refused(accounts: Accounts):
    """disable, enable and set_password name the missing account."""
    for action in (accounts.disable, accounts.enable):
        with pytest.raises(AccountError, match="no technician 'ghost'"):
            action("ghost")
    with pytest.raises(AccountError, match="no technician 'ghost'"):
        accounts.set_password("ghost", "long enough password")


def test_unusable_data_folder_is_a_clear_error(tmp_path: Path):
    """A data folder that is really a file gives DataError naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot use the data folder"):
        Accounts(blocker / "relay.sqlite3")


def test_set_password_replaces_the_old_one(accounts: Accounts):
    """After set_password only the new password works."""
    accounts.set_password("david", "a brand new password")
    assert accounts.verify("david", PASSWORD) is None
    assert accounts.verify("david", "a brand new password") is not None


def test_token_identifies_its_technician_until_it_expires(accounts: Accounts):
    """A token works within its lifetime and not after."""
    token = accounts.issue_token("david", T0, ttl_s=60)
    assert accounts.check_token(token, T0 + 59).id == "david"
    assert accounts.check_token(token, T0 + 60) is None
    assert accounts.check_token("made-up-token-value-1234", T0) is None


def test_tokens_are_stored_only_as_sha256(accounts: Accounts, db: Path):
    """The token itself is in no database file."""
    token = accounts.issue_token("david", T0)
    accounts.close()
    for path in db.parent.iterdir():
        assert token.encode() not in path.read_bytes()


def test_revoke_token_ends_that_login_only(accounts: Accounts):
    """A revoked token stops working; another token of the same account keeps working."""
    first = accounts.issue_token("david", T0)
    second = accounts.issue_token("david", T0)
    accounts.revoke_token(first)
    assert accounts.check_token(first, T0) is None
    assert accounts.check_token(second, T0) is not None


@pytest.mark.parametrize("change", ["disable", "set_password"])
def test_disable_and_set_password_revoke_tokens_through_generation(accounts: Accounts,
                                                                   change: str):
    """The generation goes up and every earlier token stops working, also after re-enabling."""
    token = accounts.issue_token("david", T0)
    before = accounts.get("david").generation
    if change == "disable":
        accounts.disable("david")
        assert accounts.check_token(token, T0) is None
        accounts.enable("david")
    else:
        accounts.set_password("david", "a brand new password")
    assert accounts.get("david").generation > before
    assert accounts.check_token(token, T0) is None
    assert accounts.check_token(accounts.issue_token("david", T0), T0) is not None


def test_disabled_technician_gets_no_token(accounts: Accounts):
    """issue_token refuses a disabled or unknown account."""
    accounts.disable("david")
    with pytest.raises(AccountError):
        accounts.issue_token("david", T0)
    with pytest.raises(AccountError):
        accounts.issue_token("ghost", T0)


def test_changes_from_another_process_revoke_tokens(accounts: Accounts, db: Path):
    """A disable made through a second connection (the CLI) is seen by the server's."""
    token = accounts.issue_token("david", T0)
    with Accounts(db) as cli:
        cli.disable("david")
    assert accounts.check_token(token, T0) is None


def password_login(accounts: Accounts, password: str = PASSWORD, user: str = "david",
                   address: str = "203.0.113.1", now: float = T0) -> Login:
    return asyncio.run(accounts.login(user, password, "", address, now))


def test_password_login_gives_the_account_and_a_working_token(accounts: Accounts):
    """The right password: the support person and a new token that identifies them."""
    result = password_login(accounts)
    assert result.code == ""
    assert result.technician == Technician("david", "David Jones", True, 1)
    assert accounts.check_token(result.token, T0).id == "david"


def test_token_login_gives_the_account_back_with_the_same_token(accounts: Accounts):
    """A live token logs in as its account; an unknown one is LOGIN_EXPIRED."""
    token = accounts.issue_token("david", T0)
    assert asyncio.run(accounts.login("", "", token, "203.0.113.1", T0)) == Login(
        accounts.get("david"), token)
    made_up = accounts.login("", "", "made-up-token-value-1234", "203.0.113.1", T0)
    assert asyncio.run(made_up).code == LOGIN_EXPIRED


@pytest.mark.parametrize(("user", "password"), [
    ("david", "wrong password"), ("nobody", PASSWORD), ("Not An Id!", PASSWORD)])
def test_wrong_logins_are_one_answer_not_an_exception(accounts: Accounts, user: str,
                                                      password: str):
    """A wrong password and an unknown or malformed id all come back as LOGIN_FAILED."""
    result = password_login(accounts, password, user)
    assert (result.code, result.technician, result.token) == (LOGIN_FAILED, None, "")


def racing(accounts: Accounts, monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Make `change` happen while the next password is being checked (after its row was
    read, before the token is stored), as a command from the admin's CLI would."""
    real_verify = accounts._verify_hash

    def verify_while_changing(password_hash: str, password: str) -> bool:
        ok = real_verify(password_hash, password)
        change()
        return ok

    monkeypatch.setattr(accounts, "_verify_hash", verify_while_changing)


@pytest.mark.parametrize("change", ["set_password", "disable"])
def test_login_racing_an_account_change_gets_no_token(accounts: Accounts, db: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      change: str):
    """The old password verified while set-password (or disable) runs in another process:
    the login is refused with LOGIN_FAILED, never an AccountError, and no token exists."""
    with Accounts(db) as cli:
        if change == "set_password":
            racing(accounts, monkeypatch, lambda: cli.set_password("david", "a new password!"))
        else:
            racing(accounts, monkeypatch, lambda: cli.disable("david"))
        result = password_login(accounts)
    assert result.code == LOGIN_FAILED
    with closing(sqlite3.connect(db)) as connection:
        assert connection.execute("SELECT count(*) FROM login_tokens").fetchone() == (0,)


def test_logins_racing_set_password_in_threads_keep_no_working_token(accounts: Accounts,
                                                                     db: Path):
    """The issue's reproduction: four logins with the old password race set-password from
    another connection, four times; afterwards no token any of them got still works."""
    tokens: list[str] = []
    for run in range(4):
        password = f"password number {run}"
        accounts.set_password("david", password)
        barrier = threading.Barrier(5)

        def log_in(i: int, password: str = password,
                   barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            result = password_login(accounts, password, address=f"192.0.2.{i}")
            tokens.extend([result.token] if result.token else [])

        threads = [threading.Thread(target=log_in, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        with Accounts(db) as cli:
            barrier.wait()
            cli.set_password("david", f"changed password {run}")
        for thread in threads:
            thread.join()
        assert all(accounts.check_token(token, T0) is None for token in tokens)


def test_after_a_lockout_the_answer_is_a_wait_not_a_hash(accounts: Accounts,
                                                         monkeypatch: pytest.MonkeyPatch):
    """Past the free failures, an attempt is refused at once with TOO_MANY_ATTEMPTS and the
    seconds to wait, without any argon2 work; after the wait the right password works."""
    for i in range(FREE_FAILURES):
        assert password_login(accounts, "wrong password", address=f"192.0.2.{i}").code == (
            LOGIN_FAILED)
    hashed: list[str] = []
    real_verify = accounts._verify_hash
    monkeypatch.setattr(accounts, "_verify_hash",
                        lambda h, p: hashed.append(p) or real_verify(h, p))
    refused = password_login(accounts, address="198.51.100.1")
    assert refused.code == TOO_MANY_ATTEMPTS
    assert refused.limited.retry_after_s == 1.0
    assert hashed == []
    assert password_login(accounts, now=T0 + 1.0).technician is not None


def test_password_checks_run_at_most_argon2_workers_at_once(accounts: Accounts,
                                                            monkeypatch: pytest.MonkeyPatch):
    """Twelve logins from twelve addresses at once: never more than ARGON2_WORKERS hashes
    run together (the rest wait their turn)."""
    running, most = 0, 0
    lock = threading.Lock()
    real = accounts._hasher

    class CountingHasher:
        check_needs_rehash = real.check_needs_rehash

        def verify(self, password_hash: str, password: bytes) -> bool:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                return real.verify(password_hash, password)
            finally:
                with lock:
                    running -= 1

    monkeypatch.setattr(accounts, "_hasher", CountingHasher())
    threads = [threading.Thread(target=password_login,
                                args=(accounts, "wrong password", f"user{i}", f"192.0.2.{i}"))
               for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == ARGON2_WORKERS


def test_accounts_is_safe_to_share_between_threads(accounts: Accounts):
    """Concurrent token checks and issues from threads all succeed."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                token = accounts.issue_token("david", T0)
                assert accounts.check_token(token, T0) is not None
        except BaseException as error:  # collected and re-checked in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
