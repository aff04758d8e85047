"""Open the queue store for a database URL, with that database's driver."""

from __future__ import annotations

from conveyor.store.backend import QueueBackend
from conveyor.store.database import CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, Database
from conveyor.store.driver import Driver


def open_backend(
    url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    request_timeout: float = REQUEST_TIMEOUT_S,
    application_name: str = "conveyor",
    schema: str = "",
) -> QueueBackend:
    db = Database(
        url,
        pool_size=pool_size,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        application_name=application_name,
        schema=schema,
    )
    driver: Driver
    if db.dialect == "sqlite":
        from conveyor.store.drivers.sqlite import SqliteDriver

        driver = SqliteDriver(db)
    else:
        from conveyor.store.drivers.postgres import PostgresDriver

        driver = PostgresDriver(db)
    return QueueBackend(db, driver)
