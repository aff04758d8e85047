"""The garbage collector's settings for a long-running Conveyor process."""

from __future__ import annotations

import gc

# The collector's first threshold (Python's default: 700). A 500-job batch submit allocates
# some 20,000 tracked objects (models, dicts, records), alive until it is answered: at 700,
# about 15 young collections ran per request and each moved what it found alive to an older
# generation, to be traversed again there; at this threshold a request mostly ends (and its
# objects are freed by their counts) before one runs.
YOUNG_THRESHOLD = 25_000


def settle() -> None:
    """Once a process has built what it keeps for its life (the app, its routes and
    schemas, the engine, the handlers: 130,000-190,000 objects), move all of it out of the
    collector's sight (`gc.freeze`) and raise the first threshold. Each full collection
    traversed them all again: in an API process it took longer than the requests it
    interrupted (two per 5 s of batch submits), and 15-20 % of a 10,000-step workflow's
    submit. Not for code inside another program (tests, a library user's app): what is
    frozen is never collected."""
    gc.collect()  # what is garbage already is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
