"""The wheel works on its own: `python -m build` packs every file the server reads at run
time, and `conveyor run` from a fresh venv holding only that wheel (no source tree, no
PYTHONPATH, no editable install) migrates a new SQLite file and answers `/ready`.

What the wheel must hold is read from the tree, not listed here: every file under
src/conveyor that is not Python (migrations' template, named SQL, dashboard templates and
static files, the store master sample, the common passwords), so a data file added later is
checked without anyone remembering this test. One test, on SQLite only: it is the wheel
under test, not the database (30 s on a loaded machine, most of it pip installing the
runtime dependencies).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.net.world import free_port
from tests.support.processes import Proc, start, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "conveyor"


def data_files() -> list[str]:
    """The package's non-Python files, as the wheel names them (`conveyor/...`)."""
    return sorted(
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    )


def outside_environ() -> dict[str, str]:
    """This process's environment without anything that would find the source tree."""
    drop = ("CONVEYOR_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def build_wheel(out: Path) -> Path:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=outside_environ(),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("conveyor-*.whl")
    return path


def missing_files(wheel: Path) -> list[str]:
    """The package's data files and migrations the wheel does not hold."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = data_files()
    assert "conveyor/store/sql/postgres.sql" in expected  # the tree was read
    migrations = sorted((PACKAGE / "store" / "migrations" / "versions").glob("*.py"))
    assert migrations
    expected += [f"conveyor/store/migrations/versions/{path.name}" for path in migrations]
    return [name for name in expected if name not in names]


def install(wheel: Path, home: Path) -> Path:
    """A fresh venv's bin directory, with the wheel and its runtime dependencies and nothing
    else. The test venv's pip installs into it (`--python`: no ensurepip in the new venv, and
    ~20 s instead of ~60 s for the bundled pip on a loaded machine); it finds them as it is
    configured (PyPI or the machine's index, and its own cache)."""
    venv.EnvBuilder(with_pip=False, clear=True).create(home)
    bin_dir = home / "bin"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python",
         str(bin_dir / "python"), "install", "--quiet", "--no-compile", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=outside_environ(),
        cwd=home,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode and not IN_CI and "NewConnectionError" in output:
        pytest.skip(f"no package index reachable to install the wheel's dependencies: {output}")
    assert done.returncode == 0, output
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import conveyor; print(conveyor.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=outside_environ(),
        cwd=home,
    ).stdout.strip()
    assert Path(where).is_relative_to(home), where  # the venv's copy, not src/
    return bin_dir


@contextlib.contextmanager
def conveyor_run(bin_dir: Path, work: Path, port: int) -> Iterator[Proc]:
    """`conveyor run` from the fresh venv, in a directory of its own, on a new SQLite file;
    killed if still running after the block, its output printed (shown on a failure)."""
    env = outside_environ()
    env.update(
        PYTHONUNBUFFERED="1",
        CONVEYOR_DATABASE_URL=f"sqlite:///{work / 'conveyor.db'}",
        CONVEYOR_DATA_DIR=str(work / "data"),
        CONVEYOR_PORT=str(port),
        CONVEYOR_LOG_FILE="",
        CONVEYOR_ADMIN_PASSWORD="a-password-long-enough-123",
        CONVEYOR_HTTP_SHUTDOWN_GRACE="1",
    )
    proc = start("run", [str(bin_dir / "conveyor"), "run"], cwd=work, env=env, out=work / "out")
    try:
        yield proc
    finally:
        proc.kill()
        print(proc.output())


@pytest.mark.timeout(900)
def test_conveyor_run_from_the_wheel_alone(tmp_path: Path) -> None:
    """One test, so that a parallel run (-n auto) builds and installs once."""
    wheel = build_wheel(tmp_path / "dist")
    assert missing_files(wheel) == []
    bin_dir = install(wheel, tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with conveyor_run(bin_dir, work, port) as proc:
        wait_ready(base, proc.running, timeout=120)
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
            # A template, the dashboard's static files and the API docs, from the wheel.
            assert http.get("/dashboard/login").status_code == 200
            assert http.get("/dashboard/static/dashboard.css").status_code == 200
            assert http.get("/docs").status_code == 200
        proc.send(signal.SIGTERM)
        assert proc.popen.wait(timeout=60) == 0
    assert (work / "conveyor.db").stat().st_size > 0  # migrated: the tables are there
