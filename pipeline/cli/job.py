"""One job, as a config describes it: read → split → preprocess → train → evaluate → report."""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from sklearn.exceptions import ConvergenceWarning

from ..cluster import workers_info
from ..config import ClusterConfig, RunConfig
from .progress import TrainingProgress, step

__all__ = ["open_client", "run_job"]


@contextlib.contextmanager
def open_client(cfg: ClusterConfig) -> Any:
    """A client for the configured cluster; an embedded cluster is closed on exit."""
    # Importing analytics.dashboard before an in-process cluster starts registers the training
    # page on the scheduler's dashboard (the scheduler reads its page list at start-up).
    import analytics.dashboard  # noqa: F401
    from analytics.monitor import install

    from ..cluster import connect

    security = None
    if cfg.tls_ca_file:
        from distributed import Security

        security = Security(tls_ca_file=cfg.tls_ca_file, tls_client_cert=cfg.tls_cert,
                            tls_client_key=cfg.tls_key, require_encryption=True)
    if cfg.kind == "local":
        client = connect(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                         dashboard_address=cfg.dashboard_address, device=cfg.device,
                         security=security, memory_limit=cfg.memory_limit or "auto")
        owns_cluster = True
    elif cfg.kind == "address":
        if not cfg.address:
            raise ValueError("cluster.address is required when cluster.kind is 'address'")
        client = connect(cfg.address, security=security)
        owns_cluster = False
    elif cfg.kind == "kubernetes":
        from dask_kubernetes.operator import KubeCluster  # deploy extra

        cluster = KubeCluster.from_name(cfg.kubernetes_cluster or "pipeline",
                                        namespace=cfg.namespace)
        client = cluster.get_client()
        owns_cluster = False
    else:  # slurm
        from dask_jobqueue import SLURMCluster  # deploy extra

        cluster = SLURMCluster(**cfg.jobqueue)
        cluster.scale(jobs=cfg.n_workers or 2)
        from distributed import Client

        client = Client(cluster)
        owns_cluster = True
    try:
        install(client)
        yield client
    finally:
        cluster = client.cluster if owns_cluster else None
        client.close()
        if cluster is not None:
            cluster.close()


def _dashboard_page(client: Any) -> str | None:
    from analytics.dashboard import PAGE as PAGE_PATH

    link = client.dashboard_link
    if not link:
        return None
    return link.rsplit("/status", 1)[0] + PAGE_PATH


def run_job(cfg: RunConfig, *, out: TextIO | None = None, progress: bool = True,
            keep_alive: bool = False) -> dict[str, Any]:
    """Run the whole job; print the results table; return the figures as a dict.

    The dashboard and training-page links are printed to ``out`` as soon as the cluster is up,
    while they work. ``keep_alive=True`` keeps the cluster and its dashboard up after the job
    until Ctrl-C (SIGINT), so the run can still be looked at.
    """
    from analytics import metrics
    from analytics.profile import profile as profile_data
    from analytics.report import report

    from ..datasets import write_demo_dataset
    from ..estimators import MLPClassifier, MLPRegressor
    from ..io import read
    from ..persist import save
    from ..preprocessing import Preprocessor, train_test_split
    from ..tabular import RawColumns, tabular_from_config

    out = out or sys.stdout
    err = sys.stderr if progress else io.StringIO()  # --quiet: progress goes nowhere
    outdir = Path(cfg.output.dir)
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if cfg.data.format == "images" or cfg.model.type == "image_classifier":
        from .image_job import run_image_job

        with open_client(cfg.cluster) as client:
            run_image_job(cfg, client, outdir, results, err, progress)
        results["wall_seconds"] = time.perf_counter() - started
        _print_table(results, out)
        return results
    with open_client(cfg.cluster) as client:
        results["dashboard"] = client.dashboard_link
        results["dashboard_page"] = _dashboard_page(client)
        step(f"cluster: {len(workers_info(client))} workers", err)
        _print_links(results, out)
        data = cfg.data
        path = data.path
        if path is None:
            gen = data.generate
            if gen is None:
                raise ValueError("data.path is not set and data.generate is missing")
            path = str(outdir / "data")
            step(f"writing a synthetic dataset: {gen.rows:,} rows in {gen.partitions} Parquet "
                 f"files to {path}", err)
            write_demo_dataset(path, n_rows=gen.rows, n_partitions=gen.partitions,
                               random_state=gen.seed)
        step(f"reading {path}", err)
        df = read(path, format=data.format, on_bad_rows=data.on_bad_rows,
                  quarantine_path=data.quarantine_path)
        if data.on_bad_rows == "quarantine":
            df = df.persist()  # one read: the quarantine ledger is written once
        results["partitions"] = df.npartitions
        if cfg.output.profile:
            step("profiling the data (one pass)", err)
            prof = profile_data(df)
            results["profile"] = prof.to_html(str(outdir / cfg.output.profile))
            results["rows"] = int(prof.n_rows)
        sp = cfg.split
        parts = train_test_split(df, test_size=sp.test_size, valid_size=sp.valid_size,
                                 random_state=sp.random_state)
        train_df, valid_df, test_df = (parts if len(parts) == 3
                                       else (parts[0], None, parts[1]))
        step("fitting the preprocessor (one pass, tree-reduced statistics)", err)
        pp = cfg.preprocess
        tabular = cfg.model.estimator == "tabular"  # learns its preprocessing inside fit
        prep = RawColumns(data.label) if tabular else Preprocessor(
            label=data.label, categorical=list(data.categorical), impute=pp.impute,
            fill_value=pp.fill_value, scale=pp.scale, max_categories=pp.max_categories,
            add_indicator=pp.add_indicator).fit(train_df)
        X_train, y_train = prep.transform_xy(train_df)
        validation = prep.transform_xy(valid_df) if valid_df is not None else None
        m, t = cfg.model, cfg.train
        Est = MLPClassifier if m.type == "classifier" else MLPRegressor
        model = tabular_from_config(cfg) if tabular else Est(hidden_layer_sizes=tuple(m.hidden_layer_sizes), activation=m.activation,
                    solver=m.solver, alpha=m.alpha, learning_rate=m.learning_rate,
                    learning_rate_init=m.learning_rate_init, momentum=m.momentum,
                    dtype=m.dtype, batch_size=t.batch_size, max_iter=t.max_iter,
                    sync=t.sync, local_steps=t.local_steps, replicas=t.replicas,
                    outer_learning_rate=t.outer_learning_rate,
                    outer_momentum=t.outer_momentum, balance=t.balance,
                    lr_scaling=t.lr_scaling, reference_batch_size=t.reference_batch_size,
                    split_every=t.split_every, block_store=t.block_store,
                    early_stopping=t.early_stopping and validation is not None,
                    n_iter_no_change=t.n_iter_no_change, tol=t.tol,
                    random_state=t.random_state)
        step(f"training {type(model).__name__}{tuple(m.hidden_layer_sizes)} "
             f"({t.sync} sync, batch {t.batch_size}, {t.max_iter} epochs, blocks in "
             f"{t.block_store})", err)
        progress_ctx = (TrainingProgress(client, t.max_iter, err) if progress
                        else contextlib.nullcontext())
        with progress_ctx, warnings.catch_warnings():
            # the epoch budget is the config's choice; the report shows whether loss still falls
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train, validation_data=validation,
                      checkpoint_dir=t.checkpoint_dir, checkpoint_every=t.checkpoint_every,
                      resume=t.resume, preprocessor=prep)
        fit_seconds = model.train_summary_["fit_seconds"]  # one definition: the report's too
        n_train = model.train_summary_["n_samples"]
        results.update(
            train_rows=n_train, epochs=model.n_iter_, fit_seconds=fit_seconds,
            samples_per_s=n_train * model.n_iter_ / model.train_summary_["seconds"],
            rounds=model.train_summary_["rounds"], blocks=model.train_summary_["n_partitions"],
        )
        step("evaluating on the held-out test split", err)
        X_test, y_test = prep.transform_xy(test_df)
        if m.type == "classifier":
            proba = model.predict_proba(X_test)
            y_pred = model.predict(X_test)
            acc = metrics.accuracy_score(y_test, y_pred)
            loss = metrics.log_loss(y_test, proba, labels=model.classes_)
            results.update(test_accuracy=float(acc), test_loss=float(loss))
            if len(model.classes_) == 2:
                results["test_roc_auc"] = float(metrics.roc_auc_score(y_test, proba[:, 1]))
        else:
            y_pred = model.predict(X_test)
            results.update(test_r2=float(metrics.r2_score(y_test, y_pred)),
                           test_mse=float(metrics.mean_squared_error(y_test, y_pred)))
        model_dir = save(outdir / cfg.output.model, model,
                         preprocessor=None if tabular else prep,
                         metadata={"config": asdict(cfg)})
        results["model_dir"] = model_dir
        if cfg.output.report and not tabular:
            step("writing the training report", err)
            results["report"] = report(model, X_test, y_test, str(outdir / cfg.output.report),
                                       config=asdict(cfg))
        results["wall_seconds"] = time.perf_counter() - started
        results.setdefault("rows", None)
        _print_table(results, out)
        if keep_alive:
            _wait_for_interrupt(results, out)
    return results


def _print_links(r: dict[str, Any], out: TextIO) -> None:
    for key, label in (("dashboard", "dashboard"), ("dashboard_page", "training page")):
        if r.get(key):
            out.write(f"{label + ':':<15}{r[key]}\n")
    out.flush()


def _wait_for_interrupt(r: dict[str, Any], out: TextIO) -> None:
    out.write(f"keeping the cluster and its dashboard up ({r.get('dashboard_page') or ''}); "
              "press Ctrl-C to stop\n")
    out.flush()
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        out.write("stopping the cluster\n")
        out.flush()


def _print_table(r: dict[str, Any], out: TextIO) -> None:
    rows = [
        ("rows (train)", f"{r['train_rows']:,}"),
        ("partitions (blocks)", f"{r['partitions']} ({r['blocks']})"),
        ("epochs (rounds)", f"{r['epochs']} ({r['rounds']})"),
        ("fit wall time", f"{r['fit_seconds']:.1f} s"),
        ("training samples/s", f"{r['samples_per_s']:,.0f}"),
    ]
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test log loss"),
                       ("test_roc_auc", "test ROC AUC"), ("test_r2", "test R²"),
                       ("test_mse", "test MSE")):
        if key in r:
            rows.append((label, f"{r[key]:.4f}"))
    rows.append(("total wall time", f"{r['wall_seconds']:.1f} s"))
    width = max(len(k) for k, _ in rows)
    out.write("\nresults\n" + "-" * (width + 20) + "\n")
    for k, v in rows:
        out.write(f"{k:<{width}}  {v}\n")
    out.write("-" * (width + 20) + "\n")
    for key, label in (("model_dir", "model"), ("report", "report"), ("profile", "profile")):
        if r.get(key):
            out.write(f"{label + ':':<15}{r[key]}\n")
    out.flush()


def with_overrides(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """``cfg`` with some fields of some sections replaced."""
    return replace(cfg, **{name: replace(getattr(cfg, name), **vals)
                           for name, vals in sections.items() if vals})
