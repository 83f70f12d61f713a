"""Membership inference: attack scores from given statistics, and ROC metrics.

Every attack is a pure host-side function of arrays (numpy or jax) computed in float64 with
numpy/scipy, and returns a float64 numpy array of scores where **higher = more likely member**.
Shapes: N target examples, K shadow (reference) models, A augmentations (queries), C classes,
Z population samples.

Signals
    ``logit_confidence`` (LiRA's φ = log p_y − log Σ_{y'≠y} p_y'), ``true_class_probability``,
    ``cross_entropy``, ``modified_entropy`` (Song & Mittal 2021).
Attacks with the shadow signature ``attack(target_stat, shadow_stats, shadow_in, **kw)``
    ``lira`` (Carlini et al. 2022), ``calibrated_loss`` (Watson et al. 2022 / Sablayrolles et al.
    2019), ``attack_r`` (Ye et al. 2022), ``curvature_lr`` and ``curvature_nll`` (Ravikumar et al.
    2024, "Curvature Clues"; corrected statistics or ``paper_compatible=True``).
    ``leave_one_model_out`` runs any of them with each ensemble member in turn as the target.
Other attacks
    ``loss_attack`` (Yeom et al. 2018), ``mentr_attack``, ``rmia`` (Zarifzadeh et al. 2024) and
    ``rmia_leave_one_model_out``.
Metrics
    ``roc_metrics`` (AUROC, balanced accuracy, TPR at 0.1 % / 1 % FPR, bootstrap CIs) and
    ``roc_curve``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special
from sklearn import metrics as _skm

__all__ = [
    "logit_confidence",
    "true_class_probability",
    "cross_entropy",
    "modified_entropy",
    "loss_attack",
    "mentr_attack",
    "calibrated_loss",
    "attack_r",
    "lira",
    "curvature_lr",
    "curvature_nll",
    "rmia",
    "leave_one_model_out",
    "rmia_leave_one_model_out",
    "roc_metrics",
    "roc_curve",
    "PAPER_EPS",
]

_LOG_2PI = math.log(2.0 * math.pi)
# Constants of the Curvature Clues notebooks (conditonal_mia_aug_cifar{10,100}.ipynb):
# eps = 1e-22 in log(x + eps), in the LR variance and LR denominator; 1e-32 in the NLL variance.
PAPER_EPS = 1e-22
_PAPER_NLL_EPS = 1e-32
_ALTERNATIVES = ("greater", "less")

# ----------------------------------------------------------------------------------------------
# validation helpers (host side, before any compute)


def _float64(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 array; ValueError if it holds NaN or ±inf."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN/inf value(s); membership statistics must be finite. "
            "Check the model outputs (e.g. compute losses/logit confidences in float64) and drop "
            "or repair those examples before attacking."
        )
    return arr


def _bool_mask(x: Any, name: str) -> np.ndarray:
    """Boolean membership mask; accepts bool or integer 0/1 arrays."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must be boolean (or 0/1); got other values.")
        return arr.astype(bool)
    raise ValueError(f"{name} must be a boolean array; got dtype {arr.dtype}.")


def _prepare_shadow_inputs(
    target_stat: Any,
    shadow_stats: Any,
    shadow_in: Any,
    shadow_mask: Any = None,
    names: tuple[str, str, str, str] = ("target_stat", "shadow_stats", "shadow_in", "shadow_mask"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Validate and reshape to t (N, A), s (K, N, A), IN and OUT masks (K, N, 1) (entries with
    shadow_mask False belong to neither group); flag whether the A axis was absent."""
    t = np.asarray(target_stat)
    s = np.asarray(shadow_stats)
    m = np.asarray(shadow_in)
    tn, sn, mn, vn = names
    if t.ndim not in (1, 2):
        raise ValueError(f"{tn} must have shape (N,) or (N, A); got {t.shape}.")
    if s.ndim != t.ndim + 1 or s.shape[1:] != t.shape:
        raise ValueError(
            f"{sn} must have shape (K,) + {tn}.shape = (K, {', '.join(map(str, t.shape))}); "
            f"got {s.shape}."
        )
    if s.shape[0] < 1:
        raise ValueError(f"{sn} needs at least one shadow/reference model (K >= 1).")
    if m.shape != s.shape[:2]:
        raise ValueError(f"{mn} must have shape (K, N) = {s.shape[:2]}; got {m.shape}.")
    if shadow_mask is None:
        valid = np.ones(m.shape, dtype=bool)
    else:
        valid = np.asarray(shadow_mask)
        if valid.shape != m.shape:
            raise ValueError(f"{vn} must have shape (K, N) = {m.shape}; got {valid.shape}.")
        valid = _bool_mask(valid, vn)
    t = _float64(t, tn)
    s = _float64(s, sn)
    m = _bool_mask(m, mn)
    no_aug = t.ndim == 1
    if no_aug:
        t, s = t[:, None], s[..., None]
    return t, s, (m & valid)[..., None], (~m & valid)[..., None], no_aug


def _group_moments(s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example count n (N, 1), mean (N, A) (NaN where n = 0) and Σ(s − mean)² (N, A)."""
    n = m.sum(axis=0).astype(np.float64)  # (N, 1)
    total = np.where(m, s, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1.0), np.nan)
    dev = np.where(m, s - np.where(n > 0, mean, 0.0)[None], 0.0)
    ss = (dev * dev).sum(axis=0)
    return n, mean, ss


def _pooled_variance(n: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Unbiased pooled within-example variance per augmentation, Σᵢ ssᵢ / Σᵢ (nᵢ − 1)₊; (A,)."""
    dof = np.maximum(n - 1.0, 0.0).sum(axis=0)  # (1,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dof > 0, ss.sum(axis=0) / np.maximum(dof, 1.0), np.nan)


def _resolve_variance(
    n: np.ndarray, ss: np.ndarray, *, fixed: bool, group: str, caller: str, rows: np.ndarray
) -> np.ndarray:
    """Variance (N, A) for the examples in ``rows`` (bool (N,)): per example (ddof=0, as LiRA's
    np.std) or pooled; examples with < 2 shadows or zero variance get the pooled variance."""
    pooled = _pooled_variance(n, ss)  # (A,)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = ss / np.maximum(n, 1.0)
    if fixed:
        need = np.broadcast_to(rows[:, None], var.shape)
    else:
        need = ((n < 2) | (var <= 0.0)) & rows[:, None]
        n_need = int(np.any(need, axis=1).sum())
        if n_need:
            warnings.warn(
                f"{caller}: {n_need} example(s) have fewer than 2 {group.upper()} shadow "
                f"statistics or zero {group.upper()} variance; they use the variance pooled over "
                "all examples instead (pass fixed_variance=True to do this for every example).",
                stacklevel=3,
            )
    if np.any(need):
        cols = np.any(need, axis=0)
        if not np.all(np.isfinite(pooled[cols]) & (pooled[cols] > 0)):
            raise ValueError(
                f"{caller}: cannot estimate the {group.upper()} variance: no example has two "
                f"distinct {group.upper()} shadow statistics. Train more shadow models "
                "(at least 2 per example and group)."
            )
        var = np.where(need, np.broadcast_to(pooled, var.shape), var)
    return var


def _gauss_logpdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log N(x; mean, var), elementwise, float64."""
    return -0.5 * (x - mean) ** 2 / var - 0.5 * np.log(var) - 0.5 * _LOG_2PI


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}; got {alternative!r}.")


def _one_sided_out(
    t: np.ndarray, mean: np.ndarray, var: np.ndarray, alternative: str
) -> np.ndarray:
    """Offline test against the OUT Gaussian, summed over A: Σ −log P[Z ≥ t] ("greater": members
    have larger statistics) or Σ −log P[Z ≤ t] ("less"); Z ~ N(mean, var); ≥ 0, (N,)."""
    z = (t - mean) / np.sqrt(var)
    logp = special.log_ndtr(-z) if alternative == "greater" else special.log_ndtr(z)
    return -logp.sum(axis=1)


def _one_sided_in(t: np.ndarray, mean: np.ndarray, var: np.ndarray, alternative: str) -> np.ndarray:
    """Fallback test against the IN Gaussian only, summed over A: Σ log P[Z ≤ t] ("greater") or
    Σ log P[Z ≥ t] ("less"); Z ~ N(mean, var); ≤ 0, (N,)."""
    z = (t - mean) / np.sqrt(var)
    logp = special.log_ndtr(z) if alternative == "greater" else special.log_ndtr(-z)
    return logp.sum(axis=1)


def _fallback_scores(
    score: np.ndarray,
    t: np.ndarray,
    groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    rows_no_in: np.ndarray,
    rows_no_out: np.ndarray,
    fixed_variance: bool,
    alternative: str,
    caller: str,
) -> None:
    """Fill ``score`` in place for examples lacking IN (offline test vs OUT) or OUT shadows
    (one-sided test vs IN), with a warning naming how many."""
    num = t.shape[0]
    none = (groups["in"][0][:, 0] == 0) & (groups["out"][0][:, 0] == 0)
    if np.any(none):
        raise ValueError(
            f"{caller}: {int(none.sum())} example(s) have no shadow statistics at all (every "
            "entry masked out); give each example at least one shadow model."
        )
    if np.any(rows_no_in):
        n_out, mu_out, ss_out = groups["out"]
        var = _resolve_variance(
            n_out, ss_out, fixed=fixed_variance, group="out", caller=caller, rows=rows_no_in
        )
        score[rows_no_in] = _one_sided_out(
            t[rows_no_in], mu_out[rows_no_in], var[rows_no_in], alternative
        )
        warnings.warn(
            f"{caller}: {int(rows_no_in.sum())} of {num} example(s) have no IN shadow statistics; "
            "their scores fall back to the offline one-sided test against the OUT Gaussian "
            "(−log p-value, on a different scale from the online log-likelihood ratio). "
            "Use more shadow models so that every example is IN for some of them.",
            stacklevel=3,
        )
    if np.any(rows_no_out):
        n_in, mu_in, ss_in = groups["in"]
        var = _resolve_variance(
            n_in, ss_in, fixed=fixed_variance, group="in", caller=caller, rows=rows_no_out
        )
        score[rows_no_out] = _one_sided_in(
            t[rows_no_out], mu_in[rows_no_out], var[rows_no_out], alternative
        )
        warnings.warn(
            f"{caller}: {int(rows_no_out.sum())} of {num} example(s) have no OUT shadow "
            "statistics; their scores fall back to a one-sided test against the IN Gaussian "
            "(log p-value of the member hypothesis, on a different scale). Use more shadow "
            "models so that every example is OUT for some of them.",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------
# signals from logits (float64, numerically stable)


def _logits_and_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _float64(logits, "logits")
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


def _phi(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    onehot = np.arange(z.shape[-1]) == y[..., None]
    z_y = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return z_y - special.logsumexp(np.where(onehot, -np.inf, z), axis=-1)


def logit_confidence(logits: Any, labels: Any) -> np.ndarray:
    """LiRA's statistic φ = log p_y − log Σ_{y'≠y} p_y' = z_y − logsumexp_{y'≠y} z_y', in float64.

    Exact in log space, finite even when p_y rounds to 1 (e.g. logits [1000, 0, 0] → 1000 − log 2).
    logits (..., C), labels integer broadcastable to (...) → (...).
    """
    return _phi(*_logits_and_labels(logits, labels))


def true_class_probability(logits: Any, labels: Any, *, temperature: float = 1.0) -> np.ndarray:
    """p_y = softmax(z / T)_y = 1 / (1 + e^{−φ}) in float64 (RMIA's signal); (..., C) → (...)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    z, y = _logits_and_labels(logits, labels)
    return special.expit(_phi(z / temperature, y))


def cross_entropy(logits: Any, labels: Any) -> np.ndarray:
    """Per-example cross-entropy −log p_y = log(1 + e^{−φ}) (φ = ``logit_confidence``), float64.

    Keeps its relative precision for confident predictions (≈ e^{−φ}, where logsumexp(z) − z_y
    rounds to 0). (..., C) → (...).
    """
    return np.logaddexp(0.0, -_phi(*_logits_and_labels(logits, labels)))


def modified_entropy(logits: Any, labels: Any) -> np.ndarray:
    """Song & Mittal (2021) Mentr = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i) ≥ 0, float64.

    log(1 − p_i) is log1p(−p_i), except at the arg-max class where it is
    logsumexp_{j≠i} z_j − logsumexp z (exact when p_i → 1); log p_y = −log(1 + e^{−φ}).
    (..., C), (...) → (...).
    Lower Mentr = more likely member; the attack score is ``mentr_attack`` = −Mentr.
    """
    z, y = _logits_and_labels(logits, labels)
    lse = special.logsumexp(z, axis=-1, keepdims=True)
    logp_y = -np.logaddexp(0.0, -_phi(z, y))[..., None]  # exact also when p_y → 1
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


# ----------------------------------------------------------------------------------------------
# baseline attacks


def loss_attack(loss: Any) -> np.ndarray:
    """Yeom et al. (2018) loss attack: score = −ℓ(θ, x). Any shape → same shape, float64."""
    return -_float64(loss, "loss")


def mentr_attack(logits: Any, labels: Any) -> np.ndarray:
    """Song & Mittal (2021) modified-entropy attack with a global threshold: score = −Mentr."""
    return -modified_entropy(logits, labels)


def _loss_inputs(target_loss, shadow_losses, shadow_in, shadow_mask, caller):
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
    mu_out = np.where(m_out, s, 0.0).sum(axis=0) / n_out
    if reference == "out":
        tau = mu_out
    else:
        tau = 0.5 * (mu_out + np.where(m_in, s, 0.0).sum(axis=0) / n_in)
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
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
        ref = np.where(out, s, np.nan)
        return np.nanpercentile(ref, 100.0 * alpha, axis=0) - t
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
    level = np.where(tied, mid, level)
    return -level


# ----------------------------------------------------------------------------------------------
# LiRA and the curvature likelihood tests


def lira(
    target_stat: Any,
    shadow_stats: Any,
    shadow_in: Any,
    *,
    online: bool = True,
    fixed_variance: bool = False,
    alternative: str = "greater",
    shadow_mask: Any = None,
) -> np.ndarray:
    """Likelihood-ratio attack (Carlini et al. 2022) with per-example Gaussians fit to shadows.

    online:  Σ_a [log N(t_a; μ_in,a, σ²_in,a) − log N(t_a; μ_out,a, σ²_out,a)] (augmentations
             combined as a product of likelihoods);
    offline: Σ_a −log P[Z_a ≥ t_a], Z_a ~ N(μ_out,a, σ²_out,a) (one-sided; ``alternative="less"``
             uses −log P[Z_a ≤ t_a] for statistics that are smaller for members, e.g. losses).
    μ = mean, σ² = variance with ddof=0 (LiRA's np.std) over the shadows of each group;
    ``fixed_variance``: σ² pooled over examples (Σᵢ Σ (s − μᵢ)² / Σᵢ (nᵢ − 1)), per group and
    augmentation — better with few shadows. Examples with < 2 shadows or zero variance in a group
    use the pooled variance (warned). Online examples without IN (OUT) shadows fall back to the
    offline test (a one-sided test against the IN Gaussian), with a warning naming how many.
    target (N,) | (N, A); shadow_stats (K, N) | (K, N, A); shadow_in bool (K, N) → (N,);
    ``shadow_mask`` bool (K, N): False entries are ignored (used by ``leave_one_model_out``).
    """
    _check_alternative(alternative)
    t, s, m_in, m_out, _ = _prepare_shadow_inputs(target_stat, shadow_stats, shadow_in, shadow_mask)
    return _lira(
        t, s, m_in, m_out, online=online, fixed_variance=fixed_variance,
        alternative=alternative, caller="lira",
    )


def _lira(
    t: np.ndarray, s: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, *, online: bool,
    fixed_variance: bool, alternative: str, caller: str,
) -> np.ndarray:
    """LiRA on validated t (N, A), s (K, N, A), masks (K, N, 1) → (N,)."""
    groups = {"in": _group_moments(s, m_in), "out": _group_moments(s, m_out)}
    has_in = groups["in"][0][:, 0] > 0
    has_out = groups["out"][0][:, 0] > 0
    score = np.full(t.shape[0], np.nan)
    if online:
        both = has_in & has_out
        if np.any(both):
            var_in = _resolve_variance(
                groups["in"][0], groups["in"][2], fixed=fixed_variance, group="in",
                caller=caller, rows=both,
            )
            var_out = _resolve_variance(
                groups["out"][0], groups["out"][2], fixed=fixed_variance, group="out",
                caller=caller, rows=both,
            )
            tb = t[both]
            llr = _gauss_logpdf(tb, groups["in"][1][both], var_in[both]) - _gauss_logpdf(
                tb, groups["out"][1][both], var_out[both]
            )
            score[both] = llr.sum(axis=1)
        rows_no_in, rows_no_out = ~has_in, ~has_out
    else:
        if np.any(has_out):
            var_out = _resolve_variance(
                groups["out"][0], groups["out"][2], fixed=fixed_variance, group="out",
                caller=caller, rows=has_out,
            )
            score[has_out] = _one_sided_out(
                t[has_out], groups["out"][1][has_out], var_out[has_out], alternative
            )
        rows_no_in, rows_no_out = np.zeros_like(has_in), ~has_out
    _fallback_scores(
        score, t, groups, rows_no_in=rows_no_in, rows_no_out=rows_no_out,
        fixed_variance=fixed_variance, alternative=alternative, caller=caller,
    )
    return score


def _curvature_transform(t, s, *, log_transform: bool, paper_compatible: bool, caller: str):
    if not log_transform:
        return t, s
    if paper_compatible:
        if np.any(t <= -PAPER_EPS) or np.any(s <= -PAPER_EPS):
            raise ValueError(
                f"{caller}: log(x + 1e-22) of a negative curvature is NaN; pass absolute values "
                "(the zero-order estimator is averaged in absolute value) or log_transform=False."
            )
        return np.log(t + PAPER_EPS), np.log(s + PAPER_EPS)
    if np.any(t <= 0) or np.any(s <= 0):
        raise ValueError(
            f"{caller}: log_transform=True needs positive curvature statistics; got values <= 0. "
            "Pass |curvature| or log_transform=False (e.g. for signed white-box tr(H))."
        )
    return np.log(t), np.log(s)


def _paper_moments(s, m_in, m_out, caller):
    """The notebooks' get_score_dist_params: nanmean / nanvar (ddof=0) per group and aug."""
    n_in, mu_in, ss_in = _group_moments(s, m_in)
    n_out, mu_out, ss_out = _group_moments(s, m_out)
    if np.any(n_in == 0) or np.any(n_out == 0):
        raise ValueError(
            f"{caller}(paper_compatible=True) needs at least one IN and one OUT shadow per "
            "example (the published code would produce NaN scores). Use more shadow models or "
            "the corrected mode, which falls back with a warning."
        )
    return mu_in, ss_in / n_in, mu_out, ss_out / n_out


def curvature_lr(
    target_curv: Any,
    shadow_curv: Any,
    shadow_in: Any,
    *,
    paper_compatible: bool = False,
    log_transform: bool = True,
    fixed_variance: bool = False,
    shadow_mask: Any = None,
) -> np.ndarray:
    """Curvature Clues parametric likelihood-ratio test ("Curv LR") on input-loss curvature.

    Statistic x = log(curvature) (``log_transform``; the paper fits Gaussians to log curvature).
    Corrected (default): ``lira`` on x — Σ_a log N(x_a; μ_in, σ²_in) − log N(x_a; μ_out, σ²_out),
    σ² the variance (ddof=0); fallbacks as in ``lira`` with alternative="less" (members have
    lower curvature). ``paper_compatible=True`` reproduces the published notebook:
    x = log(c + 1e-22); score = Σ_a φ(x_a; μ_in, v_in + ε) / (Σ_a φ(x_a; μ_out, v_out + ε) + ε),
    ε = 1e-22, φ(x; μ, s) = N(x; μ, s²), i.e. the variance v is used as the standard deviation
    and likelihoods (not log-likelihoods) are summed over augmentations.
    target (N,) | (N, A); shadows (K, N) | (K, N, A); shadow_in (K, N) → (N,); ``shadow_mask``
    bool (K, N): False entries are ignored.
    """
    t, s, m_in, m_out, _ = _prepare_shadow_inputs(target_curv, shadow_curv, shadow_in, shadow_mask)
    t, s = _curvature_transform(
        t, s, log_transform=log_transform, paper_compatible=paper_compatible, caller="curvature_lr"
    )
    if not paper_compatible:
        return _lira(
            t, s, m_in, m_out, online=True, fixed_variance=fixed_variance, alternative="less",
            caller="curvature_lr",
        )
    if fixed_variance:
        raise ValueError(
            "fixed_variance is not part of the published code; use paper_compatible=False."
        )
    mu_in, v_in, mu_out, v_out = _paper_moments(s, m_in, m_out, "curvature_lr")
    # likelihood(x, mean, var) of the notebook: N(x; mean, sd = var)
    lik_in = np.exp(_gauss_logpdf(t, mu_in, (v_in + PAPER_EPS) ** 2)).sum(axis=1)
    lik_out = np.exp(_gauss_logpdf(t, mu_out, (v_out + PAPER_EPS) ** 2)).sum(axis=1)
    return lik_in / (lik_out + PAPER_EPS)


def curvature_nll(
    target_curv: Any,
    shadow_curv: Any,
    shadow_in: Any,
    *,
    paper_compatible: bool = False,
    log_transform: bool = True,
    shadow_mask: Any = None,
) -> np.ndarray:
    """Curvature Clues NLL test ("Curv NLL"): equal-variance Gaussian log-likelihood ratio.

    score = NLL_out − NLL_in = Σ_a [(x_a − μ_out,a)² − (x_a − μ_in,a)²] / (2 σ²_a), one shared
    scale per example and augmentation (the log σ terms cancel), x = log curvature.
    Corrected (default): σ²_a = pooled within-group variance (Σ_in (s − μ_in)² + Σ_out (s − μ_out)²)
    / (n_in + n_out); examples with zero pooled variance use the variance pooled over all examples
    (warned); examples without IN or OUT shadows fall back as in ``lira`` (alternative="less").
    ``paper_compatible=True`` reproduces the notebook's get_nll_ratio: σ_a = v_in,a + 1e-32 (the IN
    *variance* used as the standard deviation of both Gaussians) and x = log(c + 1e-22).
    target (N,) | (N, A); shadows (K, N) | (K, N, A); shadow_in (K, N) → (N,); ``shadow_mask``
    bool (K, N): False entries are ignored.
    """
    t, s, m_in, m_out, _ = _prepare_shadow_inputs(target_curv, shadow_curv, shadow_in, shadow_mask)
    t, s = _curvature_transform(
        t, s, log_transform=log_transform, paper_compatible=paper_compatible,
        caller="curvature_nll",
    )
    if paper_compatible:
        mu_in, v_in, mu_out, _ = _paper_moments(s, m_in, m_out, "curvature_nll")
        sd = v_in + _PAPER_NLL_EPS
        return (((t - mu_out) ** 2 - (t - mu_in) ** 2) / (2.0 * sd**2)).sum(axis=1)
    groups = {"in": _group_moments(s, m_in), "out": _group_moments(s, m_out)}
    (n_in, mu_in, ss_in), (n_out, mu_out, ss_out) = groups["in"], groups["out"]
    has_in, has_out = n_in[:, 0] > 0, n_out[:, 0] > 0
    both = has_in & has_out
    score = np.full(t.shape[0], np.nan)
    if np.any(both):
        n_tot = n_in + n_out
        var = (ss_in + ss_out) / np.maximum(n_tot, 1.0)
        need = (var <= 0.0) & both[:, None]
        if np.any(need):
            dof = np.where(both[:, None], n_tot - 2.0, 0.0).clip(min=0.0).sum(axis=0)
            pooled = np.where(both[:, None], ss_in + ss_out, 0.0).sum(axis=0) / np.maximum(dof, 1.0)
            if not np.all(pooled[np.any(need, axis=0)] > 0):
                raise ValueError(
                    "curvature_nll: all shadow statistics are constant; the test is undefined."
                )
            warnings.warn(
                f"curvature_nll: {int(np.any(need, axis=1).sum())} example(s) have zero pooled "
                "shadow variance; they use the variance pooled over all examples.",
                stacklevel=2,
            )
            var = np.where(need, np.broadcast_to(pooled, var.shape), var)
        tb = t[both]
        d = ((tb - mu_out[both]) ** 2 - (tb - mu_in[both]) ** 2) / (2.0 * var[both])
        score[both] = d.sum(axis=1)
    _fallback_scores(
        score, t, groups, rows_no_in=~has_in, rows_no_out=~has_out, fixed_variance=False,
        alternative="less", caller="curvature_nll",
    )
    return score


# ----------------------------------------------------------------------------------------------
# RMIA


def _rmia_marginal(
    ref: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, *, online: bool, a: float,
    warn_as: str | None,
) -> np.ndarray:
    """p̂(·) per example and augmentation from reference probabilities ref (R, N, A)."""
    n_in, mu_in, _ = _group_moments(ref, m_in)
    n_out, mu_out, _ = _group_moments(ref, m_out)
    has_in, has_out = n_in[:, 0] > 0, n_out[:, 0] > 0
    offline_approx = 0.5 * ((1.0 + a) * mu_out + (1.0 - a))
    _, mean_all, _ = _group_moments(ref, m_in | m_out)
    if online:
        p = np.where(has_in[:, None] & has_out[:, None], 0.5 * (mu_in + mu_out), np.nan)
        p = np.where(~has_in[:, None], offline_approx, p)
        p = np.where(~has_out[:, None], mean_all, p)
        if warn_as is not None and np.any(~has_in):
            warnings.warn(
                f"rmia: {int((~has_in).sum())} {warn_as} have no IN reference model; their p(x) "
                "uses the offline approximation ((1+a)·p_OUT + (1−a))/2.",
                stacklevel=3,
            )
    else:
        p = np.where(has_out[:, None], offline_approx, mean_all)
    if warn_as is not None and np.any(~has_out):
        warnings.warn(
            f"rmia: {int((~has_out).sum())} {warn_as} have no OUT reference model; their p(x) is "
            "the plain mean over the (IN) reference models.",
            stacklevel=3,
        )
    return p


def rmia(
    target_prob: Any,
    reference_probs: Any,
    population_prob: Any,
    population_reference_probs: Any,
    *,
    reference_in: Any = None,
    population_reference_in: Any = None,
    online: bool = True,
    offline_a: float = 0.33,
    gamma: float = 1.0,
    reference_mask: Any = None,
) -> np.ndarray:
    """RMIA (Zarifzadeh, Liu & Shokri, ICML 2024): Score(x) = Pr_z[LR(x, z) ≥ γ].

    LR(x, z) = [p(x|θ) / p(x)] / [p(z|θ) / p(z)], p(·|θ) the target model's probability of the
    true label, z over the population samples. p(·) from the reference models:
    online: p(x) = ½(mean_IN(x) + mean_OUT(x)) — the paper's mean over reference models with
    IN/OUT balanced (its code keeps equally many); a plain mean over leave-one-model-out
    references would inflate members' scores (one IN reference fewer). Examples without IN
    references use the offline form.
    offline: p(x) = ½((1 + a)·mean_OUT(x) + (1 − a)) (the paper's linear approximation, a =
    ``offline_a``, tuned by the authors on a held-out reference model).
    The population uses the same estimator; ``population_reference_in=None`` means the population
    is OUT of every reference model, so its p(z) takes the offline form. With augmentations the
    per-augmentation tests LR_a ≥ γ are combined by strict majority vote (the authors' code).
    Shapes: target_prob (N,) | (N, A); reference_probs (R, N[, A]); population_prob (Z[, A]);
    population_reference_probs (R, Z[, A]); reference_in / population_reference_in bool (R, N) /
    (R, Z); ``reference_mask`` bool (R, N): False entries are ignored. Returns (N,) in [0, 1].
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0; got {gamma}.")
    if not 0.0 <= offline_a <= 1.0:
        raise ValueError(f"offline_a must lie in [0, 1]; got {offline_a}.")
    if reference_in is None:
        if online:
            raise ValueError(
                "online RMIA needs reference_in (which reference models trained on each target); "
                "pass it, or use online=False with OUT-only references."
            )
        reference_in = np.zeros(np.shape(reference_probs)[:2], dtype=bool)
    px, ref_x, in_x, out_x, no_aug = _prepare_shadow_inputs(
        target_prob, reference_probs, reference_in, reference_mask,
        names=("target_prob", "reference_probs", "reference_in", "reference_mask"),
    )
    if population_reference_in is None:
        population_reference_in = np.zeros(np.shape(population_reference_probs)[:2], dtype=bool)
    pz, ref_z, in_z, out_z, no_aug_z = _prepare_shadow_inputs(
        population_prob, population_reference_probs, population_reference_in,
        names=("population_prob", "population_reference_probs", "population_reference_in", ""),
    )
    if no_aug != no_aug_z or px.shape[1] != pz.shape[1] or ref_x.shape[0] != ref_z.shape[0]:
        raise ValueError(
            "population arrays must match the target arrays in the number of reference models R "
            f"and augmentations A; got targets {ref_x.shape} and population {ref_z.shape}."
        )
    for name, arr in (("target/reference", (px, ref_x)), ("population", (pz, ref_z))):
        if np.any(arr[0] < 0) or np.any(arr[0] > 1) or np.any(arr[1] < 0) or np.any(arr[1] > 1):
            raise ValueError(f"rmia: {name} probabilities must lie in [0, 1].")
    p_x = _rmia_marginal(ref_x, in_x, out_x, online=online, a=offline_a, warn_as="target(s)")
    p_z = _rmia_marginal(ref_z, in_z, out_z, online=online, a=offline_a, warn_as=None)
    if np.any(p_x <= 0) or np.any(p_z <= 0):
        raise ValueError(
            "rmia: the reference models give probability 0 to some examples, so p(x) = 0; use "
            "offline mode (a < 1) or probabilities computed in float64 (true_class_probability)."
        )
    ratio_x = px / p_x  # (N, A)
    ratio_z = pz / p_z  # (Z, A)
    num_aug = px.shape[1]
    if num_aug == 1:
        rz = np.sort(ratio_z[:, 0])
        rx = ratio_x[:, 0]
        counts = np.searchsorted(rz, rx / gamma, side="right")
        counts = np.where(rx > 0, counts, 0)  # LR = 0 / r_z < γ (0/0 counts as a failed test)
        return counts / rz.size
    # LR_a(x, z) ≥ γ  ⇔  r_z,a ≤ r_x,a / γ (and r_x,a > 0); strict majority over augmentations
    thr = np.where(ratio_x > 0, ratio_x / gamma, -np.inf)
    rz_t = np.ascontiguousarray(ratio_z.T)  # (A, Z)
    scores = np.empty(px.shape[0])
    chunk = max(1, (1 << 22) // max(1, ratio_z.size))
    for start in range(0, px.shape[0], chunk):
        th = thr[start : start + chunk]
        votes = np.zeros((th.shape[0], rz_t.shape[1]), dtype=np.int32)
        for a in range(num_aug):
            votes += rz_t[a][None, :] <= th[:, a, None]
        scores[start : start + chunk] = (
            np.count_nonzero(2 * votes > num_aug, axis=1) / rz_t.shape[1]
        )
    return scores


# ----------------------------------------------------------------------------------------------
# leave-one-model-out


def _collect_warnings(caught: list, k: int, store: dict[str, list[int]]) -> None:
    for w in caught:
        store.setdefault(str(w.message), []).append(k)


def _reemit(store: dict[str, list[int]], num_models: int, caller: str) -> None:
    for msg, ks in store.items():
        warnings.warn(
            f"{caller}: target model(s) {ks[:8]}{'…' if len(ks) > 8 else ''} "
            f"({len(ks)} of {num_models}): {msg}",
            stacklevel=3,
        )


def _balancing_mask(m_others: np.ndarray, m_target: np.ndarray) -> np.ndarray:
    """Shadow mask (K-1, N) that drops, per example, the first shadow model (in model order) of
    the group opposite to the target's membership, so both groups lose one model."""
    opp = m_others != m_target[None]
    first = np.argmax(opp, axis=0)
    cols = np.flatnonzero(opp.any(axis=0))
    keep = np.ones(m_others.shape, dtype=bool)
    keep[first[cols], cols] = False
    return keep


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False


def leave_one_model_out(
    attack: Callable[..., Any], stats: Any, in_mask: Any, *, balance: bool = True, **kwargs: Any
) -> np.ndarray:
    """Scores (K, N): row k = ``attack(stats[k], stats[others], in_mask[others], **kwargs)``.

    Each ensemble member is the target in turn; the other K − 1 members are its shadow models.
    The membership labels of row k are ``in_mask[k]`` (evaluate with ``roc_metrics(scores,
    in_mask)``). Works for every attack with the (target_stat, shadow_stats, shadow_in) signature:
    ``lira``, ``curvature_lr``, ``curvature_nll``, ``calibrated_loss``, ``attack_r``.
    ``balance=True``: for each example, one shadow of the group the target is *not* in is also
    left out (passed as ``shadow_mask``), so the IN/OUT shadow counts no longer depend on the
    target's membership — otherwise the target's own group is one model smaller, which biases
    plug-in likelihood tests (null AUROC ≈ 0.489 for online LiRA with K = 16, see BUILD_NOTES).
    Warnings raised for individual targets are merged into one per distinct message.
    stats (K, N) | (K, N, A); in_mask bool (K, N).
    """
    s = np.asarray(stats)
    m = _bool_mask(in_mask, "in_mask")
    if s.ndim not in (2, 3) or m.shape != s.shape[:2]:
        raise ValueError(
            f"stats must be (K, N) or (K, N, A) and in_mask (K, N); got {s.shape} and {m.shape}."
        )
    num_models = s.shape[0]
    if num_models < 2:
        raise ValueError("leave_one_model_out needs K >= 2 models (one target, >= 1 shadow).")
    if balance and not _accepts(attack, "shadow_mask"):
        raise ValueError(
            "balance=True needs an attack with a shadow_mask keyword (all jaxcurv.mia shadow "
            "attacks have one); pass balance=False for other attacks."
        )
    out = np.empty(m.shape)
    store: dict[str, list[int]] = {}
    for k in range(num_models):
        others = np.arange(num_models) != k
        kw = dict(kwargs)
        if balance:
            kw["shadow_mask"] = _balancing_mask(m[others], m[k])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[k] = attack(s[k], s[others], m[others], **kw)
        _collect_warnings(caught, k, store)
    _reemit(store, num_models, "leave_one_model_out")
    return out


def rmia_leave_one_model_out(
    probs: Any, in_mask: Any, population_probs: Any, *, balance: bool = True, **kwargs: Any
) -> np.ndarray:
    """RMIA with each model in turn as the target and the others as reference models → (K, N).

    probs (K, N[, A]): every model's true-label probability on the targets; in_mask bool (K, N);
    population_probs (K, Z[, A]) on population samples that no model trained on (e.g. a test
    split). ``balance`` as in ``leave_one_model_out`` (via ``reference_mask``). kwargs go to
    ``rmia`` (online, offline_a, gamma, population_reference_in (K, Z)).
    """
    p = np.asarray(probs)
    m = _bool_mask(in_mask, "in_mask")
    pop = np.asarray(population_probs)
    if p.ndim not in (2, 3) or m.shape != p.shape[:2] or pop.shape[0] != p.shape[0]:
        raise ValueError(
            "probs must be (K, N[, A]), in_mask (K, N) and population_probs (K, Z[, A]); got "
            f"{p.shape}, {m.shape}, {pop.shape}."
        )
    num_models = p.shape[0]
    if num_models < 2:
        raise ValueError("rmia_leave_one_model_out needs K >= 2 models.")
    pop_in = kwargs.pop("population_reference_in", None)
    pop_in = None if pop_in is None else _bool_mask(pop_in, "population_reference_in")
    out = np.empty(m.shape)
    store: dict[str, list[int]] = {}
    for k in range(num_models):
        others = np.arange(num_models) != k
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[k] = rmia(
                p[k], p[others], pop[k], pop[others], reference_in=m[others],
                population_reference_in=None if pop_in is None else pop_in[others],
                reference_mask=_balancing_mask(m[others], m[k]) if balance else None, **kwargs,
            )
        _collect_warnings(caught, k, store)
    _reemit(store, num_models, "rmia_leave_one_model_out")
    return out


# ----------------------------------------------------------------------------------------------
# metrics

_FPR_LEVELS = {"tpr_at_fpr_0_1pct": 1e-3, "tpr_at_fpr_1pct": 1e-2}
_METRIC_KEYS = ("auroc", "balanced_accuracy", "balanced_accuracy_eer", *_FPR_LEVELS)


def _metric_inputs(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    y = np.asarray(is_member)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and is_member {y.shape} must have the same shape.")
    s = _float64(s, "scores").ravel()
    y = _bool_mask(y, "is_member").ravel()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"is_member must contain both members and non-members; got {n_pos} member(s) of "
            f"{y.size}."
        )
    return s, y


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC (fpr, tpr) for thresholds "member iff score ≥ thr" (sklearn.metrics.roc_curve, all
    distinct thresholds kept); plot on log-log axes to show the low-FPR regime."""
    s, y = _metric_inputs(scores, is_member)
    fpr, tpr, _ = _skm.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def _metrics_from_curve(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics along the last axis of ROC points (…, M) that start at (0, 0)."""
    res = {
        "auroc": np.trapezoid(tpr, fpr, axis=-1),
        "balanced_accuracy": np.max(0.5 * (tpr + 1.0 - fpr), axis=-1),
    }
    for key, level in _FPR_LEVELS.items():
        res[key] = np.max(np.where(fpr <= level, tpr, -np.inf), axis=-1)
    eer = np.argmin(np.abs(fpr + tpr - 1.0), axis=-1)[..., None]
    res["balanced_accuracy_eer"] = 0.5 * (
        np.take_along_axis(tpr, eer, -1) + 1.0 - np.take_along_axis(fpr, eer, -1)
    )[..., 0]
    return res


def _weighted_roc(
    y_sorted: np.ndarray, group_end: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points of weighted samples (B, n) sorted by decreasing score, one point per group of
    tied scores (group_end = last index of each group), prefixed by (0, 0)."""
    tp = np.cumsum(weights * y_sorted, axis=1)[:, group_end]
    fp = np.cumsum(weights * ~y_sorted, axis=1)[:, group_end]
    zero = np.zeros((weights.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([zero, tp / tp[:, -1:]], axis=1)
        fpr = np.concatenate([zero, fp / fp[:, -1:]], axis=1)
    return fpr, tpr


def roc_metrics(
    scores: Any,
    is_member: Any,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    cluster: Any = None,
) -> dict[str, Any]:
    """AUROC, balanced accuracy and TPR at low FPR of an attack; thresholds "member iff score ≥ t".

    auroc: sklearn roc_auc_score (ties count ½). balanced_accuracy: max over thresholds of
    (TPR + 1 − FPR)/2. tpr_at_fpr_0_1pct / tpr_at_fpr_1pct: the largest TPR over thresholds whose
    FPR ≤ 0.1 % / 1 % (LiRA's convention without interpolation; LiRA's plot.py uses FPR < level).
    balanced_accuracy_eer: (TPR + 1 − FPR)/2 at the threshold where |FPR + TPR − 1| is smallest —
    what the Curvature Clues notebooks report as "balanced accuracy" (sklearn roc_curve with
    drop_intermediate=True, as there). bootstrap > 0: percentile (1 − alpha) intervals as
    ``<key>_ci``; by default a stratified bootstrap of points (members and non-members resampled
    separately); with ``cluster`` (ids, same shape as scores) whole clusters are resampled — pass
    ``np.broadcast_to(np.arange(N), (K, N))`` for leave-one-model-out scores, whose K rows share
    the same N examples (a point bootstrap understates their spread).
    scores, is_member: same shape (any; flattened, e.g. (K, N) leave-one-model-out scores).
    """
    s, y = _metric_inputs(scores, is_member)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}.")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0; got {bootstrap}.")
    if cluster is not None:
        c = np.asarray(cluster)
        if c.shape != np.shape(scores):
            raise ValueError(
                f"cluster must have the shape of scores {np.shape(scores)}; got {c.shape}."
            )
        _, c = np.unique(c.ravel(), return_inverse=True)
        if c.max() < 1:
            raise ValueError("cluster needs at least 2 distinct clusters to bootstrap.")
    fpr, tpr, _ = _skm.roc_curve(y, s, drop_intermediate=False)
    point = _metrics_from_curve(fpr, tpr)
    point["auroc"] = _skm.roc_auc_score(y, s)
    fpr_d, tpr_d, _ = _skm.roc_curve(y, s)  # the notebooks' call (drop_intermediate=True)
    point["balanced_accuracy_eer"] = _metrics_from_curve(fpr_d, tpr_d)["balanced_accuracy_eer"]
    result: dict[str, Any] = {k: float(point[k]) for k in _METRIC_KEYS}
    result["num_members"] = int(y.sum())
    result["num_nonmembers"] = int(y.size - y.sum())
    if bootstrap:
        order = np.argsort(-s, kind="stable")
        s_sorted, y_sorted = s[order], y[order]
        group_end = np.append(np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1)
        pos, neg = np.flatnonzero(y_sorted), np.flatnonzero(~y_sorted)
        c_sorted = None if cluster is None else c[order]
        num_clusters = 0 if cluster is None else int(c.max()) + 1
        rng = np.random.default_rng(seed)
        draws = {k: [] for k in _METRIC_KEYS}
        chunk = max(1, (1 << 22) // s.size)
        for start in range(0, bootstrap, chunk):
            b = min(chunk, bootstrap - start)
            if c_sorted is None:
                w = np.zeros((b, s.size))
                w[:, pos] = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=b)
                w[:, neg] = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=b)
            else:
                counts = rng.multinomial(
                    num_clusters, np.full(num_clusters, 1.0 / num_clusters), size=b
                )
                w = counts[:, c_sorted].astype(np.float64)
            met = _metrics_from_curve(*_weighted_roc(y_sorted, group_end, w))
            ok = np.isfinite(met["auroc"])  # replicates that drew both classes
            for k in _METRIC_KEYS:
                draws[k].append(met[k][ok])
        num_ok = int(sum(d.size for d in draws["auroc"]))
        if num_ok < max(2, 0.9 * bootstrap):
            raise ValueError(
                f"only {num_ok} of {bootstrap} cluster-bootstrap replicates contain both members "
                "and non-members; use clusters that mix both classes (e.g. example columns)."
            )
        for k in _METRIC_KEYS:
            lo, hi = np.quantile(np.concatenate(draws[k]), [alpha / 2, 1 - alpha / 2])
            result[f"{k}_ci"] = (float(lo), float(hi))
        result["bootstrap"] = int(bootstrap)
        result["ci_level"] = 1.0 - alpha
    return result
