"""Shared consent store on Redis, for several gateway instances (redis-py asyncio).

URLs (query parameters are optional; see ``RedisOptions`` for their meaning and defaults)::

    redis://[[user]:password@]host[:port][/db][?prefix=gw&timeout_s=1.0&...]
    rediss://...                                  (TLS; ssl_ca_certs=, ssl_cert_reqs=, ...)
    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/service_name[/db][?...]
                                                  (sentinel_password= for the sentinels)

(Redis Cluster, ``redis+cluster://``: ``gateway.store.rediscluster``, which routes this store's
commands per slot.)

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

Auto-reply records (``record_reply`` / ``replies``): per subscriber, under the same hash tag,
``gw:{s}:r`` (hash reply_id -> the record as JSON) and ``gw:{s}:ro`` (list of reply ids in
record order). One Lua script adds a record unless its id is there (``HSETNX``), appends the
id and trims both to the newest ``max_replies`` (a URL parameter, default 1,000), so a
subscriber's records are bounded; a second script reads them in order. Like every write, a
record is followed by ``WAIT`` when ``wait_replicas`` is set. Not consent data: nothing is
published and nothing is counted. They have no expiry (they are evidence), so size
``maxmemory`` for them too: a subscriber with one confirmation took about 1.2 KB of
``used_memory`` (two keys), measured with the default reply texts' length.

Atomicity: one Lua script checks the dedup mark, appends to the history, updates the current
hash and publishes the invalidation, in one step: no client can see the history without the
projection, and no write escapes its invalidation.

Imports (``import_changes``, ``consent import``) are staged, then committed, then applied:

1. *Staged*: every change goes into ``gw:import:<run>:changes`` (a list; with the run's hash
   ``gw:import:<run>``: its size, cursor and counts), which no lookup reads. Both expire after
   a day, so a run cut off here (a killed process, Redis down) leaves nothing behind that
   counts, and the store is as it was.
2. *Committed*: one script checks that every change is staged, marks the run committed,
   removes the expiry and adds the run to ``gw:imports``. That is the commit point (followed
   by ``WAIT`` when ``wait_replicas`` is set).
3. *Applied*: a script applies the next ``_IMPORT_APPLY_CHUNK`` changes (each as ``append``
   does: history, current, counter, invalidation; a change whose record is no longer the one
   it was planned against is refused) and advances the run's cursor, in one step; the last
   one deletes the staged list and takes the run out of ``gw:imports``. Each chunk is a few
   milliseconds of Redis time, so other clients are never held up for long; one script for a
   whole large import would block every gateway instance for seconds (about 10 to 16 us per
   change).

What this gives, and its limits: a failure before the commit point changes nothing; a
failure after it (the process killed, Redis down midway) leaves a committed run that
``resume_imports`` (run first by every ``consent import``) applies to the end, never twice
(the cursor moves with each chunk, in the same script), so the import ends up all there, not
half. Between the commit point and the end, other clients see the import appear chunk by
chunk (Redis has no transaction that spans many scripts without blocking everyone). If the
reply to the commit script is lost, the caller cannot know whether the commit point was
passed: it reports a failure, and the next ``resume_imports`` completes the run if it was.
Staging takes Redis memory for each change until it is applied (about 400 bytes for an
opt-out row); ``maxmemory`` refusing it fails the import before its commit point.

Durability: ``append`` returns after Redis acknowledged the script. What that survives is the
server's configuration: with ``appendonly yes`` and ``appendfsync always`` the write is on disk
before the reply, so a crash of Redis loses nothing acknowledged; with ``everysec`` up to a
second can be lost. With ``wait_replicas=N`` the script is followed by ``WAIT N`` on the same
connection, and too few replicas raise StoreUnavailableError (the event may still have been
applied; a retry with the same dedup_key is then a no-op), which is what keeps acknowledged
writes across a Sentinel failover when N is the number of replicas (Sentinel may promote any
of them, judged by offsets it polled up to 10 s earlier). Timeouts (``timeout_s``) and no
client-side retries make an outage raise StoreUnavailableError within about ``timeout_s``,
never hang. Every redis-py error is StoreUnavailableError: connection and timeout errors, and
also the server refusing a command (``OOM`` under ``maxmemory``, ``MISCONF`` after a failed
background save, ``READONLY`` on a replica, ``NOSCRIPT``...), and stored data that does not
decode.

Cache coherence (see ``gateway.store.cache``): each store object keeps a local LRU of
``current()`` answers, valid only while its subscription to the invalidation channel is known
to work. A listener task subscribes; the cache is enabled, empty, only when Redis confirms the
subscription, and then lives on a lease of ``3 * heartbeat_s`` that every message and every
answered heartbeat ping renews. A lost or silent connection disables and empties the cache
(every lookup goes to Redis meanwhile) until a new subscription is confirmed, so an
invalidation lost with a connection can never leave a stale entry behind. Loads that raced an
invalidation are not cached (tickets). Pub/sub delivers messages in order, so ``sync()``
(publish a token, wait for it to come back) proves that every change acknowledged anywhere
before the call has reached this cache. And the cache does not answer while an invalidation
has reached this process unread (``gateway.store.inbox``: bytes in the subscription
connection's buffer or socket): a client that heard of a change made through another instance
(a STOP's confirmation) and sends an MT through this one at once gets a decision read from
Redis, not one from the state before the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import re
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
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

from gateway.consent.caps import CapReservation, CapVerdict
from gateway.consent.model import ConsentEvent, ConsentRecord, ConsentState
from gateway.store.base import (
    MAX_REPLIES_PER_SUBSCRIBER,
    ImportChange,
    ImportOutcome,
    MessageIds,
    ReplyRecord,
    ResumedImports,
    StoreError,
    StoreUnavailableError,
    batches,
    check_import_changes,
    event_from_json,
    event_to_json,
    reply_from_json,
    reply_to_json,
)
from gateway.store.batch import BatchLoader
from gateway.store.cache import EMPTY, ConsentCache, SeenCache
from gateway.store.inbox import Inbox
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

# Frequency caps, a batch in one script. KEYS: the counters (sorted sets token -> when sent),
# one per reservation, a counter repeated for each of its reservations. ARGV[1]: a line
# "limit window_s now token" for each in turn (one string: redis-py packs each argument in
# Python, and four per reservation cost more than the script). Each in order trims its counter
# to the window, then counts the token unless it is counted already or the cap is reached (four
# calls when it goes; membership is asked only at the cap); the key expires with the window.
# Returns "allowed counted" for each, space-separated (one reply to parse, not two integers
# each). One script: the batch is atomic on its node.
_RESERVE_SENDS_LUA: Final = """
local out = {}
local i = 0
for limit, window, now, token in string.gmatch(ARGV[1], '(%S+) (%S+) (%S+) ([^\\n]*)\\n') do
  i = i + 1
  local key = KEYS[i]
  window = tonumber(window)
  now = tonumber(now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local counted = redis.call('ZCARD', key)
  if counted < tonumber(limit) then
    -- NX: a token counted already (another part of the message) keeps its time
    if redis.call('ZADD', key, 'NX', now, token) == 1 then
      redis.call('PEXPIRE', key, math.ceil(window * 1000))
      counted = counted + 1
    end
    out[i] = '1 ' .. counted
  elseif redis.call('ZSCORE', key, token) then
    out[i] = '1 ' .. counted
  else
    out[i] = '0 ' .. counted
  end
end
if i ~= #KEYS then
  return redis.error_reply('ERR reserve_sends: ' .. i .. ' lines for ' .. #KEYS .. ' keys')
end
return table.concat(out, ' ')
"""
_RESERVE_SENDS_SHA: Final = hashlib.sha1(_RESERVE_SENDS_LUA.encode()).hexdigest()  # noqa: S324
_RESERVE_CHUNK: Final = 500  # reservations per script call (a script blocks its node meanwhile)


# KEYS: records hash, order list. ARGV: reply_id, record JSON, how many to keep.
_RECORD_REPLY_LUA: Final = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
local excess = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])
for _ = 1, excess do
  redis.call('HDEL', KEYS[1], redis.call('LPOP', KEYS[2]))
end
return 1
"""
# KEYS: records hash, order list. The records in order, in one step (no trim in between).
_REPLIES_LUA: Final = """
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""

# The import's commit point. KEYS: the run's hash, its staged list, the set of committed runs.
# ARGV: the run id, the number of changes staged.
_IMPORT_COMMIT_LUA: Final = """
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) then
  return redis.error_reply('ERR import: not every change was staged')
end
redis.call('HSET', KEYS[1], 'state', 'committed')
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""
# Applies the next ARGV[5] staged changes of a committed run and moves its cursor past them.
# KEYS: the run's hash, its staged list, the set of committed runs, the record counter.
# ARGV: key prefix, invalidation channel, origin, run id, chunk size, TTL (s) of the finished
# run's hash. A staged change: [subscriber, scope, event_id, expected ('' for no record),
# record JSON, event JSON]. Returns {appended, changes left, refused event ids}.
_IMPORT_APPLY_LUA: Final = """
if redis.call('HGET', KEYS[1], 'state') ~= 'committed' then
  redis.call('SREM', KEYS[3], ARGV[4])
  return {0, 0, {}}
end
local cursor = tonumber(redis.call('HGET', KEYS[1], 'cursor'))
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local items = redis.call('LRANGE', KEYS[2], cursor, cursor + tonumber(ARGV[5]) - 1)
local appended = 0
local refused = {}
for _, raw in ipairs(items) do
  local c = cjson.decode(raw)
  local tag = ARGV[1] .. ':{' .. c[1] .. '}:'
  local record = redis.call('HGET', tag .. 'c', c[2])
  local current = ''
  if record then current = cjson.decode(record)[3] end
  if current == c[4] then
    redis.call('RPUSH', tag .. 'h', c[6])
    if redis.call('HSET', tag .. 'c', c[2], c[5]) == 1 then
      redis.call('INCR', KEYS[4])
    end
    redis.call('PUBLISH', ARGV[2], c[1] .. ' ' .. ARGV[3])
    appended = appended + 1
  else
    refused[#refused + 1] = c[3]
  end
end
cursor = cursor + #items
redis.call('HSET', KEYS[1], 'cursor', cursor)
redis.call('HINCRBY', KEYS[1], 'appended', appended)
redis.call('HINCRBY', KEYS[1], 'refused', #refused)
if cursor >= total or #items == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'done')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return {appended, 0, refused}
end
return {appended, total - cursor, refused}
"""
_IMPORT_STAGE_CHUNK: Final = 1000  # changes per RPUSH
_IMPORT_STAGE_PIPELINE: Final = 20  # RPUSHes per round trip
_IMPORT_APPLY_CHUNK: Final = 1000  # changes per apply script: a few ms of Redis time
_IMPORT_STAGING_TTL_S: Final = 86_400  # a run cut off before its commit point goes away
_IMPORT_DONE_TTL_S: Final = 7 * 86_400  # a finished run's hash (its counts) is kept this long
_MANY_PIPELINE: Final = 1000  # subscribers per pipeline of current_many / history_many

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
    max_replies: int = MAX_REPLIES_PER_SUBSCRIBER  # auto-reply records kept per subscriber
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
        "max_replies": int,
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
    if options.max_replies < 1:
        raise StoreError("store.url: max_replies must be at least 1")
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
            # Any: redis-py before 8 leaves Sentinel's constructor unannotated.
            make_sentinel: Any = Sentinel
            sentinel = make_sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **common)
            client: Redis = sentinel.master_for(
                path[0], db=db, max_connections=options.max_connections
            )
            return client, replace(options, sentinels=tuple(sentinel.sentinels))
    except ValueError as exc:
        raise StoreError(f"store.url: {exc}") from exc
    raise StoreError(f"store.url: unsupported scheme {parts.scheme!r}")


async def close_pubsub(pubsub: PubSub) -> None:
    # Any: redis-py before 8 leaves PubSub.aclose unannotated (strict mypy calls it untyped).
    close: Any = pubsub.aclose
    await close()


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
        self._batch = BatchLoader(self._cache, lambda subscribers: self.current_many(subscribers))
        self._append_script = client.register_script(_APPEND_LUA)
        self._record_reply_script = client.register_script(_RECORD_REPLY_LUA)
        self._replies_script = client.register_script(_REPLIES_LUA)
        self._import_commit_script = client.register_script(_IMPORT_COMMIT_LUA)
        self._import_apply_script = client.register_script(_IMPORT_APPLY_LUA)
        # Tags our own invalidations: those were applied locally when the write returned.
        self._origin = uuid.uuid4().hex[:16]
        self._probe_key = f"{options.prefix}:probe:{self._origin}"
        self._listener: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()  # cancelled listeners still closing
        self._subscribed = asyncio.Event()
        self._sync_waiters: dict[str, asyncio.Future[None]] = {}
        self._lease_s = 3 * options.heartbeat_s
        # The subscription connections, so the cache is not asked while invalidations wait.
        self._inbox = Inbox()
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

    # --- routing (one Redis here; the cluster store sends each key to the node of its slot) ----

    def _client_for(self, key: str) -> Redis:
        """The client that serves ``key``."""
        return self._client

    def _slot(self, key: str) -> int:
        """The hash slot of ``key`` where one matters (a cluster's); 0 on one Redis."""
        return 0

    def _records_key_for(self, subscriber: str) -> str:
        """The record counter that a new record of ``subscriber`` increments."""
        return self._records_key

    def _group(self, items: Sequence[T], key: Callable[[T], str]) -> list[tuple[Redis, list[T]]]:
        """``items`` split by the client that serves ``key(item)``, each group in order."""
        return [(self._client, list(items))] if items else []

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
            self._records_key_for(event.subscriber),
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
        indexed = list(enumerate(events))

        async def run(client: Redis, part: list[tuple[int, ConsentEvent]]) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for _index, event in part:
                    keys, args = self._append_args(event)
                    await self._append_script(keys=keys, args=args, client=pipe)
                self._wait_replicas(pipe)
                return await pipe.execute()

        fresh: dict[int, bool] = {}
        try:
            for client, part in self._group(
                indexed, lambda item: self._key(item[1].subscriber, "c")
            ):
                results = await self._call(run(client, part))
                self._check_replicas(results[-1], "write")
                for (index, _event), result in zip(part, results, strict=False):
                    fresh[index] = bool(int(result))
        finally:
            # Whatever happened, the local entries may be out of date now.
            for event in events:
                self._cache.invalidate(event.subscriber)
        return [fresh[index] for index in range(len(events))]

    # --- invalidation listener ----------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub: PubSub = self._client.pubsub()
            watched: int | None = None
            try:
                # Pooled connections idle since before an outage are dead; drop them now, so the
                # first command after Redis comes back does not fail on one.
                await self._client.connection_pool.disconnect(inuse_connections=False)
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
                if watched is not None:
                    self._inbox.forget(watched)  # before the close frees the descriptor
                with contextlib.suppress(Exception):
                    await close_pubsub(pubsub)
            # Not a synchronisation sleep: back-off between reconnection attempts.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _watch(self, pubsub: PubSub) -> int:
        """Watch the subscription's connection for unread invalidations (gateway.store.inbox)."""
        handle, problem = self._inbox.watch(pubsub)
        if problem is not None:
            # The cache is not asked while blind: every lookup goes to Redis. Slower, never stale.
            _log.error(logs.STORE_CACHE_UNSAFE, error=problem)
        return handle

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
        if self._inbox.pending():
            return None  # an invalidation is on its way in: ask Redis
        return self._cache.get(subscriber)

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        hit = self.cached_current(subscriber)
        if hit is not None:
            return hit
        # The misses of this loop turn share one pipeline (one per master on a cluster).
        return await self._batch.load(subscriber)

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        key = self._key(subscriber, "h")
        raw: list[str] = await self._call(
            self._client_for(key).lrange(key, 0, -1)  # type: ignore[arg-type]
        )
        events = [event_from_json(item) for item in raw]
        return [e for e in events if scope is None or e.scope == scope]

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        return self._seen.get(subscriber, campaign)

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        if self._seen.get(subscriber, campaign):
            return True
        key = self._key(subscriber, "f")
        seen = bool(await self._call(self._client_for(key).hexists(key, campaign)))
        if seen:
            self._seen.add(subscriber, campaign)
        return seen

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        key = self._key(subscriber, "f")
        await self._call(self._client_for(key).hsetnx(key, campaign, repr(at)))
        self._seen.add(subscriber, campaign)

    async def reserve_send(
        self, subscriber: str, key: str, token: str, *, limit: int, window_s: float, now: float
    ) -> CapVerdict:
        reservation = CapReservation(subscriber, key, token, limit, window_s, now)
        return (await self.reserve_sends([reservation]))[0]

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        # gw:{s}:n:<counter>: under the subscriber's hash tag. One script call per slot (the
        # keys of one script must share one on a cluster; on one Redis everything is slot 0),
        # the calls of one node in one pipeline, the nodes at once: one round trip.
        items = list(batch)
        counters = [self._key(r.subscriber, f"n:{r.key}") for r in items]
        calls: list[tuple[Redis, list[list[int]]]] = []
        for client, part in self._group(range(len(items)), lambda i: counters[i]):
            by_slot: dict[int, list[int]] = {}
            for index in part:
                by_slot.setdefault(self._slot(counters[index]), []).append(index)
            calls.append(
                (
                    client,
                    [
                        members[start : start + _RESERVE_CHUNK]
                        for members in by_slot.values()
                        for start in range(0, len(members), _RESERVE_CHUNK)
                    ],
                )
            )

        for r in items:
            if "\n" in r.token:
                raise StoreError("reserve_sends: a token cannot hold a line break")

        def script(members: list[int]) -> list[Any]:
            lines = "".join(
                f"{items[i].limit} {items[i].window_s!r} {items[i].now!r} {items[i].token}\n"
                for i in members
            )
            return [len(members), *(counters[i] for i in members), lines]

        async def run(client: Redis, scripts: list[list[int]]) -> list[Any]:
            if len(scripts) == 1:
                return [await self._reserve_script(client, script(scripts[0]))]
            async with client.pipeline(transaction=False) as pipe:
                for members in scripts:
                    pipe.evalsha(_RESERVE_SENDS_SHA, *script(members))
                values = await pipe.execute(raise_on_error=False)
            for n, value in enumerate(values):
                if isinstance(value, redis_errors.NoScriptError):
                    # Not run (the node lost its scripts): load it and run that call alone.
                    values[n] = await self._reserve_script(client, script(scripts[n]))
                elif isinstance(value, Exception):
                    raise value
            return list(values)

        if len(calls) == 1:
            outcomes: list[Any] = [await self._call(run(*calls[0]))]
        else:
            outcomes = await asyncio.gather(
                *(self._call(run(client, scripts)) for client, scripts in calls),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        verdicts: list[CapVerdict | None] = [None] * len(items)
        for (_client, scripts), values in zip(calls, outcomes, strict=True):
            for members, reply in zip(scripts, values, strict=True):
                flat = (reply.decode() if isinstance(reply, bytes) else str(reply)).split()
                for n, index in enumerate(members):
                    verdicts[index] = CapVerdict(flat[2 * n] == "1", int(flat[2 * n + 1]))
        return [v for v in verdicts if v is not None]

    async def _reserve_script(self, client: Redis, args: list[Any]) -> Any:
        try:
            return await client.evalsha(_RESERVE_SENDS_SHA, *args)
        except redis_errors.NoScriptError:
            await client.script_load(_RESERVE_SENDS_LUA)
            return await client.evalsha(_RESERVE_SENDS_SHA, *args)

    async def release_send(self, subscriber: str, key: str, token: str) -> None:
        counter = self._key(subscriber, f"n:{key}")
        await self._call(self._client_for(counter).zrem(counter, token))

    async def sends_counted(self, subscriber: str, key: str, window_s: float, now: float) -> int:
        counter = self._key(subscriber, f"n:{key}")
        raw = await self._call(
            self._client_for(counter).zcount(counter, f"({now - window_s!r}", "+inf")
        )
        return int(raw)

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

    async def current_many(
        self, subscribers: Iterable[str]
    ) -> dict[str, Mapping[str, ConsentRecord]]:
        """Pipelines of ``HGETALL``, a thousand subscribers per round trip."""
        wanted = list(dict.fromkeys(subscribers))
        found: dict[str, Mapping[str, ConsentRecord]] = {}
        for start in range(0, len(wanted), _MANY_PIPELINE):
            part = wanted[start : start + _MANY_PIPELINE]

            async def load(client: Redis, part: list[str]) -> list[Any]:
                async with client.pipeline(transaction=False) as pipe:
                    for subscriber in part:
                        pipe.hgetall(self._key(subscriber, "c"))
                    return await pipe.execute()

            values: list[Any] = []
            grouped = self._group(part, lambda s: self._key(s, "c"))
            for client, members in grouped:
                values.extend(await self._call(load(client, members)))
            part = [s for _client, members in grouped for s in members]
            for subscriber, raw in zip(part, values, strict=True):
                found[subscriber] = _decode_current(subscriber, raw)
        return found

    async def history_many(self, subscribers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        """Pipelines of ``LRANGE``, a thousand subscribers per round trip."""
        wanted = list(dict.fromkeys(subscribers))
        found: dict[str, list[ConsentEvent]] = {}
        for start in range(0, len(wanted), _MANY_PIPELINE):
            part = wanted[start : start + _MANY_PIPELINE]

            async def load(client: Redis, part: list[str]) -> list[Any]:
                async with client.pipeline(transaction=False) as pipe:
                    for subscriber in part:
                        pipe.lrange(self._key(subscriber, "h"), 0, -1)
                    return await pipe.execute()

            values: list[Any] = []
            grouped = self._group(part, lambda s: self._key(s, "h"))
            for client, members in grouped:
                values.extend(await self._call(load(client, members)))
            part = [s for _client, members in grouped for s in members]
            for subscriber, raw in zip(part, values, strict=True):
                found[subscriber] = [event_from_json(item) for item in raw]
        return found

    def _import_keys(self, run: str) -> list[str]:
        return [f"{self._p}:import:{run}", f"{self._p}:import:{run}:changes", f"{self._p}:imports"]

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        """Staged, committed, applied in chunks (see the module docstring for what that
        guarantees and what it does not)."""
        if self._closed:
            raise StoreError("store is closed")
        check_import_changes(changes)
        if not changes:
            return ImportOutcome(appended=0)
        run = uuid.uuid4().hex
        meta, staged, pending = self._import_keys(run)
        try:
            await self._stage_import(meta, staged, changes)
        except StoreUnavailableError:
            with contextlib.suppress(StoreError):  # it expires anyway
                await self._call(self._client.delete(meta, staged))
            raise

        async def commit() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                await self._import_commit_script(
                    keys=[meta, staged, pending], args=[run, len(changes)], client=pipe
                )
                self._wait_replicas(pipe)
                return await pipe.execute()

        try:
            results = await self._call(commit())
            self._check_replicas(results[-1], "import commit")
            return await self._apply_import(run)
        finally:
            for change in changes:
                self._cache.invalidate(change.event.subscriber)

    async def _stage_import(
        self,
        meta: str,
        staged: str,
        changes: Sequence[ImportChange],
        *,
        client: Redis | None = None,
        ttl: int | None = _IMPORT_STAGING_TTL_S,
    ) -> None:
        """Everything into the run's list; nothing that a lookup reads is touched. ``ttl``:
        the staged keys' expiry (None: none; the cluster store removes abandoned runs itself)."""
        target = self._client if client is None else client
        elements = (
            json.dumps(
                [
                    c.event.subscriber,
                    c.event.scope,
                    c.event.event_id,
                    c.expected or "",
                    _record_to_json(c.event),
                    event_to_json(c.event),
                ],
                separators=(",", ":"),
                ensure_ascii=False,
            )
            for c in changes
        )
        header = {
            "state": "staging",
            "total": len(changes),
            "cursor": 0,
            "appended": 0,
            "refused": 0,
            "instance": self.instance,
        }
        first = True
        while True:
            chunks: list[list[str]] = []
            for _ in range(_IMPORT_STAGE_PIPELINE):
                chunk = list(itertools.islice(elements, _IMPORT_STAGE_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
            if not chunks:
                return

            async def push(chunks: list[list[str]] = chunks, first: bool = first) -> None:
                async with target.pipeline(transaction=False) as pipe:
                    if first:
                        pipe.hset(meta, mapping=header)  # type: ignore[arg-type]
                        if ttl is not None:
                            pipe.expire(meta, ttl)
                    for chunk in chunks:
                        pipe.rpush(staged, *chunk)
                    if ttl is not None:
                        pipe.expire(staged, ttl)
                    await pipe.execute()

            await self._call(push())
            first = False

    async def _apply_import(self, run: str) -> ImportOutcome:
        """The apply script until the run is done; each call is one chunk, in one step."""
        keys = [*self._import_keys(run), self._records_key]
        args: list[str | int] = [
            self._p,
            self._channel,
            self._origin,
            run,
            _IMPORT_APPLY_CHUNK,
            _IMPORT_DONE_TTL_S,
        ]
        appended = 0
        refused: set[str] = set()
        while True:

            async def apply() -> list[Any]:
                async with self._client.pipeline(transaction=False) as pipe:
                    await self._import_apply_script(keys=keys, args=args, client=pipe)
                    self._wait_replicas(pipe)
                    return await pipe.execute()

            results = await self._call(apply())
            self._check_replicas(results[-1], "import")
            done, left, ids = results[0]
            appended += int(done)
            refused.update(str(i) for i in ids)
            if int(left) <= 0:
                return ImportOutcome(appended=appended, conflicts=frozenset(refused))

    async def resume_imports(self) -> ResumedImports:
        """Apply, to the end, every run that passed its commit point but was cut off. Its
        events are read from the staged list first (the last chunk deletes it); those the
        store then holds are the run's, including chunks applied before the cut-off."""
        if self._closed:
            raise StoreError("store is closed")
        runs = sorted(await self._call(self._client.smembers(f"{self._p}:imports")))
        appended = 0
        events: list[ConsentEvent] = []
        try:
            for run in runs:
                _meta, staged, _pending = self._import_keys(str(run))
                raw = await self._call(self._client.lrange(staged, 0, -1))
                planned = [event_from_json(json.loads(item)[5]) for item in raw]
                appended += (await self._apply_import(str(run))).appended
                stored = await self.history_many({e.subscriber for e in planned})
                ids = {e.event_id for history in stored.values() for e in history}
                events.extend(e for e in planned if e.event_id in ids)  # not the refused
        finally:
            if runs:
                self._cache.clear()  # whose records these were is in the staged lists only
        return ResumedImports(appended=appended, events=tuple(events))

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

        async def run(client: Redis, part: list[MessageIds]) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for entry in part:
                    key = self._mid_key(entry.upstream_id)
                    if ttl_ms:
                        pipe.set(key, _message_ids_to_json(entry), px=ttl_ms)
                    else:
                        pipe.delete(key)
                self._wait_replicas(pipe)
                return await pipe.execute()

        for client, part in self._group(batch, lambda e: self._mid_key(e.upstream_id)):
            results = await self._call(run(client, part))
            self._check_replicas(results[-1], "write")

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        """``GET prefix:mid:<upstream_id>``: Redis drops the key when its TTL has passed."""
        key = self._mid_key(upstream_id)
        raw = await self._call(self._client_for(key).get(key))
        if raw is None:
            return None
        return _message_ids_from_json(upstream_id, raw)

    async def record_reply(self, reply: ReplyRecord) -> bool:
        """The record script on ``prefix:{s}:r`` / ``prefix:{s}:ro``, then ``WAIT`` for
        ``wait_replicas`` when set."""
        keys = [self._key(reply.subscriber, "r"), self._key(reply.subscriber, "ro")]
        args: list[str | int] = [reply.reply_id, reply_to_json(reply), self.options.max_replies]

        async def run() -> list[Any]:
            async with self._client_for(keys[0]).pipeline(transaction=False) as pipe:
                await self._record_reply_script(keys=keys, args=args, client=pipe)
                self._wait_replicas(pipe)
                return await pipe.execute()

        results = await self._call(run())
        self._check_replicas(results[-1], "write")
        return bool(int(results[0]))

    async def replies(self, subscriber: str) -> list[ReplyRecord]:
        keys = [self._key(subscriber, "r"), self._key(subscriber, "ro")]
        raw: list[str | None] = await self._call(
            self._replies_script(keys=keys, args=[], client=self._client_for(keys[0]))
        )
        return [reply_from_json(item) for item in raw if item is not None]

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
