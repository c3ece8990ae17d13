"""Differential tests against python-smpplib, an independent encoder and parser.

For the same field values smpplib's ``make_pdu(...).generate()`` and our ``encode`` must give the
same bytes, our ``decode`` must read smpplib's bytes back to those values, and smpplib must read
ours. Where smpplib departs from SMPP 3.4 the case is marked xfail (strict) with the reason, so
a fix in smpplib shows up as a failure to revisit.

smpplib has no cancel_sm, replace_sm, submit_multi, outbind or their responses; those are
covered by the golden vectors and tshark instead. Two smpplib quirks are worked around here:
with ``client=None`` it ignores the ``sequence`` keyword (so it is set on the object), and it
needs every string as ``str``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smpplib import command as smpplib_command
from smpplib import consts as smpplib_consts
from smpplib import exceptions as smpplib_exceptions
from smpplib import smpp as smpplib_smpp

from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import Tag
from gateway.smpp.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    ShortMessagePdu,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)

SEQ = 0x01020304


def smpplib_frame(name: str, seq: int = SEQ, **fields: Any) -> bytes:
    """smpplib's encoding of command ``name`` with ``fields``."""
    # With client=None the keyword only stops smpplib asking a client for a number; the value
    # itself is dropped, so it is set on the object afterwards.
    pdu = smpplib_smpp.make_pdu(name, client=None, sequence=seq, **fields)
    pdu.sequence = seq
    frame: bytes = pdu.generate()
    return frame


def smpplib_parse(frame: bytes) -> Any:
    return smpplib_smpp.parse_pdu(frame, client=None, sequence=0)


BIND: dict[str, Any] = {
    "system_id": "client",
    "password": "secret",
    "system_type": "VMA",
    "addr_ton": 1,
}
OURS_BIND: dict[str, Any] = {
    "system_id": "client",
    "password": "secret",
    "system_type": "VMA",
    "addr_ton": 1,
}

CASES: list[Any] = [
    pytest.param("enquire_link", {}, EnquireLink(sequence_number=SEQ), id="enquire_link"),
    pytest.param(
        "enquire_link_resp", {}, EnquireLinkResp(sequence_number=SEQ), id="enquire_link_resp"
    ),
    pytest.param("unbind", {}, Unbind(sequence_number=SEQ), id="unbind"),
    pytest.param("unbind_resp", {}, UnbindResp(sequence_number=SEQ), id="unbind_resp"),
    pytest.param(
        "generic_nack",
        {"status": 3},
        GenericNack(sequence_number=SEQ, command_status=3),
        id="generic_nack",
    ),
    pytest.param(
        "bind_transmitter",
        BIND,
        BindTransmitter(sequence_number=SEQ, **OURS_BIND),
        id="bind_transmitter",
    ),
    pytest.param(
        "bind_receiver",
        {**BIND, "address_range": "^447"},
        BindReceiver(sequence_number=SEQ, address_range="^447", **OURS_BIND),
        id="bind_receiver",
    ),
    pytest.param(
        "bind_transceiver",
        BIND,
        BindTransceiver(sequence_number=SEQ, **OURS_BIND),
        id="bind_transceiver",
    ),
    pytest.param(
        "bind_transceiver",
        {**BIND, "interface_version": 0x50},
        BindTransceiver(sequence_number=SEQ, interface_version=0x50, **OURS_BIND),
        id="bind_transceiver-v50",
        marks=pytest.mark.xfail(
            reason="smpplib overwrites interface_version with 0x34 after taking the keywords",
            strict=True,
        ),
    ),
    pytest.param(
        "bind_transmitter_resp",
        {"system_id": "SMSC", "sc_interface_version": 0x34},
        BindTransmitterResp(
            sequence_number=SEQ,
            system_id="SMSC",
            tlvs=(Tlv(Tag.SC_INTERFACE_VERSION, b"\x34"),),
        ),
        id="bind_transmitter_resp",
    ),
    pytest.param(
        "bind_receiver_resp",
        {"system_id": "SMSC"},
        BindReceiverResp(sequence_number=SEQ, system_id="SMSC"),
        id="bind_receiver_resp",
    ),
    pytest.param(
        "bind_transceiver_resp",
        {"system_id": "SMSC"},
        BindTransceiverResp(sequence_number=SEQ, system_id="SMSC"),
        id="bind_transceiver_resp",
    ),
    pytest.param(
        "submit_sm_resp",
        {"message_id": "abc-123"},
        SubmitSmResp(sequence_number=SEQ, message_id="abc-123"),
        id="submit_sm_resp",
    ),
    pytest.param(
        "deliver_sm_resp",
        {"message_id": ""},
        DeliverSmResp(sequence_number=SEQ, message_id=""),
        id="deliver_sm_resp",
    ),
    pytest.param(
        "submit_sm",
        {
            "source_addr_ton": 5,
            "source_addr": "Brand",
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": "447700900123",
            "esm_class": 0x40,
            "registered_delivery": 1,
            "data_coding": 8,
            "short_message": b"\x05\x00\x03\x07\x02\x01\x00S\x00T",
            "sar_msg_ref_num": 7,
            "sar_total_segments": 2,
            "sar_segment_seqnum": 1,
        },
        SubmitSm(
            sequence_number=SEQ,
            source_addr_ton=5,
            source_addr="Brand",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="447700900123",
            esm_class=0x40,
            registered_delivery=1,
            data_coding=8,
            short_message=b"\x05\x00\x03\x07\x02\x01\x00S\x00T",
            tlvs=(
                Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x07"),
                Tlv(Tag.SAR_TOTAL_SEGMENTS, b"\x02"),
                Tlv(Tag.SAR_SEGMENT_SEQNUM, b"\x01"),
            ),
        ),
        id="submit_sm",
    ),
    pytest.param(
        "submit_sm",
        {"destination_addr": "1", "source_addr_subunit": 1},
        SubmitSm(
            sequence_number=SEQ,
            destination_addr="1",
            tlvs=(Tlv(Tag.SOURCE_ADDR_SUBUNIT, b"\x01"),),
        ),
        id="submit_sm-source_addr_subunit",
        marks=pytest.mark.xfail(
            reason="smpplib encodes source_addr_subunit in 2 octets; SMPP 3.4 5.3.2.2 says 1",
            strict=True,
        ),
    ),
    pytest.param(
        "deliver_sm",
        {
            "source_addr": "447700900123",
            "destination_addr": "Brand",
            "esm_class": 0x04,
            "short_message": b"id:m1 stat:DELIVRD",
            "message_state": 2,
            "receipted_message_id": "m1",
        },
        DeliverSm(
            sequence_number=SEQ,
            source_addr="447700900123",
            destination_addr="Brand",
            esm_class=0x04,
            short_message=b"id:m1 stat:DELIVRD",
            tlvs=(Tlv(Tag.MESSAGE_STATE, b"\x02"), Tlv(Tag.RECEIPTED_MESSAGE_ID, b"m1\0")),
        ),
        id="deliver_sm",
    ),
    pytest.param(
        "data_sm",
        {
            "source_addr": "447700900123",
            "destination_addr": "12345",
            "data_coding": 8,
            "message_payload": "STOP".encode("utf-16-be"),
        },
        DataSm(
            sequence_number=SEQ,
            source_addr="447700900123",
            destination_addr="12345",
            data_coding=8,
            tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, "STOP".encode("utf-16-be")),),
        ),
        id="data_sm",
    ),
    pytest.param(
        "data_sm_resp",
        {"message_id": "d1", "additional_status_info_text": "ok"},
        DataSmResp(
            sequence_number=SEQ,
            message_id="d1",
            tlvs=(Tlv(Tag.ADDITIONAL_STATUS_INFO_TEXT, b"ok\0"),),
        ),
        id="data_sm_resp",
    ),
    pytest.param(
        "data_sm_resp",
        {"message_id": "d1", "network_error_code": "\x03\x00\x01"},
        DataSmResp(
            sequence_number=SEQ,
            message_id="d1",
            tlvs=(Tlv(Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01"),),
        ),
        id="data_sm_resp-network_error_code",
        marks=pytest.mark.xfail(
            reason="smpplib writes network_error_code as a c-octet string (4 octets with the "
            "NUL); SMPP 3.4 5.3.2.31 says 3 octets",
            strict=True,
        ),
    ),
    pytest.param(
        "query_sm",
        {"message_id": "m1", "source_addr_ton": 5, "source_addr": "Brand"},
        QuerySm(sequence_number=SEQ, message_id="m1", source_addr_ton=5, source_addr="Brand"),
        id="query_sm",
    ),
    pytest.param(
        "query_sm_resp",
        {"message_id": "m1", "final_date": "250101120100000+", "message_state": 2},
        QuerySmResp(
            sequence_number=SEQ, message_id="m1", final_date="250101120100000+", message_state=2
        ),
        id="query_sm_resp",
    ),
    pytest.param(
        "alert_notification",
        {"source_addr": "447700900123", "esme_addr": "12345", "ms_availability_status": 1},
        AlertNotification(
            sequence_number=SEQ,
            source_addr="447700900123",
            esme_addr="12345",
            tlvs=(Tlv(Tag.MS_AVAILABILITY_STATUS, b"\x01"),),
        ),
        id="alert_notification",
    ),
]


class TestFixedCases:
    @pytest.mark.parametrize(("name", "fields", "ours"), CASES)
    def test_same_bytes(self, name: str, fields: dict[str, Any], ours: Pdu) -> None:
        """smpplib and our encoder write the same bytes for the same values."""
        assert encode(ours) == smpplib_frame(name, **fields)

    @pytest.mark.parametrize(("name", "fields", "ours"), CASES)
    def test_we_read_smpplib(self, name: str, fields: dict[str, Any], ours: Pdu) -> None:
        """Our decoder reads smpplib's bytes back to the same values."""
        assert decode(smpplib_frame(name, **fields)) == ours

    @pytest.mark.parametrize(
        "name", ["cancel_sm", "replace_sm", "submit_multi", "outbind", "cancel_sm_resp"]
    )
    def test_smpplib_lacks_these_commands(self, name: str) -> None:
        """smpplib cannot build these PDUs, so only vectors and tshark check them."""
        with pytest.raises(smpplib_exceptions.UnknownCommandError, match="not supported"):
            smpplib_frame(name)


# TLVs smpplib writes for submit_sm and deliver_sm as integers of the spec's size.
INT_TLVS = {
    "user_message_reference": 2,
    "source_port": 2,
    "destination_port": 2,
    "sar_msg_ref_num": 2,
    "sar_total_segments": 1,
    "sar_segment_seqnum": 1,
    "more_messages_to_send": 1,
    "payload_type": 1,
    "privacy_indicator": 1,
    "language_indicator": 1,
    "user_response_code": 1,
}

latin1 = st.characters(min_codepoint=1, max_codepoint=0xFF)
u8 = st.integers(0, 0xFF)


def text(max_size: int) -> st.SearchStrategy[str]:
    # smpplib silently truncates to max - 1 characters; stay within that.
    return st.text(alphabet=latin1, max_size=max_size)


MANDATORY = st.fixed_dictionaries(
    {
        "service_type": text(5),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": text(20),
        "dest_addr_ton": u8,
        "dest_addr_npi": u8,
        "destination_addr": text(20),
        "esm_class": u8,
        "protocol_id": u8,
        "priority_flag": u8,
        "schedule_delivery_time": text(16),
        "validity_period": text(16),
        "registered_delivery": u8,
        "replace_if_present_flag": u8,
        "data_coding": u8,
        "sm_default_msg_id": u8,
        "short_message": st.binary(max_size=254),
    }
)


@st.composite
def int_tlvs(draw: st.DrawFn, command: str) -> dict[str, int]:
    allowed = [
        name
        for name in getattr(smpplib_command, command).params_order
        if name in INT_TLVS  # in smpplib's own order
    ]
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=5))
    return {name: draw(st.integers(0, 2 ** (8 * INT_TLVS[name]) - 1)) for name in chosen}


def ours_for(cls: type[ShortMessagePdu], command: str, values: dict[str, Any]) -> Pdu:
    """Our PDU for smpplib keyword values, TLVs in smpplib's parameter order."""
    order = getattr(smpplib_command, command).params_order
    tlvs = tuple(
        Tlv(smpplib_consts.OPTIONAL_PARAMS[name], values[name].to_bytes(INT_TLVS[name], "big"))
        for name in order
        if name in INT_TLVS and name in values
    )
    mandatory = {k: v for k, v in values.items() if k not in INT_TLVS}
    return cls(sequence_number=SEQ, tlvs=tlvs, **mandatory)


class TestGeneratedMessages:
    @pytest.mark.parametrize(
        ("name", "command", "cls"),
        [("submit_sm", "SubmitSM", SubmitSm), ("deliver_sm", "DeliverSM", DeliverSm)],
    )
    @given(data=st.data())
    def test_same_bytes_both_ways(
        self, name: str, command: str, cls: type[ShortMessagePdu], data: st.DataObject
    ) -> None:
        """For generated field values the two encoders agree and each decoder reads the other."""
        values: dict[str, Any] = {**data.draw(MANDATORY), **data.draw(int_tlvs(command))}
        ours = ours_for(cls, command, values)
        theirs = smpplib_frame(name, **values)
        assert encode(ours) == theirs
        assert decode(theirs) == ours
        parsed = smpplib_parse(encode(ours))
        assert parsed.sequence == SEQ
        # smpplib leaves short_message None when sm_length 0 ends the mandatory part.
        assert (parsed.short_message or b"") == values["short_message"]
        for field in ("source_addr", "destination_addr", "validity_period", "service_type"):
            assert getattr(parsed, field) == values[field].encode("latin-1")
        for field in ("esm_class", "data_coding", "registered_delivery", "dest_addr_ton"):
            assert getattr(parsed, field) == values[field]
        for tlv_name in INT_TLVS:
            if tlv_name in values:
                assert getattr(parsed, tlv_name) == values[tlv_name]
