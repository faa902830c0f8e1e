"""Peak worker memory against the size of the training blocks.

``MLPClassifier(sync="average").fit`` on a fresh 2-worker LocalCluster, the source rows (a dask
DataFrame of float64 features and an int64 label, what ``Preprocessor.transform_xy`` hands to
training) persisted on the workers first. Two measurements, in separate runs:

* RSS: a thread in this process samples both worker processes' RSS (psutil, every 20 ms). The
  baseline is each worker's RSS just before the fit, after a warm-up fit (imports paid) and
  ``malloc_trim(0)`` (so freed heap from generating the source is not reused unseen).
* tracemalloc (exact live bytes, NumPy's buffers included): started on the workers just before
  the fit; the peak is read and reset when training starts (``pipeline.mlp_base.train`` is
  wrapped), so building the blocks and training get separate peaks.

The training ``start`` event splits the RSS samples into building the blocks and training.
Block bytes per worker = rows × (features + outputs) × 4 (float32 X and Y).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import numpy as np
from common import (
    HIDDEN,
    N_FEATURES,
    dask_classification,
    dask_classification_frame,
    fmt,
    local_cluster,
    log,
    main,
    median,
    section,
    table,
    target,
    train_events,
    worker_pids,
)

COMMAND = "python benchmarks/run_all.py --only memory"


class RSSSampler:
    def __init__(self, pids: dict[str, int], interval: float = 0.02):
        import psutil

        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            row = {}
            for addr, p in self.procs.items():
                try:
                    row[addr] = p.memory_info().rss
                except Exception:  # worker gone
                    row[addr] = 0
            self.samples.append((time.time(), row))
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, addr: str, t0: float = -np.inf, t1: float = np.inf) -> int:
        vals = [row[addr] for t, row in self.samples if t0 <= t <= t1]
        return max(vals) if vals else 0

    def at(self, addr: str, t: float) -> int:
        best = min(self.samples, key=lambda s: abs(s[0] - t))
        return best[1][addr]


def _malloc_trim() -> int:
    import ctypes

    gc.collect()
    try:
        return int(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except OSError:  # not glibc
        return 0


def _tm_start() -> int:
    import tracemalloc

    tracemalloc.start()
    tracemalloc.reset_peak()
    return tracemalloc.get_traced_memory()[0]


def _tm_mark() -> tuple[int, int]:
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    return current, peak


def _tm_stop() -> tuple[int, int]:
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current, peak


def _traced(rows_per_worker: int, epochs: int, batch: int) -> dict[str, Any]:
    """Exact live-bytes peaks (tracemalloc) on each worker, blocks phase and training phase."""
    from distributed import wait

    import pipeline.mlp_base as est
    from pipeline.estimators import MLPClassifier

    with local_cluster(2) as client:
        Xw, yw = dask_classification(20_000, 2, seed=9)
        MLPClassifier(HIDDEN, batch_size=256, max_iter=1, sync="average",
                      random_state=0).fit(Xw, yw)  # warm-up
        X, y = client.persist(list(dask_classification_frame(2 * rows_per_worker, 2, seed=0)))
        wait([X, y])
        marks: dict[str, Any] = {}
        real_train = est.train

        def train(client_: Any, blocks: Any, **kw: Any) -> Any:
            marks["blocks"] = client_.run(_tm_mark)
            counts: dict[str, int] = {}
            for holders in client_.who_has(blocks.futures).values():
                for w in holders[:1]:
                    counts[w] = counts.get(w, 0) + 1
            marks["block_workers"] = counts
            return real_train(client_, blocks, **kw)

        start = client.run(_tm_start)
        est.train = train
        try:
            clf = MLPClassifier(HIDDEN, batch_size=batch, max_iter=epochs, sync="average",
                                random_state=0, tol=0.0, n_iter_no_change=epochs + 1).fit(X, y)
        finally:
            est.train = real_train
        del clf  # the blocks' futures go with the fit; give the release a moment
        gc.collect()
        time.sleep(0.5)
        client.run(gc.collect)
        end = client.run(_tm_stop)
        out = []
        for addr in start:
            n_blocks = marks["block_workers"].get(addr, 0)
            out.append({"worker": addr,
                        "block_bytes": n_blocks * rows_per_worker * (N_FEATURES + 1) * 4,
                        "peak_build": marks["blocks"][addr][1] - start[addr],
                        "held_after_build": marks["blocks"][addr][0] - start[addr],
                        "peak_train": end[addr][1] - start[addr],
                        "held_after_fit": end[addr][0] - start[addr]})
        return {"workers": out}


def _one(rows_per_worker: int, epochs: int, batch: int, persisted: bool) -> dict[str, Any]:
    from distributed import wait

    from pipeline.estimators import MLPClassifier

    with local_cluster(2) as client:
        Xw, yw = dask_classification(20_000, 2, seed=9)
        MLPClassifier(HIDDEN, batch_size=256, max_iter=1, sync="average",
                      random_state=0).fit(Xw, yw)  # warm-up
        del Xw, yw
        client.run(gc.collect)
        time.sleep(0.5)
        pids = worker_pids(client)
        X, y = dask_classification_frame(2 * rows_per_worker, 2, seed=0)
        if persisted:
            # The source frames sit in worker memory before the fit, inside the baseline.
            X, y = client.persist([X, y])
            wait([X, y])
        client.run(_malloc_trim)
        time.sleep(0.3)
        with RSSSampler(pids) as sampler:
            time.sleep(0.2)
            t_before = time.time()
            clf = MLPClassifier(HIDDEN, batch_size=batch, max_iter=epochs, sync="average",
                                random_state=0, tol=0.0, n_iter_no_change=epochs + 1)
            clf.fit(X, y)
            t_after = time.time()
            time.sleep(0.3)
            run = clf.train_summary_["run_id"]
            del clf
            gc.collect()  # futures in reference cycles on the client side
            client.run(_malloc_trim)
            time.sleep(0.5)
            t_released = time.time()
        events = [e for e in train_events(client) if e.get("run") == run]
        t_start = next(e["time"] for e in events if e["event"] == "start")
        epoch_t = [e["time"] for e in events if e["event"] == "epoch"]
        last_round = [e for e in events if e["event"] == "round"][-1]
        per_worker_rows: dict[str, int] = {}
        # every block holds rows_per_worker rows (one block per partition, 2 partitions)
        for w in last_round["partition_workers"]:
            per_worker_rows[w] = per_worker_rows.get(w, 0) + rows_per_worker
        out = []
        for addr in pids:
            base = median([row[addr] for t, row in sampler.samples if t < t_before])
            block_bytes = per_worker_rows.get(addr, 0) * (N_FEATURES + 1) * 4
            out.append({
                "worker": addr, "baseline": base, "block_bytes": block_bytes,
                "peak_build": sampler.peak(addr, t_before, t_start) - base,
                "peak_train": sampler.peak(addr, t_start, t_after) - base,
                "after_epoch1": sampler.at(addr, epoch_t[0]) - base,
                "after_last_epoch": sampler.at(addr, epoch_t[-1]) - base,
                "after_release": sampler.at(addr, t_released) - base,
            })
        return {"workers": out, "epochs": len(epoch_t)}


def run(quick: bool) -> dict[str, Any]:
    rows_per_worker = 250_000 if quick else 1_000_000
    epochs = 10 if quick else 18
    batch = 4096
    reps = 3
    mib = 2**20
    runs = []
    for r in range(reps):
        res = _one(rows_per_worker, epochs, batch, persisted=True)
        runs.append(res)
        log(f"memory (RSS) run {r}: " + "; ".join(
            f"{w['worker'][-5:]}: blocks {w['block_bytes'] / mib:.0f} MiB, peak build "
            f"{w['peak_build'] / mib:.0f}, train {w['peak_train'] / mib:.0f} MiB"
            for w in res["workers"]))
    traced = []
    traced_epochs = 3  # tracemalloc slows the Python-level loop; the RSS runs cover the epochs
    for r in range(reps):
        res = _traced(rows_per_worker, traced_epochs, batch)
        traced.append(res)
        log(f"memory (tracemalloc) run {r}: " + "; ".join(
            f"{w['worker'][-5:]}: peak build {w['peak_build'] / mib:.0f}, train "
            f"{w['peak_train'] / mib:.0f}, held {w['held_after_fit'] / mib:.0f} MiB"
            for w in res["workers"]))
    per_worker = [w for res in runs for w in res["workers"] if w["block_bytes"]]
    rss = {k: median([w[k] for w in per_worker]) / mib
           for k in ("block_bytes", "baseline", "peak_build", "peak_train", "after_epoch1",
                     "after_last_epoch", "after_release")}
    tw = [w for res in traced for w in res["workers"] if w["block_bytes"]]
    unbalanced = sum(1 for res in runs + traced
                     if any(not w["block_bytes"] for w in res["workers"]))
    tm = {k: median([w[k] for w in tw]) / mib
          for k in ("block_bytes", "peak_build", "held_after_build", "peak_train",
                    "held_after_fit")}
    block = rss["block_bytes"]
    rows = [
        ["training blocks (X + Y, float32)", block, 1.0, tm["block_bytes"], 1.0],
        ["RSS baseline before fit (absolute, source rows included)", rss["baseline"], "-",
         "-", "-"],
        ["peak while building the blocks", rss["peak_build"], rss["peak_build"] / block,
         tm["peak_build"], tm["peak_build"] / block],
        ["held when training starts", "-", "-", tm["held_after_build"],
         tm["held_after_build"] / block],
        ["peak while training", rss["peak_train"], rss["peak_train"] / block,
         tm["peak_train"], tm["peak_train"] / block],
        ["after epoch 1", rss["after_epoch1"], rss["after_epoch1"] / block, "-", "-"],
        [f"after epoch {epochs}", rss["after_last_epoch"], rss["after_last_epoch"] / block,
         "-", "-"],
        ["after the fit (estimator deleted, gc + malloc_trim for RSS)", rss["after_release"],
         rss["after_release"] / block, tm["held_after_fit"], tm["held_after_fit"] / block],
    ]
    t = table(["per worker, over the baseline (median over workers and runs)", "RSS MiB",
               "× blocks", "tracemalloc MiB", "× blocks"], rows,
              f"2 workers × 1 thread, {rows_per_worker:,} rows per worker (one block each) from "
              f"a persisted dask DataFrame of {N_FEATURES} float64 features + int64 label, "
              f"sync=\"average\", batch {batch}; {reps} RSS runs ({epochs} epochs) and {reps} "
              f"tracemalloc runs ({traced_epochs} epochs), each on a fresh cluster. Workers "
              "holding no block are left out of the medians.")
    peak = max(rss["peak_build"], rss["peak_train"])
    tpeak = max(tm["peak_build"], tm["peak_train"])
    targets = [target("peak worker memory ≤ 2× its training blocks",
                      f"RSS {peak / block:.2f}× ({fmt(peak)} MiB over baseline for "
                      f"{fmt(block)} MiB of blocks); live bytes (tracemalloc) "
                      f"{tpeak / block:.2f}×", peak / block <= 2.0)]
    growth = (rss["after_last_epoch"] - rss["after_epoch1"]) / max(epochs - 1, 1)
    notes = [f"RSS grows by {fmt(growth)} MiB per epoch after the first "
             f"({fmt(growth * mib / rows_per_worker)} bytes per row per epoch).",
             f"In {unbalanced} of {2 * reps} runs both blocks were built on the same worker "
             "(the other held none and trained nothing)."]
    return section("Peak worker memory", COMMAND + (" --quick" if quick else ""), tables=[t],
                   targets=targets, notes=notes, raw={"rss": runs, "tracemalloc": traced})


if __name__ == "__main__":
    main(run)
