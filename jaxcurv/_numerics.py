"""Host-side float64 numerics shared by the primitives: one cross-entropy, one IN/OUT mean.

Logits (..., C) with integer labels broadcastable to (...); member statistics (K, N) with a bool
membership mask (K, N). Callers validate their inputs; these functions only compute.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["logit_margin", "cross_entropy", "log_true_class_probability", "masked_mean",
           "in_out_means"]


def logit_margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """φ = z_y − logsumexp_{y'≠y} z_y' = log p_y − log Σ_{y'≠y} p_y' in float64; (..., C) → (...)."""
    z = np.asarray(logits, np.float64)
    y = np.broadcast_to(np.asarray(labels, np.int64), z.shape[:-1])
    onehot = np.arange(z.shape[-1]) == y[..., None]
    z_y = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return z_y - special.logsumexp(np.where(onehot, -np.inf, z), axis=-1)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−log p_y = log(1 + e^{−φ}) in float64, relative precision kept when p_y rounds to 1."""
    return np.logaddexp(0.0, -logit_margin(logits, labels))


def log_true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y = −cross_entropy in float64; (..., C) → (...)."""
    return -cross_entropy(logits, labels)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of values (K, N) where mask (K, N); NaN where a column has no True."""
    values = np.asarray(values, np.float64)
    mask = np.asarray(mask, bool)
    count = mask.sum(0)
    total = np.where(mask, values, 0.0).sum(0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def in_out_means(values: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example (N,): mean over IN members, its standard error (NaN with < 2 IN members) and
    the mean over OUT members, from values (K, N) and masks (K, N)."""
    values = np.asarray(values, np.float64)
    masks = np.asarray(masks, bool)
    mean_in = masked_mean(values, masks)
    mean_out = masked_mean(values, ~masks)
    n_in = masks.sum(0)
    dev = np.where(masks, values - np.nan_to_num(mean_in)[None], 0.0)
    sd = np.sqrt((dev**2).sum(0) / np.maximum(n_in - 1, 1))
    stderr = np.where(n_in > 1, sd / np.sqrt(np.maximum(n_in, 1)), np.nan)
    return mean_in, stderr, mean_out
