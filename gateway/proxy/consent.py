"""Consent enforcement on the relay: the interceptor that applies ``gateway.consent.policy``.

``ConsentEnforcer`` is what the Bridge sees (``on_mt``, ``on_mo``, ``on_bound``, ``on_closed``)
and what the gateway reloads and drains. It keeps the registry of bound sessions by account and
composes three adapters with one job each:

- the MT path, here: the policy fed (numbers normalised, campaign looked up, the subscriber's
  records from the store's local cache), its decision carried out (forwarded, through the
  footer stage, or refused and logged), submit_multi, frequency caps;
- the MO path (``gateway.proxy.mo``): keywords recorded, replied to and answered, in the order
  that never loses a consent change;
- the auto-reply sender (``gateway.proxy.replies``): the session that carries a reply, the
  per-subscriber rate limit, and the evidence of each reply, written in the background.

An MT that cannot be checked gets the configured ``store_unavailable`` status, which clients
retry. The MT fast path does not await: a cache hit is decided and forwarded in the same call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from typing import Protocol

from gateway.audit.trail import AuditTrail
from gateway.config import ConsentConfig
from gateway.consent.campaign import Campaign, FooterMode, account_key
from gateway.consent.caps import CapVerdict
from gateway.consent.model import ConsentRecord, SmsAddress
from gateway.consent.numbers import cached_normalise, load_geocoder
from gateway.consent.policy import (
    QUIET_REASONS,
    Allow,
    Reject,
    RejectReason,
    RequestOptIn,
    address_refusal,
    decide_mt,
)
from gateway.messages import multi
from gateway.messages.content import PartInfo, content_of
from gateway.messages.mt import (
    NO_SENDER,
    Answer,
    Mt,
    Refuse,
    accepted_response,
    may_be_part,
    read_mt,
    refusal_answer,
    settle,
    wants_receipt,
)
from gateway.messages.parts import PartTracker
from gateway.messages.receipts import rejection_receipt
from gateway.proxy.caps import CapBatcher
from gateway.proxy.clock import SYSTEM_CLOCK, Clock
from gateway.proxy.hooks import LegPair, MoRequest, MtRequest
from gateway.proxy.mo import REVOKE_ALL_PREFIX, MoPath
from gateway.proxy.receipts import ReceiptIds
from gateway.proxy.replies import ReplyRecorder, ReplySender
from gateway.proxy.service import ServiceLink
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.smpp.constants import CommandStatus, command_name, status_name
from gateway.store.base import ConsentStore, StoreError
from gateway.telemetry import logs
from gateway.telemetry.logs import mask_subscriber
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet

log = logs.get_logger()

# mt_rejected lines per session and reason in one interval; the rest are summed up.
REFUSAL_LOG_BURST = 100
REFUSAL_LOG_INTERVAL_S = 10.0
CAP_TOKENS_MAX = 65_536  # long messages in flight whose reservation token is remembered
EARLIER_PART = "earlier_part"  # smppgw_mt_quiet_hours_total's rule for a part refused alike


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(slots=True)
class _Capped:
    """A capped MT waiting for its batch's reservation."""

    request: MtRequest
    mt: Mt
    footer: bool
    token: str


# Called by the footer stage before it sends held parts on: ``go`` when they may still go,
# else the enforcer answers every one of ``requests`` still unanswered itself, then ``stop``.
Gate = Callable[[list[MtRequest], Callable[[], None], Callable[[], None]], None]
# Delivers a receipt of the gateway's own to the client: (request, MT PDU, message id, stat).
Reporter = Callable[[MtRequest, p.SubmitSm | p.DataSm, str, str], None]


class FooterStage(Protocol):
    """Adds a campaign's opt-out footer to allowed MTs (gateway.proxy.footer)."""

    def submit(
        self,
        request: MtRequest,
        pdu: p.SubmitSm | p.DataSm,
        campaign: Campaign,
        subscriber: SmsAddress,
    ) -> None:
        """Settle ``request``: forward it with the footer added, re-segmented as needed; the
        parts of a long message are held until all are in (bounded), then sent as one."""

    def abandon(
        self,
        request: MtRequest,
        pdu: p.SubmitSm | p.DataSm,
        subscriber: SmsAddress,
        answer: Callable[[MtRequest], object],
    ) -> None:
        """The message ``request`` belongs to may not go: ``answer`` every part of it held."""

    def set_gate(self, gate: Gate) -> None:
        """Who decides, when held parts are sent on later, whether they may still go."""

    def set_reporter(self, report: Reporter) -> None:
        """Who delivers the receipts the stage writes itself (parts that did not go)."""

    @property
    def receipt_ids(self) -> ReceiptIds:
        """The ids it gave clients for parts the SMSC knows under others."""

    def on_closed(self, conn_id: str) -> None:
        """The client connection ``conn_id`` is gone: drop what is held for it."""


class ConsentEnforcer:
    """The relay's interceptor when consent is enabled (one per gateway process): the MT path,
    and the facade over the MO path (``mo``) and the auto-reply sender (``reply_sender``).

    Each of the three holds its own reference to what they share (``store``, ``clock``,
    ``config``): ``reconfigure`` hands the new config to all three.
    """

    def __init__(
        self,
        *,
        config: ConsentConfig,
        store: ConsentStore,
        metrics: Metrics,
        instance: str,
        default_alphabet: Alphabet = Alphabet.GSM7,
        footers: FooterStage | None = None,
        service: ServiceLink | None = None,
        part_ttl_s: float = 10.0,
        audit: AuditTrail | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.clock = clock
        self.audit = audit
        self.footers = footers
        self.store = store
        self.metrics = metrics
        self.instance = instance
        self.default_alphabet = default_alphabet
        # The bound sessions by account: the reply sender picks its carriers among them.
        self._bridges: dict[str, set[LegPair]] = {}
        self._account_keys: dict[str, str] = {}
        self._country = config.default_country
        self._short_max = config.short_code_max_length
        # The parts of one long MT share one answer (gateway.messages.parts); they live no longer
        # than the footer stage holds a message.
        self._parts = PartTracker(part_ttl_s)
        self._refusals = logs.Summary(interval_s=REFUSAL_LOG_INTERVAL_S, burst=REFUSAL_LOG_BURST)
        # The evidence of every auto-reply, written to the store in the background.
        self.replies = ReplyRecorder(store, metrics)
        self.reply_sender = ReplySender(
            config=config,
            bridges=self._bridges,
            recorder=self.replies,
            metrics=metrics,
            clock=clock,
            instance=instance,
            default_alphabet=default_alphabet,
            service=service,
        )
        self.mo = MoPath(
            config=config,
            store=store,
            metrics=metrics,
            clock=clock,
            instance=instance,
            default_alphabet=default_alphabet,
            account=self._account,
            replies=self.reply_sender,
            store_down=self._store_down,
            receipt_ids=footers.receipt_ids if footers is not None else None,
        )
        # Frequency caps: the token of each long message in flight; reservations being released.
        self._cap_tokens: dict[Hashable, tuple[str, float]] = {}
        self._cap_releases: set[asyncio.Task[None]] = set()
        # Tokens are this process's random prefix and a serial: unique across processes and
        # instances, and far cheaper than a uuid4 per MT.
        self._cap_prefix = uuid.uuid4().hex[:16]
        self._cap_serial = itertools.count()
        # The capped MTs of one loop turn, reserved with one store call (gateway.proxy.caps).
        self._caps: CapBatcher[_Capped] = CapBatcher(
            lambda batch: self.store.reserve_sends(batch),
            self._caps_settled,
            lambda: self.clock.wall(),
        )
        if footers is not None:
            footers.set_gate(self._gate)
            footers.set_reporter(self._report_part)
        _load_places(config)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the auto-reply records still being written (shutdown)."""
        await self._caps.close()  # the sessions are gone: no capped MT is waiting for it
        await self.replies.drain(timeout_s)

    def reconfigure(
        self,
        config: ConsentConfig,
        *,
        part_ttl_s: float | None = None,
        default_alphabet: Alphabet | None = None,
    ) -> None:
        """SIGHUP: campaigns, statuses and the SMSC's alphabet apply from the next message on."""
        self.config = config
        if default_alphabet is not None:
            self.default_alphabet = default_alphabet
        self.mo.reconfigure(config, self.default_alphabet)
        self.reply_sender.reconfigure(config, self.default_alphabet)
        self._account_keys = {}
        self._country = config.default_country
        self._short_max = config.short_code_max_length
        _load_places(config)
        if part_ttl_s is not None:
            self._parts.ttl_s = part_ttl_s

    # --- session registry (auto-replies go over a transmit-capable session of the account) ---

    def _account(self, system_id: str) -> str:
        key = self._account_keys.get(system_id)
        if key is None:
            if len(self._account_keys) > 10_000:
                self._account_keys.clear()  # system_ids are few; this is only a bound
            key = self._account_keys[system_id] = account_key(system_id, self.config.account_match)
        return key

    def on_bound(self, bridge: LegPair) -> None:
        account = self._account(bridge.client_info.system_id)
        self._bridges.setdefault(account, set()).add(bridge)

    def on_closed(self, bridge: LegPair) -> None:
        account = self._account(bridge.client_info.system_id)
        bridges = self._bridges.get(account)
        if bridges is not None:
            bridges.discard(bridge)
            if not bridges:
                del self._bridges[account]
        conn_id = bridge.conn_id
        self.mo.on_closed(conn_id)
        if self.footers is not None:
            self.footers.on_closed(conn_id)

    # --- MT -----------------------------------------------------------------------------------

    def _address(
        self, addr: str, ton: int, npi: int, *, lenient: bool = False
    ) -> SmsAddress | None:
        return cached_normalise(addr, ton, npi, self._country, self._short_max, lenient)

    def _sender(self, addr: str, ton: int, npi: int, account: str) -> SmsAddress:
        """The MT's source; an empty one is the account's default sender."""
        return self._address(addr, ton, npi) or self._default_sender(account)

    def _default_sender(self, account: str) -> SmsAddress:
        """What the SMSC fills into an empty source_addr of this account
        (``[consent.accounts.ID] default_sender``), or no number at all."""
        policy = self.config.accounts.get(account)
        if policy is not None and policy.default_sender is not None:
            return policy.default_sender
        return NO_SENDER

    def _read_mt(self, request: MtRequest, pdu: p.SubmitSm | p.DataSm) -> Mt:
        """What the MT's decision needs, read from the PDU and the client."""
        client = request.client
        bound_as = client.system_id
        account = self._account(bound_as)
        part: PartInfo | None = None
        if may_be_part(pdu):
            part = content_of(pdu, self.default_alphabet).part
        return read_mt(
            pdu,
            conn_id=client.conn_id,
            account=account,
            bound_as=bound_as,
            default_sender=self._default_sender(account),
            directory=self.config.directory,
            country=self._country,
            short_max=self._short_max,
            part=part,
        )

    def _refused_address(self, request: MtRequest, mt: Mt) -> bool:
        """Refuse the MT if its addresses alone forbid it (``address_refusal``)."""
        refused = address_refusal(mt.campaign, mt.subscriber, mt.sender, mt.account)
        if refused is None:
            return False
        self._mt_refuse(request, mt, refused)
        return True

    def on_mt(self, request: MtRequest) -> None:
        pdu = request.pdu
        if isinstance(pdu, p.SubmitMulti):
            self._submit_multi(request, pdu)
            return
        assert isinstance(pdu, p.SubmitSm | p.DataSm)
        mt = self._read_mt(request, pdu)
        if self._refused_address(request, mt):
            return
        records = self.store.cached_current(mt.subscriber.value)
        footer_seen: bool | None = False
        if mt.campaign.footer is FooterMode.FIRST:
            footer_seen = self.store.cached_footer_seen(mt.subscriber.value, mt.campaign.name)
        if records is None or footer_seen is None:
            request.spawn(self._mt_slow(request, mt))
            return
        self._mt_decide(request, mt, records, footer_seen)

    async def _mt_slow(self, request: MtRequest, mt: Mt) -> None:
        try:
            records = await self.store.current(mt.subscriber.value)
            footer_seen = mt.campaign.footer is FooterMode.FIRST and await self.store.footer_seen(
                mt.subscriber.value, mt.campaign.name
            )
        except StoreError as exc:
            self._store_down("current", exc)
            self._mt_refuse(request, mt, RejectReason.STORE_UNAVAILABLE)
            return
        self._mt_decide(request, mt, records, footer_seen)

    def _mt_decide(
        self,
        request: MtRequest,
        mt: Mt,
        records: Mapping[str, ConsentRecord],
        footer_seen: bool,
    ) -> None:
        """Decide on the current records and carry out the answer (``gateway.messages.mt``)."""
        decision = self._policy(request, mt, records, footer_seen)
        footers = self.footers
        # Only a part consults the memo, so only a part needs the time.
        now = 0.0 if mt.part_key is None else self.clock.monotonic()
        outcome = settle(decision, mt, self._parts, now, footers=footers is not None)
        if not isinstance(outcome, Refuse):
            if mt.campaign.cap is not None:
                # The only cost a cap adds, and only to capped campaigns: a share of the
                # loop turn's one store call.
                self._mt_capped(request, mt, outcome.footer)
                return
            self._mt_send(request, mt, outcome.footer)
            return
        reason = outcome.reason
        self._mt_refuse(request, mt, reason, outcome.decision)
        if outcome.abandon_held and footers is not None:
            footers.abandon(
                request,
                mt.pdu,
                mt.subscriber,
                lambda held: self._mt_refuse(held, self._reread(held, mt), reason),
            )
        if isinstance(outcome.decision, RequestOptIn):
            request.spawn(self._request_opt_in(request, outcome.decision))

    def _mt_send(self, request: MtRequest, mt: Mt, footer: bool) -> None:
        self.metrics.mt_allowed_total.add(mt.campaign.name)
        if footer:
            assert self.footers is not None  # settle sends to the footer stage only if there is one
            self.footers.submit(request, mt.pdu, mt.campaign, mt.subscriber)
        else:
            request.forward()

    def _cap_token(self, mt: Mt) -> str:
        """The message's reservation token: one per message, so every part of a long message
        shares its first part's (it counts once)."""
        key = mt.part_key
        if key is None:
            return f"{self._cap_prefix}{next(self._cap_serial):x}"
        now = self.clock.monotonic()
        found = self._cap_tokens.get(key)
        if found is not None and now - found[1] <= self._parts.ttl_s:
            return found[0]
        if len(self._cap_tokens) >= CAP_TOKENS_MAX:
            self._cap_tokens.clear()  # only a bound: a long message in flight counts anew
        token = f"{self._cap_prefix}{next(self._cap_serial):x}"
        self._cap_tokens[key] = (token, now)
        return token

    def _mt_capped(self, request: MtRequest, mt: Mt, footer: bool) -> None:
        """Queue the message's reservation under the campaign's frequency cap; it is sent or
        refused once the loop turn's batch is reserved (``_caps_settled``)."""
        cap = mt.campaign.cap
        assert cap is not None
        token = self._cap_token(mt)
        self._caps.add(
            _Capped(request, mt, footer, token),
            mt.subscriber.value,
            mt.campaign.cap_key,
            token,
            cap.count,
            cap.window_s,
        )

    def _caps_settled(self, batch: list[_Capped], outcome: list[CapVerdict] | Exception) -> None:
        """Carry out a batch's verdicts in the order its MTs came: each sent, or refused with
        ``frequency_capped``; all refused with ``store_unavailable`` if the store failed."""
        if isinstance(outcome, Exception) and not isinstance(outcome, StoreError):
            # Not the store's refusal but a fault (a bug, a broken contract): as any hook's,
            # logged with its traceback, once, and every MT gets the temporary status.
            log.error(logs.CONNECTION_FAILED, where="frequency_caps", exc_info=outcome)
        for n, capped in enumerate(batch):
            request = capped.request
            if request.settled:
                continue  # answered meanwhile
            try:
                if isinstance(outcome, StoreError):
                    self._store_down("reserve_send", outcome)
                    self._cap_refuse(
                        request, capped.mt, RejectReason.STORE_UNAVAILABLE, capped.footer
                    )
                elif isinstance(outcome, Exception):
                    request.reject(request.TEMPORARY_FAILURE)
                else:
                    self._cap_verdict(capped, outcome[n])
            except Exception:  # one MT's failure leaves the others to go on
                log.exception(logs.CONNECTION_FAILED, where="frequency_caps")
                if not request.settled:
                    request.reject(request.TEMPORARY_FAILURE)

    def _cap_verdict(self, capped: _Capped, verdict: CapVerdict) -> None:
        request, mt, footer = capped.request, capped.mt, capped.footer
        campaign = mt.campaign
        cap = campaign.cap
        assert cap is not None
        if not verdict.allowed:
            self._cap_refuse(
                request,
                mt,
                RejectReason.FREQUENCY_CAPPED,
                footer,
                rule=cap.rule,
                counted=verdict.counted,
                limit=cap.count,
                window_h=cap.window_s / 3600.0,
                per=cap.per.value,
            )
            return
        if mt.part_key is None:
            # A refused message was not sent: its reservation is taken back. The parts of a
            # long message stay counted (some of them may have gone); so does a message whose
            # response never came.
            request.on_status = partial(
                self._cap_answered, mt.subscriber.value, campaign.cap_key, capped.token
            )
        self._mt_send(request, mt, footer)

    def _cap_refuse(
        self,
        request: MtRequest,
        mt: Mt,
        reason: RejectReason,
        footer: bool,
        *,
        rule: str | None = None,
        **fields: object,
    ) -> None:
        self._mt_refuse(request, mt, reason, None, rule=rule, **fields)
        if footer and mt.part_key is not None and self.footers is not None:
            self.footers.abandon(
                request,
                mt.pdu,
                mt.subscriber,
                lambda held: self._mt_refuse(held, self._reread(held, mt), reason, rule=rule),
            )

    def _cap_answered(self, subscriber: str, key: str, token: str, status: int) -> None:
        if status == CommandStatus.ESME_ROK:
            return
        task = asyncio.get_running_loop().create_task(self._cap_release(subscriber, key, token))
        self._cap_releases.add(task)
        task.add_done_callback(self._cap_releases.discard)

    async def _cap_release(self, subscriber: str, key: str, token: str) -> None:
        try:
            await self.store.release_send(subscriber, key, token)
        except StoreError as exc:
            # Left counted: the cap errs on the side of sending less.
            self._store_down("release_send", exc)

    def _reread(self, request: MtRequest, like: Mt) -> Mt:
        """``like`` for another part of the same message (its own PDU)."""
        pdu = request.pdu
        assert isinstance(pdu, p.SubmitSm | p.DataSm)
        return like.with_pdu(pdu)

    def _gate(
        self, requests: list[MtRequest], go: Callable[[], None], stop: Callable[[], None]
    ) -> None:
        """Held parts are about to go on (their hold ended without the message completing):
        only if the subscriber may still be messaged now."""
        first = requests[0]
        pdu = first.pdu
        assert isinstance(pdu, p.SubmitSm | p.DataSm)
        mt = self._read_mt(first, pdu)
        reason = address_refusal(mt.campaign, mt.subscriber, mt.sender, mt.account)
        if reason is not None:  # not for parts once allowed; refused alike all the same
            self._refuse_held(requests, mt, reason, None, stop)
            return
        records = self.store.cached_current(mt.subscriber.value)
        if records is None:
            first.spawn(self._gate_slow(requests, mt, go, stop))
            return
        self._gate_decide(requests, mt, records, go, stop)

    async def _gate_slow(
        self,
        requests: list[MtRequest],
        mt: Mt,
        go: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        try:
            records = await self.store.current(mt.subscriber.value)
        except StoreError as exc:
            self._store_down("current", exc)
            self._refuse_held(requests, mt, RejectReason.STORE_UNAVAILABLE, None, stop)
            return
        self._gate_decide(requests, mt, records, go, stop)

    def _gate_decide(
        self,
        requests: list[MtRequest],
        mt: Mt,
        records: Mapping[str, ConsentRecord],
        go: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        decision = self._policy(requests[0], mt, records, True)
        if isinstance(decision, Allow):
            go()
            return
        self._refuse_held(requests, mt, decision.reason, decision, stop)

    def _refuse_held(
        self,
        requests: list[MtRequest],
        mt: Mt,
        reason: RejectReason,
        decision: Reject | RequestOptIn | None,
        stop: Callable[[], None],
    ) -> None:
        for request in requests:
            self._mt_refuse(request, self._reread(request, mt), reason, decision)
        stop()  # the parts answered early learn it by receipt

    def _mt_refuse(
        self,
        request: MtRequest,
        mt: Mt,
        reason: RejectReason,
        decision: Reject | RequestOptIn | None = None,
        *,
        rule: str | None = None,
        **fields: object,
    ) -> int:
        status = self.config.statuses.status(reason)
        pdu = mt.pdu
        # A held part the footer stage answered early is settled already: it is not sent, and
        # the client hears of it by receipt (the stage's report); the refusal is logged alike.
        account = self.config.accounts.get(mt.account)
        answer = refusal_answer(
            reason,
            answered=request.settled,
            accept_and_report=account is not None and account.accept_and_report,
        )
        self._log_refusal(
            request,
            mt.campaign,
            mt.subscriber,
            reason,
            status,
            decision,
            command_id=command_name(pdu.command_id),
            scope=decision.scope if isinstance(decision, Reject) else None,
            service_type=pdu.service_type,
            reported=answer is not Answer.REJECT,
            rule=rule,
            **fields,
        )
        if answer is Answer.NONE:
            return status
        if answer is Answer.REPORT:
            message_id = uuid.uuid4().hex[:16]
            request.respond(accepted_response(pdu, message_id))
            if wants_receipt(pdu):
                self._report_rejected(mt.account, pdu, message_id)
            return status
        request.reject(status)
        return status

    def _policy(
        self,
        request: MtRequest,
        mt: Mt,
        records: Mapping[str, ConsentRecord],
        footer_seen: bool,
    ) -> Allow | Reject | RequestOptIn:
        return decide_mt(
            campaign=mt.campaign,
            subscriber=mt.subscriber,
            sender=mt.sender,
            system_id=mt.account,
            bound_as=mt.bound_as,
            service_type=mt.pdu.service_type,
            records=records,
            now=self.clock.wall(),
            new_event_id=new_event_id,
            instance=self.instance,
            footer_seen=footer_seen,
            addresses_checked=True,  # _read_mt did, for every MT that gets here
            country=self._country,
        )

    def _log_refusal(
        self,
        request: MtRequest,
        campaign: Campaign,
        subscriber: SmsAddress,
        reason: RejectReason,
        status: int,
        decision: Reject | RequestOptIn | None = None,
        *,
        rule: str | None = None,
        **fields: object,
    ) -> None:
        """Every refused send is counted; logged (mt_rejected) up to a burst per session and
        reason and interval, the rest summed up in one line, so a client hammering refused
        numbers cannot flood the log. A quiet-hours refusal names its rule (``us-tx``), the
        zone and the recipient's local time it was checked at."""
        self.metrics.mt_rejected_total.labels(reason.value, campaign.name).inc()
        closed = decision.closed if isinstance(decision, Reject) else None
        if closed is not None:
            self.metrics.mt_quiet_hours_total.labels(reason.value, closed.rule).inc()
            fields.update(rule=closed.rule, zone=closed.zone, local_time=closed.local)
            rule = closed.rule
        elif reason in QUIET_REASONS:
            # A later part of a long message refused like its earlier part.
            self.metrics.mt_quiet_hours_total.labels(reason.value, EARLIER_PART).inc()
        elif rule is not None:
            fields["rule"] = rule  # a frequency cap's preset
        decided = decision.scope if isinstance(decision, Reject) else None
        if decided is not None and decided.startswith(REVOKE_ALL_PREFIX):
            # An opt-out through another campaign of the business: say so, it is not obvious.
            rule = "revoke_all"
            self.metrics.mt_revoke_all_total.labels(decided[len(REVOKE_ALL_PREFIX) :]).inc()
            fields.update(rule=rule, scope=decided)
        if self.audit is not None:
            self.audit.mt_refused(
                subscriber=subscriber.value,
                reason=reason.value,
                status=status,
                account=request.client.system_id or "",
                campaign=campaign.name,
                # The sender as the client gave it: the campaign it chose is in its own field.
                sender=getattr(request.pdu, "source_addr", None) or None,
                rule=rule,
            )
        self._refusals.emit(
            log.info,
            (request.client.conn_id, reason),
            logs.MT_REJECTED,
            conn_id=request.client.conn_id,
            system_id=request.client.system_id,
            campaign=campaign.name,
            subscriber=mask_subscriber(subscriber.value),
            address_kind=subscriber.kind.value,
            reason=reason.value,
            command_status=status_name(status),
            **fields,
        )

    def _report_rejected(
        self,
        account: str,
        pdu: p.SubmitSm | p.DataSm,
        message_id: str,
        stat: str = "REJECTD",
        prefer: LegPair | None = None,
    ) -> None:
        """A delivery receipt of the gateway's own (accept and report; a part that did not
        go after the client had its answer) to a receiving session of the account."""
        receipt = rejection_receipt(pdu, message_id, stat, self.clock.wall())
        for bridge in self.reply_sender.receiving(account, prefer):
            if bridge.originate_to_client(receipt, lambda _pdu, _frame: None):
                return
        log.warning(
            logs.AUTO_REPLY_SUPPRESSED,
            kind="receipt",
            reason="no receiving session",
            system_id=account,
        )

    def _report_part(
        self, request: MtRequest, pdu: p.SubmitSm | p.DataSm, message_id: str, stat: str
    ) -> None:
        """The footer stage's receipts: over the request's own session when it receives."""
        account = self._account(request.client.system_id)
        self._report_rejected(account, pdu, message_id, stat, prefer=request.bridge)

    async def _request_opt_in(self, request: MtRequest, decision: RequestOptIn) -> None:
        new = await self.mo.store_events(decision.events)
        if new:
            self.reply_sender.send(
                self._account(request.client.system_id),
                decision.reply,
                "opt_in_request",
                None,
                event_id=decision.events[0].event_id if decision.events else None,
            )

    def _submit_multi(self, request: MtRequest, pdu: p.SubmitMulti) -> None:
        request.spawn(self._submit_multi_slow(request, pdu))

    async def _submit_multi_slow(self, request: MtRequest, pdu: p.SubmitMulti) -> None:
        """Check each destination; refused ones go to unsuccess_sme, the rest are forwarded.

        A distribution list is refused like an unreadable address: the SMSC expands it, and
        the gateway cannot decide for members it cannot see."""
        bound_as = request.client.system_id
        account = self._account(bound_as)
        sender = self._sender(pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi, account)
        campaign = self.config.directory.lookup(sender.value)
        kept: list[multi.Destination] = []
        refused: list[p.UnsuccessSme] = []
        for dest in multi.destinations(
            pdu,
            campaign=campaign,
            sender=sender,
            account=account,
            country=self._country,
            short_max=self._short_max,
        ):
            subscriber = dest.subscriber
            decision: Allow | Reject | RequestOptIn
            if dest.refusal is not None:
                decision = Reject(reason=dest.refusal)
            else:
                try:
                    records = self.store.cached_current(subscriber.value)
                    if records is None:
                        records = await self.store.current(subscriber.value)
                except StoreError as exc:
                    self._store_down("current", exc)
                    request.reject(self.config.statuses.store_unavailable)
                    return
                decision = decide_mt(
                    campaign=campaign,
                    subscriber=subscriber,
                    sender=sender,
                    system_id=account,
                    bound_as=bound_as,
                    service_type=pdu.service_type,
                    records=records,
                    now=self.clock.wall(),
                    new_event_id=new_event_id,
                    instance=self.instance,
                    country=self._country,
                )
            if isinstance(decision, Allow) and campaign.cap is not None:
                try:
                    decision = await self._multi_capped(campaign, subscriber.value, decision)
                except StoreError as exc:
                    self._store_down("reserve_send", exc)
                    request.reject(self.config.statuses.store_unavailable)
                    return
            if isinstance(decision, Allow):
                self.metrics.mt_allowed_total.add(campaign.name)
                kept.append(dest)
                continue
            status = self.config.statuses.status(decision.reason)
            self._log_refusal(
                request,
                campaign,
                subscriber,
                decision.reason,
                status,
                decision,
                command_id="submit_multi",
                scope=decision.scope if isinstance(decision, Reject) else None,
                service_type=pdu.service_type,
            )
            refused.append(dest.unsuccess(status))
        planned = multi.plan(pdu, kept, refused)
        if planned is None:
            request.forward()
        elif isinstance(planned, p.SubmitMultiResp):
            request.respond(planned)
        else:
            request.forward(
                encode(planned), transform=partial(multi.add_unsuccess, refused=tuple(refused))
            )

    async def _multi_capped(
        self, campaign: Campaign, subscriber: str, allowed: Allow
    ) -> Allow | Reject:
        """A submit_multi destination under the campaign's frequency cap: reserved, or refused.
        (Its reservation stays even if the SMSC refuses that destination: erring on the side
        of sending less.)"""
        cap = campaign.cap
        assert cap is not None
        verdict = await self.store.reserve_send(
            subscriber,
            campaign.cap_key,
            uuid.uuid4().hex,
            limit=cap.count,
            window_s=cap.window_s,
            now=self.clock.wall(),
        )
        return allowed if verdict.allowed else Reject(reason=RejectReason.FREQUENCY_CAPPED)

    # --- MO -----------------------------------------------------------------------------------

    def on_mo(self, request: MoRequest) -> None:
        self.mo.on_mo(request)

    # --- store ---------------------------------------------------------------------------------

    def _store_down(self, operation: str, exc: Exception) -> None:
        # Counted per refused call; logged once per outage by the store (store_unavailable).
        del exc
        self.metrics.store_errors_total.labels(operation).inc()


def _load_places(config: ConsentConfig) -> None:
    """State presets need the geocoder's data (about 0.7 s and 100 MB to load): load it when
    the config is read, not on the first MT that needs it, in the middle of traffic."""
    if any(c.hours is not None and c.hours.needs_subdivision for c in config.directory):
        load_geocoder()
