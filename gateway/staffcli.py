"""``smpp-gateway consent ...``: staff look-ups and changes on the configured store.

The CLI never creates a store: with no SQLite file where the config points (the daemon has
not run yet, or the path is wrong) it says so and exits 1, rather than showing "unknown" from
a new, empty file that the daemon would never read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.config import GatewayConfig
from gateway.consent.model import Actor, ConsentEvent, ConsentState
from gateway.consent.numbers import normalise
from gateway.store.base import ConsentStore, StoreError, StoreNotFoundError
from gateway.store.factory import open_store
from gateway.store.staff import (
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


def _subscriber(number: str, config: GatewayConfig) -> str | None:
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
    return address.value


def _sender(number: str | None, config: GatewayConfig) -> str | None:
    return None if number is None else _subscriber(number, config) or number


async def _run(args: argparse.Namespace, config: GatewayConfig, subscriber: str) -> int:
    instance = f"{config.instance}/cli"
    store: ConsentStore = await open_store(config.store.url, instance=instance)
    try:
        action = args.action
        if action == "show":
            records = await store.current(subscriber)
            state = summary(records) if records else ConsentState.UNKNOWN
            rows = [
                {"scope": r.scope, "state": r.state.value, "updated_at": utc_stamp(r.updated_at)}
                for r in sorted(records.values(), key=lambda r: r.scope)
            ]
            if args.json:
                print(json.dumps({"subscriber": subscriber, "state": state.value, "scopes": rows}))
            else:
                print(f"{subscriber}: {state.value}")
                for row in rows:
                    print(f"  {row['scope']:<40} {row['state']:<10} {row['updated_at']}")
            return EXIT_OK
        if action == "history":
            events = await store.history(subscriber, args.scope)
            if args.json:
                print(json.dumps([event_json(e) for e in events]))
            else:
                for e in events:
                    if not e.words:
                        words = ""
                    elif e.actor is Actor.KEYWORD:
                        words = f" words={e.words!r}"
                    else:
                        words = f" reason={e.words!r}"
                    print(
                        f"{utc_stamp(e.at)} {e.scope} -> {e.state.value} by {e.actor.value}"
                        f"{words} campaign={e.campaign or '-'} system_id={e.system_id or '-'}"
                        f" instance={e.instance or '-'}"
                    )
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
            event: ConsentEvent | None = await set_state(
                store,
                subscriber=subscriber,
                scope=scope,
                state=state,
                actor=Actor.ADMIN,
                reason=args.reason,
                instance=instance,
            )
        else:
            event = await set_blocked(
                store,
                subscriber=subscriber,
                blocked=action == "block",
                actor=Actor.ADMIN,
                reason=args.reason,
                instance=instance,
            )
        if event is None:
            print(f"{subscriber}: not blocked, nothing changed", file=sys.stderr)
            return EXIT_OK
        if args.json:
            print(json.dumps(event_json(event)))
        else:
            print(f"{subscriber}: {event.scope} -> {event.state.value} (event {event.event_id})")
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
