"""The A/B load of ``rpcclient ab``, from as many machines as Locust can drive.

Two user classes run the same workload against the bundled example app
(``echo.echo`` with a bytes payload, ``math.add``) with different transports:
``ABUserA`` on ``requests`` (the old client), ``ABUserB`` on rpcclient's gevent
transport. Locust's Type column is the transport, so each method shows one
row per arm. Needs ``pip install locust`` (it brings ``requests``, arm A's
transport).

Start the server (``--bind 0.0.0.0:8000`` when the load comes from other
machines)::

    rpcclient serve rpcclient.example:app --bind 127.0.0.1:8000

Run both arms locally, headless, 30 s::

    locust -f bench/locustfile.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8000

Distributed: one master, any number of workers (every machine needs this
file and rpcclient). Load only servers and networks that are your team's own
test setup: this generates as much traffic as the machines can make::

    locust -f bench/locustfile.py --master --headless -u 500 -r 100 -t 60s \\
        --expect-workers 4 --host http://SERVER:8000
    locust -f bench/locustfile.py --worker --master-host MASTER     # on each load machine

A/B by machine instead of by class: run only ``ABUserB`` (name the class at
the end of the master's command line) and start some workers with
``RPCCLIENT_TRANSPORT=requests``; their calls show as Type ``requests``.

Environment, read where the users run (each worker, or the one local process):

``RPCCLIENT_BENCH_PAYLOAD``  bytes echoed per ``echo.echo`` call (default 100, as ``rpcclient ab``)
``RPCCLIENT_BENCH_WAIT``     seconds each user waits between calls (default 0: closed loop)
``RPCCLIENT_BENCH_A``        arm A's transport (default ``requests``)
``RPCCLIENT_TRANSPORT``      arm B's transport (default ``gevent``)
"""

from __future__ import annotations

import os

from locust import constant, task

from rpcclient.contrib.locust import RPCUser

PAYLOAD = b"x" * int(os.environ.get("RPCCLIENT_BENCH_PAYLOAD", "100"))
WAIT = float(os.environ.get("RPCCLIENT_BENCH_WAIT", "0"))


class _Workload(RPCUser):
    """Three echoes to one add, each answer checked."""

    abstract = True
    wait_time = constant(WAIT)

    @task(3)
    def echo(self) -> None:
        # a wrong answer is a bug, not a slow call: it fails the task, which
        # Locust counts among its exceptions (and the run's exit status)
        if self.client.call("echo.echo", [PAYLOAD]) != PAYLOAD:
            raise AssertionError("echo.echo answered something else than its payload")

    @task(1)
    def add(self) -> None:
        if self.client.call("math.add", [2, 3]) != 5:
            raise AssertionError("math.add(2, 3) did not answer 5")


class ABUserA(_Workload):
    """Arm A: the old client (``requests``), or ``RPCCLIENT_BENCH_A``."""

    transport = os.environ.get("RPCCLIENT_BENCH_A") or "requests"


class ABUserB(_Workload):
    """Arm B: ``RPCCLIENT_TRANSPORT``, else rpcclient's gevent transport."""

    transport = None
