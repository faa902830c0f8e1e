"""Per-round overhead of ``sync="gradient"`` and where a round's time goes.

Tiny blocks (4 rows per block per step, compute ≈ 0), K = 2, 8, 32, 64 blocks on a 2-worker
LocalCluster, ``min_block_rows=None`` so the estimator keeps all K blocks.

* ``MLPClassifier.fit``: time per round = ``train_summary_["seconds"] / rounds`` (the whole
  training loop: graph, scheduler, workers, result, client optimizer step, events).
* A naive futures tree in the same run: ``client.submit(partition_grad, ...)`` per block plus one
  ``client.submit(combine_grads, ...)`` per tree node (fan-in 8), ``.result()``, the same
  client-side Adam step.
* The Dask floor: a graph of one no-op task per block plus a fan-in-8 tree of no-op combines
  via one ``client.get``, and one ``submit → result`` round trip.
* The same fits three ways: the default (each epoch one ``mesh_epoch`` task per worker, rounds
  exchanged over the workers' own sockets, :mod:`pipeline.train.mesh_epoch`), pipelined rounds
  through Dask (``pipeline.train.mesh: False``: a task per worker per round, the optimizer step
  inside it) and ``rounds_ahead=1`` (the client drives every round). Same bits all three.
* An experiment on distributed's message batching (pipelined rounds, mesh off): batched
  streams at 1 ms instead of their defaults (all at once, and at K = 8 one stream at a time).
* Profiles (mesh off: they take Dask's rounds apart). Pipelined rounds: the task stream (worker compute and transfer times) and the
  scheduler's ``update-graph`` metrics give each round's chain of tasks. Rounds one at a time:
  ``_Rounds.gradient``/``_Rounds._run`` and ``client.get``/``log_event`` are also wrapped for
  client-side timestamps and merged with the scheduler's transition log, all on one clock.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from common import (
    HIDDEN,
    dask_classification,
    fmt,
    local_cluster,
    log,
    main,
    median,
    section,
    spread,
    table,
    target,
)

COMMAND = "python benchmarks/run_all.py --only overhead"
ROWS_PER_BLOCK_STEP = 4  # rows each block contributes to one global step


def _noop_leaf(block: Any, params: Any, i: int) -> Any:
    return params


def _noop_combine(parts: list[Any]) -> Any:
    return parts[0]


def _noop() -> None:
    return None


def _fit_rounds(client: Any, K: int, rounds: int, seed: int, rounds_ahead: int | None = None
                ) -> tuple[Any, float]:
    """One epoch of ``rounds`` gradient rounds over K tiny blocks; ``rounds_ahead=None`` is the
    estimator's default."""
    from pipeline.estimators import MLPClassifier

    X, y = dask_classification(K * rounds * ROWS_PER_BLOCK_STEP, K, seed=0)
    params = MLPClassifier().get_params()
    # min_block_rows=None: keep the K tiny blocks (the estimator coalesces small partitions)
    extra: dict[str, Any] = {"min_block_rows": None} if "min_block_rows" in params else {}
    if rounds_ahead is not None and "rounds_ahead" in params:
        extra["rounds_ahead"] = rounds_ahead
    clf = MLPClassifier(HIDDEN, batch_size=K * ROWS_PER_BLOCK_STEP, max_iter=1,
                        sync="gradient", random_state=seed, tol=0.0, shuffle=False, **extra)
    t0 = time.perf_counter()
    clf.fit(X, y, client=client)
    return clf, time.perf_counter() - t0


def supports_rounds_ahead() -> bool:
    from pipeline.estimators import MLPClassifier

    return "rounds_ahead" in MLPClassifier().get_params()


def _blocks(client: Any, K: int, rows: int) -> Any:
    from pipeline.blocks import to_blocks

    X, y = dask_classification(K * rows, K, seed=0)
    return to_blocks(client, X, y, classification=True)


def _naive_rounds(client: Any, blocks: Any, rounds: int, split_every: int = 8) -> list[float]:
    """The graph a beginner would write with futures, same work per round."""
    from pipeline import nn, optim
    from pipeline.reduce import tree_levels
    from pipeline.train.tasks import combine_grads, partition_grad

    spec = nn.MLPSpec((blocks.n_features, *HIDDEN, 1), "relu", "binary_log_loss")
    params = nn.init_params(spec, 0)
    opt = optim.adam(1e-3)
    state = opt.init(params)
    K = len(blocks.futures)
    out = []
    for step in range(rounds):
        t0 = time.perf_counter()
        level = [client.submit(partition_grad, f, params, spec, i, 0, step, rounds, 0, False,
                               pure=False) for i, f in enumerate(blocks.futures)]
        for groups in tree_levels(K, split_every):
            level = [client.submit(combine_grads, [level[j] for j in g], pure=False)
                     for g in groups]
        part = level[0].result()
        g = part.vector / max(part.n, 1)
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
        out.append(time.perf_counter() - t0)
    return out


def _noop_graph_rounds(client: Any, blocks: Any, rounds: int, split_every: int = 8
                       ) -> list[float]:
    """Same graph shape as a round (params key, K leaves on the blocks, fan-in tree), no work."""
    from pipeline.reduce import tree_graph

    params = np.zeros(5_569, dtype=np.float32)
    out = []
    for r in range(rounds):
        t0 = time.perf_counter()
        pkey = f"noop-params-{r}-{time.time_ns()}"
        dsk: dict[Any, Any] = {pkey: params}
        leaves = []
        for i, f in enumerate(blocks.futures):
            dsk[(f"noop-leaf-{pkey}", i)] = (_noop_leaf, f, pkey, i)
            leaves.append((f"noop-leaf-{pkey}", i))
        tree, root = tree_graph(leaves, _noop_combine, split_every=split_every,
                                name=f"noop-combine-{pkey}")
        dsk.update(tree)
        futs = client.get(dsk, [root], sync=False)
        client.gather(futs)
        del futs
        out.append(time.perf_counter() - t0)
    return out


def _graph_keys(dsk: Any) -> list[str]:
    """The keys of a graph given to ``client.get``: a dict, or the low-level-graph expression
    the round runner submits (:func:`pipeline.train.rounds.submit`)."""
    return [str(k) for k in (dsk.operand("dsk") if hasattr(dsk, "operand") else dsk)]


def _round_trips(client: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.submit(_noop, pure=False).result()
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------ batching ----

# distributed's BatchedSend intervals (hard-coded in distributed 2026.8): a message waits up to
# this long after the previous batch on the same stream.
DEFAULT_INTERVALS = {"client→scheduler": 0.010, "scheduler→worker": 0.005,
                     "scheduler→client": 0.002, "worker→scheduler": 0.002}


def _set_worker_interval(dask_worker: Any = None, interval: float = 0.002) -> bool:
    dask_worker.batched_stream.interval = interval
    return True


def set_batched_intervals(client: Any, interval: float | None,
                          streams: tuple[str, ...] = tuple(DEFAULT_INTERVALS)) -> None:
    """Set the batched streams named in ``streams`` (keys of :data:`DEFAULT_INTERVALS`) to
    ``interval`` seconds and every other stream to its default (``None``: all defaults).
    An experiment only: it pokes at distributed's internals on a LocalCluster."""
    d = DEFAULT_INTERVALS

    def value(stream: str) -> float:
        return interval if interval and stream in streams else d[stream]

    scheduler = client.cluster.scheduler
    client.scheduler_comm.interval = value("client→scheduler")
    for bc in scheduler.stream_comms.values():
        bc.interval = value("scheduler→worker")
    for bc in scheduler.client_comms.values():
        bc.interval = value("scheduler→client")
    client.run(_set_worker_interval, interval=value("worker→scheduler"))


def _interval_experiment(client: Any, Ks: list[int], rounds: dict[int, int], alternations: int,
                         per_stream: bool = True
                         ) -> list[dict[str, Any]]:
    """Fit s/rounds with default and 1 ms batched-send intervals (all streams; and, at K = 8,
    one stream at a time), interleaved."""
    out = []
    for K in Ks:
        variants: list[tuple[str, float | None, tuple[str, ...]]] = [
            ("default", None, ()), ("1 ms", 0.001, tuple(DEFAULT_INTERVALS))]
        if K == 8 and per_stream:
            variants += [(f"1 ms {s}", 0.001, (s,)) for s in DEFAULT_INTERVALS]
        res: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for _ in range(alternations):
            for name, interval, streams in variants:
                set_batched_intervals(client, interval, streams)
                clf, _ = _fit_rounds(client, K, rounds[K], seed=0)
                s = clf.train_summary_
                res[name].append(1e3 * s["seconds"] / s["rounds"])
        set_batched_intervals(client, None)
        out.append({"K": K, **res})
        log(f"batching K={K}: " + ", ".join(f"{k} {fmt(median(v))} ms" for k, v in res.items()))
    return out


# ------------------------------------------------------------------------------ profile -----


class RoundProbe:
    """Client-side timestamps (``time.time()``, the clock the scheduler and workers use) of each
    gradient round, taken by wrapping ``Rounds.gradient`` and ``Rounds.run`` (the round and
    its graph's computation, :mod:`pipeline.train.rounds`) and ``client.get``/``client.log_event``
    (submission, events). Nothing else about the round's internals is assumed, so the probe
    follows the round runner as it changes."""

    def __init__(self, client: Any):
        self.client = client
        self.rounds: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.events: list[tuple[float, float]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[RoundProbe]:
        from pipeline.train.rounds import Rounds

        probe, client = self, self.client
        orig_grad, orig_run = Rounds.gradient, Rounds.run
        orig_get, orig_log = client.get, client.log_event

        def gradient(self_: Any, *a: Any, **k: Any) -> Any:
            rec: dict[str, Any] = {"enter": time.time()}
            probe.current = rec
            out = orig_grad(self_, *a, **k)
            rec["exit"] = time.time()
            probe.rounds.append(rec)
            probe.current = None
            return out

        def run(self_: Any, *a: Any, **k: Any) -> Any:
            rec = probe.current
            if rec is not None:
                rec["run0"] = time.time()
            out = orig_run(self_, *a, **k)
            if rec is not None:
                rec["run1"] = time.time()
            return out

        def get(dsk: Any, keys: Any, *a: Any, **k: Any) -> Any:
            rec = probe.current
            if rec is not None and "get0" not in rec:
                rec["get0"] = time.time()
                rec["keys"] = _graph_keys(dsk)
                rec["root"] = str(keys[0])
            out = orig_get(dsk, keys, *a, **k)
            if rec is not None and "get1" not in rec:
                rec["get1"] = time.time()
            return out

        def log_event(*a: Any, **k: Any) -> Any:
            t0 = time.time()
            out = orig_log(*a, **k)
            probe.events.append((t0, time.time()))
            return out

        Rounds.gradient, Rounds.run = gradient, run
        client.get, client.log_event = get, log_event
        try:
            yield self
        finally:
            Rounds.gradient, Rounds.run = orig_grad, orig_run
            client.get, client.log_event = orig_get, orig_log


def _profile(client: Any, K: int, rounds: int, interval: float | None = None
             ) -> dict[str, Any]:
    """Timeline of one-round-at-a-time gradient rounds (``rounds_ahead=1``) over K tiny
    blocks (medians over rounds 3..end)."""
    from distributed import get_task_stream

    scheduler = client.cluster.scheduler  # LocalCluster: the scheduler lives in this process
    probe = RoundProbe(client)
    set_batched_intervals(client, interval)
    try:
        with get_task_stream(client=client) as ts, probe.installed():
            n0 = len(scheduler.transition_log)
            clf, _ = _fit_rounds(client, K, rounds, seed=0, rounds_ahead=1)
    finally:
        set_batched_intervals(client, None)
    transitions = list(scheduler.transition_log)[n0:]
    updates = [msg["metrics"] for _, msg in client.get_events("scheduler")
               if isinstance(msg, dict) and msg.get("action") == "update-graph"
               and msg.get("status") == "OK"]
    by_key: dict[str, list[Any]] = {}
    for tr in transitions:
        by_key.setdefault(str(tr.key), []).append(tr)
    ts_by_key = {str(t["key"]): t for t in ts.data}

    def comp(key: str) -> tuple[float, float]:
        ss = [s for s in ts_by_key[key]["startstops"] if s["action"] == "compute"]
        return ss[0]["start"], ss[-1]["stop"]

    rows = []
    recs = probe.rounds
    for j, rec in enumerate(recs[2:-1], start=2):
        if "keys" not in rec or "run1" not in rec:
            continue
        keys = [k for k in rec["keys"] if k in by_key]  # tasks the scheduler saw
        root = rec["root"]
        leaves = [k for k in keys if "partition_" in k]
        others = [k for k in keys if k not in leaves and k != root]
        if root not in ts_by_key or not leaves or not all(k in ts_by_key for k in leaves):
            continue
        s_first = min(tr.timestamp for k in keys for tr in by_key[k])
        ug = [m for m in updates if rec["get0"] - 0.001 <= m["start_timestamp_seconds"] <= s_first]
        if not ug:
            continue
        m = ug[0]
        ug_start = m["start_timestamp_seconds"]
        mat_done = ug_start + m["materialization_duration_seconds"]
        # distributed logs ordering/state durations with the sign flipped (done - start reversed)
        ord_done = mat_done + abs(m["ordering_duration_seconds"])
        s_root_mem = max(tr.timestamp for tr in by_key[root] if tr.finish == "memory")
        leaf_cs = [comp(k) for k in leaves]
        other_cs = [comp(k) for k in others if k in ts_by_key]
        root_start, root_stop = comp(root)
        transfers = [s["stop"] - s["start"] for k in keys if k in ts_by_key
                     for s in ts_by_key[k]["startstops"] if s["action"] == "transfer"]
        nxt = recs[j + 1]["enter"]
        ev = sum(b - a for a, b in probe.events if rec["exit"] <= a < nxt)
        rows.append({
            "client: build graph": rec["get0"] - rec["enter"],
            "client.get → scheduler's update_graph starts (serialize, send, event loop)":
                ug_start - rec["get0"],
            "scheduler: deserialize + materialize graph (offloaded to a thread)":
                mat_done - ug_start,
            "scheduler: dask.order (offloaded to a thread)": ord_done - mat_done,
            "scheduler: task states → first transition": s_first - ord_done,
            "scheduler → first leaf starts on a worker": min(s for s, _ in leaf_cs) - s_first,
            "leaves computing (first start → last stop)":
                max(e for _, e in leaf_cs) - min(s for s, _ in leaf_cs),
            "last leaf stop → root starts (hops, transfers, tree levels)":
                root_start - max(e for _, e in leaf_cs),
            "root compute": root_stop - root_start,
            "root done on worker → scheduler knows": s_root_mem - root_stop,
            "scheduler knows → result in the client (notify + fetch)": rec["run1"] - s_root_mem,
            "client: rest of the round (optimizer step, bookkeeping; excl. events)":
                (nxt - rec["run1"]) - ev,
            "client: log_event round trips": ev,
            "== round (enter → next enter)": nxt - rec["enter"],
            "_sum of leaf compute (all leaf tasks)": sum(e - s for s, e in leaf_cs),
            "_median leaf task compute": median([e - s for s, e in leaf_cs]),
            "_median other (combine) task compute": median([e - s for s, e in other_cs]),
            "_transfers (count)": float(len(transfers)),
            "_transfers (sum of durations)": sum(transfers),
            "_leaf tasks": float(len(leaves)),
            "_tasks": float(len(keys)),
            "_client.get call itself": rec["get1"] - rec["get0"],
        })
    summary = {k: median([r[k] for r in rows]) for k in (rows[0] if rows else {})}
    return {"K": K, "interval": interval, "mode": "one round at a time (rounds_ahead=1)",
            "rounds_used": len(rows), "summary": summary,
            "fit_round_s": clf.train_summary_["seconds"] / clf.train_summary_["rounds"]}


def _profile_pipelined(client: Any, K: int, rounds: int, interval: float | None = None
                       ) -> dict[str, Any]:
    """Timeline of pipelined gradient rounds (the estimator's default ``rounds_ahead``): one
    ``step_and_partition_grads`` task per worker per round, depending on all of the previous
    round's, so a round is one hop between workers inside the cluster. Read from the task stream and the scheduler's ``update-graph``
    metrics; ``client.get`` is wrapped only to learn each round's keys."""
    from distributed import get_task_stream

    calls: list[tuple[float, list[str]]] = []
    orig_get = client.get

    def get(dsk: Any, keys: Any, *a: Any, **k: Any) -> Any:
        calls.append((time.time(), _graph_keys(dsk)))
        return orig_get(dsk, keys, *a, **k)

    set_batched_intervals(client, interval)
    client.get = get
    try:
        with get_task_stream(client=client) as ts:
            clf, _ = _fit_rounds(client, K, rounds, seed=0)
    finally:
        client.get = orig_get
        set_batched_intervals(client, None)
    updates = sorted(msg["metrics"]["start_timestamp_seconds"]
                     for _, msg in client.get_events("scheduler")
                     if isinstance(msg, dict) and msg.get("action") == "update-graph"
                     and msg.get("status") == "OK")
    ts_by_key = {str(t["key"]): t for t in ts.data}

    def comp(key: str) -> tuple[float, float]:
        ss = [s for s in ts_by_key[key]["startstops"] if s["action"] == "compute"]
        return ss[0]["start"], ss[-1]["stop"]

    def role(keys: list[str], prefix: str) -> list[str]:
        return [k for k in keys if prefix in k and k in ts_by_key]

    # a round: one step_and_partition_grads task per worker (fold of the previous round's
    # partials of every worker, the optimizer update on the worker's own copy, its blocks'
    # gradients); round r+1's tasks depend on all of round r's
    # (rounds are submitted a few per graph: group the keys by round)
    name = "step_and_partition_grads"
    by_round: dict[int, tuple[float, list[str]]] = {}
    for t_call, call_keys in calls:
        for k in call_keys:
            m = re.search(name + r"-\w+-(\d+)'", k)
            if m:
                by_round.setdefault(int(m.group(1)), (t_call, []))[1].append(k)
    rounds_ = [by_round[r] for r in sorted(by_round)]
    rows = []
    for r in range(3, len(rounds_) - 1):
        t_get, keys = rounds_[r]
        prev = role(rounds_[r - 1][1], name)
        tasks = role(keys, name)
        if not (prev and tasks):
            continue
        prev_done = max(comp(k)[1] for k in prev)
        cs = [comp(k) for k in tasks]
        first, last = min(a for a, _ in cs), max(b for _, b in cs)
        ug = [u for u in updates if u >= t_get - 0.001]
        transfers = [s["stop"] - s["start"] for k in keys if k in ts_by_key
                     for s in ts_by_key[k]["startstops"] if s["action"] == "transfer"]
        rows.append({
            "previous round's last task done → first task starts (report, dispatch, transfer)":
                first - prev_done,
            "tasks computing (first start → last stop: fold, step, gradients)": last - first,
            "one task (median over the round's tasks)": median([b - a for a, b in cs]),
            "== round period (previous round done → this one done)": last - prev_done,
            "_graph on the scheduler before the round could start (slack)":
                prev_done - ug[0] if ug else float("nan"),
            "_client submits a graph (rounds_ahead // 2 rounds) every": t_get - rounds_[r - 1][0]
                if t_get != rounds_[r - 1][0] else float("nan"),
            "_transfers (count)": float(len(transfers)),
            "_transfers (sum of durations)": sum(transfers),
            "_tasks": float(len(keys)),
        })
    summary = {k: median([r[k] for r in rows]) for k in (rows[0] if rows else {})}
    return {"K": K, "interval": interval, "mode": "pipelined (default rounds_ahead)",
            "rounds_used": len(rows), "summary": summary,
            "fit_round_s": clf.train_summary_["seconds"] / clf.train_summary_["rounds"]}


def run(quick: bool) -> dict[str, Any]:
    Ks = [2, 8, 32, 64]
    rounds = {2: 60, 8: 60, 32: 30, 64: 20} if quick else {2: 100, 8: 100, 32: 50, 64: 40}
    reps = 2 if quick else 3
    results = []
    profiles = []
    import dask

    # keep every transition of the profiled rounds (default: the last 1,000)
    dask.config.set({"distributed.admin.low-level-log-length": 500_000})
    with local_cluster(2) as client:
        rt = _round_trips(client, 30)
        _fit_rounds(client, 2, 10, seed=0)  # warm-up
        ahead = supports_rounds_ahead()
        for K in Ks:
            R = rounds[K]
            fit_ms, hist_ms, one_ms, dask_ms = [], [], [], []
            for r in range(reps):
                clf, _ = _fit_rounds(client, K, R, seed=r)
                s = clf.train_summary_
                fit_ms.append(1e3 * s["seconds"] / s["rounds"])
                hist_ms.append(1e3 * clf.history_[0]["round_seconds_median"])
                with dask.config.set({"pipeline.train.mesh": False}):
                    clf, _ = _fit_rounds(client, K, R, seed=r)
                s = clf.train_summary_
                dask_ms.append(1e3 * s["seconds"] / s["rounds"])
                if ahead:
                    clf, _ = _fit_rounds(client, K, R, seed=r, rounds_ahead=1)
                    s = clf.train_summary_
                    one_ms.append(1e3 * s["seconds"] / s["rounds"])
            blocks = _blocks(client, K, R * ROWS_PER_BLOCK_STEP)
            _naive_rounds(client, blocks, 3)
            naive = [1e3 * x for x in _naive_rounds(client, blocks, R)]
            noop = [1e3 * x for x in _noop_graph_rounds(client, blocks, R)]
            del blocks
            results.append({"K": K, "rounds": R, "fit_ms": fit_ms, "hist_ms": hist_ms,
                            "one_at_a_time_ms": one_ms, "naive_ms": naive, "noop_ms": noop,
                            "pipelined_dask_ms": dask_ms})
            log(f"overhead K={K}: fit {fmt(median(fit_ms))} ms/round "
                f"(pipelined through Dask: {fmt(median(dask_ms))}) "
                f"(rounds_ahead=1: {fmt(median(one_ms))}) "
                f"(loop median {fmt(median(hist_ms))}), naive {fmt(median(naive))}, "
                f"noop graph {fmt(median(noop))}")
        exp_rounds = {2: 30, 8: 30, 64: 10} if quick else {2: 100, 8: 100, 64: 30}
        # --quick: all streams at once only (one stream at a time is the full run's)
        mesh_off = dask.config.set({"pipeline.train.mesh": False})
        batching = _interval_experiment(client, [2, 8, 64], exp_rounds, 1 if quick else 4,
                                        per_stream=not quick)
        n_prof = 40 if quick else 60
        if ahead:
            for K, interval in ((8, None), (64, None), (8, 0.001)):
                profiles.append(_profile_pipelined(client, K, n_prof, interval))
                log(f"pipelined profile K={K} interval={interval}: {profiles[-1]['summary']}")
        profiles.append(_profile(client, 8, n_prof))
        log(f"profile K=8 one round at a time: {profiles[-1]['summary']}")
        mesh_off.__exit__(None, None, None)

    t = table(
        ["blocks K", "rounds/fit", "fit s / rounds (ms)", "min–max over fits",
         "median round in loop (ms)", "pipelined rounds through Dask, mesh off (ms)",
         "same, rounds_ahead=1 (ms)", "naive futures tree (ms)",
         "ours / naive", "no-op graph, one task per block (ms)"],
        [[r["K"], r["rounds"], median(r["fit_ms"]), spread(r["fit_ms"]), median(r["hist_ms"]),
          median(r["pipelined_dask_ms"]) if r.get("pipelined_dask_ms") else "-",
          median(r["one_at_a_time_ms"]) if r["one_at_a_time_ms"] else "-",
          median(r["naive_ms"]), median(r["fit_ms"]) / median(r["naive_ms"]),
          median(r["noop_ms"])] for r in results],
        f"2 workers × 1 thread; {ROWS_PER_BLOCK_STEP} rows per block per step (compute ≈ 0), "
        f"fan-in 8, {reps} fits per K (medians); naive and no-op: median over the same number "
        f"of rounds. One submit→result round trip: {fmt(1e3 * median(rt))} ms "
        f"(median of 30).")
    by = {r["K"]: median(r["fit_ms"]) for r in results}
    targets = [
        target("sync=\"gradient\" round overhead ≤ 15 ms at 8 blocks",
               f"{fmt(by[8])} ms ({by[8] / 15:.1f}× the target)", by[8] <= 15),
        target("sync=\"gradient\" round overhead ≤ 25 ms at 64 blocks",
               f"{fmt(by[64])} ms ({by[64] / 25:.1f}× the target)", by[64] <= 25),
    ]
    piped = {r["K"]: median(r["pipelined_dask_ms"]) for r in results
             if r.get("pipelined_dask_ms")}
    if piped:
        targets.append(target("  (for reference) the same through Dask's pipelined rounds "
                              "(mesh off), 8 / 64 blocks", f"{fmt(piped[8])} / {fmt(piped[64])} ms",
                              None))
    one = {r["K"]: median(r["one_at_a_time_ms"]) for r in results if r["one_at_a_time_ms"]}
    if one:
        targets.append(target("  (for reference) the same with rounds_ahead=1, 8 / 64 blocks",
                              f"{fmt(one[8])} / {fmt(one[64])} ms", None))
    brows = []
    for b in batching:
        for name, v in b.items():
            if name in ("K", "default"):
                continue
            label = "all streams" if name == "1 ms" else name.removeprefix("1 ms ") + " only"
            brows.append([b["K"], label, median(b["default"]), median(v),
                          median(b["default"]) - median(v)])
    tb = table(["blocks K", "streams at 1 ms", "fit s / rounds, default intervals (ms)",
                "with those streams at 1 ms (ms)", "saved (ms)"], brows,
               "Experiment: distributed batches messages per stream (client→scheduler every "
               "10 ms, scheduler→worker 5 ms, worker→scheduler and scheduler→client 2 ms). "
               "Here the named streams' intervals are set to 1 ms at run time; runs "
               "interleaved with the defaults, medians.")
    prof_tables = []
    for p in profiles:
        s = p["summary"]
        main_rows = [[k, 1e3 * v] for k, v in s.items() if not k.startswith("_")]
        counts = ("_transfers (count)", "_leaf tasks", "_tasks")
        extra = [[k.lstrip("_"), int(v) if k in counts else 1e3 * v]
                 for k, v in s.items() if k.startswith("_")]
        prof_tables.append(table(
            ["phase of a gradient round", "ms (median)"], main_rows + extra,
            f"Profile, K = {p['K']} blocks, {p['mode']}"
            + (", all batched-send intervals 1 ms" if p["interval"] else "")
            + f" ({p['rounds_used']} rounds; fit s/rounds in this "
            f"instrumented run: {fmt(1e3 * p['fit_round_s'])} ms). Rows without '==' are "
            "consecutive phases; the lower rows are totals over all tasks (not on the path)."))
    return section("sync=\"gradient\" round overhead", COMMAND + (" --quick" if quick else ""),
                   tables=[t, tb, *prof_tables], targets=targets,
                   raw={"overhead": results, "profiles": profiles, "batching": batching,
                        "round_trip_ms":
                        [1e3 * x for x in rt]})


if __name__ == "__main__":
    main(run)
