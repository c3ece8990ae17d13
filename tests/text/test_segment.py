"""Splitting into parts, framing parts for the wire, and reassembling them."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text import gsm7
from gateway.text.dcs import Alphabet, decode_as
from gateway.text.gsm7 import TextEncodeError, TextError
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    MAX_PARTS,
    PAYLOAD,
    SAR,
    AddStatus,
    Assembly,
    ConcatKind,
    Reassembler,
    SegmentError,
    capacity,
    count_segments,
    frame_parts,
    split,
    text_len,
)
from gateway.text.udh import EMPTY_UDH, Concat, InformationElement, Udh, parse_udh

GSM_CHARS = gsm7.decode(bytes(i for i in range(128) if i != gsm7.ESCAPE)) + "€{}[]~|^\\\x0c"
PORT16 = Udh(elements=(InformationElement(iei=0x05, data=bytes.fromhex("0B8423F0")),))
PORT8 = Udh(elements=(InformationElement(iei=0x04, data=bytes.fromhex("0102")),))

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=700)
# Heavy on escapes, emoji, combining marks, flags and ZWJ sequences: the hard cut points.
tricky = st.sampled_from(["€", "{", "😀", "\u0301", "🇫", "🇷", "\u200d", "\ufe0f", "\U0001f3fd"])
ucs2_text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=["Cs"]), tricky), max_size=400
)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=600)
udh_kinds = st.sampled_from([CONCAT_8BIT, CONCAT_16BIT, SAR])
extra_udhs = st.sampled_from([EMPTY_UDH, PORT16, PORT8])


def units(body: bytes, alphabet: Alphabet) -> int:
    return len(body) // 2 if alphabet is Alphabet.UCS2 else len(body)


def check_split(text: str, alphabet: Alphabet, kind: ConcatKind, extra: Udh) -> list[bytes]:
    parts = split(text, alphabet, kind, extra)
    multipart = len(parts) > 1
    cap = capacity(alphabet, kind, multipart=multipart, extra_udh=extra)
    decoded = [decode_as(p, alphabet) for p in parts]
    assert "".join(d or "" for d in decoded) == text  # each part decodes alone: nothing cut
    assert all(units(p, alphabet) <= cap for p in parts)
    assert all(p for p in parts) or parts == [b""]
    return parts


class TestCapacity:
    @pytest.mark.parametrize(
        ("alphabet", "kind", "multipart", "expected"),
        [
            (Alphabet.GSM7, CONCAT_8BIT, False, 160),
            (Alphabet.GSM7, CONCAT_8BIT, True, 153),
            (Alphabet.GSM7, CONCAT_16BIT, True, 152),
            (Alphabet.GSM7, SAR, True, 152),
            (Alphabet.LATIN1, CONCAT_8BIT, False, 140),
            (Alphabet.LATIN1, CONCAT_8BIT, True, 134),
            (Alphabet.IA5, CONCAT_16BIT, True, 133),
            (Alphabet.UCS2, CONCAT_8BIT, False, 70),
            (Alphabet.UCS2, CONCAT_8BIT, True, 67),
            (Alphabet.UCS2, CONCAT_16BIT, True, 66),
        ],
    )
    def test_standard_capacities(
        self, alphabet: Alphabet, kind: ConcatKind, multipart: bool, expected: int
    ) -> None:
        """The per-part capacities are 160/153/152 septets, 140/134/133 octets, 70/67/66 units."""
        assert capacity(alphabet, kind, multipart=multipart) == expected

    def test_other_elements_reduce_capacity(self) -> None:
        """A 16-bit port element (6 octets) beside an 8-bit concat makes a 12-octet UDH."""
        assert capacity(Alphabet.GSM7, CONCAT_8BIT, multipart=True, extra_udh=PORT16) == 146
        assert capacity(Alphabet.GSM7, CONCAT_8BIT, multipart=False, extra_udh=PORT16) == 152
        assert capacity(Alphabet.LATIN1, CONCAT_8BIT, multipart=True, extra_udh=PORT16) == 128
        assert capacity(Alphabet.UCS2, CONCAT_8BIT, multipart=True, extra_udh=PORT16) == 64

    def test_concat_element_in_extra_udh_is_not_counted_twice(self) -> None:
        """Passing the original UDH (with its concat element) counts only its other elements."""
        original = PORT16.with_concat(Concat(reference=1, total=2, seq=1))
        assert capacity(Alphabet.GSM7, CONCAT_8BIT, multipart=True, extra_udh=original) == 146

    def test_binary_has_no_text_capacity(self) -> None:
        """Binary is never split as text."""
        with pytest.raises(TextError):
            capacity(Alphabet.BINARY, multipart=False)
        with pytest.raises(TextError):
            split("x", Alphabet.UNKNOWN)


class TestGolden:
    def test_160_gsm_characters_stay_one_part(self) -> None:
        """160 septets fit one part without a UDH."""
        assert split("a" * 160, Alphabet.GSM7) == [b"a" * 160]

    def test_161_gsm_characters_become_153_and_8(self) -> None:
        """161 septets become two parts of 153 and 8."""
        assert [len(p) for p in split("a" * 161, Alphabet.GSM7)] == [153, 8]

    def test_escape_at_position_153_moves_to_the_next_part(self) -> None:
        """A euro sign as the 153rd character would straddle the cut, so it opens part two."""
        text = "a" * 152 + "€" + "b" * 10
        parts = split(text, Alphabet.GSM7)
        assert parts[0] == b"a" * 152
        assert parts[1] == b"\x1b\x65" + b"b" * 10

    def test_escape_fits_exactly(self) -> None:
        """An escape pair ending on septet 153 stays in part one."""
        parts = split("a" * 151 + "€" + "b" * 10, Alphabet.GSM7)
        assert len(parts[0]) == 153
        assert parts[0].endswith(b"\x1b\x65")

    def test_extension_characters_count_double_for_one_part(self) -> None:
        """80 euro signs are 160 septets (one part); 81 need two."""
        assert len(split("€" * 80, Alphabet.GSM7)) == 1
        assert [len(p) for p in split("€" * 81, Alphabet.GSM7)] == [152, 10]

    def test_emoji_at_the_ucs2_boundary(self) -> None:
        """A surrogate pair that would straddle unit 67 opens the second part."""
        text = "a" * 66 + "😀" + "b" * 10
        parts = split(text, Alphabet.UCS2)
        assert parts[0] == "a".encode("utf-16-be") * 66
        assert parts[1].startswith(bytes.fromhex("D83DDE00"))

    def test_combining_sequence_is_kept_whole(self) -> None:
        """An accent that would start part two takes its base letter with it."""
        text = "a" * 66 + "e\u0301" + "b" * 10
        parts = split(text, Alphabet.UCS2)
        assert decode_as(parts[1], Alphabet.UCS2) == "e\u0301" + "b" * 10

    def test_flag_is_kept_whole(self) -> None:
        """A regional-indicator pair (a flag) is not cut in the middle."""
        text = "a" * 65 + "🇫🇷" + "b" * 10
        parts = split(text, Alphabet.UCS2)
        assert decode_as(parts[0], Alphabet.UCS2) == "a" * 65
        assert decode_as(parts[1], Alphabet.UCS2) == "🇫🇷" + "b" * 10

    def test_long_combining_run_is_cut_anyway(self) -> None:
        """A combining run longer than a part still splits, on code-point boundaries."""
        text = "a" + "\u0301" * 200
        check_split(text, Alphabet.UCS2, CONCAT_8BIT, EMPTY_UDH)

    def test_70_ucs2_units_stay_one_part(self) -> None:
        """70 UCS-2 units fit one part; 71 become 67 + 4."""
        assert len(split("ж" * 70, Alphabet.UCS2)) == 1
        assert [len(p) // 2 for p in split("ж" * 71, Alphabet.UCS2)] == [67, 4]

    def test_empty_text_is_one_empty_part(self) -> None:
        """An empty message is one empty part."""
        assert split("", Alphabet.GSM7) == [b""]

    def test_unencodable_raises(self) -> None:
        """A character the alphabet lacks raises TextEncodeError, naming where."""
        with pytest.raises(TextEncodeError) as info:
            split("ab😀", Alphabet.GSM7)
        assert info.value.position == 2
        with pytest.raises(TextEncodeError):
            split("é", Alphabet.IA5)
        with pytest.raises(TextEncodeError):
            text_len("€", Alphabet.LATIN1)

    def test_too_many_parts_raises(self) -> None:
        """More than 255 parts cannot be numbered."""
        assert len(split("a" * 153 * MAX_PARTS, Alphabet.GSM7)) == MAX_PARTS
        with pytest.raises(SegmentError):
            split("a" * (153 * MAX_PARTS + 1), Alphabet.GSM7)

    def test_payload_is_one_body(self) -> None:
        """message_payload carries the whole text in one body, up to 65535 octets."""
        assert split("a" * 1000, Alphabet.GSM7, PAYLOAD) == [b"a" * 1000]
        assert count_segments("a" * 1000, Alphabet.GSM7, PAYLOAD) == 7
        with pytest.raises(SegmentError):
            split("a" * 0x10000, Alphabet.LATIN1, PAYLOAD)

    def test_udh_too_big_for_text_raises(self) -> None:
        """Other elements that leave no room in a part raise SegmentError."""
        huge = Udh(elements=(InformationElement(iei=0x20, data=bytes(130)),))
        with pytest.raises(SegmentError):
            split("a" * 20, Alphabet.UCS2, CONCAT_8BIT, huge)


class TestSplitProperties:
    @given(gsm_text, udh_kinds, extra_udhs)
    def test_gsm(self, text: str, kind: ConcatKind, extra: Udh) -> None:
        """GSM parts fit their capacity, never cut an escape pair, and rejoin to the text."""
        check_split(text, Alphabet.GSM7, kind, extra)

    @given(ucs2_text, udh_kinds, extra_udhs)
    def test_ucs2(self, text: str, kind: ConcatKind, extra: Udh) -> None:
        """UCS-2 parts fit their capacity, never cut a surrogate pair, and rejoin to the text."""
        check_split(text, Alphabet.UCS2, kind, extra)

    @given(latin1_text, udh_kinds, extra_udhs)
    def test_latin1(self, text: str, kind: ConcatKind, extra: Udh) -> None:
        """Latin-1 parts fit 140 / 134 / 133 octets and rejoin to the text."""
        check_split(text, Alphabet.LATIN1, kind, extra)

    @given(gsm_text)
    def test_parts_are_full_but_for_the_last(self, text: str) -> None:
        """Without combining marks, every part but the last is within one septet of full."""
        parts = split(text, Alphabet.GSM7)
        if len(parts) > 1:
            assert all(len(p) >= 152 for p in parts[:-1])
        assert len(parts) == count_segments(text, Alphabet.GSM7)


class TestFrameParts:
    def test_udh_8bit_parts(self) -> None:
        """Each part gets UDHI and 05 00 03 ref total seq in front of its body."""
        parts = frame_parts([b"aa", b"bb", b"c"], CONCAT_8BIT, reference=0x42)
        assert [p.short_message for p in parts] == [
            bytes.fromhex("0500034203") + b"\x01aa",
            bytes.fromhex("0500034203") + b"\x02bb",
            bytes.fromhex("0500034203") + b"\x03c",
        ]
        assert all(p.udhi and p.sar is None for p in parts)

    def test_udh_16bit_keeps_other_elements_in_place(self) -> None:
        """The original UDH's concat element is replaced in place; the port element stays."""
        original = Udh(elements=(Concat(reference=1, total=9, seq=9).to_element(),)).to_bytes()
        udh, _ = parse_udh(original)
        udh = Udh(elements=(*udh.elements, *PORT16.elements))
        parts = frame_parts([b"x", b"y"], CONCAT_16BIT, reference=0x1234, extra_udh=udh)
        head, body = parse_udh(parts[1].short_message)
        assert body == b"y"
        assert [ie.iei for ie in head.elements] == [0x08, 0x05]
        assert head.concat == Concat(reference=0x1234, total=2, seq=2, ref_bits=16)

    def test_sar_parts(self) -> None:
        """SAR parts carry sar_* values and no concat element; other elements stay in a UDH."""
        parts = frame_parts([b"x", b"y"], SAR, reference=0xABCD, extra_udh=PORT8)
        assert [p.sar.sar_segment_seqnum if p.sar else 0 for p in parts] == [1, 2]
        assert parts[0].sar is not None
        assert parts[0].sar.sar_msg_ref_num == 0xABCD
        assert parts[0].short_message == PORT8.to_bytes() + b"x"
        assert parts[0].udhi

    def test_single_part_has_no_concatenation(self) -> None:
        """A message that fits one part gets no concat element and no SAR values."""
        (part,) = frame_parts([b"hello"], CONCAT_8BIT, reference=7)
        assert part.short_message == b"hello"
        assert not part.udhi
        assert part.sar is None
        (part,) = frame_parts([b"hello"], SAR, reference=7, extra_udh=PORT8)
        assert part.short_message == PORT8.to_bytes() + b"hello"
        assert part.sar is None

    def test_payload(self) -> None:
        """message_payload holds the body (after any other elements); short_message is empty."""
        (part,) = frame_parts([b"long"], PAYLOAD, reference=0)
        assert part.message_payload == b"long"
        assert part.short_message == b""
        with pytest.raises(SegmentError):
            frame_parts([b"a", b"b"], PAYLOAD, reference=0)

    def test_errors(self) -> None:
        """No parts, too many parts, or a reference beyond its bits are refused."""
        with pytest.raises(SegmentError):
            frame_parts([], CONCAT_8BIT, reference=0)
        with pytest.raises(SegmentError):
            frame_parts([b"a"] * 256, CONCAT_8BIT, reference=0)
        with pytest.raises(TextError):
            frame_parts([b"a", b"b"], CONCAT_8BIT, reference=256)


class TestReassembler:
    def test_out_of_order_parts_complete(self) -> None:
        """Parts arriving in any order complete the message in sequence order."""
        r: Reassembler[int] = Reassembler()
        key = ("s1", "111", "222", 5)
        assert r.add(key, seq=2, total=3, body=b"b", now=0, context=20).status is AddStatus.PENDING
        assert r.add(key, seq=3, total=3, body=b"c", now=1, context=30).status is AddStatus.PENDING
        done = r.add(key, seq=1, total=3, body=b"a", now=2, context=10)
        assert done.status is AddStatus.COMPLETE
        assert done.assembly is not None
        assert done.assembly.body == b"abc"
        assert [f.context for f in done.assembly.fragments] == [10, 20, 30]
        assert done.assembly.complete
        assert (len(r), r.parts_held, r.bytes_held) == (0, 0, 0)

    def test_duplicate_is_ignored(self) -> None:
        """The same part twice is reported DUPLICATE and held once."""
        r: Reassembler[None] = Reassembler()
        r.add(("k",), seq=1, total=2, body=b"a", now=0, context=None)
        dup = r.add(("k",), seq=1, total=2, body=b"a", now=1, context=None)
        assert dup.status is AddStatus.DUPLICATE
        assert r.parts_held == 1
        done = r.add(("k",), seq=2, total=2, body=b"b", now=2, context=None)
        assert done.assembly is not None
        assert done.assembly.body == b"ab"

    def test_keys_are_separate(self) -> None:
        """The same reference from two sessions is two messages."""
        r: Reassembler[None] = Reassembler()
        r.add(("s1", 7), seq=1, total=2, body=b"A", now=0, context=None)
        r.add(("s2", 7), seq=1, total=2, body=b"X", now=0, context=None)
        done = r.add(("s2", 7), seq=2, total=2, body=b"Y", now=0, context=None)
        assert done.assembly is not None
        assert done.assembly.body == b"XY"
        assert len(r) == 1

    def test_reused_key_supersedes_the_old_message(self) -> None:
        """A different total, or a different body for a held seq, starts a new message."""
        r: Reassembler[None] = Reassembler()
        r.add(("k",), seq=1, total=2, body=b"old", now=0, context=None)
        res = r.add(("k",), seq=1, total=3, body=b"new", now=1, context=None)
        assert res.status is AddStatus.PENDING
        assert res.superseded is not None
        assert res.superseded.body == b"old"
        assert res.evicted == ()
        res = r.add(("k",), seq=1, total=3, body=b"newer", now=2, context=None)
        assert res.superseded is not None
        assert res.superseded.body == b"new"
        assert not res.superseded.complete
        assert r.parts_held == 1

    def test_single_part_completes_at_once(self) -> None:
        """total == 1 completes without being held."""
        r: Reassembler[None] = Reassembler()
        res = r.add(("k",), seq=1, total=1, body=b"x", now=0, context=None)
        assert res.status is AddStatus.COMPLETE
        assert len(r) == 0

    @pytest.mark.parametrize(("seq", "total"), [(0, 2), (3, 2), (1, 0), (1, 256)])
    def test_bad_numbering_is_rejected(self, seq: int, total: int) -> None:
        """Sequence numbers outside 1..total, or totals outside 1..255, are not held."""
        r: Reassembler[None] = Reassembler()
        res = r.add(("k",), seq=seq, total=total, body=b"x", now=0, context=None)
        assert res.status is AddStatus.REJECTED
        assert len(r) == 0

    def test_expire_returns_old_messages(self) -> None:
        """Messages whose first part is max_age_s old are dropped and returned, oldest first."""
        r: Reassembler[None] = Reassembler(max_age_s=10)
        r.add(("a",), seq=1, total=2, body=b"a", now=0, context=None)
        r.add(("b",), seq=1, total=2, body=b"b", now=5, context=None)
        assert r.next_deadline() == 10
        assert r.expire(9.9) == []
        expired = r.expire(10)
        assert [a.key for a in expired] == [("a",)]
        assert r.next_deadline() == 15
        assert [a.key for a in r.expire(100)] == [("b",)]
        assert r.next_deadline() is None

    def test_bound_on_parts_evicts_oldest(self) -> None:
        """Over max_parts, the oldest incomplete messages are evicted and returned."""
        r: Reassembler[None] = Reassembler(max_parts=2)
        r.add(("a",), seq=1, total=3, body=b"a", now=0, context=None)
        r.add(("b",), seq=1, total=3, body=b"b", now=1, context=None)
        res = r.add(("c",), seq=1, total=3, body=b"c", now=2, context=None)
        assert res.status is AddStatus.PENDING
        assert [a.key for a in res.evicted] == [("a",)]
        assert r.parts_held == 2

    def test_bound_on_bytes_can_reject_the_message_itself(self) -> None:
        """A message that alone outgrows max_bytes is dropped: its held parts are returned
        evicted, and the part that did not fit is REJECTED (not held)."""
        r: Reassembler[None] = Reassembler(max_bytes=10)
        assert r.add(("k",), seq=1, total=3, body=b"x" * 11, now=0, context=None).status is (
            AddStatus.REJECTED
        )
        r.add(("k",), seq=1, total=3, body=b"x" * 6, now=0, context=None)
        res = r.add(("k",), seq=2, total=3, body=b"y" * 6, now=0, context=None)
        assert res.status is AddStatus.REJECTED
        assert [a.body for a in res.evicted] == [b"x" * 6]
        assert (len(r), r.bytes_held) == (0, 0)

    def test_discard_by_predicate(self) -> None:
        """discard drops every message whose key matches, e.g. a closed session's."""
        r: Reassembler[None] = Reassembler()
        r.add(("s1", 1), seq=1, total=2, body=b"a", now=0, context=None)
        r.add(("s2", 1), seq=1, total=2, body=b"b", now=0, context=None)
        gone = r.discard(lambda k: k[0] == "s1")
        assert [a.key for a in gone] == [("s1", 1)]
        assert len(r) == 1

    def test_escape_split_by_a_careless_peer_is_healed(self) -> None:
        """Decoding the joined bodies repairs an escape pair cut across two parts."""
        r: Reassembler[None] = Reassembler()
        r.add(("k",), seq=1, total=2, body=b"price 5\x1b", now=0, context=None)
        done = r.add(("k",), seq=2, total=2, body=b"\x65 STOP", now=0, context=None)
        assert done.assembly is not None
        assert done.assembly.text(Alphabet.GSM7) == "price 5€ STOP"

    @given(
        st.one_of(
            st.tuples(gsm_text, st.just(Alphabet.GSM7)),
            st.tuples(ucs2_text, st.just(Alphabet.UCS2)),
        ),
        udh_kinds,
        st.randoms(use_true_random=False),
    )
    def test_split_then_reassemble(
        self, case: tuple[str, Alphabet], kind: ConcatKind, rnd: random.Random
    ) -> None:
        """Splitting, framing, shuffling, parsing and reassembling gives the text back."""
        text, alphabet = case
        parts = frame_parts(split(text, alphabet, kind), kind, reference=200)
        rnd.shuffle(parts)
        r: Reassembler[None] = Reassembler()
        results = []
        for p in parts:
            if p.sar is not None:
                c = p.sar.to_concat()
                body = p.short_message
            elif p.udhi:
                udh, body = parse_udh(p.short_message)
                assert udh.concat is not None
                c = udh.concat
            else:
                c, body = Concat(reference=0, total=1, seq=1), p.short_message
            results.append(
                r.add(("s", c.reference), seq=c.seq, total=c.total, body=body, now=0, context=None)
            )
        last = results[-1]
        assert last.status is AddStatus.COMPLETE
        assert last.assembly is not None
        assert last.assembly.text(alphabet) == text
        assert all(x.status is AddStatus.PENDING for x in results[:-1])


class TestReassemblerHold:
    """What the footer stage needs of the Reassembler: room made first, originals, views."""

    def test_room_is_made_before_adding(self) -> None:
        """At max_messages, a new message evicts the oldest before it is held."""
        r: Reassembler[str] = Reassembler(max_messages=2)
        r.add(("a",), seq=1, total=2, body=b"a", now=0, context="a1")
        r.add(("b",), seq=1, total=2, body=b"b", now=1, context="b1")
        res = r.add(("c",), seq=1, total=2, body=b"c", now=2, context="c1")
        assert res.status is AddStatus.PENDING
        assert [a.key for a in res.evicted] == [("a",)]
        assert len(r) == 2
        more = r.add(("b",), seq=2, total=3, body=b"x", now=3, context="b2")  # other total
        assert more.superseded is not None
        assert more.superseded.key == ("b",)
        assert more.evicted == ()

    def test_last_part_needs_no_room(self) -> None:
        """The part that completes a message is never refused for the bounds."""
        r: Reassembler[None] = Reassembler(max_bytes=4)
        r.add(("k",), seq=1, total=2, body=b"abc", now=0, context=None)
        res = r.add(("k",), seq=2, total=2, body=b"def", now=0, context=None)
        assert res.status is AddStatus.COMPLETE
        assert res.evicted == ()

    def test_duplicate_returns_the_held_fragment(self) -> None:
        """A copy of a held part gets the original's fragment (and so its context) back."""
        r: Reassembler[str] = Reassembler()
        r.add(("k",), seq=1, total=2, body=b"a", now=0, context="first")
        dup = r.add(("k",), seq=1, total=2, body=b"a", now=1, context="copy")
        assert dup.status is AddStatus.DUPLICATE
        assert dup.held is not None
        assert dup.held.context == "first"

    def test_views_and_pop(self) -> None:
        """get and contexts read without removing; pop removes one message."""
        r: Reassembler[str] = Reassembler()
        r.add(("a",), seq=2, total=3, body=b"a2", now=0, context="a2")
        r.add(("a",), seq=1, total=3, body=b"a1", now=0, context="a1")
        r.add(("b",), seq=1, total=2, body=b"b1", now=1, context="b1")
        held = r.get(("a",))
        assert held is not None
        assert [f.seq for f in held.fragments] == [1, 2]
        assert sorted(r.contexts()) == ["a1", "a2", "b1"]
        assert ("a",) in r
        assert (len(r), r.parts_held, r.bytes_held) == (2, 3, 6)
        popped = r.pop(("a",))
        assert popped is not None
        assert popped.body == b"a1a2"
        assert r.pop(("a",)) is None
        assert r.get(("a",)) is None
        assert (len(r), r.parts_held, r.bytes_held) == (1, 1, 2)

    def test_deadline_is_fixed_per_message(self) -> None:
        """New limits apply to messages from then on; held ones keep their deadline."""
        r: Reassembler[None] = Reassembler(max_age_s=10)
        r.add(("a",), seq=1, total=2, body=b"a", now=0, context=None)
        r.set_limits(max_parts=None, max_bytes=100, max_age_s=30, max_messages=None)
        r.add(("b",), seq=1, total=2, body=b"b", now=1, context=None)
        held = r.get(("b",))
        assert held is not None
        assert held.deadline == 31
        assert r.next_deadline() == 10
        assert [a.key for a in r.expire(10)] == [("a",)]
        assert r.expire(30.9) == []
        assert [a.key for a in r.expire(31)] == [("b",)]

    def test_bad_limits_are_refused(self) -> None:
        """Bounds must be positive."""
        with pytest.raises(ValueError, match="positive"):
            Reassembler(max_messages=0)
        with pytest.raises(ValueError, match="positive"):
            Reassembler(max_bytes=0)

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "add", "add", "add", "tick", "pop", "discard"]),
                st.integers(0, 4),  # key (for "tick": seconds)
                st.integers(1, 4),  # seq
                st.integers(1, 4),  # total
                st.integers(0, 9),  # body length
                st.booleans(),  # body variant (another body under a held number: a new message)
            ),
            max_size=60,
        ),
        st.integers(1, 4),
        st.integers(1, 8),
        st.integers(10, 30),
    )
    def test_bounds_hold_and_every_part_comes_back_once(
        self,
        ops: list[tuple[str, int, int, int, int, bool]],
        max_messages: int,
        max_parts: int,
        max_bytes: int,
    ) -> None:
        """Whatever arrives, the bounds are never exceeded, and every part added is returned
        exactly once: at once (duplicate, rejected), complete, superseded, evicted, expired,
        popped, discarded, or still held at the end."""
        r: Reassembler[int] = Reassembler(
            max_messages=max_messages, max_parts=max_parts, max_bytes=max_bytes, max_age_s=3
        )
        returned: list[int] = []
        now = 0.0
        added = 0

        def back(assemblies: Iterable[Assembly[int] | None]) -> None:
            for a in assemblies:
                if a is not None:
                    returned.extend(f.context for f in a.fragments)

        for op, key, seq, total, size, variant in ops:
            if op == "add":
                body = (b"y" if variant else b"x") * size
                res = r.add((key,), seq=seq, total=total, body=body, now=now, context=added)
                if res.status in (AddStatus.DUPLICATE, AddStatus.REJECTED):
                    returned.append(added)
                if res.status is AddStatus.DUPLICATE:
                    assert res.held is not None
                    assert res.held.body == body
                if res.assembly is not None:
                    assert res.assembly.complete
                back([res.assembly, res.superseded, *res.evicted])
                added += 1
            elif op == "tick":
                now += key
                back(r.expire(now))
            elif op == "pop":
                back([r.pop((key,))])
            else:
                back(r.discard(lambda k, gone=key: k == (gone,)))
            assert len(r) <= max_messages
            assert r.parts_held <= max_parts
            assert r.bytes_held <= max_bytes
            assert r.parts_held == len(list(r.contexts()))
        returned.extend(r.contexts())
        assert sorted(returned) == list(range(added))
