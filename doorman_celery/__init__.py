"""Doorman's worker companion: task outcomes, queue waits and argument-free running tasks.

Install it with one line where your Celery app is created (it needs Celery only)::

    import doorman_celery
    doorman_celery.install(app)

The same call serves producers and workers, and calling it again changes nothing.

Producers
=========
Every task published by the process carries an ``x_published_at`` header (:data:`HEADER`):
the publish time, epoch seconds (float), unless the message has one already. It holds a
number only; nothing about the task's arguments is added or read.

Workers
=======
A worker of an app that called :func:`install` counts, in its main process (so the figures
are the same for every pool: prefork, threads, solo, gevent, eventlet), from the moment it
starts. Nothing is written anywhere: the figures are answered on request by a remote-control
command and are gone when the worker stops.

It never reads a task's args, kwargs, ``argsrepr``/``kwargsrepr``, result, exception message
or traceback. Its cost is a dictionary lookup, a few additions and a bisection per task.

The stats marker
----------------
``app.control.inspect().stats()`` answers, for each such worker, one more key::

    "doorman": {"v": 1, "command": "doorman"}

``v`` is the reply version below; ``command`` the remote-control command to ask. A worker
without the key has no companion (ask it ``active`` instead).

The ``doorman`` command (:data:`COMMAND`)
-----------------------------------------
An inspect command without arguments, e.g.
``app.control.broadcast("doorman", reply=True, destination=[...])`` or
``celery -A proj inspect doorman``. One JSON-serialisable reply per worker::

    {
      "v": 1,                      # int: this format's version (VERSION)
      "boot": "9f3c1a0b5e7d2c4a",  # str: 16 hex digits, new at every worker start
      "pid": 4242,                 # int: the worker's main process id
      "started": 1767225600.123,   # float: epoch seconds the counters started from
      "active": [                  # the running tasks: these five keys, nothing else
        {"id": str, "name": str, "time_start": float, "worker_pid": int, "queue": str}
      ],
      "reserved": [str, ...],      # ids of received tasks waiting for the pool
      "scheduled": [{"id": str, "eta": float}],  # held for their ETA (epoch s; null if none)
      "tasks": {"<task name>": TASK, ...},   # at most 1000 names
      "queues": {"<queue>": HIST, ...},      # at most 200 queues
      "overflow": {"tasks": TASK, "queues": HIST},  # keys present only when used
      "buckets": [0.001, 0.0015, ...]        # BUCKETS: histogram bucket bounds, seconds
    }

``active``: what Celery's ``active`` answers minus every argument field (no ``args``,
``kwargs``, ``argsrepr``, ``kwargsrepr``, ``hostname``, ``delivery_info``...). ``time_start``:
epoch seconds the pool accepted it; ``worker_pid``: the process running it (a pool child in
prefork, else the main process); ``queue``: see below. ``reserved`` and ``scheduled``: what
Celery's ``reserved`` and ``scheduled`` answer, reduced to the task ids (and the ETA); a list
the worker could not read this time is left out (not known, never "none"). Doorman reads at
most 10,000 entries of each: a longer list is not read, and its check says so.

TASK, per task name (Celery's name for it: the ``shadow`` name when one is set). Counters are
cumulative since ``started``, ints, and **absent when 0**:

- ``succeeded``: returned normally.
- ``failed``: raised (time limits and a lost pool process included).
- ``retried``: raised ``Retry`` (``self.retry()``); the retry is a new run, counted again.
  A run that exhausts its retries counts as ``failed``.
- ``rejected``: raised ``Reject`` (with or without requeue).
- ``revoked``: discarded or terminated by a revoke (not an expiry).
- ``expired``: discarded unrun because its ``expires`` time had passed when the worker
  received it or was about to start it (Celery revokes it with ``expired=True``).
- ``runtime``: HIST of the run times (seconds) of the runs that ended in succeeded,
  failed, retried or rejected; absent when there is none. The run time of a success is the
  one Celery measures in the pool process; of the others, accepted-to-outcome in the main
  process.

A task raising ``Ignore`` is counted nowhere.

HIST, a cumulative histogram since ``started``::

    {"count": int, "sum": float, "max": float, "first": int, "counts": [int, ...]}

``count`` observations summing to ``sum`` seconds, the largest ``max`` seconds (rounded to
microseconds). Bucket ``i`` (0 <= i <= len(buckets)) holds the observations ``x`` with
``buckets[i-1] < x <= buckets[i]`` (bucket 0: ``x <= buckets[0]``; bucket ``len(buckets)``:
``x > buckets[-1]``). ``counts[k]`` is the count of bucket ``first + k``; buckets before
``first`` and after the end of ``counts`` hold 0 (:func:`dense` expands it). Take two reads of
the same ``boot`` and subtract (:func:`delta`) for an interval; :func:`quantile` estimates a
quantile from the difference. A different ``boot`` means the worker restarted: its counters
began again from zero.

``queues``: the wait of every task the worker started that carries the ``x_published_at``
header: its ``time_start`` minus the header (minus its ETA instead when it was sent with a
countdown/ETA later than that; below 0, from clock skew, counts as 0). Tasks without the
header are not measured. ``queue`` (here and in ``active``): the name of the declared queue
bound with the delivery's exchange and routing key (for Redis, usually the routing key itself,
which is then the answer when no declared queue matches).

``overflow``: the 1001st and later task names share one TASK in ``overflow.tasks``; the 201st
and later queues one HIST in ``overflow.queues``. Nothing is dropped silently: a key there
means names were over the limit.

:data:`BUCKETS`: 43 bounds, 1, 1.5, 2, 3, 5, 7 times each power of ten from 0.001 to 7000 s,
then 10000 s.
"""

from __future__ import annotations

import time
from typing import Any

from ._stats import (
    BUCKETS,
    COMMAND,
    COUNTERS,
    HEADER,
    MAX_QUEUES,
    MAX_TASKS,
    STATS_KEY,
    VERSION,
    delta,
    dense,
    quantile,
)

__all__ = [
    "BUCKETS",
    "COMMAND",
    "COUNTERS",
    "HEADER",
    "MAX_QUEUES",
    "MAX_TASKS",
    "PUBLISH_UID",
    "STATS_KEY",
    "VERSION",
    "WORKER_STEP",
    "delta",
    "dense",
    "install",
    "quantile",
    "stamp_publish_time",
]

PUBLISH_UID = "doorman-publish-time"
WORKER_STEP = "doorman_celery._worker:Companion"


def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish`` receiver: add the publish time unless a retry already has it."""
    if headers is not None and HEADER not in headers:
        headers[HEADER] = time.time()


def install(app: Any) -> None:
    """Install the companion for the Celery app ``app`` (idempotent).

    Producer side: every task this process publishes carries :data:`HEADER`. Worker side:
    adds a worker bootstep to ``app``; in a worker of ``app`` it counts outcomes and waits,
    answers the :data:`COMMAND` command and marks the ``stats`` reply.
    """
    from celery.signals import before_task_publish

    before_task_publish.connect(stamp_publish_time, weak=False, dispatch_uid=PUBLISH_UID)
    # By name: Celery loads the step when a worker starts, so a producer (a web process, say)
    # never imports the worker's machinery.
    app.steps["worker"].add(WORKER_STEP)
