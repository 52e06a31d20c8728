"""The viewer's side of the clipboard and chat in Chromium, against a real relay and a
scripted customer: what a paste sends and in which order, the over-cap refusals, the
customer's clipboard offered as text, and the chat pane's unread mark."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocol

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def controlling(open_viewer, agents):
    agent = agents()
    viewer = open_viewer().signed_in()
    viewer.accept(agent)
    viewer.take_control(agent)
    viewer.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                     origin=viewer.relay.http_url)
    return viewer, agent


def paste(viewer, text: str) -> None:
    viewer.page.evaluate("(text) => navigator.clipboard.writeText(text)", text)
    viewer.by("screen").focus()
    viewer.page.keyboard.press("Control+KeyV")


def test_paste_sends_the_clipboard_then_the_keys_and_leaves_nothing_held(open_viewer, agents):
    """Ctrl+V: Control down, the clipboard text, V down, V up, Control up, in that order."""
    viewer, agent = controlling(open_viewer, agents)
    paste(viewer, "pasted <b>text</b>\nline 2")
    seen = []
    while not (seen and isinstance(seen[-1], protocol.Key) and seen[-1].code == "ControlLeft"
               and not seen[-1].down):
        seen.append(agent.expect((protocol.Key, protocol.Clipboard)))
    assert [(type(m).__name__, getattr(m, "code", ""), getattr(m, "down", None))
            for m in seen] == [("Key", "ControlLeft", True), ("Clipboard", "", None),
                               ("Key", "KeyV", True), ("Key", "KeyV", False),
                               ("Key", "ControlLeft", False)]
    assert seen[1].text == "pasted <b>text</b>\nline 2"


def test_paste_over_the_cap_is_refused_in_words_and_sends_neither(open_viewer, agents):
    """Too long for the customer's clipboard: the sentence, no clipboard and no V."""
    viewer, agent = controlling(open_viewer, agents)
    paste(viewer, "x" * (protocol.MAX_CLIPBOARD_CHARS + 1))
    viewer.page.get_by_text(protocol.technician_words("clipboard-too-long")).wait_for()
    viewer.page.keyboard.press("KeyA")  # the marker: what came before it is all there is
    seen = agent.inputs_until("KeyA")
    assert [m.code for m in seen if isinstance(m, protocol.Key) and m.down] == [
        "ControlLeft", "KeyA"]
    assert not any(isinstance(m, protocol.Clipboard) for m in agent.received)


def test_customers_clipboard_is_offered_as_text_and_copy_fills_the_browsers(open_viewer,
                                                                            agents):
    """A copy from the customer shows in remote-clipboard as text; Copy writes it."""
    viewer, agent = controlling(open_viewer, agents)
    text = '<img src=x onerror="document.title=1">\tpass'
    agent.send(protocol.Clipboard(agent.session, text))
    viewer.by("remote-clipboard").wait_for(state="visible")
    assert viewer.page.locator("#remote-clipboard-text").text_content() == text
    assert viewer.page.locator("#remote-clipboard img").count() == 0
    viewer.by("remote-clipboard-copy").click()
    assert viewer.page.evaluate("() => navigator.clipboard.readText()") == text
    ARTIFACTS.mkdir(exist_ok=True)
    viewer.page.screenshot(path=str(ARTIFACTS / "viewer-remote-clipboard.png"))
    assert not viewer.errors, viewer.errors


def test_chat_pane_marks_unread_lines_while_hidden_and_refuses_long_ones(open_viewer, agents):
    """Hidden pane: the count of customer lines; shown: cleared. Over the cap: the sentence
    and nothing sent (the next line is the first the customer gets)."""
    agent = agents()
    viewer = open_viewer().signed_in()
    viewer.accept(agent)
    viewer.by("chat-toggle").click()
    agent.send(protocol.Chat(agent.session, "first"))
    agent.send(protocol.Chat(agent.session, "<script>second</script>"))
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=chat-unread]').textContent === '2'")
    viewer.by("chat-toggle").click()
    assert viewer.by("chat-unread").is_hidden()
    assert viewer.by("chat-log").locator("li").last.text_content().endswith(
        "<script>second</script>")
    viewer.by("chat-input").fill("y" * (protocol.MAX_CHAT_CHARS + 1))
    viewer.by("chat-send").click()
    viewer.page.get_by_text(protocol.technician_words("chat-too-long")).wait_for()
    viewer.by("chat-input").fill("short one")
    viewer.by("chat-input").press("Enter")
    assert agent.expect(protocol.Chat).text == "short one"
    assert not viewer.errors, viewer.errors
