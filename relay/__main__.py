"""`python -m relay SUBCOMMAND ... --data DIR`: run the relay, manage accounts, export the ledger.

Every subcommand takes --data (default ./data). Mistakes print one line to stderr and exit
with 2 (bad arguments) or 1 (refused or failed); never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import protocol
from relay.accounts import DB_FILE, AccountError, Accounts, check_password
from relay.ledger import Ledger, LedgerRow, iso_utc, write_csv
from relay.store import DataError

ROOT = Path(__file__).resolve().parent.parent
DEMO_ID = "demo"
DEMO_NAME = "Demo Support"
PASSWORD_ENV = "RELAY_PASSWORD"  # noqa: S105 (a variable name)


# --- argument types -------------------------------------------------------------------


def technician_id(value: str) -> str:
    try:
        protocol.check_technician_id(value)
    except protocol.ProtocolError as error:
        raise argparse.ArgumentTypeError(f"bad id {value!r}: {error}") from None
    return value


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


def database(args: argparse.Namespace, *, create: bool = False) -> Path:
    """The SQLite file in --data; only commands that add something may create it."""
    path = args.data / DB_FILE
    if not create and not path.is_file():
        raise DataError(f"no relay data in {args.data} (no {DB_FILE} there); check --data")
    return path


def accounts_of(args: argparse.Namespace, *, create: bool = False) -> Accounts:
    return Accounts(database(args, create=create))


def cmd_add_technician(args: argparse.Namespace) -> int:
    with accounts_of(args, create=True) as accounts:
        if accounts.get(args.id) is not None:  # say so before asking for a password
            raise AccountError(f"technician {args.id!r} already exists")
        technician = accounts.add(args.id, args.name, read_password(args.id))
    print(f"Added technician {technician.id} ({technician.name})")
    return 0


def cmd_list_technicians(args: argparse.Namespace) -> int:
    with accounts_of(args) as accounts:
        technicians = accounts.list()
    if not technicians:
        print("No technicians yet: add one with python -m relay add-technician ID --name NAME")
        return 0
    table = [("ID", "NAME", "ENABLED")] + [
        (t.id, t.name, "yes" if t.enabled else "no") for t in technicians
    ]
    print_table(table)
    return 0


def cmd_disable_technician(args: argparse.Namespace) -> int:
    with accounts_of(args) as accounts:
        accounts.disable(args.id)
    print(f"Disabled technician {args.id}; their logins are revoked")
    return 0


def cmd_enable_technician(args: argparse.Namespace) -> int:
    with accounts_of(args) as accounts:
        accounts.enable(args.id)
    print(f"Enabled technician {args.id}")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    with accounts_of(args) as accounts:
        if accounts.get(args.id) is None:
            raise AccountError(f"no technician {args.id!r}")
        accounts.set_password(args.id, read_password(args.id))
    print(f"Changed the password of {args.id}; their logins are revoked")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    with Ledger(database(args)) as ledger:
        rows = ledger.rows(since=args.since, technician=args.technician)
    if args.csv:
        write_csv(rows, sys.stdout)
    elif not rows:
        print("No sessions.")
    else:
        print_table(ledger_table(rows))
    return 0


def ledger_table(rows: list[LedgerRow]) -> list[tuple[str, ...]]:
    def when(at: float | None) -> str:
        return iso_utc(at).replace("T", " ").removesuffix("Z")

    def duration(whole: int) -> str:
        return f"{whole // 3600}:{whole // 60 % 60:02}:{whole % 60:02}"

    table = [("SESSION", "TECHNICIAN", "MACHINE", "USER", "REQUESTED (UTC)", "ACCEPTED",
              "ENDED", "BILLABLE", "ENDED BY", "REASON")]
    for row in rows:
        table.append((row.session[:8], row.technician, row.machine, row.user,
                      when(row.requested_at), when(row.accepted_at), when(row.ended_at),
                      duration(row.billable_whole_s), row.ended_by or "", row.end_reason or ""))
    table.append(("total", "", "", "", "", "", "", duration(sum(r.billable_whole_s for r in rows)),
                  "", ""))
    return table


def print_table(table: list[tuple[str, ...]]) -> None:
    # Names come from customers' PCs: show anything unprintable escaped, never raw.
    cells = [[c if c.isprintable() else c.encode("unicode_escape").decode() for c in row]
             for row in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def serve_config(args: argparse.Namespace):  # -> server.RelayConfig (server imported lazily)
    """The server's configuration from serve's (or demo's) parsed options."""
    from relay import server

    return server.RelayConfig(
        data=args.data, host=args.host, port=args.port, cert=args.cert, key=args.key,
        origins=tuple(args.origin), trusted_proxies=tuple(args.trusted_proxy),
        downloads=args.downloads, company=args.company, viewer_dir=args.viewer_dir,
        wait_timeout=args.wait_timeout, grace=args.grace, require_code=args.require_code,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout, handshake_timeout=args.handshake_timeout,
        hello_timeout=args.hello_timeout, max_unauthenticated=args.max_unauthenticated,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from relay import server

    accounts_of(args, create=True).close()  # a clear message now if the data folder is unusable
    return server.run(serve_config(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from relay import server

    password = secrets.token_urlsafe(12)
    with accounts_of(args, create=True) as accounts:
        if accounts.get(DEMO_ID) is None:
            accounts.add(DEMO_ID, DEMO_NAME, password)
        else:
            accounts.set_password(DEMO_ID, password)
            accounts.enable(DEMO_ID)
    agent: list[subprocess.Popen] = []

    def on_ready(url: str) -> None:
        print(f"\nOpen the viewer at {url}/ and log in as\n"
              f"    user:     {DEMO_ID}\n    password: {password}\n", flush=True)
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


def build_parser(with_server: bool = False) -> argparse.ArgumentParser:
    """All subcommands; serve's and demo's own options only when `with_server` (they come
    from relay/server.py, which the account and ledger commands never import)."""
    parser = argparse.ArgumentParser(
        prog="python -m relay",
        description="Spotlight Remote Support relay: serve, manage support people, export"
                    " the ledger.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data", type=Path, default=Path("data"), metavar="DIR",
                         help="folder of the relay's SQLite file (default: ./data)")
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
    for name, handler, help_text in (
        ("disable-technician", cmd_disable_technician,
         "disable a support person (revokes their logins)"),
        ("enable-technician", cmd_enable_technician, "enable a support person again"),
        ("set-password", cmd_set_password,
         f"change a password (from ${PASSWORD_ENV}, stdin or a prompt; revokes logins)"),
    ):
        command(name, handler, help_text).add_argument("id", type=technician_id)

    sub = command("ledger", cmd_ledger, "show the session ledger (or export it as CSV)")
    sub.add_argument("--since", type=utc_time, metavar="DATE",
                     help="only sessions requested at or after this ISO date/time (UTC)")
    sub.add_argument("--technician", type=technician_id, metavar="ID")
    sub.add_argument("--csv", action="store_true", help="CSV for billing")
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's own options; without relay/server.py, serve and demo just say so."""
    try:
        from relay import server
    except ImportError as error:
        parser.set_defaults(server_missing=str(error))
        return
    server.add_serve_arguments(parser)


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
    except (AccountError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
