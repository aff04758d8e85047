"""`make bench`: the benchmark harness for Conveyor and its peers (see bench/README.md).

This package must stay importable with nothing but the standard library, because the
peer drivers under ``bench/peers/`` run in a separate venv (``bench/.venv-peers``) and
import ``bench.peers.*`` through it.
"""
