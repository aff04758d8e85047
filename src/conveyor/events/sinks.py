"""What the relay delivers to: anything with a name, `deliver` and `close`.

Delivery is at least once: a batch is delivered again after a crash between `deliver`
returning and the cursor being saved, or after a failure part-way through a batch. A sink
therefore passes each event's id on (RabbitMQ's `message_id`, a webhook header) so that its
consumers can drop a repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from conveyor.domain.events import Event


class Sink(Protocol):
    """A destination for events, relayed in order.

    `name` keys the sink's cursor in the database: renaming a sink starts it from the
    beginning of the outbox. `deliver` returns only once every event is safely handed over
    (confirmed by the broker, acknowledged by the endpoint) and raises otherwise; the relay
    then retries the same events with backoff. `close` releases connections; the relay calls
    it once when it stops.
    """

    @property
    def name(self) -> str: ...

    async def deliver(self, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Serving(Protocol):
    """A sink with work of its own besides `deliver` (the webhooks dispatcher sends what
    `deliver` recorded): the relay runs `serve(stopping)` in every relay process, leader of
    the sink or not, until `stopping` is set."""

    async def serve(self, stopping: asyncio.Event) -> None: ...
