"""The `conveyor` command line (`main` is its entry point; app.py assembles it)."""

from __future__ import annotations

from conveyor.cli.app import main

__all__ = ["main"]
