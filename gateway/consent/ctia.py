"""What CTIA (and the CWTA in Canada) ask of a campaign's HELP and opt-out replies, as findings.

CTIA Messaging Principles and Best Practices and the Short Code Monitoring Handbook: the HELP
reply names the program or brand, a support contact, the message frequency, "Msg & data rates
may apply" and how to opt out; the opt-out reply confirms that no more messages will be sent
(and names the brand). The CWTA's guidelines ask the same in the keyword's language (ARRET and
AIDE in French). A text is checked with the words of the language it is written in.

These are advisories (``smpp-gateway check-config`` prints them as warnings): the wording a
campaign registered is what the carriers compare with, and no pattern list can judge that. The
checks are lenient on purpose, so a warning means the element is very likely missing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.consent.campaign import (
    BUNDLED_REPLIES,
    LOCAL_REPLY_NAMES,
    Campaign,
    ReplyChoice,
    ReplyOrigin,
)
from gateway.consent.keywords import ENGLISH, LANGUAGE_PACKS, KeywordFamily, normalise_text

LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType(
    {"en": "English", "fr": "French", "es": "Spanish", "de": "German"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing a reply lacks (or a language a campaign hears but does not answer in)."""

    key: str  # the config key path of the text, e.g. "campaigns[0].replies.fr.help"
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Words:
    """One language's ways of saying what CTIA asks for, matched on folded text."""

    frequency: tuple[str, ...]
    rates: tuple[str, ...]
    no_more: tuple[str, ...]
    instruct: tuple[str, ...]  # verbs that introduce a keyword ("reply STOP")
    frequency_example: str
    rates_example: str
    no_more_example: str


_PER = r"\s*(?:/|per|a|an|each|every|par|por|al|a la|pro|je|im|in der)\s*"
_WORDS: Mapping[str, _Words] = MappingProxyType(
    {
        "en": _Words(
            frequency=(
                r"\b(?:msg|message|text|txt|sms|alert)s?\s+freq(?:uency)?\b",
                r"\bfreq(?:uency)?\s+(?:varies|may vary|vary)\b",
                rf"\b\d+\s*(?:msgs?|messages?|texts?|txts?|alerts?|sms){_PER}"
                r"(?:day|week|wk|month|mo|mth|year|yr|request|order)\b",
                r"\brecurring\s+(?:msgs?|messages?|texts?|alerts?)\b",
                r"\bone(?:-|\s)?time\s+(?:msg|message|text|alert|passcode|code)\b",
            ),
            rates=(
                r"\b(?:msg|message|messaging|text|txt|sms)s?\s*(?:&|and|\+|n)\s*data\s+rates?"
                r"\s+(?:may|might|can|will)\s+apply\b",
            ),
            no_more=(
                r"\bno\s+(?:more|further|longer)\b",
                r"\b(?:will\s+not|won't|wont|will\s+no\s+longer)\s+(?:receive|get|be\s+sent)\b",
                r"\bunsubscribed\b",
                r"\bopted\s+out\b",
            ),
            instruct=("reply", "text", "txt", "send", "respond", "type"),
            frequency_example='"Msg frequency varies", "4 msgs/month"',
            rates_example='"Msg & data rates may apply"',
            no_more_example='"You will receive no more messages", "unsubscribed"',
        ),
        "fr": _Words(
            frequency=(
                r"\bfrequence\b",
                rf"\b\d+\s*(?:messages?|msgs?|textos?|sms){_PER}"
                r"(?:jour|semaine|mois|an|annee|demande)\b",
                r"\bmessages?\s+recurrents?\b",
            ),
            rates=(
                r"\bfrais\s+(?:de\s+)?(?:messagerie|messages?|msg|textos?|sms)\s+(?:et|&)\s+"
                r"(?:de\s+)?donnees\b",
                r"\b(?:messages?|msg)\s+(?:standards?\s+)?et\s+(?:les\s+)?(?:debits|taux|frais)"
                r"\s+(?:de|des)\s+donnees\b",
            ),
            no_more=(
                r"\bne\s+recevrez\s+plus\b",
                r"\bplus\s+(?:aucun|de)\s+messages?\b",
                r"\bdesabonnee?s?\b",
                r"\bdesinscrite?s?\b",
            ),
            instruct=("repondez", "repondre", "textez", "texter", "envoyez", "tapez", "ecrivez"),
            frequency_example='"Fréquence variable", "4 messages par mois"',
            rates_example='"Des frais de messagerie et de données peuvent s\'appliquer"',
            no_more_example='"Vous ne recevrez plus de messages", "désabonné"',
        ),
        "es": _Words(
            frequency=(
                r"\bfrecuencia\b",
                rf"\b\d+\s*(?:mensajes?|msjs?|sms){_PER}(?:dia|semana|mes|ano|solicitud)\b",
                r"\bmensajes?\s+recurrentes?\b",
            ),
            rates=(
                r"\b(?:tarifas?|cargos?|costos?)\s+(?:de\s+|por\s+)?(?:mensajes?|msjs?|msg|sms|"
                r"mensajeria)\s+(?:y|&)\s+(?:de\s+)?datos\b",
            ),
            no_more=(
                r"\bno\s+recibira?s?\s+mas\b",
                r"\bno\s+(?:le|te)\s+enviaremos\b",
                r"\bno\s+mas\s+mensajes\b",
                r"\bdad[oa]s?\s+de\s+baja\b",
                r"\bdesuscrit[oa]s?\b",
            ),
            instruct=("responda", "responde", "envie", "envia", "escriba", "escribe", "textea"),
            frequency_example='"Frecuencia variable", "4 mensajes por mes"',
            rates_example='"Pueden aplicarse tarifas de mensajes y datos"',
            no_more_example='"No le enviaremos otros mensajes", "dado de baja"',
        ),
        "de": _Words(
            frequency=(
                r"haufigkeit\b",
                rf"\b\d+\s*(?:nachrichten|nachricht|sms){_PER}(?:tag|woche|monat|jahr)\b",
                r"\bwiederkehrende\b",
            ),
            rates=(
                r"\b(?:gebuhren|kosten|entgelte)\s+fur\s+(?:nachrichten|sms|mitteilungen)\s+"
                r"(?:und|&)\s+daten\b",
                r"\b(?:nachrichten|sms)\s*-?\s*(?:und|&)\s*daten(?:gebuhren|kosten|entgelte)\b",
            ),
            no_more=(
                r"\bkeine\s+(?:weiteren\s+)?(?:nachrichten|sms|mitteilungen)\b",
                r"\bnicht\s+mehr\b",
                r"\babgemeldet\b",
                r"\bausgetragen\b",
            ),
            instruct=("antworte", "antworten", "sende", "senden", "schreibe", "schreiben"),
            frequency_example='"Häufigkeit variiert", "4 Nachrichten pro Monat"',
            rates_example='"Es können Gebühren für Nachrichten und Daten anfallen"',
            no_more_example='"Sie erhalten keine weiteren Nachrichten", "abgemeldet"',
        ),
    }
)

_PHONE = re.compile(r"(?<![\w])\+?\d(?:[\s().-]*\d){6,}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_WEB = re.compile(r"\b(?:https?://|www\.)\S+|\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")


def fold(text: str) -> str:
    """Lower case without accents, one space between words: "Données" reads "donnees"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.replace("\u2019", "'").split())


def has_contact(text: str) -> bool:
    """A phone number (7 digits or more), an e-mail address or a web address."""
    lowered = text.casefold()
    return bool(_PHONE.search(text) or _EMAIL.search(lowered) or _WEB.search(lowered))


def tells_how_to_stop(text: str, stop_words: frozenset[str], language: str = ENGLISH) -> bool:
    """An opt-out keyword of the campaign written in capitals ("STOP", "ARRET"), as CTIA and
    the CWTA ask keywords to be written, or after a verb that asks for it ("reply stop")."""
    tokens = _TOKEN.findall(text)
    verbs = frozenset(_WORDS[language].instruct if language in _WORDS else ())
    folded = [fold(t) for t in tokens]
    for i in range(len(tokens)):
        for width in (1, 2):
            phrase = tokens[i : i + width]
            if len(phrase) < width:
                continue
            if normalise_text(" ".join(phrase)) not in stop_words:
                continue
            if all(p.isupper() for p in phrase) or (i > 0 and folded[i - 1] in verbs):
                return True
    return False


def _any(patterns: tuple[str, ...], folded: str) -> bool:
    return any(re.search(p, folded) for p in patterns)


def help_findings(
    text: str,
    *,
    key: str,
    brand: str,
    stop_words: frozenset[str],
    language: str = ENGLISH,
    contact_hint: str = "",
    brand_hint: str = "",
) -> list[Finding]:
    """What a rendered HELP reply lacks, each a finding under ``key`` (``contact_hint`` ends
    the missing contact's message)."""
    if not text:
        return [Finding(key=key, message="switched off; CTIA and the CWTA ask for a HELP reply")]
    words = _WORDS.get(language, _WORDS[ENGLISH])
    folded = fold(text)
    found: list[Finding] = []
    found += _brand_findings(folded, key, brand, "HELP", brand_hint)
    if not has_contact(text):
        found.append(
            Finding(
                key=key,
                message="names no support contact (a toll-free number, an e-mail or a web "
                f"address); CTIA asks the HELP reply for one{contact_hint}",
            )
        )
    if not _any(words.frequency, folded):
        found.append(
            Finding(
                key=key,
                message=f"does not state the message frequency ({words.frequency_example})",
            )
        )
    if not _any(words.rates, folded):
        found.append(Finding(key=key, message=f"lacks {words.rates_example}"))
    if not tells_how_to_stop(text, stop_words, language):
        found.append(
            Finding(key=key, message="does not say how to opt out (e.g. Reply STOP to opt out)")
        )
    return found


def opt_out_findings(
    text: str, *, key: str, brand: str, language: str = ENGLISH, brand_hint: str = ""
) -> list[Finding]:
    """What a rendered opt-out confirmation lacks, each a finding under ``key``."""
    if not text:
        return [
            Finding(
                key=key,
                message="switched off; CTIA and the CWTA ask for a confirmation of the opt-out",
            )
        ]
    words = _WORDS.get(language, _WORDS[ENGLISH])
    folded = fold(text)
    found = _brand_findings(folded, key, brand, "opt-out", brand_hint)
    if not _any(words.no_more, folded):
        found.append(
            Finding(
                key=key,
                message="does not confirm that no more messages will be sent "
                f"({words.no_more_example})",
            )
        )
    return found


def _brand_findings(folded: str, key: str, brand: str, what: str, hint: str) -> list[Finding]:
    if not brand:
        return [Finding(key=key, message=f"names no brand: the campaign has none{hint}")]
    if fold(brand) not in folded:
        return [Finding(key=key, message=f"does not name the brand {brand!r} in the {what} reply")]
    return []


def campaign_findings(campaign: Campaign, prefix: str) -> list[Finding]:
    """Every finding for one campaign, whose config keys start with ``prefix``
    (``campaigns[0]``, ``consent.default``): the HELP and opt-out replies in English and in
    each language the campaign hears, and each language whose replies are not all its own."""
    replies = campaign.replies
    stop_words = campaign.rules.words(KeywordFamily.OPT_OUT)
    brand_hint = f" (set {prefix}.brand)"
    found: list[Finding] = []
    for language in (ENGLISH, *campaign.keywords.languages):
        if language != ENGLISH and language not in BUNDLED_REPLIES:
            continue
        found += _language_findings(campaign, prefix, language)
        for name in ("help", "opt_out"):
            choice = replies.choose(name, language)
            if choice.language != language:
                continue  # the English text: checked once, under its own key
            key = reply_key(prefix, name, choice)
            text = campaign.reply(choice.template)
            if name == "help":
                hint = ""
                if "{contact}" in choice.template and not replies.contact:
                    hint = f" (set {prefix}.replies.contact)"
                more = help_findings(
                    text,
                    key=key,
                    brand=campaign.brand,
                    stop_words=stop_words,
                    language=language,
                    contact_hint=hint,
                    brand_hint=brand_hint,
                )
            else:
                more = opt_out_findings(
                    text, key=key, brand=campaign.brand, language=language, brand_hint=brand_hint
                )
            if choice.origin is ReplyOrigin.BUNDLED:
                more = [Finding(key=f.key, message=f"{f.message} (the bundled text)") for f in more]
            found += more
    return found


def _language_findings(campaign: Campaign, prefix: str, language: str) -> list[Finding]:
    if language == ENGLISH:
        return []
    replies = campaign.replies
    label = LANGUAGE_NAMES.get(language, language)
    pack = LANGUAGE_PACKS[language]
    examples = ", ".join(w.upper() for w in (pack.opt_out[0], pack.help[0]))
    chosen = {name: replies.choose(name, language) for name in LOCAL_REPLY_NAMES}
    bundled = [n for n, c in chosen.items() if c.origin is ReplyOrigin.BUNDLED and c.template]
    english = [n for n, c in chosen.items() if c.origin is ReplyOrigin.ENGLISH and c.template]
    if replies.local(language) is None:
        got = []
        if bundled:
            got.append(f"the gateway's bundled {label} texts ({', '.join(bundled)})")
        if english:
            keys = ", ".join(f"{prefix}.replies.{n}" for n in english)
            got.append(f"the English texts of {keys}")
        return [
            Finding(
                key=f"{prefix}.replies.{language}",
                message=f"no {label} replies configured: {label} keywords ({examples}) get "
                + " and ".join(got),
            )
        ]
    return [
        Finding(
            key=f"{prefix}.replies.{language}.{name}",
            message=f"not set: {label} keywords get the English text of {prefix}.replies.{name}",
        )
        for name in english
    ]


def reply_key(prefix: str, name: str, choice: ReplyChoice) -> str:
    """The config key a chosen text comes from (bundled texts under the key that would
    replace them)."""
    if choice.language == ENGLISH:
        return f"{prefix}.replies.{name}"
    return f"{prefix}.replies.{choice.language}.{name}"


__all__ = [
    "LANGUAGE_NAMES",
    "Finding",
    "campaign_findings",
    "fold",
    "has_contact",
    "help_findings",
    "opt_out_findings",
    "reply_key",
    "tells_how_to_stop",
]
