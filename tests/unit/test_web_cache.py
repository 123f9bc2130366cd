"""The web process's one TTL cache (API tokens, the viewer's rows): values expire after ``ttl``
on its clock (moved by the test, never slept), the size is bounded, ``ttl`` 0 keeps nothing."""

from __future__ import annotations

from radseg.web.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_kept_for_the_ttl_then_read_again() -> None:
    clock = Clock()
    cache: TTLCache[tuple[str, int], str] = TTLCache(2.0, clock=clock)
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        return f"v{len(reads)}"

    assert cache.get_or_read(("series", 1), read) == "v1"
    clock.now += 2.0
    assert cache.get_or_read(("series", 1), read) == "v1"  # still within the TTL
    clock.now += 0.01
    assert cache.get(("series", 1)) is None
    assert cache.get_or_read(("series", 1), read) == "v2" and len(reads) == 2
    cache.clear()
    assert cache.get(("series", 1)) is None


def test_the_cache_is_bounded_and_a_zero_ttl_keeps_nothing() -> None:
    cache: TTLCache[int, int] = TTLCache(60.0, max_items=3)
    for n in range(3):
        cache.put(n, n)
    assert [cache.get(n) for n in range(3)] == [0, 1, 2]
    cache.put(3, 3)  # full: it starts again empty rather than grow
    assert [cache.get(n) for n in range(4)] == [None, None, None, 3]
    off: TTLCache[int, int] = TTLCache(0.0)
    off.put(1, 1)
    assert off.get(1) is None
