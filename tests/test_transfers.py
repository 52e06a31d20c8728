"""File transfer through a real relay (relay/transfers.py): forwarded with flow control, the
cap checked before any byte, every transfer in the ledger, in both stores."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

import protocol as p
from relay.location import Location
from relay.stores import open_store
from relay.transfers import TransferRow
from tests.helpers.relay import no_traceback
from tests.helpers.wire import active_session, closed_code, next_of, receive, run

T0 = 1_795_652_400.0  # 2026-11-26T00:20:00Z


def offer(session: str, data: bytes, name: str = "report.pdf", transfer: int = 7) -> str:
    return p.encode_control(p.FileOffer(session, transfer, name, len(data),
                                        hashlib.sha256(data).hexdigest()))


def chunks(data: bytes, transfer: int = 7) -> list[bytes]:
    return [p.encode_file_chunk(p.FileChunk(transfer, i, data[i:i + p.FILE_CHUNK_BYTES]))
            for i in range(0, len(data), p.FILE_CHUNK_BYTES)]


def send_json(message: p.Message) -> str:
    return p.encode_control(message)


async def receive_file(ws: Any, session: str, transfer: int, size: int) -> bytes:
    """The receiver's side, as agent_files and files.js do it: chunks in, acks out."""
    got = bytearray()
    acked = 0
    while len(got) < size:
        data = await receive(ws)
        if isinstance(data, bytes) and p.is_file_chunk(data):
            chunk = p.decode_file_chunk(data)
            assert chunk.transfer == transfer and chunk.offset == len(got)
            got += chunk.data
            if len(got) - acked >= p.FILE_ACK_BYTES or len(got) == size:
                acked = len(got)
                await ws.send(send_json(p.FileAck(session, transfer, acked)))
    return bytes(got)


async def send_file(ws: Any, data: bytes, transfer: int = 7, session: str = "") -> None:
    """The sender's side: chunks within the window, opened by the receiver's acks."""
    window = p.FileWindow(len(data))
    pending = chunks(data, transfer)
    while pending:
        while pending and len(p.decode_file_chunk(pending[0]).data) <= window.room():
            chunk = pending.pop(0)
            assert window.admit(p.decode_file_chunk(chunk).offset, len(chunk) - 16)
            await ws.send(chunk)
        if pending:
            ack = await next_of(ws, "file_ack")
            assert window.ack(ack["received"])


def transfers_csv(relay: Any) -> list[dict[str, str]]:
    relay.settle()
    result = relay.cli("ledger", "--transfers", "--csv")
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_a_file_goes_to_the_customer_whole_and_is_recorded(relay) -> None:
    """Offer, accept, chunks within the window, done: the agent has every byte, the viewer
    hears done, and the ledger has one "saved" row with the name, size and SHA-256."""
    data = bytes(range(256)) * 3000 + b"tail"  # 768 KiB: three windows' worth

    async def scenario() -> bytes:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, data))
        got = await next_of(agent, "file_offer")
        assert got["name"] == "report.pdf" and got["size"] == len(data)
        await agent.send(send_json(p.FileAnswer(session, 7, True)))
        assert (await next_of(viewer, "file_answer"))["accept"] is True
        sender = asyncio.ensure_future(send_file(viewer, data))
        received = await receive_file(agent, session, 7, len(data))
        await sender
        await agent.send(send_json(p.FileDone(session, 7, "report.pdf")))
        assert (await next_of(viewer, "file_done"))["saved_as"] == "report.pdf"
        return received

    assert run(scenario()) == data
    (row,) = transfers_csv(relay)
    assert (row["direction"], row["name"], row["size"], row["outcome"], row["sent_bytes"]) == (
        "to-customer", "report.pdf", str(len(data)), "saved", str(len(data)))
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    no_traceback(relay)


def test_a_file_from_the_customer_reaches_the_viewer(relay) -> None:
    """The same rules the other way: the agent offers, the viewer accepts and receives."""
    data = b"customer's log file\n" * 5000

    async def scenario() -> bytes:
        agent, viewer, session = await active_session(relay)
        await agent.send(offer(session, data, "log.txt", transfer=9))
        assert (await next_of(viewer, "file_offer"))["name"] == "log.txt"
        await viewer.send(send_json(p.FileAnswer(session, 9, True)))
        await next_of(agent, "file_answer")
        sender = asyncio.ensure_future(send_file(agent, data, transfer=9))
        received = await receive_file(viewer, session, 9, len(data))
        await sender
        await viewer.send(send_json(p.FileDone(session, 9, "log.txt")))
        await next_of(agent, "file_done")
        return received

    assert run(scenario()) == data
    (row,) = transfers_csv(relay)
    assert (row["direction"], row["outcome"]) == ("from-customer", "saved")


def test_a_file_over_the_cap_is_refused_before_any_byte(relay_factory) -> None:
    """With --max-file-mb 1 a 1 MiB + 1 byte offer is cancelled "file-too-big" at once: the
    agent never hears of it (its next message is the marker sent after), and it is recorded."""
    relay = relay_factory("--max-file-mb", "1")
    relay.add_technician("david", "David", "david-pw")

    async def scenario() -> None:
        agent, viewer, session = await active_session(relay)
        await viewer.send(p.encode_control(p.FileOffer(
            session, 7, "big.iso", 1024 * 1024 + 1, "0" * 64)))
        cancel = await next_of(viewer, "file_cancel")
        assert cancel["reason"] == "file-too-big"
        await viewer.send(send_json(p.Refresh(session, 0)))  # the marker
        assert (await next_of(agent, "file_offer", "refresh"))["type"] == "refresh"

    run(scenario())
    (row,) = transfers_csv(relay)
    assert (row["outcome"], row["sent_bytes"], row["name"]) == ("too-big", "0", "big.iso")


def test_declining_tells_the_sender_and_is_recorded(relay) -> None:
    """A declining answer reaches the sender; the row says "declined"."""
    async def scenario() -> None:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, b"x"))
        await next_of(agent, "file_offer")
        await agent.send(send_json(p.FileAnswer(session, 7, False)))
        assert (await next_of(viewer, "file_answer"))["accept"] is False

    run(scenario())
    assert [r["outcome"] for r in transfers_csv(relay)] == ["declined"]


def test_a_chunk_before_the_answer_closes_the_sender(relay) -> None:
    """Sending bytes the receiver has not accepted is a protocol error: the viewer is closed
    with 1008 and the agent receives no byte."""
    async def scenario() -> tuple:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, b"secret"))
        await next_of(agent, "file_offer")
        await viewer.send(chunks(b"secret")[0])
        return await closed_code(viewer)

    code, reason = run(scenario())
    assert code == p.CLOSE_POLICY and "before the receiver accepted" in reason
    no_traceback(relay)


def test_a_chunk_beyond_the_window_closes_the_sender(relay) -> None:
    """A sender that ignores the window is closed: the relay keeps no backlog for it."""
    data = bytes(p.FILE_WINDOW_BYTES + p.FILE_CHUNK_BYTES)

    async def scenario() -> tuple:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, data))
        await next_of(agent, "file_offer")
        await agent.send(send_json(p.FileAnswer(session, 7, True)))
        await next_of(viewer, "file_answer")
        for chunk in chunks(data):
            await viewer.send(chunk)
        return await closed_code(viewer)

    code, reason = run(scenario())
    assert code == p.CLOSE_POLICY and "window" in reason


def test_a_dropped_link_cancels_the_transfer(relay) -> None:
    """When the viewer's link goes, the agent is told "file-lost" and the row says "lost"."""
    async def scenario() -> None:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, b"abc"))
        await next_of(agent, "file_offer")
        await viewer.close()
        assert (await next_of(agent, "file_cancel"))["reason"] == "file-lost"

    run(scenario())
    assert [r["outcome"] for r in transfers_csv(relay)] == ["lost"]


def test_a_viewer_may_send_no_other_binary_message(relay) -> None:
    """A frame from a viewer is still refused (only chunks are allowed), with a clean close."""
    async def scenario() -> tuple:
        _, viewer, _ = await active_session(relay)
        await viewer.send(b"\x01" + bytes(40))
        return await closed_code(viewer)

    code, reason = run(scenario())
    assert code == p.CLOSE_POLICY and "file chunk" in reason
    no_traceback(relay)


def test_file_names_in_the_transfers_csv_are_defused(relay) -> None:
    """A file name that a spreadsheet would run as a formula is written with an apostrophe."""
    async def scenario() -> None:
        agent, viewer, session = await active_session(relay)
        await viewer.send(offer(session, b"x", name="=HYPERLINK(\"http://x\")"))
        await next_of(agent, "file_offer")
        await agent.send(send_json(p.FileAnswer(session, 7, False)))
        await next_of(viewer, "file_answer")

    run(scenario())
    (row,) = transfers_csv(relay)
    assert row["name"] == "'=HYPERLINK(\"http://x\")"


def test_ledger_transfers_prints_a_table(relay) -> None:
    """`ledger --transfers` without --csv prints a table, or says there are none."""
    result = relay.cli("ledger", "--transfers")
    assert result.returncode == 0 and result.stdout.strip() == "No file transfers."


# --- both stores ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return Location(path=tmp_path / "data")
    return Location(url=request.getfixturevalue("postgres").fresh_url())


def test_both_stores_keep_and_filter_transfer_rows(location: Location) -> None:
    """SQLite and PostgreSQL store the same rows and filter them by time and support person."""
    rows = [
        TransferRow("S" * 22, "david", 7, "to-customer", "a.pdf", 10, "a" * 64, "saved", 10,
                    T0, T0 + 2),
        TransferRow("S" * 22, "petur", 8, "from-customer", "b\u00e9.txt", 2**33, "b" * 64,
                    "lost", 65536, T0 + 10, T0 + 11.5),
    ]

    async def main() -> list:
        store = await open_store(location, "relay-a", create=True)
        try:
            for row in rows:
                await store.transfer(row)
            return [await store.transfers(), await store.transfers(technician="petur"),
                    await store.transfers(since=T0 + 1), await store.transfers(until=T0 + 1)]
        finally:
            await store.close()

    everything, petur, later, earlier = asyncio.run(main())
    assert everything == rows
    assert petur == later == [rows[1]]
    assert earlier == [rows[0]]


def test_transfer_rows_hold_what_the_protocol_allows(location: Location) -> None:
    """The largest size a file_offer may name and the longest name fit both stores."""
    row = TransferRow("S" * 22, "david", 2**31 - 1, "to-customer", "n" * p.MAX_FILE_NAME_CHARS,
                      p.MAX_FILE_SIZE_BYTES, "c" * 64, "too-big", 0, T0, T0)

    async def main() -> list:
        store = await open_store(location, "relay-a", create=True)
        try:
            await store.transfer(row)
            return await store.transfers()
        finally:
            await store.close()

    assert asyncio.run(main()) == [row]
