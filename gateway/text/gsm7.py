"""GSM 03.38 (3GPP TS 23.038) default alphabet and its default extension table.

SMPP usually carries GSM 7-bit text *unpacked*: one septet per octet, escape pairs as two octets
``1B xx``. ``pack`` / ``unpack`` give the air-interface form (septets packed LSB first), with the
fill bits that align the first septet after a UDH.

``TextError`` is the root of every error of the ``gateway.text`` package; it lives here because
this is the module every other one already imports.
"""

from __future__ import annotations

import codecs

from gateway.errors import GatewayError

ESCAPE = 0x1B

# Index = septet value. 0x1B is the escape to the extension table, never a character.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

_EXTENSION: dict[int, str] = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE_BASIC: dict[str, int] = {ch: i for i, ch in enumerate(_BASIC) if i != ESCAPE}
_ENCODE_EXTENSION: dict[str, int] = {ch: code for code, ch in _EXTENSION.items()}

# Octet -> character for text without escapes, for the C charmap codec: septets as the basic
# table, octets with the high bit as U+FFFD (0x1B is never looked up: such data takes the loop).
_DECODE_TABLE = _BASIC + "\ufffd" * 128

# Octet -> its character lower-cased, where that is ASCII; 0x80 for every other octet (the
# escape, septets of non-ASCII characters, octets with the high bit): see ``ascii_lower``.
_ASCII_LOWER = bytes(
    ord(_BASIC[b].lower()) if b < 0x80 and b != ESCAPE and _BASIC[b].isascii() else 0x80
    for b in range(256)
)

#: Characters that cost two septets (escape + code).
EXTENSION_CHARACTERS = frozenset(_ENCODE_EXTENSION)


class TextError(GatewayError, ValueError):
    """Root of the message-text errors (encoding, UDH, segmentation)."""


class TextEncodeError(TextError):
    """A character cannot be written in the requested alphabet."""

    def __init__(self, alphabet: str, text: str, position: int) -> None:
        self.alphabet = alphabet
        self.position = position
        self.character = text[position]
        super().__init__(
            f"{alphabet}: cannot encode U+{ord(self.character):04X} at position {position}"
        )


def septets_of(ch: str) -> int:
    """Septets one character needs: 1 (basic), 2 (extension), 0 (not in the alphabet)."""
    if ch in _ENCODE_BASIC:
        return 1
    if ch in _ENCODE_EXTENSION:
        return 2
    return 0


def can_encode(text: str) -> bool:
    """True when every character is in the default alphabet or its extension table."""
    return all(ch in _ENCODE_BASIC or ch in _ENCODE_EXTENSION for ch in text)


def septet_len(text: str) -> int:
    """Length in septets (extension characters count two); raises ``TextEncodeError``."""
    total = 0
    for i, ch in enumerate(text):
        n = septets_of(ch)
        if n == 0:
            raise TextEncodeError("gsm7", text, i)
        total += n
    return total


def encode(text: str) -> bytes:
    """Encode to unpacked septets (one per octet); raises ``TextEncodeError``."""
    out = bytearray()
    for i, ch in enumerate(text):
        code = _ENCODE_BASIC.get(ch)
        if code is not None:
            out.append(code)
            continue
        code = _ENCODE_EXTENSION.get(ch)
        if code is None:
            raise TextEncodeError("gsm7", text, i)
        out += bytes((ESCAPE, code))
    return bytes(out)


def decode(data: bytes) -> str:
    """Decode unpacked septets, leniently as TS 23.038 asks of a receiving entity.

    An unknown extension code shows the basic-table character of the same code; ``1B 1B`` (the
    reserved escape to a further table) and a trailing lone escape show a space. An octet with the
    high bit set is not a septet and becomes U+FFFD.
    """
    if ESCAPE not in data:
        # The common case, in C: every octet stands for one character.
        return codecs.charmap_decode(data, "strict", _DECODE_TABLE)[0]
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        i += 1
        if b > 0x7F:
            out.append("\ufffd")
        elif b != ESCAPE:
            out.append(_BASIC[b])
        elif i >= n:
            out.append(" ")
        else:
            code = data[i]
            i += 1
            if code > 0x7F:
                out.append("\ufffd")
            elif code == ESCAPE:
                out.append(" ")
            else:
                out.append(_EXTENSION.get(code, _BASIC[code]))
    return "".join(out)


def ascii_lower(data: bytes) -> bytes:
    """``decode(data).lower()`` as ASCII octets when that text is ASCII, in one C call; when
    it is not, the result holds 0x80 somewhere (so ``isascii()`` tells the two apart)."""
    return data.translate(_ASCII_LOWER)


def pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets LSB first after ``fill_bits`` zero bits (0..6, the alignment after a UDH)."""
    if not 0 <= fill_bits <= 6:
        raise TextError(f"fill_bits must be 0..6, got {fill_bits}")
    acc = 0
    bits = fill_bits
    out = bytearray()
    for s in septets:
        if s > 0x7F:
            raise TextError(f"not a septet: 0x{s:02X}")
        acc |= s << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Read ``count`` septets from packed ``data``, skipping ``fill_bits`` leading bits."""
    if not 0 <= fill_bits <= 6:
        raise TextError(f"fill_bits must be 0..6, got {fill_bits}")
    if count < 0 or fill_bits + 7 * count > 8 * len(data):
        raise TextError(f"{count} septets do not fit in {len(data)} octets")
    value = int.from_bytes(data, "little") >> fill_bits
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))
