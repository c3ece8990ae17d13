"""Shared consent store on Redis Cluster (``RedisClusterStore``, a ``RedisStore`` per slot).

URL (query parameters as for ``redis://``, see ``gateway.store.redis``)::

    redis+cluster://[[user]:password@]host1:port[,host2:port...][?prefix=gw&timeout_s=1.0&...]
    rediss+cluster://...                          (TLS; ssl_ca_certs=, ssl_cert_reqs=, ...)

The hosts are seeds: any one that answers gives the whole map (``CLUSTER SLOTS``). A path
(``/db``: a cluster has database 0 only) and ``sentinel_password`` are refused as errors
naming ``store.url``. ``wait_replicas=N`` waits, after each write, for N replicas of the master
that took it (``WAIT`` on that master's connection).

Routing: the store keeps the slot map itself and sends every command to the master of its key's
slot on a plain connection of that master (no redirections followed, no retries): a ``MOVED``
or ``ASK`` answer (slots being moved), ``CLUSTERDOWN``, or a master that does not answer is
StoreUnavailableError at once, like any outage (fail closed); the map is read again when the
invalidation listener resubscribes and on every ``probe()``, which the fail-closed guard runs
to recover, so the store comes back by itself once the cluster is whole.

Keys: a subscriber's keys are the single-Redis store's, ``gw:{s}:c``, ``gw:{s}:h`` and so on,
whose hash tag ``{s}`` puts them all in one slot: every script and pipeline that touches one
subscriber stays in that slot. What is global on one Redis is per slot here:

- the record counter: ``gw:records:{t}`` per slot, ``t`` a short tag of that slot (the first of
  ``n0``, ``n1``, ... that hashes to it), incremented by the append script in the subscriber's
  slot; ``record_count()`` adds up all 16,384 with one script per master (about 25 ms for
  three masters; the script reads several slots of its node, which needs Redis 7.0 or newer);
- ``gw:mid:<id>`` (message ids): one key each, any slot; a put is one pipeline per master;
- ``probe()``: ``gw:probe:{t}:<origin>`` on every master (a slot of each), so a probe passes
  only when every master takes a write;
- imports: see below.

Invalidation: classic ``PUBLISH`` (from the append script) is broadcast to every node of the
cluster, sharded pub/sub (``SPUBLISH``) only to the slot's shard. The store subscribes to the
channel on *every* master, with one connection each, and the cache is enabled only while all
those subscriptions are confirmed and alive (the lease of the single-Redis store, per
connection). A change is then delivered to this store by the very master that applied it, on
a connection that either delivers it or breaks (and a break disables and empties the cache):
nothing depends on the cluster bus delivering a message in time. ``sync()`` publishes one token
through each master and waits for each on that master's own connection, which proves that every
change acknowledged anywhere before the call has been read.

Imports are all or nothing, then resumable, across slots:

1. *Staged*: the run's record ``gw:{imports}:run:<run>`` (state ``staging``, the list of
   slot tags it stages into) is written and the run is added to ``gw:{imports}:staging``
   (a sorted set by start time); then each slot's share of the changes goes into
   ``gw:import:{t}:<run>:changes`` with its hash ``gw:import:{t}:<run>`` in that slot. Nothing
   expires by itself: a run abandoned before its commit point is swept by a later import or
   resume once it is a day old (marked ``aborted`` in one step, then its staged keys deleted).
2. *Committed*: one script on the run's record turns ``staging`` into ``committed`` and adds
   the run to ``gw:{imports}:committed``; it refuses a run that was swept. That is the commit
   point, and every staged key exists then.
3. *Applied*: each slot's share is committed in its slot (idempotent) and applied in chunks by
   the single-Redis store's apply script, which moves that share's cursor in the same step; the
   last slot done marks the run ``done``. ``resume_imports`` does step 3 for every committed run
   that was cut off, never applying a change twice.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.consent.model import ConsentEvent, ConsentRecord
from gateway.store.base import (
    ImportChange,
    ImportOutcome,
    ResumedImports,
    StoreError,
    StoreUnavailableError,
    check_import_changes,
    event_from_json,
)
from gateway.store.redis import (
    _IMPORT_APPLY_CHUNK,
    _IMPORT_DONE_TTL_S,
    _IMPORT_STAGING_TTL_S,
    _SYNC_MARK,
    _UNAVAILABLE,
    RedisOptions,
    RedisStore,
    _decode_current,
    _describe,
    _options_from_query,
    _parse_hostport,
    close_pubsub,
)
from gateway.telemetry import logs

T = TypeVar("T")

_log = structlog.get_logger("gateway.store.redis")

SLOTS: Final = 16_384
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
_CLIENT_PARAMS: Final = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"})
_SCAN_PIPELINE: Final = 1000

# A slot's share of a run, committed in its slot once the run is. KEYS: the share's hash, its
# staged list, the slot's set of committed shares. ARGV: run id. Idempotent: a share already
# committed (or applied, its list gone, or its hash expired a week after) is left as it is:
# after the commit point every share was staged whole, so a missing one is one applied.
_SHARE_COMMIT_LUA: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'staging' then
  if redis.call('LLEN', KEYS[2]) ~= tonumber(redis.call('HGET', KEYS[1], 'total')) then
    return redis.error_reply('ERR import: not every change was staged')
  end
  redis.call('HSET', KEYS[1], 'state', 'committed')
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
"""
# The commit point. KEYS: the run's record, the committed set, the staging set. ARGV: run id.
_RUN_COMMIT_LUA: Final = """
if redis.call('HGET', KEYS[1], 'state') ~= 'staging' then
  return redis.error_reply('ERR import: the run was abandoned before its commit point')
end
redis.call('HSET', KEYS[1], 'state', 'committed')
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
# Abandon a run still staging (a sweep, or a failed import). KEYS: the run's record.
# Returns its slot tags (JSON) when it is (now) aborted, nil when it had passed its commit point.
_RUN_ABORT_LUA: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'staging' or state == 'aborted' then
  redis.call('HSET', KEYS[1], 'state', 'aborted')
  return redis.call('HGET', KEYS[1], 'groups') or '[]'
end
if state == false then return '[]' end
return nil
"""
# The record counters of one master's slots, added up in one step on that master. ARGV: the
# counter keys (of that master's slots only). Reading keys of several slots of one node needs
# Redis 7's allow-cross-slot-keys; keys a node does not serve are an error (fail closed).
_COUNT_LUA: Final = """#!lua flags=allow-cross-slot-keys,no-writes
local total = 0
for _, key in ipairs(ARGV) do
  local value = redis.call('GET', key)
  if value then
    local n = tonumber(value)
    if n == nil then return redis.error_reply('ERR undecodable record counter') end
    total = total + n
  end
end
return total
"""


def key_slot(key: str) -> int:
    """The cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, or of the key, mod 16384."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % SLOTS


@cache
def slot_tags() -> tuple[str, ...]:
    """A short hash tag for every slot (``n0``, ``n1``, ...: the first that hashes to it)."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    n = 0
    while missing:
        tag = f"n{n}"
        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


@dataclass(frozen=True, slots=True)
class ClusterMap:
    """Which master serves each slot (``owners[slot]`` is a ``host:port`` name)."""

    owners: tuple[str, ...]
    addresses: dict[str, tuple[str, int]]

    def slots_of(self, name: str) -> list[int]:
        return [slot for slot, owner in enumerate(self.owners) if owner == name]


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], RedisOptions, dict[str, Any]]:
    """Seeds, options and the keyword arguments of every node's connection pool."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise StoreError(f"store.url: unsupported scheme {parts.scheme!r}")
    options, rest = _options_from_query(dict(parse_qsl(parts.query)))
    if "sentinel_password" in rest:
        raise StoreError("store.url: sentinel_password does not apply to a cluster")
    unknown = set(rest) - _CLIENT_PARAMS
    if unknown:
        raise StoreError(f"store.url: unknown parameter(s) {', '.join(sorted(unknown))}")
    if parts.path.strip("/"):
        raise StoreError(
            "store.url: a cluster has database 0 only; drop the path "
            f"({parts.scheme}://host:port[,host:port...][?...])"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [_parse_hostport(h, 6379) for h in hosts.split(",") if h]
    if not seeds:
        raise StoreError(f"store.url: use {parts.scheme}://host:port[,host:port...]")
    username, _, password = userinfo.partition(":")
    tls = parts.scheme == "rediss+cluster"
    pool_kwargs: dict[str, Any] = {
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "socket_timeout": options.timeout_s,
        "socket_connect_timeout": options.timeout_s,
        "retry": Retry(NoBackoff(), 0),  # fail fast: the proxy answers "try later"
        "decode_responses": True,
        "max_connections": options.max_connections,
        "timeout": options.timeout_s,
        "connection_class": SSLConnection if tls else Connection,
        **({k: v for k, v in rest.items() if k.startswith("ssl_")} if tls else {}),
    }
    return seeds, options, pool_kwargs


class RedisClusterStore(RedisStore):
    """ConsentStore on Redis Cluster; build it with ``await RedisClusterStore.from_url(...)``."""

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        pool_kwargs: dict[str, Any],
        *,
        instance: str,
        options: RedisOptions,
    ) -> None:
        self._seeds = list(seeds)
        self._pool_kwargs = dict(pool_kwargs)
        if instance:
            self._pool_kwargs["client_name"] = f"smpp-gateway:{instance}"
        self._nodes: dict[str, Redis] = {}
        seed = self._node(*self._seeds[0])
        super().__init__(seed, instance=instance, options=options)
        self._map: ClusterMap | None = None
        slot_tags()  # built once per process (about 0.1 s): now, not on the first write
        self._listening: tuple[str, ...] = ()  # the masters the listener subscribes on
        self._share_commit_script = seed.register_script(_SHARE_COMMIT_LUA)
        self._run_commit_script = seed.register_script(_RUN_COMMIT_LUA)
        self._run_abort_script = seed.register_script(_RUN_ABORT_LUA)
        self._count_script = seed.register_script(_COUNT_LUA)

    @classmethod
    async def from_url(
        cls, url: str, *, instance: str, require_up: bool = True
    ) -> RedisClusterStore:
        seeds, options, pool_kwargs = parse_cluster_url(url)
        store = cls(seeds, pool_kwargs, instance=instance, options=options)
        if not require_up:
            store._start_listener()
            return store
        try:
            await store.refresh_map()
            await store.ping()
            store._start_listener()
            await store.wait_cache_ready(store.options.ready_timeout_s)
        except BaseException:
            await store.close()
            raise
        return store

    # --- the slot map -------------------------------------------------------------------------

    def _node(self, host: str, port: int) -> Redis:
        name = f"{host}:{port}"
        client = self._nodes.get(name)
        if client is None:
            pool = BlockingConnectionPool(host=host, port=port, **self._pool_kwargs)
            client = self._nodes[name] = Redis.from_pool(pool)
        return client

    async def refresh_map(self) -> ClusterMap:
        """Read ``CLUSTER SLOTS`` from the first node that answers (known masters, then seeds).

        Raises StoreUnavailableError when none answers or the map leaves a slot uncovered.
        """
        known = [] if self._map is None else list(self._map.addresses.values())
        last: BaseException | None = None
        for host, port in dict.fromkeys([*known, *self._seeds]):
            try:
                async with asyncio.timeout(self.options.timeout_s * 2):
                    raw = await self._node(host, port).execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER SLOTS"
                    )
                found = self._parse_slots(raw, host)
            except (*_UNAVAILABLE, redis_errors.RedisError, StoreUnavailableError) as exc:
                last = exc
                continue
            self._map = found
            return found
        raise StoreUnavailableError(f"redis cluster: no node gave a slot map: {last}") from last

    def _parse_slots(self, raw: Any, asked: str) -> ClusterMap:
        owners: list[str | None] = [None] * SLOTS
        addresses: dict[str, tuple[str, int]] = {}
        for entry in raw:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = str(master[0]) or asked  # an empty host means "the node you asked"
            port = int(master[1])
            name = f"{host}:{port}"
            addresses[name] = (host, port)
            self._node(host, port)
            for slot in range(start, end + 1):
                owners[slot] = name
        if any(owner is None for owner in owners):
            raise StoreUnavailableError("redis cluster: not every slot is served")
        return ClusterMap(tuple(o for o in owners if o is not None), addresses)

    def _current_map(self) -> ClusterMap:
        if self._map is None:
            raise StoreUnavailableError("redis cluster: no slot map yet")
        return self._map

    # --- routing ------------------------------------------------------------------------------

    def _client_for(self, key: str) -> Redis:
        return self._nodes[self._current_map().owners[key_slot(key)]]

    def _slot(self, key: str) -> int:
        return key_slot(key)

    def _records_key_for(self, subscriber: str) -> str:
        return self._slot_records_key(key_slot(self._key(subscriber, "c")))

    def _slot_records_key(self, slot: int) -> str:
        return f"{self._p}:records:{{{slot_tags()[slot]}}}"

    def _group(self, items: Sequence[T], key: Callable[[T], str]) -> list[tuple[Redis, list[T]]]:
        owners = self._current_map().owners
        groups: dict[str, list[T]] = {}
        for item in items:
            groups.setdefault(owners[key_slot(key(item))], []).append(item)
        return [(self._nodes[name], part) for name, part in groups.items()]

    def _masters(self) -> list[tuple[str, Redis, int]]:
        """Each master, its client and one slot it serves."""
        cmap = self._current_map()
        first: dict[str, int] = {}
        for slot, owner in enumerate(cmap.owners):
            first.setdefault(owner, slot)
        return [(name, self._nodes[name], slot) for name, slot in first.items()]

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await super()._call(awaitable)
        except StoreUnavailableError as exc:
            if isinstance(exc.__cause__, (redis_errors.AskError, redis_errors.ClusterDownError)):
                # Slots moved or the cluster is not whole: the map and the subscriptions may be
                # wrong; the listener reads the map again when it resubscribes.
                self._channel_suspect()
            raise

    # --- invalidation listener: one subscription per master -----------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            tasks: list[asyncio.Task[None]] = []
            try:
                cmap = await self.refresh_map()
                names = tuple(dict.fromkeys(cmap.owners))
                self._listening = names
                for name in names:
                    # Pooled connections idle since before an outage are dead; drop them now.
                    await self._nodes[name].connection_pool.disconnect(inuse_connections=False)
                confirmed: set[str] = set()
                tasks = [
                    asyncio.create_task(self._listen_node(name, confirmed, len(names)))
                    for name in names
                ]
                done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the first to end raises why
            except (*_UNAVAILABLE, redis_errors.RedisError, StoreUnavailableError) as exc:
                if self._subscribed.is_set():
                    _log.warning(logs.STORE_INVALIDATIONS_LOST, error=_describe(exc))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - task boundary: log, keep the cache off, go on
                _log.exception(logs.STORE_LISTENER_FAILED)
            finally:
                if asyncio.current_task() is self._listener:  # not a retired listener
                    self._subscribed.clear()
                    self._cache.disable()
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=self.options.heartbeat_s * 4 + 1)
            # Not a synchronisation sleep: back-off between reconnection attempts.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _listen_node(self, name: str, confirmed: set[str], total: int) -> None:
        loop = asyncio.get_running_loop()
        pubsub: PubSub = self._nodes[name].pubsub()
        watched: int | None = None
        try:
            await pubsub.subscribe(self._channel)
            watched = self._watch(pubsub)
            last_heard = loop.time()
            while not self._closed:
                message = await pubsub.get_message(timeout=self.options.heartbeat_s)
                if message is None:
                    self._check_alive(loop.time() - last_heard)
                    await pubsub.ping("heartbeat")
                    continue
                last_heard = loop.time()
                kind = message.get("type")
                data = str(message.get("data"))
                if kind == "subscribe":
                    confirmed.add(name)
                    if len(confirmed) == total:  # the cache only once every master is heard
                        self._cache.enable(self._lease_s)
                        self._subscribed.set()
                elif kind == "message" and data.startswith(_SYNC_MARK):
                    # A token counts only on the connection of the master it was published on.
                    if data.endswith("@" + name):
                        waiter = self._sync_waiters.pop(data[1:], None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
                    self._cache.extend(self._lease_s)
                else:
                    self._on_message(message)
        finally:
            if watched is not None:
                self._inbox.forget(watched)  # before the close frees the descriptor
            with contextlib.suppress(Exception):
                await close_pubsub(pubsub)

    async def sync(self) -> None:
        """One token through each master, each awaited on that master's own connection."""
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        names = self._listening
        if not names or not self._subscribed.is_set():
            raise StoreUnavailableError("redis cluster: invalidation channel not confirmed")
        waiters = {f"{token}@{name}": loop.create_future() for name in names}
        self._sync_waiters.update(waiters)
        try:
            for mark, name in zip(waiters, names, strict=True):
                await self._call(self._nodes[name].publish(self._channel, _SYNC_MARK + mark))
            async with asyncio.timeout(self.options.timeout_s):
                await asyncio.gather(*waiters.values())
        except TimeoutError as exc:
            raise StoreUnavailableError("redis: invalidation channel did not answer") from exc
        finally:
            for mark in waiters:
                self._sync_waiters.pop(mark, None)

    # --- what spans slots ---------------------------------------------------------------------

    async def record_count(self) -> int:
        """The per-slot counters added up: one script per master over its slots' counters
        (a pipeline of 16,384 GETs would cost the event loop about 0.2 s of Python)."""
        cmap = self._current_map()
        total = 0
        for name in dict.fromkeys(cmap.owners):
            keys = [self._slot_records_key(slot) for slot in cmap.slots_of(name)]
            raw = await self._call(self._count_script(keys=[], args=keys, client=self._nodes[name]))
            total += int(raw)
        return total

    async def ping(self) -> None:
        """A read of real data (a record counter) on every master."""
        for _name, client, slot in self._masters():
            await self._call(client.get(self._slot_records_key(slot)))

    async def probe(self) -> None:
        """Read the slot map again, then SET, GET and WAIT on every master: the write path of
        every slot works end to end."""
        await self.refresh_map()
        token = uuid.uuid4().hex
        for _name, client, slot in self._masters():
            key = f"{self._p}:probe:{{{slot_tags()[slot]}}}:{self._origin}"

            async def run(client: Redis = client, key: str = key) -> list[Any]:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(key, token, px=10_000)
                    pipe.get(key)
                    self._wait_replicas(pipe)
                    return await pipe.execute()

            results = await self._call(run())
            if results[1] != token:
                raise StoreUnavailableError("redis: the probe key did not read back")
            self._check_replicas(results[-1], "probe")

    async def export(self) -> AsyncIterator[ConsentRecord]:
        """Every current record once: SCAN on each master in turn, scopes sorted within each
        subscriber (a subscriber's keys are in one slot, so on one master)."""
        pattern = f"{self._p}:{{*}}:c"
        for name in dict.fromkeys(self._current_map().owners):
            client = self._nodes[name]
            done: set[str] = set()
            cursor = 0
            while True:
                cursor, keys = await self._call(
                    client.scan(cursor=cursor, match=pattern, count=_SCAN_PIPELINE)
                )
                fresh = [s for s in (str(k)[len(self._p) + 2 : -3] for k in keys) if s not in done]
                if fresh:

                    async def load(fresh: list[str] = fresh, client: Redis = client) -> list[Any]:
                        async with client.pipeline(transaction=False) as pipe:
                            for subscriber in fresh:
                                pipe.hgetall(self._key(subscriber, "c"))
                            return await pipe.execute()

                    for subscriber, raw in zip(fresh, await self._call(load()), strict=True):
                        done.add(subscriber)
                        records = _decode_current(subscriber, raw)
                        for scope in sorted(records):
                            yield records[scope]
                if cursor == 0:
                    break

    # --- imports across slots -----------------------------------------------------------------

    def _run_keys(self) -> tuple[str, str]:
        return f"{self._p}:{{imports}}:committed", f"{self._p}:{{imports}}:staging"

    def _run_key(self, run: str) -> str:
        return f"{self._p}:{{imports}}:run:{run}"

    def _share_keys(self, tag: str, run: str) -> list[str]:
        """A slot's share of a run: its hash, its staged list, the slot's committed shares."""
        return [
            f"{self._p}:import:{{{tag}}}:{run}",
            f"{self._p}:import:{{{tag}}}:{run}:changes",
            f"{self._p}:imports:{{{tag}}}",
        ]

    async def _on_run_node(self, key: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._call(script(keys=keys, args=args, client=self._client_for(key)))

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        """Staged per slot, committed in one step, applied per slot (see the module docstring)."""
        if self._closed:
            raise StoreError("store is closed")
        check_import_changes(changes)
        if not changes:
            return ImportOutcome(appended=0)
        await self._sweep_abandoned()
        tags = slot_tags()
        shares: dict[str, list[ImportChange]] = {}
        for change in changes:
            slot = key_slot(self._key(change.event.subscriber, "c"))
            shares.setdefault(tags[slot], []).append(change)
        run = uuid.uuid4().hex
        record = self._run_key(run)
        committed, staging = self._run_keys()
        started = time.time()

        async def begin() -> None:
            async with self._client_for(record).pipeline(transaction=True) as pipe:
                pipe.hset(
                    record,
                    mapping={
                        "state": "staging",
                        "total": len(changes),
                        "groups": json.dumps(sorted(shares)),
                        "started": repr(started),
                        "instance": self.instance,
                    },
                )
                pipe.zadd(staging, {run: started})
                await pipe.execute()

        await self._call(begin())
        try:
            for tag, part in shares.items():
                meta, staged, _set = self._share_keys(tag, run)
                await self._stage_import(
                    meta, staged, part, client=self._client_for(meta), ttl=None
                )
            await self._on_run_node(
                record, self._run_commit_script, [record, committed, staging], [run]
            )
        except StoreUnavailableError:
            # Safe whatever happened: the abort script leaves a run that passed its commit
            # point (a lost reply) to resume_imports, and otherwise takes everything away.
            with contextlib.suppress(StoreError):
                await self._abort_run(run)
            raise
        try:
            return await self._apply_run(run)
        finally:
            for change in changes:
                self._cache.invalidate(change.event.subscriber)

    async def _abort_run(self, run: str) -> None:
        """Abandon a run before its commit point: mark it, then delete what it staged."""
        record = self._run_key(run)
        raw = await self._on_run_node(record, self._run_abort_script, [record], [])
        if raw is None:
            return  # it passed its commit point: resume_imports completes it
        for tag in json.loads(raw):
            meta, staged, _set = self._share_keys(str(tag), run)
            await self._call(self._client_for(meta).delete(meta, staged))
        _committed, staging = self._run_keys()
        client = self._client_for(record)
        await self._call(client.zrem(staging, run))
        await self._call(client.expire(record, _IMPORT_DONE_TTL_S))

    async def _sweep_abandoned(self) -> None:
        """Abort the runs that have been staging for longer than a day (their importer died)."""
        _committed, staging = self._run_keys()
        cutoff = time.time() - _IMPORT_STAGING_TTL_S
        old = await self._call(self._client_for(staging).zrangebyscore(staging, "-inf", cutoff))
        for run in old:
            await self._abort_run(str(run))

    async def _apply_run(self, run: str) -> ImportOutcome:
        """Commit and apply each slot's share to its end, then mark the run done."""
        record = self._run_key(run)
        committed, _staging = self._run_keys()
        raw_groups = await self._call(self._client_for(record).hget(record, "groups"))
        appended = 0
        refused: set[str] = set()
        for tag in json.loads(raw_groups or "[]"):
            keys = self._share_keys(str(tag), run)
            client = self._client_for(keys[0])
            await self._call(self._share_commit_script(keys=keys, args=[run], client=client))
            apply_keys = [*keys, self._slot_records_key(key_slot(keys[0]))]
            args: list[str | int] = [
                self._p,
                self._channel,
                self._origin,
                run,
                _IMPORT_APPLY_CHUNK,
                _IMPORT_DONE_TTL_S,
            ]
            while True:

                async def apply(
                    client: Redis = client, keys: list[str] = apply_keys, args: list[Any] = args
                ) -> list[Any]:
                    async with client.pipeline(transaction=False) as pipe:
                        await self._import_apply_script(keys=keys, args=args, client=pipe)
                        self._wait_replicas(pipe)
                        return await pipe.execute()

                results = await self._call(apply())
                self._check_replicas(results[-1], "import")
                done, left, ids = results[0]
                appended += int(done)
                refused.update(str(i) for i in ids)
                if int(left) <= 0:
                    break

        async def finish() -> None:
            async with self._client_for(record).pipeline(transaction=True) as pipe:
                pipe.hset(record, "state", "done")
                pipe.srem(committed, run)
                pipe.expire(record, _IMPORT_DONE_TTL_S)
                await pipe.execute()

        await self._call(finish())
        return ImportOutcome(appended=appended, conflicts=frozenset(refused))

    async def resume_imports(self) -> ResumedImports:
        """Apply, to the end, every run that passed its commit point but was cut off."""
        if self._closed:
            raise StoreError("store is closed")
        await self._sweep_abandoned()
        committed, _staging = self._run_keys()
        runs = sorted(await self._call(self._client_for(committed).smembers(committed)))
        appended = 0
        events: list[ConsentEvent] = []
        try:
            for run in runs:
                record = self._run_key(str(run))
                raw_groups = await self._call(self._client_for(record).hget(record, "groups"))
                planned: list[ConsentEvent] = []
                for tag in json.loads(raw_groups or "[]"):
                    _meta, staged, _set = self._share_keys(str(tag), str(run))
                    raw = await self._call(self._client_for(staged).lrange(staged, 0, -1))
                    planned.extend(event_from_json(json.loads(item)[5]) for item in raw)
                appended += (await self._apply_run(str(run))).appended
                stored = await self.history_many({e.subscriber for e in planned})
                ids = {e.event_id for history in stored.values() for e in history}
                events.extend(e for e in planned if e.event_id in ids)  # not the refused
        finally:
            if runs:
                self._cache.clear()
        return ResumedImports(appended=appended, events=tuple(events))

    async def close(self) -> None:
        await super().close()
        for client in self._nodes.values():
            with contextlib.suppress(Exception):
                await client.aclose()


async def read_record_count(url: str) -> int:
    """The record count of the cluster store at ``url``, for ``check-config``: the slot map
    and the counters, on clients of its own (no invalidation listener), nothing written."""
    seeds, options, pool_kwargs = parse_cluster_url(url)
    store = RedisClusterStore(seeds, pool_kwargs, instance="check-config", options=options)
    try:
        await store.refresh_map()
        return int(await store.record_count())
    finally:
        await store.close()
