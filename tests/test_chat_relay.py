"""Chat and clipboard through a real relay, with a scripted customer and support person: who
gets them, the caps and rates refused in words with the link kept, control and pause
gating the clipboard, and the text never written to the ledger or the log."""

from __future__ import annotations

import asyncio

import protocol as p
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wire import run

MARKER = "zebra-quartz-7141"  # a text that appears nowhere else


async def agent_gets(agent, kind: type, where=lambda m: True) -> p.Message:
    return await asyncio.to_thread(agent.expect, kind, where)


def test_chat_goes_both_ways_between_the_agent_and_its_viewer(relay, agents):
    """A line from the viewer reaches the agent and one from the agent reaches the viewer,
    markup and line breaks untouched."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            await viewer.send(p.Chat(agent.session, "<b>Hello</b>\nline 2"))
            said = await agent_gets(agent, p.Chat)
            assert said == p.Chat(agent.session, "<b>Hello</b>\nline 2")
            agent.send(p.Chat(agent.session, "Hi David & co"))
            heard = await viewer.expect(p.Chat)
            assert heard.text == "Hi David & co"

    run(scenario())


def test_chat_works_while_paused_and_without_control(relay, agents):
    """Pause stops the screen and input, not the conversation."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            agent.send(p.Pause(True))
            await viewer.expect(p.Pause)
            await viewer.send(p.Chat(agent.session, "still there?"))
            assert (await agent_gets(agent, p.Chat)).text == "still there?"

    run(scenario())


def test_over_long_chat_from_the_viewer_is_refused_in_words_and_the_link_stays(relay, agents):
    """MAX_CHAT_CHARS + 1 gets the chat-too-long sentence; the next line still arrives."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            await viewer.send(p.Chat(agent.session, "x" * (p.MAX_CHAT_CHARS + 1)))
            error = await viewer.expect(p.Error)
            assert error == p.refusal("chat-too-long", "viewer")
            await viewer.send(p.Chat(agent.session, "short"))
            assert (await agent_gets(agent, p.Chat)).text == "short"  # nothing long came first

    run(scenario())


def test_over_long_chat_from_the_agent_is_refused_in_words_and_the_link_stays(relay, agents):
    """The agent is told in the customer's words; its next line reaches the viewer."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            agent.send(p.Chat(agent.session, "y" * (p.MAX_CHAT_CHARS + 1)))
            error = await agent_gets(agent, p.Error)
            assert error == p.refusal("chat-too-long", "agent")
            assert error.code in p.NOTICE_CODES
            agent.send(p.Chat(agent.session, "short"))
            assert (await viewer.expect(p.Chat)).text == "short"

    run(scenario())


def test_chat_faster_than_its_rate_is_refused_after_the_burst(relay, agents):
    """CHAT_BURST lines at once pass; the next is refused with chat-rate-limited."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            for i in range(p.CHAT_BURST + 1):
                await viewer.send(p.Chat(agent.session, f"line {i}"))
            assert await viewer.expect(p.Error) == p.refusal("chat-rate-limited", "viewer")
            for i in range(p.CHAT_BURST):
                assert (await agent_gets(agent, p.Chat)).text == f"line {i}"

    run(scenario())


def test_another_support_person_cannot_chat_into_a_session(relay, agents):
    """Petur naming David's session gets the usual refusal and the customer hears nothing."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as david:
            async with await ScriptedViewer.login(relay, "petur") as petur:
                await petur.send(p.Chat(agent.session, "from petur"))
                assert (await petur.expect(p.Error)).code == "no-such-session"
                await david.send(p.Chat(agent.session, "from david"))
                assert (await agent_gets(agent, p.Chat)).text == "from david"

    run(scenario())


def test_clipboard_from_the_viewer_needs_control_and_no_pause(relay, agents):
    """Without control: no-control; in control: delivered; paused: the paused sentence."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            await viewer.send(p.Clipboard(agent.session, "too early"))
            assert (await viewer.expect(p.Error)).code == "no-control"
            await viewer.take_control()
            await viewer.send(p.Clipboard(agent.session, "pasted"))
            assert (await agent_gets(agent, p.Clipboard)).text == "pasted"
            agent.send(p.Pause(True))
            await viewer.expect(p.Pause)
            await viewer.send(p.Clipboard(agent.session, "while paused"))
            assert (await viewer.expect(p.Error)).code == "paused"
            agent.send(p.Pause(False))
            await viewer.expect(p.Pause)
            await viewer.send(p.Chat(agent.session, "marker"))
            message = await agent_gets(agent, (p.Clipboard, p.Chat))
            assert message == p.Chat(agent.session, "marker")  # nothing from the pause came

    run(scenario())


def test_clipboard_from_the_agent_reaches_the_viewer_only_in_control(relay, agents):
    """A copy sent before control is dropped (the chat sent after it comes first); one sent
    in control arrives; an over-long one is refused to the agent in words."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.accepted(relay) as viewer:
            agent.send(p.Clipboard(agent.session, "before control"))
            agent.send(p.Chat(agent.session, "marker"))
            first = await viewer.expect((p.Clipboard, p.Chat))
            assert first == p.Chat(agent.session, "marker")
            await viewer.take_control()
            agent.send(p.Clipboard(agent.session, "user\tpass\r\n"))
            assert (await viewer.expect(p.Clipboard)).text == "user\tpass\r\n"
            agent.send(p.Clipboard(agent.session, "z" * (p.MAX_CLIPBOARD_CHARS + 1)))
            assert await agent_gets(agent, p.Error) == p.refusal("clipboard-too-long", "agent")

    run(scenario())


def test_over_long_clipboard_from_the_viewer_is_refused_and_the_link_stays(relay, agents):
    """MAX_CLIPBOARD_CHARS + 1 from the viewer: the sentence; the next paste goes through."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.in_control(relay) as viewer:
            await viewer.send(p.Clipboard(agent.session, "w" * (p.MAX_CLIPBOARD_CHARS + 1)))
            assert await viewer.expect(p.Error) == p.refusal("clipboard-too-long", "viewer")
            await viewer.send(p.Clipboard(agent.session, "ok"))
            assert (await agent_gets(agent, p.Clipboard)).text == "ok"

    run(scenario())


def test_chat_and_clipboard_text_is_never_stored_or_logged(relay, agents):
    """After a chat both ways and a clipboard both ways, the marker text is in no file of the
    relay's data folder and nowhere in its output."""
    agent = agents()

    async def scenario() -> None:
        async with await ScriptedViewer.in_control(relay) as viewer:
            await viewer.send(p.Chat(agent.session, f"chat {MARKER}"))
            await agent_gets(agent, p.Chat)
            agent.send(p.Chat(agent.session, f"reply {MARKER}"))
            await viewer.expect(p.Chat)
            await viewer.send(p.Clipboard(agent.session, f"paste {MARKER}"))
            await agent_gets(agent, p.Clipboard)
            agent.send(p.Clipboard(agent.session, f"copy {MARKER}"))
            await viewer.expect(p.Clipboard)
            await viewer.send(p.End(agent.session, "done"))
            await viewer.expect(p.Ended)

    run(scenario())
    relay.settle()
    files = [path for path in relay.data.rglob("*") if path.is_file()]
    assert files  # the ledger is there, and was looked at
    for path in files:
        assert MARKER.encode() not in path.read_bytes(), path
    assert MARKER not in "".join(relay.output)
