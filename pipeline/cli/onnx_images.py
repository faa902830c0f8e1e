"""``pipeline export`` and ``pipeline predict --onnx`` for image models: images read with
:func:`pipeline.read_images` at the model's size and colour mode, in file order."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["is_image_graph", "predict_images", "read_model_images", "validation_images"]


def read_model_images(path: str, image_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """``read_images(path)`` for a model taking ``(H, W, C)`` images: a folder is read in
    sorted file order (no shuffling: row i is the i-th file), resized to ``H×W`` (a no-op for
    images of that size; what ``size=`` did at training) and converted to grayscale (``C=1``)
    or RGB (``C=3``); ``.npy``/Zarr arrays are read as they are."""
    from ..images import read_images

    if str(path).rstrip("/").endswith((".npy", ".zarr")):
        return read_images(path)
    h, w, c = (int(s) for s in image_shape)
    if c not in (1, 3):
        raise ValueError(f"the model takes {c}-channel images; image folders give 1 (grayscale) "
                         "or 3 (RGB): pass a .npy file instead")
    return read_images(path, size=(h, w), color_mode="grayscale" if c == 1 else "rgb",
                       shuffle=False)


def validation_images(path: str, model: Any) -> tuple[Any, Any]:
    """``(images, labels)`` in memory for the int8 guard, from a folder with one sub-folder per
    class (a validation set is small: read by this process's threads, no cluster)."""
    X, y = read_model_images(path, tuple(model.image_shape_))
    if y is None:
        raise ValueError(f"--validation {path}: an image model is validated on a folder with "
                         "one sub-folder per class (the labels), not an unlabelled array")
    X, y = X.compute(), y.compute()
    return X, y


def is_image_graph(model: Any) -> bool:
    """Whether an :class:`~pipeline.export.OnnxModel` was exported from an image model."""
    return model.metadata().get("pipeline.inputs") == "image"


def predict_images(model: Any, data: str, out: str, *, proba: bool) -> None:
    """Score the images under ``data`` with the exported graph ``model`` on the current
    cluster, partition by partition, and write Parquet to ``out`` (``prediction`` or
    ``proba_<class>``, and ``true_label``: a folder's class sub-folder)."""
    from ..export.serve_image import predict_images_onnx

    shape = tuple(json.loads(model.metadata()["pipeline.image_shape"]))
    X, y = read_model_images(data, shape)
    predict_images_onnx(X, model, labels=y, proba=proba).to_parquet(out, write_index=False)
