"""``data_coding`` (SMPP 3.4 section 5.2.19, GSM 03.38 DCS coding groups) to an alphabet.

Values 0x00-0x0F carry SMPP's own meanings; from 0x10 on, the GSM 03.38 coding groups apply.
Anything binary, compressed, reserved or in an alphabet we do not handle is ``BINARY`` or
``UNKNOWN``: the gateway never decodes, rewrites or re-encodes such a message.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.text import gsm7, ucs2
from gateway.text.gsm7 import TextEncodeError, TextError


class Alphabet(StrEnum):
    GSM7 = "gsm7"  # GSM 03.38 default alphabet, unpacked (one septet per octet)
    LATIN1 = "latin1"  # ISO-8859-1
    UCS2 = "ucs2"  # UTF-16BE with surrogate pairs
    IA5 = "ia5"  # CCITT T.50 / ASCII
    BINARY = "binary"  # 8-bit data: never touched
    UNKNOWN = "unknown"  # compressed, reserved or unsupported: never touched

    @property
    def is_text(self) -> bool:
        """True for the alphabets the gateway may decode and rewrite."""
        return self in _TEXT


_TEXT = frozenset({Alphabet.GSM7, Alphabet.LATIN1, Alphabet.UCS2, Alphabet.IA5})

# GSM 03.38 general data coding, bits 3..2.
_GENERAL_ALPHABET = (Alphabet.GSM7, Alphabet.BINARY, Alphabet.UCS2, Alphabet.UNKNOWN)

_SMPP: dict[int, Alphabet] = {
    0x01: Alphabet.IA5,
    0x02: Alphabet.BINARY,  # octet unspecified
    0x03: Alphabet.LATIN1,
    0x04: Alphabet.BINARY,  # octet unspecified
    0x08: Alphabet.UCS2,
    # 0x05 JIS, 0x06 Cyrillic, 0x07 Latin/Hebrew, 0x09 pictogram, 0x0A ISO-2022-JP,
    # 0x0D extended kanji, 0x0E KS C 5601 and the reserved values: UNKNOWN.
}


def alphabet_for(data_coding: int, smsc_default: Alphabet = Alphabet.GSM7) -> Alphabet:
    """The alphabet ``data_coding`` names; 0 is the SMSC default, which is configurable."""
    dc = data_coding & 0xFF
    if dc == 0x00:
        return smsc_default
    if dc < 0x10:
        return _SMPP.get(dc, Alphabet.UNKNOWN)
    group = dc >> 4
    if group <= 0x7:
        # 00xx (general) and 01xx (automatic deletion): bit 5 = compressed, bits 3..2 = alphabet.
        if dc & 0x20:
            return Alphabet.UNKNOWN
        return _GENERAL_ALPHABET[(dc >> 2) & 0x03]
    if group in (0xC, 0xD):  # message waiting indication, discard / store: default alphabet
        return Alphabet.GSM7
    if group == 0xE:  # message waiting indication, store: UCS-2
        return Alphabet.UCS2
    if group == 0xF:  # data coding / message class; bit 3 is reserved
        if dc & 0x08:
            return Alphabet.UNKNOWN
        return Alphabet.BINARY if dc & 0x04 else Alphabet.GSM7
    return Alphabet.UNKNOWN  # 0x80-0xBF: reserved coding groups


def message_class(data_coding: int) -> int | None:
    """The GSM message class (0..3) ``data_coding`` carries, or None."""
    dc = data_coding & 0xFF
    if dc < 0x10:
        return None
    if dc >> 4 <= 0x7:
        return dc & 0x03 if dc & 0x10 else None
    if dc >> 4 == 0xF and not dc & 0x08:
        return dc & 0x03
    return None


def with_alphabet(data_coding: int, alphabet: Alphabet) -> int:
    """The ``data_coding`` to send when a message's text is rewritten in ``alphabet``.

    Unchanged when it already names ``alphabet``; otherwise the SMPP value, except that a GSM
    message class and the automatic-deletion group are kept where a general group can say so.
    """
    if not alphabet.is_text:
        raise TextError(f"cannot rewrite a message into {alphabet.value}")
    dc = data_coding & 0xFF
    if dc >= 0x10 and alphabet_for(dc) is alphabet:
        return dc
    if dc < 0x10 and dc != 0x00 and alphabet_for(dc) is alphabet:
        return dc
    if alphabet in (Alphabet.GSM7, Alphabet.UCS2) and dc >= 0x10:
        bits = 0x00 if alphabet is Alphabet.GSM7 else 0x08
        if dc >> 4 <= 0x7 and not dc & 0x20:
            return (dc & 0xF3) | bits  # same group and class, new alphabet bits
        if dc >> 4 in (0xD, 0xE):  # message waiting indication "store": keep the indication
            return (0xD0 if alphabet is Alphabet.GSM7 else 0xE0) | (dc & 0x0F)
        cls = message_class(dc)
        if cls is not None:
            return 0x10 | bits | cls
    return {
        Alphabet.GSM7: 0x00,
        Alphabet.IA5: 0x01,
        Alphabet.LATIN1: 0x03,
        Alphabet.UCS2: 0x08,
    }[alphabet]


def can_encode(text: str, alphabet: Alphabet) -> bool:
    """True when ``text`` can be written in ``alphabet`` (UCS-2 writes anything)."""
    if alphabet is Alphabet.GSM7:
        return gsm7.can_encode(text)
    if alphabet is Alphabet.UCS2:
        return True
    if alphabet is Alphabet.LATIN1:
        return all(ord(ch) <= 0xFF for ch in text)
    if alphabet is Alphabet.IA5:
        return text.isascii()
    return False


def decode_text(
    data: bytes, data_coding: int, smsc_default: Alphabet = Alphabet.GSM7
) -> str | None:
    """The text of a message body, or None for binary and unknown codings (never touched)."""
    return decode_as(data, alphabet_for(data_coding, smsc_default))


def decode_as(data: bytes, alphabet: Alphabet) -> str | None:
    """``data`` decoded in ``alphabet`` (leniently), or None for binary and unknown."""
    if alphabet is Alphabet.GSM7:
        return gsm7.decode(data)
    if alphabet is Alphabet.UCS2:
        return ucs2.decode(data)
    if alphabet is Alphabet.LATIN1:
        return data.decode("latin-1")
    if alphabet is Alphabet.IA5:
        return data.decode("ascii", "replace")
    return None


def encode_text(text: str, alphabet: Alphabet) -> bytes:
    """Encode ``text`` in ``alphabet``; raises ``TextEncodeError`` (or ``TextError`` if binary)."""
    if alphabet is Alphabet.GSM7:
        return gsm7.encode(text)
    if alphabet is Alphabet.UCS2:
        return ucs2.encode(text)
    if alphabet is Alphabet.LATIN1 or alphabet is Alphabet.IA5:
        codec = "latin-1" if alphabet is Alphabet.LATIN1 else "ascii"
        try:
            return text.encode(codec)
        except UnicodeEncodeError as exc:
            raise TextEncodeError(alphabet.value, text, exc.start) from None
    raise TextError(f"cannot encode text as {alphabet.value}")
