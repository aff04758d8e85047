"""One log line per request, carrying the request id (echoed as X-Request-ID)."""

from __future__ import annotations

import logging

import pytest

from tests.api.conftest import Api


async def test_each_request_logs_one_line_with_its_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor.http"):
        response = await api.client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    lines = [r for r in caplog.records if r.name == "conveyor.http"]
    assert len(lines) == 1
    assert getattr(lines[0], "request_id", None) == "trace-123"
    assert "GET /health 200" in lines[0].getMessage()
    generated = await api.client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
