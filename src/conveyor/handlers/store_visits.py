"""`store_visits` (reference 002): measure every image of every store visit.

Each image is downloaded through the SSRF guard, its width and height are read from the
header (the pixels are never decoded), its perimeter ``2 * (width + height)`` is recorded, and
a simulated processing delay (``STORE_VISIT_DELAY``) follows. A visit whose store is not in
the store master fails that store without downloading anything; an image that cannot be
downloaded or read fails its store. The job then fails with exactly one ``{store_id, error}``
per failing store, in the order the stores first appear in the payload, while every image
that did succeed keeps its measurement (see ``StoreVisitsFailed``).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Protocol

from PIL import Image, UnidentifiedImageError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from conveyor.errors import ConfigurationError, JobFailed
from conveyor.handlers.store_master import StoreMaster, masters
from conveyor.net import BlockedUrl, FetchError, FetchPolicy, FetchResult, fetch
from conveyor.net.policy import MiB
from conveyor.net.urls import check_url
from conveyor.settings import Settings
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
MAX_PIXELS = 50_000_000
"""Refused above this (width x height); Pillow's own bomb check is an error too."""
MAX_IMAGE_BYTES = 16 * MiB
CONCURRENCY = 8
"""Images of one job in flight at once (download, read and the processing delay)."""
MAX_VISITS = 1000
MAX_IMAGES_PER_VISIT = 100
MAX_IMAGES = 2000
MAX_URL_LENGTH = 2048
JOB_TIMEOUT = 3600.0
MAX_DELAY = 60.0

ProgressFn = Callable[[int, str | None], Awaitable[None]]


class Fetcher(Protocol):
    """``conveyor.net.fetch`` as this job uses it; tests pass one with their own resolver."""

    async def __call__(self, url: str, *, policy: FetchPolicy) -> FetchResult: ...


def _fetchable(url: str) -> str:
    """Refuse at submission what the guard would refuse for any deployment (bad syntax, a
    scheme other than http(s), credentials); addresses and ports are checked when fetched."""
    try:
        check_url(url, FetchPolicy(ports=None))
    except BlockedUrl as exc:
        raise ValueError(exc.message) from None
    return url


ImageUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(_fetchable)
]
StoreId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class Visit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_id: StoreId
    image_url: list[ImageUrl] = Field(min_length=1, max_length=MAX_IMAGES_PER_VISIT)
    visit_time: datetime | None = None


class StoreVisitsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visits: list[Visit] = Field(min_length=1, max_length=MAX_VISITS)

    @model_validator(mode="after")
    def _bounded(self) -> StoreVisitsPayload:
        total = sum(len(visit.image_url) for visit in self.visits)
        if total > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} images per job (got {total})")
        return self


class ImageResult(BaseModel):
    store_id: str
    image_url: str
    width: int
    height: int
    perimeter: int


class StoreError(BaseModel):
    store_id: str
    error: str


class StoreVisitsResult(BaseModel):
    images: list[ImageResult]
    errors: list[StoreError] = Field(default_factory=list)


class StoreVisitsFailed(JobFailed):
    """One or more stores failed.

    The message is the per-store errors as a JSON array of ``{"store_id", "error"}``, so the
    job's error entry alone answers "which stores failed and why" (``store_errors`` reads it
    back); ``result`` holds the whole outcome, successful measurements included.
    """

    code = "store_visits_failed"

    def __init__(self, result: StoreVisitsResult) -> None:
        errors = [error.model_dump() for error in result.errors]
        super().__init__(json.dumps(errors, ensure_ascii=False), result=result)

    @staticmethod
    def store_errors(message: str) -> list[StoreError]:
        """The per-store errors of a job that failed with this error (its entry's message)."""
        return [StoreError.model_validate(item) for item in json.loads(message)]


class ImageRejected(Exception):
    """The body is not an image this job accepts."""


@dataclass(frozen=True, slots=True)
class Delay:
    """The simulated processing time per image: a range, or one value."""

    low: float
    high: float

    @classmethod
    def parse(cls, spec: str) -> Delay:
        """``"0.1-0.4"`` or ``"0"``: seconds, from 0 to ``MAX_DELAY``."""
        low, _, high = spec.strip().partition("-")
        try:
            bounds = cls(float(low), float(high or low))
        except ValueError:
            raise ConfigurationError(f"STORE_VISIT_DELAY {spec!r}: use 'a-b' or 'a'") from None
        if not 0 <= bounds.low <= bounds.high <= MAX_DELAY:
            raise ConfigurationError(
                f"STORE_VISIT_DELAY {spec!r}: need 0 <= a <= b <= {MAX_DELAY:g}"
            )
        return bounds

    def pick(self) -> float:
        return random.uniform(self.low, self.high)


def measure(body: bytes) -> tuple[int, int]:
    """Width and height from the image header; only the accepted formats are tried.

    Pillow's decompression-bomb warning is raised as an error here rather than by changing
    ``Image.MAX_IMAGE_PIXELS`` for the whole process, and ``MAX_PIXELS`` is checked as well.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(body), formats=IMAGE_FORMATS) as image:
                width, height = image.size
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageRejected(f"the image has more than {MAX_PIXELS} pixels") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            formats = ", ".join(IMAGE_FORMATS)
            raise ImageRejected(f"not a readable image (accepted: {formats})") from None
    if width * height > MAX_PIXELS:
        raise ImageRejected(f"the image is {width}x{height}, over {MAX_PIXELS} pixels")
    return width, height


@dataclass
class _Progress:
    """Counts finished images and reports the percentage (the context throttles it)."""

    total: int
    report: ProgressFn
    done: int = 0

    async def step(self) -> None:
        self.done += 1
        await self.report(self.done * 100 // self.total, f"{self.done}/{self.total} images")


@dataclass(frozen=True, slots=True)
class _Failure:
    store_id: str
    reason: str


@dataclass(frozen=True)
class VisitProcessor:
    """Measures the images of a list of visits, at most ``concurrency`` at a time."""

    policy: FetchPolicy
    delay: Delay
    concurrency: int = CONCURRENCY
    fetcher: Fetcher = field(default=fetch)

    async def run(
        self, visits: Sequence[Visit], master: StoreMaster, progress: ProgressFn
    ) -> StoreVisitsResult:
        """Every image of every known store; the errors of unknown stores and failed images."""
        failures = [
            _Failure(visit.store_id, f"unknown store_id {visit.store_id!r}")
            for visit in visits
            if visit.store_id not in master
        ]
        work = [(v.store_id, url) for v in visits if v.store_id in master for url in v.image_url]
        tracker = _Progress(len(work), progress)
        slots = asyncio.Semaphore(self.concurrency)
        async with asyncio.TaskGroup() as group:  # a bug in one image stops the others
            tasks = [group.create_task(self._image(slots, *item, tracker)) for item in work]
        outcomes = [task.result() for task in tasks]
        images = [outcome for outcome in outcomes if isinstance(outcome, ImageResult)]
        failures += [outcome for outcome in outcomes if isinstance(outcome, _Failure)]
        return StoreVisitsResult(images=images, errors=_per_store(visits, failures))

    async def _image(
        self, slots: asyncio.Semaphore, store_id: str, url: str, tracker: _Progress
    ) -> ImageResult | _Failure:
        async with slots:
            outcome = await self._measure(store_id, url)
            await asyncio.sleep(self.delay.pick())
        await tracker.step()
        return outcome

    async def _measure(self, store_id: str, url: str) -> ImageResult | _Failure:
        try:
            width, height = measure(await self._download(url))
        except (FetchError, ImageRejected) as exc:
            return _Failure(store_id, f"image {url}: {exc}")
        perimeter = 2 * (width + height)
        return ImageResult(
            store_id=store_id, image_url=url, width=width, height=height, perimeter=perimeter
        )

    async def _download(self, url: str) -> bytes:
        result = await self.fetcher(url, policy=self.policy)
        if not 200 <= result.status < 300:
            raise ImageRejected(f"the download failed (HTTP {result.status})")
        return result.body


def _per_store(visits: Sequence[Visit], failures: Sequence[_Failure]) -> list[StoreError]:
    """One error per failing store, in payload order: its first distinct failure, and how
    many other distinct failures it had."""
    by_store: dict[str, dict[str, None]] = {}
    for failure in failures:
        by_store.setdefault(failure.store_id, {})[failure.reason] = None
    errors: list[StoreError] = []
    for store_id in dict.fromkeys(visit.store_id for visit in visits):
        reasons = list(by_store.get(store_id, ()))
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            errors.append(StoreError(store_id=store_id, error=reasons[0] + more))
    return errors


def image_policy(settings: Settings) -> FetchPolicy:
    """The service's fetch policy with the image byte cap."""
    return replace(FetchPolicy.from_settings(settings), max_bytes=MAX_IMAGE_BYTES)


@blueprint.job("store_visits", max_attempts=3, timeout=JOB_TIMEOUT)
async def store_visits(ctx: JobContext, payload: StoreVisitsPayload) -> StoreVisitsResult:
    """Measure every image of every visit (perimeter = 2 * (width + height)); one error per
    failing store (unknown store_id, or an image that cannot be downloaded or read)."""
    settings = ctx.settings
    master = await asyncio.to_thread(masters.get, settings.store_master_path)
    processor = VisitProcessor(image_policy(settings), Delay.parse(settings.store_visit_delay))
    result = await processor.run(payload.visits, master, ctx.progress)
    if result.errors:
        raise StoreVisitsFailed(result)
    return result
