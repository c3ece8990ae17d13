"""Address normalisation: one subscriber whatever the TON/NPI, names and short codes classified."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import numbers
from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.numbers import normalise

E164 = AddressKind.E164
SHORT = AddressKind.SHORT_CODE
ALPHA = AddressKind.ALPHANUMERIC
UNPARSED = AddressKind.UNPARSED

CASES = [
    # addr, ton, country, kind, value, rule
    ("+15551234567", 0, "US", E164, "15551234567", "plus-prefix-is-international"),
    ("15551234567", 1, "US", E164, "15551234567", "ton-international"),
    ("5551234567", 2, "US", E164, "15551234567", "ton-national-uses-default-country"),
    ("5551234567", 0, "US", E164, "15551234567", "ton-unknown-national-reading"),
    ("15551234567", 0, "US", E164, "15551234567", "ton-unknown-with-country-code"),
    ("0015551234567", 0, "US", E164, "15551234567", "ton-unknown-00-prefix"),
    ("011447700900123", 0, "US", E164, "447700900123", "ton-unknown-us-idd-prefix"),
    ("447700900123", 0, "US", E164, "447700900123", "ton-unknown-foreign-country-code"),
    ("07700900123", 2, "GB", E164, "447700900123", "national-trunk-zero-dropped"),
    ("+1 (555) 123-4567", 0, "US", E164, "15551234567", "separators-ignored"),
    ("+390612345678", 1, "IT", E164, "390612345678", "italian-leading-zero-kept"),
    ("0015551234567", 1, "US", E164, "15551234567", "ton-international-with-00-left-in"),
    ("ACME", 5, "US", ALPHA, "ACME", "ton-alphanumeric"),
    ("12345", 5, "US", ALPHA, "12345", "ton-alphanumeric-even-if-digits"),
    ("ACME Shop", 0, "US", ALPHA, "ACME Shop", "letters-are-a-name"),
    ("12345", 3, "US", SHORT, "12345", "ton-network-specific-short-code"),
    ("4567", 6, "US", SHORT, "4567", "ton-abbreviated-short-code"),
    ("12345", 0, "US", SHORT, "12345", "few-digits-without-country-is-short-code"),
    ("1234567890123456789", 0, "US", UNPARSED, "1234567890123456789", "too-long-kept-flagged"),
    ("123456789", 1, "US", UNPARSED, "123456789", "impossible-international-kept"),
    ("5551234567", 2, "ZZ", UNPARSED, "5551234567", "unknown-default-country-kept"),
]


class TestNormalise:
    @pytest.mark.parametrize(
        ("addr", "ton", "country", "kind", "value"),
        [c[:5] for c in CASES],
        ids=[c[5] for c in CASES],
    )
    def test_rule(self, addr: str, ton: int, country: str, kind: AddressKind, value: str) -> None:
        """Each address normalises to the documented kind and consent key."""
        assert normalise(addr, ton, 1, country) == SmsAddress(kind=kind, value=value)

    @pytest.mark.parametrize("addr", ["", "   "], ids=["empty", "blank"])
    def test_empty_is_none(self, addr: str) -> None:
        """An empty address is no subscriber at all."""
        assert normalise(addr, 1, 1, "US") is None

    def test_three_spellings_are_one_subscriber(self) -> None:
        """+15551234567, 15551234567 (international) and 5551234567 (national, US) are equal."""
        spellings = {
            normalise("+15551234567", 0, 1, "US"),
            normalise("15551234567", 1, 1, "US"),
            normalise("5551234567", 2, 1, "US"),
        }
        assert spellings == {SmsAddress(kind=E164, value="15551234567")}

    def test_short_code_length_is_configurable(self) -> None:
        """A 9-digit address is a short code only when the configured maximum allows it."""
        assert normalise("123456789", 0, 1, "US").kind is UNPARSED  # type: ignore[union-attr]
        longer = normalise("123456789", 0, 1, "US", short_code_max_length=9)
        assert longer == SmsAddress(kind=SHORT, value="123456789")

    def test_valid_national_number_is_not_a_short_code(self) -> None:
        """A short national number that is valid in the default country stays a number."""
        assert normalise("612345678", 2, 1, "FR") == SmsAddress(kind=E164, value="33612345678")

    def test_results_are_memoised(self) -> None:
        """The same input returns the cached object, and the cache is bounded."""
        first = normalise("+15557654321", 1, 1, "US")
        assert normalise("+15557654321", 1, 1, "US") is first
        assert numbers._cached.cache_info().maxsize == numbers.CACHE_SIZE

    @pytest.mark.parametrize(
        ("kind", "replies"),
        [(E164, True), (SHORT, False), (ALPHA, False), (UNPARSED, False)],
        ids=["number-gets-replies", "short-code-none", "alphanumeric-none", "unparsed-none"],
    )
    def test_only_numbers_accept_auto_replies(self, kind: AddressKind, replies: bool) -> None:
        """Auto-replies go only to E.164 numbers, so auto-responders cannot loop."""
        assert SmsAddress(kind=kind, value="1").accepts_auto_reply is replies

    @given(
        addr=st.text(max_size=30),
        ton=st.integers(0, 255),
        npi=st.integers(0, 255),
        country=st.sampled_from(["US", "GB", "FR", "DE", "ZZ", "", "us"]),
    )
    def test_never_raises(self, addr: str, ton: int, npi: int, country: str) -> None:
        """Any peer input gives None or a classified address, never an exception."""
        result = normalise(addr, ton, npi, country)
        if result is None:
            assert not addr.strip()
        elif result.kind in (E164, SHORT, UNPARSED):
            assert result.value.isdigit()
            assert result.value.isascii()
