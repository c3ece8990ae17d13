"""Frequency caps: at most N messages to one subscriber in a rolling window.

Florida's Telephone Solicitation Act (Fla. Stat. 501.059(8)(b), as amended 2021), Oklahoma's
Telephone Solicitation Act of 2022 (15 O.S. 775C.1 et seq.) and Maryland's Stop the Spam Calls
Act of 2023 (Md. Code, Com. Law 14-4501 et seq.) each allow no more than three commercial sales
messages to a person in 24 hours on the same subject matter, whatever number they come from: the
presets
``us-fl``, ``us-ok`` and ``us-md``. What counts as "the same subject" is the operator's call, made
with ``per``: one campaign (the default), every campaign of one business, or everything capped
that goes to the subscriber.

The count itself lives in the consent store (shared by instances); this module only says what is
counted under which key and whether a count allows one more. Pure: the time comes in as ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.consent.hours import Category

DAY_S: Final = 86_400.0


class CapPer(StrEnum):
    """What one count covers, always for one subscriber."""

    CAMPAIGN = "campaign"  # the messages of one campaign
    BUSINESS = "business"  # the messages of every campaign with the same ``business``
    SUBSCRIBER = "subscriber"  # every capped message to the subscriber


@dataclass(frozen=True, slots=True, kw_only=True)
class FrequencyCap:
    """``count`` messages per ``window_s`` seconds, rolling; ``rule`` names the preset."""

    count: int
    window_s: float
    per: CapPer = CapPer.CAMPAIGN
    rule: str = "custom"
    categories: frozenset[Category] = frozenset({Category.MARKETING})

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a frequency cap's count must be at least 1")
        if not self.window_s > 0:
            raise ValueError("a frequency cap's window must be positive")


# The state laws' "three in 24 hours on the same subject matter" (see the module docstring).
PRESETS: Final[dict[str, tuple[int, float]]] = {
    "us-fl": (3, DAY_S),
    "us-ok": (3, DAY_S),
    "us-md": (3, DAY_S),
}


def preset(name: str, *, per: CapPer = CapPer.CAMPAIGN) -> FrequencyCap:
    """The preset ``name`` (KeyError for an unknown one)."""
    count, window_s = PRESETS[name]
    return FrequencyCap(count=count, window_s=window_s, per=per, rule=name)


def counter_key(cap: FrequencyCap, campaign: str, business: str) -> str:
    """The subscriber's counter a message of ``campaign`` counts under (a business-wide cap
    of a campaign with no business counts for the campaign alone)."""
    if cap.per is CapPer.SUBSCRIBER:
        return "s"
    if cap.per is CapPer.BUSINESS and business:
        return f"b:{business}"
    return f"c:{campaign}"


@dataclass(frozen=True, slots=True)
class CapVerdict:
    """What one reservation found: ``allowed`` and the messages counted after it."""

    allowed: bool
    counted: int


@dataclass(frozen=True, slots=True)
class CapReservation:
    """One message to check and count: ``token`` to ``subscriber`` under counter ``key``, at
    most ``limit`` in the ``window_s`` seconds ending ``now``."""

    subscriber: str
    key: str
    token: str
    limit: int
    window_s: float
    now: float


def admits(counted: int, *, limit: int, already: bool) -> bool:
    """The decision: a message goes if it is counted already (another part of it went) or
    the window holds fewer than ``limit`` messages."""
    return already or counted < limit


def trim(sends: MutableMapping[str, float], now: float, window_s: float) -> None:
    """Drop the sends that left the window (a send exactly ``window_s`` old has left it)."""
    horizon = now - window_s
    for token in [t for t, at in sends.items() if at <= horizon]:
        del sends[token]


def reserve(
    sends: MutableMapping[str, float], token: str, *, limit: int, window_s: float, now: float
) -> CapVerdict:
    """Check and count one message (``sends``: token -> when, one subscriber's counter).

    A token already counted in the window is the same message again (another part of a long
    message): allowed and not counted twice. A refusal counts nothing, so the counter holds at
    most ``limit`` entries after a trim: bounded memory per subscriber and key."""
    trim(sends, now, window_s)
    already = token in sends
    if not admits(len(sends), limit=limit, already=already):
        return CapVerdict(False, len(sends))
    if not already:
        sends[token] = now
    return CapVerdict(True, len(sends))


def reserve_all(
    counter: Callable[[str, str], MutableMapping[str, float]],
    batch: Sequence[CapReservation],
) -> list[CapVerdict]:
    """``reserve`` each of ``batch`` in order (``counter(subscriber, key)``: that counter's
    sends), so a later reservation sees the earlier ones: what every store's ``reserve_sends``
    answers."""
    return [
        reserve(
            counter(r.subscriber, r.key), r.token, limit=r.limit, window_s=r.window_s, now=r.now
        )
        for r in batch
    ]
