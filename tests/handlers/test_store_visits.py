"""`store_visits`: images measured over loopback, failures per store, the guard, the bound."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from conveyor.domain.states import JobState
from conveyor.errors import ConfigurationError
from conveyor.handlers.store_master import StoreMaster
from conveyor.handlers.store_visits import (
    MAX_IMAGES,
    Delay,
    ImageRejected,
    StoreError,
    StoreVisitsFailed,
    StoreVisitsPayload,
    Visit,
    VisitProcessor,
    measure,
)
from conveyor.net import FetchPolicy, FetchResult, fetch
from conveyor.services.jobs import Submission
from tests.handlers.conftest import ImageSite, image_bytes, open_engine, png_header, run_job, url
from tests.net.world import PUBLIC, FakeDns, FakeInternet, LoopbackServer

Site = tuple[ImageSite, LoopbackServer]
MASTER = StoreMaster.parse("AreaCode,StoreName,StoreID\n1,One,S1\n2,Two,S2\n3,Three,S3\n")
LOOPBACK = FetchPolicy(allow_private=True, ports=None, total_timeout=5.0)


def visits(*items: tuple[str, list[str]]) -> list[Visit]:
    return [Visit(store_id=store_id, image_url=urls) for store_id, urls in items]


class Progress:
    def __init__(self) -> None:
        self.reports: list[tuple[int, str | None]] = []

    async def __call__(self, percent: int, message: str | None) -> None:
        self.reports.append((percent, message))


def processor(policy: FetchPolicy = LOOPBACK, **options: Any) -> VisitProcessor:
    return VisitProcessor(policy, Delay(0, 0), **options)


# ---- the pieces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "low", "high"), [("0.1-0.4", 0.1, 0.4), ("0", 0.0, 0.0), (" 2 ", 2.0, 2.0)]
)
def test_the_delay_is_a_range_or_one_number(spec: str, low: float, high: float) -> None:
    delay = Delay.parse(spec)
    assert (delay.low, delay.high) == (low, high)
    assert low <= delay.pick() <= high


@pytest.mark.parametrize("spec", ["", "fast", "0.4-0.1", "-1", "1-2-3", "nan", "inf", "61"])
def test_a_bad_delay_is_a_configuration_error(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="STORE_VISIT_DELAY"):
        Delay.parse(spec)


@pytest.mark.parametrize("kind", ["jpeg", "png", "gif", "webp", "bmp"])
def test_measure_reads_the_size_of_each_accepted_format(kind: str) -> None:
    assert measure(image_bytes(kind, 33, 21)) == (33, 21)


@pytest.mark.parametrize(
    "body",
    [b"<html>hi</html>", b"", image_bytes("tiff", 4, 4), image_bytes("png", 9, 9)[:20]],
    ids=["html", "empty", "tiff", "truncated-header"],
)
def test_measure_refuses_what_is_not_an_accepted_image(body: bytes) -> None:
    with pytest.raises(ImageRejected, match="not a readable image"):
        measure(body)


@pytest.mark.parametrize(("width", "height"), [(10_000, 6_000), (10_000, 9_000), (30_000, 30_000)])
def test_measure_refuses_too_many_pixels(width: int, height: int) -> None:
    """Over MAX_PIXELS (our check), over Pillow's bomb warning, over its bomb error."""
    with pytest.raises(ImageRejected, match="pixels"):
        measure(png_header(width, height))


@pytest.mark.parametrize(
    ("visit", "problem"),
    [
        ({"store_id": "", "image_url": ["http://a.test/x.jpg"]}, "at least 1 character"),
        ({"store_id": "S1", "image_url": []}, "at least 1 item"),
        ({"store_id": "S1", "image_url": ["ftp://a.test/x.jpg"]}, "only http and https"),
        ({"store_id": "S1", "image_url": ["http://u:p@a.test/x"]}, "credentials"),
        ({"store_id": "S1", "image_url": ["http://a.test/" + "x" * 2048]}, "at most 2048"),
        ({"store_id": "S1", "image_url": ["x"], "visit_time": "soon"}, "datetime"),
    ],
)
def test_the_payload_refuses_bad_visits(visit: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        StoreVisitsPayload.model_validate({"visits": [visit]})


def test_the_payload_caps_the_images_of_a_job() -> None:
    many = [{"store_id": "S1", "image_url": ["http://a.test/i.png"] * 100}] * 21
    with pytest.raises(ValidationError, match=f"at most {MAX_IMAGES} images"):
        StoreVisitsPayload.model_validate({"visits": many})
    with pytest.raises(ValidationError, match="at least 1 item"):
        StoreVisitsPayload.model_validate({"visits": []})


# ---- the processor, over loopback ---------------------------------------------------------


async def test_known_sizes_give_known_perimeters_and_progress(site: Site) -> None:
    _, server = site
    progress = Progress()
    result = await processor().run(
        visits(("S1", [url(server, "/jpeg/40x30"), url(server, "/png/7x5")])),
        MASTER,
        progress,
    )
    assert [(i.width, i.height, i.perimeter) for i in result.images] == [(40, 30, 140), (7, 5, 24)]
    assert result.images[0].store_id == "S1"
    assert result.images[0].image_url == url(server, "/jpeg/40x30")
    assert result.errors == []
    assert progress.reports[-1] == (100, "2/2 images")


async def test_each_failing_store_gets_one_error_and_good_images_are_kept(site: Site) -> None:
    _, server = site
    result = await processor().run(
        visits(
            ("S1", [url(server, "/png/10x20"), url(server, "/missing")]),
            ("NOPE", [url(server, "/png/1x1")]),
            ("S2", [url(server, "/text"), url(server, "/missing"), url(server, "/bmp/3x4")]),
            ("NOPE", [url(server, "/png/2x2")]),
            ("S3", [url(server, "/gif/5x5")]),
        ),
        MASTER,
        Progress(),
    )
    assert [(i.store_id, i.perimeter) for i in result.images] == [
        ("S1", 60),
        ("S2", 14),
        ("S3", 20),
    ]
    assert [e.store_id for e in result.errors] == ["S1", "NOPE", "S2"]
    by_store = {e.store_id: e.error for e in result.errors}
    assert by_store["S1"] == f"image {url(server, '/missing')}: the download failed (HTTP 404)"
    assert by_store["NOPE"] == "unknown store_id 'NOPE'"
    assert by_store["S2"].startswith(f"image {url(server, '/text')}: not a readable image")
    assert by_store["S2"].endswith("(and 1 more)")


async def test_images_of_unknown_stores_are_not_downloaded(site: Site) -> None:
    _, server = site
    result = await processor().run(visits(("NOPE", [url(server, "/png/1x1")])), MASTER, Progress())
    assert result.images == [] and len(result.errors) == 1
    assert server.seen == []


async def test_bodies_over_the_byte_cap_are_refused(site: Site) -> None:
    _, server = site
    capped = processor(replace(LOOPBACK, max_bytes=1000))
    result = await capped.run(
        visits(("S1", [url(server, "/bytes/5000")]), ("S2", [url(server, "/png/4x4")])),
        MASTER,
        Progress(),
    )
    assert [e.store_id for e in result.errors] == ["S1"]
    assert "over 1000 bytes" in result.errors[0].error
    assert [i.store_id for i in result.images] == ["S2"]


async def test_images_over_the_pixel_cap_are_refused(site: Site) -> None:
    _, server = site
    result = await processor().run(
        visits(("S1", [url(server, "/pixels/10000x6000")])), MASTER, Progress()
    )
    assert result.errors == [
        StoreError(
            store_id="S1",
            error=f"image {url(server, '/pixels/10000x6000')}: "
            "the image is 10000x6000, over 50000000 pixels",
        )
    ]


async def test_a_redirect_to_a_private_address_is_refused_by_the_strict_policy(
    site: Site,
) -> None:
    """public.test reaches the site through the fake internet; its redirects (to a loopback
    literal, to a name that resolves privately) are checked like any hop and refused, while
    an image straight from it is measured."""
    _, server = site
    internet = FakeInternet({(PUBLIC, 80): server.port})
    dns = FakeDns({"public.test": [[PUBLIC]], "internal.test": [["10.0.0.7"]]})

    async def through_fakes(target: str, *, policy: FetchPolicy) -> FetchResult:
        return await fetch(target, policy=policy, resolver=dns, network=internet)

    def redirect(to: str) -> str:
        return f"http://public.test/redirect?{httpx.QueryParams({'to': to})}"

    strict = processor(FetchPolicy(total_timeout=5.0), fetcher=through_fakes)
    result = await strict.run(
        visits(
            ("S1", [redirect("http://127.0.0.1/png/3x3")]),
            ("S2", ["http://public.test/png/6x4"]),
            ("S3", [redirect("http://internal.test/png/3x3")]),
        ),
        MASTER,
        Progress(),
    )
    assert [(i.store_id, i.perimeter) for i in result.images] == [("S2", 20)]
    assert [e.store_id for e in result.errors] == ["S1", "S3"]
    assert result.errors[0].error.endswith("address 127.0.0.1 is loopback")
    assert result.errors[1].error.endswith("address 10.0.0.7 is private")
    assert internet.dialed == [(PUBLIC, 80)] * 3  # nothing was dialed but the public host


async def test_the_concurrency_bound_is_respected(site: Site) -> None:
    app, server = site
    app.hold = 0.05
    urls = [url(server, f"/slow/png/{n}x1") for n in range(1, 13)]
    result = await processor(concurrency=3).run(visits(("S1", urls)), MASTER, Progress())
    assert len(result.images) == 12
    assert app.peak == 3


async def test_the_delay_is_spent_per_image_inside_the_bound(site: Site) -> None:
    _, server = site
    slow = VisitProcessor(LOOPBACK, Delay(0.05, 0.05), concurrency=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await slow.run(visits(("S1", [url(server, "/png/1x1")] * 4)), MASTER, Progress())
    assert loop.time() - started >= 0.1  # 4 images, 2 at a time, 0.05 s each


# ---- through a worker, on both databases ----------------------------------------------------


async def test_a_job_completes_with_every_image_measured(
    db_url: str, tmp_path: Path, site: Site
) -> None:
    _, server = site
    payload = {
        "visits": [
            {
                "store_id": "RP00002",
                "image_url": [url(server, "/jpeg/640x480"), url(server, "/webp/100x50")],
                "visit_time": "2024-11-16T12:00:00Z",
            },
            {"store_id": "RP00003", "image_url": [url(server, "/gif/1x1")]},
        ]
    }
    async with open_engine(db_url, tmp_path, allow_private_urls=True) as engine:
        job = await run_job(engine, Submission(type="store_visits", payload=payload))
    assert job.state is JobState.COMPLETED, job.errors
    assert job.result == {
        "images": [
            {
                "store_id": "RP00002",
                "image_url": url(server, "/jpeg/640x480"),
                "width": 640,
                "height": 480,
                "perimeter": 2240,
            },
            {
                "store_id": "RP00002",
                "image_url": url(server, "/webp/100x50"),
                "width": 100,
                "height": 50,
                "perimeter": 300,
            },
            {
                "store_id": "RP00003",
                "image_url": url(server, "/gif/1x1"),
                "width": 1,
                "height": 1,
                "perimeter": 4,
            },
        ],
        "errors": [],
    }
    assert job.progress == 100


async def test_a_job_fails_once_with_one_error_per_failing_store(
    db_url: str, tmp_path: Path, site: Site
) -> None:
    """The configured store master is used (RP00002 is not in it); nothing is retried."""
    _, server = site
    master = tmp_path / "stores.csv"
    master.write_text("AreaCode,StoreName,StoreID\n1,One,S1\n2,Two,S2\n")
    payload = {
        "visits": [
            {"store_id": "S1", "image_url": [url(server, "/png/2x2")]},
            {"store_id": "RP00002", "image_url": [url(server, "/png/2x2")]},
            {"store_id": "S2", "image_url": [url(server, "/missing")]},
        ]
    }
    async with open_engine(
        db_url, tmp_path, allow_private_urls=True, store_master_path=master
    ) as engine:
        job = await run_job(engine, Submission(type="store_visits", payload=payload))
    assert job.state is JobState.FAILED
    assert job.attempt == 1
    (entry,) = job.errors
    assert entry["type"] == "StoreVisitsFailed"
    assert StoreVisitsFailed.store_errors(entry["message"]) == [
        StoreError(store_id="RP00002", error="unknown store_id 'RP00002'"),
        StoreError(
            store_id="S2", error=f"image {url(server, '/missing')}: the download failed (HTTP 404)"
        ),
    ]
    # The failed job keeps what succeeded: store S1's image was measured.
    assert [(i["store_id"], i["perimeter"]) for i in job.result["images"]] == [("S1", 8)]


async def test_private_addresses_are_refused_without_the_setting(
    db_url: str, tmp_path: Path
) -> None:
    payload = {"visits": [{"store_id": "RP00001", "image_url": ["http://127.0.0.1/png/2x2"]}]}
    async with open_engine(db_url, tmp_path) as engine:
        job = await run_job(engine, Submission(type="store_visits", payload=payload))
    assert job.state is JobState.FAILED
    (error,) = StoreVisitsFailed.store_errors(job.errors[-1]["message"])
    assert error.store_id == "RP00001" and error.error.endswith("127.0.0.1 is loopback")
