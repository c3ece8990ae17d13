"""Replies in the keyword's language: which language a word is, which text answers it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.consent.campaign import (
    BUNDLED_REPLIES,
    DEFAULT_REPLIES,
    LOCAL_REPLY_NAMES,
    Campaign,
    Keywords,
    LocalReplies,
    Replies,
    ReplyOrigin,
    WordList,
    render,
)
from gateway.consent.keywords import LANGUAGE_PACKS, KeywordFamily, KeywordRules, match
from gateway.consent.model import AddressKind, ConsentState, SmsAddress
from gateway.consent.policy import MoAction, decide_mo
from gateway.text import gsm7
from tests.consent.test_policy import K_CAMPAIGN, SUB, rec, recs

NUM = SmsAddress(kind=AddressKind.E164, value="15550100")
OPTED_OUT = recs(rec(K_CAMPAIGN, ConsentState.OPTED_OUT))


def campaign(**values: Any) -> Campaign:
    values.setdefault("keywords", Keywords(languages=("fr",)))
    return Campaign(name="acme", brand="ACME", numbers=("15550100",), **values)


def mo(text: str, c: Campaign, **kw: Any) -> Any:
    ids = iter(range(1000))
    return decide_mo(
        text=text,
        subscriber=SUB,
        recipient=NUM,
        campaign=c,
        system_id="acme",
        records=kw.pop("records", {}),
        is_receipt=False,
        now=1000.0,
        new_event_id=lambda: f"e{next(ids)}",
        **kw,
    )


class TestMatchLanguage:
    @pytest.mark.parametrize(
        ("text", "family", "language"),
        [
            ("STOP", KeywordFamily.OPT_OUT, "en"),
            ("ARRET", KeywordFamily.OPT_OUT, "fr"),
            ("Arrêt!", KeywordFamily.OPT_OUT, "fr"),
            ("AIDE", KeywordFamily.HELP, "fr"),
            ("HELP", KeywordFamily.HELP, "en"),
            ("INFO", KeywordFamily.HELP, "en"),
            ("debut", KeywordFamily.OPT_IN, "fr"),
            ("START", KeywordFamily.OPT_IN, "en"),
        ],
    )
    def test_word_carries_its_language(
        self, text: str, family: KeywordFamily, language: str
    ) -> None:
        """A French pack word matches as French, an English default word as English."""
        found = match(text, campaign().rules)
        assert found is not None
        assert (found.family, found.language) == (family, language)

    @pytest.mark.parametrize(
        ("word", "language"), [("alto", "es"), ("ayuda", "es"), ("hilfe", "de"), ("stopp", "de")]
    )
    def test_other_packs(self, word: str, language: str) -> None:
        """Spanish and German pack words carry their pack's language."""
        rules = campaign(keywords=Keywords(languages=("es", "de"))).rules
        found = match(word, rules)
        assert found is not None
        assert found.language == language

    def test_pack_word_in_the_campaigns_own_list_stays_in_the_packs_language(self) -> None:
        """ARRET listed in the campaign's own opt-out words and in the French pack is French."""
        c = campaign(keywords=Keywords(opt_out=WordList(words=("arret",)), languages=("fr",)))
        found = match("ARRET", c.rules)
        assert found is not None
        assert found.language == "fr"

    def test_own_words_without_the_pack_are_english(self) -> None:
        """Without the French pack, the campaign's own word ARRET is answered in English."""
        c = campaign(keywords=Keywords(opt_out=WordList(words=("arret",))))
        found = match("ARRET", c.rules)
        assert found is not None
        assert found.language == "en"

    def test_phrase_tier_is_english(self) -> None:
        """The phrase tier's plain-language opt-outs are English."""
        found = match("please stop texting me", campaign(phrase_tier=True).rules)
        assert found is not None
        assert found.language == "en"


class TestChoose:
    def test_english_keyword_gets_the_english_text(self) -> None:
        """English (the base table) is what STOP gets, whatever else is configured."""
        choice = Replies().choose("opt_out", "en")
        assert (choice.template, choice.origin) == (DEFAULT_REPLIES.opt_out, ReplyOrigin.CONFIGURED)

    def test_no_french_table_gets_the_bundled_french(self) -> None:
        """With no [replies.fr] and English defaults, French keywords get the bundled texts."""
        choice = Replies().choose("opt_out", "fr")
        assert choice.origin is ReplyOrigin.BUNDLED
        assert choice.template == BUNDLED_REPLIES["fr"].opt_out
        assert choice.language == "fr"

    def test_configured_french_wins(self) -> None:
        """A text in [replies.fr] answers the French keyword."""
        replies = Replies(languages=(LocalReplies(language="fr", help="{brand}: aide"),))
        choice = replies.choose("help", "fr")
        assert (choice.template, choice.origin) == ("{brand}: aide", ReplyOrigin.CONFIGURED)

    def test_missing_key_falls_back_to_the_operators_english_text(self) -> None:
        """A key [replies.fr] lacks gets the campaign's own English text when it changed the
        default (what the campaign registered), marked as the English fallback."""
        replies = Replies(
            help="ACME: call 1-800-555-0100",
            languages=(LocalReplies(language="fr", opt_out="x"),),
        )
        choice = replies.choose("help", "fr")
        assert (choice.template, choice.language) == ("ACME: call 1-800-555-0100", "en")
        assert choice.origin is ReplyOrigin.ENGLISH

    def test_missing_key_with_default_english_gets_the_bundled_french(self) -> None:
        """A key [replies.fr] lacks, English left at its default: the bundled French text."""
        replies = Replies(languages=(LocalReplies(language="fr", opt_out="x"),))
        assert replies.choose("help", "fr").template == BUNDLED_REPLIES["fr"].help

    def test_switched_off_in_english_is_off_in_french(self) -> None:
        """An English reply switched off ("") stays off for French keywords without a text."""
        assert Replies(help="").choose("help", "fr").template == ""

    @pytest.mark.parametrize("name", ["opt_in_request", "list_opt_out"])
    def test_replies_to_no_keyword_are_english(self, name: str) -> None:
        """The opt-in request and the list opt-out answer no pack word: always English."""
        assert Replies().choose(name, "fr").template == getattr(DEFAULT_REPLIES, name)


class TestDecideMo:
    def test_arret_gets_the_french_confirmation_and_opts_out(self) -> None:
        """ARRET records the opt-out and is answered with the French confirmation."""
        decision = mo("ARRET", campaign())
        assert decision.action is MoAction.OPTED_OUT
        assert decision.events[0].state is ConsentState.OPTED_OUT
        assert decision.reply is not None
        assert decision.reply.text == render(BUNDLED_REPLIES["fr"].opt_out or "", "ACME")
        assert "ne recevrez plus" in decision.reply.text

    def test_aide_gets_the_french_help(self) -> None:
        """AIDE is answered with the French help text, contact filled in."""
        c = campaign(replies=Replies(contact="1-800-555-0100"))
        decision = mo("AIDE", c)
        assert decision.action is MoAction.HELP
        assert decision.reply is not None
        assert decision.reply.text.startswith("ACME: Aide: 1-800-555-0100. ")
        assert "ARRET" in decision.reply.text

    def test_stop_and_help_stay_english(self) -> None:
        """STOP and HELP of a campaign that hears French are still answered in English."""
        c = campaign()
        assert mo("STOP", c).reply.text == c.reply(DEFAULT_REPLIES.opt_out)
        assert mo("HELP", c).reply.text == c.reply(DEFAULT_REPLIES.help)

    def test_debut_gets_the_french_opt_in(self) -> None:
        """DEBUT after an opt-out opts back in with the French confirmation."""
        c = campaign(
            replies=Replies(languages=(LocalReplies(language="fr", opt_in="{brand}: ok"),))
        )
        decision = mo("debut", c, records=OPTED_OUT)
        assert decision.action is MoAction.OPTED_IN
        assert decision.reply is not None
        assert decision.reply.text == "ACME: ok"

    def test_repeat_arret_gets_no_second_confirmation(self) -> None:
        """A repeated ARRET is recorded, and (already_opted_out off) answered by nothing."""
        decision = mo("ARRET", campaign(), records=OPTED_OUT)
        assert decision.action is MoAction.REPEAT_OPT_OUT
        assert decision.reply is None


class TestRender:
    def test_empty_contact_drops_its_sentence(self) -> None:
        """With no contact, the sentence holding {contact} is left out; the brand stays."""
        assert render(DEFAULT_REPLIES.help, "ACME") == (
            "ACME: Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out."
        )
        assert render("{brand}: Aide: {contact}. Répondez ARRET.", "ACME") == (
            "ACME: Répondez ARRET."
        )

    def test_contact_is_filled_in(self) -> None:
        """{contact} takes the campaign's contact."""
        assert render("{brand}: help at {contact}.", "ACME", contact="acme.example") == (
            "ACME: help at acme.example."
        )


class TestBundled:
    def test_every_pack_has_bundled_replies(self) -> None:
        """Each language pack has bundled texts for every reply answering a keyword."""
        assert set(BUNDLED_REPLIES) == set(LANGUAGE_PACKS)
        for local in BUNDLED_REPLIES.values():
            assert all(getattr(local, name) is not None for name in LOCAL_REPLY_NAMES)

    @pytest.mark.parametrize("language", sorted(BUNDLED_REPLIES))
    def test_bundled_texts_are_gsm_and_one_segment(self, language: str) -> None:
        """The bundled texts need no UCS-2 and fit one segment with a 20-character brand and
        a toll-free number."""
        for name in LOCAL_REPLY_NAMES:
            text = getattr(BUNDLED_REPLIES[language], name)
            filled = render(text, "B" * 20, contact="1-800-555-0100")
            assert gsm7.can_encode(filled), (name, filled)
            assert gsm7.septet_len(filled) <= 160, (name, filled)

    def test_bundled_texts_name_the_packs_words(self) -> None:
        """The bundled help names a word that stops in its language, and the opt-out a word
        that opts back in, so the instructions work."""
        for language, local in BUNDLED_REPLIES.items():
            rules = KeywordRules.build(packs=(language,))
            help_words = {w.strip(".,").lower() for w in (local.help or "").split() if w.isupper()}
            assert any(
                match(w, rules) and match(w, rules).family is KeywordFamily.OPT_OUT  # type: ignore[union-attr]
                for w in help_words
            ), language
            out_words = [w.strip(".,") for w in (local.opt_out or "").split() if w.isupper()]
            assert any(
                match(w, rules) and match(w, rules).family is KeywordFamily.OPT_IN  # type: ignore[union-attr]
                for w in out_words
            ), language
