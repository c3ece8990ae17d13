"""Replies in the keyword's language, end to end: ARRET and AIDE in French, STOP in English.

The SMSC is the bundled simulator, the client application smpplib, the store a SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from gateway.consent.model import ConsentState
from gateway.smpp import pdu as p
from tests.support.consent import (
    NUMBER_1,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SUBSCRIBER,
    acme_campaigns,
    consent_rig,
    sent_to,
    wait_texts,
)

OPTED_OUT = 0x45
CONTACT = "1-800-555-0100"
FRENCH_OPT_OUT = (
    "ACME: Vous avez été désabonné et ne recevrez plus de messages."
    " Répondez DEBUT pour vous réabonner."
)
FRENCH_HELP = (
    "ACME: Aide: 1-800-555-0100. Fréquence variable. Des frais de messagerie et de données"
    " peuvent s'appliquer. Répondez ARRET pour annuler."
)
CUSTOM_FRENCH_HELP = "ACME: aide au {contact}. Fréquence variable. Répondez ARRET."


def campaigns(**replies: object) -> list[dict[str, object]]:
    return acme_campaigns(keywords={"languages": ["fr"]}, replies={"contact": CONTACT, **replies})


class TestFrench:
    async def test_arret_gets_the_french_confirmation_and_is_an_opt_out(
        self, tmp_path: Path
    ) -> None:
        """ARRET: the French confirmation, in GSM 7-bit, one part; the subscriber is opted out
        and the next MT to them is refused."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            assert await rig.mo("ARRET") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [FRENCH_OPT_OUT]
            reply = sent_to(rig.sim, SUBSCRIBER)[0].pdu
            assert isinstance(reply, p.SubmitSm)
            assert (reply.data_coding, reply.esm_class & 0x40) == (0, 0)
            assert rig.gw.store is not None
            states = {k: r.state for k, r in (await rig.gw.store.current(SUBSCRIBER)).items()}
            assert states == {"campaign:acme": ConsentState.OPTED_OUT}
            history = await rig.gw.store.history(SUBSCRIBER)
            assert [e.words for e in history] == ["ARRET"]
            assert await rig.mt() == OPTED_OUT

    async def test_aide_gets_the_french_help_and_stop_stays_english(self, tmp_path: Path) -> None:
        """AIDE gets the French help with the contact; STOP from another subscriber gets the
        English confirmation; the MOs still reach the client."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            assert await rig.mo("aide") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [FRENCH_HELP]
            assert await rig.mo("STOP", source=OTHER_SUBSCRIBER) == 0
            assert await wait_texts(rig.sim, OTHER_SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            assert await rig.mt(OTHER_SUBSCRIBER) == OPTED_OUT
            assert await rig.mt(SUBSCRIBER) == 0
            assert rig.esme.mo_texts() == [b"aide", b"STOP"]

    async def test_configured_french_text_is_sent(self, tmp_path: Path) -> None:
        """A [campaigns.replies.fr] help is what AIDE gets, sent from the number written to."""
        async with consent_rig(
            tmp_path, campaigns=campaigns(fr={"help": CUSTOM_FRENCH_HELP})
        ) as rig:
            assert await rig.mo("AIDE", destination=NUMBER_1) == 0
            texts = await wait_texts(rig.sim, SUBSCRIBER, 1)
            assert texts == [CUSTOM_FRENCH_HELP.replace("{contact}", CONTACT)]
            reply = sent_to(rig.sim, SUBSCRIBER)[0].pdu
            assert isinstance(reply, p.SubmitSm)
            assert reply.source_addr == NUMBER_1
