"""Container health check for every Conveyor process, with the standard library only.

The image runs it as its HEALTHCHECK (`python /usr/local/lib/conveyor-healthcheck.py`), so
no curl or wget is needed in the slim image. What it asks depends on the process:

- a worker, scheduler or relay with `CONVEYOR_METRICS_PORT` set: `GET /metrics` on that
  port (the process's event loop answers, so it is not stuck);
- otherwise the API (`conveyor api` / `conveyor run`): `GET /health` on `CONVEYOR_PORT`
  (8080 unless set). `/health` does not touch the database on purpose: a database outage
  must not make the orchestrator restart every API replica (`/ready` says 503 then).

Exit 0 when the answer is 2xx within the timeout, 1 otherwise (Docker's convention).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 3.0


def target(environ: Mapping[str, str]) -> str:
    """The URL that tells whether this process is alive."""
    metrics_port = environ.get("CONVEYOR_METRICS_PORT", "").strip()
    if metrics_port:
        return f"http://127.0.0.1:{int(metrics_port)}/metrics"
    port = int(environ.get("CONVEYOR_PORT", "").strip() or "8080")
    return f"http://127.0.0.1:{port}/health"


def healthy(url: str, timeout: float = TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    try:
        url = target(os.environ)
    except ValueError:
        print("healthcheck: CONVEYOR_PORT / CONVEYOR_METRICS_PORT is not a number", file=sys.stderr)
        return 1
    ok = healthy(url)
    if not ok:
        print(f"healthcheck: {url} did not answer 2xx", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
