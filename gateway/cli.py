"""``smpp-gateway``: the daemon, the config checker, the SMSC simulator, the staff CLI, a test
client (``send``) and a scripted tour (``demo``).

``check-config`` exit codes: 2 when the file is not a valid config (the error names the key);
otherwise it also reports the consent store the config names, without creating, migrating or
writing it: ``store URL: N consent records``, or for a SQLite file that does not exist yet
``store URL: does not exist yet; the daemon creates it on first start`` (exit 0: a first
install). A store that exists but cannot be read (Redis not reachable, a corrupt or unreadable
SQLite file, a schema from a newer gateway) is exit 1: the config is valid, but a daemon
started with it would not start or would refuse every message, and a deployment check
should stop there. Exit 1 is distinct from 2, so a script that checks only the syntax (on a
build host that cannot reach the store) can accept it. Passwords in the URL are never printed.
What a campaign's HELP or opt-out reply lacks of what CTIA asks (gateway.consent.ctia) is
printed as ``warning: KEY: ...`` lines and never changes the exit status.

Listening addresses are tried by ``check-config`` and ``run`` alike (gateway.startup): one that
does not resolve, is not this machine's, or may not be bound is exit 2; a port in use is exit 2
for ``run`` and a note for ``check-config``. An SMSC name that does not resolve is exit 1 for
``check-config`` only: the daemon starts without it and fails binds until it resolves.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Sequence
from typing import Literal

from gateway import __version__, startup
from gateway.config import ConfigError, GatewayConfig, campaign_keys, load
from gateway.consent.ctia import Finding, campaign_findings

EXIT_OK = 0
EXIT_STORE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smpp-gateway",
        description="SMPP 3.4 consent gateway between SMS applications and an SMSC.",
    )
    parser.add_argument("--version", action="version", version=f"smpp-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    run.add_argument(
        "--workers",
        type=_workers_argument,
        metavar="N",
        help="worker processes sharing the listener: a number or auto (one per usable CPU); "
        "default server.workers, 1: one process, no supervisor",
    )

    worker = sub.add_parser(
        "worker", help="one worker process of run --workers (started by its supervisor)"
    )
    worker.add_argument("--config", required=True, metavar="FILE")
    worker.add_argument("--source", required=True, metavar="FILE")
    worker.add_argument("--index", required=True, type=int)
    worker.add_argument("--fds", required=True, metavar="LISTEN,STATUS,ALIVE")

    check = sub.add_parser("check-config", help="check a config file and exit")
    check.add_argument("--config", required=True, metavar="FILE", help="TOML config file")

    consent = sub.add_parser(
        "consent", help="show or change a number's consent (on the store of --config)"
    )
    csub = consent.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("show", "a number's current state in every scope"),
        ("history", "a number's consent events and their confirmations, oldest first"),
        ("opt-out", "opt a number out (everything, or one scope)"),
        ("opt-in", "opt a number in (everything, or one scope); never lifts a block"),
        ("block", "block a number: it gets nothing and its MOs are not forwarded"),
        ("unblock", "lift a block; the number stays opted out until it opts in"),
    ):
        cp = csub.add_parser(name, help=text)
        cp.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
        cp.add_argument("number", help="the subscriber's number (normalised to E.164)")
        cp.add_argument("--json", action="store_true", help="print JSON (for scripts)")
        if name in ("opt-out", "opt-in", "block", "unblock"):
            cp.add_argument("--reason", help="why (recorded in the audit trail)")
            cp.add_argument(
                "--actor",
                metavar="NAME",
                help="who makes the change, recorded as its 'by' (default: your login name)",
            )
        if name in ("opt-out", "opt-in"):
            cp.add_argument("--campaign", help="only this campaign")
            cp.add_argument("--list", dest="list_name", help="only this list (with --campaign)")
            cp.add_argument("--account", help="only this client account (system_id)")
            cp.add_argument("--sender", help="only messages from this sender number")
        if name == "history":
            cp.add_argument("--scope", help="only this scope key (e.g. campaign:acme)")
            cp.add_argument(
                "--format",
                choices=("table", "json", "csv"),
                help="table (aligned, the default), json (for scripts; --json is the same) or csv",
            )

    from gateway.staffimport import add_arguments as add_import_arguments

    add_import_arguments(csub)  # consent import FILE / consent export

    from gateway.audit.cli import add_arguments as add_audit_arguments

    add_audit_arguments(sub)  # audit verify / export / head

    # Imported here: the simulator's modules are not needed by the other commands.
    from gateway.simulator.cli import add_arguments as add_sim_arguments

    sim = sub.add_parser("smsc-sim", help="run the bundled SMSC simulator in the foreground")
    add_sim_arguments(sim)

    from gateway.sendcli import add_arguments as add_send_arguments

    send = sub.add_parser("send", help="bind, send one message, print the answer (a test client)")
    add_send_arguments(send)
    send.set_defaults(subparser=send)

    from gateway.demo import add_arguments as add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="a scripted tour: SMSC, gateway and client"))
    return parser


def _workers_argument(text: str) -> int | Literal["auto"]:
    from gateway.workers import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_count(config: GatewayConfig, given: int | Literal["auto"] | None) -> int | None:
    """How many workers ``run`` starts; None (after printing the error naming the key) when
    the config cannot be served by that many."""
    from gateway.workers import check, usable_cpus, worker_count

    count = worker_count(given if given is not None else config.server.workers, usable_cpus())
    try:
        check(config, count)
    except ConfigError as exc:
        print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
        return None
    return count


def _load(path: str) -> GatewayConfig | None:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
        return None


def _load_tls(path: str) -> GatewayConfig | None:
    """_load, then what the daemon needs besides the file: the TLS contexts (a certificate or
    key that exists but does not load, not PEM, key not matching, is a config error naming the
    table, not a start-up traceback) and the admin API's token secrets."""
    config = _load(path)
    if config is None:
        return None
    from gateway.app import client_ssl_context, server_ssl_context

    try:
        if config.server.tls is not None:
            key = "server.tls"
            server_ssl_context(config.server.tls)
        if config.upstream.tls is not None:
            key = "upstream.tls"
            client_ssl_context(config.upstream.tls)
        if config.admin.tls is not None:
            key = "admin.tls"
            server_ssl_context(config.admin.tls)
    except (ssl.SSLError, OSError) as exc:
        print(
            f"smpp-gateway: config error: {key}: cannot load its certificate, key or CA: {exc}",
            file=sys.stderr,
        )
        return None
    # The daemon's secrets (environment, files) are read only where the daemon runs: the
    # staff CLI works without them.
    try:
        if config.admin.listen is not None:
            config.admin.bearer_tokens()
        if config.upstream.service_bind is not None:
            config.upstream.service_bind.password.read()
        if config.optout_link is not None:
            config.optout_link.secret()
    except ConfigError as exc:
        print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
        return None
    return config


def _check_listeners(config: GatewayConfig, *, check: bool) -> list[str] | None:
    """Try every listening address before anything starts; None (after printing the one-line
    error) when one cannot be used. For ``check-config`` (``check``) a port in use now is a
    note, returned, not an error: it is most often the running daemon the check is for."""
    notes = []
    for item in startup.listeners(config):
        try:
            startup.try_bind(item)
        except startup.StartupError as exc:
            if not (check and exc.in_use):
                print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
                return None
            notes.append(f"note: {exc}; run fails while it is")
    return notes


def _reply_findings(config: GatewayConfig) -> list[Finding]:
    """What the campaigns' HELP and opt-out replies lack of what CTIA and the CWTA ask, and
    the keyword languages a campaign does not answer in its own words: warnings, which never
    change the exit status (only the campaign's registration can say what the text must be)."""
    if not config.consent.enabled:
        return []
    return [
        finding
        for key, campaign in campaign_keys(config.consent)
        for finding in campaign_findings(campaign, key)
    ]


def _check_store(config: GatewayConfig) -> int:
    """Report the configured store (never creating it); EXIT_OK or EXIT_STORE."""
    import asyncio

    from gateway.store.base import StoreError, StoreNotFoundError
    from gateway.store.factory import count_records, display_url

    url = config.store.url
    shown = display_url(url)
    if not config.consent.enabled:
        print(f"store {shown}: not used (consent.enabled = false)")
        return EXIT_OK
    try:
        records = asyncio.run(count_records(url))
    except StoreNotFoundError:
        print(f"store {shown}: does not exist yet; the daemon creates it on first start")
        return EXIT_OK
    except StoreError as exc:
        print(f"smpp-gateway: store {shown}: {exc}", file=sys.stderr)
        return EXIT_STORE
    print(f"store {shown}: {records} consent records")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        config = _load_tls(args.config)
        if config is None:
            return EXIT_CONFIG
        in_use = _check_listeners(config, check=True)
        if in_use is None or _worker_count(config, None) is None:
            return EXIT_CONFIG
        print(
            f"{args.config}: OK (listen {config.server.listen}, upstream {config.upstream.address})"
        )
        for note in in_use:
            print(note)
        for finding in _reply_findings(config):
            print(f"warning: {finding}")
        code = _check_store(config)
        problem = startup.resolve_upstream(config)
        if problem is not None:
            print(f"smpp-gateway: {problem}", file=sys.stderr)
            return EXIT_STORE
        return code
    if args.command == "run":
        config = _load_tls(args.config)
        if config is None or _check_listeners(config, check=False) is None:
            return EXIT_CONFIG
        count = _worker_count(config, args.workers)
        if count is None:
            return EXIT_CONFIG
        if count > 1:
            from gateway.workers import supervise

            return supervise(config, count)
        from gateway.app import run

        return run(config)
    if args.command == "worker":
        from gateway.workers import run_worker

        fds = [int(fd) for fd in args.fds.split(",")]
        return run_worker(snapshot=args.config, source=args.source, index=args.index, fds=fds)
    if args.command == "consent":
        config = _load(args.config)
        if config is None:
            return EXIT_CONFIG
        if args.action in ("import", "export"):
            from gateway.staffimport import run as run_import_export

            return run_import_export(args, config)
        from gateway.staffcli import run_consent

        return run_consent(args, config)
    if args.command == "audit":
        audit_config = None
        if args.config is not None:
            audit_config = _load(args.config)
            if audit_config is None:
                return EXIT_CONFIG
        from gateway.audit.cli import run_audit

        return run_audit(args, audit_config)
    if args.command == "smsc-sim":
        from gateway.simulator.cli import run_simulator

        return run_simulator(args)
    if args.command == "send":
        from gateway.sendcli import run_send

        return run_send(args, args.subparser)
    if args.command == "demo":
        from gateway.demo import run_demo

        return run_demo(args)
    raise AssertionError(args.command)  # argparse rejects unknown commands
