"""Per-Monitor DPI v2: capture and input agree on every monitor, with 100% and 150% scaling
side by side, in physical pixels throughout.

Under Per-Monitor v2 (packaging/agent.manifest, agent.set_dpi_aware) Windows reports each
monitor's rectangle in physical pixels (what mss captures) and takes SetCursorPos/SendInput
positions in the same physical desktop coordinates. These pure tests model such a desktop,
one value per physical pixel naming its own coordinates, capture each monitor as mss does
(a slice of the desktop at the monitor's rectangle) and check that every point a support
person can click in a monitor's picture maps (agent_session.to_desktop) to the very desktop
pixel the picture shows there. Wine reports one DPI for every monitor and cannot show this;
the real-Windows job (packaging/windows-ci.ps1) checks that the exe runs Per-Monitor v2 aware.
"""

from __future__ import annotations

from pathlib import Path
from xml.dom import minidom

import numpy as np
import pytest

import protocol as p
from agent_session import to_desktop

ROOT = Path(__file__).resolve().parent.parent

# 1920x1080 at 100% (96 dpi) and a 4K panel at 150% (144 dpi): in physical pixels the 4K one
# is 3840x2160 wide, not the 2560x1440 a DPI-unaware program would be told.
LAYOUTS = {
    "150% to the right": [p.Screen(0, 0, 1920, 1080), p.Screen(1920, -300, 3840, 2160)],
    "150% to the left": [p.Screen(0, 0, 1920, 1080), p.Screen(-3840, 0, 3840, 2160)],
    "150% above": [p.Screen(0, 0, 1920, 1080), p.Screen(-960, -2160, 3840, 2160)],
}


def screens_of(monitors: list[p.Screen]) -> tuple[p.Screen, ...]:
    """mss's list: the bounding box of all monitors, then each monitor."""
    left, top = min(m.x for m in monitors), min(m.y for m in monitors)
    right = max(m.x + m.width for m in monitors)
    bottom = max(m.y + m.height for m in monitors)
    return (p.Screen(left, top, right - left, bottom - top), *monitors)


class PhysicalDesktop:
    """Every physical pixel holds its own desktop coordinates (x, y): kept as one row of x
    and one column of y (a 5760x2460 desktop of pairs would take 200 MB)."""

    def __init__(self, screens: tuple[p.Screen, ...]) -> None:
        self.box = screens[0]
        self.xs = np.arange(self.box.x, self.box.x + self.box.width)
        self.ys = np.arange(self.box.y, self.box.y + self.box.height)

    def capture(self, area: p.Screen) -> tuple[np.ndarray, np.ndarray]:
        """What mss grabs for ``area`` (a physical rectangle): a slice of the desktop, as
        its columns' and rows' desktop coordinates."""
        x, y = area.x - self.box.x, area.y - self.box.y
        return self.xs[x:x + area.width], self.ys[y:y + area.height]


def sample_points(area: p.Screen) -> list[tuple[int, int]]:
    """Corners, edges and the middle of a monitor's picture."""
    xs = (0, 1, area.width // 3, area.width // 2, area.width - 2, area.width - 1)
    ys = (0, 1, area.height // 3, area.height // 2, area.height - 2, area.height - 1)
    return [(x, y) for x in xs for y in ys]


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_input_lands_on_the_pixel_the_capture_shows_on_each_monitor(layout: str) -> None:
    """On the 100% and the 150% monitor alike, and on the whole desktop (monitor 0), the
    point clicked in the picture is the physical pixel captured there."""
    screens = screens_of(LAYOUTS[layout])
    desktop = PhysicalDesktop(screens)
    for monitor, area in enumerate(screens):
        columns, rows = desktop.capture(area)
        assert (len(rows), len(columns)) == (area.height, area.width)  # one pixel per pixel
        for x, y in sample_points(area):
            shown = (int(columns[x]), int(rows[y]))
            assert to_desktop(screens, monitor, x, y) == shown, (monitor, x, y)


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_a_point_just_past_a_monitors_picture_is_not_injected(layout: str) -> None:
    """The 150% monitor's picture is as large as its physical pixels and no larger."""
    screens = screens_of(LAYOUTS[layout])
    for monitor, area in enumerate(screens[1:], start=1):
        assert to_desktop(screens, monitor, area.width, 0) is None
        assert to_desktop(screens, monitor, 0, area.height) is None


def test_the_two_monitors_meet_without_a_gap_or_an_overlap() -> None:
    """The last column of the 100% monitor and the first of the 150% one are neighbours on
    the physical desktop: no pixel is reachable twice and none is skipped."""
    screens = screens_of(LAYOUTS["150% to the right"])
    last = to_desktop(screens, 1, 1919, 500)
    first = to_desktop(screens, 2, 0, 800)
    assert last == (1919, 500) and first == (1920, 500)


def test_the_exe_manifest_declares_per_monitor_v2() -> None:
    """packaging/agent.manifest (embedded by build.spec) asks for PerMonitorV2 first, with
    PerMonitor as the fallback for Windows 10 before 1703, and keeps PyInstaller's
    asInvoker level (elevation is asked for at run time, never by the manifest)."""
    manifest = minidom.parse(str(ROOT / "packaging" / "agent.manifest"))
    awareness = manifest.getElementsByTagName("dpiAwareness")[0]
    assert awareness.firstChild.data.split(", ") == ["PerMonitorV2", "PerMonitor"]
    assert manifest.getElementsByTagName("dpiAware")[0].firstChild.data == "true/pm"
    level = manifest.getElementsByTagName("requestedExecutionLevel")[0]
    assert level.getAttribute("level") == "asInvoker"
    assert 'manifest=str(ROOT / "packaging" / "agent.manifest")' in \
        (ROOT / "build.spec").read_text(encoding="utf-8")
