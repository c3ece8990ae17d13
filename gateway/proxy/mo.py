"""The MO path: what the relay does with a deliver_sm / data_sm from the SMSC when consent is on.

The policy is pure (``gateway.consent.policy.decide_mo``); this adapter feeds it (the source
normalised as MT destinations are, the text decoded and long MOs reassembled, the subscriber's
records from the store's local cache, a pending revoke-all question from its history) and
carries out its decision in the one order that never loses a consent change:

1. store the events durably (``ConsentStore.append``),
2. then send the auto-reply (only for events that were new: a resent MO gets no second reply),
3. then answer the SMSC (forward the MO to the client, or acknowledge it ourselves).

If the store fails at step 1 the SMSC gets ESME_RX_T_APPN (temporary) and delivers the MO
again; the other parts of a long MO are held again for that resend. MOs of one subscriber are
acted on in arrival order (``_Turns``): the second of two STOPs in flight sees the first one
stored. Delivery receipts are never keywords; where footers made the gateway answer or add
parts, their receipts are rewritten to the ids the client was given (``ReceiptIds``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config import ConsentConfig
from gateway.consent.campaign import FooterMode
from gateway.consent.model import ConsentEvent, ConsentRecord, ConsentState, ScopeKind, SmsAddress
from gateway.consent.numbers import cached_normalise
from gateway.consent.policy import MoAction, MoDecision, decide_mo, is_delivery_receipt
from gateway.consent.revoke import pending_clarification
from gateway.messages import mo as mo_path
from gateway.messages.content import Content, content_of
from gateway.messages.mt import NO_SENDER
from gateway.messages.receipts import receipt_id, receipted_id, rewrite_receipt
from gateway.proxy.clock import Clock
from gateway.proxy.hooks import MoRequest
from gateway.proxy.receipts import ReceiptIds
from gateway.proxy.replies import ReplySender
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandStatus
from gateway.store.base import ConsentStore, MessageIds, StoreError
from gateway.telemetry import logs
from gateway.telemetry.logs import mask_subscriber
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet
from gateway.text.segment import AddStatus, Assembly, Reassembler

log = logs.get_logger()

REVOKE_ALL_PREFIX = f"{ScopeKind.BUSINESS.value}:"

# The account a system_id belongs to (``consent.account_match``), and the counting of a store
# call that failed: both shared with the MT path.
AccountOf = Callable[[str], str]
StoreDown = Callable[[str, Exception], None]


@dataclass(frozen=True, slots=True)
class _Held:
    """The parts a long MO's last part completed (``seq``: that last part)."""

    assembly: Assembly[None]
    seq: int


class _Turns:
    """MOs of one subscriber waiting for the one being acted on, so consent changes apply in
    arrival order: the second of two STOPs in flight sees the first one stored."""

    __slots__ = ("lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        # Counted once a task runs; a task cancelled before it ran leaves an entry at 0, which
        # the subscriber's next MO takes over and removes.
        self.waiting = 0


class MoPath:
    """Consent on MOs: keywords recorded, answered and replied to (one per gateway process)."""

    def __init__(
        self,
        *,
        config: ConsentConfig,
        store: ConsentStore,
        metrics: Metrics,
        clock: Clock,
        instance: str,
        default_alphabet: Alphabet,
        account: AccountOf,
        replies: ReplySender,
        store_down: StoreDown,
        receipt_ids: ReceiptIds | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.instance = instance
        self.default_alphabet = default_alphabet
        self.replies = replies
        self.receipt_ids = receipt_ids
        self._account = account
        self._store_down = store_down
        self._country = config.default_country
        self._short_max = config.short_code_max_length
        self._translate_receipts = _has_footers(config)
        self._mo_parts: Reassembler[None] = Reassembler(max_age_s=config.mo_reassembly_timeout_s)
        self._unreplied = mo_path.Unreplied(config.mo_dedup_window_s)
        # Subscribers with an MO being acted on: their next MOs wait for it (see on_mo).
        self._mo_turns: dict[str, _Turns] = {}

    def reconfigure(self, config: ConsentConfig, default_alphabet: Alphabet) -> None:
        """SIGHUP: campaigns and numbering apply from the next MO on (the reassembly and
        resend windows keep the values they started with)."""
        self.config = config
        self.default_alphabet = default_alphabet
        self._country = config.default_country
        self._short_max = config.short_code_max_length
        self._translate_receipts = _has_footers(config)

    def on_closed(self, conn_id: str) -> None:
        """The client connection ``conn_id`` is gone: drop the parts of long MOs it had."""
        self._mo_parts.discard(lambda key: key[0] == conn_id)

    def _address(
        self, addr: str, ton: int, npi: int, *, lenient: bool = False
    ) -> SmsAddress | None:
        return cached_normalise(addr, ton, npi, self._country, self._short_max, lenient)

    def on_mo(self, request: MoRequest) -> None:
        pdu = request.pdu
        assert isinstance(pdu, p.DeliverSm | p.DataSm)
        if is_delivery_receipt(pdu.esm_class):
            # Never keywords, whatever their text: echoes. Shown under the client's ids.
            if self._translate_receipts and self.receipt_ids is not None:
                self._receipt(request, pdu, self.receipt_ids)
            else:
                request.forward()
            return
        # The same reading as MT destinations (leniently: a stray character in a source the
        # SMSC hands us must not lose a STOP), so the STOP lands where MTs are checked.
        subscriber = self._address(
            pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi, lenient=True
        )
        if subscriber is None or not subscriber.is_subscriber:
            # A name or no number at all: nothing can be recorded for it, and no MT can reach
            # it either (they are refused), so no consent is at stake.
            kind = "empty" if subscriber is None else subscriber.kind.value
            self.metrics.mo_senders_ignored_total.labels(kind).inc()
            log.info(
                logs.MO_SENDER_IGNORED,
                conn_id=request.client.conn_id,
                system_id=request.client.system_id,
                source=mask_subscriber(pdu.source_addr),
                address_kind=kind,
            )
            request.forward()
            return
        recipient = self._address(pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi)
        # To no readable number: the default campaign's rules (an account-wide STOP by default).
        recipient = recipient or NO_SENDER
        content = content_of(pdu, self.default_alphabet)
        text, held = self._mo_text(request, content, subscriber, recipient)
        key = subscriber.value
        turns = self._mo_turns.get(key)
        if turns is None:
            if text is None:
                request.forward()  # binary, or a part of a long MO still incomplete
                return
            records = self.store.cached_current(key)
            if records is not None and not self._may_clarify(recipient, records):
                decision = self._decide_mo(
                    request, pdu, content, text, subscriber, recipient, records
                )
                if not decision.events and decision.reply is None:
                    self._settle_mo(request, decision)
                    return
            # Decided again in its turn, on the records as they are once earlier MOs of this
            # subscriber are stored: two STOPs in flight must not both look like the first.
            turns = self._mo_turns[key] = _Turns()
        request.spawn(
            self._mo_in_turn(turns, request, pdu, content, text, subscriber, recipient, held)
        )

    def _receipt(self, request: MoRequest, pdu: p.DeliverSm | p.DataSm, ids: ReceiptIds) -> None:
        """A receipt for a part the gateway answered early or added: rewritten to the id the
        client was given, or acknowledged and dropped (a part the client never sent)."""
        upstream_id = receipt_id(pdu)
        if upstream_id is None:
            request.forward()
            return
        found = ids.local(upstream_id)
        if found is not None:
            self._deliver_receipt(request, pdu, found)
            return
        request.spawn(self._receipt_slow(request, pdu, ids, upstream_id))

    async def _receipt_slow(
        self, request: MoRequest, pdu: p.DeliverSm | p.DataSm, ids: ReceiptIds, upstream_id: str
    ) -> None:
        try:
            found = await ids.lookup(upstream_id)
        except StoreError as exc:
            self._store_down("get_message_ids", exc)
            request.reject(CommandStatus.ESME_RX_T_APPN)  # the SMSC delivers it again later
            return
        if found is None:
            request.forward()  # an ordinary message's receipt: its id is the client's
        else:
            self._deliver_receipt(request, pdu, found)

    def _deliver_receipt(
        self, request: MoRequest, pdu: p.DeliverSm | p.DataSm, found: MessageIds
    ) -> None:
        if not found.client_ids:
            self.metrics.receipts_translated_total.labels("dropped").inc()
            request.respond(mo_path.mo_response(pdu))
            return
        self.metrics.receipts_translated_total.labels("translated").inc()
        first, *others = found.client_ids
        for message_id in others:  # client parts the gateway sent as one: a receipt each
            request.bridge.originate_to_client(
                rewrite_receipt(pdu, message_id), lambda _pdu, _frame: None
            )
        request.forward(rewrite_receipt(pdu, first))

    def _mo_text(
        self, request: MoRequest, content: Content, subscriber: SmsAddress, recipient: SmsAddress
    ) -> tuple[str | None, _Held | None]:
        """The MO's text (None: binary, or a part of a long MO still incomplete), and for the
        last part of a long MO, the parts it completed."""
        part = content.part
        if part is None:
            return content.text(), None
        now = self.clock.monotonic()
        result = self._mo_parts.add(
            mo_path.mo_part_key(
                request.client.conn_id, subscriber.value, recipient.value, part.reference
            ),
            seq=part.seq,
            total=part.total,
            body=content.body,
            now=now,
            context=None,
        )
        self._mo_parts.expire(now)
        if result.status is AddStatus.COMPLETE and result.assembly is not None:
            return result.assembly.text(content.alphabet), _Held(result.assembly, part.seq)
        return None, None

    def _retry_later(self, request: MoRequest, held: _Held | None) -> None:
        """Refuse an MO temporarily (ESME_RX_T_APPN): the SMSC delivers it again later.

        The SMSC resends only the part it got the error for; the other parts of a long MO were
        acknowledged already, so they are held again for the resend to complete the message
        (else a STOP split over two parts would be lost to a store outage)."""
        if held is not None:
            now = self.clock.monotonic()
            assembly = held.assembly
            for fragment in assembly.fragments:
                if fragment.seq != held.seq:
                    self._mo_parts.add(
                        assembly.key,
                        seq=fragment.seq,
                        total=assembly.total,
                        body=fragment.body,
                        now=now,
                        context=None,
                    )
        request.reject(CommandStatus.ESME_RX_T_APPN)

    async def _mo_in_turn(
        self,
        turns: _Turns,
        request: MoRequest,
        pdu: p.DeliverSm | p.DataSm,
        content: Content,
        text: str | None,
        subscriber: SmsAddress,
        recipient: SmsAddress,
        held: _Held | None,
    ) -> None:
        """Act on an MO once the earlier MOs of its subscriber are done (arrival order)."""
        turns.waiting += 1
        try:
            async with turns.lock:
                if text is None:
                    request.forward()
                else:
                    await self._mo_slow(request, pdu, content, text, subscriber, recipient, held)
        finally:
            turns.waiting -= 1
            if turns.waiting == 0 and self._mo_turns.get(subscriber.value) is turns:
                del self._mo_turns[subscriber.value]

    def _decide_mo(
        self,
        request: MoRequest,
        pdu: p.DeliverSm | p.DataSm,
        content: Content,
        text: str,
        subscriber: SmsAddress,
        recipient: SmsAddress,
        records: Mapping[str, ConsentRecord],
        clarifying: ConsentEvent | None = None,
    ) -> MoDecision:
        now = self.clock.wall()
        bound_as = request.client.system_id
        system_id = self._account(bound_as)
        # The SMSC resends an MO whose response it did not get; within the window the same
        # words from the same subscriber to the same number are that resend, not a new message,
        # as long as no other consent change came in between: STOP, START, STOP are three.
        digest = mo_path.mo_digest(
            system_id=system_id,
            subscriber=subscriber.value,
            recipient=recipient.value,
            text=text,
            now=now,
            window_s=self.config.mo_dedup_window_s,
        )
        key = mo_path.mo_event_key(digest, records)
        # A decision makes at most two events (an answer that narrows a revoke-all opt-out);
        # their ids derive from the MO, so a resend makes the same ones.
        ids = iter((key, f"{key}/2"))
        return decide_mo(
            text=text,
            subscriber=subscriber,
            recipient=recipient,
            campaign=self.config.directory.lookup(recipient.value),
            system_id=system_id,
            records=records,
            is_receipt=False,
            now=now,
            new_event_id=lambda: next(ids),
            instance=self.instance,
            smsc_message_id=receipted_id(pdu),
            dedup_key=key,
            bound_as=bound_as,
            clarifying=clarifying,
        )

    def _may_clarify(self, recipient: SmsAddress, records: Mapping[str, ConsentRecord]) -> bool:
        """Whether an MO to ``recipient`` could answer a revoke-all question: the business
        asks one and the subscriber is opted out business-wide (then history decides)."""
        campaign = self.config.directory.lookup(recipient.value)
        rules = campaign.business_rules
        if rules is None or rules.clarify is None or campaign.business_scope is None:
            return False
        record = records.get(campaign.business_scope.key)
        return record is not None and record.state is ConsentState.OPTED_OUT

    async def _mo_slow(
        self,
        request: MoRequest,
        pdu: p.DeliverSm | p.DataSm,
        content: Content,
        text: str,
        subscriber: SmsAddress,
        recipient: SmsAddress,
        held: _Held | None,
    ) -> None:
        try:
            records = await self.store.current(subscriber.value)
        except StoreError as exc:
            self._store_down("current", exc)
            self._retry_later(request, held)
            return
        clarifying = None
        if self._may_clarify(recipient, records):
            campaign = self.config.directory.lookup(recipient.value)
            assert campaign.business_scope is not None
            try:
                events = await self.store.history(subscriber.value, campaign.business_scope.key)
            except StoreError as exc:
                self._store_down("history", exc)
                self._retry_later(request, held)
                return
            clarifying = pending_clarification(events, campaign, self.clock.wall())
        decision = self._decide_mo(
            request, pdu, content, text, subscriber, recipient, records, clarifying
        )
        await self._mo_act(request, decision, held, text)

    async def _mo_act(
        self, request: MoRequest, decision: MoDecision, held: _Held | None, text: str | None = None
    ) -> None:
        new = True
        if decision.events:
            try:
                new = await self.store_events(decision.events, raise_unavailable=True)
            except StoreError:
                # Not acknowledged, so the SMSC retries and nothing is lost. The event may have
                # landed all the same (a commit reported failed): its retry is then a duplicate,
                # which must still get the reply this attempt never sent.
                if decision.reply is not None:
                    self._unreplied.add(decision, self.clock.monotonic())
                self._retry_later(request, held)
                return
            if not new:
                owed = self._unreplied.take(decision.events, self.clock.monotonic())
                if owed is not None:
                    self._reply_to(request, owed, text)
        match = decision.match
        if match is not None:
            self.metrics.mo_keywords_total.labels(match.family.value, match.match.value).inc()
            log.info(
                logs.MO_KEYWORD_MATCHED,
                conn_id=request.client.conn_id,
                system_id=request.client.system_id,
                subscriber=mask_subscriber(decision.events[0].subscriber)
                if decision.events
                else None,
                keyword=match.keyword,
                family=match.family.value,
                match=match.match.value,
                decision=decision.action.value,
                duplicate=not new,
            )
        if new:
            self._count_opt(decision)
            self._count_answer(decision)
            self._reply_to(request, decision, text)
        self._settle_mo(request, decision)

    def _count_opt(self, decision: MoDecision) -> None:
        """smppgw_opt_outs_total / smppgw_opt_ins_total: a subscriber's opt-out or opt-in that
        was stored now (not a resend's duplicate), by campaign and keyword family."""
        action = decision.action
        if action in (MoAction.OPTED_OUT, MoAction.LIST_OPTED_OUT):
            counter = self.metrics.opt_outs_total
        elif action in (MoAction.OPTED_IN, MoAction.REOPTED_IN):
            counter = self.metrics.opt_ins_total
        else:
            return
        match = decision.match
        family = match.family.value if match is not None else "any_message"
        campaign = decision.events[0].campaign if decision.events else None
        counter.labels(campaign or "none", family).inc()

    def _count_answer(self, decision: MoDecision) -> None:
        """smppgw_opt_out_answers_total: an answer to a revoke-all question, stored now."""
        if decision.action is MoAction.CLARIFIED_ALL:
            answer = "all"
        elif decision.action is MoAction.CLARIFIED_NARROWED:
            answer = "narrowed"
        else:
            return
        scope = decision.events[-1].scope
        self.metrics.mt_opt_out_answers_total.labels(scope[len(REVOKE_ALL_PREFIX) :], answer).inc()

    def _reply_to(self, request: MoRequest, decision: MoDecision, text: str | None) -> None:
        """Send the decision's auto-reply (an opt-out confirmation always goes, once), recorded
        against the decision's event (a HELP answer has none: it keeps the MO's ``text``)."""
        if decision.reply is None:
            return
        self.replies.send(
            self._account(request.client.system_id),
            decision.reply,
            decision.action.value,
            request,
            always=decision.action in (MoAction.OPTED_OUT, MoAction.LIST_OPTED_OUT),
            event_id=decision.events[0].event_id if decision.events else None,
            words=None if decision.events else text,
        )

    def _settle_mo(self, request: MoRequest, decision: MoDecision) -> None:
        if request.settled:
            return
        if decision.forward:
            request.forward()
            return
        log.info(
            logs.MO_DROPPED,
            conn_id=request.client.conn_id,
            system_id=request.client.system_id,
            decision=decision.action.value,
        )
        request.respond(mo_path.mo_response(request.pdu))

    async def store_events(
        self, events: tuple[ConsentEvent, ...], *, raise_unavailable: bool = False
    ) -> bool:
        """Append durably; True if any event was new (not a resend's duplicate). The MT path's
        opt-in requests are stored through here too."""
        new = False
        for event in events:
            started = self.clock.monotonic()
            try:
                added = await self.store.append(event)
            except StoreError as exc:
                self._store_down("append", exc)
                if raise_unavailable:
                    raise
                return False
            self.metrics.store_latency.observe(self.clock.monotonic() - started)
            if added:
                new = True
                self.metrics.consent_changes_total.labels(
                    event.state.value,
                    event.actor.value,
                ).inc()
                log.info(
                    logs.CONSENT_CHANGED,
                    event_id=event.event_id,
                    subscriber=mask_subscriber(event.subscriber),
                    scope=event.scope,
                    state=event.state.value,
                    actor=event.actor.value,
                    match=event.match.value,
                    campaign=event.campaign,
                    system_id=event.system_id,
                    instance=event.instance,
                )
        return new


def _has_footers(config: ConsentConfig) -> bool:
    """Whether any campaign adds footers: only then are parts answered early or added, so
    only then can a receipt need another id."""
    return any(c.footer is not FooterMode.NEVER for c in config.directory)
