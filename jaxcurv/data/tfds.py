"""Any prepared image-classification dataset of tensorflow-datasets, read through the
random-access ``tfds.data_source`` (array_record files served as numpy; TensorFlow is needed
only to prepare a dataset, never to read it). tensorflow-datasets is imported lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcurv.data.dataset import Dataset
from jaxcurv.errors import DataNotFound, MissingDependency

__all__ = ["import_tfds", "load_tfds", "load_tfds_with"]


def import_tfds(display_name: str) -> Any:
    """The tensorflow_datasets module; :class:`jaxcurv.errors.MissingDependency` (an ImportError
    naming the ``tfds`` extra) when it is not installed."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415  (optional dependency, lazy)
    except ImportError as e:
        raise MissingDependency("tensorflow-datasets", "tfds",
                                f"loading {display_name!r} through TFDS") from e
    return tfds


def load_tfds(
    tfds_name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None,
    display_name: str,
    progress: bool = False,
) -> Dataset:
    """TFDS dataset ``tfds_name`` (any TFDS split string) as a Dataset named ``display_name``."""
    tfds = import_tfds(display_name)
    return load_tfds_with(
        tfds, tfds_name, split=split, data_dir=data_dir, display_name=display_name,
        progress=progress,
    )


def _tfds_keys(info: Any, display_name: str) -> tuple[str, str]:
    """(image key, label key): supervised_keys when they are two names, else by feature type."""
    features = info.features
    sk = info.supervised_keys
    if isinstance(sk, tuple) and len(sk) == 2 and all(isinstance(k, str) for k in sk):
        return sk  # type: ignore[return-value]
    keys = list(features.keys())
    image_keys = [k for k in keys if type(features[k]).__name__ == "Image"]
    label_keys = [k for k in keys if type(features[k]).__name__ == "ClassLabel"]
    image_key = "image" if "image" in keys else (image_keys[0] if len(image_keys) == 1 else None)
    label_key = "label" if "label" in keys else (label_keys[0] if len(label_keys) == 1 else None)
    if image_key is None or label_key is None:
        raise ValueError(
            f"{display_name!r} is not an image-classification dataset this loader understands: "
            f"features {keys}; it needs one image and one ClassLabel feature."
        )
    return image_key, label_key


def _tfds_info(tfds: Any, tfds_name: str, dd: str | None, display_name: str) -> tuple:
    """(image key, label key, label feature, num_classes, image shape) from the builder's info."""
    try:
        builder = tfds.builder(tfds_name, data_dir=dd)
    except tfds.core.DatasetNotFoundError as e:
        raise ValueError(
            f"TFDS has no dataset {tfds_name!r} (from {display_name!r}); see "
            "https://www.tensorflow.org/datasets/catalog for names."
        ) from e
    info = builder.info
    image_key, label_key = _tfds_keys(info, display_name)
    label_feature = info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"{display_name!r}: label feature {label_key!r} is not a ClassLabel "
            f"({type(label_feature).__name__}); only classification datasets are supported."
        )
    shape = tuple(info.features[image_key].shape)
    if len(shape) not in (2, 3) or any(s is None for s in shape):
        raise ValueError(
            f"{display_name!r}: images have shape {shape}; this loader needs a fixed (H, W[, C]) "
            "size (variable-size datasets must be resized into an npz first)."
        )
    return image_key, label_key, label_feature, int(num_classes), shape


def load_tfds_with(
    tfds: Any,
    tfds_name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None,
    display_name: str,
    progress: bool = False,
) -> Dataset:
    """:func:`load_tfds` with the tensorflow_datasets module given (FileNotFoundError saying how
    to prepare the dataset when it is not prepared in array_record format)."""
    dd = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
    image_key, label_key, label_feature, num_classes, shape = _tfds_info(
        tfds, tfds_name, dd, display_name
    )
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=dd, download=False)
    except (NotImplementedError, FileNotFoundError, KeyError) as e:
        where = "" if dd is None else f", data_dir={dd!r}"
        raise DataNotFound(
            f"TFDS dataset {tfds_name!r} is not prepared in array_record format under "
            f"{dd or 'the default TFDS data dir'} (TFDS raised {type(e).__name__}).",
            command_line="prepare it once (needs network, and TensorFlow for most image "
            "datasets): pip install tensorflow tensorflow-datasets && python -c \"import "
            f"tensorflow_datasets as tfds; tfds.builder({tfds_name!r}, "
            f"file_format='array_record'{where}).download_and_prepare()\", then pass the same "
            "--data-dir.") from e
    n = len(source)
    images = np.empty((n, *shape), dtype=np.asarray(source[0][image_key]).dtype) if n else None
    labels = np.empty((n,), dtype=np.int64)
    for i in tqdm(range(n), desc=f"reading {display_name}", disable=not progress):
        record = source[i]
        images[i] = record[image_key]  # type: ignore[index]
        labels[i] = record[label_key]
    if images is None:
        images = np.zeros((0, *shape), np.uint8)
    names = getattr(label_feature, "names", None)
    return Dataset.from_arrays(
        images,
        labels,
        num_classes=num_classes,
        name=display_name,
        class_names=None if not names else tuple(names),
    )
