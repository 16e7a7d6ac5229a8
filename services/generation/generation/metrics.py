"""Prometheus metrics of the generation worker (names agreed in docs: interfaces, issue 7)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GENERATIONS = Counter(
    "genimage_generations_total",
    "Generations that reached a terminal state, by kind, model and status",
    ["kind", "model", "status"],
)
GENERATION_DURATION = Histogram(
    "genimage_generation_duration_seconds",
    "Time a generation spent queued (requested → started) and running (started → terminal)",
    ["kind", "phase"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
PROVIDER_REQUESTS = Counter(
    "genimage_provider_requests_total",
    "Calls to model providers by outcome "
    "(ok, rate_limited, server_error, timeout, connection_error, refused, rejected, auth, malformed, canceled)",
    ["provider", "outcome"],
)
JOBS_RUNNING = Gauge("genimage_generation_jobs_running", "Jobs this replica is running now")
