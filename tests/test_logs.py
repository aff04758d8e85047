"""Logs: one line per request with its id; JSON lines when asked; a rotated file."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from pathlib import Path

from conveyor.logs import JsonFormatter, setup_logging


def test_json_lines_carry_job_fields_and_go_to_the_file(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("INFO", "json", tmp_path / "logs" / "app.log")
        assert any(isinstance(h, logging.handlers.RotatingFileHandler) for h in root.handlers)
        logging.getLogger("conveyor.job.sleep").info(
            "slept", extra={"job_id": "j1", "job_type": "sleep", "attempt": 2}
        )
        for handler in root.handlers:
            handler.flush()
        (line,) = (tmp_path / "logs" / "app.log").read_text().splitlines()
        entry = json.loads(line)
        assert entry["message"] == "slept"
        assert (entry["job_id"], entry["job_type"], entry["attempt"]) == ("j1", "sleep", 2)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_json_formatter_keeps_exceptions() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR" and "ValueError: boom" in entry["exc"]
