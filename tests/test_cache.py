"""The byte-budgeted cache the dashboard keeps URL queries in: never over its budget, refusals never kept."""

import threading

import numpy as np
import pytest

from imgsim.core.cache import ByteBudgetCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def array(kb: int) -> np.ndarray:
    return np.zeros(kb * 1024, np.uint8)


def test_least_recently_used_values_go_first_and_the_budget_holds():
    cache = ByteBudgetCache(max_bytes=100 * 1024, ttl=60)
    for key in "abcd":
        cache.get(key, lambda: array(30))
    assert len(cache) == 3 and cache.nbytes == 90 * 1024  # "a" went to make room for "d"
    cache.get("b", lambda: pytest.fail("b is cached"))  # a use: "c" is now the oldest
    cache.get("e", lambda: array(30))
    assert cache.get("b", lambda: array(1)).nbytes == 30 * 1024 and cache.get("c", lambda: array(1)).nbytes == 1024
    assert cache.nbytes <= 100 * 1024


def test_a_value_bigger_than_the_budget_is_returned_but_not_kept():
    cache = ByteBudgetCache(max_bytes=10 * 1024, ttl=60)
    assert cache.get("big", lambda: array(11)).nbytes == 11 * 1024
    assert len(cache) == 0 and cache.nbytes == 0


def test_values_expire_and_refusals_are_never_cached():
    clock = Clock()
    cache = ByteBudgetCache(max_bytes=10 * 1024, ttl=60, clock=clock)
    cache.get("k", lambda: array(1))
    clock.now = 59
    assert cache.get("k", lambda: array(2)).nbytes == 1024
    clock.now = 61
    assert cache.get("k", lambda: array(2)).nbytes == 2048  # made again after 60 s

    def refuse():
        raise ValueError("not an image")

    with pytest.raises(ValueError):
        cache.get("bad", refuse)
    assert len(cache) == 1 and cache.nbytes == 2048


def test_threads_sharing_it_never_take_it_over_budget():
    cache = ByteBudgetCache(max_bytes=64 * 1024, ttl=60)
    seen = []

    def visitor(start):
        for i in range(start, start + 200):
            cache.get(i % 37, lambda: array(5))
            seen.append(cache.nbytes)

    threads = [threading.Thread(target=visitor, args=(n * 7,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(seen) <= 64 * 1024 and cache.nbytes == sum(v[1] for v in cache._items.values())
