"""The SMPP 3.4 codec: golden vectors, byte-stable round trips, and the status of each error."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smpp.codec import (
    Header,
    decode,
    decode_header,
    encode,
    error_response,
    int_tlv,
    is_vendor_command,
    tlv_int,
    tlv_str,
    with_sequence,
    with_short_message,
)
from gateway.smpp.constants import CommandId, CommandStatus, Tag
from gateway.smpp.errors import FramingError, PduDecodeError, PduEncodeError, SmppError
from gateway.smpp.pdu import (
    BIND_RESP_FOR,
    PDU_CLASSES,
    RESPONSE_FOR,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    RawPdu,
    ReplaceSm,
    ReplaceSmResp,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
    UnsuccessSme,
)
from tests.support.strategies import PDU_TYPES, any_pdu, load_vector, pdus_of, vector_paths

HANDSET = "447700900123"
RECEIPT = (
    b"id:msg-0001 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 "
    b"stat:DELIVRD err:000 text:Hello"
)

# What each golden vector must decode to (its bytes were written by hand from the spec).
EXPECTED: dict[str, Pdu] = {
    "bind_transmitter": BindTransmitter(
        sequence_number=1, system_id="smppclient1", password="password", addr_ton=1, addr_npi=1
    ),
    "bind_transmitter_resp": BindTransmitterResp(
        sequence_number=1, system_id="SMSC", tlvs=(Tlv(Tag.SC_INTERFACE_VERSION, b"\x34"),)
    ),
    "bind_receiver": BindReceiver(
        sequence_number=2,
        system_id="rx",
        password="longpassword123",
        system_type="VMA",
        address_range="^447",
    ),
    "bind_receiver_resp_error": BindReceiverResp(
        sequence_number=2, command_status=CommandStatus.ESME_RBINDFAIL, system_id=None
    ),
    "bind_transceiver": BindTransceiver(
        sequence_number=3, system_id="trx", password="pw", interface_version=0x50, addr_ton=5
    ),
    "bind_transceiver_resp": BindTransceiverResp(sequence_number=3, system_id="SMSC"),
    "outbind": Outbind(sequence_number=4, system_id="SMSC", password="secret"),
    "unbind": Unbind(sequence_number=5),
    "unbind_resp": UnbindResp(sequence_number=5),
    "enquire_link": EnquireLink(sequence_number=6),
    "enquire_link_resp": EnquireLinkResp(sequence_number=6),
    "generic_nack": GenericNack(sequence_number=7, command_status=CommandStatus.ESME_RINVCMDID),
    "submit_sm": SubmitSm(
        sequence_number=8,
        source_addr_ton=5,
        source_addr="Brand",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=HANDSET,
        registered_delivery=1,
        short_message=b"Hello",
    ),
    "submit_sm_tlvs": SubmitSm(
        sequence_number=9,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="447700900001",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=HANDSET,
        esm_class=0x40,
        validity_period="000001000000000R",
        short_message=bytes.fromhex("0500032a0201") + b"abc",
        tlvs=(
            Tlv(Tag.USER_MESSAGE_REFERENCE, b"\x00\x01"),
            Tlv(0x1401, b"xyz"),
            Tlv(0x7777, b""),
        ),
    ),
    "submit_sm_resp": SubmitSmResp(sequence_number=8, message_id="msg-0001"),
    "submit_sm_resp_error": SubmitSmResp(
        sequence_number=9, command_status=CommandStatus.ESME_RSUBMITFAIL, message_id=None
    ),
    "deliver_sm_receipt": DeliverSm(
        sequence_number=10,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=HANDSET,
        dest_addr_ton=5,
        destination_addr="Brand",
        esm_class=0x04,
        short_message=RECEIPT,
        tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"msg-0001\0"), Tlv(Tag.MESSAGE_STATE, b"\x02")),
    ),
    "deliver_sm_resp": DeliverSmResp(sequence_number=10, message_id=""),
    "data_sm": DataSm(
        sequence_number=11,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=HANDSET,
        destination_addr="12345",
        data_coding=8,
        tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, "STOP".encode("utf-16-be")),),
    ),
    "data_sm_resp": DataSmResp(
        sequence_number=11,
        message_id="ds-1",
        tlvs=(Tlv(Tag.ADDITIONAL_STATUS_INFO_TEXT, b"ok\0"),),
    ),
    "query_sm": QuerySm(
        sequence_number=12, message_id="msg-0001", source_addr_ton=5, source_addr="Brand"
    ),
    "query_sm_resp": QuerySmResp(
        sequence_number=12, message_id="msg-0001", final_date="250101120100000+", message_state=2
    ),
    "query_sm_resp_error": QuerySmResp(
        sequence_number=13, command_status=CommandStatus.ESME_RQUERYFAIL, message_id=None
    ),
    "cancel_sm": CancelSm(
        sequence_number=14,
        message_id="msg-0001",
        source_addr_ton=5,
        source_addr="Brand",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=HANDSET,
    ),
    "cancel_sm_resp": CancelSmResp(sequence_number=14),
    "replace_sm": ReplaceSm(
        sequence_number=15,
        message_id="msg-0001",
        source_addr_ton=5,
        source_addr="Brand",
        registered_delivery=1,
        short_message=b"Bye",
    ),
    "replace_sm_resp": ReplaceSmResp(
        sequence_number=15, command_status=CommandStatus.ESME_RREPLACEFAIL
    ),
    "alert_notification": AlertNotification(
        sequence_number=16,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=HANDSET,
        esme_addr="12345",
        tlvs=(Tlv(Tag.MS_AVAILABILITY_STATUS, b"\x00"),),
    ),
    "submit_multi": SubmitMulti(
        sequence_number=17,
        source_addr_ton=5,
        source_addr="Brand",
        dest_addresses=(
            SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr=HANDSET),
            DistributionList(dl_name="friends"),
        ),
        short_message=b"Hi all",
    ),
    "submit_multi_resp": SubmitMultiResp(
        sequence_number=17,
        message_id="multi-1",
        unsuccess_smes=(
            UnsuccessSme(
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr="447700900999",
                error_status_code=CommandStatus.ESME_RINVDSTADR,
            ),
        ),
    ),
    "vendor_pdu": RawPdu(
        sequence_number=18, command_id=0x00010201, body=bytes.fromhex("cafe00010002beef")
    ),
}


def decode_or_error(frame: bytes) -> Pdu | PduDecodeError:
    """The decoded PDU, or the PduDecodeError it raised (other exceptions propagate)."""
    try:
        return decode(frame)
    except PduDecodeError as exc:
        return exc


def header(command_id: int, body: bytes, *, status: int = 0, seq: int = 1) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


class TestGoldenVectors:
    def test_every_vector_has_an_expectation(self) -> None:
        """Each .hex file is checked against a hand-written PDU, and each PDU class has one."""
        assert {p.stem for p in vector_paths()} == set(EXPECTED)
        assert {type(p) for p in EXPECTED.values()} == set(PDU_CLASSES.values()) | {RawPdu}

    @pytest.mark.parametrize("path", vector_paths(), ids=lambda p: p.stem)
    def test_decode(self, path: Path) -> None:
        """The vector decodes to the expected field values."""
        assert decode(load_vector(path)) == EXPECTED[path.stem]

    @pytest.mark.parametrize("path", vector_paths(), ids=lambda p: p.stem)
    def test_encode(self, path: Path) -> None:
        """The expected PDU encodes to exactly the vector's bytes."""
        assert encode(EXPECTED[path.stem]) == load_vector(path)

    @pytest.mark.parametrize("path", vector_paths(), ids=lambda p: p.stem)
    def test_header(self, path: Path) -> None:
        """decode_header reads the four header fields of the vector."""
        frame = load_vector(path)
        pdu = EXPECTED[path.stem]
        assert decode_header(frame) == Header(
            len(frame), pdu.command_id, pdu.command_status, pdu.sequence_number
        )


class TestRoundTrip:
    @given(any_pdu())
    def test_decode_inverts_encode(self, pdu: Pdu) -> None:
        """Every valid PDU decodes back to itself and re-encodes to the same bytes."""
        frame = encode(pdu)
        again = decode(frame)
        assert again == pdu
        assert encode(again) == frame

    @pytest.mark.parametrize("cls", PDU_TYPES, ids=lambda c: c.__name__)
    @given(data=st.data())
    def test_every_type_round_trips(self, cls: type[Pdu], data: st.DataObject) -> None:
        """Each PDU type on its own is byte-stable through decode and encode."""
        frame = encode(data.draw(pdus_of(cls)))
        assert encode(decode(frame)) == frame

    def test_any_byte_survives_a_c_octet_string(self) -> None:
        """Latin-1 maps every non-NUL byte to one character and back."""
        every_byte = bytes(range(1, 256)).decode("latin-1")
        pdu = SubmitSm(source_addr=every_byte, destination_addr=HANDSET)
        assert decode(encode(pdu)) == pdu

    def test_default_pdus_are_spec_valid(self) -> None:
        """Defaults give interface_version 0x34 and empty (NUL) strings, not absent bodies."""
        assert BindTransmitter().interface_version == 0x34
        assert encode(SubmitSmResp(sequence_number=1)) == header(0x80000004, b"\0")
        assert encode(DeliverSmResp(sequence_number=1)) == header(0x80000005, b"\0")


class TestArbitraryBytes:
    @given(st.binary(max_size=300))
    def test_raw_bytes_raise_only_smpp_errors(self, data: bytes) -> None:
        """Any byte string decodes or raises an SmppError, nothing else."""
        with contextlib.suppress(SmppError):
            decode(data)

    @given(st.sampled_from(sorted(PDU_CLASSES)), st.binary(max_size=200))
    def test_bodies_under_valid_headers_raise_only_decode_errors(
        self, command_id: int, body: bytes
    ) -> None:
        """A framed PDU with a random body decodes byte-stable or fails addressed to its header."""
        frame = header(command_id, body, seq=77)
        result = decode_or_error(frame)
        if isinstance(result, PduDecodeError):
            assert (result.command_id, result.sequence_number) == (command_id, 77)
        else:
            assert encode(result) == frame

    @given(any_pdu(), st.data())
    def test_truncated_bodies_raise_only_decode_errors(self, pdu: Pdu, data: st.DataObject) -> None:
        """Cutting a valid PDU short (with a fixed-up length) never raises anything else."""
        frame = encode(pdu)
        cut = data.draw(st.integers(16, len(frame)))
        short = struct.pack(">I", cut) + frame[4:cut]
        result = decode_or_error(short)
        if isinstance(result, PduDecodeError):
            assert result.status in {
                CommandStatus.ESME_RINVCMDLEN,
                CommandStatus.ESME_RINVMSGLEN,
                CommandStatus.ESME_RINVOPTPARSTREAM,
            }
        else:
            assert encode(result) == short


def decode_error(frame: bytes) -> PduDecodeError:
    with pytest.raises(PduDecodeError) as info:
        decode(frame)
    return info.value


SUBMIT_SM_FIXED = b"\0" + b"\1\1" + b"447700900001\0" + b"\1\1" + HANDSET.encode() + b"\0"
SUBMIT_SM_REST = b"\0\0\0" + b"\0" + b"\0" + b"\0\0\0\0"


class TestDecodeErrors:
    def test_missing_nul_is_invalid_command_length(self) -> None:
        """A c-octet string without its NUL gives ESME_RINVCMDLEN, addressed by the header."""
        exc = decode_error(header(CommandId.SUBMIT_SM_RESP, b"abc", seq=42))
        assert exc.status == CommandStatus.ESME_RINVCMDLEN
        assert (exc.command_id, exc.sequence_number) == (CommandId.SUBMIT_SM_RESP, 42)

    def test_body_ending_inside_a_field_is_invalid_command_length(self) -> None:
        """A body that stops before the last mandatory integer gives ESME_RINVCMDLEN."""
        body = SUBMIT_SM_FIXED + b"\0\0\0\0\0\0\0"
        assert decode_error(header(4, body)).status == CommandStatus.ESME_RINVCMDLEN

    def test_empty_request_body_is_invalid_command_length(self) -> None:
        """A request with a mandatory body but none on the wire gives ESME_RINVCMDLEN."""
        assert decode_error(header(4, b"")).status == CommandStatus.ESME_RINVCMDLEN

    def test_sm_length_past_body_is_invalid_message_length(self) -> None:
        """sm_length larger than the bytes left gives ESME_RINVMSGLEN."""
        body = SUBMIT_SM_FIXED + SUBMIT_SM_REST + b"\x0a" + b"short"
        assert decode_error(header(4, body)).status == CommandStatus.ESME_RINVMSGLEN

    def test_replace_sm_length_past_body_is_invalid_message_length(self) -> None:
        """replace_sm's sm_length is checked like submit_sm's."""
        body = b"id\0" + b"\0\0" + b"\0" + b"\0" + b"\0" + b"\0\0" + b"\x09" + b"x"
        assert decode_error(header(7, body)).status == CommandStatus.ESME_RINVMSGLEN

    @pytest.mark.parametrize(
        "tlv_bytes",
        [b"\x02", b"\x02\x04\x00", b"\x02\x04\x00\x02\x00", b"\x04\x24\xff\xff" + b"x" * 10],
        ids=["1-byte-header", "3-byte-header", "value-short", "length-past-end"],
    )
    def test_broken_tlv_is_invalid_optional_parameter_stream(self, tlv_bytes: bytes) -> None:
        """A TLV header or value running past the body gives ESME_RINVOPTPARSTREAM."""
        body = SUBMIT_SM_FIXED + SUBMIT_SM_REST + b"\0" + tlv_bytes
        assert decode_error(header(4, body)).status == CommandStatus.ESME_RINVOPTPARSTREAM

    @pytest.mark.parametrize(
        "command_id",
        [
            CommandId.ENQUIRE_LINK,
            CommandId.ENQUIRE_LINK_RESP,
            CommandId.UNBIND,
            CommandId.UNBIND_RESP,
            CommandId.GENERIC_NACK,
            CommandId.CANCEL_SM_RESP,
            CommandId.REPLACE_SM_RESP,
        ],
    )
    def test_trailing_bytes_after_bodiless_pdu(self, command_id: int) -> None:
        """Bytes after a PDU that takes no body give ESME_RINVCMDLEN."""
        exc = decode_error(header(command_id, b"\x02\x04\x00\x00"))
        assert exc.status == CommandStatus.ESME_RINVCMDLEN

    def test_bad_dest_flag(self) -> None:
        """A submit_multi dest_flag other than 1 or 2 gives ESME_RINVDESTFLAG."""
        body = b"\0" + b"\0\0" + b"src\0" + b"\x01" + b"\x03" + b"\1\1" + b"123\0" + b"\0" * 20
        assert decode_error(header(0x21, body)).status == CommandStatus.ESME_RINVDESTFLAG

    def test_length_field_disagreeing_with_frame(self) -> None:
        """A frame whose command_length is not its size gives ESME_RINVCMDLEN."""
        frame = header(CommandId.ENQUIRE_LINK, b"") + b"\0"
        assert decode_error(frame).status == CommandStatus.ESME_RINVCMDLEN

    def test_shorter_than_header_is_framing_error(self) -> None:
        """Fewer than 16 bytes cannot be a PDU: FramingError."""
        with pytest.raises(FramingError):
            decode(b"\0\0\0\x10\0\0\0\x15")

    def test_tlv_length_unusual_for_its_tag_is_kept(self) -> None:
        """A TLV whose length looks wrong for its tag is passed through, not rejected."""
        odd = Tlv(Tag.SAR_MSG_REF_NUM, b"\x01\x02\x03")
        pdu = SubmitSm(destination_addr=HANDSET, tlvs=(odd,))
        assert decode(encode(pdu)).tlvs == (odd,)

    def test_long_strings_are_accepted(self) -> None:
        """c-octet strings over the spec's maxima (long passwords) decode unchanged."""
        pdu = BindTransceiver(system_id="s" * 40, password="p" * 64)
        assert decode(encode(pdu)) == pdu

    def test_response_with_any_body_shape_may_be_absent(self) -> None:
        """A bare header decodes as an absent body for every message_id / system_id response."""
        absent: list[Pdu] = [
            SubmitSmResp(sequence_number=1, message_id=None),
            DeliverSmResp(sequence_number=1, message_id=None),
            DataSmResp(sequence_number=1, message_id=None),
            QuerySmResp(sequence_number=1, message_id=None),
            SubmitMultiResp(sequence_number=1, message_id=None),
            *(bind(sequence_number=1, system_id=None) for bind in BIND_RESP_FOR.values()),
        ]
        for pdu in absent:
            assert decode(header(pdu.command_id, b"")) == pdu

    def test_unknown_command_is_raw(self) -> None:
        """An unknown command id decodes to RawPdu with the body untouched."""
        frame = header(0x00010255, b"\x00\x01\x02", status=5, seq=9)
        pdu = decode(frame)
        assert pdu == RawPdu(
            command_id=0x00010255, command_status=5, sequence_number=9, body=b"\0\1\2"
        )
        assert encode(pdu) == frame


class TestEncodeErrors:
    @pytest.mark.parametrize(
        "pdu",
        [
            SubmitSm(esm_class=256),
            SubmitSm(source_addr_ton=-1),
            SubmitSm(sequence_number=2**32),
            SubmitSm(short_message=b"x" * 256),
            SubmitSm(source_addr="\u20ac"),
            SubmitSm(source_addr="a\0b"),
            EnquireLink(tlvs=(Tlv(1, b""),)),
            SubmitSmResp(message_id=None, tlvs=(Tlv(1, b""),)),
            SubmitMultiResp(message_id=None, unsuccess_smes=(UnsuccessSme(),)),
            SubmitMulti(dest_addresses=(SmeAddress(),) * 256),
            RawPdu(command_id=0x10201, tlvs=(Tlv(1, b""),)),
            SubmitSm(tlvs=(Tlv(1, b"x" * 65536),)),
            SubmitSm(short_message="text"),  # type: ignore[arg-type]
        ],
        ids=repr,
    )
    def test_unencodable_fields(self, pdu: Pdu) -> None:
        """A field that cannot go on the wire raises PduEncodeError."""
        with pytest.raises(PduEncodeError):
            encode(pdu)

    def test_base_class_is_not_encodable(self) -> None:
        """Only concrete PDU classes encode."""
        with pytest.raises(PduEncodeError):
            encode(Pdu())


class TestWithSequence:
    @given(any_pdu(), st.integers(0, 0xFFFFFFFF))
    def test_patches_only_the_sequence_number(self, pdu: Pdu, seq: int) -> None:
        """with_sequence equals re-encoding with another sequence_number, body untouched."""
        frame = encode(pdu)
        patched = with_sequence(frame, seq)
        assert patched == encode(dataclasses.replace(pdu, sequence_number=seq))
        assert patched[:12] == frame[:12]
        assert patched[16:] == frame[16:]

    def test_rejects_out_of_range(self) -> None:
        """A sequence number above 32 bits raises PduEncodeError."""
        with pytest.raises(PduEncodeError):
            with_sequence(encode(EnquireLink()), 2**32)

    def test_rejects_short_frame(self) -> None:
        """A frame shorter than a header raises FramingError."""
        with pytest.raises(FramingError):
            with_sequence(b"\0" * 8, 1)


# submit_sm, sequence 1: service_type "", 1/1 "123", 1/1 "456", esm_class 0, protocol_id 0,
# priority 0, no schedule / validity, registered_delivery 1, replace 0, data_coding 0,
# sm_default_msg_id 0, sm_length 2 "hi", then TLV 0x1401 length 1 value 07.
_SUBMIT_HEAD = "00000004 00000000 00000001"
_SUBMIT_BODY_TO_SM = "00 0101 31323300 0101 34353600 00 00 00 00 00 01 00 00 00"
_SUBMIT_TLV = "1401 0001 07"


def _hex(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts).replace(" ", ""))


class TestWithShortMessage:
    def test_golden_bytes(self) -> None:
        """sm_length, the message and command_length change; every other octet is copied."""
        body = _hex(_SUBMIT_BODY_TO_SM, "02", "6869", _SUBMIT_TLV)
        frame = _hex(f"{16 + len(body):08x}", _SUBMIT_HEAD) + body
        pdu = decode(frame)
        assert isinstance(pdu, SubmitSm)
        patched = with_short_message(frame, pdu, b"hi STOP")
        new_body = _hex(_SUBMIT_BODY_TO_SM, "07", "68692053544f50", _SUBMIT_TLV)
        assert patched == _hex(f"{16 + len(new_body):08x}", _SUBMIT_HEAD) + new_body
        assert decode(patched) == dataclasses.replace(pdu, short_message=b"hi STOP")

    def test_empty_to_full(self) -> None:
        """From no message to 255 octets, the largest sm_length."""
        pdu = SubmitSm(destination_addr="1", tlvs=(Tlv(0x1401, b"x"),))
        patched = with_short_message(encode(pdu), pdu, b"a" * 255)
        assert patched == encode(dataclasses.replace(pdu, short_message=b"a" * 255))

    def test_frame_not_laid_out_as_the_pdu_says_is_re_encoded(self) -> None:
        """A PDU that is not the frame's decoding: the result is the PDU re-encoded."""
        pdu = SubmitSm(destination_addr="1", short_message=b"abc")
        other = encode(dataclasses.replace(pdu, short_message=b"xyz"))
        patched = with_short_message(other, pdu, b"abc!")
        assert patched == encode(dataclasses.replace(pdu, short_message=b"abc!"))

    def test_too_long_for_sm_length(self) -> None:
        """Over 255 octets cannot be patched in: encoding refuses it."""
        pdu = SubmitSm(destination_addr="1", short_message=b"abc")
        with pytest.raises(PduEncodeError):
            with_short_message(encode(pdu), pdu, b"a" * 256)


class TestErrorResponse:
    @pytest.mark.parametrize("request_cls", list(RESPONSE_FOR), ids=lambda c: c.__name__)
    def test_known_request_gets_its_own_response(self, request_cls: type[Pdu]) -> None:
        """A known request is answered with its own *_resp, empty body, given status and seq."""
        frame = error_response(request_cls().command_id, 31, CommandStatus.ESME_RINVCMDLEN)
        response = decode(frame)
        assert type(response) is RESPONSE_FOR[request_cls]
        assert len(frame) == 16
        assert (response.command_status, response.sequence_number) == (2, 31)

    @pytest.mark.parametrize(
        "command_id",
        [0x00010201, 0x0000AAAA, 0x7FFFFFFF, CommandId.OUTBIND, CommandId.SUBMIT_SM_RESP],
    )
    def test_others_get_generic_nack(self, command_id: int) -> None:
        """Unknown ids, requests without a response, and responses get generic_nack."""
        frame = error_response(command_id, 5, CommandStatus.ESME_RINVCMDID)
        assert decode(frame) == GenericNack(
            sequence_number=5, command_status=CommandStatus.ESME_RINVCMDID
        )


class TestVendorCommands:
    @pytest.mark.parametrize(
        ("command_id", "vendor"),
        [
            (0x00000103, False),
            (0x00000104, True),
            (0x0000FFFF, True),
            (0x00010000, False),
            (0x000101FF, False),
            (0x00010200, True),
            (0x000102FF, True),
            (0x00010300, False),
            (0x80000104, True),
            (0x800102FF, True),
            (0x80000000, False),
            (CommandId.SUBMIT_SM, False),
            (0xFFFFFFFF, False),
        ],
    )
    def test_ranges(self, command_id: int, vendor: bool) -> None:
        """SMPP 3.4 table 5-1: extension and SMSC vendor ranges, request and response."""
        assert is_vendor_command(command_id) is vendor


class TestTlvAccess:
    def test_first_value_wins(self) -> None:
        """Pdu.tlv returns the first value with the tag, or None."""
        pdu = SubmitSm(tlvs=(Tlv(0x1400, b"a"), Tlv(0x1400, b"b")))
        assert pdu.tlv(0x1400) == b"a"
        assert pdu.tlv(0x1401) is None

    def test_typed_accessors(self) -> None:
        """tlv_int reads big-endian integers and tlv_str c-octet strings."""
        pdu = DeliverSm(
            tlvs=(
                int_tlv(Tag.SAR_MSG_REF_NUM, 0x1234, 2),
                Tlv(Tag.RECEIPTED_MESSAGE_ID, b"abc\0"),
                Tlv(Tag.ADDITIONAL_STATUS_INFO_TEXT, b"no nul"),
            )
        )
        assert pdu.tlv(Tag.SAR_MSG_REF_NUM) == b"\x12\x34"
        assert tlv_int(pdu, Tag.SAR_MSG_REF_NUM) == 0x1234
        assert tlv_int(pdu, Tag.MESSAGE_STATE) is None
        assert tlv_str(pdu, Tag.RECEIPTED_MESSAGE_ID) == "abc"
        assert tlv_str(pdu, Tag.ADDITIONAL_STATUS_INFO_TEXT) == "no nul"
        assert tlv_str(pdu, Tag.MESSAGE_PAYLOAD) is None


class TestPduClasses:
    def test_command_ids(self) -> None:
        """Each class's command_id is its key in PDU_CLASSES; RawPdu's is per instance."""
        assert SubmitSm.command_id == CommandId.SUBMIT_SM
        for command_id, cls in PDU_CLASSES.items():
            assert cls().command_id == command_id
        assert RawPdu(command_id=0x10201).command_id == 0x10201

    def test_response_pairs(self) -> None:
        """Each response id is its request id with the response bit set."""
        for request, response in RESPONSE_FOR.items():
            assert response().command_id == request().command_id | 0x80000000
        for bind, bind_resp in BIND_RESP_FOR.items():
            assert RESPONSE_FOR[bind] is bind_resp

    def test_frozen(self) -> None:
        """PDUs are immutable values."""
        pdu = SubmitSm()
        with pytest.raises(dataclasses.FrozenInstanceError):
            pdu.source_addr = "x"  # type: ignore[misc]

    def test_decoded_pdu_is_a_normal_instance(self) -> None:
        """A decoded PDU hashes, compares and replaces like a constructed one."""
        pdu = decode(encode(SubmitSm(destination_addr=HANDSET, short_message=b"x")))
        assert hash(pdu) == hash(SubmitSm(destination_addr=HANDSET, short_message=b"x"))
        assert dataclasses.replace(pdu, sequence_number=3).sequence_number == 3
