"""Create ``bench/.venv-peers`` for the peer job queues, only when missing or outdated.

The peers (Celery, Dramatiq, Procrastinate and their clients) live in a venv of their own so
their dependencies can never leak into, or conflict with, the project's. The venv records the
sha256 of ``bench/peers/requirements.txt``; a different hash (or a half-built venv, which has
no stamp) means a rebuild from scratch, so a run always uses exactly the pinned versions.

    python -m bench.peers_venv          # build if needed, print the venv's python
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REQUIREMENTS = BENCH_DIR / "peers" / "requirements.txt"
VENV_DIR = BENCH_DIR / ".venv-peers"
STAMP = VENV_DIR / ".requirements.sha256"
VENV_TIMEOUT_S = 120
PIP_TIMEOUT_S = 600


def venv_bin(name: str) -> Path:
    """A script of the peers venv, e.g. ``venv_bin("celery")``."""
    return VENV_DIR / "bin" / name


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_current() -> bool:
    """True when the venv exists and was built from the current requirements file."""
    return (
        venv_bin("python").exists()
        and STAMP.exists()
        and STAMP.read_text().strip() == requirements_hash()
    )


def _base_python() -> str:
    """A plain ``python3``; ``venv`` also works from inside the project venv as a fallback."""
    return shutil.which("python3") or sys.executable


def ensure_peers_venv(log: bool = True) -> Path:
    """Build the venv if needed and return its python; raise on any failure."""
    if is_current():
        return venv_bin("python")
    if log:
        print(f"bench: building {VENV_DIR} from {REQUIREMENTS.name} ...", file=sys.stderr)
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    subprocess.run(
        [_base_python(), "-m", "venv", str(VENV_DIR)], check=True, timeout=VENV_TIMEOUT_S
    )
    pip = [str(venv_bin("python")), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-r", str(REQUIREMENTS)], check=True, timeout=PIP_TIMEOUT_S)
    STAMP.write_text(requirements_hash() + "\n")  # last: a failed build leaves no stamp
    return venv_bin("python")


if __name__ == "__main__":
    print(ensure_peers_venv())
