"""The private PostgreSQL cluster: started in a temp dir on its own port, restarted for real
(a connection from before is gone, a new one works), removed at the end."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from chaos.pgcluster import ClusterError, PrivateCluster, ReplicatedPair

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


async def _row_count(url: str) -> tuple[bool, int]:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        return bool(await conn.fetchval("SELECT pg_is_in_recovery()")), int(
            await conn.fetchval("SELECT count(*) FROM t")
        )
    finally:
        await conn.close()


async def _replayed(url: str, rows: int, timeout: float = 60) -> tuple[bool, int]:
    """`_row_count` once the standby has replayed what it holds: a synchronous commit
    (`synchronous_commit = on`) returns once the standby has flushed its WAL, not applied
    it, so right after it a read there may not see the table yet (seen on a busy machine:
    `relation "t" does not exist`). What the flush guarantees is checked after promotion,
    which replays everything flushed first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await _row_count(url)
            if found[1] >= rows or time.monotonic() > deadline:
                return found
        except asyncpg.UndefinedTableError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


def test_a_synchronous_standby_is_made_and_promoted_with_every_commit() -> None:
    """The failover scenario's building block: the standby streams synchronously, so a
    commit the primary acknowledged is on it; after the primary's crash it is promoted and
    takes writes; the promoted one does not wait for a standby of its own."""
    try:
        pair = ReplicatedPair()
    except ClusterError as exc:
        pytest.skip(str(exc))
    try:
        pair.start()
        assert pair.sync_state() == "sync"
        assert pair.standby.sql("SHOW synchronous_standby_names") == ""
        pair.primary.sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)")
        assert asyncio.run(_replayed(pair.standby.admin_url, 100)) == (True, 100)

        pair.primary.crash()
        assert not pair.primary.running()
        pair.standby.promote()
        pair.standby.sql("INSERT INTO t VALUES (101)")  # writable, and returns: no sync wait
        assert asyncio.run(_row_count(pair.standby.admin_url)) == (False, 101)
    finally:
        pair.stop()
    assert not pair.primary.root.exists() and not pair.standby.root.exists()


def test_a_multi_host_url_with_target_session_attrs_finds_the_primary() -> None:
    """What docs/operations.md tells operators without a virtual IP: ``?host=a:p&host=b:p
    &target_session_attrs=read-write`` in CONVEYOR_DATABASE_URL. Conveyor's pool (SQLAlchemy
    on asyncpg) and its own sessions (LISTEN, leadership: asyncpg's connect) both skip the
    standby listed first, and after a failover reach the promoted one."""
    from conveyor.store.database import Database, plain_postgres_dsn

    try:
        pair = ReplicatedPair()
    except ClusterError as exc:
        pytest.skip(str(exc))

    hosts = [pair.standby.port, pair.primary.port]
    url = "postgresql://postgres@/postgres?" + "&".join(f"host=127.0.0.1:{p}" for p in hosts)
    url += "&target_session_attrs=read-write"

    async def ports() -> tuple[int, int]:
        db = Database(url)
        try:
            async with db.read() as conn:
                pooled = (await conn.exec_driver_sql("SELECT inet_server_port()")).scalar_one()
        finally:
            await db.dispose()
        own = await asyncpg.connect(plain_postgres_dsn(url), timeout=30)
        try:
            return int(pooled), int(await own.fetchval("SELECT inet_server_port()"))
        finally:
            await own.close()

    try:
        pair.start()
        assert asyncio.run(ports()) == (pair.primary.port, pair.primary.port)
        pair.primary.crash()
        pair.standby.promote()
        assert asyncio.run(ports()) == (pair.standby.port, pair.standby.port)
    finally:
        pair.stop()
