"""Hypothesis strategies for SMPP PDUs, reusable by any test.

``any_pdu()`` draws a valid PDU of any type (``RawPdu`` included), ``pdus_of(cls)`` one type,
``frames()`` the encoded bytes of ``any_pdu()``. Every PDU drawn encodes, and decodes back to
itself. ``vector_paths()`` / ``load_vector(path)`` read the golden vectors in tests/vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from gateway.smpp import pdu as p
from gateway.smpp.codec import encode

u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFFFFFF)

# Any byte but NUL, as latin-1 text: what a c-octet string can carry.
_C_CHARS = st.characters(min_codepoint=1, max_codepoint=0xFF)


def c_string(max_size: int = 24) -> st.SearchStrategy[str]:
    """A c-octet string value (no NUL, latin-1)."""
    return st.text(alphabet=_C_CHARS, max_size=max_size)


def tlvs(max_size: int = 4) -> st.SearchStrategy[tuple[p.Tlv, ...]]:
    """TLVs of any tag (standard, vendor or unknown) with short raw values."""
    tlv = st.builds(p.Tlv, tag=st.integers(0, 0xFFFF), value=st.binary(max_size=40))
    return st.lists(tlv, max_size=max_size).map(tuple)


_header: dict[str, Any] = {"command_status": u32, "sequence_number": u32}
_with_tlvs: dict[str, Any] = {**_header, "tlvs": tlvs()}

_BIND = {
    "system_id": c_string(),
    "password": c_string(),
    "system_type": c_string(),
    "interface_version": u8,
    "addr_ton": u8,
    "addr_npi": u8,
    "address_range": c_string(),
}
_SHORT_MESSAGE = {
    "service_type": c_string(6),
    "source_addr_ton": u8,
    "source_addr_npi": u8,
    "source_addr": c_string(),
    "dest_addr_ton": u8,
    "dest_addr_npi": u8,
    "destination_addr": c_string(),
    "esm_class": u8,
    "protocol_id": u8,
    "priority_flag": u8,
    "schedule_delivery_time": c_string(17),
    "validity_period": c_string(17),
    "registered_delivery": u8,
    "replace_if_present_flag": u8,
    "data_coding": u8,
    "sm_default_msg_id": u8,
    "short_message": st.binary(max_size=255),
}
_SME_ADDRESS = st.builds(
    p.SmeAddress, dest_addr_ton=u8, dest_addr_npi=u8, destination_addr=c_string()
)
_DISTRIBUTION_LIST = st.builds(p.DistributionList, dl_name=c_string())
_UNSUCCESS = st.builds(
    p.UnsuccessSme,
    dest_addr_ton=u8,
    dest_addr_npi=u8,
    destination_addr=c_string(),
    error_status_code=u32,
)


def _optional_body(cls: type[p.Pdu], field: str, **extra: Any) -> st.SearchStrategy[p.Pdu]:
    """A response with a body (and TLVs), or without one (``field=None``, no TLVs)."""
    return st.one_of(
        st.builds(cls, **_with_tlvs, **{field: c_string()}, **extra),
        st.builds(cls, **_header, **{field: st.none()}),
    )


_KNOWN_IDS = frozenset(p.PDU_CLASSES)
_raw_ids = st.one_of(
    st.integers(0x00010200, 0x000102FF),  # SMSC vendor
    st.integers(0x00000104, 0x0000FFFF),  # SMPP extension
    u32,
).map(lambda cid: cid | 0x80000000 if cid % 7 == 0 else cid)

_STRATEGIES: dict[type[p.Pdu], st.SearchStrategy[p.Pdu]] = {
    p.BindTransmitter: st.builds(p.BindTransmitter, **_with_tlvs, **_BIND),
    p.BindReceiver: st.builds(p.BindReceiver, **_with_tlvs, **_BIND),
    p.BindTransceiver: st.builds(p.BindTransceiver, **_with_tlvs, **_BIND),
    p.BindTransmitterResp: _optional_body(p.BindTransmitterResp, "system_id"),
    p.BindReceiverResp: _optional_body(p.BindReceiverResp, "system_id"),
    p.BindTransceiverResp: _optional_body(p.BindTransceiverResp, "system_id"),
    p.Outbind: st.builds(p.Outbind, **_with_tlvs, system_id=c_string(), password=c_string()),
    p.Unbind: st.builds(p.Unbind, **_header),
    p.UnbindResp: st.builds(p.UnbindResp, **_header),
    p.EnquireLink: st.builds(p.EnquireLink, **_header),
    p.EnquireLinkResp: st.builds(p.EnquireLinkResp, **_header),
    p.GenericNack: st.builds(p.GenericNack, **_header),
    p.CancelSmResp: st.builds(p.CancelSmResp, **_header),
    p.ReplaceSmResp: st.builds(p.ReplaceSmResp, **_header),
    p.SubmitSm: st.builds(p.SubmitSm, **_with_tlvs, **_SHORT_MESSAGE),
    p.DeliverSm: st.builds(p.DeliverSm, **_with_tlvs, **_SHORT_MESSAGE),
    p.SubmitSmResp: _optional_body(p.SubmitSmResp, "message_id"),
    p.DeliverSmResp: _optional_body(p.DeliverSmResp, "message_id"),
    p.DataSmResp: _optional_body(p.DataSmResp, "message_id"),
    p.SubmitMulti: st.builds(
        p.SubmitMulti,
        **_with_tlvs,
        **{k: v for k, v in _SHORT_MESSAGE.items() if not k.startswith(("dest_", "destination"))},
        dest_addresses=st.lists(st.one_of(_SME_ADDRESS, _DISTRIBUTION_LIST), max_size=5).map(tuple),
    ),
    p.SubmitMultiResp: st.one_of(
        st.builds(
            p.SubmitMultiResp,
            **_with_tlvs,
            message_id=c_string(),
            unsuccess_smes=st.lists(_UNSUCCESS, max_size=4).map(tuple),
        ),
        st.builds(p.SubmitMultiResp, **_header, message_id=st.none()),
    ),
    p.DataSm: st.builds(
        p.DataSm,
        **_with_tlvs,
        service_type=c_string(6),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_string(),
        dest_addr_ton=u8,
        dest_addr_npi=u8,
        destination_addr=c_string(),
        esm_class=u8,
        registered_delivery=u8,
        data_coding=u8,
    ),
    p.QuerySm: st.builds(
        p.QuerySm,
        **_with_tlvs,
        message_id=c_string(),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_string(),
    ),
    p.QuerySmResp: st.one_of(
        st.builds(
            p.QuerySmResp,
            **_with_tlvs,
            message_id=c_string(),
            final_date=c_string(17),
            message_state=u8,
            error_code=u8,
        ),
        st.builds(p.QuerySmResp, **_header, message_id=st.none()),
    ),
    p.CancelSm: st.builds(
        p.CancelSm,
        **_with_tlvs,
        service_type=c_string(6),
        message_id=c_string(),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_string(),
        dest_addr_ton=u8,
        dest_addr_npi=u8,
        destination_addr=c_string(),
    ),
    p.ReplaceSm: st.builds(
        p.ReplaceSm,
        **_with_tlvs,
        message_id=c_string(),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_string(),
        schedule_delivery_time=c_string(17),
        validity_period=c_string(17),
        registered_delivery=u8,
        sm_default_msg_id=u8,
        short_message=st.binary(max_size=255),
    ),
    p.AlertNotification: st.builds(
        p.AlertNotification,
        **_with_tlvs,
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_string(),
        esme_addr_ton=u8,
        esme_addr_npi=u8,
        esme_addr=c_string(),
    ),
    p.RawPdu: st.builds(
        p.RawPdu,
        **_header,
        command_id=_raw_ids.filter(lambda cid: cid not in _KNOWN_IDS),
        body=st.binary(max_size=64),
    ),
}

PDU_TYPES: tuple[type[p.Pdu], ...] = tuple(_STRATEGIES)
"""Every PDU class the strategies cover: all of ``PDU_CLASSES`` plus ``RawPdu``."""


def pdus_of(cls: type[p.Pdu]) -> st.SearchStrategy[p.Pdu]:
    """Valid PDUs of one class."""
    return _STRATEGIES[cls]


def any_pdu() -> st.SearchStrategy[p.Pdu]:
    """Valid PDUs of every class."""
    return st.one_of(*_STRATEGIES.values())


def frames() -> st.SearchStrategy[bytes]:
    """Encoded valid PDUs of every class."""
    return any_pdu().map(encode)


VECTORS = Path(__file__).parent.parent / "vectors"


def vector_paths() -> list[Path]:
    """The golden vector files (annotated hex, one PDU each), sorted by name."""
    return sorted(VECTORS.glob("*.hex"))


def load_vector(path: Path) -> bytes:
    """The bytes of an annotated hex file ('#' starts a comment)."""
    lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return bytes.fromhex("".join(lines))
