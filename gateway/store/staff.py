"""Consent changes made by staff (CLI, admin API): the same events the relay records.

Every change is an event with actor, reason and instance, appended durably like a subscriber's
STOP, so the audit trail cannot tell a staff change from any other except by its actor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
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


async def set_state(
    store: ConsentStore,
    *,
    subscriber: str,
    scope: Scope,
    state: ConsentState,
    actor: Actor,
    reason: str | None,
    instance: str,
) -> ConsentEvent:
    """Opt a subscriber out or in at ``scope``. An opt-in never lifts a block."""
    if state not in (ConsentState.OPTED_OUT, ConsentState.OPTED_IN):
        raise StaffError("staff set opted_out or opted_in; use block / unblock for blocks")
    records = await store.current(subscriber)
    if state is ConsentState.OPTED_IN:
        blocked = records.get(GLOBAL_SCOPE.key)
        if blocked is not None and blocked.state is ConsentState.BLOCKED:
            raise StaffError(f"{subscriber} is blocked: unblock first (unblocking does not opt in)")
    event = ConsentEvent(
        event_id=uuid.uuid4().hex,
        at=time.time(),
        subscriber=subscriber,
        scope=scope.key,
        state=state,
        actor=actor,
        words=reason,
        instance=instance,
    )
    await store.append(event)
    return event


async def set_blocked(
    store: ConsentStore,
    *,
    subscriber: str,
    blocked: bool,
    actor: Actor,
    reason: str | None,
    instance: str,
) -> ConsentEvent | None:
    """Block (which opts out of everything) or unblock (which leaves the subscriber opted out)."""
    now = time.time()
    if blocked:
        event: ConsentEvent | None = block(
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
            records=await store.current(subscriber),
            now=now,
            event_id=uuid.uuid4().hex,
            actor=actor,
            reason=reason,
            instance=instance,
        )
    if event is not None:
        await store.append(event)
    return event


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
    }
