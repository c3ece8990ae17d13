"""Sequence numbers and the window of requests awaiting a response, for one session leg.

The response timeout is one constant per session and ``now`` never goes backwards, so deadlines
are added in increasing order: the oldest entry is always the next to expire. An ``OrderedDict``
gives O(1) add and pop by sequence number and O(1) access to that oldest entry, so ``expired``
costs only what it returns (a plain dict degrades when popped from the front over and over).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from gateway.smpp.errors import LocalProtocolError

MAX_SEQUENCE_NUMBER = 0x7FFFFFFF
"""SMPP 3.4 section 3.2: sequence numbers run 0x00000001 .. 0x7FFFFFFF."""


class SequenceAllocator:
    """Hands out sequence numbers 1 .. 0x7FFFFFFF in order, wrapping back to 1, never 0."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= MAX_SEQUENCE_NUMBER:
            raise ValueError(f"start must be in 1..{MAX_SEQUENCE_NUMBER}, not {start}")
        self._next = start

    def next(self) -> int:
        """The next sequence number."""
        value = self._next
        self._next = 1 if value == MAX_SEQUENCE_NUMBER else value + 1
        return value


class Outstanding(NamedTuple):
    """One request we sent that has not been answered yet."""

    command_id: int
    deadline: float
    context: object


_new_tuple = tuple.__new__


class Window:
    """Outstanding requests by sequence number, oldest deadline first, at most ``limit`` of them.

    ``force=True`` on ``add`` lets session-control requests (bind, unbind, enquire_link) past the
    limit: a keep-alive is most needed exactly when a stuck peer has filled the window.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"window limit must be at least 1, not {limit}")
        self._limit = limit
        self._entries: OrderedDict[int, Outstanding] = OrderedDict()

    @property
    def entries(self) -> OrderedDict[int, Outstanding]:
        """The entries themselves, oldest deadline first, for a caller's per-PDU path.

        A method call per request costs more than the dictionary operation it wraps, so the
        session adds and pops here directly; it must keep what ``add`` keeps: unique numbers,
        deadlines in increasing order, ``Outstanding`` values.
        """
        return self._entries

    @property
    def limit(self) -> int:
        """Most requests outstanding at once (forced additions aside)."""
        return self._limit

    @property
    def full(self) -> bool:
        """True when no further (unforced) request may be added."""
        return len(self._entries) >= self._limit

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sequence_number: object) -> bool:
        return sequence_number in self._entries

    def add(
        self,
        sequence_number: int,
        command_id: int,
        deadline: float,
        context: object = None,
        *,
        force: bool = False,
    ) -> None:
        """Record a request just sent; raises LocalProtocolError if full or the number is in use."""
        entries = self._entries
        if sequence_number in entries:
            raise LocalProtocolError(f"sequence_number {sequence_number} is already outstanding")
        if not force and len(entries) >= self._limit:
            raise LocalProtocolError(f"window full ({self._limit} outstanding)")
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (once per request sent).
        entries[sequence_number] = _new_tuple(Outstanding, (command_id, deadline, context))

    def get(self, sequence_number: int) -> Outstanding | None:
        """The outstanding request with this number, left in place, or None."""
        return self._entries.get(sequence_number)

    def pop(self, sequence_number: int) -> Outstanding | None:
        """Remove and return the outstanding request with this number, or None."""
        return self._entries.pop(sequence_number, None)

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None when nothing is outstanding."""
        for entry in self._entries.values():
            return entry.deadline
        return None

    def expired(self, now: float) -> list[tuple[int, Outstanding]]:
        """Remove and return, oldest first, every request whose deadline is at or before ``now``."""
        entries = self._entries
        result: list[tuple[int, Outstanding]] = []
        while entries:
            sequence_number, entry = next(iter(entries.items()))
            if entry.deadline > now:
                break
            entries.popitem(last=False)
            result.append((sequence_number, entry))
        return result

    def drain(self) -> list[tuple[int, Outstanding]]:
        """Remove and return everything, oldest first (the session is closing)."""
        result = list(self._entries.items())
        self._entries.clear()
        return result
