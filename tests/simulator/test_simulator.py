"""The SMSC simulator, driven by real SMPP clients (smpplib, aiosmpplib) over loopback sockets.

smpplib is synchronous: each blocking client step runs in a thread (asyncio.to_thread) so the
simulator's loop keeps serving. Commands neither library sends (submit_multi, cancel_sm,
replace_sm, vendor ids) and data_sm MOs go through a small raw client built on our codec.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp
from aiosmpplib import ESME, BindMode, DeliverSm, PhoneNumber, SubmitSm
from aiosmpplib import SubmitSmResp as AioSubmitSmResp
from hypothesis import given
from hypothesis import strategies as st

from gateway.admin.http import HttpServer, Request, Response, json_response
from gateway.simulator import Faults, Mo, NoReceiverError, Simulator
from gateway.simulator.cli import account, add_arguments, build, host_port
from gateway.simulator.server import message_text, receipt_text
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandId, CommandStatus, Tag
from gateway.smpp.session import SessionConfig
from gateway.text import gsm7
from tests.support.aiosmpp import Inbox
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parents[2]
RECEIPT = re.compile(
    r"id:(?P<id>\S+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10} "
    r"stat:(?P<stat>[A-Z]{7}) err:\d{3} text:(?P<text>.*)",
    re.DOTALL,
)

# --- helpers ----------------------------------------------------------------------------------


@contextmanager
def smpplib_client(port: int, timeout: float = 5.0) -> Iterator[smpplib.client.Client]:
    """A connected smpplib client, its socket closed on exit (no unbind: tests do that)."""
    client = smpplib.client.Client(
        "127.0.0.1", port, timeout=timeout, allow_unknown_opt_params=True
    )
    client.connect()
    try:
        yield client
    finally:
        client.disconnect()


def _collect(client: smpplib.client.Client) -> list[Any]:
    received: list[Any] = []
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    return received


def http(
    port: int, method: str, path: str, body: object = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP request with urllib (blocking: call it through asyncio.to_thread)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


class RawEsme:
    """A bare ESME over asyncio streams, using our codec, for PDUs the libraries do not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sequence = 0

    @classmethod
    async def bound(
        cls, port: int, system_id: str = "raw", bind: type[p.BindRequest] = p.BindTransceiver
    ) -> RawEsme:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        esme = cls(reader, writer)
        response = await esme.request(bind(system_id=system_id, password="pw"))
        assert response.command_status == 0
        return esme

    async def send(self, pdu: p.Pdu) -> None:
        self.writer.write(encode(pdu))
        await self.writer.drain()

    async def request(self, pdu: p.Pdu) -> p.Pdu:
        self.sequence += 1
        await self.send(_with_seq(pdu, self.sequence))
        return await self.read()

    async def read(self) -> p.Pdu:
        head = await asyncio.wait_for(self.reader.readexactly(4), 5)
        (length,) = struct.unpack(">I", head)
        return decode(head + await self.reader.readexactly(length - 4))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _with_seq(pdu: p.Pdu, sequence_number: int) -> p.Pdu:
    return dataclasses.replace(pdu, sequence_number=sequence_number)


# --- smpplib ----------------------------------------------------------------------------------


class TestSmpplib:
    async def test_binds_of_each_type_are_answered_and_recorded(self) -> None:
        """TX, RX and TRX binds get the simulator's system_id and are recorded with their type."""
        async with running_simulator(system_id="SIMX") as sim:

            def bind_all() -> list[bytes]:
                ids = []
                for kind in ("transmitter", "receiver", "transceiver"):
                    with smpplib_client(sim.port) as client:
                        resp = getattr(client, f"bind_{kind}")(
                            system_id=f"app-{kind}", password="x"
                        )
                        ids.append(resp.system_id)
                        client.unbind()
                return ids

            assert await asyncio.to_thread(bind_all) == [b"SIMX"] * 3
            binds = [(r.command, r.system_id, r.bind_type) for r in sim.requests]
            assert binds == [
                ("bind_transmitter", "app-transmitter", "transmitter"),
                ("bind_receiver", "app-receiver", "receiver"),
                ("bind_transceiver", "app-transceiver", "transceiver"),
            ]
            # smpplib numbers its first PDU 2; the recorded frame is the exact wire bytes.
            assert all(r.pdu.sequence_number == 2 for r in sim.requests)
            assert all(decode(r.frame) == r.pdu for r in sim.requests)

    async def test_submits_get_unique_message_ids_and_are_recorded_in_order(self) -> None:
        """Each submit_sm is answered with a fresh message_id and recorded with its frame."""
        async with running_simulator() as sim:

            def submit() -> list[str]:
                with smpplib_client(sim.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    ids = []
                    for n in range(3):
                        client.send_message(
                            source_addr="ACME", destination_addr="15551230000",
                            short_message=f"msg {n}".encode(),
                        )  # fmt: skip
                        resp = client.read_pdu()
                        assert resp.command == "submit_sm_resp"
                        assert resp.status == 0
                        ids.append(resp.message_id.decode())
                    client.unbind()
                    return ids

            ids = await asyncio.to_thread(submit)
            messages = await sim.wait_for(lambda msgs: len(msgs) >= 3)
            assert len(set(ids)) == 3
            assert [m.message_id for m in messages] == ids
            assert [m.text for m in messages] == ["msg 0", "msg 1", "msg 2"]
            assert {(m.system_id, m.bind_type, m.command) for m in messages} == {
                ("acme", "transmitter", "submit_sm")
            }
            assert [m.pdu.sequence_number for m in messages] == [3, 4, 5]
            assert all(encode(m.pdu) == m.frame for m in messages)

    async def test_receiver_gets_an_mo_injected_over_http(self) -> None:
        """POST /mo delivers a deliver_sm to the bound receiver and returns its answer's status."""
        async with running_simulator() as sim:
            with smpplib_client(sim.port) as client:
                received = _collect(client)
                await asyncio.to_thread(client.bind_receiver, system_id="acme", password="pw")
                reading = asyncio.create_task(asyncio.to_thread(client.read_once))
                status, body = await asyncio.to_thread(
                    http, sim.control_port, "POST", "/mo",
                    {"source": "+15551234567", "destination": "12345", "text": "STOP"},
                )  # fmt: skip
                await reading
                await asyncio.to_thread(client.unbind)
        assert (status, body["command_status"]) == (200, 0)
        (mo,) = received
        assert mo.command == "deliver_sm"
        assert (mo.source_addr, mo.source_addr_ton, mo.destination_addr) == (
            b"15551234567", 1, b"12345",
        )  # fmt: skip
        assert mo.short_message == b"STOP"

    async def test_transceiver_gets_a_delivery_receipt(self) -> None:
        """With receipts on, a submit asking for one is followed by a standard receipt."""
        async with running_simulator(receipts=True) as sim:

            def submit_and_wait_receipt() -> tuple[str, list[Any]]:
                with smpplib_client(sim.port) as client:
                    received = _collect(client)
                    client.bind_transceiver(system_id="acme", password="pw")
                    client.send_message(
                        source_addr="ACME", destination_addr="15551234567",
                        short_message=b"Your code is 123456, valid 5 min", registered_delivery=1,
                    )  # fmt: skip
                    resp = client.read_pdu()
                    client.read_once()
                    client.unbind()
                    return resp.message_id.decode(), received

            message_id, received = await asyncio.to_thread(submit_and_wait_receipt)
        (receipt,) = received
        assert receipt.esm_class == 0x04
        match = RECEIPT.fullmatch(receipt.short_message.decode())
        assert match is not None
        assert (match["id"], match["stat"], match["dlvrd"]) == (message_id, "DELIVRD", "001")
        assert match["text"] == "Your code is 123456,"
        assert receipt.receipted_message_id == message_id.encode()
        assert receipt.message_state == 2
        assert (receipt.source_addr, receipt.destination_addr) == (b"15551234567", b"ACME")

    async def test_receipt_goes_to_a_receiver_of_the_same_account(self) -> None:
        """A receipt for a TX session's submit reaches the RX session of the same system_id."""
        async with running_simulator(receipts=True) as sim:
            with smpplib_client(sim.port) as rx, smpplib_client(sim.port) as tx:
                received = _collect(rx)
                await asyncio.to_thread(rx.bind_receiver, system_id="acme", password="pw")
                await asyncio.to_thread(tx.bind_transmitter, system_id="acme", password="pw")
                await asyncio.to_thread(
                    tx.send_message, source_addr="ACME", destination_addr="15550001111",
                    short_message=b"hi", registered_delivery=1,
                )  # fmt: skip
                resp = await asyncio.to_thread(tx.read_pdu)
                await asyncio.to_thread(rx.read_once)
                await asyncio.to_thread(tx.unbind)
                await asyncio.to_thread(rx.unbind)
        assert received[0].receipted_message_id == resp.message_id

    async def test_receipt_is_held_until_a_receiver_binds(self) -> None:
        """A receipt for an account with no receiver bound is delivered when one binds."""
        async with running_simulator(receipts=True) as sim:

            def submit() -> bytes:
                with smpplib_client(sim.port) as tx:
                    tx.bind_transmitter(system_id="acme", password="pw")
                    tx.send_message(
                        source_addr="ACME", destination_addr="15550001111", short_message=b"hi",
                        registered_delivery=1,
                    )  # fmt: skip
                    message_id: bytes = tx.read_pdu().message_id
                    tx.unbind()
                    return message_id

            def receive() -> list[Any]:
                with smpplib_client(sim.port) as rx:
                    received = _collect(rx)
                    rx.bind_receiver(system_id="acme", password="pw")
                    rx.read_once()
                    rx.unbind()
                    return received

            message_id = await asyncio.to_thread(submit)
            received = await asyncio.to_thread(receive)
        assert received[0].receipted_message_id == message_id

    async def test_query_sm_reports_the_delivered_state(self) -> None:
        """query_sm for an issued id answers with message_state DELIVERED."""
        async with running_simulator() as sim:

            def submit_and_query() -> Any:
                with smpplib_client(sim.port) as client:
                    client.bind_transceiver(system_id="acme", password="pw")
                    client.send_message(
                        source_addr="ACME", destination_addr="15550001111", short_message=b"hi"
                    )
                    message_id = client.read_pdu().message_id
                    client.query_message(
                        message_id=message_id.decode(), source_addr_ton=0, source_addr_npi=0,
                        source_addr="ACME",
                    )  # fmt: skip
                    resp = client.read_pdu()
                    client.unbind()
                    return message_id, resp

            message_id, resp = await asyncio.to_thread(submit_and_query)
        assert (resp.command, resp.status) == ("query_sm_resp", 0)
        assert (resp.message_id, resp.message_state) == (message_id, 2)


# --- aiosmpplib -------------------------------------------------------------------------------


class TestAiosmpplib:
    async def test_submit_receipt_and_mo_over_a_transceiver(self) -> None:
        """aiosmpplib binds TRX, gets its submit answered, a receipt for it, and an MO."""
        async with running_simulator(receipts=True) as sim:
            hook = Inbox()
            esme = ESME(
                smsc_host="127.0.0.1", smsc_port=sim.port, system_id="aio", password="pw",
                bind_mode=BindMode.TRANSCEIVER, hook=hook, log_level="WARNING",
                socket_timeout=5.0,
            )  # fmt: skip
            running = asyncio.create_task(esme.start())
            try:
                await esme.broker.enqueue(
                    SubmitSm(
                        short_message="Hello from aiosmpplib",
                        source=PhoneNumber("15550009999"),
                        destination=PhoneNumber("15551234567"),
                        log_id="m1",
                    )
                )
                resp = await hook.next(AioSubmitSmResp)
                receipt = await hook.next(DeliverSm)
                assert receipt.is_receipt()
                assert receipt.parse_receipt()["id"] == resp.message_id
                assert receipt.log_id == "m1"  # aiosmpplib correlated it to its submit

                status = await sim.send_mo(
                    source="15551234567", destination="15550009999", text="STOP", system_id="aio"
                )
                mo = await hook.next(DeliverSm)
                assert status == CommandStatus.ESME_ROK
                assert (mo.short_message, mo.is_receipt()) == ("STOP", False)
            finally:
                # aiosmpplib drops its StreamWriter after unbind without closing it (a
                # ResourceWarning, an error here): keep it and close it once the ESME is done.
                writer = esme._writer
                await esme.stop()
                await running
                if writer is not None:
                    writer.close()
            # aiosmpplib half-closes after its unbind; the simulator still ends the session.
            await sim.wait_until(lambda: not sim.sessions)
        (message,) = sim.messages
        assert (message.system_id, message.bind_type, message.text) == (
            "aio", "transceiver", "Hello from aiosmpplib",
        )  # fmt: skip
        assert isinstance(message.pdu, p.SubmitSm)
        assert message.pdu.registered_delivery == 1


# --- accounts ---------------------------------------------------------------------------------


class TestAccounts:
    @pytest.mark.parametrize(
        ("system_id", "password", "status"),
        [
            ("acme", "secret", None),
            ("acme", "wrong", CommandStatus.ESME_RINVPASWD),
            ("nobody", "secret", CommandStatus.ESME_RINVSYSID),
        ],
        ids=["right", "wrong-password", "unknown-system-id"],
    )
    async def test_fixed_accounts_are_checked(
        self, system_id: str, password: str, status: int | None
    ) -> None:
        """With accounts configured, a bind needs a known system_id and its password."""
        async with running_simulator(accounts={"acme": "secret", "other": "x"}) as sim:

            def bind() -> int | None:
                with smpplib_client(sim.port) as client:
                    try:
                        client.bind_transmitter(system_id=system_id, password=password)
                    except smpplib.exceptions.PDUError as exc:
                        return int(exc.args[1])
                    client.unbind()
                    return None

            assert await asyncio.to_thread(bind) == status


# --- faults -----------------------------------------------------------------------------------


class TestFaults:
    async def test_respond_false_leaves_submits_unanswered(self) -> None:
        """With respond=False no submit_sm_resp comes: the next PDU is the enquire_link_resp."""
        async with running_simulator(faults=Faults(respond=False)) as sim:

            def submit_then_probe() -> str:
                with smpplib_client(sim.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    client.send_message(
                        source_addr="ACME", destination_addr="15550001111", short_message=b"x"
                    )
                    client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))
                    command: str = client.read_pdu().command
                    return command

            assert await asyncio.to_thread(submit_then_probe) == "enquire_link_resp"
            (message,) = sim.messages
            assert message.message_id is None

    async def test_submit_status_answers_with_that_status(self) -> None:
        """submit_status=0x58 answers every submit with ESME_RTHROTTLED and no message_id."""
        async with running_simulator(faults=Faults(submit_status=0x58)) as sim:

            def submit() -> Any:
                with smpplib_client(sim.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    client.send_message(
                        source_addr="ACME", destination_addr="15550001111", short_message=b"x"
                    )
                    return client.read_pdu()

            resp = await asyncio.to_thread(submit)
        assert (resp.command, resp.status) == ("submit_sm_resp", 0x58)

    async def test_drop_after_aborts_every_connection(self) -> None:
        """drop_after=1 answers one submit, then drops all connections on the next one."""
        async with running_simulator() as sim:
            sim.set_faults(drop_after=1)
            with smpplib_client(sim.port) as bystander:
                await asyncio.to_thread(bystander.bind_receiver, system_id="b", password="pw")

                def submit_twice() -> tuple[int, bool]:
                    with smpplib_client(sim.port) as client:
                        client.bind_transmitter(system_id="acme", password="pw")
                        for text in (b"one", b"two"):
                            client.send_message(
                                source_addr="A", destination_addr="15550001111", short_message=text
                            )
                        first: int = client.read_pdu().status
                        try:
                            client.read_pdu()
                        except smpplib.exceptions.ConnectionError:
                            return first, True
                        return first, False

                assert await asyncio.to_thread(submit_twice) == (0, True)
                with pytest.raises(smpplib.exceptions.ConnectionError):
                    await asyncio.to_thread(bystander.read_pdu)
            assert [m.text for m in sim.messages] == ["one", "two"]
            assert [m.message_id is not None for m in sim.messages] == [True, False]
            assert sim.faults.drop_after is None  # one-shot

    async def test_drop_reset_resets_the_connections(self) -> None:
        """With drop_reset, drop_after ends every connection with a TCP reset, not a FIN."""
        async with running_simulator() as sim:
            sim.set_faults(drop_after=0, drop_reset=True)
            bystander = await RawEsme.bound(sim.port, "b")
            esme = await RawEsme.bound(sim.port, "acme")
            esme.sequence += 1
            await esme.send(
                p.SubmitSm(destination_addr="15550001111", short_message=b"x", sequence_number=9)
            )
            for client in (esme, bystander):
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(client.reader.read(), 5)
                client.writer.close()
            assert [m.text for m in sim.messages] == ["x"]
            assert sim.faults.drop_after is None  # one-shot; drop_reset stays
            assert sim.faults.drop_reset

    async def test_silent_reads_nothing_until_switched_off(self) -> None:
        """silent: an enquire_link and a new connection's bind go unanswered (nothing is read);
        switched off, both are answered and the connection works as before."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port, "acme")
            sim.set_faults(silent=True)
            await esme.send(p.EnquireLink(sequence_number=7))
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(encode(p.BindTransmitter(system_id="late", password="pw")))
            # Absence of an answer can only be shown by waiting a while for one.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(esme.reader.readexactly(1), 0.3)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(1), 0.1)
            assert not sim.bound("late")
            sim.set_faults(silent=False)
            link = await esme.read()
            late = RawEsme(reader, writer)
            bind = await late.read()
            sent = await esme.request(
                p.SubmitSm(destination_addr="15550001111", short_message=b"y")
            )
            await late.close()
            await esme.close()
        assert (link.command_id, link.sequence_number) == (CommandId.ENQUIRE_LINK_RESP, 7)
        assert (bind.command_id, bind.command_status) == (CommandId.BIND_TRANSMITTER_RESP, 0)
        assert (sent.command_id, sent.command_status) == (CommandId.SUBMIT_SM_RESP, 0)

    async def test_refuse_after_refuses_one_submit(self) -> None:
        """refuse_after=1 accepts one submit, refuses the next with refuse_status, then
        accepts again."""
        async with running_simulator() as sim:
            sim.set_faults(refuse_after=1, refuse_status=0x45)

            def submit_three() -> list[int]:
                with smpplib_client(sim.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    for text in (b"one", b"two", b"three"):
                        client.send_message(
                            source_addr="A", destination_addr="15550001111", short_message=text
                        )
                    return [client.read_pdu().status for _ in range(3)]

            assert await asyncio.to_thread(submit_three) == [0, 0x45, 0]
            assert [m.message_id is not None for m in sim.messages] == [True, False, True]
            assert sim.faults.refuse_after is None  # one-shot

    async def test_bind_status_rejects_binds(self) -> None:
        """bind_status=0x0D answers binds with ESME_RBINDFAIL."""
        async with running_simulator(faults=Faults(bind_status=0x0D)) as sim:

            def bind() -> int:
                with smpplib_client(sim.port) as client:
                    with pytest.raises(smpplib.exceptions.PDUError) as info:
                        client.bind_transceiver(system_id="acme", password="pw")
                    return int(info.value.args[1])

            assert await asyncio.to_thread(bind) == CommandStatus.ESME_RBINDFAIL
            assert not sim.bound()

    async def test_response_delay_holds_the_answer_back(self) -> None:
        """response_delay_s delays each submit_sm_resp by at least that long."""
        async with running_simulator() as sim:
            sim.set_faults(response_delay_s=0.2)

            def submit() -> float:
                with smpplib_client(sim.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    started = time.monotonic()
                    client.send_message(
                        source_addr="ACME", destination_addr="15550001111", short_message=b"x"
                    )
                    assert client.read_pdu().status == 0
                    return time.monotonic() - started

            assert await asyncio.to_thread(submit) >= 0.2

    async def test_failure_only_receipts_follow_receipt_stat(self) -> None:
        """registered_delivery 2 gets a receipt only for a failed outcome, with its state."""
        async with running_simulator(receipts=True) as sim:
            sim.set_faults(receipt_stat="UNDELIV")
            esme = await RawEsme.bound(sim.port, "acme")
            resp = await esme.request(
                p.SubmitSm(
                    destination_addr="15550001111", short_message=b"x", registered_delivery=2
                )
            )
            receipt = await esme.read()
            await esme.close()
        assert isinstance(receipt, p.DeliverSm)
        assert isinstance(resp, p.SubmitSmResp)
        match = RECEIPT.fullmatch(gsm7.decode(receipt.short_message))
        assert match is not None
        assert match["stat"] == "UNDELIV"
        assert match["dlvrd"] == "000"
        assert receipt.tlv(Tag.MESSAGE_STATE) == b"\x05"
        assert receipt.tlv(Tag.RECEIPTED_MESSAGE_ID) == f"{resp.message_id}\0".encode()

    async def test_faults_are_set_over_http(self) -> None:
        """POST /faults changes the named settings and returns them all; bad input is a 400."""
        async with running_simulator() as sim:
            status, body = await asyncio.to_thread(
                http, sim.control_port, "POST", "/faults", {"submit_status": 88, "respond": True}
            )
            assert (status, body["submit_status"], body["drop_after"]) == (200, 88, None)
            assert sim.faults == Faults(submit_status=88)
            bad = await asyncio.to_thread(
                http, sim.control_port, "POST", "/faults", {"submit_status": "x"}
            )
            unknown = await asyncio.to_thread(
                http, sim.control_port, "POST", "/faults", {"explode": True}
            )
            reset = await asyncio.to_thread(
                http, sim.control_port, "POST", "/faults", {"reset": True}
            )
        assert (bad[0], unknown[0]) == (400, 400)
        assert reset == (200, Faults().to_json())


# --- commands the client libraries do not send ------------------------------------------------


class TestOtherCommands:
    async def test_submit_multi_reports_distribution_lists_unsuccessful(self) -> None:
        """submit_multi gets one message_id; distribution-list destinations are unsuccessful."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port)
            resp = await esme.request(
                p.SubmitMulti(
                    dest_addresses=(
                        p.SmeAddress(destination_addr="15550001111"),
                        p.DistributionList(dl_name="friends"),
                    ),
                    short_message=b"hello all",
                )
            )
            await esme.close()
            (message,) = sim.messages
        assert isinstance(resp, p.SubmitMultiResp)
        assert resp.command_status == 0
        assert resp.message_id == message.message_id
        assert [u.error_status_code for u in resp.unsuccess_smes] == [0x34]
        assert message.text == "hello all"

    async def test_data_sm_is_answered_with_a_message_id(self) -> None:
        """data_sm gets data_sm_resp with an id, and its message_payload text is recorded."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port)
            resp = await esme.request(
                p.DataSm(
                    destination_addr="15550001111",
                    data_coding=8,
                    tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, "Grüße ☺".encode("utf-16-be")),),
                )
            )
            await esme.close()
        assert isinstance(resp, p.DataSmResp)
        assert resp.message_id
        assert sim.messages[0].text == "Grüße ☺"

    async def test_scheduled_message_can_be_replaced_then_cancelled(self) -> None:
        """A scheduled message stays ENROUTE: replace_sm and cancel_sm succeed, then query
        reports DELETED; a delivered message can be neither cancelled nor replaced."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port)
            scheduled = await esme.request(
                p.SubmitSm(
                    destination_addr="1",
                    short_message=b"a",
                    schedule_delivery_time="000001000000000R",
                )
            )
            delivered = await esme.request(p.SubmitSm(destination_addr="1", short_message=b"b"))
            assert isinstance(scheduled, p.SubmitSmResp)
            assert isinstance(delivered, p.SubmitSmResp)
            later, now = scheduled.message_id or "", delivered.message_id or ""
            replaced = await esme.request(p.ReplaceSm(message_id=later, short_message=b"c"))
            cancelled = await esme.request(p.CancelSm(message_id=later))
            query = await esme.request(p.QuerySm(message_id=later))
            no_cancel = await esme.request(p.CancelSm(message_id=now))
            no_replace = await esme.request(p.ReplaceSm(message_id=now, short_message=b"d"))
            await esme.close()
        assert (replaced.command_status, cancelled.command_status) == (0, 0)
        assert isinstance(query, p.QuerySmResp)
        assert query.message_state == 4
        assert no_cancel.command_status == CommandStatus.ESME_RCANCELFAIL
        assert no_replace.command_status == CommandStatus.ESME_RREPLACEFAIL

    async def test_ids_of_another_account_or_unknown_are_invalid(self) -> None:
        """query_sm for an id never issued, or issued to another system_id, is ESME_RINVMSGID."""
        async with running_simulator() as sim:
            owner = await RawEsme.bound(sim.port, "owner")
            other = await RawEsme.bound(sim.port, "other")
            resp = await owner.request(p.SubmitSm(destination_addr="1", short_message=b"a"))
            assert isinstance(resp, p.SubmitSmResp)
            foreign = await other.request(p.QuerySm(message_id=resp.message_id or ""))
            unknown = await owner.request(p.QuerySm(message_id="nope"))
            await owner.close()
            await other.close()
        assert foreign.command_status == unknown.command_status == CommandStatus.ESME_RINVMSGID

    async def test_vendor_command_is_recorded_and_nacked(self) -> None:
        """A vendor command id is recorded and answered with generic_nack ESME_RINVCMDID."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port)
            resp = await esme.request(p.RawPdu(command_id=0x00010201, body=b"\x01\x02"))
            await esme.close()
        assert resp.command_id == CommandId.GENERIC_NACK
        assert resp.command_status == CommandStatus.ESME_RINVCMDID
        assert sim.requests[-1].pdu == p.RawPdu(
            command_id=0x00010201, body=b"\x01\x02", sequence_number=2
        )

    async def test_data_sm_mo_carries_the_text_in_message_payload(self) -> None:
        """An MO sent as data_sm puts its text in message_payload, encoded per data_coding."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port, "acme", p.BindReceiver)
            sending = asyncio.create_task(
                asyncio.to_thread(
                    http,
                    sim.control_port,
                    "POST",
                    "/mo",
                    {
                        "source": "15551234567",
                        "destination": "12345",
                        "text": "ARRÊT",
                        "data_coding": 8,
                        "as": "data_sm",
                        "system_id": "acme",
                    },
                ),
            )
            mo = await esme.read()
            assert isinstance(mo, p.DataSm)
            await esme.send(
                p.DataSmResp(
                    message_id="x", command_status=0x45, sequence_number=mo.sequence_number
                )
            )
            status, body = await sending
            await esme.close()
        assert (status, body["command_status"]) == (200, 0x45)
        assert mo.tlv(Tag.MESSAGE_PAYLOAD) == "ARRÊT".encode("utf-16-be")
        assert mo.data_coding == 8


# --- control endpoint and Python API ----------------------------------------------------------


class TestControlEndpoint:
    async def test_messages_lists_submits_with_decoded_text(self) -> None:
        """GET /messages gives each submit with text decoded per data_coding, hex and TLVs."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port, "acme")
            await esme.request(
                p.SubmitSm(
                    source_addr="ACME", destination_addr="15551234567",
                    short_message=gsm7.encode("50€ @home"),
                    tlvs=(p.Tlv(0x1401, b"\xab"),),
                )
            )  # fmt: skip
            await esme.request(
                p.SubmitSm(
                    destination_addr="1", data_coding=8, short_message="Ω".encode("utf-16-be")
                )
            )
            await esme.request(p.SubmitSm(destination_addr="1", data_coding=4, short_message=b"\0"))
            await esme.request(p.QuerySm(message_id="nope"))  # recorded, but not a submit
            await esme.close()
            status, body = await asyncio.to_thread(http, sim.control_port, "GET", "/messages")
        assert status == 200
        assert [m["text"] for m in body] == ["50€ @home", "Ω", None]
        first = body[0]
        assert (first["system_id"], first["command"], first["source_addr"]) == (
            "acme", "submit_sm", "ACME",
        )  # fmt: skip
        assert first["destination_addr"] == "15551234567"
        assert first["short_message"] == gsm7.encode("50€ @home").hex()
        assert first["tlvs"] == [{"tag": 0x1401, "hex": "ab"}]
        assert (first["data_coding"], first["esm_class"]) == (0, 0)

    async def test_delete_messages_clears_the_record(self) -> None:
        """DELETE /messages empties what GET /messages and sim.messages return."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port)
            await esme.request(p.SubmitSm(destination_addr="1", short_message=b"a"))
            await esme.close()
            deleted = await asyncio.to_thread(http, sim.control_port, "DELETE", "/messages")
            listed = await asyncio.to_thread(http, sim.control_port, "GET", "/messages")
            assert sim.messages == []
        assert deleted == (200, {"cleared": 1})
        assert listed == (200, [])

    async def test_health_lists_sessions(self) -> None:
        """GET /health answers ok with the bound sessions."""
        async with running_simulator() as sim:
            esme = await RawEsme.bound(sim.port, "acme", p.BindReceiver)
            status, body = await asyncio.to_thread(http, sim.control_port, "GET", "/health")
            await esme.close()
        assert (status, body["status"]) == (200, "ok")
        assert [(s["system_id"], s["bind_type"]) for s in body["sessions"]] == [
            ("acme", "receiver")
        ]

    async def test_mo_without_a_receiver_is_a_conflict(self) -> None:
        """POST /mo answers 409 when no RX / TRX session of that system_id is bound."""
        async with running_simulator() as sim:
            tx = await RawEsme.bound(sim.port, "acme", p.BindTransmitter)
            status, body = await asyncio.to_thread(
                http, sim.control_port, "POST", "/mo",
                {"source": "1", "destination": "2", "text": "x", "system_id": "acme"},
            )  # fmt: skip
            await tx.close()
            with pytest.raises(NoReceiverError):
                await sim.send_mo(source="1", destination="2", text="x")
        assert status == 409
        assert "acme" in body["error"]

    async def test_unanswered_mo_times_out_with_504(self) -> None:
        """POST /mo answers 504 when the receiver does not answer within mo_timeout_s."""
        async with running_simulator(mo_timeout_s=0.2) as sim:
            rx = await RawEsme.bound(sim.port, "acme", p.BindReceiver)
            status, _ = await asyncio.to_thread(
                http, sim.control_port, "POST", "/mo", {"source": "1", "destination": "2"}
            )
            assert isinstance(await rx.read(), p.DeliverSm)  # it was sent, never answered
            await rx.close()
        assert status == 504

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"{not json", "not JSON"),
            (b'{"destination": "2"}', "source"),
            (b'{"source": "1", "destination": "2", "colour": 1}', "colour"),
            (b'{"source": "1", "destination": "2", "data_coding": true}', "data_coding"),
            (b'{"source": "1", "destination": "2", "hex": "zz"}', "hex"),
            (b'{"source": "1", "destination": "2", "data_coding": 4, "text": "x"}', "text coding"),
            (b'{"source": "1", "destination": "2", "as": "submit_sm"}', "command"),
        ],
        ids=["not-json", "no-source", "unknown-key", "bool-as-int", "bad-hex", "binary", "bad-as"],
    )
    async def test_bad_mo_requests_are_400(self, body: bytes, fragment: str) -> None:
        """POST /mo with a malformed or invalid body answers 400 naming the problem."""
        async with running_simulator() as sim:
            rx = await RawEsme.bound(sim.port, "acme", p.BindReceiver)
            status, answer = await asyncio.to_thread(
                http, sim.control_port, "POST", "/mo", None, body
            )
            await rx.close()
        assert status == 400
        assert fragment in answer["error"]

    async def test_unknown_paths_and_methods(self) -> None:
        """Unknown paths answer 404 and known paths with the wrong method 405."""
        async with running_simulator() as sim:
            missing = await asyncio.to_thread(http, sim.control_port, "GET", "/nope")
            wrong = await asyncio.to_thread(http, sim.control_port, "PUT", "/messages", {})
        assert (missing[0], wrong[0]) == (404, 405)

    async def test_hex_mo_is_sent_byte_exact_in_a_payload(self) -> None:
        """send_mo with raw bytes and payload=True puts exactly those bytes in message_payload."""
        async with running_simulator() as sim:
            rx = await RawEsme.bound(sim.port, "acme", p.BindReceiver)
            sending = asyncio.create_task(
                sim.send_mo(
                    source="1", destination="2", short_message=b"\x05\x00\x03\x01\x02\x01hi",
                    esm_class=0x40, payload=True, data_coding=4,
                )
            )  # fmt: skip
            mo = await rx.read()
            await rx.send(p.DeliverSmResp(message_id="", sequence_number=mo.sequence_number))
            assert await sending == 0
            await rx.close()
        assert isinstance(mo, p.DeliverSm)
        assert (mo.short_message, mo.esm_class, mo.data_coding) == (b"", 0x40, 4)
        assert mo.tlv(Tag.MESSAGE_PAYLOAD) == b"\x05\x00\x03\x01\x02\x01hi"

    async def test_wait_for_times_out_without_the_condition(self) -> None:
        """wait_for raises TimeoutError when the predicate never holds."""
        async with running_simulator() as sim:
            with pytest.raises(TimeoutError):
                await sim.wait_for(lambda msgs: len(msgs) > 0, timeout=0.05)

    async def test_stop_unbinds_bound_sessions(self) -> None:
        """Stopping the simulator sends unbind to bound clients before closing."""
        sim = Simulator(port=0)
        await sim.start()
        esme = await RawEsme.bound(sim.port)
        stopping = asyncio.create_task(sim.stop())
        unbind = await esme.read()
        await esme.send(p.UnbindResp(sequence_number=unbind.sequence_number))
        await stopping
        assert isinstance(unbind, p.Unbind)
        assert await esme.reader.read() == b""  # closed after the unbind_resp
        await esme.close()


class TestTextHelpers:
    @given(st.text(alphabet=st.sampled_from(sorted(set("@£$¥èé\nAZaz09 !?€[]{}^~|\\")))))
    def test_gsm7_mo_text_round_trips(self, text: str) -> None:
        """An MO with data_coding 0 carries GSM 7-bit unpacked text that decodes back exactly."""
        mo = Mo(source="1", destination="2", text=text, payload=True)
        assert message_text(mo.to_pdu()) == text

    @given(st.text(st.characters(codec="utf-16"), max_size=100))
    def test_ucs2_mo_text_round_trips(self, text: str) -> None:
        """An MO with data_coding 8 carries any text as UTF-16BE that decodes back exactly."""
        mo = Mo(source="1", destination="2", text=text, data_coding=8, command="data_sm")
        assert message_text(mo.to_pdu()) == text

    @given(st.text(max_size=40), st.sampled_from(["DELIVRD", "UNDELIV", "REJECTD"]))
    def test_receipt_text_is_standard(self, text: str, stat: str) -> None:
        """The receipt body parses with the standard pattern and echoes the first 20 characters."""
        body = receipt_text(
            message_id="AB12", submitted_at=datetime(2025, 4, 11, 9, 30, tzinfo=UTC),
            done_at=datetime(2025, 4, 11, 9, 31, tzinfo=UTC), stat=stat, text=text,
        )  # fmt: skip
        match = RECEIPT.fullmatch(body)
        assert match is not None
        assert (match["id"], match["stat"], match["text"]) == ("AB12", stat, text[:20])
        assert "submit date:2504110930 done date:2504110931" in body

    def test_long_text_needs_a_payload(self) -> None:
        """A deliver_sm body over 254 octets is refused unless sent as message_payload."""
        with pytest.raises(ValueError, match="payload"):
            Mo(source="1", destination="2", text="x" * 255).to_pdu()
        pdu = Mo(source="1", destination="2", text="x" * 255, payload=True).to_pdu()
        assert pdu.tlv(Tag.MESSAGE_PAYLOAD) == b"x" * 255


# --- the HTTP server on its own ---------------------------------------------------------------


class TestHttpServer:
    async def test_keep_alive_serves_several_requests_on_one_connection(self) -> None:
        """Two requests on one connection both get answers framed by Content-Length."""

        async def echo(request: Request) -> Response:
            return json_response({"body": request.body.decode(), "q": request.query.get("a")})

        server = HttpServer({("POST", "/echo"): echo})
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answers = []
        for n in range(2):
            writer.write(
                b"POST /echo?a=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" % n
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            answers.append((head.split(b" ")[1], json.loads(await reader.readexactly(length))))
        writer.close()
        await server.stop()
        assert answers == [
            (b"200", {"body": "hello", "q": ["0"]}),
            (b"200", {"body": "hello", "q": ["1"]}),
        ]

    @pytest.mark.parametrize(
        ("request_bytes", "status"),
        [
            (b"NONSENSE\r\n\r\n", b"400"),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
            (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        ],
        ids=["bad-request-line", "chunked", "bad-length"],
    )
    async def test_malformed_requests_are_refused(
        self, request_bytes: bytes, status: bytes
    ) -> None:
        """A request the server cannot frame is answered with an error and the connection closed."""
        server = HttpServer({})
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes)
        answer = await reader.read()
        writer.close()
        await server.stop()
        assert answer.split(b" ")[1] == status

    async def test_failing_handler_is_a_500(self) -> None:
        """A handler that raises answers 500 and the server keeps serving."""

        async def boom(request: Request) -> Response:
            raise RuntimeError("boom")

        async def ok(request: Request) -> Response:
            return json_response("ok")

        server = HttpServer({("GET", "/boom"): boom, ("GET", "/ok"): ok})
        await server.start("127.0.0.1", 0)
        first = await asyncio.to_thread(http, server.port, "GET", "/boom")
        second = await asyncio.to_thread(http, server.port, "GET", "/ok")
        await server.stop()
        assert (first[0], second) == (500, (200, "ok"))


# --- command line -----------------------------------------------------------------------------


class TestCli:
    def test_arguments_parse(self) -> None:
        """--listen, --control, --account and --system-id build the Simulator they describe."""
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            ["--listen", "[::1]:2776", "--account", "a:p:w", "--account", "b:", "--receipts",
             "--system-id", "SMSC1", "--no-control"]
        )  # fmt: skip
        sim = build(args)
        assert (sim.host, sim.requested_port, sim.requested_control_port) == ("::1", 2776, None)
        assert sim.accounts == {"a": "p:w", "b": ""}
        assert (sim.receipts, sim.system_id) == (True, "SMSC1")

    @pytest.mark.parametrize("value", ["2776", "host:", "host:99999", ":80"])
    def test_bad_addresses_are_refused(self, value: str) -> None:
        """An address that is not HOST:PORT is an argument error."""
        with pytest.raises(argparse.ArgumentTypeError):
            host_port(value)

    def test_bad_account_is_refused(self) -> None:
        """An account without a colon is an argument error."""
        with pytest.raises(argparse.ArgumentTypeError):
            account("nopassword")

    @pytest.mark.parametrize(
        "loop",
        [
            "asyncio",
            "auto",
        ],
    )
    async def test_subprocess_answers_a_bind_and_exits_0_on_sigterm(self, loop: str) -> None:
        """`python -m gateway smsc-sim` serves a bind, unbinds it on SIGTERM and exits 0."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "smsc-sim", "--listen", "127.0.0.1:0",
            "--control", "127.0.0.1:0", "--system-id", "CLISIM", "--loop", loop,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        try:
            port = None
            lines: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while port is None:
                    line = await proc.stderr.readline()
                    assert line, "simulator exited before listening"
                    lines.append(json.loads(line))
                    if lines[-1].get("component") == "smsc-sim":
                        port = int(lines[-1]["listen"].rsplit(":", 1)[1])

            def bind_then_answer_unbind() -> tuple[bytes, str]:
                with smpplib_client(port) as client:
                    system_id: bytes = client.bind_transceiver(
                        system_id="cli", password="pw"
                    ).system_id
                    proc.send_signal(signal.SIGTERM)
                    unbind = client.read_pdu()
                    resp = smpplib.smpp.make_pdu("unbind_resp", client=client)
                    resp.sequence = unbind.sequence
                    client.send_pdu(resp)
                    return system_id, unbind.command

            assert await asyncio.to_thread(bind_then_answer_unbind) == (b"CLISIM", "unbind")
            async with asyncio.timeout(20):
                rest = await proc.stderr.read()
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        events = [e["event"] for e in lines] + [
            json.loads(line)["event"] for line in rest.splitlines()
        ]
        assert "bind_completed" in events
        assert "session_closed" in events

    async def test_port_in_use_exits_1(self) -> None:
        """The command exits 1 when it cannot listen."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "smsc-sim", "--listen", f"127.0.0.1:{taken}",
                "--no-control", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            async with asyncio.timeout(20):
                assert await proc.wait() == 1


# --- misc -------------------------------------------------------------------------------------


class TestSessionConfig:
    async def test_session_config_is_used_for_client_sessions(self) -> None:
        """The simulator's SessionConfig governs its sessions (here: a short bind timeout)."""
        config = SessionConfig(bind_timeout_s=0.1)
        async with running_simulator(session_config=config) as sim:
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, never bound
            writer.close()
