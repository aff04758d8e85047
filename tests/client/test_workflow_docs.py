"""docs/workflows.md's Python client example runs, as written, against a live server."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.live import LiveServer
from tests.support.processes import ROOT, clean_environ


def client_example() -> str:
    text = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    section = text.split("## The Python client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/workflows.md has no client example"
    return match.group(1)


def test_the_documented_client_example_runs(server: LiveServer) -> None:
    key = server.api_key(server.user("docs@example.com"))
    env = {**clean_environ(), "CONVEYOR_URL": server.url, "CONVEYOR_API_KEY": key}
    done = subprocess.run(
        [sys.executable, "-c", client_example()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "submitted report 4 steps",
        "finished: completed ['merge', 'part-0', 'part-1', 'part-2']",
        "workflow event: completed",
    ]
