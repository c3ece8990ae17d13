"""The PROXY protocol parser: the spec's examples, every way of cutting a header into reads,
garbage refused with the parser's own error only, and the octets after a header left alone."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxyproto.header import (
    MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Endpoint,
    ProxyHeader,
    ProxyHeaderError,
    parse,
)
from tests.support.proxyproto import SIG, tlv, v2, v2_tcp4, v2_tcp6

# SMPP octets a header precedes: a bind_transceiver's header (command_length 23 and id 9).
BIND = bytes.fromhex("00000017000000090000000000000001") + b"acme\x00pw\x00\x00\x34\x00\x00\x00"


GOLDEN: list[tuple[bytes, ProxyHeader]] = [
    # Section 2.1's example line, and its longest forms.
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(1, Endpoint("192.168.0.1", 56324), Endpoint("192.168.0.11", 443), 47),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyHeader(1, Endpoint("255.255.255.255", 65535), Endpoint("255.255.255.255", 65535), 56),
    ),
    (
        b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
        ProxyHeader(
            1,
            Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            104,
        ),
    ),
    (
        b"PROXY TCP6 2001:DB8::1 ::ffff:192.0.2.7 0 2775\r\n",
        ProxyHeader(1, Endpoint("2001:db8::1", 0), Endpoint("::ffff:c000:207", 2775), 48),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None, 15)),
    (
        b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
        ProxyHeader(1, None, None, 107),
    ),
    # Section 2.2: TCP over IPv4 (12 address octets), over IPv6 (36), LOCAL, AF_UNSPEC.
    (
        SIG + b"\x21\x11\x00\x0c" + b"\xc0\xa8\x00\x01\xc0\xa8\x00\x0b" + b"\xdc\x04\x01\xbb",
        ProxyHeader(2, Endpoint("192.168.0.1", 56324), Endpoint("192.168.0.11", 443), 28),
    ),
    (
        SIG
        + b"\x21\x21\x00\x24"
        + bytes.fromhex("20010db8000000000000000000000001")
        + bytes.fromhex("20010db8000000000000000000000002")
        + b"\x04\xd2\x0a\xd7",
        ProxyHeader(2, Endpoint("2001:db8::1", 1234), Endpoint("2001:db8::2", 2775), 52),
    ),
    (SIG + b"\x20\x00\x00\x00", ProxyHeader(2, None, None, 16)),
    # LOCAL must skip what its length says, whatever the family (a health check's addresses).
    (SIG + b"\x20\x11\x00\x0c" + bytes(12), ProxyHeader(2, None, None, 28)),
    (SIG + b"\x21\x00\x00\x03abc", ProxyHeader(2, None, None, 19)),
    # TLVs after the addresses are skipped within the declared length (ALPN, NOOP, SSL).
    (
        v2_tcp4("10.1.2.3", "10.0.0.9", 40000, 2775)[:14]
        + struct.pack("!H", 12 + 3 + 4 + 3 + 0 + 3 + 5)
        + bytes([10, 1, 2, 3, 10, 0, 0, 9])
        + struct.pack("!HH", 40000, 2775)
        + tlv(0x01, b"smpp")
        + tlv(0x04, b"")
        + tlv(0x20, b"\x01\x00\x00\x00\x00"),
        ProxyHeader(2, Endpoint("10.1.2.3", 40000), Endpoint("10.0.0.9", 2775), 16 + 30),
    ),
]

INVALID = [
    b"\x00\x00\x00\x17\x00\x00\x00\x09",  # a bind sent straight to a PROXY listener
    b"GET / HTTP/1.1\r\n",
    b"PROXY\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF alone
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",  # CR alone
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",  # two spaces
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # a leading zero (octal?)
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family and addresses disagree
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # a scope is no canonical address
    b"PROXY TCP4 \xd9\xa1.2.3.4 5.6.7.8 1 2\r\n",  # not ASCII
    b"PROXY UNKNOWN" + b" " * (V1_MAX_LENGTH - 13),  # no CRLF within 107 octets
    SIG + b"\x11\x11\x00\x0c",  # version 1 in the binary form
    SIG + b"\x22\x11\x00\x0c",  # command 2
    SIG + b"\x21\x41\x00\x0c",  # family 4
    SIG + b"\x21\x13\x00\x0c",  # protocol 3
    SIG + b"\x21\x12\x00\x0c" + bytes(12),  # UDP
    SIG + b"\x21\x31\x00\xd8" + bytes(216),  # UNIX stream
    SIG + b"\x21\x10\x00\x0c" + bytes(12),  # IPv4, protocol unspecified
    SIG + b"\x21\x11\x00\x08" + bytes(8),  # too short for two addresses and ports
    SIG + b"\x21\x21\x00\x0c" + bytes(12),
    SIG + b"\x21\x11" + struct.pack("!H", MAX_V2_LENGTH + 1),  # refused before it arrives
    SIG + b"\x21\x11\x00\x0e" + bytes(12) + b"\x04\x00",  # a TLV cut short
    SIG + b"\x21\x11\x00\x10" + bytes(12) + b"\x04\x00\x05\x00",  # a TLV beyond the length
]


def first_header(chunks: list[bytes]) -> tuple[ProxyHeader | None, bytes]:
    """What a connection reading ``chunks`` gets: the first header parsed, and the octets it
    has buffered (the header's and what came after it)."""
    buffered = bytearray()
    for chunk in chunks:
        buffered += chunk
        header = parse(buffered)
        if header is not None:
            return header, bytes(buffered)
    return None, bytes(buffered)


class TestGolden:
    @pytest.mark.parametrize(("octets", "expected"), GOLDEN)
    def test_spec_examples(self, octets: bytes, expected: ProxyHeader) -> None:
        """Each header of the spec's forms parses to its addresses, ports and length."""
        assert parse(octets) == expected
        assert parse(octets + BIND) == expected

    @pytest.mark.parametrize("octets", INVALID)
    def test_invalid_headers_are_refused(self, octets: bytes) -> None:
        """Each malformed or unsupported header raises ProxyHeaderError, also with more
        octets after it (the error does not wait for them)."""
        with pytest.raises(ProxyHeaderError):
            parse(octets)
        with pytest.raises(ProxyHeaderError):
            parse(octets + BIND)

    def test_signature_is_the_spec_one(self) -> None:
        """The module's v2 signature is the 12 octets of section 2.2."""
        assert V2_SIGNATURE == SIG

    def test_local_and_unknown_mean_the_connection_itself(self) -> None:
        """LOCAL, UNKNOWN and AF_UNSPEC headers carry no addresses: ``local`` is true."""
        for octets in (b"PROXY UNKNOWN\r\n", SIG + b"\x20\x00\x00\x00", SIG + b"\x21\x00\x00\x00"):
            header = parse(octets)
            assert header is not None
            assert header.local
        header = parse(v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2))
        assert header is not None
        assert not header.local

    def test_refused_at_the_first_octet_that_cannot_fit(self) -> None:
        """A stream that starts neither form is refused at once; a prefix of either is not."""
        for prefix in (b"", b"P", b"PROXY", b"PROXY T", SIG[:1], SIG[:11], SIG, SIG + b"\x21"):
            assert parse(prefix) is None
        for octets in (b"\x00", b"X", b"PROXX", b"\r\n\r\n\x01", SIG[:11] + b"\x00"):
            with pytest.raises(ProxyHeaderError):
                parse(octets)

    def test_every_split_of_the_golden_headers(self) -> None:
        """Cut into two reads anywhere, each golden header (and the bind after it) gives the
        same header, and nothing before its last octet."""
        for octets, expected in GOLDEN:
            stream = octets + BIND
            for cut in range(len(stream) + 1):
                header, buffered = first_header([stream[:cut], stream[cut:]])
                assert header == expected
                assert buffered[header.consumed :] == stream[expected.consumed : len(buffered)]
            for size in range(expected.consumed):
                assert parse(octets[:size]) is None


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A valid header of any supported kind, with addresses and TLVs drawn at random."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-local"]))
    if kind == "v1-4":
        a, b = draw(ipv4), draw(ipv4)
        return f"PROXY TCP4 {a} {b} {draw(ports)} {draw(ports)}\r\n".encode()
    if kind == "v1-6":
        a, b = draw(ipv6), draw(ipv6)
        return f"PROXY TCP6 {a} {b} {draw(ports)} {draw(ports)}\r\n".encode()
    if kind == "v1-unknown":
        # Anything after a space, up to the CRLF, is ignored (CR and LF alone end no line).
        rest = draw(st.binary(max_size=V1_MAX_LENGTH - 16).filter(lambda b: not set(b) & {13, 10}))
        return b"PROXY UNKNOWN" + (b" " + rest if rest else b"") + b"\r\n"
    tlvs = b"".join(
        tlv(t, v)
        for t, v in draw(
            st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4)
        )
    )
    if kind == "v2-4":
        return v2_tcp4(draw(ipv4), draw(ipv4), draw(ports), draw(ports), tlvs)
    if kind == "v2-6":
        return v2_tcp6(draw(ipv6), draw(ipv6), draw(ports), draw(ports), tlvs)
    return v2(0x0, draw(st.integers(0, 255)), draw(st.binary(max_size=64)))


class TestProperties:
    @given(headers(), st.binary(max_size=64), st.data())
    def test_any_split_into_reads_gives_the_same_header(
        self, header: bytes, after: bytes, data: st.DataObject
    ) -> None:
        """A valid header and what follows it, cut into any reads, parse to the header the
        whole gives, at the read that completes it."""
        stream = header + after
        whole = parse(stream)
        assert whole is not None
        assert whole.consumed == len(header)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        got, buffered = first_header(chunks)
        assert got == whole
        assert len(buffered) >= len(header)

    @given(headers(), st.binary(max_size=256))
    def test_octets_after_the_header_are_the_sessions(self, header: bytes, after: bytes) -> None:
        """Whatever follows a header is left as it came: ``consumed`` ends where it starts."""
        parsed = parse(header + after)
        assert parsed is not None
        assert (header + after)[parsed.consumed :] == after

    @given(headers())
    def test_addresses_round_trip(self, header: bytes) -> None:
        """The addresses of a parsed header are the ones written, in compressed form."""
        parsed = parse(header)
        assert parsed is not None
        if header.startswith(b"PROXY TCP"):
            _, _, src, dst, sport, dport = header[:-2].decode().split(" ")
            assert parsed.source == Endpoint(str(ipaddress.ip_address(src)), int(sport))
            assert parsed.destination == Endpoint(str(ipaddress.ip_address(dst)), int(dport))

    @given(st.binary(max_size=300))
    def test_garbage_raises_only_the_parsers_error(self, octets: bytes) -> None:
        """Random octets give None, a header, or ProxyHeaderError; nothing else escapes."""
        with contextlib.suppress(ProxyHeaderError):
            parse(octets)

    @given(
        st.sampled_from([SIG, b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN"]),
        st.binary(max_size=200),
    )
    def test_garbage_after_a_valid_start(self, start: bytes, octets: bytes) -> None:
        """Random octets after a real signature or v1 prefix reach the deeper checks and
        still only give None, a header consistent with the input, or ProxyHeaderError."""
        try:
            header = parse(start + octets)
        except ProxyHeaderError:
            return
        if header is not None:
            assert header.consumed <= len(start + octets)

    @given(st.binary(min_size=1, max_size=200))
    def test_more_octets_never_change_a_verdict(self, octets: bytes) -> None:
        """Once a prefix parses or is refused, longer input says the same (the connection
        may act on the first read that decides)."""
        for size in range(len(octets) + 1):
            try:
                early = parse(octets[:size])
            except ProxyHeaderError:
                with pytest.raises(ProxyHeaderError):
                    parse(octets)
                return
            if early is not None:
                assert parse(octets) == early
                return


class TestFuzzTarget:
    def test_corpus_seeds_parse(self) -> None:
        """The fuzz target's seeds are headers the parser takes (and one that is not)."""
        from fuzz.seed import proxy_header_seeds, vectors
        from fuzz.targets import split_input

        for name, data in proxy_header_seeds(vectors()).items():
            stream = split_input(data)[2]
            if name == "seed-no-header":
                with pytest.raises(ProxyHeaderError):
                    parse(stream)
            else:
                assert parse(stream) is not None, name

    def test_the_target_catches_a_parser_that_changes_its_mind(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The fuzz target's checks bite: a parser that answers a header early and an error
        for the whole stream fails it."""
        from fuzz import targets
        from fuzz.targets import PropertyError, join_input

        def fickle(octets: bytes) -> ProxyHeader | None:
            if len(octets) > 20:
                raise ProxyHeaderError("changed its mind")
            return ProxyHeader(1, None, None, 15) if len(octets) >= 15 else None

        monkeypatch.setattr(targets, "parse", fickle)
        with pytest.raises(PropertyError, match="early"):
            targets.proxy_header_target(join_input(0, [15], b"PROXY UNKNOWN\r\n" + bytes(20)))
