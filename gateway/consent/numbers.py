"""Address normalisation: one subscriber, one key, whatever form or TON/NPI the peer used.

``+15551234567``, ``15551234567`` (TON international) and ``5551234567`` (TON national, default
country US) all become ``SmsAddress(kind=E164, value="15551234567")``. MT destinations and MO
sources go through this one function, so a STOP is stored under the key MTs are checked against.

The rule (fail closed): an address is either read as the subscriber it would reach, or it is
UNREADABLE and the caller refuses the MT. SMSCs clean addresses before routing in ways a gateway
cannot see (they drop separators, strip leading zeros or an international prefix, ignore the
TON), so every form an SMSC might turn into a number is read as that number:

1. Octets that are valid UTF-8 are read as UTF-8 (the codec hands addresses over as latin-1),
   then NFKC: fullwidth and other compatibility digits become ASCII digits, and digits of any
   script (Unicode ``Nd``) count as digits.
2. Whitespace of any kind (spaces, no-break spaces, line breaks), format characters (zero-width
   space, joiners, BOM: Unicode ``Cf``), dashes and ``( ) . /`` are separators and are dropped.
   One leading ``+`` means international.
3. Letters make the address a name (ALPHANUMERIC). Anything else (``#``, ``*``, ``;``, a second
   ``+``, control characters) makes it UNREADABLE: nobody can say which handset an SMSC would
   route ``*1555...`` or ``1555...;`` to. ``lenient=True`` (MO sources, where the worst outcome is
   a STOP recorded for the number the digits spell) drops those characters instead.
4. The digits are read with ``phonenumbers`` (it knows every country's international and
   national prefixes): international forms (``+`` or TON 1) with leading zeros stripped (``00``,
   junk zeros: no country code starts with 0), or with the default country's own international
   prefix left in (``011`` in the US); national forms with the default country's trunk prefix;
   TON unknown / subscriber number as national first, then international, then with junk leading
   zeros stripped. A reading that is a valid number wins over one that is only of a possible
   length; among equals the order above decides. No possible reading: IMPOSSIBLE (refused as an
   MT destination, but a usable key for a sender such as a test number 1-555-0100).
5. TON: alphanumeric (5) with digits only is read as a number, because SMSCs that ignore the TON
   route those digits to that handset (and an MO from it is that subscriber's); such numbers get
   no auto-reply, since the peer labelled them a name. Network-specific (3) and abbreviated (6)
   addresses, and digit strings of at most ``short_code_max_length`` digits that are no valid
   national number, are SHORT_CODEs; longer ones are read as numbers, for the same reason.

Results are memoised in a bounded LRU cache (this runs for every MT and MO). A number not seen
before in the commonest forms (``+1`` or TON 1 with ten digits, or ten national digits with
the US as the default country) skips ``phonenumbers.parse``: its result there is known (country
code 1, the ten digits), so only its validity is asked (``_fast_nanp``); any other form, or a
number that is not valid, takes the full path. Never raises.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from gateway.consent.model import AddressKind, SmsAddress

# SMPP 3.4 section 5.2.5 type_of_number values (local copies: consent does not import smpp).
TON_UNKNOWN = 0x00
TON_INTERNATIONAL = 0x01
TON_NATIONAL = 0x02
TON_NETWORK_SPECIFIC = 0x03
TON_SUBSCRIBER_NUMBER = 0x04
TON_ALPHANUMERIC = 0x05
TON_ABBREVIATED = 0x06

# Short codes are 3-6 digits in North America and up to 8 elsewhere; operators whose national
# numbers are that short (e.g. 8-digit Denmark) lower it, and a valid national number always wins.
DEFAULT_SHORT_CODE_MAX_LENGTH = 8
CACHE_SIZE = 65_536

_ASCII_DIGITS = frozenset("0123456789")
_SEPARATORS = frozenset("-().,/")  # after NFKC; whitespace, Cf and dashes (Pd) are separators too
_SEPARATOR_CATEGORIES = frozenset({"Cf", "Pd", "Zs", "Zl", "Zp"})
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE


def normalise(
    addr: str,
    ton: int,
    npi: int,
    default_country: str,
    *,
    short_code_max_length: int = DEFAULT_SHORT_CODE_MAX_LENGTH,
    lenient: bool = False,
) -> SmsAddress | None:
    """Normalise an SMPP address; ``None`` for an empty one. Never raises.

    ``default_country`` is an ISO 3166 region ("US") used for national numbers. ``npi`` takes
    part in the cache key only: peers label E.164 numbers NPI 0 or 1 interchangeably, and the
    TON and the digits decide what the number is. ``lenient`` drops characters that would make
    the address UNREADABLE (for MO sources: see the module docstring).
    """
    return _cached(addr, ton, npi, default_country, short_code_max_length, lenient)


def cache_clear() -> None:
    """Forget memoised results (tests, or after the default country changes)."""
    _cached.cache_clear()


@lru_cache(maxsize=CACHE_SIZE)
def _cached(
    addr: str, ton: int, npi: int, default_country: str, short_code_max_length: int, lenient: bool
) -> SmsAddress | None:
    del npi  # see normalise()
    return _normalise(addr, ton, default_country, short_code_max_length, lenient)


def _normalise(
    addr: str,
    ton: int,
    default_country: str,
    short_code_max_length: int,
    lenient: bool,
    *,
    fast: bool = True,
) -> SmsAddress | None:
    """``normalise`` uncached; ``fast=False`` skips the fast path (the tests' reference)."""
    read = _read(addr, lenient)
    if read is None:
        return None
    kind, plus, text = read
    if kind is not None:
        return SmsAddress(kind=kind, value=text)
    replyable = ton != TON_ALPHANUMERIC
    if fast and _fast_nanp(text, plus, ton, default_country):
        return SmsAddress(
            kind=AddressKind.E164,
            value=text if len(text) == _NANP_INTERNATIONAL else "1" + text,
            replyable=replyable,
        )
    readings = _Readings(text, plus, ton, default_country)
    if readings.may_be_short_code(short_code_max_length):
        return SmsAddress(kind=AddressKind.SHORT_CODE, value=text)
    e164 = readings.e164()
    if e164 is None:
        return SmsAddress(kind=AddressKind.IMPOSSIBLE, value=text.lstrip("0") or text)
    return SmsAddress(kind=AddressKind.E164, value=e164, replyable=replyable)


# ``normalise`` with every argument positional (addr, ton, npi, default_country,
# short_code_max_length, lenient): the per-message call, one cache look-up and nothing else.
cached_normalise = _cached


_NANP_INTERNATIONAL = 11  # "1" and ten digits
_NANP_NATIONAL = 10
_NANP_LEADING = frozenset("23456789")  # no area code starts with 0 or 1


def _fast_nanp(digits: str, plus: bool, ton: int, region: str) -> bool:
    """Whether ``digits`` are a valid North American number in one of the two forms that
    ``phonenumbers.parse`` reads as country code 1 and the digits after it untouched, so the
    first reading in step 4 would be that number, valid, and win.

    International (``+`` or TON 1): "1" then ten digits, the first 2-9: the country code is 1
    (no country code starts 1x), and the US national prefix "1" cannot be stripped from an
    area code starting 2-9. National (TON unknown, national, subscriber number; default
    country US; no ``+``): ten digits, the first 2-9: not the US international prefix 011 nor
    the country code 1, no national prefix to strip, and ten digits are too many for a short
    code (``may_be_short_code`` answers no for a valid national number anyway). What is left
    to ask is validity, asked of the very number parse would build. Everything else, and any
    number that is not valid, takes the full path.
    """
    if plus or ton == TON_INTERNATIONAL:
        if len(digits) != _NANP_INTERNATIONAL or digits[0] != "1":
            return False
        national = digits[1:]
    elif region == "US" and ton in (TON_UNKNOWN, TON_NATIONAL, TON_SUBSCRIBER_NUMBER):
        if len(digits) != _NANP_NATIONAL:
            return False
        national = digits
    else:
        return False
    if national[0] not in _NANP_LEADING or not national.isascii():
        return False
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(national))
    return bool(phonenumbers.is_valid_number(number))


def _read(addr: str, lenient: bool) -> tuple[AddressKind | None, bool, str] | None:
    """Steps 1-3: (None, plus, digits) for a number, (kind, False, text) for a name or an
    unreadable address, None for an empty one."""
    if addr.isascii():
        stripped = addr.strip()
        plus = stripped.startswith("+")
        body = stripped[1:] if plus else stripped
        if body.isdigit():
            return None, plus, body  # the common case: nothing to clean
    stripped = addr.strip()
    if not stripped:
        return None
    # Re-read as UTF-8 before anything is stripped: a trailing 0xA0 octet may be half of a
    # UTF-8 character, not a latin-1 no-break space.
    text = _as_text(addr).strip()
    digits: list[str] = []
    plus = False
    junk = False
    for c in text:
        if c in _ASCII_DIGITS:
            digits.append(c)
        elif c.isdecimal():
            digits.append(str(unicodedata.decimal(c)))
        elif c.isspace() or c in _SEPARATORS or unicodedata.category(c) in _SEPARATOR_CATEGORIES:
            continue
        elif c == "+" and not digits and not plus and not junk:
            plus = True
        elif c.isalpha():
            return AddressKind.ALPHANUMERIC, False, _name(text)
        else:
            junk = True
    if not digits or (junk and not lenient):
        return AddressKind.UNREADABLE, False, stripped
    return None, plus, "".join(digits)


def _as_text(addr: str) -> str:
    """The address as the client meant it: octets that are UTF-8 read as UTF-8, then NFKC."""
    if not addr.isascii():
        # Not UTF-8: latin-1 it is (or already text, from the CLI or the API).
        with contextlib.suppress(UnicodeError):
            addr = addr.encode("latin-1").decode("utf-8")
    return unicodedata.normalize("NFKC", addr)


def _name(text: str) -> str:
    """An alphanumeric address as a key: format characters dropped, outer whitespace trimmed."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


class _Readings:
    """Step 4: the candidate readings of the digits, most likely first, parsed lazily (a valid
    first reading, the usual case, costs one parse)."""

    __slots__ = ("_digits", "_national", "_order", "_plus", "_region", "_ton")

    def __init__(self, digits: str, plus: bool, ton: int, region: str) -> None:
        self._digits = digits
        self._plus = plus
        self._ton = ton
        self._region = region
        self._national: list[phonenumbers.PhoneNumber | None] = []  # memo: parsed at most once
        self._order: tuple[Callable[[], phonenumbers.PhoneNumber | None], ...]
        if plus or ton == TON_INTERNATIONAL:
            self._order = (self._international, self._national_reading)
        elif ton == TON_NATIONAL:
            self._order = (self._national_reading, self._stripped, self._international)
        else:
            self._order = (self._national_reading, self._international, self._stripped)

    def _national_reading(self) -> phonenumbers.PhoneNumber | None:
        # Also strips the region's own international prefix (011 in the US).
        if not self._national:
            self._national.append(_parse(self._digits, self._region))
        return self._national[0]

    def _international(self) -> phonenumbers.PhoneNumber | None:
        # Leading zeros go: "00" and junk zeros alike (no country code starts with 0).
        return _parse("+" + self._digits.lstrip("0"), None)

    def _stripped(self) -> phonenumbers.PhoneNumber | None:
        rest = self._digits.lstrip("0")
        return _parse(rest, self._region) if rest != self._digits else None

    def may_be_short_code(self, max_length: int) -> bool:
        """Few digits (no '+', no leading zero) that are no valid national number, or any
        few digits the peer labelled network-specific / abbreviated."""
        digits = self._digits
        if self._plus or self._ton == TON_INTERNATIONAL or digits.startswith("0"):
            return False
        if len(digits) > max_length:
            return False
        if self._ton in (TON_NETWORK_SPECIFIC, TON_ABBREVIATED):
            return True
        return not _is_valid(self._national_reading())

    def e164(self) -> str | None:
        """A valid reading wins over one only of a possible length; the order breaks ties."""
        seen: list[phonenumbers.PhoneNumber] = []
        for read in self._order:
            number = read()
            if number is None:
                continue
            if phonenumbers.is_valid_number(number):
                return _format(number)
            seen.append(number)
        for number in seen:
            # A local number without its area code (IS_POSSIBLE_LOCAL_ONLY) is nobody's key.
            if phonenumbers.is_possible_number_with_reason(number) == _POSSIBLE:
                return _format(number)
        return None


def _format(number: phonenumbers.PhoneNumber) -> str:
    # format_number keeps Italian-style leading zeros that national_number drops.
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def _parse(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    if len(number) < 2 or number == "+":
        return None
    try:
        return phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None


def _is_valid(number: phonenumbers.PhoneNumber | None) -> bool:
    return number is not None and phonenumbers.is_valid_number(number)


# --- where a number is: its time zones and its state or province ------------------------------

UNKNOWN_ZONE = "Etc/Unknown"  # what phonenumbers says for a number it cannot place
PLACE_CACHE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class Place:
    """Where a subscriber's handset may be, as far as the number tells.

    ``zones``: the IANA zones it may be in (several where an area code spans zones; its
    country's zones, ``zones_exact`` False, where the number's own are not known; empty where
    not even its country has zones data). ``regions``: the ISO 3166-1 countries it may be in
    (one for a valid number; every country of its calling code otherwise: +1 is the US, Canada
    and the Caribbean). ``subdivision``: ISO 3166-2 ("US-TX") from the geocoder's description
    of the number's area code, None when not asked for or not known. US state law presumes
    that a number with an area code of the state reaches a person in it (Oklahoma's act says
    so outright).
    """

    regions: frozenset[str]
    zones: tuple[str, ...]
    zones_exact: bool
    subdivision: str | None = None


def place(value: str, *, short_code: bool, default_country: str, subdivision: bool) -> Place:
    """Where the subscriber ``value`` (E.164 digits, or a short code's digits) may be.

    A short code is national to ``default_country``: its zones are that country's. Only with
    ``subdivision`` is the geocoder consulted (its data costs about 100 MB and 0.7 s to load,
    see ``load_geocoder``). Memoised per number; never raises."""
    return _place(value, short_code, default_country, subdivision)


@lru_cache(maxsize=PLACE_CACHE_SIZE)
def _place(value: str, short_code: bool, default_country: str, subdivision: bool) -> Place:
    from phonenumbers import timezone  # the zone data is small (250 kB)

    if short_code:
        code = phonenumbers.country_code_for_region(default_country)
        return Place(
            regions=frozenset({default_country}), zones=_country_zones(code), zones_exact=False
        )
    number = _parse("+" + value, None)
    if number is None:
        return Place(regions=frozenset(), zones=(), zones_exact=False)
    region = phonenumbers.region_code_for_number(number)
    code = number.country_code or 0
    if region is not None:
        regions = frozenset({region})
    else:
        regions = frozenset(phonenumbers.region_codes_for_country_code(code)) - {"ZZ"}
    found = tuple(z for z in timezone.time_zones_for_number(number) if z != UNKNOWN_ZONE)
    if found:
        zones, exact = found, True
    else:
        zones, exact = _country_zones(code), False
    state = _subdivision(number, region) if subdivision and region is not None else None
    return Place(regions=regions, zones=zones, zones_exact=exact, subdivision=state)


def _country_zones(country_code: int) -> tuple[str, ...]:
    """Every zone of a calling code (the whole NANP for +1), () when it has no zones data."""
    from phonenumbers.tzdata import TIMEZONE_DATA

    return tuple(TIMEZONE_DATA.get(str(country_code), ()))


def load_geocoder() -> None:
    """Load the geocoder's data now (at start-up, not on the first message that needs it)."""
    from phonenumbers import geocoder

    del geocoder


def place_cache_clear() -> None:
    _place.cache_clear()


def _subdivision(number: phonenumbers.PhoneNumber, region: str) -> str | None:
    names = _SUBDIVISIONS.get(region)
    if names is None:
        return None
    from phonenumbers import geocoder

    text = geocoder.description_for_number(number, "en")
    if not text:
        return None
    # "Texas", "Washington D.C." or "San Antonio, TX": a name, or a city and the code.
    head, _sep, tail = text.rpartition(", ")
    code = tail.strip() if head else ""
    if code in names.values():
        return f"{region}-{code}"
    found = names.get(text.strip().casefold())
    return None if found is None else f"{region}-{found}"


_US_STATES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "florida": "FL", "georgia": "GA",
    "hawaii": "HI", "idaho": "ID", "illinois": "IL", "indiana": "IN", "iowa": "IA",
    "kansas": "KS", "kentucky": "KY", "louisiana": "LA", "maine": "ME", "maryland": "MD",
    "massachusetts": "MA", "michigan": "MI", "minnesota": "MN", "mississippi": "MS",
    "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV", "new hampshire": "NH",
    "new jersey": "NJ", "new mexico": "NM", "new york": "NY", "north carolina": "NC",
    "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR", "pennsylvania": "PA",
    "rhode island": "RI", "south carolina": "SC", "south dakota": "SD", "tennessee": "TN",
    "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA", "washington": "WA",
    "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY", "washington d.c.": "DC",
    "district of columbia": "DC",
}  # fmt: skip
_CA_PROVINCES = {
    "alberta": "AB", "british columbia": "BC", "manitoba": "MB", "new brunswick": "NB",
    "newfoundland and labrador": "NL", "nova scotia": "NS", "northwest territories": "NT",
    "nunavut": "NU", "ontario": "ON", "prince edward island": "PE", "quebec": "QC",
    "saskatchewan": "SK", "yukon": "YT",
}  # fmt: skip
_SUBDIVISIONS = {"US": _US_STATES, "CA": _CA_PROVINCES}
