"""Block stores: memory vs disk vs stream, shuffle quality of the chunked epoch order, and a fit
on data larger than the workers' memory.

1. Throughput, side by side: the same generated data (``common.dask_classification``: float32
   features, a teacher-MLP label, chunks generated on the workers) fitted with
   ``block_store="memory" | "disk" | "stream"`` in alternation (``rounds`` times each);
   samples/s = median of the per-epoch figures after the first epoch. The stream store is set
   against its floor: the time to produce (read + preprocess: here, generate) every partition
   once, divided into the rows. Peak RSS per worker: psutil, sampled every 50 ms.
2. Shuffle quality: every block sorted by label (the worst case for a local shuffle), fitted
   with the chunked epoch order (chunks of 32768 rows) and with a full per-block permutation
   (the workers' ``EPOCH_CHUNK_ROWS`` raised above the block size), accuracy on held-out data
   after N epochs, both sync modes.
3. Larger than memory: 2 workers at 768 MiB, data a multiple of the combined limit, fitted with
   ``block_store="disk"``; spilled bytes, paused workers and restarts (worker pids) are watched
   during the fit and must stay at zero; peak RSS must stay under the limit.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np
from common import (
    N_FEATURES,
    chunk_sizes,
    classification_chunk,
    dask_classification,
    local_cluster,
    log,
    main,
    median,
    section,
    table,
    target,
    worker_pids,
)

MiB = 2**20


class Watch:
    """Samples every worker's RSS (psutil, 50 ms) and, every 0.5 s, its status and spilled
    bytes, on a client-side thread, until stopped."""

    def __init__(self, client: Any):
        import psutil

        self.client = client
        self.procs = {w: psutil.Process(pid) for w, pid in worker_pids(client).items()}
        self.peak = dict.fromkeys(self.procs, 0)
        self.paused = 0
        self.spilled = 0
        self.files = dict.fromkeys(self.procs, 0)  # most disk-block files seen per worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            for w, p in self.procs.items():
                try:
                    self.peak[w] = max(self.peak[w], p.memory_info().rss)
                except Exception:  # a restarted worker: seen by its pid
                    pass
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                try:
                    info = self.client.run(_worker_state)
                    self.paused += sum(s["paused"] for s in info.values())
                    self.spilled = max([self.spilled, *(s["spilled"] for s in info.values())])
                    for w, st in info.items():
                        self.files[w] = max(self.files.get(w, 0), st["files"])
                except Exception:
                    pass
            self._stop.wait(0.05)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mib": [self.peak[w] / MiB for w in sorted(self.peak)],
                "paused_samples": self.paused, "spilled_bytes": self.spilled,
                "block_files": [self.files[w] for w in sorted(self.files)]}


def _worker_state(dask_worker: Any = None) -> dict[str, int]:
    from pathlib import Path

    from pipeline.stores import ROOT

    total = getattr(dask_worker.data, "spilled_total", None)  # cumulative bytes spilled
    spilled = int(getattr(total, "disk", 0) or 0) if total is not None else 0
    files = sum(1 for _ in (Path(dask_worker.local_directory) / ROOT).glob("*/block-*.bin"))
    return {"paused": int(dask_worker.status.name == "paused"), "spilled": spilled,
            "files": files}


def _fit(client: Any, X: Any, y: Any, store: str, **kw: Any) -> Any:
    import pipeline as pl

    params = {"hidden_layer_sizes": (64, 64), "random_state": 0, "max_iter": 3,
              "batch_size": 1024, "sync": "average", "block_store": store,
              "min_block_rows": None, **kw}
    est = pl.MLPClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, client=client)
    return est


def _samples_per_s(est: Any) -> float:
    hist = est.history_
    rates = [h["samples_per_s"] for h in hist[1:]] or [hist[0]["samples_per_s"]]
    return float(median(rates))


def _floor(client: Any, X: Any, y: Any) -> float:
    """Seconds to produce every partition once (the stream store's read + preprocess)."""
    import dask

    from pipeline.blocks import _block_summary, _partitions, _raw_block

    parts = [dask.delayed(_block_summary)(dask.delayed(_raw_block)(a, b, "float32"), True)
             for a, b in zip(_partitions(X), _partitions(y), strict=True)]
    t = time.perf_counter()
    client.gather(client.compute(parts))
    return time.perf_counter() - t


def throughput(quick: bool) -> tuple[list[dict], list[dict], dict]:
    n_rows = 500_000 if quick else 4_000_000
    n_chunks = 8
    rounds = 2 if quick else 3
    rates: dict[str, list[float]] = {"memory": [], "disk": [], "stream": []}
    rss: dict[str, list[float]] = {}
    with local_cluster(2) as client:
        X, y = dask_classification(n_rows, n_chunks)
        floor = median([_floor(client, X, y) for _ in range(2)])
        _fit(client, X, y, "memory", max_iter=1)  # warm-up: imports, workspaces
        for r in range(rounds):
            for store in rates:
                watch = Watch(client)
                est = _fit(client, X, y, store)
                seen = watch.stop()
                rates[store].append(_samples_per_s(est))
                rss[store] = [max(a, b) for a, b in zip(rss.get(store, [0, 0]),
                                                       seen["peak_rss_mib"], strict=True)]
                log(f"round {r} {store}: {rates[store][-1]:,.0f} samples/s")
    med = {s: median(v) for s, v in rates.items()}
    floor_rate = n_rows / floor
    rows = [[s, med[s], " / ".join(f"{v:,.0f}" for v in rates[s]), med[s] / med["memory"],
             f"{rss[s][0]:.0f} / {rss[s][1]:.0f}"] for s in rates]
    tab = table(["store", "samples/s (median)", "runs", "vs memory", "peak RSS per worker MiB"],
                rows, f"{n_rows:,} rows x {N_FEATURES} float32 features, {n_chunks} blocks, "
                      f"2 workers, MLP (64, 64), sync='average', batch 1024, 3 epochs; "
                      f"read+preprocess floor (every partition produced once, 2 workers): "
                      f"{floor:.2f} s = {floor_rate:,.0f} rows/s")
    targets = [
        target("disk throughput >= 0.9x memory", f"{med['disk'] / med['memory']:.2f}x",
               med["disk"] >= 0.9 * med["memory"]),
        target("stream throughput stated against the read+preprocess floor",
               f"stream {med['stream']:,.0f} samples/s; floor {floor_rate:,.0f} rows/s "
               f"(stream = {med['stream'] / med['memory']:.2f}x memory)", None),
    ]
    return [tab], targets, {"rates": rates, "floor_seconds": floor, "rss": rss}


def _sorted_chunk(index: int, n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = classification_chunk(index, n_rows, seed)
    order = np.argsort(y, kind="stable")
    return X[order], y[order]


def shuffle_quality(quick: bool) -> tuple[list[dict], dict]:
    import dask
    import dask.array as da

    n_rows, n_chunks = (200_000, 2) if quick else (1_600_000, 4)
    epochs = 3 if quick else 5
    sizes = chunk_sizes(n_rows, n_chunks)
    pieces = [dask.delayed(_sorted_chunk, pure=True)(i, s, 0) for i, s in enumerate(sizes)]
    X = da.concatenate([da.from_delayed(p[0], (s, N_FEATURES), dtype=np.float32)
                        for p, s in zip(pieces, sizes, strict=True)])
    y = da.concatenate([da.from_delayed(p[1], (s,), dtype=np.int64)
                        for p, s in zip(pieces, sizes, strict=True)])
    Xt, yt = classification_chunk(10_000, 50_000, 1)
    rows = []
    raw = {}
    with local_cluster(2) as client:
        for sync in ("average", "gradient"):
            for label, chunk in (("chunked (32768-row chunks)", None), ("full per-block", 10**12)):
                if chunk is not None:
                    client.run(_set_chunk_rows, chunk)
                try:
                    kw = {"sync": sync, "max_iter": epochs, "hidden_layer_sizes": (32,),
                          "learning_rate_init": 1e-3}
                    if sync == "gradient":
                        kw["batch_size"] = 4096
                    est = _fit(client, X, y, "memory", **kw)
                finally:
                    client.run(_set_chunk_rows, None)
                pred = est.predict(Xt)
                pred = pred.compute() if hasattr(pred, "compute") else pred
                acc = float(np.mean(np.asarray(pred) == yt))
                raw[f"{sync}/{label}"] = acc
                rows.append([sync, label, epochs, acc])
                log(f"shuffle {sync} {label}: accuracy {acc:.4f}")
    tab = table(["sync", "epoch order", "epochs", "held-out accuracy"], rows,
                f"{n_rows:,} rows in {n_chunks} blocks, each block sorted by label; MLP (32,), "
                "adam 1e-3; held-out: 50,000 unsorted rows of the same teacher "
                f"(Bayes accuracy about 0.9)")
    return [tab], raw


def _set_chunk_rows(rows: int | None) -> None:
    from pipeline.train import order

    if not hasattr(order, "_BENCH_DEFAULT_CHUNK"):
        order._BENCH_DEFAULT_CHUNK = order.EPOCH_CHUNK_ROWS
    order.EPOCH_CHUNK_ROWS = order._BENCH_DEFAULT_CHUNK if rows is None else rows
    order._ORDERS.clear()


def larger_than_memory(quick: bool, ratio: float | None = None) -> tuple[list[dict], list[dict],
                                                                     dict]:
    """Section 3 at ``ratio`` x the combined limit (default: 1x quick, 4x full).

    The partitions stay small (at most ~500,000 rows, ~40 MB: what a worker holds while it
    generates one); they are coalesced (``min_block_rows``) into as many blocks as the
    workers keep the chunk buffers of (``pipeline.stores.blocks_per_worker``, the readers'
    own formula), so local SGD's epoch reads each chunk once instead of thrashing. A disk
    block's file is written a partition at a time, so its size is not bounded by memory."""
    from pipeline.stores import blocks_per_worker

    limit, n_workers = 768 * MiB, 2
    ratio = ratio or (1.0 if quick else 4.0)
    row_bytes = (N_FEATURES + 1) * 4
    n_rows = int(ratio * n_workers * limit / row_bytes)
    per_worker = blocks_per_worker(limit, N_FEATURES, 1, "float32")  # binary: 1 output
    n_blocks = n_workers * per_worker
    parts_per_block = max(1, -(-n_rows // (n_blocks * 500_000)))
    n_chunks = n_blocks * parts_per_block
    n_rows -= n_rows % n_chunks  # equal partitions: coalescing makes exactly n_blocks blocks
    with local_cluster(n_workers, memory_limit=limit) as client:
        pids = worker_pids(client)
        X, y = dask_classification(n_rows, n_chunks)
        watch = Watch(client)
        t = time.perf_counter()
        est = _fit(client, X, y, "disk", max_iter=1, hidden_layer_sizes=(16,),
                   batch_size=8192, min_block_rows=n_rows // n_blocks)
        seconds = time.perf_counter() - t
        seen = watch.stop()
        restarted = worker_pids(client) != pids
    data_gib = n_rows * row_bytes / 2**30
    rows = [[f"{data_gib:.2f}", f"{n_workers * limit / 2**30:.2f}", f"{ratio:.1f}x",
             n_chunks, n_blocks, " / ".join(str(v) for v in seen["block_files"]),
             f"{seconds:.0f}", _samples_per_s(est),
             " / ".join(f"{v:.0f}" for v in seen["peak_rss_mib"]), seen["spilled_bytes"],
             seen["paused_samples"], restarted]]
    tab = table(["data GiB (float32 X+Y)", "combined limit GiB", "ratio", "partitions",
                 "blocks", "block files per worker (most seen)", "fit s (build + 1 epoch)",
                 "samples/s", "peak RSS per worker MiB", "spilled bytes", "paused samples",
                 "worker restarted"], rows,
                f"{n_workers} workers at 768 MiB, block_store='disk', MLP (16,), "
                f"sync='average', batch 8192; {per_worker} blocks per worker "
                "(blocks_per_worker(768 MiB, 20, 1, float32))")
    ok = (max(seen["peak_rss_mib"]) < limit / MiB and seen["spilled_bytes"] == 0
          and seen["paused_samples"] == 0 and not restarted)
    targets = [target(f"data {ratio:.1f}x the combined limit with no spill/pause/restart, RSS "
                      "under the limit" + (" (quick: 1.0x, not the 4x target)" if quick else ""),
                      f"peak RSS {max(seen['peak_rss_mib']):.0f} MiB, spilled "
                      f"{seen['spilled_bytes']}, paused {seen['paused_samples']}, restarted "
                      f"{restarted}", ok)]
    if quick:
        targets.append(target("4x the combined limit (CI size, about 6 GB)",
                              "not run in --quick mode", None))
    return [tab], targets, {"seconds": seconds, **seen, "ratio": ratio, "partitions": n_chunks,
                            "blocks": n_blocks, "blocks_per_worker": per_worker}


def run(quick: bool) -> dict[str, Any]:
    tables, targets, raw = [], [], {}
    t1, g1, raw["throughput"] = throughput(quick)
    tables += t1
    targets += g1
    t2, raw["shuffle"] = shuffle_quality(quick)
    tables += t2
    t3, g3, raw["larger_than_memory"] = larger_than_memory(quick)
    tables += t3
    targets += g3
    return section("Block stores: memory, disk, stream", "python benchmarks/bench_stores.py"
                   + (" --quick" if quick else ""), tables=tables, targets=targets, raw=raw,
                   notes=["peak RSS includes what a worker holds with its imports (the README's "
                          "larger-than-memory section measures it, step by step)"])


if __name__ == "__main__":
    main(run)
