"""``load(name, ...)``: one entry point that dispatches a dataset name to its source.

Forms (``DATASET_SPECS``, the list the command line shows): ``"digits"`` (embedded, no
network), ``"cifar10"`` / ``"cifar100"`` (local files found by :func:`jaxcurv.data.locate`, else
tensorflow-datasets), ``"tfds:<name>"`` (any prepared TFDS image-classification dataset),
``"npz:<path>"`` (see :mod:`jaxcurv.data.npz`), ``"hf:<folder>"`` (a Hugging Face ``datasets``
``save_to_disk`` folder, see :mod:`jaxcurv.data.hf`).
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxcurv._names import DATASET_SPECS
from jaxcurv.data.cifar import CIFAR_NAMES, load_cifar
from jaxcurv.data.dataset import Dataset
from jaxcurv.data.digits import load_digits
from jaxcurv.data.hf import load_hf
from jaxcurv.data.npz import load_npz
from jaxcurv.data.tfds import load_tfds
from jaxcurv.errors import DataError

__all__ = ["DATASET_SPECS", "load", "train_test"]

_SPLITS = ("train", "test", "all")


_VALID_FORMS = ", ".join(f"'{spec}' ({what})" for spec, what in DATASET_SPECS)


def load(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None,
         progress: bool = False) -> Dataset:
    """Loads ``name`` (see the module docstring for the forms) as a :class:`Dataset`.

    ``split``: "train" | "test" | "all" ("all" = train followed by test); "tfds:<name>" also
    accepts any TFDS split string ("validation", "train[:10%]", ...), "hf:<folder>" any split of
    its DatasetDict. ``data_dir``: where CIFAR files (searched before ``$JAXCURV_DATA_DIR``) or a
    prepared TFDS dataset live. ``progress``: a progress bar while reading TFDS records or decoding
    JPEGs. Raises ValueError for an unknown name or split, jaxcurv.errors.DataNotFound (a
    FileNotFoundError saying how to get the data) for a missing dataset, ValueError (one line,
    naming the file) for an npz that is not a readable archive or has other keys,
    jaxcurv.errors.MissingDependency (an ImportError naming the extra) for "tfds:<name>" without
    tensorflow-datasets or "hf:<folder>" without datasets, and jaxcurv.errors.DataError (one line)
    for a folder it cannot read. The whole split is read into memory.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; valid forms: {_VALID_FORMS}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}.")
    if name.startswith("hf:"):
        folder = name[len("hf:") :]
        if not folder:
            raise ValueError("'hf:' needs a folder after the colon, e.g. 'hf:data/my_dataset'.")
        return load_hf(Path(folder).expanduser(), split=split, name=name, progress=progress)
    if name.startswith("tfds:"):
        tfds_name = name[len("tfds:") :]
        if not tfds_name:
            raise ValueError("'tfds:' needs a dataset name after the colon, e.g. 'tfds:mnist'.")
        return load_tfds(tfds_name, split=split, data_dir=data_dir, display_name=name,
                         progress=progress)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS} for {name!r}, got {split!r}.")
    if name == "digits":
        return load_digits(split)
    if name in CIFAR_NAMES:
        return load_cifar(name, split=split, data_dir=data_dir, progress=progress)
    if name.startswith("npz:"):
        path = name[len("npz:") :]
        if not path:
            raise ValueError("'npz:' needs a file path after the colon, e.g. 'npz:data/my.npz'.")
        return load_npz(Path(path).expanduser(), split=split, name=name, progress=progress)
    raise ValueError(f"unknown dataset {name!r}; valid forms: {_VALID_FORMS}.")


def train_test(name: str, *, data_dir: str | os.PathLike | None = None,
               progress: bool = False) -> tuple[Dataset, Dataset]:
    """``(load(name, split="train"), load(name, split="test"))``; DataError (a ValueError, before
    any training) when a split has no example or the test images have another shape than the
    training images."""
    train = load(name, split="train", data_dir=data_dir, progress=progress)
    test = load(name, split="test", data_dir=data_dir, progress=progress)
    for split, ds in (("training", train), ("test", test)):
        if len(ds) == 0:
            raise DataError(f"{name} has no {split} examples; an audit needs both splits (an "
                            "npz: save train_images/train_labels and test_images/test_labels "
                            "with at least one example each)")
    if test.images.shape[1:] != train.images.shape[1:]:
        raise ValueError(f"{name}: test images have shape {test.images.shape[1:]} but training "
                         f"images {train.images.shape[1:]}; both splits must hold images of one "
                         "shape")
    return train, test
