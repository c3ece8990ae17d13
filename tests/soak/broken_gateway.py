"""``python -m tests.soak.broken_gateway run --config FILE``: the gateway with one deliberate
bug, chosen by ``SOAK_BREAK``, to show that the soak's audit catches it (tests/soak).

- ``ack_unstored``: an MO the store cannot take is forwarded to the client (so the SMSC gets
  its OK) instead of being refused for a retry: a STOP acknowledged that was never stored.
- ``forward_unchecked``: an MT whose consent cannot be read (the store is down) is forwarded
  instead of refused: it fails open.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.cli import main
from gateway.proxy.consent import ConsentEnforcer
from gateway.proxy.hooks import MoRequest, MtRequest
from gateway.proxy.mo import MoPath
from gateway.store.base import StoreError

BREAKS = ("ack_unstored", "forward_unchecked")


def _ack_unstored(self: MoPath, request: MoRequest, held: Any) -> None:
    request.forward()


async def _forward_unchecked(self: ConsentEnforcer, request: MtRequest, mt: Any) -> None:
    try:
        records = await self.store.current(mt.subscriber.value)
    except StoreError:
        request.forward()
        return
    self._mt_decide(request, mt, records, False)


def install(name: str) -> None:
    if name == "ack_unstored":
        MoPath._retry_later = _ack_unstored  # type: ignore[method-assign]
    elif name == "forward_unchecked":
        ConsentEnforcer._mt_slow = _forward_unchecked  # type: ignore[method-assign]
    else:
        raise SystemExit(f"SOAK_BREAK must be one of {', '.join(BREAKS)}, not {name!r}")


if __name__ == "__main__":
    install(os.environ.get("SOAK_BREAK", ""))
    raise SystemExit(main())
