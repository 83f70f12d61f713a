"""Threshold attacks on a per-example loss: score = threshold − loss, member iff score ≥ 0.

Global threshold: ``loss_attack`` (Yeom et al. 2018) and ``mentr_attack`` (Song & Mittal 2021).
Per-example thresholds calibrated on the losses of shadow models, with the shadow signature
``attack(target_loss (N,), shadow_losses (K, N), shadow_in (K, N), *, shadow_mask=None)``:
``calibrated_loss`` (Watson et al. 2022 / Sablayrolles et al. 2019) and ``attack_r`` (Ye et al.
2022).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcurv._numerics import masked_mean
from jaxcurv._validate import check_probability
from jaxcurv.mia._common import _finite, _prepare_shadow_inputs
from jaxcurv.mia.signals import modified_entropy

__all__ = ["loss_attack", "mentr_attack", "calibrated_loss", "attack_r"]


def loss_attack(loss: Any) -> np.ndarray:
    """Yeom et al. (2018) loss attack: score = −ℓ(θ, x). Any shape → same shape, float64."""
    return -_finite("loss", loss)


def mentr_attack(logits: Any, labels: Any) -> np.ndarray:
    """Song & Mittal (2021) modified-entropy attack with a global threshold: score = −Mentr."""
    return -modified_entropy(logits, labels)


def _loss_inputs(
    target_loss: Any, shadow_losses: Any, shadow_in: Any, shadow_mask: Any, caller: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated t (N,), s (K, N) and IN / OUT masks (K, N); rejects an augmentation axis."""
    t, s, m_in, m_out, no_aug = _prepare_shadow_inputs(
        target_loss, shadow_losses, shadow_in, shadow_mask
    )
    if not no_aug:
        raise ValueError(
            f"{caller} takes one statistic per example: target (N,), shadows (K, N). For "
            "augmented statistics pass one augmentation (stats[..., 0]) or their mean."
        )
    return t[:, 0], s[..., 0], m_in[..., 0], m_out[..., 0]


def calibrated_loss(
    target_loss: Any,
    shadow_losses: Any,
    shadow_in: Any,
    *,
    reference: str = "out",
    shadow_mask: Any = None,
) -> np.ndarray:
    """Difficulty-calibrated loss attack: score = τ(x) − ℓ(θ, x), a per-example threshold τ.

    ``reference="out"``: τ = mean OUT-shadow loss (Watson et al. 2022; the Curvature Clues code's
    "Watson et al."). ``"midpoint"``: τ = (mean IN + mean OUT)/2 (the Curvature Clues code's
    "Sablayrolles et al." row; Sablayrolles et al. 2019). target (N,), shadows (K, N), in (K, N);
    ``shadow_mask`` bool (K, N): False entries are ignored (``leave_one_model_out`` balances
    group sizes with it).
    """
    if reference not in ("out", "midpoint"):
        raise ValueError(f"reference must be 'out' or 'midpoint'; got {reference!r}.")
    t, s, m_in, m_out = _loss_inputs(
        target_loss, shadow_losses, shadow_in, shadow_mask, "calibrated_loss"
    )
    n_out = m_out.sum(axis=0)
    n_in = m_in.sum(axis=0)
    if np.any(n_out == 0) or (reference == "midpoint" and np.any(n_in == 0)):
        need = "OUT" if reference == "out" else "IN and OUT"
        raise ValueError(
            f"calibrated_loss(reference={reference!r}) needs at least one {need} shadow loss per "
            "example; use more shadow models."
        )
    mu_out = masked_mean(s, m_out)
    if reference == "out":
        tau = mu_out
    else:
        tau = 0.5 * (mu_out + masked_mean(s, m_in))
    return tau - t


def attack_r(
    target_loss: Any,
    shadow_losses: Any,
    shadow_in: Any,
    *,
    alpha: float | None = None,
    shadow_mask: Any = None,
) -> np.ndarray:
    """Ye et al. (2022) Attack-R: per-example thresholds from the OUT (reference) losses of x.

    ``alpha=None`` (default): score = −α(x), α(x) the linearly interpolated quantile level of ℓ(x)
    among the reference losses, i.e. ``np.interp(ℓ, sort([0, ℓ_ref…, 1000]), linspace(0, 1, n+2))``
    (Ye et al.'s code, as re-used by the RMIA authors); thresholding −α(x) ≥ −α sweeps the attack's
    FPR parameter α. Ties of ℓ(x) with grid points get the mid-level of the tied points.
    ``alpha=a``: score = Q_a(ℓ_ref) − ℓ(x), Q_a numpy's linear percentile (the Curvature Clues
    code's "Ye et al." row uses a = 1e-4). Losses must be ≥ 0. target (N,), shadows (K, N),
    shadow_in (K, N); ``shadow_mask`` bool (K, N): False entries are ignored.
    """
    t, s, _, out = _loss_inputs(target_loss, shadow_losses, shadow_in, shadow_mask, "attack_r")
    if np.any(t < 0) or np.any(s < 0):
        raise ValueError("attack_r expects losses (>= 0); negate a 'higher = member' statistic.")
    n_out = out.sum(axis=0)
    if np.any(n_out == 0):
        raise ValueError(
            f"attack_r needs at least one OUT shadow loss per example; {int((n_out == 0).sum())} "
            "example(s) have none. Use more shadow models."
        )
    if alpha is not None:
        alpha = check_probability("alpha", alpha)
        ref = np.where(out, s, np.nan)
        return np.nanpercentile(ref, 100.0 * alpha, axis=0) - t
    return -_quantile_level(t, s, out, n_out)


def _quantile_level(t: np.ndarray, s: np.ndarray, out: np.ndarray, n_out: np.ndarray) -> np.ndarray:
    """Attack-R's level α(x) ∈ [0, 1] of t (N,) on the grid sort([0, OUT losses of s (K, N),
    1000]) per example (n_out (N,) OUT losses), linear between grid points, mid-level on ties."""
    kmax = s.shape[0]
    # Grid per example: sort([0, OUT losses, 1000]) followed by +inf padding for the IN slots.
    cols = np.arange(t.size)
    grid = np.sort(
        np.concatenate(
            [np.zeros((1, t.size)), np.where(out, s, np.inf), np.full((1, t.size), 1000.0)]
        ),
        axis=0,
    )
    n_grid = n_out + 2  # real grid points per example
    levels = np.arange(kmax + 2)[:, None] / (n_grid - 1)[None, :]  # (K+2, N)
    lo = (grid < t[None]).sum(axis=0)  # grid points strictly below ℓ
    hi = (grid <= t[None]).sum(axis=0)  # grid points at or below ℓ
    tied = hi > lo
    # interpolate between grid[lo-1] and grid[lo] (clamped at the ends)
    below = np.clip(lo - 1, 0, None)
    above = np.minimum(lo, n_grid - 1)
    g0, g1 = grid[below, cols], grid[above, cols]
    a0, a1 = levels[below, cols], levels[above, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(g1 > g0, (t - g0) / (g1 - g0), 0.0)
    level = a0 + np.clip(frac, 0.0, 1.0) * (a1 - a0)
    level = np.where(lo == 0, 0.0, level)
    level = np.where(lo >= n_grid, 1.0, level)
    mid = 0.5 * (lo + hi - 1) / (n_grid - 1)
    return np.where(tied, mid, level)
