#!/usr/bin/env bash
# The benchmark in one command: installs what it needs, runs every workload against x11vnc
# and against our relay + agent, runs the relay load test, the slow links, the browser
# (Chromium: our viewer, noVNC, the echo floor) and the agent's memory, and writes
# bench/RESULTS.md.
#
#   bench/run.sh                     the full run (about 12 minutes)
#   bench/run.sh --soak-minutes 10   also a 10-minute memory soak per peer
#   bench/run.sh --seconds 2         any option of `python -m bench.run --help`
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

PACKAGES=(xvfb xterm xdotool x11vnc ffmpeg chromium fonts-liberation novnc websockify)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "Installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "No .venv yet: run ./dev test once (it creates the virtualenv), then this again." >&2
  exit 1
fi
exec .venv/bin/python -m bench.run --out bench/RESULTS.md "$@"
