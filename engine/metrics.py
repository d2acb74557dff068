"""Prometheus metrics, one registry per runtime (nothing global, nothing built at import)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

#: Run-duration buckets in seconds, from in-process actions to long scripts.
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the scrape for nothing
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "attune_execution_transitions_total",
            "Executions entering a status, by status and action.",
            ["status", "action"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "attune_execution_run_duration_seconds",
            "Time from start to end of a run, by action and final status.",
            ["action", "status"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.executions = Gauge(
            "attune_executions",
            "Executions in the database, by status.",
            ["status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "attune_queue_depth", "Executions accepted but not yet started.", registry=self.registry
        )
        self.http_requests = Counter(
            "attune_http_requests_total",
            "API requests by method, route and status code.",
            ["method", "route", "code"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
