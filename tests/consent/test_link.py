"""The signed opt-out link's tokens: round trip, and nothing else ever reads as a claim."""

from __future__ import annotations

import base64
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.link import (
    TOKEN_CHARS,
    Claim,
    LinkSigner,
    Refusal,
    campaign_id,
    day_number,
)

KEY = b"k" * 32
CAMPAIGNS = ("acme", "acme-promo", "other")
DAY = day_number(date(2026, 12, 3))


def signer(key: bytes = KEY, ttl_days: int = 90) -> LinkSigner:
    return LinkSigner(key, ttl_days=ttl_days, campaigns=CAMPAIGNS)


class TestRoundTrip:
    @pytest.mark.parametrize("number", ["15551234567", "447700900123", "1", "123456789012345"])
    def test_a_token_reads_back_as_its_claim(self, number: str) -> None:
        token = signer().token("acme-promo", number, DAY)
        assert len(token) == TOKEN_CHARS
        assert signer().read(token, DAY) == Claim(
            subscriber=number, campaign="acme-promo", expires_day=DAY + 90
        )

    def test_the_number_is_not_in_the_link(self) -> None:
        """Links end up in logs: neither the digits nor their packed form show."""
        number = "15551234567"
        token = signer().token("acme", number, DAY)
        raw = base64.urlsafe_b64decode(token)
        assert number not in token
        assert bytes.fromhex("1555123456") not in raw

    def test_tokens_differ_per_number_and_campaign(self) -> None:
        s = signer()
        tokens = {s.token(c, n, DAY) for c in CAMPAIGNS for n in ("15551234567", "15551234568")}
        assert len(tokens) == 6

    def test_valid_on_its_last_day_expired_the_day_after(self) -> None:
        token = signer(ttl_days=30).token("acme", "15551234567", DAY)
        assert isinstance(signer().read(token, DAY + 30), Claim)
        assert signer().read(token, DAY + 31) is Refusal.EXPIRED

    def test_a_reload_keeps_links_of_campaigns_still_there(self) -> None:
        old = signer()
        token = old.token("other", "15551234567", DAY)
        renamed = old.with_campaigns(("acme", "acme-promo"), 90)
        assert renamed.read(token, DAY) is Refusal.UNKNOWN_CAMPAIGN
        assert isinstance(old.with_campaigns(CAMPAIGNS, 90).read(token, DAY), Claim)


class TestRefusals:
    def test_another_key_is_forged(self) -> None:
        token = signer(b"x" * 32).token("acme", "15551234567", DAY)
        assert signer().read(token, DAY) is Refusal.FORGED

    @pytest.mark.parametrize("position", range(TOKEN_CHARS))
    def test_any_changed_character_claims_nothing(self, position: int) -> None:
        """Every one-character change of a token: forged or malformed, never another claim."""
        token = signer().token("acme", "15551234567", DAY)
        for replacement in "AZaz09-_":
            if replacement == token[position]:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            assert signer().read(changed, DAY) in (Refusal.FORGED, Refusal.MALFORMED)

    @pytest.mark.parametrize(
        "token", ["", "abc", "A" * 31, "A" * 33, "A" * 31 + "=", "A" * 31 + "+", "é" * 32]
    )
    def test_malformed(self, token: str) -> None:
        assert signer().read(token, DAY) is Refusal.MALFORMED

    @given(st.text(max_size=64))
    def test_no_string_raises_or_claims(self, text: str) -> None:
        assert isinstance(signer().read(text, DAY), Refusal)

    def test_bad_inputs_to_token(self) -> None:
        with pytest.raises(ValueError, match=r"E\.164"):
            signer().token("acme", "1555123456789012", DAY)
        with pytest.raises(ValueError, match=r"E\.164"):
            signer().token("acme", "+15551234567", DAY)
        with pytest.raises(ValueError, match="16 bytes"):
            LinkSigner(b"short", ttl_days=1, campaigns=())


def test_campaign_ids_that_collide_are_refused() -> None:
    """Two names with one id would make a link for one opt out of the other: a real pair
    (found by search: 32 bits collide within some 100,000 names) is refused."""
    seen: dict[bytes, str] = {}
    for i in range(1_000_000):
        name = f"campaign-{i}"
        other = seen.setdefault(campaign_id(name), name)
        if other != name:
            break
    else:
        pytest.fail("no colliding pair found")
    with pytest.raises(ValueError, match="the same link id"):
        LinkSigner(KEY, ttl_days=1, campaigns=("acme", other, name))
