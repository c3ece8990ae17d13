"""The opt-out footer: is one needed, what does it say, and how does the message carry it.

Pure: the caller decides the footer mode (always / first / never) and sends the parts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from gateway.text.dcs import Alphabet, can_encode
from gateway.text.gsm7 import TextError
from gateway.text.segment import (
    CONCAT_8BIT,
    MAX_PARTS,
    ConcatKind,
    SegmentError,
    count_segments,
    split,
)
from gateway.text.udh import EMPTY_UDH, Udh

_VERB = r"(?:reply|respond|text|txt|send|sms|msg|message|type|enter|write)"
# Words that name opting out by themselves, so "<verb> <word>" is an instruction.
_STRONG = r"(?:stop\s*all|stop|unsubscribe|unsub|opt[\s-]*out|arr[eê]t)"
# Words that are also ordinary English ("send end-of-month ..."): an instruction only when they
# stand alone (followed by "to", punctuation, a closing quote or the end).
_WEAK = r"(?:end|quit|cancel|remove|revoke)"
_QUOTE = r"[\"'«»]?"
_OPT_OUT_PATTERNS = tuple(
    re.compile(p)
    for p in (
        # "Reply STOP", "Text STOP to 12345", "txt 'stop'", "reply with the word STOP"
        rf"\b{_VERB}\b[\s:]*(?:with\s+)?(?:the\s+word\s+)?{_QUOTE}\s*{_STRONG}\b",
        rf"\b{_VERB}\b[\s:]*(?:with\s+)?(?:the\s+word\s+)?{_QUOTE}\s*{_WEAK}"
        rf"(?:\s+to\b|{_QUOTE}\s*(?:[.,;:!)]|$))",
        # "STOP to opt out", "STOP2END", "STOP=stop" (but not "non-stop" or "nonstop")
        r"(?<![\w-])stop\s*(?:to|2|=)\s*(?:opt[\s-]*out|unsub|end|stop|cancel|quit)",
        # "To opt out, ...", "to unsubscribe visit ..."
        r"\bto\s+(?:opt[\s-]*out|unsubscribe|unsub)\b",
        # "Opt out: https://...", "unsubscribe at www....", links that name it
        r"\b(?:opt[\s-]*out|unsubscribe|unsub)\b\s*(?:[:\-]|at|here|via|on)?\s*(?:https?://|www\.)",
        r"(?:https?://|www\.)\S*(?:unsub|opt-?out|optout)",
    )
)
# Typographic quotes as plain ones, so one pattern serves both.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'})


def _may_match(folded: str) -> bool:
    """False when no pattern above can match: each needs one of these words in the folded text.
    Most messages hold none of them, and substring tests cost far less than regex searches."""
    return (
        "stop" in folded
        or "opt" in folded
        or "unsub" in folded
        or "end" in folded
        or "arret" in folded
        or "arrêt" in folded
        or "quit" in folded
        or "cancel" in folded
        or "remove" in folded
        or "revoke" in folded
    )


def already_has_opt_out(text: str) -> bool:
    """True when ``text`` already tells the reader how to opt out (case-insensitive)."""
    if text.isascii():
        folded = text.lower()  # NFKC and the quote table change no ASCII text
    else:
        folded = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return folded_has_opt_out(folded)


def folded_has_opt_out(folded: str) -> bool:
    """``already_has_opt_out`` of text already folded as it folds it (``text.lower()`` for
    ASCII text), for a caller that folds the text once for several checks."""
    if not _may_match(folded):
        return False
    return any(p.search(folded) for p in _OPT_OUT_PATTERNS)


LINK_PLACEHOLDERS: Final = ("{optout_url}", "{link}")  # {link}: the older name


def has_link(template: str) -> bool:
    return any(p in template for p in LINK_PLACEHOLDERS)


def render_footer(template: str, brand: str, link: str | None = None) -> str:
    """Fill ``{brand}`` and ``{optout_url}`` (or ``{link}``); without a link, the placeholder
    and the space before it go.

    Plain replacement, not ``str.format``: a template may hold other braces.
    """
    out = template.replace("{brand}", brand)
    if link:
        return out.replace("{optout_url}", link).replace("{link}", link)
    return re.sub(r"[ \t]*\{(?:optout_url|link)\}", "", out).strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class FooterResult:
    alphabet: Alphabet  # the coding of ``parts``; differs from the original only when it had to
    text: str  # original + separator + footer
    parts: tuple[bytes, ...]  # part bodies as ``segment.split`` gives them (no UDH)
    segments_before: int
    segments_after: int

    @property
    def segments_added(self) -> bool:
        return self.segments_after > self.segments_before


def apply_footer(
    text: str,
    alphabet: Alphabet,
    footer: str,
    concat_kind: ConcatKind = CONCAT_8BIT,
    *,
    max_parts: int = MAX_PARTS,
    separator: str = " ",
    extra_udh: Udh = EMPTY_UDH,
) -> FooterResult | None:
    """Append ``separator + footer`` and re-split; None when the result would not fit.

    The coding is kept when the footer can be written in it, even if that adds a segment; only
    a footer the alphabet cannot hold switches the message to UCS-2. ``max_parts`` bounds the
    segments the handset receives (for ``PAYLOAD``, as the SMSC would split it).
    """
    if not alphabet.is_text:
        raise TextError(f"cannot add a footer to a {alphabet.value} message")
    new_text = f"{text}{separator}{footer}" if text else footer
    original = alphabet if can_encode(text, alphabet) else Alphabet.UCS2
    target = alphabet if can_encode(new_text, alphabet) else Alphabet.UCS2
    try:
        before = count_segments(text, original, concat_kind, extra_udh)
        after = count_segments(new_text, target, concat_kind, extra_udh)
        if after > max_parts:
            return None
        parts = split(new_text, target, concat_kind, extra_udh)
    except SegmentError:
        return None
    return FooterResult(
        alphabet=target,
        text=new_text,
        parts=tuple(parts),
        segments_before=before,
        segments_after=after,
    )
