"""Open the consent store named by ``[store] url`` (the composition root and the CLI call this).

Supported URLs:

- ``sqlite:///var/lib/smpp-gateway/consent.db``: an absolute path (everything after
  ``sqlite://``); ``sqlite:relative/consent.db`` for a path relative to the working directory.
  Query parameters: ``cache_size``, ``busy_timeout_s``, ``change_check_interval_s``
  (see ``gateway.store.sqlite``). ``sqlite:///:memory:`` is refused: it is not durable.
- ``redis://``, ``rediss://`` and ``redis+sentinel://``: see ``gateway.store.redis``.
- ``memory://``: the non-durable reference store, for tests and demonstrations only.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.store.base import ConsentStore, StoreError
from gateway.store.memory import MemoryStore

_SQLITE_PARAMS = {"cache_size": int, "busy_timeout_s": float, "change_check_interval_s": float}


def _sqlite_path(url: str) -> tuple[str, dict[str, str]]:
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


async def open_store(url: str, *, instance: str) -> ConsentStore:
    """Open the store for ``url``; raises StoreError (bad URL) or StoreUnavailableError."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from gateway.store.sqlite import SqliteStore  # only what the URL needs

        path, query = _sqlite_path(url)
        kwargs: dict[str, float] = {}
        for key, value in query.items():
            cast = _SQLITE_PARAMS.get(key)
            if cast is None:
                raise StoreError(f"store.url: unknown parameter {key!r} for sqlite")
            try:
                kwargs[key] = cast(value)
            except ValueError as exc:
                raise StoreError(f"store.url: {key}={value!r} is not a number") from exc
        return await SqliteStore.open(
            path,
            instance=instance,
            create=True,
            **kwargs,  # type: ignore[arg-type]
        )
    if scheme in ("redis", "rediss", "redis+sentinel"):
        from gateway.store.redis import RedisStore

        return await RedisStore.from_url(url, instance=instance)
    raise StoreError(f"store.url: unsupported scheme {scheme!r} (sqlite, redis, memory)")
