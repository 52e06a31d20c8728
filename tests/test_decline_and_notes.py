"""Declining a waiting customer and the session note (issue 13), against the relay as a
process: scripted agents and viewers on real websockets, and the ledger as `relay ledger
--csv` prints it."""

from __future__ import annotations

import asyncio
import json

import agent
import agent_config
import agent_ui
import protocol
from relay.ledger import csv_cell
from tests.fakes import FakeInput, FakePanel, FakeScreen, FakeTray
from tests.helpers.relay import ledger_csv, no_traceback
from tests.helpers.wire import (
    active_session,
    closed_code,
    message,
    next_of,
    run,
    start_agent,
    start_viewer,
)


def test_declining_a_waiting_customer_tells_them_and_bills_nothing(relay):
    """The customer gets `ended` (technician, declined, with a receipt reference) and a
    normal close; the queue empties; the ledger row is declined with 0 billable seconds."""

    async def scenario() -> tuple[str, dict]:
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        viewer, _, queue = await start_viewer(relay.ws_url)
        assert [e["session"] for e in queue["sessions"]] == [session]
        await viewer.send(message("decline", session=session))
        ended = await next_of(agent, "ended")
        assert (await closed_code(agent))[0] == protocol.CLOSE_NORMAL
        assert (await next_of(viewer, "queue"))["sessions"] == []
        await viewer.close()
        return session, ended

    session, ended = run(scenario())
    assert (ended["by"], ended["reason"], ended["billable_s"]) == ("technician", "declined", 0)
    assert ended["ref"] >= 1
    assert "could not take your call" in protocol.customer_words(ended["reason"])
    (row,) = ledger_csv(relay)
    assert (row["session"], row["ended_by"], row["end_reason"], row["billable_seconds"],
            row["accepted_at"]) == (session, "technician", "declined", "0", "")


def test_the_declined_customers_panel_says_so_in_plain_words_and_the_program_exits(relay):
    """The real agent loop (fake screen, input, tray and panel) declined on a real relay:
    its panel ends with the receipt and the sentence, and the program exits normally."""
    controls = agent_ui.Controls()
    window = FakePanel(controls.panel_actions())
    tray = FakeTray()
    runner = controls.agent = agent.Agent(
        url=agent_config.agent_url(relay.ws_url), technician="david", screen=FakeScreen(),
        input=FakeInput(), tray=tray, machine="pc-1", user="anna", window=window,
        company="Acme IT", person="David")
    tray.on_close, tray.on_pause = runner.request_close, runner.request_pause

    async def scenario() -> agent.Outcome:
        running = asyncio.ensure_future(runner.run())
        viewer, _, queue = await start_viewer(relay.ws_url)
        while not queue["sessions"]:
            queue = await next_of(viewer, "queue")
        await viewer.send(message("decline", session=queue["sessions"][0]["session"]))
        outcome = await asyncio.wait_for(running, 30)
        await viewer.close()
        return outcome

    outcome = run(scenario())
    assert outcome == agent.Outcome(agent.EXIT_OK)
    assert window.states[-1] == "ended"
    assert window.last.detail == protocol.customer_words("declined")
    assert window.last.detail == ("Your support person could not take your call now. "
                                  "Please call them again.")
    assert "Session with David ended" in window.last.headline
    assert window.last.dismiss_after_s is not None  # like any other end: the receipt closes


def test_a_stranger_cannot_decline_and_the_customer_still_waits(relay):
    """Petur's decline of David's caller gets the one refusal, with its sentence; David can
    still accept the caller afterwards (the round trip that proves nothing ended)."""

    async def scenario() -> dict:
        agent, registered = await start_agent(relay.ws_url)
        session = registered["session"]
        petur, _, _ = await start_viewer(relay.ws_url, "petur")
        await petur.send(message("decline", session=session))
        refusal = await next_of(petur, "error")
        david, _, _ = await start_viewer(relay.ws_url)
        await david.send(message("accept", session=session))
        assert (await next_of(agent, "accepted"))["session"] == session
        for ws in (petur, david, agent):
            await ws.close()
        return refusal

    refusal = run(scenario())
    assert refusal == {"type": "error", "code": "no-such-session",
                       "message": protocol.technician_words("no-such-session")}


def test_decline_of_an_accepted_or_unknown_session_is_refused_with_a_sentence(relay):
    """An accepted session gets not-waiting and goes on (control still granted after); a
    made-up id gets no-such-session; the viewer's connection stays open for both."""

    async def scenario() -> tuple[dict, dict]:
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("decline", session=session))
        started = await next_of(viewer, "error")
        await viewer.send(message("decline", session="U" * 22))
        unknown = await next_of(viewer, "error")
        await viewer.send(message("take_control", session=session))
        assert (await next_of(agent, "control"))["granted"] is True
        await agent.close()
        await viewer.close()
        return started, unknown

    started, unknown = run(scenario())
    assert (started["code"], started["message"]) == (
        "not-waiting", protocol.technician_words("not-waiting"))
    assert unknown["code"] == "no-such-session"
    no_traceback(relay)


def test_a_note_is_saved_during_and_after_the_session_and_exported_csv_safe(relay):
    """A note during the session, then its edit after the end, are both answered `noted`;
    `ledger --csv` holds the last one, multi-line and with a formula defused."""
    last = '=HYPERLINK("http://x","ok"), Ticket 4711\n-printer driver reinstalled; "done"'

    async def scenario() -> str:
        agent, viewer, session = await active_session(relay)
        await viewer.send(message("note", session=session, text="Ticket 4711"))
        assert await next_of(viewer, "noted") == {"type": "noted", "session": session}
        await viewer.send(message("end", session=session, reason=""))
        await next_of(viewer, "ended")
        await viewer.send(message("note", session=session, text=last))
        assert await next_of(viewer, "noted") == {"type": "noted", "session": session}
        await agent.close()
        await viewer.close()
        return session

    session = run(scenario())
    (row,) = ledger_csv(relay)
    assert row["session"] == session
    assert row["note"] == csv_cell(last)
    assert row["note"].startswith("'=HYPERLINK") and "\n'-printer" in row["note"]


def test_a_note_for_another_persons_session_is_refused_and_not_saved(relay):
    """Petur's note on David's session gets no-such-session; the ledger's note stays empty."""

    async def scenario() -> dict:
        agent, david, session = await active_session(relay)
        petur, _, _ = await start_viewer(relay.ws_url, "petur")
        await petur.send(message("note", session=session, text="not yours"))
        refusal = await next_of(petur, "error")
        for ws in (agent, david, petur):
            await ws.close()
        return refusal

    assert run(scenario())["code"] == "no-such-session"
    assert [row["note"] for row in ledger_csv(relay)] == [""]


def test_an_oversize_note_closes_the_viewer_cleanly_with_the_reason(relay):
    """A note over MAX_NOTE_CHARS (the page never sends one: its field has a maxlength) is a
    protocol error: close 1008 saying why; nothing is saved and the relay prints no
    traceback."""

    async def scenario() -> tuple[int | None, str | None]:
        agent, viewer, session = await active_session(relay)
        text = "n" * (protocol.MAX_NOTE_CHARS + 1)
        await viewer.send(json.dumps({"type": "note", "session": session, "text": text}))
        closed = await closed_code(viewer)
        await agent.close()
        return closed

    code, reason = run(scenario())
    assert code == protocol.CLOSE_POLICY
    assert f"longer than {protocol.MAX_NOTE_CHARS} characters" in reason
    assert [row["note"] for row in ledger_csv(relay)] == [""]
    no_traceback(relay)
