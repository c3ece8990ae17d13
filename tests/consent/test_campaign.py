"""Campaign rules: defaults that change nothing, validation, keyword lists and the directory."""

from __future__ import annotations

import pytest

from gateway.consent.campaign import (
    DEFAULT_CAMPAIGN_NAME,
    Campaign,
    CampaignDirectory,
    FooterMode,
    InboundUnknown,
    Keywords,
    ListMode,
    MessageList,
    OutboundUnknown,
    ReOptIn,
    WordList,
    default_campaign,
    number_key,
    render,
)
from gateway.consent.keywords import KeywordFamily, match
from gateway.consent.model import Scope, ScopeKind


class TestDefaults:
    def test_defaults_leave_applications_unchanged(self) -> None:
        """A bare campaign allows unknown numbers, adds no footer and forwards everything."""
        campaign = Campaign(name="c")
        assert campaign.outbound_unknown is OutboundUnknown.ALLOW
        assert campaign.inbound_unknown is InboundUnknown.ALLOW
        assert campaign.footer is FooterMode.NEVER
        assert campaign.reopt_in is ReOptIn.KEYWORD
        assert campaign.forward_keywords
        assert not campaign.phrase_tier

    @pytest.mark.parametrize(
        "word",
        ["stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe", "stopall", "unsub"],
    )
    def test_fcc_words_on_by_default(self, word: str) -> None:
        """Every FCC / CTIA revocation word opts out under the default rules."""
        found = match(word, Campaign(name="c").rules)
        assert found is not None
        assert found.family is KeywordFamily.OPT_OUT

    def test_default_campaign_reaches_account(self) -> None:
        """Numbers in no campaign share the account-level default campaign."""
        campaign = default_campaign()
        assert (campaign.name, campaign.scope) == (DEFAULT_CAMPAIGN_NAME, ScopeKind.ACCOUNT)
        assert default_campaign(brand="X").brand == "X"

    def test_identity_equality(self) -> None:
        """Campaigns compare by identity, so caches hash them cheaply."""
        first, second = Campaign(name="c"), Campaign(name="c")
        assert first == first
        assert first != second
        assert len({first, second}) == 2


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"name": ""},
            {"name": "a/b"},
            {"name": "c", "scope": ScopeKind.LIST},
            {"name": "c", "scope": ScopeKind.GLOBAL},
            {"name": "c", "keywords": Keywords(languages=("xx",))},
            {
                "name": "c",
                "lists": (
                    MessageList(name="a", service_types=("P",)),
                    MessageList(name="b", service_types=("P",)),
                ),
            },
            {"name": "c", "lists": (MessageList(name="a"), MessageList(name="a"))},
            {"name": "c", "lists": (MessageList(name="x/y"),)},
        ],
        ids=[
            "empty-name",
            "slash-in-name",
            "list-scope-not-configurable",
            "global-scope-not-configurable",
            "unknown-language",
            "service-type-in-two-lists",
            "duplicate-list",
            "slash-in-list-name",
        ],
    )
    def test_rejected(self, kwargs: dict[str, object]) -> None:
        """An unusable campaign definition raises ValueError at build time."""
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            Campaign(**kwargs)  # type: ignore[arg-type]


class TestKeywordLists:
    def test_extend_keeps_defaults(self) -> None:
        """Extending the opt-out list adds words and keeps the defaults."""
        campaign = Campaign(name="c", keywords=Keywords(opt_out=WordList(words=("remove",))))
        assert match("remove", campaign.rules) is not None
        assert match("stop", campaign.rules) is not None

    def test_replace_drops_defaults(self) -> None:
        """Replacing the opt-in list drops YES (for campaigns where yes means something else)."""
        campaign = Campaign(
            name="c", keywords=Keywords(opt_in=WordList(words=("start",), mode=ListMode.REPLACE))
        )
        assert match("yes", campaign.rules) is None
        assert match("start", campaign.rules) is not None

    def test_languages_added(self) -> None:
        """Naming a language pack adds its words."""
        campaign = Campaign(name="c", keywords=Keywords(languages=("fr", "es")))
        for word in ("arrêt", "baja", "ayuda"):
            assert match(word, campaign.rules) is not None

    def test_phrase_tier_switch(self) -> None:
        """phrase_tier turns the plain-language tier on for the campaign."""
        assert match("please stop texting me", Campaign(name="c").rules) is None
        on = Campaign(name="c", phrase_tier=True)
        assert match("please stop texting me", on.rules) is not None

    def test_lists_compiled(self) -> None:
        """Lists map service types and their own words."""
        promo = MessageList(name="promo", service_types=("PROMO",), keywords=("OPTOUT-PROMO",))
        campaign = Campaign(name="c", lists=(promo,))
        assert campaign.list_by_service_type == {"PROMO": "promo"}
        assert campaign.list_scope("promo") == Scope(ScopeKind.LIST, "c/promo")
        found = match("optout promo", campaign.rules)
        assert found is not None
        assert found.list_name == "promo"


class TestReplies:
    @pytest.mark.parametrize(
        ("template", "brand", "expected"),
        [
            ("{brand}: bye", "ACME", "ACME: bye"),
            ("{brand}: bye", "", "bye"),
            ("no more {list} from {brand}", "ACME", "no more promo from ACME"),
            ("{not a field} {brand}", "ACME", "{not a field} ACME"),
        ],
        ids=["brand", "no-brand-no-prefix", "list-name", "stray-braces-safe"],
    )
    def test_render(self, template: str, brand: str, expected: str) -> None:
        """Reply templates fill brand and list without str.format pitfalls."""
        assert render(template, brand, "promo") == expected

    def test_empty_reply_is_off(self) -> None:
        """An empty template renders as no reply."""
        assert Campaign(name="c", brand="B").reply("") == ""


class TestDirectory:
    def test_lookup(self) -> None:
        """A sender finds its campaign in one lookup; others fall to the default."""
        acme = Campaign(name="acme", numbers=("+15550100", "15550101", "12345", "ACME"))
        directory = CampaignDirectory([acme])
        for sender in ("15550100", "15550101", "12345", "ACME"):
            assert directory.lookup(sender) is acme
        assert directory.lookup("15559999") is directory.default
        assert directory.get("acme") is acme
        assert directory.get(DEFAULT_CAMPAIGN_NAME) is directory.default
        assert len(directory) == 2
        assert set(directory) == {acme, directory.default}

    def test_custom_default(self) -> None:
        """The operator may supply the default campaign."""
        default = default_campaign(brand="Ops")
        assert CampaignDirectory([], default).lookup("1") is default

    def test_number_in_two_campaigns(self) -> None:
        """A sender number may belong to one campaign only."""
        with pytest.raises(ValueError, match="15550100"):
            CampaignDirectory(
                [
                    Campaign(name="a", numbers=("+15550100",)),
                    Campaign(name="b", numbers=("15550100",)),
                ]
            )

    def test_duplicate_names(self) -> None:
        """Campaign names are unique, the default's included."""
        with pytest.raises(ValueError, match="twice"):
            CampaignDirectory([Campaign(name=DEFAULT_CAMPAIGN_NAME)])

    @pytest.mark.parametrize(
        ("number", "key"),
        [("+1 555 0100", "15550100"), ("12345", "12345"), (" ACME ", "ACME")],
        ids=["plus-and-spaces", "short-code", "alphanumeric"],
    )
    def test_number_key(self, number: str, key: str) -> None:
        """Configured numbers are keyed as normalised addresses are."""
        assert number_key(number) == key
