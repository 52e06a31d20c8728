#!/usr/bin/env bash
# Sign a Windows exe with Authenticode (osslsigncode, Debian's package), on Linux.
#
#   packaging/sign-windows.sh [--timestamp URL] FILE.pfx IN.exe [OUT.exe]
#
#   FILE.pfx         the company's code-signing certificate and key (PKCS#12)
#   IN.exe           the exe to sign; signed in place unless OUT.exe is given
#   --timestamp URL  an RFC 3161 timestamp server (also SPOTLIGHT_TIMESTAMP_URL); without
#                    one the signature stops being valid when the certificate expires
#
#   SIGN_PASSWORD    the environment variable holding the .pfx password (required; it is
#                    handed to osslsigncode on its stdin, never on a command line)
#
# packaging/build-windows.sh --sign FILE.pfx calls this after the build. Why sign, and how
# a company gets a certificate: packaging/README.md.
set -euo pipefail

say() { printf 'sign-windows: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage="usage: packaging/sign-windows.sh [--timestamp URL] FILE.pfx IN.exe [OUT.exe]"

TIMESTAMP="${SPOTLIGHT_TIMESTAMP_URL:-}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timestamp) [ $# -ge 2 ] || die "--timestamp needs a URL"; TIMESTAMP="$2"; shift 2 ;;
    --timestamp=*) TIMESTAMP="${1#--timestamp=}"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    -*) die "unknown option: $1 ($usage)" ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -ge 2 ] && [ ${#args[@]} -le 3 ] || die "$usage"
PFX="${args[0]}" IN="${args[1]}" OUT="${args[2]:-${args[1]}}"
[ -f "$PFX" ] || die "certificate file not found: $PFX"
[ -f "$IN" ] || die "exe not found: $IN"
[ -d "$(dirname "$OUT")" ] || die "no folder for the signed exe: $(dirname "$OUT")"
[ -n "${SIGN_PASSWORD+set}" ] || die "set SIGN_PASSWORD to the password of $PFX"
case "$TIMESTAMP" in
  ""|http://*|https://*) ;;
  *) die "the timestamp server must be an http:// or https:// URL: $TIMESTAMP" ;;
esac
command -v osslsigncode >/dev/null \
  || die "osslsigncode is not installed; install it with: sudo apt-get install -y osslsigncode"

# osslsigncode writes a new file; signing in place goes through a temporary one beside it.
work="$(mktemp --suffix=.exe "$(dirname "$OUT")/.signing-XXXXXX")"
trap 'rm -f "$work" "$work.log"' EXIT
rm -f "$work"  # osslsigncode refuses to overwrite
sign=(osslsigncode sign -pkcs12 "$PFX" -readpass - -h sha256
      -n "Spotlight Remote Support" -in "$IN" -out "$work")
if [ -n "$TIMESTAMP" ]; then
  sign+=(-ts "$TIMESTAMP")
  say "signing $IN, timestamped by $TIMESTAMP"
else
  say "signing $IN without a timestamp (valid only while the certificate is)"
fi
if ! printf '%s' "$SIGN_PASSWORD" | "${sign[@]}" >/dev/null 2>"$work.log"; then
  cat "$work.log" >&2
  die "osslsigncode could not sign $IN (wrong password, or not a code-signing .pfx?)"
fi
mv -f "$work" "$OUT"
say "signed $OUT"
