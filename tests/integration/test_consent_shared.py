"""Two gateway instances sharing one real redis-server, and sharing a real three-master Redis
Cluster: a change made through one is enforced by the other at once, although the other had the
subscriber in its local cache."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gateway.app import Gateway
from gateway.simulator import Simulator
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    OPT_IN_REPLY,
    OPT_OUT_REPLY,
    SUBSCRIBER,
    UNGROUPED,
    SmpplibEsme,
    acme_campaigns,
    consent_gateway,
    simulator,
    texts_to,
    wait_texts,
)
from tests.support.redis_server import RedisClusterServers, RedisServer

pytestmark = pytest.mark.redis
OPTED_OUT = 0x45


@pytest.fixture(params=["redis_server", "redis_cluster"])
def shared(request: pytest.FixtureRequest) -> RedisServer | RedisClusterServers:
    """The shared store's servers: one Redis, or a cluster (its URL names every master)."""
    server: RedisServer | RedisClusterServers = request.getfixturevalue(request.param)
    return server


@asynccontextmanager
async def two_gateways(
    shared: RedisServer | RedisClusterServers,
) -> AsyncIterator[tuple[Simulator, Gateway, Gateway]]:
    # A key prefix of its own keeps this test's records apart from other tests on the server.
    url = f"{shared.url}?prefix=t{uuid.uuid4().hex[:12]}"
    async with (
        simulator() as sim,
        consent_gateway(sim.port, url, campaigns=acme_campaigns(), instance="gw-a") as a,
        consent_gateway(sim.port, url, campaigns=acme_campaigns(), instance="gw-b") as b,
    ):
        yield sim, a, b


class TestTwoInstances:
    async def test_stop_through_one_is_enforced_by_the_other(
        self, shared: RedisServer | RedisClusterServers
    ) -> None:
        """STOP received by gateway A refuses gateway B's next MT (0x45); START through A lets
        B's MTs through again."""
        async with (
            two_gateways(shared) as (sim, a, b),
            SmpplibEsme(a.port, "acme"),
            SmpplibEsme(b.port, "acme", bind="transmitter") as via_b,  # MOs go through A only
        ):
            assert await via_b.submit(SUBSCRIBER, "before", source=NUMBER_1) == 0  # B caches it
            assert b.store is not None
            assert b.store.cached_current(SUBSCRIBER) is not None

            status = await sim.send_mo(
                source=SUBSCRIBER, destination=NUMBER_1, text="STOP", system_id="acme"
            )
            assert status == 0
            assert await wait_texts(sim, SUBSCRIBER, 2) == ["before", OPT_OUT_REPLY]
            assert await via_b.submit(SUBSCRIBER, "after", source=NUMBER_1) == OPTED_OUT

            status = await sim.send_mo(
                source=SUBSCRIBER, destination=NUMBER_1, text="START", system_id="acme"
            )
            assert status == 0
            assert await wait_texts(sim, SUBSCRIBER, 3) == ["before", OPT_OUT_REPLY, OPT_IN_REPLY]
            assert await via_b.submit(SUBSCRIBER, "welcome back", source=NUMBER_1) == 0
            assert await wait_texts(sim, SUBSCRIBER, 4) == [
                "before",
                OPT_OUT_REPLY,
                OPT_IN_REPLY,
                "welcome back",
            ]
            history = await b.store.history(SUBSCRIBER)
            assert [(e.state.value, e.instance) for e in history] == [
                ("opted_out", "gw-a"),
                ("opted_in", "gw-a"),
            ]

    async def test_resent_stop_through_the_other_instance_is_not_confirmed_again(
        self, shared: RedisServer | RedisClusterServers
    ) -> None:
        """The SMSC's resend of a STOP, delivered through the other instance, is acknowledged
        and recorded once, and gets no second confirmation."""
        async with two_gateways(shared) as (sim, a, b):
            for gw in (a, b):  # one receiving session at a time: the MO goes through ``gw``
                async with SmpplibEsme(gw.port, "acme") as esme:
                    status = await sim.send_mo(
                        source=SUBSCRIBER, destination=NUMBER_1, text="STOP", system_id="acme"
                    )
                    assert status == 0
                    assert esme.mo_texts() == [b"STOP"]
                    assert await esme.submit(BYSTANDER, "marker", source=UNGROUPED) == 0
                    await sim.wait_for(lambda msgs: msgs[-1].text == "marker")
            assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]
            assert b.store is not None
            assert [e.instance for e in await b.store.history(SUBSCRIBER)] == ["gw-a"]
