"""``smpp-gateway audit verify | export | head``: check the trail, hand over one number's records.

``verify`` exit codes: 0 every file's chain is whole (and, with ``--store``, matches the
store); 1 something is wrong (the first bad record of each file is named); 2 usage, an
unreadable config or file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.chain import Head, Verdict, verify
from gateway.audit.setup import configure_pseudonyms
from gateway.audit.trail import event_digest, utc
from gateway.config import ConfigError, GatewayConfig
from gateway.consent.numbers import normalise
from gateway.store.base import StoreError
from gateway.telemetry import logs

EXIT_OK = 0
EXIT_BAD = 1
EXIT_USAGE = 2


def add_arguments(sub: Any) -> None:
    """``audit ...`` under the top-level parser's subcommands."""
    audit = sub.add_parser("audit", help="check the audit trail, export one number's records")
    asub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    v = asub.add_parser(
        "verify", help="check the hash chain of audit files (and, with --store, the store)"
    )
    v.add_argument("files", nargs="*", metavar="FILE", help="audit files (default: the config's)")
    v.add_argument("--config", metavar="FILE", help="TOML config file")
    v.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a chain head recorded elsewhere (an audit_chain_head log line); repeatable",
    )
    v.add_argument(
        "--heads-from",
        metavar="LOGFILE",
        help="take every audit_chain_head line of this JSON log (e.g. a SIEM export)",
    )
    v.add_argument(
        "--store",
        action="store_true",
        help="also check every event of the config's store against the trail (give the "
        "files of every instance that shares the store)",
    )
    v.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    e = asub.add_parser("export", help="one number's audit records, with the proof of the chain")
    e.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    e.add_argument("--number", required=True, help="the subscriber's number")
    e.add_argument("files", nargs="*", metavar="FILE", help="audit files (default: the config's)")
    h = asub.add_parser("head", help="print the chain head of the config's audit file")
    h.add_argument("--config", required=True, metavar="FILE", help="TOML config file")


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


@dataclass
class _FileReport:
    path: str
    verdict: Verdict
    # event_id -> (digest, seq) of this file's consent records (read while verifying)
    events: dict[str, tuple[str, int]] = field(default_factory=dict)
    started_at: str | None = None


def _read(path: str, heads: Sequence[Head]) -> _FileReport:
    report = _FileReport(path, verify(_lines(path), heads))
    for line in _lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if record.get("kind") == "chain_started" and report.started_at is None:
            report.started_at = record.get("t")
        if record.get("kind") == "consent" and "event_id" in record:
            report.events[str(record["event_id"])] = (str(record.get("event")), int(record["seq"]))
    return report


def _heads_from(logfile: str | None, heads: Sequence[str], path: str) -> list[Head]:
    out = [Head.parse(h) for h in heads]
    if logfile is None:
        return out
    name = Path(path).name
    with open(logfile, "rb") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("event") != logs.AUDIT_CHAIN_HEAD:
                continue
            if Path(str(entry.get("path", ""))).name != name:
                continue
            out.append(Head(int(entry["seq"]), str(entry["hash"])))
    return out


async def _check_store(config: GatewayConfig, reports: Sequence[_FileReport]) -> list[str]:
    """Every event of the store in some file's chain with the same content, and every
    chained event in the store. Events older than every trail are counted, not faulted."""
    from gateway.store.factory import open_store

    audited: dict[str, tuple[str, str, int]] = {}
    for r in reports:
        for event_id, (digest, seq) in r.events.items():
            audited[event_id] = (digest, r.path, seq)
    starts = [r.started_at for r in reports if r.started_at]
    began = min(starts) if starts else None
    problems: list[str] = []
    seen: set[str] = set()
    before = 0
    store = await open_store(config.store.url, instance=f"{config.instance}/audit")
    try:
        subscribers: list[str] = []
        last = None
        async for record in store.export():
            if record.subscriber != last:
                subscribers.append(record.subscriber)
                last = record.subscriber
        for subscriber in subscribers:
            for event in await store.history(subscriber):
                entry = audited.get(event.event_id)
                who = f"{logs.mask_subscriber(subscriber)} {event.scope} -> {event.state.value}"
                if entry is None:
                    if began is not None and utc(event.at) < began:
                        before += 1
                        continue
                    problems.append(
                        f"store: event {event.event_id} ({who}, {utc(event.at)}) is in no "
                        "audit file given (added to the store behind the gateway's back?)"
                    )
                    continue
                seen.add(event.event_id)
                digest, path, seq = entry
                if digest != event_digest(event):
                    problems.append(
                        f"store: event {event.event_id} ({who}) differs from its audit record "
                        f"{path} seq {seq} (changed in the store)"
                    )
    finally:
        await store.close()
    for event_id, (_digest, path, seq) in audited.items():
        if event_id not in seen:
            problems.append(f"{path} seq {seq}: event {event_id} is not in the store (removed)")
    if before:
        print(f"store: {before} event(s) older than the trail (not checked)", file=sys.stderr)
    return problems


def _files(args: argparse.Namespace, config: GatewayConfig | None) -> list[str]:
    if args.files:
        return list(args.files)
    if config is None or config.audit.path is None:
        raise ConfigError("audit: give audit files, or --config with an [audit] path")
    return [config.audit.path]


def _verify(args: argparse.Namespace, config: GatewayConfig | None) -> int:
    files = _files(args, config)
    if args.store and config is None:
        raise ConfigError("audit verify --store: needs --config (the store to check)")
    reports = []
    for path in files:
        heads = _heads_from(args.heads_from, args.head, path)
        reports.append(_read(path, heads))
    bad = False
    out: list[dict[str, Any]] = []
    for r in reports:
        v = r.verdict
        out.append(
            {
                "file": r.path,
                "ok": v.ok,
                "records": v.records,
                "head": str(v.head),
                "heads_matched": v.heads_matched,
                "problem": None if v.finding is None else str(v.finding),
            }
        )
        if not v.ok:
            bad = True
            if not args.json:
                print(f"{r.path}: {v.finding} ({v.records} good records before it)")
        elif not args.json:
            matched = f", {v.heads_matched} logged head(s) matched" if v.heads_matched else ""
            print(f"{r.path}: OK, {v.records} records, head {v.head}{matched}")
    problems: list[str] = []
    if args.store and config is not None:
        configure_pseudonyms(config)
        problems = asyncio.run(_check_store(config, reports))
        bad = bad or bool(problems)
        if not args.json:
            for problem in problems[:100]:
                print(problem)
            if len(problems) > 100:
                print(f"... and {len(problems) - 100} more")
            if not problems:
                print("store: every event matches the trail")
    if args.json:
        print(json.dumps({"ok": not bad, "files": out, "store_problems": problems}))
    return EXIT_BAD if bad else EXIT_OK


def _export(args: argparse.Namespace, config: GatewayConfig) -> int:
    text = args.number.strip()
    address = normalise(
        text,
        1 if text.startswith("+") else 0,
        1,
        config.consent.default_country,
        short_code_max_length=config.consent.short_code_max_length,
    )
    if address is None or not address.is_subscriber:
        print(f"smpp-gateway: not a phone number: {args.number!r}", file=sys.stderr)
        return EXIT_USAGE
    configure_pseudonyms(config)
    pseudonym = logs.mask_subscriber(address.value)
    files = []
    ok = True
    for path in _files(args, config):
        verdict = verify(_lines(path))
        ok = ok and verdict.ok
        records = []
        for line in _lines(path):
            try:
                record = json.loads(line)
            except ValueError:
                break
            if isinstance(record, dict) and record.get("subscriber") == pseudonym:
                records.append(record)
        files.append(
            {
                "file": path,
                "chain_ok": verdict.ok,
                "problem": None if verdict.finding is None else str(verdict.finding),
                "records_in_chain": verdict.records,
                "head": str(verdict.head),
                "records": records,
            }
        )
    print(
        json.dumps(
            {
                "subscriber": address.value,
                "pseudonym": pseudonym,
                "proof": "each record's hash is SHA-256(prev + its canonical JSON without "
                "hash); `smpp-gateway audit verify FILE --head HEAD` re-checks the chain",
                "files": files,
            },
            ensure_ascii=False,
        )
    )
    return EXIT_OK if ok else EXIT_BAD


def _head(config: GatewayConfig) -> int:
    files = _files(argparse.Namespace(files=[]), config)
    verdict = verify(_lines(files[0]))
    print(str(verdict.head))
    return EXIT_OK if verdict.ok else EXIT_BAD


def run_audit(args: argparse.Namespace, config: GatewayConfig | None) -> int:
    try:
        if args.action == "verify":
            return _verify(args, config)
        if config is None:  # argparse requires --config for these
            print(f"smpp-gateway: audit {args.action}: needs --config", file=sys.stderr)
            return EXIT_USAGE
        if args.action == "export":
            return _export(args, config)
        return _head(config)
    except (ConfigError, ValueError) as exc:
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"smpp-gateway: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"smpp-gateway: store error: {exc}", file=sys.stderr)
        return EXIT_BAD
