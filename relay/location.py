"""Where the relay keeps its data: SQLite in --data (one machine) or a PostgreSQL URL (several).

The PostgreSQL URL comes from ``--database URL`` only when it has no password: anything on
the command line shows in ``ps`` to every user of the machine. A URL with a password comes
from $RELAY_DATABASE_URL or the first line of ``--database-file FILE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DATABASE_ENV = "RELAY_DATABASE_URL"
SCHEMES = ("postgresql", "postgres")


class LocationError(Exception):
    """The database was named in a way the relay refuses; the text says why."""


@dataclass(frozen=True)
class Location:
    """SQLite at ``path``, or PostgreSQL at ``url`` (never printed: it may hold a password)."""

    path: Path | None = None
    url: str = ""

    @property
    def is_postgres(self) -> bool:
        return bool(self.url)

    def __str__(self) -> str:
        if not self.url:
            return str(self.path)
        parts = urlsplit(self.url)
        return f"postgresql://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" \
               f"{parts.path}"

    def __repr__(self) -> str:  # a traceback or a log line must not show the password either
        return f"Location({self})"


def check_url(url: str, *, from_command_line: bool) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise LocationError("the database must be a postgresql://... URL")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        raise LocationError("the database URL has a bad port") from None
    if from_command_line and parts.password:
        raise LocationError(
            f"a password on the command line shows in ps: put the URL in ${DATABASE_ENV} "
            "or in a file named by --database-file")
    return url


def resolve(data: Path, database: str | None, database_file: Path | None,
            environ: dict[str, str] | os._Environ = os.environ) -> Location:
    """The one place the relay decides which database it uses."""
    chosen = [name for name, value in (("--database", database),
                                       ("--database-file", database_file)) if value]
    if len(chosen) > 1:
        raise LocationError("give --database or --database-file, not both")
    if database:
        return Location(url=check_url(database, from_command_line=True))
    if database_file is not None:
        try:
            line = database_file.read_text(encoding="utf-8").splitlines()[:1]
        except (OSError, UnicodeDecodeError) as error:
            raise LocationError(f"cannot read {database_file}: {error}") from None
        if not line or not line[0].strip():
            raise LocationError(f"{database_file} is empty: its first line must be the URL")
        return Location(url=check_url(line[0], from_command_line=False))
    if environ.get(DATABASE_ENV):
        return Location(url=check_url(environ[DATABASE_ENV], from_command_line=False))
    return Location(path=data)
