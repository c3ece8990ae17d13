"""The config file: the example parses in full, and every error names the key path."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import BearerToken, ConfigError, SessionTimers, TokenRole, load, parse
from gateway.consent.hours import Category, QuietAction, Window
from gateway.consent.model import ScopeKind
from gateway.consent.policy import DEFAULT_REJECT_STATUSES
from gateway.smpp.session import SessionConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "gateway.toml"
# A commented-out key or table in the example: "# key = value" or "# [table]".
COMMENTED_KEY = re.compile(r"^# ?(\[\[?[a-z_.-]+\]\]?(?:\s+#.*)?|[a-z_]+ = \S.*)$")
CONSENT_REASONS = ("opted_out", "blocked", "pending", "no_consent")
CLIENT_RETRIED = (0x08, 0x14, 0x58, 0x64)


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def uncommented_example(tls_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example with every commented-out key switched on, TLS paths pointing at real files
    and the environment variables it names set."""
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = COMMENTED_KEY.match(line)
        lines.append(match.group(1) if match else line)
    text = "\n".join(lines)
    for path in set(re.findall(r'"(/etc/smpp-gateway/tls/[^"]+)"', text)):
        stand_in = tls_dir / Path(path).name
        stand_in.write_text("placeholder\n")
        text = text.replace(f'"{path}"', f'"{stand_in.as_posix()}"')
    for variable in re.findall(r'^token_env = "([A-Z_]+)"', text, re.MULTILINE):
        monkeypatch.setenv(variable, "example-token")
    return text


def with_value(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``path`` (``a.b[0].c``) set to ``value``; ``...`` deletes it.
    Missing tables on the way are created."""
    result = copy.deepcopy(data)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = result
    for part in parts[:-1]:
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    last: Any = int(parts[-1][1:-1]) if parts[-1].startswith("[") else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return result


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return str(info.value)


class TestExample:
    """config/gateway.toml, the file operators copy, is valid in every key it shows."""

    def test_example_loads(self) -> None:
        """The example as shipped loads, with the values it states."""
        config = load(EXAMPLE)
        assert str(config.server.listen) == "127.0.0.1:2775"
        assert str(config.upstream.address) == "127.0.0.1:2776"
        assert config.session.inactivity_timeout_s is None  # 0 means "never"
        assert config.store.url == "sqlite:var/consent.db"
        assert config.logging.log_bodies is False
        acme = config.consent.directory.get("acme-marketing")
        assert acme is not None
        assert acme.scope is ScopeKind.NUMBER
        assert acme.footer_text == "Reply STOP to opt out"
        assert config.source == str(EXAMPLE)

    def test_commented_out_keys_parse_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every key the example shows commented out is a real key with a valid example value."""
        text = uncommented_example(tmp_path, monkeypatch)
        tables = {line.split("#")[0].strip() for line in text.splitlines()}
        assert {"[server.tls]", "[upstream.tls]", "[consent.statuses]"} <= tables
        config = parse(tomllib.loads(text))
        assert config.instance == "gw-1"
        assert config.server.tls is not None
        assert config.upstream.tls is not None
        assert config.upstream.tls.server_hostname == "smsc.example.net"

    def test_commented_statuses_are_the_defaults(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The status table the example shows ("defaults shown") is exactly the default."""
        config = parse(tomllib.loads(uncommented_example(tmp_path, monkeypatch)))
        assert config.consent.statuses == DEFAULT_REJECT_STATUSES

    def test_minimal_config_is_the_upstream_address(self) -> None:
        """Only upstream.address is required; everything else has a default."""
        config = parse({"upstream": {"address": "smsc.example.net:2775"}})
        assert config.upstream.address.host == "smsc.example.net"
        assert config.server.max_sessions == 1000

    def test_ipv6_addresses(self) -> None:
        """``[v6]:port`` addresses parse and print back bracketed."""
        config = parse({"upstream": {"address": "[2001:db8::1]:2775"}})
        assert config.upstream.address.host == "2001:db8::1"
        assert str(config.upstream.address) == "[2001:db8::1]:2775"

    def test_load_names_a_missing_or_broken_file(self, tmp_path: Path) -> None:
        """A missing file and a TOML syntax error are ConfigErrors naming the file."""
        missing = tmp_path / "nope.toml"
        with pytest.raises(ConfigError, match=re.escape(str(missing))):
            load(missing)
        broken = tmp_path / "broken.toml"
        broken.write_text("[upstream\naddress = 1\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            load(broken)


# (key path to change, new value or ... to delete it, the key path the error must start with)
WRONG_TYPES = [
    ("server", "127.0.0.1:2775", "server"),
    ("server.listen", 2775, "server.listen"),
    ("server.max_sessions", "1000", "server.max_sessions"),
    ("server.max_sessions", 10.5, "server.max_sessions"),
    ("server.workers", "all", "server.workers"),
    ("server.workers", True, "server.workers"),
    ("server.workers", 2.0, "server.workers"),
    ("upstream.address", ["127.0.0.1", 2776], "upstream.address"),
    ("upstream.connect_timeout_s", "10", "upstream.connect_timeout_s"),
    ("upstream.default_alphabet", "utf8", "upstream.default_alphabet"),
    ("session.window_size", True, "session.window_size"),
    ("session.relay_vendor_pdus", "yes", "session.relay_vendor_pdus"),
    ("session.response_timeout_s", False, "session.response_timeout_s"),
    ("gateway.shutdown_grace_s", [], "gateway.shutdown_grace_s"),
    ("gateway.instance", 7, "gateway.instance"),
    ("logging.level", "verbose", "logging.level"),
    ("logging.format", "xml", "logging.format"),
    ("logging.log_bodies", 1, "logging.log_bodies"),
    ("store.url", 5, "store.url"),
    ("consent.enabled", "true", "consent.enabled"),
    ("campaigns", {"name": "x"}, "campaigns"),
    ("campaigns[0].numbers", "+15550100", "campaigns[0].numbers"),
    ("campaigns[0].brand", 1, "campaigns[0].brand"),
    ("campaigns[0].replies", "STOP", "campaigns[0].replies"),
    ("campaigns[0].replies.help", 3, "campaigns[0].replies.help"),
    ("campaigns[0].lists", [{"service_types": ["A"]}], "campaigns[0].lists[0].name"),
    ("campaigns[0].keywords.opt_out", 5, "campaigns[0].keywords.opt_out"),
    ("campaigns[0].keywords.opt_out", [5], "campaigns[0].keywords.opt_out"),
    ("consent.accounts.acme", True, "consent.accounts.acme"),
]
OUT_OF_RANGE = [
    ("server.max_sessions", 0, "server.max_sessions"),
    ("server.workers", 0, "server.workers"),
    ("server.workers", 257, "server.workers"),
    ("session.window_size", 10_001, "session.window_size"),
    ("session.max_pdu_length", 100, "session.max_pdu_length"),
    ("session.response_timeout_s", 0, "session.response_timeout_s"),
    ("session.bind_timeout_s", -1, "session.bind_timeout_s"),
    ("session.enquire_link_interval_s", -0.5, "session.enquire_link_interval_s"),
    ("upstream.connect_timeout_s", 0, "upstream.connect_timeout_s"),
    ("consent.short_code_max_length", 2, "consent.short_code_max_length"),
    ("consent.reply_limit_per_hour", -1, "consent.reply_limit_per_hour"),
    ("consent.mo_dedup_window_s", 0, "consent.mo_dedup_window_s"),
    ("consent.statuses.opted_out", 0x1_0000_0000, "consent.statuses.opted_out"),
    ("consent.statuses.blocked", 0, "consent.statuses.blocked"),
    ("campaigns[0].phrase_max_words", 0, "campaigns[0].phrase_max_words"),
]
UNKNOWN_KEYS = [
    ("servr", {}, "servr"),
    ("gateway.name", "gw", "gateway.name"),
    ("server.port", 2775, "server.port"),
    ("upstream.host", "smsc", "upstream.host"),
    ("upstream.service_bind", {"system_id": "gw", "pasword": "x"}, "upstream.service_bind.pasword"),
    ("session.enquire_link_s", 30, "session.enquire_link_s"),
    ("store.path", "/var/x", "store.path"),
    ("admin.port", 8775, "admin.port"),
    ("logging.file", "/var/log/x", "logging.file"),
    ("consent.country", "US", "consent.country"),
    ("consent.statuses.opted_in", 0x45, "consent.statuses.opted_in"),
    ("consent.default.brand_name", "x", "consent.default.brand_name"),
    (
        "consent.accounts.acme",
        {"accept_and_reprot": True},
        "consent.accounts.acme.accept_and_reprot",
    ),
    ("campaigns[0].footer_txt", "x", "campaigns[0].footer_txt"),
    ("campaigns[0].replies.stop", "x", "campaigns[0].replies.stop"),
    ("campaigns[0].keywords.stop", ["x"], "campaigns[0].keywords.stop"),
    (
        "campaigns[0].keywords.opt_out",
        {"words": ["x"], "mode": "replace", "extra": 1},
        "campaigns[0].keywords.opt_out.extra",
    ),
    ("campaigns[0].lists", [{"name": "news", "topic": "x"}], "campaigns[0].lists[0].topic"),
]
BAD_ADDRESSES = [
    ("upstream.address", "smsc", "upstream.address"),
    ("upstream.address", "smsc:99999", "upstream.address"),
    ("upstream.address", "smsc:0", "upstream.address"),  # port 0 only where we listen
    ("upstream.address", ":2775", "upstream.address"),
    ("upstream.address", "smsc:27x5", "upstream.address"),
    ("server.listen", "2775", "server.listen"),
    ("server.listen", "0.0.0.0:65536", "server.listen"),
    ("admin.listen", "localhost", "admin.listen"),
]
MISSING = [
    ("upstream", ..., "upstream"),
    ("upstream.address", ..., "upstream.address"),
    ("upstream.service_bind", {"password": "x"}, "upstream.service_bind.system_id"),
    ("campaigns[0].name", ..., "campaigns[0].name"),
]
BAD_STORE = [
    ("store.url", "postgres://db/consent", "store.url"),
    ("store.url", "/var/lib/consent.db", "store.url"),
    ("store.url", "", "store.url"),
    # What the store would refuse when opening it is refused when the config loads.
    ("store.url", "sqlite:///:memory:", "store.url"),
    ("store.url", "sqlite:var/consent.db?cache=5", "store.url"),
    ("store.url", "sqlite:var/consent.db?recovery_interval_s=0", "store.url"),
]
CONSENT_CHOICES = [
    ("campaigns[0].scope", "global", "campaigns[0].scope"),
    ("campaigns[0].footer", "sometimes", "campaigns[0].footer"),
    ("campaigns[0].outbound_unknown", "deny", "campaigns[0].outbound_unknown"),
    ("campaigns[0].inbound_unknown", "block", "campaigns[0].inbound_unknown"),
    ("campaigns[0].reopt_in", "never", "campaigns[0].reopt_in"),
    ("campaigns[0].keywords.opt_out.mode", "merge", "campaigns[0].keywords.opt_out.mode"),
    ("consent.default.scope", "planet", "consent.default.scope"),
    ("consent.default.footer", "maybe", "consent.default.footer"),
    ("campaigns[0].keywords.languages", ["xx"], "campaigns[0].keywords.languages"),
    ("consent.default.keywords.languages", ["en", "klingon"], "consent.default.keywords.languages"),
    ("consent.default_country", "XX", "consent.default_country"),
    ("consent.default_country", "USA", "consent.default_country"),
    ("consent.default_country", 1, "consent.default_country"),
    ("campaigns[0].numbers", ["+15550100", " "], "campaigns[0].numbers[1]"),
]
ERROR_CASES = [
    *WRONG_TYPES,
    *OUT_OF_RANGE,
    *UNKNOWN_KEYS,
    *BAD_ADDRESSES,
    *MISSING,
    *BAD_STORE,
    *CONSENT_CHOICES,
]


class TestDefaults:
    """Each default is stated once: the config starts from the session's own."""

    def test_session_defaults_are_the_protocols(self) -> None:
        """An empty [session] gives SessionTimers(), whose SMPP fields are SessionConfig()'s."""
        parsed = parse({"upstream": {"address": "127.0.0.1:2776"}}).session
        assert parsed == SessionTimers()
        protocol = SessionConfig()
        for field in dataclasses.fields(SessionConfig):
            assert getattr(parsed, field.name) == getattr(protocol, field.name), field.name


class TestErrorsNameTheKey:
    """Every refusal starts with the key path, so an operator knows which line to fix."""

    @pytest.mark.parametrize(
        ("path", "value", "key"), ERROR_CASES, ids=[f"{c[0]}={c[1]!r}" for c in ERROR_CASES]
    )
    def test_error_names_key(self, path: str, value: Any, key: str) -> None:
        """A wrong type, range, choice, address or unknown key is a ConfigError naming it."""
        message = error_of(with_value(example(), path, value))
        assert message.startswith(f"{key}:"), message

    @pytest.mark.parametrize("reason", CONSENT_REASONS)
    @pytest.mark.parametrize("status", CLIENT_RETRIED, ids=lambda s: f"0x{s:02X}")
    def test_consent_status_clients_retry_is_refused(self, reason: str, status: int) -> None:
        """A consent refusal with a status clients re-queue (0x08/0x14/0x58/0x64) is refused:
        the message would be retried against the subscriber's wish."""
        message = error_of(with_value(example(), f"consent.statuses.{reason}", status))
        assert message.startswith(f"consent.statuses.{reason}:"), message
        assert "retried" in message

    def test_permanent_store_unavailable_is_refused(self) -> None:
        """store_unavailable must be a status clients retry, or an outage loses messages."""
        message = error_of(with_value(example(), "consent.statuses.store_unavailable", 0x45))
        assert message.startswith("consent.statuses.store_unavailable:"), message

    def test_two_reasons_one_status_is_refused(self) -> None:
        """Consent reasons keep distinct statuses, so a client can tell them apart."""
        data = with_value(example(), "consent.statuses", {"opted_out": 0x0B, "blocked": 0x0B})
        assert error_of(data).startswith("consent.statuses.")

    def test_retried_store_unavailable_statuses_are_accepted(self) -> None:
        """0x58 (throttled) is a valid store_unavailable: clients retry it."""
        config = parse(with_value(example(), "consent.statuses.store_unavailable", 0x58))
        assert config.consent.statuses.store_unavailable == 0x58

    def test_duplicate_campaign_names(self) -> None:
        """A second campaign with a name already used names the second one's name key."""
        data = example()
        data["campaigns"].append({"name": "acme-marketing", "numbers": ["+15550199"]})
        assert error_of(data).startswith("campaigns[1].name:")

    def test_same_number_in_two_campaigns(self) -> None:
        """A sender number in two campaigns is refused, naming the number and both campaigns
        (written differently, "+15550100" and "15550100" are still the same number)."""
        data = example()
        data["campaigns"].append({"name": "other", "numbers": ["15550100"]})
        message = error_of(data)
        assert message.startswith("campaigns"), message
        assert "15550100" in message
        assert "acme-marketing" in message
        assert "other" in message

    def test_tls_files_must_exist(self, tmp_path: Path) -> None:
        """A TLS file that is not there is named with its key path."""
        cert = tmp_path / "server.crt"
        cert.write_text("x")
        missing = str(tmp_path / "missing.key")
        data = with_value(example(), "server.tls", {"cert_file": str(cert), "key_file": missing})
        assert error_of(data).startswith("server.tls.key_file: no such file")
        data = with_value(example(), "upstream.tls", {"ca_file": missing})
        assert error_of(data).startswith("upstream.tls.ca_file: no such file")

    def test_listener_tls_needs_certificate_and_key(self, tmp_path: Path) -> None:
        """TLS on the listener without a certificate is refused, naming the table."""
        ca = tmp_path / "ca.crt"
        ca.write_text("x")
        data = with_value(example(), "server.tls", {"ca_file": str(ca)})
        assert error_of(data).startswith("server.tls:")

    def test_unknown_key_in_tls_tables(self, tmp_path: Path) -> None:
        """An unknown key inside [server.tls] / [upstream.tls] is named with its full path."""
        cert = tmp_path / "c.pem"
        cert.write_text("x")
        tls = {"cert_file": str(cert), "key_file": str(cert), "cafile": str(cert)}
        assert error_of(with_value(example(), "server.tls", tls)).startswith("server.tls.cafile:")
        assert error_of(with_value(example(), "upstream.tls", {"verfy": False})).startswith(
            "upstream.tls.verfy:"
        )

    def test_admin_token_env_must_be_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """admin.token_env names an environment variable that must be set for the admin API;
        the file still loads without it (the staff CLI needs no token)."""
        monkeypatch.delenv("SMPP_GATEWAY_TEST_TOKEN", raising=False)
        data = with_value(example(), "admin", {"token_env": "SMPP_GATEWAY_TEST_TOKEN"})
        config = parse(data)
        with pytest.raises(ConfigError) as info:
            config.admin.bearer_tokens()
        assert str(info.value) == (
            "admin.token_env: environment variable SMPP_GATEWAY_TEST_TOKEN is not set"
        )
        monkeypatch.setenv("SMPP_GATEWAY_TEST_TOKEN", "s3cret")
        assert parse(data).admin.bearer_tokens() == (
            BearerToken(name="admin", role=TokenRole.WRITE, secret=b"s3cret"),
        )


def tokens_config(*tokens: dict[str, Any], **admin: Any) -> dict[str, Any]:
    return {"upstream": {"address": "127.0.0.1:2776"}, "admin": {**admin, "tokens": list(tokens)}}


class TestAdminTokens:
    """[[admin.tokens]]: name, role and exactly one source of the secret; errors name the key."""

    def test_tokens_with_each_kind_of_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Inline, environment and file secrets (the file stripped), in order, after the older
        admin.token (a write token named admin)."""
        secret = tmp_path / "ops.token"
        secret.write_text("  from-a-file\n")
        secret.chmod(0o640)
        monkeypatch.setenv("SMPP_GW_TEST_TOKEN", "from-the-env")
        config = parse(
            tokens_config(
                {"name": "support", "role": "write", "token": "inline-1"},
                {"name": "audit.team-2", "role": "read", "token_env": "SMPP_GW_TEST_TOKEN"},
                {"name": "ops_cron", "role": "write", "token_file": str(secret)},
                token="legacy",
            )
        )
        assert [(t.name, t.role, t.secret) for t in config.admin.bearer_tokens()] == [
            ("admin", TokenRole.WRITE, b"legacy"),
            ("support", TokenRole.WRITE, b"inline-1"),
            ("audit.team-2", TokenRole.READ, b"from-the-env"),
            ("ops_cron", TokenRole.WRITE, b"from-a-file"),
        ]
        assert "inline-1" not in repr(config.admin)
        assert "legacy" not in repr(config.admin.bearer_tokens())

    @pytest.mark.parametrize(
        ("tokens", "message"),
        [
            ([{"role": "read", "token": "x"}], "admin.tokens[0].name: required"),
            ([{"name": "a b", "role": "read", "token": "x"}], "admin.tokens[0].name: expected"),
            ([{"name": "", "role": "read", "token": "x"}], "admin.tokens[0].name: expected"),
            ([{"name": 7, "role": "read", "token": "x"}], "admin.tokens[0].name: expected a"),
            (
                [{"name": "a", "role": "read", "token": "x"}, {"name": "a", "role": "read"}],
                "admin.tokens[1].name: 'a' is already the name of admin.tokens[0].name",
            ),
            ([{"name": "a", "token": "x"}], "admin.tokens[0].role: required"),
            (
                [{"name": "a", "role": "admin", "token": "x"}],
                """admin.tokens[0].role: expected "read" or "write", got 'admin'""",
            ),
            ([{"name": "a", "role": "read"}], "admin.tokens[0]: give exactly one of token,"),
            (
                [{"name": "a", "role": "read", "token": "x", "token_env": "X"}],
                "admin.tokens[0]: give exactly one of token, token_env, token_file",
            ),
            ([{"name": "a", "role": "read", "token": ""}], "admin.tokens[0].token: must not be"),
            ([{"name": "a", "role": "read", "token_env": ""}], "admin.tokens[0].token_env: must"),
            (
                [{"name": "a", "role": "read", "token": "has space"}],
                "admin.tokens[0].token: the token must be visible ASCII",
            ),
            (
                [{"name": "a", "role": "read", "token": "sécret"}],
                "admin.tokens[0].token: the token must be visible ASCII",
            ),
            (
                [{"name": "a", "role": "read", "token": "x", "scope": "all"}],
                "admin.tokens[0].scope: unknown key",
            ),
            ([{"name": "a", "role": "read", "token": 5}], "admin.tokens[0].token: expected a"),
        ],
    )
    def test_errors_name_the_key(self, tokens: list[dict[str, Any]], message: str) -> None:
        """Each mistake is a ConfigError starting with the key path."""
        assert error_of(tokens_config(*tokens)).startswith(message)

    def test_name_admin_is_taken_by_the_older_token(self) -> None:
        """With admin.token set, no [[admin.tokens]] entry may be named admin too."""
        data = tokens_config({"name": "admin", "role": "read", "token": "y"}, token="x")
        assert error_of(data) == "admin.tokens[0].name: 'admin' is already the name of admin.token"

    def test_tokens_not_a_table_array(self) -> None:
        """admin.tokens must be an array of tables."""
        data = {"upstream": {"address": "127.0.0.1:2776"}, "admin": {"tokens": "x"}}
        assert error_of(data).startswith("admin.tokens: expected an array of tables")

    @pytest.mark.parametrize("mode", [0o644, 0o602, 0o606])
    def test_token_file_open_to_everyone_is_refused(self, tmp_path: Path, mode: int) -> None:
        """A token file other users may read or write is refused when the API needs it."""
        secret = tmp_path / "t"
        secret.write_text("abc\n")
        secret.chmod(mode)
        config = parse(tokens_config({"name": "a", "role": "read", "token_file": str(secret)}))
        with pytest.raises(ConfigError, match=r"^admin.tokens\[0\].token_file: .* other users"):
            config.admin.bearer_tokens()

    def test_unreadable_empty_or_duplicate_secrets(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A missing or empty file, an unset or empty variable, and two tokens with one
        secret: each fails bearer_tokens() naming the key, while the file loads."""
        empty = tmp_path / "empty"
        empty.write_text("\n")
        empty.chmod(0o600)
        monkeypatch.setenv("SMPP_GW_TEST_EMPTY", " ")
        monkeypatch.setenv("SMPP_GW_TEST_SAME", "same-secret")
        cases = [
            ({"token_file": str(tmp_path / "absent")}, "admin.tokens[0].token_file: cannot read"),
            ({"token_file": str(empty)}, "admin.tokens[0].token_file: "),
            ({"token_env": "SMPP_GW_TEST_EMPTY"}, "admin.tokens[0].token_env: environment"),
            ({"token_env": "SMPP_GW_TEST_UNSET_XYZ"}, "admin.tokens[0].token_env: environment"),
        ]
        monkeypatch.delenv("SMPP_GW_TEST_UNSET_XYZ", raising=False)
        for secret, message in cases:
            config = parse(tokens_config({"name": "a", "role": "read", **secret}))
            with pytest.raises(ConfigError) as info:
                config.admin.bearer_tokens()
            assert str(info.value).startswith(message)
        config = parse(
            tokens_config(
                {"name": "a", "role": "read", "token": "same-secret"},
                {"name": "b", "role": "write", "token_env": "SMPP_GW_TEST_SAME"},
            )
        )
        with pytest.raises(ConfigError) as info:
            config.admin.bearer_tokens()
        assert str(info.value) == "admin.tokens[1]: the same secret as admin.tokens[0]"

    def test_no_tokens(self) -> None:
        """Without any token the API has none (its consent endpoints answer 403)."""
        assert parse({"upstream": {"address": "127.0.0.1:2776"}}).admin.bearer_tokens() == ()
        assert parse(tokens_config(token="")).admin.bearer_tokens() == ()


# --- arbitrary input --------------------------------------------------------------------------

KEYS = sorted(
    {
        *re.findall(r"^#? ?([a-z_]+) = ", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE),
        *("gateway", "server", "upstream", "session", "store", "admin", "logging", "consent"),
        *("tls", "statuses", "default", "accounts", "campaigns", "keywords", "lists", "replies"),
        *("service_bind", "languages", "words", "mode", "system_id", "token_env"),
    }
)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["127.0.0.1:2775", "+15550100", "US", "en", "always", "memory://", "0x45"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
toml_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def mutated_example(draw: st.DrawFn) -> dict[str, Any]:
    """The example with one to three values anywhere in it replaced by arbitrary ones."""
    data = example()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        node: Any = data
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            if not children:
                break
            key, child = draw(st.sampled_from(children))
            if isinstance(child, dict | list) and draw(st.booleans()):
                node = child
                continue
            node[key] = draw(toml_values)
            break
    return data


class TestArbitraryInput:
    """Whatever TOML holds, parse() either builds a config or raises ConfigError."""

    @settings(max_examples=150, deadline=None)
    @given(data=st.dictionaries(keys, toml_values, max_size=8))
    def test_random_documents(self, data: dict[str, Any]) -> None:
        """A random document raises ConfigError and nothing else (or parses)."""
        with contextlib.suppress(ConfigError):
            parse(data)

    @settings(max_examples=200, deadline=None)
    @given(data=mutated_example())
    def test_mutated_example(self, data: dict[str, Any]) -> None:
        """The example with values replaced anywhere raises ConfigError and nothing else."""
        message = ""
        try:
            parse(data)
        except ConfigError as exc:
            message = str(exc)
        if message:
            assert ": " in message, message  # "key.path: problem"


class TestAccountsAndAddresses:
    """Campaign accounts, how system_ids compare, and the statuses for unreadable addresses."""

    def test_campaign_accounts_are_folded(self) -> None:
        """``accounts`` are kept as account keys: case and outer spaces folded by default."""
        data = with_value(example(), "campaigns[0].accounts", ["ACME ", "Partner"])
        config = parse(data)
        campaign = config.consent.directory.get("acme-marketing")
        assert campaign is not None
        assert campaign.accounts == frozenset({"acme", "partner"})

    def test_exact_match_keeps_system_ids(self) -> None:
        """``account_match = "exact"`` compares system_ids byte for byte."""
        data = with_value(example(), "campaigns[0].accounts", ["ACME"])
        data = with_value(data, "consent.account_match", "exact")
        campaign = parse(data).consent.directory.get("acme-marketing")
        assert campaign is not None
        assert campaign.accounts == frozenset({"ACME"})

    def test_bad_account_match_names_the_key(self) -> None:
        """An unknown comparison is refused naming consent.account_match."""
        message = error_of(with_value(example(), "consent.account_match", "lower"))
        assert message.startswith("consent.account_match:"), message

    def test_empty_account_names_the_key(self) -> None:
        """An empty system_id in ``accounts`` is refused naming the key."""
        message = error_of(with_value(example(), "campaigns[0].accounts", [" "]))
        assert message.startswith("campaigns[0].accounts:"), message

    def test_default_campaign_takes_no_accounts(self) -> None:
        """The default campaign owns no numbers, so ``accounts`` there is an error."""
        message = error_of(with_value(example(), "consent.default", {"accounts": ["acme"]}))
        assert message.startswith("consent.default.accounts:"), message

    def test_account_tables_that_fold_together_are_refused(self) -> None:
        """Two [consent.accounts] tables naming one account (by the comparison) are refused."""
        data = with_value(
            example(), "consent.accounts", {"ACME": {}, "acme": {"accept_and_report": True}}
        )
        assert error_of(data).startswith("consent.accounts."), error_of(data)

    def test_account_default_sender_is_normalised(self) -> None:
        """``default_sender`` is read like any sender; an unreadable one names the key."""
        data = with_value(
            example(), "consent.accounts", {"Acme": {"default_sender": "+1 555 0100"}}
        )
        policy = parse(data).consent.accounts["acme"]
        assert policy.default_sender is not None
        assert policy.default_sender.value == "15550100"
        bad = with_value(example(), "consent.accounts", {"acme": {"default_sender": "555#"}})
        assert error_of(bad).startswith("consent.accounts.acme.default_sender:")

    def test_unreadable_campaign_number_names_the_key(self) -> None:
        """A campaign number with stray characters is refused naming its index."""
        message = error_of(with_value(example(), "campaigns[0].numbers", ["+1555*0100"]))
        assert message.startswith("campaigns[0].numbers[0]:"), message

    @pytest.mark.parametrize("key", ["unreadable_address", "sender_not_allowed"])
    @pytest.mark.parametrize("status", [*CLIENT_RETRIED, 0], ids=lambda s: f"0x{s:02X}")
    def test_address_statuses_must_be_permanent_refusals(self, key: str, status: int) -> None:
        """A status clients retry, or ESME_ROK, is refused for an address refusal too."""
        message = error_of(with_value(example(), f"consent.statuses.{key}", status))
        assert message.startswith(f"consent.statuses.{key}:"), message

    def test_unreadable_address_may_share_blocked_status(self) -> None:
        """The defaults give unreadable destinations blocked's 0x0B: both mean never here."""
        statuses = parse(example()).consent.statuses
        assert statuses.unreadable_address == statuses.blocked == 0x0B
        assert statuses.sender_not_allowed == 0x0A

    def test_client_vendor_pdus_refused_with_consent(self) -> None:
        """With consent on, the client leg refuses vendor requests unless told otherwise."""
        from gateway.app import proxy_settings

        config = parse(example())
        assert not proxy_settings(config).client_session.relay_vendor_pdus
        assert proxy_settings(config).upstream_session.relay_vendor_pdus
        allowed = parse(with_value(example(), "consent.relay_client_vendor_pdus", True))
        assert proxy_settings(allowed).client_session.relay_vendor_pdus


class TestText:
    def test_receipt_ids_ttl_has_a_default_of_two_days(self) -> None:
        """Receipts may come days later: the ids are kept two days unless told otherwise."""
        assert parse(example()).text.receipt_ids_ttl_s == 172_800.0

    @pytest.mark.parametrize("value", [0, -1, float("inf"), "long"], ids=repr)
    def test_bad_receipt_ids_ttl_names_the_key(self, value: Any) -> None:
        """Zero, negative, infinite or non-numeric values are refused naming the key."""
        message = error_of(with_value(example(), "text.receipt_ids_ttl_s", value))
        assert message.startswith("text.receipt_ids_ttl_s:"), message


def service_config(**service: Any) -> dict[str, Any]:
    return {
        "upstream": {"address": "127.0.0.1:2776", "service_bind": {"system_id": "gw", **service}}
    }


class TestSecrets:
    """Every secret inline, from a variable (NAME_env) or from a file (NAME_file, where
    ${CREDENTIALS_DIRECTORY} is systemd's LoadCredential directory); read when used."""

    def test_service_bind_password_in_each_form(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        secret = tmp_path / "svc.password"
        secret.write_text("from-a-file\n")
        secret.chmod(0o600)
        monkeypatch.setenv("SMPP_GW_TEST_SVC", "from-the-env")
        forms = [
            ({}, ""),
            ({"password": "inline"}, "inline"),
            ({"password_env": "SMPP_GW_TEST_SVC"}, "from-the-env"),
            ({"password_file": str(secret)}, "from-a-file"),
        ]
        for form, expected in forms:
            bind = parse(service_config(**form)).upstream.service_bind
            assert bind is not None
            assert bind.password.read() == expected
        assert "inline" not in repr(parse(service_config(password="inline")))

    def test_a_secret_not_readable_fails_when_used_naming_the_key(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The file loads (the staff CLI never needs the daemon's secrets); reading fails."""
        monkeypatch.delenv("SMPP_GW_TEST_UNSET_XYZ", raising=False)
        open_file = tmp_path / "open"
        open_file.write_text("pw\n")
        open_file.chmod(0o644)
        cases = [
            (
                {"password_env": "SMPP_GW_TEST_UNSET_XYZ"},
                "upstream.service_bind.password_env: environment variable SMPP_GW_TEST_UNSET_XYZ"
                " is not set",
            ),
            (
                {"password_file": str(tmp_path / "absent")},
                "upstream.service_bind.password_file: cannot read",
            ),
            (
                {"password_file": str(open_file)},
                "upstream.service_bind.password_file: " + f"{open_file} can be read or written",
            ),
        ]
        for form, message in cases:
            bind = parse(service_config(**form)).upstream.service_bind
            assert bind is not None
            with pytest.raises(ConfigError) as info:
                bind.password.read()
            assert str(info.value).startswith(message)

    def test_two_forms_of_one_secret_are_refused(self) -> None:
        assert error_of(service_config(password="a", password_env="B")) == (
            "upstream.service_bind.password: give at most one of password, password_env, "
            "password_file"
        )
        assert error_of(service_config(password_file="")) == (
            "upstream.service_bind.password_file: must not be empty"
        )

    def test_store_url_from_a_variable_or_a_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Redis URL carries its password: the whole URL may come from elsewhere (read at
        load: every command uses the store)."""
        url = "redis://:s3cret@127.0.0.1:6379/0"
        monkeypatch.setenv("SMPP_GW_TEST_URL", url)
        data = {"upstream": {"address": "127.0.0.1:2776"}, "store": {"url_env": "SMPP_GW_TEST_URL"}}
        assert parse(data).store.url == url
        path = tmp_path / "store.url"
        path.write_text(url + "\n")
        path.chmod(0o640)
        data["store"] = {"url_file": str(path)}
        assert parse(data).store.url == url
        monkeypatch.delenv("SMPP_GW_TEST_URL")
        data["store"] = {"url_env": "SMPP_GW_TEST_URL"}
        assert error_of(data) == ("store.url_env: environment variable SMPP_GW_TEST_URL is not set")

    def test_credentials_directory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """${CREDENTIALS_DIRECTORY} in a *_file path is where systemd put LoadCredential=
        files; outside such a service it is an error naming the key."""
        (tmp_path / "admin-token").write_text("tok-from-systemd\n")
        (tmp_path / "admin-token").chmod(0o400)
        data = tokens_config(
            {"name": "ops", "role": "write", "token_file": "${CREDENTIALS_DIRECTORY}/admin-token"}
        )
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        with pytest.raises(ConfigError, match=r"^admin.tokens\[0\].token_file: \$\{CRED"):
            parse(data).admin.bearer_tokens()
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        (token,) = parse(data).admin.bearer_tokens()
        assert token.secret == b"tok-from-systemd"


def quiet_campaign(**keys: Any) -> dict[str, Any]:
    """The example with its campaign's keys set (``...`` deletes one)."""
    data = example()
    for key, value in keys.items():
        data = with_value(data, f"campaigns[0].{key}", value)
    return data


def acme_hours(data: dict[str, Any]) -> Any:
    campaign = parse(data).consent.directory.get("acme-marketing")
    assert campaign is not None
    return campaign


class TestSendingRules:
    """``category`` and the quiet-hours keys of a campaign, and their errors."""

    def test_one_preset(self) -> None:
        """``quiet_hours = "us-federal"``: that preset, refused, for marketing."""
        campaign = acme_hours(quiet_campaign(quiet_hours="us-federal"))
        assert campaign.hours is not None
        assert [r.name for r in campaign.hours.rules] == ["us-federal"]
        assert campaign.hours.action is QuietAction.REFUSE
        assert campaign.hours.categories == {Category.MARKETING}

    def test_presets_and_custom_windows(self) -> None:
        """A list mixes presets and windows; windows of one zone make one custom rule."""
        windows = [
            {"days": ["mon", "fri"], "start": "09:00", "end": "17:00"},
            {"start": "22:00", "end": "02:00", "tz": "America/New_York"},
            {"days": ["sat"], "start": "10:00", "end": "12:00"},
        ]
        campaign = acme_hours(
            quiet_campaign(
                quiet_hours=["us-federal", "us-tx", *windows], quiet_hours_action="defer"
            )
        )
        rules = campaign.hours.rules
        assert [r.name for r in rules] == ["us-federal", "us-tx", "custom", "custom"]
        assert [(r.tz, len(r.windows)) for r in rules[2:]] == [(None, 2), ("America/New_York", 1)]
        assert rules[2].windows[0] == Window(days=frozenset({0, 4}), start=540, end=1020)
        assert campaign.hours.action is QuietAction.DEFER

    def test_table_array_form(self) -> None:
        """``[[campaigns.quiet_hours]]`` tables are custom windows."""
        text = EXAMPLE.read_text(encoding="utf-8") + (
            '\n[[campaigns.quiet_hours]]\ndays = ["mon"]\nstart = "08:30"\nend = "24:00"\n'
        )
        campaign = parse(tomllib.loads(text)).consent.directory.get("acme-marketing")
        assert campaign is not None
        assert campaign.hours is not None
        assert campaign.hours.rules[0].windows == (
            Window(days=frozenset({0}), start=510, end=1440),
        )

    def test_categories_and_dates(self) -> None:
        """An informational campaign is bound when named; quiet dates as TOML or text dates."""
        campaign = acme_hours(
            quiet_campaign(
                category="informational",
                quiet_hours="us-federal",
                quiet_hours_categories=["marketing", "informational"],
                quiet_dates=[date(2026, 12, 25), "2027-01-01"],
            )
        )
        assert campaign.category is Category.INFORMATIONAL
        assert campaign.hours is not None
        assert campaign.hours.closed_dates == {date(2026, 12, 25), date(2027, 1, 1)}

    def test_default_campaign(self) -> None:
        """``[consent.default]`` takes the same keys."""
        data = with_value(example(), "consent.default.quiet_hours", ["us-federal"])
        default = parse(data).consent.directory.default
        assert default.hours is not None

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"category": "promo"}, "campaigns[0].category: expected one of"),
            ({"quiet_hours": "us-xx"}, "campaigns[0].quiet_hours: unknown preset 'us-xx'"),
            ({"quiet_hours": ["us-tx", "us-tx"]}, "campaigns[0].quiet_hours[1]: preset 'us-tx'"),
            ({"quiet_hours": []}, "campaigns[0].quiet_hours: expected a preset"),
            ({"quiet_hours": [3]}, "campaigns[0].quiet_hours[0]: expected a preset name"),
            (
                {"quiet_hours": [{"start": "9", "end": "17:00"}]},
                "campaigns[0].quiet_hours[0].start: expected HH:MM",
            ),
            (
                {"quiet_hours": [{"start": "09:00"}]},
                "campaigns[0].quiet_hours[0].end: required",
            ),
            (
                {"quiet_hours": [{"start": "09:00", "end": "09:00"}]},
                "campaigns[0].quiet_hours[0]: a window's start and end must differ",
            ),
            (
                {"quiet_hours": [{"days": ["funday"], "start": "09:00", "end": "10:00"}]},
                "campaigns[0].quiet_hours[0].days: unknown day",
            ),
            (
                {"quiet_hours": [{"start": "09:00", "end": "10:00", "tz": "Mars/Olympus"}]},
                "campaigns[0].quiet_hours[0].tz: unknown time zone",
            ),
            (
                {"quiet_hours": [{"start": "09:00", "end": "10:00", "zone": "UTC"}]},
                "campaigns[0].quiet_hours[0].zone: unknown key",
            ),
            (
                {"quiet_hours": "us-federal", "quiet_hours_action": "hold"},
                "campaigns[0].quiet_hours_action: expected one of refuse, defer",
            ),
            (
                {"quiet_hours": "us-federal", "quiet_hours_categories": ["promo"]},
                "campaigns[0].quiet_hours_categories: expected some of",
            ),
            (
                {"quiet_hours": "us-federal", "category": "transactional"},
                "campaigns[0].quiet_hours: binds marketing messages only",
            ),
            ({"quiet_hours_action": "defer"}, "campaigns[0].quiet_hours_action: has no effect"),
            ({"quiet_dates": ["2026-12-25"]}, "campaigns[0].quiet_dates: has no effect"),
            (
                {"quiet_hours": "us-federal", "quiet_dates": ["25/12/2026"]},
                "campaigns[0].quiet_dates[0]: expected a date",
            ),
        ],
        ids=lambda v: None if isinstance(v, dict) else v.split(":")[0],
    )
    def test_errors_name_the_key(self, keys: dict[str, Any], message: str) -> None:
        """Each mistake is refused with the key that holds it."""
        assert error_of(quiet_campaign(**keys)).startswith(message)

    def test_permanent_deferral_is_refused(self) -> None:
        """quiet_hours_deferred must be a status clients retry, else a deferral loses the MT."""
        message = error_of(with_value(example(), "consent.statuses.quiet_hours_deferred", 0x45))
        assert message.startswith("consent.statuses.quiet_hours_deferred:"), message

    @pytest.mark.parametrize("status", CLIENT_RETRIED)
    def test_retried_refusal_is_refused(self, status: int) -> None:
        """quiet_hours (refuse) must be permanent: clients would retry it all night."""
        message = error_of(with_value(example(), "consent.statuses.quiet_hours", status))
        assert message.startswith("consent.statuses.quiet_hours:"), message

    def test_statuses_are_read(self) -> None:
        """Both quiet-hours statuses can be set."""
        data = with_value(example(), "consent.statuses.quiet_hours", 0x45)
        data = with_value(data, "consent.statuses.quiet_hours_deferred", 0x58)
        statuses = parse(data).consent.statuses
        assert (statuses.quiet_hours, statuses.quiet_hours_deferred) == (0x45, 0x58)


class TestFrequencyCaps:
    """``frequency_cap``, ``frequency_cap_categories``, ``business`` and their errors."""

    def test_preset(self) -> None:
        """``frequency_cap = "us-fl"``: 3 per 24 h per campaign, for marketing."""
        campaign = acme_hours(quiet_campaign(frequency_cap="us-fl"))
        cap = campaign.cap
        assert (cap.count, cap.window_s, cap.per.value, cap.rule) == (
            3,
            86_400.0,
            "campaign",
            "us-fl",
        )
        assert campaign.cap_key == "c:acme-marketing"

    def test_custom_per_business(self) -> None:
        """A table sets count, window_h and per; per business counts under the business."""
        campaign = acme_hours(
            quiet_campaign(
                frequency_cap={"count": 5, "window_h": 12, "per": "business"}, business="acme"
            )
        )
        assert (campaign.cap.count, campaign.cap.window_s, campaign.cap.rule) == (
            5,
            43_200.0,
            "custom",
        )
        assert campaign.cap_key == "b:acme"

    def test_preset_per_business(self) -> None:
        """``{ preset = "us-fl", per = "business" }``: Florida's numbers, counted per business."""
        campaign = acme_hours(
            quiet_campaign(frequency_cap={"preset": "us-fl", "per": "business"}, business="acme")
        )
        assert (campaign.cap.count, campaign.cap.rule, campaign.cap_key) == (3, "us-fl", "b:acme")

    def test_categories(self) -> None:
        """A transactional campaign is capped only when its category is named."""
        campaign = acme_hours(
            quiet_campaign(
                category="transactional",
                frequency_cap="us-md",
                frequency_cap_categories=["transactional"],
            )
        )
        assert campaign.cap is not None
        assert acme_hours(example()).cap is None

    def test_status(self) -> None:
        """``[consent.statuses] frequency_capped`` is read; a status clients retry is refused."""
        data = with_value(example(), "consent.statuses.frequency_capped", 0x440)
        assert parse(data).consent.statuses.frequency_capped == 0x440
        assert DEFAULT_REJECT_STATUSES.frequency_capped == 0x61
        message = error_of(with_value(example(), "consent.statuses.frequency_capped", 0x14))
        assert message.startswith("consent.statuses.frequency_capped: 0x14 is retried by clients")

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"frequency_cap": "us-xx"}, "campaigns[0].frequency_cap: unknown preset 'us-xx'"),
            ({"frequency_cap": 3}, "campaigns[0].frequency_cap: expected a preset name"),
            ({"frequency_cap": {"window_h": 24}}, "campaigns[0].frequency_cap.count: required"),
            ({"frequency_cap": {"count": 0}}, "campaigns[0].frequency_cap.count: must be"),
            ({"frequency_cap": {"count": 3}}, "campaigns[0].frequency_cap.window_h: required"),
            (
                {"frequency_cap": {"count": 3, "window_h": -1}},
                "campaigns[0].frequency_cap.window_h: expected hours",
            ),
            (
                {"frequency_cap": {"count": 3, "window_h": 24, "per": "planet"}},
                "campaigns[0].frequency_cap.per: expected one of",
            ),
            (
                {"frequency_cap": {"count": 3, "window_h": 24, "every": 1}},
                "campaigns[0].frequency_cap.every: unknown key",
            ),
            (
                {"frequency_cap": {"count": 3, "window_h": 24, "per": "business"}},
                'campaigns[0].frequency_cap: per = "business" needs',
            ),
            (
                {"frequency_cap_categories": ["marketing"]},
                "campaigns[0].frequency_cap_categories: has no effect without frequency_cap",
            ),
            (
                {"frequency_cap": "us-fl", "frequency_cap_categories": ["promo"]},
                "campaigns[0].frequency_cap_categories: expected some of",
            ),
            (
                {"frequency_cap": "us-fl", "category": "transactional"},
                "campaigns[0].frequency_cap: binds marketing messages only",
            ),
            ({"business": ""}, "campaigns[0].business: must be non-empty"),
        ],
    )
    def test_errors_name_the_key(self, keys: dict[str, Any], message: str) -> None:
        """Each mistake is an error naming the key."""
        assert error_of(quiet_campaign(**keys)).startswith(message)


def with_business(table: dict[str, Any] | None = None, /, **campaign: Any) -> dict[str, Any]:
    """The example with ``[[businesses]]`` set to ``table`` and its first campaign's keys."""
    data = example()
    if table is not None:
        data["businesses"] = [table]
    for key, value in campaign.items():
        data = with_value(data, f"campaigns[0].{key}", value)
    return data


class TestBusinesses:
    """``[[businesses]]`` and a campaign's ``business``: revoke-all and its errors."""

    def test_date_in_utc_and_a_zone(self) -> None:
        """``revoke_all = "2027-01-31"`` is on from midnight UTC, or midnight in its zone."""
        acme = acme_hours(
            with_business({"name": "acme", "revoke_all": "2027-01-31"}, business="acme")
        )
        rules = acme.business_rules
        assert rules is not None
        assert rules.revoke_all_from == 1_801_353_600.0
        assert not rules.revoke_all(1_801_353_599.0)
        zoned = {"name": "acme", "revoke_all": "2027-01-31", "revoke_all_zone": "America/New_York"}
        rules = acme_hours(with_business(zoned, business="acme")).business_rules
        assert rules is not None
        assert rules.revoke_all_from == 1_801_353_600.0 + 5 * 3600

    def test_true_false_and_a_toml_date(self) -> None:
        """true is always on, false never, a bare TOML date works like the string."""
        on = acme_hours(with_business({"name": "acme", "revoke_all": True}, business="acme"))
        assert on.business_rules is not None
        assert on.business_rules.revoke_all(0.0)
        off = acme_hours(with_business({"name": "acme", "revoke_all": False}, business="acme"))
        assert off.business_rules is not None
        assert not off.business_rules.revoke_all(2e9)
        bare = {"name": "acme", "revoke_all": date(2027, 1, 31)}
        rules = acme_hours(with_business(bare, business="acme")).business_rules
        assert rules is not None
        assert rules.revoke_all_from == 1_801_353_600.0

    def test_clarify(self) -> None:
        """``clarify`` gives the window in hours, the question and the ALL words."""
        clarify = {
            "replies": {"fr": "{brand} : TOUT ou {choices} ?"},
            "window_h": 2,
            "reply": "{brand}: ALL or {choices}?",
            "all_words": ["ALL", "TOUT"],
        }
        business = {"name": "acme", "revoke_all": True, "clarify": clarify}
        rules = acme_hours(with_business(business, business="acme")).business_rules
        assert rules is not None
        assert rules.clarify is not None
        assert rules.clarify.window_s == 7200.0
        assert rules.clarify.all_words == ("ALL", "TOUT")
        assert rules.clarify.replies == (("fr", "{brand} : TOUT ou {choices} ?"),)

    def test_business_without_table_is_a_name(self) -> None:
        """A campaign may name a business with no ``[[businesses]]`` at all: no revoke-all."""
        acme = acme_hours(with_business(business="acme"))
        assert acme.business == "acme"
        assert acme.business_rules is None

    @pytest.mark.parametrize(
        ("business", "campaign", "message"),
        [
            (
                {"name": "acme", "revoke_all": True},
                "other",
                r"campaigns\[0\]\.business: unknown business 'other'",
            ),
            ({"name": "acme", "revoke_all": True}, None, r"businesses: acme has no campaign"),
            (
                {"name": "acme", "revoke_all": "31/01/2027"},
                "acme",
                r"businesses\[0\]\.revoke_all: expected true",
            ),
            (
                {"name": "acme", "revoke_all": "2027-01-31", "revoke_all_zone": "Mars/Base"},
                "acme",
                r"revoke_all_zone: unknown time zone",
            ),
            ({"name": "acme", "revoke_all_zone": "UTC"}, "acme", r"revoke_all_zone: has no effect"),
            (
                {"name": "acme", "clarify": {}},
                "acme",
                r"businesses\[0\]\.clarify: .*revoke_all = false",
            ),
            (
                {"name": "acme", "revoke_all": True, "clarify": {"reply": "{list}"}},
                "acme",
                r"clarify\.reply: \{list\}",
            ),
            (
                {"name": "acme", "revoke_all": True, "clarify": {"replies": {"xx": "?"}}},
                "acme",
                r"clarify\.replies\.xx: unknown language; known: de, es, fr",
            ),
            (
                {"name": "acme", "revoke_all": True, "clarify": {"window": 3}},
                "acme",
                r"clarify\.window: unknown key",
            ),
            ({"name": "acme", "revoke": True}, "acme", r"businesses\[0\]\.revoke: unknown key"),
        ],
    )
    def test_errors_name_the_key(
        self, business: dict[str, Any], campaign: str | None, message: str
    ) -> None:
        """Mistakes in ``[[businesses]]`` and ``business`` are errors that name the key."""
        keys = {} if campaign is None else {"business": campaign}
        assert re.search(message, error_of(with_business(business, **keys)))
