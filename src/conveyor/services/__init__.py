"""Use cases: the one entry point every door (API, dashboard, CLI, compat) calls."""
