"""Address normalisation: one subscriber whatever the TON/NPI, names and short codes classified."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent import numbers
from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.numbers import normalise
from tests.support.addresses import number_forms, ordinary_forms

E164 = AddressKind.E164
SHORT = AddressKind.SHORT_CODE
ALPHA = AddressKind.ALPHANUMERIC
UNREADABLE = AddressKind.UNREADABLE
IMPOSSIBLE = AddressKind.IMPOSSIBLE

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
    ("ACME Shop", 0, "US", ALPHA, "ACME Shop", "letters-are-a-name"),
    ("12345", 3, "US", SHORT, "12345", "ton-network-specific-short-code"),
    ("4567", 6, "US", SHORT, "4567", "ton-abbreviated-short-code"),
    ("12345", 0, "US", SHORT, "12345", "few-digits-without-country-is-short-code"),
    ("1234567890123456789", 0, "US", IMPOSSIBLE, "1234567890123456789", "too-long-impossible"),
    ("123456789", 1, "US", IMPOSSIBLE, "123456789", "impossible-international"),
    ("+15550100", 0, "US", IMPOSSIBLE, "15550100", "test-range-sender-keyed-by-digits"),
    # Forms SMSCs clean before routing: read as the subscriber they reach.
    ("015552220000", 0, "US", E164, "15552220000", "junk-leading-zero-stripped"),
    ("00015552220000", 0, "US", E164, "15552220000", "00-and-junk-zero"),
    ("+015552220000", 0, "US", E164, "15552220000", "plus-then-zero"),
    ("05552220000", 2, "US", E164, "15552220000", "national-with-junk-zero"),
    ("01115552220000", 1, "US", E164, "15552220000", "international-with-us-idd-left-in"),
    ("1555\u00a0222\u00a00000", 1, "US", E164, "15552220000", "no-break-spaces"),
    ("1555\u200b2220000", 1, "US", E164, "15552220000", "zero-width-space"),
    ("1555\xe2\x80\x8b2220000", 1, "US", E164, "15552220000", "zero-width-space-as-utf8-octets"),
    (
        "\uff11\uff15\uff15\uff15\uff12\uff12\uff12\uff10\uff10\uff10\uff10",
        1,
        "US",
        E164,
        "15552220000",
        "fullwidth-digits",
    ),
    (
        "\u0661\u0665\u0665\u0665\u0662\u0662\u0662\u0660\u0660\u0660\u0660",
        0,
        "US",
        E164,
        "15552220000",
        "arabic-indic-digits",
    ),
    ("1555\n2220000", 1, "US", E164, "15552220000", "line-break-inside"),
    ("1555/222/0000", 1, "US", E164, "15552220000", "slashes"),
    ("15552220000", 5, "US", E164, "15552220000", "ton-alphanumeric-digits-are-the-number"),
    ("5552220000", 6, "US", E164, "15552220000", "abbreviated-but-too-long-for-a-short-code"),
    ("15552220000#", 1, "US", UNREADABLE, "15552220000#", "trailing-hash-unreadable"),
    ("15552220000;", 1, "US", UNREADABLE, "15552220000;", "trailing-semicolon-unreadable"),
    ("*15552220000", 1, "US", UNREADABLE, "*15552220000", "leading-star-unreadable"),
    ("++15552220000", 0, "US", UNREADABLE, "++15552220000", "double-plus-unreadable"),
    ("1+5552220000", 0, "US", UNREADABLE, "1+5552220000", "inner-plus-unreadable"),
    ("tel:+15552220000", 0, "US", ALPHA, "tel:+15552220000", "uri-is-not-a-number"),
    ("\uff21\uff23\uff2d\uff25", 5, "US", ALPHA, "ACME", "fullwidth-name-folded"),
    ("0012345", 0, "US", IMPOSSIBLE, "12345", "zeros-before-a-short-code-impossible"),
]


class TestNormalise:
    @pytest.mark.parametrize(
        ("addr", "ton", "country", "kind", "value"),
        [c[:5] for c in CASES],
        ids=[c[5] for c in CASES],
    )
    def test_rule(self, addr: str, ton: int, country: str, kind: AddressKind, value: str) -> None:
        """Each address normalises to the documented kind and consent key."""
        found = normalise(addr, ton, 1, country)
        assert found is not None
        assert (found.kind, found.value) == (kind, value)

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
        assert normalise("123456789", 0, 1, "US").kind is IMPOSSIBLE  # type: ignore[union-attr]
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
        [(E164, True), (SHORT, False), (ALPHA, False), (IMPOSSIBLE, False), (UNREADABLE, False)],
        ids=[
            "number",
            "short-code-none",
            "alphanumeric-none",
            "impossible-none",
            "unreadable-none",
        ],
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
        elif result.kind in (E164, SHORT, IMPOSSIBLE):
            assert result.value.isdigit()
            assert result.value.isascii()


class TestEveryForm:
    """Fail closed: every form of a number is that subscriber, or not a number at all."""

    @pytest.mark.parametrize(
        ("e164", "country"),
        [("15552220000", "US"), ("447700900123", "GB"), ("33612345678", "FR")],
        ids=["us", "gb", "fr"],
    )
    @settings(max_examples=400)
    @given(data=st.data())
    def test_any_form_is_the_subscriber_or_unreadable(
        self, e164: str, country: str, data: st.DataObject
    ) -> None:
        """Prefixes, separators, invisible characters, other scripts' digits and every TON
        read as the subscriber, or as something an MT is refused for; never another key."""
        addr, ton = data.draw(number_forms(e164, country))
        found = normalise(addr, ton, 1, country)
        assert found is not None
        assert found.kind in (E164, UNREADABLE, IMPOSSIBLE, ALPHA), found
        if found.kind is E164:
            assert found.value == e164

    @pytest.mark.parametrize(
        ("e164", "country"),
        [("15552220000", "US"), ("447700900123", "GB"), ("33612345678", "FR")],
        ids=["us", "gb", "fr"],
    )
    @given(data=st.data())
    def test_ordinary_forms_are_the_subscriber(
        self, e164: str, country: str, data: st.DataObject
    ) -> None:
        """The forms people write are always read as the subscriber."""
        addr, ton = data.draw(ordinary_forms(e164, country))
        assert normalise(addr, ton, 1, country) == SmsAddress(kind=E164, value=e164)

    @settings(max_examples=400)
    @given(data=st.data())
    def test_lenient_reads_junk_as_the_digits(self, data: st.DataObject) -> None:
        """MO sources (lenient) drop stray characters: a STOP is kept for the digits' number."""
        addr, ton = data.draw(number_forms("15552220000", "US"))
        found = normalise(addr, ton, 1, "US", lenient=True)
        assert found is not None
        assert found.kind in (E164, UNREADABLE, IMPOSSIBLE), found
        if found.kind is E164:
            assert found.value == "15552220000"

    def test_ton_alphanumeric_digits_get_no_reply(self) -> None:
        """Digits labelled alphanumeric are the subscriber, but get no auto-reply."""
        found = normalise("15552220000", 5, 1, "US")
        assert found is not None
        assert found.is_number
        assert not found.accepts_auto_reply


_DIGIT = st.sampled_from("0123456789")


@st.composite
def nanp_forms(draw: st.DrawFn) -> tuple[str, int, str]:
    """A ten-digit North American number (area code 2-9) as the fast path takes it: "+1..."
    under any TON, "1..." under TON 1, or the ten digits under TON 0, 2 or 4 in the US."""
    national = draw(st.sampled_from("23456789")) + "".join(
        draw(st.lists(_DIGIT, min_size=9, max_size=9))
    )
    form = draw(st.sampled_from(["plus", "ton1", "national"]))
    if form == "plus":
        return "+1" + national, draw(st.integers(0, 6)), draw(st.sampled_from(["US", "CA", "GB"]))
    if form == "ton1":
        return "1" + national, 1, draw(st.sampled_from(["US", "CA", "GB"]))
    return national, draw(st.sampled_from([0, 2, 4])), "US"


@st.composite
def near_forms(draw: st.DrawFn) -> tuple[str, int, str]:
    """Digit strings around those forms: other lengths, leading 0 or 1, every TON, regions."""
    digits = "".join(draw(st.lists(_DIGIT, min_size=7, max_size=13)))
    plus = draw(st.booleans())
    ton = draw(st.integers(0, 6))
    return ("+" if plus else "") + digits, ton, draw(st.sampled_from(["US", "CA", "GB", "DE"]))


class TestFastPath:
    """The fast path for North American numbers reads exactly what phonenumbers reads."""

    @settings(max_examples=1500)
    @given(form=nanp_forms(), short_max=st.sampled_from([6, 8, 10, 12]))
    def test_nanp_forms_read_as_phonenumbers_reads_them(
        self, form: tuple[str, int, str], short_max: int
    ) -> None:
        """Every input of the fast path's forms normalises as the full path does."""
        addr, ton, country = form
        fast = numbers._normalise(addr, ton, country, short_max, False)
        slow = numbers._normalise(addr, ton, country, short_max, False, fast=False)
        assert fast == slow

    @settings(max_examples=1500)
    @given(form=near_forms(), short_max=st.sampled_from([6, 8, 10, 12]))
    def test_other_digit_strings_read_as_phonenumbers_reads_them(
        self, form: tuple[str, int, str], short_max: int
    ) -> None:
        """Digit strings of other lengths, prefixes, TONs and regions normalise alike too."""
        addr, ton, country = form
        fast = numbers._normalise(addr, ton, country, short_max, False)
        slow = numbers._normalise(addr, ton, country, short_max, False, fast=False)
        assert fast == slow

    @pytest.mark.parametrize(
        ("addr", "ton", "country"),
        [("+12025550123", 0, "GB"), ("12025550123", 1, "US"), ("2025550123", 2, "US")],
    )
    def test_the_fast_path_answers_valid_numbers(self, addr: str, ton: int, country: str) -> None:
        """A valid number of each form is answered by the fast path, as the full path would."""
        assert numbers._fast_nanp(addr.lstrip("+"), addr.startswith("+"), ton, country)
        assert numbers._normalise(addr, ton, country, 8, False) == SmsAddress(
            kind=E164, value="12025550123"
        )

    @pytest.mark.parametrize(
        ("digits", "plus", "ton", "country"),
        [
            ("12025550123", False, 0, "US"),  # eleven digits, national reading first
            ("2025550123", False, 2, "CA"),  # another default country
            ("2025550123", False, 5, "US"),  # alphanumeric TON: full path
            ("11025550123", True, 0, "US"),  # area code starting 1
            ("15550100000", True, 0, "US"),  # the right form, but no valid number
        ],
    )
    def test_other_forms_take_the_full_path(
        self, digits: str, plus: bool, ton: int, country: str
    ) -> None:
        """Forms outside the fast path's, and invalid numbers, are left to phonenumbers."""
        assert numbers._fast_nanp(digits, plus, ton, country) is False
