"""Dask: the one place that makes the distributed client for `mcnn sweep` and `mcnn sim --workers`.

Parallelism belongs to processes: every worker is its own process with one thread and BLAS pinned
to one thread. With `scheduler` (tcp://HOST:PORT) the work goes to an existing cluster, e.g.

    dask scheduler --port 8786          # on one machine
    dask worker tcp://HOST:8786 --nthreads 1      # on each machine with mcnn installed

and no other change; without it a LocalCluster sized to this machine is started and stopped.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager

from golden.fileio import InputError

# Set for the worker processes a LocalCluster spawns (they inherit the environment) and, on a
# worker of any cluster, by `pin_threads` before NumPy's BLAS is first used.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_ADDRESS = re.compile(r"^(tcp|tls|inproc)://[^\s/:]+(:\d{1,5})?/?$")


def check_scheduler(address: str) -> str:
    """A scheduler address as Dask takes it, or InputError naming the expected form."""
    if not _ADDRESS.match(address or ""):
        raise InputError(f"--scheduler {address!r}: expected tcp://HOST:PORT (a running `dask scheduler`)")
    return address


def default_workers() -> int:
    """Worker processes of a LocalCluster: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:             # not on Linux
        return max(1, os.cpu_count() or 1)


def pin_threads():
    """Run on a worker before the task's NumPy work: BLAS at one thread (golden/blas.py)."""
    from golden.blas import limit_blas_threads
    limit_blas_threads(1)


@contextmanager
def client(scheduler: str | None = None, workers: int | None = None, timeout: float = 20.0):
    """A dask.distributed Client on `scheduler` or on a LocalCluster of `workers` processes
    (default: one per core), one thread each. A scheduler that cannot be reached is an InputError."""
    from distributed import Client, LocalCluster

    if scheduler:
        check_scheduler(scheduler)
        try:
            c = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({' '.join(str(e).split()) or type(e).__name__})"
                             ) from e
        try:
            yield c
        finally:
            c.close()
        return
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)           # inherited by the worker processes
    # dashboard ":0": the scheduler's HTTP server on any free port (None still binds 8787)
    try:
        with LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, Client(cluster) as c:
            yield c
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
