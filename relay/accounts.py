"""Support people's accounts: argon2id password hashes, logins and viewer tokens.

Thread-safe (one sqlite3 connection behind a lock) and synchronous, except ``login``: a
coroutine for the server, which asks relay.login_limits whether a password attempt is
hashed at all before handing the deliberately slow hashing to a thread. Times are passed in
as UTC epoch seconds, never read from a clock here.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

import protocol
from relay.login_limits import LoginLimits, Refusal
from relay.store import Store

DB_FILE = "relay.sqlite3"

# OWASP Password Storage Cheat Sheet, argon2id minimum: 19 MiB, 2 iterations, 1 lane.
ARGON2_MEMORY_KIB = 19456
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # what a viewer hello may carry
TOKEN_TTL_S = 12 * 3600

ARGON2_WORKERS = 2  # password checks running at once; more would only queue for the cores

_SCHEMA = """
CREATE TABLE IF NOT EXISTS technicians (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    generation INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS login_tokens (
    token_sha256 TEXT PRIMARY KEY,
    technician TEXT NOT NULL REFERENCES technicians(id),
    generation INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""


# The refusals a login can end in: protocol error codes the viewer is sent.
LOGIN_FAILED = "login-failed"
LOGIN_EXPIRED = "login-expired"
TOO_MANY_ATTEMPTS = "too-many-attempts"


class AccountError(Exception):
    """A request about an account was refused; the text is meant for the admin."""


@dataclass(frozen=True)
class Technician:
    """A support person as the relay knows them."""

    id: str
    name: str
    enabled: bool
    generation: int  # bumped by set_password/disable/enable; older logins are revoked


@dataclass(frozen=True)
class Login:
    """What one login attempt came to: a support person and their token, or a refusal."""

    technician: Technician | None = None
    token: str = ""  # new for a password login, the one presented for a token login
    code: str = ""  # the refusal (LOGIN_FAILED, LOGIN_EXPIRED, TOO_MANY_ATTEMPTS); "" if in
    limited: Refusal | None = None  # why TOO_MANY_ATTEMPTS, and the seconds to wait


def check_name(name: str) -> str:
    """A display name: 1-64 printable characters (surrounding spaces removed)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > protocol.MAX_NAME_CHARS or not name.isprintable():
        raise AccountError(
            f"the name must be 1-{protocol.MAX_NAME_CHARS} printable characters"
        )
    return name


def check_password(technician_id: str, password: str) -> None:
    """Refuse passwords that are empty, short, overlong or the account's own id."""
    if not isinstance(password, str) or not password:
        raise AccountError("the password is empty")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password is too short (at least {MIN_PASSWORD_CHARS} characters)")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"the password is too long (at most {MAX_PASSWORD_CHARS} characters)")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise AccountError("the password is not valid text (UTF-8)") from None
    if password.strip().lower() == technician_id:
        raise AccountError("the password must not be the account's id")


def _check_id(technician_id: str) -> None:
    try:
        protocol.check_technician_id(technician_id)
    except protocol.ProtocolError as error:
        raise AccountError(f"bad id {technician_id!r}: {error}") from None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts(Store):
    """The support people's accounts stored in the relay's SQLite file."""

    # Unknown users are verified against this (same cost as a real hash, and nothing to
    # compute first, so even the first such attempt takes no longer); its password was
    # random and thrown away.
    _dummy_hash = (
        "$argon2id$v=19$m=19456,t=2,p=1$eVl2mB+A+vxGzwyl8LimPQ"
        "$tbYQDCoNF+i1GHotGe1h/7Oktxc9Ad32S3DyZwlbW3s"
    )

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, _SCHEMA)
        self._hasher = self.hasher()
        self._limits = LoginLimits()
        # Its own lock, not the database's: an admission on the event loop must never wait
        # for another thread's fsync'd write.
        self._limits_lock = threading.Lock()
        # Bounds the argon2 work running at once, so checks admitted in a burst wait here in
        # turn instead of all slowing each other (and a real login) down together.
        self._argon2 = threading.BoundedSemaphore(self.workers())

    # Shared with relay.pgstore, so both stores hash and check passwords alike.
    @staticmethod
    def hasher() -> PasswordHasher:
        return PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                              parallelism=ARGON2_PARALLELISM)

    @staticmethod
    def workers() -> int:
        return ARGON2_WORKERS

    @classmethod
    def check_hash(cls, hasher: PasswordHasher, workers: threading.BoundedSemaphore,
                   password_hash: str, password: str) -> bool:
        """Verify (at most ``workers`` at once); an unusable password still costs the work."""
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
            password = ""  # still do the work, and fail
            password_hash = cls._dummy_hash
        try:
            with workers:
                return hasher.verify(password_hash, password.encode("utf-8", "surrogatepass"))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # --- the admin's commands ---------------------------------------------------------

    def add(self, technician_id: str, name: str, password: str) -> Technician:
        _check_id(technician_id)
        name = check_name(name)
        check_password(technician_id, password)
        password_hash = self._hash(password)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO technicians (id, name, password_hash) VALUES (?, ?, ?)",
                    (technician_id, name, password_hash),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"technician {technician_id!r} already exists") from None
        return Technician(technician_id, name, True, 1)

    def set_password(self, technician_id: str, password: str) -> None:
        check_password(technician_id, password)
        self._require(technician_id)
        password_hash = self._hash(password)
        self._update(technician_id, "password_hash = ?, generation = generation + 1",
                     (password_hash,))

    def disable(self, technician_id: str) -> None:
        self._update(technician_id, "enabled = 0, generation = generation + 1", ())

    def enable(self, technician_id: str) -> None:
        self._update(technician_id, "enabled = 1, generation = generation + 1", ())

    def _update(self, technician_id: str, assignments: str, values: tuple) -> None:
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE technicians SET {assignments} WHERE id = ?",  # noqa: S608 (constants)
                (*values, technician_id),
            )
            # Logins of the older generation are dead; drop them rather than keep them around.
            self._db.execute(
                "DELETE FROM login_tokens WHERE technician = ? AND generation <"
                " (SELECT generation FROM technicians WHERE id = ?)",
                (technician_id, technician_id),
            )
        if cursor.rowcount == 0:
            raise AccountError(f"no technician {technician_id!r}")

    def _require(self, technician_id: str) -> Technician:
        technician = self.get(technician_id)
        if technician is None:
            raise AccountError(f"no technician {technician_id!r}")
        return technician

    def get(self, technician_id: str) -> Technician | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, enabled, generation FROM technicians WHERE id = ?",
                (technician_id,),
            ).fetchone()
        return Technician(row[0], row[1], bool(row[2]), row[3]) if row else None

    def list(self) -> builtins.list[Technician]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, enabled, generation FROM technicians ORDER BY id"
            ).fetchall()
        return [Technician(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    # --- logging in ---------------------------------------------------------------------

    async def login(self, user: str, password: str, token: str, address: str,
                    now: float) -> Login:
        """A viewer's login by user and password (when both are given) or else by token.

        Never raises for a refusal: the answer says which one. A password attempt is first
        admitted or refused by relay.login_limits, here on the event loop, so a refused one
        costs no hashing and no place in the thread pool's queue; the admitted check runs
        in a thread. A token is issued only for the account generation whose password was
        verified, so a login racing set-password or disable gets no token that outlives
        the change.
        """
        if not (user and password):
            technician = self.check_token(token, now)
            return Login(technician, token) if technician else Login(code=LOGIN_EXPIRED)
        with self._limits_lock:
            refusal = self._limits.admit(address, user, now)
        if refusal is not None:
            return Login(code=TOO_MANY_ATTEMPTS, limited=refusal)
        found: tuple[Technician, str] | None = None
        try:
            found = await asyncio.to_thread(self._password_login, user, password, now)
        finally:
            with self._limits_lock:
                self._limits.done(address, user, found is not None, now)
        return Login(code=LOGIN_FAILED) if found is None else Login(*found)

    def _password_login(self, user: str, password: str, now: float
                        ) -> tuple[Technician, str] | None:
        technician = self.verify(user, password)
        token = self._stamp_token(technician, now, TOKEN_TTL_S) if technician else None
        return (technician, token) if technician and token else None

    def verify(self, technician_id: str, password: str) -> Technician | None:
        """The account if the password is right and it is enabled, else None. Its
        generation is the one the password was verified against.

        An unknown id, a disabled account and a wrong password cost the same hashing work,
        so neither the answer nor its timing tells which one it was.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, name, enabled, generation FROM technicians WHERE id = ?",
                (technician_id,),
            ).fetchone()
        if row is None:
            self._verify_hash(self._dummy(), password)
            return None
        password_hash, name, enabled, generation = row
        if not self._verify_hash(password_hash, password) or not enabled:
            return None
        if self._hasher.check_needs_rehash(password_hash):
            new_hash = self._hash(password)
            with self._lock:
                self._db.execute(
                    "UPDATE technicians SET password_hash = ? WHERE id = ? AND password_hash = ?",
                    (new_hash, technician_id, password_hash),
                )
        return Technician(technician_id, name, True, generation)

    def _hash(self, password: str) -> str:
        return self._hasher.hash(password.encode("utf-8", "surrogatepass"))

    def _verify_hash(self, password_hash: str, password: str) -> bool:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
            password_hash = self._dummy()  # refreshed first if the parameters changed
        return self.check_hash(self._hasher, self._argon2, password_hash, password)

    def _dummy(self) -> str:
        if self._hasher.check_needs_rehash(self._dummy_hash):  # the parameters were changed
            Accounts._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash

    # --- viewer login tokens (stored only as sha256) ------------------------------------

    def issue_token(self, technician_id: str, now: float, ttl_s: float = TOKEN_TTL_S) -> str:
        """A new token for an enabled account, at its current generation."""
        technician = self.get(technician_id)
        token = None
        if technician is not None and technician.enabled:
            token = self._stamp_token(technician, now, ttl_s)
        if token is None:
            raise AccountError(f"no enabled technician {technician_id!r}")
        return token

    def _stamp_token(self, technician: Technician, now: float, ttl_s: float) -> str | None:
        """A token for `technician` at exactly its generation, or None if the account has
        moved on since (a new password, disabled): checked and stored in one statement, so
        no change can slip in between."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute("DELETE FROM login_tokens WHERE expires_at <= ?", (now,))
            stored = self._db.execute(
                "INSERT INTO login_tokens (token_sha256, technician, generation, expires_at)"
                " SELECT ?, id, generation, ? FROM technicians"
                " WHERE id = ? AND enabled = 1 AND generation = ?",
                (_token_hash(token), now + ttl_s, technician.id, technician.generation),
            ).rowcount
        return token if stored else None

    def check_token(self, token: str, now: float) -> Technician | None:
        """The token's account, or None if unknown, expired, revoked or out of date."""
        if not isinstance(token, str):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT t.id, t.name, t.generation FROM login_tokens AS k"
                " JOIN technicians AS t ON t.id = k.technician"
                " WHERE k.token_sha256 = ? AND k.expires_at > ? AND t.enabled = 1"
                " AND k.generation = t.generation",
                (_token_hash(token), now),
            ).fetchone()
        return Technician(row[0], row[1], True, row[2]) if row else None

    def valid_tokens(self, tokens: Iterable[str], now: float) -> set[str]:
        """Those of ``tokens`` that check_token() accepts, in one query (the relay re-checks
        every viewer's login each second: one query, not one each). The hashes go in as one
        JSON array, so any number fits SQLite's limit on bound values."""
        by_hash = {_token_hash(t): t for t in tokens if isinstance(t, str)}
        with self._lock:
            rows = self._db.execute(
                "SELECT k.token_sha256 FROM login_tokens AS k"
                " JOIN technicians AS t ON t.id = k.technician"
                " WHERE k.token_sha256 IN (SELECT value FROM json_each(?))"
                " AND k.expires_at > ? AND t.enabled = 1 AND k.generation = t.generation",
                (json.dumps(list(by_hash)), now),
            ).fetchall()
        return {by_hash[row[0]] for row in rows}

    def revoke_token(self, token: str) -> None:
        if isinstance(token, str):
            with self._lock:
                self._db.execute(
                    "DELETE FROM login_tokens WHERE token_sha256 = ?", (_token_hash(token),)
                )
