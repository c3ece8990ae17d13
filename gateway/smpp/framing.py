"""Cut a TCP byte stream into whole SMPP PDUs; no I/O.

Like Cloudhopper's decoder: wait for the 4-byte command_length, reject a length below the
header size or above the configured maximum (the stream can no longer be framed: the caller
answers generic_nack if it can and closes), then wait for the whole PDU.
"""

from __future__ import annotations

import struct

from gateway.smpp.constants import HEADER_LENGTH, CommandStatus
from gateway.smpp.errors import FramingError

_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IIII")


class FrameBuffer:
    """Accumulates received bytes and hands out complete frames (header included), in order."""

    __slots__ = ("_buffer", "_error", "max_pdu_length")

    def __init__(self, max_pdu_length: int = 65536) -> None:
        if max_pdu_length < HEADER_LENGTH:
            raise ValueError(f"max_pdu_length {max_pdu_length} is below the header length")
        self.max_pdu_length = max_pdu_length
        self._buffer = bytearray()
        # Set once framing is lost; every later call raises a copy of it.
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._raise_if_dead()
        self._buffer += data

    def frames(self) -> list[bytes]:
        """Every complete frame buffered, in order; raises FramingError on a bad command_length.

        Frames before a bad length are returned first; the next call raises.
        """
        self._raise_if_dead()
        buf = self._buffer
        end = len(buf)
        pos = 0
        out: list[bytes] = []
        # One memoryview for the whole pass: each frame is copied exactly once, and the consumed
        # prefix is dropped with a single del (amortised O(1) on a bytearray), so a read carrying
        # hundreds of PDUs costs linear time.
        with memoryview(buf) as view:
            while end - pos >= 4:
                (length,) = _U32.unpack_from(buf, pos)
                if length < HEADER_LENGTH or length > self.max_pdu_length:
                    if not out:
                        self._error = self._framing_error(length, pos)
                    break
                if end - pos < length:
                    break
                out.append(view[pos : pos + length].tobytes())
                pos += length
        if pos:
            del buf[:pos]
        self._raise_if_dead()
        return out

    def _framing_error(self, length: int, pos: int) -> FramingError:
        buf = self._buffer
        command_id = sequence_number = None
        if len(buf) - pos >= HEADER_LENGTH:
            _, command_id, _, sequence_number = _HEADER.unpack_from(buf, pos)
        return FramingError(
            f"command_length {length} outside {HEADER_LENGTH}..{self.max_pdu_length}",
            status=CommandStatus.ESME_RINVCMDLEN,
            command_id=command_id,
            sequence_number=sequence_number,
        )

    def _raise_if_dead(self) -> None:
        error = self._error
        if error is not None:
            # A fresh exception each time, so tracebacks do not pile up on one instance.
            raise FramingError(
                str(error),
                status=error.status,
                command_id=error.command_id,
                sequence_number=error.sequence_number,
            )
