"""Sequence numbers and the window of outstanding requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smpp.constants import CommandId
from gateway.smpp.errors import LocalProtocolError
from gateway.smpp.window import MAX_SEQUENCE_NUMBER, SequenceAllocator, Window


class TestSequenceAllocator:
    def test_starts_at_one_and_counts_up(self) -> None:
        """A fresh allocator hands out 1, 2, 3 in order."""
        allocator = SequenceAllocator()
        assert [allocator.next() for _ in range(3)] == [1, 2, 3]

    def test_wraps_from_maximum_to_one(self) -> None:
        """After 0x7FFFFFFF the next number is 1, never 0 or a negative-looking value."""
        allocator = SequenceAllocator(MAX_SEQUENCE_NUMBER - 1)
        assert [allocator.next() for _ in range(3)] == [
            MAX_SEQUENCE_NUMBER - 1,
            MAX_SEQUENCE_NUMBER,
            1,
        ]

    @given(start=st.integers(1, MAX_SEQUENCE_NUMBER), count=st.integers(1, 50))
    def test_always_in_range(self, start: int, count: int) -> None:
        """Every number handed out lies in 1..0x7FFFFFFF, wherever the allocator starts."""
        allocator = SequenceAllocator(start)
        assert all(1 <= allocator.next() <= MAX_SEQUENCE_NUMBER for _ in range(count))

    @pytest.mark.parametrize("start", [0, MAX_SEQUENCE_NUMBER + 1, -1])
    def test_rejects_start_out_of_range(self, start: int) -> None:
        """A start outside the sequence-number range is a programming error."""
        with pytest.raises(ValueError, match="start"):
            SequenceAllocator(start)


class TestWindow:
    def test_pop_returns_entry_once(self) -> None:
        """pop gives back what add stored, and None the second time."""
        window = Window(4)
        window.add(7, CommandId.SUBMIT_SM, 30.0, "ctx")
        entry = window.pop(7)
        assert entry is not None
        assert (entry.command_id, entry.deadline, entry.context) == (
            CommandId.SUBMIT_SM,
            30.0,
            "ctx",
        )
        assert window.pop(7) is None
        assert len(window) == 0

    def test_get_leaves_entry(self) -> None:
        """get looks without removing."""
        window = Window(4)
        window.add(1, CommandId.DELIVER_SM, 5.0)
        assert window.get(1) is not None
        assert 1 in window
        assert window.get(2) is None

    def test_full_at_limit_and_add_refused(self) -> None:
        """The window is full at its limit and refuses an unforced add."""
        window = Window(2)
        assert window.limit == 2
        window.add(1, CommandId.SUBMIT_SM, 1.0)
        assert not window.full
        window.add(2, CommandId.SUBMIT_SM, 1.0)
        assert window.full
        with pytest.raises(LocalProtocolError, match="full"):
            window.add(3, CommandId.SUBMIT_SM, 1.0)

    def test_force_passes_limit(self) -> None:
        """A forced add (session control) goes in even when the window is full."""
        window = Window(1)
        window.add(1, CommandId.SUBMIT_SM, 1.0)
        window.add(2, CommandId.ENQUIRE_LINK, 1.0, force=True)
        assert len(window) == 2

    def test_duplicate_sequence_refused(self) -> None:
        """A sequence number already outstanding cannot be added again."""
        window = Window(4)
        window.add(1, CommandId.SUBMIT_SM, 1.0)
        with pytest.raises(LocalProtocolError, match="already"):
            window.add(1, CommandId.SUBMIT_SM, 2.0)

    def test_expired_in_deadline_order_and_only_due(self) -> None:
        """expired returns due entries oldest first and keeps the rest."""
        window = Window(10)
        for seq, deadline in [(5, 1.0), (6, 2.0), (7, 3.0)]:
            window.add(seq, CommandId.SUBMIT_SM, deadline)
        assert [seq for seq, _ in window.expired(2.0)] == [5, 6]
        assert window.next_deadline() == 3.0
        assert window.expired(2.5) == []
        assert [seq for seq, _ in window.expired(10.0)] == [7]
        assert window.next_deadline() is None

    def test_expired_skips_answered_entries(self) -> None:
        """Entries popped by a response do not come back from expired."""
        window = Window(10)
        for seq in (1, 2, 3):
            window.add(seq, CommandId.SUBMIT_SM, float(seq))
        window.pop(2)
        assert [seq for seq, _ in window.expired(5.0)] == [1, 3]

    def test_drain_empties(self) -> None:
        """drain returns everything oldest first and leaves the window empty."""
        window = Window(10)
        window.add(9, CommandId.SUBMIT_SM, 1.0)
        window.add(3, CommandId.SUBMIT_SM, 2.0)
        assert [seq for seq, _ in window.drain()] == [9, 3]
        assert len(window) == 0

    def test_limit_must_be_positive(self) -> None:
        """A window of size zero is a configuration error."""
        with pytest.raises(ValueError, match="limit"):
            Window(0)

    @given(
        ops=st.lists(
            st.tuples(st.sampled_from(["add", "pop", "expire"]), st.integers(1, 20)),
            max_size=80,
        )
    )
    def test_matches_a_reference_model(self, ops: list[tuple[str, int]]) -> None:
        """Any mix of add / pop / expire with a rising clock agrees with a plain dict model."""
        window = Window(1000)
        model: dict[int, float] = {}
        now = 0.0
        for op, value in ops:
            now += 1.0
            if op == "add" and value not in model:
                window.add(value, CommandId.SUBMIT_SM, now + 5.0)
                model[value] = now + 5.0
            elif op == "pop":
                entry = window.pop(value)
                expected = model.pop(value, None)
                assert (entry.deadline if entry else None) == expected
            elif op == "expire":
                due = sorted((d, s) for s, d in model.items() if d <= now)
                assert [s for s, _ in window.expired(now)] == [s for _, s in due]
                for _, seq in due:
                    del model[seq]
            assert len(window) == len(model)
