"""The customer's page at /download, from a real relay, read over HTTP and in Chromium."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
EXE = b"MZ\x90\x00 a stand-in for SpotlightSupport.exe"


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, dict(answer.headers), answer.read()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "SpotlightSupport.exe").write_bytes(EXE)
    (folder / "spotlight-support").write_bytes(b"\x7fELF stand-in")
    return folder


def test_download_page_explains_the_session_and_offers_the_exe_first(relay_factory,
                                                                      downloads) -> None:
    """The page names the company, says what will happen, how to end it and that nothing is
    installed, and links the Windows program first; the link serves the file as is."""
    relay = relay_factory("--downloads", str(downloads), "--company", "Acme IT")
    status, headers, page = fetch(relay.http_url + "/download")
    text = page.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<h1>Acme IT: remote support</h1>" in text
    for promise in ("yellow", "green", "right-click the icon and choose Close",
                    "Nothing is installed", "Only the support person you chose"):
        assert promise in text
    exe_link = text.index('href="/download/SpotlightSupport.exe"')
    assert exe_link < text.index('href="/download/spotlight-support"')
    status, headers, body = fetch(relay.http_url + "/download/SpotlightSupport.exe")
    assert body == EXE and headers["Content-Disposition"].startswith("attachment")


def test_download_page_without_programs_says_whom_to_ask(relay_factory) -> None:
    """With no --downloads folder the page says the program is not offered, not a blank list."""
    relay = relay_factory()
    _, _, page = fetch(relay.http_url + "/download")
    assert "not offered on this server yet" in page.decode()


def test_company_name_is_shown_as_text(relay_factory, downloads) -> None:
    """A company name with markup in it is escaped, never markup."""
    relay = relay_factory("--downloads", str(downloads), "--company", "<b>Acme</b> & Co")
    _, _, page = fetch(relay.http_url + "/download")
    assert "&lt;b&gt;Acme&lt;/b&gt; &amp; Co" in page.decode() and "<b>Acme" not in page.decode()


@pytest.mark.browser
def test_download_page_renders_styled_under_the_csp(relay_factory, downloads) -> None:
    """In Chromium the page loads its stylesheet with no CSP violation; a screenshot is kept."""
    from playwright.sync_api import sync_playwright

    relay = relay_factory("--downloads", str(downloads), "--company", "Acme IT")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(relay.http_url + "/download")
            button = page.locator("a.download").first
            colour = button.evaluate("a => getComputedStyle(a).backgroundColor")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "download-page.png"), full_page=True)
        finally:
            browser.close()
    assert colour == "rgb(36, 87, 197)"  # the stylesheet applied: --accent
    assert problems == []
