"""Run a real gateway in-process on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.app import Gateway
from gateway.config import GatewayConfig, parse
from gateway.proxy.hooks import Interceptor


def gateway_config(
    upstream_port: int, **sections: dict[str, Any] | list[dict[str, Any]]
) -> GatewayConfig:
    """A config for tests: listen on a free port, relay to ``upstream_port``, fast timers.

    A table section is merged into the defaults; an array of tables (``campaigns=[...]``) is
    taken as given."""
    data: dict[str, Any] = {
        "gateway": {"instance": "test-gw", "shutdown_grace_s": 5},
        "server": {"listen": "127.0.0.1:0"},
        "upstream": {"address": f"127.0.0.1:{upstream_port}", "connect_timeout_s": 5},
        "session": {"response_timeout_s": 10, "enquire_link_interval_s": 30, "unbind_timeout_s": 2},
        "logging": {"level": "warning"},
        # Not durable; tests about durability name a sqlite or redis URL of their own.
        "store": {"url": "memory://"},
    }
    for name, values in sections.items():
        if isinstance(values, list):
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    return parse(data)


@contextlib.asynccontextmanager
async def running_gateway(
    upstream_port: int,
    *,
    interceptor_factory: Callable[[GatewayConfig], Interceptor] | None = None,
    **sections: dict[str, Any] | list[dict[str, Any]],
) -> AsyncIterator[Gateway]:
    gw = Gateway(gateway_config(upstream_port, **sections), interceptor_factory=interceptor_factory)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
