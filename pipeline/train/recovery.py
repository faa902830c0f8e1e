"""Surviving faults: waiting for a round without hanging, retrying it, noticing lost workers.

A round is a Dask graph, not a long-lived collective: when a worker dies, Dask rebuilds its
blocks from lineage on the survivors and the round completes. A round whose futures fail because
workers died (``KilledWorker``, cancelled futures, closed comms) is resubmitted under fresh keys
up to ``pipeline.train.retries`` times; with no worker left for
``pipeline.train.no-workers-timeout`` it fails with a RuntimeError instead of waiting forever.
An unexpected error of the *waiting machinery* itself (not of a task) is a disruption too, never
the end of a fit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed import KilledWorker
from distributed.comm import CommClosedError

from ..cluster import workers_info

__all__ = ["DISRUPTIONS", "RoundDisrupted", "Watchdog", "renamed"]


class RoundDisrupted(RuntimeError):
    """Waiting for a round failed for a reason other than a task's own error: retry it."""


# What a round's futures raise when workers die under them (rather than a bug in a task).
# (distributed's FutureCancelledError and FuturesCancelledError are CancelledErrors.)
DISRUPTIONS = (KilledWorker, concurrent.futures.CancelledError, CommClosedError, RoundDisrupted)


def renamed(dsk: dict, keys: list, suffix: str) -> tuple[dict, list]:
    """The same graph under fresh keys (``key-suffix``), so a retry never meets the failed
    round's task states on the client or the scheduler. Block futures keep their keys."""
    names: dict[Any, Any] = {
        k: f"{k}-{suffix}" if isinstance(k, str) else (f"{k[0]}-{suffix}", *k[1:]) for k in dsk
    }

    def sub(x: Any) -> Any:
        if type(x) is str:
            return names.get(x, x)
        if type(x) is tuple:
            try:
                if x in names:
                    return names[x]
            except TypeError:  # holds an unhashable constant: cannot be a key
                pass
            return tuple(sub(v) for v in x)
        if type(x) is list:
            return [sub(v) for v in x]
        return x

    return {names[k]: sub(v) for k, v in dsk.items()}, [names[k] for k in keys]


class Watchdog:
    """Waits for futures; every ``pipeline.train.watchdog-interval`` of waiting it checks that
    the cluster still has workers, and gives up after ``no-workers-timeout`` without any."""

    def __init__(self, client: Any):
        self.client = client
        self.max_retries = int(dask.config.get("pipeline.train.retries", 3))
        self.no_workers_timeout = parse_timedelta(
            dask.config.get("pipeline.train.no-workers-timeout", "30s"))
        self.interval = parse_timedelta(
            dask.config.get("pipeline.train.watchdog-interval", "1s"))

    def _wait(self, futures: list[Any], first_error: bool = False) -> bool:
        """True when every future is finished (``first_error``: or one failed).
        ``distributed.wait`` then a separate fetch:
        polling ``Future.result(timeout=)`` races with multi-MB results arriving near the
        timeout (``UnboundLocalError`` inside distributed's ``sync``)."""
        from distributed import wait

        try:
            if not first_error:
                wait(futures, timeout=self.interval)
                return True
            pending = [f for f in futures if f.status == "pending"]
            while pending and not any(f.status == "error" for f in futures):
                wait(pending, timeout=self.interval, return_when="FIRST_COMPLETED")
                pending = [f for f in pending if f.status == "pending"]
            return True
        except (TimeoutError, asyncio.TimeoutError):
            return False
        except DISRUPTIONS:
            raise
        except Exception as exc:  # the waiting machinery, not a task: retry the round
            raise RoundDisrupted(f"waiting for the round failed: {exc!r}") from exc

    def gather(self, futures: list[Any], what: str, needs: Any = ()) -> list[Any]:
        """The values of ``futures``. A task's own error is raised as is; a failure of the
        transfer is a :class:`RoundDisrupted` (see :meth:`wait` for ``needs``)."""
        if any(f.status != "finished" for f in futures):  # (the caller may have waited)
            self.wait(futures, what, needs=needs)
        try:
            return self.client.gather(futures)
        except DISRUPTIONS:
            raise
        except Exception as exc:
            if any(f.status == "error" for f in futures):
                raise
            raise RoundDisrupted(f"fetching the round's result failed: {exc!r}") from exc

    def wait(self, futures: list[Any], what: str, first_error: bool = False,
             needs: Any = ()) -> None:
        """Return when every future of ``futures`` is finished, without fetching anything;
        raise a task's own error as is (``first_error``: as soon as one task fails, when the
        others may be waiting for it, as the ranks of a mesh do). ``needs``: workers the
        futures are pinned to; one of them gone is a :class:`RoundDisrupted` (their tasks
        would wait for it forever)."""
        alone_since = None
        while not self._wait(futures, first_error):
            # Slow path only: one scheduler round trip per interval of waiting.
            workers = workers_info(self.client)
            gone = sorted(set(needs) - set(workers))
            if gone:
                raise RoundDisrupted(f"{what}: worker(s) {', '.join(gone)} left")
            if workers:
                alone_since = None
                continue
            now = time.monotonic()
            alone_since = now if alone_since is None else alone_since
            if now - alone_since >= self.no_workers_timeout:
                self.client.cancel(futures)
                raise RuntimeError(
                    f"no workers left: {what} cannot finish; waited "
                    f"{now - alone_since:.0f} s for a worker to join "
                    "(dask config pipeline.train.no-workers-timeout). Restart workers and resume "
                    "from the last checkpoint."
                )
        errored = [f for f in futures if f.status == "error"]
        if errored:
            errored[0].result()  # raises the task's exception (or a disruption)
