"""scikit-learn's bundled 8×8 digits (1,797 images, pixel/16, no network) with a deterministic
stratified split: per class round(0.2·n_c) test images (seed 0), 1,438 train / 359 test."""

from __future__ import annotations

import numpy as np

from jaxcurv.data.dataset import Dataset

__all__ = ["DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "split_indices", "load_digits"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images in [0, 1] (1797, 8, 8) float64, labels (1797,), train_idx, test_idx): per class
    round(DIGITS_TEST_FRACTION·n_c) examples go to test, drawn with seed DIGITS_SPLIT_SEED."""
    from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415

    bunch = sklearn_digits()
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


def load_digits(split: str) -> Dataset:
    """The "train", "test" or "all" (train then test) split as a (N, 8, 8, 1) Dataset."""
    images, labels, train_idx, test_idx = split_indices()
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
