"""Open the consent store named by ``[store] url`` (the composition root and the CLI call this).

Supported URLs:

- ``sqlite:///var/lib/smpp-gateway/consent.db``: an absolute path (everything after
  ``sqlite://``); ``sqlite:relative/consent.db`` for a path relative to the working directory.
  Query parameters: ``cache_size``, ``busy_timeout_s``, ``change_check_interval_s``,
  ``max_message_ids``, ``max_replies`` (see ``gateway.store.sqlite``). ``sqlite:///:memory:``
  is refused: it is not durable.
- ``redis://``, ``rediss://`` and ``redis+sentinel://``: see ``gateway.store.redis``.
- ``redis+cluster://`` and ``rediss+cluster://`` (Redis Cluster): see
  ``gateway.store.rediscluster``.
- ``memory://``: the non-durable reference store, for tests and demonstrations only.

Every URL also takes ``recovery_interval_s`` (default 0.5): how often the fail-closed guard
probes a failed backend (see ``gateway.store.guard``).

``check_url`` is the one validation of a URL's form: the config calls it when it loads, the
openers before they open. ``open_store`` returns every backend wrapped in
``FailClosedStore``. It creates nothing unless ``create=True``: only the daemon passes it (a
SQLite file is created on the first start); the CLI and the config checker get
StoreNotFoundError instead of a new, empty store.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.store.base import ConsentStore, StoreError, StoreUnavailableError
from gateway.store.guard import DEFAULT_RECOVERY_INTERVAL_S, FailClosedStore
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics

_SQLITE_PARAMS: dict[str, type[int] | type[float]] = {
    "cache_size": int,
    "busy_timeout_s": float,
    "change_check_interval_s": float,
    "max_message_ids": int,
    "max_replies": int,
}
_GUARD_PARAM = "recovery_interval_s"
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", *_CLUSTER_SCHEMES)
_SCHEMES = ("sqlite", "memory", *_REDIS_SCHEMES)
_FORMS_HINT = (
    "expected sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH, redis://HOST:PORT/DB, "
    "rediss://..., redis+sentinel://..., redis+cluster://HOST:PORT,..., rediss+cluster://... "
    "or memory:// (tests only)"
)
_SECRET_PARAM_WORDS = ("password", "secret", "token")


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """The file path of a ``sqlite:`` URL and its query parameters (refusing in-memory ones)."""
    rest = url[len("sqlite:") :]
    path, _, query = rest.partition("?")
    if path.startswith("//"):
        path = path[2:]  # sqlite:///abs -> /abs (the authority part is empty)
    path = unquote(path)
    if not path:
        raise StoreError("store.url: sqlite URL needs a file path")
    if path in (":memory:", "/:memory:") or path.startswith("file:"):
        raise StoreError("store.url: sqlite in memory is not durable; use memory:// for tests")
    return path, dict(parse_qsl(query))


def display_url(url: str) -> str:
    """``url`` fit for a log line or a terminal: the userinfo and any password-like query
    parameter replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (k, "***" if any(w in k.lower() for w in _SECRET_PARAM_WORDS) else v)
                for k, v in pairs
            ],
            safe="*/:",
        )
    if parts.scheme == "sqlite" or not parts.netloc:
        base = url.partition("?")[0]  # keep sqlite:relative and sqlite:///abs as written
        return f"{base}?{query}" if query else base
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_url(url: str) -> str:
    """The backend URL of ``url`` (the guard's parameter taken out), after checking what can
    be checked without opening anything: the scheme, and a SQLite URL's path and parameters.
    Raises StoreError naming ``store.url``."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        scheme = ""
    if scheme not in _SCHEMES:
        raise StoreError(f"store.url: {_FORMS_HINT}; got {display_url(url)!r}")
    backend_url, _interval = _split_guard_param(url)
    if scheme == "sqlite":
        _path, query = sqlite_path(backend_url)
        _sqlite_kwargs(query)
    return backend_url


def _split_guard_param(url: str) -> tuple[str, float]:
    """Take ``recovery_interval_s`` out of the URL (the backends do not know it)."""
    base, _sep, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if all(key != _GUARD_PARAM for key, _value in pairs):
        return url, DEFAULT_RECOVERY_INTERVAL_S  # the URL as written
    interval = DEFAULT_RECOVERY_INTERVAL_S
    rest = []
    for key, value in pairs:
        if key != _GUARD_PARAM:
            rest.append((key, value))
            continue
        try:
            interval = float(value)
        except ValueError as exc:
            raise StoreError(f"store.url: {key}={value!r} is not a number") from exc
        if not interval > 0:
            raise StoreError(f"store.url: {key} must be > 0")
    return (f"{base}?{urlencode(rest)}" if rest else base), interval


def _sqlite_kwargs(query: dict[str, str]) -> dict[str, float]:
    kwargs: dict[str, float] = {}
    for key, value in query.items():
        cast = _SQLITE_PARAMS.get(key)
        if cast is None:
            raise StoreError(f"store.url: unknown parameter {key!r} for sqlite")
        try:
            kwargs[key] = cast(value)
        except ValueError as exc:
            raise StoreError(f"store.url: {key}={value!r} is not a number") from exc
    if kwargs.get("max_message_ids", 1) < 1:
        raise StoreError("store.url: max_message_ids must be at least 1")
    if kwargs.get("max_replies", 1) < 1:
        raise StoreError("store.url: max_replies must be at least 1")
    return kwargs


async def _open_backend(url: str, *, instance: str, create: bool) -> ConsentStore:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from gateway.store.sqlite import SqliteStore  # only what the URL needs

        path, query = sqlite_path(url)
        kwargs = _sqlite_kwargs(query)
        return await SqliteStore.open(
            path,
            instance=instance,
            create=create,
            **kwargs,  # type: ignore[arg-type]
        )
    if scheme in _CLUSTER_SCHEMES:
        from gateway.store.rediscluster import RedisClusterStore

        return await RedisClusterStore.from_url(url, instance=instance)
    from gateway.store.redis import RedisStore  # the schemes left (check_url allows no other)

    return await RedisStore.from_url(url, instance=instance)


async def open_store(
    url: str,
    *,
    instance: str,
    create: bool = False,
    metrics: Metrics | None = None,
    start_unavailable: bool = False,
) -> FailClosedStore:
    """Open the store for ``url`` behind the fail-closed guard.

    Raises StoreError (bad URL), StoreNotFoundError (no SQLite file and ``create`` is false)
    or StoreUnavailableError (the backend does not work). ``metrics`` gets the
    ``smppgw_consent_store_up`` gauge. ``start_unavailable`` (the daemon): a Redis that does
    not answer is no error; the store opens in a fault (every call refused) and recovers once
    the guard's probe reaches Redis.
    """
    check_url(url)
    backend_url, interval = _split_guard_param(url)
    down: StoreUnavailableError | None = None
    try:
        inner = await _open_backend(backend_url, instance=instance, create=create)
    except StoreUnavailableError as exc:
        if not start_unavailable or urlsplit(backend_url).scheme not in _REDIS_SCHEMES:
            raise
        from gateway.store.redis import RedisStore
        from gateway.store.rediscluster import RedisClusterStore

        opener = (
            RedisClusterStore.from_url
            if urlsplit(backend_url).scheme in _CLUSTER_SCHEMES
            else RedisStore.from_url
        )
        inner = await opener(backend_url, instance=instance, require_up=False)
        down = exc
    guard = FailClosedStore(
        inner, name=display_url(url), recovery_interval_s=interval, metrics=metrics
    )
    if down is not None:
        guard.fail("open", down)
    return guard


async def count_records(url: str) -> int:
    """The number of consent records of the store at ``url``, creating, migrating and writing
    nothing (``check-config``). Raises like ``open_store``; ``memory://`` always has 0."""
    backend_url = check_url(url)
    scheme = urlsplit(backend_url).scheme
    if scheme == "memory":
        return 0
    if scheme == "sqlite":
        from gateway.store.sqlite import read_record_count

        path, _query = sqlite_path(backend_url)
        return await asyncio.to_thread(read_record_count, path)
    if scheme in _CLUSTER_SCHEMES:
        from gateway.store.rediscluster import read_record_count as cluster_record_count

        return await cluster_record_count(backend_url)
    from gateway.store.redis import read_record_count as redis_record_count

    return await redis_record_count(backend_url)
