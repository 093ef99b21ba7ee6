"""The numeric libraries' own threads in a process that serves requests (the HTTP API, the dashboard).

numpy's OpenBLAS splits a matrix-vector product of a few thousand rows (an exact search: one query against
2,500-10,000 vectors of 256) over every core, then keeps its worker threads spinning for the next call: on
2 cores here about 30 ms of the other core after each one, whatever else the process does meanwhile
(benchmarks/bench_rerank.py, 10,000 images, scope cluster: 87 CPU ms a re-checked query for 45 ms of wall
time; with one BLAS thread 46 CPU ms for the same 45 ms). A server's work comes in requests, many at once,
so there a second BLAS thread only takes a core from the next request.
"""

from __future__ import annotations

import functools


@functools.cache
def serving() -> None:
    """Run BLAS on the calling thread from now on, in this process (once; later calls do nothing)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
