"""`conveyor run|api|worker|scheduler|results`: the long-running processes.

Each stops gracefully on the first SIGINT/SIGTERM and at once on the second. The server
(uvicorn, the API, the engine) is imported when a process starts, not when the command line
is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from conveyor import heap, tracing
from conveyor.cli.plumbing import Handlers, die, load_settings, log_setup, opened, run_async
from conveyor.library.signals import until_signalled

if TYPE_CHECKING:
    from conveyor.runtime import Engine
    from conveyor.settings import Settings


MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve Prometheus /metrics on this port (CONVEYOR_METRICS_PORT; host: METRICS_HOST).",
    ),
]


def _begin(settings: Settings, role: str) -> None:
    """Logging, then tracing when the OTEL_* variables ask for it (docs/tracing.md): once,
    before the process's work starts; its spans say `conveyor-<role>` unless
    OTEL_SERVICE_NAME names the service."""
    log_setup(settings)
    tracing.configure(f"conveyor-{role}")


def _exit(code: int) -> NoReturn:
    """Leave as soon as every part has stopped and closed what it holds.

    The interpreter's own teardown (atexit hooks, module and garbage-collector cleanup, joining
    threads) adds nothing once the engine is closed and the logs are flushed, but costs up to
    a second on a busy machine, and forever if a sync handler's thread is stuck in user code:
    so the process ends here (issue #13 item 8).
    """
    tracing.shutdown()  # the spans still buffered are exported (they would be lost)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def run(
    handlers: Handlers = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs at once.")] = None,
    host: Annotated[str | None, typer.Option(help="Address the API listens on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port the API listens on.")] = None,
) -> None:
    """Everything in one process: migrations, the API, a worker, the scheduler and, when a
    sink is configured, the events relay."""
    settings = load_settings(command="run", handler_modules=handlers, host=host, port=port)
    _begin(settings, "run")

    async def main() -> int:
        async with opened(settings, apply_migrations=True) as engine:
            worker = engine.worker("*", concurrency)  # one process runs every queue
            scheduler = engine.scheduler()
            relay = engine.relay()  # events relay: None without a sink
            server = _server(settings, engine)

            def stop(force: bool) -> None:
                worker.stop(force)
                scheduler.stop()
                if relay is not None:
                    relay.stop()
                server.should_exit = True

            async def everything() -> int:
                tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(server.serve())]
                if relay is not None:
                    tasks.append(asyncio.create_task(relay.run()))
                code = await worker.run()
                stop(False)
                await asyncio.gather(*tasks)
                return code

            return await until_signalled([stop], everything())

    _exit(run_async(main()))


def _server(settings: Settings, engine: Engine | None = None) -> Any:
    """A uvicorn server for the API whose signals are ours to handle."""
    import uvicorn

    from conveyor.api.connections import uvicorn_options
    from conveyor.server import create_app

    config = uvicorn.Config(
        create_app(settings, engine=engine, freeze_gc=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        **uvicorn_options(settings),  # slow and numerous clients cut off
        # X-Forwarded-For/-Proto count only from CONVEYOR_TRUSTED_PROXIES (none by default)
        proxy_headers=bool(settings.trusted_proxy_list),
        forwarded_allow_ips=settings.trusted_proxy_list,
        # an open event stream would hold the shutdown forever (issue #13 item 8)
        timeout_graceful_shutdown=settings.http_shutdown_grace,
    )

    return _quiet_server(config)


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that leaves SIGINT/SIGTERM to `until_signalled` (for every part)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


@contextlib.asynccontextmanager
async def _metrics_endpoint(settings: Settings) -> AsyncIterator[None]:
    """Serve /metrics on METRICS_HOST:METRICS_PORT on this event loop while the block runs.

    The port is bound here, before the work starts, so a taken port is one clear error.
    """
    if settings.metrics_port is None:
        yield
        return
    import uvicorn

    from conveyor.metrics import asgi_app

    try:
        sock = socket.create_server((settings.metrics_host, settings.metrics_port))
    except OSError as exc:
        die(f"--metrics-port {settings.metrics_port}: {exc.strerror or exc}")
    config = uvicorn.Config(
        asgi_app(), log_config=None, access_log=False, server_header=False, lifespan="off"
    )

    server = _quiet_server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-server")
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        sock.close()


def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    handlers: Handlers = None,
) -> None:
    """Serve the HTTP API (run several behind a load balancer to scale)."""
    settings = load_settings(command="api", handler_modules=handlers, host=host, port=port)
    _begin(settings, "api")

    async def main() -> int:
        server = _server(settings)

        def stop(_force: bool) -> None:
            server.should_exit = True

        await until_signalled([stop], server.serve())
        return 0

    _exit(run_async(main()))


def worker(
    queues: Annotated[
        str | None,
        typer.Option(help="Queues: 'a,b=2' caps b at 2 jobs at once; '*' is every queue."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Jobs at once.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are empty.")] = False,
    handlers: Handlers = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Run a worker process."""
    settings = load_settings(command="worker", handler_modules=handlers, metrics_port=metrics_port)
    _begin(settings, "worker")

    async def main() -> int:
        async with opened(settings) as engine:
            try:
                w = engine.worker(queues, concurrency, burst)
            except ValueError as exc:
                die(f"--queues: {exc}")
            async with heap.settled(), _metrics_endpoint(settings):
                return await until_signalled([w.stop], w.run())

    _exit(run_async(main()))


def scheduler(handlers: Handlers = None, metrics_port: MetricsPort = None) -> None:
    """Run a scheduler process (one leads; the others stand by)."""
    settings = load_settings(
        command="scheduler", handler_modules=handlers, metrics_port=metrics_port
    )
    _begin(settings, "scheduler")

    async def main() -> int:
        async with opened(settings) as engine:
            s = engine.scheduler()
            async with heap.settled(), _metrics_endpoint(settings):
                return await until_signalled([lambda _force: s.stop()], s.run())

    _exit(run_async(main()))


def results(handlers: Handlers = None, metrics_port: MetricsPort = None) -> None:
    """Relay job events to the configured sinks (webhooks, RabbitMQ) and send webhook
    deliveries; any number may run."""
    settings = load_settings(command="results", handler_modules=handlers, metrics_port=metrics_port)
    _begin(settings, "results")

    async def main() -> int:
        async with opened(settings) as engine:
            relay = engine.relay()
            if relay is None:
                die(
                    "no event sink is configured: set CONVEYOR_AMQP_URL, or turn webhooks "
                    "back on (CONVEYOR_WEBHOOK_ENABLED=true)"
                )
            async with heap.settled(), _metrics_endpoint(settings):
                return await until_signalled([lambda _force: relay.stop()], relay.run())

    _exit(run_async(main()))
