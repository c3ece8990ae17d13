"""Keyword recognition: normalisation, families, language packs and the phrase tier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.keywords import (
    DEFAULT_HELP,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    DEFAULT_RULES,
    LANGUAGE_PACKS,
    KeywordFamily,
    KeywordRules,
    match,
    normalise_text,
    tells_how_to_opt_out,
)
from gateway.consent.model import MatchType

OUT = KeywordFamily.OPT_OUT
IN = KeywordFamily.OPT_IN
HELP = KeywordFamily.HELP

PHRASES = KeywordRules.build(phrase_tier=True)
FRENCH = KeywordRules.build(
    opt_out=(*DEFAULT_OPT_OUT, *LANGUAGE_PACKS["fr"].opt_out),
    opt_in=(*DEFAULT_OPT_IN, *LANGUAGE_PACKS["fr"].opt_in),
    help=(*DEFAULT_HELP, *LANGUAGE_PACKS["fr"].help),
)

VARIANTS = [
    ("Stop.", OUT, "stop", "trailing-punctuation"),
    (" stop ", OUT, "stop", "surrounding-whitespace"),
    ("\uff33\uff34\uff2f\uff30", OUT, "stop", "full-width-nfkc"),
    ("S\u200bTOP", OUT, "stop", "zero-width-space"),
    ("\ufeffST\u2060OP\u200d", OUT, "stop", "bom-word-joiner-zwj"),
    ("opt-out", OUT, "opt out", "hyphen-reads-as-space"),
    ("Opt Out!", OUT, "opt out", "case-and-punctuation"),
    ("OPTOUT", OUT, "optout", "joined-form-listed"),
    ("opt\u2013out", OUT, "opt out", "en-dash-reads-as-hyphen"),
    ("STOP ALL", OUT, "stop all", "stop-all"),
    ("stop   all", OUT, "stop all", "inner-whitespace-collapsed"),
    ("STOPALL", OUT, "stopall", "stopall"),
    ("\U0001f6d1 STOP \U0001f6d1", OUT, "stop", "emoji-around"),
    ("\u00abstop\u00bb", OUT, "stop", "guillemets"),
    ("Unsubscribe", OUT, "unsubscribe", "fcc-unsubscribe"),
    ("revoke", OUT, "revoke", "fcc-revoke"),
    ("QUIT", OUT, "quit", "fcc-quit"),
    ("end", OUT, "end", "fcc-end"),
    ("cancel", OUT, "cancel", "fcc-cancel"),
    ("unsub", OUT, "unsub", "unsub"),
    ("START", IN, "start", "start"),
    ("Unstop", IN, "unstop", "unstop"),
    ("yes!", IN, "yes", "yes"),
    ("HELP", HELP, "help", "help"),
    ("info?", HELP, "info", "info"),
]


class TestDefaultKeywords:
    @pytest.mark.parametrize(
        ("text", "family", "keyword"),
        [v[:3] for v in VARIANTS],
        ids=[v[3] for v in VARIANTS],
    )
    def test_variant_matches(self, text: str, family: KeywordFamily, keyword: str) -> None:
        """Spelling variants of a keyword are recognised as that keyword."""
        found = match(text)
        assert found is not None
        assert (found.family, found.keyword, found.match) == (family, keyword, MatchType.KEYWORD)

    @pytest.mark.parametrize(
        ("text", "wide"),
        [("STOP ALL", True), ("stopall", True), ("stop-all", True), ("STOP", False)],
        ids=["stop-all-space", "stopall", "stop-all-hyphen", "plain-stop-not-wide"],
    )
    def test_stop_all_reaches_account(self, text: str, wide: bool) -> None:
        """STOPALL / STOP ALL are flagged as reaching the whole account, plain STOP is not."""
        found = match(text)
        assert found is not None
        assert found.reaches_account is wide

    @pytest.mark.parametrize(
        "text",
        [
            "stop please",
            "STOP 12345",
            "stopping",
            "unstoppable",
            "",
            "   ",
            "\u200b",
            "s t o p",
            "un-subscribe",
            "arrêt",
            "Your code is 1234",
        ],
        ids=[
            "whole-message-only",
            "command-with-digits",
            "longer-word",
            "contains-stop",
            "empty",
            "blank",
            "only-zero-width",
            "spaced-letters",
            "hyphen-does-not-join",
            "french-needs-its-pack",
            "ordinary-text",
        ],
    )
    def test_non_keywords(self, text: str) -> None:
        """Text that is not exactly a keyword matches nothing with the phrase tier off."""
        assert match(text) is None


class TestRules:
    @pytest.mark.parametrize(
        ("text", "family", "keyword"),
        [
            ("arrêt", OUT, "arrêt"),
            ("ARRET", OUT, "arret"),
            ("Aide", HELP, "aide"),
            ("stop", OUT, "stop"),
        ],
        ids=["arret-accented", "arret-plain", "aide", "defaults-kept"],
    )
    def test_language_pack_extends(self, text: str, family: KeywordFamily, keyword: str) -> None:
        """A language pack adds its words to the defaults."""
        found = match(text, FRENCH)
        assert found is not None
        assert (found.family, found.keyword) == (family, keyword)

    def test_spanish_pack_words(self) -> None:
        """The Spanish pack carries alto, para, parar, cancelar, baja and ayuda."""
        pack = LANGUAGE_PACKS["es"]
        assert {"alto", "para", "parar", "cancelar", "baja"} <= set(pack.opt_out)
        assert "ayuda" in pack.help

    def test_replace_drops_defaults(self) -> None:
        """A replaced opt-out list recognises only its own words."""
        rules = KeywordRules.build(opt_out=("halt",))
        assert match("stop", rules) is None
        found = match("HALT", rules)
        assert found is not None
        assert found.family is OUT

    def test_protective_family_wins(self) -> None:
        """A word listed as both opt-in and opt-out is an opt-out."""
        rules = KeywordRules.build(opt_in=("stop", "start"))
        found = match("stop", rules)
        assert found is not None
        assert found.family is OUT

    def test_list_keyword_names_its_list(self) -> None:
        """A list word matches as LIST_OPT_OUT with the list's name."""
        rules = KeywordRules.build(list_keywords={"promo": ("OPTOUT-PROMO",)})
        found = match("optout promo", rules)
        assert found is not None
        assert (found.family, found.list_name) == (KeywordFamily.LIST_OPT_OUT, "promo")

    def test_words_by_family(self) -> None:
        """The compiled rules list every default family word, normalised."""
        assert DEFAULT_RULES.words(IN) == {"start", "unstop", "yes"}
        assert {"stop", "opt out", "optout", "stop all"} <= DEFAULT_RULES.words(OUT)


PHRASE_POSITIVES = [
    ("please stop texting me", "stop_contacting"),
    ("Stop texting me!", "stop_contacting"),
    ("stop sending", "stop_contacting"),
    ("please stop sending me these text messages thanks", "stop_contacting"),
    ("can you stop messaging me?", "stop_contacting"),
    ("remove me from your list", "remove_me"),
    ("Remove me", "remove_me"),
    ("take my number off your mailing list please", "remove_me"),
    ("don't text me", "do_not_contact"),
    ("Don\u2019t text me again", "do_not_contact"),
    ("do not contact me anymore", "do_not_contact"),
    ("unsubscribe me", "unsubscribe_me"),
    ("opt me out", "unsubscribe_me"),
    ("no more messages", "no_more"),
    ("I don't want these texts", "do_not_want"),
    ("stop please", "keyword_politely"),
    ("I want to unsubscribe", "keyword_politely"),
    ("stop all texts", "stop_what"),
]

PHRASE_NEGATIVES = [
    ("STOP 12345", "command-with-digits"),
    ("stop 2", "numbered-command"),
    ("don't stop", "negated-stop"),
    ("don't stop texting me", "negated-stop-texting"),
    ("stop by the store", "stop-by"),
    ("I can't stop laughing", "cannot-stop"),
    ("how do I stop these texts?", "question-about-stopping"),
    ("why did you stop sending?", "question-why"),
    ("cancel it", "cancel-appointment"),
    ("please stop texting me because I am moving to another city next week", "too-long"),
    ("see you at the bus stop", "stop-as-noun"),
    ("remove the item from my order", "remove-other-thing"),
]


class TestPhraseTier:
    @pytest.mark.parametrize(
        ("text", "pattern"),
        PHRASE_POSITIVES,
        ids=[p[0].replace(" ", "-") for p in PHRASE_POSITIVES],
    )
    def test_positive(self, text: str, pattern: str) -> None:
        """A plain-language opt-out is recognised as a PHRASE opt-out."""
        found = match(text, PHRASES)
        assert found is not None
        assert (found.family, found.match, found.pattern) == (OUT, MatchType.PHRASE, pattern)
        assert not found.reaches_account

    @pytest.mark.parametrize(
        "text", [n[0] for n in PHRASE_NEGATIVES], ids=[n[1] for n in PHRASE_NEGATIVES]
    )
    def test_false_positive_guarded(self, text: str) -> None:
        """Messages that only look like opt-outs are not opt-outs."""
        assert match(text, PHRASES) is None

    def test_off_by_default(self) -> None:
        """Without the phrase tier a phrase is not an opt-out."""
        assert match("please stop texting me") is None

    def test_keyword_still_wins(self) -> None:
        """With the tier on, an exact keyword is still a KEYWORD match."""
        found = match("STOP", PHRASES)
        assert found is not None
        assert found.match is MatchType.KEYWORD

    def test_word_limit_configurable(self) -> None:
        """Raising the word limit lets a longer phrase through."""
        text = "hi please could you stop texting me now thanks"
        assert match(text, PHRASES) is None
        assert match(text, KeywordRules.build(phrase_tier=True, phrase_max_words=12)) is not None


class TestNormaliseText:
    @given(st.text(max_size=40))
    def test_idempotent(self, text: str) -> None:
        """Normalising twice gives the same as normalising once."""
        once = normalise_text(text)
        assert normalise_text(once) == once

    @given(
        keyword=st.sampled_from(sorted(DEFAULT_RULES.table)),
        before=st.text(alphabet=" \t\n.!,\u200b\ufeff\u2060\"'()", max_size=5),
        after=st.text(alphabet=" \t\n.!?,\u200b\u200c\u200d\"'()", max_size=5),
        upper=st.booleans(),
    )
    def test_keyword_survives_decoration(
        self, keyword: str, before: str, after: str, upper: bool
    ) -> None:
        """Any keyword wrapped in whitespace, punctuation and zero-width characters matches."""
        word = keyword.upper() if upper else keyword
        found = match(before + word + after)
        assert found is not None
        assert found.keyword == keyword

    @given(st.text(max_size=200))
    def test_match_never_raises(self, text: str) -> None:
        """Any text gives a match or None with the phrase tier on."""
        found = match(text, PHRASES)
        assert found is None or found.family is not None


class TestFooterDetection:
    @pytest.mark.parametrize(
        ("text", "tells"),
        [
            ("Sale today! Reply STOP to opt out", True),
            ("Sale today! Text 'STOP' to unsubscribe", True),
            ("Sale today! Reply STOP-ALL to opt out", True),
            ("Reply HELP for help", False),
            ("Sale today!", False),
            ("Reply YES to confirm", False),
        ],
        ids=[
            "reply-stop",
            "text-quoted-stop",
            "reply-stop-all",
            "help-only",
            "no-mention",
            "opt-in",
        ],
    )
    def test_detects_opt_out_instructions(self, text: str, tells: bool) -> None:
        """An MT that already says how to opt out is recognised (it needs no footer)."""
        assert tells_how_to_opt_out(text) is tells
