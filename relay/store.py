"""The relay's SQLite file: opened once per user of it, private, durable, closed cleanly.

Accounts and the ledger share one file (``DB_FILE`` in ``--data DIR``) and this opening code.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Self


class DataError(Exception):
    """The data folder or its database cannot be used; the text says why."""


def open_database(db_path: Path) -> sqlite3.Connection:
    """Open (creating if needed: folder 0700, file 0600) the relay's SQLite file in WAL mode."""
    db_path = Path(db_path)
    try:
        db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not db_path.exists():
            os.close(os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as error:
        raise DataError(f"cannot use the data folder {db_path.parent}: {error}") from None
    try:
        connection = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=10
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # a finished row survives a power cut
        connection.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as error:
        raise DataError(f"cannot open the database {db_path}: {error}") from None
    return connection


class Store:
    """A connection to the relay's database with its tables made, used under one lock."""

    def __init__(self, db_path: Path, schema: str) -> None:
        self._db = open_database(db_path)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.executescript(schema)
        except sqlite3.Error as error:
            raise DataError(f"cannot use the database {db_path}: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
