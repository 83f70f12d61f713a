"""Datasets stored as ``.npz`` files, in three layouts:

- ``images`` + ``labels``: one unsplit set (served for split "train" or "all");
- ``{split}_images`` + ``{split}_labels`` for split in train / test;
- the JPEG layout ``{split}_jpeg`` (all JPEG files of the split concatenated, uint8) +
  ``{split}_offsets`` (n + 1,) (image i = jpeg[offsets[i]:offsets[i+1]]) + ``{split}_labels``,
  optionally ``classes``. JPEG splits are decoded once with Pillow and the uint8 array
  (n, H, W, C) is cached under :func:`cache_dir`, keyed on a SHA-256 of the file's content (a
  file rewritten in place, even with the same size and mtime, is decoded again).

Optional keys: ``num_classes``; ``classes`` or ``class_names``. Without either, the number of
classes is inferred as max(label) + 1 over both splits, and every class 0..max must then occur
in the training split: a stray label (57 among 0..9, or a 12 only in the test split) raises a
DataError (a ValueError) naming it instead of silently adding empty classes.

A file that is not a readable npz archive (empty, truncated, random bytes, a bare ``.npy``), an
array that cannot be read (damaged archive, object dtype) and an archive with other keys each
raise a one-line ValueError naming the file; pickled data is never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcurv.data.dataset import Dataset
from jaxcurv.errors import DataError, DataNotFound

__all__ = ["load_npz", "cache_dir", "decode_jpegs"]


_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class _Archive:
    """An open NpzFile whose reads raise a one-line ValueError naming the file and the array."""

    def __init__(self, z: Any, path: Path) -> None:
        self._z, self.path, self.files = z, path, list(z.files)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            value = self._z[key]
        except _READ_ERRORS as err:
            if "object" in str(err).lower() or "pickle" in str(err).lower():
                raise ValueError(f"array {key!r} in {self.path} holds Python objects (dtype "
                                 "object); save numeric arrays (int labels, uint8 or float "
                                 "images) with numpy.savez") from None
            raise ValueError(f"array {key!r} in {self.path} is unreadable ({type(err).__name__}"
                             "): the archive is damaged; re-create the file") from None
        if not isinstance(value, np.ndarray):
            raise ValueError(f"entry {key!r} in {self.path} is not a numpy array; save the "
                             "file with numpy.savez")
        return value


def _open_npz(path: Path) -> Any:
    """np.load of an npz archive, or a one-line ValueError saying why ``path`` is not one."""
    try:
        z = np.load(path, allow_pickle=False)
    except PermissionError:
        raise ValueError(f"{path} is not readable (permission denied)") from None
    except _READ_ERRORS:
        with open(path, "rb") as f:
            head = f.read(4)
        why = ("it is empty" if not head else
               "it is a truncated or damaged zip archive" if head.startswith(b"PK") else
               "it is not an npz (zip) archive")
        raise ValueError(f"{path} is not a readable .npz file ({why}); re-create it with "
                         "numpy.savez(path, images=..., labels=...)") from None
    if not hasattr(z, "files"):
        raise ValueError(f"{path} holds a single .npy array, not an .npz archive; save it with "
                         "numpy.savez(path, images=..., labels=...)")
    return z


def _npz_layout(keys: set[str], path: Path) -> str:
    """"single", "jpeg" or "split" from the npz keys; ValueError naming the layouts otherwise."""
    if {"images", "labels"} <= keys:
        return "single"
    if {"train_jpeg", "train_offsets", "train_labels"} <= keys:
        return "jpeg"
    if {"train_images", "train_labels"} <= keys:
        return "split"
    raise ValueError(
        f"{path} has keys {sorted(keys)}, which match no known layout: expected 'images' + "
        "'labels', 'train_images' + 'train_labels' (+ test_*), or the JPEG layout 'train_jpeg' + "
        "'train_offsets' + 'train_labels' (+ test_*, classes)."
    )


def _same_image_shape(parts: list) -> None:
    """Refuse train and test images of different shapes (before any concatenation or training)."""
    if len(parts) == 2 and parts[0][0].shape[1:] != parts[1][0].shape[1:]:
        raise ValueError(f"test images have shape {parts[1][0].shape[1:]} but training images "
                         f"{parts[0][0].shape[1:]}; both splits must hold images of one shape")


def _npz_class_names(z: Any) -> tuple[str, ...] | None:
    """Class names from the ``classes`` or ``class_names`` key, None without either."""
    for key in ("classes", "class_names"):
        if key in z.files:
            return tuple(str(c) for c in np.asarray(z[key]).tolist())
    return None


def load_npz(path: Path, *, split: str, name: str, progress: bool = False,
             num_classes: int | None = None) -> Dataset:
    """The npz at ``path`` in any of the three layouts (see the module docstring) as a Dataset.
    ``num_classes``: the number of classes when the caller knows it (e.g. 10 for CIFAR-10) and
    the file does not store it; then it is not inferred from the labels."""
    if not path.is_file():
        raise DataNotFound(f"npz file {path} does not exist.",
                           command_line="--dataset npz:PATH with PATH an existing .npz file.",
                           other_ways=("From Python: load('npz:/path/to/file.npz').",))
    with _open_npz(path) as npz:
        z = _Archive(npz, path)
        keys = set(z.files)
        layout = _npz_layout(keys, path)
        class_names = _npz_class_names(z)
        if layout == "single":
            if split == "test":
                raise ValueError(
                    f"{path} holds one unsplit set (keys images, labels); it is served for "
                    "split='train' or 'all'. Save test_images/test_labels for a test split."
                )
            images, labels = z["images"], z["labels"]
            all_labels = [labels]
        else:
            splits = ("train", "test") if split == "all" else (split,)
            for s in splits:
                if f"{s}_labels" not in keys:
                    raise ValueError(f"{path} has no {s!r} split (no key '{s}_labels').")
            all_labels = [z[f"{s}_labels"] for s in ("train", "test") if f"{s}_labels" in keys]
            if layout == "split":
                parts = [(z[f"{s}_images"], z[f"{s}_labels"]) for s in splits]
            else:
                parts = [(_decoded_jpeg_split(path, z, s, progress=progress), z[f"{s}_labels"])
                         for s in splits]
            _same_image_shape(parts)
            images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        if "num_classes" in keys:
            num_classes = _num_classes(z["num_classes"], path)
        elif class_names is not None:
            num_classes = len(class_names)
        elif num_classes is None:
            num_classes = _inferred_num_classes(all_labels, path)
    return Dataset.from_arrays(
        images, labels, num_classes=num_classes, name=name, class_names=class_names
    )


def _inferred_num_classes(all_labels: list, path: Path) -> int:
    """max(label) + 1 over the splits (training labels first), refusing a class 0..max that the
    training split never holds: that is a stray label, not a class."""
    labels = [np.asarray(l).reshape(-1) for l in all_labels]
    if not any(l.size for l in labels):
        return 1
    if any(l.size and not np.issubdtype(l.dtype, np.integer) for l in labels):
        return int(max(np.max(l) for l in labels if l.size)) + 1  # from_arrays names the dtype
    top = max(int(np.max(l)) for l in labels if l.size)
    train = labels[0]
    if not train.size:  # no training examples: data.train_test says so
        return top + 1
    missing = np.setdiff1d(np.arange(top + 1), train)
    if missing.size:
        counts = {int(v): int(np.sum(np.concatenate(labels) == v)) for v in
                  np.unique(np.concatenate(labels)) if v > int(missing[0])}
        rare = min(counts, key=counts.get) if counts else top
        where = ("only in the test split" if rare not in train
                 else f"in {counts[rare]} example(s)")
        raise DataError(
            f"labels of {path} leave classes {_ranges(missing)} without a training example, "
            f"so max(label) + 1 = {top + 1} classes would include empty ones (label {rare} "
            f"occurs {where}); fix the stray labels, or store num_classes (and classes) in the "
            "npz if those classes are meant to be empty")
    return top + 1


def _ranges(values: np.ndarray) -> str:
    """'10–56' / '10, 11' / '7' for sorted integers, runs collapsed."""
    runs, start = [], None
    values = [int(v) for v in values]
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(str(start) if start == v else
                        f"{start}, {v}" if v == start + 1 else f"{start}–{v}")
            start = None
    return ", ".join(runs)


def _num_classes(value: np.ndarray, path: Path) -> int:
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"num_classes in {path} must be one integer, got {value.dtype} of shape "
                         f"{value.shape}")
    return int(value.reshape(()))


def cache_dir() -> Path:
    """Where decoded images are cached: ``$JAXCURV_CACHE_DIR`` or ``~/.cache/jaxcurv``."""
    env = os.environ.get("JAXCURV_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxcurv"


def _content_hash(path: Path) -> str:
    """SHA-256 (hex) of the file's bytes (read in 1 MiB blocks; ≈ 0.1 s for CIFAR-10's JPEGs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_path(source: Path, split: str) -> Path:
    """Cache file of one split, keyed on the source's content (never on its size or mtime: a
    file rewritten in place with other images of the same size must not reuse the old ones)."""
    digest = _content_hash(source)[:32]
    return cache_dir() / "decoded" / f"{source.resolve().stem}-{digest}-{split}.npy"


def _decoded_jpeg_split(path: Path, z: Any, split: str, *, progress: bool) -> np.ndarray:
    """uint8 (n, H, W, C) of ``{split}_jpeg``: from the cache, else decoded once and cached."""
    offsets = np.asarray(z[f"{split}_offsets"], dtype=np.int64)
    n = offsets.size - 1
    cache = _cache_path(path, split)
    if cache.is_file():
        try:
            cached = np.load(cache, allow_pickle=False)
        except (OSError, ValueError) as e:
            warnings.warn(f"ignoring unreadable cache {cache} ({e}); decoding again", stacklevel=3)
        else:
            if cached.dtype == np.uint8 and cached.ndim == 4 and cached.shape[0] == n:
                return cached
            warnings.warn(f"ignoring cache {cache} with wrong shape {cached.shape}", stacklevel=3)
    images = decode_jpegs(np.asarray(z[f"{split}_jpeg"], dtype=np.uint8), offsets,
                         progress=progress)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, cache)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(
            f"could not write the decoded-image cache {cache} ({e}); set JAXCURV_CACHE_DIR to a "
            "writable folder to avoid decoding again next time",
            stacklevel=3,
        )
    return images


def decode_jpegs(buffer: np.ndarray, offsets: np.ndarray, *,
                 progress: bool = False) -> np.ndarray:
    """Decodes image i = buffer[offsets[i]:offsets[i+1]] (JPEG) into uint8 (n, H, W, C).

    Serial on purpose: for 32×32 images Pillow's per-image Python overhead holds the GIL, so
    threads do not help; ~0.1 ms per CIFAR image on one core. Grayscale ('L') gives C = 1.
    """
    from PIL import Image  # noqa: PLC0415

    n = offsets.size - 1
    if n <= 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    data = memoryview(buffer.tobytes())
    bounds = offsets.tolist()

    def decode(i: int, mode: str | None) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data[bounds[i] : bounds[i + 1]]), formats=["JPEG"]) as im:
                if mode is None:
                    mode = "L" if im.mode in ("L", "1") else "RGB"
                if im.mode != mode:
                    im = im.convert(mode)
                a = np.asarray(im)
        except OSError as e:
            raise ValueError(
                f"image {i} (bytes {bounds[i]}:{bounds[i + 1]}) is not a readable JPEG: {e}"
            ) from e
        return a[..., None] if a.ndim == 2 else a

    first = decode(0, None)
    mode = "L" if first.shape[-1] == 1 else "RGB"
    out = np.empty((n, *first.shape), dtype=np.uint8)
    out[0] = first
    for i in tqdm(range(1, n), desc="decoding JPEGs (cached)", initial=1, total=n,
                  disable=not progress):
        a = decode(i, mode)
        if a.shape != first.shape:
            raise ValueError(
                f"JPEG image {i} has shape {a.shape} but image 0 has {first.shape}; all images "
                "of a split must have the same size."
            )
        out[i] = a
    return out
