"""Staff changes (gateway/store/staff.py): idempotent, attributed, logged once per real change."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent.model import (
    GLOBAL_SCOPE,
    Actor,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    Scope,
    fold,
)
from gateway.consent.policy import effective_state
from gateway.store.memory import MemoryStore
from gateway.store.staff import (
    StaffChange,
    StaffError,
    event_json,
    log_consent_change,
    set_blocked,
    set_state,
)
from gateway.telemetry import logs

SUBSCRIBER = "15551234567"
OUT = ConsentState.OPTED_OUT
IN = ConsentState.OPTED_IN
PENDING = ConsentState.PENDING
BLOCKED = ConsentState.BLOCKED
GLOBAL = GLOBAL_SCOPE.key
CAMPAIGN_A = "campaign:acme"
CAMPAIGN_B = "campaign:other"
LIST_A = "list:acme/promo"
LIST_B = "list:other/promo"
NUMBER = "number:15550100"
ACCOUNT = "account:acct"


def prior(*records: tuple[str, ConsentState]) -> list[ConsentEvent]:
    """Events putting the subscriber in these states, oldest first, all in the past."""
    start = time.time() - 1000.0
    return [
        ConsentEvent(
            event_id=f"prior-{i}",
            at=start + i,
            subscriber=SUBSCRIBER,
            scope=scope,
            state=state,
            actor=Actor.KEYWORD,
        )
        for i, (scope, state) in enumerate(records)
    ]


async def store_with(events: list[ConsentEvent]) -> MemoryStore:
    store = MemoryStore()
    for event in events:
        await store.append(event)
    return store


async def opt(store: MemoryStore, scope: str, state: ConsentState) -> StaffChange:
    return await set_state(
        store,
        subscriber=SUBSCRIBER,
        scope=Scope.parse(scope),
        state=state,
        actor=Actor.ADMIN,
        reason="test",
        instance="gw/cli",
        by="alice",
    )


async def blocking(store: MemoryStore, blocked: bool) -> StaffChange:
    return await set_blocked(
        store,
        subscriber=SUBSCRIBER,
        blocked=blocked,
        actor=Actor.API,
        reason="test",
        instance="gw/api",
        by="support-desk",
    )


# (prior records oldest first, scope, state asked for, changed?, state at the scope after)
OPT_CASES = [
    ((), GLOBAL, OUT, True, OUT),
    ((), GLOBAL, IN, True, IN),
    (((GLOBAL, OUT),), GLOBAL, OUT, False, OUT),
    (((GLOBAL, IN),), GLOBAL, IN, False, IN),
    (((GLOBAL, OUT),), GLOBAL, IN, True, IN),
    (((GLOBAL, IN),), GLOBAL, OUT, True, OUT),
    (((CAMPAIGN_A, OUT),), CAMPAIGN_A, OUT, False, OUT),
    (((CAMPAIGN_A, OUT),), CAMPAIGN_A, IN, True, IN),
    # Opted out only at another scope: an opt-in here is a real change (it wins, being newer).
    (((GLOBAL, OUT),), CAMPAIGN_A, IN, True, IN),
    (((CAMPAIGN_A, OUT),), GLOBAL, IN, True, IN),
    (((CAMPAIGN_A, OUT),), CAMPAIGN_B, OUT, True, OUT),
    # STOPALL, then START to one number: repeating the global opt-out stops that number again.
    (((GLOBAL, OUT), (NUMBER, IN)), GLOBAL, OUT, True, OUT),
    (((ACCOUNT, OUT), (LIST_A, IN)), ACCOUNT, OUT, True, OUT),
    (((GLOBAL, OUT), (CAMPAIGN_A, PENDING)), GLOBAL, OUT, True, OUT),
    # The newer opt-in is older than the record asked about: nothing would change.
    (((NUMBER, IN), (GLOBAL, OUT)), GLOBAL, OUT, False, OUT),
    (((GLOBAL, IN), (CAMPAIGN_A, OUT)), GLOBAL, IN, True, IN),
    # A newer record no MT shares with this scope (another campaign, another number) does not
    # make a repeat a change; one of the same campaign's lists does.
    (((CAMPAIGN_A, OUT), (CAMPAIGN_B, IN)), CAMPAIGN_A, OUT, False, OUT),
    (((NUMBER, OUT), ("number:15550101", IN)), NUMBER, OUT, False, OUT),
    (((CAMPAIGN_A, OUT), (LIST_B, IN)), CAMPAIGN_A, OUT, False, OUT),
    (((CAMPAIGN_A, OUT), (LIST_A, IN)), CAMPAIGN_A, OUT, True, OUT),
    (((LIST_A, OUT), (CAMPAIGN_A, IN)), LIST_A, OUT, True, OUT),
    (((LIST_A, OUT), (LIST_B, IN)), LIST_A, OUT, False, OUT),
    # Blocked: blocking opts out of everything, so an opt-out anywhere is unchanged (and must
    # never replace the block).
    (((GLOBAL, BLOCKED),), GLOBAL, OUT, False, BLOCKED),
    (((GLOBAL, BLOCKED),), CAMPAIGN_A, OUT, False, BLOCKED),
]


class TestIdempotentOptOutIn:
    """set_state appends an event only when it changes something."""

    @pytest.mark.parametrize(
        ("records", "scope", "state", "changed", "after"),
        OPT_CASES,
        ids=[
            f"{'+'.join(f'{k}={s}' for k, s in r) or 'none'}>{k}={s}" for r, k, s, *_ in OPT_CASES
        ],
    )
    async def test_case(
        self,
        records: tuple[tuple[str, ConsentState], ...],
        scope: str,
        state: ConsentState,
        changed: bool,
        after: ConsentState,
    ) -> None:
        """Each case of the table: changed or unchanged, and the state left at the scope."""
        store = await store_with(prior(*records))
        change = await opt(store, scope, state)
        history = await store.history(SUBSCRIBER)
        assert change.changed is changed
        assert (change.scope, change.state) == (scope, after)
        assert len(history) == len(records) + changed
        if changed:
            assert change.event is not None
            assert history[-1] == change.event
            assert (change.event.by, change.event.actor) == ("alice", Actor.ADMIN)
        else:
            assert change.event is None
        # Whatever happened, a blocked subscriber stays blocked.
        if (GLOBAL, BLOCKED) in records:
            assert (await store.current(SUBSCRIBER))[GLOBAL].state is BLOCKED

    async def test_opt_in_of_a_blocked_subscriber_is_refused(self) -> None:
        """An opt-in never lifts a block: StaffError, nothing recorded."""
        store = await store_with(prior((GLOBAL, BLOCKED)))
        for scope in (GLOBAL, CAMPAIGN_A):
            with pytest.raises(StaffError, match="unblock first"):
                await opt(store, scope, IN)
        assert len(await store.history(SUBSCRIBER)) == 1

    async def test_repeating_is_unchanged_from_the_second_time(self) -> None:
        """Three opt-outs in a row: one event; the second and third answer unchanged."""
        store = MemoryStore()
        changes = [await opt(store, CAMPAIGN_A, OUT) for _ in range(3)]
        assert [c.changed for c in changes] == [True, False, False]
        assert len(await store.history(SUBSCRIBER)) == 1


# (prior records, block?, changed?, state of the global scope after)
BLOCK_CASES = [
    ((), True, True, BLOCKED),
    (((GLOBAL, OUT),), True, True, BLOCKED),
    (((GLOBAL, IN),), True, True, BLOCKED),
    (((GLOBAL, BLOCKED),), True, False, BLOCKED),
    (((GLOBAL, BLOCKED),), False, True, OUT),
    ((), False, False, ConsentState.UNKNOWN),
    (((GLOBAL, OUT),), False, False, OUT),
    (((GLOBAL, IN),), False, False, IN),
    (((CAMPAIGN_A, OUT),), False, False, ConsentState.UNKNOWN),
]


class TestIdempotentBlock:
    """set_blocked appends an event only for a block of an unblocked number or the reverse."""

    @pytest.mark.parametrize(
        ("records", "block", "changed", "after"),
        BLOCK_CASES,
        ids=[
            f"{'+'.join(f'{k}={s}' for k, s in r) or 'none'}>{'block' if b else 'unblock'}"
            for r, b, *_ in BLOCK_CASES
        ],
    )
    async def test_case(
        self,
        records: tuple[tuple[str, ConsentState], ...],
        block: bool,
        changed: bool,
        after: ConsentState,
    ) -> None:
        """Each case of the table: changed or unchanged, and the global state left."""
        store = await store_with(prior(*records))
        change = await blocking(store, block)
        assert change.changed is changed
        assert (change.scope, change.state) == (GLOBAL, after)
        assert len(await store.history(SUBSCRIBER)) == len(records) + changed
        if change.event is not None:
            assert (change.event.by, change.event.actor) == ("support-desk", Actor.API)
            assert change.event.state is after

    async def test_block_twice_is_one_event(self) -> None:
        """Blocking a blocked number again records nothing."""
        store = MemoryStore()
        assert (await blocking(store, True)).changed
        assert not (await blocking(store, True)).changed
        assert [e.state for e in await store.history(SUBSCRIBER)] == [BLOCKED]


# --- "unchanged" never hides a change ---------------------------------------------------------

SCOPES = [GLOBAL, ACCOUNT, CAMPAIGN_A, CAMPAIGN_B, LIST_A, LIST_B, NUMBER, "number:15550101"]
# Every set of scope keys one MT is checked against (policy.scopes_for), over SCOPES.
MT_KEY_SETS = [
    (GLOBAL, ACCOUNT, campaign, number, *lists)
    for campaign, lists in (
        (CAMPAIGN_A, ()),
        (CAMPAIGN_A, (LIST_A,)),
        (CAMPAIGN_B, ()),
        (CAMPAIGN_B, (LIST_B,)),
    )
    for number in (NUMBER, "number:15550101")
]


def decisions(records: Mapping[str, ConsentRecord]) -> list[ConsentState]:
    return [effective_state(keys, records)[0] for keys in MT_KEY_SETS]


histories = st.lists(
    st.tuples(st.sampled_from(SCOPES), st.sampled_from([OUT, IN, PENDING])), max_size=6
)


class TestUnchangedChangesNoDecision:
    """Where set_state answers unchanged, the event it did not write would have changed no MT's
    decision; where it writes one, the request really is new at its scope or overrides a newer
    record."""

    @settings(max_examples=300, deadline=None)
    @given(
        records=histories,
        scope=st.sampled_from(SCOPES),
        state=st.sampled_from([OUT, IN]),
    )
    def test_unchanged_is_no_change(
        self, records: list[tuple[str, ConsentState]], scope: str, state: ConsentState
    ) -> None:
        """Random histories without blocks: unchanged implies every MT decision is the same
        with or without the event."""

        async def check() -> None:
            events = prior(*records)
            store = await store_with(events)
            before = dict(await store.current(SUBSCRIBER))
            change = await opt(store, scope, state)
            if change.changed:
                return
            would_be = ConsentEvent(
                event_id="x",
                at=time.time(),
                subscriber=SUBSCRIBER,
                scope=scope,
                state=state,
                actor=Actor.ADMIN,
            )
            after = {key: record for (key, _s), record in fold([*events, would_be]).items()}
            assert decisions(before) == decisions(after)

        asyncio.run(check())


# --- who, and the log -------------------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure(level="info", stream=stream)
    yield stream
    structlog.reset_defaults()


def changes_logged(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == logs.CONSENT_CHANGED]


class TestAttributionAndLog:
    """``by`` is kept in the event and shown; every real change logs consent_changed once."""

    async def test_by_is_in_event_json(self) -> None:
        """event_json shows who made the change."""
        change = await opt(MemoryStore(), GLOBAL, OUT)
        assert change.event is not None
        shown = event_json(change.event)
        assert (shown["by"], shown["actor"], shown["instance"]) == ("alice", "admin", "gw/cli")

    async def test_one_line_per_real_change(self, log_output: io.StringIO) -> None:
        """An opt-out, its repeat, a block, its repeat, an unblock: three consent_changed lines
        with the masked subscriber, never the number itself."""
        store = MemoryStore()
        await opt(store, CAMPAIGN_A, OUT)
        await opt(store, CAMPAIGN_A, OUT)
        await blocking(store, True)
        await blocking(store, True)
        await blocking(store, False)
        lines = changes_logged(log_output)
        events = await store.history(SUBSCRIBER)
        assert [line["event_id"] for line in lines] == [e.event_id for e in events]
        assert [(line["scope"], line["state"], line["by"]) for line in lines] == [
            (CAMPAIGN_A, "opted_out", "alice"),
            (GLOBAL, "blocked", "support-desk"),
            (GLOBAL, "opted_out", "support-desk"),
        ]
        assert lines[0]["actor"] == "admin"
        assert lines[0]["instance"] == "gw/cli"
        assert lines[1]["actor"] == "api"
        assert all(line["subscriber"] == logs.mask_subscriber(SUBSCRIBER) for line in lines)
        assert SUBSCRIBER not in log_output.getvalue()

    def test_log_fields(self, log_output: io.StringIO) -> None:
        """log_consent_change writes the documented fields."""
        event = ConsentEvent(
            event_id="e1",
            at=1.0,
            subscriber=SUBSCRIBER,
            scope=CAMPAIGN_A,
            state=OUT,
            actor=Actor.IMPORT,
            instance="gw",
            by="list.csv:7",
        )
        log_consent_change(event)
        (line,) = changes_logged(log_output)
        assert {k: line[k] for k in ("event_id", "scope", "state", "actor", "by", "instance")} == {
            "event_id": "e1",
            "scope": CAMPAIGN_A,
            "state": "opted_out",
            "actor": "import",
            "by": "list.csv:7",
            "instance": "gw",
        }
        assert line["level"] == "info"
