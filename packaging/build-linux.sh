#!/usr/bin/env bash
# Build the one-file Linux agent, dist/linux/spotlight-support, from build.spec with the
# project's virtualenv (.venv, made by ./dev; or $PYTHON).
#
#   packaging/build-linux.sh [--config FILE]
#
#   --config FILE   the company configuration baked in as support.json
#                   (default: support.example.json)
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
cd "$ROOT"

CONFIG=support.example.json
say() { printf 'build-linux: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG="$2"; shift 2 ;;
    --config=*) CONFIG="${1#--config=}"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (usage: packaging/build-linux.sh [--config FILE])" ;;
  esac
done
[ -f "$CONFIG" ] || die "configuration file not found: $CONFIG"

PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || die "no virtualenv at .venv: run ./dev test once (it creates it), or set PYTHON"
"$PYTHON" -c "import PyInstaller" 2>/dev/null \
  || die "PyInstaller is missing in $PYTHON: pip install -e '.[agent,dev]'"

"$PYTHON" agent.py --check-config "$CONFIG" >/dev/null \
  || die "the agent would refuse $CONFIG (the line above says why)"

say "building dist/linux/spotlight-support with $(basename "$CONFIG") baked in"
rm -f dist/linux/spotlight-support
SPOTLIGHT_CONFIG="$(readlink -f "$CONFIG")" "$PYTHON" -m PyInstaller --noconfirm \
  --log-level WARN --distpath dist/linux --workpath build/linux build.spec </dev/null
[ -x dist/linux/spotlight-support ] || die "PyInstaller did not produce the binary"
say "built $ROOT/dist/linux/spotlight-support ($(du -h dist/linux/spotlight-support | cut -f1))"
