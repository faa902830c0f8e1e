"""Knowledge distillation: a (smaller) student MLP trained on a teacher's soft predictions.

The targets are computed where the data lives: one ``soft_targets`` task per partition runs the
teacher's forward pass on that partition's features and, with ``alpha < 1``, mixes in the
partition's one-hot labels. The training blocks are built from those tasks on the workers
(:func:`pipeline.blocks.to_blocks` with ``classification=False`` keeps a 2-D float target as
is), so the teacher's probabilities never travel to the client; only row counts do.

Target of a row: ``alpha * softmax(z_teacher / T) + (1 - alpha) * onehot(y)`` (a sigmoid and a
0/1 column for binary problems). Both log-losses of :mod:`pipeline.nn` are linear in the target
and their gradient ``p - y`` holds for any target distribution, so training on the mixed target
is exactly ``alpha * CE(teacher_T, student) + (1 - alpha) * CE(y, student)``. What it is not:
Hinton et al.'s loss also divides the *student's* logits by ``T`` (and multiplies by ``T²``);
the network spec has no temperature, so the student is trained at ``T = 1`` against softened
teacher targets.

This module drives the functional training core with the student estimator's own helpers
(``_train_config``, ``_spec``, ``_set_fitted``), because ``MLPClassifier.fit`` one-hot encodes
``y`` itself and cannot take probability targets; see :func:`distill`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import nn
from .backend import frame_to_array, to_host, values_of

__all__ = ["distill", "narrow_params", "narrows", "soft_targets"]


def soft_targets(part: Any, labels: Any, params: np.ndarray, spec: nn.MLPSpec,
                 classes: np.ndarray, temperature: float, alpha: float,
                 dtype: str) -> pd.DataFrame:
    """Targets of one partition, ``(rows, 1)`` for binary teachers, ``(rows, k)`` otherwise."""
    X = frame_to_array(part, dtype=dtype)
    columns = [f"target_{i}" for i in range(spec.n_outputs)]
    # the targets are a host (pandas) frame whatever the partition: a cuDF index comes along
    index = part.index.to_pandas() if hasattr(part.index, "to_pandas") else part.index
    if X.shape[0] == 0:
        return pd.DataFrame(np.zeros((0, spec.n_outputs), dtype=dtype), index=index,
                            columns=columns)
    # logits computed on X's device, then copied to the host (np.asarray refuses CuPy)
    z = to_host(nn.decision_function(spec, params, X)).astype(np.float64) / temperature
    if spec.out_activation == "logistic":
        soft = 1.0 / (1.0 + np.exp(-z))
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        soft = e / e.sum(axis=1, keepdims=True)
    if alpha < 1.0:
        idx = np.searchsorted(classes, to_host(values_of(labels)))
        hard = np.zeros_like(soft)
        if spec.n_outputs == 1:
            hard[:, 0] = idx == 1
        else:
            hard[np.arange(len(idx)), idx] = 1.0
        soft = alpha * soft + (1.0 - alpha) * hard
    return pd.DataFrame(soft.astype(dtype), index=index, columns=columns)


def narrows(teacher_spec: nn.MLPSpec, student_spec: nn.MLPSpec) -> bool:
    """Whether the student is the teacher with fewer hidden units: same inputs, outputs, depth,
    activation and loss, each hidden layer no wider than the teacher's."""
    t, s = teacher_spec.layer_sizes, student_spec.layer_sizes
    return (len(t) == len(s) and t[0] == s[0] and t[-1] == s[-1]
            and all(b <= a for a, b in zip(t[1:-1], s[1:-1], strict=True))
            and teacher_spec.activation == student_spec.activation
            and teacher_spec.loss == student_spec.loss)


def narrow_params(teacher_spec: nn.MLPSpec, teacher_params: np.ndarray,
                  student_spec: nn.MLPSpec) -> np.ndarray:
    """The student's flat parameters (float64, host) cut out of the teacher's: in each hidden
    layer, the ``k`` units of largest ``|W_in[:, j]| * |W_out[j, :]|`` (L2 norms of the weights
    into and out of unit ``j``: how much signal the unit can pass on), layer after layer, with
    their weights and biases; ties go to the lower index. Structured pruning as a starting point
    for distillation: the student starts as a sub-network of its teacher instead of at random.
    """
    if not narrows(teacher_spec, student_spec):
        raise ValueError(f"the student {student_spec.layer_sizes} is not a narrower copy of the "
                         f"teacher {teacher_spec.layer_sizes} (same depth, activation, inputs "
                         "and outputs, no wider hidden layers)")
    layers = [(np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64))
              for W, b in nn.unpack(teacher_spec, to_host(teacher_params))]
    out = np.zeros(student_spec.n_params, dtype=np.float64)
    keep = np.arange(teacher_spec.layer_sizes[0])
    for i, ((W, b), (Ws, bs)) in enumerate(zip(layers, nn.unpack(student_spec, out),
                                                strict=True)):
        W = W[keep]
        if i < len(layers) - 1:
            importance = np.linalg.norm(W, axis=0) * np.linalg.norm(layers[i + 1][0], axis=1)
            keep = np.sort(np.argsort(-importance, kind="stable")[: Ws.shape[1]])
        else:
            keep = np.arange(W.shape[1])
        Ws[...] = W[:, keep]
        bs[...] = b[keep]
    return out


def distill(teacher: Any, student: Any, X: Any, y: Any = None, *, temperature: float = 2.0,
            alpha: float = 1.0, validation_data: tuple[Any, Any] | None = None,
            init: str = "auto", client: Any = None) -> Any:
    """Fit the unfitted ``student`` (an ``MLPClassifier``) on ``teacher``'s soft predictions.

    Parameters
    ----------
    teacher : fitted MLPClassifier
    student : MLPClassifier
        Its hyperparameters (hidden sizes, solver, epochs, ``random_state``...) are used as in
        ``fit``; it gets the teacher's ``classes_``.
    X : dask DataFrame of features (e.g. ``prep.transform(train)``)
    y : dask Series of labels, aligned with ``X``; needed when ``alpha < 1``.
    temperature : float > 0
        Softens the teacher's probabilities (``softmax(z / T)``).
    alpha : float in [0, 1]
        Weight of the soft targets; ``1 - alpha`` goes to the one-hot labels.
    validation_data : (X_valid, y_valid), optional
        Hard labels, scored (accuracy) every epoch.
    init : {"auto", "teacher", "random"}
        The student's starting parameters: ``"teacher"`` cuts them out of the teacher
        (:func:`narrow_params`; the student must be a narrower copy of it), ``"random"`` draws
        them as ``fit`` does, ``"auto"`` is ``"teacher"`` whenever the student is a narrower
        copy (:func:`narrows`) and ``"random"`` otherwise.

    Returns
    -------
    student, fitted. Training is the package's data-parallel core, so it is bit-identical for
    any number of workers (blocks depend on row counts only).
    """
    import dask.dataframe as dd

    from .blocks import to_blocks
    from .cluster import current_client
    from .train import train

    if not hasattr(teacher, "classes_"):
        raise ValueError("the teacher must be a fitted MLPClassifier")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not isinstance(X, dd.DataFrame):
        raise TypeError(f"X must be a dask DataFrame of features, got {type(X).__name__}")
    if alpha < 1.0 and y is None:
        raise ValueError("alpha < 1 mixes in the labels: pass y")
    if init not in ("auto", "teacher", "random"):
        raise ValueError(f"init must be 'auto', 'teacher' or 'random', got {init!r}")
    client = current_client(client)
    classes = np.asarray(teacher.classes_)
    spec_t = teacher.spec_
    meta = pd.DataFrame(np.zeros((0, spec_t.n_outputs), dtype=student.dtype),
                        columns=[f"target_{i}" for i in range(spec_t.n_outputs)])
    labels = y if alpha < 1.0 else None
    targets = X.map_partitions(soft_targets, labels, teacher.params_, spec_t, classes,
                               float(temperature), float(alpha), student.dtype, meta=meta,
                               align_dataframes=False)
    blocks = to_blocks(client, X, targets, classification=False, dtype=student.dtype,
                       min_block_rows=student.min_block_rows, name="distill-block")
    blocks = blocks._replace(classes=classes)
    valid = None
    if validation_data is not None:
        valid = to_blocks(client, *validation_data, classification=True, classes=classes,
                          dtype=student.dtype, min_block_rows=student.min_block_rows)
    config = student._train_config(blocks.n_samples, student._seed(), client)
    spec = student._spec(blocks.n_features, blocks.n_outputs)
    params = None
    if init == "teacher" or (init == "auto" and narrows(spec_t, spec)):
        params = narrow_params(spec_t, teacher.params_, spec).astype(student.dtype)
    result = train(client, blocks, model=spec, config=config,
                   optimizer=student._optimizer(config, spec, blocks.rows), params=params,
                   validation=valid, run_name=f"distill-{type(student).__name__}")
    student._set_fitted(result, spec, blocks, X)
    return student  # the blocks are released with their futures, as in fit
