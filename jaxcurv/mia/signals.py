"""Membership signals from logits: per-example statistics that the attacks threshold or model.

All in float64 on the host from logits (..., C) and integer labels broadcastable to (...):
``logit_confidence`` (LiRA's φ = log p_y − log Σ_{y'≠y} p_y'), ``true_class_probability`` (RMIA's
p_y), ``cross_entropy`` (−log p_y) and ``modified_entropy`` (Song & Mittal 2021). The logit margin
and the cross-entropy are the project's one implementation in ``jaxcurv._numerics``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from jaxcurv import _numerics
from jaxcurv._validate import check_positive
from jaxcurv.mia._common import _finite

__all__ = ["logit_confidence", "true_class_probability", "cross_entropy", "modified_entropy"]


def _logits_and_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 logits z (..., C) and integer labels y broadcast to (...), in [0, C)."""
    z = _finite("logits", logits)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(
            f"logits must have a trailing class axis with C >= 2; got shape {z.shape}."
        )
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}.")
    try:
        y = np.broadcast_to(y, z.shape[:-1])
    except ValueError:
        raise ValueError(
            f"labels of shape {np.shape(labels)} do not broadcast to logits.shape[:-1] = "
            f"{z.shape[:-1]}; for logits (K, N, A, C) pass labels[:, None] of shape (N, 1)."
        ) from None
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}); got [{y.min()}, {y.max()}].")
    return z, y


def logit_confidence(logits: Any, labels: Any) -> np.ndarray:
    """LiRA's statistic φ = log p_y − log Σ_{y'≠y} p_y' = z_y − logsumexp_{y'≠y} z_y', in float64.

    Exact in log space, finite even when p_y rounds to 1 (e.g. logits [1000, 0, 0] → 1000 − log 2).
    logits (..., C), labels integer broadcastable to (...) → (...).
    """
    return _numerics.logit_margin(*_logits_and_labels(logits, labels))


def true_class_probability(logits: Any, labels: Any, *, temperature: float = 1.0) -> np.ndarray:
    """p_y = softmax(z / T)_y = 1 / (1 + e^{−φ}) in float64 (RMIA's signal); (..., C) → (...)."""
    temperature = check_positive("temperature", temperature)
    z, y = _logits_and_labels(logits, labels)
    return special.expit(_numerics.logit_margin(z / temperature, y))


def cross_entropy(logits: Any, labels: Any) -> np.ndarray:
    """Per-example cross-entropy −log p_y = log(1 + e^{−φ}) (φ = ``logit_confidence``), float64.

    Keeps its relative precision for confident predictions (≈ e^{−φ}, where logsumexp(z) − z_y
    rounds to 0). (..., C) → (...).
    """
    return _numerics.cross_entropy(*_logits_and_labels(logits, labels))


def modified_entropy(logits: Any, labels: Any) -> np.ndarray:
    """Song & Mittal (2021) Mentr = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i) ≥ 0, float64.

    log(1 − p_i) is log1p(−p_i), except at the arg-max class where it is
    logsumexp_{j≠i} z_j − logsumexp z (exact when p_i → 1); log p_y = −log(1 + e^{−φ}).
    (..., C), (...) → (...).
    Lower Mentr = more likely member; the attack score is ``mentr_attack`` = −Mentr.
    """
    z, y = _logits_and_labels(logits, labels)
    lse = special.logsumexp(z, axis=-1, keepdims=True)
    logp_y = _numerics.log_true_class_probability(z, y)[..., None]  # exact also when p_y → 1
    p = np.exp(z - lse)
    log1mp = np.log1p(-np.minimum(p, 0.5))  # exact where p < 0.5; top class replaced below
    top = np.argmax(z, axis=-1)[..., None]
    is_top = np.arange(z.shape[-1]) == top
    lse_wo_top = special.logsumexp(np.where(is_top, -np.inf, z), axis=-1, keepdims=True)
    log1mp = np.where(is_top, lse_wo_top - lse, log1mp)
    is_y = np.arange(z.shape[-1]) == y[..., None]
    term_y = -np.exp(log1mp) * logp_y  # −(1 − p_y) log p_y on the label column
    term_other = -p * log1mp
    return np.where(is_y, term_y, term_other).sum(axis=-1)
