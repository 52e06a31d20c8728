"""The customer's side of chat and the clipboard: the session core's rules (pure), the chat
area's view model (pure), and the real agent loop on fakes against a real relay."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest

import agent_session as core
import panel_chat
import protocol as p
from agent_session import ACCEPTED, IN_CONTROL, PAUSED, WAITING, ChatLine, Send, SetClipboard
from tests.helpers.agent import agent_reaches, start_agent_on_fakes
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wire import run

SESSION = "session-0123456789abcdef"
SCREENS = (p.Screen(0, 0, 320, 200), p.Screen(0, 0, 320, 200))
NOW = 100.0
REGISTERED = p.Registered(SESSION, "David", 600, "resume-0123456789abcdef", "482913")
ACCEPT = p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, "482913")
GRANT, RELEASE = p.Control(SESSION, True), p.Control(SESSION, False)
AT = datetime(2026, 12, 1, 14, 32)


def session_in(state: str) -> core.Session:
    """A session brought to ``state`` the way the relay would bring it there."""
    session = core.Session("david", "pc-1", "anna", {"KeyV"})
    session.connected(SCREENS)
    steps = {WAITING: [REGISTERED], ACCEPTED: [REGISTERED, ACCEPT],
             IN_CONTROL: [REGISTERED, ACCEPT, GRANT], PAUSED: [REGISTERED, ACCEPT, GRANT]}
    for message in steps[state]:
        session.receive(message, NOW)
    if state == PAUSED:
        session.pause(NOW)
    assert session.state == state
    return session


# --- the session core -------------------------------------------------------------------


@pytest.mark.parametrize("state", [ACCEPTED, IN_CONTROL, PAUSED])
def test_customer_chat_is_sent_and_shown_once_accepted(state):
    """Accepted, in control or paused: the line goes to the relay and into the chat area."""
    assert session_in(state).chat("  hello\n", NOW) == [
        Send(p.Chat(SESSION, "hello")), ChatLine("customer", "hello")]


def test_customer_chat_before_acceptance_or_empty_goes_nowhere():
    """Waiting, nobody to talk to; blank lines and control characters alone are dropped."""
    assert session_in(WAITING).chat("hello", NOW) == []
    assert session_in(ACCEPTED).chat(" \x07\x1b ", NOW) == []


def test_over_long_customer_chat_is_refused_in_the_customers_words():
    """Over MAX_CHAT_CHARS: a notice in the chat area, nothing sent."""
    actions = session_in(ACCEPTED).chat("x" * (p.MAX_CHAT_CHARS + 1), NOW)
    assert actions == [ChatLine("notice", p.customer_words("chat-too-long"))]


def test_customer_chat_faster_than_the_rate_is_refused_after_the_burst():
    """CHAT_BURST lines at once go; the next is a notice, not a message."""
    session = session_in(ACCEPTED)
    for i in range(p.CHAT_BURST):
        assert session.chat(f"line {i}", NOW)[0] == Send(p.Chat(SESSION, f"line {i}"))
    assert session.chat("one more", NOW) == [
        ChatLine("notice", p.customer_words("chat-rate-limited"))]


def test_support_persons_chat_is_shown_while_accepted_and_paused():
    """A chat from the relay becomes a line of the chat area, paused or not."""
    for state in (ACCEPTED, PAUSED):
        assert session_in(state).receive(p.Chat(SESSION, "<b>hi</b>"), NOW) == [
            ChatLine("technician", "<b>hi</b>")]


def test_pasted_clipboard_is_set_only_in_control():
    """In control: SetClipboard; accepted without control or paused: nothing."""
    message = p.Clipboard(SESSION, "pasted")
    assert session_in(IN_CONTROL).receive(message, NOW) == [SetClipboard("pasted")]
    assert session_in(ACCEPTED).receive(message, NOW) == []
    assert session_in(PAUSED).receive(message, NOW) == []


def test_clipboard_change_is_offered_only_in_control_and_said_to_the_customer():
    """In control: sent, and the chat area says it was shared; otherwise nothing."""
    session = session_in(IN_CONTROL)
    assert session.shares_clipboard
    assert session.clipboard_changed("user\tpass\r\n", NOW) == [
        Send(p.Clipboard(SESSION, "user\tpass\r\n")), ChatLine("clipboard", "user\tpass\r\n")]
    for state in (ACCEPTED, PAUSED):
        assert not session_in(state).shares_clipboard
        assert session_in(state).clipboard_changed("secret", NOW) == []


def test_over_long_clipboard_is_not_sent_and_the_customer_is_told():
    """Over MAX_CLIPBOARD_CHARS: the customer's notice, nothing sent."""
    actions = session_in(IN_CONTROL).clipboard_changed("z" * (p.MAX_CLIPBOARD_CHARS + 1), NOW)
    assert actions == [ChatLine("notice", p.customer_words("clipboard-too-long"))]


def test_a_notice_refusal_does_not_end_the_session():
    """error{chat-too-long} is shown as a notice; the session stays where it was."""
    session = session_in(IN_CONTROL)
    actions = session.receive(p.refusal("chat-too-long", "agent"), NOW)
    assert actions == [ChatLine("notice", p.customer_words("chat-too-long"))]
    assert session.state == IN_CONTROL


def test_control_epoch_counts_each_time_control_begins():
    """Granted, released, granted: two beginnings (the clipboard's watch starts afresh)."""
    session = session_in(ACCEPTED)
    assert session.control_epoch == 0
    session.receive(GRANT, NOW)
    session.receive(RELEASE, NOW)
    session.receive(GRANT, NOW)
    assert session.control_epoch == 2
    session.pause(NOW)
    session.unpause(NOW)
    assert session.control_epoch == 3


# --- the chat area's view model -----------------------------------------------------------


def test_chat_lines_read_with_time_and_who():
    """The support person by name, the customer as You, notices alone."""
    history = panel_chat.ChatHistory()
    history.add("technician", "<b>hi</b>", AT)
    history.add("customer", "hello", AT)
    history.add("notice", "That message is too long.", AT)
    view = panel_chat.chat_view(history, "David", True)
    assert view.lines == ("14:32 David: <b>hi</b>", "14:32 You: hello",
                          "14:32 That message is too long.")
    assert view.title == "Chat with David" and view.clipboard_note == ""


def test_shared_clipboard_shows_when_and_how_long_never_the_text():
    """The note and the line name the time and the length; the text is not kept."""
    history = panel_chat.ChatHistory()
    history.add("clipboard", "hunter2", AT)
    view = panel_chat.chat_view(history, "David", True)
    assert view.clipboard_note == "Your clipboard was last shared with David at 14:32."
    assert view.lines == ("14:32 Your clipboard was shared with David (7 characters).",)
    assert "hunter2" not in repr(history.entries)


def test_chat_history_keeps_the_newest_lines():
    """Past MAX_LINES the oldest go."""
    history = panel_chat.ChatHistory()
    for i in range(panel_chat.MAX_LINES + 5):
        history.add("customer", str(i), AT)
    view = panel_chat.chat_view(history, "David", True)
    assert len(view.lines) == panel_chat.MAX_LINES
    assert view.lines[0] == "14:32 You: 5"


def test_unknown_speaker_is_a_bug():
    """Only the four kinds of line exist."""
    with pytest.raises(ValueError, match="who must be one of"):
        panel_chat.ChatHistory().add("relay", "x", AT)


def test_log_panel_writes_each_new_line_once(caplog):
    """The log variant logs new lines only, also once the history is full."""
    caplog.set_level(logging.INFO, logger="agent.panel")
    history = panel_chat.ChatHistory()
    before = None
    for i in range(panel_chat.MAX_LINES + 2):
        history.add("customer", f"n{i}", AT)
        view = panel_chat.chat_view(history, "David", True)
        panel_chat.log_chat(before, view)
        before = view
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("chat:")]
    assert logged == [f"chat: 14:32 You: n{i}" for i in range(panel_chat.MAX_LINES + 2)]


# --- the agent loop on fakes, with a real relay -------------------------------------------


def test_agent_loop_sets_offers_and_chats(relay):
    """The real loop: a paste lands on its clipboard, a copy made in control reaches the
    viewer, a chat line goes both ways, and the support person's line is a tray balloon."""

    async def scenario() -> None:
        runner, task = start_agent_on_fakes(relay)
        try:
            async with await ScriptedViewer.in_control(relay) as viewer:
                await viewer.send(p.Clipboard(viewer.session, "from the support person"))
                await agent_reaches(
                    runner, lambda a: a.clipboard.text() == "from the support person")
                await agent_reaches(  # watching since control began: a copy now is news
                    runner, lambda a: a.clipboard_watching == a.session.control_epoch > 0)
                runner.clipboard.set_text("copied by the customer")
                offered = await viewer.expect(p.Clipboard)
                assert offered.text == "copied by the customer"
                runner.request_chat("hello David")
                assert (await viewer.expect(p.Chat)).text == "hello David"
                await viewer.send(p.Chat(viewer.session, "hi Anna"))
                await agent_reaches(runner, lambda a: "David: hi Anna" in a.tray.balloons)
        finally:
            runner.request_close()
            await task

    run(scenario())
