"""Reply texts in the config: per-language tables, their errors, and the one-segment limit."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig, campaign_keys, parse
from gateway.consent.campaign import BUNDLED_REPLIES, ReplyOrigin


def config(
    replies: dict[str, Any] | None = None,
    *,
    languages: tuple[str, ...] = ("fr",),
    default: dict[str, Any] | None = None,
    alphabet: str = "gsm7",
    **rules: Any,
) -> GatewayConfig:
    camp: dict[str, Any] = {"name": "acme", "brand": "ACME", "numbers": ["+15550100"], **rules}
    if replies is not None:
        camp["replies"] = replies
    if languages:
        camp["keywords"] = {"languages": list(languages)}
    data: dict[str, Any] = {
        "upstream": {"address": "127.0.0.1:2776", "default_alphabet": alphabet},
        "store": {"url": "memory://"},
        "campaigns": [camp],
    }
    if default is not None:
        data["consent"] = {"default": default}
    return parse(data)


def error(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config(*args, **kwargs)
    return str(info.value)


def acme(cfg: GatewayConfig) -> Any:
    found = cfg.consent.directory.get("acme")
    assert found is not None
    return found


class TestLanguageTables:
    def test_french_table_is_read(self) -> None:
        """[campaigns.replies.fr] texts answer French keywords; contact fills {contact}."""
        cfg = config({"contact": "1-800-555-0100", "fr": {"help": "{brand}: aide {contact}"}})
        c = acme(cfg)
        assert c.reply_in("help", "fr") == "ACME: aide 1-800-555-0100"
        assert c.replies.choose("opt_out", "fr").origin is ReplyOrigin.BUNDLED

    def test_default_campaign_takes_language_tables(self) -> None:
        """[consent.default.replies.fr] works like a campaign's."""
        cfg = config(
            default={"keywords": {"languages": ["fr"]}, "replies": {"fr": {"opt_out": "fini"}}}
        )
        assert cfg.consent.directory.default.reply_in("opt_out", "fr") == "fini"

    def test_language_the_campaign_does_not_hear(self) -> None:
        """A table for a language not in keywords.languages would never be sent: an error."""
        message = error({"es": {"help": "ayuda"}})
        assert message.startswith("campaigns[0].replies.es: the campaign hears no Spanish")
        assert 'add "es" to campaigns[0].keywords.languages' in message

    def test_unknown_language(self) -> None:
        """A table named after no language pack is an error naming it."""
        assert error({"xx": {"help": "?"}}).startswith("campaigns[0].replies.xx: unknown language")

    @pytest.mark.parametrize("name", ["opt_in_request", "list_opt_out"])
    def test_replies_to_no_keyword_are_english_only(self, name: str) -> None:
        """The opt-in request and the list opt-out in a language table are errors."""
        message = error({"fr": {name: "x"}})
        assert message.startswith(f"campaigns[0].replies.fr.{name}: answers no keyword")

    def test_unknown_key_and_placeholder_in_a_language_table(self) -> None:
        """A misspelt key and an unknown placeholder in [replies.fr] name their key."""
        assert error({"fr": {"aide": "x"}}).startswith("campaigns[0].replies.fr.aide: unknown key")
        assert error({"fr": {"help": "{marque}"}}).startswith(
            "campaigns[0].replies.fr.help: {marque}: unknown placeholder"
        )

    def test_campaign_keys(self) -> None:
        """The default campaign and each campaign with the key path of its table."""
        assert [k for k, _c in campaign_keys(config().consent)] == [
            "consent.default",
            "campaigns[0]",
        ]


class TestOneSegment:
    def test_gsm_over_160_names_the_key(self) -> None:
        """A French help of 172 GSM characters is an error naming its key and the limit."""
        text = "{brand}: " + "a" * 166  # ACME: + 166 = 172
        assert error({"fr": {"help": text}}) == (
            "campaigns[0].replies.fr.help: 172 GSM characters, at most 160 (one segment)"
        )

    def test_exactly_160_is_fine(self) -> None:
        """160 GSM characters fit one segment."""
        config({"help": "{brand}: " + "a" * 154})

    def test_gsm_escapes_count_two(self) -> None:
        """The euro sign takes two septets: 80 of them are 160, 81 are too many."""
        config({"help": "€" * 80}, languages=())
        assert error({"help": "€" * 81}, languages=()).startswith(
            "campaigns[0].replies.help: 162 GSM characters"
        )

    def test_ucs2_over_70(self) -> None:
        """A reply that needs UCS-2 has room for 70 characters, and the message says why."""
        message = error({"opt_out": "STOP ok ✓" + "a" * 62}, languages=())
        assert message == (
            "campaigns[0].replies.opt_out: 71 UCS-2 characters, at most 70 (one segment; "
            "'✓' is not in the GSM 7-bit alphabet)"
        )

    def test_latin1_default_alphabet(self) -> None:
        """With a Latin-1 SMSC default, replies go as Latin-1: 140 characters."""
        config({"help": "a" * 140}, languages=(), alphabet="latin1")
        assert error({"help": "a" * 141}, languages=(), alphabet="latin1").startswith(
            "campaigns[0].replies.help: 141 Latin-1 characters, at most 140"
        )

    def test_brand_and_contact_count(self) -> None:
        """The length is counted with the brand and contact filled in."""
        text = "{brand} {contact}"
        with pytest.raises(ConfigError, match=r"^campaigns\[0\]\.replies\.help: 161 GSM"):
            config({"help": text, "contact": "c" * 100}, languages=(), brand="b" * 60)

    def test_longest_list_name_counts(self) -> None:
        """{list} is counted with the campaign's longest list name."""
        lists = [{"name": "a"}, {"name": "l" * 150}]
        with pytest.raises(ConfigError, match=r"^campaigns\[0\]\.replies\.list_opt_out: 1\d\d GSM"):
            config({"list_opt_out": "{brand}: no more {list}"}, languages=(), lists=lists)

    def test_bundled_text_too_long_for_a_long_brand(self) -> None:
        """A brand so long the bundled French help no longer fits: the error names the French
        key to set instead."""
        message = error({"contact": "1-800-555-0100"}, brand="B" * 40)
        assert message.startswith("campaigns[0].replies.fr.help: ")
        assert "(the bundled text with this brand and contact: set a shorter one)" in message

    def test_the_default_french_texts_fit(self) -> None:
        """The bundled texts with the ACME brand and a toll-free number pass the check."""
        cfg = config({"contact": "1-800-555-0100"}, languages=tuple(BUNDLED_REPLIES))
        assert acme(cfg).keywords.languages == tuple(BUNDLED_REPLIES)
