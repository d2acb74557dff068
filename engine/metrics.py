"""Prometheus metrics, one registry per runtime (nothing global, nothing built at import)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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
#: Stream-lag buckets in seconds: in-process news is sent in milliseconds, another process's
#: within the change feed's poll (0.25 s), a busy server's later.
LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: The outbox states the delivery gauges show.
DELIVERY_STATES = {"pending": "pending", "sending": "pending", "failed": "failed"}


def sink_of(target: str) -> str:
    """A delivery target as a metric label: ``slack``, ``callback``, ``terminal`` (one label
    for every terminal session)."""
    return target.partition(":")[0]


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the scrape for nothing
        self.registry = CollectorRegistry(auto_describe=True)
        self._delivery_labels: set[tuple[str, str]] = set()
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
        self.retries = Counter(
            "attune_execution_retries_total",
            "Retries submitted (an action's max_retries), by action and why (abandoned, timeout).",
            ["action", "reason"],
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

        self.deliveries = Gauge(
            "attune_deliveries",
            "Outbox deliveries not yet delivered (pending) or given up on (failed), by sink.",
            ["sink", "state"],
            registry=self.registry,
        )
        self.streams_open = Gauge(
            "attune_streams_open",
            "Live streams open now, by kind (changes: executions/stream; logs: an output stream).",
            ["kind"],
            registry=self.registry,
        )
        self.stream_lag = Histogram(
            "attune_stream_lag_seconds",
            "Time from an execution's change (its updated time) to its event sent on a stream.",
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )

    def set_deliveries(self, totals: Mapping[tuple[str, str], int]) -> None:
        """The delivery gauges from ``{(target, state): count}``; a (sink, state) seen before
        and absent now is 0."""
        counts: dict[tuple[str, str], int] = {}
        for (target, state), n in totals.items():
            shown = DELIVERY_STATES.get(state)
            if shown is not None:
                key = (sink_of(target), shown)
                counts[key] = counts.get(key, 0) + n
        for labels in self._delivery_labels - counts.keys():
            self.deliveries.labels(*labels).set(0)
        for labels, n in counts.items():
            self.deliveries.labels(*labels).set(n)
        self._delivery_labels |= counts.keys()

    @contextmanager
    def stream_open(self, kind: str) -> Iterator[None]:
        """Count a live stream of ``kind`` open while the block runs (``changes``; the output
        streams use ``logs``)."""
        gauge = self.streams_open.labels(kind)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def render(self) -> bytes:
        return generate_latest(self.registry)
