"""Consent changes made by staff (CLI, admin API): the same events the relay records.

Every change is an event with actor, ``by`` (the staff member or the API token's name), reason
and instance, appended durably like a subscriber's STOP, so the audit trail cannot tell a staff
change from any other except by its actor. A request for the state the subscriber already has
appends nothing and says so (``StaffChange.changed`` is False). Every real change is logged as
``consent_changed`` (``log_consent_change``), as the relay logs a subscriber's.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.consent.campaign import AccountMatch, account_key
from gateway.consent.model import (
    GLOBAL_SCOPE,
    Actor,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    Scope,
    ScopeKind,
)
from gateway.consent.policy import block, effective_state, unblock
from gateway.store.base import ConsentStore, StoreError
from gateway.telemetry import logs

log = logs.get_logger()


class StaffError(StoreError):
    """A staff request that cannot be carried out as asked (the message says why)."""


def scope_from(
    *,
    campaign: str | None = None,
    account: str | None = None,
    sender: str | None = None,
    list_name: str | None = None,
    account_match: AccountMatch = AccountMatch.FOLD,
) -> Scope:
    """The scope a staff change applies to: one of the options, or everything (global).

    An account is keyed as the relay keys it (``consent.account_match``), so a change made for
    "ACME" reaches the client that binds as "acme"."""
    given = [x for x in (campaign, account, sender) if x]
    if len(given) > 1:
        raise StaffError("give at most one of --campaign, --account, --sender")
    if list_name and not campaign:
        raise StaffError("--list needs --campaign")
    if campaign and list_name:
        return Scope(ScopeKind.LIST, f"{campaign}/{list_name}")
    if campaign:
        return Scope(ScopeKind.CAMPAIGN, campaign)
    if account:
        return Scope(ScopeKind.ACCOUNT, account_key(account, account_match))
    if sender:
        return Scope(ScopeKind.NUMBER, sender)
    return GLOBAL_SCOPE


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffChange:
    """What a staff request did: the event it appended, or none when the subscriber already was
    in the state asked for ("unchanged")."""

    subscriber: str
    scope: str  # the scope key the request was for
    # The state that now applies at ``scope``: the new one, or the one it already had
    # (``blocked`` for any scope of a blocked subscriber; ``unknown`` where there is no record).
    state: ConsentState
    event: ConsentEvent | None = None

    @property
    def changed(self) -> bool:
        return self.event is not None


def _may_share_an_mt(a: Scope, b: Scope) -> bool:
    """Whether one MT can be checked against both scopes (see policy.scopes_for: one global,
    one campaign, one number, at most one list, one or two accounts)."""
    if a.kind is b.kind and a.kind in (ScopeKind.CAMPAIGN, ScopeKind.NUMBER, ScopeKind.LIST):
        return a == b
    for lst, other in ((a, b), (b, a)):
        if lst.kind is ScopeKind.LIST and other.kind is ScopeKind.CAMPAIGN:
            return lst.name.startswith(f"{other.name}/")  # a list belongs to its campaign
    return True


def _already(records: Mapping[str, ConsentRecord], scope: Scope, state: ConsentState) -> bool:
    """True when recording ``state`` at ``scope`` now would change no decision.

    The record there must already hold that state, and no record of another scope that an MT
    can share with it may be as recent with a different state: the most recent record decides
    (policy.effective_state), so repeating an older opt-out after a newer opt-in elsewhere (a
    START to one number after STOPALL) is a real change."""
    current = records.get(scope.key)
    if current is None or current.state is not state:
        return False
    for key, record in records.items():
        if key == scope.key or record.state in (state, ConsentState.UNKNOWN):
            continue
        if record.updated_at >= current.updated_at and _may_share_an_mt(scope, _scope_of(key)):
            return False
    return True


def _scope_of(key: str) -> Scope:
    try:
        return Scope.parse(key)
    except ValueError:  # not a key this version writes: assume it may apply
        return GLOBAL_SCOPE


def _is_blocked(records: Mapping[str, ConsentRecord]) -> bool:
    record = records.get(GLOBAL_SCOPE.key)
    return record is not None and record.state is ConsentState.BLOCKED


async def set_state(
    store: ConsentStore,
    *,
    subscriber: str,
    scope: Scope,
    state: ConsentState,
    actor: Actor,
    reason: str | None,
    instance: str,
    by: str | None = None,
) -> StaffChange:
    """Opt a subscriber out or in at ``scope``; unchanged (no event) where that is already so.

    An opt-in never lifts a block (StaffError); an opt-out of a blocked subscriber is unchanged
    (blocking opts out of everything, and an opt-out must never replace the block)."""
    if state not in (ConsentState.OPTED_OUT, ConsentState.OPTED_IN):
        raise StaffError("staff set opted_out or opted_in; use block / unblock for blocks")
    records = await store.current(subscriber)
    if _is_blocked(records):
        if state is ConsentState.OPTED_IN:
            raise StaffError(f"{subscriber} is blocked: unblock first (unblocking does not opt in)")
        return StaffChange(subscriber=subscriber, scope=scope.key, state=ConsentState.BLOCKED)
    if _already(records, scope, state):
        return StaffChange(subscriber=subscriber, scope=scope.key, state=state)
    event = ConsentEvent(
        event_id=uuid.uuid4().hex,
        at=time.time(),
        subscriber=subscriber,
        scope=scope.key,
        state=state,
        actor=actor,
        words=reason,
        instance=instance,
        by=by,
    )
    return await _append(store, event)


async def set_blocked(
    store: ConsentStore,
    *,
    subscriber: str,
    blocked: bool,
    actor: Actor,
    reason: str | None,
    instance: str,
    by: str | None = None,
) -> StaffChange:
    """Block (which opts out of everything) or unblock (which leaves the subscriber opted out);
    unchanged (no event) for a block of a blocked subscriber or an unblock of one who is not."""
    records = await store.current(subscriber)
    now = time.time()
    event: ConsentEvent | None
    if blocked:
        event = None
        if not _is_blocked(records):
            event = block(
                subscriber=subscriber,
                now=now,
                event_id=uuid.uuid4().hex,
                actor=actor,
                reason=reason,
                instance=instance,
            )
    else:
        event = unblock(
            subscriber=subscriber,
            records=records,
            now=now,
            event_id=uuid.uuid4().hex,
            actor=actor,
            reason=reason,
            instance=instance,
        )
    if event is None:
        current = records.get(GLOBAL_SCOPE.key)
        state = ConsentState.UNKNOWN if current is None else current.state
        return StaffChange(subscriber=subscriber, scope=GLOBAL_SCOPE.key, state=state)
    return await _append(store, dataclasses.replace(event, by=by))


async def _append(store: ConsentStore, event: ConsentEvent) -> StaffChange:
    if await store.append(event):  # False only for a duplicate dedup_key (staff events have none)
        log_consent_change(event)
    return StaffChange(
        subscriber=event.subscriber, scope=event.scope, state=event.state, event=event
    )


def log_consent_change(event: ConsentEvent) -> None:
    """``consent_changed`` for one event a staff tool stored (the relay logs its own)."""
    log.info(
        logs.CONSENT_CHANGED,
        event_id=event.event_id,
        subscriber=logs.mask_subscriber(event.subscriber),
        scope=event.scope,
        state=event.state.value,
        actor=event.actor.value,
        by=event.by,
        match=event.match.value,
        campaign=event.campaign,
        system_id=event.system_id,
        instance=event.instance,
    )


def summary(records: Mapping[str, ConsentRecord]) -> ConsentState:
    """The state that decides across all of a subscriber's scopes (for display)."""
    state, _key = effective_state(tuple(records), records)
    return state


def utc_stamp(at: float) -> str:
    """Seconds since the epoch as an ISO 8601 UTC time, as the CLI and the API print them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def event_json(event: ConsentEvent) -> dict[str, Any]:
    """One consent event as the CLI (--json) and the admin API show it."""
    return {
        "event_id": event.event_id,
        "at": utc_stamp(event.at),
        "subscriber": event.subscriber,
        "scope": event.scope,
        "state": event.state.value,
        "actor": event.actor.value,
        "match": event.match.value,
        "words": event.words,
        # A staff change keeps its reason where a keyword event keeps the subscriber's words.
        "reason": None if event.actor is Actor.KEYWORD else event.words,
        "sender": event.sender,
        "campaign": event.campaign,
        "system_id": event.system_id,
        "smsc_message_id": event.smsc_message_id,
        "instance": event.instance,
        "by": event.by,
    }
