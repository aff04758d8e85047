"""The Python client's view of unique jobs, reused idempotency keys and a past run_at."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.client import Client, Conflict, ValidationFailed
from tests.api.conftest import api_settings
from tests.client.conftest import Login
from tests.support.live import LiveServer, live_server
from tests.support.processes import HANDLERS
from tests.support.unique_handlers import MODULE


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = api_settings(db_url, tmp_path, handler_modules=f"{HANDLERS},{MODULE}")
    with live_server(settings) as s:
        yield s


def test_the_client_says_duplicate_and_raises_the_409_and_422(server: LiveServer) -> None:
    server.user("ada@example.com")
    ada = Login("ada@example.com")
    with Client(server.url) as c:
        c.login(ada.email, ada.password)
        first = c.submit("unique_order", {"order_id": "7"}, delay=3600)
        again = c.submit("unique_order", {"order_id": "7"}, delay=3600)
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.id == first.id
        batch = c.submit_many([{"type": "unique_order", "payload": {"order_id": "7"}}])
        assert batch[0].duplicate and batch[0].id == first.id

        c.submit("noop", idempotency_key="k")
        with pytest.raises(Conflict) as reused:
            c.submit("noop", {"other": 1}, idempotency_key="k")
        assert reused.value.code == "idempotency_key_reused" and reused.value.status == 409

        with pytest.raises(ValidationFailed) as past:
            c.submit("noop", run_at=datetime.now(UTC) - timedelta(hours=1))
        assert past.value.status == 422 and "past" in past.value.message
