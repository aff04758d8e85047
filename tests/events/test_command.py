"""`conveyor results` as a command (the relay at work in a process: test_rabbitmq.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.processes import CONVEYOR, ROOT, clean_environ


def test_results_without_a_sink_says_what_to_set(tmp_path: Path, sqlite_template: Path) -> None:
    shutil.copy(sqlite_template, tmp_path / "c.db")
    env = clean_environ() | {
        "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CONVEYOR_LOG_FILE": "",
        "CONVEYOR_WEBHOOK_ENABLED": "false",  # on by default: it is a sink
    }
    done = subprocess.run(
        [CONVEYOR, "results"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no event sink is configured: set CONVEYOR_AMQP_URL" in done.stderr
    assert "CONVEYOR_WEBHOOK_ENABLED" in done.stderr
