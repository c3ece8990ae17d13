"""Cut a TCP byte stream into whole SMPP PDUs; no I/O.

Like Cloudhopper's decoder: wait for the 4-byte command_length, reject a length below the
header size or above the configured maximum (the stream can no longer be framed: the caller
answers generic_nack if it can and closes), then wait for the whole PDU.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from gateway.smpp.constants import HEADER_LENGTH, CommandStatus
from gateway.smpp.errors import FramingError

_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IIII")


class FrameBuffer:
    """Accumulates received bytes and hands out complete frames (header included), in order.

    Reads are kept as a list of chunks and joined only once the next frame is complete (or its
    length must be read), so a PDU trickling in a byte at a time costs linear time, and a read
    that carries whole PDUs is sliced into frames with one copy each and no other.
    """

    __slots__ = ("_chunks", "_error", "_need", "_size", "max_pdu_length")

    def __init__(self, max_pdu_length: int = 65536) -> None:
        if max_pdu_length < HEADER_LENGTH:
            raise ValueError(f"max_pdu_length {max_pdu_length} is below the header length")
        self.max_pdu_length = max_pdu_length
        self._chunks: list[bytes] = []
        self._size = 0
        # Bytes that must be buffered before frames() has anything to do: 4 (a length), the
        # length of the frame at the front, or 0 when that length is bad (the next call raises).
        self._need = 4
        # Set once framing is lost; every later call raises a copy of it.
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return self._size

    @property
    def ready(self) -> bool:
        """True when frames() would return a frame or raise right now."""
        return self._size >= self._need and self._size >= 4

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied unless they are ``bytes``, which cannot change)."""
        if self._error is not None:
            self._raise_dead()
        if data:
            chunk = data if type(data) is bytes else bytes(data)
            self._chunks.append(chunk)
            self._size += len(chunk)

    def frames(self) -> list[bytes]:
        """Every complete frame buffered, in order; raises FramingError on a bad command_length.

        Frames before a bad length are returned first; the next call raises.
        """
        if self._error is not None:
            self._raise_dead()
        size = self._size
        if size < self._need or size < 4:
            return []
        chunks = self._chunks
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        limit = self.max_pdu_length
        unpack = _U32.unpack_from
        out: list[bytes] = []
        append = out.append
        pos = 0
        need = 4
        last = size - 4  # the last position where a length can start
        while pos <= last:
            (length,) = unpack(buf, pos)
            if not HEADER_LENGTH <= length <= limit:
                if not out:
                    self._error = self._framing_error(buf, pos, length)
                    self._raise_dead()
                need = 0
                break
            end = pos + length
            if end > size:
                need = length
                break
            append(buf[pos:end])
            pos = end
        if pos == size:
            chunks.clear()
        elif pos:
            self._chunks = [buf[pos:]]
        elif len(chunks) > 1:
            self._chunks = [buf]  # keep the join
        self._size = size - pos
        self._need = need
        return out

    def _framing_error(self, buf: bytes, pos: int, length: int) -> FramingError:
        command_id = sequence_number = None
        if len(buf) - pos >= HEADER_LENGTH:
            _, command_id, _, sequence_number = _HEADER.unpack_from(buf, pos)
        return FramingError(
            f"command_length {length} outside {HEADER_LENGTH}..{self.max_pdu_length}",
            status=CommandStatus.ESME_RINVCMDLEN,
            command_id=command_id,
            sequence_number=sequence_number,
        )

    def _raise_dead(self) -> NoReturn:
        error = self._error
        assert error is not None
        # A fresh exception each time, so tracebacks do not pile up on one instance.
        raise FramingError(
            str(error),
            status=error.status,
            command_id=error.command_id,
            sequence_number=error.sequence_number,
        )
