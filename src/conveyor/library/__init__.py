"""Conveyor as a library inside the user's own process (docs/library.md).

A door like the HTTP client, but in-process: job types declared with `@job`, enqueues that
join a transaction the caller holds (their SQLAlchemy, psycopg, asyncpg or Django
connection), and a worker embedded in the caller's process. It talks to services only.
"""
