"""The in-memory dataset every loader returns: images (N, H, W, C) float32 in [0, 1] and labels
(N,) int32 in [0, num_classes), stored as read-only views, with conversion from raw arrays."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxcurv._validate import check_positive_int

__all__ = ["Dataset"]


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
        object.__setattr__(self, "num_classes", check_positive_int("num_classes", self.num_classes))
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
