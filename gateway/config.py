"""The gateway's one config file (TOML) as frozen dataclasses.

Every error names the key path and the problem (``upstream.address: expected "host:port"``), and
unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import phonenumbers

from gateway.consent import caps, hours
from gateway.consent.campaign import (
    DEFAULT_REPLIES,
    LOCAL_REPLY_NAMES,
    REPLY_NAMES,
    AccountMatch,
    Business,
    Campaign,
    CampaignDirectory,
    Clarify,
    FooterMode,
    InboundUnknown,
    Keywords,
    ListMode,
    LocalReplies,
    MessageList,
    OutboundUnknown,
    ReOptIn,
    Replies,
    ReplyOrigin,
    WordList,
    account_key,
    default_campaign,
)
from gateway.consent.ctia import LANGUAGE_NAMES, reply_key
from gateway.consent.keywords import ENGLISH, LANGUAGE_PACKS
from gateway.consent.link import LinkSigner
from gateway.consent.model import AddressKind, ScopeKind, SmsAddress
from gateway.consent.numbers import normalise
from gateway.consent.policy import DEFAULT_REJECT_STATUSES, RejectStatuses
from gateway.errors import GatewayError
from gateway.messages.footer import FooterSettings
from gateway.messages.replies import one_part_problem
from gateway.smpp.session import SessionConfig
from gateway.store.base import StoreError
from gateway.store.factory import check_url
from gateway.text.dcs import Alphabet
from gateway.text.footer import has_link


class ConfigError(GatewayError):
    """A config file that cannot be used; the message starts with the key path."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    cert_file: str | None = None  # our certificate (required on the listener)
    key_file: str | None = None
    ca_file: str | None = None  # listener: require client certs signed by it; upstream: trust it
    verify: bool = True  # upstream: check the SMSC's certificate and host name
    server_hostname: str | None = None  # upstream: name to check instead of the address host
    # Listener with ca_file: a bind's system_id must be a name of the client's certificate.
    system_id_in_certificate: bool = False


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class BindLimits:
    """``[server.binds]``: failed-bind throttling and the SMSC's bind rate
    (gateway.proxy.binds says what each does)."""

    delay_after: int = 3
    delay_s: float = 0.5
    max_delay_s: float = 8.0
    block_after: int = 10
    block_s: float = 300.0
    window_s: float = 300.0
    rate_per_s: float = 20.0  # binds the gateway opens towards the SMSC per second
    burst: int = 20
    max_tracked: int = 100_000  # addresses and accounts remembered (the oldest forgotten)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    listen: Address = field(default_factory=lambda: Address("0.0.0.0", 2775))  # noqa: S104
    # Share the listening port with other processes (SO_REUSEPORT), only when asked: by
    # default a second gateway on the same port fails to start instead of splitting traffic.
    reuse_port: bool = False
    # Processes serving the listener (gateway.workers): 1 is one process and no supervisor;
    # "auto" is the number of CPUs this process may run on.
    workers: int | Literal["auto"] = 1
    # A worker whose event loop sent no watchdog ping for this long is killed and restarted
    # (0 in the file, None here: never).
    worker_timeout_s: float | None = 30.0
    max_sessions: int = 1000
    tls: TlsConfig | None = None
    # Connections that have not bound yet have limits of their own (gateway.proxy.listener).
    max_unbound: int = 100
    max_unbound_per_address: int = 10
    max_sessions_per_address: int = 0  # 0: no limit
    max_sessions_per_account: int = 0  # 0: no limit
    bind_timeout_s: float = 10.0  # a connection must send its bind within this
    binds: BindLimits = field(default_factory=BindLimits)  # [server.binds]
    # Client addresses let in at all (empty: any), and per account the addresses it may bind
    # from ([server.accounts.ID] allow_networks; accounts keyed as consent.account_match).
    allow_networks: tuple[Network, ...] = ()
    account_networks: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    # Behind an L4 balancer: every connection starts with a PROXY protocol header (v1 or v2)
    # naming the client, sent by a balancer of proxy_networks within proxy_header_timeout_s.
    proxy_protocol: bool = False
    proxy_networks: tuple[Network, ...] = ()
    proxy_header_timeout_s: float = 5.0


CREDENTIALS_VARIABLE: Final = "${CREDENTIALS_DIRECTORY}"


def secret_path(key: str, text: str) -> Path:
    """A ``*_file`` path; ``${CREDENTIALS_DIRECTORY}`` in it is the directory where systemd
    puts the unit's ``LoadCredential=`` files (set only for the service itself)."""
    if CREDENTIALS_VARIABLE in text:
        directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
        if not directory:
            raise ConfigError(
                f"{key}: {CREDENTIALS_VARIABLE} is not set (only a systemd service with "
                "LoadCredential= has it)"
            )
        text = text.replace(CREDENTIALS_VARIABLE, directory)
    return Path(text)


def read_secret_file(key: str, text: str, *, private: int = 0o006) -> bytes:
    """A secret file's content, stripped; ConfigError naming ``key`` when it cannot be read,
    is empty, or has any of the ``private`` mode bits (by default: other users may read or
    write it)."""
    path = secret_path(key, text)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if mode & private:
        who = "other users" if private == 0o006 else "others"
        raise ConfigError(f"{key}: {path} can be read or written by {who}; chmod 600 {path}")
    if not data:
        raise ConfigError(f"{key}: {path} is empty")
    return data


def read_secret_env(key: str, variable: str) -> str:
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(f"{key}: environment variable {variable} is not set")
    return value


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret as configured under ``key``: inline (``NAME``), in an environment variable
    (``NAME_env``) or in a file (``NAME_file``, see ``read_secret_file``). Read when used
    (``read()``), so a command that never uses it works without access to it."""

    key: str  # "upstream.service_bind.password": errors name key, key_env or key_file
    value: str | None = field(default=None, repr=False)
    env: str | None = None
    file: str | None = None

    def read(self) -> str:
        """The secret now; ConfigError naming the key when it cannot be read."""
        if self.env is not None:
            return read_secret_env(f"{self.key}_env", self.env)
        if self.file is not None:
            data = read_secret_file(f"{self.key}_file", self.file)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{self.key}_file: {self.file} is not UTF-8") from None
        return self.value or ""


NO_SECRET: Final = Secret("")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceBindConfig:
    """A bind of the gateway's own, used for auto-replies when no client session can carry them."""

    system_id: str
    password: Secret = NO_SECRET  # password, password_env or password_file
    system_type: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    address: Address
    connect_timeout_s: float = 10.0
    tls: TlsConfig | None = None
    # data_coding 0 means "SMSC default alphabet": what this SMSC takes it to be.
    default_alphabet: str = "gsm7"
    service_bind: ServiceBindConfig | None = None


# The SMPP session's own defaults are stated once, in SessionConfig; [session] starts from them.
_PROTOCOL: Final = SessionConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTimers:
    """``[session]``: both legs' session settings (the protocol's are SessionConfig's fields)."""

    window_size: int = _PROTOCOL.window_size
    response_timeout_s: float = _PROTOCOL.response_timeout_s
    enquire_link_interval_s: float | None = _PROTOCOL.enquire_link_interval_s
    inactivity_timeout_s: float | None = _PROTOCOL.inactivity_timeout_s
    bind_timeout_s: float = _PROTOCOL.bind_timeout_s
    unbind_timeout_s: float = _PROTOCOL.unbind_timeout_s
    max_pdu_length: int = _PROTOCOL.max_pdu_length
    relay_vendor_pdus: bool = _PROTOCOL.relay_vendor_pdus
    # A peer that reads nothing the gateway sends for this long is dropped (None: never).
    write_stall_timeout_s: float | None = 60.0
    # A PDU must be complete this long after its first octets (a trickling peer is dropped).
    partial_pdu_timeout_s: float | None = 30.0


DEFAULT_STORE_URL = "sqlite:///var/lib/smpp-gateway/consent.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    url: str = DEFAULT_STORE_URL


class TokenRole(StrEnum):
    """What an admin API token may do."""

    READ = "read"  # GET the consent endpoints
    WRITE = "write"  # GET, and change consent (POST)


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerToken:
    """An admin API token with its secret read: what the API compares offered tokens with."""

    name: str  # recorded as the ``by`` of every change made with it
    role: TokenRole
    secret: bytes = field(repr=False)


# Secrets an HTTP client can send as they are: visible ASCII, no spaces.
_SECRET_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminToken:
    """One ``[[admin.tokens]]`` entry (or the older ``admin.token`` / ``token_env``) as configured.

    Its secret is read only when the admin API needs it (``secret()``): a variable that is not
    set or a file the staff CLI's user may not read must not stop the CLI, which never uses it.
    """

    name: str
    role: TokenRole
    key: str  # where it is configured ("admin.tokens[0]", "admin"), named in errors
    token: str | None = field(default=None, repr=False)  # the secret inline
    token_env: str | None = None  # the secret in this environment variable
    token_file: str | None = None  # the secret in this file (stripped), not readable by others
    strict: bool = True  # visible ASCII only (the older admin.token was not checked)

    def secret(self) -> str:
        """The secret, read now; ConfigError naming the key when it cannot be used."""
        if self.token_env is not None:
            key = f"{self.key}.token_env"
            value = read_secret_env(key, self.token_env)
        elif self.token_file is not None:
            key = f"{self.key}.token_file"
            try:
                value = read_secret_file(key, self.token_file).decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{key}: {self.token_file} is not UTF-8") from None
        else:
            key = f"{self.key}.token"
            value = self.token or ""
            if not value:
                raise ConfigError(f"{key}: must not be empty")
        if self.strict and not set(value) <= _SECRET_CHARS:
            raise ConfigError(f"{key}: the token must be visible ASCII characters, no spaces")
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    listen: Address | None = None
    tokens: tuple[AdminToken, ...] = ()
    tls: TlsConfig | None = None  # [admin.tls]: HTTPS (ca_file: require client certificates)

    def bearer_tokens(self) -> tuple[BearerToken, ...]:
        """Every token with its secret read (the admin API calls this once, at start).

        Raises ConfigError naming the key of the first token whose secret cannot be read, or
        that has the same secret as another (its changes could not be told apart)."""
        out: list[BearerToken] = []
        seen: dict[bytes, str] = {}
        for token in self.tokens:
            secret = token.secret().encode("utf-8")
            if secret in seen:
                raise ConfigError(f"{token.key}: the same secret as {seen[secret]}")
            seen[secret] = token.key
            out.append(BearerToken(name=token.name, role=token.role, secret=secret))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """``[audit]``: the tamper-evident trail (gateway.audit). ``path`` None: no trail."""

    path: str | None = None
    fsync: bool = True
    head_log_interval_s: float = 60.0
    refusal_burst: int = 10  # refused MTs of one kind written one by one per interval
    refusal_interval_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacyConfig:
    """``[privacy]``: how subscriber numbers appear in logs and in the audit trail.

    A number is shown as an HMAC-SHA256 pseudonym under a secret key (``key``, ``key_env`` or
    ``key_file``; by default a key file created beside the store), with ``show_digits`` of its
    last digits in clear (0 by default): nobody without the key can turn a pseudonym back into
    the number by trying every number."""

    key: str | None = field(default=None, repr=False)
    key_env: str | None = None
    key_file: str | None = None
    show_digits: int = 0

    def secret(self) -> bytes | None:
        """The configured key, read now (None: none configured); ConfigError naming the key."""
        if self.key_env is not None:
            return read_secret_env("privacy.key_env", self.key_env).encode()
        if self.key_file is not None:
            data = read_secret_file("privacy.key_file", self.key_file, private=0o077)
            if len(data) < 16:
                raise ConfigError(f"privacy.key_file: {self.key_file} holds fewer than 16 bytes")
            return data
        if self.key is not None:
            if len(self.key) < 16:
                raise ConfigError("privacy.key: at least 16 characters")
            return self.key.encode()
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOutLinkConfig:
    """``[optout_link]``: the signed web opt-out link ``{optout_url}`` stands for in footers.

    ``base_url`` is the public address of the pages (the token is appended), ``listen`` where
    the gateway serves them (behind the reverse proxy that terminates TLS for ``base_url``)."""

    base_url: str
    listen: Address
    key: Secret  # key, key_env or key_file: at least 16 bytes
    ttl_days: int = 90

    def secret(self) -> bytes:
        """The signing key, read now; ConfigError naming the key."""
        value = self.key.read().encode("utf-8")
        if len(value) < 16:
            raise ConfigError(f"{self.key.key}: at least 16 bytes")
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"
    log_bodies: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPolicy:
    """Per client account (system_id) settings."""

    # Answer a refused MT with OK and report it with a delivery receipt stat:REJECTD instead.
    accept_and_report: bool = False
    # The sender the SMSC puts on this account's MTs that leave source_addr empty; consent is
    # checked as if the MT came from it (without it, an empty source is the default campaign).
    default_sender: SmsAddress | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentConfig:
    enabled: bool = True
    default_country: str = "US"
    short_code_max_length: int = 8
    statuses: RejectStatuses = DEFAULT_REJECT_STATUSES
    directory: CampaignDirectory = field(default_factory=lambda: CampaignDirectory(()))
    # Keyed by account key (account_key(system_id, account_match)).
    accounts: Mapping[str, AccountPolicy] = field(default_factory=dict)
    account_match: AccountMatch = AccountMatch.FOLD
    # Vendor-range requests from clients (which may carry messages the gateway cannot read)
    # are refused unless this is set; the SMSC's vendor PDUs to clients are relayed as ever.
    relay_client_vendor_pdus: bool = False
    # At most this many auto-replies per subscriber per hour (opt-out confirmations excepted:
    # exactly one is always sent).
    reply_limit_per_hour: int = 5
    # The SMSC's resend of an MO the gateway already acted on is recognised for this long.
    mo_dedup_window_s: float = 600.0
    # Parts of a long MO are held for keyword detection this long.
    mo_reassembly_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    instance: str
    server: ServerConfig
    upstream: UpstreamConfig
    session: SessionTimers
    store: StoreConfig
    admin: AdminConfig
    logging: LoggingConfig
    consent: ConsentConfig = field(default_factory=ConsentConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig())  # [text]
    audit: AuditConfig = field(default_factory=AuditConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    optout_link: OptOutLinkConfig | None = None
    shutdown_grace_s: float = 10.0
    source: str | None = None  # the file it came from


# --- reading ----------------------------------------------------------------------------------


class _Table:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, data: dict[str, Any], path: str) -> None:
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def has(self, key: str) -> bool:
        return key in self._data

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self._key(key)}: required")
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self._key(key)}: expected a string, got {type(value).__name__}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value: str = self.string(key, default)
        if value not in choices:
            raise ConfigError(f"{self._key(key)}: expected one of {', '.join(choices)}")
        return value

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._key(key)}: expected an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self._key(key)}: must be between {minimum} and {maximum}")
        return value

    def seconds(self, key: str, default: float | None, *, allow_off: bool = False) -> Any:
        """A duration in seconds; 0 means "off" where ``allow_off``."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._key(key)}: expected a number of seconds")
        if value < 0 or (value == 0 and not allow_off):
            raise ConfigError(f"{self._key(key)}: must be positive")
        return None if value == 0 else float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self._key(key)}: expected true or false")
        return value

    def address(
        self,
        key: str,
        default: Address | None = None,
        *,
        required: bool = False,
        listening: bool = False,
    ) -> Any:
        text = self.string(key, None, required=required)
        if text is None:
            return default
        return parse_address(text, self._key(key), listening=listening)

    def table(self, key: str) -> _Table | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(f"{self._key(key)}: expected a table")
        return _Table(value, self._key(key))

    def tables(self, key: str) -> Iterator[_Table]:
        value = self._get(key)
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self._key(key)}: expected an array of tables ([[{key}]])")
        for i, item in enumerate(value):
            yield _Table(item, f"{self._key(key)}[{i}]")

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._key(key)}: expected a list of strings")
        return tuple(value)

    def raw(self, key: str) -> Any:
        return self._get(key)

    def finish(self) -> None:
        """Unknown keys are errors: a misspelt key must not silently become a default."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key")


def parse_address(text: str, key: str, *, listening: bool = False) -> Address:
    """``host:port`` (``[v6]:port``); a listening address may use port 0 (any free port)."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    lowest = 0 if listening else 1
    if not sep or not host or not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise ConfigError(f'{key}: expected "host:port", got {text!r}')
    if _DOTTED_QUAD.fullmatch(host):
        # Four dotted numbers are an IPv4 address or nothing (a resolver would only say
        # "not known" later, at start or at the first bind).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{key}: {host!r} is not an IPv4 address") from None
    return Address(host, int(port_text))


_DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")

# The placeholders templates support: footers {brand} and {optout_url} ({link}, its older name;
# gateway.text.footer; they need [optout_link]), replies {brand} and, in the list opt-out reply,
# {list} (gateway.consent.campaign.render).
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
FOOTER_PLACEHOLDERS = ("brand", "optout_url", "link")
REPLY_PLACEHOLDERS = ("brand", "contact")
LIST_REPLY_PLACEHOLDERS = ("brand", "contact", "list")
CLARIFY_PLACEHOLDERS = ("brand", "choices")
# Asked for where they are not filled: the message says why rather than "unknown".
_NOT_HERE = {
    "optout_url": "the web opt-out link goes in footers only",
}


def check_placeholders(template: str, key: str, allowed: tuple[str, ...]) -> None:
    """ConfigError naming ``key`` for the first ``{name}`` in ``template`` not in ``allowed``:
    templates are filled by plain replacement, so any other ``{name}`` would reach subscribers
    as written. Braces around anything but a name (``{ }``, ``{1}``) stay text."""
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name in allowed:
            continue
        supported = ", ".join(f"{{{a}}}" for a in allowed)
        why = _NOT_HERE.get(name)
        if why is None:
            why = "unknown placeholder" if name != "list" else "only list_opt_out has a list"
        raise ConfigError(f"{key}: {{{name}}}: {why}; supported here: {supported}")


def _tls(table: _Table | None, *, listener: bool) -> TlsConfig | None:
    if table is None:
        return None
    tls = TlsConfig(
        cert_file=table.string("cert_file"),
        key_file=table.string("key_file"),
        ca_file=table.string("ca_file"),
        verify=table.boolean("verify", True),
        server_hostname=table.string("server_hostname"),
        system_id_in_certificate=listener and table.boolean("system_id_in_certificate", False),
    )
    if listener and not (tls.cert_file and tls.key_file):
        raise ConfigError(f"{table._path}: cert_file and key_file are required for TLS")
    if tls.system_id_in_certificate and not tls.ca_file:
        raise ConfigError(
            f"{table._key('system_id_in_certificate')}: needs ca_file (client certificates)"
        )
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(tls, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{table._key(key)}: no such file: {path}")
    table.finish()
    return tls


def _networks(table: _Table, key: str) -> tuple[Network, ...]:
    out = []
    for i, text in enumerate(table.strings(key)):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{table._key(key)}[{i}]: not an address or network: {text!r}"
            ) from None
    return tuple(out)


def _account_match(root: _Table) -> AccountMatch:
    """consent.account_match, read early (the server's per-account tables key by it)."""
    consent = root.raw("consent")
    value = consent.get("account_match", "fold") if isinstance(consent, dict) else "fold"
    return AccountMatch(value) if value in ("fold", "exact") else AccountMatch.FOLD


def _account_networks(
    table: _Table | None, match: AccountMatch
) -> Mapping[str, tuple[Network, ...]]:
    """``[server.accounts.ID] allow_networks``: where each account may bind from."""
    out: dict[str, tuple[Network, ...]] = {}
    if table is None:
        return out
    for system_id in list(table._data):
        sub = table.table(system_id)
        assert sub is not None
        out[account_key(system_id, match)] = _networks(sub, "allow_networks")
        sub.finish()
    table.finish()
    return out


def check_proxy_protocol(server: ServerConfig) -> None:
    """``server.proxy_protocol`` needs the balancers' addresses, and no TLS on the listener:
    the header comes before the TLS handshake, which the listener's TLS begins at accept."""
    if not server.proxy_protocol:
        return
    if not server.proxy_networks:
        raise ConfigError(
            "server.proxy_networks: required when server.proxy_protocol is true (the "
            "balancers' addresses: only they may name a client's address)"
        )
    if server.tls is not None:
        raise ConfigError(
            "server.proxy_protocol: cannot be combined with [server.tls] (the PROXY header "
            "precedes the TLS handshake); end TLS at the balancer, or pass TLS through "
            "without proxy_protocol"
        )


def _bind_limits(table: _Table | None) -> BindLimits:
    """``[server.binds]``: failed-bind throttling and the SMSC's bind rate."""
    d = BindLimits()
    if table is None:
        return d
    limits = BindLimits(
        delay_after=table.integer("delay_after", d.delay_after, minimum=1, maximum=1000),
        delay_s=table.seconds("delay_s", d.delay_s),
        max_delay_s=table.seconds("max_delay_s", d.max_delay_s),
        block_after=table.integer("block_after", d.block_after, minimum=1, maximum=100_000),
        block_s=table.seconds("block_s", d.block_s),
        window_s=table.seconds("window_s", d.window_s),
        rate_per_s=table.seconds("upstream_rate_per_s", d.rate_per_s),
        burst=table.integer("upstream_burst", d.burst, minimum=1, maximum=100_000),
    )
    table.finish()
    return limits


_TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]+")
_TOKEN_SECRET_KEYS = ("token", "token_env", "token_file")
LEGACY_TOKEN_NAME = "admin"  # noqa: S105 (the name of the older admin.token, not a secret)


def _admin_tokens(adm: _Table) -> tuple[AdminToken, ...]:
    """``[[admin.tokens]]``, after the older single ``admin.token`` / ``token_env`` (one write
    token named "admin"). Secrets are not read here (``AdminToken.secret``)."""
    tokens: list[AdminToken] = []
    legacy_token = adm.string("token", None)
    legacy_env = adm.string("token_env", None)
    if legacy_env is not None:  # as before: token_env wins over token
        tokens.append(
            AdminToken(
                name=LEGACY_TOKEN_NAME,
                role=TokenRole.WRITE,
                key="admin",
                token_env=legacy_env,
                strict=False,
            )
        )
    elif legacy_token:  # as before: an empty admin.token means no token
        tokens.append(
            AdminToken(
                name=LEGACY_TOKEN_NAME,
                role=TokenRole.WRITE,
                key="admin",
                token=legacy_token,
                strict=False,
            )
        )
    for t in adm.tables("tokens"):
        name = t.string("name", required=True)
        if not _TOKEN_NAME.fullmatch(name):
            raise ConfigError(
                f"{t._key('name')}: expected letters, digits, '.', '_' or '-', got {name!r}"
            )
        for other in tokens:
            if other.name == name:
                where = "admin.token" if other.key == "admin" else f"{other.key}.name"
                raise ConfigError(f"{t._key('name')}: {name!r} is already the name of {where}")
        role = t.string("role", required=True)
        if role not in ("read", "write"):
            raise ConfigError(f'{t._key("role")}: expected "read" or "write", got {role!r}')
        given = [k for k in _TOKEN_SECRET_KEYS if t.has(k)]
        if len(given) != 1:
            raise ConfigError(f"{t._path}: give exactly one of token, token_env, token_file")
        secret = t.string(given[0], required=True)
        if not secret:
            raise ConfigError(f"{t._key(given[0])}: must not be empty")
        token = AdminToken(
            name=name,
            role=TokenRole(role),
            key=t._path,
            token=secret if given[0] == "token" else None,
            token_env=secret if given[0] == "token_env" else None,
            token_file=secret if given[0] == "token_file" else None,
        )
        if token.token is not None:
            token.secret()  # an inline secret is checked now: it is in the file already
        tokens.append(token)
        t.finish()
    return tuple(tokens)


def _secret(t: _Table, name: str) -> Secret | None:
    """``name``, ``name_env`` or ``name_file`` of table ``t`` (at most one; None: none)."""
    forms = (name, f"{name}_env", f"{name}_file")
    given = [k for k in forms if t.has(k)]
    if len(given) > 1:
        raise ConfigError(f"{t._key(name)}: give at most one of {', '.join(forms)}")
    if not given:
        return None
    value = t.string(given[0], required=True)
    if given[0] != name and not value:
        raise ConfigError(f"{t._key(given[0])}: must not be empty")
    key = t._key(name)
    if given[0] == name:
        return Secret(key, value=value)
    if given[0].endswith("_env"):
        return Secret(key, env=value)
    return Secret(key, file=value)


MAX_WORKERS: Final = 256


def _workers(srv: _Table) -> int | Literal["auto"]:
    """``server.workers``: an integer from 1, or "auto" (one per usable CPU)."""
    value = srv.raw("workers")
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise ConfigError('server.workers: expected an integer or "auto"')
    count: int = srv.integer("workers", 1, minimum=1, maximum=MAX_WORKERS)
    return count


def parse(data: dict[str, Any], *, source: str | None = None) -> GatewayConfig:
    """Build the config from parsed TOML; raises ConfigError naming the key."""
    root = _Table(data, "")

    gw = root.table("gateway") or _Table({}, "gateway")
    instance = gw.string("instance", None) or socket.gethostname()
    shutdown_grace_s = gw.seconds("shutdown_grace_s", 10.0)
    gw.finish()

    srv = root.table("server") or _Table({}, "server")
    server = ServerConfig(
        listen=srv.address("listen", Address("0.0.0.0", 2775), listening=True),  # noqa: S104
        reuse_port=srv.boolean("reuse_port", False),
        workers=_workers(srv),
        worker_timeout_s=srv.seconds("worker_timeout_s", 30.0, allow_off=True),
        max_sessions=srv.integer("max_sessions", 1000, minimum=1, maximum=1_000_000),
        tls=_tls(srv.table("tls"), listener=True),
        max_unbound=srv.integer("max_unbound", 100, minimum=1, maximum=1_000_000),
        max_unbound_per_address=srv.integer(
            "max_unbound_per_address", 10, minimum=1, maximum=1_000_000
        ),
        max_sessions_per_address=srv.integer(
            "max_sessions_per_address", 0, minimum=0, maximum=1_000_000
        ),
        max_sessions_per_account=srv.integer(
            "max_sessions_per_account", 0, minimum=0, maximum=1_000_000
        ),
        bind_timeout_s=srv.seconds("bind_timeout_s", 10.0),
        binds=_bind_limits(srv.table("binds")),
        allow_networks=_networks(srv, "allow_networks"),
        account_networks=_account_networks(srv.table("accounts"), _account_match(root)),
        proxy_protocol=srv.boolean("proxy_protocol", False),
        proxy_networks=_networks(srv, "proxy_networks"),
        proxy_header_timeout_s=srv.seconds("proxy_header_timeout_s", 5.0),
    )
    check_proxy_protocol(server)
    srv.finish()

    up = root.table("upstream")
    if up is None:
        raise ConfigError("upstream: required (the SMSC's address)")
    service = up.table("service_bind")
    service_bind = None
    if service is not None:
        service_bind = ServiceBindConfig(
            system_id=service.string("system_id", required=True),
            password=_secret(service, "password") or NO_SECRET,
            system_type=service.string("system_type", ""),
        )
        service.finish()
    upstream = UpstreamConfig(
        address=up.address("address", required=True),
        connect_timeout_s=up.seconds("connect_timeout_s", 10.0),
        tls=_tls(up.table("tls"), listener=False),
        default_alphabet=up.choice("default_alphabet", "gsm7", ("gsm7", "latin1", "ascii")),
        service_bind=service_bind,
    )
    up.finish()

    ses = root.table("session") or _Table({}, "session")
    d = SessionTimers()  # the defaults
    session = SessionTimers(
        window_size=ses.integer("window_size", d.window_size, minimum=1, maximum=10_000),
        response_timeout_s=ses.seconds("response_timeout_s", d.response_timeout_s),
        enquire_link_interval_s=ses.seconds(
            "enquire_link_interval_s", d.enquire_link_interval_s, allow_off=True
        ),
        inactivity_timeout_s=ses.seconds(
            "inactivity_timeout_s", d.inactivity_timeout_s, allow_off=True
        ),
        bind_timeout_s=ses.seconds("bind_timeout_s", d.bind_timeout_s),
        unbind_timeout_s=ses.seconds("unbind_timeout_s", d.unbind_timeout_s),
        max_pdu_length=ses.integer(
            "max_pdu_length", d.max_pdu_length, minimum=512, maximum=16 * 1024**2
        ),
        relay_vendor_pdus=ses.boolean("relay_vendor_pdus", d.relay_vendor_pdus),
        write_stall_timeout_s=ses.seconds(
            "write_stall_timeout_s", d.write_stall_timeout_s, allow_off=True
        ),
        partial_pdu_timeout_s=ses.seconds(
            "partial_pdu_timeout_s", d.partial_pdu_timeout_s, allow_off=True
        ),
    )
    ses.finish()

    st = root.table("store") or _Table({}, "store")
    # A Redis URL may carry a password: the whole URL can come from a variable or a file. It
    # is read now: every command that loads the config uses the store.
    url = _secret(st, "url")
    store = StoreConfig(url=DEFAULT_STORE_URL if url is None else url.read())
    try:
        check_url(store.url)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    st.finish()
    audit = _audit(root.table("audit"), store.url)
    privacy = _privacy(root.table("privacy"))

    adm = root.table("admin") or _Table({}, "admin")
    admin = AdminConfig(
        listen=adm.address("listen", None, listening=True),
        tokens=_admin_tokens(adm),
        tls=_tls(adm.table("tls"), listener=True),
    )
    adm.finish()

    lg = root.table("logging") or _Table({}, "logging")
    logging_config = LoggingConfig(
        level=lg.choice("level", "info", ("debug", "info", "warning", "error")),
        format=lg.choice("format", "json", ("json", "console")),
        log_bodies=lg.boolean("log_bodies", False),
    )
    lg.finish()

    consent = _consent(root)
    for key, campaign in campaign_keys(consent):
        _check_replies(key, campaign, upstream.default_alphabet)
    text_config = _text(root)
    optout_link = _optout_link(root, consent)

    root.finish()
    return GatewayConfig(
        instance=instance,
        server=server,
        upstream=upstream,
        session=session,
        store=store,
        admin=admin,
        logging=logging_config,
        consent=consent,
        text=text_config,
        audit=audit,
        privacy=privacy,
        optout_link=optout_link,
        shutdown_grace_s=shutdown_grace_s,
        source=source,
    )


def sqlite_dir(url: str) -> str | None:
    """The directory of a ``sqlite:`` store's file (where the trail and key go by default)."""
    if not url.startswith("sqlite:"):
        return None
    path = url[len("sqlite:") :].partition("?")[0]
    if path.startswith("//"):
        path = path[2:]
    return os.path.dirname(path) or "."


def _audit(table: _Table | None, store_url: str) -> AuditConfig:
    t = table or _Table({}, "audit")
    enabled = t.boolean("enabled", True)
    path = t.string("path", None)
    if path is not None and not path:
        raise ConfigError("audit.path: must not be empty (audit.enabled = false turns it off)")
    if path is None:
        directory = sqlite_dir(store_url)
        path = os.path.join(directory, "audit.jsonl") if directory is not None else None
    config = AuditConfig(
        path=path if enabled else None,
        fsync=t.boolean("fsync", True),
        head_log_interval_s=t.seconds("head_log_interval_s", 60.0),
        refusal_burst=t.integer("refusal_burst", 10, minimum=1, maximum=1_000_000),
        refusal_interval_s=t.seconds("refusal_interval_s", 10.0),
    )
    t.finish()
    return config


def _privacy(table: _Table | None) -> PrivacyConfig:
    t = table or _Table({}, "privacy")
    given = [k for k in ("key", "key_env", "key_file") if t.has(k)]
    if len(given) > 1:
        raise ConfigError("privacy: give at most one of key, key_env, key_file")
    config = PrivacyConfig(
        key=t.string("key", None),
        key_env=t.string("key_env", None),
        key_file=t.string("key_file", None),
        show_digits=t.integer("show_digits", 0, minimum=0, maximum=4),
    )
    if config.key is not None:
        config.secret()  # an inline key is checked now: it is in the file already
    t.finish()
    return config


def _footer_key(root: _Table, consent: ConsentConfig, name: str) -> str:
    """The key a campaign's footer_text came from (an error names it)."""
    if name == consent.directory.default.name:
        return "consent.default.footer_text"
    tables = root._data.get("campaigns")
    for index, table in enumerate(tables if isinstance(tables, list) else []):
        if isinstance(table, dict) and table.get("name") == name:
            return f"campaigns[{index}].footer_text"
    return f"campaigns ({name}).footer_text"


def _optout_link(root: _Table, consent: ConsentConfig) -> OptOutLinkConfig | None:
    t = root.table("optout_link")
    uses = [c.name for c in consent.directory if has_link(c.footer_text)]
    if t is None:
        if uses:
            raise ConfigError(
                f"{_footer_key(root, consent, uses[0])}: {{optout_url}} needs [optout_link] "
                "(base_url, listen, key): the signed web opt-out link"
            )
        return None
    base_url = t.string("base_url", required=True)
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"{t._key('base_url')}: expected https://HOST/PATH (the token is appended), "
            f"got {base_url!r}"
        )
    key = _secret(t, "key")
    if key is None:
        raise ConfigError(f"{t._key('key')}: required (or key_env, key_file)")
    config = OptOutLinkConfig(
        base_url=base_url,
        listen=t.address("listen", required=True, listening=True),
        key=key,
        ttl_days=t.integer("ttl_days", 90, minimum=1, maximum=3650),
    )
    if key.value is not None:
        config.secret()  # an inline key is checked now: it is in the file already
    try:
        LinkSigner(b"0" * 16, ttl_days=1, campaigns=tuple(c.name for c in consent.directory))
    except ValueError as exc:
        raise ConfigError(f"{t._path}: {exc}; rename one") from None
    t.finish()
    return config


def load(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and check a config file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path))


# --- consent ------------------------------------------------------------------------------------

_CAMPAIGN_SCOPES = ("number", "campaign", "account")


def _word_list(table: _Table | None, key: str) -> WordList:
    """``opt_out = ["arret"]`` extends the defaults; ``opt_out = { words = [...], mode =
    "replace" }`` replaces them."""
    if table is None or not table.has(key):
        return WordList()
    value = table.raw(key)
    if isinstance(value, list):
        return WordList(words=table.strings(key))
    sub = table.table(key)
    assert sub is not None
    words = WordList(
        words=sub.strings("words"),
        mode=ListMode(sub.choice("mode", "extend", ("extend", "replace"))),
    )
    sub.finish()
    return words


def _campaign_values(
    t: _Table, country: str, short_code_max: int, match: AccountMatch, *, default: bool = False
) -> dict[str, Any]:
    """The keys a campaign and the account default share, as Campaign keyword arguments."""
    values: dict[str, Any] = {}
    if t.has("accounts"):
        if default:
            raise ConfigError(
                f"{t._key('accounts')}: the default campaign has no numbers of its own; "
                "name the accounts on the campaigns that own the numbers"
            )
        accounts = t.strings("accounts")
        if not accounts or not all(a.strip() for a in accounts):
            raise ConfigError(f"{t._key('accounts')}: expected non-empty system_ids")
        values["accounts"] = frozenset(account_key(a, match) for a in accounts)
    if t.has("brand"):
        values["brand"] = t.string("brand")
    if t.has("scope"):
        values["scope"] = ScopeKind(t.choice("scope", "campaign", _CAMPAIGN_SCOPES))
    if t.has("footer"):
        values["footer"] = FooterMode(t.choice("footer", "never", ("always", "first", "never")))
    if t.has("footer_text"):
        values["footer_text"] = t.string("footer_text")
        check_placeholders(values["footer_text"], t._key("footer_text"), FOOTER_PLACEHOLDERS)
    if t.has("outbound_unknown"):
        values["outbound_unknown"] = OutboundUnknown(
            t.choice("outbound_unknown", "allow", ("allow", "require_opt_in", "block"))
        )
    if t.has("inbound_unknown"):
        values["inbound_unknown"] = InboundUnknown(
            t.choice("inbound_unknown", "allow", ("allow", "request_opt_in"))
        )
    if t.has("reopt_in"):
        values["reopt_in"] = ReOptIn(t.choice("reopt_in", "keyword", ("keyword", "any_message")))
    if t.has("phrase_tier"):
        values["phrase_tier"] = t.boolean("phrase_tier", False)
    if t.has("phrase_max_words"):
        values["phrase_max_words"] = t.integer("phrase_max_words", 8, minimum=1, maximum=50)
    if t.has("forward_keywords"):
        values["forward_keywords"] = t.boolean("forward_keywords", True)
    replies = t.table("replies")
    if replies is not None:
        values["replies"] = _replies(replies)
    keywords = t.table("keywords")
    if keywords is not None:
        languages = keywords.strings("languages")
        for lang in languages:
            if lang not in LANGUAGE_PACKS:
                raise ConfigError(
                    f"{keywords._key('languages')}: unknown language {lang!r}; "
                    f"known: {', '.join(sorted(LANGUAGE_PACKS))}"
                )
        values["keywords"] = Keywords(
            opt_out=_word_list(keywords, "opt_out"),
            opt_in=_word_list(keywords, "opt_in"),
            help=_word_list(keywords, "help"),
            account_wide=_word_list(keywords, "account_wide"),
            languages=languages,
        )
        keywords.finish()
    lists = []
    for lt in t.tables("lists"):
        lists.append(
            MessageList(
                name=lt.string("name", required=True),
                service_types=lt.strings("service_types"),
                keywords=lt.strings("keywords"),
            )
        )
        lt.finish()
    if lists:
        values["lists"] = tuple(lists)
    numbers = []
    for i, number in enumerate(t.strings("numbers")):
        # Numbers are keyed exactly as MT source / MO destination addresses will be.
        ton = 1 if number.strip().startswith("+") else 0
        address = normalise(number, ton, 1, country, short_code_max_length=short_code_max)
        if address is None:
            raise ConfigError(f"{t._key('numbers')}[{i}]: empty number")
        if address.kind is AddressKind.UNREADABLE:
            raise ConfigError(
                f"{t._key('numbers')}[{i}]: {number!r} is not a number, short code or name"
            )
        numbers.append(address.value)
    if numbers:
        values["numbers"] = tuple(numbers)
    values.update(_sending_rules(t))
    values.update(_frequency_cap(t, values.get("category", hours.Category.MARKETING)))
    return values


def _replies(table: _Table) -> Replies:
    """``[campaigns.replies]`` (English) with ``contact`` and a ``[campaigns.replies.<lang>]``
    table per language pack (``Replies.choose`` says which text answers which keyword)."""
    texts = {name: table.string(name, getattr(DEFAULT_REPLIES, name)) for name in REPLY_NAMES}
    for name, text in texts.items():
        allowed = LIST_REPLY_PLACEHOLDERS if name == "list_opt_out" else REPLY_PLACEHOLDERS
        check_placeholders(text, table._key(name), allowed)
    contact: str = table.string("contact", "")
    local: list[LocalReplies] = []
    for language in [k for k, v in table._data.items() if isinstance(v, dict)]:
        if language not in LANGUAGE_PACKS:
            raise ConfigError(
                f"{table._key(language)}: unknown language {language!r}; "
                f"known: {', '.join(sorted(LANGUAGE_PACKS))}"
            )
        sub = table.table(language)
        assert sub is not None
        for name in REPLY_NAMES:
            if name not in LOCAL_REPLY_NAMES and sub.has(name):
                raise ConfigError(
                    f"{sub._key(name)}: answers no keyword of a language, so it is sent in "
                    f"English only: set it in {table._key(name)}"
                )
        given = {name: sub.string(name, None) for name in LOCAL_REPLY_NAMES}
        for name, text in given.items():
            if text is not None:
                check_placeholders(text, sub._key(name), REPLY_PLACEHOLDERS)
        sub.finish()
        local.append(LocalReplies(language=language, **given))
    table.finish()
    return Replies(**texts, contact=contact, languages=tuple(local))


def campaign_keys(consent: ConsentConfig) -> list[tuple[str, Campaign]]:
    """Each campaign with the config key its table has: ``consent.default``, ``campaigns[0]``..."""
    default = consent.directory.default
    others = [c for c in consent.directory if c is not default]
    return [("consent.default", default), *((f"campaigns[{i}]", c) for i, c in enumerate(others))]


_REPLY_ALPHABETS = {"gsm7": Alphabet.GSM7, "latin1": Alphabet.LATIN1, "ascii": Alphabet.IA5}


def _check_replies(key: str, campaign: Campaign, default_alphabet: str) -> None:
    """ConfigError for a reply in a language the campaign hears no keyword of, and for a reply
    that is not one segment once filled in (the longest list name for ``{list}``): the CWTA
    asks keyword replies to be at most 160 characters, and a reply in parts may arrive
    incomplete or out of order."""
    heard = campaign.keywords.languages
    for local in campaign.replies.languages:
        if local.language not in heard:
            raise ConfigError(
                f"{key}.replies.{local.language}: the campaign hears no "
                f"{LANGUAGE_NAMES.get(local.language, local.language)} keywords: add "
                f'"{local.language}" to {key}.keywords.languages'
            )
    longest_list = max((lst.name for lst in campaign.lists), key=len, default="")
    alphabet = _REPLY_ALPHABETS[default_alphabet]
    seen: set[str] = set()
    for language in (ENGLISH, *heard):
        for name in REPLY_NAMES:
            choice = campaign.replies.choose(name, language)
            where = reply_key(key, name, choice)
            if where in seen:
                continue
            seen.add(where)
            text = campaign.reply(choice.template, longest_list if name == "list_opt_out" else "")
            problem = one_part_problem(text, alphabet) if text else None
            if problem is not None:
                if choice.origin is ReplyOrigin.BUNDLED:
                    problem += " (the bundled text with this brand and contact: set a shorter one)"
                raise ConfigError(f"{where}: {problem}")


# --- sending rules: category and quiet hours ----------------------------------------------------

CATEGORIES = tuple(c.value for c in hours.Category)
QUIET_HOURS_KEYS = ("quiet_hours_action", "quiet_hours_categories", "quiet_dates")


def _sending_rules(t: _Table) -> dict[str, Any]:
    """``category`` and the quiet-hours keys of a campaign (or ``[consent.default]``)."""
    values: dict[str, Any] = {}
    if t.has("category"):
        values["category"] = hours.Category(t.choice("category", "marketing", CATEGORIES))
    if not t.has("quiet_hours"):
        for key in QUIET_HOURS_KEYS:
            if t.has(key):
                raise ConfigError(f"{t._key(key)}: has no effect without quiet_hours")
        return values
    rules = _quiet_rules(t)
    action = t.choice("quiet_hours_action", "refuse", tuple(a.value for a in hours.QuietAction))
    categories: frozenset[hours.Category] = frozenset({hours.Category.MARKETING})
    if t.has("quiet_hours_categories"):
        names = t.strings("quiet_hours_categories")
        unknown = [n for n in names if n not in CATEGORIES]
        if not names or unknown:
            raise ConfigError(
                f"{t._key('quiet_hours_categories')}: expected some of {', '.join(CATEGORIES)}"
            )
        categories = frozenset(hours.Category(n) for n in names)
    category = values.get("category", hours.Category.MARKETING)
    if category not in categories:
        # Quiet hours that never bind are a misunderstanding, not a choice: say so.
        raise ConfigError(
            f"{t._key('quiet_hours')}: binds {', '.join(sorted(categories))} messages only and"
            f" this campaign's category is {category}; add {category} to"
            " quiet_hours_categories, or remove quiet_hours"
        )
    values["quiet_hours"] = hours.QuietHours(
        rules=rules,
        action=hours.QuietAction(action),
        categories=categories,
        closed_dates=_quiet_dates(t),
    )
    return values


FREQUENCY_CAP_KEYS = ("frequency_cap_categories",)
CAP_PERS = tuple(p.value for p in caps.CapPer)


def _frequency_cap(t: _Table, category: hours.Category) -> dict[str, Any]:
    """``frequency_cap = "us-fl"`` or ``{ count = 3, window_h = 24, per = "campaign" }``,
    ``frequency_cap_categories`` and ``business`` (the name campaigns counted together share)."""
    values: dict[str, Any] = {}
    if t.has("business"):
        business = t.string("business")
        if not business or "/" in business:
            raise ConfigError(f"{t._key('business')}: must be non-empty and without '/'")
        values["business"] = business
    if not t.has("frequency_cap"):
        for key in FREQUENCY_CAP_KEYS:
            if t.has(key):
                raise ConfigError(f"{t._key(key)}: has no effect without frequency_cap")
        return values
    key = t._key("frequency_cap")
    raw = t.raw("frequency_cap")
    if isinstance(raw, str):
        if raw not in caps.PRESETS:
            raise ConfigError(f"{key}: unknown preset {raw!r}; known: {', '.join(caps.PRESETS)}")
        count, window_s = caps.PRESETS[raw]
        per, rule = caps.CapPer.CAMPAIGN, raw
    elif isinstance(raw, dict):
        c = _Table(raw, key)
        preset_name = c.string("preset", None)
        if preset_name is not None and preset_name not in caps.PRESETS:
            raise ConfigError(f"{c._key('preset')}: unknown preset {preset_name!r}")
        count, window_s = caps.PRESETS.get(preset_name or "", (0, 0.0))
        count = c.integer("count", count, minimum=1, maximum=1_000_000)
        if count == 0:
            raise ConfigError(f"{c._key('count')}: required (or a preset)")
        hours_raw = c.raw("window_h")
        if hours_raw is None:
            if not window_s:
                raise ConfigError(f"{c._key('window_h')}: required (or a preset)")
        elif (
            isinstance(hours_raw, bool)
            or not isinstance(hours_raw, int | float)
            or not 0 < hours_raw <= 24 * 366
        ):
            raise ConfigError(f"{c._key('window_h')}: expected hours between 0 and 8784")
        else:
            window_s = float(hours_raw) * 3600.0
        per = caps.CapPer(c.choice("per", "campaign", CAP_PERS))
        rule = preset_name or "custom"
        c.finish()
    else:
        raise ConfigError(f"{key}: expected a preset name or a table (count, window_h, per)")
    categories: frozenset[hours.Category] = frozenset({hours.Category.MARKETING})
    if t.has("frequency_cap_categories"):
        names = t.strings("frequency_cap_categories")
        unknown = [n for n in names if n not in CATEGORIES]
        if not names or unknown:
            raise ConfigError(
                f"{t._key('frequency_cap_categories')}: expected some of {', '.join(CATEGORIES)}"
            )
        categories = frozenset(hours.Category(n) for n in names)
    if category not in categories:
        # A cap that never binds is a misunderstanding, as with quiet hours: say so.
        raise ConfigError(
            f"{key}: binds {', '.join(sorted(categories))} messages only and this campaign's"
            f" category is {category}; add {category} to frequency_cap_categories, or remove"
            " frequency_cap"
        )
    if per is caps.CapPer.BUSINESS and "business" not in values:
        raise ConfigError(f'{key}: per = "business" needs the campaign\'s business key')
    values["frequency_cap"] = caps.FrequencyCap(
        count=count, window_s=window_s, per=per, rule=rule, categories=categories
    )
    return values


def _quiet_rules(t: _Table) -> tuple[hours.HoursRule, ...]:
    """``quiet_hours = "us-federal"``, a list of preset names and window tables, or
    ``[[campaigns.quiet_hours]]`` tables (``days``, ``start``, ``end``, ``tz``)."""
    key = t._key("quiet_hours")
    raw = t.raw("quiet_hours")
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ConfigError(f"{key}: expected a preset name, a list of them, or window tables")
    presets: list[hours.HoursRule] = []
    custom: dict[str | None, list[hours.Window]] = {}
    for i, item in enumerate(items):
        where = f"{key}[{i}]" if isinstance(raw, list) else key
        if isinstance(item, str):
            rule = hours.PRESETS.get(item)
            if rule is None:
                raise ConfigError(
                    f"{where}: unknown preset {item!r}; known: {', '.join(hours.PRESETS)}"
                )
            if rule in presets:
                raise ConfigError(f"{where}: preset {item!r} named twice")
            presets.append(rule)
        elif isinstance(item, dict):
            window, tz = _quiet_window(_Table(item, where))
            custom.setdefault(tz, []).append(window)
        else:
            raise ConfigError(f"{where}: expected a preset name or a window table")
    custom_rules = [
        hours.HoursRule(name=hours.CUSTOM, windows=tuple(windows), tz=tz)
        for tz, windows in custom.items()
    ]
    return (*presets, *custom_rules)


def _quiet_window(w: _Table) -> tuple[hours.Window, str | None]:
    """One custom window: ``days`` (default every day), ``start`` / ``end`` "HH:MM" (an end
    not after the start is on the next day), ``tz`` (default: the recipient's zones)."""
    try:
        days = hours.parse_days(w.strings("days"))
    except ValueError as exc:
        raise ConfigError(f"{w._key('days')}: {exc}") from None
    minutes = []
    for name in ("start", "end"):
        try:
            minutes.append(hours.parse_hhmm(w.string(name, required=True)))
        except ValueError as exc:
            raise ConfigError(f"{w._key(name)}: {exc}") from None
    tz: str | None = w.string("tz", None)
    if tz is not None:
        try:
            hours.zone(tz)
        except ValueError as exc:
            raise ConfigError(f"{w._key('tz')}: {exc}") from None
    w.finish()
    try:
        return hours.Window(days=days, start=minutes[0], end=minutes[1]), tz
    except ValueError as exc:
        raise ConfigError(f"{w._path}: {exc}") from None


def _quiet_dates(t: _Table) -> frozenset[date]:
    """``quiet_dates = [2026-12-25, "2027-01-01"]``: local dates with no sending at all."""
    raw = t.raw("quiet_dates")
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise ConfigError(f"{t._key('quiet_dates')}: expected a list of dates (YYYY-MM-DD)")
    found: set[date] = set()
    for i, item in enumerate(raw):
        day: date | None = None
        if isinstance(item, date) and not isinstance(item, datetime):
            day = item
        elif isinstance(item, str) and len(item) == 10:
            with contextlib.suppress(ValueError):
                day = date.fromisoformat(item)
        if day is None:
            raise ConfigError(f"{t._key('quiet_dates')}[{i}]: expected a date (YYYY-MM-DD)")
        found.add(day)
    return frozenset(found)


def _status(t: _Table, key: str, default: int) -> int:
    return t.integer(key, default, minimum=0, maximum=0xFFFFFFFF)


def _consent(root: _Table) -> ConsentConfig:
    c = root.table("consent") or _Table({}, "consent")
    enabled = c.boolean("enabled", True)
    country = c.string("default_country", "US").upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"consent.default_country: unknown region {country!r}")
    short_code_max = c.integer("short_code_max_length", 8, minimum=3, maximum=10)

    st = c.table("statuses")
    statuses = DEFAULT_REJECT_STATUSES
    if st is not None:
        d = DEFAULT_REJECT_STATUSES
        statuses = RejectStatuses(
            opted_out=_status(st, "opted_out", d.opted_out),
            blocked=_status(st, "blocked", d.blocked),
            pending=_status(st, "pending", d.pending),
            no_consent=_status(st, "no_consent", d.no_consent),
            store_unavailable=_status(st, "store_unavailable", d.store_unavailable),
            unreadable_address=_status(st, "unreadable_address", d.unreadable_address),
            sender_not_allowed=_status(st, "sender_not_allowed", d.sender_not_allowed),
            quiet_hours=_status(st, "quiet_hours", d.quiet_hours),
            quiet_hours_deferred=_status(st, "quiet_hours_deferred", d.quiet_hours_deferred),
            frequency_capped=_status(st, "frequency_capped", d.frequency_capped),
        )
        st.finish()
        problems = statuses.problems()
        if problems:
            raise ConfigError(f"consent.statuses.{problems[0]}")

    match = AccountMatch(c.choice("account_match", "fold", ("fold", "exact")))
    accounts: dict[str, AccountPolicy] = {}
    acc = c.table("accounts")
    if acc is not None:
        for system_id in list(acc._data):
            at = acc.table(system_id)
            assert at is not None
            key = account_key(system_id, match)
            if key in accounts:
                raise ConfigError(
                    f"{at._path}: the same account as another [consent.accounts] table "
                    f"(system_ids compare as {match.value!r}: consent.account_match)"
                )
            sender_text = at.string("default_sender", None)
            sender = None
            if sender_text is not None:
                ton = 1 if sender_text.strip().startswith("+") else 0
                sender = normalise(
                    sender_text, ton, 1, country, short_code_max_length=short_code_max
                )
                if sender is None or sender.kind is AddressKind.UNREADABLE:
                    raise ConfigError(f"{at._key('default_sender')}: not a readable address")
            accounts[key] = AccountPolicy(
                accept_and_report=at.boolean("accept_and_report", False),
                default_sender=sender,
            )
            at.finish()
        acc.finish()

    default_table = c.table("default")
    try:
        default = default_campaign(
            **(
                _campaign_values(default_table, country, short_code_max, match, default=True)
                if default_table
                else {}
            )
        )
    except ValueError as exc:
        raise ConfigError(f"consent.default: {exc}") from None
    if default_table is not None:
        default_table.finish()

    businesses = _businesses(root)
    campaigns = []
    names: set[str] = set()
    for ct in root.tables("campaigns"):
        name = ct.string("name", required=True)
        if name in names or name == default.name:
            raise ConfigError(f"{ct._key('name')}: campaign {name!r} defined twice")
        names.add(name)
        values = _campaign_values(ct, country, short_code_max, match)
        values.update(_campaign_business(ct, businesses))
        try:
            campaigns.append(Campaign(name=name, **values))
        except ValueError as exc:
            raise ConfigError(f"{ct._path}: {exc}") from None
        ct.finish()
    unused = sorted(set(businesses) - {c.business for c in campaigns})
    if unused:
        raise ConfigError(
            f"businesses: {', '.join(unused)} has no campaign (give campaigns business = name)"
        )
    try:
        directory = CampaignDirectory(campaigns, default)
    except ValueError as exc:
        raise ConfigError(f"campaigns: {exc}") from None

    config = ConsentConfig(
        enabled=enabled,
        default_country=country,
        short_code_max_length=short_code_max,
        statuses=statuses,
        directory=directory,
        accounts=accounts,
        account_match=match,
        relay_client_vendor_pdus=c.boolean("relay_client_vendor_pdus", False),
        reply_limit_per_hour=c.integer("reply_limit_per_hour", 5, minimum=0, maximum=10_000),
        mo_dedup_window_s=c.seconds("mo_dedup_window_s", 600.0),
        mo_reassembly_timeout_s=c.seconds("mo_reassembly_timeout_s", 120.0),
    )
    c.finish()
    return config


# --- businesses: FCC revoke-all ------------------------------------------------------------------


def _businesses(root: _Table) -> dict[str, Business]:
    """``[[businesses]]``: a business's own settings (``revoke_all``, ``clarify``); campaigns
    join one with ``business = "name"``."""
    found: dict[str, Business] = {}
    for bt in root.tables("businesses"):
        name = bt.string("name", required=True)
        if not name.strip() or "/" in name:
            raise ConfigError(f"{bt._key('name')}: expected a non-empty name without '/'")
        if name in found:
            raise ConfigError(f"{bt._key('name')}: business {name!r} defined twice")
        revoke_from, revoke_text = _revoke_all(bt)
        clarify = _clarify(bt)
        if clarify is not None and revoke_from is None:
            raise ConfigError(
                f"{bt._key('clarify')}: asks which messages a revoke-all opt-out covers;"
                " it has no effect with revoke_all = false"
            )
        found[name] = Business(
            name=name, revoke_all_from=revoke_from, revoke_all_text=revoke_text, clarify=clarify
        )
        bt.finish()
    return found


def _revoke_all(bt: _Table) -> tuple[float | None, str]:
    """``revoke_all = true | false | "YYYY-MM-DD"`` (from 00:00 that day in ``revoke_all_zone``,
    UTC unless set): the wall time it is in effect from, and the value as written."""
    key = bt._key("revoke_all")
    raw = bt.raw("revoke_all")
    zone_name = bt.string("revoke_all_zone", "UTC")
    if raw is None or raw is False:
        if bt.has("revoke_all_zone"):
            raise ConfigError(f"{bt._key('revoke_all_zone')}: has no effect without a date")
        return None, "false"
    if raw is True:
        return 0.0, "true"
    day = raw if isinstance(raw, date) and not isinstance(raw, datetime) else None
    if isinstance(raw, str):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            day = None
    if day is None:
        raise ConfigError(f'{key}: expected true, false or a date "YYYY-MM-DD"')
    try:
        tz = hours.zone(zone_name)
    except ValueError as exc:
        raise ConfigError(f"{bt._key('revoke_all_zone')}: {exc}") from None
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    return start, f"{day.isoformat()} ({zone_name})"


def _clarify(bt: _Table) -> Clarify | None:
    """``clarify = { window_h = 24, reply = "...", all_words = ["ALL"] }``."""
    ct = bt.table("clarify")
    if ct is None:
        return None
    d = Clarify()
    window_h = ct.integer("window_h", 24, minimum=1, maximum=24 * 30)
    reply = ct.string("reply", d.reply)
    if not reply:
        raise ConfigError(f"{ct._key('reply')}: the question cannot be empty (remove clarify)")
    check_placeholders(reply, ct._key("reply"), CLARIFY_PLACEHOLDERS)
    all_words = ct.strings("all_words") if ct.has("all_words") else d.all_words
    if not all_words or not all(w.strip() for w in all_words):
        raise ConfigError(f"{ct._key('all_words')}: expected non-empty words")
    replies: list[tuple[str, str]] = []
    rt = ct.table("replies")
    if rt is not None:
        for language in list(rt._data):
            if language not in LANGUAGE_PACKS:
                known = ", ".join(sorted(LANGUAGE_PACKS))
                raise ConfigError(f"{rt._key(language)}: unknown language; known: {known}")
            text = rt.string(language)
            check_placeholders(text, rt._key(language), CLARIFY_PLACEHOLDERS)
            replies.append((language, text))
        rt.finish()
    ct.finish()
    return Clarify(
        window_s=window_h * 3600.0, reply=reply, all_words=all_words, replies=tuple(replies)
    )


def _campaign_business(ct: _Table, businesses: Mapping[str, Business]) -> dict[str, Any]:
    """A campaign's ``business = "name"``: a business of ``[[businesses]]``, when there are any."""
    if not ct.has("business"):
        return {}
    name = ct.string("business")
    if not name.strip() or "/" in name:
        raise ConfigError(f"{ct._key('business')}: expected a non-empty name without '/'")
    rules = businesses.get(name)
    if rules is None and businesses:
        raise ConfigError(
            f"{ct._key('business')}: unknown business {name!r}; [[businesses]] has"
            f" {', '.join(sorted(businesses))}"
        )
    return {"business": name, "business_rules": rules}


# --- text ---------------------------------------------------------------------------------------

TEXT_CONCAT_KINDS = ("udh_8bit", "udh_16bit", "sar")
_FOOTER_DEFAULTS: Final = FooterSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class TextConfig:
    """``[text]``: footers on long messages (gateway/proxy/footer.py); the defaults are the
    footer rewrite's own (``gateway.messages.footer.FooterSettings``)."""

    # How a one-part message that grows with its footer is split (text.segment.ConcatKind).
    concat: str = _FOOTER_DEFAULTS.concat.value
    # The parts of a long MT are held until all are in, at most this long, then sent unchanged
    # (a client that waits for each answer is answered at once all the same).
    hold_timeout_s: float = _FOOTER_DEFAULTS.hold_timeout_s
    hold_max_messages: int = _FOOTER_DEFAULTS.hold_max_messages
    hold_max_bytes: int = _FOOTER_DEFAULTS.hold_max_bytes
    # How long the ids the gateway gave for parts it answered before the SMSC (or added) are
    # kept for delivery receipts, which may come days later.
    receipt_ids_ttl_s: float = 172_800.0


def _text(root: _Table) -> TextConfig:
    t = root.table("text") or _Table({}, "text")
    d = TextConfig()  # the defaults are stated once, in the dataclass
    config = TextConfig(
        concat=t.choice("concat", d.concat, TEXT_CONCAT_KINDS),
        hold_timeout_s=t.seconds("hold_timeout_s", d.hold_timeout_s),
        hold_max_messages=t.integer(
            "hold_max_messages", d.hold_max_messages, minimum=1, maximum=10_000_000
        ),
        hold_max_bytes=t.integer("hold_max_bytes", d.hold_max_bytes, minimum=1024, maximum=1 << 31),
        receipt_ids_ttl_s=t.seconds("receipt_ids_ttl_s", d.receipt_ids_ttl_s),
    )
    if not math.isfinite(config.receipt_ids_ttl_s):
        raise ConfigError("text.receipt_ids_ttl_s: must be a finite number of seconds")
    t.finish()
    return config
