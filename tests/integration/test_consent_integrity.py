"""Consent integrity end to end: no MT to a number that said STOP or was blocked reaches the SMSC,
by any route a careless or hostile client might take.

- Parts of a long MT after a consent change (STOP, staff block through the CLI, API opt-out):
  refused, again and again, with any text and the same reference; held footer parts too; also
  when the later part goes through another gateway instance on the same Redis.
- Accounts: a campaign's numbers only for the accounts it names; account scope whatever the
  spelling of the system_id.
- MO sources read like MT destinations; names change nothing and are logged.
- Vendor requests refused; a failing hook answers its request instead of leaving it hanging.

The SMSC is the bundled simulator, the client smpplib (and a raw client on our codec for PDUs
the library cannot send), the store a SQLite file (Redis where two instances share it).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.consent.model import ConsentState
from gateway.proxy.hooks import MoRequest, MtRequest, PassThrough
from gateway.smpp import pdu as p
from gateway.store.base import StoreUnavailableError
from tests.admin.test_api import request as http
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    OPT_OUT_REPLY,
    SUBSCRIBER,
    UNGROUPED,
    RawEsme,
    SmpplibEsme,
    acme_campaigns,
    campaign,
    consent_gateway,
    consent_rig,
    run_cli,
    sent_to,
    simulator,
    to_toml,
    wait_texts,
)
from tests.support.gateway import running_gateway
from tests.support.redis_server import RedisServer

OPTED_OUT = 0x45
BLOCKED = 0x0B
NOT_ALLOWED = 0x0A
UDHI = 0x40
TOKEN = "integrity-token"
REPEATS = 20


def part_fields(kind: str, reference: int, total: int, seq: int, body: bytes) -> dict[str, Any]:
    """smpplib submit_sm fields for part ``seq`` of ``total`` in the given concatenation."""
    if kind == "udh8":
        udh = bytes([5, 0, 3, reference & 0xFF, total, seq])
        return {"short_message": udh + body, "esm_class": UDHI}
    if kind == "udh16":
        udh = bytes([6, 8, 4, reference >> 8, reference & 0xFF, total, seq])
        return {"short_message": udh + body, "esm_class": UDHI}
    return {
        "short_message": body,
        "sar_msg_ref_num": reference,
        "sar_total_segments": total,
        "sar_segment_seqnum": seq,
    }


async def assert_parts_refused(
    mt: Any, kind: str, reference: int, status: int, repeats: int = REPEATS
) -> None:
    """Later parts (and a "first" part) with the same reference and new text: each refused."""
    for i in range(repeats):
        later = part_fields(kind, reference, 2, 2, f"later text {i}".encode())
        assert await mt(**later) == status, (kind, i, "part 2/2")
        first = part_fields(kind, reference, 2, 1, f"first text {i}".encode())
        assert await mt(**first) == status, (kind, i, "part 1/2")


def cli_config(tmp_path: Path, store_url: str) -> Path:
    """A config file naming the rig's store, for the staff CLI."""
    path = tmp_path / "staff.toml"
    path.write_text(
        to_toml(
            {
                "upstream": {"address": "127.0.0.1:9"},
                "store": {"url": store_url},
                "campaigns": acme_campaigns(),
            }
        )
    )
    return path


class TestPartsAfterAConsentChange:
    @pytest.mark.parametrize("kind", ["udh8", "udh16", "sar"])
    async def test_stop_between_parts(self, tmp_path: Path, kind: str) -> None:
        """Part 1 goes before the STOP; no part with that reference goes after it, whatever
        its text, however often it is sent (the old 600 s part memory let them through)."""
        async with consent_rig(tmp_path) as rig:
            first = part_fields(kind, 0x4142, 2, 1, b"before the stop ")
            assert await rig.mt(**first) == 0
            assert await rig.mo("STOP") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 2)  # part 1 and the confirmation
            await assert_parts_refused(rig.mt, kind, 0x4142, OPTED_OUT)
            await rig.flows()
            assert len(sent_to(rig.sim, SUBSCRIBER)) == 2

    async def test_staff_block_through_the_cli_between_parts(self, tmp_path: Path) -> None:
        """A block made by staff in another process refuses the parts after it (0x0B)."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mt(**part_fields("udh8", 7, 2, 1, b"one ")) == 0
            code, _out, err = await run_cli(
                "consent", "block", "--config", str(cli_config(tmp_path, rig.store_url)),
                SUBSCRIBER, "--reason", "abuse",
            )  # fmt: skip
            assert code == 0, err
            await assert_parts_refused(rig.mt, "udh8", 7, BLOCKED)
            await rig.flows()
            assert len(sent_to(rig.sim, SUBSCRIBER)) == 1

    async def test_api_opt_out_between_parts(self, tmp_path: Path) -> None:
        """An opt-out through the admin API refuses the parts after it."""
        admin = {"listen": "127.0.0.1:0", "token": TOKEN}
        async with consent_rig(tmp_path, admin=admin) as rig:
            assert rig.gw.admin is not None
            assert await rig.mt(**part_fields("udh8", 9, 2, 1, b"one ")) == 0
            status, body = await http(
                rig.gw.admin.port,
                "POST",
                f"/v1/consent/{SUBSCRIBER}",
                {"action": "opt_out", "reason": "called support"},
                token=TOKEN,
            )
            assert status == 201, body
            await assert_parts_refused(rig.mt, "udh8", 9, OPTED_OUT)
            await rig.flows()
            assert len(sent_to(rig.sim, SUBSCRIBER)) == 1

    async def test_refused_message_stays_refused_to_its_end(self, tmp_path: Path) -> None:
        """All parts of one message get one answer: after a refused part 1, part 2 is refused
        even if the subscriber opted back in meanwhile; the next message with the same
        reference (the first one complete) is decided afresh and goes."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 1)
            assert await rig.mt(**part_fields("udh8", 3, 2, 1, b"one ")) == OPTED_OUT
            assert await rig.mo("START") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 2)
            assert await rig.mt(**part_fields("udh8", 3, 2, 2, b"two")) == OPTED_OUT
            assert await rig.mt(**part_fields("udh8", 3, 2, 1, b"new one ")) == 0
            assert await rig.mt(**part_fields("udh8", 3, 2, 2, b"new two")) == 0
            assert len(sent_to(rig.sim, SUBSCRIBER)) == 4  # 2 replies, 2 new parts

    async def test_footer_parts_held_before_a_stop_never_go(self, tmp_path: Path) -> None:
        """Part 1, held by the footer stage and answered at once, then a STOP: part 2 is
        refused, part 1 never reaches the SMSC, and the client gets a stat:REJECTD receipt
        for the id it was given for part 1."""
        campaigns = acme_campaigns(footer="always")
        async with (
            consent_rig(tmp_path, campaigns=campaigns) as rig,
            RawEsme.bound(rig.gw.port) as raw,
        ):
            first = await raw.request(raw_part(5, 2, 1, b"held part "))
            assert isinstance(first, p.SubmitSmResp)
            assert first.command_status == 0  # at once, with an id of the gateway's own
            assert await rig.mo("STOP") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 1)  # the confirmation
            later = await raw.request(raw_part(5, 2, 2, b"second part"))
            assert later.command_status == OPTED_OUT
            await assert_rejected_receipt(rig, first.message_id)
            await rig.flows()
            assert [m.text for m in sent_to(rig.sim, SUBSCRIBER)] == [OPT_OUT_REPLY]

    async def test_footer_parts_released_after_a_stop_are_refused(self, tmp_path: Path) -> None:
        """A held part whose message never completes is not sent on at its hold timeout when
        the subscriber opted out meanwhile: a stat:REJECTD receipt tells the client."""
        campaigns = acme_campaigns(footer="always")
        async with (
            consent_rig(tmp_path, campaigns=campaigns, text={"hold_timeout_s": 1}) as rig,
            RawEsme.bound(rig.gw.port) as raw,
        ):
            first = await raw.request(raw_part(6, 3, 1, b"held part "))
            assert isinstance(first, p.SubmitSmResp)
            assert first.command_status == 0
            assert await rig.mo("STOP") == 0
            await assert_rejected_receipt(rig, first.message_id)  # at the hold timeout
            await rig.flows()
            assert [m.text for m in sent_to(rig.sim, SUBSCRIBER)] == [OPT_OUT_REPLY]


async def assert_rejected_receipt(rig: Any, message_id: str | None) -> None:
    """The client's receiving session got exactly one receipt, stat:REJECTD for ``message_id``."""
    await rig.esme.wait_until(lambda: len(rig.esme.receipts()) >= 1)
    (receipt,) = rig.esme.receipts()
    assert bytes(receipt.receipted_message_id).rstrip(b"\0").decode() == message_id
    assert b"stat:REJECTD" in bytes(receipt.short_message)


def raw_part(reference: int, total: int, seq: int, body: bytes) -> p.SubmitSm:
    """Part ``seq`` of ``total`` (8-bit reference UDH) from NUMBER_1 to SUBSCRIBER, asking
    for a receipt."""
    return p.SubmitSm(
        source_addr_ton=1,
        source_addr=NUMBER_1,
        dest_addr_ton=1,
        destination_addr=SUBSCRIBER,
        esm_class=UDHI,
        registered_delivery=1,
        short_message=bytes([5, 0, 3, reference, total, seq]) + body,
    )


@pytest.mark.redis
class TestPartsAcrossInstances:
    async def test_stop_on_one_instance_refuses_the_part_on_the_other(
        self, redis_server: RedisServer
    ) -> None:
        """Part 1 through gateway B, STOP through gateway A, part 2 through B: refused."""
        url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        async with (
            simulator() as sim,
            consent_gateway(sim.port, url, campaigns=acme_campaigns(), instance="gw-a") as a,
            consent_gateway(sim.port, url, campaigns=acme_campaigns(), instance="gw-b") as b,
            SmpplibEsme(a.port, "acme"),
            SmpplibEsme(b.port, "acme", bind="transmitter") as via_b,
        ):
            first = part_fields("udh8", 0x33, 2, 1, b"part one ")
            assert await via_b.submit(SUBSCRIBER, source=NUMBER_1, **first) == 0
            assert await sim.send_mo(source=SUBSCRIBER, destination=NUMBER_1, text="STOP") == 0
            assert b.store is not None
            # Every change acknowledged anywhere before this has reached B's cache.
            await b.store.sync()  # type: ignore[attr-defined]
            for i in range(REPEATS):
                later = part_fields("udh8", 0x33, 2, 2, f"part two {i}".encode())
                assert await via_b.submit(SUBSCRIBER, source=NUMBER_1, **later) == OPTED_OUT
            assert len(sent_to(sim, SUBSCRIBER)) == 2  # part 1 and the confirmation


class TestAccounts:
    async def test_campaign_numbers_belong_to_their_accounts(self, tmp_path: Path) -> None:
        """A client bound as another account may not send from a campaign's numbers (0x0A);
        the campaign's own account may, however it spells its system_id."""
        campaigns = [campaign("acme", ["+" + NUMBER_1], accounts=["acme"])]
        async with (
            consent_rig(tmp_path, campaigns=campaigns) as rig,
            SmpplibEsme(rig.gw.port, "intruder", bind="transmitter") as intruder,
            SmpplibEsme(rig.gw.port, "ACME ", bind="transmitter") as spelled,
        ):
            assert await intruder.submit(BYSTANDER, source=NUMBER_1) == NOT_ALLOWED
            assert await intruder.submit(BYSTANDER, source=UNGROUPED) == 0
            assert await spelled.submit(BYSTANDER, source=NUMBER_1) == 0
            assert await rig.mt(BYSTANDER) == 0
            assert len(sent_to(rig.sim, BYSTANDER)) == 3

    async def test_account_scope_follows_the_account_not_its_spelling(self, tmp_path: Path) -> None:
        """STOPALL through the session of 'acme' stops MTs of a client bound as 'ACME' or
        'acme ' (the same account to an SMSC that compares case-insensitively)."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOPALL") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 1)
            for spelling in ("ACME", "acme ", "Acme"):
                async with SmpplibEsme(rig.gw.port, spelling, bind="transmitter") as other:
                    assert await other.submit(SUBSCRIBER, source=UNGROUPED) == OPTED_OUT
            assert len(sent_to(rig.sim, SUBSCRIBER)) == 1

    async def test_staff_account_opt_out_uses_the_same_key(self, tmp_path: Path) -> None:
        """``consent opt-out --account ACME`` reaches the client bound as 'acme'."""
        async with consent_rig(tmp_path) as rig:
            code, out, err = await run_cli(
                "consent", "opt-out", "--config", str(cli_config(tmp_path, rig.store_url)),
                SUBSCRIBER, "--account", "ACME", "--json",
            )  # fmt: skip
            assert code == 0, err
            assert '"scope": "account:acme"' in out
            assert await rig.mt(source=UNGROUPED) == OPTED_OUT


class TestMoSources:
    async def test_stop_from_a_number_with_a_junk_zero_is_the_subscriber(
        self, tmp_path: Path
    ) -> None:
        """A STOP from '015554440009' is stored under 15554440009, which MTs are checked
        against in every form."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", source="015554440009", source_addr_ton=0) == 0
            assert rig.gw.store is not None
            records = await rig.gw.store.current("15554440009")
            assert [r.state for r in records.values()] == [ConsentState.OPTED_OUT]
            assert await rig.mt("15554440009") == OPTED_OUT
            assert await rig.mt("+1 555 444 0009", dest_addr_ton=0) == OPTED_OUT

    async def test_stop_from_digits_labelled_alphanumeric_counts(self, tmp_path: Path) -> None:
        """A STOP from a digits-only TON 5 source is that subscriber's: recorded, enforced,
        and (a name by its label) sent no confirmation."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", source="15554440009", source_addr_ton=5) == 0
            assert await rig.mt("15554440009") == OPTED_OUT
            await rig.flows()
            assert sent_to(rig.sim, "15554440009") == []

    async def test_stop_from_a_name_changes_nothing_and_is_logged(self, tmp_path: Path) -> None:
        """A true alphanumeric source never changes consent; the MO is forwarded and logged."""
        async with consent_rig(tmp_path) as rig:
            with capture_logs() as logs:
                assert await rig.mo("STOP", source="ACMEBANK", source_addr_ton=5) == 0
            ignored = [e for e in logs if e["event"] == "mo_sender_ignored"]
            assert [e["address_kind"] for e in ignored] == ["alphanumeric"]
            await rig.esme.wait_until(lambda: len(rig.esme.mo_texts()) == 1)
            assert await rig.mt() == 0


class TestOtherRoutes:
    async def test_client_vendor_request_is_refused(self, tmp_path: Path) -> None:
        """A vendor-range request from a client (it may carry a message the gateway cannot
        read) gets generic_nack ESME_RINVCMDID and never reaches the SMSC."""
        async with consent_rig(tmp_path) as rig, RawEsme.bound(rig.gw.port) as raw:
            resp = await raw.request(p.RawPdu(command_id=0x00010200, body=b"\x01\x02"))
            assert isinstance(resp, p.GenericNack)
            assert resp.command_status == 0x03
            await raw.barrier()
            assert 0x00010200 not in [r.pdu.command_id for r in rig.sim.requests]

    async def test_failing_hook_answers_with_a_temporary_status(self) -> None:
        """A hook task that fails leaves no request unanswered: the client gets ESME_RSYSERR."""

        class Failing(PassThrough):
            def on_mt(self, request: MtRequest) -> None:
                request.spawn(self._fail())

            def on_mo(self, request: MoRequest) -> None:
                request.forward()

            async def _fail(self) -> None:
                raise RuntimeError("a bug in a hook")

        async with (
            simulator() as sim,
            running_gateway(sim.port, interceptor_factory=lambda _c: Failing()) as gw,
            RawEsme.bound(gw.port) as raw,
        ):
            with capture_logs() as logs:
                resp = await raw.request(p.SubmitSm(destination_addr=SUBSCRIBER))
            assert resp.command_status == 0x08
            assert any(e["event"] == "connection_failed" for e in logs)
            assert sim.messages == []


class _StoredThenFailed:
    """A store whose first append lands and is then reported failed: what the SQLite store
    does when its file vanishes between COMMIT and the check after it (a race no test can
    time on a real file)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failed = False

    async def append(self, event: Any) -> bool:
        added: bool = await self._inner.append(event)
        if not self.failed:
            self.failed = True
            raise StoreUnavailableError("store file vanished after the commit")
        return added

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TestStopStoredButReportedFailed:
    async def test_retry_of_a_stop_that_landed_still_gets_its_confirmation(
        self, tmp_path: Path
    ) -> None:
        """The SMSC's retry of a STOP whose first attempt was stored but reported failed is a
        duplicate, yet it gets the one confirmation the first attempt never sent."""
        async with consent_rig(tmp_path) as rig:
            assert rig.gw.enforcer is not None
            flaky = _StoredThenFailed(rig.gw.enforcer.mo.store)
            rig.gw.enforcer.mo.store = flaky  # type: ignore[assignment]
            assert await rig.mo("STOP") == 0x64  # temporary: the SMSC delivers it again
            assert flaky.failed
            assert await rig.mo("STOP") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert [m.text for m in sent_to(rig.sim, SUBSCRIBER)] == [OPT_OUT_REPLY]
