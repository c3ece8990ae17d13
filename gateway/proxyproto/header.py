"""The PROXY protocol header, read from the first octets of a connection.

``parse(data)`` takes every octet received so far and answers ``None`` (not enough yet: read
more and call again with all of it), a ``ProxyHeader`` (the addresses it names and how many
octets it took; the rest of ``data`` is the relayed connection's own), or raises
``ProxyHeaderError`` (not a header this receiver accepts: close the connection). It decides
as early as the octets allow: a first octet that starts neither version is refused at once.

Version 1 is one text line, ``PROXY TCP4|TCP6|UNKNOWN ... CRLF``, at most 107 octets.
Version 2 is a 12-octet signature, a version and command octet, a family and protocol octet
and a big-endian length of what follows (addresses, then TLVs, which are skipped).

What is accepted, and why:

- v1 ``TCP4`` / ``TCP6`` with the addresses and ports in their canonical forms (no leading
  zeros, single spaces, CRLF); ``UNKNOWN`` (anything up to the CRLF) means "use the
  connection's own addresses", as do the v2 ``LOCAL`` command (a balancer's health check)
  and a v2 ``PROXY`` with ``AF_UNSPEC``;
- v2 ``PROXY`` over ``STREAM`` with ``AF_INET`` or ``AF_INET6``. The spec lets a receiver
  treat the other valid families (``AF_UNIX``, datagrams) as unspecified; an SMPP client
  reached over them is a misconfiguration, and taking it for the balancer itself would put
  every such client under one address, so they are refused instead;
- a v2 length above ``MAX_V2_LENGTH`` is refused before its octets are awaited: a header is
  sent in one segment, and a sender announcing kilobytes is not a balancer.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from gateway.errors import GatewayError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest line, CRLF included ("PROXY UNKNOWN" with two IPv6 addresses)
# Addresses and TLVs after the 16 fixed octets. HAProxy's largest (both addresses, the TLS
# TLVs with a client certificate's CN, a unique id) stay well under it.
MAX_V2_LENGTH = 2048

_V2_FIXED = 16
_LOCAL, _PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_UNSPEC, _STREAM, _DGRAM = 0x0, 0x1, 0x2
_V2_ADDRESS_LENGTH = {_AF_INET: 12, _AF_INET6: 36}
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_IPV4 = re.compile(rb"[0-9.]{7,15}")
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")


class ProxyHeaderError(GatewayError):
    """Not a PROXY protocol header this receiver accepts: the connection must be closed."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # an IPv4 or IPv6 address in its compressed form
    port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: ``source`` and ``destination`` are the relayed connection's, or
    ``None`` when the sender says to use the connection's own (v1 UNKNOWN, v2 LOCAL or
    AF_UNSPEC); ``consumed`` octets of the input were the header."""

    version: int
    source: Endpoint | None
    destination: Endpoint | None
    consumed: int

    @property
    def local(self) -> bool:
        """The connection's own addresses stand (a health check, or an unknown family)."""
        return self.source is None


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """The header at the start of ``data``, ``None`` if more octets are needed, or
    ``ProxyHeaderError``."""
    # A copy of at most one header's worth: nothing of the caller's buffer stays exported.
    octets = bytes(data[: _V2_FIXED + MAX_V2_LENGTH])
    head = octets[:12]
    if V2_SIGNATURE.startswith(head):
        return _parse_v2(octets) if head else None
    if V1_PREFIX.startswith(head[:6]):
        return _parse_v1(octets)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(octets: bytes) -> ProxyHeader | None:
    window = octets[:V1_MAX_LENGTH]
    end = window.find(b"\r\n")
    if end < 0:
        if len(window) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"v1: no CRLF in the first {V1_MAX_LENGTH} octets")
        if b"\n" in window or b"\r" in window[:-1]:
            raise ProxyHeaderError("v1: the line must end with CRLF")
        return None
    line = window[:end]
    consumed = end + 2
    if b"\n" in line or b"\r" in line:
        # A CR or LF alone ends no line: refused wherever it is, as before the CRLF came.
        raise ProxyHeaderError("v1: the line must end with CRLF")
    parts = line.split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("v1: expected PROXY and a protocol")
    if parts[1] == b"UNKNOWN":
        # The rest of the line is to be ignored, whatever it holds.
        return ProxyHeader(version=1, source=None, destination=None, consumed=consumed)
    if parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("v1: the protocol must be TCP4, TCP6 or UNKNOWN")
    if len(parts) != 6:
        raise ProxyHeaderError("v1: expected two addresses and two ports, single spaces apart")
    six = parts[1] == b"TCP6"
    source = _v1_endpoint(parts[2], parts[4], six=six)
    destination = _v1_endpoint(parts[3], parts[5], six=six)
    return ProxyHeader(version=1, source=source, destination=destination, consumed=consumed)


def _v1_endpoint(address: bytes, port: bytes, *, six: bool) -> Endpoint:
    if not _V1_PORT.fullmatch(port) or int(port) > 65535:
        raise ProxyHeaderError("v1: a port must be 0..65535 in decimal, no leading zeros")
    # The character classes first: ipaddress also takes forms the header may not use
    # (an IPv6 scope "%eth0"), and every octet must be ASCII.
    pattern = _V1_IPV6 if six else _V1_IPV4
    if not pattern.fullmatch(address):
        raise ProxyHeaderError(f"v1: not an {'IPv6' if six else 'IPv4'} address")
    text = address.decode("ascii")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv6Address(text) if six else ipaddress.IPv4Address(text)
        )
    except ValueError:
        # IPv4Address refuses leading zeros itself (Python 3.9.5 on).
        raise ProxyHeaderError(f"v1: not an {'IPv6' if six else 'IPv4'} address") from None
    return Endpoint(str(ip), int(port))


def _parse_v2(octets: bytes) -> ProxyHeader | None:
    if len(octets) < 13:
        return None
    version, command = octets[12] >> 4, octets[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"v2: version {version} (only 2 exists)")
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"v2: unknown command {command:#x}")
    if len(octets) < _V2_FIXED:
        return None
    family, protocol = octets[13] >> 4, octets[13] & 0x0F
    (length,) = struct.unpack_from("!H", octets, 14)
    if length > MAX_V2_LENGTH:
        raise ProxyHeaderError(f"v2: a length of {length} octets (at most {MAX_V2_LENGTH})")
    consumed = _V2_FIXED + length
    if command == _LOCAL:
        # The family and whatever follows are to be skipped unread.
        if len(octets) < consumed:
            return None
        return ProxyHeader(version=2, source=None, destination=None, consumed=consumed)
    if family > _AF_UNIX or protocol > _DGRAM:
        raise ProxyHeaderError(f"v2: invalid family and protocol {octets[13]:#04x}")
    if family == _AF_UNSPEC:
        if len(octets) < consumed:
            return None
        return ProxyHeader(version=2, source=None, destination=None, consumed=consumed)
    if family not in _V2_ADDRESS_LENGTH or protocol != _STREAM:
        raise ProxyHeaderError(f"v2: family and protocol {octets[13]:#04x} (only TCP is relayed)")
    needed = _V2_ADDRESS_LENGTH[family]
    if length < needed:
        raise ProxyHeaderError(f"v2: a length of {length} octets cannot hold the addresses")
    if len(octets) < consumed:
        return None
    body = octets[_V2_FIXED:consumed]
    _check_tlvs(body[needed:])
    size = 4 if family == _AF_INET else 16
    kind = ipaddress.IPv4Address if family == _AF_INET else ipaddress.IPv6Address
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * size)
    source = Endpoint(str(kind(body[:size])), source_port)
    destination = Endpoint(str(kind(body[size : 2 * size])), destination_port)
    return ProxyHeader(version=2, source=source, destination=destination, consumed=consumed)


def _check_tlvs(tlvs: bytes) -> None:
    """The TLVs are skipped, but each must fit in the declared length: octets that do not
    parse as TLVs are a broken header."""
    at = 0
    while at < len(tlvs):
        if len(tlvs) - at < 3:
            raise ProxyHeaderError("v2: a TLV cut short by the header's length")
        (size,) = struct.unpack_from("!H", tlvs, at + 1)
        at += 3 + size
        if at > len(tlvs):
            raise ProxyHeaderError("v2: a TLV longer than the header's length")
