"""Fail closed on addresses, through a running gateway: every form of an opted-out or a blocked
number is refused, as that subscriber or as unreadable, over submit_sm, data_sm and every
destination of submit_multi, and nothing for it reaches the SMSC; ordinary forms of an allowed
number still go through.

One simulator and one gateway (on a SQLite file) run on their own loop in a thread for the whole
module, so Hypothesis can send each generated form through them. The unreadable-address status
is set apart from the consent statuses here, so each answer says which way it was refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent.model import Actor, ConsentEvent, ConsentState
from gateway.consent.policy import block
from gateway.smpp import pdu as p
from tests.support.addresses import number_forms, ordinary_forms
from tests.support.consent import BYSTANDER, NUMBER_1, acme_campaigns
from tests.support.threaded import BlockingEsme, ThreadedRig

OPTED_OUT_NUMBER = "15552220000"
BLOCKED_NUMBER = "15553330000"
ALLOWED_NUMBER = "15554440000"
OPTED_OUT = 0x45
BLOCKED = 0x0B
UNREADABLE = 0x33  # configured below, so "refused as unreadable" is told from "recognised"

EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedRig]:
    tmp = tmp_path_factory.mktemp("addresses")
    with ThreadedRig(
        tmp,
        campaigns=acme_campaigns(),
        consent={"statuses": {"unreadable_address": UNREADABLE}},
    ) as running:
        gw = running.gw
        assert gw is not None
        store = gw.store
        assert store is not None
        opt_out = ConsentEvent(
            event_id=uuid.uuid4().hex,
            at=time.time(),
            subscriber=OPTED_OUT_NUMBER,
            scope="global:*",
            state=ConsentState.OPTED_OUT,
            actor=Actor.ADMIN,
        )
        staff_block = block(
            subscriber=BLOCKED_NUMBER, now=time.time(), event_id=uuid.uuid4().hex, actor=Actor.ADMIN
        )
        running.call(store.append(opt_out))
        running.call(store.append(staff_block))
        yield running


@pytest.fixture(scope="module")
def esme(rig: ThreadedRig) -> Iterator[BlockingEsme]:
    client = BlockingEsme(rig.port)
    try:
        yield client
    finally:
        client.close()


def _submit(destination: str, ton: int) -> p.SubmitSm:
    return p.SubmitSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=NUMBER_1,
        dest_addr_ton=ton,
        dest_addr_npi=1,
        destination_addr=destination,
        short_message=b"hello",
    )


def _data(destination: str, ton: int) -> p.DataSm:
    return p.DataSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=NUMBER_1,
        dest_addr_ton=ton,
        dest_addr_npi=1,
        destination_addr=destination,
        tlvs=(p.Tlv(0x0424, b"hello"),),
    )


def _multi(destination: str, ton: int) -> p.SubmitMulti:
    return p.SubmitMulti(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=NUMBER_1,
        dest_addresses=(
            p.SmeAddress(dest_addr_ton=ton, dest_addr_npi=1, destination_addr=destination),
            p.SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr=BYSTANDER),
        ),
        short_message=b"hello",
    )


def _new_destinations(rig: ThreadedRig, before: int) -> list[str]:
    """The destination_addr of everything the SMSC received since message ``before``."""
    found: list[str] = []
    for message in rig.messages()[before:]:
        pdu = message.pdu
        if isinstance(pdu, p.SubmitMulti):
            found += [d.destination_addr for d in pdu.dest_addresses if isinstance(d, p.SmeAddress)]
        elif isinstance(pdu, p.SubmitSm | p.DataSm):
            found.append(pdu.destination_addr)
    return found


def assert_refused_everywhere(
    rig: ThreadedRig, esme: BlockingEsme, address: str, ton: int, recognised: int
) -> None:
    """submit_sm, data_sm and the submit_multi destination are all refused, with ``recognised``
    or the unreadable status, and only the bystander of the submit_multi reaches the SMSC."""
    before = len(rig.messages())
    refusals = {recognised, UNREADABLE}
    single = esme.request(_submit(address, ton))
    assert single.command_status in refusals, (address, ton, single)
    data = esme.request(_data(address, ton))
    assert data.command_status in refusals, (address, ton, data)
    multi = esme.request(_multi(address, ton))
    assert isinstance(multi, p.SubmitMultiResp)
    assert multi.command_status == 0, multi
    (unsuccess,) = multi.unsuccess_smes
    assert unsuccess.destination_addr == address
    assert unsuccess.error_status_code in refusals
    assert _new_destinations(rig, before) == [BYSTANDER]


class TestEveryFormIsRefused:
    @EXAMPLES
    @given(form=number_forms(OPTED_OUT_NUMBER))
    def test_opted_out_number(
        self, rig: ThreadedRig, esme: BlockingEsme, form: tuple[str, int]
    ) -> None:
        """Any form of an opted-out number is refused as that subscriber (0x45) or as an
        unreadable address, in every MT PDU, and never reaches the SMSC."""
        assert_refused_everywhere(rig, esme, *form, recognised=OPTED_OUT)

    @EXAMPLES
    @given(form=number_forms(BLOCKED_NUMBER))
    def test_blocked_number(
        self, rig: ThreadedRig, esme: BlockingEsme, form: tuple[str, int]
    ) -> None:
        """Any form of a blocked number is refused as that subscriber (0x0B) or as an
        unreadable address, and never reaches the SMSC."""
        assert_refused_everywhere(rig, esme, *form, recognised=BLOCKED)

    @pytest.mark.parametrize(
        "address",
        [
            "015552220000",
            "00015552220000",
            "+015552220000",
            "++15552220000",
            "tel:+15552220000",
            "15552220000#",
            "15552220000;",
            "15552220000/",
            "*15552220000",
            "1555\n2220000",
            "1555\u00a02220000",
            "1555\xe2\x80\x8b2220000",  # a zero-width space, as UTF-8 octets
            "\xef\xbc\x91\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x92\xef\xbc\x92\xef\xbc\x92"
            "\xef\xbc\x90\xef\xbc\x90\xef\xbc\x90\xef\xbc\x90",  # fullwidth digits, UTF-8
        ],
        ids=repr,
    )
    @pytest.mark.parametrize("ton", [0, 1, 5], ids=lambda t: f"ton{t}")
    def test_forms_that_once_passed(
        self, rig: ThreadedRig, esme: BlockingEsme, address: str, ton: int
    ) -> None:
        """The forms that reached the SMSC after an opt-out before addresses failed closed."""
        assert_refused_everywhere(rig, esme, address, ton, recognised=OPTED_OUT)

    def test_distribution_list_is_refused(self, rig: ThreadedRig, esme: BlockingEsme) -> None:
        """A submit_multi distribution list is refused: the gateway cannot see its members."""
        before = len(rig.messages())
        resp = esme.request(
            p.SubmitMulti(
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=NUMBER_1,
                dest_addresses=(p.DistributionList(dl_name="everyone"),),
                short_message=b"hello",
            )
        )
        assert isinstance(resp, p.SubmitMultiResp)
        assert resp.command_status == UNREADABLE
        assert [u.destination_addr for u in resp.unsuccess_smes] == ["everyone"]
        assert _new_destinations(rig, before) == []

    def test_alphanumeric_destination_is_refused(
        self, rig: ThreadedRig, esme: BlockingEsme
    ) -> None:
        """An MT to a name is refused: nobody receives messages at a name."""
        before = len(rig.messages())
        assert esme.request(_submit("ACME", 5)).command_status == UNREADABLE
        assert _new_destinations(rig, before) == []


class TestOrdinaryFormsGoThrough:
    @settings(EXAMPLES, max_examples=60)
    @given(form=ordinary_forms(ALLOWED_NUMBER), pdu=st.sampled_from(["submit_sm", "data_sm"]))
    def test_allowed_number(
        self, rig: ThreadedRig, esme: BlockingEsme, form: tuple[str, int], pdu: str
    ) -> None:
        """'+1 555 ...', international, national and grouped forms of an allowed number reach
        the SMSC as the client wrote them."""
        address, ton = form
        before = len(rig.messages())
        build = _submit if pdu == "submit_sm" else _data
        assert esme.request(build(address, ton)).command_status == 0
        assert _new_destinations(rig, before) == [address]
