"""Regenerate the icons from agent.tray_image (the one drawing of the spotlight disc).

    python icons/make_icons.py

Writes tray-<state>.png (what the tray shows, 64 px) and app.ico (the exe's icon,
16-256 px) next to this script. The running agent draws its tray icons itself, so only
app.ico is needed by build.spec; the PNGs are for documentation and the viewer.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import agent  # noqa: E402 (after the path is set)

APP_COLOUR = (51, 102, 204)
ICO_SIZES = [(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]


def main() -> None:
    for state, colour in agent.TRAY_COLOURS.items():
        agent.tray_image(colour, 64).save(HERE / f"tray-{state}.png", optimize=True)
    agent.tray_image(APP_COLOUR, 256).save(HERE / "app.ico", sizes=ICO_SIZES)
    print(f"icons written to {HERE}")


if __name__ == "__main__":
    main()
