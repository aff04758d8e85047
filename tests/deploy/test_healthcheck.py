"""deploy/healthcheck.py, the image's HEALTHCHECK, run as Docker runs it: a process whose
exit status says healthy (0) or not (1), against real HTTP servers on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import ROOT
from tests.events.conftest import closed_port

SCRIPT = ROOT / "deploy" / "healthcheck.py"


@contextmanager
def answering(status: int) -> Iterator[tuple[int, list[str]]]:
    """A server on a free loopback port answering `status`; the paths it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_api_is_healthy_when_health_answers_200() -> None:
    with answering(200) as (port, asked):
        assert check({"CONVEYOR_PORT": str(port)}).returncode == 0
    assert asked == ["/health"]


def test_a_worker_is_asked_on_its_metrics_port() -> None:
    with answering(200) as (port, asked):
        env = {"CONVEYOR_PORT": str(closed_port()), "CONVEYOR_METRICS_PORT": str(port)}
        assert check(env).returncode == 0
    assert asked == ["/metrics"]


def test_an_error_status_or_silence_is_unhealthy() -> None:
    with answering(503) as (port, _):
        failed = check({"CONVEYOR_PORT": str(port)})
    assert failed.returncode == 1
    assert f"127.0.0.1:{port}/health did not answer 2xx" in failed.stderr
    assert check({"CONVEYOR_PORT": str(closed_port())}).returncode == 1
    assert check({"CONVEYOR_METRICS_PORT": "not-a-port"}).returncode == 1
