"""The store transaction handle services hold: opaque above the store."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection


class Transaction:
    """An open write transaction that a service passes to several store calls so that they
    commit together (a task row and its completion job). Services only pass it along; what
    it runs on is the store's business."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    @property
    def connection(self) -> AsyncConnection:
        """For store modules: the connection the transaction runs on."""
        return self._conn
