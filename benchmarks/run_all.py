"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

    python benchmarks/run_all.py            # full run (hours on 2 cores: the accuracy
                                            # benchmark's budget is 600 s per run)
    python benchmarks/run_all.py --quick    # smaller sizes (tens of minutes)
    python benchmarks/run_all.py --only overhead,memory
    python benchmarks/run_all.py --only accuracy \
        --ours-kw '{}' --ours-kw '{"sync": "average", "local_steps": 32, "outer_momentum": 0.9}'

Each benchmark runs in its own process (fresh clusters, no shared state) with one BLAS/OpenMP
thread per process; its section is kept as JSON in ``benchmarks/results/`` and RESULTS.md is
rebuilt from all of them, so ``--only`` refreshes some sections and keeps the others (each
section states when and how it was measured). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    BENCH_DIR,
    OtherLoad,
    fmt,
    log,
    machine_info,
    render_section,
    wait_for_quiet,
)

BENCHMARKS = {  # name -> module, in run order
    "throughput": "bench_throughput",
    "worker_kernel": "bench_worker_kernel",
    "client_fit": "bench_client_fit",
    "demo": "bench_demo",
    "overhead": "bench_round_overhead",
    "preprocessing": "bench_preprocessing",
    "accuracy": "bench_time_to_accuracy",
    "memory": "bench_memory",
    "serving": "bench_serving",
    "compression": "bench_compression",
    "cnn_kernel": "bench_cnn_kernel",
    "images": "bench_images",
    "quality": "bench_quality_section",
    "tabular_scale": "bench_tabular_scale",
    "stores": "bench_stores",
    "larger_than_memory": "bench_larger_than_memory",  # bench_stores section 3 alone
}
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
NOTE = os.path.join(BENCH_DIR, "where_time_goes.md")


def _run_one(name: str, quick: bool, timeout: float,
             extra: list[str] | None = None) -> dict[str, Any]:
    module = BENCHMARKS[name]
    out = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = out + ".tmp"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               BENCH_ROOT_PID=str(os.getpid()), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(BENCH_DIR, f"{module}.py"), "--json", tmp]
    if quick:
        cmd.append("--quick")
    cmd += extra or []
    started = time.time()
    with OtherLoad(interval=2.0) as load:
        proc = subprocess.run(cmd, env=env, cwd=os.path.dirname(BENCH_DIR), timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=None, check=False)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "seconds": time.time() - started, "quick": quick, "other_load": load.summary(),
            "returncode": proc.returncode,
            "argv": " ".join(["python benchmarks/run_all.py", *sys.argv[1:]])}
    if proc.returncode != 0 or not os.path.exists(tmp):
        sec = {"title": name, "command": f"python benchmarks/run_all.py --only {name}",
               "tables": [], "targets": [], "notes": [
                   f"FAILED (exit {proc.returncode}); see the run's stderr."], "raw": {}}
    else:
        with open(tmp) as f:
            sec = json.load(f)
        os.remove(tmp)
    sec["meta"] = meta
    with open(out, "w") as f:
        json.dump(sec, f, indent=1, default=str)
    return sec


def _load_sections() -> dict[str, dict[str, Any]]:
    out = {}
    for name in BENCHMARKS:
        path = os.path.join(RESULTS_DIR, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


def _profile_ranking(sec: dict[str, Any]) -> list[str]:
    lines = []
    for p in sec.get("raw", {}).get("profiles", []):
        if p.get("interval"):
            continue
        s = p["summary"]
        total = next((v for k, v in s.items() if k.startswith("==")), float("nan"))
        phases = sorted(((v, k) for k, v in s.items()
                         if not k.startswith(("_", "==", "client: build", "client: log"))),
                        reverse=True)[:4]
        lines.append(f"- K = {p['K']} blocks, {p.get('mode', '')}: round {fmt(1e3 * total)} ms;"
                     " largest phases: "
                     + "; ".join(f"{k} {fmt(1e3 * v)} ms" for v, k in phases) + ".")
    return lines


def render(info: dict[str, Any], sections: dict[str, dict[str, Any]], command: str) -> str:
    v = info["versions"]
    out = [
        "# Benchmark results",
        "",
        f"Measured by {command}; assembled on {info['date']}. Every figure below names the "
        "command that "
        "produced it; each section says when it ran, how long it took and how busy the rest "
        "of the machine was (other processes' CPU, in cores, sampled every 2 s: this is a "
        "shared 2-core VM, so compare ratios measured in the same run, not absolute numbers "
        "across runs). Medians of the stated number of runs.",
        "",
        "## Machine",
        "",
        f"- {info['nproc']} CPUs: {info['cpu']}; {info['memory_gib']} GiB memory; "
        f"{info['platform']}",
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- BLAS: {', '.join(info['blas']) or '?'}; environment: "
        + (", ".join(f"{k}={val}" for k, val in info["env"].items()) or "-")
        + ". Every benchmark process and worker runs with OMP_NUM_THREADS=1 "
        "(OPENBLAS/MKL likewise); PyTorch's thread count is set explicitly.",
        "",
        "## Targets",
        "",
        "| benchmark | target | measured | |",
        "|---|---|---|---|",
    ]
    for name, sec in sections.items():
        for t in sec["targets"]:
            out.append(f"| {name} | {t['target']} | {t['measured']} | {t['met']} |")
    out.append("")
    if os.path.exists(NOTE):
        with open(NOTE) as f:
            out += [f.read().rstrip(), ""]
    if "overhead" in sections:
        rank = _profile_ranking(sections["overhead"])
        if rank:
            out += ["Measured in the run below (profile tables in the round-overhead section):",
                    "", *rank, ""]
    for sec in sections.values():
        meta = sec.get("meta", {})
        load = meta.get("other_load", {})
        text = render_section(sec)
        head, _, rest = text.partition("\n")
        out += [head, "",
                f"Ran {meta.get('started', '?')}, {fmt(meta.get('seconds', float('nan')))} s"
                f"{' (--quick)' if meta.get('quick') else ''}; other processes' CPU: median "
                f"{fmt(load.get('median'))}, p90 {fmt(load.get('p90'))} cores.",
                rest.lstrip("\n"), ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~5 min)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS",
                        help="before each benchmark, wait up to this long for other "
                        "processes to use < 0.3 cores (default 120, 20 with --quick)")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="per-benchmark time limit in seconds")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "RESULTS.md"))
    parser.add_argument("--render-only", action="store_true",
                        help="rebuild RESULTS.md from benchmarks/results/*.json, run nothing")
    parser.add_argument("--ours-kw", action="append", metavar="JSON",
                        help="accuracy benchmark: estimator kwargs of one 'ours' configuration "
                        "(repeatable, e.g. '{\"sync\": \"average\", \"local_steps\": 32}'; "
                        "default: the estimator's defaults)")
    parser.add_argument("--accuracy-args", default="",
                        help="more options for bench_time_to_accuracy.py, one string "
                        "(e.g. '--datasets synthetic --rows 400000')")
    args = parser.parse_args()
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if args.wait_quiet is None:
        args.wait_quiet = 20.0 if args.quick else 120.0
    os.makedirs(RESULTS_DIR, exist_ok=True)
    t0 = time.time()
    for name in [] if args.render_only else names:
        busy = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else 0.0
        log(f"== {name} (other processes use {busy:.2f} cores)")
        try:
            extra = None
            if name == "accuracy":
                extra = [a for kw in args.ours_kw or [] for a in ("--ours-kw", kw)]
                extra += shlex.split(args.accuracy_args)
            sec = _run_one(name, args.quick, args.timeout, extra)
        except subprocess.TimeoutExpired:
            log(f"{name}: timed out after {args.timeout:.0f} s")
            continue
        log(f"== {name} done in {sec['meta']['seconds']:.0f} s")
    sections = _load_sections()
    runs = sorted({sec.get("meta", {}).get("argv", "?") for sec in sections.values()})
    command = " and ".join(f"`{r}`" for r in runs)
    with open(args.out, "w") as f:
        f.write(render(machine_info(), sections, command))
    log(f"wrote {args.out} ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
