"""Entry point of `make load`: `python -m load.run`, settings from LOAD_* (load.options).

Creates the suite's accounts on the running server, runs Locust headless for
LOAD_DURATION seconds in a child process (Locust patches the standard library with gevent,
which this process keeps out of), then prints the summary table with the machine's load
average, and writes under LOAD_RESULTS (default load/results/, not in git) Locust's HTML
report `<stamp>.html`, the figures `<stamp>.json` (load.summary) and the table `<stamp>.md`.
Exit status: Locust's (1 if any request failed), 1 if a scenario made no request, 2 if a
setting is wrong or the accounts cannot be made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from load.accounts import AccountError, ensure_accounts, write_accounts
from load.options import LoadOptions, OptionError
from load.summary import markdown_table, read_summary, requests_by_scenario, text_table

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
RATE_LIMITED_HINT = (
    "429: the server's rate limits were reached (CONVEYOR_RATE_LIMIT_AUTH, _LOGIN_ACCOUNT, "
    "_SUBMIT, _JOBS); raise them on the server under test to measure the API itself"
)
STOP_TIMEOUT_S = 10  # a user's task in flight (an SSE wait) may finish after the duration


def locust_command(options: LoadOptions, prefix: Path) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", options.url, "--users", str(options.users),
        "--spawn-rate", f"{options.spawn_rate:g}", "--run-time", f"{options.duration_s}s",
        "--stop-timeout", str(STOP_TIMEOUT_S), "--html", f"{prefix}.html",
    ]  # fmt: skip


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def run(options: LoadOptions) -> int:
    accounts = ensure_accounts(options)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = options.results / stamp
    accounts_file = options.results / f"{stamp}-accounts.json"
    write_accounts(accounts, accounts_file)
    env = {
        **os.environ,
        "LOAD_ACCOUNTS_FILE": str(accounts_file),
        "LOAD_SUMMARY_FILE": f"{prefix}.json",
        "LOAD_THINK": f"{options.think_s:g}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    before = load_average()
    print(
        f"load: {options.users} users (spawn {options.spawn_rate:g}/s) on {options.url} for "
        f"{options.duration_s}s; load average before {before}",
        flush=True,
    )
    try:
        code = subprocess.run(locust_command(options, prefix), env=env, check=False).returncode
    finally:
        accounts_file.unlink(missing_ok=True)
    after = load_average()
    summary = read_summary(Path(f"{prefix}.json"))
    rows = summary.rows
    idle = [name for name, made in requests_by_scenario(rows).items() if made == 0]
    heading = (
        f"{options.users} users, {options.duration_s}s, think {options.think_s:g}s, "
        f"{options.url}; load average before {before}, after {after}"
    )
    print(f"\n{heading}\n{text_table(rows)}")
    Path(f"{prefix}.md").write_text(f"{heading}\n\n{markdown_table(rows)}\n")
    for call, error, times in summary.errors[:10]:
        print(f"error x{times} {call}: {error[:200]}")
    if any(row.limited for row in rows):
        print(RATE_LIMITED_HINT)
    print(f"report: {prefix}.html")
    if idle:
        print(f"no requests from: {', '.join(idle)}", file=sys.stderr)
        return code or 1
    return code


def main() -> int:
    try:
        return run(LoadOptions.from_env())
    except (OptionError, AccountError) as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
