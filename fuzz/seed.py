"""Write the seed corpus of each fuzz target from the golden vectors in tests/vectors.

    python -m fuzz.seed

Rewrites the ``seed-*`` files of fuzz/corpus/<target>/ and leaves every other file alone
(inputs that once crashed a target are kept there as ``crash-*``, for good).
"""

from __future__ import annotations

import struct
from pathlib import Path

from fuzz.targets import LIMITS, SessionFlags, join_input

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
CORPUS = Path(__file__).resolve().parent / "corpus"


def load_vector(path: Path) -> bytes:
    """The bytes of an annotated hex file ('#' starts a comment)."""
    lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return bytes.fromhex("".join(lines))


def vectors() -> dict[str, bytes]:
    return {path.stem: load_vector(path) for path in sorted(VECTORS.glob("*.hex"))}


def with_seq(frame: bytes, seq: int) -> bytes:
    return frame[:12] + struct.pack(">I", seq) + frame[16:]


def decode_seeds(v: dict[str, bytes]) -> dict[str, bytes]:
    return {f"seed-{name}": frame for name, frame in v.items()}


def framing_seeds(v: dict[str, bytes]) -> dict[str, bytes]:
    stream = b"".join(v.values())
    big = LIMITS.index(65536)
    small = LIMITS.index(64)
    oversize = struct.pack(">IIII", 70000, 4, 0, 99)
    undersize = struct.pack(">IIII", 8, 4, 0, 98)
    return {
        "seed-all-one-read": join_input(big, [], stream),
        "seed-all-byte-by-byte": join_input(big, [1], stream),
        "seed-all-odd-chunks": join_input(big, [7, 3, 64, 1, 200], stream),
        "seed-limit-64": join_input(small, [5, 17], stream),
        "seed-oversize-length": join_input(big, [9], v["submit_sm"] + oversize + v["unbind"]),
        "seed-undersize-length": join_input(big, [], v["enquire_link"] + undersize),
        "seed-partial-tail": join_input(big, [3], v["submit_sm"] + v["submit_sm_tlvs"][:30]),
    }


_SMSC_REQUESTS = (
    "submit_sm",
    "submit_sm_tlvs",
    "submit_multi",
    "data_sm",
    "query_sm",
    "cancel_sm",
    "replace_sm",
    "enquire_link",
    "vendor_pdu",
    "deliver_sm_receipt",  # the wrong direction: refused
    "submit_sm_resp",  # a response nobody asked for
    "unbind",
)
_ESME_INBOUND = (
    "deliver_sm_receipt",
    "data_sm",
    "alert_notification",
    "enquire_link",
    "submit_sm",  # the wrong direction: refused
    "unbind",
)


def session_seeds(v: dict[str, bytes]) -> dict[str, bytes]:
    smsc = v["bind_transceiver"] + b"".join(v[name] for name in _SMSC_REQUESTS)
    transmitter = v["bind_transmitter"] + v["submit_sm"] + v["deliver_sm_receipt"] + v["unbind"]
    before_bind = v["submit_sm"] + v["enquire_link"] + v["bind_receiver"] + v["submit_sm"]
    esme = (
        with_seq(v["bind_transceiver_resp"], 1)
        + with_seq(v["submit_sm_resp"], 2)
        + with_seq(v["submit_sm_resp_error"], 3)
        + b"".join(v[name] for name in _ESME_INBOUND)
    )
    esme_refused = with_seq(v["bind_receiver_resp_error"], 1) + with_seq(v["generic_nack"], 1)
    esme_outbind = v["outbind"] + v["enquire_link"]
    defer = SessionFlags.DEFER
    return {
        "seed-smsc-trx": join_input(0, [], smsc),
        "seed-smsc-trx-chunked": join_input(0, [11, 40], smsc),
        "seed-smsc-trx-deferred": join_input(defer, [200], smsc),
        "seed-smsc-tx": join_input(0, [], transmitter),
        "seed-smsc-before-bind": join_input(0, [], before_bind),
        "seed-smsc-refused-bind": join_input(SessionFlags.REFUSE_BINDS, [], smsc),
        "seed-smsc-small-pdus": join_input(SessionFlags.SMALL_PDUS, [], smsc),
        "seed-smsc-no-vendor": join_input(SessionFlags.NO_VENDOR, [], smsc),
        "seed-esme": join_input(SessionFlags.ESME, [], esme),
        "seed-esme-chunked": join_input(SessionFlags.ESME | defer, [13], esme),
        "seed-esme-refused": join_input(SessionFlags.ESME, [], esme_refused),
        "seed-esme-outbind": join_input(SessionFlags.ESME, [], esme_outbind),
    }


# PROXY protocol headers as HAProxy's proxy-protocol.txt lays them out (v2: signature,
# version and command, family, length, addresses, ports, TLVs).
_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_TCP4 = (
    _V2 + b"\x21\x11\x00\x0c" + bytes([192, 168, 0, 1, 192, 168, 0, 11]) + b"\xdc\x04\x01\xbb"
)
_V2_TCP6 = (
    _V2 + b"\x21\x21\x00\x24" + bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x04\xd2\x0a\xd7"
)
_V2_TLVS = (
    _V2
    + b"\x21\x11\x00\x1e"
    + bytes([10, 1, 2, 3, 10, 0, 0, 9])
    + b"\x9c\x40\x0a\xd7"
    + b"\x01\x00\x04smpp"
    + b"\x04\x00\x00"
    + b"\x20\x00\x05\x01\x00\x00\x00\x00"
)


def proxy_header_seeds(v: dict[str, bytes]) -> dict[str, bytes]:
    bind = v["bind_transceiver"]
    return {
        "seed-v1-tcp4": join_input(
            0, [], b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + bind
        ),
        "seed-v1-tcp6": join_input(
            0, [5, 30], b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2775\r\n" + bind
        ),
        "seed-v1-unknown": join_input(0, [1], b"PROXY UNKNOWN\r\n" + bind),
        "seed-v2-tcp4": join_input(0, [], _V2_TCP4 + bind),
        "seed-v2-tcp6": join_input(0, [13, 3], _V2_TCP6 + bind),
        "seed-v2-tlvs": join_input(0, [20], _V2_TLVS + bind),
        "seed-v2-local": join_input(0, [], _V2 + b"\x20\x00\x00\x00" + bind),
        "seed-no-header": join_input(0, [], bind),
    }


def seeds() -> dict[str, dict[str, bytes]]:
    """Target name -> file name -> contents."""
    v = vectors()
    return {
        "decode": decode_seeds(v),
        "framing": framing_seeds(v),
        "session": session_seeds(v),
        "proxy_header": proxy_header_seeds(v),
    }


def write() -> int:
    count = 0
    for target, files in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            if old.name not in files:
                old.unlink()
        for name, data in files.items():
            (folder / name).write_bytes(data)
            count += 1
    return count


if __name__ == "__main__":
    print(f"{write()} seed files in {CORPUS}")
