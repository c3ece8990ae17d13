"""``smpp-gateway consent ...``: staff look-ups and changes on the configured store.

The CLI never creates a store: with no SQLite file where the config points (the daemon has
not run yet, or the path is wrong) it says so and exits 1, rather than showing "unknown" from
a new, empty file that the daemon would never read.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from typing import Any

from gateway.audit.setup import configure_pseudonyms
from gateway.audit.staff import StaffAudit
from gateway.config import ConfigError, GatewayConfig
from gateway.consent.model import Actor, ConsentState, SmsAddress
from gateway.consent.numbers import normalise
from gateway.store.base import ConsentStore, StoreError, StoreNotFoundError
from gateway.store.evidence import (
    frequency_caps,
    history_rows,
    render_frequency_caps,
    render_revoke_rules,
    render_sending_rules,
    revoke_rules,
    sending_rules,
)
from gateway.store.evidence import render as render_history
from gateway.store.factory import open_store
from gateway.store.staff import (
    StaffChange,
    StaffError,
    event_json,
    scope_from,
    set_blocked,
    set_state,
    summary,
    utc_stamp,
)
from gateway.telemetry import logs

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
CHANGE_ACTIONS = ("opt-out", "opt-in", "block", "unblock")
MAX_ACTOR_LENGTH = 100


def _subscriber(number: str, config: GatewayConfig) -> str | None:
    address = _address(number, config)
    return None if address is None else address.value


def _address(number: str, config: GatewayConfig) -> SmsAddress | None:
    text = number.strip()
    ton = 1 if text.startswith("+") else 0
    address = normalise(
        text,
        ton,
        1,
        config.consent.default_country,
        short_code_max_length=config.consent.short_code_max_length,
    )
    if address is None or not address.is_subscriber:
        return None
    return address


def _sender(number: str | None, config: GatewayConfig) -> str | None:
    return None if number is None else _subscriber(number, config) or number


def history_format(args: argparse.Namespace) -> str:
    """``consent history``'s output format: ``--format``, or ``--json`` (an alias of
    ``--format json``), else the table; ``--json`` with another ``--format`` is a usage error."""
    chosen: str | None = getattr(args, "format", None)
    if args.json:
        if chosen not in (None, "json"):
            raise StaffError(f"--json is --format json; it cannot go with --format {chosen}")
        return "json"
    return chosen or "table"


async def open_staff_store(config: GatewayConfig, instance: str) -> ConsentStore:
    """The store of ``config`` as staff tools use it (never created here), with every change
    it makes written to the instance's audit trail before the command says it is done (the
    same file as the daemon's: appends take turns under a file lock; see ``staff_audit``) and
    numbers shown under the configured pseudonym key."""
    try:
        configure_pseudonyms(config)
    except ConfigError as exc:
        raise StaffError(str(exc)) from None
    store = await open_store(config.store.url, instance=instance)
    if config.audit.path is not None:
        store.on_change = StaffAudit(config).record
    return store


def staff_audit(store: ConsentStore) -> StaffAudit | None:
    """The audit writer ``open_staff_store`` gave ``store`` (an import prepares with it)."""
    writer = getattr(getattr(store, "on_change", None), "__self__", None)
    return writer if isinstance(writer, StaffAudit) else None


def staff_member(actor: str | None) -> str:
    """Who makes a CLI change: ``--actor``, else the person logged in (the one who ran sudo,
    when the command runs through sudo as the store's owner), else the uid. A claim, not a
    proof: whoever may write the store may write any name."""
    if actor is not None:
        name = actor.strip()
        if not name or len(name) > MAX_ACTOR_LENGTH or not name.isprintable():
            raise StaffError(
                f"--actor: expected a name of 1 to {MAX_ACTOR_LENGTH} printable characters"
            )
        return name
    sudo_user = os.environ.get("SUDO_USER", "").strip()
    if sudo_user:
        return sudo_user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (e.g. a bare container)
        return str(os.getuid())


def _print_change(change: StaffChange, *, as_json: bool) -> None:
    """A change: the event (``changed``: true); a request that changed nothing: "unchanged"."""
    event = change.event
    if event is None:
        if as_json:
            print(
                json.dumps(
                    {
                        "subscriber": change.subscriber,
                        "changed": False,
                        "scope": change.scope,
                        "state": change.state.value,
                    }
                )
            )
        else:
            print(f"{change.subscriber}: unchanged ({change.scope} is {change.state.value})")
    elif as_json:
        print(json.dumps({**event_json(event), "changed": True}))
    else:
        print(
            f"{event.subscriber}: {event.scope} -> {event.state.value} by {event.by or '-'}"
            f" (event {event.event_id})"
        )


async def _run(args: argparse.Namespace, config: GatewayConfig, subscriber: str) -> int:
    instance = f"{config.instance}/cli"
    by = staff_member(args.actor) if args.action in CHANGE_ACTIONS else None
    store: ConsentStore = await open_staff_store(config, instance)
    try:
        action = args.action
        if action == "show":
            records = await store.current(subscriber)
            state = summary(records) if records else ConsentState.UNKNOWN
            rows = [
                {"scope": r.scope, "state": r.state.value, "updated_at": utc_stamp(r.updated_at)}
                for r in sorted(records.values(), key=lambda r: r.scope)
            ]
            address = _address(args.number, config)
            assert address is not None  # run_consent read it as a subscriber
            rules = sending_rules(
                config.consent.directory,
                address,
                country=config.consent.default_country,
                now=time.time(),
            )
            caps = await frequency_caps(
                config.consent.directory, store, subscriber, now=time.time()
            )
            businesses = None
            if any(c.business for c in config.consent.directory):
                businesses = revoke_rules(
                    config.consent.directory, await store.history(subscriber), now=time.time()
                )
            if args.json:
                shown: dict[str, Any] = {
                    "subscriber": subscriber,
                    "state": state.value,
                    "scopes": rows,
                }
                if rules is not None:
                    shown["sending_rules"] = rules
                if caps is not None:
                    shown["frequency_caps"] = caps
                if businesses is not None:
                    shown["businesses"] = businesses
                print(json.dumps(shown))
            else:
                print(f"{subscriber}: {state.value}")
                for row in rows:
                    print(f"  {row['scope']:<40} {row['state']:<10} {row['updated_at']}")
                if rules is not None:
                    sys.stdout.write(render_sending_rules(rules))
                if caps is not None:
                    sys.stdout.write(render_frequency_caps(caps))
                if businesses is not None:
                    sys.stdout.write(render_revoke_rules(businesses))
            return EXIT_OK
        if action == "history":
            rows = await history_rows(store, subscriber, args.scope)
            sys.stdout.write(render_history(rows, history_format(args)))
            return EXIT_OK
        if action in ("opt-out", "opt-in"):
            scope = scope_from(
                campaign=args.campaign,
                account=args.account,
                sender=_sender(args.sender, config),
                list_name=args.list_name,
                account_match=config.consent.account_match,
            )
            state = ConsentState.OPTED_OUT if action == "opt-out" else ConsentState.OPTED_IN
            change = await set_state(
                store,
                subscriber=subscriber,
                scope=scope,
                state=state,
                actor=Actor.ADMIN,
                reason=args.reason,
                instance=instance,
                by=by,
            )
        elif action in ("block", "unblock"):
            change = await set_blocked(
                store,
                subscriber=subscriber,
                blocked=action == "block",
                actor=Actor.ADMIN,
                reason=args.reason,
                instance=instance,
                by=by,
            )
        else:
            raise AssertionError(action)  # argparse offers no other action
        _print_change(change, as_json=args.json)
        return EXIT_OK
    finally:
        await store.close()


def run_consent(args: argparse.Namespace, config: GatewayConfig) -> int:
    subscriber = _subscriber(args.number, config)
    if subscriber is None:
        print(f"smpp-gateway: not a phone number: {args.number!r}", file=sys.stderr)
        return EXIT_USAGE
    # The store logs (a file created, a failure): on stderr, as the daemon does, so that
    # standard output carries the command's answer only (--json, CSV).
    logs.configure(
        level=config.logging.level,
        log_bodies=config.logging.log_bodies,
        json=config.logging.format == "json",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(_run(args, config, subscriber))
    except StaffError as exc:
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreNotFoundError as exc:
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StoreError as exc:
        print(f"smpp-gateway: store error: {exc}", file=sys.stderr)
        return EXIT_FAILED
