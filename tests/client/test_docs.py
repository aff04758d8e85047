"""docs/client.md's first example runs, as written, against a live server."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.live import LiveServer
from tests.support.processes import ROOT, clean_environ


def first_python_block() -> str:
    text = (ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/client.md has no python example"
    return match.group(1)


def test_the_documented_example_runs(server: LiveServer) -> None:
    key = server.api_key(server.user("docs@example.com"))
    env = {**clean_environ(), "CONVEYOR_URL": server.url, "CONVEYOR_API_KEY": key}
    done = subprocess.run(
        [sys.executable, "-c", first_python_block()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("submitted ") and "100% step 4/4" in lines
    assert "finished: completed {'slept': 1.0, 'attempt': 1}" in lines
    assert lines[-1].startswith("refused: invalid_input ['seconds: ")
