"""The real viewer in Debian's Chromium through Playwright: how to launch it, and one support
person's tab (what it shows, what it sent over its websocket, its errors)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import protocol
from tests.helpers.agent import ScriptedAgent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
WAIT_S = 15


def launch(playwright, *extra_args: str):
    """Chromium from Debian (Playwright's own download is not used)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is not installed: run ./dev test, which installs it")
    return playwright.chromium.launch(executable_path=CHROMIUM,
                                      args=[*CHROMIUM_ARGS, *extra_args])


class Viewer:
    """One support person's browser tab, with what it sent over its websocket."""

    def __init__(self, browser, relay, size: tuple[int, int] = (1280, 800),
                 url: str | None = None) -> None:
        """A tab of ``size`` on the relay's console (or on ``url``, e.g. a proxy to it)."""
        width, height = size
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_S * 1000)
        self.sent: list[dict] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("websocket", self._watch)
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.relay = relay
        self.response = self.page.goto((url or relay.http_url) + "/console/")

    def _console(self, message) -> None:
        # A CSP violation or a script error shows up here; a refused websocket would too.
        if message.type == "error":
            self.errors.append(message.text)

    def _watch(self, socket) -> None:
        def sent(payload) -> None:
            if isinstance(payload, str):
                self.sent.append(json.loads(payload))

        socket.on("framesent", sent)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def by(self, testid: str):
        return self.page.get_by_test_id(testid)

    def login(self, user: str = "david", password: str = "david-pw") -> None:
        self.by("login-user").fill(user)
        self.by("login-password").fill(password)
        self.by("login-submit").click()

    def signed_in(self, user: str = "david", password: str = "david-pw") -> Viewer:
        self.login(user, password)
        self.by("queue").wait_for(state="visible")
        return self

    def item(self, session: str):
        return self.page.locator(f'[data-testid="queue-item"][data-session-id="{session}"]')

    def accept(self, agent: ScriptedAgent) -> None:
        self.item(agent.session).get_by_test_id("accept").click()
        self.by("screen").wait_for(state="visible")

    def take_control(self, agent: ScriptedAgent) -> None:
        self.by("control-toggle").click()
        agent.expect(protocol.Control, lambda m: m.granted)
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=control-toggle]').textContent"
            " === 'Release control'")

    def wait_true(self, expression: str) -> None:
        self.page.wait_for_function(f"() => {expression}")

    def focused(self) -> str:
        """The focused element's test id, id or tag."""
        return self.page.evaluate(
            "() => { const e = document.activeElement;"
            " return e.dataset.testid || e.id || e.tagName.toLowerCase(); }")

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        rgba = self.page.evaluate(
            """([x, y]) => Array.from(document.querySelector('[data-testid=screen]')
                   .getContext('2d').getImageData(x, y, 1, 1).data)""", [x, y])
        return tuple(rgba[:3])

    def wait_for_pixel(self, x: int, y: int, colour: tuple[int, int, int],
                       tolerance: int = 0) -> None:
        self.page.wait_for_function(
            """([x, y, c, t]) => {
                const canvas = document.querySelector('[data-testid=screen]');
                if (canvas.width <= x || canvas.height <= y) return false;
                const d = canvas.getContext('2d').getImageData(x, y, 1, 1).data;
                return [0, 1, 2].every(i => Math.abs(d[i] - c[i]) <= t);
            }""", arg=[x, y, list(colour), tolerance])

    def client_point(self, x: int, y: int) -> tuple[float, float]:
        """Where remote pixel (x, y) is on the page: the centre of its scaled square."""
        box = self.by("screen").bounding_box()
        width, height = self.canvas_size()
        return (box["x"] + (x + 0.5) * box["width"] / width,
                box["y"] + (y + 0.5) * box["height"] / height)

    def aim(self, x: int, y: int) -> tuple[int, int, int, int]:
        """A whole-pixel page point near remote pixel (x, y) (mouse events carry whole CSS
        pixels) and the remote pixel that page point shows, found from the canvas's box."""
        cx, cy = (round(v) for v in self.client_point(x, y))
        box = self.by("screen").bounding_box()
        width, height = self.canvas_size()
        rx = math.floor((cx - box["x"]) * width / box["width"])
        ry = math.floor((cy - box["y"]) * height / box["height"])
        assert abs(rx - x) <= 1 and abs(ry - y) <= 1  # the same pixel, give or take rounding
        return cx, cy, rx, ry

    def canvas_size(self) -> tuple[int, int]:
        return tuple(self.page.evaluate(
            "() => { const c = document.querySelector('[data-testid=screen]');"
            " return [c.width, c.height]; }"))

    def sent_once(self, arrived: Callable[[list[dict]], bool], timeout_s: float = 10) -> list[dict]:
        """The messages sent so far, once ``arrived(messages)`` holds. Playwright hands each
        sent frame to Python as an event, which can come after the peer already has the
        message: a test that saw it arrive must still wait here before reading the record."""
        deadline = time.monotonic() + timeout_s
        while not arrived(self.sent):
            assert time.monotonic() < deadline, f"not in the record of sent messages: {self.sent}"
            self.page.wait_for_timeout(10)  # lets Playwright deliver the pending events
        return list(self.sent)

    def inputs_sent(self) -> list[dict]:
        names = {cls.TYPE for cls in protocol.INPUT_TYPES}
        return [m for m in self.sent if m.get("type") in names]

    def close(self) -> None:
        self.context.close()
