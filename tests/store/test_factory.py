"""open_store: URL forms and refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.store.base import MessageIds, StoreError, StoreNotFoundError, StoreUnavailableError
from gateway.store.factory import display_url, open_store
from gateway.store.guard import FailClosedStore
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.support.redis_server import RedisServer, redis_server_binary


class TestOpenStore:
    async def test_memory(self) -> None:
        """memory:// opens the reference store, behind the fail-closed guard."""
        store = await open_store("memory://", instance="i")
        assert isinstance(store, FailClosedStore)
        assert isinstance(store.inner, MemoryStore)
        await store.close()

    async def test_sqlite_absolute_path(self, tmp_path: Path) -> None:
        """sqlite:///abs/path opens (and, with create, creates) that file."""
        path = tmp_path / "c.db"
        store = await open_store(f"sqlite://{path}?cache_size=10", instance="i", create=True)
        assert isinstance(store.inner, SqliteStore)
        assert store.inner.path == str(path)
        await store.close()
        assert path.exists()

    async def test_sqlite_relative_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """sqlite:relative/path is relative to the working directory."""
        monkeypatch.chdir(tmp_path)
        store = await open_store("sqlite:data.db", instance="i", create=True)
        await store.close()
        assert (tmp_path / "data.db").exists()

    async def test_sqlite_is_not_created_by_default(self, tmp_path: Path) -> None:
        """Without create=True a missing file (or directory) is an error naming the path, and
        nothing is created: neither the file nor its directory."""
        path = tmp_path / "state" / "c.db"
        with pytest.raises(StoreNotFoundError, match=f"no consent store at {path}"):
            await open_store(f"sqlite://{path}", instance="cli")
        assert not path.parent.exists()

    async def test_recovery_interval_is_a_url_parameter(self, tmp_path: Path) -> None:
        """recovery_interval_s sets the guard's probe interval and is not passed to the backend."""
        path = tmp_path / "c.db"
        url = f"sqlite://{path}?recovery_interval_s=0.05&cache_size=10"
        store = await open_store(url, instance="i", create=True)
        assert store.recovery_interval_s == 0.05
        await store.close()
        with pytest.raises(StoreError, match="recovery_interval_s"):
            await open_store("memory://?recovery_interval_s=0", instance="i")

    async def test_max_message_ids_is_a_url_parameter(self, tmp_path: Path) -> None:
        """max_message_ids on a sqlite URL bounds the message ids the store keeps."""
        path = tmp_path / "c.db"
        store = await open_store(f"sqlite://{path}?max_message_ids=2", instance="i", create=True)
        try:
            entries = [
                MessageIds(upstream_id=f"up-{i}", client_ids=(f"gw-{i}",), account="a")
                for i in range(3)
            ]
            await store.put_message_ids(entries, 60.0)
            found = [await store.get_message_ids(entry.upstream_id) for entry in entries]
        finally:
            await store.close()
        assert sum(entry is not None for entry in found) == 2

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:s3cret@h:6379/0?prefix=x", "redis://***@h:6379/0?prefix=x"),
            ("redis://user:s3cret@h/0", "redis://***@h/0"),
            (
                "redis+sentinel://s1,s2/mymaster?sentinel_password=s3cret",
                "redis+sentinel://s1,s2/mymaster?sentinel_password=***",
            ),
            ("sqlite:///var/lib/c.db", "sqlite:///var/lib/c.db"),
            ("sqlite:var/c.db?cache_size=5", "sqlite:var/c.db?cache_size=5"),
        ],
    )
    def test_display_url_masks_secrets(self, url: str, shown: str) -> None:
        """The URL shown in logs and by check-config never holds a password."""
        assert display_url(url) == shown

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:///:memory:",
            "sqlite://",
            "sqlite:///x.db?bogus=1",
            "sqlite:///x.db?max_message_ids=0",
            "sqlite:///x.db?max_message_ids=many",
            "postgres://h/db",
        ],
    )
    async def test_refused(self, url: str) -> None:
        """Non-durable, incomplete or unknown URLs raise StoreError."""
        with pytest.raises(StoreError, match=r"store\.url"):
            await open_store(url, instance="i")

    @pytest.mark.redis
    async def test_redis(self, redis_server: RedisServer) -> None:
        """redis:// opens a RedisStore that answers."""
        store = await open_store(redis_server.url + "?prefix=factory", instance="i")
        assert isinstance(store.inner, RedisStore)
        await store.ping()
        await store.close()

    @pytest.mark.redis
    async def test_redis_down_opens_in_a_fault_only_for_the_daemon(self, tmp_path: Path) -> None:
        """A Redis that does not answer: StoreUnavailableError, unless start_unavailable (the
        daemon), which opens the store in a fault (every call refused at once) that clears
        by itself once Redis is up."""
        if redis_server_binary() is None:
            pytest.skip("redis-server is not installed")
        server = RedisServer(tmp_path / "redis")  # not started
        url = f"{server.url}?timeout_s=0.5&recovery_interval_s=0.05"
        with pytest.raises(StoreUnavailableError):
            await open_store(url, instance="i")
        store = await open_store(url, instance="i", start_unavailable=True)
        try:
            assert isinstance(store.inner, RedisStore)
            assert store.fault is not None
            with pytest.raises(StoreUnavailableError):
                await store.current("15551234567")
            await asyncio.to_thread(server.start)
            await store.wait_healthy(10.0)
            assert await store.current("15551234567") == {}
            await store.ping()
        finally:
            await store.close()
            await asyncio.to_thread(server.stop)
