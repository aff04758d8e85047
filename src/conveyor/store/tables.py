"""Every table, defined once; Alembic migrations must produce exactly these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

from conveyor.domain.states import JobState
from conveyor.store.types import JsonType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_STATES = ", ".join(f"'{state.value}'" for state in JobState)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("type", String(100), nullable=False),
    Column("payload", JsonType, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", UTCDateTime, nullable=False),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("worker_id", String(64), nullable=True),
    Column("timeout_s", Float, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("progress", Integer, nullable=False),
    Column("progress_message", Text, nullable=True),
    Column("result", JsonType, nullable=True),
    Column("errors", JsonType, nullable=False),
    Column("tags", JsonType, nullable=False),
    Column("schedule_id", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # flow control (docs/flow-control.md): evaluated at submit, never at claim
    Column("fair_key", String(200), nullable=True),
    Column("fair_tag", Float, nullable=False, server_default="0"),
    Column("limited", Boolean, nullable=False, server_default=false()),
    Column("unique_key", String(255), nullable=True),
    Column("unique_states", String(120), nullable=True),
    # workflows (docs/workflows.md): the step a job is, its policy, when it became ready;
    # `dep_checks` is bumped by the release trigger to have a waiting step re-checked
    Column("workflow_id", String(36), nullable=True),
    Column("step", String(100), nullable=True),
    Column("on_dependency_failure", String(16), nullable=True),
    Column("ready_at", UTCDateTime, nullable=True),
    Column("dep_checks", Integer, nullable=False, server_default="0"),
    # a step with dependencies (stored waiting): the worker reads their results first
    Column("depends", Boolean, nullable=False, server_default=false()),
    # tracing (docs/tracing.md): the submitter's W3C trace context as JSON, NULL when off
    Column("trace_context", Text, nullable=True),
    CheckConstraint(f"state IN ({_STATES})", name="state"),
    CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
    CheckConstraint("max_attempts >= 1", name="max_attempts"),
)

# Claims read only queued rows in claim order (priority, then the fair tag: run_at's epoch
# when fair dispatch is off): a partial index keeps that scan tiny. Its first row of a
# (queue, priority) is the band's head, which a fair submit reads (docs/flow-control.md).
Index(
    "ix_jobs_claim",
    jobs.c.queue,
    jobs.c.priority.desc(),
    jobs.c.fair_tag,
    jobs.c.id,
    postgresql_where=text("state = 'queued'"),
    sqlite_where=text("state = 'queued'"),
)
# Claims of a worker that takes every queue (`--queues '*'`) read queued rows in claim order.
Index(
    "ix_jobs_claim_any",
    jobs.c.priority.desc(),
    jobs.c.fair_tag,
    jobs.c.id,
    postgresql_where=text("state = 'queued'"),
    sqlite_where=text("state = 'queued'"),
)
# A fair submit's other probe: the last tag of its key's queued jobs in the band.
Index(
    "ix_jobs_fair",
    jobs.c.queue,
    jobs.c.priority,
    jobs.c.fair_key,
    jobs.c.fair_tag,
    postgresql_where=text("state = 'queued' AND fair_key IS NOT NULL"),
    sqlite_where=text("state = 'queued' AND fair_key IS NOT NULL"),
)
Index(
    "ix_jobs_due",
    jobs.c.run_at,
    postgresql_where=text("state IN ('scheduled', 'retrying')"),
    sqlite_where=text("state IN ('scheduled', 'retrying')"),
)
Index(
    "ix_jobs_lease",
    jobs.c.lease_expires_at,
    postgresql_where=text("state = 'running'"),
    sqlite_where=text("state = 'running'"),
)
Index(
    "ix_jobs_worker",
    jobs.c.worker_id,
    postgresql_where=text("state = 'running'"),
    sqlite_where=text("state = 'running'"),
)
# Finished jobs by when they finished: the pruner's slices and the throughput chart. On
# PostgreSQL only finished rows have an entry (migration 0026: a state change is never a HOT
# update, so an entry nobody reads is a write per change); SQLite's planner uses a partial
# index only when the query spells its condition, which a bound state never does.
_FINISHED = "state IN ('completed', 'failed', 'cancelled', 'skipped')"
Index("ix_jobs_finished", jobs.c.state, jobs.c.finished_at, postgresql_where=text(_FINISHED))
Index("ix_jobs_owner", jobs.c.owner_id, jobs.c.id)
# The queued quota counts an owner's waiting jobs at submit (store/flow.py): without this
# index that count read the owner's whole history through ix_jobs_owner.
Index(
    "ix_jobs_owner_waiting",
    jobs.c.owner_id,
    postgresql_where=text("state IN ('scheduled', 'queued', 'retrying')"),
    sqlite_where=text("state IN ('scheduled', 'queued', 'retrying')"),
)
Index(
    "uq_jobs_idempotency",
    jobs.c.owner_id,
    jobs.c.idempotency_key,
    unique=True,
    postgresql_where=text("idempotency_key IS NOT NULL"),
    sqlite_where=text("idempotency_key IS NOT NULL"),
)
# One live job per unique key: a row is covered while its state is one of its own
# unique_states (",queued,running," style; migration 0014, docs/flow-control.md).
Index(
    "uq_jobs_unique",
    jobs.c.unique_key,
    unique=True,
    postgresql_where=text(
        "unique_key IS NOT NULL AND strpos(unique_states, ',' || state || ',') > 0"
    ),
    sqlite_where=text("unique_key IS NOT NULL AND instr(unique_states, ',' || state || ',') > 0"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", JsonType, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
)

# Paused queues: a row per queue that workers must not claim from (jobs are still accepted).
# Claims on both databases test it with NOT EXISTS; it holds a handful of rows at most.
queue_pauses = Table(
    "queue_pauses",
    metadata,
    Column("queue", String(100), primary_key=True),
    Column("paused_at", UTCDateTime, nullable=False),
    Column("paused_by", String(64), nullable=True),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("job_type", String(100), nullable=True),  # NULL: it fires `workflow` (0017)
    Column("queue", String(100), nullable=True),
    Column("payload", JsonType, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=True),
    Column("timeout_s", Float, nullable=True),
    Column("tags", JsonType, nullable=False),
    Column("paused", Boolean, nullable=False),
    # What a fire later than the scheduler's grace does: skip, once or all (fires.py).
    Column("misfire_policy", String(8), nullable=False, server_default="once"),
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("last_fire_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # A workflow template (domain/workflows.py spec_json): each fire submits one workflow.
    Column("workflow", JsonType, nullable=True),
    # A job schedule's submit limits, name -> key (0021; NULL: none): each fire is under them.
    Column("limits", JsonType, nullable=True),
    CheckConstraint("(job_type IS NULL) <> (workflow IS NULL)", name="job_or_workflow"),
)
Index("uq_schedules_owner_name", schedules.c.owner_id, schedules.c.name, unique=True)
Index("ix_schedules_next_fire", schedules.c.next_fire_at)

# One row per (schedule, fire time), written in the job's transaction: a second scheduler
# firing the same time hits the primary key and fires nothing.
schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column(
        "schedule_id",
        String(36),
        ForeignKey("schedules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fire_at", UTCDateTime, primary_key=True),
    Column("job_id", String(36), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Leadership for maintenance work on databases without advisory locks (SQLite).
leader_leases = Table(
    "leader_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # The holder's process: a contender on the same host that finds it gone takes over at
    # once instead of waiting out the expiry (drivers/processes.py).
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_started", String(32), nullable=True),
)

# ---- accounts --------------------------------------------------------------------------------
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False),  # stored lower-cased
    Column("username", String(150), nullable=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # flow control: this user's share under fair dispatch, and own quotas (None: the settings')
    Column("fair_weight", Float, nullable=False, server_default="1"),
    Column("max_queued", Integer, nullable=True),
    Column("max_running", Integer, nullable=True),
    CheckConstraint("role IN ('admin', 'user')", name="role"),
)
Index("uq_users_email", users.c.email, unique=True)
Index("uq_users_username", users.c.username, unique=True)

# Only the newest code of a user is valid: one row per user, replaced on resend.
otp_codes = Table(
    "otp_codes",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("family_id", String(64), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_refresh_tokens_family_id", refresh_tokens.c.family_id)
Index("ix_refresh_tokens_user_id", refresh_tokens.c.user_id)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)
Index("uq_api_keys_key_hash", api_keys.c.key_hash, unique=True)
Index("ix_api_keys_user_id", api_keys.c.user_id)

# ---- built-in job types ----------------------------------------------------------------------
# One row per job whose e-mail went out: a retry after a crash finds it and does not resend.
email_deliveries = Table(
    "email_deliveries",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("message_id", String(255), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
)

# Reference 004's tasks: integer ids (its clients put them in URLs), completed by a job.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", String(64), nullable=False),
    Column("title", String(500), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("job_id", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    CheckConstraint("status IN ('pending', 'completed')", name="status"),
)
Index("ix_tasks_owner_id", tasks.c.owner_id, tasks.c.id)

# ---- events (the outbox) ---------------------------------------------------------------------
# One row per job state change, written in the same statement or transaction as the change.
# `xid` is the writing transaction (PostgreSQL `txid_current()`; 0 on SQLite, whose single
# writer commits in id order): readers walk (xid, id) below the oldest running transaction
# that writes events (store/outbox.py), so an event that commits late never lands behind a
# cursor that has moved on.
events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("xid", BigInteger, nullable=False),
    Column("type", String(32), nullable=False),
    Column("job_id", String(36), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("job_type", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("data", JsonType, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
# Every event row pays for each index on every claim and finish (docs/design.md, "The event
# outbox", for the measured cost of each), so only what a reader needs is indexed:
# the reading order (relays, admin streams, pruning, which walks it from the oldest), one
# owner's events in that order (SSE per user), and one job's events (few: a hash on
# PostgreSQL, whose rows are then sorted; a plain index on SQLite).
Index("ix_events_order", events.c.xid, events.c.id)
Index("ix_events_owner", events.c.owner_id, events.c.xid, events.c.id)
Index("ix_events_job", events.c.job_id, postgresql_using="hash")

# How far each sink of the relay got, so a restart resumes without loss.
sink_cursors = Table(
    "sink_cursors",
    metadata,
    Column("sink", String(100), primary_key=True),
    Column("xid", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# ---- webhooks ----------------------------------------------------------------------------------
# A user's subscription: events of their jobs, of the listed types (["*"]: all), POSTed to `url`
# and signed with `secret` (shown once at creation; kept to sign, never shown again).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", JsonType, nullable=False),
    # Not the secret: a random nonce it is derived from with the server key (net/signing.py).
    Column("secret_nonce", String(64), nullable=False),
    Column("description", String(200), nullable=True),
    Column("paused", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_webhooks_owner", webhooks.c.owner_id, webhooks.c.id)

# The key that signs a user's job callbacks (`callback_url`); one per user, rotated by replacing
# the nonce. Like webhooks.secret_nonce, only the nonce is stored, never the secret.
callback_secrets = Table(
    "callback_secrets",
    metadata,
    Column("owner_id", String(64), primary_key=True),
    Column("secret_nonce", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# A job's `callback_url`: a side table written in the enqueue transaction only when a job has
# one, so jobs without a callback cost nothing (no column in the array-batched insert).
job_callbacks = Table(
    "job_callbacks",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# One row per (event, target): target is a webhook id or "callback". The unique key makes a
# relay's redelivery of a batch add nothing. `body` is the conveyor.event/1 bytes, kept so a
# delivery outlives the pruned event; `endpoint` (host:port) caps what one receiver holds.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", BigInteger, nullable=False),
    Column("target", String(64), nullable=False),
    Column("webhook_id", String(36), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=True),
    Column("job_id", String(36), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("endpoint", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
)
Index(
    "uq_webhook_deliveries_event_target",
    webhook_deliveries.c.event_id,
    webhook_deliveries.c.target,
    unique=True,
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=text("state = 'pending'"),
    sqlite_where=text("state = 'pending'"),
)
Index("ix_webhook_deliveries_webhook", webhook_deliveries.c.webhook_id, webhook_deliveries.c.id)
Index("ix_webhook_deliveries_job", webhook_deliveries.c.job_id, webhook_deliveries.c.id)
Index("ix_webhook_deliveries_finished", webhook_deliveries.c.finished_at)

# ---- flow control (docs/flow-control.md) -----------------------------------------------------
# Each limit as the job types declare it (synced from the registry at start): the value is
# configuration, never part of a key.
flow_limits = Table(
    "flow_limits",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(12), nullable=False),
    Column("max_running", Integer, nullable=True),
    Column("rate_limit", Integer, nullable=True),
    Column("per_s", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('concurrency', 'rate')", name="kind"),
)

# The limits a job is under, with the keys its submit evaluated (written with the job, only
# for jobs of types that declare limits: `jobs.limited` says which).
job_limits = Table(
    "job_limits",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("key", String(200), nullable=False),
)
Index("ix_job_limits_name_key", job_limits.c.name, job_limits.c.key)

# A concurrency limit's slots per key: N rows for a limit of N, each free (job_id NULL) or
# held by the running job that took it in its claim's transaction.
limit_slots = Table(
    "limit_slots",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("job_id", String(36), nullable=True),
)
# SQLite's only (migration 0027): PostgreSQL's slot take and release are HOT updates, which
# an index on job_id would forbid; its release finds the slots through job_limits.
Index("ix_limit_slots_job_id", limit_slots.c.job_id, info={"dialects": ("sqlite",)})

# A rate limit's token bucket per key, refilled on read by the time since `refreshed_at`.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("refreshed_at", UTCDateTime, nullable=False),
)


# ---- workflows (docs/workflows.md) ------------------------------------------------------------
# A workflow's own row; its steps are jobs (jobs.workflow_id), its edges job_dependencies. The
# release trigger (migration 0016) sets state and settled_at when its last step settles.
workflows = Table(
    "workflows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime, nullable=True),
    Column("on_dependency_failure", String(16), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    # The declaration's digest (domain/workflows.py `fingerprint`): a key reused with
    # another body is refused (409), as a job's is.
    Column("fingerprint", String(64), nullable=True),
    CheckConstraint("state IN ('running', 'completed', 'failed', 'cancelled')", name="state"),
)
Index("ix_workflows_owner_id", workflows.c.owner_id, workflows.c.id)
Index("ix_workflows_settled_at", workflows.c.settled_at)
Index(
    "uq_workflows_owner_id_idempotency_key",
    workflows.c.owner_id,
    workflows.c.idempotency_key,
    unique=True,
)
# A step per (workflow, name); also the index of a workflow's steps. On PostgreSQL these
# three hold steps only (migration 0026): every reader names a workflow, and a plain job's
# NULL entry was a write per state change (a state change is never a HOT update).
_IN_WORKFLOW = "workflow_id IS NOT NULL"
Index(
    "uq_jobs_workflow_id_step",
    jobs.c.workflow_id,
    jobs.c.step,
    unique=True,
    postgresql_where=text(_IN_WORKFLOW),
)
# A workflow's unsettled steps: the release trigger's "was that the last one?" probe.
_OPEN_STEP = "state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')"
# ... and its failed or cancelled ones: whether a step's dependency failed.
_BAD_STEP = "state IN ('failed', 'cancelled')"
Index(
    "ix_jobs_workflow_bad",
    jobs.c.workflow_id,
    postgresql_where=text(f"{_BAD_STEP} AND {_IN_WORKFLOW}"),
    sqlite_where=text(_BAD_STEP),
)
Index(
    "ix_jobs_workflow_open",
    jobs.c.workflow_id,
    postgresql_where=text(f"{_OPEN_STEP} AND {_IN_WORKFLOW}"),
    sqlite_where=text(_OPEN_STEP),
)

# An edge: `job_id` waits for `depends_on` (both steps of `workflow_id`). Read both ways: a
# step's parents (the release predicate) and a settled step's dependents (whom to re-check).
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("depends_on", String(36), primary_key=True),
    Column("workflow_id", String(36), nullable=False),
)
Index("ix_job_dependencies_depends_on", job_dependencies.c.depends_on)
Index("ix_job_dependencies_workflow_id", job_dependencies.c.workflow_id)


def schema_of(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's `include_object` for `dialect`: leaves out what `metadata` declares for
    other databases only (`info["dialects"]`), so that comparing a migrated schema with
    `metadata` finds no difference on either."""

    def include(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
        only = getattr(obj, "info", {}).get("dialects")
        return only is None or dialect in only

    return include
