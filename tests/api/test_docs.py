"""The docs pages work offline: every asset comes from this server."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Api


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/api/schema/swagger-ui/", "/api/schema/redoc/"]
)
async def test_docs_pages_load_only_local_assets(api: Api, path: str) -> None:
    page = await api.client.get(path)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        assert (await api.client.get(source)).status_code == 200, source
    assert "/openapi.json" in page.text
