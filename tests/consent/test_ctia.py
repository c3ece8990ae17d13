"""What CTIA and the CWTA ask of HELP and opt-out replies, as findings (gateway.consent.ctia)."""

from __future__ import annotations

import pytest

from gateway.consent.campaign import (
    BUNDLED_REPLIES,
    DEFAULT_REPLIES,
    Campaign,
    Keywords,
    LocalReplies,
    Replies,
    render,
)
from gateway.consent.ctia import (
    campaign_findings,
    has_contact,
    help_findings,
    opt_out_findings,
    tells_how_to_stop,
)
from gateway.consent.keywords import LANGUAGE_PACKS, KeywordFamily, KeywordRules

STOP_WORDS = KeywordRules.build(packs=tuple(LANGUAGE_PACKS)).words(KeywordFamily.OPT_OUT)
GOOD_HELP = (
    "ACME: Help at acme.example or 1-800-555-0100. Msg frequency varies. "
    "Msg&data rates may apply. Reply STOP to cancel."
)
GOOD_AIDE = (
    "ACME: Aide au 1-800-555-0100. Fréquence variable. Des frais de messagerie et de "
    "données peuvent s'appliquer. Répondez ARRET pour annuler."
)


def help_problems(text: str, language: str = "en", brand: str = "ACME") -> list[str]:
    found = help_findings(text, key="k", brand=brand, stop_words=STOP_WORDS, language=language)
    return [f.message for f in found]


class TestHelp:
    def test_complete_help_has_no_findings(self) -> None:
        """A HELP reply with brand, contact, frequency, rates and STOP passes."""
        assert help_problems(GOOD_HELP) == []

    @pytest.mark.parametrize(
        ("text", "missing"),
        [
            (GOOD_HELP.replace("ACME: ", "").replace("acme.example or ", ""), "brand"),
            (GOOD_HELP.replace("at acme.example or 1-800-555-0100", "online"), "contact"),
            (GOOD_HELP.replace("Msg frequency varies. ", ""), "frequency"),
            (GOOD_HELP.replace("Msg&data rates may apply. ", ""), "rates"),
            (GOOD_HELP.replace(" Reply STOP to cancel.", ""), "opt out"),
        ],
        ids=["brand", "contact", "frequency", "rates", "stop"],
    )
    def test_each_missing_element_is_one_finding(self, text: str, missing: str) -> None:
        """Leaving out one element gives exactly one finding, and it names that element."""
        problems = help_problems(text)
        assert len(problems) == 1, problems
        expected = {
            "brand": "brand",
            "contact": "support contact",
            "frequency": "frequency",
            "rates": "Msg & data rates may apply",
            "opt out": "opt out",
        }[missing]
        assert expected in problems[0]

    @pytest.mark.parametrize(
        "rates",
        [
            "Msg & data rates may apply.",
            "Msg&data rates may apply.",
            "Message and data rates may apply.",
            "Std msg & data rates may apply.",
        ],
    )
    def test_common_spellings_of_the_rates(self, rates: str) -> None:
        """The usual spellings of "Msg & data rates may apply" are recognised."""
        assert help_problems(GOOD_HELP.replace("Msg&data rates may apply.", rates)) == []

    @pytest.mark.parametrize(
        "frequency", ["Msg frequency varies.", "Up to 4 msgs/month.", "2 messages per week."]
    )
    def test_frequency_forms(self, frequency: str) -> None:
        """ "Msg frequency varies" and "N msgs per period" both state the frequency."""
        assert help_problems(GOOD_HELP.replace("Msg frequency varies.", frequency)) == []

    @pytest.mark.parametrize(
        ("text", "ok"),
        [
            ("Call +1 800 555 0100", True),
            ("Mail help@acme.example", True),
            ("See https://acme.example/help", True),
            ("See acme.ca", True),
            ("Call us", False),
            ("Reply 12345", False),
        ],
    )
    def test_contact_forms(self, text: str, ok: bool) -> None:
        """A phone number of 7 digits or more, an e-mail or a web address is a contact."""
        assert has_contact(text) is ok

    @pytest.mark.parametrize(
        ("text", "ok"),
        [
            ("Reply STOP to cancel", True),
            ("Text ARRET pour annuler", True),
            ("reply stop to cancel", True),
            ("Répondez arret pour annuler", True),
            ("Text OPT OUT to leave", True),
            ("we never stop", False),
            ("Reply HELP for help", False),
        ],
    )
    def test_how_to_stop(self, text: str, ok: bool) -> None:
        """An opt-out word in capitals, or after "reply" (in the language), says how to stop."""
        language = "fr" if "pour" in text else "en"
        assert tells_how_to_stop(text, STOP_WORDS, language) is ok

    def test_french_help_with_french_words_passes(self) -> None:
        """A French HELP with the French rates sentence and ARRET has no findings."""
        assert help_problems(GOOD_AIDE, "fr") == []

    def test_french_help_with_the_english_rates_sentence_is_a_finding(self) -> None:
        """In a French reply the rates must be said in French."""
        text = GOOD_AIDE.replace(
            "Des frais de messagerie et de données peuvent s'appliquer.",
            "Msg&data rates may apply.",
        )
        problems = help_problems(text, "fr")
        assert len(problems) == 1
        assert "frais de messagerie" in problems[0]

    def test_switched_off_help_is_a_finding(self) -> None:
        """A HELP reply switched off is reported."""
        assert "switched off" in help_problems("")[0]


class TestOptOut:
    @pytest.mark.parametrize(
        ("text", "language"),
        [
            ("ACME: You are unsubscribed. Reply START to resubscribe.", "en"),
            ("ACME: you will not receive any more messages.", "en"),
            ("ACME: no more messages will be sent.", "en"),
            ("ACME: Vous ne recevrez plus de messages.", "fr"),
            ("ACME: Sie erhalten keine weiteren Nachrichten.", "de"),
            ("ACME: No le enviaremos otros mensajes.", "es"),
        ],
    )
    def test_confirmations(self, text: str, language: str) -> None:
        """Confirmations that no more messages come, in each language, pass."""
        assert opt_out_findings(text, key="k", brand="ACME", language=language) == []

    def test_no_confirmation_and_no_brand(self) -> None:
        """An opt-out reply that confirms nothing and names no brand: two findings."""
        found = opt_out_findings("Thanks! Reply START to rejoin.", key="k", brand="ACME")
        assert len(found) == 2
        assert any("no more messages" in f.message for f in found)
        assert any("brand" in f.message for f in found)

    def test_english_confirmation_in_a_french_reply_is_a_finding(self) -> None:
        """A French reply must confirm in French."""
        found = opt_out_findings("ACME: no more messages.", key="k", brand="ACME", language="fr")
        assert len(found) == 1
        assert "ne recevrez plus" in found[0].message


class TestDefaults:
    @pytest.mark.parametrize("language", ["en", *sorted(BUNDLED_REPLIES)])
    def test_default_texts_pass_with_brand_and_contact(self, language: str) -> None:
        """The default English texts and every bundled language pass the checks when the
        campaign has a brand and a contact."""
        source = DEFAULT_REPLIES if language == "en" else BUNDLED_REPLIES[language]
        help_text = render(source.help or "", "ACME", contact="1-800-555-0100")
        opt_out = render(source.opt_out or "", "ACME")
        assert help_problems(help_text, language) == []
        assert opt_out_findings(opt_out, key="k", brand="ACME", language=language) == []


def campaign(**values: object) -> Campaign:
    return Campaign(name="acme", **values)  # type: ignore[arg-type]


class TestCampaignFindings:
    def test_brand_and_contact_set_means_no_warnings(self) -> None:
        """Brand and contact set, languages fr and es: the defaults give no finding at all."""
        c = campaign(
            brand="ACME",
            replies=Replies(contact="1-800-555-0100"),
            keywords=Keywords(languages=("fr", "es")),
        )
        keys = [f.key for f in campaign_findings(c, "campaigns[0]")]
        assert keys == ["campaigns[0].replies.fr", "campaigns[0].replies.es"]

    def test_missing_contact_names_the_key_to_set(self) -> None:
        """No contact: the HELP finding says which key to set, in English and French."""
        c = campaign(brand="ACME", keywords=Keywords(languages=("fr",)))
        found = [f for f in campaign_findings(c, "campaigns[0]") if "contact" in f.message]
        assert [f.key for f in found] == [
            "campaigns[0].replies.help",
            "campaigns[0].replies.fr.help",
        ]
        assert all("set campaigns[0].replies.contact" in f.message for f in found)
        assert "(the bundled text)" in found[1].message

    def test_no_brand(self) -> None:
        """A campaign with no brand: its HELP and opt-out replies name none."""
        found = campaign_findings(
            campaign(replies=Replies(contact="x@y.example")), "consent.default"
        )
        assert [f.key for f in found] == [
            "consent.default.replies.help",
            "consent.default.replies.opt_out",
        ]
        assert all("set consent.default.brand" in f.message for f in found)

    def test_french_keyword_getting_an_english_text_is_a_warning(self) -> None:
        """[replies.fr] without help while the English help was changed: AIDE gets English,
        and the warning says so under the French key."""
        c = campaign(
            brand="ACME",
            replies=Replies(
                help=GOOD_HELP, languages=(LocalReplies(language="fr", opt_out="ACME: désabonné"),)
            ),
            keywords=Keywords(languages=("fr",)),
        )
        found = campaign_findings(c, "campaigns[1]")
        assert [str(f) for f in found] == [
            "campaigns[1].replies.fr.help: not set: French keywords get the English text of "
            "campaigns[1].replies.help"
        ]

    def test_no_french_table_with_english_texts_changed(self) -> None:
        """No [replies.fr] while the English texts were changed: one warning naming them."""
        c = campaign(
            brand="ACME",
            replies=Replies(help=GOOD_HELP, contact="1-800-555-0100"),
            keywords=Keywords(languages=("fr",)),
        )
        found = campaign_findings(c, "campaigns[0]")
        assert len(found) == 1
        assert found[0].key == "campaigns[0].replies.fr"
        assert "English texts of campaigns[0].replies.help" in found[0].message
        assert "bundled French texts (opt_out, opt_in)" in found[0].message
