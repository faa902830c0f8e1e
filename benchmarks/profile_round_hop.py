"""One pipelined ``sync="gradient"`` round's hop, step by step (where_time_goes.md).

Joins three logs on one clock for one fit on the overhead benchmark's settings: the task stream
(worker compute), the scheduler's transition log (when it knew a task finished, when it sent
the next round's tasks) and every worker's state log (compute-task received, fetch of the other
worker's partials started and done). Prints medians over the fit's task-rounds::

    PYTHONPATH=$PWD python benchmarks/profile_round_hop.py 8 60
    PYTHONPATH=$PWD python benchmarks/profile_round_hop.py 64 20
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

import dask
import numpy as np
from common import HIDDEN, dask_classification, local_cluster

ROWS_PER_BLOCK_STEP = 4
STEP = re.compile(r"step_and_partition_grads-\w+-(\d+)'?, (\d+)")


def _fit(client: Any, K: int, rounds: int) -> float:
    from pipeline.estimators import MLPClassifier

    X, y = dask_classification(K * rounds * ROWS_PER_BLOCK_STEP, K, seed=0)
    clf = MLPClassifier(HIDDEN, batch_size=K * ROWS_PER_BLOCK_STEP, max_iter=1,
                        sync="gradient", random_state=0, tol=0.0, shuffle=False,
                        min_block_rows=None)
    clf.fit(X, y, client=client)
    s = clf.train_summary_
    return 1e3 * s["seconds"] / s["rounds"]


def _clear_log(dask_worker: Any = None) -> None:
    dask_worker.state.log.clear()


def _worker_log(dask_worker: Any = None) -> list[tuple[str, str, str, float]]:
    """(key, from state, to state, time) of every transition the worker logged."""
    return [(str(e[0]), e[1], e[2], e[-1]) for e in dask_worker.state.log
            if len(e) >= 5 and isinstance(e[1], str) and isinstance(e[2], str)]


def hop(client: Any, K: int, rounds: int) -> dict[str, float]:
    from distributed import get_task_stream

    _fit(client, K, rounds)  # warm-up
    scheduler = client.cluster.scheduler
    client.run(_clear_log)
    n0 = len(scheduler.transition_log)
    with get_task_stream(client=client) as ts:
        ms = _fit(client, K, rounds)
    at: dict[str, dict[tuple[str, str], float]] = {}
    for t in list(scheduler.transition_log)[n0:]:
        at.setdefault(str(t.key), {})[(t.start, t.finish)] = t.timestamp
    wlog: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
    for worker, entries in client.run(_worker_log).items():
        for key, a, b, t in entries:
            wlog.setdefault((worker, key), []).append((a, b, t))
    stream = {str(t["key"]): t for t in ts.data}

    def compute(key: str) -> dict[str, float]:
        return next(s for s in stream[key]["startstops"] if s["action"] == "compute")

    by_round: dict[int, dict[int, str]] = {}
    for key in at:
        m = STEP.search(key)
        if m and key in stream:
            by_round.setdefault(int(m.group(1)), {})[int(m.group(2))] = key
    rows = []
    for r in sorted(by_round)[3:-2]:
        prev, cur = by_round.get(r - 1), by_round[r]
        if not prev:
            continue
        prev_stop = max(compute(k)["stop"] for k in prev.values())
        known = max(at[k].get(("processing", "memory"), np.nan) for k in prev.values())
        sent = min(at[k].get(("waiting", "processing"), np.nan) for k in cur.values())
        for key in cur.values():
            worker = stream[key]["worker"]
            received = min([t for _, _, t in wlog.get((worker, key), [])] or [np.nan])
            flights = [(next(t for _, b, t in ev if b == "flight"),
                        next(t for a, b, t in ev if a == "flight" and b == "memory"))
                       for ev in (wlog.get((worker, k), []) for k in prev.values())
                       if any(b == "flight" for _, b, _ in ev)
                       and any(a == "flight" and b == "memory" for a, b, _ in ev)]
            f0, f1 = flights[0] if flights else (received, received)
            c = compute(key)
            rows.append({
                "last task stops -> scheduler has it": known - prev_stop,
                "scheduler: report -> next tasks sent": sent - known,
                "sent -> worker has the compute-task": received - sent,
                "compute-task -> fetch starts": f0 - received,
                "fetch (the other worker's partials)": f1 - f0,
                "fetch done -> task starts": c["start"] - f1,
                "the task": c["stop"] - c["start"],
                "== hop (previous round's last stop -> start)": c["start"] - prev_stop,
            })
    out = {k: 1e3 * float(np.nanmedian([r[k] for r in rows])) for k in rows[0]} if rows else {}
    out["fit ms/round"] = ms
    out["task-rounds"] = float(len(rows))
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    K, rounds = int(sys.argv[1]), int(sys.argv[2])
    dask.config.set({"distributed.admin.low-level-log-length": 500_000})
    with local_cluster(2) as client:
        for name, value in hop(client, K, rounds).items():
            print(f"{name:50s} {value:8.2f}")


if __name__ == "__main__":
    main()
