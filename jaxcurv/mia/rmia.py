"""RMIA (Zarifzadeh, Liu & Shokri, ICML 2024): a membership test relative to population samples.

Score(x) = Pr_z[LR(x, z) ≥ γ] with LR(x, z) = [p(x|θ) / p(x)] / [p(z|θ) / p(z)]: the target
model's true-label probability of x, normalised by its marginal p(x) over reference models, is
compared with that of population samples z. ``rmia`` takes the probabilities (from
``true_class_probability``) and returns scores (N,) in [0, 1], higher = more likely member.

p(x) and p(z) must estimate the same quantity, or every ratio of one side exceeds every ratio of
the other and all scores tie at 0 or 1. Online, p(x) = ½(mean_IN(x) + mean_OUT(x)), but
population samples that no reference model trained on only have mean_OUT(z); their p(z) uses the
paper's linear model mean_IN ≈ a·mean_OUT + (1 − a), with a fitted to the targets' own IN/OUT
references (a fixed a = 0.33, tuned by the authors for well-fit CIFAR models, made p(z) ≈ 0.4
for DP models whose probabilities are ≈ 0.12, so that every LR(x, z) ≥ 1 and every score was 1).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from jaxcurv._validate import check_float, check_positive, check_probability
from jaxcurv.mia._common import _group_moments, _prepare_shadow_inputs

__all__ = ["rmia"]


def _trimmed_mean(ref: np.ndarray, mask: np.ndarray, trim: float) -> np.ndarray:
    """Per example and augmentation, scipy.stats.trim_mean(·, trim) of the n entries of ref
    (R, N, A) where mask (R, N, 1): ⌊trim·n⌋ values cut from each end of the sorted entries;
    NaN where n = 0 → (N, A)."""
    mask = np.broadcast_to(mask, ref.shape)
    vals = np.sort(np.where(mask, ref, np.inf), axis=0)  # valid entries first, ascending
    n = mask.sum(axis=0)
    cut = np.floor(trim * n + 1e-12).astype(np.int64)  # int(trim · n), as in scipy
    rank = np.arange(ref.shape[0])[:, None, None]
    keep = (rank >= cut) & (rank < n - cut)
    total = np.where(keep, vals, 0.0).sum(axis=0)
    count = keep.sum(axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _centre(ref: np.ndarray, mask: np.ndarray, trim: float) -> np.ndarray:
    """Mean (trim = 0) or trimmed mean over the references where mask → (N, A)."""
    if trim == 0.0:
        return _group_moments(ref, mask)[1]
    return _trimmed_mean(ref, mask, trim)


def _fit_a(ref: np.ndarray, m_in: np.ndarray, m_out: np.ndarray) -> float | None:
    """a of mean_IN ≈ a·mean_OUT + (1 − a) from the targets with IN and OUT references:
    â = Σ (1 − mean_IN) / Σ (1 − mean_OUT) (so the fitted p_IN has the targets' mean), clipped to
    [0, 1]; None when no target has both groups."""
    n_in, mu_in, _ = _group_moments(ref, m_in)
    n_out, mu_out, _ = _group_moments(ref, m_out)
    both = (n_in[:, 0] > 0) & (n_out[:, 0] > 0)
    if not np.any(both):
        return None
    den = float(np.sum(1.0 - mu_out[both]))
    if den <= 0.0:  # every OUT reference probability is 1: nothing to learn, IN = OUT
        return 1.0
    return float(np.clip(np.sum(1.0 - mu_in[both]) / den, 0.0, 1.0))


def _rmia_marginal(
    ref: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, *, online: bool, a: float,
    trim: float, warn_as: str | None,
) -> np.ndarray:
    """p̂(·) per example and augmentation from reference probabilities ref (R, N, A): online
    ½(mean_IN + mean_OUT) (trim > 0: trimmed mean of the pooled references), the linear model
    ½((1 + a)·mean_OUT + (1 − a)) without IN references or offline, the mean of the IN
    references without OUT references."""
    has_in = m_in.any(axis=0)[:, 0]
    has_out = m_out.any(axis=0)[:, 0]
    out_centre = _centre(ref, m_out, trim)
    linear = 0.5 * ((1.0 + a) * out_centre + (1.0 - a))
    everything = _centre(ref, m_in | m_out, trim)
    if online:
        if trim == 0.0:
            both = 0.5 * (_group_moments(ref, m_in)[1] + out_centre)
        else:
            both = everything
        p = np.where(has_in[:, None], both, linear)
        p = np.where(~has_out[:, None], everything, p)
        if warn_as is not None and np.any(~has_in):
            warnings.warn(
                f"rmia: {int((~has_in).sum())} {warn_as} have no IN reference model; their p(x) "
                f"uses the linear model ((1+a)·p_OUT + (1−a))/2 with a = {a:.3g}.",
                stacklevel=3,
            )
    else:
        p = np.where(has_out[:, None], linear, everything)
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
    population_a: float | None = None,
    gamma: float = 1.0,
    trim: float = 0.0,
    reference_mask: Any = None,
) -> np.ndarray:
    """RMIA (Zarifzadeh, Liu & Shokri, ICML 2024): Score(x) = Pr_z[LR(x, z) ≥ γ].

    LR(x, z) = [p(x|θ) / p(x)] / [p(z|θ) / p(z)], p(·|θ) the target model's probability of the
    true label, z over the population samples. p(·) from the reference models:
    online: p(x) = ½(mean_IN(x) + mean_OUT(x)) — the paper's mean over reference models with
    IN/OUT balanced (its code keeps equally many); a plain mean over leave-one-model-out
    references would inflate members' scores (one IN reference fewer). Examples (targets or
    population samples) without IN references use p = ½((1 + a)·mean_OUT + (1 − a)) with
    a = ``population_a``; None (default) fits a to the targets' references,
    â = Σ(1 − mean_IN)/Σ(1 − mean_OUT), so that p(z) estimates the same ½(p_IN + p_OUT) as p(x)
    (a fixed a off by much puts every LR(x, z) on one side of γ: all scores 0 or 1).
    offline: p(·) = ½((1 + a)·mean_OUT + (1 − a)) for targets and population alike (the paper's
    linear approximation, a = ``offline_a``, tuned by the authors on a held-out reference model).
    ``trim`` > 0: the means over reference models are trimmed means (``scipy.stats.trim_mean``,
    ⌊trim·n⌋ cut from each end; online over the pooled IN and OUT references) as in the authors'
    ICML code (``proportiontocut``, 0.2 in its configs); 0 = plain means. The population uses the
    same estimator; ``population_reference_in=None`` means the population is OUT of every reference
    model. With augmentations the per-augmentation tests LR_a ≥ γ are combined by strict majority
    vote (the authors' code).
    Shapes: target_prob (N,) | (N, A); reference_probs (R, N[, A]); population_prob (Z[, A]);
    population_reference_probs (R, Z[, A]); reference_in / population_reference_in bool (R, N) /
    (R, Z); ``reference_mask`` bool (R, N): False entries are ignored. Returns (N,) in [0, 1].
    """
    gamma = check_positive("gamma", gamma)
    offline_a = check_probability("offline_a", offline_a)
    if population_a is not None:
        population_a = check_probability("population_a", population_a)
    trim = check_float("trim", trim, minimum=0.0, maximum=0.5, allow_maximum=False)
    (px, ref_x, in_x, out_x), (pz, ref_z, in_z, out_z) = _rmia_inputs(
        target_prob, reference_probs, population_prob, population_reference_probs,
        reference_in=reference_in, population_reference_in=population_reference_in,
        reference_mask=reference_mask, online=online,
    )
    a = offline_a
    if online:
        fitted = _fit_a(ref_x, in_x, out_x) if population_a is None else population_a
        a = offline_a if fitted is None else fitted
    p_x = _rmia_marginal(ref_x, in_x, out_x, online=online, a=a, trim=trim,
                         warn_as="target(s)")
    p_z = _rmia_marginal(ref_z, in_z, out_z, online=online, a=a, trim=trim, warn_as=None)
    if np.any(p_x <= 0) or np.any(p_z <= 0):
        raise ValueError(
            "rmia: the reference models give probability 0 to some examples, so p(x) = 0; use "
            "offline mode (a < 1) or probabilities computed in float64 (true_class_probability)."
        )
    return _pairwise_test(px / p_x, pz / p_z, gamma)


def _rmia_inputs(
    target_prob: Any,
    reference_probs: Any,
    population_prob: Any,
    population_reference_probs: Any,
    *,
    reference_in: Any,
    population_reference_in: Any,
    reference_mask: Any,
    online: bool,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Validated (p (N, A), ref (R, N, A), IN, OUT (R, N, 1)) for the targets and the same for the
    population (Z in place of N); probabilities checked to lie in [0, 1]."""
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
    return (px, ref_x, in_x, out_x), (pz, ref_z, in_z, out_z)


def _pairwise_test(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population samples z with LR(x, z) = r_x / r_z ≥ γ, from the ratios
    r = p(·|θ) / p(·) of targets (N, A) and population (Z, A) → (N,); with A > 1 the
    per-augmentation tests are combined by strict majority vote."""
    num_aug = ratio_x.shape[1]
    if num_aug == 1:
        rz = np.sort(ratio_z[:, 0])
        rx = ratio_x[:, 0]
        counts = np.searchsorted(rz, rx / gamma, side="right")
        counts = np.where(rx > 0, counts, 0)  # LR = 0 / r_z < γ (0/0 counts as a failed test)
        return counts / rz.size
    # LR_a(x, z) ≥ γ  ⇔  r_z,a ≤ r_x,a / γ (and r_x,a > 0); strict majority over augmentations
    thr = np.where(ratio_x > 0, ratio_x / gamma, -np.inf)
    rz_t = np.ascontiguousarray(ratio_z.T)  # (A, Z)
    scores = np.empty(ratio_x.shape[0])
    chunk = max(1, (1 << 22) // max(1, ratio_z.size))
    for start in range(0, ratio_x.shape[0], chunk):
        th = thr[start : start + chunk]
        votes = np.zeros((th.shape[0], rz_t.shape[1]), dtype=np.int32)
        for a in range(num_aug):
            votes += rz_t[a][None, :] <= th[:, a, None]
        scores[start : start + chunk] = (
            np.count_nonzero(2 * votes > num_aug, axis=1) / rz_t.shape[1]
        )
    return scores
