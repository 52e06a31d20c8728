"""Regenerate the icons: the tray icons from panel.tray_icon (one symbol per state, so the
states differ by shape and not only by colour) and the exe's icon from agent.tray_image.

    python icons/make_icons.py

Writes tray-<state>.png (what the tray shows, 64 px; pending, active, control, paused,
reconnecting) and app.ico (the exe's icon, 16-256 px) next to this script. The running agent
draws its tray icons itself, so only app.ico is needed by build.spec; the PNGs are for
documentation and the viewer.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import agent  # noqa: E402 (after the path is set)
import panel  # noqa: E402

APP_COLOUR = (51, 102, 204)
ICO_SIZES = [(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]


def main() -> None:
    for state in panel.TRAY_STATES:
        panel.tray_icon(state, 64).save(HERE / f"tray-{state}.png", optimize=True)
    agent.tray_image(APP_COLOUR, 256).save(HERE / "app.ico", sizes=ICO_SIZES)
    print(f"icons written to {HERE}")


if __name__ == "__main__":
    main()
