"""Shared consent store on Redis, for several gateway instances (redis-py asyncio).

URLs (query parameters are optional; see ``RedisOptions`` for their meaning and defaults)::

    redis://[[user]:password@]host[:port][/db][?prefix=gw&timeout_s=1.0&...]
    rediss://...                                  (TLS; ssl_ca_certs=, ssl_cert_reqs=, ...)
    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/service_name[/db][?...]
                                                  (sentinel_password= for the sentinels)

Keys, per subscriber, all sharing the hash tag ``{subscriber}`` so one append touches one
cluster slot: ``gw:{s}:c`` (hash scope -> current record), ``gw:{s}:h`` (list: the append-only
history), ``gw:{s}:f`` (hash campaign -> time the footer was first sent), ``gw:{s}:d:<key>``
(dedup marks). Invalidations go to the channel ``gw:invalidate``. ``gw:records`` counts the
current records (``record_count()``): the append script increments it when it adds a new scope
to a subscriber's current hash. A store written before this counter existed counts from its
first change on (a missing key reads as 0), so the count is a lower bound there. ``probe()``
writes ``gw:probe:<origin>`` (expiring after ten seconds) and reads it back.

Message ids (``put_message_ids`` / ``get_message_ids``): one key per upstream id,
``gw:mid:<upstream_id>`` (no hash tag: each is read and written on its own), a JSON object
``{"c": [client ids], "a": account}`` set with ``SET ... PX ttl``; a put of many entries is one
pipeline (followed by ``WAIT`` when ``wait_replicas`` is set, like every write). A put with a
ttl of zero or less deletes the keys (an entry that expired at once is absent). They are not
consent data: no invalidation is published and nothing is counted. Their number is bounded by
the TTL only, so Redis's own memory limits apply: size ``maxmemory`` for the parts sent
upstream under an id of their own during one TTL times about 200 bytes (``MEMORY USAGE`` of a
key with ids of 20 characters is about 120 bytes, plus Redis's own per-key overhead). Under
``noeviction`` a full Redis refuses these writes as it refuses consent writes
(StoreUnavailableError). The ``volatile-*`` policies evict only keys with an expiry, so they
would make room by dropping these, never consent data, but dedup marks too when
``dedup_ttl_s`` is set.

Atomicity: one Lua script checks the dedup mark, appends to the history, updates the current
hash and publishes the invalidation, in one step: no client can see the history without the
projection, and no write escapes its invalidation.

Durability: ``append`` returns after Redis acknowledged the script. What that survives is the
server's configuration: with ``appendonly yes`` and ``appendfsync always`` the write is on disk
before the reply, so a crash of Redis loses nothing acknowledged; with ``everysec`` up to a
second can be lost. With ``wait_replicas=N`` the script is followed by ``WAIT N`` on the same
connection, and too few replicas raise StoreUnavailableError (the event may still have been
applied; a retry with the same dedup_key is then a no-op), which is what keeps acknowledged
writes across a Sentinel failover. Timeouts (``timeout_s``) and no client-side retries make an
outage raise StoreUnavailableError within about ``timeout_s``, never hang. Every redis-py error
is StoreUnavailableError: connection and timeout errors, and also the server refusing a command
(``OOM`` under ``maxmemory``, ``MISCONF`` after a failed background save, ``READONLY`` on a
replica, ``NOSCRIPT``...), and stored data that does not decode.

Cache coherence (see ``gateway.store.cache``): each store object keeps a local LRU of
``current()`` answers, valid only while its subscription to the invalidation channel is known
to work. A listener task subscribes; the cache is enabled, empty, only when Redis confirms the
subscription, and then lives on a lease of ``3 * heartbeat_s`` that every message and every
answered heartbeat ping renews. A lost or silent connection disables and empties the cache
(every lookup goes to Redis meanwhile) until a new subscription is confirmed, so an
invalidation lost with a connection can never leave a stale entry behind. Loads that raced an
invalidation are not cached (tickets). Pub/sub delivers messages in order, so ``sync()``
(publish a token, wait for it to come back) proves that every change acknowledged anywhere
before the call has reached this cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.consent.model import ConsentEvent, ConsentRecord, ConsentState
from gateway.store.base import (
    MessageIds,
    StoreError,
    StoreUnavailableError,
    batches,
    event_from_json,
    event_to_json,
)
from gateway.store.cache import EMPTY, ConsentCache, SeenCache
from gateway.telemetry import logs

T = TypeVar("T")

_log = structlog.get_logger("gateway.store.redis")

# KEYS: current hash, history list, record counter, [dedup mark]. ARGV: scope, record JSON,
# event JSON, channel, invalidation ('subscriber origin'), event_id, dedup TTL in ms ('0': keep
# for ever).
_APPEND_LUA: Final = """
if #KEYS > 3 then
  local fresh
  if ARGV[7] ~= '0' then
    fresh = redis.call('SET', KEYS[4], ARGV[6], 'NX', 'PX', ARGV[7])
  else
    fresh = redis.call('SET', KEYS[4], ARGV[6], 'NX')
  end
  if not fresh then return 0 end
end
redis.call('RPUSH', KEYS[2], ARGV[3])
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
_PROBE_TTL_MS: Final = 10_000

_HASH_TAG: Final = re.compile(r"\{[^{}]*\}")


def _describe(exc: BaseException) -> str:
    """An error's text for callers and logs; redis-py quotes the failed command's keys, whose
    hash tags are subscriber numbers, so those are masked."""
    return _HASH_TAG.sub("{…}", str(exc) or type(exc).__name__)


_SYNC_MARK: Final = "!"  # subscribers are digits, so a token never looks like one
_IMPORT_CHUNK: Final = 500
_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")

_UNAVAILABLE: Final = (
    redis_errors.ConnectionError,  # also MasterNotFoundError, BusyLoadingError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # talking to a demoted master during failover
    redis_errors.TryAgainError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisOptions:
    """Tuning of a RedisStore; every field can be set as a URL query parameter."""

    prefix: str = "gw"  # key namespace, so several deployments can share one Redis
    timeout_s: float = 1.0  # connect and command timeout: an outage raises after this
    cache_size: int = 100_000  # subscribers kept in the local LRU (0: no cache)
    heartbeat_s: float = 0.5  # ping on a silent invalidation channel; lease = 3 x this
    dedup_ttl_s: float = 0.0  # how long dedup marks live (0: for ever)
    wait_replicas: int = 0  # WAIT for this many replicas after each write
    wait_timeout_s: float = 1.0
    ready_timeout_s: float = 5.0  # how long open() waits for the invalidation subscription
    # Connections to Redis. A burst of cache misses waits for a free one (up to timeout_s)
    # instead of failing: redis-py's own default pool refuses the 101st concurrent command.
    max_connections: int = 64
    # Not a URL parameter: the Sentinel clients to close with the store.
    sentinels: tuple[Redis, ...] = ()


def _options_from_query(query: Mapping[str, str]) -> tuple[RedisOptions, dict[str, str]]:
    """Split URL query parameters into our options and the rest (passed to the client)."""
    known: dict[str, Any] = {}
    rest: dict[str, str] = {}
    casts: dict[str, type[Any]] = {
        "prefix": str,
        "timeout_s": float,
        "cache_size": int,
        "heartbeat_s": float,
        "dedup_ttl_s": float,
        "wait_replicas": int,
        "wait_timeout_s": float,
        "ready_timeout_s": float,
        "max_connections": int,
    }
    for key, value in query.items():
        cast = casts.get(key)
        if cast is None:
            rest[key] = value
            continue
        try:
            known[key] = cast(value)
        except ValueError as exc:
            raise StoreError(f"store.url: {key}={value!r} is not a valid {cast.__name__}") from exc
    options = RedisOptions(**known)
    if not _PREFIX_RE.match(options.prefix):
        raise StoreError(f"store.url: prefix={options.prefix!r} may use [A-Za-z0-9_.-] only")
    if options.timeout_s <= 0 or options.heartbeat_s <= 0:
        raise StoreError("store.url: timeout_s and heartbeat_s must be > 0")
    if options.max_connections < 2:
        raise StoreError("store.url: max_connections must be at least 2")
    return options, rest


_CLIENT_PARAMS: Final = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "sentinel_password"}
)


def _parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        return host, int(port) if port else default_port
    except ValueError as exc:
        raise StoreError(f"store.url: bad port in {text!r}") from exc


def client_from_url(url: str, *, instance: str) -> tuple[Redis, RedisOptions]:
    """Build the redis-py client (plain, TLS or Sentinel) and our options from a store URL."""
    parts = urlsplit(url)
    options, rest = _options_from_query(dict(parse_qsl(parts.query)))
    unknown = set(rest) - _CLIENT_PARAMS
    if unknown:
        raise StoreError(f"store.url: unknown parameter(s) {', '.join(sorted(unknown))}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    common: dict[str, Any] = {
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "socket_timeout": options.timeout_s,
        "socket_connect_timeout": options.timeout_s,
        "retry": Retry(NoBackoff(), 0),  # fail fast: the proxy answers "try later"
        "decode_responses": True,
        "client_name": f"smpp-gateway:{instance}" if instance else "smpp-gateway",
    }
    path = [p for p in parts.path.split("/") if p]
    try:
        if parts.scheme in ("redis", "rediss"):
            if not hosts:
                raise StoreError("store.url: redis URL needs a host")
            host, port = _parse_hostport(hosts, 6379)
            db = int(path[0]) if path else 0
            tls: dict[str, Any] = {}
            if parts.scheme == "rediss":
                tls = {"ssl": True, **{k: v for k, v in rest.items() if k.startswith("ssl_")}}
            pool = BlockingConnectionPool(
                host=host,
                port=port,
                db=db,
                max_connections=options.max_connections,
                timeout=options.timeout_s,
                connection_class=SSLConnection if tls else Connection,
                **common,
                **{k: v for k, v in tls.items() if k != "ssl"},
            )
            # from_pool: the client owns the pool and closes it with itself.
            return Redis.from_pool(pool), options
        if parts.scheme == "redis+sentinel":
            if not hosts or not path:
                raise StoreError(
                    "store.url: use redis+sentinel://host:26379[,host:26379]/service_name[/db]"
                )
            sentinels = [_parse_hostport(h, 26379) for h in hosts.split(",") if h]
            db = int(path[1]) if len(path) > 1 else 0
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": options.timeout_s,
                "socket_connect_timeout": options.timeout_s,
                "retry": Retry(NoBackoff(), 0),
            }
            if "sentinel_password" in rest:
                sentinel_kwargs["password"] = rest["sentinel_password"]
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                sentinels, sentinel_kwargs=sentinel_kwargs, **common
            )
            client: Redis = sentinel.master_for(
                path[0], db=db, max_connections=options.max_connections
            )
            return client, replace(options, sentinels=tuple(sentinel.sentinels))
    except ValueError as exc:
        raise StoreError(f"store.url: {exc}") from exc
    raise StoreError(f"store.url: unsupported scheme {parts.scheme!r}")


def _record_to_json(event: ConsentEvent) -> str:
    return json.dumps([event.state.value, event.at, event.event_id], separators=(",", ":"))


def _decode_current(subscriber: str, raw: Mapping[str, str]) -> Mapping[str, ConsentRecord]:
    if not raw:
        return EMPTY
    records: dict[str, ConsentRecord] = {}
    try:
        for scope, value in raw.items():
            state, at, event_id = json.loads(value)[:3]
            records[scope] = ConsentRecord(
                subscriber=subscriber,
                scope=scope,
                state=ConsentState(state),
                updated_at=float(at),
                last_event_id=event_id,
            )
    except (ValueError, TypeError) as exc:
        raise StoreUnavailableError(f"redis: undecodable current record: {exc}") from exc
    return MappingProxyType(records)


def _message_ids_to_json(entry: MessageIds) -> str:
    return json.dumps(
        {"c": list(entry.client_ids), "a": entry.account},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _message_ids_from_json(upstream_id: str, raw: str | bytes) -> MessageIds:
    try:
        body = json.loads(raw)
        client_ids, account = body["c"], body["a"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreUnavailableError(f"redis: undecodable message ids: {exc!r}") from exc
    if (
        not isinstance(client_ids, list)
        or not all(isinstance(i, str) for i in client_ids)
        or not isinstance(account, str)
    ):
        raise StoreUnavailableError("redis: undecodable message ids: not a list of strings")
    return MessageIds(upstream_id=upstream_id, client_ids=tuple(client_ids), account=account)


class RedisStore:
    """ConsentStore on Redis; build it with ``await RedisStore.open(client, ...)``."""

    def __init__(self, client: Redis, *, instance: str, options: RedisOptions) -> None:
        self._client = client
        self.instance = instance
        self.options = options
        self._p = options.prefix
        self._channel = f"{options.prefix}:invalidate"
        self._records_key = f"{options.prefix}:records"
        self._cache = ConsentCache(options.cache_size, enabled=False)
        self._seen = SeenCache(options.cache_size)
        self._append_script = client.register_script(_APPEND_LUA)
        # Tags our own invalidations: those were applied locally when the write returned.
        self._origin = uuid.uuid4().hex[:16]
        self._probe_key = f"{options.prefix}:probe:{self._origin}"
        self._listener: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()  # cancelled listeners still closing
        self._subscribed = asyncio.Event()
        self._sync_waiters: dict[str, asyncio.Future[None]] = {}
        self._lease_s = 3 * options.heartbeat_s
        self._closed = False

    @classmethod
    async def open(
        cls, client: Redis, *, instance: str = "", options: RedisOptions | None = None
    ) -> RedisStore:
        """Check that Redis answers and start the invalidation listener."""
        store = cls(client, instance=instance, options=options or RedisOptions())
        try:
            await store.ping()
            store._start_listener()
            await store.wait_cache_ready(store.options.ready_timeout_s)
        except BaseException:
            await store.close()
            raise
        return store

    @classmethod
    async def from_url(cls, url: str, *, instance: str, require_up: bool = True) -> RedisStore:
        """The store at ``url``, opened as ``open`` does. ``require_up=False`` skips the check
        that Redis answers: the invalidation listener keeps subscribing and every call raises
        StoreUnavailableError until Redis answers (the daemon starts so, behind the guard)."""
        client, options = client_from_url(url, instance=instance)
        if not require_up:
            store = cls(client, instance=instance, options=options)
            store._start_listener()
            return store
        return await cls.open(client, instance=instance, options=options)

    # --- keys ---------------------------------------------------------------------------------

    def _key(self, subscriber: str, kind: str) -> str:
        return f"{self._p}:{{{subscriber}}}:{kind}"

    def _mid_key(self, upstream_id: str) -> str:
        return f"{self._p}:mid:{upstream_id}"

    # --- plumbing -----------------------------------------------------------------------------

    async def _call(self, awaitable: Awaitable[T]) -> T:
        if self._closed:
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            raise StoreError("store is closed")
        try:
            # socket timeouts already bound each read; this also bounds pool waits and failover.
            async with asyncio.timeout(self.options.timeout_s * 3):
                return await awaitable
        except _UNAVAILABLE as exc:
            self._channel_suspect()
            raise StoreUnavailableError(f"redis: {_describe(exc)}") from exc
        except redis_errors.RedisError as exc:
            # The server refused the command (OOM, MISCONF, NOSCRIPT, ...): the write did not
            # happen, and the next one will not either until an operator acts.
            raise StoreUnavailableError(f"redis: {_describe(exc)}") from exc
        except UnicodeDecodeError as exc:
            # A stored value that is not UTF-8 (redis-py drops the connection it was read on).
            raise StoreUnavailableError(f"redis: undecodable stored data: {exc.reason}") from exc

    def _append_args(self, event: ConsentEvent) -> tuple[list[str], list[str | int]]:
        keys = [
            self._key(event.subscriber, "c"),
            self._key(event.subscriber, "h"),
            self._records_key,
        ]
        if event.dedup_key is not None:
            keys.append(self._key(event.subscriber, "d:" + event.dedup_key))
        args: list[str | int] = [
            event.scope,
            _record_to_json(event),
            event_to_json(event),
            self._channel,
            f"{event.subscriber} {self._origin}",
            event.event_id,
            round(self.options.dedup_ttl_s * 1000),
        ]
        return keys, args

    def _wait_replicas(self, pipe: Any) -> None:
        """End a write pipeline with ``WAIT`` when ``wait_replicas`` is set."""
        if self.options.wait_replicas:
            pipe.execute_command(
                "WAIT", self.options.wait_replicas, round(self.options.wait_timeout_s * 1000)
            )

    def _check_replicas(self, reached: Any, what: str) -> None:
        """Too few replicas took the write: unavailable (a retry with the same key is a no-op)."""
        wanted = self.options.wait_replicas
        if wanted and int(reached) < wanted:
            raise StoreUnavailableError(f"redis: {what} reached {reached} of {wanted} replicas")

    async def _run_appends(self, events: list[ConsentEvent]) -> list[bool]:
        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    keys, args = self._append_args(event)
                    await self._append_script(keys=keys, args=args, client=pipe)
                self._wait_replicas(pipe)
                return await pipe.execute()

        try:
            results = await self._call(run())
        finally:
            # Whatever happened, the local entries may be out of date now.
            for event in events:
                self._cache.invalidate(event.subscriber)
        self._check_replicas(results[-1], "write")
        return [bool(int(r)) for r in results[: len(events)]]

    # --- invalidation listener ----------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub: PubSub = self._client.pubsub()
            try:
                # Pooled connections idle since before an outage are dead; drop them now, so the
                # first command after Redis comes back does not fail on one.
                await self._client.connection_pool.disconnect(inuse_connections=False)
                await pubsub.subscribe(self._channel)
                last_heard = loop.time()
                while not self._closed:
                    message = await pubsub.get_message(timeout=self.options.heartbeat_s)
                    if message is None:
                        self._check_alive(loop.time() - last_heard)
                        await pubsub.ping("heartbeat")
                        continue
                    last_heard = loop.time()
                    self._on_message(message)
                    delay = 0.05
            except (*_UNAVAILABLE, redis_errors.RedisError) as exc:
                if self._subscribed.is_set():
                    _log.warning(logs.STORE_INVALIDATIONS_LOST, error=str(exc))
            except Exception:  # noqa: BLE001 - task boundary: log, keep the cache off, go on
                _log.exception(logs.STORE_LISTENER_FAILED)
            finally:
                if asyncio.current_task() is self._listener:  # not a retired listener
                    self._subscribed.clear()
                    self._cache.disable()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Not a synchronisation sleep: back-off between reconnection attempts.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _start_listener(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="consent-invalidations")

    def _channel_suspect(self) -> None:
        """A command failed on the connection level: the subscription may be gone as well.

        Drop the cache now rather than when the listener notices, and make the listener
        subscribe afresh; the cache comes back, empty, with the new confirmation.
        """
        self._cache.disable()
        if self._subscribed.is_set() and not self._closed:
            self._subscribed.clear()
            old = self._listener
            if old is not None:
                old.cancel()
                self._retired.add(old)
                old.add_done_callback(self._retired.discard)
            self._start_listener()

    def _check_alive(self, silent_s: float) -> None:
        if silent_s > self._lease_s:
            raise redis_errors.ConnectionError("invalidation channel silent")

    def _on_message(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            data = str(message.get("data"))
            if data.startswith(_SYNC_MARK):
                waiter = self._sync_waiters.pop(data[1:], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                subscriber, _, origin = data.partition(" ")
                if origin != self._origin:
                    self._cache.invalidate(subscriber)
            self._cache.extend(self._lease_s)
        elif kind == "subscribe":
            self._cache.enable(self._lease_s)
            self._subscribed.set()
        elif kind not in ("unsubscribe", "psubscribe", "punsubscribe"):
            # The answer to our heartbeat PING. redis-py 8 mis-parses a PONG on a subscribed
            # RESP2 connection (the type comes out as "P" or "h"), so do not insist on "pong":
            # any reply on this connection proves every invalidation published before our
            # PING has been read, which is all the lease needs.
            self._cache.extend(self._lease_s)

    @property
    def cache_ready(self) -> bool:
        """Whether the invalidation subscription is confirmed (the cache may answer)."""
        return self._subscribed.is_set() and self._cache.enabled

    async def wait_cache_ready(self, timeout_s: float) -> None:
        """Wait until the invalidation subscription is confirmed (after a reconnection)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._subscribed.wait()
        except TimeoutError as exc:
            raise StoreUnavailableError("redis: invalidation channel not confirmed") from exc

    async def sync(self) -> None:
        """Return once every change acknowledged anywhere before this call reached the cache."""
        token = uuid.uuid4().hex
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters[token] = waiter
        try:
            await self._call(self._client.publish(self._channel, _SYNC_MARK + token))
            async with asyncio.timeout(self.options.timeout_s):
                await waiter
        except TimeoutError as exc:
            raise StoreUnavailableError("redis: invalidation channel did not answer") from exc
        finally:
            self._sync_waiters.pop(token, None)

    # --- ConsentStore -------------------------------------------------------------------------

    async def append(self, event: ConsentEvent) -> bool:
        return (await self._run_appends([event]))[0]

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        return self._cache.get(subscriber)

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        hit = self._cache.get(subscriber)
        if hit is not None:
            return hit
        ticket = self._cache.begin(subscriber)
        try:
            raw: Mapping[str, str] = await self._call(
                self._client.hgetall(self._key(subscriber, "c"))  # type: ignore[arg-type]
            )
            return self._cache.fill(ticket, _decode_current(subscriber, raw))
        finally:
            self._cache.release(ticket)

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        raw: list[str] = await self._call(
            self._client.lrange(self._key(subscriber, "h"), 0, -1)  # type: ignore[arg-type]
        )
        events = [event_from_json(item) for item in raw]
        return [e for e in events if scope is None or e.scope == scope]

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        return self._seen.get(subscriber, campaign)

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        if self._seen.get(subscriber, campaign):
            return True
        seen = bool(await self._call(self._client.hexists(self._key(subscriber, "f"), campaign)))
        if seen:
            self._seen.add(subscriber, campaign)
        return seen

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        await self._call(self._client.hsetnx(self._key(subscriber, "f"), campaign, repr(at)))
        self._seen.add(subscriber, campaign)

    async def export(self) -> AsyncIterator[ConsentRecord]:
        """Every current record once; subscribers in SCAN order, scopes sorted within each.

        SCAN may return a key twice while Redis resizes its table, so the subscribers already
        exported are remembered (memory grows with the number of subscribers exported).
        """
        done: set[str] = set()
        cursor: int = 0
        pattern = f"{self._p}:{{*}}:c"
        while True:
            cursor, keys = await self._call(
                self._client.scan(cursor=cursor, match=pattern, count=1000)
            )
            subscribers = [str(k)[len(self._p) + 2 : -3] for k in keys]
            fresh = [s for s in subscribers if s not in done]
            if fresh:

                async def load(fresh: list[str] = fresh) -> list[Any]:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for subscriber in fresh:
                            pipe.hgetall(self._key(subscriber, "c"))
                        return await pipe.execute()

                values = await self._call(load())
                for subscriber, raw in zip(fresh, values, strict=True):
                    done.add(subscriber)
                    records = _decode_current(subscriber, raw)
                    for scope in sorted(records):
                        yield records[scope]
            if cursor == 0:
                return

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        appended = 0
        async for chunk in batches(events, _IMPORT_CHUNK):
            appended += sum(await self._run_appends(chunk))
        return appended

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        """One pipeline of ``SET prefix:mid:<upstream_id> json PX ttl`` (``DEL`` when the ttl
        is not positive), then ``WAIT`` for ``wait_replicas`` when set."""
        if self._closed:
            raise StoreError("store is closed")
        if not math.isfinite(ttl_s):
            raise StoreError(f"redis: ttl_s must be a finite number of seconds, not {ttl_s}")
        batch = list(entries)
        if not batch:
            return
        ttl_ms = math.ceil(ttl_s * 1000) if ttl_s > 0 else 0  # PX takes whole milliseconds

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for entry in batch:
                    key = self._mid_key(entry.upstream_id)
                    if ttl_ms:
                        pipe.set(key, _message_ids_to_json(entry), px=ttl_ms)
                    else:
                        pipe.delete(key)
                self._wait_replicas(pipe)
                return await pipe.execute()

        results = await self._call(run())
        self._check_replicas(results[-1], "write")

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        """``GET prefix:mid:<upstream_id>``: Redis drops the key when its TTL has passed."""
        raw = await self._call(self._client.get(self._mid_key(upstream_id)))
        if raw is None:
            return None
        return _message_ids_from_json(upstream_id, raw)

    async def record_count(self) -> int:
        """The ``prefix:records`` counter (see the module docstring for older stores)."""
        raw = await self._call(self._client.get(self._records_key))
        try:
            return int(raw or 0)
        except ValueError as exc:
            raise StoreUnavailableError(f"redis: undecodable record counter: {raw!r}") from exc

    async def ping(self) -> None:
        """A read of real data (the record counter): PING alone proves less."""
        await self.record_count()

    async def probe(self) -> None:
        """SET a probe key of this store object (short expiry), GET it back, and WAIT for
        ``wait_replicas`` when set: the write path works end to end."""
        token = uuid.uuid4().hex

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(self._probe_key, token, px=_PROBE_TTL_MS)
                pipe.get(self._probe_key)
                self._wait_replicas(pipe)
                return await pipe.execute()

        results = await self._call(run())
        if results[1] != token:
            raise StoreUnavailableError("redis: the probe key did not read back what was written")
        self._check_replicas(results[-1], "probe")

    def clear_cache(self) -> None:
        self._cache.clear()
        self._seen.clear()

    async def close(self) -> None:
        self._closed = True
        self._cache.disable()
        tasks = [*self._retired, *([self._listener] if self._listener is not None else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            # redis-py can swallow a cancellation inside get_message; the loop also checks
            # _closed, and close() must not hang on it whatever happens.
            await asyncio.wait(tasks, timeout=self.options.heartbeat_s * 4 + 1)
        self._listener = None
        for waiter in self._sync_waiters.values():
            waiter.cancel()
        await self._client.aclose()
        for sentinel in self.options.sentinels:
            await sentinel.aclose()


async def read_record_count(url: str) -> int:
    """The record counter of the Redis store at ``url``, for ``check-config``: one GET on a
    client of its own (no invalidation listener), nothing written."""
    client, options = client_from_url(url, instance="check-config")
    store = RedisStore(client, instance="check-config", options=options)
    try:
        return await store.record_count()
    finally:
        await store.close()
