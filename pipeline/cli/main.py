"""``pipeline`` console script."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["main"]

ROWS_PER_DEMO_PARTITION = 1_000_000


def _demo_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {"cluster": {}, "data": {"generate": {}}, "train": {}, "output": {}}
    if args.rows is not None:
        over["data"]["generate"]["rows"] = args.rows
    if args.partitions is not None:
        over["data"]["generate"]["partitions"] = args.partitions
    elif args.rows is not None and args.rows > 16 * ROWS_PER_DEMO_PARTITION:
        # keep a partition (one read task's pandas frame) near 1M rows, whatever --rows is
        over["data"]["generate"]["partitions"] = -(-args.rows // ROWS_PER_DEMO_PARTITION)
    if args.workers is not None:
        over["cluster"]["n_workers"] = args.workers
    if args.epochs is not None:
        over["train"]["max_iter"] = args.epochs
    if args.output is not None:
        over["output"]["dir"] = args.output
    if getattr(args, "sync", None):
        over["train"]["sync"] = args.sync
    if getattr(args, "memory_limit", None):
        over["cluster"]["memory_limit"] = args.memory_limit
    if getattr(args, "block_store", None):
        over["train"]["block_store"] = args.block_store
    if getattr(args, "dashboard_address", None):
        over["cluster"]["dashboard_address"] = args.dashboard_address
    return over


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..config import bundled_config, load_config
    from .job import run_job

    over = _demo_overrides(args)
    if args.images:  # the bundled digits, not the synthetic table (rows/partitions unused)
        del over["data"]
    cfg = load_config(bundled_config("demo_images.yaml" if args.images else "demo.yaml"), over)
    run_job(cfg, progress=not args.quiet, keep_alive=args.keep_alive)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .job import run_job

    cfg = load_config(args.config)
    run_job(cfg, progress=not args.quiet)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from analytics.profile import profile

    from ..io import read
    from .job import open_client
    from .progress import step

    with open_client(_cluster(args)):
        step(f"profiling {args.path}")
        prof = profile(read(args.path, format=args.format))
        print(prof)
        if args.html:
            print(f"profile: {prof.to_html(args.html)}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..io import read
    from ..persist import load
    from .job import open_client
    from .progress import step

    if args.onnx:
        return _predict_onnx(args)
    with open_client(_cluster(args)):
        saved = load(args.model)
        if hasattr(saved.model, "image_shape_"):
            raise ValueError(f"{args.model} is an image model: score a folder of images with "
                             "`pipeline export MODEL OUT.onnx` then `pipeline predict --onnx "
                             "OUT.onnx IMAGES OUT`")
        df = read(args.data, format=args.format)
        step(f"scoring {args.data} with {args.model} -> {args.out}")
        keep = [c.strip() for c in args.keep.split(",") if c.strip()] if args.keep else None
        write_predictions(saved, df, args.out, proba=args.proba, keep=keep)
    print(f"predictions: {args.out}")
    return 0


def _predict_onnx(args: argparse.Namespace) -> int:
    from ..export import OnnxModel, predict_onnx
    from ..io import read
    from .job import open_client
    from .onnx_images import is_image_graph, predict_images
    from .progress import step

    model = OnnxModel.from_file(args.model)  # read once here, shipped once to each worker
    with open_client(_cluster(args)):
        if is_image_graph(model):  # DATA: a folder of images (or .npy), see onnx_images
            step(f"scoring images {args.data} with {args.model} (onnxruntime) -> {args.out}")
            predict_images(model, args.data, args.out, proba=args.proba)
            print(f"predictions: {args.out}")
            return 0
        df = read(args.data, format=args.format)
        step(f"scoring {args.data} with {args.model} (onnxruntime) -> {args.out}")
        predict_onnx(df, model, proba=args.proba).to_parquet(args.out, write_index=False)
    print(f"predictions: {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx
    from ..persist import load

    saved = load(args.model)
    validation = None
    if args.validation and hasattr(saved.model, "image_shape_"):  # an image folder
        from .onnx_images import validation_images

        validation = validation_images(args.validation, saved.model)
    elif args.validation:
        from ..io import read

        # The label: given, or named by the saved preprocessor or by the run configuration
        # (`pipeline run` saves a tabular model, which has no separate preprocessor, with it).
        config = saved.metadata.get("config") or {}
        label = (args.label or getattr(saved.preprocessor, "label", None)
                 or (config.get("data") or {}).get("label"))
        if label is None:
            raise ValueError("--validation needs --label: the model was saved without a "
                             "preprocessor or run configuration that names the label column")
        # A validation set is small: read it in this process (threads), no cluster needed.
        df = read(args.validation, format=args.format).compute()
        if label not in df.columns:
            raise ValueError(f"label column {label!r} is not in {args.validation}; columns: "
                             f"{list(df.columns)!r}")
        validation = (df.drop(columns=[label]), df[label])
    report = export_onnx(saved.model, args.out, preprocessor=saved.preprocessor,
                         quantize=args.quantize, validation=validation,
                         max_accuracy_drop=args.max_accuracy_drop, on_drop=args.on_drop)
    print(report)
    return 0


def _cluster(args: argparse.Namespace) -> Any:
    from ..config import ClusterConfig

    if args.scheduler:
        return ClusterConfig(kind="address", address=args.scheduler)
    return ClusterConfig(n_workers=args.workers, dashboard_address="127.0.0.1:0")


def write_predictions(saved: Any, df: Any, out: str, *, proba: bool = False,
                      keep: list[str] | None = None) -> None:
    """Score ``df`` lazily, partition by partition, and write Parquet (one file per partition).

    ``keep`` columns of ``df`` (an id, a timestamp) are written next to the predictions.
    """
    import dask.dataframe as dd

    from ..scoring import output_names, with_columns

    X = saved.transform(df)
    if proba and hasattr(saved.model, "predict_proba"):
        scores = saved.model.predict_proba(X)
        names = output_names(scores, saved.model.classes_, proba=True)
    else:
        scores = saved.model.predict(X)
        names = output_names(scores)
    if keep:
        frame = with_columns(df, keep, scores, names)
    else:
        frame = dd.from_dask_array(scores if scores.ndim == 2 else scores[:, None], columns=names)
    frame.to_parquet(out, write_index=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipeline",
        description="Profile, preprocess, train, evaluate and score tabular data on Dask.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="generate a dataset and run the whole pipeline on a local "
                                    "cluster")
    d.add_argument("--rows", type=int, help="rows to generate (default 1,000,000)")
    d.add_argument("--partitions", type=int, help="Parquet files/partitions (default 16; one per million rows above 16M)")
    d.add_argument("--workers", type=int, help="local workers (default 2)")
    d.add_argument("--epochs", type=int, help="training epochs (default 10)")
    d.add_argument("--sync", choices=["gradient", "average"], help="synchronisation mode")
    d.add_argument("--block-store", choices=["memory", "disk", "stream", "auto"],
                   help="where training blocks live: worker memory (default), the workers' "
                        "local disks (larger than memory), re-read every epoch, or auto")
    d.add_argument("--memory-limit", help="memory limit per local worker, e.g. 2GiB")
    d.add_argument("--output", help="output directory (default ./pipeline-output)")
    d.add_argument("--dashboard-address", help="dashboard bind address (default "
                                               "127.0.0.1:8787)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--keep-alive", action="store_true",
                   help="keep the cluster and its dashboard up after the job, until Ctrl-C")
    d.add_argument("--images", action="store_true", help="image demo: scikit-learn's digits as "
                   "PNG folders, a convolutional ImageClassifier, per-class report")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("run", help="run a job described by a YAML/TOML config")
    r.add_argument("config")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_cmd_run)

    pr = sub.add_parser("profile", help="profile a dataset (one pass)")
    pr.add_argument("path")
    pr.add_argument("--format", choices=["csv", "parquet"])
    pr.add_argument("--html", help="also write a self-contained HTML profile here")
    pr.add_argument("--workers", type=int, help="local workers (default 2)")
    pr.add_argument("--scheduler", help="use a running cluster at this address instead")
    pr.set_defaults(func=_cmd_profile)

    ex = sub.add_parser("export", help="write a saved model (and its preprocessor) as one ONNX "
                                       "graph over the raw columns")
    ex.add_argument("model", help="directory written by model.save")
    ex.add_argument("out", help="ONNX file to write")
    ex.add_argument("--quantize", choices=["int8"], help="int8 weights, one scale per output "
                                                         "channel (pipeline.export.quantize)")
    ex.add_argument("--validation", help="CSV/Parquet data with the label (an image model: a "
                                         "folder with one sub-folder per class): score fp32 "
                                         "(and int8) on it and refuse an int8 model that loses "
                                         "more than --max-accuracy-drop")
    ex.add_argument("--label", help="label column of --validation (default: the "
                                    "preprocessor's or the run configuration's)")
    ex.add_argument("--format", choices=["csv", "parquet"], help="format of --validation")
    ex.add_argument("--max-accuracy-drop", type=float, default=0.003,
                    help="largest allowed fp32 - int8 accuracy (or R²) (default 0.003)")
    ex.add_argument("--on-drop", choices=["raise", "warn"], default="raise",
                    help="above the threshold: fail without writing (default) or warn")
    ex.set_defaults(func=_cmd_export)

    pd_ = sub.add_parser("predict", help="score data with a saved model, lazily, to Parquet")
    pd_.add_argument("model", help="directory written by model.save, or an .onnx file with "
                                   "--onnx")
    pd_.add_argument("data", help="Parquet/CSV; with --onnx and an image model's graph, a "
                                  "folder of images (one sub-folder per class, written as "
                                  "true_label) or a .npy file, read in file order")
    pd_.add_argument("out")
    pd_.add_argument("--format", choices=["csv", "parquet"])
    pd_.add_argument("--proba", action="store_true", help="write class probabilities")
    pd_.add_argument("--onnx", action="store_true",
                     help="MODEL is an ONNX file (pipeline export): score it with onnxruntime, "
                          "one cached single-thread session per worker process")
    pd_.add_argument("--keep", metavar="COLUMN[,COLUMN]",
                     help="input columns to write next to the predictions (e.g. an id)")
    pd_.add_argument("--workers", type=int, help="local workers (default 2)")
    pd_.add_argument("--scheduler", help="use a running cluster at this address instead")
    pd_.set_defaults(func=_cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    # One BLAS thread per worker process (inherited by the local workers).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
