"""Datasets, LiRA-style subset masks, label noise and pure-JAX augmentation.

Every loader returns a :class:`Dataset`: images (N, H, W, C) float32 in [0, 1] (uint8 sources are
divided by 255), labels (N,) int32 in [0, num_classes). Sources (``load(name, ...)``):

- ``"digits"``: scikit-learn's bundled 8×8 digits (1,797 images, pixel/16), no network;
  deterministic stratified split, per class round(0.2·n_c) test images (seed 0):
  1,438 train / 359 test.
- ``"cifar10"`` / ``"cifar100"`` (fine labels): files in ``data_dir`` (official python pickles,
  the official ``.tar.gz``, or an npz), else tensorflow-datasets' random-access
  ``tfds.data_source`` (array_record files read as numpy; TensorFlow not needed to read).
- ``"tfds:<name>"``: any image-classification TFDS dataset that is already prepared.
- ``"npz:<path>"``: keys ``images``/``labels``, ``{split}_images``/``{split}_labels``, or the JPEG
  layout ``{split}_jpeg``/``{split}_offsets``/``{split}_labels`` (decoded once, cached as uint8
  under ``$JAXCURV_CACHE_DIR``, default ``~/.cache/jaxcurv``).

Augmentation (``random_crop``, ``random_flip``, ``augment``, ``augment_batch``) is pure JAX with
static shapes: usable inside ``jit`` and ``vmap`` with one key per member and per image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "Dataset",
    "load",
    "train_test",
    "subset_masks",
    "add_label_noise",
    "random_crop",
    "random_flip",
    "augment",
    "augment_batch",
    "channel_stats",
    "normalize",
    "cache_dir",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
    "PAD_MODES",
]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
PAD_MODES = ("constant", "reflect")
_SPLITS = ("train", "test", "all")
_PROGRESS_MIN = 10_000  # show a progress bar when reading/decoding at least this many images

_VALID_FORMS = (
    "'digits' (scikit-learn 8x8 digits, no network), 'cifar10', 'cifar100', "
    "'tfds:<name>' (any prepared image-classification TFDS dataset, e.g. 'tfds:mnist'), "
    "'npz:<path>' (keys images/labels, {split}_images/{split}_labels, or the JPEG layout "
    "{split}_jpeg/{split}_offsets/{split}_labels)"
)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images (N, H, W, C) float32 in [0, 1] and labels (N,) int32 in [0, num_classes).

    Arrays are stored as read-only views; build from arbitrary arrays with ``from_arrays``.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(
                f"Dataset.images must be a numpy array of shape (N, H, W, C); got "
                f"{type(images).__name__} with shape {getattr(images, 'shape', None)}. "
                "Use Dataset.from_arrays to convert (N, H, W) or uint8 images."
            )
        if images.dtype != np.float32:
            raise ValueError(
                f"Dataset.images must be float32 in [0, 1]; got {images.dtype}. "
                "Use Dataset.from_arrays (uint8 is divided by 255)."
            )
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype != np.int32:
            raise ValueError(
                f"Dataset.labels must be an int32 numpy array of shape (N,); got "
                f"{getattr(labels, 'dtype', type(labels).__name__)} with shape "
                f"{getattr(labels, 'shape', None)}. Convert with np.asarray(labels, np.int32)."
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"Dataset has {images.shape[0]} images but {labels.shape[0]} labels; "
                "they must have the same leading size N."
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int | np.integer):
            raise ValueError(f"num_classes must be an int, got {self.num_classes!r}.")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if images.size:
            lo, hi = float(images.min()), float(images.max())
            if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
                raise ValueError(
                    f"Dataset.images must be finite and in [0, 1]; got range [{lo}, {hi}]. "
                    "Scale uint8 pixels by 1/255 (Dataset.from_arrays does this)."
                )
        if labels.size:
            lmin, lmax = int(labels.min()), int(labels.max())
            if lmin < 0 or lmax >= self.num_classes:
                raise ValueError(
                    f"labels must lie in [0, num_classes={self.num_classes}); got range "
                    f"[{lmin}, {lmax}]. Pass the right num_classes."
                )
        if self.class_names is not None:
            names = tuple(str(c) for c in self.class_names)
            if len(names) != self.num_classes:
                raise ValueError(
                    f"class_names has {len(names)} entries but num_classes is "
                    f"{self.num_classes}; give one name per class or None."
                )
            object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "images", _read_only(images))
        object.__setattr__(self, "labels", _read_only(labels))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def take(self, indices: Any) -> Dataset:
        """The examples at ``indices`` (an int array or bool mask of length N), same metadata."""
        idx = np.asarray(indices)
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])

    @classmethod
    def from_arrays(
        cls,
        images: Any,
        labels: Any,
        *,
        num_classes: int | None = None,
        name: str = "arrays",
        class_names: Sequence[str] | None = None,
    ) -> Dataset:
        """Converts (N, H, W[, C]) uint8 (→ /255) or float images in [0, 1] and integer labels.

        ``num_classes`` defaults to ``len(class_names)``, else max(label) + 1.
        """
        imgs = _to_float_images(np.asarray(images), what=f"{name} images")
        labs = _to_int_labels(np.asarray(labels), what=f"{name} labels")
        if num_classes is None:
            if class_names is not None:
                num_classes = len(class_names)
            else:
                num_classes = int(labs.max()) + 1 if labs.size else 1
        names = None if class_names is None else tuple(str(c) for c in class_names)
        return cls(imgs, labs, int(num_classes), name, names)


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _to_float_images(images: np.ndarray, *, what: str) -> np.ndarray:
    """(N, H, W[, C]) uint8 → float32/255; float → float32 after checking [0, 1]; (N,H,W) → C=1."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{what} must have shape (N, H, W) or (N, H, W, C); got shape {images.shape}."
        )
    if images.dtype == np.uint8:
        return np.divide(images, np.float32(255.0), dtype=np.float32)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{what} must be uint8 (0..255) or float in [0, 1]; got dtype {images.dtype}. "
            "Convert integer pixels to uint8 or scale them to [0, 1]."
        )
    if images.size:
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise ValueError(
                f"float {what} must be finite and in [0, 1]; got range [{lo}, {hi}]. "
                "Store 0..255 pixels as uint8, or divide them by 255."
            )
    return np.asarray(images, dtype=np.float32)


def _to_int_labels(labels: np.ndarray, *, what: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:  # Keras-style (N, 1) labels
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{what} must have shape (N,); got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must be integers; got dtype {labels.dtype}.")
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"{what} must be >= 0; got min {int(labels.min())}.")
    return labels.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------------------------


def load(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads ``name`` (see the module docstring for the forms) as a :class:`Dataset`.

    ``split``: "train" | "test" | "all" ("all" = train followed by test); "tfds:<name>" also
    accepts any TFDS split string ("validation", "train[:10%]", ...). ``data_dir``: where CIFAR
    files or a prepared TFDS dataset live. Raises ValueError for an unknown name or split,
    FileNotFoundError (saying how to get the data) for a missing dataset, ImportError for
    "tfds:<name>" without tensorflow-datasets. The whole split is read into memory.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; valid forms: {_VALID_FORMS}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}.")
    if name.startswith("tfds:"):
        tfds_name = name[len("tfds:") :]
        if not tfds_name:
            raise ValueError("'tfds:' needs a dataset name after the colon, e.g. 'tfds:mnist'.")
        return _load_tfds(tfds_name, split=split, data_dir=data_dir, display_name=name)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS} for {name!r}, got {split!r}.")
    if name == "digits":
        return _load_digits(split)
    if name in _CIFAR:
        return _load_cifar(name, split=split, data_dir=data_dir)
    if name.startswith("npz:"):
        path = name[len("npz:") :]
        if not path:
            raise ValueError("'npz:' needs a file path after the colon, e.g. 'npz:data/my.npz'.")
        return _load_npz(Path(path).expanduser(), split=split, name=name)
    raise ValueError(f"unknown dataset {name!r}; valid forms: {_VALID_FORMS}.")


def train_test(
    name: str, *, data_dir: str | os.PathLike | None = None
) -> tuple[Dataset, Dataset]:
    """``(load(name, split="train"), load(name, split="test"))``."""
    return (
        load(name, split="train", data_dir=data_dir),
        load(name, split="test", data_dir=data_dir),
    )


# --- digits -----------------------------------------------------------------------------------


def _digits_split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images01 (1797,8,8), labels, train_idx, test_idx): per class round(0.2·n_c) to test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(DIGITS_TEST_FRACTION * idx.size))
        test.append(rng.permutation(idx)[:n_test])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return images, labels, train_idx, test_idx


def _load_digits(split: str) -> Dataset:
    images, labels, train_idx, test_idx = _digits_split_indices()
    idx = {"train": train_idx, "test": test_idx, "all": np.concatenate([train_idx, test_idx])}[
        split
    ]
    return Dataset(
        images[idx][..., None].astype(np.float32),
        labels[idx].astype(np.int32),
        10,
        "digits",
        tuple(str(i) for i in range(10)),
    )


# --- CIFAR ------------------------------------------------------------------------------------

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


def _load_cifar(name: str, *, split: str, data_dir: str | os.PathLike | None) -> Dataset:
    spec = _CIFAR[name]
    tried: list[str] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for folder in (root / spec["folder"], root):
            files = [folder / f for f in (*spec["train"], *spec["test"], spec["meta"])]
            if all(f.is_file() for f in files):
                return _cifar_from_pickles(name, folder, split)
        tried.append(f"{root / spec['folder']} (official python pickles)")
        archive = root / spec["archive"]
        if archive.is_file():
            return _cifar_from_archive(name, archive, split)
        tried.append(f"{archive} (official archive)")
        for fname in spec["npz"]:
            if (root / fname).is_file():
                ds = _load_npz(root / fname, split=split, name=name)
                if ds.num_classes != spec["num_classes"]:
                    raise ValueError(
                        f"{root / fname} has {ds.num_classes} classes, expected "
                        f"{spec['num_classes']} for {name}."
                    )
                return ds
            tried.append(f"{root / fname} (npz)")
    try:
        tfds = _import_tfds(name)
    except ImportError:
        tried.append("tensorflow-datasets (not installed)")
    else:
        tfds_split = "train+test" if split == "all" else split
        try:
            return _load_tfds_with(
                tfds, name, split=tfds_split, data_dir=data_dir, display_name=name
            )
        except FileNotFoundError as e:
            tried.append(f"tensorflow-datasets ({e.args[0].splitlines()[0].rstrip('.')})")
    where = "DIR" if data_dir is None else str(data_dir)
    dd = "" if data_dir is None else f", data_dir={str(data_dir)!r}"
    raise FileNotFoundError(
        f"{spec['title']} was not found. Looked for: " + "; ".join(tried) + ".\n"
        "Fix with one of:\n"
        f"  1. official files (no TensorFlow needed): download {spec['url']} into {where} "
        f"(the .tar.gz or its extracted {spec['folder']}/) and call "
        f"load({name!r}, data_dir={where!r});\n"
        "  2. tensorflow-datasets (preparing needs TensorFlow once; reading does not): "
        "pip install tensorflow tensorflow-datasets && python -c \"import tensorflow_datasets "
        f"as tfds; tfds.builder({name!r}, file_format='array_record'{dd})"
        '.download_and_prepare()";\n'
        f"  3. an npz: put {spec['npz'][0]} (keys train_images, train_labels, test_images, "
        f"test_labels) in {where}, or call load('npz:/path/to/file.npz')."
    )


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
    files = {"train": spec["train"], "test": spec["test"]}
    files["all"] = files["train"] + files["test"]
    images, labels = _cifar_arrays([parsed[f] for f in files[split]], spec["label_key"])
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in parsed[spec["meta"]][spec["names_key"]]
    )
    return Dataset.from_arrays(
        images, labels, num_classes=spec["num_classes"], name=name, class_names=names
    )


def _cifar_from_pickles(name: str, folder: Path, split: str) -> Dataset:
    spec = _CIFAR[name]
    wanted = {"train": spec["train"], "test": spec["test"], "all": spec["train"] + spec["test"]}
    parsed = {}
    for fname in (*wanted[split], spec["meta"]):
        with open(folder / fname, "rb") as f:
            parsed[fname] = _read_cifar_pickle(f)
    return _cifar_dataset(name, parsed, split)


def _cifar_from_archive(name: str, archive: Path, split: str) -> Dataset:
    spec = _CIFAR[name]
    wanted = {"train": spec["train"], "test": spec["test"], "all": spec["train"] + spec["test"]}
    need = {f"{spec['folder']}/{f}": f for f in (*wanted[split], spec["meta"])}
    parsed = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # one sequential pass over the compressed stream
            if member.name in need:
                fobj = tar.extractfile(member)
                assert fobj is not None
                parsed[need[member.name]] = _read_cifar_pickle(fobj)
    missing = sorted(set(need) - {f"{spec['folder']}/{k}" for k in parsed})
    if missing:
        raise ValueError(
            f"{archive} is not the official {spec['title']} archive: missing {missing}."
        )
    return _cifar_dataset(name, parsed, split)


# --- TFDS -------------------------------------------------------------------------------------


def _import_tfds(display_name: str) -> Any:
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415  (optional dependency, lazy)
    except ImportError as e:
        raise ImportError(
            f"loading {display_name!r} through TFDS needs tensorflow-datasets: "
            "pip install 'jaxcurv[tfds]' (or pip install tensorflow-datasets)."
        ) from e
    return tfds


def _load_tfds(
    tfds_name: str, *, split: str, data_dir: str | os.PathLike | None, display_name: str
) -> Dataset:
    tfds = _import_tfds(display_name)
    return _load_tfds_with(
        tfds, tfds_name, split=split, data_dir=data_dir, display_name=display_name
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


def _load_tfds_with(
    tfds: Any,
    tfds_name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None,
    display_name: str,
) -> Dataset:
    dd = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
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
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=dd, download=False)
    except (NotImplementedError, FileNotFoundError, KeyError) as e:
        where = "" if dd is None else f", data_dir={dd!r}"
        raise FileNotFoundError(
            f"TFDS dataset {tfds_name!r} is not prepared in array_record format under "
            f"{dd or 'the default TFDS data dir'} (TFDS raised {type(e).__name__}).\n"
            "Prepare it once (needs network, and TensorFlow for most image datasets): "
            "pip install tensorflow tensorflow-datasets && python -c \"import tensorflow_datasets "
            f"as tfds; tfds.builder({tfds_name!r}, file_format='array_record'{where})"
            '.download_and_prepare()"'
        ) from e
    n = len(source)
    images = np.empty((n, *shape), dtype=np.asarray(source[0][image_key]).dtype) if n else None
    labels = np.empty((n,), dtype=np.int64)
    for i in tqdm(range(n), desc=f"reading {display_name}", disable=n < _PROGRESS_MIN):
        record = source[i]
        images[i] = record[image_key]  # type: ignore[index]
        labels[i] = record[label_key]
    if images is None:
        images = np.zeros((0, *shape), np.uint8)
    names = getattr(label_feature, "names", None)
    return Dataset.from_arrays(
        images,
        labels,
        num_classes=int(num_classes),
        name=display_name,
        class_names=None if not names else tuple(names),
    )


# --- npz --------------------------------------------------------------------------------------


def _npz_layout(keys: set[str]) -> str:
    if {"images", "labels"} <= keys:
        return "single"
    if {"train_jpeg", "train_offsets", "train_labels"} <= keys:
        return "jpeg"
    if {"train_images", "train_labels"} <= keys:
        return "split"
    raise ValueError(
        f"npz keys {sorted(keys)} match no known layout: need 'images' + 'labels', "
        "'train_images' + 'train_labels' (+ test_*), or the JPEG layout 'train_jpeg' + "
        "'train_offsets' + 'train_labels' (+ test_*, classes)."
    )


def _npz_class_names(z: Any) -> tuple[str, ...] | None:
    for key in ("classes", "class_names"):
        if key in z.files:
            return tuple(str(c) for c in np.asarray(z[key]).tolist())
    return None


def _load_npz(path: Path, *, split: str, name: str) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(
            f"npz file {path} does not exist; pass 'npz:<path to an existing .npz>'."
        )
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        layout = _npz_layout(keys)
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
                parts = [(_decoded_jpeg_split(path, z, s), z[f"{s}_labels"]) for s in splits]
            images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        if "num_classes" in keys:
            num_classes = int(z["num_classes"])
        elif class_names is not None:
            num_classes = len(class_names)
        else:
            num_classes = max((int(np.max(l)) for l in all_labels if np.size(l)), default=0) + 1
    return Dataset.from_arrays(
        images, labels, num_classes=num_classes, name=name, class_names=class_names
    )


def cache_dir() -> Path:
    """Where decoded images are cached: ``$JAXCURV_CACHE_DIR`` or ``~/.cache/jaxcurv``."""
    env = os.environ.get("JAXCURV_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxcurv"


def _cache_path(source: Path, split: str) -> Path:
    real = source.resolve()
    st = real.stat()
    digest = hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "decoded" / f"{real.stem}-{digest}-{split}.npy"


def _decoded_jpeg_split(path: Path, z: Any, split: str) -> np.ndarray:
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
    images = _decode_jpegs(np.asarray(z[f"{split}_jpeg"], dtype=np.uint8), offsets)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, cache)
    except OSError as e:
        warnings.warn(
            f"could not write the decoded-image cache {cache} ({e}); set JAXCURV_CACHE_DIR to a "
            "writable folder to avoid decoding again next time",
            stacklevel=3,
        )
    return images


def _decode_jpegs(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
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
    progress = tqdm(range(1, n), desc="decoding JPEGs (cached)", disable=n < _PROGRESS_MIN)
    for i in progress:
        a = decode(i, mode)
        if a.shape != first.shape:
            raise ValueError(
                f"JPEG image {i} has shape {a.shape} but image 0 has {first.shape}; all images "
                "of a split must have the same size."
            )
        out[i] = a
    return out


# ----------------------------------------------------------------------------------------------
# Subset masks and label noise (host numpy, explicit seeds)
# ----------------------------------------------------------------------------------------------


def _check_count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def subset_masks(
    num_examples: int, num_models: int, *, fraction: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Balanced LiRA-style membership: bool (K, N), every column has exactly m = round(f·K) trues.

    Per example, the m members are a uniformly random m-subset of the K models (argsort of a
    uniform (K, N) matrix along K, < m); member k's subset size is ≈ f·N. ``round`` is Python's.
    """
    n = _check_count(num_examples, "num_examples", 1)
    k = _check_count(num_models, "num_models", 1)
    f = float(fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}.")
    m = int(round(f * k))
    if m == 0 or m == k:
        raise ValueError(
            f"with num_models={k} and fraction={f}, every example would be in {m} of {k} models, "
            f"so there would be no {'in' if m == 0 else 'out'} models for any example; use more "
            "models or a fraction closer to 0.5."
        )
    rng = np.random.default_rng(seed)
    order = rng.random((k, n)).argsort(axis=0)  # per column a uniform permutation of 0..K-1
    return order < m


def add_label_noise(
    labels: Any, fraction: float, num_classes: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Flips exactly round(f·N) labels (uniform positions) to a uniform *different* class.

    Returns (noisy labels, same dtype as ``labels``; flipped bool (N,)).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {y.dtype}, shape {y.shape}."
        )
    c = _check_count(num_classes, "num_classes", 2)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(
            f"labels must lie in [0, num_classes={c}); got range [{int(y.min())}, {int(y.max())}]."
        )
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}.")
    n_flip = int(round(f * y.size))
    rng = np.random.default_rng(seed)
    idx = rng.choice(y.size, size=n_flip, replace=False)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, c, size=n_flip)) % c
    flipped = np.zeros(y.shape, dtype=bool)
    flipped[idx] = True
    return noisy, flipped


# ----------------------------------------------------------------------------------------------
# Augmentation (pure JAX, static shapes)
# ----------------------------------------------------------------------------------------------


def _check_aug(shape: Any, padding: int, pad_mode: str) -> None:
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"expected one image of shape (H, W, C), got shape {shape}; "
            "use augment_batch for (N, H, W, C)."
        )
    if isinstance(padding, bool) or not isinstance(padding, int | np.integer) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}.")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
    h, w = shape[0], shape[1]
    if pad_mode == "reflect" and padding >= min(h, w):
        raise ValueError(
            f"reflect padding needs padding < min(H, W) = {min(h, w)}, got {padding}."
        )


def random_crop(
    key: jax.Array, image: jax.Array, *, padding: int = 4, pad_mode: str = "constant"
) -> jax.Array:
    """Pads (H, W, C) by ``padding`` on each side (zeros, or "reflect"), crops H×W at a uniform
    offset (dy, dx) ∈ {0..2·padding}²: out[i, j] = padded[dy + i, dx + j]. Same shape and dtype."""
    _check_aug(getattr(image, "shape", None), padding, pad_mode)
    image = jnp.asarray(image)
    h, w, c = image.shape
    p = int(padding)
    padded = jnp.pad(image, ((p, p), (p, p), (0, 0)), mode=pad_mode)
    offset = jax.random.randint(key, (2,), 0, 2 * p + 1)
    zero = jnp.zeros((), offset.dtype)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1], zero), (h, w, c))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Horizontal flip (W axis of (H, W, C)) with probability 1/2."""
    if getattr(image, "ndim", None) != 3:
        raise ValueError(
            f"expected one image of shape (H, W, C), got {getattr(image, 'shape', None)}."
        )
    image = jnp.asarray(image)
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def augment(
    key: jax.Array,
    image: jax.Array,
    *,
    padding: int = 4,
    flip: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """``random_flip(k2, random_crop(k1, image))`` for one (H, W, C) image; k1, k2 = split(key)."""
    k_crop, k_flip = jax.random.split(key)
    out = random_crop(k_crop, image, padding=padding, pad_mode=pad_mode)
    return random_flip(k_flip, out) if flip else out


def augment_batch(
    key: jax.Array,
    images: jax.Array,
    *,
    padding: int = 4,
    flip: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """Augments (N, H, W, C) with one key per image (split(key, N)), vmapped over N."""
    if getattr(images, "ndim", None) != 4:
        raise ValueError(
            f"expected images of shape (N, H, W, C), got {getattr(images, 'shape', None)}."
        )
    _check_aug(images.shape[1:], padding, pad_mode)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: augment(k, x, padding=padding, flip=flip, pad_mode=pad_mode))(
        keys, images
    )


# ----------------------------------------------------------------------------------------------
# Channel statistics
# ----------------------------------------------------------------------------------------------


def channel_stats(images: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over (N, H, W) of (N, H, W, C); float32 (C,) each."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty images of shape (N, H, W, C), got {x.shape}.")
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    std = x.std(axis=(0, 1, 2), dtype=np.float64)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(images: Any, mean: Any, std: Any) -> Any:
    """(images − mean) / std per channel (last axis); works on numpy and JAX arrays, in jit."""
    if not isinstance(std, jax.Array) and np.any(np.asarray(std) <= 0):
        raise ValueError("std must be > 0 in every channel (a constant channel has std 0).")
    return (images - mean) / std
