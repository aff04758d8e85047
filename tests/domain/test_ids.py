"""Job ids: UUIDv7 text, ordered by creation within a process, one at a time or a batch's."""

from __future__ import annotations

import uuid

from conveyor.domain.ids import uuid7, uuid7_many


def test_a_batchs_ids_are_version_7_uuids_in_order_with_single_ones_around_them() -> None:
    ids = [uuid7(), *uuid7_many(5000), uuid7(), *uuid7_many(3)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_a_batch_of_none_is_empty() -> None:
    assert uuid7_many(0) == []
