"""What the consent enforcer remembers about a long MT while its parts are coming in.

Every part of a concatenated MT is decided against the subscriber's current records, like any
MT: a remembered "allowed" is never trusted, so a STOP, a block or a staff opt-out between two
parts refuses the parts after it. What is remembered, per message, is what makes all its parts
get one answer:

- a refusal: the parts after a refused part are refused the same way, even if the records
  changed back meanwhile (a temporary refusal, "store unavailable", is not remembered: the
  client sends those parts again and they are decided again);
- the route: parts whose first part went to the footer stage keep going there, so the stage
  sees the whole message.

A message is forgotten once all its parts were seen (a reference reused after that is a new
message), once ``ttl_s`` (the footer hold timeout) has passed since its first part, or when the
bound on remembered messages evicts the oldest: in each case the next part is simply decided
afresh. Keys name the client connection, so nothing here crosses sessions or instances.

Pure apart from the clock the caller passes in as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum

from gateway.consent.policy import RejectReason

DEFAULT_MAX_MESSAGES = 100_000


class Route(Enum):
    PLAIN = "plain"  # forwarded part by part
    FOOTER = "footer"  # handed to the footer stage


@dataclass(slots=True)
class Message:
    """One long MT whose parts are still coming in."""

    route: Route
    deadline: float
    refusal: RejectReason | None = None
    seen: set[int] = field(default_factory=set)


class PartTracker:
    """Incomplete long MTs by key, bounded in count and age."""

    __slots__ = ("_max", "_messages", "ttl_s")

    def __init__(self, ttl_s: float, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if ttl_s <= 0 or max_messages < 1:
            raise ValueError("ttl_s and max_messages must be positive")
        self.ttl_s = ttl_s
        self._max = max_messages
        self._messages: OrderedDict[Hashable, Message] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, key: Hashable, now: float) -> Message | None:
        """The message ``key`` names, if it is still incomplete and young enough."""
        self._expire(now)
        return self._messages.get(key)

    def record(
        self,
        key: Hashable,
        seq: int,
        total: int,
        now: float,
        *,
        route: Route,
        refusal: RejectReason | None,
    ) -> None:
        """Part ``seq`` of ``total`` was answered: allowed on ``route``, or refused."""
        if refusal is RejectReason.STORE_UNAVAILABLE:
            refusal = None  # temporary: the client sends it again, and it is decided again
        message = self._messages.get(key)
        if message is None:
            message = Message(route=route, deadline=now + self.ttl_s)
            self._messages[key] = message
            while len(self._messages) > self._max:
                self._messages.popitem(last=False)
        if refusal is not None and message.refusal is None:
            message.refusal = refusal
        message.seen.add(seq)
        if len(message.seen) >= total and message.seen.issuperset(range(1, total + 1)):
            del self._messages[key]  # complete: a reused reference is a new message

    def _expire(self, now: float) -> None:
        messages = self._messages
        while messages:
            oldest = next(iter(messages.values()))
            if oldest.deadline > now:
                return
            messages.popitem(last=False)
