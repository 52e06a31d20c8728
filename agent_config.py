"""The customer's program's configuration (support.json): read, checked, explained.

Standard library and protocol.py only, so that build.spec and ``agent.py --check-config``
check a configuration with exactly the parser the program uses, on any machine.

    {"company": "Acme IT",                      the name shown to the customer
     "relay": "wss://host[:port][/prefix]",     the support server (ws:// only to localhost)
     "people": [{"id": "david", "name": "David"}, ...],    1-50 support people
     "ca_cert": "" | PEM text | a file name next to the configuration,   optional pinned CA
     "phone": "269 998 1389"}                   optional: whom the customer calls when stuck

A wrong configuration raises ``ConfigError``: ``str()`` says exactly what is wrong (for the
person who builds the program, and the log); ``customer`` is one plain sentence for the
customer, naming the phone number when the configuration could be read far enough to hold one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import protocol as p

CONFIG_NAME = "support.json"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_PEOPLE = 50
MAX_PHONE_CHARS = 40


class ConfigError(Exception):
    """The configuration is missing or wrong. ``str()`` is the detail; ``customer`` the
    sentence for the customer."""

    def __init__(self, detail: str, company: str = "", phone: str = "") -> None:
        super().__init__(detail)
        self.company, self.phone = company, phone

    @property
    def customer(self) -> str:
        if self.phone:
            who = self.company or "your support company"
            return (f"This program cannot connect because its settings are wrong: please call "
                    f"{who} on {self.phone}.")
        return ("This program cannot connect because its settings are damaged or missing: "
                "please ask the company that sent you this program for a new copy.")


@dataclass(frozen=True)
class Config:
    company: str
    relay: str
    people: tuple[tuple[str, str], ...]  # (id, display name)
    ca_cert: str = ""  # PEM text of the one CA to trust, "" for the system's store
    phone: str = ""


def load_config(path: Path) -> Config:
    """The configuration in ``path``; ConfigError when it cannot be read or is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e})") from None
    except ValueError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    return parse_config(data, path.parent)


def parse_config(data: Any, folder: Path) -> Config:
    """Check every field of a parsed configuration; a ``ca_cert`` file name is read from
    ``folder`` (where the configuration is)."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a JSON object")
    company, phone = data.get("company"), data.get("phone", "")
    contact = {"company": company if isinstance(company, str) else "",
               "phone": phone if isinstance(phone, str) and _is_phone(phone) else ""}

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(what, **contact)

    need(isinstance(company, str) and 0 < len(company) <= 100,
         '"company" must be a name of 1-100 characters')
    need(isinstance(phone, str) and (phone == "" or _is_phone(phone)),
         f'"phone" must be a phone number of at most {MAX_PHONE_CHARS} characters')
    relay, people = data.get("relay"), data.get("people")
    need(isinstance(relay, str) and bool(relay), '"relay" must be the support server\'s URL')
    need(isinstance(people, list) and 0 < len(people) <= MAX_PEOPLE,
         f'"people" must list 1-{MAX_PEOPLE} support people')
    pairs = []
    for person in people:
        need(isinstance(person, dict) and isinstance(person.get("name"), str)
             and 0 < len(person["name"]) <= p.MAX_NAME_CHARS and person["name"].isprintable(),
             f'each of "people" needs an "id" and a "name" of 1-{p.MAX_NAME_CHARS} characters')
        try:
            p.check_technician_id(person.get("id"))
        except p.ProtocolError as e:
            need(False, f"support person id {person.get('id')!r}: {e}")
        pairs.append((person["id"], person["name"]))
    need(len({pid for pid, _ in pairs}) == len(pairs), 'two of "people" have the same "id"')
    ca = data.get("ca_cert") or ""
    need(isinstance(ca, str), '"ca_cert" must be PEM text or a file name')
    if ca and "-----BEGIN" not in ca:
        try:
            ca = (folder / ca).read_text(encoding="ascii")
        except (OSError, ValueError) as e:
            need(False, f'"ca_cert": the file {folder / ca} cannot be read '
                        f'({getattr(e, "strerror", None) or e})')
    if ca:
        try:
            make_ssl_context(ca)
        except (ssl.SSLError, ValueError) as e:
            need(False, f'"ca_cert" is not a usable PEM certificate ({e})')
    try:
        agent_url(relay)
    except ConfigError as e:
        need(False, str(e))
    return Config(company, relay, tuple(pairs), ca, phone)


def _is_phone(text: str) -> bool:
    return 0 < len(text) <= MAX_PHONE_CHARS and text.isprintable()


def agent_url(relay: str, technician: str = "") -> str:
    """``<relay>/ws/agent`` as a websocket URL; ws:// only to this machine. With the support
    person's id as ``?technician=ID``: a cluster's HAProxy routes on it."""
    parts = urllib.parse.urlsplit(relay.strip())
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"the support server address {relay!r} must start with wss://")
    if scheme == "ws" and not _is_local(parts.hostname):
        raise ConfigError(f"the unencrypted address {relay!r} is refused: ws:// is only "
                          "allowed to this computer (localhost); use wss://")
    query = urllib.parse.urlencode({"technician": technician}) if technician else ""
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/agent",
                                    query, ""))


def _is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def make_ssl_context(ca_pem: str) -> ssl.SSLContext:
    """Verify the relay's certificate: against the pinned CA only, when one is configured."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else \
        ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def link_ssl_context(url: str, ca_pem: str) -> ssl.SSLContext | None:
    """The TLS context for the agent's link to ``url``: only a wss:// link has one (it
    costs memory: OpenSSL's verification store, on Windows the system's certificates)."""
    return make_ssl_context(ca_pem) if url.startswith("wss:") else None


def check_config(path: Path) -> tuple[bool, str]:
    """``agent.py --check-config``: (whether ``path`` is a configuration this program
    accepts, one line saying so or what is wrong)."""
    try:
        config = load_config(path)
    except ConfigError as e:
        return False, f"{path}: {e}"
    people = ", ".join(pid for pid, _ in config.people)
    return True, (f"{path}: ok ({config.company!r}, relay {config.relay}, support people "
                  f"{people}{', pinned CA' if config.ca_cert else ''})")


def config_paths() -> list[Path]:
    """Where support.json is looked for: next to the exe or script, then inside the exe."""
    if getattr(sys, "frozen", False):
        paths = [Path(sys.executable).resolve().parent / CONFIG_NAME]
        if hasattr(sys, "_MEIPASS"):
            paths.append(Path(sys._MEIPASS) / CONFIG_NAME)
        return paths
    return [Path(__file__).resolve().parent / CONFIG_NAME]
