"""The composition root: settings in, a wired engine (backend, registry, services) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from conveyor.auth.otp import OtpCodes
from conveyor.auth.passwords import configure_argon2
from conveyor.auth.tokens import TokenService
from conveyor.events.relay import Relay
from conveyor.events.setup import relay_config, sinks_from_settings
from conveyor.handlers.account_mail import AccountLetters
from conveyor.mail import MailBackend, backend_from_url
from conveyor.net import FetchPolicy
from conveyor.net.signing import SecretKeys
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.services.accounts import AccountService
from conveyor.services.events import EventFeed
from conveyor.services.flow import FlowService
from conveyor.services.health import HealthService
from conveyor.services.jobs import JobService
from conveyor.services.queues import QueueService
from conveyor.services.schedules import ScheduleService
from conveyor.services.tasks import TaskService
from conveyor.services.webhooks import WebhookService
from conveyor.services.workers import WorkerService
from conveyor.services.workflows import WorkflowService
from conveyor.settings import Settings, private_sqlite_files
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.store.migrate import migrate
from conveyor.store.tasks import TaskStore
from conveyor.store.users import UserStore
from conveyor.store.webhook_deliveries import WebhookDeliveryStore
from conveyor.store.webhooks import WebhookStore
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.process_pool import ChildLimits
from conveyor.worker.registry import Registry, load_blueprints
from conveyor.worker.resources import Resources
from conveyor.worker.worker import Worker, WorkerConfig


def load_handlers(modules: list[str], blueprints: Sequence[Blueprint] = ()) -> Registry:
    """The job types of this process: the built-ins, `blueprints` (a process embedding
    Conveyor hands its own: docs/library.md), every entry point's, then `modules`'."""
    from conveyor import handlers  # here, not at the top: commands that run no job skip PIL & co

    return Registry(handlers.blueprint, *blueprints, *load_blueprints(modules))


@dataclass
class Engine:
    settings: Settings
    backend: QueueBackend
    registry: Registry
    jobs: JobService
    schedules: ScheduleService
    accounts: AccountService
    tasks: TaskService
    webhooks: WebhookService
    queues: QueueService
    workers: WorkerService
    events: EventFeed
    health: HealthService
    mail: MailBackend  # what `email` and `account_mail` jobs send through
    flow: FlowService  # quotas at submit, limits made visible (docs/flow-control.md)
    workflows: WorkflowService  # DAGs of steps (docs/workflows.md)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        apply_migrations: bool = False,
        blueprints: Sequence[Blueprint] = (),
    ) -> Engine:
        modules = [m.strip() for m in settings.handler_modules.split(",") if m.strip()]
        registry = load_handlers(modules, blueprints)
        private_sqlite_files(settings.database_url)  # 0600 before the store creates it
        backend = open_backend(
            settings.database_url,
            connect_timeout=settings.db_connect_timeout,
            request_timeout=settings.db_request_timeout,
            application_name=settings.db_application_name or "conveyor",
            schema=settings.database_schema,
        )
        try:
            await backend.db.ping()
            if apply_migrations:
                await migrate(backend.db)
        except BaseException:
            await backend.close()
            raise
        keys = SecretKeys(settings.resolved_secret_key())
        webhooks = WebhookService(
            WebhookStore(backend.db, keys),
            WebhookDeliveryStore(backend.db, keys),
            backend,
            FetchPolicy.from_settings(settings),
        )
        jobs = JobService(backend, registry)
        jobs.check_callbacks = webhooks.check_callbacks
        jobs.synchronous_commit = settings.submit_synchronous_commit
        jobs.run_at_past_tolerance = settings.run_at_past_tolerance
        jobs.fair_dispatch = settings.fair_dispatch
        jobs.quota_max_running = settings.quota_max_running
        schedules = ScheduleService(backend, jobs)
        tasks = TaskService(jobs, TaskStore(backend.db), settings.task_autocomplete_seconds)
        accounts = build_accounts(settings, jobs)
        queues = QueueService(backend, registry)
        workers = WorkerService(backend, alive_within=settings.lease_seconds)
        flow = FlowService(backend)
        flow.quota_max_queued = settings.quota_max_queued
        flow.quota_max_running = settings.quota_max_running
        jobs.quotas = flow  # the compat doors' and tasks' submits check the queued quota
        return cls(
            settings, backend, registry, jobs, schedules, accounts, tasks, webhooks,
            queues=queues, workers=workers, events=EventFeed(backend),
            health=HealthService(backend),
            mail=backend_from_url(settings.mail_url, settings.mail_from), flow=flow,
            workflows=WorkflowService(jobs, flow),
        )  # fmt: skip

    def worker(
        self,
        queues: str | None = None,
        concurrency: int | None = None,
        burst: bool = False,
    ) -> Worker:
        s = self.settings
        config = WorkerConfig(
            queues=WorkerConfig.parse_queues(queues or s.worker_queues),
            concurrency=concurrency or s.worker_concurrency,
            poll_interval=s.poll_interval,
            lease_s=s.lease_seconds,
            heartbeat_interval=s.heartbeat_interval,
            grace=s.shutdown_grace,
            burst=burst,
            max_unrecorded=s.worker_max_unrecorded,
            processes=s.worker_processes,
            child_limits=ChildLimits(s.worker_max_tasks_per_child, s.worker_max_memory_per_child),
            spare_threads=s.worker_spare_threads,
            loop_block_limit=s.worker_loop_block_limit,
            running_quota=s.quota_max_running,
            fair_dispatch=s.fair_dispatch,
        )
        resources = Resources(settings=s, backend=self.backend, mail=self.mail)
        return Worker(self.backend, self.registry, config, resources=resources)

    def scheduler(self) -> Scheduler:
        s = self.settings
        config = SchedulerConfig(
            interval=s.scheduler_interval,
            leader_ttl=s.scheduler_lease_seconds,
            misfire_grace=s.scheduler_misfire_grace,
            catchup_max=s.scheduler_catchup_max,
            prune_completed_after=s.prune_completed_after,
            prune_failed_after=s.prune_failed_after,
            prune_batch=s.prune_batch,
            prune_budget=s.prune_budget,
            events_retention=s.events_retention_seconds,
            fair_dispatch=s.fair_dispatch,
            limits_reconcile_interval=s.limits_reconcile_interval,
            quota_max_queued=s.quota_max_queued,
        )
        return Scheduler(
            self.backend,
            self.registry,
            config,
            pruners=[self.accounts.store.prune_refresh_tokens],
        )

    def relay(self) -> Relay | None:
        """The outbox relay to the configured sinks; None when no sink is configured."""
        sinks = sinks_from_settings(self.settings, self.backend.db)
        return Relay(self.backend, sinks, relay_config(self.settings)) if sinks else None

    async def close(self) -> None:
        await self.backend.close()


def build_accounts(settings: Settings, jobs: JobService) -> AccountService:
    if settings.argon2_time_cost or settings.argon2_memory_kib:
        configure_argon2(settings.argon2_time_cost, settings.argon2_memory_kib)
    secret = settings.resolved_secret_key()
    return AccountService(
        UserStore(jobs.backend.db),
        TokenService(secret),
        OtpCodes(secret),
        jobs,
        AccountLetters(secret),
        email_verification=settings.email_verification,
        password_change_revokes_api_keys=settings.password_change_revokes_api_keys,
        register_notice_cooldown=timedelta(seconds=settings.register_notice_cooldown),
    )
