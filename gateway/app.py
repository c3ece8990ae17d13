"""Composition root: builds telemetry, the relay and its interceptor from config, runs the daemon.

Signals: SIGTERM / SIGINT drain (stop accepting, let in-flight requests finish up to
``gateway.shutdown_grace_s``, unbind every session) and exit 0; SIGHUP re-reads the config file and
applies what can change without dropping sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway import __version__, startup
from gateway.admin.api import AdminApi
from gateway.admin.optout import OptOutPages, link_day
from gateway.audit.setup import configure_pseudonyms, open_trail
from gateway.audit.trail import AuditTrail
from gateway.config import (
    ConfigError,
    GatewayConfig,
    SessionTimers,
    TlsConfig,
    check_proxy_protocol,
    load,
)
from gateway.consent.campaign import Campaign
from gateway.consent.link import LinkSigner
from gateway.consent.model import AddressKind, SmsAddress
from gateway.eventloop import run_loop
from gateway.messages.footer import FooterSettings
from gateway.proxy.binds import BindGuard
from gateway.proxy.bridge import ProxySettings
from gateway.proxy.consent import ConsentEnforcer
from gateway.proxy.footer import FooterStage
from gateway.proxy.hooks import Interceptor, PassThrough
from gateway.proxy.listener import ConnectionLimits, Listener
from gateway.proxy.probe import UpstreamProbe
from gateway.proxy.receipts import ReceiptIds
from gateway.proxy.service import ServiceLink
from gateway.smpp.session import SessionConfig
from gateway.store.base import ConsentStore
from gateway.store.factory import display_url, open_store
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet
from gateway.text.segment import ConcatKind

log = logs.get_logger()


# upstream.default_alphabet: what the SMSC takes data_coding 0 to mean.
SMSC_DEFAULT_ALPHABETS = {"gsm7": Alphabet.GSM7, "latin1": Alphabet.LATIN1, "ascii": Alphabet.IA5}


def session_config(timers: SessionTimers) -> SessionConfig:
    return SessionConfig(
        window_size=timers.window_size,
        response_timeout_s=timers.response_timeout_s,
        enquire_link_interval_s=timers.enquire_link_interval_s,
        inactivity_timeout_s=timers.inactivity_timeout_s,
        bind_timeout_s=timers.bind_timeout_s,
        unbind_timeout_s=timers.unbind_timeout_s,
        max_pdu_length=timers.max_pdu_length,
        relay_vendor_pdus=timers.relay_vendor_pdus,
    )


def campaign_names(config: GatewayConfig) -> tuple[str, ...]:
    return tuple(c.name for c in config.consent.directory)


def footer_settings(config: GatewayConfig) -> FooterSettings:
    text = config.text
    return FooterSettings(
        default_alphabet=SMSC_DEFAULT_ALPHABETS[config.upstream.default_alphabet],
        concat=ConcatKind(text.concat),
        hold_timeout_s=text.hold_timeout_s,
        hold_max_messages=text.hold_max_messages,
        hold_max_bytes=text.hold_max_bytes,
    )


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert tls.cert_file is not None
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        ctx.load_verify_locations(tls.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def connection_limits(config: GatewayConfig) -> ConnectionLimits:
    server = config.server
    return ConnectionLimits(
        max_sessions=server.max_sessions,
        max_unbound=server.max_unbound,
        max_unbound_per_address=server.max_unbound_per_address,
        max_sessions_per_address=server.max_sessions_per_address,
        max_sessions_per_account=server.max_sessions_per_account,
        account_match=config.consent.account_match,
        allow_networks=server.allow_networks,
        account_networks=server.account_networks,
        system_id_in_certificate=server.tls is not None and server.tls.system_id_in_certificate,
        proxy_protocol=server.proxy_protocol,
        proxy_networks=server.proxy_networks,
        proxy_header_timeout_s=server.proxy_header_timeout_s,
    )


def proxy_settings(config: GatewayConfig) -> ProxySettings:
    up = config.upstream
    timers = session_config(config.session)
    # A client must send its bind within server.bind_timeout_s (an idle socket is gone soon).
    client_timers = dataclasses.replace(
        timers, bind_timeout_s=min(timers.bind_timeout_s, config.server.bind_timeout_s)
    )
    if config.consent.enabled and not config.consent.relay_client_vendor_pdus:
        # A vendor request may carry a message the gateway cannot read, let alone check:
        # with consent on, clients' vendor requests get ESME_RINVCMDID (fail closed).
        client_timers = dataclasses.replace(client_timers, relay_vendor_pdus=False)
    return ProxySettings(
        upstream_host=up.address.host,
        upstream_port=up.address.port,
        upstream_ssl=client_ssl_context(up.tls) if up.tls else None,
        upstream_server_hostname=(up.tls.server_hostname or up.address.host) if up.tls else None,
        connect_timeout_s=up.connect_timeout_s,
        client_session=client_timers,
        upstream_session=timers,
        max_unanswered=max(1000, 2 * config.session.window_size),
        stall_timeout_s=config.session.write_stall_timeout_s,
        partial_pdu_timeout_s=config.session.partial_pdu_timeout_s,
    )


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness and liveness; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


async def watchdog_pings() -> None:
    """Ping systemd's watchdog (``WATCHDOG=1``) at half its interval, forever; returns at once
    when no watchdog is configured. The loop answering is what systemd should watch."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return
    interval = int(usec) / 2_000_000
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


class Supervision(Protocol):
    """What a supervisor's admin API reports for its workers (gateway.workers)."""

    def metrics_text(self) -> Awaitable[bytes]:
        """The supervisor's own metrics and its workers', summed, in the text format."""
        ...

    def problem(self) -> Awaitable[str | None]:
        """None while every worker runs and is ready; else what is wrong."""
        ...


class Gateway:
    """One gateway process: the consent store, the enforcer and the client listener.

    With ``server.workers`` above 1 (gateway.workers) there are two kinds: each worker is a
    Gateway accepting on the ``listen_socket`` its supervisor bound, with a private
    ``status_socket`` (metrics and readiness for the supervisor) instead of the admin and
    opt-out listeners; the supervisor's Gateway (``supervision`` given) serves no SMPP and
    runs the admin API and the opt-out pages, on a store of its own.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        interceptor_factory: Callable[[GatewayConfig], Interceptor] | None = None,
        listen_socket: socket.socket | None = None,
        status_socket: socket.socket | None = None,
        supervision: Supervision | None = None,
    ) -> None:
        self.config = config
        self._listen_socket = listen_socket
        self._status_socket = status_socket
        self._supervision = supervision
        self.metrics = Metrics()
        # Tests may replace the interceptor; production builds the consent enforcer in start().
        self._interceptor_factory = interceptor_factory
        self.store: ConsentStore | None = None
        self.enforcer: ConsentEnforcer | None = None
        self.audit: AuditTrail | None = None
        self.footers: FooterStage | None = None
        self.listener = Listener(
            settings=proxy_settings(config),
            interceptor=PassThrough(),
            metrics=self.metrics,
            limits=connection_limits(config),
            binds=BindGuard(config.server.binds),
            ssl_context=server_ssl_context(config.server.tls) if config.server.tls else None,
        )
        self.admin: AdminApi | None = None
        self.status: AdminApi | None = None  # a worker's private endpoint
        self.optout: OptOutPages | None = None
        self._link_signer: LinkSigner | None = None
        self.service: ServiceLink | None = None
        self._accepting = False
        self._stop = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.listener.port

    async def start(self) -> None:
        config = self.config
        serve_smpp = self._supervision is None
        public = self._status_socket is None  # a worker leaves these to its supervisor
        if self._interceptor_factory is not None:
            self.listener.set_interceptor(self._interceptor_factory(config))
        elif config.consent.enabled:
            # Consent needs its store before the first client binds: open it first.
            # The daemon alone creates a store that does not exist yet (the CLI never does),
            # and starts on a Redis that is down: failing closed until it answers.
            store = await open_store(
                config.store.url,
                instance=config.instance,
                create=True,
                metrics=self.metrics,
                start_unavailable=True,
            )
            self.store = store
            # The trail opens after the store (its default place is beside the store's file)
            # and before any client can change consent.
            key_source = configure_pseudonyms(config)
            if key_source == "ephemeral":
                log.warning(logs.PRIVACY_KEY_EPHEMERAL, reason="no privacy key configured")
            self.audit = open_trail(config, self.metrics)
            if self.audit is None:
                log.warning(logs.AUDIT_DISABLED, store=display_url(config.store.url))
            else:
                await self.audit.start()
                store.on_change = self.audit.consent_changed
            if config.upstream.service_bind is not None and serve_smpp:
                self.service = ServiceLink(
                    settings=self.listener.settings, bind=config.upstream.service_bind
                )
                self.service.start()
            if config.optout_link is not None:
                self._link_signer = LinkSigner(
                    config.optout_link.secret(),  # ConfigError (key named) if unreadable
                    ttl_days=config.optout_link.ttl_days,
                    campaigns=campaign_names(config),
                )
        if self.store is not None and serve_smpp:
            self.footers = FooterStage(
                store=self.store,
                settings=footer_settings(config),
                link_for=self._link_for,
                receipt_ids=ReceiptIds(self.store, ttl_s=config.text.receipt_ids_ttl_s),
                metrics=self.metrics,
            )
            self.enforcer = ConsentEnforcer(
                audit=self.audit,
                service=self.service,
                config=config.consent,
                store=self.store,
                metrics=self.metrics,
                instance=config.instance,
                default_alphabet=SMSC_DEFAULT_ALPHABETS[config.upstream.default_alphabet],
                footers=self.footers,
                part_ttl_s=config.text.hold_timeout_s,
            )
            self.listener.set_interceptor(self.enforcer)
        loop = asyncio.get_running_loop()
        self.metrics.count_tasks(lambda: len(asyncio.all_tasks(loop)))
        server = self.config.server
        listening = startup.listeners(config)
        if serve_smpp:
            try:
                await self.listener.start(
                    server.listen.host,
                    server.listen.port,
                    reuse_port=server.reuse_port,
                    sock=self._listen_socket,
                )
            except OSError as exc:  # taken between check and bind, or not checked (tests)
                raise startup.error(listening[0], exc) from None
        self._accepting = True
        if self._status_socket is not None:
            # No tokens: the consent endpoints answer 403 here; the supervisor's API has them.
            self.status = AdminApi(
                metrics=self.metrics,
                store=self.store,
                instance=config.instance,
                default_country=config.consent.default_country,
                ready=lambda: self._accepting,
            )
            await self.status.start("", 0, sock=self._status_socket)
        supervision = self._supervision
        if config.admin.listen is not None and public:
            self.admin = AdminApi(
                metrics=self.metrics,
                store=self.store,
                tokens=config.admin.bearer_tokens(),  # ConfigError (key named) if unreadable
                instance=config.instance,
                default_country=config.consent.default_country,
                ready=lambda: self._accepting,
                upstream=UpstreamProbe(
                    config.upstream.address.host, config.upstream.address.port
                ).check,
                account_match=config.consent.account_match,
                render_metrics=supervision.metrics_text if supervision is not None else None,
                workers=supervision.problem if supervision is not None else None,
            )
            admin_tls = config.admin.tls
            try:
                await self.admin.start(
                    config.admin.listen.host,
                    config.admin.listen.port,
                    ssl=server_ssl_context(admin_tls) if admin_tls is not None else None,
                )
            except OSError as exc:
                raise startup.error(listening[1], exc) from None
        if config.optout_link is not None and self._link_signer is not None and public:
            assert self.store is not None
            self.optout = OptOutPages(
                signer=self._link_signer,
                store=self.store,
                campaigns=lambda: self.config.consent.directory,
                instance=config.instance,
                metrics=self.metrics,
            )
            link_listen = config.optout_link.listen
            try:
                await self.optout.server.start(link_listen.host, link_listen.port)
            except OSError as exc:
                raise startup.error(listening[-1], exc) from None
        log.info(
            logs.GATEWAY_STARTED,
            version=__version__,
            instance=self.config.instance,
            upstream=str(self.config.upstream.address),
            pid=os.getpid(),
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def request_stop(self) -> None:
        self._stop.set()

    def mark_draining(self) -> None:
        """Readiness fails from now on (``stop`` does this first, too)."""
        self._accepting = False

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply what can change without a restart (see
        RELOADED_KEYS / RESTART_KEYS); keys that need a restart keep their running value."""
        old = self.config
        source = old.source
        if source is None:
            return
        try:
            new = load(source)
            restart = restart_changes(old, new)
            new = keep_running(old, new, restart)
            check_proxy_protocol(new.server)  # the running proxy_protocol with the file's networks
            # Everything the reload builds is built before anything is applied: a file that
            # fails here (an upstream certificate that does not load) changes nothing.
            settings = proxy_settings(new)
            limits = connection_limits(new)
            footers = footer_settings(new)
        except ConfigError as exc:
            log.warning(logs.CONFIG_RELOAD_FAILED, source=source, error=str(exc))
            return
        except (ssl.SSLError, OSError) as exc:
            log.warning(
                logs.CONFIG_RELOAD_FAILED,
                source=source,
                error=f"upstream.tls: cannot load its certificate, key or CA: {exc}",
            )
            return
        self.config = new
        self.listener.settings = settings
        self.listener.limits = limits
        self.listener.binds.limits = new.server.binds  # what it learnt of failed binds stays
        if self.service is not None:
            self.service.settings = settings  # its next connection to the SMSC
        if self.admin is not None:
            self.admin.default_country = new.consent.default_country
            self.admin.account_match = new.consent.account_match
            if new.upstream.address != old.upstream.address:
                # /readyz checks the SMSC new binds go to.
                address = new.upstream.address
                self.admin.upstream = UpstreamProbe(address.host, address.port).check
        if self.enforcer is not None:
            self.enforcer.reconfigure(
                new.consent,
                part_ttl_s=new.text.hold_timeout_s,
                default_alphabet=SMSC_DEFAULT_ALPHABETS[new.upstream.default_alphabet],
            )
        if self.footers is not None:
            self.footers.reconfigure(footers)
        if self._link_signer is not None and new.optout_link is not None:
            # Links follow the campaigns now ([optout_link] itself needs a restart).
            self._link_signer = self._link_signer.with_campaigns(
                campaign_names(new), new.optout_link.ttl_days
            )
            if self.optout is not None:
                self.optout.signer = self._link_signer
        if restart:
            log.warning(logs.CONFIG_RELOAD_PARTIAL, source=new.source, restart_needed=restart)
        else:
            log.info(logs.CONFIG_RELOADED, source=new.source)

    async def serve(self) -> None:
        """Run until SIGTERM / SIGINT, then drain and return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
        except startup.StartupError:
            await self.stop()  # what started before the failure: the store, a listener
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            raise
        sd_notify(
            f"READY=1\nSTATUS=listening on {self.config.server.listen}\nMAINPID={os.getpid()}"
        )
        self._watchdog = loop.create_task(watchdog_pings())
        try:
            await self._stop.wait()
        finally:
            sd_notify("STOPPING=1")
            await self.stop()
            self._watchdog.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def stop(self) -> None:
        log.info(logs.GATEWAY_STOPPING, sessions=len(self.listener.bridges))
        self._accepting = False  # readiness fails first, so a load balancer stops sending
        if self.footers is not None:
            # Draining refuses the parts still to come, so held messages go on as they came.
            self.footers.release_all("shutdown")
        await self.listener.drain(self.config.shutdown_grace_s)
        if self.footers is not None:
            self.footers.close()
            await self.footers.drain()  # its last store writes, before the store closes
        if self.admin is not None:
            await self.admin.stop()
        if self.status is not None:
            await self.status.stop()
        if self.optout is not None:
            await self.optout.server.stop()
        if self.service is not None:
            await self.service.stop()
        if self.enforcer is not None:
            # The records of the last auto-replies (answered, or lost with their sessions).
            await self.enforcer.drain()
        if self.audit is not None:
            await self.audit.close()  # the refusals counted last, and the final head
        if self.store is not None:
            await self.store.close()
        log.info(logs.GATEWAY_STOPPED)

    def _link_for(self, campaign: Campaign, subscriber: SmsAddress) -> str | None:
        """The footer's ``{optout_url}`` for this subscriber and campaign (None: left out, for
        a recipient that is not a phone number)."""
        signer, link = self._link_signer, self.config.optout_link
        if signer is None or link is None or subscriber.kind is not AddressKind.E164:
            return None
        return link.base_url + signer.token(campaign.name, subscriber.value, link_day())


# What SIGHUP does with each key (the README's table under "Configuration" says the same):
# every key not in RESTART_KEYS is applied by Gateway.reload, consent and text rules from the
# next message on (every session, also those bound before the reload), connection and session
# settings from the next connection or bind.
# Read once at start (sockets, the store, files, secrets, the log setup): a change is logged
# as config_reload_partial and the running value stays until the daemon is restarted.
RESTART_KEYS = (
    "gateway.instance",
    "server.listen",
    "server.reuse_port",
    "server.workers",
    "server.worker_timeout_s",
    "server.tls",
    "server.proxy_protocol",
    "upstream.service_bind",
    "store.url",
    "consent.enabled",
    "consent.mo_dedup_window_s",
    "consent.mo_reassembly_timeout_s",
    "text.receipt_ids_ttl_s",
    "admin.listen",
    "admin.tls",
    "admin.tokens",
    "optout_link",
    "audit",
    "privacy",
    "logging",
)


def _section_and_key(path: str) -> tuple[str, str | None]:
    """``"server.listen"`` -> ("server", "listen"); ``"audit"`` -> ("audit", None);
    ``[gateway]`` keys are the config's own fields."""
    section, _, key = path.partition(".")
    if section == "gateway":
        return key, None
    return section, key or None


def _value(config: GatewayConfig, path: str) -> object:
    section, key = _section_and_key(path)
    value = getattr(config, section)
    return value if key is None else getattr(value, key)


def restart_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The RESTART_KEYS whose value differs between the running config and the new file."""
    return [path for path in RESTART_KEYS if _value(old, path) != _value(new, path)]


def keep_running(old: GatewayConfig, new: GatewayConfig, paths: list[str]) -> GatewayConfig:
    """``new`` with the running value of each key in ``paths`` (keys that need a restart)."""
    for path in paths:
        section, key = _section_and_key(path)
        if key is None:
            new = dataclasses.replace(new, **{section: getattr(old, section)})
        else:
            part = dataclasses.replace(getattr(new, section), **{key: _value(old, path)})
            new = dataclasses.replace(new, **{section: part})
    return new


def run(config: GatewayConfig) -> int:
    logs.configure(
        level=config.logging.level,
        log_bodies=config.logging.log_bodies,
        json=config.logging.format == "json",
        stream=sys.stderr,
    )
    try:
        run_loop(Gateway(config).serve())
    except startup.StartupError as exc:
        print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
        return 2
    return 0
