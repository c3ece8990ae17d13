"""The local read cache: LRU bounds, load tickets against invalidation races, lease."""

from __future__ import annotations

from gateway.consent.model import ConsentRecord, ConsentState
from gateway.store.cache import ConsentCache, SeenCache

RECORD = ConsentRecord(
    subscriber="1", scope="global:*", state=ConsentState.OPTED_IN, updated_at=1.0, last_event_id="e"
)
VALUE = {"global:*": RECORD}


def load(cache: ConsentCache, subscriber: str) -> None:
    ticket = cache.begin(subscriber)
    try:
        cache.fill(ticket, VALUE)
    finally:
        cache.release(ticket)


class TestConsentCache:
    def test_fill_then_hit(self) -> None:
        """A completed load is answered from the cache as a read-only mapping."""
        cache = ConsentCache(10)
        load(cache, "1")
        assert cache.get("1") == VALUE
        assert cache.get("2") is None

    def test_lru_evicts_the_least_recently_used(self) -> None:
        """Past max_entries the entry not used for longest goes first."""
        cache = ConsentCache(2)
        load(cache, "1")
        load(cache, "2")
        assert cache.get("1") is not None
        load(cache, "3")
        assert cache.get("2") is None
        assert cache.get("1") is not None
        assert len(cache) == 2

    def test_invalidation_during_load_prevents_fill(self) -> None:
        """A load that raced an invalidation of its subscriber is not kept."""
        cache = ConsentCache(10)
        ticket = cache.begin("1")
        cache.invalidate("1")
        cache.fill(ticket, VALUE)
        cache.release(ticket)
        assert cache.get("1") is None

    def test_invalidation_of_another_subscriber_does_not_matter(self) -> None:
        """Invalidating one subscriber leaves loads of others alone."""
        cache = ConsentCache(10)
        ticket = cache.begin("1")
        cache.invalidate("2")
        cache.fill(ticket, VALUE)
        cache.release(ticket)
        assert cache.get("1") == VALUE

    def test_clear_during_load_prevents_fill(self) -> None:
        """A load that raced a full clear is not kept."""
        cache = ConsentCache(10)
        ticket = cache.begin("1")
        cache.clear()
        cache.fill(ticket, VALUE)
        cache.release(ticket)
        assert cache.get("1") is None

    def test_disabled_cache_keeps_and_answers_nothing(self) -> None:
        """A disabled cache drops its entries and refuses fills until enabled again."""
        cache = ConsentCache(10)
        load(cache, "1")
        cache.disable()
        assert cache.get("1") is None
        load(cache, "1")
        assert cache.get("1") is None
        cache.enable()
        load(cache, "1")
        assert cache.get("1") == VALUE

    def test_expired_lease_stops_answers(self) -> None:
        """Once the lease has run out the cache answers nothing."""
        cache = ConsentCache(10, enabled=False)
        cache.enable(lease_s=3600)
        load(cache, "1")
        assert cache.get("1") == VALUE
        cache.extend(-1.0)
        assert cache.get("1") is None
        assert not cache.enabled

    def test_pending_loads_are_forgotten_when_done(self) -> None:
        """Bookkeeping of loads in flight does not grow after they finish."""
        cache = ConsentCache(10)
        for _ in range(3):
            load(cache, "1")
        assert cache._pending == {}


class TestSeenCache:
    def test_positive_only_and_bounded(self) -> None:
        """Marks are remembered as True, unknowns are None, and the size is bounded."""
        seen = SeenCache(2)
        seen.add("1", "a")
        seen.add("1", "b")
        seen.add("2", "a")
        assert seen.get("1", "a") is None
        assert seen.get("2", "a") is True
        assert seen.get("3", "a") is None
