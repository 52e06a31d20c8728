"""The billing ledger: transitions, crash recovery and the CSV export."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.ledger import Ledger, LedgerRow, csv_cell, iso_utc, write_csv

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_652_400.0  # 2026-11-26T00:20:00Z
SESSION = "S" * 43
OTHER = "O" * 43


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relay.sqlite3"


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    with Ledger(db) as opened:
        yield opened


def request(ledger: Ledger, session: str = SESSION, at: float = T0,
            technician: str = "david") -> None:
    ledger.requested(session, technician, "FRONT-DESK", "anna", "203.0.113.7", at)


def test_iso_utc_is_whole_seconds_with_z():
    """Times print as ISO 8601 UTC with Z, fractions dropped, nothing for no time."""
    assert iso_utc(T0 + 0.9) == "2026-11-26T00:20:00Z"
    assert iso_utc(None) == ""


def test_full_lifecycle_is_recorded(ledger: Ledger):
    """Requested, accepted, control taken and released, ended: row and events agree."""
    request(ledger)
    ledger.accepted(SESSION, T0 + 30)
    ledger.control(SESSION, True, T0 + 40)
    ledger.control(SESSION, False, T0 + 50)
    ledger.ended(SESSION, "customer", "customer-closed", T0 + 630)
    (row,) = ledger.rows()
    assert row == LedgerRow(SESSION, "david", "FRONT-DESK", "anna", "203.0.113.7", T0,
                            T0 + 30, T0 + 630, "customer", "customer-closed", ref=1)
    assert row.billable_s == 600
    assert [kind for _, _, kind, _ in ledger.events(SESSION)] == [
        "accepted", "control-taken", "control-released", "ended"]


def test_end_is_idempotent_first_end_wins(ledger: Ledger):
    """A second end (the other side, or a late clean-up) changes nothing."""
    request(ledger)
    ledger.accepted(SESSION, T0 + 10)
    ledger.ended(SESSION, "technician", "technician-ended", T0 + 70)
    ledger.ended(SESSION, "relay", "agent-lost", T0 + 90)
    ledger.accepted(SESSION, T0 + 100)
    (row,) = ledger.rows()
    assert (row.ended_by, row.end_reason, row.ended_at) == (
        "technician", "technician-ended", T0 + 70)
    assert row.accepted_at == T0 + 10
    assert [kind for _, _, kind, _ in ledger.events(SESSION)].count("ended") == 1


def test_session_never_accepted_bills_nothing(ledger: Ledger):
    """Expired before acceptance: ended with zero billable seconds."""
    request(ledger)
    ledger.ended(SESSION, "relay", "expired", T0 + 600)
    (row,) = ledger.rows()
    assert row.accepted_at is None
    assert row.billable_s == 0


def test_open_session_bills_nothing_yet(ledger: Ledger):
    """A session still running has no end and no billable time."""
    request(ledger)
    ledger.accepted(SESSION, T0 + 5)
    (row,) = ledger.rows()
    assert row.ended_at is None
    assert row.billable_s == 0


def test_end_before_acceptance_time_is_clamped(ledger: Ledger):
    """An end time earlier than acceptance (clock step) never gives negative time."""
    request(ledger)
    ledger.accepted(SESSION, T0 + 50)
    ledger.ended(SESSION, "customer", "customer-closed", T0 + 20)
    (row,) = ledger.rows()
    assert row.ended_at == T0 + 50
    assert row.billable_s == 0


def test_bad_ended_by_and_duplicate_session_are_refused(ledger: Ledger):
    """ended_by must be customer, technician or relay; a session id is requested once."""
    request(ledger)
    with pytest.raises(ValueError, match="ended by"):
        ledger.ended(SESSION, "somebody", "why not", T0)
    with pytest.raises(ValueError, match="already in the ledger"):
        request(ledger)


def test_events_without_session_are_kept(ledger: Ledger):
    """Refusals and other facts are stored in order, with or without a session."""
    ledger.event(None, "refused", "petur tried to accept a session that is not theirs", T0)
    request(ledger)
    ledger.event(SESSION, "viewer-detached", "", T0 + 1)
    assert ledger.events() == [
        (T0, None, "refused", "petur tried to accept a session that is not theirs"),
        (T0 + 1, SESSION, "viewer-detached", ""),
    ]
    assert ledger.events(SESSION) == [(T0 + 1, SESSION, "viewer-detached", "")]


def test_rows_filter_by_since_and_technician(ledger: Ledger):
    """since keeps sessions requested at or after it; technician keeps theirs only."""
    request(ledger, SESSION, T0, "david")
    request(ledger, OTHER, T0 + 3600, "petur")
    assert [r.session for r in ledger.rows()] == [SESSION, OTHER]
    assert [r.session for r in ledger.rows(since=T0 + 1)] == [OTHER]
    assert [r.session for r in ledger.rows(since=T0)] == [SESSION, OTHER]
    assert [r.session for r in ledger.rows(technician="david")] == [SESSION]
    assert ledger.rows(since=T0 + 1, technician="david") == []


def test_recover_closes_open_sessions_at_the_last_heartbeat(ledger: Ledger, db: Path):
    """Open sessions end by relay, relay-restart, at the last heartbeat; ended ones stay."""
    request(ledger, SESSION, T0)
    ledger.accepted(SESSION, T0 + 10)
    request(ledger, OTHER, T0 + 20)
    ledger.ended(OTHER, "customer", "customer-closed", T0 + 25)
    ledger.heartbeat(T0 + 100)
    ledger.heartbeat(T0 + 105)
    with Ledger(db) as restarted:
        assert restarted.recover() == 1
        rows = {r.session: r for r in restarted.rows()}
        assert restarted.recover() == 0
    assert (rows[SESSION].ended_by, rows[SESSION].end_reason) == ("relay", "relay-restart")
    assert rows[SESSION].ended_at == T0 + 105
    assert rows[SESSION].billable_s == 95
    assert rows[OTHER].end_reason == "customer-closed"


def test_recover_never_ends_before_the_session_began(ledger: Ledger):
    """A session newer than the last heartbeat ends at its own acceptance/request time."""
    ledger.heartbeat(T0)
    request(ledger, SESSION, T0 + 2)
    ledger.accepted(SESSION, T0 + 3)
    request(ledger, OTHER, T0 + 4)
    assert ledger.recover() == 2
    rows = {r.session: r for r in ledger.rows()}
    assert rows[SESSION].ended_at == T0 + 3
    assert rows[OTHER].ended_at == T0 + 4
    assert rows[SESSION].billable_s == 0


CRASHING_RELAY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from relay.ledger import Ledger
    T0 = float(sys.argv[2])
    ledger = Ledger(Path(sys.argv[1]))
    ledger.requested("F" * 43, "david", "PC-1", "anna", "127.0.0.1", T0)
    ledger.accepted("F" * 43, T0 + 5)
    ledger.ended("F" * 43, "technician", "technician-ended", T0 + 65)
    ledger.requested("L" * 43, "david", "PC-2", "bob", "127.0.0.1", T0 + 70)
    ledger.accepted("L" * 43, T0 + 80)
    ledger.heartbeat(T0 + 200)
    print("written", flush=True)
    time.sleep(60)
""")


def test_sigkill_mid_session_loses_no_finished_row(db: Path):
    """A process killed with SIGKILL keeps its finished row; recover() closes the open one."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RELAY, str(db), repr(T0)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline() == "written\n"
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    with Ledger(db) as ledger:
        assert ledger.recover() == 1
        rows = {r.machine: r for r in ledger.rows()}
    assert (rows["PC-1"].end_reason, rows["PC-1"].billable_s) == ("technician-ended", 60)
    assert (rows["PC-2"].ended_by, rows["PC-2"].end_reason) == ("relay", "relay-restart")
    assert rows["PC-2"].billable_s == 120


def test_csv_format_is_exact(ledger: Ledger):
    """Header, ISO 8601 UTC times, billable seconds = ended - accepted as printed, empty cells,
    every cell quoted."""
    request(ledger, SESSION, T0)
    ledger.accepted(SESSION, T0 + 30.4)
    ledger.ended(SESSION, "customer", "customer-closed", T0 + 630.9)
    ledger.note(SESSION, "Ticket 4711", T0 + 700)
    request(ledger, OTHER, T0 + 7200)
    out = io.StringIO()
    write_csv(ledger.rows(), out)
    assert out.getvalue() == (
        '"ref","session","technician","machine","user","address","requested_at",'
        '"accepted_at","ended_at","paused_seconds","billable_seconds","ended_by","end_reason",'
        '"note"\n'
        f'"1","{SESSION}","david","FRONT-DESK","anna","203.0.113.7","2026-11-26T00:20:00Z",'
        '"2026-11-26T00:20:30Z","2026-11-26T00:30:30Z","0","600","customer","customer-closed",'
        '"Ticket 4711"\n'
        f'"2","{OTHER}","david","FRONT-DESK","anna","203.0.113.7","2026-11-26T02:20:00Z",'
        '"","","0","0","","",""\n'
    )


def test_csv_quotes_commas_and_defuses_spreadsheet_formulas(ledger: Ledger):
    """Hostile customer names are quoted properly and cannot become formulas."""
    ledger.requested(SESSION, "david", '=HYPERLINK("http://x","y")', "smith, anna",
                     "::1", T0)
    out = io.StringIO()
    write_csv(ledger.rows(), out)
    line = out.getvalue().splitlines()[1]
    assert line.startswith(
        f'"1","{SESSION}","david","\'=HYPERLINK(""http://x"",""y"")","smith, anna",')


@pytest.mark.parametrize(("name", "written"), [
    ("X;=1+1;x", "X;'=1+1;x"),  # LibreOffice with ";" as separator: three cells
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),  # DDE
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
    ("\t=1+1", "'\t'=1+1"),
    ("\r=1+1", "'\r'=1+1"),
    ("PC\t+1", "PC\t'+1"),
    ("a b =1", "a b '=1"),
    ('x"=1', 'x"\'=1'),
    ("Jean-Luc's PC", "Jean-Luc's PC"),
    ("2026-11-26T00:20:00Z", "2026-11-26T00:20:00Z"),
    (600, "600"),
    (None, ""),
])
def test_csv_cell_defuses_a_formula_at_the_start_and_after_any_separator(name, written):
    """A trigger (= + - @) at the start or after , ; space TAB CR LF or a quote gets an
    apostrophe, and so does a cell starting with TAB or CR; ordinary text is unchanged."""
    assert csv_cell(name) == written


FORMULA_TRIGGERS = ("=", "+", "-", "@")


def cells_as_split_by(text: str, separator: str) -> list[str]:
    """How a spreadsheet told `separator` might cut the file, quotes or not: at every
    separator and line break; quotes and blanks at a cell's start are dropped first."""
    return [cell.lstrip(' \t"') for cell in re.split(f"[{re.escape(separator)}\r\n]", text)]


HOSTILE_TEXT = st.text(alphabet=st.sampled_from(list('=+-@;,\t\r\n "\'|xX1')),
                       max_size=12) | st.text(max_size=12)


@given(names=st.lists(HOSTILE_TEXT, min_size=2, max_size=2))
@settings(max_examples=300, deadline=None)
def test_no_separator_turns_a_hostile_name_into_a_live_formula(names: list[str]):
    """Whatever the machine and user names, split at , ; TAB or space (quotes honoured or
    not), no piece of the CSV starts with a formula trigger."""
    out = io.StringIO()
    write_csv([LedgerRow(SESSION, "david", names[0], names[1], "::1", T0, T0 + 1, T0 + 9,
                         "customer", "customer-closed")], out)
    for separator in (",", ";", "\t", " "):
        for cell in cells_as_split_by(out.getvalue(), separator):
            assert not cell.startswith(FORMULA_TRIGGERS), (separator, cell)
        for row in csv.reader(io.StringIO(out.getvalue(), newline=""), delimiter=separator):
            for cell in row:
                assert not cell.lstrip(' \t"').startswith(FORMULA_TRIGGERS), (separator, cell)



# --- references and pauses (the customer's receipt) ------------------------------------


def test_each_session_gets_the_next_reference(ledger: Ledger):
    """References count up from 1 in the order sessions were requested."""
    assert ledger.requested(SESSION, "david", "PC", "anna", "::1", T0) == 1
    assert ledger.requested(OTHER, "petur", "PC", "bob", "::1", T0 + 1) == 2
    assert [r.ref for r in ledger.rows()] == [1, 2]


def test_paused_time_is_not_billed(ledger: Ledger):
    """Two pauses (30 s and 50 s) come off a 600 s session: 520 s billed."""
    request(ledger)
    ledger.accepted(SESSION, T0 + 10)
    ledger.paused(SESSION, True, T0 + 100)
    ledger.paused(SESSION, True, T0 + 110)  # already paused: the first start counts
    ledger.paused(SESSION, False, T0 + 130)
    ledger.paused(SESSION, True, T0 + 400)
    ledger.paused(SESSION, False, T0 + 450)
    ledger.ended(SESSION, "customer", "customer-closed", T0 + 610)
    (row,) = ledger.rows()
    assert (row.paused_s, row.billable_s, row.billable_whole_s) == (80, 520, 520)
    assert [kind for _, _, kind, _ in ledger.events(SESSION)] == [
        "accepted", "paused", "resumed", "paused", "resumed", "ended"]


def test_a_session_ending_while_paused_bills_up_to_the_pause(ledger: Ledger):
    """Ended 100 s into a pause: the pause runs to the end and is not billed."""
    request(ledger)
    ledger.accepted(SESSION, T0)
    ledger.paused(SESSION, True, T0 + 60)
    ledger.ended(SESSION, "technician", "technician-ended", T0 + 160)
    (row,) = ledger.rows()
    assert (row.paused_s, row.billable_whole_s) == (100, 60)


def test_a_pause_before_acceptance_or_after_the_end_changes_nothing(ledger: Ledger):
    """Only an accepted, open session can pause."""
    request(ledger)
    ledger.paused(SESSION, True, T0 + 5)
    ledger.accepted(SESSION, T0 + 10)
    ledger.ended(SESSION, "customer", "customer-closed", T0 + 70)
    ledger.paused(SESSION, True, T0 + 80)
    (row,) = ledger.rows()
    assert (row.paused_s, row.billable_whole_s) == (0, 60)
    assert "paused" not in [kind for _, _, kind, _ in ledger.events(SESSION)]


def test_recover_closes_an_open_pause_at_the_last_heartbeat(ledger: Ledger, db: Path):
    """A crash during a pause: the pause ends with the session at the heartbeat, unbilled."""
    request(ledger)
    ledger.accepted(SESSION, T0)
    ledger.paused(SESSION, True, T0 + 40)
    ledger.heartbeat(T0 + 100)
    with Ledger(db) as restarted:
        assert restarted.recover() == 1
        (row,) = restarted.rows()
    assert (row.paused_s, row.billable_whole_s) == (60, 40)


def test_an_older_ledger_gains_references_and_pauses_when_opened(db: Path):
    """A ledger written before references existed gets them in request order, and pauses."""
    import sqlite3

    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as old:
        old.execute("CREATE TABLE sessions (session TEXT PRIMARY KEY, technician TEXT NOT NULL,"
                    " machine TEXT NOT NULL, user TEXT NOT NULL, address TEXT NOT NULL,"
                    " requested_at REAL NOT NULL, accepted_at REAL, ended_at REAL,"
                    " ended_by TEXT, end_reason TEXT)")
        for i, session in enumerate((SESSION, OTHER)):
            old.execute("INSERT INTO sessions (session, technician, machine, user, address,"
                        " requested_at) VALUES (?, 'david', 'PC', 'anna', '::1', ?)",
                        (session, T0 + i))
    old.close()
    with Ledger(db) as ledger:
        assert [(r.session, r.ref, r.paused_s) for r in ledger.rows()] == [
            (SESSION, 1, 0), (OTHER, 2, 0)]
        assert ledger.requested("N" * 43, "david", "PC", "anna", "::1", T0 + 5) == 3
