"""A Django project enqueues inside `transaction.atomic()` on its database alias."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from conveyor.library.enqueue import enqueue
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.library.conftest import OWNER, jobs_and_events, rows
from tests.library.handlers import blueprint


@pytest.fixture
def django_db(pg: str) -> Iterator[str]:
    """Django set up once per process; its `default` database is this test's."""
    import django
    from django.conf import settings
    from django.db import connections

    from tests.library.django_project import settings as project

    name = urlsplit(pg).path.lstrip("/")
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=project.INSTALLED_APPS,
            USE_TZ=project.USE_TZ,
            SECRET_KEY=project.SECRET_KEY,
            DATABASES={"default": project.database(name)},
        )
        django.setup()
    connections["default"].close()
    connections["default"].settings_dict.update(
        NAME=name, HOST=PG_HOST, PORT=str(PG_PORT), USER=PG_USER
    )
    yield "default"
    connections["default"].close()


def test_atomic_commits_the_order_and_its_job_together(django_db: str) -> None:
    from django.db import transaction

    from tests.library.django_project.shop.models import Order

    with transaction.atomic():
        Order.objects.create(id=1, note="paid")
        done = enqueue(django_db, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
    url = _url()
    assert jobs_and_events(url) == (
        [(done.id, "lib_order", OWNER, "queued")],
        [(done.id, "created")],
    )
    assert rows(url, "SELECT id FROM orders") == [(1,)]


def test_an_exception_inside_atomic_leaves_no_order_and_no_job(django_db: str) -> None:
    with pytest.raises(RuntimeError):
        _order_refused(django_db)
    assert jobs_and_events(_url()) == ([], [])
    assert rows(_url(), "SELECT id FROM orders") == []


def _order_refused(alias: str) -> None:
    from django.db import transaction

    from tests.library.django_project.shop.models import Order

    with transaction.atomic():
        Order.objects.create(id=1, note="paid")
        enqueue(alias, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        raise RuntimeError("payment refused")


def test_a_nested_atomic_rolled_back_takes_its_job_only(django_db: str) -> None:
    from django.db import transaction

    with transaction.atomic():
        kept = enqueue(django_db, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        try:
            with transaction.atomic():  # a savepoint
                enqueue(django_db, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
                raise RuntimeError("this part fails")
        except RuntimeError:
            pass
        twin = enqueue(django_db, "lib_unique", {"order_id": 9}, owner=OWNER, registry=blueprint)
        again = enqueue(django_db, "lib_unique", {"order_id": 9}, owner=OWNER, registry=blueprint)
    jobs, events = jobs_and_events(_url())
    assert {j[0] for j in jobs} == {kept.id, twin.id}
    assert len(events) == 2
    assert (again.id, again.duplicate) == (twin.id, True)


def test_a_workflow_commits_with_atomic_and_goes_with_its_exception(django_db: str) -> None:
    from django.db import transaction

    from conveyor.client import chord, step
    from conveyor.library.enqueue import enqueue_workflow

    spec = chord("ship", [step("a", "lib_order", {"order_id": 1})], step("b", "lib_order",
                 {"order_id": 2}))  # fmt: skip
    with transaction.atomic():
        done = enqueue_workflow(django_db, spec, owner=OWNER, registry=blueprint)
    with pytest.raises(RuntimeError):
        _refused(django_db, lambda: enqueue_workflow(django_db, spec, owner=OWNER,
                                                     registry=blueprint))  # fmt: skip
    assert rows(_url(), "SELECT id FROM workflows") == [(done.id,)]
    assert rows(_url(), "SELECT step, state FROM jobs ORDER BY step") == [
        ("a", "queued"), ("b", "waiting"),
    ]  # fmt: skip


def test_a_workflow_key_reused_inside_atomic_leaves_the_block_committing(django_db: str) -> None:
    from django.db import transaction

    from conveyor.client import group, step
    from conveyor.errors import IdempotencyKeyReused
    from conveyor.library.enqueue import enqueue_workflow
    from tests.library.django_project.shop.models import Order

    one = group("one", [step("a", "lib_order", {"order_id": 1})])
    other = group("other", [step("b", "lib_order", {"order_id": 2})])
    with transaction.atomic():
        kept = enqueue_workflow(django_db, one, owner=OWNER, registry=blueprint,
                                idempotency_key="k")  # fmt: skip
        with pytest.raises(IdempotencyKeyReused):
            enqueue_workflow(django_db, other, owner=OWNER, registry=blueprint,
                             idempotency_key="k")  # fmt: skip
        Order.objects.create(id=1, note="after the refusal")
    assert rows(_url(), "SELECT id FROM workflows") == [(kept.id,)]
    assert rows(_url(), "SELECT id FROM orders") == [(1,)]


def _refused(alias: str, enqueue_it: Callable[[], object]) -> None:
    from django.db import transaction

    with transaction.atomic(using=alias):
        enqueue_it()
        raise RuntimeError("payment refused")


def _url() -> str:
    from django.db import connections

    s = connections["default"].settings_dict
    return f"postgresql://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def test_a_job_key_reused_inside_atomic_leaves_the_block_committing(django_db: str) -> None:
    from django.db import transaction

    from conveyor.errors import IdempotencyKeyReused
    from tests.library.django_project.shop.models import Order

    with transaction.atomic():
        kept = enqueue(django_db, "lib_order", {"order_id": 1}, owner=OWNER,
                       registry=blueprint, idempotency_key="k")  # fmt: skip
        with pytest.raises(IdempotencyKeyReused):
            enqueue(django_db, "lib_order", {"order_id": 2}, owner=OWNER,
                    registry=blueprint, idempotency_key="k")  # fmt: skip
        Order.objects.create(id=1, note="after the refusal")
    assert rows(_url(), "SELECT id FROM jobs") == [(kept.id,)]
    assert rows(_url(), "SELECT id FROM orders") == [(1,)]
