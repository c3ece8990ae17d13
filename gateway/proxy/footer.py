"""The footer stage: a campaign's opt-out footer on allowed MTs, long messages held whole.

What goes upstream is decided by ``gateway.messages.footer`` (which messages are never
touched, when the footer is appended and when the text is re-segmented, whose answer each
upstream part's answer is); this module holds the parts, keeps time, sends, answers, counts,
logs and stores message ids.

The consent enforcer calls ``FooterStage.submit`` for every MT the policy allows with a footer,
and again for every later part of a long MT whose first part got that decision. The stage settles
each request exactly once.

Single-part messages (the common case) are decided and forwarded in the same call, without a
task. If one grows to N parts the first goes out as the client's request (its answer, with the
real upstream message id, is the client's) and the others as requests of the gateway's own; an
SMSC refusal of one of those is logged (``mt_part_refused``), since the client already has its
answer.

Concatenated messages (UDH IEI 0x00 / 0x08 anywhere in the UDH, or the ``sar_*`` TLVs) are held
(``text.segment.Reassembler``) until every part is in, bounded in messages, octets and time;
then the whole message is rewritten at once. Parts still held at the end of the read that
brought them are answered at once with message ids of the gateway's own (a client may send
nothing more until it has an answer); the SMSC's ids are mapped to those for receipts. A
message whose parts do not all arrive in time, or that is evicted to stay within the bounds,
goes out as it came (no footer), every held part answered, and ``mt_hold_expired`` is logged;
before that the enforcer's gate says whether its parts may still go. Later parts of such a
message pass straight through. A duplicate of a held part is answered with its original's
answer. When the client disconnects, its held parts are dropped unanswered (``on_closed``);
those it was already answered for are reported undelivered by receipt, like parts the SMSC
refuses after their early answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.consent.campaign import Campaign, FooterMode
from gateway.consent.model import SmsAddress
from gateway.messages.content import Content, content_of
from gateway.messages.footer import (
    ClientPart,
    Footers,
    FooterSettings,
    Holds,
    Offer,
    Outcome,
    Unchanged,
    hold_key,
    holdable,
)
from gateway.proxy.hooks import MtRequest
from gateway.proxy.receipts import ReceiptIds, new_message_id
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandStatus, status_name
from gateway.store.base import ConsentStore, MessageIds, StoreError
from gateway.telemetry import logs
from gateway.telemetry.logs import mask_subscriber
from gateway.telemetry.metrics import Metrics
from gateway.text.footer import has_link, render_footer
from gateway.text.segment import Assembly

log = logs.get_logger()

_MAX_FOOTER_CACHE: Final = 1_000
_NOT_RENDERED: Final = "\0not rendered"  # a sentinel compared by identity

Message = p.SubmitSm | p.DataSm
LinkFor = Callable[[Campaign, SmsAddress], str | None]
# Before held parts go on unchanged (their message never completed): calls ``go`` if they may
# still be sent, else answers every request still unanswered itself and calls ``stop``
# (gateway.proxy.consent: a consent change during the hold refuses them).
Gate = Callable[[list[MtRequest], Callable[[], None], Callable[[], None]], None]
# Sends the client a receipt of the gateway's own: (the request whose session and account it
# concerns, the client's PDU, the message id the client was given, "REJECTD" / "UNDELIV").
Reporter = Callable[[MtRequest, "Message", str, str], None]


def _open_gate(
    _requests: list[MtRequest], go: Callable[[], None], _stop: Callable[[], None]
) -> None:
    go()


def _no_reporter(_request: MtRequest, _pdu: Message, _message_id: str, _stat: str) -> None:
    return None


@dataclass(slots=True, eq=False)
class _Slot:
    """One part of a message: the client's request and any duplicates of it.

    ``own_id`` is set once the part was answered before the SMSC saw it (the client was not
    going to send more until it had an answer): every copy of the part gets that id, and the
    SMSC's id for the part it ends up in is mapped to it for receipts."""

    requests: list[MtRequest]
    pdu: Message
    content: Content
    campaign: Campaign
    subscriber: SmsAddress
    own_id: str | None = None

    @property
    def asks_receipt(self) -> bool:
        return bool(self.pdu.registered_delivery & 0x03)

    @property
    def part(self) -> ClientPart:
        return (self.requests[0].frame, self.pdu, self.content)


Held = Assembly[_Slot]


def _slots(message: Held) -> list[_Slot]:
    return [fragment.context for fragment in message.fragments]


class FooterStage:
    """Adds opt-out footers (implements ``gateway.proxy.consent.FooterStage``); one per process.

    ``link_for`` gives the signed opt-out link a footer's ``{link}`` stands for (None: the
    placeholder is dropped). ``clock`` is monotonic seconds (the loop's clock by default).
    """

    def __init__(
        self,
        *,
        store: ConsentStore,
        settings: FooterSettings | None = None,
        link_for: LinkFor | None = None,
        clock: Callable[[], float] | None = None,
        receipt_ids: ReceiptIds | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings = settings or FooterSettings()
        self._store = store
        self.receipt_ids = receipt_ids or ReceiptIds(store)
        self._metrics = metrics
        self._link_for = link_for
        self._clock = clock
        self._footers = Footers(settings)
        self._holds: Holds[_Slot] = Holds(settings)
        self._held = self._holds.buffer
        self._rendered: dict[Campaign, str | None] = {}
        self._marking: set[tuple[str, str]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._gate: Gate = _open_gate
        self._report: Reporter = _no_reporter
        self._answering = False  # an early-answer pass is scheduled for the end of this turn
        self._tasks: set[asyncio.Task[None]] = set()

    def set_gate(self, gate: Gate) -> None:
        """Who decides whether held parts may still go when their hold ends."""
        self._gate = gate

    def set_reporter(self, report: Reporter) -> None:
        """Who delivers the receipts the gateway writes itself (REJECTD / UNDELIV)."""
        self._report = report

    # --- observation (admin, tests) -----------------------------------------------------------

    @property
    def held_messages(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self._held.bytes_held

    def reconfigure(self, settings: FooterSettings) -> None:
        """SIGHUP: new limits apply to messages held from now on."""
        self.settings = settings
        self._footers.reconfigure(settings)
        self._holds.reconfigure(settings)

    # --- the seam the enforcer calls ----------------------------------------------------------

    def submit(
        self,
        request: MtRequest,
        pdu: p.SubmitSm | p.DataSm,
        campaign: Campaign,
        subscriber: SmsAddress,
    ) -> None:
        content = content_of(pdu, self.settings.default_alphabet)
        if content.part is None:
            one = self._footers.rewrite_one(
                (request.frame, pdu, content),
                campaign,
                self._footer(campaign, subscriber),
                subscriber.value,
            )
            if isinstance(one, bytes):  # the common case: the client's frame, footer appended
                accepted = self._on_accepted(request, campaign, subscriber)
                request.forward(one, transform=None if accepted is None else _if_ok(accepted))
            else:
                self._carry_out(request, one, campaign, subscriber)
        elif holdable(content):
            self._hold(_Slot([request], pdu, content, campaign, subscriber))
        else:
            request.forward()  # binary parts are never touched; a bad numbering is not ours

    def on_closed(self, conn_id: str) -> None:
        """The client's connection ended: drop its held parts (nothing can carry them); those
        it was answered for are reported undelivered."""
        for message in self._held.discard(lambda key: key[0] == conn_id):
            self._gone(message)
        self._arm()

    def abandon(
        self,
        request: MtRequest,
        pdu: Message,
        subscriber: SmsAddress,
        answer: Callable[[MtRequest], object],
    ) -> None:
        """The message ``request`` is part of may not go (consent changed between its parts):
        every part of it held is answered with ``answer`` and forgotten; nothing is sent."""
        content = content_of(pdu, self.settings.default_alphabet)
        if content.part is None:
            return
        message = self._held.pop(hold_key(request.client.conn_id, pdu, content, subscriber.value))
        if message is None:
            return
        slots = _slots(message)
        for slot in slots:
            for held in slot.requests:
                if not held.settled:
                    answer(held)
        self._report_parts(request, slots, slots, "REJECTD")
        self._arm()

    def release_all(self, reason: str = "shutdown") -> None:
        """Send every held message on as it came (shutdown: its other parts will not come)."""
        for message in self._holds.release_all(self._now()):
            self._release(message, reason)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the store writes still running (footer marks, id mappings)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A store write of the stage's own: it outlives the client session that caused it
        (a client may unbind right after its last answer), and ``drain`` waits for it."""
        task = asyncio.get_running_loop().create_task(coro, name="footer-store-write")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- rewriting ----------------------------------------------------------------------------

    def _rewrite(
        self,
        via: MtRequest,
        parts: Sequence[ClientPart],
        campaign: Campaign,
        subscriber: SmsAddress,
        held: list[_Slot] | None = None,
    ) -> None:
        """Send one message as the rewrite says: a single PDU (``via`` with its ``parts``), or
        every part of a ``held`` one."""
        outcome = self._footers.rewrite(
            parts, campaign, self._footer(campaign, subscriber), subscriber.value
        )
        self._carry_out(via, outcome, campaign, subscriber, held)

    def _carry_out(
        self,
        via: MtRequest,
        outcome: Outcome,
        campaign: Campaign,
        subscriber: SmsAddress,
        held: list[_Slot] | None = None,
    ) -> None:
        """Send what ``outcome`` says for the message ``via`` (a single PDU) or ``held`` is."""
        if isinstance(outcome, Unchanged):
            if held is None:
                via.forward()
            else:
                self._send_unchanged(held)
            return
        accepted = self._on_accepted(via, campaign, subscriber)
        units = outcome.units
        last = len(units) - 1
        if not last and held is None:  # the common case: one PDU, the client's
            via.forward(units[0].frame, transform=None if accepted is None else _if_ok(accepted))
            return
        for i, unit in enumerate(units):
            done = accepted if i == last else None
            if i == 0 and held is None:
                # The client's request itself: the SMSC's answer (and message id) is the client's.
                via.forward(unit.frame, transform=None if done is None else _if_ok(done))
            else:
                # Parts the gateway added ask no receipt, and any the SMSC sends is dropped.
                answers = [] if held is None else [held[j] for j in unit.answers]
                self._send_unit(via, unit.frame, answers, held or [], done, campaign)

    def _footer(self, campaign: Campaign, subscriber: SmsAddress) -> str | Callable[[], str]:
        """The campaign's footer, rendered once per campaign; one with a link is rendered per
        subscriber, and only if the message may take it (a link costs a signature)."""
        # Cached per campaign: the rendered footer, or None for one with a link.
        footer = self._rendered.get(campaign, _NOT_RENDERED)
        if footer is _NOT_RENDERED:
            if len(self._rendered) >= _MAX_FOOTER_CACHE:
                self._rendered.clear()  # campaigns replaced by reloads
            template = campaign.footer_text
            if self._link_for is not None and has_link(template):
                footer = None
            else:
                footer = render_footer(template, campaign.brand)
            self._rendered[campaign] = footer
        if footer is not None:
            return footer
        link_for = self._link_for
        assert link_for is not None
        template = campaign.footer_text
        return lambda: render_footer(template, campaign.brand, link_for(campaign, subscriber))

    # --- holding the parts of long messages ---------------------------------------------------

    def _hold(self, slot: _Slot) -> None:
        content = slot.content
        assert content.part is not None
        request = slot.requests[0]
        key = hold_key(request.client.conn_id, slot.pdu, content, slot.subscriber.value)
        taken = self._holds.offer(key, content.part, content.body, self._now(), slot)
        if taken.offer is Offer.DUPLICATE:
            assert taken.original is not None
            taken.original.requests.append(request)  # it gets its original's answer
            self._schedule_answers()
            return
        for message, reason in taken.released:
            self._release(message, reason)
        if taken.offer is Offer.COMPLETE:
            assert taken.message is not None
            slots = _slots(taken.message)
            parts = [slot.part for slot in slots]
            first = slots[0]
            self._rewrite(first.requests[0], parts, first.campaign, first.subscriber, slots)
        elif taken.offer is Offer.HELD:
            self._schedule_answers()
        else:
            request.forward()
        self._arm()

    def _send_unchanged(self, slots: list[_Slot]) -> None:
        for slot in slots:
            request = slot.requests[0]
            if len(slot.requests) == 1 and slot.own_id is None:
                request.forward()  # a plain relay: the SMSC's answer is the client's
            else:
                self._send_unit(request, request.frame, [slot], slots, None, slot.campaign)

    def _send_unit(
        self,
        via: MtRequest,
        frame: bytes,
        slots: list[_Slot],
        message: list[_Slot],
        accepted: Callable[[], None] | None,
        campaign: Campaign,
    ) -> None:
        """Send ``frame`` upstream as the gateway's own request. Its response answers the client
        requests of ``slots`` (the parts of ``message`` it answers for; none for a part the
        gateway added) still waiting; the SMSC's id is mapped to the ids the client was given
        early, or to none for a part the gateway added; a refusal of a part the client was
        already told was accepted is reported to it by receipt."""

        def done(response: p.Pdu | None, response_frame: bytes | None) -> None:
            for slot in slots:
                for request in slot.requests:
                    if request.settled:
                        continue
                    if slot.own_id is not None:
                        request.respond(_response(request, slot.own_id))  # one id per part
                    elif response_frame is None:
                        request.reject(CommandStatus.ESME_RSYSERR)  # outcome unknown: retried
                    else:
                        request.respond(response_frame)
            status = None if response is None else response.command_status
            early = [slot for slot in slots if slot.own_id is not None]
            if status == CommandStatus.ESME_ROK:
                upstream_id = getattr(response, "message_id", None)
                if upstream_id and (early or not slots):
                    ids = tuple(slot.own_id for slot in early if slot.own_id is not None)
                    self._keep_ids(
                        MessageIds(
                            upstream_id=upstream_id, client_ids=ids, account=via.client.system_id
                        ),
                    )
                if accepted is not None:
                    accepted()
                return
            if early or not slots:
                reason = "smsc refused" if status is not None else "no response"
                self._part_failed(via, slots, message, campaign, status, reason)

        if not via.originate(frame, done):
            done(None, None)

    def _part_failed(
        self,
        via: MtRequest,
        slots: list[_Slot],
        message: list[_Slot],
        campaign: Campaign,
        status: int | None,
        reason: str,
    ) -> None:
        """A part the client had its answer for (or a part of the gateway's own) did not go:
        logged, counted, and reported to the client by receipt when it asked for one."""
        log.warning(
            logs.MT_PART_REFUSED,
            conn_id=via.client.conn_id,
            system_id=via.client.system_id,
            campaign=campaign.name,
            command_status=None if status is None else status_name(status),
            reason=reason,
            added=not slots,
        )
        if self._metrics is not None:
            self._metrics.mt_parts_failed_total.labels(reason).inc()
        stat = "REJECTD" if status is not None else "UNDELIV"
        self._report_parts(via, slots, message, stat)

    def _report_parts(
        self, via: MtRequest, slots: Sequence[_Slot], message: list[_Slot], stat: str
    ) -> None:
        """Receipts of the gateway's own for parts answered early that will not be delivered:
        for each that asked for a receipt, or else for the part of the message that asked
        (Kannel asks on part 1 only), once."""
        early = [slot for slot in slots if slot.own_id is not None]
        targets = [slot for slot in early if slot.asks_receipt]
        if not targets:
            asking = [s for s in message if s.asks_receipt and s.own_id is not None]
            targets = asking[:1]
        for slot in targets:
            assert slot.own_id is not None
            self._report(via, slot.pdu, slot.own_id, stat)

    def _keep_ids(self, entry: MessageIds) -> None:
        self.receipt_ids.remember([entry])
        self._spawn(self._store_ids(entry))

    async def _store_ids(self, entry: MessageIds) -> None:
        try:
            await self.receipt_ids.persist([entry])
        except StoreError as exc:
            # Kept locally all the same: receipts through this process still match.
            log.warning(logs.STORE_UNAVAILABLE, operation="put_message_ids", error=str(exc))

    # --- answering held parts at once ---------------------------------------------------------

    def _schedule_answers(self) -> None:
        """Answer the held parts still waiting once the current read has been processed: a
        part that is still held then is one the client may be waiting for."""
        if not self._answering:
            self._answering = True
            asyncio.get_running_loop().call_soon(self._answer_waiting)

    def _answer_waiting(self) -> None:
        self._answering = False
        answered = 0
        for slot in list(self._held.contexts()):
            waiting = [r for r in slot.requests if not r.settled]
            if not waiting:
                continue
            if slot.own_id is None:
                slot.own_id = new_message_id()
            for request in waiting:
                request.respond(_response(request, slot.own_id))
                answered += 1
        if answered and self._metrics is not None:
            self._metrics.mt_parts_answered_early_total.inc(answered)

    # --- releasing held messages --------------------------------------------------------------

    def _release(self, message: Held, reason: str) -> None:
        """Send a held message on as it came (no footer) and answer every part of it."""
        slots = _slots(message)
        via = slots[0].requests[0]
        if _client_gone(via):
            self._gone(message)
            return
        self._log_hold(message, reason)
        # Time has passed since these parts were allowed: they go only if still allowed now.
        requests = [r for slot in slots for r in slot.requests]
        self._gate(
            requests,
            lambda: self._send_unchanged(slots),
            lambda: self._report_parts(via, slots, slots, "REJECTD"),
        )

    def _gone(self, message: Held) -> None:
        """The client's connection ended with parts held: nothing can carry them now. Parts it
        was told were accepted are reported undelivered (to another session of the account)."""
        self._log_hold(message, "client_gone")
        slots = _slots(message)
        self._report_parts(slots[0].requests[0], slots, slots, "UNDELIV")

    def _log_hold(self, message: Held, reason: str) -> None:
        first = message.fragments[0].context
        request = first.requests[0]
        log.warning(
            logs.MT_HOLD_EXPIRED,
            conn_id=request.client.conn_id,
            system_id=request.client.system_id,
            campaign=first.campaign.name,
            subscriber=mask_subscriber(first.subscriber.value),
            segments=message.total,
            received=len(message.fragments),
            reason=reason,
        )

    def expire(self, now: float | None = None) -> int:
        """Release the messages whose hold time is over; returns how many."""
        expired = self._holds.expire(self._now() if now is None else now)
        for message in expired:
            self._release(message, "timeout")
        self._arm()
        return len(expired)

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def _arm(self) -> None:
        """One timer for all holds, due at the oldest one's deadline."""
        deadline = self._held.next_deadline()
        if deadline is None:
            self.close()
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, deadline - self._now())
        if self._timer is not None:
            if self._timer.when() <= due:
                return  # fires first and re-arms
            self._timer.cancel()
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.expire()

    # --- footer mode "first" ------------------------------------------------------------------

    def _on_accepted(
        self, request: MtRequest, campaign: Campaign, subscriber: SmsAddress
    ) -> Callable[[], None] | None:
        """What to do once the SMSC accepted the part carrying the footer (mode ``first``)."""
        if campaign.footer is not FooterMode.FIRST:
            return None
        key = (subscriber.value, campaign.name)

        def accepted() -> None:
            if key not in self._marking:
                self._marking.add(key)
                self._spawn(self._mark_seen(key))

        return accepted

    async def _mark_seen(self, key: tuple[str, str]) -> None:
        subscriber, campaign = key
        try:
            await self._store.mark_footer_seen(subscriber, campaign, time.time())
        except StoreError as exc:
            # The footer will simply be added again next time: the safe side.
            log.warning(logs.STORE_UNAVAILABLE, operation="mark_footer_seen", error=str(exc))
        finally:
            self._marking.discard(key)


def _response(request: MtRequest, message_id: str) -> p.Pdu:
    """An OK answer to ``request`` carrying ``message_id`` (the gateway's own)."""
    if isinstance(request.pdu, p.DataSm):
        return p.DataSmResp(sequence_number=request.sequence_number, message_id=message_id)
    return p.SubmitSmResp(sequence_number=request.sequence_number, message_id=message_id)


def _if_ok(accepted: Callable[[], None]) -> Callable[[bytes], bytes]:
    """A response transform that calls ``accepted`` when the SMSC said ESME_ROK."""

    def transform(frame: bytes) -> bytes:
        if len(frame) >= 16 and frame[8:12] == b"\0\0\0\0":
            accepted()
        return frame

    return transform


def _client_gone(request: MtRequest) -> bool:
    return request.bridge.client_gone
