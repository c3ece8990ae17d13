"""Whether invalidations may be waiting, unread, on the subscription connections.

The local cache is right only about changes whose invalidation it has processed. Redis
publishes a change's invalidation in the same script that commits it, before anyone hears of
the change; a client may still act on the change before this process's listener task has read
that invalidation: a STOP taken by another instance, its confirmation sent, the client's
application told, and then an MT to the same number through this instance. Under load the
event loop reads the MT's socket in the same turn as the subscription's (or runs the SMPP
callback before the listener task gets its turn), and the cache would answer from the state
before the STOP.

So before the cache answers, ``Inbox.pending()`` looks at every subscription connection: bytes
read by asyncio into the connection's ``StreamReader`` but not yet parsed by redis-py (every
time), or in the kernel's receive buffer (one ``poll`` with a zero timeout over all of them,
once per turn of the event loop while it finds nothing). If there are any,
the lookup goes to Redis, which already holds the change (a round trip, only while an
invalidation is in flight). What reached this host before the MT was read is therefore
applied to the MT's decision; what arrives later belongs to a change the MT did not follow.

This reads internals of redis-py (a connection's ``_reader`` and ``_writer``) and of asyncio (a
``StreamReader``'s ``_buffer``). Where they are not as expected, ``watch`` says why and the
inbox stays blind: the cache is not asked, every lookup goes to Redis (slower, never stale).
The tests pin the behaviour for the versions installed.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any


class Inbox:
    """The subscription connections of one store, watched for unread bytes."""

    __slots__ = ("_blind", "_buffers", "_next", "_poll", "_quiet_this_turn", "_watched")

    def __init__(self) -> None:
        self._watched: dict[int, tuple[int, bytearray]] = {}  # handle -> (fd, StreamReader buffer)
        self._blind: set[int] = set()  # handles of connections that could not be watched
        self._buffers: tuple[bytearray, ...] = ()
        self._poll = select.poll()
        self._next = 0
        self._quiet_this_turn = False

    def watch(self, pubsub: Any) -> tuple[int, str | None]:
        """Watch the connection a subscribed redis-py ``PubSub`` reads from.

        Returns a handle for ``forget`` and, when the connection cannot be watched, why: the
        inbox is then blind (``pending`` is always True) until that handle is forgotten.
        """
        self._next += 1
        handle = self._next
        try:
            connection = pubsub.connection
            buffer = connection._reader._buffer
            fd = int(connection._writer.get_extra_info("socket").fileno())
        except (AttributeError, TypeError, ValueError, OSError) as exc:
            self._blind.add(handle)
            return handle, f"cannot watch the subscription connection: {exc!r}"
        if not isinstance(buffer, bytearray) or fd < 0:
            self._blind.add(handle)
            return handle, "the subscription connection has no readable buffer"
        self._watched[handle] = (fd, buffer)
        self._poll.register(fd, select.POLLIN | select.POLLPRI)
        self._buffers = tuple(b for _fd, b in self._watched.values())
        return handle, None

    def forget(self, handle: int) -> None:
        """Stop watching; call it before the connection is closed (its descriptor is reused)."""
        self._blind.discard(handle)
        watched = self._watched.pop(handle, None)
        if watched is not None:
            fd = watched[0]
            if all(other != fd for other, _b in self._watched.values()):
                self._poll.unregister(fd)
            self._buffers = tuple(b for _fd, b in self._watched.values())

    def pending(self) -> bool:
        """True when a watched connection has unread bytes, or none can be watched."""
        if self._blind or not self._buffers:
            return True
        for buffer in self._buffers:
            if buffer:
                return True
        if self._quiet_this_turn:
            return False
        # Any event counts: POLLIN, and also POLLHUP / POLLERR / POLLNVAL (a closed or broken
        # connection, which the listener is about to report).
        if self._poll.poll(0):
            return True
        # Quiet: so it stays for the rest of this turn of the loop. The PDUs decided in this
        # turn were read after the readiness the loop polled for, and an invalidation that
        # arrives after this poll is a race the next turn settles (as the SQLite store's
        # change check).
        try:
            asyncio.get_running_loop().call_soon(self._end_turn)
            self._quiet_this_turn = True
        except RuntimeError:
            pass  # no running loop: poll every time
        return False

    def _end_turn(self) -> None:
        self._quiet_this_turn = False
