"""The gateway's own service bind carries auto-replies for accounts bound only as receivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import smpplib.client

from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator


@asynccontextmanager
async def receiver(port: int) -> AsyncIterator[tuple[smpplib.client.Client, list[Any]]]:
    """An smpplib receiver of account rx-only (blocking calls run in a thread: the gateway shares
    this event loop)."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=5)
    received: list[Any] = []
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    await asyncio.to_thread(client.connect)
    try:
        await asyncio.to_thread(client.bind_receiver, system_id="rx-only", password="pw")
        yield client, received
    finally:
        client.disconnect()


class TestServiceBind:
    async def test_confirmation_goes_over_the_service_bind(self) -> None:
        """A STOP from a receiver-only account is confirmed over the gateway's own bind."""
        async with (
            running_simulator() as sim,
            running_gateway(
                sim.port, upstream={"service_bind": {"system_id": "gw-svc", "password": "pw"}}
            ) as gw,
        ):
            assert gw.service is not None
            assert await gw.service.wait_bound(5)
            async with receiver(gw.port) as (client, received):
                reading = asyncio.create_task(asyncio.to_thread(client.read_once))
                status = await sim.send_mo(
                    source="15551234567", destination="15550100", text="STOP", system_id="rx-only"
                )
                await reading
                assert status == 0
                assert [pdu.short_message for pdu in received] == [b"STOP"]
                (reply,) = await sim.wait_for(lambda msgs: len(msgs) >= 1)
                assert reply.system_id == "gw-svc"
                assert reply.pdu.destination_addr == "15551234567"
                assert "unsubscribed" in (reply.text or "")
                await asyncio.to_thread(client.unbind)

    async def test_without_a_service_bind_the_reply_is_suppressed_not_lost(self) -> None:
        """With no transmit-capable session the opt-out is still stored and the MO forwarded."""
        async with running_simulator() as sim, running_gateway(sim.port) as gw:
            async with receiver(gw.port) as (client, received):
                reading = asyncio.create_task(asyncio.to_thread(client.read_once))
                status = await sim.send_mo(
                    source="15551234567", destination="15550100", text="STOP", system_id="rx-only"
                )
                await reading
                await asyncio.to_thread(client.unbind)
            assert status == 0
            assert [pdu.short_message for pdu in received] == [b"STOP"]
            assert gw.store is not None
            records = await gw.store.current("15551234567")
            assert [r.state.value for r in records.values()] == ["opted_out"]
            assert sim.messages == []
