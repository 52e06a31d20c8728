"""Launch to the support-person picker of the Windows exe under Wine, several times.

    python -m bench.exe_start [--runs 5] [--exe dist/windows/SpotlightSupport.exe]

Needs the exe (packaging/build-windows.sh) and the run prefix tests/test_wine.py makes in
.cache/wine/run-prefix. Each run starts the exe plainly (as a double-click does), times the
moment its picker window is mapped (xdotool search --sync), then presses Escape, which ends
it. The wineserver is started once before the first run and stays (a warm Wine, as when the
customer has any other Wine program open; a cold one adds its own start). Prints each time,
the exe's CPU seconds (from /proc, its processes together) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import desktop as d

ROOT = Path(__file__).resolve().parent.parent
RUN_PREFIX = Path(os.environ.get("SPOTLIGHT_WINE_CACHE") or ROOT / ".cache" / "wine") / \
    "run-prefix"


def wine_env(display: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    return {**env, "WINEPREFIX": str(RUN_PREFIX), "WINEARCH": "win64", "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": display}


def exe_cpu_s(exe_name: str) -> float:
    """CPU seconds of the processes running the exe in the run prefix."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if exe_name.encode() not in (entry / "cmdline").read_bytes():
                continue
            if f"WINEPREFIX={RUN_PREFIX}".encode() not in \
                    (entry / "environ").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def one_run(exe: Path, env: dict[str, str], company: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        process = subprocess.Popen(["wine", str(exe)], cwd=folder, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name",
                                    company], env=env, capture_output=True, text=True,
                                   timeout=120)
            seconds = time.monotonic() - started
            cpu = exe_cpu_s(exe.name)
            window = found.stdout.split()[0]
            subprocess.run(["xdotool", "windowactivate", "--sync", window], env=env,
                           capture_output=True, timeout=30)
            subprocess.run(["xdotool", "key", "--window", window, "Escape"], env=env,
                           check=True, timeout=30)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--exe", type=Path, default=ROOT / "dist" / "windows" /
                        "SpotlightSupport.exe")
    args = parser.parse_args(argv)
    d.require("Xvfb", "wine", "wineserver", "xdotool")
    if not args.exe.is_file() or not RUN_PREFIX.is_dir():
        raise SystemExit(f"needs {args.exe} and {RUN_PREFIX}: run tests/test_wine.py first")
    company = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))["company"]
    screen = d.Desktop().start()
    env = wine_env(screen.display)
    subprocess.run(["wineserver", "-p"], env=env, stdin=subprocess.DEVNULL, check=False)
    try:
        times = []
        for _ in range(args.runs):
            load = os.getloadavg()[0]
            seconds, cpu = one_run(args.exe, env, company)
            times.append(seconds)
            print(f"launch to picker {seconds:.1f} s (the exe's CPU {cpu:.1f} s; load {load:.1f})",
                  flush=True)
        print(f"{args.exe.name} {args.exe.stat().st_size / 1e6:.1f} MB: median "
              f"{statistics.median(times):.1f} s of {len(times)}")
    finally:
        subprocess.run(["wineserver", "-k"], env=env, stdin=subprocess.DEVNULL, check=False)
        screen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
