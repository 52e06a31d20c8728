"""`python -m relay SUBCOMMAND ... --data DIR`: run the relay, manage accounts, export the ledger.

Every subcommand takes --data (default ./data), or the same PostgreSQL database as the
relays of a cluster: --database URL (no password), --database-file FILE or
$RELAY_DATABASE_URL (relay.location). Mistakes print one line to stderr and exit
with 2 (bad arguments) or 1 (refused or failed); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import math
import os
import secrets
import sqlite3
import subprocess
import sys
import typing
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import protocol
from relay.accounts import DB_FILE, AccountError, check_password
from relay.download import DEFAULT_COMPANY
from relay.ledger import LedgerRow, iso_utc, write_csv, write_transfers_csv
from relay.location import DATABASE_ENV, Location, LocationError, resolve
from relay.pairing import DEFAULT_GRACE_S, DEFAULT_WAIT_TIMEOUT_S
from relay.store import DataError
from relay.stores import Store, StoreFailure, open_store
from relay.transfers import DEFAULT_MAX_FILE_MB

T = typing.TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
DEMO_ID = "demo"
DEMO_NAME = "Demo Support"
PASSWORD_ENV = "RELAY_PASSWORD"  # noqa: S105 (a variable name)


# --- argument types (each refusal is one line, exit 2) ----------------------------------


def technician_id(value: str) -> str:
    try:
        protocol.check_technician_id(value)
    except protocol.ProtocolError as error:
        raise argparse.ArgumentTypeError(f"bad id {value!r}: {error}") from None
    return value


def file_megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of MiB: {text!r}") from None
    if not 0 <= value <= 1024 * 1024:
        raise argparse.ArgumentTypeError("must be between 0 and 1048576 MiB")
    return value


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return port


def _seconds(value: str, *, zero: bool) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a {'non-negative' if zero else 'positive'} number of seconds")
    return seconds


def positive_seconds(value: str) -> float:
    return _seconds(value, zero=False)


def non_negative_seconds(value: str) -> float:
    return _seconds(value, zero=True)


def ip_address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # how the relay sees such a peer
    return str(address)


def origin_url(value: str) -> str:
    """http(s)://host[:port] as a browser sends it in Origin: no path, no trailing slash."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok
            or parts.path or parts.query or parts.fragment or parts.username is not None):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an origin like https://support.example.com[:port]")
    return url.lower()


def phone_text(value: str) -> str:
    """One line of printable text; the page escapes it, this keeps the page readable."""
    text = value.strip()
    if not text or len(text) > 100 or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a phone line like \"David: 269 998 1389\" (1-100 characters)")
    return text


def readable_file(value: str) -> Path:
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot read {value}: {error.strerror or error}") from None
    return path


def readable_folder(value: str) -> Path:
    path = Path(value)
    try:
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{value} is not a folder")
        next(path.iterdir(), None)
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot read the folder {value}: {error.strerror or error}") from None
    return path


def utc_time(value: str) -> float:
    """An ISO 8601 date or date-time; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date or date-time (e.g. 2026-11-26 or 2026-11-26T08:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- passwords ------------------------------------------------------------------------


def read_password(technician: str) -> str:
    """From $RELAY_PASSWORD, else the first line of stdin when it is not a terminal, else
    asked twice on the terminal."""
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if sys.stdin is None or not sys.stdin.isatty():
            try:
                line = sys.stdin.readline() if sys.stdin is not None else ""
            except UnicodeDecodeError:
                raise AccountError("the password on stdin is not UTF-8 text") from None
            password = line.removesuffix("\n").removesuffix("\r")
            if not password:
                raise AccountError(
                    f"no password given: set {PASSWORD_ENV}, pipe it on stdin or run on a terminal"
                )
        else:
            password = getpass.getpass(f"Password for {technician}: ")
            check_password(technician, password)
            if getpass.getpass("Same password again: ") != password:
                raise AccountError("the two passwords differ")
    check_password(technician, password)
    return password


# --- subcommands ----------------------------------------------------------------------


def location_of(args: argparse.Namespace) -> Location:
    return resolve(args.data, args.database, args.database_file)


def on_store(args: argparse.Namespace, body: Callable[[Store], Awaitable[T]], *,
             create: bool = False) -> T:
    """Run ``body`` with the store named by --data/--database; only commands that add
    something may create it."""
    async def main() -> T:
        store = await open_store(location_of(args), create=create)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def is_fresh(args: argparse.Namespace) -> bool:
    """A SQLite store not made yet (PostgreSQL tables are made by migrate or any command
    that adds something)."""
    return not location_of(args).is_postgres and not (args.data / DB_FILE).exists()


def cmd_add_technician(args: argparse.Namespace) -> int:
    fresh = is_fresh(args)
    if not fresh and on_store(args, lambda store: store.technician(args.id),
                              create=True) is not None:
        raise AccountError(f"technician {args.id!r} already exists")  # before the password
    password = read_password(args.id)  # before creating anything: a refusal leaves no trace
    technician = on_store(args, lambda store: store.add_technician(args.id, args.name, password),
                          create=True)
    if fresh:  # a mistyped --data shows up here, not later as a relay nobody can log in to
        print(f"Created a new relay database in {args.data}")
    print(f"Added technician {technician.id} ({technician.name})")
    return 0


def cmd_list_technicians(args: argparse.Namespace) -> int:
    technicians = on_store(args, lambda store: store.technicians())
    if not technicians:
        print("No technicians yet: add one with python -m relay add-technician ID --name NAME")
        return 0
    table = [("ID", "NAME", "ENABLED")] + [
        (t.id, t.name, "yes" if t.enabled else "no") for t in technicians
    ]
    print_table(table)
    return 0


def cmd_disable_technician(args: argparse.Namespace) -> int:
    on_store(args, lambda store: store.disable(args.id))
    print(f"Disabled technician {args.id}; their logins are revoked")
    return 0


def cmd_enable_technician(args: argparse.Namespace) -> int:
    on_store(args, lambda store: store.enable(args.id))
    print(f"Enabled technician {args.id}")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    if on_store(args, lambda store: store.technician(args.id)) is None:
        raise AccountError(f"no technician {args.id!r}")
    password = read_password(args.id)
    on_store(args, lambda store: store.set_password(args.id, password))
    print(f"Changed the password of {args.id}; their logins are revoked")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    version = on_store(args, lambda store: store.schema_version(), create=True)
    print(f"The relay database in {location_of(args)} is at schema version {version}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise UsageError("--until must be later than --since")
    if args.transfers:
        return _transfers(args)
    rows = on_store(args, lambda store: store.rows(
        since=args.since, until=args.until, technician=args.technician))
    if args.csv:
        write_csv(rows, sys.stdout)
    elif not rows:
        print("No sessions.")
    else:
        print_table(ledger_table(rows), LEDGER_WIDTHS)
    return 0


def _transfers(args: argparse.Namespace) -> int:
    """`ledger --transfers`: the file transfers (relay.transfers), as a table or CSV."""
    rows = on_store(args, lambda store: store.transfers(
        since=args.since, until=args.until, technician=args.technician))
    if args.csv:
        write_transfers_csv(rows, sys.stdout)
    elif not rows:
        print("No file transfers.")
    else:
        table = [("STARTED (UTC)", "TECHNICIAN", "DIRECTION", "NAME", "SIZE", "OUTCOME",
                  "SHA-256")]
        table += [(iso_utc(r.started_at).replace("T", " ")[:16], r.technician, r.direction,
                   r.name, str(r.size), r.outcome, r.sha256[:12]) for r in rows]
        print_table(table, (16, 12, 13, 24, 12, 9, 12))
    return 0


# The ledger table's columns and their widest cells: 99 columns in all with the gaps, so
# it fits a 100-column terminal. Longer cells are cut with "…"; --csv has everything.
LEDGER_WIDTHS = (8, 12, 13, 11, 16, 9, 18)


def ledger_table(rows: list[LedgerRow]) -> list[tuple[str, ...]]:
    def when(at: float | None) -> str:
        return iso_utc(at).replace("T", " ")[:16]  # to the minute

    def duration(whole: int) -> str:
        return f"{whole // 3600}:{whole // 60 % 60:02}:{whole % 60:02}"

    # REF is the reference on the customer's receipt; BILLABLE leaves out paused time.
    table = [("REF", "TECHNICIAN", "MACHINE", "USER", "REQUESTED (UTC)", "BILLABLE",
              "ENDED")]
    for row in rows:
        ended = (row.end_reason or row.ended_by or "") if row.ended_at is not None else "open"
        table.append((str(row.ref), row.technician, row.machine, row.user,
                      when(row.requested_at), duration(row.billable_whole_s), ended))
    table.append(("total", "", "", "", "", duration(sum(r.billable_whole_s for r in rows)), ""))
    return table


def print_table(table: list[tuple[str, ...]], widest: tuple[int, ...] | None = None) -> None:
    # Names come from customers' PCs: show anything unprintable escaped, never raw.
    cells = [[c if c.isprintable() else c.encode("unicode_escape").decode() for c in row]
             for row in table]
    if widest is not None:
        cells = [[c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(row, widest, strict=True)]
                 for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def serve_config(args: argparse.Namespace):  # -> server.RelayConfig (server imported lazily)
    """The server's configuration from serve's (or demo's) parsed options."""
    from relay import server

    return server.RelayConfig(
        data=args.data, host=args.host, port=args.port, cert=args.cert, key=args.key,
        origins=tuple(args.origin), trusted_proxies=tuple(args.trusted_proxy),
        downloads=args.downloads, company=args.company, phones=tuple(args.phone),
        viewer_dir=args.viewer_dir, wait_timeout=args.wait_timeout, grace=args.grace,
        require_code=args.require_code, ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout, handshake_timeout=args.handshake_timeout,
        hello_timeout=args.hello_timeout, max_unauthenticated=args.max_unauthenticated,
        database=location_of(args), relay_id=args.relay_id, max_file_mb=args.max_file_mb,
    )


def warn(text: str) -> None:
    print(f"WARNING: {text}", file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_plain_http(args: argparse.Namespace) -> None:
    if args.cert is None and not is_loopback(args.host):
        warn(f"serving plain http on {args.host or 'every address'}: passwords and screens "
             "cross the network unencrypted; use --cert and --key, or listen on 127.0.0.1 "
             "behind a TLS reverse proxy")


def check_before_serving(args: argparse.Namespace) -> None:
    """A clear error now if the data folder is unusable, and a warning for each thing an
    admin must know before the relay is of any use."""
    fresh = is_fresh(args)
    enabled = [t for t in on_store(args, lambda store: store.technicians(), create=True)
               if t.enabled]
    if fresh:
        warn(f"created a new, empty relay database in {args.data}; if you meant an existing "
             "one, check --data")
    if not enabled and location_of(args).is_postgres:
        warn("nobody can log in: the database has no enabled support person; add one with "
             "python -m relay add-technician ID --name NAME (with the same database URL)")
    elif not enabled:
        warn(f"nobody can log in: {args.data} has no enabled support person; add one with "
             f"python -m relay add-technician ID --name NAME --data {args.data}")
    warn_plain_http(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from relay import server

    check_before_serving(args)
    return server.run(serve_config(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from relay import server

    password = secrets.token_urlsafe(12)

    async def make_demo(store: Store) -> None:
        if await store.technician(DEMO_ID) is None:
            await store.add_technician(DEMO_ID, DEMO_NAME, password)
        else:
            await store.set_password(DEMO_ID, password)
            await store.enable(DEMO_ID)

    on_store(args, make_demo, create=True)
    warn_plain_http(args)
    agent: list[subprocess.Popen] = []

    def on_ready(url: str) -> None:
        print(f"\nOpen the support console at {url}/console/ and log in as\n"
              f"    user:     {DEMO_ID}\n    password: {password}\n"
              f"The customer's page (what to run, whom to call) is {url}/\n", flush=True)
        if display_available():
            relay_ws = "ws" + url.removeprefix("http")
            agent.append(subprocess.Popen([sys.executable, str(ROOT / "agent.py"),
                                           "--relay", relay_ws, "--technician", DEMO_ID]))
            print(f"Started the local agent (pid {agent[0].pid}); it waits in the queue of"
                  f" {DEMO_ID}", flush=True)
        else:
            print("No display here, so no local agent: run agent.py on a desktop machine",
                  flush=True)

    try:
        return server.run(serve_config(args), on_ready=on_ready)
    finally:
        for process in agent:
            stop_process(process)


def display_available() -> bool:
    return sys.platform == "win32" or bool(os.environ.get("DISPLAY"))


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the parser -----------------------------------------------------------------------


class UsageError(Exception):
    """Arguments that parse but do not make sense together (exit 2, like argparse's own)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the arguments told in one line instead of a usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if (text and text != argparse.SUPPRESS and "%(default)" not in text
                and action.option_strings
                and action.default not in (None, False, [], argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


def build_parser(with_server: bool = False) -> argparse.ArgumentParser:
    """All subcommands; serve's and demo's own options only when `with_server` (their
    defaults come from relay/server.py, which the account and ledger commands never import)."""
    parser = Parser(
        prog="python -m relay", formatter_class=HelpFormatter,
        description="Spotlight Remote Support relay: serve, manage support people, export"
                    " the ledger.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  formatter_class=HelpFormatter)
        sub.add_argument("--data", type=Path, default=Path("data"), metavar="DIR",
                         help="folder of the relay's SQLite file (accounts and ledger)")
        sub.add_argument("--database", metavar="URL",
                         help="PostgreSQL instead of --data: postgresql://USER@HOST[:PORT]/DB"
                              f" without a password (a URL with one: ${DATABASE_ENV} or"
                              " --database-file)")
        sub.add_argument("--database-file", type=readable_file, metavar="FILE",
                         help="a file whose first line is the PostgreSQL URL (it may hold"
                              " the password; keep the file private)")
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, help_text in (
        ("serve", cmd_serve, "run the relay"),
        ("demo", cmd_demo, "run the relay with a demo support person (and the local agent)"),
    ):
        sub = command(name, handler, help_text)
        if with_server:
            add_serve_arguments(sub)

    sub = command("add-technician", cmd_add_technician,
                  f"add a support person (password from ${PASSWORD_ENV}, stdin or a prompt)")
    sub.add_argument("id", type=technician_id, help="login id: a-z, 0-9, '.', '_', '-'")
    sub.add_argument("--name", required=True, help="display name shown to customers")

    command("list-technicians", cmd_list_technicians, "list support people")
    command("migrate", cmd_migrate,
            "create the database's tables or bring them up to this relay's version")
    for name, handler, help_text in (
        ("disable-technician", cmd_disable_technician,
         "disable a support person (revokes their logins)"),
        ("enable-technician", cmd_enable_technician, "enable a support person again"),
        ("set-password", cmd_set_password,
         f"change a password (from ${PASSWORD_ENV}, stdin or a prompt; revokes logins)"),
    ):
        command(name, handler, help_text).add_argument(
            "id", type=technician_id, help="the support person's login id")

    sub = command("ledger", cmd_ledger, "show the session ledger (or export it as CSV)")
    sub.add_argument("--since", type=utc_time, metavar="DATE",
                     help="only sessions requested at or after this ISO date or date-time "
                          "(UTC unless it names an offset)")
    sub.add_argument("--until", type=utc_time, metavar="DATE",
                     help="only sessions requested before this ISO date or date-time; "
                          "--since 2026-11-01 --until 2026-12-01 is November")
    sub.add_argument("--technician", type=technician_id, metavar="ID",
                     help="only this support person's sessions")
    sub.add_argument("--csv", action="store_true",
                     help="CSV for billing, every column in full (default: a table)")
    sub.add_argument("--transfers", action="store_true",
                     help="the file transfers instead of the sessions (name, size, "
                          "direction, SHA-256, outcome)")
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's own options; without relay/server.py, serve and demo just say so."""
    try:
        from relay import server
    except ImportError as error:
        parser.set_defaults(server_missing=str(error))
        return
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 or :: for every address)")
    parser.add_argument("--port", type=port_number, default=8765,
                        help="port to listen on (0: any free port)")
    parser.add_argument("--cert", type=readable_file, metavar="FILE",
                        help="TLS certificate chain (PEM): serve https:// and wss://")
    parser.add_argument("--key", type=readable_file, metavar="FILE",
                        help="TLS private key (PEM) of --cert")
    parser.add_argument("--origin", action="append", default=[], type=origin_url,
                        metavar="URL",
                        help="another origin allowed to open the viewer's websocket, e.g. "
                             "https://support.example.com (repeatable)")
    parser.add_argument("--trusted-proxy", action="append", default=[], type=ip_address,
                        metavar="ADDR",
                        help="a reverse proxy's address: connections from it are taken to "
                             "come from the last X-Forwarded-For address (repeatable)")
    parser.add_argument("--downloads", type=readable_folder, metavar="DIR",
                        help="folder whose files /download offers (e.g. the agent's exe)")
    parser.add_argument("--company", default=DEFAULT_COMPANY, metavar="NAME",
                        help="the company's name on the customer's page (/)")
    parser.add_argument("--phone", action="append", default=[], type=phone_text,
                        metavar="TEXT",
                        help='a phone line for the customer\'s page, e.g. "David: 269 998 '
                             '1389" (repeatable)')
    parser.add_argument("--relay-id", default="relay", type=technician_id, metavar="NAME",
                        help="this relay's name in a cluster's shared database (each relay "
                             "its own, the same after a restart)")
    parser.add_argument("--wait-timeout", type=positive_seconds, default=DEFAULT_WAIT_TIMEOUT_S,
                        metavar="SECONDS", help="how long a session waits to be accepted")
    parser.add_argument("--grace", type=non_negative_seconds, default=DEFAULT_GRACE_S,
                        metavar="SECONDS",
                        help="how long a session survives a lost viewer or agent link")
    parser.add_argument("--require-code", action="store_true",
                        help="support people type the 6-digit session code the customer "
                             "reads out before they can accept a session")
    parser.add_argument("--max-file-mb", type=file_megabytes, default=DEFAULT_MAX_FILE_MB,
                        metavar="MB",
                        help="the largest file a support person and a customer may send "
                             "each other, in MiB (0 turns file transfer off); a larger one "
                             "is refused before any byte moves")
    # Hidden: the viewer's files from elsewhere, and tuning for tests (a network cut
    # detected in a second, stalled handshakes dropped fast).
    parser.add_argument("--viewer-dir", type=readable_folder, default=server.VIEWER_DIR,
                        metavar="DIR", help=argparse.SUPPRESS)
    for option, default in (("--ping-interval", server.PING_INTERVAL_S),
                            ("--ping-timeout", server.PING_TIMEOUT_S),
                            ("--handshake-timeout", server.HANDSHAKE_TIMEOUT_S),
                            ("--hello-timeout", server.HELLO_TIMEOUT_S)):
        parser.add_argument(option, type=positive_seconds, default=default,
                            help=argparse.SUPPRESS)
    # Hidden: room for connections before their hello, small to test the total cap.
    parser.add_argument("--max-unauthenticated", type=int, default=server.MAX_UNAUTHENTICATED,
                        help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_server=argv[:1] in (["serve"], ["demo"]))
    args = parser.parse_args(argv)
    if getattr(args, "server_missing", None):
        print(f"error: the relay server is not available ({args.server_missing})",
              file=sys.stderr)
        return 1
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
        return code
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except LocationError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except (AccountError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except StoreFailure as error:  # PostgreSQL refused or went away mid-command
        print(f"error: the database failed: {error}", file=sys.stderr)
        return 1
    except sqlite3.Error as error:  # e.g. another program holds the database locked
        print(f"error: the database in {args.data} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EOFError:
        print("error: no password given", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `ledger | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a file or folder the command needed could not be used
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
