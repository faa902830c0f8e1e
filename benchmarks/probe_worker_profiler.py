"""What Dask's worker profiler costs a member's training task: a captured fused-epochs task
(``profile_tabular_fused.py capture NAME FILE --full --epochs 12``) run on both workers of a
fresh 2-worker ``LocalCluster`` at once (nanny-started, one thread each, as the members of a
default fit run), with the workers' stack sampler (``distributed.worker.profile``) at Dask's
10 ms, at 100 ms (what ``pl.connect()`` starts its workers with) and off, the three
alternating ``--rounds`` times, without the scheduler's dashboard (as the benchmarks start
their clusters) or with it (``--dashboard``: a ``LocalCluster()`` of Dask's defaults). Prints, per setting, the median over rounds of each round's
median wall and CPU seconds per run of the task (issue 13, session 17)::

    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 PYTHONPATH=. \\
        python benchmarks/probe_worker_profiler.py /tmp/hotel.pkl [--rounds 4] [--dashboard]
"""

from __future__ import annotations

import statistics
import sys

SETTINGS = {
    "10ms (Dask's default)": {},
    "100ms (pl.connect)": {"distributed.worker.profile.interval": "100ms"},
    "off": {"distributed.worker.profile.enabled": False},
}


def run_task(path: str, repeat: int) -> list[tuple[float, float]]:
    """The captured task ``repeat`` times after a warm-up: (wall, CPU) seconds each."""
    import pickle
    import time

    from pipeline.train.fused import fused_epochs

    with open(path, "rb") as f:
        args = pickle.load(f)
    fused_epochs(*args)
    out = []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fused_epochs(*args)
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def main() -> None:
    import dask
    from distributed import Client, LocalCluster

    path = sys.argv[1]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 4
    # the scheduler's dashboard (a user's LocalCluster() has one; the benchmarks' do not)
    dashboard = ":0" if "--dashboard" in sys.argv else None
    wall: dict[str, list[float]] = {k: [] for k in SETTINGS}
    cpu: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(rounds):
        for name, config in SETTINGS.items():
            with dask.config.set(config), LocalCluster(n_workers=2, threads_per_worker=1,
                                                       dashboard_address=dashboard) as cluster, \
                    Client(cluster) as client:
                workers = sorted(client.scheduler_info()["workers"])
                futures = [client.submit(run_task, path, 3, workers=[w], pure=False)
                           for w in workers]
                runs = [r for f in futures for r in f.result()]
            wall[name].append(statistics.median(w for w, _ in runs))
            cpu[name].append(statistics.median(c for _, c in runs))
            print(f"  {name:22s} wall {wall[name][-1]:.3f} s  CPU {cpu[name][-1]:.3f} s",
                  flush=True)
    off = statistics.median(wall["off"])
    for name in SETTINGS:
        w = statistics.median(wall[name])
        print(f"{name:22s} wall {w:.3f} s ({w / off:.3f}x off)  CPU "
              f"{statistics.median(cpu[name]):.3f} s per run, median of {rounds} rounds")


if __name__ == "__main__":
    main()
