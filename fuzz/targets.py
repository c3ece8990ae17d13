"""The fuzz targets: functions of one ``bytes`` input that raise when the SMPP core misbehaves.

Each target feeds hostile bytes to one layer of ``gateway.smpp`` and checks what it promises:

- ``decode``: ``codec.decode`` of one frame raises only ``PduDecodeError`` (``FramingError`` for
  fewer than 16 bytes), with a documented status and the header's command_id and
  sequence_number; a frame it accepts re-encodes to the same bytes and decodes to the same PDU;
  ``decode_lenient`` never fails on a whole header.
- ``framing``: ``FrameBuffer`` fed a stream cut into arbitrary chunks hands out exactly the
  frames a reference parser finds, raises only ``FramingError`` and only for a bad
  command_length, and never holds ``max_pdu_length`` bytes or more once drained.
- ``session``: a ``Session`` (either role) fed the stream raises nothing at all, writes only
  well-formed frames, answers each request at most once (exactly once while it stays open),
  and keeps its owed-answer count right.

- ``proxy_header``: ``gateway.proxyproto.header.parse`` fed the stream in chunks (as the
  listener feeds it, everything so far each time) raises only ``ProxyHeaderError``; its first
  verdict (a header or an error) is the whole stream's too; a header needs none of the octets
  after it; and no input of a whole maximal header's length is left undecided.

Any other exception escaping a target (IndexError, UnicodeDecodeError, struct.error,
RecursionError, MemoryError, ...) is a bug, as is a ``PropertyError`` raised by a check. Hangs
are caught by the fuzzer's ``-timeout``.

The targets import nothing of atheris: ``fuzz.codec`` runs them under the fuzzer and the test
suite replays the committed corpus through them (tests/smpp/test_fuzz_harness.py).

Input formats (``fuzz.seed`` writes the seed corpus in these):

- decode: the frame itself.
- framing: ``[limit selector][n][n chunk sizes][stream]``; the stream is fed in chunks of the
  given sizes (``byte + 1`` octets each, cycled), ``max_pdu_length`` is ``LIMITS[selector %
  len(LIMITS)]``.
- session: ``[flags][n][n chunk sizes][stream]``, the chunking as for framing; ``flags`` picks
  the role and the harness's behaviour (see ``SessionFlags``).
- proxy_header: ``[unused][n][n chunk sizes][stream]``, the chunking as for framing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from collections import Counter
from collections.abc import Callable, Iterator

from gateway.proxyproto.header import MAX_V2_LENGTH, ProxyHeader, ProxyHeaderError, parse
from gateway.smpp.codec import (
    decode,
    decode_header,
    decode_lenient,
    encode,
    error_response,
    with_sequence,
)
from gateway.smpp.constants import (
    HEADER_LENGTH,
    REQUESTS_WITHOUT_RESPONSE,
    RESPONSE_BIT,
    CommandStatus,
)
from gateway.smpp.errors import FramingError, LocalProtocolError, PduDecodeError
from gateway.smpp.events import (
    BindCompleted,
    Event,
    RequestReceived,
    SessionClosed,
)
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.pdu import (
    BindRequest,
    BindTransceiver,
    RawPdu,
    SubmitSm,
    SubmitSmResp,
)
from gateway.smpp.session import Role, Session, SessionConfig

__all__ = [
    "LIMITS",
    "TARGETS",
    "PropertyError",
    "decode_target",
    "framing_target",
    "proxy_header_target",
    "session_target",
]

_HEADER = struct.Struct(">IIII")
_U32 = struct.Struct(">I")

# The statuses codec.decode documents for a body it cannot decode.
DECODE_STATUSES = frozenset(
    {
        CommandStatus.ESME_RINVCMDLEN,
        CommandStatus.ESME_RINVMSGLEN,
        CommandStatus.ESME_RINVOPTPARSTREAM,
        CommandStatus.ESME_RINVDESTFLAG,
    }
)
LIMITS = (16, 17, 20, 33, 64, 300, 4096, 65536)
_NO_RESPONSE = frozenset(int(c) for c in REQUESTS_WITHOUT_RESPONSE)
_MAX_LIMIT = 0xFFFFFFFF


class PropertyError(AssertionError):
    """A property of the SMPP core does not hold for this input."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise PropertyError(message)


# --- input plumbing ----------------------------------------------------------------------------


def split_input(data: bytes) -> tuple[int, list[int], bytes]:
    """``[control][n][n chunk sizes][stream]`` -> (control, chunk sizes, stream)."""
    if not data:
        return 0, [], b""
    control = data[0]
    count = data[1] & 0x0F if len(data) > 1 else 0
    sizes = [b + 1 for b in data[2 : 2 + count]]
    return control, sizes, data[2 + count :]


def join_input(control: int, sizes: list[int], stream: bytes) -> bytes:
    """The inverse of ``split_input`` (sizes 1..256, at most 15 of them)."""
    assert len(sizes) <= 15
    assert all(1 <= s <= 256 for s in sizes)
    return bytes([control, len(sizes), *(s - 1 for s in sizes)]) + stream


def chunked(stream: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``stream`` cut into pieces of ``sizes`` (cycled); one piece when there are none."""
    if not sizes:
        if stream:
            yield stream
        return
    pos = 0
    index = 0
    while pos < len(stream):
        size = sizes[index % len(sizes)]
        yield stream[pos : pos + size]
        pos += size
        index += 1


@dataclasses.dataclass
class Reference:
    """What a plain reading of the whole stream finds: the complete frames before the first bad
    command_length, where that bad length is (None if none), and how many bytes were consumed."""

    frames: list[bytes]
    consumed: int
    bad_at: int | None


def reference_frames(stream: bytes, limit: int) -> Reference:
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 4:
        (length,) = _U32.unpack_from(stream, pos)
        if length < HEADER_LENGTH or length > limit:
            return Reference(frames, pos, pos)
        if len(stream) - pos < length:
            break
        frames.append(stream[pos : pos + length])
        pos += length
    return Reference(frames, pos, None)


# --- decode ------------------------------------------------------------------------------------


def decode_target(data: bytes) -> None:
    """One frame as received, and the same frame with its command_length made right."""
    check_decode(data)
    if len(data) >= HEADER_LENGTH and _U32.unpack_from(data)[0] != len(data):
        check_decode(_U32.pack(len(data)) + data[4:])


def check_decode(frame: bytes) -> None:
    try:
        pdu = decode(frame)
    except FramingError:
        check(len(frame) < HEADER_LENGTH, "FramingError from decode of a whole header")
        return
    except PduDecodeError as exc:
        check(len(frame) >= HEADER_LENGTH, "PduDecodeError for less than a header")
        _, command_id, status, seq = _HEADER.unpack_from(frame)
        check(
            (exc.command_id, exc.sequence_number) == (command_id, seq),
            f"PduDecodeError addressed to {exc.command_id:#x}/{exc.sequence_number}, "
            f"the header says {command_id:#x}/{seq}",
        )
        check(exc.status in DECODE_STATUSES, f"undocumented decode status {exc.status:#x}")
        # Responses are never answered: the relay keeps their bytes whatever they hold.
        lenient = decode_lenient(frame)
        check(type(lenient) is RawPdu, f"decode_lenient gave {type(lenient).__name__}")
        check(
            (lenient.command_id, lenient.command_status, lenient.sequence_number)
            == (command_id, status, seq),
            "decode_lenient lost the header",
        )
        if _U32.unpack_from(frame)[0] == len(frame):  # as FrameBuffer hands frames out
            check(encode(lenient) == frame, "decode_lenient's RawPdu does not re-encode the frame")
        return
    check(len(frame) >= HEADER_LENGTH, "decode accepted less than a header")
    again = encode(pdu)  # a PduEncodeError here is a bug: decode accepted the frame
    check(again == frame, f"encode(decode(frame)) differs from the frame for {pdu!r}")
    check(decode(again) == pdu, "decode(encode(pdu)) != pdu")
    check(decode_lenient(frame) == pdu, "decode_lenient disagrees with decode")
    header = decode_header(frame)
    check(
        tuple(header) == (len(frame), pdu.command_id, pdu.command_status, pdu.sequence_number),
        "decode_header disagrees with decode",
    )
    seq = (pdu.sequence_number + 1) & 0xFFFFFFFF
    moved = with_sequence(frame, seq)
    check(len(moved) == len(frame) and moved[16:] == frame[16:], "with_sequence changed the body")
    check(
        decode(moved) == dataclasses.replace(pdu, sequence_number=seq),
        "with_sequence changed more than the sequence number",
    )


# --- framing -----------------------------------------------------------------------------------


def framing_target(data: bytes) -> None:
    control, sizes, stream = split_input(data)
    limit = LIMITS[control % len(LIMITS)]
    buffer = FrameBuffer(limit)
    got: list[bytes] = []
    error: FramingError | None = None
    fed = 0
    fed_at_error = 0
    framed = 0  # bytes handed out as frames
    for chunk in chunked(stream, sizes):
        if error is not None:
            try:
                buffer.feed(chunk)
            except FramingError:
                pass
            else:
                raise PropertyError("feed accepted bytes after framing was lost")
            continue
        buffer.feed(chunk)
        fed += len(chunk)
        check(buffer.buffered == fed - framed, "buffered miscounts after feed")
        try:
            framed += _drain(buffer, limit, got)
        except FramingError as exc:
            error = exc
            fed_at_error = fed
            try:
                buffer.frames()
            except FramingError:
                pass
            else:
                raise PropertyError("frames() returned after it raised FramingError") from None
            continue
        check(buffer.buffered == fed - framed, "buffered miscounts after frames()")
        # The bound: once drained, less than one maximal PDU is held.
        check(
            buffer.buffered < limit,
            f"{buffer.buffered} bytes buffered with max_pdu_length {limit}",
        )
    reference = reference_frames(stream, limit)
    check(got == reference.frames, "frames differ from a plain reading of the stream")
    if reference.bad_at is None:
        check(error is None, f"FramingError without a bad command_length: {error}")
        check(buffer.buffered == len(stream) - reference.consumed, "wrong bytes left buffered")
        return
    check(error is not None, "a bad command_length was not reported")
    assert error is not None
    check(error.status == CommandStatus.ESME_RINVCMDLEN, f"framing status {error.status:#x}")
    # The error is raised as soon as the bad length is in; it names the PDU (for the
    # generic_nack) when its whole header had arrived by then.
    bad = reference.bad_at
    if fed_at_error - bad >= HEADER_LENGTH:
        _, command_id, _, seq = _HEADER.unpack_from(stream, bad)
        check(
            (error.command_id, error.sequence_number) == (command_id, seq),
            "FramingError does not carry the bad header's command_id and sequence_number",
        )
    else:
        check(
            error.command_id is None and error.sequence_number is None,
            "FramingError names a PDU whose header had not arrived",
        )


def _drain(buffer: FrameBuffer, limit: int, got: list[bytes]) -> int:
    """frames() until not ready, as the session calls it; each frame checked. The bytes
    handed out."""
    idle = 0
    total = 0
    while True:
        out = buffer.frames()
        for frame in out:
            check(type(frame) is bytes, f"a frame of type {type(frame).__name__}")
            check(HEADER_LENGTH <= len(frame) <= limit, f"a frame of {len(frame)} bytes")
            check(_U32.unpack_from(frame)[0] == len(frame), "frame length != command_length")
            total += len(frame)
        got.extend(out)
        if not buffer.ready:
            return total
        idle = 0 if out else idle + 1
        check(idle < 2, "ready, yet frames() gives nothing and raises nothing")


# --- session -----------------------------------------------------------------------------------


class SessionFlags:
    """Bits of the session input's first byte."""

    ESME = 0x01  # the session is the ESME (upstream leg) rather than the SMSC (client leg)
    REFUSE_BINDS = 0x02  # SMSC role: answer binds with ESME_RBINDFAIL
    SMALL_PDUS = 0x04  # max_pdu_length 64
    NO_VENDOR = 0x08  # relay_vendor_pdus = false
    DEFER = 0x10  # answer requests only after the next chunk (unbinds arrive with answers owed)
    FAST_CLOCK = 0x20  # 0.1 s per chunk instead of 1 s (timers fire less)


def session_target(data: bytes) -> None:
    flags, sizes, stream = split_input(data)
    SessionRun(flags).run(stream, sizes)


class SessionRun:
    """One session fed a hostile stream by a well-behaved application."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.role = Role.ESME if flags & SessionFlags.ESME else Role.SMSC
        self.config = SessionConfig(
            window_size=4,
            response_timeout_s=5.0,
            enquire_link_interval_s=3.0,
            bind_timeout_s=20.0,
            unbind_timeout_s=2.0,
            max_pdu_length=64 if flags & SessionFlags.SMALL_PDUS else 65536,
            relay_vendor_pdus=not flags & SessionFlags.NO_VENDOR,
        )
        self.now = 0.0
        self.session = Session(self.role, self.config, self.now)
        self.owed: list[bytes] = []  # our answers not sent yet
        self.answered = 0  # answers we sent
        self.surfaced = 0  # requests surfaced that take an answer
        self.out = bytearray()
        self.closed_events = 0
        self.submits_sent = 0

    def run(self, stream: bytes, sizes: list[int]) -> None:
        session = self.session
        if self.role is Role.ESME:
            session.send_request(BindTransceiver(system_id="fuzz", password="pw"), self.now)
        step = 0.1 if self.flags & SessionFlags.FAST_CLOCK else 1.0
        for chunk in chunked(stream, sizes):
            self.now += step
            self.handle(session.receive_data(chunk, self.now))
            if not self.flags & SessionFlags.DEFER:
                self.answer()
            timer = session.get_timer()
            if timer is not None and timer <= self.now:
                self.handle(session.handle_timer(self.now))
            self.out += session.data_to_send()
            if self.flags & SessionFlags.DEFER:
                self.answer()
        self.answer()
        self.out += session.data_to_send()
        self.verify(stream)

    def handle(self, events: list[Event]) -> None:
        check(self.closed_events == 0 or not events, f"events after SessionClosed: {events}")
        for event in events:
            if isinstance(event, SessionClosed):
                self.closed_events += 1
                check(self.session.closed, "SessionClosed but the session is not closed")
            elif isinstance(event, RequestReceived):
                self.on_request(event)
            elif isinstance(event, BindCompleted) and self.role is Role.ESME:
                for _ in range(2):
                    self.submit()
        check(self.closed_events <= 1, "SessionClosed twice")

    def on_request(self, event: RequestReceived) -> None:
        pdu = event.pdu
        frame = event.frame
        check(encode(pdu) == frame, f"RequestReceived.pdu does not re-encode its frame: {pdu!r}")
        command_id = pdu.command_id
        check(not command_id & RESPONSE_BIT, "a response surfaced as a request")
        if command_id in _NO_RESPONSE:
            return
        self.surfaced += 1
        seq = pdu.sequence_number
        if isinstance(pdu, BindRequest) and self.flags & SessionFlags.REFUSE_BINDS:
            answer = error_response(command_id, seq, CommandStatus.ESME_RBINDFAIL)
        elif isinstance(pdu, SubmitSm):
            answer = encode(SubmitSmResp(sequence_number=seq, message_id=f"m{seq}"))
        else:
            # A bind's own *_resp OK (it binds), a bare OK response, or generic_nack (vendor).
            answer = error_response(command_id, seq, CommandStatus.ESME_ROK)
        self.owed.append(answer)

    def answer(self) -> None:
        session = self.session
        owed, self.owed = self.owed, []
        if session.closed:
            return
        for frame in owed:
            session.send_response(frame, self.now)  # must not raise: each one is owed
            self.answered += 1

    def submit(self) -> None:
        self.submits_sent += 1
        pdu = SubmitSm(destination_addr="15551234567", short_message=b"fuzz")
        # The state may no longer allow it (an unbind came with the bind_resp).
        with contextlib.suppress(LocalProtocolError):
            self.session.send_request(pdu, self.now, context=self.submits_sent)

    def verify(self, stream: bytes) -> None:
        session = self.session
        if not session.closed:
            check(self.closed_events == 0, "SessionClosed, yet the session is open")
            check(
                session.unanswered == self.surfaced - self.answered,
                f"session owes {session.unanswered}, the application "
                f"{self.surfaced - self.answered}",
            )
        written = reference_frames(bytes(self.out), _MAX_LIMIT)
        check(
            written.bad_at is None and written.consumed == len(self.out),
            "the session wrote something that is not whole SMPP frames",
        )
        responses: Counter[int] = Counter()
        for frame in written.frames:
            _, command_id, _, seq = _HEADER.unpack_from(frame)
            if command_id & RESPONSE_BIT:
                responses[seq] += 1
                decode_lenient(frame)
            else:
                decode(frame)  # our own requests are well-formed
        received = reference_frames(stream, self.config.max_pdu_length)
        requests: Counter[int] = Counter()
        for frame in received.frames:
            _, command_id, _, seq = _HEADER.unpack_from(frame)
            if not command_id & RESPONSE_BIT and command_id not in _NO_RESPONSE:
                requests[seq] += 1
        if received.bad_at is not None and len(stream) - received.bad_at >= HEADER_LENGTH:
            (seq,) = _U32.unpack_from(stream, received.bad_at + 12)
            requests[seq] += 1  # the generic_nack before the close
        for seq, count in responses.items():
            check(
                count <= requests[seq],
                f"{count} responses with sequence_number {seq} to {requests[seq]} requests",
            )
        if not session.closed:
            check(received.bad_at is None, "a bad command_length left the session open")
            check(responses == requests, "an open session left a request unanswered")


# --- proxy_header ------------------------------------------------------------------------------

_LONGEST_HEADER = 16 + MAX_V2_LENGTH


def _verdict(octets: bytes) -> ProxyHeader | ProxyHeaderError | None:
    try:
        return parse(octets)
    except ProxyHeaderError as exc:
        return exc


def proxy_header_target(data: bytes) -> None:
    """The PROXY header parser as the listener drives it: all octets so far, after each read."""
    _, sizes, stream = split_input(data)
    whole = _verdict(stream)
    check(
        whole is not None or len(stream) < _LONGEST_HEADER,
        f"{len(stream)} octets and still no verdict (a header is at most {_LONGEST_HEADER})",
    )
    buffered = b""
    for chunk in chunked(stream, sizes):
        buffered += chunk
        early = _verdict(buffered)
        if early is None:
            continue
        if isinstance(early, ProxyHeaderError):
            check(isinstance(whole, ProxyHeaderError), "refused early, accepted in full")
            return
        check(early == whole, f"header {early} early, {whole} in full")
        check(early.consumed <= len(buffered), "a header longer than its input")
        check(_verdict(buffered[: early.consumed]) == early, "a header needs octets after it")
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decode": decode_target,
    "framing": framing_target,
    "session": session_target,
    "proxy_header": proxy_header_target,
}
