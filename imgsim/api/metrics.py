"""`GET /metrics`: Prometheus text (prometheus_client) for requests, latency, the queue and the model version.

With several worker processes, each writes its numbers under PROMETHEUS_MULTIPROC_DIR (set by
`imgsim api` before the workers start) and any worker answers for all of them
(prometheus_client's multiprocess mode); with one process the numbers are kept in memory.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# Seconds: a vector search takes milliseconds, an upload's decode and encoding tens, a URL fetch seconds.
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("imgsim_api_requests_total", "Requests answered", ["method", "route", "status"])
LATENCY = Histogram("imgsim_api_request_seconds", "Time to answer a request", ["route"], buckets=BUCKETS)
IN_FLIGHT = Gauge("imgsim_api_requests_in_flight", "Requests being answered or waiting (the queue)",
                  multiprocess_mode="livesum")
VERSION = Gauge("imgsim_api_model_version", "1 for the model version a process searches with",
                ["version"], multiprocess_mode="liveall")


def text() -> tuple[bytes, str]:
    """The metrics of every worker (multiprocess mode) or of this process, as Prometheus text."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_serving: list[str] = []


def serving(version_id: str) -> None:
    """Record the version this process searches with (the one before it drops to 0)."""
    if _serving and _serving[0] == version_id:
        return
    for old in _serving:
        VERSION.labels(old).set(0)
    VERSION.labels(version_id).set(1)
    _serving[:] = [version_id]


class Timer:
    """Times one request: `done(status)` counts it under its route (the route's pattern, never the raw path)."""

    def __init__(self, method: str):
        self.method, self.start = method, time.perf_counter()
        IN_FLIGHT.inc()

    def done(self, route: str, status: int) -> None:
        IN_FLIGHT.dec()
        LATENCY.labels(route).observe(time.perf_counter() - self.start)
        REQUESTS.labels(self.method, route, str(status)).inc()
