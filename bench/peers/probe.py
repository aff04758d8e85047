"""Durable-completion probes: how many of a drain's jobs the system's own store holds as done.

Standard library only (used in both venvs). A probe yields ``(before, after, done)`` samples
about every ``interval_s`` until ``done >= n`` or ``timeout_s`` passes: ``time.time()`` just
before the read was sent and just after it returned. The store's snapshot that ``done`` counts
was taken somewhere between the two, so the harness bounds what it compares with it exactly:
executions ended by ``before`` (surely seen by then) and by ``after`` (possibly). Any job
counted was durable by ``after``. ``bench.peers.client probe`` prints them as JSON lines.

RabbitMQ has no cheap live "unacknowledged" count over AMQP (a passive queue.declare reports
ready messages only, the management plugin's figures are refreshed every 5 s, and each
``rabbitmqctl list_queues`` boots an Erlang VM: 0.6 s of CPU). :func:`rabbitmq_samples` runs
one ``rabbitmqctl eval`` whose expression reads the queue's ``messages_ready`` and
``messages_unacknowledged`` inside the broker every ``interval_s`` (what ``list_queues``
reads, read-only) and prints each sample as it goes; it needs root (or the rabbitmq user).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

Sample = tuple[float, float, int]  # before the read, after it, durably done


def poll(count: Callable[[], int], n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
    """Call ``count`` every ``interval_s`` until it reaches ``n`` or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        started = time.monotonic()
        before = time.time()
        done = count()
        yield before, time.time(), done
        if done >= n or time.monotonic() >= deadline:
            return
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


_EVAL = """
Q = rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>),
Info = fun() -> case rabbit_amqqueue:lookup(Q) of
    {{ok, QQ}} -> [R, U] = [V || {{_, V}} <- rabbit_amqqueue:info(QQ,
                    [messages_ready, messages_unacknowledged])], {{R, U}};
    _ -> {{-1, -1}} end end,
Deadline = erlang:monotonic_time(millisecond) + {timeout_ms},
Loop = fun L() ->
    Before = os:system_time(microsecond),
    {{R, U}} = Info(),
    io:format("sample ~b ~b ~b ~b~n", [Before, os:system_time(microsecond), R, U]),
    case (R =:= 0 andalso U =:= 0) orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> done;
        false -> timer:sleep({interval_ms}), L()
    end end,
Loop().
"""


def rabbitmq_samples(
    queue: str, n: int, interval_s: float, timeout_s: float, vhost: str = "/"
) -> Iterator[Sample]:
    """Done = n - ready - unacknowledged, read inside the broker (see the module docstring).
    Ends when the queue is empty with nothing unacknowledged, or at ``timeout_s``."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    expression = _EVAL.format(
        vhost=vhost,
        queue=queue,
        timeout_ms=int(timeout_s * 1000),
        interval_ms=max(1, int(interval_s * 1000)),
    )
    with subprocess.Popen(
        [ctl, "-q", "eval", expression],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = line.split()
            if len(fields) != 5 or fields[0] != "sample":
                continue
            before_us, after_us, ready, unacked = (int(v) for v in fields[1:])
            if ready < 0:
                raise RuntimeError(f"rabbitmq: queue {queue!r} not found")
            yield before_us / 1e6, after_us / 1e6, n - ready - unacked
        if proc.wait() != 0:
            raise RuntimeError(
                f"rabbitmqctl eval failed: {proc.stderr.read() if proc.stderr else ''}"
            )
