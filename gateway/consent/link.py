"""The signed web opt-out link: a short token per subscriber and campaign (pure, no I/O).

``{optout_url}`` in a footer becomes ``base_url + token``. Opening the link shows a page that
asks to confirm; confirming opts the subscriber out of the campaign (gateway.admin.optout).

A token is 24 bytes, 32 characters of base64url: a 9-byte tag, then 15 bytes of claim
encrypted under a keystream derived from the tag (a synthetic-IV construction built on
HMAC-SHA256 alone):

    claim = version (1) | expiry, days since 2024-01-01 (2) | campaign id (4) | number (8, BCD)
    tag   = HMAC(mac_key, claim)[:9]
    token = base64url(tag | claim XOR HMAC(enc_key, tag)[:15])

The tag authenticates the claim (72 bits: guessing a valid token online is hopeless), and the
number does not appear in the link in clear (URLs end up in proxy and browser logs). The
campaign id is the first 4 bytes of SHA-256 of the campaign's name; the config refuses two
campaigns with one id. Both keys are derived from the one configured secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

VERSION: Final = 1
EPOCH: Final = date(2024, 1, 1).toordinal()  # day 0 of the expiry field
TAG_BYTES: Final = 9
CLAIM_BYTES: Final = 15
TOKEN_CHARS: Final = 32  # base64url of TAG_BYTES + CLAIM_BYTES, no padding
MAX_DIGITS: Final = 15  # E.164
_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def campaign_id(name: str) -> bytes:
    """The 4 bytes a token names its campaign by."""
    return hashlib.sha256(name.encode("utf-8")).digest()[:4]


def day_number(day: date) -> int:
    """``day`` as the expiry field counts: days since EPOCH (the caller reads the clock)."""
    return day.toordinal() - EPOCH


class Refusal(StrEnum):
    """Why a token opts nobody out."""

    MALFORMED = "malformed"  # not a token at all (length, alphabet, version)
    FORGED = "forged"  # the tag does not match: made without the key, or altered
    EXPIRED = "expired"
    UNKNOWN_CAMPAIGN = "unknown_campaign"  # signed, but for a campaign no longer configured


@dataclass(frozen=True, slots=True)
class Claim:
    """What a valid token says: opt ``subscriber`` out of ``campaign``."""

    subscriber: str  # E.164 digits
    campaign: str
    expires_day: int


def _pack_number(digits: str) -> bytes:
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_DIGITS:
        raise ValueError(f"not an E.164 number: {digits!r}")
    nibbles = [int(d) for d in digits] + [0xF] * (2 * 8 - len(digits))
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 16, 2))


def _unpack_number(packed: bytes) -> str | None:
    digits = []
    ended = False
    for byte in packed:
        for nibble in (byte >> 4, byte & 0xF):
            if nibble == 0xF:
                ended = True
            elif ended or nibble > 9:
                return None  # a digit after the padding, or no digit at all
            else:
                digits.append(str(nibble))
    return "".join(digits) if digits else None


class LinkSigner:
    """Makes and reads tokens under one secret, for a fixed set of campaign names."""

    def __init__(self, secret: bytes, *, ttl_days: int, campaigns: tuple[str, ...]) -> None:
        if len(secret) < 16:
            raise ValueError("the link key must hold at least 16 bytes")
        self._secret = secret
        self._mac_key = hmac.digest(secret, b"smpp-gateway optout-link tag", "sha256")
        self._enc_key = hmac.digest(secret, b"smpp-gateway optout-link keystream", "sha256")
        self.ttl_days = ttl_days
        self._by_id: dict[bytes, str] = {}
        for name in campaigns:
            cid = campaign_id(name)
            other = self._by_id.setdefault(cid, name)
            if other != name:
                raise ValueError(f"campaigns {other!r} and {name!r} have the same link id")

    def with_campaigns(self, campaigns: tuple[str, ...], ttl_days: int) -> LinkSigner:
        """The same key for another set of campaigns (a reload): links already sent still
        work for every campaign that is still configured."""
        return LinkSigner(self._secret, ttl_days=ttl_days, campaigns=campaigns)

    def token(self, campaign: str, subscriber: str, day: int) -> str:
        """The token for ``subscriber`` and ``campaign``, valid ``ttl_days`` from ``day``."""
        expires = min(day + self.ttl_days, 0xFFFF)
        claim = (
            bytes([VERSION])
            + expires.to_bytes(2, "big")
            + campaign_id(campaign)
            + _pack_number(subscriber)
        )
        tag = hmac.digest(self._mac_key, claim, "sha256")[:TAG_BYTES]
        stream = hmac.digest(self._enc_key, tag, "sha256")[:CLAIM_BYTES]
        sealed = bytes(a ^ b for a, b in zip(claim, stream, strict=True))
        return base64.urlsafe_b64encode(tag + sealed).decode("ascii")

    def read(self, token: str, day: int) -> Claim | Refusal:
        """What ``token`` claims, or why it claims nothing (checked in constant time)."""
        if len(token) != TOKEN_CHARS or not set(token) <= _B64URL:
            return Refusal.MALFORMED
        try:
            raw = base64.urlsafe_b64decode(token)
        except (binascii.Error, ValueError):
            return Refusal.MALFORMED
        tag, sealed = raw[:TAG_BYTES], raw[TAG_BYTES:]
        stream = hmac.digest(self._enc_key, tag, "sha256")[:CLAIM_BYTES]
        claim = bytes(a ^ b for a, b in zip(sealed, stream, strict=True))
        expected = hmac.digest(self._mac_key, claim, "sha256")[:TAG_BYTES]
        if not hmac.compare_digest(tag, expected):
            return Refusal.FORGED
        subscriber = _unpack_number(claim[7:])
        if claim[0] != VERSION or subscriber is None:
            return Refusal.MALFORMED  # signed by us, so a newer format: not this version's
        expires = int.from_bytes(claim[1:3], "big")
        if day > expires:
            return Refusal.EXPIRED
        campaign = self._by_id.get(claim[3:7])
        if campaign is None:
            return Refusal.UNKNOWN_CAMPAIGN
        return Claim(subscriber=subscriber, campaign=campaign, expires_day=expires)
