"""The customer's page at / and the console's move to /console/, from a real relay, read over
HTTP and in Chromium."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
EXE = b"MZ\x90\x00 a stand-in for SpotlightSupport.exe" * 1000  # 40 KB
MARKUP = '<img src=x id="injected">Eve & <b>Co</b>: 555 <script>alert(1)</script>'


def get(relay, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET, redirects not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "SpotlightSupport.exe").write_bytes(EXE)
    (folder / "spotlight-support").write_bytes(b"\x7fELF stand-in")
    return folder


def test_customer_page_says_what_happens_and_offers_the_exe_with_its_size(relay_factory,
                                                                          downloads) -> None:
    """/ names the company, says in plain words what the program does and that the customer
    stays in charge, links the Windows program first with its size, lists the phone lines,
    explains SmartScreen and links the staff's sign-in; the link serves the file as is."""
    relay = relay_factory("--downloads", str(downloads), "--company", "Acme IT",
                          "--phone", "David: 269 998 1389", "--phone", "Petur: 269 998 0387")
    status, headers, page = get(relay, "/")
    text = page.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<h1>Acme IT: remote support</h1>" in text
    for promise in ("shows your screen", "only while you allow it", "Nothing is installed",
                    "pause or end the session at any time", "billed"):
        assert promise in text
    exe_link = text.index('href="/download/SpotlightSupport.exe"')
    assert exe_link < text.index('href="/download/spotlight-support"')
    assert "SpotlightSupport.exe, 40 KB" in text
    assert '<span class="who">David</span> <a href="tel:2699981389">269 998 1389</a>' in text
    assert "Petur" in text
    for words in ("Windows protected your PC", "More info", "Run anyway", "signed"):
        assert words in text
    assert '<a class="staff" href="/console/">Support staff sign in</a>' in text
    status, headers, body = get(relay, "/download/SpotlightSupport.exe")
    assert status == 200 and body == EXE
    assert headers["Content-Disposition"] == 'attachment; filename="SpotlightSupport.exe"'


def test_customer_page_without_programs_or_phones_says_whom_to_ask(relay_factory) -> None:
    """With no --downloads folder and no --phone the page says the program is not offered
    and whom to call, not a blank list."""
    relay = relay_factory()
    _, _, page = get(relay, "/")
    assert "not offered on this server yet" in page.decode()
    assert "Call the support person who asked you" in page.decode()


def test_company_and_phone_lines_are_shown_as_text(relay_factory, downloads) -> None:
    """A company name or phone line with markup in it is escaped, never markup; a phone
    link's target keeps only digits."""
    relay = relay_factory("--downloads", str(downloads), "--company", "<b>Acme</b> & Co",
                          "--phone", MARKUP)
    text = get(relay, "/")[2].decode()
    assert "&lt;b&gt;Acme&lt;/b&gt; &amp; Co" in text and "<b>Acme" not in text
    assert "<script>" not in text and "<img src=x" not in text
    assert 'href="tel:5551"' in text  # 555 and the 1 of alert(1): digits only, nothing else


def test_a_new_exe_is_offered_without_a_restart(relay_factory, tmp_path) -> None:
    """A program copied into --downloads while the relay runs is on the page and served at
    once; one removed is gone from both; a dot-named copy in progress is not offered; a
    folder that vanished leaves the page saying so, not an error."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    relay = relay_factory("--downloads", str(folder))
    assert "not offered on this server yet" in get(relay, "/")[2].decode()
    (folder / ".SpotlightSupport.exe.part").write_bytes(EXE[:100])
    assert "not offered on this server yet" in get(relay, "/")[2].decode()
    (folder / ".SpotlightSupport.exe.part").rename(folder / "SpotlightSupport.exe")
    assert 'href="/download/SpotlightSupport.exe"' in get(relay, "/")[2].decode()
    assert get(relay, "/download/SpotlightSupport.exe")[2] == EXE[:100]
    (folder / "SpotlightSupport.exe").unlink()
    assert 'href="/download/SpotlightSupport.exe"' not in get(relay, "/")[2].decode()
    assert get(relay, "/download/SpotlightSupport.exe")[0] == 404
    folder.rmdir()
    status, _, page = get(relay, "/")
    assert status == 200 and "not offered on this server yet" in page.decode()


def test_a_slow_download_outlasts_the_handshake_timeout(relay_factory, tmp_path) -> None:
    """A customer who takes longer to download than the websocket handshake may take still
    gets the whole file, with its length and the security headers up front."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    exe = os.urandom(12 * 1024 * 1024)
    (folder / "SpotlightSupport.exe").write_bytes(exe)
    relay = relay_factory("--downloads", str(folder), "--handshake-timeout", "1")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        client.connect(("127.0.0.1", relay.port))
        client.sendall(b"GET /download/SpotlightSupport.exe HTTP/1.1\r\nHost: x\r\n\r\n")
        started, received = time.monotonic(), bytearray()
        while chunk := client.recv(64 * 1024):
            received += chunk
            time.sleep(0.02)  # a slow line: about 3 MB/s at most
        took = time.monotonic() - started
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert took > 1  # the handshake timeout had passed long before the end
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(exe)}".encode() in head and b"X-Frame-Options: DENY" in head
    assert body == exe


@pytest.mark.parametrize(("old", "new"), [
    ("/index.html", "/console/index.html"),
    ("/viewer.js", "/console/viewer.js"),
    ("/protocol.js", "/console/protocol.js"),
    ("/viewer.css", "/console/viewer.css"),
    ("/pointer.svg", "/console/pointer.svg"),
    ("/console", "/console/"),
    ("/download", "/"),
    ("/download/", "/"),
    ("/viewer.js?x=%0d%0aSet-Cookie:a", "/console/viewer.js"),
])
def test_old_and_slashless_paths_redirect(relay_factory, old, new) -> None:
    """The console's old file paths, /console and /download(/) answer 301 to a fixed path
    of ours (a query string is never carried into Location), with the security headers."""
    relay = relay_factory()
    status, headers, _ = get(relay, old)
    assert (status, headers["Location"]) == (301, new)
    assert headers["X-Frame-Options"] == "DENY" and "Set-Cookie" not in headers
    assert get(relay, new)[0] == 200


def test_unknown_paths_are_not_redirected(relay_factory) -> None:
    """Only files the console has are redirected: anything else is a 404."""
    relay = relay_factory()
    for path in ("/nothing.js", "/console/nothing.js", "/download.css", "/viewer.js/"):
        assert get(relay, path)[0] == 404, path


def test_a_bad_phone_line_is_one_line_of_error(tmp_path) -> None:
    """serve --phone with an empty or unprintable line exits 2 with one line, no traceback."""
    for bad in ("", "David\n269"):
        result = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--data", str(tmp_path), "--phone", bad],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "is not a phone line" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.browser
def test_customer_page_in_chromium_and_the_sign_in_link_opens_the_console(
        relay_factory, downloads) -> None:
    """In Chromium the page is styled under the CSP with no error, shows the phone lines as
    text, fits a phone's width; "Support staff sign in" opens the console at /console/ with
    every file it loads found. Screenshots at 1280x800 and 390x844 are kept."""
    from playwright.sync_api import sync_playwright

    relay = relay_factory("--downloads", str(downloads), "--company", "Acme IT",
                          "--phone", "David: 269 998 1389", "--phone", MARKUP)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    loaded: dict[str, int] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(relay.http_url + "/")
            page.screenshot(path=str(ARTIFACTS / "customer-page-phone.png"), full_page=True)
            phone_width = page.evaluate("document.scrollingElement.scrollWidth")
            page.set_viewport_size({"width": 1280, "height": 800})
            page.screenshot(path=str(ARTIFACTS / "customer-page.png"), full_page=True)
            colour = page.locator("a.download").first.evaluate(
                "a => getComputedStyle(a).backgroundColor")
            phones = page.get_by_test_id("phones").inner_text()
            injected = page.locator("#injected").count()
            smartscreen = page.locator("ol.smartscreen").inner_text()
            page.on("response", lambda r: loaded.__setitem__(r.url, r.status))
            page.get_by_role("link", name="Support staff sign in").click()
            page.get_by_test_id("login-user").wait_for()
            page.wait_for_load_state("networkidle")
            console_url = page.url
        finally:
            browser.close()
    assert colour == "rgb(36, 87, 197)"  # the stylesheet applied: --accent
    assert phone_width <= 390  # no sideways scrolling on a phone
    assert "David 269 998 1389" in phones and injected == 0
    assert MARKUP.replace(": ", " ") in phones  # name and number, the markup as text
    assert "More info" in smartscreen and "Run anyway" in smartscreen
    assert console_url == relay.http_url + "/console/"
    for name in ("viewer.js", "protocol.js", "connection.js", "viewer.css", "favicon.svg",
                 "pointer.svg"):
        assert loaded.get(f"{relay.http_url}/console/{name}") == 200, (name, loaded)
    assert problems == []
