"""Events leave the process: the outbox relay and its sinks.

The outbox itself (rows written with each job change, read in commit-safe order) is
`conveyor.store.events`; this package moves those rows to the outside world:
- `relay.Relay` runs one lane per sink (`lane.Lane`): read after the sink's cursor,
  deliver, save the cursor; backoff on failure; prune what every sink has delivered;
- `sinks.Sink` is what a destination implements; `rabbitmq.RabbitMQSink` is the first;
- `schema` is the published message form (`conveyor.event/1`, docs/events.md);
- `setup` builds the sinks and the relay's pacing from the settings.
"""

from __future__ import annotations

from conveyor.events.config import RelayConfig
from conveyor.events.relay import Relay
from conveyor.events.sinks import Sink

__all__ = ["Relay", "RelayConfig", "Sink"]
