"""Who trains on what: balanced LiRA-style membership masks and label noise (host numpy,
explicit seeds, so the same seed gives the same subsets and flips everywhere)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcurv._validate import check_int, check_positive_int, check_probability

__all__ = ["subset_masks", "add_label_noise", "random_subset"]


def _fraction(fraction: Any, *, open_ends: bool) -> float:
    """``fraction`` in (0, 1) (``open_ends``) or [0, 1], with the interval named in the error."""
    try:
        return check_probability("fraction", fraction, open_low=open_ends, open_high=open_ends)
    except ValueError:
        where = "strictly between 0 and 1" if open_ends else "in [0, 1]"
        raise ValueError(f"fraction must lie {where}, got {fraction!r}.") from None


def subset_masks(
    num_examples: int, num_models: int, *, fraction: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Balanced LiRA-style membership: bool (K, N), every column has exactly m = round(f·K) trues.

    Per example, the m members are a uniformly random m-subset of the K models (argsort of a
    uniform (K, N) matrix along K, < m); member k's subset size is ≈ f·N. ``round`` is Python's.
    """
    n = check_positive_int("num_examples", num_examples)
    k = check_positive_int("num_models", num_models)
    f = _fraction(fraction, open_ends=True)
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


def random_subset(num_examples: int, size: int | None, *, seed: int = 0) -> np.ndarray:
    """The one subset sampler: ``size`` distinct indices of range(num_examples), sorted, drawn
    uniformly (the first ``size`` of a seeded permutation); all of them when ``size`` is None or
    at least ``num_examples``. The audit, the experiments and the benchmarks draw their subsets
    here, so the same seed gives the same examples everywhere. (CIFAR files are ordered by class:
    never take a prefix.)"""
    n = check_int("num_examples", num_examples, minimum=0)
    if size is None or size >= n:
        return np.arange(n)
    size = check_int("size", size, minimum=0)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


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
    c = check_int("num_classes", num_classes, minimum=2)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(
            f"labels must lie in [0, num_classes={c}); got range [{int(y.min())}, {int(y.max())}]."
        )
    f = _fraction(fraction, open_ends=False)
    n_flip = int(round(f * y.size))
    rng = np.random.default_rng(seed)
    idx = rng.choice(y.size, size=n_flip, replace=False)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, c, size=n_flip)) % c
    flipped = np.zeros(y.shape, dtype=bool)
    flipped[idx] = True
    return noisy, flipped
