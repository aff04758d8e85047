"""The job types a library user declares, gathered in one process-wide blueprint.

Library enqueues validate payloads against it before writing anything, and an embedded
worker runs what it holds (plus `CONVEYOR_HANDLER_MODULES`).
"""

from __future__ import annotations

from conveyor.worker.blueprint import Blueprint

default = Blueprint()
