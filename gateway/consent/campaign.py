"""Campaign rules as plain frozen values (the config loader builds them from TOML).

Every field has a default, and the defaults keep an existing application working unchanged:
unknown numbers are allowed, opt-outs are enforced, the FCC / CTIA keywords are on, no footer is
added unless asked for. ``CampaignDirectory`` maps a sender number to its campaign in O(1); numbers
in no campaign belong to the account-level default campaign (``default_campaign()``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from gateway.consent.caps import FrequencyCap, counter_key
from gateway.consent.hours import Category, QuietHours
from gateway.consent.keywords import (
    DEFAULT_ACCOUNT_WIDE,
    DEFAULT_HELP,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    ENGLISH,
    LANGUAGE_PACKS,
    KeywordRules,
)
from gateway.consent.model import Scope, ScopeKind

DEFAULT_CAMPAIGN_NAME = "default"
# The scopes a STOP can be given in config; LIST and GLOBAL come from list words and staff.
CAMPAIGN_SCOPES = frozenset({ScopeKind.NUMBER, ScopeKind.CAMPAIGN, ScopeKind.ACCOUNT})


class FooterMode(StrEnum):
    ALWAYS = "always"
    FIRST = "first"  # until this subscriber has seen it once from this campaign
    NEVER = "never"


class OutboundUnknown(StrEnum):
    """What an MT to a subscriber with no consent record gets."""

    ALLOW = "allow"
    REQUIRE_OPT_IN = "require_opt_in"  # the opt-in request goes out; the MT is refused (pending)
    BLOCK = "block"  # refused until the subscriber writes first


class InboundUnknown(StrEnum):
    """What an MO from a subscriber with no consent record triggers."""

    ALLOW = "allow"
    REQUEST_OPT_IN = "request_opt_in"  # reply with the opt-in request, record pending


class ReOptIn(StrEnum):
    """How an opted-out subscriber opts back in."""

    KEYWORD = "keyword"  # only START / UNSTOP / YES (CTIA)
    ANY_MESSAGE = "any_message"  # any new message, as some platforms do


class AccountMatch(StrEnum):
    """How system_ids are compared: as the SMSC that authenticates the binds compares them."""

    # NFKC, outer whitespace dropped, case folded: "ACME", "acme " and fullwidth ACME are one.
    # The default because it can only join accounts, never split one: an SMSC that compares
    # exactly has at most more accounts than the gateway sees, so opt-outs reach further.
    FOLD = "fold"
    EXACT = "exact"  # byte for byte, for SMSCs known to compare exactly


def account_key(system_id: str, match: AccountMatch = AccountMatch.FOLD) -> str:
    """The account a system_id names, as consent scopes and campaign ``accounts`` key it."""
    if match is AccountMatch.EXACT:
        return system_id
    return _folded(system_id)


@lru_cache(maxsize=4096)
def _folded(system_id: str) -> str:
    return unicodedata.normalize("NFKC", system_id).strip().casefold()


class ListMode(StrEnum):
    EXTEND = "extend"  # the defaults plus these words
    REPLACE = "replace"  # these words only


@dataclass(frozen=True, slots=True, kw_only=True)
class WordList:
    """One keyword family's configuration."""

    words: tuple[str, ...] = ()
    mode: ListMode = ListMode.EXTEND

    def resolve(self, defaults: Iterable[str]) -> tuple[str, ...]:
        if self.mode is ListMode.REPLACE:
            return self.words
        return (*defaults, *self.words)


@dataclass(frozen=True, slots=True, kw_only=True)
class Keywords:
    opt_out: WordList = WordList()
    opt_in: WordList = WordList()
    help: WordList = WordList()
    # Opt-out words that reach the whole account (STOPALL); they must also be opt-out words.
    account_wide: WordList = WordList()
    languages: tuple[str, ...] = ()  # names of LANGUAGE_PACKS, e.g. ("fr", "es")


# The replies that answer a keyword, and so are written in the keyword's language; the opt-in
# request and the list opt-out answer no word of a language pack and are in English only.
LOCAL_REPLY_NAMES = ("opt_out", "opt_in", "help", "already_opted_out")
REPLY_NAMES = (*LOCAL_REPLY_NAMES, "opt_in_request", "list_opt_out")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalReplies:
    """``[campaigns.replies.<language>]``: reply texts in one language; None: not given."""

    language: str
    opt_out: str | None = None
    opt_in: str | None = None
    help: str | None = None
    already_opted_out: str | None = None


class ReplyOrigin(StrEnum):
    """Where the text a keyword of some language gets comes from."""

    CONFIGURED = "configured"  # the campaign's own text in that language
    BUNDLED = "bundled"  # the gateway's default text in that language
    ENGLISH = "english"  # the campaign's own English text ([campaigns.replies]), a fallback


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyChoice:
    template: str
    language: str  # the language the template is written in
    origin: ReplyOrigin


@dataclass(frozen=True, slots=True, kw_only=True)
class Replies:
    """Auto-reply texts. ``{brand}`` is replaced by the campaign's brand, ``{contact}`` by
    ``contact`` and ``{list}`` by a list name.

    An empty string switches that reply off. ``already_opted_out`` is off by default: a repeated
    STOP is recorded but gets no second confirmation (FCC 24-24 allows one). The texts here are
    English; ``languages`` holds texts in other languages (``choose``).
    """

    opt_out: str = (
        "{brand}: You are unsubscribed and will receive no more messages."
        " Reply START to resubscribe."
    )
    opt_in: str = (
        "{brand}: You are subscribed again. Msg & data rates may apply. "
        "Reply HELP for help, STOP to opt out."
    )
    help: str = (
        "{brand}: Help at {contact}. Msg frequency varies. Msg & data rates may apply. "
        "Reply STOP to opt out."
    )
    opt_in_request: str = (
        "{brand}: Reply YES to receive our messages. Msg & data rates may apply. "
        "Reply STOP to opt out."
    )
    list_opt_out: str = (
        "{brand}: You will receive no more {list} messages. Reply STOP to opt out of all."
    )
    already_opted_out: str = ""
    # The support contact the HELP reply names (CTIA): a toll-free number, an e-mail or a web
    # address. A sentence holding {contact} is left out while it is empty.
    contact: str = ""
    languages: tuple[LocalReplies, ...] = ()

    def local(self, language: str) -> LocalReplies | None:
        """The campaign's own texts in ``language``, if it has a table for it."""
        for local in self.languages:
            if local.language == language:
                return local
        return None

    def choose(self, name: str, language: str = ENGLISH) -> ReplyChoice:
        """The template that answers a keyword of ``language``.

        English, and the replies that answer no language pack's word (``REPLY_NAMES`` beyond
        ``LOCAL_REPLY_NAMES``): this table. Another language: the campaign's text in that
        language; where it has none, its own English text when it changed the default (what
        the operator wrote, and the campaign registered, wins over the bundled text; check-
        config warns), else the bundled text in that language. So a reply switched off in
        English is off in every language that does not switch it on.
        """
        base: str = getattr(self, name)
        bundled = BUNDLED_REPLIES.get(language)
        if language == ENGLISH or name not in LOCAL_REPLY_NAMES or bundled is None:
            return ReplyChoice(template=base, language=ENGLISH, origin=ReplyOrigin.CONFIGURED)
        local = self.local(language)
        if local is not None and getattr(local, name) is not None:
            text: str = getattr(local, name)
            return ReplyChoice(template=text, language=language, origin=ReplyOrigin.CONFIGURED)
        if base != getattr(DEFAULT_REPLIES, name):
            return ReplyChoice(template=base, language=ENGLISH, origin=ReplyOrigin.ENGLISH)
        text = getattr(bundled, name)
        return ReplyChoice(template=text, language=language, origin=ReplyOrigin.BUNDLED)


DEFAULT_REPLIES = Replies()

# The gateway's texts in each language pack's language, used where a campaign has none of its
# own. Written in the GSM 7-bit alphabet (no ê, â, î, ô, û, á, í, ó, ú: they would make a reply
# Latin-1 or UCS-2, with room for 140 or 70 characters); each passes the checks of consent.ctia.
BUNDLED_REPLIES: Mapping[str, LocalReplies] = MappingProxyType(
    {
        "fr": LocalReplies(
            language="fr",
            opt_out=(
                "{brand}: Vous avez été désabonné et ne recevrez plus de messages."
                " Répondez DEBUT pour vous réabonner."
            ),
            opt_in=(
                "{brand}: Votre abonnement est réactivé. Des frais de messagerie et de données"
                " peuvent s'appliquer. Répondez ARRET pour annuler."
            ),
            help=(
                "{brand}: Aide: {contact}. Fréquence variable. Des frais de messagerie et de"
                " données peuvent s'appliquer. Répondez ARRET pour annuler."
            ),
            already_opted_out="",
        ),
        "es": LocalReplies(
            language="es",
            opt_out=(
                "{brand}: Se ha dado de baja. No le enviaremos otros mensajes."
                " Responda ALTA para volver a suscribirse."
            ),
            opt_in=(
                "{brand}: Se ha suscrito de nuevo. Pueden aplicarse tarifas de mensajes y datos."
                " Responda BAJA para cancelar."
            ),
            help=(
                "{brand}: Ayuda: {contact}. Frecuencia variable. Pueden aplicarse tarifas de"
                " mensajes y datos. Responda BAJA para cancelar."
            ),
            already_opted_out="",
        ),
        "de": LocalReplies(
            language="de",
            opt_out=(
                "{brand}: Sie sind abgemeldet und erhalten keine weiteren Nachrichten."
                " Antworten Sie ANMELDEN, um sich wieder anzumelden."
            ),
            opt_in=(
                "{brand}: Sie sind wieder angemeldet. Es können Gebühren für Nachrichten und"
                " Daten anfallen. Antworten Sie STOPP zum Abmelden."
            ),
            help=(
                "{brand}: Hilfe: {contact}. Häufigkeit variiert. Es können Gebühren für"
                " Nachrichten und Daten anfallen. Antworten Sie STOPP zum Abmelden."
            ),
            already_opted_out="",
        ),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageList:
    """A list inside a campaign (marketing vs account notices), chosen by the MT's service_type."""

    name: str
    service_types: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()  # words that opt out of this list only (e.g. "OPTOUT-PROMO")


DEFAULT_CLARIFY_REPLY = (
    "{brand}: You will get no more of our messages. Reply ALL to confirm, or name the ones to"
    " stop ({choices}). No reply means all."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Clarify:
    """The revoke-all confirmation that asks which messages to stop (64.1200(a)(12)).

    The opt-out is recorded at once for the whole business; an answer within ``window_s``
    naming a list or a campaign narrows it, an ``all_words`` answer or no answer keeps all.
    ``{choices}`` in the reply lists the campaign's list names and the campaign's name."""

    window_s: float = 86_400.0
    reply: str = DEFAULT_CLARIFY_REPLY
    all_words: tuple[str, ...] = ("ALL",)
    # The question in another language, by language pack name: asked when the STOP was a
    # word of that pack (ARRET -> "fr").
    replies: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Business:
    """A business: the campaigns (and so numbers, accounts) one sender of messages owns.

    ``revoke_all_from``: from this wall time (seconds since the epoch) an opt-out through any
    of its campaigns reaches all of them; 0.0 always, None never. Evaluated against the time
    of each message, so a configured date takes effect without a restart."""

    name: str
    revoke_all_from: float | None = None
    revoke_all_text: str = "false"  # as configured, for ``consent show``
    clarify: Clarify | None = None

    scope: Scope = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"business name must be non-empty and without '/': {self.name!r}")
        object.__setattr__(self, "scope", Scope(ScopeKind.BUSINESS, self.name))

    def revoke_all(self, now: float) -> bool:
        """Whether revoke-all is in effect at wall time ``now``."""
        return self.revoke_all_from is not None and now >= self.revoke_all_from


def render(template: str, brand: str, list_name: str = "", contact: str = "") -> str:
    """Fill a reply template; with no brand the ``"{brand}: "`` prefix disappears, and with no
    contact the sentence holding ``{contact}``."""
    if "{contact}" in template and not contact:
        prefix = _BRAND_PREFIX if template.startswith(_BRAND_PREFIX) else ""
        rest = _CONTACT_SENTENCE.sub("", template[len(prefix) :])
        template = prefix + " ".join(rest.split())
    if not brand:
        template = template.replace(_BRAND_PREFIX, "")
    template = template.replace("{brand}", brand).replace("{list}", list_name)
    return template.replace("{contact}", contact)


_BRAND_PREFIX = "{brand}: "
# From the end of the previous sentence to the end of this one.
_CONTACT_SENTENCE = re.compile(r"[^.!?]*\{contact\}[^.!?]*[.!?]?")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Campaign:
    """A group of sender numbers and the consent rules they share.

    ``numbers`` hold sender addresses as the directory keys them: E.164 digits (no '+'), short
    codes as digits, alphanumeric senders as written. Derived lookups (keyword rules, list
    scopes) are computed once here, so the per-message path only reads them. Campaigns compare by
    identity (``eq=False``), so per-message caches hash them in constant time.
    """

    name: str
    brand: str = ""
    numbers: tuple[str, ...] = ()
    scope: ScopeKind = ScopeKind.CAMPAIGN
    footer: FooterMode = FooterMode.NEVER
    footer_text: str = "Reply STOP to opt out"
    replies: Replies = Replies()
    keywords: Keywords = Keywords()
    outbound_unknown: OutboundUnknown = OutboundUnknown.ALLOW
    inbound_unknown: InboundUnknown = InboundUnknown.ALLOW
    reopt_in: ReOptIn = ReOptIn.KEYWORD
    lists: tuple[MessageList, ...] = ()
    phrase_tier: bool = False
    phrase_max_words: int = 8
    forward_keywords: bool = True  # forward STOP / START / HELP MOs to the client too
    # The client accounts (account keys) allowed to send from this campaign's numbers; empty:
    # any account. An MT from one of the numbers by another account is refused.
    accounts: frozenset[str] = frozenset()
    # Sending rules beyond consent (gateway.consent.hours): what the campaign sends, and when
    # it may be sent by the recipient's clock.
    category: Category = Category.MARKETING
    quiet_hours: QuietHours | None = None
    # At most N messages per subscriber in a rolling window (gateway.consent.caps), counted
    # per campaign, per ``business`` or per subscriber.
    frequency_cap: FrequencyCap | None = None
    # The business the campaign belongs to (``business = "acme"``), and its settings from
    # ``[[businesses]]`` (revoke-all, the clarifying confirmation); None: no such table.
    business: str = ""
    business_rules: Business | None = None

    rules: KeywordRules = field(init=False, repr=False, compare=False)
    campaign_scope: Scope = field(init=False, repr=False, compare=False)
    list_by_service_type: Mapping[str, str] = field(init=False, repr=False, compare=False)
    business_scope: Scope | None = field(init=False, repr=False, compare=False)
    # The quiet hours this campaign's MTs are checked against: None when it has none, or they
    # do not bind its category (transactional, unless the campaign says so).
    hours: QuietHours | None = field(init=False, repr=False, compare=False)
    # The cap this campaign's MTs are counted against (None: not capped, or not for its
    # category) and the subscriber's counter they count under.
    cap: FrequencyCap | None = field(init=False, repr=False, compare=False)
    cap_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"campaign name must be non-empty and without '/': {self.name!r}")
        if self.scope not in CAMPAIGN_SCOPES:
            raise ValueError(f"campaign {self.name}: scope must be number, campaign or account")
        unknown = [lang for lang in self.keywords.languages if lang not in LANGUAGE_PACKS]
        if unknown:
            raise ValueError(
                f"campaign {self.name}: unknown language pack(s) {unknown}; "
                f"known: {sorted(LANGUAGE_PACKS)}"
            )
        by_service_type: dict[str, str] = {}
        for lst in self.lists:
            if not lst.name or "/" in lst.name:
                raise ValueError(f"campaign {self.name}: bad list name {lst.name!r}")
            for service_type in lst.service_types:
                if by_service_type.setdefault(service_type, lst.name) != lst.name:
                    raise ValueError(
                        f"campaign {self.name}: service_type {service_type!r} in two lists"
                    )
        if len({lst.name for lst in self.lists}) != len(self.lists):
            raise ValueError(f"campaign {self.name}: duplicate list names")
        object.__setattr__(self, "rules", self._build_rules())
        object.__setattr__(self, "campaign_scope", Scope(ScopeKind.CAMPAIGN, self.name))
        object.__setattr__(self, "list_by_service_type", MappingProxyType(by_service_type))
        object.__setattr__(self, "hours", self._binding_hours())
        cap = self.frequency_cap
        if cap is not None and self.category not in cap.categories:
            cap = None
        object.__setattr__(self, "cap", cap)
        key = "" if cap is None else counter_key(cap, self.name, self.business)
        object.__setattr__(self, "cap_key", key)
        if self.business_rules is not None and self.business_rules.name != self.business:
            raise ValueError(f"campaign {self.name}: business rules of another business")
        scope = Scope(ScopeKind.BUSINESS, self.business) if self.business else None
        object.__setattr__(self, "business_scope", scope)

    def _binding_hours(self) -> QuietHours | None:
        quiet = self.quiet_hours
        if quiet is None or self.category not in quiet.categories:
            return None
        return quiet

    def _build_rules(self) -> KeywordRules:
        kw = self.keywords
        return KeywordRules.build(
            opt_out=kw.opt_out.resolve(DEFAULT_OPT_OUT),
            opt_in=kw.opt_in.resolve(DEFAULT_OPT_IN),
            help=kw.help.resolve(DEFAULT_HELP),
            account_wide=kw.account_wide.resolve(DEFAULT_ACCOUNT_WIDE),
            list_keywords={lst.name: lst.keywords for lst in self.lists},
            packs=kw.languages,
            phrase_tier=self.phrase_tier,
            phrase_max_words=self.phrase_max_words,
        )

    def list_scope(self, list_name: str) -> Scope:
        return Scope(ScopeKind.LIST, f"{self.name}/{list_name}")

    def reply(self, template: str, list_name: str = "") -> str:
        """A reply text of this campaign, brand filled in ("" when switched off)."""
        return render(template, self.brand, list_name, self.replies.contact) if template else ""

    def reply_in(self, name: str, language: str = ENGLISH, list_name: str = "") -> str:
        """The reply ``name`` (a ``REPLY_NAMES`` entry) to a keyword of ``language``, filled in
        ("" when switched off); see ``Replies.choose``."""
        return self.reply(self.replies.choose(name, language).template, list_name)


def default_campaign(**overrides: Any) -> Campaign:
    """The account-level campaign for sender numbers that are in no campaign.

    Its STOP reaches the whole client account (system_id): a subscriber who writes STOP to a
    number the operator never grouped cannot be expected to know which other numbers are the
    same business, and FCC 24-24's revoke-all rule points the same way.
    """
    values: dict[str, Any] = {"name": DEFAULT_CAMPAIGN_NAME, "scope": ScopeKind.ACCOUNT}
    values.update(overrides)
    return Campaign(**values)


class CampaignDirectory:
    """Sender address -> campaign, O(1). Immutable once built; rebuild on config reload."""

    __slots__ = ("_by_name", "_by_number", "default")

    def __init__(self, campaigns: Iterable[Campaign], default: Campaign | None = None) -> None:
        self.default = default if default is not None else default_campaign()
        by_name: dict[str, Campaign] = {self.default.name: self.default}
        by_number: dict[str, Campaign] = {}
        for campaign in campaigns:
            if campaign.name in by_name:
                raise ValueError(f"campaign name {campaign.name!r} used twice")
            by_name[campaign.name] = campaign
            for number in campaign.numbers:
                key = number_key(number)
                other = by_number.setdefault(key, campaign)
                if other is not campaign:
                    raise ValueError(
                        f"number {number!r} is in campaigns {other.name!r} and {campaign.name!r}"
                    )
        self._by_name: Mapping[str, Campaign] = MappingProxyType(by_name)
        self._by_number: Mapping[str, Campaign] = MappingProxyType(by_number)

    def lookup(self, sender: str) -> Campaign:
        """The campaign of a sender (normalised address value), or the default campaign."""
        return self._by_number.get(sender, self.default)

    def get(self, name: str) -> Campaign | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Campaign]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def number_key(number: str) -> str:
    """A configured sender number as the directory keys it: '+' and separators dropped."""
    text = number.strip()
    digits = "".join(c for c in text if c not in "+ -().")
    return digits if digits.isdigit() else text
