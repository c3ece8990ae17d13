"""Check SMPP frames against Wireshark's dissector, an implementation independent of ours.

``dissect(frames)`` writes the frames as one client-to-server TCP stream on port 2775 into a
pcap (Ethernet / IPv4 / TCP with a three-way handshake and consistent sequence numbers, so TCP
reassembly runs as on a real capture), runs tshark once over it and returns one dict per SMPP
PDU the dissector found. ``assert_clean(frames)`` fails on a malformed packet, on an expert item
of severity warning or above, or when the dissector did not see exactly the command ids written.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.smpp.pdu import PDU_CLASSES

_KNOWN = frozenset(PDU_CLASSES)
SMPP_PORT = 2775
_CLIENT_PORT = 40001
_CLIENT_IP = bytes((127, 0, 0, 2))
_SERVER_IP = bytes((127, 0, 0, 1))
_MSS = 1460
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08
# Wireshark's expert severities (PDML shows them by name).
_BAD_SEVERITIES = frozenset({"warning", "error"})


def tshark_path() -> str | None:
    """The tshark executable on PATH, or None."""
    return shutil.which("tshark")


@dataclass
class Dissection:
    """What the dissector made of one SMPP PDU."""

    packet: int
    command_length: int
    command_id: int
    command_status: int | None  # None where the dissector does not show it (requests)
    sequence_number: int
    # Every smpp.* field the dissector showed, name -> shown values in order.
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        """The first shown value of ``smpp.<name>``, or None."""
        values = self.fields.get(f"smpp.{name}")
        return values[0] if values else None


@dataclass
class Capture:
    pdus: list[Dissection]
    # (packet number, protocol or field, severity, message) of every expert item.
    expert: list[tuple[int, str, str, str]]
    malformed: list[int]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    words = array("H", data)
    if struct.pack("=H", 1) != struct.pack(">H", 1):
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _packet(src_port: int, dst_port: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    src_ip, dst_ip = (
        (_CLIENT_IP, _SERVER_IP) if src_port == _CLIENT_PORT else (_SERVER_IP, _CLIENT_IP)
    )
    tcp = struct.pack(">HHIIBBHHH", src_port, dst_port, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 6, len(tcp) + len(payload))
    tcp_sum = _checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack(">H", tcp_sum) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    ether = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
    return ether + ip + tcp + payload


def write_pcap(frames: Sequence[bytes], path: Path) -> None:
    """Write ``frames`` as one client-to-server TCP stream; each frame starts a segment."""
    client_isn, server_isn = 1000, 5000
    packets = [
        _packet(_CLIENT_PORT, SMPP_PORT, client_isn, 0, _SYN, b""),
        _packet(SMPP_PORT, _CLIENT_PORT, server_isn, client_isn + 1, _SYN | _ACK, b""),
        _packet(_CLIENT_PORT, SMPP_PORT, client_isn + 1, server_isn + 1, _ACK, b""),
    ]
    seq = client_isn + 1
    for frame in frames:
        for start in range(0, len(frame), _MSS):
            chunk = frame[start : start + _MSS]
            packets.append(
                _packet(_CLIENT_PORT, SMPP_PORT, seq, server_isn + 1, _ACK | _PSH, chunk)
            )
            seq = (seq + len(chunk)) & 0xFFFFFFFF
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]  # linktype Ethernet
    for number, packet in enumerate(packets):
        out.append(struct.pack("<IIII", 1_700_000_000, number, len(packet), len(packet)))
        out.append(packet)
    path.write_bytes(b"".join(out))


def _int(text: str | None) -> int | None:
    return None if text is None else int(text, 0)


def capture(frames: Sequence[bytes]) -> Capture:
    """Run tshark once over ``frames`` and collect the SMPP PDUs and every expert item."""
    tshark = tshark_path()
    if tshark is None:
        raise RuntimeError("tshark is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "smpp.pcap"
        write_pcap(frames, path)
        result = subprocess.run(
            [tshark, "-n", "-r", str(path), "-d", f"tcp.port=={SMPP_PORT},smpp", "-T", "pdml"],
            capture_output=True,
            check=True,
            timeout=60,
        )
    # tshark writes UCS-2 text with emoji as CESU-8 surrogates, which is not UTF-8: read it
    # leniently (the checks use octets and numbers, not decoded text).
    root = ET.fromstring(result.stdout.decode("utf-8", "replace"))
    pdus: list[Dissection] = []
    expert: list[tuple[int, str, str, str]] = []
    malformed: list[int] = []
    for number, packet in enumerate(root.iter("packet"), start=1):
        for proto in packet.iter("proto"):
            name = proto.get("name", "")
            if name == "_ws.malformed":
                malformed.append(number)
            elif name == "smpp":
                pdus.append(_dissection(number, proto))
        for item in packet.iter("field"):
            if item.get("name") == "_ws.expert":
                _expert(number, item, expert)
    return Capture(pdus=pdus, expert=expert, malformed=malformed)


def _expert(number: int, item: ET.Element, out: list[tuple[int, str, str, str]]) -> None:
    severity = message = ""
    for child in item.iter("field"):
        child_name = child.get("name", "")
        if child_name == "_ws.expert.severity":
            severity = child.get("showname", child.get("show", "")).lower()
        elif child_name == "_ws.expert.message":
            message = child.get("show", "")
    parent = item.get("showname", "")
    out.append((number, parent, severity, message))


def _dissection(number: int, proto: ET.Element) -> Dissection:
    shown: dict[str, list[str]] = {}
    for item in proto.iter("field"):
        name = item.get("name", "")
        if name.startswith("smpp."):
            shown.setdefault(name, []).append(item.get("show", ""))

    def first(name: str) -> str | None:
        values = shown.get(name)
        return values[0] if values else None

    return Dissection(
        packet=number,
        command_length=_int(first("smpp.command_length")) or 0,
        command_id=_int(first("smpp.command_id")) or 0,
        command_status=_int(first("smpp.command_status")),
        sequence_number=_int(first("smpp.sequence_number")) or 0,
        fields=shown,
    )


def dissect(frames: Sequence[bytes]) -> list[Dissection]:
    """One dissection per SMPP PDU tshark found in ``frames``, in stream order."""
    return capture(frames).pdus


def assert_clean(frames: Sequence[bytes]) -> list[Dissection]:
    """Fail unless tshark dissects every frame cleanly and sees exactly our command ids.

    Wireshark's view of the spec, stricter than our codec on purpose: an OK response without
    its body is malformed, standard TLVs must have their spec sizes, and a PDU whose
    command_status lies in a reserved range (e.g. 0x112-0x3FF) is not dissected at all, so it
    shows up as a missing command id.
    """
    result = capture(frames)
    assert not result.malformed, f"malformed packets: {result.malformed}"
    bad = [item for item in result.expert if any(s in item[2] for s in _BAD_SEVERITIES)]
    assert not bad, f"expert items of severity warning or above: {bad}"
    # Vendor and unknown command ids are opaque to Wireshark (it leaves them undissected), so
    # only the standard ones are compared; a vendor frame that broke the stream would still
    # show as missing or extra standard PDUs after it.
    written = [cid for cid in (struct.unpack_from(">I", f, 4)[0] for f in frames) if cid in _KNOWN]
    seen = [pdu.command_id for pdu in result.pdus if pdu.command_id in _KNOWN]
    assert seen == written, f"tshark saw command ids {seen}, we wrote {written}"
    return result.pdus
