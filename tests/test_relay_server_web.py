"""The relay's web surface, against a real relay process: no cross-site websocket hijacking,
no route around the allow-list, and TLS 1.2 or later."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings

import pytest

from relay import server
from tests.helpers.relay import (
    make_certificate,
)
from tests.helpers.wire import (
    WAIT_S,
    raw_http,
    status_of,
    upgrade_request,
)

# --- Cross-site websocket hijacking ------------------------------------------------
# Also: test_relay_server.py::test_viewer_websocket_from_a_foreign_origin_is_refused,
# test_agent_endpoint_refuses_browsers, test_extra_origin_is_accepted.

FOREIGN_ORIGINS = [
    "http://evil.test",
    "null",
    "",
    "http://127.0.0.1.evil.test:{port}",
    "http://127.0.0.1:{port}.evil.test",
    "http://evil-127.0.0.1:{port}",
    "http://127.0.0.1:{port}@evil.test",
    "https://127.0.0.1:{port}",
    "ws://127.0.0.1:{port}",
    "http://127.0.0.1:{other}",
    "http://127.0.0.1",
    "http://127.0.0.2:{port}",
    "http://localhost:{port}",
    "http://127.0.0.1:{port}/",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_gets_403_before_any_websocket_data(relay, origin):
    """Other sites, null, look-alike hosts, another scheme or port: 403 and the connection
    closes; no upgrade, so no session data can flow."""
    value = origin.format(port=relay.port, other=relay.port + 1)
    reply = raw_http(relay.port, upgrade_request(relay.port, "/ws/viewer", f"Origin: {value}"))
    assert status_of(reply) == 403, reply[:200]
    assert b"Upgrade:" not in reply and b"origin not allowed" in reply


def test_two_origin_headers_are_refused_even_if_one_is_right(relay):
    """An upgrade with the right Origin and a second, foreign one gets 403."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, "/ws/viewer", f"Origin: http://127.0.0.1:{relay.port}",
        "Origin: http://evil.test"))
    assert status_of(reply) == 403


@pytest.mark.parametrize("origin", ["null", "http://127.0.0.1:{port}", "http://evil.test", ""])
def test_agent_endpoint_refuses_any_browser_origin(relay, origin):
    """The agent endpoint answers 403 to anything carrying an Origin header (browsers do)."""
    value = origin.format(port=relay.port)
    reply = raw_http(relay.port, upgrade_request(relay.port, "/ws/agent", f"Origin: {value}"))
    assert status_of(reply) == 403 and b"Upgrade:" not in reply


def test_relays_own_origin_upgrades(relay):
    """Control: the relay's own origin gets 101 on the viewer endpoint."""
    reply = raw_http(relay.port, upgrade_request(
        relay.port, "/ws/viewer", f"Origin: http://127.0.0.1:{relay.port}"), read_all=False)
    assert status_of(reply) == 101


# --- No route around login ---------------------------------------------------------
# Public (no login): the customer's page "/", its /customer.css and /favicon.svg; GET of
# the console's files on the allow-list ("/console/" = index.html, and "/console/<name>" for
# each regular, non-symlink file of viewer/ named [A-Za-z0-9][A-Za-z0-9._-]* with extension
# .html .js .css .svg .png .ico .wav; their old paths "/<name>" redirect there), /healthz,
# and /download/<name> for the files of --downloads (/download and /download/ redirect to
# /). The two websocket endpoints /ws/agent and /ws/viewer upgrade without a login, but
# answer nothing but an error to anything other than a hello; the viewer's needs a
# password or a live token.
# Also: test_relay_server.py::test_path_tricks_get_404, test_files_health_and_headers.

PATH_VARIANTS = [
    "/index.html/", "/%2e%2e/pyproject.toml", "/%2E%2E/pyproject.toml", "/.%2e/protocol.py",
    "/..", "/../relay.sqlite3", "//index.html", "///etc/passwd", "/index.html;",
    "/index.html;.js", "/Index.html", "/INDEX.HTML", "/\\index.html", "/..\\pyproject.toml",
    "/%5c..%5cpyproject.toml", "/%252e%252e/pyproject.toml", "/%25%32%65%25%32%65/x",
    "/index.html%00", "/index.html%00.js", "/%00", "/index.html#x", "/./index.html",
    "/viewer.js/.", "/download/../relay.sqlite3", "/download/%2e%2e/agent.exe",
    "/relay.sqlite3", "/relay-data/relay.sqlite3", "/.git/config", "/protocol.py",
    "/notes.txt", "/.hidden.js", "/link.js", "/healthz/", "/HEALTHZ", "/healthz;x",
    "/DOWNLOAD", "/ws/viewer/", "/ws//viewer", "/ws/viewer;x", "/WS/VIEWER", "/ws/viewer%2f",
    "/ws/%76iewer", "/ws/agent/", "http://127.0.0.1/index.html", "*",
    "/console/../pyproject.toml", "/console/%2e%2e/protocol.py", "/console//index.html",
    "/console/notes.txt", "/console/.hidden.js", "/console/link.js", "/CONSOLE/",
    "/console/index.html/", "/console/customer.css", "/customer.css/",
]


@pytest.fixture
def file_relay(relay_factory, tmp_path):
    """A relay serving a viewer folder with files that must not be served beside ones that
    must, and a downloads folder."""
    folder = tmp_path / "viewer"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>viewer</title>")
    (folder / "viewer.js").write_text("export const x = 1;\n")
    (folder / "notes.txt").write_text("SECRET-NOTES")
    (folder / ".hidden.js").write_text("SECRET-HIDDEN")
    (tmp_path / "outside.js").write_text("SECRET-OUTSIDE")
    (folder / "link.js").symlink_to(tmp_path / "outside.js")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "agent.exe").write_bytes(b"MZ")
    return relay_factory("--viewer-dir", str(folder), "--downloads", str(downloads))


@pytest.mark.parametrize("path", PATH_VARIANTS)
def test_path_variants_are_refused(file_relay, path):
    """Every path not exactly on the allow-list is refused (404, or 400 when malformed), as a
    plain GET and as a websocket upgrade; never a file's content."""
    port = file_relay.port
    plain_get = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("latin-1")
    for request in (plain_get, upgrade_request(port, path)):
        reply = raw_http(port, request)
        assert status_of(reply) in (400, 404), reply[:200]
        assert b"SECRET" not in reply and b"SQLite" not in reply


def test_raw_nul_and_other_methods_are_refused(file_relay):
    """A NUL byte in the request line, POST, PUT, HEAD and OPTIONS get no file."""
    port = file_relay.port
    requests = ["GET /index.html\0 HTTP/1.1\r\nHost: x\r\n\r\n"] + [
        f"{method} /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        for method in ("POST", "PUT", "HEAD", "OPTIONS", "DELETE")]
    for request in requests:
        reply = raw_http(port, request.encode("latin-1"))
        expected = (400, 404) if "\0" in request else (405,)
        assert status_of(reply) in expected, (request, reply[:200])
        assert b"<title>viewer" not in reply


def test_only_the_allow_list_is_served(file_relay):
    """Control for the variants above: exactly these paths answer 200."""
    port = file_relay.port
    for path in ("/", "/console/", "/console/index.html", "/console/viewer.js", "/healthz",
                 "/download/agent.exe"):
        reply = raw_http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(reply) == 200, path


# --- TLS (relay side) ---------------------------------------------------------------
# Also: test_relay_server.py::test_tls_serves_wss_and_https.


def old_tls_client() -> ssl.SSLContext:
    """A client that offers only TLS 1.0/1.1. OpenSSL 3's default security level forbids
    them even to offer, so this client lowers it (@SECLEVEL=0) on purpose; the control
    server below proves it really can speak TLS 1.1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def tls_version_against(port: int, client: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock, \
            client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        return tls.version() or ""


def test_tls_relay_refuses_tls_1_1_and_speaks_1_2_and_1_3(relay_factory, tmp_path):
    """--cert/--key: a TLS 1.0/1.1-only client fails the handshake (while a permissive
    server accepts the same client); TLS 1.2 and 1.3 clients get through."""
    cert, key = make_certificate(tmp_path)
    relay = relay_factory("--cert", str(cert), "--key", str(key))
    with pytest.raises(ssl.SSLError):
        tls_version_against(relay.port, old_tls_client())

    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve_one():
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), permissive.wrap_socket(conn, server_side=True):
                pass
        control = threading.Thread(target=serve_one)
        control.start()
        assert tls_version_against(listener.getsockname()[1], old_tls_client()) == "TLSv1.1"
        control.join(WAIT_S)

    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        client = ssl.create_default_context(cafile=str(cert))
        client.minimum_version = client.maximum_version = version
        assert tls_version_against(relay.port, client) == name


def test_tls_context_has_a_tls_1_2_minimum(tmp_path):
    """The relay's server context itself sets TLS 1.2 as the minimum version."""
    cert, key = make_certificate(tmp_path)
    assert server.tls_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
