"""Prometheus metrics: the families (one module, created once), and the calls that feed them.

Who feeds what:
- the job services count enqueued jobs (`count_enqueued`), the schedule service cron fires
  (`count_fired`), the scheduler rescued jobs (`count_rescued`);
- each worker counts claims and accepted outcomes and times attempts (`JobMetrics`);
- the API counts and times requests by route template (`observe_request`) and refreshes
  the database gauges in the background (`database_gauges`);
- the relay reports its lag per sink (`set_relay_lag`), the webhooks dispatcher each
  attempt's outcome (`count_webhook_attempt`).
The API serves them at /metrics (administrators only); `conveyor worker` and `conveyor
scheduler` serve them on `--metrics-port`. See deploy/README.md for multiprocess mode.
"""

from __future__ import annotations

from conveyor.metrics.exposition import asgi_app, multiprocess_dir, registry, render
from conveyor.metrics.gauges import (
    database_gauges,
    refresh_database_gauges,
    set_limit_gauges,
    set_queue_gauges,
    set_relay_lag,
)
from conveyor.metrics.http import UNMATCHED, observe_request
from conveyor.metrics.jobs import (
    JobMetrics,
    count_enqueued,
    count_fire_failed,
    count_fire_skipped,
    count_fired,
    count_rescued,
)
from conveyor.metrics.limits import count_drift, count_refused
from conveyor.metrics.webhooks import count_webhook_attempt

__all__ = [
    "UNMATCHED",
    "JobMetrics",
    "asgi_app",
    "count_drift",
    "count_enqueued",
    "count_fire_failed",
    "count_fire_skipped",
    "count_fired",
    "count_refused",
    "count_rescued",
    "count_webhook_attempt",
    "database_gauges",
    "multiprocess_dir",
    "observe_request",
    "refresh_database_gauges",
    "registry",
    "render",
    "set_limit_gauges",
    "set_queue_gauges",
    "set_relay_lag",
]
