"""The private PostgreSQL cluster: started in a temp dir on its own port, restarted for real
(a connection from before is gone, a new one works), removed at the end."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from chaos.pgcluster import ClusterError, PrivateCluster

pytestmark = pytest.mark.slow


async def _query(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_private_cluster_starts_restarts_and_is_removed() -> None:
    try:
        cluster = PrivateCluster()
    except ClusterError as exc:
        pytest.skip(str(exc))
    assert cluster.port != 5432
    try:
        cluster.start()
        assert asyncio.run(_query(cluster.admin_url)) == 1

        async def across_restart(mode: str) -> None:
            before = await asyncpg.connect(cluster.admin_url, timeout=30)
            try:
                await asyncio.to_thread(cluster.restart, mode, 0.5)  # type: ignore[arg-type]
                with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
                    await before.fetchval("SELECT 1")
            finally:
                before.terminate()
            assert await _query(cluster.admin_url) == 1

        asyncio.run(across_restart("fast"))
        asyncio.run(across_restart("immediate"))
    finally:
        cluster.stop()
    assert not cluster.root.exists()
