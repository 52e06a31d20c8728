"""Test doubles behind the project's own interfaces (the agent's Screen, Input, Tray, Panel;
the relay's ledger Recorder), never a library's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import protocol as p


class FakeScreen:
    """A desktop held in a numpy BGRX image; tests paint into ``image`` to change it."""

    def __init__(self, monitors: list[tuple[int, int, int, int]] | None = None) -> None:
        monitors = monitors or [(0, 0, 320, 200)]
        self.layout = [p.Screen(*m) for m in monitors]
        right = max(s.x + s.width for s in self.layout)
        bottom = max(s.y + s.height for s in self.layout)
        self.image = np.zeros((bottom, right, 4), np.uint8)
        self.image[..., :3] = (204, 102, 51)  # BGR of #3366cc
        self.grabs = 0
        self.changing = False  # every grab differs from the last (full motion)
        self.broken = False  # grab fails, as a lost display would
        # paint(image, grabs) before every grab: motion that keeps up with the agent's polls
        # however slow the test is (a change made by the test between updates can come late
        # enough on a loaded machine for the agent to call the screen still)
        self.paint: Callable[[np.ndarray, int], None] | None = None
        # grab_view writes into two images by turns, sparing the one the caller keeps
        self.reused = False
        self._buffers: list[np.ndarray | None] = [None, None]
        self._views: list[np.ndarray | None] = [None, None]

    def monitors(self) -> tuple[p.Screen, ...]:
        left, top = min(s.x for s in self.layout), min(s.y for s in self.layout)
        right = max(s.x + s.width for s in self.layout)
        bottom = max(s.y + s.height for s in self.layout)
        return (p.Screen(left, top, right - left, bottom - top), *self.layout)

    def grab(self, area: p.Screen) -> np.ndarray:
        self.grabs += 1
        if self.broken:
            raise OSError("the display went away")
        if self.changing:
            self.image[:8, :8, 0] = self.grabs % 256
        if self.paint is not None:
            self.paint(self.image, self.grabs)
        region = self.image[area.y:area.y + area.height, area.x:area.x + area.width]
        return region.copy()  # a new array each time, as Screen.grab promises

    def grab_view(self, area: p.Screen, keep: np.ndarray | None = None) -> np.ndarray:
        view = self.grab(area)
        if not self.reused:
            view.flags.writeable = False  # as a view: the streamer must copy what it keeps
            return view
        # as MssScreen on X11: two images reused, the grab in the one not kept
        half = 1 if keep is not None and keep is self._views[0] else 0
        buffer = self._buffers[half]
        if buffer is None or buffer.shape != view.shape:
            buffer = self._buffers[half] = np.empty_like(view)
        buffer[...] = view
        self._views[half] = buffer
        return buffer

    def close(self) -> None:
        pass


class FakeInput:
    """Records every injected event; ``held`` is what is down right now."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.held: set[str] = set()
        self.pointer = (0, 0)

    def position(self) -> tuple[int, int]:
        return self.pointer

    def move(self, x: int, y: int) -> None:
        self.pointer = (x, y)
        self.events.append(("move", x, y))

    def button(self, name: str, down: bool) -> None:
        (self.held.add if down else self.held.discard)(f"button:{name}")
        self.events.append(("button", name, down))

    def scroll(self, dx: int, dy: int) -> None:
        self.events.append(("scroll", dx, dy))

    def key(self, code: str, down: bool) -> None:
        (self.held.add if down else self.held.discard)(f"key:{code}")
        self.events.append(("key", code, down))

    def type(self, text: str) -> None:
        self.events.append(("type", text))

    def close(self) -> None:
        pass


class FakeTray:
    """Records (state, tooltip, balloon) per show; ``click_close`` is the menu's Close,
    ``click_pause`` its Pause or Resume."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str]] = []
        self.hidden = False
        self.on_close = None
        self.on_pause = None
        self.changed = threading.Event()

    @property
    def balloons(self) -> list[str]:
        return [balloon for _, _, balloon in self.shown if balloon]

    @property
    def states(self) -> list[str]:
        return [state for state, _, _ in self.shown]

    def show(self, state: str, tooltip: str, balloon: str) -> None:
        self.shown.append((state, tooltip, balloon))
        self.changed.set()

    def hide(self) -> None:
        self.hidden = True
        self.changed.set()

    def click_close(self) -> None:
        """Close from the tray menu, called from another thread as pystray does."""
        threading.Thread(target=self.on_close).start()

    def click_pause(self, paused: bool) -> None:
        """Pause (True) or Resume (False) from the tray menu, from another thread."""
        threading.Thread(target=self.on_pause, args=(paused,)).start()


class FakePanel:
    """The session panel (panel.Panel): records every PanelView shown; ``press`` runs a
    button's action from another thread, as the panel's UI thread does."""

    def __init__(self, actions=None) -> None:
        self.actions = actions
        self.views: list = []
        self.chats: list = []  # every panel_chat.ChatView shown
        self.fronted = 0
        self.closed = False
        self.changed = threading.Event()

    @property
    def states(self) -> list[str]:
        """The states shown, each once (the meter's ticks repeat a state)."""
        states: list[str] = []
        for view in self.views:
            if not states or states[-1] != view.state:
                states.append(view.state)
        return states

    @property
    def last(self):
        return self.views[-1]

    def show(self, view) -> None:
        self.views.append(view)
        self.changed.set()

    def to_front(self) -> None:
        self.fronted += 1

    def chat(self, view) -> None:
        self.chats.append(view)
        self.changed.set()

    def close(self) -> None:
        self.closed = True

    def press(self, key: str) -> None:
        """Alt+``key`` on the panel as it is now: its enabled button, if any."""
        button = self.last.button(key)
        assert button is not None, f"no enabled Alt+{key} in {self.last.state}"
        threading.Thread(target=self.actions.run, args=(button.action,)).start()


class FakeInstance:
    """The one-program lock (agent_ui.Instance): ``first`` says whether this start is the
    only one; a refused start records that it asked the other to come to the front."""

    def __init__(self, first: bool = True) -> None:
        self.first = first
        self.asked = False
        self.released: bool | None = None  # None: never acquired
        self.on_front = None

    def acquire(self, on_front) -> bool:
        self.on_front = on_front
        if self.first:
            self.released = False
        else:
            self.asked = True
        return self.first

    def release(self) -> None:
        if self.released is not None:
            self.released = True


@dataclass
class RecordingLedger:
    """relay.pairing.Recorder: every call kept in order as (method, *arguments), an event
    as ("event", session, kind, detail, at). It has every method of the Recorder
    (tests/test_pairing.py checks that), so a rule reaching a path its test never meant to
    (a fuzzed file offer, say) is recorded, not an AttributeError in the test's fake."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def requested(self, session, technician, machine, user, address, at) -> int:
        self.calls.append(("requested", session, technician, machine, user, address, at))
        return sum(1 for c in self.calls if c[0] == "requested")  # the ledger's reference

    def accepted(self, session, at) -> None:
        self.calls.append(("accepted", session, at))

    def control(self, session, taken, at) -> None:
        self.calls.append(("control", session, taken, at))

    def paused(self, session, paused, at) -> None:
        self.calls.append(("paused", session, paused, at))

    def ended(self, session, by, reason, at) -> None:
        self.calls.append(("ended", session, by, reason, at))

    def note(self, session, text, at) -> None:
        self.calls.append(("note", session, text, at))

    def event(self, session, kind, detail, at) -> None:
        self.calls.append(("event", session, kind, detail, at))

    def transfer(self, row) -> None:
        self.calls.append(("transfer", row))

    def kinds(self) -> list[str]:
        """The calls' names, an event by its kind."""
        return [c[0] if c[0] != "event" else c[2] for c in self.calls]

    def transfers(self) -> list[Any]:
        """The transfer rows recorded, in order."""
        return [c[1] for c in self.calls if c[0] == "transfer"]
