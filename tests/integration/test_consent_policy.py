"""Unknown-number policies, staff blocks through the CLI, submit_multi, accept-and-report and
configurable statuses, end to end through the gateway (simulator SMSC, smpplib, SQLite)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.consent.model import ConsentState
from gateway.smpp import pdu as p
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    OPT_IN_REPLY,
    OPT_IN_REQUEST,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SUBSCRIBER,
    RawEsme,
    Rig,
    acme_campaigns,
    consent_rig,
    consent_show,
    run_cli,
    sent_to,
    texts_to,
    to_toml,
    wait_texts,
)

OPTED_OUT = 0x45
BLOCKED = 0x0B
PENDING = 0x65
NO_CONSENT = 0x66
RECEIPT = re.compile(r"id:(?P<id>\S+) sub:001 dlvrd:000 .* stat:REJECTD err:000 text:")


async def states(rig: Rig, subscriber: str = SUBSCRIBER) -> dict[str, ConsentState]:
    assert rig.gw.store is not None
    return {k: r.state for k, r in (await rig.gw.store.current(subscriber)).items()}


class TestOutboundUnknown:
    async def test_allow(self, tmp_path: Path) -> None:
        """outbound_unknown = allow (the default): an MT to an unknown number goes through."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(outbound_unknown="allow")) as rig:
            assert await rig.mt() == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == ["hello"]
            assert await states(rig) == {}

    async def test_require_opt_in(self, tmp_path: Path) -> None:
        """require_opt_in: the first MT is refused pending and the opt-in request goes out once;
        MTs stay refused until YES comes back, which is confirmed and lets them through."""
        campaigns = acme_campaigns(outbound_unknown="require_opt_in")
        async with consent_rig(tmp_path, campaigns=campaigns) as rig:
            assert await rig.mt(text="offer 1") == PENDING
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_IN_REQUEST]
            (request,) = sent_to(rig.sim, SUBSCRIBER)
            assert isinstance(request.pdu, p.SubmitSm)
            assert request.pdu.source_addr == NUMBER_1  # asked from the campaign's number
            assert await rig.mt(text="offer 2") == PENDING
            assert await rig.mo("YES") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [OPT_IN_REQUEST, OPT_IN_REPLY]
            assert await rig.mt(text="offer 3") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                OPT_IN_REQUEST,
                OPT_IN_REPLY,
                "offer 3",
            ]

    async def test_require_opt_in_then_stop(self, tmp_path: Path) -> None:
        """A STOP in answer to the opt-in request opts out: refused 0x45 from then on."""
        campaigns = acme_campaigns(outbound_unknown="require_opt_in")
        async with consent_rig(tmp_path, campaigns=campaigns) as rig:
            assert await rig.mt() == PENDING
            assert await rig.mo("STOP") == 0
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_IN_REQUEST, OPT_OUT_REPLY]

    async def test_block_until_the_subscriber_writes(self, tmp_path: Path) -> None:
        """outbound_unknown = block: refused 0x66, no request sent, until the subscriber writes
        first; then MTs go through."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(outbound_unknown="block")) as rig:
            assert await rig.mt(text="cold call") == NO_CONSENT
            assert await rig.mo("hi, is the shop open today") == 0
            assert await rig.mt(text="yes until 6") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == ["yes until 6"]
            assert await states(rig) == {"campaign:acme": ConsentState.OPTED_IN}


class TestInboundUnknown:
    async def test_request_opt_in(self, tmp_path: Path) -> None:
        """inbound_unknown = request_opt_in: a first message from an unknown number is forwarded
        and answered with the opt-in request once; YES then opts in."""
        campaigns = acme_campaigns(inbound_unknown="request_opt_in", outbound_unknown="block")
        async with consent_rig(tmp_path, campaigns=campaigns) as rig:
            assert await rig.mo("hello?") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_IN_REQUEST]
            assert await states(rig) == {"campaign:acme": ConsentState.PENDING}
            assert await rig.mt() == PENDING
            assert await rig.mo("hello again") == 0  # pending: no second request
            assert await rig.mo("yes") == 0
            assert await rig.mt(text="thanks") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                OPT_IN_REQUEST,
                OPT_IN_REPLY,
                "thanks",
            ]
            assert rig.esme.mo_texts() == [b"hello?", b"hello again", b"yes"]


def cli_config(tmp_path: Path, rig: Rig) -> Path:
    """A config file naming the running gateway's store, for the staff CLI."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        to_toml(
            {
                "gateway": {"instance": "test-gw"},
                "upstream": {"address": f"127.0.0.1:{rig.sim.port}"},
                "store": {"url": rig.store_url},
                "campaigns": acme_campaigns(),
            }
        )
    )
    return path


class TestStaffBlock:
    async def test_block_and_unblock_through_the_cli(self, tmp_path: Path) -> None:
        """A CLI block on the running gateway's SQLite file applies at once: MT refused 0x0B, MOs
        acknowledged but not forwarded nor answered; unblock leaves the number opted out."""
        async with consent_rig(tmp_path) as rig:
            config = cli_config(tmp_path, rig)
            assert await rig.mt(text="before") == 0  # cached as allowed in the gateway
            code, out, err = await run_cli(
                "consent", "block", "--config", str(config), "+1 555 123 4567", "--reason", "abuse"
            )
            assert code == 0, err
            assert "blocked" in out
            assert await rig.mt(text="after") == BLOCKED
            assert await rig.mo("STOP") == 0
            assert await rig.mo("HELP") == 0
            assert await rig.mo("START") == 0
            assert await rig.mt(text="still blocked") == BLOCKED
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["before"]
            assert rig.esme.mo_texts() == []

            code, _, err = await run_cli("consent", "unblock", "--config", str(config), SUBSCRIBER)
            assert code == 0, err
            assert (await consent_show(config, SUBSCRIBER))["state"] == "opted_out"
            assert await rig.mt(text="after unblock") == OPTED_OUT
            assert await rig.mo("START") == 0
            assert await rig.mt(text="opted in again") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                "before",
                OPT_IN_REPLY,
                "opted in again",
            ]

    async def test_cli_opt_out_applies_at_once(self, tmp_path: Path) -> None:
        """A staff opt-out through the CLI refuses the running gateway's next MT with 0x45."""
        async with consent_rig(tmp_path) as rig:
            config = cli_config(tmp_path, rig)
            assert await rig.mt() == 0
            code, _, err = await run_cli("consent", "opt-out", "--config", str(config), SUBSCRIBER)
            assert code == 0, err
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["hello"]


class TestSubmitMulti:
    async def test_opted_out_destination_is_listed_unsuccessful(self, tmp_path: Path) -> None:
        """submit_multi: the opted-out destination is in unsuccess_sme with 0x45, the others
        are forwarded in one submit_multi."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            dests = tuple(
                p.SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr=n)
                for n in (OTHER_SUBSCRIBER, SUBSCRIBER, BYSTANDER)
            )
            async with RawEsme.bound(rig.gw.port) as raw:
                resp = await raw.request(
                    p.SubmitMulti(
                        source_addr_ton=1,
                        source_addr_npi=1,
                        source_addr=NUMBER_1,
                        dest_addresses=dests,
                        short_message=b"to three",
                    )
                )
                assert isinstance(resp, p.SubmitMultiResp)
                assert resp.command_status == 0
                assert resp.message_id
                assert [(u.destination_addr, u.error_status_code) for u in resp.unsuccess_smes] == [
                    (SUBSCRIBER, OPTED_OUT)
                ]
                messages = await rig.sim.wait_for(
                    lambda msgs: any(m.command == "submit_multi" for m in msgs)
                )
            (multi,) = [m for m in messages if m.command == "submit_multi"]
            assert isinstance(multi.pdu, p.SubmitMulti)
            assert [d.destination_addr for d in multi.pdu.dest_addresses] == [  # type: ignore[union-attr]
                OTHER_SUBSCRIBER,
                BYSTANDER,
            ]
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]

    async def test_every_destination_refused(self, tmp_path: Path) -> None:
        """A submit_multi whose every destination is opted out is answered without the SMSC."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("STOP", source=OTHER_SUBSCRIBER) == 0
            dests = tuple(
                p.SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr=n)
                for n in (SUBSCRIBER, OTHER_SUBSCRIBER)
            )
            async with RawEsme.bound(rig.gw.port) as raw:
                resp = await raw.request(
                    p.SubmitMulti(source_addr=NUMBER_1, dest_addresses=dests, short_message=b"x")
                )
            assert isinstance(resp, p.SubmitMultiResp)
            assert resp.command_status == OPTED_OUT
            assert {u.error_status_code for u in resp.unsuccess_smes} == {OPTED_OUT}
            await rig.flows()
            assert not any(m.command == "submit_multi" for m in rig.sim.messages)


class TestAcceptAndReport:
    async def test_refusal_is_answered_ok_and_reported_rejected(self, tmp_path: Path) -> None:
        """accept_and_report: the refused MT gets OK with a message id, then a receipt
        stat:REJECTD for that id; nothing reaches the SMSC."""
        consent: dict[str, Any] = {"accounts": {"acme": {"accept_and_report": True}}}
        async with consent_rig(tmp_path, consent=consent) as rig:
            assert await rig.mo("STOP") == 0
            resp = await rig.esme.request(
                "submit_sm",
                source_addr=NUMBER_1,
                source_addr_ton=1,
                destination_addr=SUBSCRIBER,
                dest_addr_ton=1,
                short_message=b"offer",
                registered_delivery=1,
            )
            assert (resp.command, resp.status) == ("submit_sm_resp", 0)
            message_id = resp.message_id.decode()
            assert message_id
            await rig.esme.wait_until(lambda: len(rig.esme.receipts()) == 1)
            (receipt,) = rig.esme.receipts()
            found = RECEIPT.fullmatch(bytes(receipt.short_message).decode())
            assert found is not None
            assert found["id"] == message_id
            assert receipt.receipted_message_id.decode() == message_id
            assert receipt.message_state == 8  # REJECTED
            assert bytes(receipt.source_addr).decode() == SUBSCRIBER
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]


class TestStatuses:
    async def test_configured_statuses_are_used(self, tmp_path: Path) -> None:
        """[consent.statuses] overrides the command_status of each refusal reason."""
        consent = {"statuses": {"opted_out": 0x40A, "blocked": 0x40B}}
        async with consent_rig(tmp_path, consent=consent) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mt() == 0x40A
            config = cli_config(tmp_path, rig)
            code, _, err = await run_cli("consent", "block", "--config", str(config), SUBSCRIBER)
            assert code == 0, err
            assert await rig.mt() == 0x40B

    @pytest.mark.parametrize(
        ("reason", "value"),
        [("opted_out", 0x08), ("blocked", 0x14), ("pending", 0x58), ("no_consent", 0x64)],
    )
    async def test_check_config_refuses_retried_statuses(
        self, tmp_path: Path, reason: str, value: int
    ) -> None:
        """check-config refuses a status clients retry (0x08, 0x14, 0x58, 0x64) for a consent
        reason, naming the key."""
        config = tmp_path / "gateway.toml"
        config.write_text(
            to_toml(
                {
                    "upstream": {"address": "127.0.0.1:2775"},
                    "store": {"url": f"sqlite:{tmp_path}/c.db"},
                    "consent": {"statuses": {reason: value}},
                }
            )
        )
        code, out, err = await run_cli("check-config", "--config", str(config))
        assert code != 0
        assert f"consent.statuses.{reason}" in out + err
        assert "retried" in out + err

    async def test_check_config_accepts_permanent_statuses(self, tmp_path: Path) -> None:
        """check-config accepts vendor-range consent statuses and a temporary store status."""
        config = tmp_path / "gateway.toml"
        config.write_text(
            to_toml(
                {
                    "upstream": {"address": "127.0.0.1:2775"},
                    "store": {"url": f"sqlite:{tmp_path}/c.db"},
                    "consent": {"statuses": {"opted_out": 0x40A, "store_unavailable": 0x58}},
                }
            )
        )
        code, out, err = await run_cli("check-config", "--config", str(config))
        assert code == 0, out + err
