"""aiosmpplib as a client under test: a hook that queues what the ESME receives."""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmpplib import AbstractHook, SmppMessage


class Inbox(AbstractHook):  # type: ignore[misc]
    """aiosmpplib hook that queues every message the ESME receives."""

    def __init__(self, wait_s: float = 5.0) -> None:
        self.inbox: asyncio.Queue[SmppMessage] = asyncio.Queue()
        self.wait_s = wait_s

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        return None

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        if smpp_message is not None:
            await self.inbox.put(smpp_message)

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        return None

    async def next(self, kind: type[Any]) -> Any:
        """The next received message of ``kind`` (others are skipped), within ``wait_s``."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), self.wait_s)
            if isinstance(message, kind):
                return message
