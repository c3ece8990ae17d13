"""Keyword recognition for MO text (PRODUCT.md section 3).

Normalisation (``normalise_text``), in order:

1. Unicode NFKC, so full-width letters (U+FF33 ...) and compatibility forms read as plain ones.
2. Every format character (category Cf) is removed: the zero-width space, non-joiner and joiner
   (U+200B..U+200D), the word joiner (U+2060), the BOM (U+FEFF), soft hyphens and direction
   marks. They are invisible on a handset and must not hide a STOP.
3. casefold (and NFKC again, so the result is stable).
4. Hyphens, dashes and underscores read as spaces, so ``opt-out`` equals ``opt out``; ``optout``
   matches because the family lists it too (hyphens never join words, so ``un-subscribe`` does
   not become a keyword that no list names).
5. Leading and trailing whitespace, punctuation and symbols (emoji included) are stripped, and
   inner whitespace collapses to one space: ``" Opt Out! "`` reads ``opt out``.

The whole normalised message is the keyword (the field default). The optional phrase tier then
recognises a small, documented set of plain-language opt-outs (``PHRASE_PATTERNS``), since the FCC
asks senders to honour any reasonable wording; it is guarded against command-like messages
(digits), questions, negations ("don't stop") and long messages.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from gateway.consent.model import MatchType


class KeywordFamily(StrEnum):
    OPT_OUT = "opt_out"  # STOP family: revokes consent in the campaign's scope
    OPT_IN = "opt_in"  # START family: gives it back (never lifts a block)
    HELP = "help"  # HELP family: the help reply, no state change
    LIST_OPT_OUT = "list_opt_out"  # a campaign list's own word: that list only


# FCC 24-24 per-se revocation words, CTIA's minimum and the platform defaults of FIELD-NOTES.
DEFAULT_OPT_OUT: tuple[str, ...] = (
    "stop",
    "quit",
    "end",
    "revoke",
    "opt out",
    "cancel",
    "unsubscribe",
    "stopall",
    "stop all",
    "optout",
    "opt-out",
    "unsub",
)
DEFAULT_OPT_IN: tuple[str, ...] = ("start", "unstop", "yes")
DEFAULT_HELP: tuple[str, ...] = ("help", "info")
# Opt-out words that reach every campaign of the client account, whatever the campaign's scope.
DEFAULT_ACCOUNT_WIDE: tuple[str, ...] = ("stopall", "stop all")
# The language of the default words, of a campaign's own words and of the phrase tier.
ENGLISH = "en"


@dataclass(frozen=True, slots=True, kw_only=True)
class LanguagePack:
    """Extra words a campaign may add by naming the pack (``languages = ["fr"]``)."""

    opt_out: tuple[str, ...] = ()
    opt_in: tuple[str, ...] = ()
    help: tuple[str, ...] = ()


# Accented and unaccented spellings are both listed: handsets often drop accents.
LANGUAGE_PACKS: Mapping[str, LanguagePack] = MappingProxyType(
    {
        "fr": LanguagePack(
            opt_out=(
                "arret",
                "arrêt",
                "arreter",
                "arrêter",
                "desabonner",
                "désabonner",
                "desinscrire",
                "désinscrire",
            ),
            opt_in=("debut", "début", "reprendre"),
            help=("aide",),
        ),
        "es": LanguagePack(
            opt_out=("alto", "para", "parar", "cancelar", "baja", "detener", "terminar"),
            opt_in=("alta", "comenzar", "iniciar"),
            help=("ayuda",),
        ),
        "de": LanguagePack(
            opt_out=("stopp", "abmelden", "austragen", "beenden"),
            opt_in=("anmelden",),
            help=("hilfe",),
        ),
    }
)

# Hyphen-like characters left after NFKC (which already maps many of them to U+2010 or '-').
_HYPHENS = frozenset("-_\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


def normalise_text(text: str) -> str:
    """The comparable form of a message (see the module docstring for the steps)."""
    if text.isascii():
        # Most traffic: NFKC changes no ASCII text, none of it is a format character, and
        # casefold is lower(); the same steps, each one a C call.
        text = text.replace("-", " ").replace("_", " ").lower().strip(_ASCII_EDGES)
        return " ".join(text.split())
    return _normalise_unicode(text)


def _normalise_unicode(text: str) -> str:
    """``normalise_text`` for any text, step by step."""
    text = unicodedata.normalize("NFKC", text)
    out: list[str] = []
    for ch in text:
        if ch in _HYPHENS:
            out.append(" ")
        elif unicodedata.category(ch) != "Cf":
            out.append(ch)
    # casefold can leave text that NFKC would change again (Unicode's NFKC_Casefold issue), so
    # normalise once more: the result is stable under a second pass.
    text = unicodedata.normalize("NFKC", "".join(out).casefold())
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split())


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PSZC"


# The ASCII edge characters, for the fast path (whose hyphens are "-" and "_").
_ASCII_EDGES = "".join(ch for ch in map(chr, range(128)) if _is_edge(ch))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeywordMatch:
    """What an MO said, as far as consent is concerned."""

    family: KeywordFamily
    keyword: str  # the normalised keyword as listed, or the normalised phrase text
    match: MatchType  # KEYWORD or PHRASE
    reaches_account: bool = False  # STOPALL / STOP ALL: the whole client account
    list_name: str | None = None  # LIST_OPT_OUT only: which list of the campaign
    pattern: str | None = None  # PHRASE only: the PHRASE_PATTERNS name that matched
    # The language of the word that matched ("en", or a LANGUAGE_PACKS name): the reply is
    # written in it (see ``KeywordRules.build`` for words listed in several languages).
    language: str = ENGLISH


@dataclass(frozen=True, slots=True, kw_only=True)
class KeywordRules:
    """One campaign's compiled keyword table. Build with ``KeywordRules.build``."""

    table: Mapping[str, KeywordMatch]  # normalised keyword -> its match
    phrase_tier: bool = False
    phrase_max_words: int = 8

    @classmethod
    def build(
        cls,
        *,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
        help: Iterable[str] = DEFAULT_HELP,  # the family's name
        account_wide: Iterable[str] = DEFAULT_ACCOUNT_WIDE,
        list_keywords: Mapping[str, Iterable[str]] | None = None,
        packs: Sequence[str] = (),
        phrase_tier: bool = False,
        phrase_max_words: int = 8,
    ) -> KeywordRules:
        """Compile word lists. When a word is in two families, the more protective one wins.

        Precedence: opt-out, then list opt-out, then opt-in, then help, so a misconfigured list
        can only ever stop more messages, never fewer. ``list_keywords`` maps list name -> words.
        ``packs`` names the LANGUAGE_PACKS whose words are added to each family.

        The language of a word (``KeywordMatch.language``, the language of its reply): English
        for the default English words (CWTA: STOP and HELP are answered in English even by a
        French-only program); a pack's language for a pack's word, also when the campaign's
        own lists name it too (ARRET is French wherever it is listed); the first of ``packs``
        that lists it when several do; English for the campaign's other own words.
        """
        wide = {normalise_text(w) for w in account_wide}
        english = {normalise_text(w) for w in (*DEFAULT_OPT_OUT, *DEFAULT_OPT_IN, *DEFAULT_HELP)}
        language: dict[str, str] = {}
        for lang in packs:
            pack = LANGUAGE_PACKS[lang]
            for word in (*pack.opt_out, *pack.opt_in, *pack.help):
                key = normalise_text(word)
                if key not in english:
                    language.setdefault(key, lang)
        table: dict[str, KeywordMatch] = {}

        def add(words: Iterable[str], family: KeywordFamily, list_name: str | None = None) -> None:
            for word in words:
                key = normalise_text(word)
                if key and key not in table:
                    table[key] = KeywordMatch(
                        family=family,
                        keyword=key,
                        match=MatchType.KEYWORD,
                        reaches_account=family is KeywordFamily.OPT_OUT and key in wide,
                        list_name=list_name,
                        language=language.get(key, ENGLISH),
                    )

        def pack_words(family: KeywordFamily) -> tuple[str, ...]:
            return tuple(w for lang in packs for w in getattr(LANGUAGE_PACKS[lang], family.value))

        add((*opt_out, *pack_words(KeywordFamily.OPT_OUT)), KeywordFamily.OPT_OUT)
        for name, words in (list_keywords or {}).items():
            add(words, KeywordFamily.LIST_OPT_OUT, name)
        add((*opt_in, *pack_words(KeywordFamily.OPT_IN)), KeywordFamily.OPT_IN)
        add((*help, *pack_words(KeywordFamily.HELP)), KeywordFamily.HELP)
        return cls(
            table=MappingProxyType(table),
            phrase_tier=phrase_tier,
            phrase_max_words=phrase_max_words,
        )

    def words(self, family: KeywordFamily) -> frozenset[str]:
        """The normalised words of one family (for HELP texts, docs and tests)."""
        return frozenset(k for k, m in self.table.items() if m.family is family)


DEFAULT_RULES = KeywordRules.build()


def match(text: str, rules: KeywordRules = DEFAULT_RULES) -> KeywordMatch | None:
    """The keyword (or, with the phrase tier on, the opt-out phrase) an MO is, if any."""
    normal = normalise_text(text)
    if not normal:
        return None
    found = rules.table.get(normal)
    if found is not None:
        return found
    if rules.phrase_tier:
        return match_phrase(normal, max_words=rules.phrase_max_words)
    return None


# --- the phrase tier ---------------------------------------------------------------------------
#
# Patterns are matched against the WHOLE message (after normalisation, apostrophes dropped and
# inner punctuation read as spaces), with optional politeness around the core. Matching the whole
# message, not searching in it, is the main guard: "don't stop", "stop by the store" and
# "I can't stop laughing" fit no pattern.

_LEAD = (
    r"(?:(?:hi|hello|hey|ok|okay|no|sorry)\s+)?"
    r"(?:(?:please|pls|plz|kindly|just|can you|could you|would you|will you|"
    r"i want you to|i need you to|i want to|i would like to|id like to|i wish to|"
    r"i need to|let me)\s+)*"
)
_TAIL = (
    r"(?:\s+(?:please|pls|plz|now|thanks|thank you|thx|ty|immediately|asap|right now|"
    r"already|anymore|any more|again|ever again|for good|at all|ok|okay|lol))*"
)
_CONTACT = r"(?:text|txt|message|msg|sms|contact|call|spam|email|bother)"
_CONTACTING = r"(?:texting|txting|messaging|msging|contacting|calling|spamming|emailing|bothering)"
_ME = r"(?:me|us|this number|my number|my phone)"
_STUFF = (
    r"(?:(?:text|sms)\s+)?(?:texts?|txts?|messages?|msgs?|sms|stuff|spam|ads|promotions?|offers?"
    r"|these|this|them)"
)
_LIST = (
    r"(?:(?:your|the|this|that|ur|all|any|every)\s+)?"
    r"(?:(?:mailing|texting|text|sms|contact|message|messaging|marketing|distribution)\s+)?"
    r"(?:list|lists|database|system|group|contacts)"
)

PHRASE_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        name: re.compile(_LEAD + core + _TAIL)
        for name, core in {
            # "stop texting me", "please stop sending me these messages", "quit spamming us"
            "stop_contacting": (
                rf"(?:stop|quit|cease)\s+(?:{_CONTACTING}(?:\s+{_ME})?"
                rf"|sending(?:\s+{_ME})?(?:\s+(?:any|these|those|your|the|more|this))?"
                rf"(?:\s+{_STUFF})?)"
            ),
            # "don't text me", "do not message this number again", "never contact me"
            "do_not_contact": rf"(?:dont|do not|never|pls dont|please dont)\s+{_CONTACT}\s+{_ME}",
            # "remove me", "take my number off your list", "delete me from the list"
            "remove_me": (
                rf"(?:remove|delete|take|drop|erase)\s+{_ME}"
                rf"(?:\s+(?:from|off|off of|out of)\s+{_LIST})?"
            ),
            # "unsubscribe me", "opt me out", "unsubscribe me from this list"
            "unsubscribe_me": (
                rf"(?:(?:unsubscribe|unsub)\s+{_ME}|opt\s+{_ME}\s+out)"
                rf"(?:\s+(?:from|of)\s+(?:{_LIST}|{_STUFF}|(?:all|everything)))?"
            ),
            # "no more texts", "no more messages please"
            "no_more": rf"no more\s+{_STUFF}",
            # "I don't want these texts", "do not want any more messages"
            "do_not_want": (
                rf"(?:i\s+)?(?:dont|do not)\s+want\s+(?:(?:any|more|your|these|the|of)\s+)*{_STUFF}"
            ),
            # "stop please", "I want to unsubscribe", "please opt out", "cancel now"
            "keyword_politely": r"(?:stop|unsubscribe|unsub|opt out|optout|cancel|quit|end|revoke)",
            # "stop all texts", "unsubscribe everything", "stop it" (never "cancel it": that is
            # more often about an appointment than about the messages)
            "stop_what": (
                r"(?:stop|unsubscribe|unsub|opt out|optout|revoke)"
                rf"(?:\s+(?:all|it|everything|{_STUFF}))+"
            ),
        }.items()
    }
)

# A question asks about stopping rather than asking to stop; a polite request phrased as a
# question ("can you stop texting me?") is still a request, so those leads are let through.
_QUESTION_LEADS = ("can you ", "could you ", "would you ", "will you ", "please ", "pls ")
_WORDS = re.compile(r"[^\w']+")


def match_phrase(normal: str, *, max_words: int = 8) -> KeywordMatch | None:
    """Recognise a plain-language opt-out in already-normalised text, or ``None``.

    Guards, in order: a question that is not a polite request; a digit anywhere ("STOP 12345"
    and "stop 2" are commands to other services); more than ``max_words`` words.
    """
    if "?" in normal and not normal.startswith(_QUESTION_LEADS):
        return None
    words = _WORDS.sub(" ", normal.translate(_APOSTROPHES)).replace("'", "").split()
    if not words or len(words) > max_words:
        return None
    if any(ch.isdigit() for word in words for ch in word):
        return None
    phrase = " ".join(words)
    for name, pattern in PHRASE_PATTERNS.items():
        if pattern.fullmatch(phrase):
            return KeywordMatch(
                family=KeywordFamily.OPT_OUT,
                keyword=phrase,
                match=MatchType.PHRASE,
                pattern=name,
            )
    return None


# --- footers -----------------------------------------------------------------------------------

_INSTRUCTION = re.compile(r"\b(?:reply|text|txt|send|respond with|type)\s+(\S+)")


def tells_how_to_opt_out(text: str, rules: KeywordRules = DEFAULT_RULES) -> bool:
    """True when an MT already says how to opt out ("Reply STOP to ..."): it needs no footer."""
    normal = normalise_text(text)
    for found in _INSTRUCTION.finditer(normal):
        word = found.group(1).strip("\"'.,:;!()[]")
        hit = rules.table.get(word)
        if hit is not None and hit.family in (KeywordFamily.OPT_OUT, KeywordFamily.LIST_OPT_OUT):
            return True
    return False


__all__ = [
    "DEFAULT_ACCOUNT_WIDE",
    "DEFAULT_HELP",
    "DEFAULT_OPT_IN",
    "DEFAULT_OPT_OUT",
    "DEFAULT_RULES",
    "ENGLISH",
    "LANGUAGE_PACKS",
    "PHRASE_PATTERNS",
    "KeywordFamily",
    "KeywordMatch",
    "KeywordRules",
    "LanguagePack",
    "match",
    "match_phrase",
    "normalise_text",
    "tells_how_to_opt_out",
]
