"""The footer stage: a campaign's opt-out footer on allowed MTs, long messages re-segmented.

The consent enforcer calls ``FooterStage.submit`` for every MT the policy allows with a footer,
and again for every later part of a long MT whose first part got that decision. The stage settles
each request exactly once.

Single-part messages (the common case) are decided and forwarded in the same call, without a
task: the text is decoded per ``data_coding``, the footer appended (``text.footer.apply_footer``:
the coding is kept where the footer can be written in it, a segment is added rather than GSM
switched to UCS-2), and the PDU re-encoded with only ``short_message`` (or ``message_payload``),
``sm_length``, ``data_coding`` and, when it has to grow a UDH, ``esm_class`` changed. If it grows
to N parts the first goes out as the client's request (its answer, with the real upstream
message id, is the client's) and the others as requests of the gateway's own; an SMSC refusal of
one of those is logged (``mt_part_refused``), since the client already has its answer.

Concatenated messages (UDH IEI 0x00 / 0x08 anywhere in the UDH, or the ``sar_*`` TLVs) are held
until every part is in, bounded in messages, octets and time; then the whole text gets the
footer and is re-segmented with one new reference in the client's kind of concatenation (other
UDH elements kept). Client part i is answered with upstream part i's response; an extra part the
footer added is answered to the gateway only; if the footer made the message shorter in parts,
the client's surplus parts get the last upstream part's answer. A message whose parts do not all
arrive in time, or that is evicted to stay within the bounds, goes out as it came (no footer),
every held part answered, and ``mt_hold_expired`` is logged. Later parts of such a message pass
straight through. A duplicate of a held part is answered with its original's answer. When the
client disconnects, its held parts are dropped unanswered (``on_closed``).

Never touched (forwarded as they came): binary and unknown codings, text that already says how to
opt out, app-directed messages (UDH port addressing), acknowledgements (esm_class message type),
silent and data-download messages (protocol_id 0x40, 0x7C-0x7F), a UDH that does not parse, text
that does not decode back to the same octets, and messages the footer would make too long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Final

from gateway.consent.campaign import Campaign, FooterMode
from gateway.consent.keywords import tells_how_to_opt_out
from gateway.consent.model import SmsAddress
from gateway.proxy.content import Content, content_of
from gateway.proxy.hooks import MtRequest
from gateway.proxy.receipts import ReceiptIds, new_message_id
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandStatus, EsmClass, Tag, status_name
from gateway.store.base import ConsentStore, MessageIds, StoreError
from gateway.telemetry import logs
from gateway.telemetry.logs import mask_subscriber
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet, can_encode, decode_as, encode_text, with_alphabet
from gateway.text.footer import already_has_opt_out, apply_footer, has_link, render_footer
from gateway.text.gsm7 import TextError
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    MAX_PARTS,
    PAYLOAD,
    SAR,
    ConcatKind,
    Part,
    capacity,
    frame_parts,
)
from gateway.text.udh import IEI_PORT_8BIT, IEI_PORT_16BIT

log = logs.get_logger()

# protocol_id values whose message the subscriber never reads as text: short message type 0
# (silent), ANSI-136 R-DATA, ME data download, ME de-personalisation, (U)SIM data download.
_SILENT_PROTOCOL_IDS: Final = frozenset({0x40, 0x7C, 0x7D, 0x7E, 0x7F})
_PORT_IEIS: Final = frozenset({IEI_PORT_8BIT, IEI_PORT_16BIT})
_SAR_TAGS: Final = frozenset({Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM})
# The verbs keywords.tells_how_to_opt_out looks for ("reply STOP", "respond with STOP", ...).
_INSTRUCTION_VERB: Final = re.compile(r"reply|text|txt|send|respond|type")
_MAX_DESTINATIONS: Final = 100_000  # per-destination reference counters kept (LRU)
_MAX_FOOTER_CACHE: Final = 1_000
# Units one part holds without a UDH (GSM septets, UCS-2 code units, octets).
_ONE_PART: Final = {
    Alphabet.GSM7: 160,
    Alphabet.UCS2: 70,
    Alphabet.LATIN1: 140,
    Alphabet.IA5: 140,
}

Key = tuple[Hashable, ...]
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FooterSettings:
    """How footers are applied and long messages held (config ``[text]``)."""

    default_alphabet: Alphabet = Alphabet.GSM7  # what data_coding 0 means at this SMSC
    concat: ConcatKind = CONCAT_8BIT  # how a one-part message that grows is split
    separator: str = " "  # between the text and the footer
    max_parts: int = MAX_PARTS  # a message the footer would take beyond this stays as it is
    hold_timeout_s: float = 10.0  # parts of one message must all arrive within this
    hold_max_messages: int = 10_000  # incomplete messages held at once (oldest evicted)
    hold_max_bytes: int = 2_000_000  # octets of held message bodies (oldest evicted)

    def __post_init__(self) -> None:
        if self.concat is PAYLOAD:
            raise ValueError("concat must be udh_8bit, udh_16bit or sar")
        if self.hold_timeout_s <= 0 or self.hold_max_messages < 1 or self.hold_max_bytes < 1:
            raise ValueError("hold limits must be positive")


class _Slot:
    """One part of a held message: the client's request and any duplicates of it.

    ``own_id`` is set once the part was answered before the SMSC saw it (the client was not
    going to send more until it had an answer): every copy of the part gets that id, and the
    SMSC's id for the part it ends up in is mapped to it for receipts."""

    __slots__ = ("content", "own_id", "pdu", "requests")

    def __init__(self, request: MtRequest, pdu: Message, content: Content) -> None:
        self.requests = [request]
        self.pdu = pdu
        self.content = content
        self.own_id: str | None = None

    @property
    def asks_receipt(self) -> bool:
        return bool(self.pdu.registered_delivery & 0x03)


class _Unit:
    """One PDU the SMSC gets for a message: the client parts whose answer its answer is (none:
    a part the gateway added)."""

    __slots__ = ("frame", "slots")

    def __init__(self, frame: bytes, slots: list[_Slot]) -> None:
        self.frame = frame
        self.slots = slots


class _Hold:
    """The parts of one concatenated MT received so far."""

    __slots__ = ("campaign", "deadline", "key", "kind", "octets", "slots", "subscriber", "total")

    def __init__(
        self,
        key: Key,
        *,
        kind: ConcatKind,
        total: int,
        deadline: float,
        campaign: Campaign,
        subscriber: SmsAddress,
    ) -> None:
        self.key = key
        self.kind = kind
        self.total = total
        self.deadline = deadline
        self.campaign = campaign
        self.subscriber = subscriber
        self.slots: dict[int, _Slot] = {}
        self.octets = 0

    @property
    def first_request(self) -> MtRequest:
        return next(iter(self.slots.values())).requests[0]

    def ordered(self) -> list[_Slot]:
        return [self.slots[seq] for seq in sorted(self.slots)]


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
        self.settings = settings or FooterSettings()
        self._store = store
        self.receipt_ids = receipt_ids or ReceiptIds(store)
        self._metrics = metrics
        self._link_for = link_for
        self._clock = clock
        self._holds: dict[Key, _Hold] = {}  # insertion order is deadline order
        self._held_bytes = 0
        # Keys of messages released unchanged: their late parts pass straight through.
        self._released: OrderedDict[Key, float] = OrderedDict()
        self._references: OrderedDict[str, int] = OrderedDict()
        self._footers: dict[Campaign, str] = {}
        self._encoded: dict[tuple[str, Alphabet], bytes | None] = {}
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
        return len(self._holds)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def reconfigure(self, settings: FooterSettings) -> None:
        """SIGHUP: new limits apply to messages held from now on."""
        self.settings = settings
        self._encoded.clear()  # the separator may have changed

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
            self._single(request, pdu, content, campaign, subscriber)
        else:
            self._hold_part(request, pdu, content, campaign, subscriber)

    def on_closed(self, conn_id: str) -> None:
        """The client's connection ended: drop its held parts (nothing can carry them); those
        it was answered for are reported undelivered."""
        for key in [k for k in self._holds if k[0] == conn_id]:
            hold = self._holds[key]
            self._remove(hold)
            self._gone(hold)
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
        hold = self._holds.get(_hold_key(request, pdu, content, subscriber))
        if hold is None:
            return
        self._remove(hold)
        for slot in hold.ordered():
            for held in slot.requests:
                if not held.settled:
                    answer(held)
        self._report_parts(request, hold.ordered(), hold, "REJECTD")
        self._arm()

    def release_all(self, reason: str = "shutdown") -> None:
        """Send every held message on as it came (shutdown: its other parts will not come)."""
        for hold in list(self._holds.values()):
            self._release(hold, reason)
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

    # --- one-part messages: the fast path -----------------------------------------------------

    def _single(
        self,
        request: MtRequest,
        pdu: Message,
        content: Content,
        campaign: Campaign,
        subscriber: SmsAddress,
    ) -> None:
        alphabet = content.alphabet
        text = decode_as(content.body, alphabet) if _rewritable(pdu, content) else None
        footer = None if text is None else self._footer_for(text, campaign, subscriber)
        if text is None or footer is None:
            request.forward()
            return
        accepted = self._on_accepted(request, campaign, subscriber)
        frame = self._appended(request.frame, pdu, content, footer)
        if frame is not None:
            # The common case: the client's octets stay as they are, the footer's follow.
            request.forward(frame, transform=None if accepted is None else _if_ok(accepted))
            return
        if encode_text(text, alphabet) != content.body:
            request.forward()  # only text that encodes back to the same octets is rewritten
            return
        kind = PAYLOAD if content.in_payload else self.settings.concat
        try:
            result = apply_footer(
                text,
                alphabet,
                footer,
                kind,
                max_parts=self.settings.max_parts,
                separator=self.settings.separator,
                extra_udh=content.udh,
            )
            if result is None:
                request.forward()  # too long with the footer: sent as the client wrote it
                return
            reference = 0 if len(result.parts) == 1 else self._reference(subscriber.value, kind)
            parts = frame_parts(result.parts, kind, reference=reference, extra_udh=content.udh)
        except TextError:
            request.forward()
            return
        data_coding = _data_coding(pdu.data_coding, alphabet, result.alphabet)
        frames = [
            _rebuild(pdu, part, data_coding=data_coding, in_payload=content.in_payload)
            for part in parts
        ]
        if len(frames) == 1:
            request.forward(frames[0], transform=None if accepted is None else _if_ok(accepted))
            return
        request.forward(frames[0])
        last = len(frames) - 1
        for i in range(1, len(frames)):
            # The gateway's own parts: no receipt asked, and any the SMSC sends is dropped.
            added = _Unit(_without_receipt(frames[i]), [])
            self._send_unit(request, added, None, accepted if i == last else None, campaign)

    def _appended(self, frame: bytes, pdu: Message, content: Content, footer: str) -> bytes | None:
        """``frame`` with the encoded separator and footer added to its short_message, when
        that fits one part in the same coding; None otherwise (the general path decides)."""
        if not isinstance(pdu, p.SubmitSm) or content.in_payload:
            return None
        alphabet = content.alphabet
        tail = self._encoded_footer(footer, alphabet)
        body = content.body
        if tail is None or not _appendable(body, alphabet):
            return None
        width = 2 if alphabet is Alphabet.UCS2 else 1
        if content.part is not None:  # the last part of a long message: its concatenation too
            room = capacity(alphabet, _concat_kind(content), multipart=True, extra_udh=content.udh)
        elif content.udh.elements:
            room = capacity(alphabet, multipart=False, extra_udh=content.udh)
        else:
            room = _ONE_PART[alphabet]
        if (len(body) + len(tail)) // width > room:
            return None
        return _patch_short_message(frame, pdu, pdu.short_message + tail)

    def _encoded_footer(self, footer: str, alphabet: Alphabet) -> bytes | None:
        """Separator and footer in ``alphabet`` (None if it cannot write them), cached."""
        key = (footer, alphabet)
        if key in self._encoded:
            return self._encoded[key]
        if len(self._encoded) >= _MAX_FOOTER_CACHE:
            self._encoded.clear()
        addition = self.settings.separator + footer
        value = encode_text(addition, alphabet) if can_encode(addition, alphabet) else None
        self._encoded[key] = value
        return value

    def _footer_for(self, text: str, campaign: Campaign, subscriber: SmsAddress) -> str | None:
        """The rendered footer, or None when the text needs none."""
        footer = self._render(campaign, subscriber)
        if not footer or already_has_opt_out(text):
            return None
        if _may_instruct(text) and tells_how_to_opt_out(text, campaign.rules):
            return None
        return footer

    def _render(self, campaign: Campaign, subscriber: SmsAddress) -> str:
        template = campaign.footer_text
        if self._link_for is not None and has_link(template):
            return render_footer(template, campaign.brand, self._link_for(campaign, subscriber))
        footer = self._footers.get(campaign)
        if footer is None:
            if len(self._footers) >= _MAX_FOOTER_CACHE:
                self._footers.clear()  # campaigns replaced by reloads
            footer = self._footers[campaign] = render_footer(template, campaign.brand)
        return footer

    def _reference(self, destination: str, kind: ConcatKind) -> int:
        """The next concatenation reference for ``destination``: a counter, never random, so
        two messages to one handset do not share a reference until the counter wraps."""
        previous = self._references.pop(destination, 0)
        value = (previous + 1) & 0xFFFF
        self._references[destination] = value
        if len(self._references) > _MAX_DESTINATIONS:
            self._references.popitem(last=False)
        return value & 0xFF if kind is CONCAT_8BIT else value

    # --- concatenated messages: hold, then re-segment -----------------------------------------

    def _hold_part(
        self,
        request: MtRequest,
        pdu: Message,
        content: Content,
        campaign: Campaign,
        subscriber: SmsAddress,
    ) -> None:
        part = content.part
        assert part is not None
        if not content.alphabet.is_text or not 1 <= part.seq <= part.total:
            request.forward()  # binary parts are never touched; a bad numbering is not ours
            return
        kind = _concat_kind(content)
        key = _hold_key(request, pdu, content, subscriber)
        now = self._now()
        released = self._released.get(key)
        if released is not None:
            if released > now:
                request.forward()  # a late part of a message already sent on unchanged
                return
            del self._released[key]
        hold = self._holds.get(key)
        if hold is not None:
            slot = hold.slots.get(part.seq)
            if slot is not None:
                if slot.content.body == content.body:
                    slot.requests.append(request)  # a resend: it gets its original's answer
                    self._schedule_answers()
                    return
                # Another message under the same key (a restarted reference counter).
                self._release(hold, "superseded", remember=False)
                hold = None
        if hold is None:
            self._make_room(len(content.body))
            hold = _Hold(
                key,
                kind=kind,
                total=part.total,
                deadline=now + self.settings.hold_timeout_s,
                campaign=campaign,
                subscriber=subscriber,
            )
            self._holds[key] = hold
        hold.slots[part.seq] = _Slot(request, pdu, content)
        hold.octets += len(content.body)
        self._held_bytes += len(content.body)
        if len(hold.slots) == hold.total:
            self._remove(hold)
            self._complete(hold)
        else:
            self._schedule_answers()
        self._arm()

    def _make_room(self, octets: int) -> None:
        s = self.settings
        while self._holds and (
            len(self._holds) >= s.hold_max_messages or self._held_bytes + octets > s.hold_max_bytes
        ):
            self._release(next(iter(self._holds.values())), "evicted")

    def _remove(self, hold: _Hold) -> None:
        del self._holds[hold.key]
        self._held_bytes -= hold.octets

    def _complete(self, hold: _Hold) -> None:
        slots = hold.ordered()
        units = self._plan(hold, slots)
        if units is None:
            self._send_unchanged(hold, slots)
            return
        via = slots[0].requests[0]
        accepted = self._on_accepted(via, hold.campaign, hold.subscriber)
        last = len(units) - 1
        for i, unit in enumerate(units):
            self._send_unit(via, unit, hold, accepted if i == last else None)

    def _plan(self, hold: _Hold, slots: list[_Slot]) -> list[_Unit] | None:
        """What the SMSC gets for the whole message with the footer, or None to leave it.

        When the footer fits in the room the client's last part leaves (in the same coding),
        parts 1..N-1 go exactly as the client sent them and the footer is appended to part N;
        otherwise the whole text is split again (one more part, or another coding)."""
        first = slots[0]
        alphabet = first.content.alphabet
        if any(
            s.pdu.data_coding != first.pdu.data_coding
            or s.content.in_payload != first.content.in_payload
            for s in slots
        ):
            return None
        # Joined before decoding: heals an escape or a surrogate pair a client split.
        body = b"".join(s.content.body for s in slots)
        text = decode_as(body, alphabet) if _rewritable(first.pdu, first.content) else None
        if text is not None and encode_text(text, alphabet) != body:
            text = None  # only text that encodes back to the same octets is rewritten
        footer = None if text is None else self._footer_for(text, hold.campaign, hold.subscriber)
        if text is None or footer is None:
            return None
        last = slots[-1]
        appended = None
        if encode_text(decode_as(last.content.body, alphabet) or "", alphabet) == (
            last.content.body
        ):
            appended = self._appended(last.requests[0].frame, last.pdu, last.content, footer)
        if appended is not None:
            units = [_Unit(s.requests[0].frame, [s]) for s in slots[:-1]]
            return [*units, _Unit(appended, [last])]
        return self._resegment(hold, slots, text, footer)

    def _resegment(
        self, hold: _Hold, slots: list[_Slot], text: str, footer: str
    ) -> list[_Unit] | None:
        """The whole text with the footer split again in the client's kind of concatenation,
        with one new reference."""
        first = slots[0]
        alphabet = first.content.alphabet
        try:
            result = apply_footer(
                text,
                alphabet,
                footer,
                hold.kind,
                max_parts=self.settings.max_parts,
                separator=self.settings.separator,
                extra_udh=first.content.udh,
            )
            if result is None:
                return None
            reference = self._reference(hold.subscriber.value, hold.kind)
            parts = frame_parts(
                result.parts, hold.kind, reference=reference, extra_udh=first.content.udh
            )
        except TextError:
            return None
        data_coding = _data_coding(first.pdu.data_coding, alphabet, result.alphabet)
        # Kannel marks every part but the last with more_messages_to_send: keep that true.
        marks_more = any(s.pdu.tlv(Tag.MORE_MESSAGES_TO_SEND) is not None for s in slots)
        last = len(parts) - 1
        units = []
        for i, part in enumerate(parts):
            # Part i is client part i's (its fields kept: Kannel asks a receipt for part 1
            # only); a part the gateway adds asks none; if the client sent more parts than
            # the new split needs, its surplus parts share the last part's answer.
            added = i >= len(slots)
            answers = slots[i:] if i == last else slots[i : i + 1]
            frame = _rebuild(
                slots[min(i, len(slots) - 1)].pdu,
                part,
                data_coding=data_coding,
                in_payload=first.content.in_payload,
                more=(i < last) if marks_more else None,
                registered_delivery=0 if added else None,
            )
            units.append(_Unit(frame, [] if added else list(answers)))
        return units

    def _send_unchanged(self, hold: _Hold, slots: list[_Slot]) -> None:
        for slot in slots:
            request = slot.requests[0]
            if len(slot.requests) == 1 and slot.own_id is None:
                request.forward()  # a plain relay: the SMSC's answer is the client's
            else:
                self._send_unit(request, _Unit(request.frame, [slot]), hold, None)

    def _send_unit(
        self,
        via: MtRequest,
        unit: _Unit,
        hold: _Hold | None,
        accepted: Callable[[], None] | None,
        campaign: Campaign | None = None,
    ) -> None:
        """Send ``unit`` upstream as the gateway's own request. Its response answers the client
        requests of its parts still waiting; the SMSC's id is mapped to the ids the client was
        given early, or to none for a part the gateway added; a refusal of a part the client
        was already told was accepted is reported to it by receipt."""
        if campaign is None and hold is not None:
            campaign = hold.campaign

        def done(response: p.Pdu | None, response_frame: bytes | None) -> None:
            for slot in unit.slots:
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
            early = [slot for slot in unit.slots if slot.own_id is not None]
            if status == CommandStatus.ESME_ROK:
                upstream_id = getattr(response, "message_id", None)
                if upstream_id and (early or not unit.slots):
                    ids = tuple(slot.own_id for slot in early if slot.own_id is not None)
                    self._keep_ids(
                        via,
                        MessageIds(
                            upstream_id=upstream_id, client_ids=ids, account=via.client.system_id
                        ),
                    )
                if accepted is not None:
                    accepted()
                return
            if early or not unit.slots:
                reason = "smsc refused" if status is not None else "no response"
                self._part_failed(via, unit, hold, campaign, status, reason)

        if not via.originate(unit.frame, done):
            done(None, None)

    def _part_failed(
        self,
        via: MtRequest,
        unit: _Unit,
        hold: _Hold | None,
        campaign: Campaign | None,
        status: int | None,
        reason: str,
    ) -> None:
        """A part the client had its answer for (or a part of the gateway's own) did not go:
        logged, counted, and reported to the client by receipt when it asked for one."""
        log.warning(
            logs.MT_PART_REFUSED,
            conn_id=via.client.conn_id,
            system_id=via.client.system_id,
            campaign=None if campaign is None else campaign.name,
            command_status=None if status is None else status_name(status),
            reason=reason,
            added=not unit.slots,
        )
        if self._metrics is not None:
            self._metrics.mt_parts_failed_total.labels(reason).inc()
        stat = "REJECTD" if status is not None else "UNDELIV"
        self._report_parts(via, unit.slots, hold, stat)

    def _report_parts(
        self, via: MtRequest, slots: list[_Slot], hold: _Hold | None, stat: str
    ) -> None:
        """Receipts of the gateway's own for parts answered early that will not be delivered:
        for each that asked for a receipt, or else for the part of the message that asked
        (Kannel asks on part 1 only), once."""
        early = [slot for slot in slots if slot.own_id is not None]
        targets = [slot for slot in early if slot.asks_receipt]
        if not targets and hold is not None:
            asking = [s for s in hold.ordered() if s.asks_receipt and s.own_id is not None]
            targets = asking[:1]
        for slot in targets:
            assert slot.own_id is not None
            self._report(via, slot.pdu, slot.own_id, stat)

    def _keep_ids(self, via: MtRequest, entry: MessageIds) -> None:
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
        for hold in self._holds.values():
            for slot in hold.slots.values():
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

    def _release(self, hold: _Hold, reason: str, *, remember: bool = True) -> None:
        """Send a held message on as it came (no footer) and answer every part of it."""
        self._remove(hold)
        if _client_gone(hold.first_request):
            self._gone(hold)
            return
        if remember:
            self._remember_released(hold.key)
        self._log_hold(hold, reason)
        slots = hold.ordered()
        # Time has passed since these parts were allowed: they go only if still allowed now.
        requests = [r for slot in slots for r in slot.requests]
        via = hold.first_request
        self._gate(
            requests,
            lambda: self._send_unchanged(hold, slots),
            lambda: self._report_parts(via, slots, hold, "REJECTD"),
        )

    def _gone(self, hold: _Hold) -> None:
        """The client's connection ended with parts held: nothing can carry them now. Parts it
        was told were accepted are reported undelivered (to another session of the account)."""
        self._log_hold(hold, "client_gone")
        self._report_parts(hold.first_request, hold.ordered(), hold, "UNDELIV")

    def _remember_released(self, key: Key) -> None:
        self._released[key] = self._now() + self.settings.hold_timeout_s
        self._released.move_to_end(key)
        while len(self._released) > self.settings.hold_max_messages:
            self._released.popitem(last=False)

    def _log_hold(self, hold: _Hold, reason: str) -> None:
        request = hold.first_request
        log.warning(
            logs.MT_HOLD_EXPIRED,
            conn_id=request.client.conn_id,
            system_id=request.client.system_id,
            campaign=hold.campaign.name,
            subscriber=mask_subscriber(hold.subscriber.value),
            segments=hold.total,
            received=len(hold.slots),
            reason=reason,
        )

    def expire(self, now: float | None = None) -> int:
        """Release the messages whose hold time is over; returns how many."""
        if now is None:
            now = self._now()
        expired = 0
        while self._holds:
            hold = next(iter(self._holds.values()))
            if hold.deadline > now:
                break
            self._release(hold, "timeout")
            expired += 1
        self._arm()
        return expired

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def _arm(self) -> None:
        """One timer for all holds, due at the oldest one's deadline."""
        if not self._holds:
            self.close()
            return
        deadline = next(iter(self._holds.values())).deadline
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


# --- helpers ----------------------------------------------------------------------------------


def _rewritable(pdu: Message, content: Content) -> bool:
    """True when the gateway may append to this message's text (else forward it untouched)."""
    if not content.alphabet.is_text or not content.body:
        return False
    if isinstance(pdu, p.DataSm) and not content.in_payload:
        return False
    if pdu.esm_class & EsmClass.MESSAGE_TYPE_MASK:
        return False  # an acknowledgement, not a message
    if isinstance(pdu, p.SubmitSm) and pdu.protocol_id in _SILENT_PROTOCOL_IDS:
        return False
    if pdu.esm_class & EsmClass.UDHI:
        if not content.udh.elements:
            return False  # a UDH we could not parse: its octets are not ours to shift
        if any(ie.iei in _PORT_IEIS for ie in content.udh.elements):
            return False  # addressed to an application port, not read by a person
    return True


def _may_instruct(text: str) -> bool:
    """False only when ``tells_how_to_opt_out`` cannot match: ASCII text (which its
    normalisation only lower-cases, spaces and trims) without any of its instruction verbs.
    Saves that normalisation on most messages."""
    return not text.isascii() or _INSTRUCTION_VERB.search(text.lower()) is not None


def _appendable(body: bytes, alphabet: Alphabet) -> bool:
    """True when octets appended to ``body`` cannot join a character it leaves unfinished."""
    if alphabet is Alphabet.GSM7:
        # An odd run of escapes at the end is a lone escape: it would swallow the separator.
        run = len(body) - len(body.rstrip(b"\x1b"))
        return run % 2 == 0
    if alphabet is Alphabet.UCS2:
        return len(body) % 2 == 0 and not 0xD8 <= body[-2] <= 0xDB  # no lone high surrogate
    return True


def _patch_short_message(frame: bytes, pdu: p.SubmitSm, short_message: bytes) -> bytes:
    """``frame`` with ``short_message`` (and sm_length, command_length) replaced in place, or a
    re-encoded PDU if the frame is not laid out as expected."""
    old = pdu.short_message
    end = len(frame) - sum(4 + len(t.value) for t in pdu.tlvs)
    start = end - len(old)
    if (
        start > 16
        and len(short_message) <= 0xFF
        and frame[start - 1] == len(old)
        and frame[start:end] == old
    ):
        out = bytearray(frame[: start - 1])
        out.append(len(short_message))
        out += short_message
        out += frame[end:]
        out[0:4] = len(out).to_bytes(4, "big")
        return bytes(out)
    return encode(dataclasses.replace(pdu, short_message=short_message))


def _concat_kind(content: Content) -> ConcatKind:
    concat = content.udh.concat
    if concat is not None and concat.total > 1:
        return CONCAT_8BIT if concat.ref_bits == 8 else CONCAT_16BIT
    return SAR


def _data_coding(data_coding: int, before: Alphabet, after: Alphabet) -> int:
    return data_coding if after is before else with_alphabet(data_coding, after)


def _rebuild(
    template: Message,
    part: Part,
    *,
    data_coding: int,
    in_payload: bool,
    more: bool | None = None,
    registered_delivery: int | None = None,
) -> bytes:
    """``template`` carrying ``part``: every other field and TLV kept, in wire order.

    ``more``: None keeps more_messages_to_send as it is; True / False sets / removes it.
    ``registered_delivery``: None keeps the template's.
    """
    if part.message_payload is not None:
        payload: bytes | None = part.message_payload
    else:
        payload = part.short_message if in_payload else None
    sar = dict(part.sar.to_tlvs()) if part.sar is not None else {}
    tlvs: list[p.Tlv] = []
    for tlv in template.tlvs:
        if tlv.tag == Tag.MESSAGE_PAYLOAD and payload is not None:
            tlvs.append(p.Tlv(tlv.tag, payload))
            payload = None
        elif tlv.tag in _SAR_TAGS:
            value = sar.pop(tlv.tag, None)
            if value is not None:
                tlvs.append(p.Tlv(tlv.tag, value))
        elif tlv.tag == Tag.MORE_MESSAGES_TO_SEND and more is not None:
            if more:
                tlvs.append(p.Tlv(tlv.tag, b"\x01"))
                more = None
        else:
            tlvs.append(tlv)
    tlvs.extend(p.Tlv(tag, value) for tag, value in sar.items())
    if more:
        tlvs.append(p.Tlv(Tag.MORE_MESSAGES_TO_SEND, b"\x01"))
    esm_class = template.esm_class & ~EsmClass.UDHI
    if part.udhi:
        esm_class |= EsmClass.UDHI
    receipts = template.registered_delivery if registered_delivery is None else registered_delivery
    if isinstance(template, p.SubmitSm):
        return encode(
            dataclasses.replace(
                template,
                esm_class=esm_class,
                data_coding=data_coding,
                short_message=b"" if in_payload else part.short_message,
                registered_delivery=receipts,
                tlvs=tuple(tlvs),
            )
        )
    return encode(
        dataclasses.replace(
            template,
            esm_class=esm_class,
            data_coding=data_coding,
            registered_delivery=receipts,
            tlvs=tuple(tlvs),
        )
    )


def _without_receipt(frame: bytes) -> bytes:
    """A part of the gateway's own asks for no receipt: the client never sent it."""
    pdu = decode(frame)
    assert isinstance(pdu, p.SubmitSm | p.DataSm)
    if not pdu.registered_delivery:
        return frame
    return encode(dataclasses.replace(pdu, registered_delivery=0))


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


def _hold_key(request: MtRequest, pdu: Message, content: Content, subscriber: SmsAddress) -> Key:
    """The parts of one message: same connection, source, destination, kind, reference, count."""
    part = content.part
    assert part is not None
    return (
        request.client.conn_id,
        pdu.source_addr,
        subscriber.value,
        _concat_kind(content).value,
        part.reference,
        part.total,
    )


def _client_gone(request: MtRequest) -> bool:
    return request.bridge.client_gone
