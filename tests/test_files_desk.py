"""file_window.FileDesk with the session core, a real folder and a fake FileWindow (the
project's own interface): input is blocked exactly while the question is up, and every way
a transfer ends leaves the window saying so and no partial file behind."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import agent_session as core
import file_window
import protocol as p

SESSION = "Fq3kZ8pL2mN7xR4tW9yB1c"
SCREENS = (p.Screen(0, 0, 800, 600), p.Screen(0, 0, 800, 600))


class FakeFileWindow:
    """Records what the window was told; the test answers for the customer."""

    def __init__(self) -> None:
        self.asked: tuple | None = None
        self.answer = self.cancel = None
        self.said: list[tuple] = []
        self.closed = False

    def ask(self, title, name, size, answer, cancel) -> None:
        self.asked, self.answer, self.cancel = (title, name, size), answer, cancel

    def progress(self, received: int, size: int) -> None:
        self.said.append(("progress", received, size))

    def saved(self, sentence: str, folder: Path) -> None:
        self.said.append(("saved", sentence, folder))

    def failed(self, sentence: str) -> None:
        self.said.append(("failed", sentence))

    def close(self) -> None:
        self.closed = True


def in_control() -> core.Session:
    session = core.Session("david", "PC", "anna", {"Enter", "KeyA"})
    session.connected(SCREENS)
    session.receive(p.Registered(SESSION, "David", 600, "R" * 22, "123456"), 0.0)
    session.receive(p.Accepted(SESSION, "David", "PC", "anna", SCREENS, "123456"), 0.0)
    session.receive(p.Control(SESSION, True), 0.0)
    assert session.state == core.IN_CONTROL
    return session


class Harness:
    def __init__(self, folder: Path) -> None:
        self.window = FakeFileWindow()
        self.folder = folder
        self.desk = file_window.FileDesk(lambda: self.window, lambda: folder)
        self.loop = asyncio.new_event_loop()
        self.ran: list = []
        self.desk.attach(self.loop, self.ran.extend)

    def answer(self, yes: bool) -> list:
        """The customer answers on the window's thread; the loop then carries it out."""
        self.window.answer(yes)
        self.loop.run_until_complete(asyncio.sleep(0))
        ran, self.ran = self.ran, []
        return ran

    def close(self) -> None:
        self.loop.close()


def sent(actions: list) -> list[p.Message]:
    return [a.message for a in actions if isinstance(a, core.Send)]


def key(down: bool) -> p.Key:
    return p.Key(SESSION, "Enter", "Enter", down)


def test_input_is_dropped_while_the_question_is_up_and_held_keys_are_released(
        tmp_path: Path) -> None:
    """A key held when the dialog appears is released; keys meanwhile are not injected; after
    the answer they are again."""
    h, session = Harness(tmp_path), in_control()
    assert session.receive(key(True), 0.0) == [core.Inject("key", ("Enter", True))]
    data = b"hello"
    actions = h.desk.receive(p.FileOffer(SESSION, 4, "a.txt", 5,
                                         hashlib.sha256(data).hexdigest()), session)
    assert actions == [core.Inject("key", ("Enter", False))]
    assert h.window.asked == ("David wants to send you a file", "a.txt", "5 bytes")
    assert session.receive(key(True), 0.0) == []
    assert sent(h.answer(True)) == [p.FileAnswer(SESSION, 4, True)]
    assert session.receive(key(True), 1.0) == [core.Inject("key", ("Enter", True))]
    out = sent(h.desk.chunk(p.encode_file_chunk(p.FileChunk(4, 0, data))))
    assert out == [p.FileAck(SESSION, 4, 5), p.FileDone(SESSION, 4, "a.txt")]
    assert h.window.said[-1] == ("saved", "Saved a.txt", tmp_path)
    assert (tmp_path / "a.txt").read_bytes() == data
    h.close()


def test_a_second_offer_while_one_is_open_is_refused_busy(tmp_path: Path) -> None:
    """One file at a time: the second sender is told file-busy, the first goes on."""
    h, session = Harness(tmp_path), in_control()
    h.desk.receive(p.FileOffer(SESSION, 1, "a", 1, "0" * 64), session)
    assert sent(h.desk.receive(p.FileOffer(SESSION, 2, "b", 1, "0" * 64), session)) == [
        p.FileCancel(SESSION, 2, "file-busy")]
    assert h.desk.incoming is not None and h.desk.incoming.offer.transfer == 1
    h.close()


def test_the_link_dropping_under_the_question_unblocks_input_and_says_so(
        tmp_path: Path) -> None:
    """The relay cancelled it with the link: the window says so, input is no longer held."""
    h, session = Harness(tmp_path), in_control()
    h.desk.receive(p.FileOffer(SESSION, 1, "a", 1, "0" * 64), session)
    assert session.asking
    h.desk.link_lost(session)
    assert not session.asking
    assert h.window.said[-1] == ("failed", p.customer_words("file-lost"))
    h.close()


def test_the_sender_cancelling_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    """file_cancel from the support person: the temporary file goes, the window says why."""
    h, session = Harness(tmp_path), in_control()
    h.desk.receive(p.FileOffer(SESSION, 1, "big.bin", 100_000, "0" * 64), session)
    h.answer(True)
    h.desk.chunk(p.encode_file_chunk(p.FileChunk(1, 0, bytes(1000))))
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    h.desk.receive(p.FileCancel(SESSION, 1, "file-cancelled"), session)
    assert list(tmp_path.iterdir()) == []
    assert h.window.said[-1] == ("failed", p.customer_words("file-cancelled"))
    h.close()


def test_a_file_before_acceptance_is_refused(tmp_path: Path) -> None:
    """A waiting session (nobody watching yet) takes no file."""
    h = Harness(tmp_path)
    session = core.Session("david", "PC", "anna", {"Enter"})
    session.connected(SCREENS)
    session.receive(p.Registered(SESSION, "David", 600, "R" * 22, "123456"), 0.0)
    assert sent(h.desk.receive(p.FileOffer(SESSION, 1, "a", 1, "0" * 64), session)) == [
        p.FileCancel(SESSION, 1, "file-busy")]
    assert h.window.asked is None
    h.close()


def test_the_log_window_declines_since_nobody_can_say_yes(tmp_path: Path) -> None:
    """Without a display the file is declined, never saved unasked."""
    session = in_control()
    loop = asyncio.new_event_loop()
    ran: list = []
    desk = file_window.FileDesk(file_window.LogFileWindow, lambda: tmp_path)
    desk.attach(loop, ran.extend)
    desk.receive(p.FileOffer(SESSION, 1, "a", 1, "0" * 64), session)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert sent(ran) == [p.FileAnswer(SESSION, 1, False)]
    assert not session.asking
    assert list(tmp_path.iterdir()) == []
