"""SMPP 3.4 PDUs as frozen values, one class per command, fields named as in the specification.

Every field holds a raw ``int`` / ``str`` / ``bytes`` so vendor values pass through untouched.
C-octet strings are ``str`` decoded as latin-1, which maps every byte to one code point and back,
so any byte a peer sends survives a round trip. Length fields (``sm_length``, ``number_of_dests``,
``no_unsuccess``) are derived from the data they count and are not fields.

TLVs stay raw, in wire order, unknown tags included. A response whose body is absent on the wire
(SMPP 3.4 omits it when ``command_status`` is an error) has ``message_id=None`` /
``system_id=None`` and encodes back to a bare header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from gateway.smpp.constants import CommandId


@dataclass(frozen=True, slots=True)
class Tlv:
    """One optional parameter, value kept as the raw octets of the wire."""

    tag: int
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """Base of every PDU: the header fields the codec does not derive, and the TLVs."""

    command_status: int = 0
    sequence_number: int = 0
    tlvs: tuple[Tlv, ...] = ()

    @property
    def command_id(self) -> int:
        """The command id; a class constant on known PDUs, an instance field on ``RawPdu``."""
        raise NotImplementedError

    def tlv(self, tag: int) -> bytes | None:
        """The value of the first TLV with ``tag``, or None."""
        for item in self.tlvs:
            if item.tag == tag:
                return item.value
        return None


# --- bind -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BindRequest(Pdu):
    """Fields shared by bind_transmitter, bind_receiver and bind_transceiver."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindResponse(Pdu):
    """Fields shared by the three bind responses; ``system_id=None`` means no body."""

    system_id: str | None = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitter(BindRequest):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitterResp(BindResponse):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiver(BindRequest):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER


@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiverResp(BindResponse):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiver(BindRequest):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiverResp(BindResponse):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbind(Pdu):
    command_id: ClassVar[int] = CommandId.OUTBIND
    system_id: str = ""
    password: str = ""


# --- PDUs without a body ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbind(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindResp(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLink(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK


@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLinkResp(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class GenericNack(Pdu):
    command_id: ClassVar[int] = CommandId.GENERIC_NACK


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelSmResp(Pdu):
    command_id: ClassVar[int] = CommandId.CANCEL_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceSmResp(Pdu):
    command_id: ClassVar[int] = CommandId.REPLACE_SM_RESP


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShortMessagePdu(Pdu):
    """Fields shared by submit_sm and deliver_sm (identical bodies in SMPP 3.4)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSm(ShortMessagePdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSm(ShortMessagePdu):
    command_id: ClassVar[int] = CommandId.DELIVER_SM


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageIdResponse(Pdu):
    """A response whose body is a message_id; ``message_id=None`` means no body."""

    message_id: str | None = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSmResp(MessageIdResponse):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSmResp(MessageIdResponse):
    command_id: ClassVar[int] = CommandId.DELIVER_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSmResp(MessageIdResponse):
    command_id: ClassVar[int] = CommandId.DATA_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class SmeAddress:
    """submit_multi destination with dest_flag 1 (an SME address)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributionList:
    """submit_multi destination with dest_flag 2 (a distribution list name)."""

    dl_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitMulti(Pdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addresses: tuple[SmeAddress | DistributionList, ...] = ()
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsuccessSme:
    """One destination a submit_multi could not reach, with the reason."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    error_status_code: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitMultiResp(Pdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI_RESP
    message_id: str | None = ""
    unsuccess_smes: tuple[UnsuccessSme, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSm(Pdu):
    command_id: ClassVar[int] = CommandId.DATA_SM
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class QuerySm(Pdu):
    command_id: ClassVar[int] = CommandId.QUERY_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuerySmResp(Pdu):
    """query_sm_resp; ``message_id=None`` means no body (the other fields are then unused)."""

    command_id: ClassVar[int] = CommandId.QUERY_SM_RESP
    message_id: str | None = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelSm(Pdu):
    command_id: ClassVar[int] = CommandId.CANCEL_SM
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceSm(Pdu):
    command_id: ClassVar[int] = CommandId.REPLACE_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertNotification(Pdu):
    command_id: ClassVar[int] = CommandId.ALERT_NOTIFICATION
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RawPdu(Pdu):
    """A command id the codec does not know (vendor PDUs): the body is relayed byte-exact.

    ``tlvs`` stays empty: whatever TLVs the body holds are part of ``body``.
    """

    command_id: int
    body: bytes = b""


PDU_CLASSES: Mapping[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        BindTransmitter,
        BindTransmitterResp,
        BindReceiver,
        BindReceiverResp,
        BindTransceiver,
        BindTransceiverResp,
        Outbind,
        Unbind,
        UnbindResp,
        EnquireLink,
        EnquireLinkResp,
        GenericNack,
        SubmitSm,
        SubmitSmResp,
        SubmitMulti,
        SubmitMultiResp,
        DeliverSm,
        DeliverSmResp,
        DataSm,
        DataSmResp,
        QuerySm,
        QuerySmResp,
        CancelSm,
        CancelSmResp,
        ReplaceSm,
        ReplaceSmResp,
        AlertNotification,
    )
}
"""Every known command id to its class (``RawPdu`` covers the rest)."""

RESPONSE_FOR: Mapping[type[Pdu], type[Pdu]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
    Unbind: UnbindResp,
    EnquireLink: EnquireLinkResp,
    SubmitSm: SubmitSmResp,
    SubmitMulti: SubmitMultiResp,
    DeliverSm: DeliverSmResp,
    DataSm: DataSmResp,
    QuerySm: QuerySmResp,
    CancelSm: CancelSmResp,
    ReplaceSm: ReplaceSmResp,
}
"""Request class to its response class; outbind and alert_notification get no response."""

BIND_RESP_FOR: Mapping[type[BindRequest], type[BindResponse]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}
"""Bind request class to its response class, typed for building bind answers."""
