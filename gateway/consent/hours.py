"""Quiet hours: when a campaign's category may be sent to a number, by the recipient's clock.

Pure: ``closed(quiet, place, now)`` takes the campaign's rules, where the number is
(``gateway.consent.numbers.place``) and the wall time, and says which rule forbids sending now
(``Closed``), or None. Nothing here reads the clock.

How the rules combine (fail closed at every step):

- A campaign names rules: presets per jurisdiction (``PRESETS``) and custom windows. An MT may go
  only when *every* rule that applies to the number is open; a rule is open when the local time
  falls in *one* of its windows.
- A preset applies to numbers of its countries (``us-federal``: the US and its territories) and,
  for a state preset, of its state. A number whose country cannot be told is under every preset;
  one whose state cannot be told is under every state preset named, so the strictest window holds.
  Custom windows apply to every number.
- Local time is checked in *every* zone the number may be in (an area code can span two zones):
  the window must hold in all of them. A number whose own zones are unknown is checked in all
  zones of its country; one of a country with no zones data at all is closed (``UNKNOWN_ZONE``).
- Windows are ``[start, end)`` in minutes of the local day: 8:00-21:00 lets 20:59 through and
  refuses 21:00. A window whose end is not after its start runs past midnight into the next day
  and belongs to the day it starts on. ``closed_dates`` (holidays, configured as local dates)
  close the whole day.

The presets also record the laws' caps on messages per 24 hours (``cap_per_24h``), which this
module does not enforce: ``gateway.consent.caps`` does (a campaign's ``frequency_cap``), with
the count kept in the consent store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.consent.numbers import Place

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
MINUTES_PER_DAY = 24 * 60
UNKNOWN_ZONE = "unknown_zone"  # the rule name of a number no zone can be found for
CLOSED_DATE = "closed_date"
CUSTOM = "custom"


# --- text forms --------------------------------------------------------------------------------


def parse_hhmm(text: str) -> int:
    """``"09:00"`` -> 540 minutes; ``"24:00"`` (the end of a day) is allowed."""
    hours, sep, minutes = text.partition(":")
    if not sep or len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > MINUTES_PER_DAY:
        raise ValueError(f"expected a time from 00:00 to 24:00, got {text!r}")
    return value


def parse_days(names: tuple[str, ...]) -> frozenset[int]:
    """``("mon", "sat")`` -> {0, 5}; an empty tuple means every day."""
    if not names:
        return ALL_DAYS
    days = set()
    for name in names:
        key = name.strip().casefold()[:3]
        if key not in DAY_NAMES:
            raise ValueError(f"unknown day {name!r}; expected one of {', '.join(DAY_NAMES)}")
        days.add(DAY_NAMES.index(key))
    return frozenset(days)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    if days == ALL_DAYS:
        return "daily"
    ordered = sorted(days)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{DAY_NAMES[ordered[0]]}-{DAY_NAMES[ordered[-1]]}"
    return ",".join(DAY_NAMES[d] for d in ordered)


class Category(StrEnum):
    """What a campaign sends: quiet hours apply to marketing unless the campaign says more."""

    MARKETING = "marketing"
    INFORMATIONAL = "informational"
    TRANSACTIONAL = "transactional"


class QuietAction(StrEnum):
    """What an MT outside its window gets."""

    REFUSE = "refuse"  # a permanent status: the client drops it (or reschedules it itself)
    DEFER = "defer"  # a temporary status: the client retries it later


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """A span of the local day on some weekdays (0 = Monday), minutes ``[start, end)``."""

    days: frozenset[int] = ALL_DAYS
    start: int
    end: int  # 1..1440; not after start: ends on the next day

    def __post_init__(self) -> None:
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError("a window needs days from mon to sun")
        if not 0 <= self.start < MINUTES_PER_DAY or not 0 < self.end <= MINUTES_PER_DAY:
            raise ValueError("a window runs from 00:00-23:59 to 00:01-24:00")
        if self.start == self.end:
            raise ValueError("a window's start and end must differ (a whole day: 00:00-24:00)")

    def holds(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Past midnight: the evening of a listed day, or the early morning after one.
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days

    def describe(self) -> str:
        days = _days_text(self.days)
        return f"{days} {_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HoursRule:
    """One rule: open in any of its windows, binding the numbers it applies to."""

    name: str
    windows: tuple[Window, ...]
    countries: frozenset[str] = frozenset()  # ISO 3166-1; empty: every number
    subdivision: str | None = None  # ISO 3166-2 ("US-TX"): only numbers there
    tz: str | None = None  # a fixed zone; None: the recipient's
    source: str = ""  # the law, for staff and the README
    cap_per_24h: int | None = None  # the law's cap on one subject (enforced by consent.caps)
    text: str = field(init=False, repr=False, compare=False)  # the windows, for people

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError(f"rule {self.name}: no windows")
        if self.tz is not None:
            zone(self.tz)  # raises ValueError for an unknown zone
        object.__setattr__(self, "text", ", ".join(w.describe() for w in self.windows))

    def applies(self, place: Place) -> bool:
        """Whether the rule binds a number at ``place`` (unknown country or state: it does)."""
        if self.countries and place.regions and not self.countries & place.regions:
            return False
        if self.subdivision is None or place.subdivision is None:
            return True
        return place.subdivision == self.subdivision

    def open_at(self, weekday: int, minute: int) -> bool:
        return any(window.holds(weekday, minute) for window in self.windows)

    def describe(self) -> str:
        return self.text


def _window(start: str, end: str, days: tuple[int, ...] = tuple(ALL_DAYS)) -> Window:
    return Window(days=frozenset(days), start=parse_hhmm(start), end=parse_hhmm(end))


# The US and the territories the FCC's rules cover.
US_AND_TERRITORIES = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})
_MON_SAT = (0, 1, 2, 3, 4, 5)
_SUN = (6,)

PRESETS: dict[str, HoursRule] = {
    rule.name: rule
    for rule in (
        HoursRule(
            name="us-federal",
            windows=(_window("08:00", "21:00"),),
            countries=US_AND_TERRITORIES,
            source="TCPA, 47 CFR 64.1200(c)(1): not before 8 a.m. or after 9 p.m. local time",
        ),
        HoursRule(
            name="us-fl",
            windows=(_window("08:00", "20:00"),),
            countries=frozenset({"US"}),
            subdivision="US-FL",
            source="Florida Telephone Solicitation Act, Fla. Stat. 501.059(8)(a)",
            cap_per_24h=3,
        ),
        HoursRule(
            name="us-ok",
            windows=(_window("08:00", "20:00"),),
            countries=frozenset({"US"}),
            subdivision="US-OK",
            source="Oklahoma Telephone Solicitation Act of 2022, 15 O.S. 775C.1 et seq.",
            cap_per_24h=3,
        ),
        HoursRule(
            name="us-md",
            windows=(_window("08:00", "20:00"),),
            countries=frozenset({"US"}),
            subdivision="US-MD",
            source="Maryland Stop the Spam Calls Act of 2023, Md. Code Com. Law 14-4501 et seq.",
            cap_per_24h=3,
        ),
        HoursRule(
            name="us-tx",
            windows=(_window("09:00", "21:00", _MON_SAT), _window("12:00", "21:00", _SUN)),
            countries=frozenset({"US"}),
            subdivision="US-TX",
            source="Tex. Bus. & Com. Code 301.051; texts included by SB 140 from 1 Sep 2025",
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class QuietHours:
    """A campaign's quiet-hours rules, the categories they bind and what a closed window gets.

    Compares by identity (``eq=False``) like ``Campaign``, so verdict memos hash it cheaply."""

    rules: tuple[HoursRule, ...]
    action: QuietAction = QuietAction.REFUSE
    categories: frozenset[Category] = frozenset({Category.MARKETING})
    closed_dates: frozenset[date] = frozenset()
    needs_subdivision: bool = field(init=False, repr=False)
    # Verdicts by (subscriber, minute) and by (place, minute), kept by policy.quiet_refusal:
    # caches, not state. Many subscribers share a place (an area code's zones and state).
    memo: dict[tuple[str, int], object] = field(init=False, repr=False)
    by_place: dict[tuple[object, int], object] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rules and not self.closed_dates:
            raise ValueError("quiet hours name no rule and no closed date")
        object.__setattr__(
            self, "needs_subdivision", any(r.subdivision is not None for r in self.rules)
        )
        object.__setattr__(self, "memo", {})
        object.__setattr__(self, "by_place", {})


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """Why an MT may not go now: the rule, and the zone and local time it was checked in."""

    rule: str  # a preset's name, "custom", "closed_date" or "unknown_zone"
    zone: str | None = None
    local: str | None = None  # "2026-12-06 11:59 Sun" in ``zone``
    window: str | None = None  # the rule's windows, as text


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleState:
    """One rule as it stands for one number now (what ``consent show`` prints)."""

    rule: str
    applies: bool
    open: bool
    window: str
    source: str
    zones: tuple[tuple[str, str, bool], ...]  # (zone, local time, open in that zone)


def closed(quiet: QuietHours, place: Place, now: float) -> Closed | None:
    """The first rule that forbids sending to a number at ``place`` at ``now``, or None."""
    zones = place.zones
    for rule in quiet.rules:
        if not rule.applies(place):
            continue
        checked = (rule.tz,) if rule.tz is not None else zones
        if not checked:
            return Closed(rule=UNKNOWN_ZONE, window=rule.text)
        for key in checked:
            local = datetime.fromtimestamp(now, _zone(key))
            if not rule.open_at(local.weekday(), local.hour * 60 + local.minute):
                return Closed(rule=rule.name, zone=key, local=_text(local), window=rule.text)
    if quiet.closed_dates:
        if not zones:
            return Closed(rule=UNKNOWN_ZONE)
        for key in zones:
            local = datetime.fromtimestamp(now, _zone(key))
            if local.date() in quiet.closed_dates:
                return Closed(rule=CLOSED_DATE, zone=key, local=_text(local))
    return None


def rule_states(quiet: QuietHours, place: Place, now: float) -> list[RuleState]:
    """Every rule of ``quiet`` for a number at ``place`` at ``now``, open or not, and why."""
    states = []
    for rule in quiet.rules:
        checked = (rule.tz,) if rule.tz is not None else place.zones
        zones = tuple(
            (key, local_text(key, now), rule.open_at(*local_time(key, now)[:2])) for key in checked
        )
        applies = rule.applies(place)
        states.append(
            RuleState(
                rule=rule.name,
                applies=applies,
                open=not applies or (bool(zones) and all(ok for _k, _t, ok in zones)),
                window=rule.describe(),
                source=rule.source,
                zones=zones,
            )
        )
    return states


# --- local time --------------------------------------------------------------------------------


def zone(key: str) -> ZoneInfo:
    """The zone named ``key``; ValueError for a name the tz database does not know."""
    try:
        return _zone(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {key!r}") from None


@lru_cache(maxsize=1024)
def _zone(key: str) -> ZoneInfo:
    return ZoneInfo(key)


def local_time(key: str, now: float) -> tuple[int, int, date]:
    """(weekday, minute of the day, date) in zone ``key`` at wall time ``now``."""
    local = datetime.fromtimestamp(now, _zone(key))
    return local.weekday(), local.hour * 60 + local.minute, local.date()


def local_text(key: str, now: float) -> str:
    """The local time for people: ``2026-12-06 11:59 Sun``."""
    return _text(datetime.fromtimestamp(now, _zone(key)))


def _text(local: datetime) -> str:
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d} {local.hour:02d}:{local.minute:02d}"
        f" {_DAY_TITLES[local.weekday()]}"
    )


_DAY_TITLES = tuple(d.capitalize() for d in DAY_NAMES)
