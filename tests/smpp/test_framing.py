"""FrameBuffer: whole frames out of a byte stream cut anywhere; bad lengths kill the buffer."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandStatus
from gateway.smpp.errors import FramingError
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.pdu import DeliverSm, EnquireLink, SubmitSm, Tlv
from tests.support.strategies import frames as frame_strategy
from tests.support.strategies import load_vector, vector_paths

VECTOR_FRAMES = [load_vector(path) for path in vector_paths()]
STREAM = b"".join(VECTOR_FRAMES)


def collect(chunks: list[bytes], max_pdu_length: int = 65536) -> list[bytes]:
    buffer = FrameBuffer(max_pdu_length)
    out: list[bytes] = []
    for chunk in chunks:
        buffer.feed(chunk)
        out.extend(buffer.frames())
    assert buffer.buffered == 0
    return out


class TestSplitting:
    def test_every_split_point(self) -> None:
        """Cutting the stream of every golden vector at any byte gives the same frames."""
        for cut in range(len(STREAM) + 1):
            assert collect([STREAM[:cut], STREAM[cut:]]) == VECTOR_FRAMES

    def test_one_byte_at_a_time(self) -> None:
        """Feeding single bytes gives each frame as soon as its last byte arrives."""
        buffer = FrameBuffer()
        out: list[bytes] = []
        for index in range(len(STREAM)):
            buffer.feed(STREAM[index : index + 1])
            got = buffer.frames()
            if got:
                assert STREAM[: index + 1].endswith(got[-1])
            out.extend(got)
        assert out == VECTOR_FRAMES

    @given(st.lists(frame_strategy(), max_size=12), st.data())
    def test_random_chunks_of_random_frames(self, frames: list[bytes], data: st.DataObject) -> None:
        """Any frames, concatenated and cut at arbitrary points, come out whole and in order."""
        stream = b"".join(frames)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        assert collect(chunks) == frames

    def test_hundreds_of_frames_in_one_read(self) -> None:
        """One read carrying thousands of PDUs yields all of them, decodable, in order."""
        pdus = [
            SubmitSm(sequence_number=n, destination_addr=str(n), short_message=b"x" * (n % 160))
            for n in range(1, 3001)
        ]
        buffer = FrameBuffer()
        buffer.feed(b"".join(encode(pdu) for pdu in pdus))
        assert [decode(frame) for frame in buffer.frames()] == pdus
        assert buffer.buffered == 0

    def test_partial_frame_stays_buffered(self) -> None:
        """An incomplete frame is kept and counted until its remaining bytes arrive."""
        frame = encode(DeliverSm(short_message=b"hello", tlvs=(Tlv(0x1400, b"v"),)))
        buffer = FrameBuffer()
        buffer.feed(frame + frame[:7])
        assert buffer.frames() == [frame]
        assert buffer.buffered == 7
        assert buffer.frames() == []
        buffer.feed(frame[7:])
        assert buffer.frames() == [frame]
        assert buffer.buffered == 0

    def test_maximum_length_is_inclusive(self) -> None:
        """A frame exactly max_pdu_length long is accepted."""
        frame = encode(SubmitSm(tlvs=(Tlv(0x1400, b"x" * 100),)))
        assert collect([frame], max_pdu_length=len(frame)) == [frame]


def bad_header(length: int, command_id: int = 4, seq: int = 99) -> bytes:
    return struct.pack(">IIII", length, command_id, 0, seq)


class TestBadLengths:
    @pytest.mark.parametrize("length", [0, 1, 15, 65537, 0xFFFFFFFF])
    def test_length_out_of_bounds(self, length: int) -> None:
        """command_length below 16 or above the maximum raises FramingError with the header ids."""
        buffer = FrameBuffer()
        buffer.feed(bad_header(length))
        with pytest.raises(FramingError) as info:
            buffer.frames()
        assert info.value.status == CommandStatus.ESME_RINVCMDLEN
        assert (info.value.command_id, info.value.sequence_number) == (4, 99)

    def test_ids_unknown_without_a_whole_header(self) -> None:
        """With only the length field buffered, the error carries no command_id."""
        buffer = FrameBuffer()
        buffer.feed(struct.pack(">I", 3) + b"\0\0")
        with pytest.raises(FramingError) as info:
            buffer.frames()
        assert info.value.command_id is None
        assert info.value.sequence_number is None

    def test_configured_maximum(self) -> None:
        """A frame over a configured maximum is refused."""
        frame = encode(SubmitSm(short_message=b"x" * 100))
        buffer = FrameBuffer(max_pdu_length=len(frame) - 1)
        buffer.feed(frame)
        with pytest.raises(FramingError):
            buffer.frames()

    def test_good_frames_before_a_bad_length_come_first(self) -> None:
        """Frames ahead of a bad length are returned; the next call raises."""
        good = encode(EnquireLink(sequence_number=1))
        buffer = FrameBuffer()
        buffer.feed(good + good + bad_header(8))
        assert buffer.frames() == [good, good]
        with pytest.raises(FramingError):
            buffer.frames()

    def test_buffer_is_dead_after_an_error(self) -> None:
        """After a FramingError every later feed or frames call raises again."""
        buffer = FrameBuffer()
        buffer.feed(bad_header(2))
        with pytest.raises(FramingError):
            buffer.frames()
        with pytest.raises(FramingError) as info:
            buffer.feed(encode(EnquireLink()))
        assert info.value.sequence_number == 99
        with pytest.raises(FramingError):
            buffer.frames()

    def test_maximum_below_header_is_refused(self) -> None:
        """A maximum under 16 bytes is a configuration error."""
        with pytest.raises(ValueError, match="max_pdu_length"):
            FrameBuffer(max_pdu_length=15)
