"""Fault matrix: what each fault does to a training run on a real multi-process cluster.

Starts a ``dask scheduler`` and single-threaded ``dask worker`` processes on 127.0.0.1 (the
launcher of ``tests/reliability``), injects every fault of the reliability suite once, measures,
and prints a Markdown table: fault | what the user sees | what is kept | recovery time (s).

    python benchmarks/fault_matrix.py --output docs/fault_matrix.md

"Recovery time" is what the fault cost in wall-clock time: for a lost worker, the time the
disrupted rounds took beyond a typical round (``train_summary_["recovery_seconds"]``); for a
fault outside training (building blocks, preprocessing), the extra time over the same step
without the fault; for a fatal fault, the time from the fault to the error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import ssl
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

# The launcher and fault injectors live with the reliability tests.
pc = importlib.import_module("proc_cluster")

N_WORKERS = 2


@dataclass
class Row:
    fault: str
    sees: str
    kept: str
    seconds: float | None


def _same(a: np.ndarray, b: np.ndarray) -> str:
    return "identical to an uninterrupted run, bit for bit" if np.array_equal(a, b) else \
        "DIFFERENT from an uninterrupted run"


class Bench:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.cluster = pc.ProcCluster(workdir / "cluster")
        self.cluster.start_scheduler()
        for _ in range(N_WORKERS):
            self.cluster.add_worker()
        self.client = self.cluster.client(n_workers=N_WORKERS)
        self.data = pc.make_data()
        self.reference, self.fit_seconds = self._fit_timed()
        self._fit_timed()  # warm both workers
        self.reference, self.fit_seconds = self._fit_timed()

    def _fit_timed(self) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        model = pc.fit_model(self.client, *self.data, **pc.FULL_BATCH["sgd"])
        return model.params_, time.perf_counter() - t

    def healthy(self) -> None:
        """Replace killed workers and reset the scheduler before the next fault."""
        for name, proc in list(self.cluster.workers.items()):
            if proc.poll() is not None:
                del self.cluster.workers[name]
        while len(self.cluster.workers) < N_WORKERS:
            self.cluster.add_worker()
        self.client.wait_for_workers(N_WORKERS, timeout=60)
        self.client.run_on_scheduler(_set_allowed_failures, None)
        pc.disarm_workers(self.client)
        # the replacement imports the library on its first task: warm it up outside the timing
        self.client.run(_warm_up)

    def traced_fit(self, n: int, action: Callable[[pc.RoundTrigger], Any]) -> tuple[Any, list]:
        trigger = pc.RoundTrigger(self.client, n, lambda: action(trigger))
        try:
            model = pc.fit_model(self.client, *self.data, **pc.FULL_BATCH["sgd"])
            trigger.wait_for_end()
        finally:
            trigger.close()
        return model, [e for e in trigger.events if e.get("event") == "retry"]

    # ------------------------------------------------------------------ faults ----------------

    def kill_between_rounds(self) -> Row:
        pids = pc.worker_pids(self.client)

        def kill(trigger: pc.RoundTrigger) -> None:
            last = next(e for e in reversed(trigger.events) if e.get("event") == "round")
            pc.kill_pid(pids[last["partition_workers"][0]])

        model, retries = self.traced_fit(5, kill)
        return Row("worker SIGKILLed mid-training (no nanny), from outside, after round 5",
                   f"nothing: `fit` returns; {_events(len(retries))} "
                   f"(\"{_short(retries[0]['reason'])}\")" if retries else "no retry event",
                   "all work: the lost blocks are rebuilt from lineage on the survivor; "
                   f"parameters {_same(model.params_, self.reference)}",
                   model.train_summary_["recovery_seconds"])

    def die_in_task(self, func: str, after: int, label: str, allowed_failures: int | None = None
                    ) -> Row:
        if allowed_failures is not None:
            self.client.run_on_scheduler(_set_allowed_failures, allowed_failures)
        marker = pc.arm_workers(self.client, "pipeline.train.tasks", func, after,
                                self.workdir / "victim")
        model, retries = self.traced_fit(10**9, lambda trigger: None)
        _check_died(marker)
        actions = sorted({e["action"] for e in retries})
        return Row(label,
                   f"nothing: `fit` returns; {_events(len(retries))} ({', '.join(actions)})",
                   f"all work; parameters {_same(model.params_, self.reference)}",
                   model.train_summary_["recovery_seconds"])

    def kill_with_nanny(self) -> Row:
        cluster = pc.ProcCluster(self.workdir / "nanny")
        try:
            cluster.start_scheduler()
            for _ in range(N_WORKERS):
                cluster.add_worker(nanny=True)
            with cluster.client(n_workers=N_WORKERS) as client:
                client.run(_warm_up)
                pids = pc.worker_pids(client)
                victim = min(pids)
                killed: dict[str, float] = {}
                trigger = pc.RoundTrigger(client, 5,
                                       lambda: killed.setdefault("at", pc.kill_pid(pids[victim])))
                try:
                    model = pc.fit_model(client, *self.data, **pc.FULL_BATCH["sgd"])
                    trigger.wait_for_end()
                finally:
                    trigger.close()
                client.wait_for_workers(N_WORKERS, timeout=60)
                back = time.time() - killed["at"]
                retries = [e for e in trigger.events if e.get("event") == "retry"]
        finally:
            cluster.close()
        return Row("worker SIGKILLed mid-training (with nanny), after round 5",
                   f"nothing: `fit` returns; {_events(len(retries))}; the nanny restarts "
                   f"the worker (back {back:.1f} s after the kill, new address)",
                   f"all work; parameters {_same(model.params_, self.reference)}",
                   model.train_summary_["recovery_seconds"])

    def kill_building_blocks(self) -> Row:
        marker = pc.arm_workers(self.client, "pipeline.blocks", "_raw_block", 1,
                                self.workdir / "victim")
        t = time.perf_counter()
        model = pc.fit_model(self.client, *self.data, **pc.FULL_BATCH["sgd"])
        seconds = time.perf_counter() - t
        _check_died(marker)
        return Row("worker dies while `fit` builds the training blocks",
                   "nothing: `fit` returns (the block is computed on the survivor)",
                   f"all work; parameters {_same(model.params_, self.reference)}",
                   max(0.0, seconds - self.fit_seconds))

    def kill_preprocessing(self) -> Row:
        import dask.dataframe as dd
        import pandas as pd

        from pipeline.preprocessing import Preprocessor

        X, y = (np.asarray(a) for a in dask.compute(*self.data))
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]).assign(y=y)
        df = dd.from_pandas(frame, npartitions=8)
        with self.client.as_current():
            t = time.perf_counter()
            clean = Preprocessor(label="y").fit(df)
            clean_seconds = time.perf_counter() - t
            marker = pc.arm_workers(self.client, "pipeline.preprocessing", "partial_stats", 2,
                                    self.workdir / "victim")
            t = time.perf_counter()
            hit = Preprocessor(label="y").fit(df)
            seconds = time.perf_counter() - t
        _check_died(marker)
        same = all(np.array_equal(getattr(clean, a), getattr(hit, a))
                   for a in ("mean_", "var_", "n_samples_seen_"))
        return Row("worker dies inside `Preprocessor.fit` (statistics pass)",
                   "nothing: `fit` returns (the partition's statistics are recomputed)",
                   "all work; statistics " + ("identical" if same else "DIFFERENT")
                   + " to a run without the fault",
                   max(0.0, seconds - clean_seconds))

    def lose_all_workers(self, timeout: str = "10s") -> Row:
        pids = pc.worker_pids(self.client)
        trigger = pc.RoundTrigger(self.client, 3,
                               lambda: [pc.kill_pid(p) for p in pids.values()])
        message = ""
        try:
            with dask.config.set({"pipeline.train.no-workers-timeout": timeout}):
                pc.fit_model(self.client, *self.data, **pc.FULL_BATCH["sgd"])
        except RuntimeError as exc:
            message = str(exc)
        finally:
            failed_at = time.time()
            trigger.close()
        assert trigger.fired_at is not None
        return Row(f"every worker SIGKILLed (no-workers-timeout {timeout}; default 30 s)",
                   f"`RuntimeError`: \"{_short(message, 90)}\"",
                   "the parameters of the last checkpoint, if `checkpoint_dir` was set",
                   failed_at - trigger.fired_at)

    def kill_client(self) -> Row:
        script = pc.write_training_script(self.workdir)
        ckpt, out = self.workdir / "ckpt", self.workdir / "params.npy"
        with open(self.workdir / "client.log", "wb") as log:
            proc = pc.start_training_process(script, self.cluster.address, ckpt, out, False, log)
            try:
                deadline = time.monotonic() + 120
                while not (ckpt / "epoch-000002").exists():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the training process did not reach epoch 2")
                    time.sleep(0.02)
            finally:
                pc.kill_group(proc)
            from pipeline.checkpoint import latest_checkpoint

            kept = latest_checkpoint(ckpt).name
            t = time.perf_counter()
            proc = pc.start_training_process(script, self.cluster.address, ckpt, out, True, log)
            code = proc.wait(timeout=180)
            resume_seconds = time.perf_counter() - t
        uninterrupted = pc.fit_model(self.client, *self.data, **pc.RESUME_CONFIG)
        same = code == 0 and np.array_equal(np.load(out), uninterrupted.params_)
        return Row("client process SIGKILLed after its 2nd checkpoint, then rerun with "
                   "`resume=True`",
                   "the process dies; the rerun continues from the checkpoint (a different "
                   "configuration is refused with `CheckpointMismatchError` naming the "
                   "difference)",
                   f"every checkpointed epoch (`{kept}`); final parameters "
                   + ("identical to an uninterrupted run, bit for bit" if same else "DIFFERENT"),
                   resume_seconds)

    def diverge(self) -> Row:
        from pipeline.checkpoint import latest_checkpoint

        X, y = pc.make_data(classification=False)
        ckpt = self.workdir / "diverge"
        message = ""
        try:
            pc.fit_model(self.client, X, y, estimator="regressor", solver="sgd", batch_size=None,
                      max_iter=40, learning_rate_init=1.0, checkpoint_dir=ckpt,
                      checkpoint_every=1)
        except FloatingPointError as exc:
            message = str(exc)
        return Row("training diverges (learning_rate_init=1.0, plain SGD)",
                   f"`FloatingPointError`: \"{_short(message, 80)}\"",
                   f"the last good checkpoint stays the latest (`{latest_checkpoint(ckpt).name}`)",
                   None)

    def bad_rows(self) -> Row:
        from pipeline.io import quarantine_report, read
        from pipeline.preprocessing import Preprocessor

        rng = np.random.default_rng(1)
        lines = ["a,b,c,y"]
        for i in range(600):
            a, b, c = rng.standard_normal(3)
            row = f"{a:.6f},{b:.6f},{c:.6f},{int(a + b > 0)}"
            if i % 50 == 7:
                row += ",extra"
            elif i % 50 == 21:
                row = f"abc,{b:.6f},{c:.6f},0"
            elif i % 50 == 33:
                row = f"{a:.6f},inf,{c:.6f},1"
            lines.append(row)
        path = self.workdir / "bad.csv"
        path.write_text("\n".join(lines) + "\n")
        qpath = self.workdir / "quarantine"
        with self.client.as_current():
            df = read(path, on_bad_rows="quarantine", quarantine_path=qpath, blocksize=4096)
            prep = Preprocessor(label="y").fit(df)
            X, y = prep.transform_xy(df)
            model = pc.fit_model(self.client, X, y, max_iter=3)
        report = quarantine_report(qpath)
        n = model.train_summary_["n_samples"]
        return Row("bad input rows (malformed line, wrong type, inf) with "
                   "`on_bad_rows=\"quarantine\"`",
                   f"training on the good rows; `quarantine_report`: {report['by_reason']}",
                   f"every row: 600 in = {n} trained + {report['rows_quarantined']} in the "
                   "quarantine (Parquet, with file, line, column and reason)",
                   None)

    def tls_without_certificate(self) -> Row:
        tls = pc.make_tls_files(self.workdir / "certs")
        cluster = pc.ProcCluster(self.workdir / "tls", tls=tls)
        try:
            address = cluster.start_scheduler()
            ctx = ssl.create_default_context(cafile=str(tls.ca_file))
            t = time.perf_counter()
            try:
                asyncio.run(_identity(address, ssl_context=ctx))
                message = "ACCEPTED"
            except OSError:
                message = "refused"
            seconds = time.perf_counter() - t
            line = cluster.wait_for_log("scheduler", "TLS handshake failed")
            reason = line.split("]")[0].split("[SSL: ")[-1]  # e.g. PEER_DID_NOT_RETURN_A_...
        finally:
            cluster.close()
        return Row("client without a certificate connects to a TLS cluster",
                   f"{message}: the TLS handshake fails (scheduler log: `{reason}`)",
                   "nothing reaches the cluster",
                   seconds)

    def close(self) -> None:
        self.client.close(timeout=10)
        self.cluster.close()


async def _identity(address: str, **connection_args: Any) -> Any:
    from distributed.comm import connect

    comm = await connect(address, timeout=5, **connection_args)
    try:
        await comm.write({"op": "identity"})
        return await comm.read()
    finally:
        comm.abort()


def _set_allowed_failures(value: int | None, dask_scheduler: Any = None) -> None:
    dask_scheduler.allowed_failures = (
        dask.config.get("distributed.scheduler.allowed-failures") if value is None else value)


def _warm_up() -> None:
    import pipeline.estimators  # noqa: F401 (imports the library and its dependencies)


def _check_died(marker: Path) -> None:
    if pc.victim(marker) is None:
        raise RuntimeError(f"the fault armed with {marker} was never triggered")


def _events(n: int) -> str:
    return f"{n} `retry` event" + ("" if n == 1 else "s")


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run(workdir: Path) -> list[Row]:
    bench = Bench(workdir)
    rows = []
    faults: list[Callable[[], Row]] = [
        bench.kill_between_rounds,
        lambda: bench.die_in_task("partition_grad", 9,
                                  "worker dies inside a block's gradient task (round 5)"),
        lambda: bench.die_in_task("combine_grads", 4,
                                  "worker dies inside the tree reduction (`combine_grads`)"),
        lambda: bench.die_in_task("partition_grad", 9,
                                  "worker dies inside a task with `allowed-failures=0` "
                                  "(the scheduler fails the round: `KilledWorker`)", 0),
        bench.kill_building_blocks,
        bench.kill_preprocessing,
        bench.lose_all_workers,
        bench.kill_client,
        bench.diverge,
        bench.bad_rows,
    ]
    try:
        for fault in faults:
            bench.healthy()
            rows.append(fault())
            print(f"done: {rows[-1].fault}", file=sys.stderr)
    finally:
        bench.close()
    rows.insert(1, bench.kill_with_nanny())
    rows.append(bench.tls_without_certificate())
    return rows


def table(rows: list[Row]) -> str:
    out = ["| fault | what the user sees | what is kept | recovery time (s) |",
           "|---|---|---|---|"]
    for r in rows:
        secs = "–" if r.seconds is None else f"{r.seconds:.2f}"
        out.append(f"| {r.fault} | {r.sees} | {r.kept} | {secs} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # convergence warnings of the fixed training budgets
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        rows = run(Path(tmp))
    md = table(rows)
    print(md)
    if args.output is not None:
        import platform

        import distributed

        today = datetime.date.today().isoformat()
        args.output.write_text(
            "# Fault matrix\n\n"
            "What each fault does to a training run on a real multi-process cluster: a "
            "`dask scheduler` and two single-threaded `dask worker` processes (no nanny unless "
            "stated) on 127.0.0.1, 4,000 rows in 4 blocks, an MLP 8→16→1 trained full-batch "
            "(SGD, 25 rounds) unless stated. Faults are real `SIGKILL`s of real processes. The "
            "same faults are asserted by `tests/reliability/` (`pytest -m slow "
            "tests/reliability`).\n\n"
            f"Measured {today} on {platform.machine()} ({_cpus()} cores, shared VM: times are "
            f"noisy), distributed {distributed.__version__}, in "
            f"{time.perf_counter() - started:.0f} s, with\n\n"
            "```\npython benchmarks/fault_matrix.py --output docs/fault_matrix.md\n```\n\n"
            + md + "\n\n"
            "Recovery time: for a lost worker, the time the disrupted rounds took beyond a "
            "typical round (`train_summary_[\"recovery_seconds\"]`, also in each `retry` "
            "event); for a fault before training (blocks, preprocessing), the extra time over "
            "the same step without the fault; for a fatal fault, the time from the fault to the "
            "error; for the client kill, the whole rerun (process start, connect, rebuild the "
            "blocks, remaining epochs); for the TLS refusal, the time to the refusal. The blocks "
            "here are small (1,000 rows), so rebuilding a lost worker's blocks from lineage takes "
            "milliseconds; it grows with the cost of reading and preprocessing those "
            "partitions.\n\n"
            "Knobs (dask config): `pipeline.train.retries` (3: resubmissions of a failed "
            "round), `pipeline.train.no-workers-timeout` (30 s), "
            "`pipeline.train.watchdog-interval` (1 s: how often a slow round checks that "
            "workers are left), and distributed's `distributed.scheduler.worker-ttl` (set it "
            "low, e.g. 5 s, so a hung worker is noticed; a killed one is noticed at once).\n"
        )


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
