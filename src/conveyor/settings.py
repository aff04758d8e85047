"""One typed settings object, read from the environment (prefix ``CONVEYOR_``) or ``.env``."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_concurrency() -> int:
    return (os.cpu_count() or 1) * 4


class Settings(BaseSettings):
    """Everything a Conveyor process can be told; `conveyor config` prints it."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///./data/conveyor.db"
    # PostgreSQL: the schema Conveyor's tables live in (created by `conveyor migrate`), so
    # that they can share a database, and transactions, with an application's own tables
    # (docs/library.md); empty: the database's default search_path (public), as before
    database_schema: str = Field("", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    data_dir: Path = Path("./data")
    secret_key: SecretStr | None = None
    admin_email: str = "admin@conveyor.local"
    admin_password: SecretStr | None = None
    email_verification: bool = True
    mail_url: str = "console://"
    mail_from: str = "Conveyor <noreply@conveyor.local>"
    redis_url: str | None = None
    amqp_url: str | None = None
    log_file: Path | None = Path("logs/app.log")
    log_format: str = Field("text", pattern="^(text|json)$")
    log_level: str = "INFO"

    argon2_time_cost: int | None = Field(None, ge=1, le=100)
    argon2_memory_kib: int | None = Field(None, ge=1024)

    # API limits
    rate_limit_auth: str = "20/minute"
    rate_limit_submit: str = "600/minute"  # submission requests per user
    rate_limit_jobs: str = "10000/minute"  # jobs submitted per user: a batch counts each job
    rate_limit_namespace: str = Field("conveyor", pattern=r"^[\w.:-]{1,64}$")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(32, ge=2, le=1000)
    max_page_size: int = Field(200, ge=1)
    max_batch_size: int = Field(1000, ge=1)

    # flow control (docs/flow-control.md): owners (or a type's fair_key) share the fleet in
    # weighted round robin; off: one global order by priority, then run_at
    fair_dispatch: bool = True
    # per-user caps (0: none) on jobs waiting (scheduled, queued, retrying) and running; an
    # administrator can set a user's own
    quota_max_queued: int = Field(0, ge=0)
    quota_max_running: int = Field(0, ge=0)
    # a run_at this far in the past is accepted (clock skew between clients and server)
    run_at_past_tolerance: float = Field(60.0, ge=0, le=86400)
    # seconds between recounts of concurrency slots and rate buckets from the jobs table
    limits_reconcile_interval: float = Field(60.0, gt=0, le=86400)
    # off: a submission's commit does not wait for its WAL flush (PostgreSQL only); a crash of
    # the database server can lose the last ~0.6 s of acknowledged jobs (docs/design.md)
    submit_synchronous_commit: bool = True
    # slow and numerous clients, per API process (api/connections.py): the request line and
    # headers, then the body, must arrive within these seconds (else 408 and closed)
    http_header_timeout: float = Field(20.0, gt=0, le=3600)
    http_body_timeout: float = Field(60.0, gt=0, le=3600)
    http_max_connections: int = Field(1000, ge=1)  # more: 503 and closed at once
    # on SIGTERM, requests under way get this long; then what still runs (an event stream,
    # which its client resumes elsewhere with Last-Event-ID) is cut so the process can exit
    http_shutdown_grace: int = Field(2, ge=0, le=3600)

    # database timeouts (docs/design.md "Timeouts"): opening a PostgreSQL connection, in
    # every process; and each database operation of an API request (pool wait, connect,
    # statements): past it the connection is dropped and the request answered 503 with
    # Retry-After. Workers, the scheduler and the relay are not bounded by the second.
    db_connect_timeout: float = Field(5.0, gt=0, le=300)
    db_request_timeout: float = Field(1.5, gt=0, le=300)
    # PostgreSQL's application_name of this process's sessions (pg_stat_activity, PgBouncer's
    # SHOW CLIENTS); unset: `conveyor <command>` (docs/operations.md "Connection budgets").
    db_application_name: str | None = Field(None, pattern=r"^[\w .:-]{1,40}$")

    # engine
    worker_concurrency: int = Field(default_factory=_default_concurrency, ge=1, le=10_000)
    worker_queues: str = "default"
    # jobs running or run but not yet recorded, per worker process; unset: its concurrency
    worker_max_unrecorded: int | None = Field(None, ge=1, le=100_000)
    poll_interval: float = Field(1.0, gt=0, le=60)
    lease_seconds: float = Field(60.0, gt=0)
    heartbeat_interval: float = Field(5.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)
    # executor="process" handlers: children per worker (unset: one per CPU), and when a child
    # is replaced after its job (unset: never): after N jobs, or above M MB of peak memory
    worker_processes: int | None = Field(None, ge=1, le=1024)
    worker_max_tasks_per_child: int | None = Field(None, ge=1)
    worker_max_memory_per_child: int | None = Field(None, ge=1)  # MB of peak resident memory
    # plain `def` handlers: threads started in the place of ones that outlived their jobs
    # (timed out or stopped; a thread cannot be killed); beyond this the pool shrinks
    worker_spare_threads: int = Field(16, ge=0, le=1024)
    # a handler blocking the event loop: its worker's leases are kept by the watchdog
    # thread for this many seconds, then given up (its jobs are rescued by others)
    worker_loop_block_limit: float = Field(300.0, gt=0)
    scheduler_interval: float = Field(0.5, gt=0, le=60)
    # SQLite: a scheduler that stops renewing leads for this long (PostgreSQL: its lock ends
    # with its session); a dead one on the same host is seen at once (docs/design.md)
    scheduler_lease_seconds: float = Field(15.0, gt=0, le=3600)
    # a fire at most this late fires, every one; a schedule more late than this follows its
    # misfire policy (skip, once, all: at most scheduler_catchup_max fires)
    scheduler_misfire_grace: float = Field(60.0, ge=0)
    scheduler_catchup_max: int = Field(100, ge=1, le=10_000)
    prune_completed_after: float = Field(24 * 3600.0, ge=0)
    prune_failed_after: float = Field(7 * 24 * 3600.0, ge=0)
    prune_batch: int = Field(1000, ge=1, le=100_000)  # rows per pruning slice (transaction)
    prune_budget: float = Field(0.25, ge=0, le=60)  # seconds of pruning slices per tick
    handler_modules: str = ""
    # the owner (user or service account id) of jobs the library door enqueues when its call
    # names none (docs/library.md): scoping, listing and quotas go by it
    library_owner: str = ""

    # events relay (`conveyor results`; inside `conveyor run` when a sink is configured)
    amqp_prefix: str = Field("", pattern=r"^[\w.:-]{0,64}$")  # before exchange and queue names
    # The contract queues' type; RabbitMQ cannot change it in place (docs/operations.md).
    amqp_queue_type: str = Field("classic", pattern="^(classic|quorum)$")
    relay_poll_interval: float = Field(1.0, gt=0, le=60)  # safety net: wake-ups on commit
    relay_batch: int = Field(500, ge=1, le=10_000)
    relay_backoff_max: float = Field(30.0, gt=0)
    relay_lease_seconds: float = Field(10.0, gt=0)  # SQLite: a dead relay's sinks wait this long
    events_retention_seconds: float = Field(7 * 24 * 3600.0, ge=0)

    # webhooks sink (subscriptions and job callbacks; docs/events.md "Webhooks")
    webhook_enabled: bool = True
    webhook_max_attempts: int = Field(10, ge=1, le=100)
    webhook_timeout: float = Field(10.0, gt=0, le=300)  # seconds per attempt, all included
    webhook_backoff_initial: float = Field(5.0, gt=0)  # first retry after about this, doubled
    webhook_backoff_max: float = Field(3600.0, gt=0)
    webhook_concurrency: int = Field(16, ge=1, le=1000)  # sends at once per relay process
    webhook_per_endpoint: int = Field(4, ge=1, le=1000)  # of which at most this to one host
    webhook_poll_interval: float = Field(1.0, gt=0, le=60)
    webhook_retention_seconds: float = Field(7 * 24 * 3600.0, ge=0)  # finished deliveries

    # metrics (PROMETHEUS_MULTIPROC_DIR is prometheus-client's own variable: deploy/README.md)
    metrics_port: int | None = Field(None, ge=1, le=65535)  # worker/scheduler /metrics port
    metrics_host: str = "127.0.0.1"
    metrics_refresh_interval: float = Field(5.0, ge=0)  # API's queue gauges; 0 turns them off
    # A scrape-only secret for the API's /metrics (Prometheus' bearer token); admins work too
    metrics_token: SecretStr | None = Field(None, min_length=32)

    # dashboard: session lifetime, and whether its cookies are Secure (unset: when the request
    # came over https, as uvicorn sees it; set true behind a TLS-terminating proxy)
    dashboard_session_hours: float = Field(12.0, gt=0, le=24 * 14)
    dashboard_secure_cookies: bool | None = None

    # account security (docs/deploy.md): whose X-Forwarded-For counts (comma-separated
    # addresses or networks, "*" for any; none by default), the per-account sign-in throttle
    # (failed attempts per account), the "already registered" mail's cooldown per address,
    # and whether a password change also revokes the account's API keys
    trusted_proxies: str = ""
    rate_limit_login_account: str = "10/minute"
    register_notice_cooldown: float = Field(60.0, ge=0)
    password_change_revokes_api_keys: bool = False

    # built-in job types
    store_master_path: Path | None = None
    store_visit_delay: str = "0.1-0.4"
    task_autocomplete_seconds: float = Field(120.0, ge=0)
    allow_private_urls: bool = False
    anonymous_store_visits: bool = False

    @field_validator("log_file", mode="before")
    @classmethod
    def _empty_means_no_file(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgres:", "postgresql+")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        for item in _split(value):
            if item != "*":
                ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @cached_property
    def trusted_proxy_list(self) -> list[str]:
        """`trusted_proxies` as uvicorn's ``forwarded_allow_ips`` takes it (empty: nobody)."""
        return _split(self.trusted_proxies)

    @cached_property
    def queue_names(self) -> list[str]:
        return [name.strip() for name in self.worker_queues.split(",") if name.strip()]

    def resolved_secret_key(self) -> str:
        """The signing key: the setting, else one generated once and kept in DATA_DIR."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        private_directory(self.data_dir)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


def private_directory(path: Path) -> Path:
    """`path` (and missing parents) created if need be; a directory this call creates is
    0700, whatever the umask (mkdir's mode is masked by it; chmod is not)."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """`path` created empty as 0600 if missing (its directory as `private_directory` makes
    it), and made 0600 if it exists: the SQLite database and the log files hold secrets
    (hashes, tokens' families, payloads) that other accounts on the host must not read."""
    private_directory(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    with contextlib.suppress(PermissionError):  # someone else's: ours to use, not to change
        path.chmod(0o600)
    return path


def sqlite_file(database_url: str) -> Path | None:
    """The file of a `sqlite:///path` URL (None for PostgreSQL or an in-memory database)."""
    scheme, sep, rest = database_url.partition(":///")
    if not sep or not scheme.startswith("sqlite"):
        return None
    name = rest.split("?", 1)[0]
    return Path(name).expanduser() if name and name != ":memory:" else None


def private_sqlite_files(database_url: str) -> None:
    """Before a store opens a SQLite database: the file 0600 (SQLite gives its -wal and -shm
    files the database file's mode), and those two 0600 too if an older run left them wider."""
    path = sqlite_file(database_url)
    if path is None:
        return
    private_file(path)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
