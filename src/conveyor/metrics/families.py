"""Every Conveyor metric, created once per process.

Module-level metric objects are prometheus-client's norm: they register with its default
registry at import, and in multiprocess mode (PROMETHEUS_MULTIPROC_DIR) each process writes
their values to its own files. Names carry the `conveyor_` prefix; counters are declared
with their `_total` name, which is also the name of their sample.

Gauges are set, never incremented, from figures every process reads alike (the database,
the relay's backlog); `mostrecent` makes a multiprocess scrape show the freshest value
instead of a sum over processes that would count each job once per API process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

JOB_LABELS = ("queue", "type")
QUEUE_LABELS = ("queue", "state")
HTTP_LABELS = ("route", "method")

# Handlers range from a no-op (microseconds) to long batch work (an hour).
RUN_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# A healthy queue is claimed within milliseconds; a backlog waits minutes or hours.
WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0, 4 * 3600.0,
)  # fmt: skip
HTTP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

JOBS_ENQUEUED = Counter(
    "conveyor_jobs_enqueued_total",
    "Jobs stored by a submission; a repeat returned by its idempotency key is not counted.",
    JOB_LABELS,
)
JOBS_STARTED = Counter("conveyor_jobs_started_total", "Attempts claimed by a worker.", JOB_LABELS)
JOBS_COMPLETED = Counter(
    "conveyor_jobs_completed_total",
    "Attempts that completed, counted once the database accepted the outcome.",
    JOB_LABELS,
)
JOBS_FAILED = Counter(
    "conveyor_jobs_failed_total",
    "Attempts that failed for good (attempts spent or not retryable), once accepted.",
    JOB_LABELS,
)
JOBS_RETRIED = Counter(
    "conveyor_jobs_retried_total",
    "Attempts that failed and were scheduled to run again, once accepted.",
    JOB_LABELS,
)
JOBS_RESCUED = Counter(
    "conveyor_jobs_rescued_total",
    "Running jobs whose worker stopped heartbeating, by what the rescue did: requeued (an "
    "attempt left) or failed (attempts spent).",
    (*JOB_LABELS, "outcome"),
)
SCHEDULE_FIRES = Counter(
    "conveyor_schedule_fires_total",
    "Cron fires that enqueued a job (each fire time once, whichever scheduler fired it); "
    "the job counts in conveyor_jobs_enqueued_total too.",
    JOB_LABELS,
)
SCHEDULE_FIRES_FAILED = Counter(
    "conveyor_schedule_fires_failed_total",
    "Cron fires whose template no longer validates against the job types (logged; the "
    "schedule advances), by what the schedule fires: job or workflow.",
    ["kind"],
)
SCHEDULE_FIRES_SKIPPED = Counter(
    "conveyor_schedule_fires_skipped_total",
    "Cron fires skipped (logged; the schedule advances), by what the schedule fires (job or "
    "workflow) and why (quota: the owner's queued quota could not take them).",
    ["kind", "reason"],
)
JOB_RUN_SECONDS = Histogram(
    "conveyor_job_run_seconds",
    "Time one attempt took, from the start of its execution to its outcome.",
    JOB_LABELS,
    buckets=RUN_BUCKETS,
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "conveyor_job_queue_wait_seconds",
    "Time from when a job could run (its run_at) to when a worker claimed it.",
    JOB_LABELS,
    buckets=WAIT_BUCKETS,
)
QUEUE_JOBS = Gauge(
    "conveyor_queue_jobs",
    "Jobs by queue and state, read from the database every few seconds.",
    QUEUE_LABELS,
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST_AGE = Gauge(
    "conveyor_queue_oldest_job_age_seconds",
    "Age (since created_at) of the oldest job by queue and state; 0 when there is none.",
    QUEUE_LABELS,
    multiprocess_mode="mostrecent",
)
# Per limit NAME, never per key (keys are payload values: unbounded cardinality).
LIMIT_RUNNING = Gauge(
    "conveyor_limit_running_jobs",
    "Jobs running under each flow-control limit (every key together), read from the database.",
    ("limit",),
    multiprocess_mode="mostrecent",
)
LIMIT_READY = Gauge(
    "conveyor_limit_ready_jobs",
    "Jobs queued (ready) under each flow-control limit (every key together).",
    ("limit",),
    multiprocess_mode="mostrecent",
)
WORKERS_ALIVE = Gauge(
    "conveyor_workers_alive",
    "Workers whose heartbeat is recent, read from the database.",
    multiprocess_mode="mostrecent",
)
HTTP_REQUESTS = Counter(
    "conveyor_http_requests_total",
    "HTTP requests by route template, method and status.",
    (*HTTP_LABELS, "status"),
)
HTTP_REQUEST_SECONDS = Histogram(
    "conveyor_http_request_seconds",
    "HTTP request latency by route template and method.",
    HTTP_LABELS,
    buckets=HTTP_BUCKETS,
)
RELAY_LAG_EVENTS = Gauge(
    "conveyor_relay_lag_events",
    "Outbox events not yet delivered to a sink.",
    ("sink",),
    multiprocess_mode="mostrecent",
)
RELAY_LAG_SECONDS = Gauge(
    "conveyor_relay_lag_seconds",
    "Age of the oldest outbox event not yet delivered to a sink.",
    ("sink",),
    multiprocess_mode="mostrecent",
)
WEBHOOK_ATTEMPTS = Counter(
    "conveyor_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered, retrying or failed.",
    ("outcome",),
)
PROCESS_CHILDREN_REPLACED = Counter(
    "conveyor_process_children_replaced_total",
    "Process-pool children a worker let go, by reason: died (exit or signal; the job it ran "
    "failed that attempt), stopped (its job timed out or was cancelled), recycled_tasks, "
    "recycled_memory (CONVEYOR_WORKER_MAX_TASKS_PER_CHILD, _MAX_MEMORY_PER_CHILD), shutdown.",
    ("reason",),
)
WORKER_LOOP_BLOCKS = Counter(
    "conveyor_worker_loop_blocks_total",
    "Times a worker's event loop did not turn for over a second (a handler blocking it); the "
    "log names the job and the stack it was blocked in.",
)
WORKER_ABANDONED_THREADS = Gauge(
    "conveyor_worker_abandoned_threads",
    "Threads of sync handlers that timed out or were stopped and still run (a thread cannot "
    "be killed); the pool starts a spare in each one's place, up to "
    "CONVEYOR_WORKER_SPARE_THREADS.",
    multiprocess_mode="livesum",
)

# Flow control (docs/flow-control.md): by limit name only, never by key (bounded cardinality).
LIMIT_REFUSED = Counter(
    "conveyor_limit_admissions_refused_total",
    "Limited jobs a claim picked but could not start: the limit (the first of the job's that "
    "had no free slot or token) held them back; they stay queued.",
    ("limit",),
)
LIMIT_DRIFT_CORRECTED = Counter(
    "conveyor_limit_drift_corrected_total",
    "Concurrency slots the reconcile freed because no running job held them, or gave to a "
    "running job that held none of its limit (a leak either way: each is also logged at "
    "WARNING with its limit and key).",
    ("limit",),
)

ALL: tuple[MetricWrapperBase, ...] = (
    JOBS_ENQUEUED,
    JOBS_STARTED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_RETRIED,
    JOBS_RESCUED,
    SCHEDULE_FIRES,
    SCHEDULE_FIRES_FAILED,
    SCHEDULE_FIRES_SKIPPED,
    JOB_RUN_SECONDS,
    JOB_QUEUE_WAIT_SECONDS,
    QUEUE_JOBS,
    QUEUE_OLDEST_AGE,
    WORKERS_ALIVE,
    HTTP_REQUESTS,
    HTTP_REQUEST_SECONDS,
    RELAY_LAG_EVENTS,
    RELAY_LAG_SECONDS,
    WEBHOOK_ATTEMPTS,
    PROCESS_CHILDREN_REPLACED,
    WORKER_LOOP_BLOCKS,
    WORKER_ABANDONED_THREADS,
    LIMIT_REFUSED,
    LIMIT_DRIFT_CORRECTED,
    LIMIT_RUNNING,
    LIMIT_READY,
)
