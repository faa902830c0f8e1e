"""Where a nanny-started worker's CPU goes during a default fit, beyond the training kernel
(issue 10): per-step CPU of the same local-SGD round in a plain process and in a worker, and
the worker's CPU with each of distributed's periodic activities switched off.

Three measurements, alternated run by run (the variants' order turns every repeat: A B C,
B C A, ...) so they see the same machine; ratios are medians of per-repeat pairs:

1. **kernel**: one replica's local-SGD round (``replica_local_steps``, 2 blocks of ``rows/4``
   x 28 float32 rows, the default network 28 -> 100 relu -> 1, Adam, 200-row steps, 328 steps a
   round: what each of 2 workers runs per round in a default fit) as one task, timed inside the
   task: the task thread's CPU (``time.thread_time``), the whole process's CPU
   (``time.process_time``: every thread) and wall, per step. Where: a plain process
   (``concurrent.futures.ProcessPoolExecutor``, spawn, no ``MALLOC_TRIM_THRESHOLD_``), and
   the workers of a 2-worker ``pipeline.connect()`` cluster (nanny-started, one thread each) in
   the variants below.
2. **fit**: a default ``MLPClassifier(max_iter=EPOCHS)`` fit on ``rows`` synthetic rows (28
   features, 4 persisted partitions) on the same cluster, the cluster's first ("cold") and
   later ones; each worker process's CPU per local step (one 200-row mini-batch of one of the
   2 replicas) by thread (the task thread, the event loop's ``MainThread``, others) and the
   task thread's by kind of task (distributed's ``execute`` thread-cpu metrics: the kernel,
   block building, other).
3. **idle**: each worker's CPU per second while nothing runs.

Variants (switched on the running workers, so the same processes are compared):
``default``; ``no-profiler`` (the worker's ``profile`` and ``profile-cycle`` periodic callbacks
stopped: the statistical profiler that walks the task thread's stack every
``distributed.worker.profile.interval``); ``profiler-100ms`` (its period set to 100 ms,
what ``pipeline.connect()`` starts its workers with; this script starts its cluster at Dask's
10 ms); ``no-memory-monitor`` (the worker's ``memory_monitor``: psutil every 100 ms); ``no-tick-monitor`` (``tick``, ``ticks``, the system
``monitor``); ``switch-50ms`` (``sys.setswitchinterval(0.05)`` in the worker); ``quiet`` (all of
them, ``sys.setswitchinterval`` left at its default). ``--malloc`` adds a second cluster whose
nanny does not set ``MALLOC_TRIM_THRESHOLD_`` (``distributed.nanny.pre-spawn-environ``).

Run from a checkout::

    PYTHONPATH=$PWD python benchmarks/bench_worker_overhead.py [--rows 400000] [--repeats 5]
    PYTHONPATH=$PWD python benchmarks/bench_worker_overhead.py --ab profiler-100ms --repeats 10

``--ab VARIANT`` runs fits only, default and VARIANT alternating (A B, B A, ...).

Prints medians (and min-max) per variant; wall-clock figures move with the machine's load, CPU
figures much less.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

# periodic callbacks of distributed.Worker (2026.8) each variant stops
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "no-profiler": ("profile", "profile-cycle"),
    "profiler-100ms": (),
    "no-memory-monitor": ("memory_monitor",),
    "no-tick-monitor": ("tick", "ticks", "monitor"),
    "switch-50ms": (),
    "quiet": ("profile", "profile-cycle", "memory_monitor", "tick", "ticks", "monitor"),
}
SWITCH = {"switch-50ms": 0.05}
PROFILE_MS = {"profiler-100ms": 100}  # the profiler's period; Dask's default: 10 ms


# ------------------------------------------------------------------ run in a worker or child --


def make_replica(rows: int) -> Any:
    """The replica of :mod:`bench_step_cost` (2 blocks of ``rows/2`` rows... its blocks hold
    ``rows/2`` rows each, a 328-step round), built and warmed where this runs."""
    from bench_step_cost import Replica, library

    return Replica(library(), rows)


def run_kernel(replica: Any, rounds: int) -> dict[str, float]:
    """``rounds`` rounds of the replica: CPU and wall per step, from inside this task."""
    import resource

    from bench_step_cost import ROUND_STEPS

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        replica.run()
    t1, p1, w1 = time.thread_time(), time.process_time(), time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    steps = rounds * ROUND_STEPS
    return {"thread_ms": 1e3 * (t1 - t0) / steps, "process_ms": 1e3 * (p1 - p0) / steps,
            "wall_ms": 1e3 * (w1 - w0) / steps, "minflt": (r1.ru_minflt - r0.ru_minflt) / steps,
            "nivcsw": (r1.ru_nivcsw - r0.ru_nivcsw) / steps}


_CHILD: dict[str, Any] = {}


def child_kernel(rows: int, rounds: int) -> dict[str, float]:
    """:func:`run_kernel` in a plain process, on a replica kept between calls."""
    if "replica" not in _CHILD:
        _CHILD["replica"] = make_replica(rows)
    return run_kernel(_CHILD["replica"], rounds)


def threads_cpu(dask_worker: Any = None) -> dict[str, float]:
    """CPU seconds of this worker process: by thread kind, the process total, and the task
    thread's CPU in each kind of task (distributed's own ``execute`` metrics)."""
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {"task thread": 0.0, "event loop": 0.0, "other threads": 0.0}
    for t in psutil.Process().threads():
        name = names.get(t.id, "")
        kind = ("task thread" if "Dask-Default-Threads" in name
                else "event loop" if name == "MainThread" else "other threads")
        out[kind] += t.user_time + t.system_time
    out["process"] = time.process_time()
    for key, value in dask_worker.digests_total.items():
        # ("execute", span, task prefix, "thread-cpu", "seconds")
        if (isinstance(key, tuple) and len(key) == 5 and key[0] == "execute"
                and key[3] == "thread-cpu"):
            kind = TASK_KINDS.get(key[2], "other tasks")
            out[kind] = out.get(kind, 0.0) + value
    return out


# task prefixes of a default fit (key_split of the fit's task keys)
TASK_KINDS = {"replica_local_steps": "kernel tasks", "training-block": "block tasks",
              "colocated-block": "block tasks", "raw-training-block": "block tasks",
              "block-summary": "block tasks"}
FIT_COLUMNS = ("kernel tasks", "block tasks", "other tasks", "event loop", "other threads",
               "process")


def set_variant(names: tuple[str, ...], switch: float, profile_ms: int,
                dask_worker: Any = None) -> list[str]:
    """Stop the named periodic callbacks of this worker, start every other one that a
    variant may have stopped, set the profiler's period (from its next run) and the switch
    interval; returns the stopped ones."""
    known = {n for v in VARIANTS.values() for n in v}
    dask_worker.periodic_callbacks["profile"].callback_time = profile_ms
    for name, pc in dask_worker.periodic_callbacks.items():
        if name in names:
            pc.stop()
        elif name in known and not pc.is_running():
            pc.start()
    sys.setswitchinterval(switch)
    return sorted(n for n, pc in dask_worker.periodic_callbacks.items() if not pc.is_running())


def worker_config(dask_worker: Any = None) -> dict[str, Any]:
    import dask

    return {"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_", "(unset)"),
            "profile.enabled": dask.config.get("distributed.worker.profile.enabled"),
            "profile.interval": dask.config.get("distributed.worker.profile.interval"),
            "switchinterval": sys.getswitchinterval()}


# ------------------------------------------------------------------------------- client side --


def _fit(client: Any, data: tuple[Any, Any], epochs: int) -> dict[str, float]:
    """Both workers' CPU ms per local step (a 200-row step of one of the 2 replicas) of one
    default fit, by where it went (:func:`threads_cpu`), and the fit's wall seconds."""
    from pipeline.estimators import MLPClassifier

    before = client.run(threads_cpu)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(max_iter=epochs, random_state=0).fit(*data, client=client)
    wall = time.perf_counter() - t0
    after = client.run(threads_cpu)
    n = int(data[0].shape[0])
    # each of the 2 replicas (half the rows each) takes ceil(n / 2 / 200) steps an epoch
    steps = len(clf.history_) * 2 * -(-n // 2 // 200)
    out: dict[str, float] = {}
    for w in after:
        for k in after[w]:
            out[k] = out.get(k, 0.0) + after[w][k] - before[w].get(k, 0.0)
    per = {k: 1e3 * v / steps for k, v in out.items()}
    per["wall s"] = wall
    return per


def _idle(client: Any, seconds: float) -> float:
    before = client.run(threads_cpu)
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = client.run(threads_cpu)
    dt = time.perf_counter() - t0
    return statistics.mean((after[w]["process"] - before[w]["process"]) / dt for w in after)


def _summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="kernel rounds per run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="worker variants of the kernel runs")
    parser.add_argument("--fit-variants", default="default,no-profiler,profiler-100ms,quiet",
                        help="worker variants of the fits")
    parser.add_argument("--no-fit", action="store_true")
    parser.add_argument("--no-kernel", action="store_true")
    parser.add_argument("--ab", metavar="VARIANT", default=None,
                        help="fits only, default and VARIANT alternating (A B, B A, ...)")
    parser.add_argument("--malloc", action="store_true",
                        help="also a cluster without MALLOC_TRIM_THRESHOLD_ (kernel only)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    fit_variants = args.fit_variants.split(",")
    if args.ab:
        variants = fit_variants = ["default", args.ab]
        args.no_kernel, args.malloc = True, False

    import dask
    import dask.array as da
    import numpy as np
    from bench_step_cost import _data
    from common import local_cluster
    from distributed import wait

    kernel: dict[str, list[dict[str, float]]] = {}
    fits: dict[str, list[dict[str, float]]] = {}
    idle: dict[str, list[float]] = {}
    pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"))
    if not args.no_kernel:
        pool.submit(child_kernel, args.rows, 1).result()  # build and warm the replica
    clusters = [("", {})]
    if args.malloc:
        # None unsets a variable of the nanny's pre-spawn environment (distributed 2026.8)
        clusters.append((" (no MALLOC_TRIM)",
                         {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}))
    with contextlib.ExitStack() as stack:
        live = []
        for suffix, cfg in clusters:
            if suffix:  # a nanny writes its pre-spawn variables into this process's environ
                os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
            with dask.config.set(cfg):  # read by the nannies as they start their workers
                # Dask's own profiler interval (connect() would set 100 ms): the variants
                # switch it on the running workers
                client = stack.enter_context(local_cluster(2, profile_interval=None))
            workers = sorted(client.scheduler_info()["workers"])
            replicas = [] if args.no_kernel else [
                client.submit(make_replica, args.rows, workers=[w], pure=False)
                for w in workers]
            wait(replicas)
            print(f"cluster{suffix}: {client.run(worker_config)}", flush=True)
            data = None
            if not args.no_fit and not suffix:
                X, _ = _data(args.rows, 3)
                y = (X[:, :3].sum(axis=1) + 0.5 * np.sin(3 * X[:, 3]) > 0).astype(np.int64)
                Xd = da.from_array(X, chunks=(args.rows // 4, X.shape[1]))
                yd = da.from_array(y, chunks=(args.rows // 4,))
                data = tuple(client.persist([Xd, yd]))
                wait(list(data))
                # the cluster's first fit: imports, buffers, connections between workers
                fits["cold (first fit)"] = [_fit(client, data, args.epochs)]
            live.append((suffix, client, workers, replicas, data))

        for rep in range(args.repeats):
            if not args.no_kernel:
                kernel.setdefault("plain process", []).append(
                    pool.submit(child_kernel, args.rows, args.rounds).result())
            for suffix, client, workers, replicas, data in live:
                # the order turns every repeat (A B C, B C A, ...): no variant always runs
                # first, right after the plain process or a cluster switch
                turn = rep % len(variants)
                for v in (variants[turn:] + variants[:turn] if not suffix else ["default"]):
                    client.run(set_variant, VARIANTS[v], SWITCH.get(v, 0.005),
                               PROFILE_MS.get(v, 10))
                    if not args.no_kernel:
                        futs = [client.submit(run_kernel, r, args.rounds, workers=[w],
                                              pure=False)
                                for r, w in zip(replicas, workers, strict=True)]
                        kernel.setdefault(f"worker, {v}{suffix}", []).extend(
                            client.gather(futs))
                    if data is not None and v in fit_variants:
                        fits.setdefault(v, []).append(_fit(client, data, args.epochs))
                        idle.setdefault(v, []).append(_idle(client, 1.5))
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        for _, client, *_ in live:
            client.run(set_variant, (), 0.005, 10)
    pool.shutdown()

    _report(kernel, fits, idle, args)


def _report(kernel: dict[str, list[dict[str, float]]], fits: dict[str, list[dict[str, float]]],
            idle: dict[str, list[float]], args: Any) -> None:
    if kernel:
        _report_kernel(kernel, args)
    if fits:
        _report_fits(fits, idle, args)


def _report_kernel(kernel: dict[str, list[dict[str, float]]], args: Any) -> None:
    print(f"\nkernel: {args.rounds} rounds of one replica ({args.rows // 2:,} rows, "
          f"328 steps a round) a run, timed inside the task; ms per step, median (min-max) "
          f"of {args.repeats} runs (x2 workers); new/default: median of the paired ratios "
          "(same worker, same repeat)")
    print(f"{'where':<34} {'task thread CPU':>20} {'process CPU':>20} {'wall':>20} "
          f"{'minflt':>7} {'nivcsw':>7} {'thread, process CPU / default':>30}")
    base = kernel.get("worker, default")
    for k, rs in kernel.items():
        ratio = ""
        if base is not None and k.startswith("worker") and len(rs) == len(base):
            pairs = list(zip(rs, base, strict=True))
            tr = statistics.median(r["thread_ms"] / b["thread_ms"] for r, b in pairs)
            pr = statistics.median(r["process_ms"] / b["process_ms"] for r, b in pairs)
            ratio = f"{tr:.3f}, {pr:.3f}"
        print(f"{k:<34} {_summary([r['thread_ms'] for r in rs]):>20} "
              f"{_summary([r['process_ms'] for r in rs]):>20} "
              f"{_summary([r['wall_ms'] for r in rs]):>20} "
              f"{statistics.median(r['minflt'] for r in rs):7.2f} "
              f"{statistics.median(r['nivcsw'] for r in rs):7.3f} {ratio:>30}")


def _report_fits(fits: dict[str, list[dict[str, float]]], idle: dict[str, list[float]],
                 args: Any) -> None:
    print(f"\nfit: default MLPClassifier, {args.epochs} epochs on {args.rows:,} persisted rows "
          "(4 partitions); the workers' CPU ms per local step (a 200-row step of one of the 2 "
          "replicas), median (min-max); task-thread CPU by task kind from distributed's "
          "'execute' metrics; idle: each worker's CPU seconds per second with nothing to do")
    cols = (*FIT_COLUMNS[:3], "task thread", *FIT_COLUMNS[3:], "wall s")
    print(f"{'variant':<18}" + "".join(f"{c:>20}" for c in cols) + f"{'idle CPU/s':>20}"
          + f"{'process, wall / default':>26}")
    base = fits.get("default")
    for v, rs in fits.items():
        ratio = ""
        if base is not None and v != "cold (first fit)" and len(rs) == len(base):
            pairs = list(zip(rs, base, strict=True))
            ratio = (f"{statistics.median(r['process'] / b['process'] for r, b in pairs):.3f}, "
                     f"{statistics.median(r['wall s'] / b['wall s'] for r, b in pairs):.3f}")
        print(f"{v:<18}" + "".join(f"{_summary([r.get(c, 0.0) for r in rs]):>20}"
                                   for c in cols)
              + f"{_summary(idle[v]) if v in idle else '-':>20}{ratio:>26}")


if __name__ == "__main__":
    main()
