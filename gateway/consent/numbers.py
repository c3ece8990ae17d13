"""Address normalisation: one subscriber, one key, whatever TON/NPI the peer used.

``+15551234567``, ``15551234567`` (TON international) and ``5551234567`` (TON national, default
country US) all become ``SmsAddress(kind=E164, value="15551234567")``. Alphanumeric senders and
short codes are classified, not rejected, so callers can refuse auto-replies to them.

This runs for every MT and MO, so results are memoised in a bounded LRU cache; it never raises on
peer input (an address that does not parse is kept as its digits, flagged ``UNPARSED``).
"""

from __future__ import annotations

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

_DIGITS = frozenset("0123456789")
# Separators people and some SMSCs put in numbers; anything else makes the address a name.
_SEPARATORS = frozenset(" -().\t")


def normalise(
    addr: str,
    ton: int,
    npi: int,
    default_country: str,
    *,
    short_code_max_length: int = DEFAULT_SHORT_CODE_MAX_LENGTH,
) -> SmsAddress | None:
    """Normalise an SMPP address; ``None`` for an empty one. Never raises.

    ``default_country`` is an ISO 3166 region ("US") used for national numbers. ``npi`` takes
    part in the cache key only: peers label E.164 numbers NPI 0 or 1 interchangeably, and the
    TON and the digits decide what the number is.
    """
    return _cached(addr, ton, npi, default_country, short_code_max_length)


def cache_clear() -> None:
    """Forget memoised results (tests, or after the default country changes)."""
    _cached.cache_clear()


@lru_cache(maxsize=CACHE_SIZE)
def _cached(
    addr: str, ton: int, npi: int, default_country: str, short_code_max_length: int
) -> SmsAddress | None:
    del npi  # see normalise()
    text = addr.strip()
    if not text:
        return None
    if ton == TON_ALPHANUMERIC:
        return SmsAddress(kind=AddressKind.ALPHANUMERIC, value=text)
    plus = text.startswith("+")
    body = text[1:] if plus else text
    if any(c not in _DIGITS and c not in _SEPARATORS for c in body):
        return SmsAddress(kind=AddressKind.ALPHANUMERIC, value=text)
    digits = "".join(c for c in body if c in _DIGITS)
    if not digits:
        return SmsAddress(kind=AddressKind.ALPHANUMERIC, value=text)
    if ton in (TON_NETWORK_SPECIFIC, TON_ABBREVIATED):
        return SmsAddress(kind=AddressKind.SHORT_CODE, value=digits)

    given = digits
    international = plus or ton == TON_INTERNATIONAL
    if not international and ton != TON_NATIONAL and digits.startswith("00"):
        # '00' is the international prefix almost everywhere; no country code starts with 0.
        international = True
        digits = digits[2:]
    elif international and not plus and digits.startswith("00"):
        digits = digits[2:]  # TON international with the dialling prefix left in
    if not digits:
        return SmsAddress(kind=AddressKind.UNPARSED, value=given)

    if international:
        e164 = _e164(_parse("+" + digits, None), need_valid=False)
    else:
        national = _parse(digits, default_country)
        if len(digits) <= short_code_max_length and not _is_valid(national):
            return SmsAddress(kind=AddressKind.SHORT_CODE, value=digits)
        if ton == TON_NATIONAL:
            e164 = _e164(national, need_valid=False)
        else:
            # TON unknown / subscriber number: national or international? Prefer a reading that
            # is a valid number, then one of a possible length, national first (the usual case).
            intl = _parse("+" + digits, None)
            e164 = (
                _e164(national, need_valid=True)
                or _e164(intl, need_valid=True)
                or _e164(national, need_valid=False)
                or _e164(intl, need_valid=False)
            )
    if e164 is None:
        return SmsAddress(kind=AddressKind.UNPARSED, value=given)
    return SmsAddress(kind=AddressKind.E164, value=e164)


def _parse(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None


def _is_valid(number: phonenumbers.PhoneNumber | None) -> bool:
    return number is not None and phonenumbers.is_valid_number(number)


def _e164(number: phonenumbers.PhoneNumber | None, *, need_valid: bool) -> str | None:
    if number is None:
        return None
    ok = phonenumbers.is_valid_number(number) if need_valid else _is_possible(number)
    if not ok:
        return None
    # format_number keeps Italian-style leading zeros that national_number drops.
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def _is_possible(number: phonenumbers.PhoneNumber) -> bool:
    return bool(phonenumbers.is_possible_number(number))
