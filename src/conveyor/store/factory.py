"""Open the queue store for a database URL, with that database's driver."""

from __future__ import annotations

from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.driver import Driver


def open_backend(url: str, *, pool_size: int = 10) -> QueueBackend:
    db = Database(url, pool_size=pool_size)
    driver: Driver
    if db.dialect == "sqlite":
        from conveyor.store.drivers.sqlite import SqliteDriver

        driver = SqliteDriver(db)
    else:
        from conveyor.store.drivers.postgres import PostgresDriver

        driver = PostgresDriver(db)
    return QueueBackend(db, driver)
