"""Wireshark's SMPP dissector, an independent implementation, reads our bytes cleanly."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandStatus, Tag, is_response
from gateway.smpp.pdu import (
    DataSm,
    EnquireLink,
    Pdu,
    RawPdu,
    SubmitMulti,
    SubmitSm,
    SubmitSmResp,
    Tlv,
)
from tests.support.strategies import any_pdu, load_vector, vector_paths
from tests.support.tshark import assert_clean, dissect, tshark_path

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(tshark_path() is None, reason="tshark is not on PATH"),
]

VECTORS = {path.stem: load_vector(path) for path in vector_paths()}


class TestGoldenVectors:
    def test_all_vectors_dissect_clean(self) -> None:
        """Every golden vector, in one stream, dissects with no malformed packet or warning."""
        assert_clean(list(VECTORS.values()))

    def test_headers_agree(self) -> None:
        """The dissector reads the same length, id, status and sequence number as our decoder."""
        frames = [frame for frame in VECTORS.values() if decode(frame).command_id != 0x00010201]
        dissections = dissect(frames)
        assert len(dissections) == len(frames)
        for frame, seen in zip(frames, dissections, strict=True):
            pdu = decode(frame)
            assert (seen.command_length, seen.command_id, seen.sequence_number) == (
                len(frame),
                pdu.command_id,
                pdu.sequence_number,
            )
            if is_response(pdu.command_id):
                assert seen.command_status == pdu.command_status

    def test_fields_agree(self) -> None:
        """Mandatory fields and TLVs land where the dissector expects them."""
        submit, multi, receipt = dissect(
            [VECTORS["submit_sm_tlvs"], VECTORS["submit_multi"], VECTORS["deliver_sm_receipt"]]
        )
        assert submit.get("source_addr") == "447700900001"
        assert submit.get("destination_addr") == "447700900123"
        assert submit.get("sm_length") == "9"
        assert submit.get("validity_period_r") is not None
        assert submit.fields["smpp.opt_param_tag"] == ["0x0204", "0x1401", "0x7777"]
        assert multi.get("destination_addr") == "447700900123"
        assert multi.get("dl_name") == "friends"
        assert multi.get("sm_length") == "6"
        assert receipt.get("receipted_message_id") == "msg-0001"


STATUSES = st.sampled_from(
    [CommandStatus.ESME_RSUBMITFAIL, CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RSYSERR]
) | st.integers(0x400, 0x4FF)


@st.composite
def wire_realistic(draw: st.DrawFn) -> Pdu:
    """A generated PDU adjusted to what a real peer sends, so the dissector can judge it.

    Wireshark reads standard TLVs by their spec sizes and parses a UDH when esm_class says so,
    and it expects a body on an OK response; random values there would be flagged although our
    codec passes them through on purpose. Vendor-range TLVs (0x1400-0x3FFF) stay opaque to it.
    Statuses come from the assigned ranges: Wireshark skips PDUs with a reserved status.
    """
    # Not RawPdu: an unknown command id makes the dissector give up on the rest of the segment.
    pdu = draw(any_pdu().filter(lambda p: not isinstance(p, RawPdu)))
    body_absent = getattr(pdu, "message_id", "") is None or getattr(pdu, "system_id", "") is None
    status = draw(STATUSES if body_absent else STATUSES | st.just(0))
    changes: dict[str, object] = {
        "command_status": status,
        "tlvs": tuple(t for t in pdu.tlvs if 0x1400 <= t.tag <= 0x3FFF),
    }
    if hasattr(pdu, "esm_class"):
        changes["esm_class"] = pdu.esm_class & ~0x40
    return dataclasses.replace(pdu, **changes)  # type: ignore[arg-type]


class TestGeneratedPdus:
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(wire_realistic(), min_size=1, max_size=60))
    def test_generated_streams_dissect_clean(self, pdus: list[Pdu]) -> None:
        """Streams of generated PDUs of every type dissect clean, command ids in order."""
        assert_clean([encode(pdu) for pdu in pdus])

    def test_large_pdu_across_segments(self) -> None:
        """A PDU larger than one TCP segment is reassembled and dissected clean."""
        big = DataSm(
            destination_addr="1",
            tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, b"x" * 6000),),
        )
        (seen,) = assert_clean([encode(EnquireLink()), encode(big)])[1:]
        assert seen.command_length == len(encode(big))

    def test_hundreds_of_frames_in_one_call(self) -> None:
        """assert_clean handles a few hundred frames in one tshark run."""
        frames = [
            encode(SubmitSm(sequence_number=n, destination_addr=str(n), short_message=b"hi"))
            for n in range(1, 401)
        ]
        assert len(assert_clean(frames)) == 400


class TestAssertCleanCatchesProblems:
    def test_malformed_body(self) -> None:
        """A submit_sm whose body stops early is reported."""
        frame = encode(SubmitSm(destination_addr="447700900123", short_message=b"hello"))
        cut = frame[:-8]
        with pytest.raises(AssertionError):
            assert_clean([struct.pack(">I", len(cut)) + cut[4:]])

    def test_missing_body_on_ok_response(self) -> None:
        """An OK submit_sm_resp without its message_id is reported."""
        with pytest.raises(AssertionError):
            assert_clean([encode(SubmitSmResp(message_id=None))])

    def test_command_ids_must_match(self) -> None:
        """A frame the dissector cannot find (bad length field) fails the id comparison."""
        good = encode(EnquireLink(sequence_number=1))
        with pytest.raises(AssertionError):
            assert_clean([good, b"\0\0\0\x08" + good[4:]])

    def test_submit_multi_missing_destination(self) -> None:
        """A submit_multi that counts a destination it does not carry is reported."""
        frame = bytearray(encode(SubmitMulti(dest_addresses=(), short_message=b"x")))
        frame[16 + 4] = 1  # number_of_dests 1, followed by no destination at all
        with pytest.raises(AssertionError):
            assert_clean([bytes(frame)])
