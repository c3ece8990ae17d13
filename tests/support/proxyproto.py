"""PROXY protocol headers written out by hand from the spec (not by the parser under test)."""

from __future__ import annotations

import ipaddress
import struct

# The v2 signature, octet by octet (section 2.2 of HAProxy's proxy-protocol.txt).
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def v2(command: int, fam: int, body: bytes) -> bytes:
    """A v2 header: version 2 with ``command`` (0 LOCAL, 1 PROXY), family byte, ``body``."""
    return SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return v2(0x1, 0x11, body + struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    body = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return v2(0x1, 0x21, body + struct.pack("!HH", sport, dport) + tlvs)


def v2_local() -> bytes:
    """What a balancer's health check sends: LOCAL, no addresses."""
    return v2(0x0, 0x00, b"")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()
