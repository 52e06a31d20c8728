"""The Windows exe, built under Wine by packaging/build-windows.sh, run under Wine on Xvfb.

The exe runs in its own clean Wine prefix (nothing installed in it) against the Linux relay.
Keys typed by the support person are checked in a Windows console program in the same
prefix (Wine hands a Windows program's SendInput keys to Wine windows, not to native X
programs): the build's Windows python.exe, in wineconsole, writing each line it reads to a
file. The session runs a signed copy of the exe (signed with a throwaway certificate by
packaging/sign-windows.sh) and ends with the customer's Close, clicked in the tray icon's menu
by packaging/close_from_tray.py running on the build's Windows python.exe.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import mss
import pytest
from PIL import Image
from PyInstaller.archive.readers import CArchiveReader

import protocol as p
from tests.helpers.desktop import (
    BACKGROUND_NAME,
    Output,
    assert_background,
    find_window,
    pointer_location,
    require_tools,
    until,
    wait_for_file,
    wait_for_screen,
    window_geometry,
)
from tests.helpers.relay import ledger_csv
from tests.helpers.viewer import ScriptedViewer
from tests.helpers.wine import (
    CACHE,
    EXE,
    ROOT,
    build_windows_exe,
    clean_prefix,
    exe_processes,
    running_exe,
    stop_wine,
    windows_path,
    wine,
)

RUN_PREFIX = CACHE / "run-prefix"  # recreated by every run: the exe must need nothing in it
WINDOWS_PYTHON = CACHE / "python" / "python.exe"
CLOSE_FROM_TRAY = ROOT / "packaging" / "close_from_tray.py"
SIGN_PASSWORD = "throwaway-test-password"
# Issue 15: 20 MB or less, without UPX. Measured 2026-12 (packaging/exe_contents.py): 27.7 MB
# before build.spec's EXCLUDES, 19.3 MB after (Pillow's AVIF and FreeType were 5.4 MB), 10.3 MB
# once screen_codec.py did without numpy (8.8 MB stored, 6.4 MB of it OpenBLAS). The limit
# keeps 1.7 MB (16%) of room: a package coming back (numpy alone) fails here.
EXE_SIZE_LIMIT_MB = 12.0  # decimal MB (10**6 bytes), as the "27.7 MB"
READER = """\
import sys
with open(sys.argv[1], "w", encoding="utf-8", newline="\\n") as out:
    out.write("ready\\n")
    out.flush()
    for line in sys.stdin:
        out.write(line)
        out.flush()
"""

pytestmark = [pytest.mark.wine, pytest.mark.build, pytest.mark.x11]


VERSION_PROBE = """\
import json, sys, pefile
pe = pefile.PE(sys.argv[1])
strings = {}
for info in getattr(pe, "FileInfo", []):
    for entry in info:
        for table in getattr(entry, "StringTable", []):
            strings.update({k.decode(): v.decode() for k, v in table.entries.items()})
icon = pefile.RESOURCE_TYPE["RT_GROUP_ICON"]
groups = [e for e in pe.DIRECTORY_ENTRY_RESOURCE.entries if e.id == icon]
print(json.dumps({"strings": strings, "icon_groups": len(groups),
                  "gui": pe.OPTIONAL_HEADER.Subsystem == 2}))
"""


@pytest.fixture(scope="module")
def built_exe() -> Path:
    """The exe built by packaging/build-windows.sh (cached toolchain), once for the module."""
    require_tools("wine", "wineserver", "wineboot")
    build_windows_exe()
    assert EXE.is_file()
    return EXE


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway self-signed code-signing certificate: (the .pfx, its certificate PEM)."""
    require_tools("openssl", "osslsigncode")
    folder = tmp_path_factory.mktemp("certificate")
    key, pem, pfx = folder / "key.pem", folder / "cert.pem", folder / "sign.pfx"
    for command in (
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=Spotlight Test Signing/O=Example IT Services", "-keyout", str(key),
             "-out", str(pem), "-addext", "extendedKeyUsage=codeSigning",
             "-addext", "keyUsage=digitalSignature"],
            ["openssl", "pkcs12", "-export", "-inkey", str(key), "-in", str(pem),
             "-out", str(pfx), "-passout", f"pass:{SIGN_PASSWORD}"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
    return pfx, pem


def sign(pfx: Path, exe: Path, out: Path,
         password: str = SIGN_PASSWORD) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "packaging" / "sign-windows.sh"), str(pfx), str(exe), str(out)],
        env={**os.environ, "SIGN_PASSWORD": password}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL)


def verify(exe: Path, pem: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["osslsigncode", "verify", "-CAfile", str(pem), "-in", str(exe)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def signed_exe(built_exe, certificate, tmp_path_factory) -> Path:
    """A copy of the built exe, signed with the throwaway certificate."""
    signed = tmp_path_factory.mktemp("signed") / "SpotlightSupport.exe"
    result = sign(certificate[0], built_exe, signed)
    assert result.returncode == 0, result.stderr
    return signed


@pytest.fixture(scope="module")
def wine_run_env(xvfb, built_exe) -> Iterator[dict[str, str]]:
    """A clean run prefix for the built exe; the Wine environment."""
    require_tools("xdotool", "xsetroot")
    with clean_prefix(RUN_PREFIX, xvfb.name) as env:
        yield env


@pytest.mark.timeout(1800)  # a build from nothing (prefix, Python, packages) takes minutes
def test_signed_exe_under_wine_streams_takes_input_and_ends_on_the_customers_close(
        wine_run_env, signed_exe, relay, tmp_path, capsys):
    """The signed exe is accepted, streams, clicks and types; Close in its tray menu ends it."""
    env = wine_run_env
    subprocess.run(["xsetroot", "-solid", BACKGROUND_NAME], check=True, timeout=10)

    reader, typed = tmp_path / "reader.py", tmp_path / "typed.txt"
    reader.write_text(READER, encoding="utf-8")
    console = subprocess.Popen(
        ["wine", "wineconsole", windows_path(WINDOWS_PYTHON), windows_path(reader),
         windows_path(typed)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    console_output = Output(console)
    try:
        assert wait_for_file(typed, "ready", timeout=60) == "ready\n", console_output.text()
        window = find_window(r"python\.exe", visible=True, timeout=30)
        started = time.monotonic()
        with running_exe(env, tmp_path, "--relay", relay.ws_url, "--technician", "david",
                         exe=signed_exe) as (exe, output):
            connected_s = asyncio.run(_drive_exe(relay, env, output, started, window, typed))
            assert exe.wait(timeout=30) == 0, output.text()
            assert exe_processes(RUN_PREFIX) == [], output.text()
    finally:
        stop_wine(env)
        console.wait(timeout=30)
        console_output.wait()

    rows = [row for row in ledger_csv(relay) if row.get("technician") == "david"]
    assert [row["ended_by"] for row in rows] == ["customer"], rows
    with capsys.disabled():
        print(f"\nSpotlightSupport.exe: {EXE.stat().st_size / 1e6:.1f} MB; "
              f"launch to connected under Wine: {connected_s:.1f} s")


async def _drive_exe(relay, env: dict[str, str], output: Output, started: float,
                     window: str, typed: Path) -> float:
    viewer = await ScriptedViewer.login(relay, "david", "david-pw")
    try:
        pending = await viewer.wait_for_pending(timeout=90)
        connected_s = time.monotonic() - started
        assert pending.user and pending.machine, pending
        await viewer.accept(pending.session)
        await viewer.take_control()

        await wait_for_screen(viewer, timeout=90)
        height = viewer.screens[viewer.monitor].height
        assert_background(viewer, 8, height - 8)

        x, y, width, height = window_geometry(window)
        centre = (x + width // 2, y + height // 2)
        await viewer.click(*centre)
        assert await until(lambda: pointer_location() == centre), output.text()
        await viewer.type_keys(("KeyH", "h"), ("KeyI", "i"), ("Enter", "Enter"))
        assert wait_for_file(typed, "hi\n") == "ready\nhi\n", output.text()

        # The customer's Close, in the tray icon's menu; in a thread, so the viewer goes on
        # reading (and acknowledging) meanwhile.
        clicked = await asyncio.to_thread(
            wine, env, "wine", windows_path(WINDOWS_PYTHON), windows_path(CLOSE_FROM_TRAY))
        ended = await viewer.expect(p.Ended, lambda m: m.session == viewer.session)
        assert ended.by == "customer", (ended, clicked)
        return connected_s
    finally:
        await viewer.close()


@pytest.mark.timeout(1800)
def test_windows_exe_is_windowed_with_icon_version_and_baked_configuration(
        wine_run_env, tmp_path):
    """The exe is a GUI program with an icon, version information and support.json inside."""
    probe = tmp_path / "probe.py"
    probe.write_text(VERSION_PROBE, encoding="utf-8")
    output = wine(wine_run_env, "wine", windows_path(WINDOWS_PYTHON), windows_path(probe),
                  windows_path(EXE))
    facts = json.loads(output.strip().splitlines()[-1])
    config = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert facts["gui"] and facts["icon_groups"] >= 1, facts
    assert facts["strings"]["CompanyName"] == config["company"]
    assert facts["strings"]["ProductName"] == "Spotlight Remote Support"
    assert facts["strings"]["ProductVersion"] == version["project"]["version"]

    archive = CArchiveReader(str(EXE))
    assert json.loads(archive.extract("support.json")) == config
    assert {"icons\\tray-pending.png", "icons\\tray-active.png"} <= set(archive.toc)


def test_signed_exe_verifies_against_its_certificate(signed_exe, certificate):
    """osslsigncode verifies the Authenticode signature against the signing certificate."""
    result = verify(signed_exe, certificate[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature verification: ok" in result.stdout
    assert "Spotlight Test Signing" in result.stdout
    # The signature is appended after PyInstaller's archive, which stays readable.
    config = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))
    assert json.loads(CArchiveReader(str(signed_exe)).extract("support.json")) == config


def test_unsigned_exe_reports_no_signature(built_exe, certificate):
    """The exe as built, without --sign, has no signature at all."""
    result = verify(built_exe, certificate[1])
    assert result.returncode != 0
    assert "No signature found" in result.stdout + result.stderr


def test_signing_with_a_wrong_password_fails_and_writes_nothing(built_exe, certificate,
                                                               tmp_path):
    """A wrong SIGN_PASSWORD is a clear error and leaves no half-signed exe."""
    out = tmp_path / "signed.exe"
    result = sign(certificate[0], built_exe, out, password="not-the-password")
    assert result.returncode == 1
    assert "could not sign" in result.stderr and "wrong password" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_with_sign_needs_sign_password_before_building(certificate):
    """--sign without SIGN_PASSWORD stops at once, naming the variable (also in --help)."""
    script = ROOT / "packaging" / "build-windows.sh"
    env = {k: v for k, v in os.environ.items() if k != "SIGN_PASSWORD"}
    result = subprocess.run(["bash", str(script), "--sign", str(certificate[0])], env=env,
                            capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "SIGN_PASSWORD" in result.stderr and "building" not in result.stderr
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    assert "--sign FILE.pfx" in usage.stdout and "SIGN_PASSWORD" in usage.stdout


def exe_contents(exe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "packaging" / "exe_contents.py"), str(exe)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_exe_contents_breaks_the_exe_down_by_package(built_exe):
    """packaging/exe_contents.py lists what takes room in the exe, Pillow and Python among it,
    and no numpy (the agent does without it; build.spec leaves it out)."""
    result = exe_contents(built_exe)
    assert result.returncode == 0, result.stderr
    packages = [line.split("|")[1].strip() for line in result.stdout.splitlines()
                if line.startswith("| ") and line.count("|") == 3]
    assert "PIL" in packages and "numpy" not in packages, result.stdout
    assert any(name.startswith("python3") for name in packages), result.stdout


def test_exe_is_within_its_size_limit(built_exe, capsys):
    """The exe is at most EXE_SIZE_LIMIT_MB: a left-out dependency coming back fails here."""
    size_mb = built_exe.stat().st_size / 1e6
    assert size_mb <= EXE_SIZE_LIMIT_MB, (
        f"{size_mb:.1f} MB > {EXE_SIZE_LIMIT_MB} MB:\n{exe_contents(built_exe).stdout}")
    with capsys.disabled():
        print(f"\nSpotlightSupport.exe: {size_mb:.1f} MB (limit {EXE_SIZE_LIMIT_MB} MB)")


@pytest.mark.timeout(600)
def test_exe_without_a_chosen_person_shows_the_picker_and_cancel_ends_it(
        wine_run_env, tmp_path, capsys):
    """Launched plainly, the exe asks who the customer talks to; Escape cancels with exit 0."""
    env = wine_run_env
    company = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))["company"]
    started = time.monotonic()
    with running_exe(env, tmp_path) as (exe, output):
        picker = find_window(re.escape(company), visible=True, timeout=120)
        picker_s = time.monotonic() - started
        subprocess.run(["xdotool", "windowactivate", "--sync", picker], timeout=30,
                       capture_output=True)
        subprocess.run(["xdotool", "key", "--window", picker, "Escape"], check=True,
                       timeout=30)
        assert exe.wait(timeout=60) == 0, output.text()
    with capsys.disabled():
        print(f"\nlaunch to the picker window under Wine: {picker_s:.1f} s")


@pytest.mark.timeout(600)
def test_exe_shows_its_panel_and_a_second_start_only_brings_it_to_the_front(
        wine_run_env, tmp_path):
    """The exe's session panel (the Win32 window), found by its title: with nothing at the
    relay's address it says so, with Retry; a second start exits 0 at once (the named mutex)
    without a second panel; Alt+C closes the first (exit 1). Screenshot in
    test-artifacts/panel/exe-error.png."""
    env = wine_run_env
    company = json.loads((ROOT / "support.example.json").read_text(encoding="utf-8"))["company"]
    command = ["wine", str(EXE), "--relay", "ws://127.0.0.1:9", "--technician", "david"]
    with running_exe(env, tmp_path, *command[2:]) as (exe, output):
        title = f"{company} support: not connected"
        window = find_window(re.escape(title), visible=True, timeout=120)
        x, y, width, height = window_geometry(window)
        shots = ROOT / "test-artifacts" / "panel"
        shots.mkdir(parents=True, exist_ok=True)
        with mss.MSS() as sct:
            shot = sct.grab({"left": x, "top": y, "width": width, "height": height})
        Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX").save(shots / "exe-error.png")
        second = subprocess.run(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=120)
        assert second.returncode == 0, second.stdout
        panels = subprocess.run(["xdotool", "search", "--onlyvisible", "--name",
                                 f"{company} support: "], capture_output=True, text=True,
                                timeout=30).stdout.split()
        assert panels == [window], output.text()
        subprocess.run(["xdotool", "mousemove", "--window", window, "20", "20", "click", "1"],
                       check=True, timeout=30)
        subprocess.run(["xdotool", "key", "--clearmodifiers", "alt+c"], check=True, timeout=30)
        assert exe.wait(timeout=60) == 1, output.text()
