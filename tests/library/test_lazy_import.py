"""`import conveyor` stays cheap: its public names are imported on first use (PEP 562).

The command line imports the package before every command, so whatever `conveyor/__init__`
imports, `conveyor --help` pays for. Each check runs in a fresh interpreter: this one has
imported everything already.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

import conveyor
from tests.support.processes import CHILD_PYTHONPATH, ROOT, clean_environ

SERVER = ("fastapi", "sqlalchemy", "asyncpg", "aiosqlite", "uvicorn", "starlette", "httpx")
ENQUEUE_NAMES = {"enqueue", "aenqueue", "enqueue_batch", "aenqueue_batch", "Enqueued", "Job"} | {
    "enqueue_workflow", "aenqueue_workflow", "EnqueuedWorkflow",
}  # fmt: skip


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**clean_environ(), "PYTHONPATH": CHILD_PYTHONPATH}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    return set(json.loads(done.stdout))


def test_importing_conveyor_imports_no_server_code_and_nothing_of_ours() -> None:
    loaded = modules_after("import conveyor")
    assert sorted(m for m in loaded if m.startswith("conveyor.")) == []
    assert not loaded & {*SERVER, "pydantic", "pydantic_settings"}


def test_declaring_a_job_imports_no_store_and_no_server() -> None:
    """A module of job types can be imported where only the types are needed."""
    loaded = modules_after("import conveyor\nconveyor.job")
    assert "conveyor.library.registry" in loaded
    assert not {m for m in loaded if m.startswith(("conveyor.store", "conveyor.runtime"))}
    assert not loaded & set(SERVER)


def test_the_worker_is_imported_when_first_used() -> None:
    loaded = modules_after("import conveyor\nconveyor.Worker")
    assert {"conveyor.library.worker", "conveyor.runtime"} <= loaded


def test_every_public_name_is_listed_once_and_resolves() -> None:
    lazy = set(conveyor._LAZY)
    assert set(conveyor.__all__) == lazy | {"__version__"}
    assert len(conveyor.__all__) == len(set(conveyor.__all__))
    assert set(dir(conveyor)) >= set(conveyor.__all__)
    for name in sorted(lazy - ENQUEUE_NAMES):
        module = importlib.import_module(conveyor._LAZY[name])
        assert getattr(conveyor, name) is getattr(module, name)


def test_the_enqueue_names_resolve() -> None:
    for name in sorted(ENQUEUE_NAMES):
        assert getattr(conveyor, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        conveyor.nothing_here  # noqa: B018
