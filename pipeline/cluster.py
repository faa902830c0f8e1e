"""Getting a Dask client: the one function in the library that builds clusters."""

from __future__ import annotations

import logging
import sys
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed import Client, get_client

from .backend import gpu_count

__all__ = ["connect", "current_client", "workers_info"]

logger = logging.getLogger(__name__)

PROFILE_KEY = "distributed.worker.profile.interval"
DASK_PROFILE_INTERVAL = 0.01  # seconds: distributed's own default ("10ms")


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    security: Any = None,
    device: str = "auto",
    profile_interval: str | None = "100ms",
    **cluster_kwargs: Any,
) -> Client:
    """Connect to a Dask cluster, starting a local one when no address is given.

    Parameters
    ----------
    address : str, optional
        Scheduler address (``"tcp://host:8786"``, ``"tls://host:8786"``). ``None`` starts an
        embedded cluster: ``LocalCUDACluster`` (one worker per GPU) when GPUs are visible,
        else ``LocalCluster``.
    n_workers : int, optional
        Workers of the embedded cluster (default 2 on CPU, one per GPU on GPU).
    threads_per_worker : int
        One thread per worker keeps BLAS from oversubscribing the cores.
    dashboard_address : str
        Bound to localhost by default; pass ``":8787"`` to expose it.
    security : distributed.Security or bool, optional
        TLS settings (mutual TLS with your CA), passed to the cluster and the client.
    device : {"auto", "cpu", "gpu"}
        ``"auto"`` detects GPUs cheaply (NVML, no CUDA context in this process).
    profile_interval : str or None
        How often the embedded cluster's workers sample a running task's stack for the
        dashboard's Profile page (``distributed.worker.profile.interval``). At Dask's 10 ms the
        worker's event loop wakes 100 times a second, busy or idle, and walks the task
        thread's stack (~35 µs a sample): about 1.2% of a core per worker, a third of an idle
        worker's background CPU (``benchmarks/bench_worker_overhead.py``). At 100 ms the
        Profile page still fills, with a tenth of the samples; pass ``"10ms"`` for Dask's
        finer profile. Applied only to a cluster this function starts, and only when your
        Dask configuration leaves the interval at Dask's default; ``None`` keeps the
        configuration as it is. A cluster at ``address`` is never reconfigured.

    Returns
    -------
    distributed.Client
        Also made the current client, so library functions called with ``client=None`` use it.
    """
    _refuse_import_time_call()
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if address is not None:
        return Client(address, security=security)

    use_gpu = device == "gpu" or (device == "auto" and gpu_count() > 0)
    if use_gpu:
        try:
            from dask_cuda import LocalCUDACluster  # the gpu extra
        except ImportError as exc:
            raise ImportError(
                "a GPU cluster needs the gpu extra: pip install 'dask-pipeline[gpu]' "
                "(or connect(device='cpu') to use a CPU LocalCluster)"
            ) from exc

        kwargs: dict[str, Any] = dict(dashboard_address=dashboard_address, **cluster_kwargs)
        if n_workers is not None:
            kwargs["n_workers"] = n_workers
        if security is not None:
            kwargs["security"] = security
        with dask.config.set(worker_config(profile_interval)):  # read as the nannies start
            cluster = LocalCUDACluster(**kwargs)
    else:
        from distributed import LocalCluster

        with dask.config.set(worker_config(profile_interval)):  # read as the nannies start
            cluster = LocalCluster(
                n_workers=2 if n_workers is None else n_workers,
                threads_per_worker=threads_per_worker,
                memory_limit=memory_limit,
                dashboard_address=dashboard_address,
                host="127.0.0.1",
                security=security,
                **cluster_kwargs,
            )
    client = Client(cluster, security=security)
    logger.info("dashboard: %s", client.dashboard_link)
    return client


def worker_config(profile_interval: str | None) -> dict[str, Any]:
    """The Dask settings :func:`connect` starts its own cluster's workers with: the profiler
    interval when one is given and the configuration in force has Dask's default (a value
    you set in your Dask configuration or environment wins)."""
    if profile_interval is None:
        return {}
    try:  # a clear error for a bad value, before any process starts
        parse_timedelta(profile_interval)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"profile_interval must be a duration such as '100ms', got "
                         f"{profile_interval!r}") from exc
    configured = parse_timedelta(dask.config.get(PROFILE_KEY, "10ms"), default="ms")
    if configured != DASK_PROFILE_INTERVAL:
        return {}
    return {PROFILE_KEY: profile_interval}


def _refuse_import_time_call() -> None:
    """Fail in one line when a spawned child process runs ``connect()`` while importing the
    user's script.

    Worker processes are started with ``spawn``: each child imports the parent's ``__main__``
    file as ``__mp_main__``. A script that calls ``connect()`` at module level, outside
    ``if __name__ == "__main__":``, would start a cluster in every child, which fails as
    ``Nanny failed to start`` after pages of logs.
    """
    # A spawned child imports the main script before its parent link is set up
    # (parent_process() is still None then); the __mp_main__ module name is the sign.
    if "__mp_main__" not in sys.modules:
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            raise RuntimeError(
                f"pipeline.connect() was called while a worker process imported "
                f"{frame.f_code.co_filename}: put the code that calls connect() under "
                f"`if __name__ == \"__main__\":` in that script"
            )
        frame = frame.f_back


def current_client(client: Client | None = None) -> Client:
    """``client`` if given, else the current client; a clear error if there is none."""
    if client is not None:
        return client
    try:
        return get_client()
    except ValueError as exc:
        raise RuntimeError(
            "no Dask client: call pipeline.connect() first or pass client=..."
        ) from exc


def workers_info(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's information on every worker (address -> info), fetched now.

    Not ``client.scheduler_info()["workers"]``: that returns the client's cached identity,
    which the client's own periodic refresh replaces with one that carries no per-worker
    information, so on a busy machine it can read as a cluster without workers (a fit then
    took one replica instead of one per worker, or saw every worker as lost).
    """
    try:
        identity = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # a distributed whose identity() takes no n_workers: all workers
        identity = client.sync(client.scheduler.identity)
    return dict(identity.get("workers") or {})

