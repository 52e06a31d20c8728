"""`python -m relay` account and ledger commands, run as real subprocesses."""

from __future__ import annotations

import argparse
import csv
import io
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import protocol
from relay.__main__ import build_parser, warn_plain_http
from relay.accounts import Accounts
from relay.ledger import Ledger, write_csv

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_652_400.0  # 2026-11-26T00:20:00Z


def relay_cli(data: Path, *args: str, stdin: str | None = None,
              password: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m relay ARGS --data DATA`; a traceback in stderr fails the test."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_PASSWORD"}
    if password is not None:
        env["RELAY_PASSWORD"] = password
    result = subprocess.run(
        [sys.executable, "-m", "relay", *args, "--data", str(data)],
        cwd=ROOT, env=env, input=stdin if stdin is not None else "",
        capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, "expected an error message on stderr"
    return lines[-1]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data: Path) -> Iterator[Callable]:
    """Open Accounts or Ledger on the data folder (closed after the test)."""
    opened: list[Accounts | Ledger] = []

    def open_store(kind: type[Accounts] | type[Ledger] = Accounts) -> Any:
        opened.append(kind(data / "relay.sqlite3"))
        return opened[-1]

    yield open_store
    for item in opened:
        item.close()


def test_add_technician_with_password_from_env_and_list(data: Path, store: Callable):
    """RELAY_PASSWORD sets the password; list-technicians shows id, name and enabled; the
    first one says it created the data folder, the next does not."""
    result = relay_cli(data, "add-technician", "david", "--name", "David Jones",
                       password="david-password")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"Created a new relay database in {data}",
                                          "Added technician david (David Jones)"]
    again = relay_cli(data, "add-technician", "anna", "--name", "Anna", password="anna-pass")
    assert again.stdout.splitlines() == ["Added technician anna (Anna)"]
    listed = relay_cli(data, "list-technicians")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["ID", "NAME", "ENABLED"]
    assert listed.stdout.splitlines()[2].split() == ["david", "David", "Jones", "yes"]
    assert store().verify("david", "david-password") is not None


def test_add_technician_reads_the_password_from_stdin(data: Path, store: Callable):
    """Without RELAY_PASSWORD the first line of a piped stdin is the password."""
    result = relay_cli(data, "add-technician", "petur", "--name", "Pétur",
                       stdin="piped-password\n")
    assert result.returncode == 0, result.stderr
    accounts = store()
    assert accounts.verify("petur", "piped-password") is not None
    assert accounts.get("petur").name == "Pétur"


@pytest.mark.parametrize(("stdin", "message"), [
    ("", "no password given"),
    ("\n", "no password given"),
    ("short\n", "too short"),
])
def test_add_technician_refuses_missing_or_short_passwords(data: Path, stdin: str,
                                                           message: str):
    """An empty or too short password is refused with one clear line and exit 1."""
    result = relay_cli(data, "add-technician", "anna", "--name", "Anna", stdin=stdin)
    assert result.returncode == 1
    assert message in one_error_line(result)
    assert not data.exists()  # refused before anything was created


def test_add_technician_refuses_a_password_that_is_not_utf8(data: Path):
    """Undecodable bytes on stdin give one clear line, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "relay", "add-technician", "anna", "--name", "Anna",
         "--data", str(data)],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "RELAY_PASSWORD"},
        input=b"\xff\xfe-not-text-password\n", capture_output=True, timeout=60,
    )
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"UTF-8" in result.stderr


def test_add_technician_refuses_a_duplicate_id(data: Path):
    """Adding an existing id fails with exit 1 and names the id."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    result = relay_cli(data, "add-technician", "david", "--name", "Other",
                       password="other-password")
    assert result.returncode == 1
    assert one_error_line(result) == "error: technician 'david' already exists"


@pytest.mark.parametrize("bad_id", ["David", "has space", "", "x" * 33, ".dot"])
def test_add_technician_refuses_a_bad_id(data: Path, bad_id: str):
    """Ids outside a-z, 0-9, '.', '_', '-' (1-32 chars) are a usage error (exit 2)."""
    result = relay_cli(data, "add-technician", bad_id, "--name", "X", password="long-enough")
    assert result.returncode == 2
    assert "bad id" in one_error_line(result)


def test_add_technician_refuses_a_bad_name(data: Path):
    """A display name with control characters is refused."""
    result = relay_cli(data, "add-technician", "anna", "--name", "Anna\x1b[2J",
                       password="long-enough")
    assert result.returncode == 1
    assert "name" in one_error_line(result)


def test_disable_and_enable_technician(data: Path, store: Callable):
    """disable-technician shows as not enabled and blocks logins; enable restores them."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    assert relay_cli(data, "disable-technician", "david").returncode == 0
    assert relay_cli(data, "list-technicians").stdout.splitlines()[1].split() == [
        "david", "David", "no"]
    accounts = store()
    assert accounts.verify("david", "david-password") is None
    assert relay_cli(data, "enable-technician", "david").returncode == 0
    assert accounts.verify("david", "david-password") is not None


def test_set_password_from_stdin_replaces_the_password(data: Path, store: Callable):
    """set-password takes the new password from stdin and the old one stops working."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    result = relay_cli(data, "set-password", "david", stdin="brand-new-password\n")
    assert result.returncode == 0, result.stderr
    accounts = store()
    assert accounts.verify("david", "david-password") is None
    assert accounts.verify("david", "brand-new-password") is not None


@pytest.mark.parametrize("command", ["disable-technician", "enable-technician",
                                     "set-password"])
def test_commands_on_an_unknown_technician_fail_cleanly(data: Path, command: str):
    """An unknown id gives exit 1 and one line naming it."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    result = relay_cli(data, command, "ghost", password="ghost-password")
    assert result.returncode == 1
    assert one_error_line(result) == "error: no technician 'ghost'"


def test_commands_on_a_missing_data_folder_fail_cleanly(tmp_path: Path):
    """Reading commands never create an empty data folder by mistake."""
    for args in (["list-technicians"], ["ledger", "--csv"], ["disable-technician", "x"]):
        result = relay_cli(tmp_path / "typo", *args)
        assert result.returncode == 1
        assert "no relay data in" in one_error_line(result)
    assert not (tmp_path / "typo").exists()


def test_unusable_data_folder_fails_cleanly(tmp_path: Path):
    """A --data that is a file, not a folder, gives one clear line and exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = relay_cli(blocker, "add-technician", "anna", "--name", "Anna",
                       password="long-enough")
    assert result.returncode == 1
    assert "cannot use the data folder" in one_error_line(result)


def test_corrupt_database_fails_cleanly(data: Path):
    """A data file that is not SQLite gives one clear line and exit 1."""
    data.mkdir()
    (data / "relay.sqlite3").write_bytes(b"this is not a database" * 100)
    result = relay_cli(data, "list-technicians")
    assert result.returncode == 1
    assert "error:" in one_error_line(result)


def fill_ledger(data: Path, store: Callable) -> Ledger:
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    ledger = store(Ledger)
    ledger.requested("A" * 43, "david", "FRONT-DESK", "anna", "203.0.113.7", T0)
    ledger.accepted("A" * 43, T0 + 30)
    ledger.ended("A" * 43, "customer", "customer-closed", T0 + 630)
    ledger.requested("B" * 43, "petur", "=cmd|' /C calc'!A0", "bob, jr", "::1", T0 + 86400)
    ledger.accepted("B" * 43, T0 + 86410)
    ledger.ended("B" * 43, "technician", "technician-ended", T0 + 86470)
    return ledger


def test_ledger_csv_is_exactly_write_csv_output(data: Path, store: Callable):
    """ledger --csv prints what write_csv writes for the same rows."""
    ledger = fill_ledger(data, store)
    expected = io.StringIO()
    write_csv(ledger.rows(), expected)
    result = relay_cli(data, "ledger", "--csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.getvalue()
    assert result.stdout.splitlines()[1].endswith(
        ',"2026-11-26T00:20:00Z","2026-11-26T00:20:30Z","2026-11-26T00:30:30Z","0","600",'
        '"customer","customer-closed",""')  # no note


def test_ledger_filters_by_since_and_technician(data: Path, store: Callable):
    """--since (date or date-time, UTC) and --technician select the rows."""
    fill_ledger(data, store)

    def sessions(*args: str) -> list[str]:
        result = relay_cli(data, "ledger", "--csv", *args)
        assert result.returncode == 0, result.stderr
        return [row["session"][0] for row in csv.DictReader(io.StringIO(result.stdout))]

    assert sessions() == ["A", "B"]
    assert sessions("--since", "2026-11-27") == ["B"]
    assert sessions("--since", "2026-11-26T00:20:00Z") == ["A", "B"]
    assert sessions("--since", "2026-11-26T00:20:01") == ["B"]
    assert sessions("--since", "2026-11-26T01:20:01+01:00") == ["B"]
    assert sessions("--technician", "david") == ["A"]
    assert sessions("--technician", "nobody") == []


def test_ledger_table_is_readable(data: Path, store: Callable):
    """Without --csv: aligned columns with UTC times, h:mm:ss billable time and a total."""
    fill_ledger(data, store)
    result = relay_cli(data, "ledger")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["REF", "TECHNICIAN", "MACHINE", "USER"]
    assert "2026-11-26 00:20" in lines[1]
    assert "0:10:00" in lines[1]
    assert lines[1].split()[0] == "1"  # the reference on the customer's receipt
    assert lines[1].split()[-1] == "customer-closed"
    assert lines[-1].split() == ["total", "0:11:00"]
    assert lines[1].index("david") == lines[0].index("TECHNICIAN")


def test_ledger_table_fits_100_columns_whatever_the_names(data: Path, store: Callable):
    """The longest ids, names and reasons a session can have: no line over 100 columns,
    long cells cut with an ellipsis, and --csv still has them in full."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    ledger = store(Ledger)
    machine, user = "M" * protocol.MAX_NAME_CHARS, "\u00fc" * protocol.MAX_NAME_CHARS
    ledger.requested("C" * 43, "t" * 32, machine, user, "2001:db8::1", T0)
    ledger.accepted("C" * 43, T0 + 1)
    ledger.ended("C" * 43, "relay", "technician-disabled", T0 + 400_000)
    ledger.requested("D" * 43, "david", "PC\x1b[2J" * 8, "anna", "::1", T0 + 5)
    result = relay_cli(data, "ledger")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(lines)
    assert "\u2026" in lines[1] and "\x1b" not in result.stdout
    assert lines[2].split()[-1] == "open"
    assert machine in relay_cli(data, "ledger", "--csv").stdout


def test_ledger_until_selects_sessions_requested_before_it(data: Path, store: Callable):
    """--until is exclusive, --since inclusive; an --until not after --since is a usage
    error in one line."""
    fill_ledger(data, store)

    def sessions(*args: str) -> list[str]:
        result = relay_cli(data, "ledger", "--csv", *args)
        assert result.returncode == 0, result.stderr
        return [row["session"][0] for row in csv.DictReader(io.StringIO(result.stdout))]

    assert sessions("--until", "2026-11-27") == ["A"]
    assert sessions("--until", "2026-11-26T00:20:00Z") == []
    assert sessions("--since", "2026-11-26", "--until", "2026-11-28") == ["A", "B"]
    result = relay_cli(data, "ledger", "--since", "2026-11-27", "--until", "2026-11-26")
    assert result.returncode == 2
    assert result.stderr.strip() == ("python -m relay: error: --until must be later than"
                                     " --since")


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "26/11/2026"])
def test_ledger_bad_since_is_a_usage_error(data: Path, store: Callable, since: str):
    """An unparsable --since says what format it wants and exits 2."""
    fill_ledger(data, store)
    result = relay_cli(data, "ledger", "--since", since)
    assert result.returncode == 2
    assert "ISO date" in one_error_line(result)


@pytest.mark.parametrize("option, value", [
    ("--wait-timeout", "-1"), ("--wait-timeout", "0"), ("--wait-timeout", "nan"),
    ("--wait-timeout", "inf"), ("--wait-timeout", "soon"), ("--grace", "-5"),
    ("--grace", "nan"), ("--grace", "-inf"),
])
def test_serve_refuses_times_that_are_not_positive_finite_seconds(data: Path, option: str,
                                                                  value: str):
    """A negative, zero (except --grace), infinite or non-number time is a usage error."""
    result = relay_cli(data, "serve", "--port", "0", f"{option}={value}")
    assert result.returncode == 2
    assert "number of seconds" in one_error_line(result)


def test_serve_refuses_a_trusted_proxy_that_is_not_an_ip_address(data: Path):
    """--trusted-proxy takes IP addresses only: a host name is a usage error."""
    result = relay_cli(data, "serve", "--port", "0", "--trusted-proxy", "proxy.example.com")
    assert result.returncode == 2
    assert "not an IP address" in one_error_line(result)


def read_until(fd: int, text: bytes, seen: bytearray) -> None:
    """Read from a pty until `text` arrives (60 s limit so a bug cannot hang the suite)."""
    deadline = time.monotonic() + 60
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1024)
            assert chunk, f"terminal closed; output so far {bytes(seen)!r}"
            seen += chunk


@pytest.mark.parametrize(("second", "ok"), [("typed-password", True),
                                            ("other-password", False)])
def test_set_password_prompts_twice_on_a_terminal(data: Path, store: Callable, second: str,
                                                  ok: bool):
    """On a terminal the password is asked twice; two different answers are refused."""
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    controller, terminal = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "RELAY_PASSWORD"}
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "set-password", "david", "--data", str(data)],
        cwd=ROOT, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        read_until(controller, b"Password for david: ", seen)
        os.write(controller, b"typed-password\n")
        read_until(controller, b"Same password again: ", seen)
        os.write(controller, second.encode() + b"\n")
        assert process.wait(timeout=60) == (0 if ok else 1)
        read_until(controller, b"revoked" if ok else b"the two passwords differ", seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert b"typed-password" not in seen  # never echoed
    assert b"Traceback" not in seen
    accounts = store()
    assert (accounts.verify("david", "typed-password") is not None) is ok


def start_demo(data: Path) -> tuple[subprocess.Popen, list[str]]:
    """`python -m relay demo` on port 0 without a display; returns it once it printed the login."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "RELAY_PASSWORD")}
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "demo", "--host", "127.0.0.1", "--port", "0",
         "--data", str(data)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.strip().startswith("password:"):
            return process, lines
    process.wait(timeout=60)
    pytest.fail("demo printed no login:\n" + "".join(lines))


def stop_demo(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    process.stdout.close()
    return process.wait(timeout=60), rest


def test_demo_prints_a_working_login_and_a_fresh_one_each_run(data: Path, store: Callable):
    """demo creates the support person `demo`, prints its URL and password; a rerun changes it."""
    passwords = []
    for _ in range(2):
        process, lines = start_demo(data)
        try:
            passwords.append(lines[-1].split("password:")[1].strip())
        finally:
            code, rest = stop_demo(process)
        output = "".join(lines) + rest
        assert code == 0, output
        assert "Traceback" not in output
        assert "Relay listening on http://127.0.0.1:" in output
        assert "user:     demo" in output
        assert "no local agent" in output
    accounts = store()
    assert passwords[0] != passwords[1]
    assert accounts.verify("demo", passwords[0]) is None
    assert accounts.verify("demo", passwords[1]).name == "Demo Support"


def test_ledger_into_a_closed_pipe_exits_without_a_traceback(data: Path, store: Callable):
    """`ledger | head` style: the reader went away; no traceback on stderr."""
    fill_ledger(data, store)
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "ledger", "--csv", "--data", str(data)],
        cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True,
    )
    os.close(write_end)
    os.close(read_end)  # before the child can have written anything
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in stderr


def only_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed (stderr), checked to be exactly one."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "code", "words"), [
    (["serve", "--port", "99999"], 2, "not a port number (0-65535)"),
    (["serve", "--port", "-1"], 2, "not a port number"),
    (["serve", "--port", "http"], 2, "not a port number"),
    (["serve", "--cert", "/nonexistent/cert.pem", "--key", "/nonexistent/key.pem"], 2,
     "cannot read /nonexistent/cert.pem"),
    (["serve", "--downloads", "/nonexistent/folder"], 2, "/nonexistent/folder is not a folder"),
    (["serve", "--origin", "support.example.com"], 2, "is not an origin like"),
    (["serve", "--origin", "https://support.example.com/viewer"], 2, "is not an origin"),
    (["serve", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["list-technicians", "--data"], 2, "expected one argument"),
    (["no-such-command"], 2, "invalid choice"),
    (["add-technician", "anna"], 2, "--name"),
    (["ledger", "--since", "yesterday"], 2, "ISO date"),
])
def test_every_mistake_on_the_command_line_is_one_line(data: Path, args: list[str], code: int,
                                                        words: str):
    """Bad arguments: one line on stderr naming the problem (no usage block, no traceback)."""
    result = relay_cli(data, *args, password="long-enough")
    assert result.returncode == code
    assert words in only_line(result)
    assert not data.exists()  # nothing was created on the way to the error


def test_unusable_databases_are_one_line_each(tmp_path: Path):
    """A data folder whose database is a folder, or not SQLite: one line and exit 1, for
    reading and writing commands and for serve."""
    odd = tmp_path / "odd"
    (odd / "relay.sqlite3").mkdir(parents=True)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "relay.sqlite3").write_bytes(b"not a database" * 300)
    for data in (odd, corrupt):
        for args in (["list-technicians"], ["ledger"], ["disable-technician", "x"],
                     ["serve", "--port", "0"]):
            result = relay_cli(data, *args)
            assert result.returncode == 1, (args, result.stderr)
            assert only_line(result).startswith("error: "), (args, result.stderr)


def test_serving_a_new_or_empty_data_folder_warns_loudly(relay_factory, tmp_path: Path):
    """serve on a --data that does not exist yet creates it but says so, and that nobody
    can log in; once a support person exists, serving it again warns of neither."""
    data = tmp_path / "typo-data"
    first = relay_factory(data=data)
    first.add_technician("david", "David", "david-password")
    first.stop()
    output = "".join(first.output)
    assert f"WARNING: created a new, empty relay database in {data}" in output
    assert "WARNING: nobody can log in" in output
    assert "add-technician ID --name NAME" in output
    again = relay_factory(data=data)
    again.stop()
    assert "WARNING" not in "".join(again.output)


def test_serving_a_folder_with_only_disabled_support_people_warns(relay_factory,
                                                                  tmp_path: Path):
    """A data folder whose support people are all disabled is as unusable: said so."""
    data = tmp_path / "data"
    relay_cli(data, "add-technician", "david", "--name", "David", password="david-password")
    relay_cli(data, "disable-technician", "david")
    relay = relay_factory(data=data)
    relay.stop()
    output = "".join(relay.output)
    assert "WARNING: nobody can log in" in output
    assert "created a new" not in output


@pytest.mark.parametrize(("host", "cert", "warned"), [
    ("0.0.0.0", None, True), ("::", None, True), ("", None, True), ("192.0.2.10", None, True),
    ("support.example.com", None, True), ("0.0.0.0", Path("cert.pem"), False),
    ("127.0.0.1", None, False), ("127.8.9.10", None, False), ("::1", None, False),
    ("localhost", None, False),
])
def test_plain_http_off_the_local_machine_is_warned_about(host: str, cert: Path | None,
                                                         warned: bool,
                                                         capsys: pytest.CaptureFixture):
    """Without --cert, any address but loopback gets a warning that passwords and screens
    would cross the network unencrypted (checked without listening on the network)."""
    warn_plain_http(argparse.Namespace(host=host, cert=cert))
    err = capsys.readouterr().err
    assert ("unencrypted" in err) is warned
    assert err.count("\n") == int(warned)


def test_every_option_has_help_and_help_shows_the_defaults(data: Path):
    """Each subcommand's every argument has help text (hidden test tuning aside), and
    serve --help shows the port, host, data folder and timeouts by default."""
    parser = build_parser(with_server=True)
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subcommands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    result = relay_cli(data, "serve", "--help")
    assert result.returncode == 0
    for shown in ("(default: 8765)", "(default: 127.0.0.1)", "(default: data)",
                  "(default: 600.0)", "(default: 60.0)"):
        assert shown in " ".join(result.stdout.split()), shown


def test_serving_on_a_port_already_taken_is_one_line(data: Path):
    """Another program holds the port: one line naming the address, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = relay_cli(data, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING:")]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], result.stderr


# --- PostgreSQL (issue 16) -------------------------------------------------------------


def pg_cli(*args: str, url: str | None = None, password: str | None = None,
           ) -> subprocess.CompletedProcess:
    """`python -m relay ARGS` with the database URL in $RELAY_DATABASE_URL (if given)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELAY_PASSWORD", "RELAY_DATABASE_URL")}
    if url is not None:
        env["RELAY_DATABASE_URL"] = url
    if password is not None:
        env["RELAY_PASSWORD"] = password
    result = subprocess.run([sys.executable, "-m", "relay", *args], cwd=ROOT, env=env,
                            input="", capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_postgres_commands_share_one_database(postgres, tmp_path: Path):
    """migrate, add, list, disable and ledger all work on the URL from the environment."""
    url = postgres.fresh_url()
    migrated = pg_cli("migrate", url=url)
    assert migrated.returncode == 0, migrated.stderr
    from relay.pgstore import SCHEMA_VERSION  # asyncpg: only where PostgreSQL is tested

    assert f"schema version {SCHEMA_VERSION}" in migrated.stdout and "@" not in migrated.stdout
    added = pg_cli("add-technician", "david", "--name", "David", url=url, password="david-pw1")
    assert added.returncode == 0, added.stderr
    assert "david" in pg_cli("list-technicians", url=url).stdout
    assert pg_cli("disable-technician", "david", url=url).returncode == 0
    assert "no" in pg_cli("list-technicians", url=url).stdout.splitlines()[1]
    assert pg_cli("ledger", url=url).stdout.strip() == "No sessions."
    empty = pg_cli("list-technicians", "--data", str(tmp_path / "sqlite"))
    assert empty.returncode == 1 and "no relay data" in empty.stderr


def test_postgres_url_from_a_file(postgres, tmp_path: Path):
    """--database-file FILE: the URL is its first line."""
    url_file = tmp_path / "database-url"
    url_file.write_text(postgres.fresh_url() + "\n")
    result = pg_cli("migrate", "--database-file", str(url_file))
    assert result.returncode == 0, result.stderr


def test_a_password_on_the_command_line_is_refused():
    """--database with a password would show in ps: refused before connecting, one line."""
    result = pg_cli("list-technicians", "--database",
                    "postgresql://relay:secret@127.0.0.1:5432/relay")
    assert result.returncode == 2
    assert "RELAY_DATABASE_URL" in one_error_line(result) and "secret" not in result.stderr


def test_an_unreachable_database_is_one_line():
    """Nobody listening on the URL's port: exit 1 with one line, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = pg_cli("list-technicians", url=f"postgresql://postgres@127.0.0.1:{port}/relay")
    assert result.returncode == 1
    assert "cannot reach the database" in one_error_line(result)
