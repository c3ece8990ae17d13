"""open_store: URL forms and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store.base import StoreError
from gateway.store.factory import open_store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.support.redis_server import RedisServer


class TestOpenStore:
    async def test_memory(self) -> None:
        """memory:// opens the reference store."""
        store = await open_store("memory://", instance="i")
        assert isinstance(store, MemoryStore)
        await store.close()

    async def test_sqlite_absolute_path(self, tmp_path: Path) -> None:
        """sqlite:///abs/path opens (and creates) that file."""
        path = tmp_path / "c.db"
        store = await open_store(f"sqlite://{path}?cache_size=10", instance="i")
        assert isinstance(store, SqliteStore)
        assert store.path == str(path)
        await store.close()
        assert path.exists()

    async def test_sqlite_relative_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """sqlite:relative/path is relative to the working directory."""
        monkeypatch.chdir(tmp_path)
        store = await open_store("sqlite:data.db", instance="i")
        await store.close()
        assert (tmp_path / "data.db").exists()

    @pytest.mark.parametrize(
        "url",
        ["sqlite:///:memory:", "sqlite://", "sqlite:///x.db?bogus=1", "postgres://h/db"],
    )
    async def test_refused(self, url: str) -> None:
        """Non-durable, incomplete or unknown URLs raise StoreError."""
        with pytest.raises(StoreError, match=r"store\.url"):
            await open_store(url, instance="i")

    @pytest.mark.redis
    async def test_redis(self, redis_server: RedisServer) -> None:
        """redis:// opens a RedisStore that answers."""
        store = await open_store(redis_server.url + "?prefix=factory", instance="i")
        assert isinstance(store, RedisStore)
        await store.ping()
        await store.close()
