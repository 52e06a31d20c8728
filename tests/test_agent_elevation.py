"""The administrator prompt and the restart as administrator, on the agent's side: the
session core's rules (pure), agent_elevation's helpers, and the real agent loop against the
real relay with a scripted support person (the prompt through FakeDesktopWatch, the
customer's No through DecliningElevation). The hand-off itself runs end to end with two
real agent processes (SpawnElevation: the same program started again, as Windows' "runas"
would, only without the new rights)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import agent
import agent_config
import agent_elevation
import agent_session as core
import protocol as p
from tests.fakes import FakeInput, FakeScreen, FakeTray
from tests.helpers.desktop import until
from tests.helpers.relay import ROOT
from tests.helpers.viewer import ScriptedViewer

SESSION = "Fq3kZ8pL2mN7xR4tW9yB1c"
RESUME = "rSm-8Kq2Lp9Xz4Vn7Tb1Wc6Hd3Jf5Gy0"
SECRET = "hX7-Qm2Lp9Xz4Vn7Tb1Wc6"
SCREENS = (p.Screen(0, 0, 320, 200), p.Screen(0, 0, 320, 200))
WAIT_S = 60


def in_control(**session_args) -> core.Session:
    """A session core accepted by David, who holds control."""
    session = core.Session("david", "pc-1", "anna", core.KEY_TABLE, **session_args)
    session.connected(SCREENS)
    session.receive(p.Registered(SESSION, "David", 600, RESUME, "123456"), 1.0)
    session.receive(p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, "123456"), 2.0)
    session.receive(p.Control(SESSION, True), 3.0)
    assert session.state == core.IN_CONTROL
    return session


def sent(actions: list) -> list[p.Message]:
    return [a.message for a in actions if isinstance(a, core.Send)]


# --- the session core -----------------------------------------------------------------------


def test_prompt_releases_held_keys_stops_capture_and_tells_the_relay() -> None:
    """An administrator prompt: keys held are let go, capture stops, then `desktop` goes."""
    session = in_control()
    session.receive(p.Key(SESSION, "ShiftLeft", "Shift", True), 4.0)
    actions = session.desktop(True, 5.0)
    assert actions == [core.Inject("key", ("ShiftLeft", False)), core.StopStream(),
                       core.Send(p.Desktop(True))]


def test_no_input_is_injected_while_the_prompt_is_up() -> None:
    """The agent refuses input during the prompt itself (the relay drops it too)."""
    session = in_control()
    session.desktop(True, 5.0)
    assert session.receive(p.Key(SESSION, "KeyA", "a", True), 6.0) == []
    assert session.receive(p.PointerMove(SESSION, 1, 5, 5), 6.0) == []
    assert session.receive(p.Refresh(SESSION, 1), 6.0) == []  # nothing to capture either
    assert session.desktop(False, 7.0) == [core.Send(p.Desktop(False)), core.Stream(full=True)]
    assert session.receive(p.Key(SESSION, "KeyA", "a", True), 8.0) == [
        core.Inject("key", ("KeyA", True))]


def test_a_prompt_seen_before_acceptance_is_told_with_the_acceptance() -> None:
    """While waiting nothing is sent; `accepted` is answered with desktop{secure}, and no
    capture starts."""
    session = core.Session("david", "pc-1", "anna", core.KEY_TABLE)
    session.connected(SCREENS)
    session.receive(p.Registered(SESSION, "David", 600, RESUME, "123456"), 1.0)
    assert session.desktop(True, 1.5) == []
    actions = session.receive(p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS,
                                         "123456"), 2.0)
    assert core.Send(p.Desktop(True)) in actions
    assert not [a for a in actions if isinstance(a, core.Stream)]


def test_the_support_persons_request_asks_the_customer() -> None:
    """`elevate` is answered with elevation{asked} and a question to the customer; their No
    becomes elevation{declined} and the session goes on in control."""
    session = in_control()
    assert session.receive(p.Elevate(SESSION), 4.0) == [
        core.Send(p.Elevation("asked")), core.AskElevation("David")]
    assert sent(session.elevation_result("declined", 5.0)) == [p.Elevation("declined")]
    assert session.state == core.IN_CONTROL


def test_yes_asks_for_a_secret_and_the_secret_starts_the_elevated_copy() -> None:
    """elevate() sends `handoff` once; the relay's secret becomes StartElevated."""
    session = in_control()
    assert sent(session.elevate(4.0)) == [p.Handoff()]
    assert session.elevate(4.5) == []  # one restart at a time
    assert session.receive(p.HandoffSecret(SECRET, 60), 5.0) == [core.StartElevated(SECRET)]
    assert session.elevation_result("started", 6.0) == []


def test_a_secret_nobody_asked_for_starts_nothing() -> None:
    """A `handoff_secret` out of the blue is ignored."""
    session = in_control()
    assert session.receive(p.HandoffSecret(SECRET, 60), 5.0) == []


def test_the_old_copy_bows_out_quietly_when_the_new_one_takes_over() -> None:
    """A link closed with CLOSE_HANDED_OFF ends this copy normally, without reconnecting
    (the outcome says why, so the program leaves without a receipt)."""
    session = in_control()
    actions = session.link_lost(p.CLOSE_HANDED_OFF, "handed over", 7.0)
    ends = [a for a in actions if isinstance(a, core.End)]
    assert ends and ends[0].outcome == core.Outcome(core.EXIT_OK, core.HANDED_OFF)
    assert not [a for a in actions if isinstance(a, core.Reconnect)]
    assert session.view.sentence == core.HANDED_OFF


def test_the_elevated_copy_says_hello_with_its_secret_once() -> None:
    """The first hello carries the hand-off secret; after `registered`, it resumes instead."""
    session = core.Session("david", "pc-1", "anna", core.KEY_TABLE, handoff=SECRET)
    hello = sent(session.connected(SCREENS))[0]
    assert (hello.handoff, hello.resume) == (SECRET, "")
    session.receive(p.Registered(SESSION, "David", 600, RESUME, "123456"), 1.0)
    session.link_lost(p.CLOSE_GOING_AWAY, "", 2.0)
    again = sent(session.connected(SCREENS))[0]
    assert (again.handoff, again.resume) == ("", RESUME)


def test_the_elevated_copy_keeps_the_sessions_pause() -> None:
    """Taking over a paused session stays paused (the new copy has no wish of its own)."""
    session = core.Session("david", "pc-1", "anna", core.KEY_TABLE, handoff=SECRET)
    session.connected(SCREENS)
    session.receive(p.Registered(SESSION, "David", 600, RESUME, "123456"), 1.0)
    actions = session.receive(p.Accepted(SESSION, "David", "pc-1", "anna", SCREENS, "123456",
                                         30.0, True), 2.0)
    assert session.state == core.PAUSED
    assert not sent(actions) and not [a for a in actions if isinstance(a, core.Stream)]


# --- agent_elevation's helpers --------------------------------------------------------------


@pytest.mark.parametrize(("name", "secure"), [
    ("Default", False), ("default", False), ("Winlogon", True), ("Screen-saver", True),
    (None, True)])
def test_only_the_users_default_desktop_is_not_secure(name: str | None, secure: bool) -> None:
    """"Winlogon" (UAC, Ctrl+Alt+Del), any other desktop, or none we may open: a prompt."""
    assert agent_elevation.desktop_is_secure(name) is secure


def test_the_secret_file_is_private_and_removed_when_read() -> None:
    """The file holds the secret, only its owner may read it, and reading removes it."""
    path = agent_elevation.write_secret(SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name.startswith(agent_elevation.HANDOFF_PREFIX)
    assert agent_elevation.read_secret(path) == SECRET
    assert not path.exists()


def test_a_file_without_a_secret_is_refused_and_removed(tmp_path: Path) -> None:
    """Garbage in the hand-off file is an error with a sentence, and the file is gone."""
    path = tmp_path / "handoff"
    path.write_text("not a secret at all")
    with pytest.raises(agent_elevation.HandoffError, match="does not hold a secret"):
        agent_elevation.read_secret(path)
    assert not path.exists()
    with pytest.raises(agent_elevation.HandoffError, match="cannot be read"):
        agent_elevation.read_secret(path)


def test_writing_what_is_not_a_secret_is_our_bug() -> None:
    """Only a protocol-shaped secret is ever written."""
    with pytest.raises(ValueError):
        agent_elevation.write_secret("a b")


def test_the_desktop_watch_and_the_elevation_are_chosen_by_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SPOTLIGHT_DESKTOP=fake:PATH follows PATH; Linux has no prompt by default;
    SPOTLIGHT_ELEVATION picks spawn or decline, and Linux elevates to nothing."""
    monkeypatch.delenv("SPOTLIGHT_DESKTOP", raising=False)
    monkeypatch.delenv("SPOTLIGHT_ELEVATION", raising=False)
    assert isinstance(agent_elevation.make_desktop_watch(), agent_elevation.NoDesktopWatch)
    assert agent_elevation.make_elevation().start(SECRET, []) == agent_elevation.FAILED
    flag = tmp_path / "prompt"
    monkeypatch.setenv("SPOTLIGHT_DESKTOP", f"fake:{flag}")
    watch = agent_elevation.make_desktop_watch()
    assert not watch.secure()
    flag.touch()
    assert watch.secure()
    monkeypatch.setenv("SPOTLIGHT_ELEVATION", "decline")
    assert not agent_elevation.make_elevation().confirm("David")
    monkeypatch.setenv("SPOTLIGHT_ELEVATION", "spawn")
    assert isinstance(agent_elevation.make_elevation(), agent_elevation.SpawnElevation)


# --- the real agent loop and relay ----------------------------------------------------------


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


def agent_on_fakes(relay, tmp_path: Path, **args) -> tuple[agent.Agent, FakeInput]:
    user_input = FakeInput()
    runner = agent.Agent(url=agent_config.agent_url(relay.ws_url), technician="david",
                         screen=FakeScreen(), input=user_input, tray=FakeTray(),
                         machine="pc-1", user="anna", **args)
    return runner, user_input


def test_viewer_is_told_of_the_prompt_and_no_input_reaches_the_customer(
        relay, tmp_path: Path) -> None:
    """The fake watch opens a prompt: the viewer gets desktop{secure} and its key is not
    injected; once the prompt closes the next key is (the marker that the first was not)."""
    flag = tmp_path / "prompt"

    async def scenario() -> None:
        runner, user_input = agent_on_fakes(
            relay, tmp_path, desktop=agent_elevation.FakeDesktopWatch(str(flag)))
        task = asyncio.ensure_future(runner.run())
        async with await ScriptedViewer.in_control(relay) as viewer:
            await prompt_scenario(viewer, flag, user_input)
        runner.request_close()
        await task

    run(scenario())


async def prompt_scenario(viewer: ScriptedViewer, flag: Path, user_input: FakeInput) -> None:
    await viewer.expect(p.Frame)
    flag.touch()
    await viewer.expect(p.Desktop, lambda m: m.secure)
    await viewer.type_keys(("KeyA", "a"))
    refusal = await viewer.expect(p.Error)
    assert refusal.code == "secure-desktop"
    assert refusal.message == ("The customer sees a Windows administrator prompt. "
                               "Ask them to click Yes or No.")
    flag.unlink()
    await viewer.expect(p.Desktop, lambda m: not m.secure)
    await viewer.expect(p.Frame)  # a whole image again
    await viewer.type_keys(("KeyB", "b"))
    await until(lambda: ("key", "KeyB", True) in user_input.events, WAIT_S)
    assert not [e for e in user_input.events if e[:2] == ("key", "KeyA")]


def test_the_customers_no_keeps_the_session_going(relay, tmp_path: Path) -> None:
    """The support person asks; the customer says No (the fake elevation): the viewer reads
    elevation{asked} then {declined}, and control still works."""

    async def scenario() -> None:
        runner, user_input = agent_on_fakes(relay, tmp_path,
                                            elevation=agent_elevation.DecliningElevation())
        task = asyncio.ensure_future(runner.run())
        async with await ScriptedViewer.in_control(relay) as viewer:
            await viewer.send(p.Elevate(viewer.session))
            await viewer.expect(p.Elevation, lambda m: m.state == "asked")
            await viewer.expect(p.Elevation, lambda m: m.state == "declined")
            await viewer.type_keys(("KeyC", "c"))
            await until(lambda: ("key", "KeyC", True) in user_input.events, WAIT_S)
        assert runner.session.state == core.IN_CONTROL
        runner.request_close()
        await task

    run(scenario())


def _copies_of(relay) -> list[int]:
    """Pids of agent copies started with a hand-off file for this relay."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--handoff-file" in line and relay.ws_url.encode() in line:
                pids.append(int(entry.name))
    return pids


def test_handoff_end_to_end_keeps_the_session_the_viewer_and_control(
        relay, tmp_path: Path) -> None:
    """Two real agent processes: the support person asks, the first copy starts the second
    (SpawnElevation) with the secret in a private file, the second takes the live session
    over (same session id, the viewer still attached, still in control) and the first exits
    0; the hand-off file is gone, and the secret never appeared on a command line."""
    env = {**os.environ, "SPOTLIGHT_SCREEN": "dummy", "SPOTLIGHT_INPUT": "dummy",
           "SPOTLIGHT_PANEL": "log", "SPOTLIGHT_TRAY": "log", "SPOTLIGHT_DIALOGS": "stderr",
           "SPOTLIGHT_ELEVATION": "spawn", "XDG_RUNTIME_DIR": str(tmp_path),
           "TMPDIR": str(tmp_path)}
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        first = subprocess.Popen(
            [sys.executable, str(ROOT / "agent.py"), "--relay", relay.ws_url,
             "--technician", "david"], cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def scenario() -> None:
        async with await ScriptedViewer.in_control(relay) as viewer:
            await handoff_scenario(viewer, first, log_path, relay, tmp_path)

    try:
        run(scenario())
    finally:
        for pid in _copies_of(relay):
            os.kill(pid, signal.SIGTERM)
        if first.poll() is None:
            first.kill()
        first.wait(timeout=10)


async def handoff_scenario(viewer: ScriptedViewer, first: subprocess.Popen, log_path: Path,
                           relay, tmp_path: Path) -> None:
    session = viewer.session
    await viewer.expect(p.Frame)
    await viewer.send(p.Elevate(session))
    await viewer.expect(p.Elevation, lambda m: m.state == "started")
    await until(lambda: first.poll() is not None, WAIT_S)
    assert first.returncode == 0  # it exited only once the new copy held the session
    copies = _copies_of(relay)
    assert len(copies) == 1
    args = (Path("/proc") / str(copies[0]) / "cmdline").read_bytes().decode().split("\0")
    handoff_file = Path(args[args.index("--handoff-file") + 1])
    assert handoff_file.parent == tmp_path and not handoff_file.exists()
    await viewer.send(p.Refresh(session, 0))  # the new copy streams to the same viewer
    await viewer.expect(p.Frame)
    await viewer.type_keys(("KeyD", "d"))  # and the control held before is held still
    await until(lambda: "input: key KeyD down" in log_path.read_text(errors="replace"),
                WAIT_S)
    await viewer.send(p.End(session, "done"))
    ended = await viewer.expect(p.Ended)
    assert (ended.session, ended.by) == (session, "technician")
    await until(lambda: not _copies_of(relay), WAIT_S)


# --- the customer's own Restart as administrator ------------------------------------------


def test_restart_as_administrator_is_offered_only_where_it_means_something() -> None:
    """The panel shows the button when the program can elevate, enabled while waiting or
    sharing, not while paused; without elevation it is not there at all."""
    import panel

    def labels(state: str, can: bool) -> dict[str, bool]:
        facts = panel.SessionFacts(state=state, company="Acme", person="David",
                                   can_elevate=can)
        return {b.label: b.enabled for b in panel.view(facts).buttons}

    assert labels("control", True)["Restart as administrator"]
    assert labels("waiting", True)["Restart as administrator"]
    assert not labels("paused", True)["Restart as administrator"]
    assert "Restart as administrator" not in labels("control", False)
    assert "Restart as administrator" not in labels("ended", True)


def test_the_customers_own_restart_goes_to_windows_and_their_no_reaches_the_viewer(
        relay, tmp_path: Path) -> None:
    """The panel's button (through Controls, as the tray's item) asks for a secret and
    starts the elevation at once (the customer asked: no second question); the No on
    Windows' prompt comes back to the viewer as elevation{declined}."""
    import agent_ui

    async def scenario() -> None:
        runner, _ = agent_on_fakes(relay, tmp_path,
                                   elevation=agent_elevation.DecliningElevation())
        controls = agent_ui.Controls()
        controls.agent = runner
        task = asyncio.ensure_future(runner.run())
        async with await ScriptedViewer.accepted(relay) as viewer:
            assert runner.display.can_elevate
            controls.panel_actions().run("elevate")
            answer = await viewer.expect(p.Elevation)
            assert answer.state == "declined"  # no "asked": the customer asked themselves
            assert runner.session.state == core.ACCEPTED
        runner.request_close()
        await task

    run(scenario())
