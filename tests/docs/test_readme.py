"""The README as a newcomer follows it: its curl session (register, the code read from the
log into `CODE`, verify, sign in, submit, list, an API key from `{"name": ...}`) run by bash
against a real `conveyor run` on a fresh SQLite file, then its Python example with that key.

Only the port (a free one, as `CONVEYOR_PORT` picks) and the key (`cvk_...`) are filled in,
and the wait for the mailed code that a person types more slowly than bash. The example
used to reuse the curl's idempotency key: it found the finished job and printed nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.net.world import free_port
from tests.support.processes import CHILD_PYTHONPATH, ROOT, Cluster, clean_environ, wait_ready

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text(encoding="utf-8")
CODE_LINE = re.compile(r"^CODE=.*$", re.MULTILINE)


def block(language: str, containing: str) -> str:
    """The README's first fenced `language` block that contains `containing`."""
    for found in re.finditer(rf"^```{language}\n(.*?)^```$", README, re.MULTILINE | re.DOTALL):
        if containing in found.group(1):
            return found.group(1)
    raise AssertionError(f"no {language} block with {containing!r} in README.md")


def test_the_examples_use_their_own_keys_and_no_literal_code() -> None:
    shell = block("sh", "auth/register")
    python = block("python", "Client(")
    curl_keys = set(re.findall(r"Idempotency-Key: ([\w-]+)", shell))
    python_keys = set(re.findall(r'idempotency_key="([\w-]+)"', python))
    assert curl_keys
    assert python_keys
    assert curl_keys.isdisjoint(python_keys)
    assert CODE_LINE.search(shell)
    assert '"$CODE"' in shell
    assert "123456" not in shell
    assert "CONVEYOR_PORT" in README
    assert '{"name":' in shell


def shell_session(port: int) -> str:
    script = block("sh", "auth/register").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    wait = "for _ in $(seq 600); do grep -q 'verification code is' logs/app.log && break; "
    wait += "sleep 0.2; done\n"
    script = CODE_LINE.sub(lambda line: wait + line.group(0), script, count=1)
    return f'{script}\nprintf "%s\\n" "$KEY" > key.txt\n'


def test_the_readme_session_works_on_a_fresh_server(tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        message = f"the README's session needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"{message}: CI installs them (.ci/run)")
        pytest.skip(message)
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    cluster = Cluster(f"sqlite:///{tmp_path / 'conveyor.db'}", tmp_path)
    port = free_port()
    settings = {
        "port": str(port),
        "data_dir": str(tmp_path / "data"),
        "log_file": str(work / "logs" / "app.log"),
        "http_shutdown_grace": "1",
    }
    server = cluster.spawn("run", ["run"], settings)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server.running, timeout=90)
        session = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", shell_session(port)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
            env=clean_environ(),
        )
        assert session.returncode == 0, session.stdout + session.stderr + cluster.report()
        assert '"idempotency_key":"order-42"' in session.stdout
        key = (work / "key.txt").read_text().strip()
        assert key.startswith("cvk_"), session.stdout
        example = block("python", "Client(").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        example = example.replace('"cvk_..."', repr(key))
        env = clean_environ()
        env["PYTHONPATH"] = CHILD_PYTHONPATH
        ran = subprocess.run(
            [sys.executable, "-c", example],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr + cluster.report()
        lines = ran.stdout.splitlines()
        assert any("percent=" in line for line in lines), ran.stdout  # its own job, run now
        assert lines[-1].startswith("completed "), ran.stdout
    finally:
        cluster.close()
