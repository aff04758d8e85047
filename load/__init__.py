"""The HTTP API's load suite (`make load`): Locust scenarios against a running Conveyor.

`load.run` is the entry point; `load.locustfile` holds the scenarios and is the only module
that imports Locust (which patches the standard library with gevent on import), so the
rest can be imported by the tests and by plain tools.
"""
