"""Peer job queues driven by the harness; runs in ``bench/.venv-peers``, never the project venv.

Each driver module (``celery_app``, ``dramatiq_app``, ``procrastinate_app``) defines the
peer's no-op task, which records its execution with :func:`bench.peers.record.record`, and a
``Driver`` class that ``bench.peers.client`` uses to enqueue, purge and report versions.
"""
