"""Quiet hours in the recipient's time zones, with the time passed in (no clock, no sleeping)."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.consent import hours
from gateway.consent.campaign import Campaign
from gateway.consent.hours import (
    PRESETS,
    Category,
    Closed,
    HoursRule,
    QuietAction,
    QuietHours,
    Window,
    closed,
    parse_days,
    parse_hhmm,
    rule_states,
)
from gateway.consent.model import AddressKind, ConsentRecord, ConsentState, Scope, ScopeKind
from gateway.consent.model import SmsAddress as Addr
from gateway.consent.numbers import Place, place
from gateway.consent.policy import Allow, Reject, RejectReason, RequestOptIn, decide_mt

NEW_YORK = "12125551234"
CHICAGO = "13125550100"
DENVER = "13035550100"
LOS_ANGELES = "12135550100"
HONOLULU = "18085550100"
ANCHORAGE = "19075550100"  # area code 907: Anchorage and Adak (an hour behind)
BOISE = "12085550100"  # area code 208: Mountain and Pacific time
AUSTIN = "15125550100"  # Texas, Central time
EL_PASO = "19155550100"  # Texas, Mountain time
MIAMI = "13055550100"
OKLAHOMA_CITY = "14055550100"
BALTIMORE = "14105550100"
TORONTO = "14165550100"
TOLL_FREE = "18005550100"  # no state, every zone of +1

# 2026-12-05 is a Saturday, 12-06 a Sunday, 12-07 a Monday.
SATURDAY, SUNDAY, MONDAY = "2026-12-05", "2026-12-06", "2026-12-07"


def at(zone: str, when: str) -> float:
    """Wall time (epoch seconds) of local time ``when`` ("2026-12-07 08:00") in ``zone``."""
    return datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()


def quiet(*names: str, **kwargs: object) -> QuietHours:
    return QuietHours(rules=tuple(PRESETS[n] for n in names), **kwargs)  # type: ignore[arg-type]


def where(number: str) -> Place:
    return place(number, short_code=False, default_country="US", subdivision=True)


FEDERAL = quiet("us-federal")
ALL_US = quiet("us-federal", "us-fl", "us-ok", "us-md", "us-tx")


class TestPlace:
    @pytest.mark.parametrize(
        ("number", "zones", "state"),
        [
            (NEW_YORK, ("America/New_York",), "US-NY"),
            (CHICAGO, ("America/Chicago",), "US-IL"),
            (DENVER, ("America/Denver",), "US-CO"),
            (LOS_ANGELES, ("America/Los_Angeles",), "US-CA"),
            (HONOLULU, ("Pacific/Honolulu",), "US-HI"),
            (ANCHORAGE, ("America/Adak", "America/Anchorage"), "US-AK"),
            (BOISE, ("America/Boise", "America/Los_Angeles"), "US-ID"),
            (AUSTIN, ("America/Chicago",), "US-TX"),
            (EL_PASO, ("America/Denver",), "US-TX"),
            (TORONTO, ("America/Toronto",), "CA-ON"),
        ],
        ids=lambda v: v if isinstance(v, str) else None,
    )
    def test_zones_and_state(self, number: str, zones: tuple[str, ...], state: str) -> None:
        """A valid number's zones (several for a multi-zone area code) and its state."""
        found = where(number)
        assert (found.zones, found.zones_exact, found.subdivision) == (zones, True, state)

    def test_city_and_state_code(self) -> None:
        """The geocoder's "San Antonio, TX" is Texas, as its plain "Texas" is."""
        assert where("12105550100").subdivision == "US-TX"

    def test_toll_free_has_no_state(self) -> None:
        """A toll-free number has no state, and every zone of +1 (its own are not known)."""
        found = where(TOLL_FREE)
        assert found.subdivision is None
        assert "America/New_York" in found.zones
        assert "Pacific/Guam" in found.zones

    def test_invalid_number_gets_its_calling_codes_countries(self) -> None:
        """A number that is no valid number may be in any country of its calling code."""
        found = where("15551234567")
        assert {"US", "CA", "PR"} <= found.regions
        assert not found.zones_exact
        assert found.subdivision is None

    def test_short_code_is_national(self) -> None:
        """A short code is in the default country: its zones are that country's."""
        found = place("12345", short_code=True, default_country="US", subdivision=True)
        assert found.regions == {"US"}
        assert "America/Chicago" in found.zones

    def test_no_zone_data(self) -> None:
        """A number of no known calling code has no zones and no country."""
        found = where("99912345678")
        assert (found.regions, found.zones) == (frozenset(), ())

    def test_state_only_when_asked(self) -> None:
        """Without ``subdivision`` the geocoder is not consulted."""
        found = place(AUSTIN, short_code=False, default_country="US", subdivision=False)
        assert found.subdivision is None


class TestFederal:
    @pytest.mark.parametrize(
        "number", [NEW_YORK, CHICAGO, DENVER, LOS_ANGELES, HONOLULU], ids=lambda n: n
    )
    def test_eight_to_nine_local(self, number: str) -> None:
        """8:00-21:00 in the number's own zone: 7:59 and 21:00 closed, 8:00 and 20:59 open."""
        (zone,) = where(number).zones
        assert closed(FEDERAL, where(number), at(zone, f"{MONDAY} 07:59")) is not None
        assert closed(FEDERAL, where(number), at(zone, f"{MONDAY} 08:00")) is None
        assert closed(FEDERAL, where(number), at(zone, f"{MONDAY} 20:59")) is None
        assert closed(FEDERAL, where(number), at(zone, f"{MONDAY} 21:00")) is not None

    def test_one_instant_in_several_zones(self) -> None:
        """13:30 UTC is 8:30 in New York (open) and 7:30 in Chicago (closed)."""
        now = at("UTC", f"{MONDAY} 13:30")
        assert closed(FEDERAL, where(NEW_YORK), now) is None
        found = closed(FEDERAL, where(CHICAGO), now)
        assert found == Closed(
            rule="us-federal",
            zone="America/Chicago",
            local="2026-12-07 07:30 Mon",
            window="daily 08:00-21:00",
        )

    def test_multi_zone_area_code_holds_in_every_zone(self) -> None:
        """907 spans Anchorage and Adak: 8:30 in Anchorage is 7:30 in Adak, so it waits."""
        found = closed(FEDERAL, where(ANCHORAGE), at("America/Anchorage", f"{MONDAY} 08:30"))
        assert found is not None
        assert found.zone == "America/Adak"
        assert closed(FEDERAL, where(ANCHORAGE), at("America/Anchorage", f"{MONDAY} 09:00")) is None

    def test_multi_zone_evening(self) -> None:
        """208 spans Mountain and Pacific: 20:30 in Los Angeles is 21:30 in Boise, closed."""
        found = closed(FEDERAL, where(BOISE), at("America/Los_Angeles", f"{MONDAY} 20:30"))
        assert found is not None
        assert found.zone == "America/Boise"
        assert closed(FEDERAL, where(BOISE), at("America/Los_Angeles", f"{MONDAY} 19:59")) is None

    def test_not_for_canada(self) -> None:
        """The TCPA preset binds US numbers only: Toronto at 22:00 is not held back by it."""
        assert closed(FEDERAL, where(TORONTO), at("America/Toronto", f"{MONDAY} 22:00")) is None

    def test_unknown_country_is_bound(self) -> None:
        """A number whose country cannot be told is under every preset (fail closed)."""
        unknown = Place(regions=frozenset(), zones=("America/New_York",), zones_exact=False)
        assert closed(FEDERAL, unknown, at("America/New_York", f"{MONDAY} 22:00")) is not None

    def test_invalid_number_checked_in_every_zone_of_its_country(self) -> None:
        """An invalid +1 number is checked in all NANP zones: 9:00 in New York is 4:00 in
        Honolulu, closed."""
        found = closed(FEDERAL, where("15551234567"), at("America/New_York", f"{MONDAY} 09:00"))
        assert found is not None
        assert found.rule == "us-federal"

    def test_no_zone_data_is_closed(self) -> None:
        """A country with no zones data: no window can be checked, so it is closed."""
        found = closed(FEDERAL, where("99912345678"), at("UTC", f"{MONDAY} 12:00"))
        assert found == Closed(rule=hours.UNKNOWN_ZONE, window="daily 08:00-21:00")


class TestDaylightSaving:
    def test_spring_forward(self) -> None:
        """12:30 UTC is 7:30 EST on 7 March 2026 (closed) and 8:30 EDT on 8 March (open)."""
        assert closed(FEDERAL, where(NEW_YORK), at("UTC", "2026-03-07 12:30")) is not None
        assert closed(FEDERAL, where(NEW_YORK), at("UTC", "2026-03-08 12:30")) is None

    def test_fall_back(self) -> None:
        """12:30 UTC is 8:30 EDT on 31 October 2026 (open) and 7:30 EST on 1 November."""
        assert closed(FEDERAL, where(NEW_YORK), at("UTC", "2026-10-31 12:30")) is None
        found = closed(FEDERAL, where(NEW_YORK), at("UTC", "2026-11-01 12:30"))
        assert found is not None
        assert found.local == "2026-11-01 07:30 Sun"

    def test_hawaii_keeps_its_offset(self) -> None:
        """Honolulu has no daylight saving: 18:30 UTC is 8:30 there in March and November."""
        assert closed(FEDERAL, where(HONOLULU), at("UTC", "2026-03-09 18:30")) is None
        assert closed(FEDERAL, where(HONOLULU), at("UTC", "2026-11-02 18:30")) is None


class TestStates:
    @pytest.mark.parametrize("when", [f"{SUNDAY} 11:59", f"{SUNDAY} 21:00", f"{MONDAY} 08:59"])
    def test_texas_closed(self, when: str) -> None:
        """Texas: 9:00-21:00 Monday to Saturday, 12:00-21:00 on Sunday."""
        found = closed(quiet("us-tx"), where(AUSTIN), at("America/Chicago", when))
        assert found is not None
        assert found.rule == "us-tx"

    @pytest.mark.parametrize("when", [f"{SUNDAY} 12:00", f"{SATURDAY} 09:00", f"{MONDAY} 20:59"])
    def test_texas_open(self, when: str) -> None:
        """Sunday noon, Saturday 9:00 and Monday 20:59 are open in Texas."""
        assert closed(ALL_US, where(AUSTIN), at("America/Chicago", when)) is None

    def test_texas_in_mountain_time(self) -> None:
        """El Paso is Texas on Mountain time: Sunday noon there, 13:00 in Austin."""
        assert closed(ALL_US, where(EL_PASO), at("America/Denver", f"{SUNDAY} 11:59")) is not None
        assert closed(ALL_US, where(EL_PASO), at("America/Denver", f"{SUNDAY} 12:00")) is None

    def test_texas_preset_is_not_for_new_york(self) -> None:
        """Sunday 10:00 in New York: the Texas window does not bind a New York number."""
        assert closed(ALL_US, where(NEW_YORK), at("America/New_York", f"{SUNDAY} 10:00")) is None

    @pytest.mark.parametrize(
        ("number", "zone", "rule"),
        [
            (MIAMI, "America/New_York", "us-fl"),
            (OKLAHOMA_CITY, "America/Chicago", "us-ok"),
            (BALTIMORE, "America/New_York", "us-md"),
        ],
        ids=["florida", "oklahoma", "maryland"],
    )
    def test_eight_to_eight(self, number: str, zone: str, rule: str) -> None:
        """Florida, Oklahoma and Maryland: 8:00-20:00, so 19:59 is open and 20:00 closed."""
        assert closed(ALL_US, where(number), at(zone, f"{MONDAY} 19:59")) is None
        found = closed(ALL_US, where(number), at(zone, f"{MONDAY} 20:00"))
        assert found is not None
        assert found.rule == rule

    def test_florida_not_named(self) -> None:
        """Without the Florida preset a Miami number has the federal 21:00."""
        assert closed(FEDERAL, where(MIAMI), at("America/New_York", f"{MONDAY} 20:30")) is None

    def test_unknown_state_gets_the_strictest(self) -> None:
        """A US number whose state cannot be told is under every state preset named: 20:30 on
        a Monday is closed (Florida's 20:00), as is Sunday 11:00 (Texas)."""
        no_state = Place(regions=frozenset({"US"}), zones=("America/New_York",), zones_exact=True)
        found = closed(ALL_US, no_state, at("America/New_York", f"{MONDAY} 20:30"))
        assert found is not None
        assert found.rule == "us-fl"
        found = closed(ALL_US, no_state, at("America/New_York", f"{SUNDAY} 11:00"))
        assert found is not None
        assert found.rule == "us-tx"
        assert closed(ALL_US, no_state, at("America/New_York", f"{MONDAY} 12:00")) is None

    def test_toll_free_number(self) -> None:
        """A toll-free number: no state, every +1 zone; open only where all of them are."""
        assert closed(ALL_US, where(TOLL_FREE), at("America/New_York", f"{MONDAY} 12:00"))
        assert closed(ALL_US, where(TOLL_FREE), at("America/New_York", f"{MONDAY} 18:00")) is None

    def test_presets_cite_their_law(self) -> None:
        """Every preset names its source; the state caps are recorded."""
        assert all(rule.source for rule in PRESETS.values())
        assert {n: r.cap_per_24h for n, r in PRESETS.items() if r.cap_per_24h} == {
            "us-fl": 3,
            "us-ok": 3,
            "us-md": 3,
        }


def custom(*windows: Window, tz: str | None = None) -> QuietHours:
    return QuietHours(rules=(HoursRule(name="custom", windows=windows, tz=tz),))


FRI, SAT = parse_days(("fri",)), parse_days(("sat",))


class TestCustomWindows:
    def test_over_midnight(self) -> None:
        """Friday 22:00-02:00 covers Friday night into Saturday, not Saturday night."""
        q = custom(Window(days=FRI, start=parse_hhmm("22:00"), end=parse_hhmm("02:00")))
        zone = "America/New_York"
        assert closed(q, where(NEW_YORK), at(zone, "2026-12-04 21:59")) is not None
        assert closed(q, where(NEW_YORK), at(zone, "2026-12-04 22:00")) is None
        assert closed(q, where(NEW_YORK), at(zone, "2026-12-05 01:59")) is None
        assert closed(q, where(NEW_YORK), at(zone, "2026-12-05 02:00")) is not None
        assert closed(q, where(NEW_YORK), at(zone, "2026-12-05 22:00")) is not None

    def test_weekdays(self) -> None:
        """A Monday-to-Friday window is closed on Saturday."""
        q = custom(
            Window(days=parse_days(("mon", "tue", "wed", "thu", "fri")), start=540, end=1020)
        )
        assert closed(q, where(NEW_YORK), at("America/New_York", f"{MONDAY} 10:00")) is None
        found = closed(q, where(NEW_YORK), at("America/New_York", f"{SATURDAY} 10:00"))
        assert found is not None
        assert found.window == "mon-fri 09:00-17:00"

    def test_applies_to_every_country(self) -> None:
        """Custom windows bind every number, Canada's too."""
        q = custom(Window(start=540, end=1020))
        assert closed(q, where(TORONTO), at("America/Toronto", f"{MONDAY} 18:00")) is not None

    def test_fixed_zone(self) -> None:
        """With ``tz`` the window is in that zone: 8:00 in Los Angeles is 11:00 in New York."""
        q = custom(
            Window(start=parse_hhmm("09:00"), end=parse_hhmm("17:00")), tz="America/New_York"
        )
        assert closed(q, where(LOS_ANGELES), at("America/Los_Angeles", f"{MONDAY} 08:00")) is None
        found = closed(q, where(LOS_ANGELES), at("America/Los_Angeles", f"{MONDAY} 14:30"))
        assert found is not None
        assert found.zone == "America/New_York"

    def test_whole_day(self) -> None:
        """00:00-24:00 is the whole day."""
        q = custom(Window(days=SAT, start=0, end=parse_hhmm("24:00")))
        assert closed(q, where(NEW_YORK), at("America/New_York", f"{SATURDAY} 23:59")) is None
        assert closed(q, where(NEW_YORK), at("America/New_York", f"{SUNDAY} 00:00")) is not None

    def test_windows_of_a_rule_are_alternatives(self) -> None:
        """Two windows of one rule: open in either."""
        q = custom(Window(start=540, end=600), Window(start=900, end=960))
        zone = "America/New_York"
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 09:30")) is None
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 15:30")) is None
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 12:00")) is not None

    def test_rules_must_all_hold(self) -> None:
        """A custom window and a preset: both must be open."""
        q = QuietHours(
            rules=(
                PRESETS["us-federal"],
                HoursRule(name="custom", windows=(Window(start=0, end=600),)),
            )
        )
        zone = "America/New_York"
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 09:00")) is None
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 07:00")).rule == "us-federal"  # type: ignore[union-attr]
        assert closed(q, where(NEW_YORK), at(zone, f"{MONDAY} 11:00")).rule == "custom"  # type: ignore[union-attr]

    def test_closed_dates(self) -> None:
        """A configured holiday closes the whole local day."""
        q = QuietHours(rules=(PRESETS["us-federal"],), closed_dates=frozenset({date(2026, 12, 25)}))
        found = closed(q, where(NEW_YORK), at("America/New_York", "2026-12-25 12:00"))
        assert found is not None
        assert found.rule == hours.CLOSED_DATE
        assert closed(q, where(NEW_YORK), at("America/New_York", "2026-12-24 12:00")) is None


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "minutes"), [("00:00", 0), ("08:00", 480), ("21:30", 1290), ("24:00", 1440)]
    )
    def test_hhmm(self, text: str, minutes: int) -> None:
        """HH:MM is minutes of the day; 24:00 is the end of the day."""
        assert parse_hhmm(text) == minutes

    @pytest.mark.parametrize("text", ["8", "8:0", "24:01", "12:60", "ab:cd", "-1:00"])
    def test_bad_hhmm(self, text: str) -> None:
        """Anything but HH:MM from 00:00 to 24:00 is refused."""
        with pytest.raises(ValueError, match="expected"):
            parse_hhmm(text)

    def test_days(self) -> None:
        """Day names (any case, three letters or more); none means every day."""
        assert parse_days(("Mon", "sunday")) == {0, 6}
        assert parse_days(()) == hours.ALL_DAYS
        with pytest.raises(ValueError, match="unknown day"):
            parse_days(("someday",))

    def test_window_bounds(self) -> None:
        """A window must have days, minutes within the day and differing start and end."""
        with pytest.raises(ValueError, match="differ"):
            Window(start=540, end=540)
        with pytest.raises(ValueError, match="days"):
            Window(days=frozenset(), start=540, end=600)
        with pytest.raises(ValueError, match="runs from"):
            Window(start=1440, end=60)

    def test_unknown_zone(self) -> None:
        """A rule's fixed zone must be one the tz database knows."""
        with pytest.raises(ValueError, match="unknown time zone"):
            HoursRule(name="custom", windows=(Window(start=0, end=60),), tz="Mars/Olympus")


class TestRuleStates:
    def test_show(self) -> None:
        """Each rule for a number now: does it apply, is it open, in which zones at what time."""
        states = rule_states(ALL_US, where(AUSTIN), at("America/Chicago", f"{SUNDAY} 11:00"))
        by_rule = {s.rule: s for s in states}
        assert by_rule["us-federal"].applies
        assert by_rule["us-federal"].open
        assert by_rule["us-tx"].applies
        assert not by_rule["us-tx"].open
        assert by_rule["us-tx"].zones == (("America/Chicago", "2026-12-06 11:00 Sun", False),)
        assert not by_rule["us-fl"].applies
        assert by_rule["us-fl"].open
        assert by_rule["us-tx"].window == "mon-sat 09:00-21:00, sun 12:00-21:00"


# --- the MT decision -------------------------------------------------------------------------

SUB = Addr(kind=AddressKind.E164, value=AUSTIN)
SENDER = Addr(kind=AddressKind.E164, value="15550100")
NIGHT = at("America/Chicago", f"{MONDAY} 23:00")
NOON = at("America/Chicago", f"{MONDAY} 12:00")


def campaign(**kwargs: object) -> Campaign:
    values: dict[str, object] = {
        "name": "acme",
        "numbers": (SENDER.value,),
        "scope": ScopeKind.NUMBER,
        "quiet_hours": ALL_US,
    }
    values.update(kwargs)
    return Campaign(**values)  # type: ignore[arg-type]


def opted(state: ConsentState) -> dict[str, ConsentRecord]:
    key = Scope(ScopeKind.NUMBER, SENDER.value).key
    return {
        key: ConsentRecord(
            subscriber=SUB.value, scope=key, state=state, updated_at=1.0, last_event_id="e1"
        )
    }


def decide(c: Campaign, now: float, records: dict[str, ConsentRecord] | None = None) -> object:
    counter = itertools.count(1)
    return decide_mt(
        campaign=c,
        subscriber=SUB,
        sender=SENDER,
        system_id="acct",
        service_type="",
        records=records if records is not None else opted(ConsentState.OPTED_IN),
        now=now,
        new_event_id=lambda: f"id{next(counter)}",
    )


class TestDecideMt:
    def test_refused_at_night(self) -> None:
        """An opted-in subscriber at 23:00 local: refused for quiet hours, with the rule."""
        decision = decide(campaign(), NIGHT)
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.QUIET_HOURS
        assert decision.closed is not None
        assert decision.closed.rule == "us-federal"

    def test_deferred_at_night(self) -> None:
        """quiet_hours action defer: the temporary reason."""
        c = campaign(quiet_hours=quiet("us-federal", action=QuietAction.DEFER))
        decision = decide(c, NIGHT)
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.QUIET_HOURS_DEFERRED

    def test_allowed_at_noon(self) -> None:
        """Inside the window the MT goes."""
        assert isinstance(decide(campaign(), NOON), Allow)

    def test_consent_first(self) -> None:
        """An opted-out subscriber at night is refused as opted out, not for the hour."""
        decision = decide(campaign(), NIGHT, opted(ConsentState.OPTED_OUT))
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.OPTED_OUT

    def test_transactional_never(self) -> None:
        """A transactional campaign's MTs are not held to its quiet hours by default."""
        assert isinstance(decide(campaign(category=Category.TRANSACTIONAL), NIGHT), Allow)

    def test_informational_when_named(self) -> None:
        """Informational MTs are checked only when the quiet hours name that category."""
        assert isinstance(decide(campaign(category=Category.INFORMATIONAL), NIGHT), Allow)
        both = quiet("us-federal", categories=frozenset(Category))
        c = campaign(category=Category.INFORMATIONAL, quiet_hours=both)
        decision = decide(c, NIGHT)
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.QUIET_HOURS

    def test_no_opt_in_request_at_night(self) -> None:
        """require_opt_in asks for consent only inside the window: at night the MT is held
        back and no pending event is made."""
        from gateway.consent.campaign import OutboundUnknown

        c = campaign(outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN)
        decision = decide(c, NIGHT, {})
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.QUIET_HOURS
        assert isinstance(decide(c, NOON, {}), RequestOptIn)

    def test_unknown_subscriber_allowed_by_policy(self) -> None:
        """outbound_unknown allow: an unknown subscriber at night is held back too."""
        decision = decide(campaign(), NIGHT, {})
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.QUIET_HOURS

    def test_campaign_without_quiet_hours(self) -> None:
        """No quiet hours: nothing to check at any hour."""
        c = campaign(quiet_hours=None)
        assert c.hours is None
        assert isinstance(decide(c, NIGHT), Allow)
