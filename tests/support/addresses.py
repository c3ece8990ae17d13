"""Hypothesis strategies for the forms one subscriber's number can be written in.

``number_forms(e164, country)`` draws ``(address, ton)`` pairs as a careless or hostile client
(or an SMSC) might write that number: with or without ``+``, an ``00`` / the country's own
international prefix, the national form with or without the trunk prefix, junk leading zeros,
separators and formatting characters anywhere, digits of other scripts, stray characters such as
``#`` or ``*``, every TON. ``address`` is what the codec hands over: the octets (UTF-8 for text
outside latin-1) read as latin-1. ``ordinary_forms`` draws only the forms people really use.
"""

from __future__ import annotations

import phonenumbers
from hypothesis import strategies as st

# Separators and invisible characters a number may carry (the gateway must see through them).
SEPARATORS = (
    " ",
    "-",
    ".",
    "(",
    ")",
    "/",
    "\t",
    "\n",
    "\u00a0",  # no-break space
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # BOM / zero-width no-break space
    "\u00ad",  # soft hyphen
    "\u2011",  # non-breaking hyphen
    "\u2013",  # en dash
    "\u3000",  # ideographic space
    "\uff0d",  # fullwidth hyphen-minus
)
# Characters an SMSC may drop or stop at, which make a number unreadable for an MT.
JUNK = ("#", "*", ";", ",", "+", "\x01", "~", "!", "?", "=")
# Code points of the digit 0 in other scripts (each followed by 1-9 in Unicode).
DIGIT_ZEROS = (0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0xFF10, 0x1D7CE)


def wire(text: str) -> str:
    """The address as the codec hands it over: latin-1 text as is, anything else as UTF-8."""
    try:
        return text.encode("latin-1").decode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8").decode("latin-1")


def _national(e164: str, country: str) -> tuple[str, str]:
    """(national significant number, trunk prefix) of ``e164`` in ``country``."""
    number = phonenumbers.parse("+" + e164)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(country)
    trunk = (meta.national_prefix or "") if meta is not None else ""
    nsn = phonenumbers.national_significant_number(number)
    return nsn, trunk


def _idd(country: str) -> str:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(country)
    prefix = meta.preferred_international_prefix or meta.international_prefix or "00"
    return prefix if prefix.isdigit() else "00"


@st.composite
def _digit_forms(draw: st.DrawFn, e164: str, country: str) -> tuple[str, int]:
    """The digits of one way of writing the number, and a TON that fits it."""
    nsn, trunk = _national(e164, country)
    zeros = "0" * draw(st.integers(1, 3))
    return draw(
        st.sampled_from(
            [
                ("+" + e164, draw(st.sampled_from([0, 1, 2, 4, 5]))),
                (e164, draw(st.sampled_from([0, 1, 4, 5]))),
                ("00" + e164, draw(st.sampled_from([0, 1, 4]))),
                (_idd(country) + e164, draw(st.sampled_from([0, 1, 4]))),
                (nsn, draw(st.sampled_from([0, 2, 4]))),
                (trunk + nsn, draw(st.sampled_from([0, 2, 4]))),
                (zeros + e164, draw(st.sampled_from([0, 1, 4]))),
                ("+" + zeros + e164, draw(st.sampled_from([0, 1]))),
                ("00" + zeros + e164, draw(st.sampled_from([0, 1]))),
                # Where "00" is the international prefix, zeros before a national number make it
                # an international one (a different subscriber): no such form there.
                (zeros + nsn if _idd(country) != "00" else trunk + nsn, 2),
                (nsn, 6),  # "abbreviated", but far too long for a short code
                (e164, 3),
            ]
        )
    )


@st.composite
def number_forms(
    draw: st.DrawFn, e164: str, country: str = "US", *, junk: bool = True
) -> tuple[str, int]:
    """Any form of ``e164`` (see the module docstring), as ``(address, ton)``."""
    text, ton = draw(_digit_forms(e164, country))
    chars = list(text)
    zero = draw(st.sampled_from(DIGIT_ZEROS))
    for i, c in enumerate(chars):
        if c.isdigit() and draw(st.integers(0, 9)) == 0:
            chars[i] = chr(zero + int(c))  # the same digit in another script
    for _ in range(draw(st.integers(0, 4))):
        chars.insert(draw(st.integers(0, len(chars))), draw(st.sampled_from(SEPARATORS)))
    if junk:
        for _ in range(draw(st.integers(0, 2))):
            c = draw(st.sampled_from(JUNK))
            # A '+' before the first digit would make a national form another country's
            # number: only after it is a '+' stray.
            first = 1 + next(i for i, x in enumerate(chars) if x.isdecimal()) if c == "+" else 0
            chars.insert(draw(st.integers(first, len(chars))), c)
    return wire("".join(chars)), ton


@st.composite
def ordinary_forms(draw: st.DrawFn, e164: str, country: str = "US") -> tuple[str, int]:
    """The forms people and applications really use: '+', international, national, spaced."""
    nsn, trunk = _national(e164, country)
    text, ton = draw(
        st.sampled_from(
            [
                ("+" + e164, 0),
                ("+" + e164, 1),
                (e164, 1),
                (nsn, 2),
                (trunk + nsn, 2),
                (nsn, 0),
            ]
        )
    )
    if draw(st.booleans()):
        # Grouped the way people write numbers: "+1 555-222 0000".
        cut = sorted(draw(st.lists(st.integers(1, len(text) - 1), max_size=3, unique=True)))
        parts = [text[i:j] for i, j in zip([0, *cut], [*cut, len(text)], strict=True)]
        text = "".join(p + draw(st.sampled_from([" ", "-", ""])) for p in parts[:-1]) + parts[-1]
    return text, ton
