"""CIFAR-10 and CIFAR-100 (fine labels) from local files, else from tensorflow-datasets.

Local files are searched by :func:`locate`, in ``data_dir`` and then in the folder named by the
environment variable ``JAXCURV_DATA_DIR``: the official python-version folder
(``cifar-10-batches-py/``, ``cifar-100-python/``, or a folder holding its files), the official
archive (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), or an npz (``cifar10.npz``,
``cifar10-jpeg.npz`` in the JPEG layout, ``cifar100.npz``). No other folder is searched.
The official files are Python pickles: only load files you trust.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcurv.data.dataset import Dataset
from jaxcurv.errors import DataNotFound
from jaxcurv.data.npz import load_npz
from jaxcurv.data.tfds import import_tfds, load_tfds_with

__all__ = ["DATA_DIR_ENV", "CIFAR_NAMES", "locate", "load_cifar"]

DATA_DIR_ENV = "JAXCURV_DATA_DIR"

_CIFAR: dict[str, dict[str, Any]] = {
    "cifar10": dict(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        npz=("cifar10.npz", "cifar10-jpeg.npz"),
    ),
    "cifar100": dict(
        title="CIFAR-100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        npz=("cifar100.npz",),
    ),
}
CIFAR_NAMES = tuple(_CIFAR)


# ----------------------------------------------------------------------------------------------
# where the files are


def _search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """``data_dir``, then ``$JAXCURV_DATA_DIR`` (unset or empty: skipped), without repeats."""
    roots: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV)
    for folder in (data_dir, env or None):
        if folder is not None:
            root = Path(folder).expanduser()
            if root not in roots:
                roots.append(root)
    return roots


def _split_files(spec: dict[str, Any], split: str) -> tuple[str, ...]:
    return {"train": spec["train"], "test": spec["test"], "all": spec["train"] + spec["test"]}[
        split
    ]


def _find_in(spec: dict[str, Any], root: Path) -> Path | None:
    """The first local copy in ``root``: official folder (``root/<folder>`` or ``root`` itself
    when it holds all official files), then the official archive, then the npz files."""
    needed = (*spec["train"], *spec["test"], spec["meta"])
    for folder in (root / spec["folder"], root):
        if all((folder / f).is_file() for f in needed):
            return folder
    for candidate in (root / spec["archive"], *(root / f for f in spec["npz"])):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the local files of ``name`` ("cifar10" | "cifar100") are, or None.

    Searches ``data_dir`` and then ``$JAXCURV_DATA_DIR``; in each, the official python-version
    folder, the official ``.tar.gz`` archive, then the npz files (cifar10: ``cifar10.npz``,
    ``cifar10-jpeg.npz``; cifar100: ``cifar100.npz``). Returns the folder, archive or npz path.
    """
    if name not in _CIFAR:
        raise ValueError(f"locate knows {CIFAR_NAMES}, got {name!r}.")
    for root in _search_roots(data_dir):
        found = _find_in(_CIFAR[name], root)
        if found is not None:
            return found
    return None


def _looked_for(spec: dict[str, Any], roots: Sequence[Path]) -> list[str]:
    if not roots:
        return [f"local files (no data_dir given and {DATA_DIR_ENV} unset)"]
    tried = []
    for root in roots:
        tried.append(f"{root / spec['folder']} (official python files)")
        tried.append(f"{root / spec['archive']} (official archive)")
        tried.extend(f"{root / f} (npz)" for f in spec["npz"])
    return tried


def _missing_error(name: str, tried: Sequence[str],
                   data_dir: str | os.PathLike | None) -> DataNotFound:
    """How to get the data: the command-line fix first, then the Python one."""
    spec = _CIFAR[name]
    npz = " or ".join(reversed(spec["npz"]))
    dd = "" if data_dir is None else f", data_dir={os.fspath(data_dir)!r}"
    return DataNotFound(
        f"{spec['title']} was not found.", looked_for=tuple(tried),
        command_line=f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR, where DIR holds the "
        f"official files ({spec['url']}, as the .tar.gz or its extracted {spec['folder']}/) or "
        f"{npz}; or pip install \"jaxcurv[tfds]\" and prepare the dataset once with "
        "tensorflow-datasets (preparing needs TensorFlow, reading does not): python -c "
        f"\"import tensorflow_datasets as tfds; tfds.builder({name!r}, "
        f"file_format='array_record'{dd}).download_and_prepare()\".",
        other_ways=(f"From Python: load({name!r}, data_dir=DIR) with the same files, or "
                    "load('npz:/path/to/file.npz') for an npz with keys train_images, "
                    "train_labels, test_images, test_labels (or the JPEG layout).",))


# ----------------------------------------------------------------------------------------------
# loading


def load_cifar(name: str, *, split: str, data_dir: str | os.PathLike | None,
               progress: bool = False) -> Dataset:
    """``name`` from the files :func:`locate` finds, else from tensorflow-datasets (with
    ``data_dir`` as its data folder); FileNotFoundError saying how to get the data otherwise."""
    path = locate(name, data_dir)
    if path is not None:
        return _load_local(name, path, split, progress=progress)
    tried = _looked_for(_CIFAR[name], _search_roots(data_dir))
    try:
        tfds = import_tfds(name)
    except ImportError:
        tried.append("tensorflow-datasets (not installed)")
    else:
        tfds_split = "train+test" if split == "all" else split
        try:
            return load_tfds_with(tfds, name, split=tfds_split, data_dir=data_dir,
                                  display_name=name, progress=progress)
        except DataNotFound as e:
            tried.append(f"tensorflow-datasets ({e.what.rstrip('.')})")
    raise _missing_error(name, tried, data_dir)


def _load_local(name: str, path: Path, split: str, *, progress: bool) -> Dataset:
    spec = _CIFAR[name]
    if path.is_dir():
        return _cifar_from_pickles(name, path, split)
    if path.suffix != ".npz":
        return _cifar_from_archive(name, path, split)
    ds = load_npz(path, split=split, name=name, progress=progress,
                  num_classes=spec["num_classes"])
    if ds.num_classes != spec["num_classes"]:
        raise ValueError(
            f"{path} has {ds.num_classes} classes, expected {spec['num_classes']} for {name}."
        )
    return ds


def _read_cifar_pickle(fobj: Any) -> dict:
    # The official CIFAR files are Python pickles; only load files you trust.
    return pickle.load(fobj, encoding="bytes")


def _cifar_arrays(batches: Sequence[dict], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Official rows (n, 3072) = R, G, B planes of 32×32 → (n, 32, 32, 3) uint8 and labels."""
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    return np.ascontiguousarray(images), labels


def _cifar_dataset(name: str, parsed: dict[str, dict], split: str) -> Dataset:
    spec = _CIFAR[name]
    batches = [parsed[f] for f in _split_files(spec, split)]
    images, labels = _cifar_arrays(batches, spec["label_key"])
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in parsed[spec["meta"]][spec["names_key"]]
    )
    return Dataset.from_arrays(
        images, labels, num_classes=spec["num_classes"], name=name, class_names=names
    )


def _cifar_from_pickles(name: str, folder: Path, split: str) -> Dataset:
    spec = _CIFAR[name]
    parsed = {}
    for fname in (*_split_files(spec, split), spec["meta"]):
        with open(folder / fname, "rb") as f:
            parsed[fname] = _read_cifar_pickle(f)
    return _cifar_dataset(name, parsed, split)


def _cifar_from_archive(name: str, archive: Path, split: str) -> Dataset:
    spec = _CIFAR[name]
    need = {f"{spec['folder']}/{f}": f for f in (*_split_files(spec, split), spec["meta"])}
    parsed = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # one sequential pass over the compressed stream
            fobj = tar.extractfile(member) if member.name in need else None
            if fobj is not None:
                parsed[need[member.name]] = _read_cifar_pickle(fobj)
    missing = sorted(set(need) - {f"{spec['folder']}/{k}" for k in parsed})
    if missing:
        raise ValueError(
            f"{archive} is not the official {spec['title']} archive: missing {missing}."
        )
    return _cifar_dataset(name, parsed, split)
