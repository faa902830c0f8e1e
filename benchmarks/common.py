"""Shared helpers of the benchmark suite: machine facts, timing, data, clusters, results.

Every benchmark module exposes ``run(quick: bool) -> dict`` (a *section*: title, command,
tables, targets, notes) and can be run on its own (``python benchmarks/bench_x.py [--quick]``,
which prints the section as Markdown). ``run_all.py`` runs each module in a fresh process and
assembles ``RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Workers and the in-process kernels use one BLAS thread (TECH_NOTES: 2-thread OpenBLAS on
# 64-wide layers collapses when another process is busy). Set before numpy is imported;
# LocalCluster workers inherit the environment.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.environ.get("BENCH_DATA", "/tmp/bench-data")
N_FEATURES = 20
HIDDEN = (64, 64)


# ------------------------------------------------------------------------------ machine -----


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "pandas", "pyarrow", "dask", "distributed", "sklearn", "torch",
                "dask_ml", "scipy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # optional dependency absent or broken
            versions[mod] = "not installed"
    blas = []
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        blas = sorted(" ".join(str(x) for x in (i["internal_api"], i.get("version"),
                                                i.get("architecture")) if x)
                      + f" [{os.path.basename(i['filepath'])}]" for i in threadpool_info())
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                      "OMP_NUM_THREADS") if k in os.environ}
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "versions": versions,
        "blas": blas,
        "env": env,
    }


class OtherLoad:
    """Samples, in a thread, the CPU used by processes outside this benchmark's process tree
    (in cores): on a shared 2-core machine a busy neighbour changes every number here."""

    def __init__(self, interval: float = 1.0):
        import threading

        import psutil

        self._psutil = psutil
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._root = int(os.environ.get("BENCH_ROOT_PID", os.getpid()))

    def _ours(self) -> set[int]:
        try:
            root = self._psutil.Process(self._root)
            return {root.pid, *(c.pid for c in root.children(recursive=True))}
        except self._psutil.Error:
            return {os.getpid()}

    def _loop(self) -> None:
        procs: dict[int, Any] = {}
        while not self._stop.wait(self.interval):
            ours = self._ours()
            total = 0.0
            for p in self._psutil.process_iter():
                if p.pid in ours:
                    continue
                try:
                    if p.pid not in procs:
                        procs[p.pid] = p
                        p.cpu_percent(None)  # first call primes the counter
                        continue
                    total += procs[p.pid].cpu_percent(None)
                except self._psutil.Error:
                    procs.pop(p.pid, None)
            self.samples.append(total / 100.0)

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [float("nan")]
        return {"median": float(np.median(s)), "p90": float(np.percentile(s, 90)),
                "max": float(np.max(s)), "n": len(self.samples)}


def other_cpu_now(seconds: float = 2.0) -> float:
    """Cores used by processes outside this benchmark over the next ``seconds``."""
    with OtherLoad(interval=seconds / 2) as mon:
        time.sleep(seconds + 0.1)
    return float(np.median(mon.samples)) if mon.samples else 0.0


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores."""
    deadline = time.monotonic() + max_wait
    busy = other_cpu_now()
    while busy >= threshold and time.monotonic() < deadline:
        log(f"waiting for a quieter machine: other processes use {busy:.2f} cores")
        time.sleep(10)
        busy = other_cpu_now()
    return busy


# ------------------------------------------------------------------------------ timing ------


def repeat(fn: Callable[[], Any], n: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``n`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def best_microseconds(fn: Callable[[], Any], n: int = 2000, repeat: int = 5) -> float:
    """The best of ``repeat`` runs of ``n`` calls of ``fn`` (after one call), in microseconds a
    call: for in-process micro-timings of a kernel or a layer."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    """``min–max`` of the runs, for the tables."""
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return "-"
    return f"{fmt(min(xs))}–{fmt(max(xs))}"


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for humans: 3 significant digits, thousands separators for large ones."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if not np.isfinite(x):
        return "n/a"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


# ------------------------------------------------------------------------------ data --------

_TEACHER_SEED = 1234


def _teacher(n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_TEACHER_SEED)
    W1 = rng.standard_normal((n_features, 32)) / np.sqrt(n_features)
    w2 = rng.standard_normal(32) * 8.0 / np.sqrt(32)
    w_lin = rng.standard_normal(n_features) * 1.5 / np.sqrt(n_features)
    return W1, w2, w_lin


def classification_chunk(index: int, n_rows: int, seed: int = 0,
                         n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``index`` of a learnable binary problem: ``X`` float32 ``(n, d)`` standard normal,
    ``y`` int64 0/1 drawn from a fixed random teacher MLP (Bayes accuracy about 0.9).

    The same ``(seed, index)`` gives the same rows in any process.
    """
    rng = np.random.default_rng([seed, index])
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    W1, w2, w_lin = _teacher(n_features)
    W1 = W1.astype(np.float32)
    logit = np.empty(n_rows)
    step = 65_536  # in slices: the teacher's temporaries stay small (memory benchmark)
    for lo in range(0, n_rows, step):
        xs = X[lo:lo + step]
        logit[lo:lo + step] = np.tanh(xs @ W1) @ w2 + xs @ w_lin
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def classification_frame(index: int, n_rows: int, seed: int = 0,
                         n_features: int = N_FEATURES) -> Any:
    """:func:`classification_chunk` as a pandas DataFrame of float64 features ``f00``.. and
    the label ``y`` (what ``Preprocessor.transform_xy`` hands to training)."""
    import pandas as pd

    X, y = classification_chunk(index, n_rows, seed, n_features)
    df = pd.DataFrame(X.astype(np.float64), columns=[f"f{j:02d}" for j in range(n_features)])
    df["y"] = y
    return df


def dask_classification_frame(n_rows: int, n_chunks: int, seed: int = 0,
                              n_features: int = N_FEATURES) -> tuple[Any, Any]:
    """``(X, y)``: a dask DataFrame of float64 features and the label Series, one partition
    per chunk, generated on the workers."""
    import dask
    import dask.dataframe as dd

    sizes = chunk_sizes(n_rows, n_chunks)
    parts = [dask.delayed(classification_frame, pure=True)(i, s, seed, n_features)
             for i, s in enumerate(sizes)]
    df = dd.from_delayed(parts, meta=classification_frame(0, 0, seed, n_features))
    return df.drop(columns="y"), df["y"]


def classification_data(n_rows: int, seed: int = 0, n_chunks: int = 1,
                        n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """The whole problem in memory (the concatenation of :func:`dask_classification` chunks)."""
    sizes = chunk_sizes(n_rows, n_chunks)
    parts = [classification_chunk(i, s, seed, n_features) for i, s in enumerate(sizes)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def chunk_sizes(n_rows: int, n_chunks: int) -> list[int]:
    base, extra = divmod(n_rows, n_chunks)
    return [base + (i < extra) for i in range(n_chunks)]


def dask_classification(n_rows: int, n_chunks: int, seed: int = 0,
                        n_features: int = N_FEATURES) -> tuple[Any, Any]:
    """The same problem as dask arrays whose chunks are generated on the workers."""
    import dask
    import dask.array as da

    sizes = chunk_sizes(n_rows, n_chunks)
    pieces = [dask.delayed(classification_chunk, pure=True)(i, s, seed, n_features)
              for i, s in enumerate(sizes)]
    X = da.concatenate([da.from_delayed(p[0], (s, n_features), dtype=np.float32)
                        for p, s in zip(pieces, sizes, strict=True)])
    y = da.concatenate([da.from_delayed(p[1], (s,), dtype=np.int64)
                        for p, s in zip(pieces, sizes, strict=True)])
    return X, y


# ------------------------------------------------------------------------------ clusters ----


@contextlib.contextmanager
def local_cluster(n_workers: int, **kwargs: Any) -> Iterator[Any]:
    """``pipeline.connect`` (what a user gets) with one thread per worker, quiet logs."""
    from pipeline.cluster import connect

    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    client = connect(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0",
                     **kwargs)
    try:
        client.wait_for_workers(n_workers)
        yield client
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()


def worker_pids(client: Any) -> dict[str, int]:
    return client.run(os.getpid)


def train_events(client: Any) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events("pipeline.train")]


def block_placement(client: Any, run: str | None = None) -> dict[str, int]:
    """Blocks per worker in the last ``round`` event (of run ``run`` if given)."""
    rounds = [e for e in train_events(client)
              if e.get("event") == "round" and (run is None or e.get("run") == run)]
    if not rounds:
        return {}
    counts: dict[str, int] = {}
    for w in rounds[-1]["partition_workers"]:
        counts[w] = counts.get(w, 0) + 1
    return counts


# ------------------------------------------------------------------------------ sections ----


def section(title: str, command: str, *, tables: list[dict] | None = None,
            targets: list[dict] | None = None, notes: list[str] | None = None,
            raw: dict | None = None) -> dict[str, Any]:
    return {"title": title, "command": command, "tables": tables or [],
            "targets": targets or [], "notes": notes or [], "raw": raw or {}}


def table(columns: list[str], rows: list[list[Any]], caption: str = "") -> dict[str, Any]:
    return {"caption": caption, "columns": columns,
            "rows": [[fmt(v) for v in row] for row in rows]}


def target(name: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "measured": measured,
            "met": "n/a" if met is None else ("met" if met else "NOT met")}


def render_section(sec: dict[str, Any], level: int = 2) -> str:
    h = "#" * level
    out = [f"{h} {sec['title']}", "", f"Command: `{sec['command']}`", ""]
    for t in sec["tables"]:
        if t.get("caption"):
            out += [t["caption"], ""]
        out.append("| " + " | ".join(t["columns"]) + " |")
        out.append("|" + "|".join("---" for _ in t["columns"]) + "|")
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
        out.append("")
    if sec["targets"]:
        out += ["| target | measured | |", "|---|---|---|"]
        out += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in sec["targets"]]
        out.append("")
    for n in sec["notes"]:
        out.append(f"- {n}")
    if sec["notes"]:
        out.append("")
    return "\n".join(out)


def main(run: Callable[..., dict[str, Any]],
         add_arguments: Callable[[Any], None] | None = None) -> None:
    """Entry point of one benchmark module: ``[--quick] [--json PATH]``, plus the module's own
    options when it passes ``add_arguments(parser)`` (then ``run(quick, args)`` is called)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", help="also write the section as JSON here")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    sec = run(args.quick, args) if add_arguments is not None else run(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(sec, f, indent=1, default=str)
    print(render_section(sec))
    sys.stdout.flush()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
