"""Tables and targets of the time-to-accuracy benchmark (:mod:`bench_time_to_accuracy`), from
the recorded curves: every figure is computed from a run's per-epoch (accuracy, seconds)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from common import fmt, table, target


def first_reaching(c: dict[str, Any], goal: float) -> tuple[float, float]:
    """(epochs, seconds) at the first epoch whose accuracy is ≥ ``goal``; (inf, inf) if none."""
    for k, (a, s) in enumerate(zip(c["acc"], c["seconds"], strict=True), start=1):
        if a >= goal:
            return float(k), float(s)
    return math.inf, math.inf


def med(xs: list[float]) -> float:
    """Median that keeps inf (a run that did not reach the target)."""
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return math.nan
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _acc(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "-"


def reach(x: float) -> Any:
    return x if math.isfinite(x) else "NOT met"


def _groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in runs:
        out.setdefault(c["key"], []).append(c)
    return out


def _ratio_target(name: str, what: str, mine: float, ref: float, limit: float) -> dict[str, Any]:
    if not math.isfinite(mine):
        return target(name, f"{what}: ours did not reach the target within the budget", False)
    if not math.isfinite(ref):
        return target(name, f"{what}: ours {fmt(mine)}, the reference did not reach it", True)
    r = mine / ref
    return target(name, f"{what}: {fmt(mine)} vs {fmt(ref)} ({r:.2f}×)", r <= limit)


def goal_of(runs: list[dict[str, Any]], fraction: float) -> tuple[float, float]:
    """(target accuracy, PyTorch's best): ``fraction`` × the best test accuracy of any PyTorch
    run (either thread count, any seed); (nan, nan) without one, and nothing meets nan."""
    torch_accs = [max(c["acc"]) for c in runs if c["kind"] == "torch" and c["acc"]]
    torch_best = max(torch_accs) if torch_accs else math.nan
    return fraction * torch_best, torch_best


def _sklearn_accuracy(runs: list[dict[str, Any]]) -> float:
    """Median over seeds of scikit-learn's best test accuracy (it always ends its epochs)."""
    return med([max(c["acc"]) for c in runs if c["kind"] == "sklearn"])


def ours_stop_accuracy(name: str, runs: list[dict[str, Any]], fraction: float) -> float:
    """The highest accuracy a target of :func:`render_dataset` looks for on ours' curves, from
    the scikit-learn and PyTorch runs: the target accuracy, and on diamonds also
    scikit-learn's accuracy. Ours' curve can end at the first epoch that reaches it."""
    goal, _ = goal_of(runs, fraction)
    if name == "diamonds":
        return max(goal, _sklearn_accuracy(runs))  # max(nan, x) is nan: then it never stops
    return goal


def render_dataset(name: str, res: dict[str, Any], o: dict[str, Any]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The dataset's tables (summary, curves of seed 0), its targets and its target accuracy."""
    runs = res["runs"]
    goal, torch_best = goal_of(runs, o["fraction"])
    groups = _groups(runs)
    summary, curves, reached = [], [], {}
    width = max(1, *(len(c["acc"]) for c in runs))
    for key, group in groups.items():
        hits = [first_reaching(c, goal) for c in group]
        e, s = med([h[0] for h in hits]), med([h[1] for h in hits])
        reached[key] = (e, s)
        # ours: the last fit's seconds over its epochs, building the blocks included
        per_epoch = [c["seconds"][-1] / len(c["seconds"]) for c in group if c["seconds"]]
        done = [c for c in group if c["acc"]]  # PyTorch may abandon its first epoch
        summary.append([group[0]["run"] + ("" if len(done) == len(group) else
                                           " (first epoch abandoned past 2× the budget)"),
                        group[0]["blocks"] or "-", med([len(c["acc"]) for c in group]),
                        _acc(med([max(c["acc"]) for c in done])),
                        _acc(med([c["acc"][-1] for c in done])),
                        reach(e), reach(s),
                        med(per_epoch) if per_epoch else "-",
                        f"{sum(math.isfinite(h[0]) for h in hits)}/{len(hits)}"])
        c0 = group[0]
        cells = [f"{a:.4f} @ {fmt(t)} s" for a, t in zip(c0["acc"], c0["seconds"], strict=True)]
        curves.append([c0["run"], *cells, *["-"] * (width - len(cells))])
    t1 = table(["run", "blocks", "epochs run", "best test acc", "final test acc",
                "epochs to target", "s to target", "s per epoch", "runs reaching"], summary,
               f"**{name}**: {res['description']}. Target accuracy {goal:.4f} = "
               f"{o['fraction']} × PyTorch's best ({torch_best:.4f}). Medians over seeds. "
               "Ours stops at the first epoch count that reaches the target (on diamonds, the "
               "higher of it and scikit-learn's accuracy), so its best and final accuracy are "
               "there; its seconds per epoch are the last fit's, building the blocks included.")
    t2 = table(["run (seed 0)", *[f"epoch {k + 1}: acc @ s" for k in range(width)]], curves,
               f"**{name}**: test accuracy after each epoch and the wall seconds at its end "
               "(ours: a separate fit(max_iter=k) per epoch count k, the whole call timed, "
               "building the blocks included).")
    targets = []
    for i in range(len(o["kws"])):
        if f"ours{i}" not in groups:
            continue
        label, mine = groups[f"ours{i}"][0]["run"], reached[f"ours{i}"][1]
        targets.append(_ratio_target(f"{name}: seconds to target, {label}, 2 workers ≤ 0.6× "
                                     "PyTorch (2 threads, one process)", "s", mine,
                                     reached["torch2"][1], 0.6))
        targets.append(_ratio_target(f"{name}: seconds to target, {label} ≤ 0.5× scikit-learn",
                                     "s", mine, reached["sklearn"][1], 0.5))
    for i in range(len(o["kws"])):
        one, many = reached.get(f"ours{i}-K1"), reached.get(f"ours{i}-K64")
        if one and many:
            label = groups[f"ours{i}"][0]["run"] if f"ours{i}" in groups else f"ours {i}"
            targets.append(_ratio_target(f"{name}: epochs to target with 64 blocks ≤ 1.25× with "
                                         f"1 block, {label}", "epochs", many[0], one[0], 1.25))
    if name == "diamonds":  # the real dataset
        sk = groups["sklearn"]
        sk_acc = _sklearn_accuracy(runs)
        # each run's time to its own best accuracy: against the median, a run that ends
        # below it never reaches it and the median time of two runs became infinite ("n/a")
        sk_s = med([first_reaching(c, max(c["acc"]))[1] for c in sk])
        for i in range(len(o["kws"])):
            mine_runs = groups.get(f"ours{i}")
            if not mine_runs:
                continue
            mine = med([first_reaching(c, sk_acc)[1] for c in mine_runs])
            targets.append(target(
                f"{name} (real data): {mine_runs[0]['run']} reaches scikit-learn's accuracy "
                f"({sk_acc:.4f}, same architecture and epoch budget) in less wall time than "
                "scikit-learn",
                (f"ours {fmt(mine)} s" if math.isfinite(mine) else "ours: not reached")
                + f" vs scikit-learn {fmt(sk_s)} s", math.isfinite(mine) and mine < sk_s))
    return [t1, t2], targets, float(np.float64(goal))
