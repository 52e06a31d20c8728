"""Declining a caller and the session note in the real console (Debian's Chromium through
Playwright) against a real relay, with scripted customers: what the support person sees,
what reaches the customer, and what the ledger keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocol
from tests.helpers.relay import ledger_csv

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def screenshot(viewer, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    viewer.page.screenshot(path=str(ARTIFACTS / f"desk-{name}.png"))


def text_of(viewer, testid: str) -> str:
    return viewer.by(testid).text_content()


def wait_for_status(viewer, words: str) -> None:
    viewer.page.wait_for_function(
        "(w) => document.querySelector('[data-testid=note-status]').textContent === w",
        arg=words)


def test_decline_asks_first_and_then_the_customer_is_told(open_viewer, agents):
    """Decline opens a confirmation naming the computer as text; Esc keeps the caller, the
    confirm button declines: the customer gets `ended` (declined), the row goes, the page
    says so, and the ledger has the row unbilled."""
    viewer = open_viewer().signed_in()
    agent = agents(machine="<b>ACCOUNTS-7</b>")
    row = viewer.item(agent.session)
    row.get_by_test_id("decline").click()
    viewer.by("confirm-decline").wait_for(state="visible")
    assert "Decline the call from <b>ACCOUNTS-7</b>?" in viewer.page.text_content("#decline-title")
    screenshot(viewer, "decline-confirm")
    viewer.page.keyboard.press("Escape")
    viewer.by("confirm-decline").wait_for(state="hidden")
    assert row.is_visible()
    row.get_by_test_id("decline").click()
    viewer.by("confirm-decline").click()
    ended = agent.expect(protocol.Ended)
    assert (ended.by, ended.reason, ended.billable_s) == ("technician", "declined", 0)
    row.wait_for(state="detached")
    assert "You declined the call from <b>ACCOUNTS-7</b>." in viewer.page.text_content("#notice")
    screenshot(viewer, "declined")
    assert [m for m in viewer.sent if m["type"] == "decline"] == [
        {"type": "decline", "session": agent.session}]  # Esc sent nothing
    (line,) = ledger_csv(viewer.relay)
    assert (line["end_reason"], line["billable_seconds"]) == ("declined", "0")


def test_a_detached_session_offers_rejoin_but_no_decline(open_viewer, agents):
    """Only a waiting caller can be declined: a session whose tab was closed is listed to
    rejoin, without the Decline button."""
    first = open_viewer().signed_in()
    agent = agents()
    first.item(agent.session).get_by_test_id("decline").wait_for(state="visible")
    first.accept(agent)
    agent.expect(protocol.Accepted)
    first.page.close()  # the tab goes: the session is detached
    second = open_viewer().signed_in()
    row = second.item(agent.session)
    row.get_by_test_id("accept").filter(has_text="Rejoin").wait_for()
    assert row.get_by_test_id("decline").is_hidden()
    first.errors.clear()  # a closed page's socket error is not a script error


def test_the_note_is_saved_as_typed_and_can_be_finished_after_the_end(open_viewer, agents):
    """The note in the session's bar is saved while typing ("Saved"); after the end it moves
    above the queue, still editable; `ledger --csv` holds the final text."""
    viewer = open_viewer().signed_in()
    agent = agents(machine="FRONT-DESK")
    viewer.accept(agent)
    agent.send_screen((40, 90, 140))
    note = viewer.by("session-note")
    note.fill("Ticket 4711")
    wait_for_status(viewer, "Saved")
    screenshot(viewer, "note-in-session")
    viewer.by("end-session").click()
    viewer.by("confirm-end").click()
    agent.expect(protocol.Ended)
    viewer.by("queue").wait_for(state="visible")
    assert note.is_visible() and note.input_value() == "Ticket 4711"
    assert "FRONT-DESK" in viewer.page.text_content("#note-title")
    note.click()
    viewer.page.keyboard.press("End")
    viewer.page.keyboard.type("\nPrinter driver reinstalled")
    wait_for_status(viewer, "Saved")
    screenshot(viewer, "note-after-end")
    viewer.by("note-done").click()
    note.wait_for(state="hidden")
    (line,) = ledger_csv(viewer.relay)
    assert line["note"] == "Ticket 4711\nPrinter driver reinstalled"
    notes = [m["text"] for m in viewer.sent if m["type"] == "note"]
    assert notes[-1] == "Ticket 4711\nPrinter driver reinstalled"


def test_the_note_comes_back_after_a_reload(open_viewer, agents):
    """A reload rejoins the session, and the relay sends the note saved before."""
    viewer = open_viewer().signed_in()
    agent = agents()
    viewer.accept(agent)
    viewer.by("session-note").fill("Ticket 99: <script>not markup</script>")
    wait_for_status(viewer, "Saved")
    viewer.page.reload()
    viewer.by("screen").wait_for(state="visible")
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=session-note]').value !== ''")
    assert viewer.by("session-note").input_value() == "Ticket 99: <script>not markup</script>"
    assert viewer.page.locator("script:text('not markup')").count() == 0
