"""Calls from many threads joined into batches (imgsim.core.batching): fewer, larger runs, each caller its own rows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from imgsim.core.batching import Batches


def joined(max_rows: int, callers: int = 5):
    """One call runs (held until the others queue), `callers` more arrive meanwhile; returns (batch sizes, answers)."""
    sizes, started, release, all_queued = [], threading.Event(), threading.Event(), threading.Event()

    def fn(rows):
        sizes.append(len(rows))
        started.set()
        release.wait(30)
        return rows * 10

    def queued(count):
        if count == callers:  # the first call is running, every other one waits in the queue
            all_queued.set()

    batches = Batches(fn, max_rows=max_rows, queued=queued)
    answers = {}

    def call(i):
        answers[i] = batches(np.full((1, 2), i))

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert started.wait(30)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, callers + 1)]
    for t in others:
        t.start()
    assert all_queued.wait(30)
    release.set()
    for t in [first, *others]:
        t.join(30)
    return sizes, answers


def test_calls_made_while_a_batch_runs_are_joined_into_the_next():
    sizes, answers = joined(max_rows=64)
    assert sizes == [1, 5]
    assert all(np.array_equal(answers[i], np.full((1, 2), i * 10)) for i in range(6))  # each caller its own rows


def test_the_control_without_joining_runs_every_call_alone():
    sizes, answers = joined(max_rows=1)
    assert sizes == [1, 1, 1, 1, 1, 1]
    assert all(np.array_equal(answers[i], np.full((1, 2), i * 10)) for i in range(6))


def test_a_batch_is_at_most_max_rows_and_a_lone_call_runs_at_once():
    sizes, _ = joined(max_rows=2)
    assert sizes == [1, 2, 2, 1]
    lone = Batches(lambda rows: rows + 1)
    assert np.array_equal(lone(np.zeros((3, 1))), np.ones((3, 1)))


def test_an_error_reaches_every_call_of_its_batch_and_the_next_batch_still_runs():
    calls = []

    def fn(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise ValueError("the model refused")
        return rows

    batches = Batches(fn)
    with pytest.raises(ValueError, match="refused"):
        batches(np.zeros((1, 1)))
    assert np.array_equal(batches(np.ones((2, 1))), np.ones((2, 1)))
