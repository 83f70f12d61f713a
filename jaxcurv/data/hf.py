"""Folders written by Hugging Face ``datasets`` (``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk``), read offline with ``datasets.load_from_disk``.

The image column is the one feature of type ``Image``, ``Array2D`` or ``Array3D`` (a column named
``image`` or ``img`` when there are several); the label column the one ``ClassLabel`` feature (one
named ``label`` or ``labels`` when there are several), which also gives ``num_classes`` and the
class names. Images become (N, H, W, C) float32 in [0, 1] (uint8 pixels / 255, grayscale gets
C = 1), labels int32. A DatasetDict serves its splits by name ("all" = train then test); a single
Dataset is the "train" split. ``datasets`` is an optional extra (``pip install 'jaxcurv[hf]'``),
imported only here and only when such a folder is loaded. Nothing is cached: the arrays are read
from the folder's Arrow files on every call, so they always follow the folder's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcurv.data.dataset import Dataset
from jaxcurv.errors import DataError, DataNotFound, MissingDependency

__all__ = ["import_datasets", "load_hf"]

_IMAGE_TYPES = ("Image", "Array2D", "Array3D")
_IMAGE_NAMES = ("image", "img")
_LABEL_NAMES = ("label", "labels")
_CHUNK = 1024  # rows decoded at a time (the progress bar's unit)


def import_datasets(display_name: str) -> Any:
    """The ``datasets`` module; :class:`MissingDependency` (one line naming the extra) when absent."""
    try:
        import datasets  # noqa: PLC0415  (optional dependency, lazy)
    except ImportError:
        raise MissingDependency("datasets", "hf", f"loading {display_name!r}") from None
    return datasets


def _pick(features: dict, types: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    """Columns whose feature type is one of ``types``; only those named in ``names`` when several."""
    found = [k for k, f in features.items() if type(f).__name__ in types]
    preferred = [k for k in found if k in names]
    return preferred[:1] if len(found) > 1 and preferred else found


def _columns(features: dict, display_name: str) -> tuple[str, str]:
    """(image column, label column) of a split's features; DataError saying how to fix otherwise."""
    images = _pick(features, _IMAGE_TYPES, _IMAGE_NAMES)
    labels = _pick(features, ("ClassLabel",), _LABEL_NAMES)
    described = ", ".join(f"{k}: {type(f).__name__}" for k, f in features.items())
    if len(images) != 1:
        raise DataError(
            f"{display_name}: need one image column (Image, Array2D or Array3D feature), found "
            f"{len(images)} among [{described}]; keep one, or name it 'image' "
            "(ds.rename_column), and save_to_disk again")
    if len(labels) != 1:
        hint = ("cast the label column: ds = ds.cast_column('label', "
                "datasets.ClassLabel(num_classes=K))" if not labels else
                "name the one to use 'label' (ds.rename_column)")
        raise DataError(f"{display_name}: need one ClassLabel column, found {len(labels)} among "
                        f"[{described}]; {hint}, and save_to_disk again")
    return images[0], labels[0]


def _split_parts(obj: Any, datasets: Any, split: str, display_name: str) -> list[Any]:
    """The Dataset objects that make up ``split`` (two for "all" of a DatasetDict)."""
    if isinstance(obj, datasets.DatasetDict):
        names = list(obj.keys())
        wanted = ["train", "test"] if split == "all" else [split]
        missing = [s for s in wanted if s not in obj]
        if missing:
            raise DataError(f"{display_name} has no {missing[0]!r} split (it has {names}); "
                            "choose one of those")
        return [obj[s] for s in wanted]
    if split not in ("train", "all"):
        raise DataError(f"{display_name} holds one split (a Dataset, not a DatasetDict), served as "
                        f"'train'; for a {split!r} split save a DatasetDict, e.g. "
                        "DatasetDict(train=..., test=...).save_to_disk(folder)")
    return [obj]


def _read_part(ds: Any, image_key: str, label_key: str, display_name: str, progress: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W[, C]) as stored, labels (n,)) of one Dataset, read in chunks of rows."""
    table = ds.with_format("numpy", columns=[image_key, label_key])
    images, labels = [], []
    for start in tqdm(range(0, len(ds), _CHUNK), desc=f"reading {display_name}",
                      disable=not progress):
        rows = table[start:start + _CHUNK]
        chunk = np.asarray(rows[image_key])
        if chunk.dtype == object or chunk.ndim not in (3, 4):
            raise DataError(
                f"{display_name}: images differ in size or channels (column {image_key!r}); "
                "resize them to one size and one mode (e.g. cast_column(..., "
                "datasets.Image(mode='RGB'))) before save_to_disk")
        images.append(chunk)
        labels.append(np.asarray(rows[label_key]))
    if any(a.shape[1:] != images[0].shape[1:] for a in images):
        raise DataError(f"{display_name}: images differ in size or channels (column "
                        f"{image_key!r}); resize them to one size before save_to_disk")
    return np.concatenate(images), np.concatenate(labels)


def load_hf(path: Path, *, split: str, name: str, progress: bool = False) -> Dataset:
    """The ``save_to_disk`` folder at ``path`` (split ``split``) as a Dataset named ``name``
    (see the module docstring); DataNotFound when there is no folder, DataError (one line) for a
    folder this loader cannot read."""
    datasets = import_datasets(name)
    if not path.is_dir():
        raise DataNotFound(
            f"{name}: no folder at {path}.",
            command_line="--dataset hf:FOLDER with FOLDER written by Hugging Face datasets' "
            "save_to_disk ('hf:' reads a local folder and downloads nothing).",
            other_ways=("From Python: datasets.load_dataset(...).save_to_disk(FOLDER), then "
                        "load('hf:FOLDER').",))
    try:
        obj = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{name}: {path} is not a folder written by datasets' save_to_disk "
                        f"({reason})") from None
    parts = _split_parts(obj, datasets, split, name)
    keys = [_columns(dict(part.features), name) for part in parts]
    label_features = [part.features[label] for part, (_, label) in zip(parts, keys)]
    if len({(f.num_classes, tuple(f.names)) for f in label_features}) != 1:
        raise DataError(f"{name}: the train and test splits have different ClassLabel classes; "
                        "give both splits the same ClassLabel feature")
    read = [_read_part(part, image, label, name, progress)
            for part, (image, label) in zip(parts, keys)]
    if len(read) > 1 and read[0][0].shape[1:] != read[1][0].shape[1:]:
        raise DataError(f"{name}: test images have shape {read[1][0].shape[1:]} but training "
                        f"images {read[0][0].shape[1:]}; both splits must hold images of one shape")
    images = np.concatenate([r[0] for r in read])
    labels = np.concatenate([r[1] for r in read])
    if images.shape[0] == 0:
        raise DataError(f"{name}: split {split!r} has no examples")
    if int(labels.min()) < 0:
        raise DataError(f"{name}: split {split!r} has {int(np.sum(labels < 0))} examples without a "
                        "label (-1); drop them, e.g. ds.filter(lambda e: e['label'] >= 0)")
    feature = label_features[0]
    return Dataset.from_arrays(images, labels.astype(np.int64), num_classes=feature.num_classes,
                               name=name, class_names=tuple(feature.names))
