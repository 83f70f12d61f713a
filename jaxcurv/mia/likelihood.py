"""Likelihood-ratio tests on shadow-model statistics: per-example Gaussians for IN and OUT.

Every test has the shadow signature ``attack(target_stat, shadow_stats, shadow_in, *,
shadow_mask=None, ...)`` with target (N,) | (N, A), shadows (K, N) | (K, N, A), shadow_in bool
(K, N), and returns scores (N,) in float64, higher = more likely member:
``lira`` (Carlini et al. 2022) and the Curvature Clues tests on input-loss curvature
``curvature_lr`` and ``curvature_nll`` (Ravikumar et al. 2024; corrected statistics, or the
published notebooks' with ``paper_compatible=True``). Examples whose IN or OUT group is
degenerate use pooled variances; an example without IN (or OUT) shadows gets that Gaussian
imputed from its other group shifted by the mean IN − OUT difference of the other examples, so
that every example is scored by the same test on the same scale (one-sided tests only where a
group is empty for every example); each case is warned with a count.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import special

from jaxcurv.mia._common import _group_moments, _prepare_shadow_inputs

__all__ = ["lira", "curvature_lr", "curvature_nll", "PAPER_EPS"]

_LOG_2PI = math.log(2.0 * math.pi)
# Constants of the Curvature Clues notebooks (conditonal_mia_aug_cifar{10,100}.ipynb):
# eps = 1e-22 in log(x + eps), in the LR variance and LR denominator; 1e-32 in the NLL variance.
PAPER_EPS = 1e-22
_PAPER_NLL_EPS = 1e-32
_ALTERNATIVES = ("greater", "less")
_CENTERS = ("mean", "median")
_OFFLINE_TESTS = ("one_sided", "two_sided")

# ----------------------------------------------------------------------------------------------
# Gaussian moments, variances and one-sided fallbacks (host side, validated inputs)


def _pooled_variance(n: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Unbiased pooled within-example variance per augmentation, Σᵢ ssᵢ / Σᵢ (nᵢ − 1)₊; (A,)."""
    dof = np.maximum(n - 1.0, 0.0).sum(axis=0)  # (1,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dof > 0, ss.sum(axis=0) / np.maximum(dof, 1.0), np.nan)


def _resolve_variance(
    n: np.ndarray, ss: np.ndarray, *, fixed: bool, group: str, caller: str, rows: np.ndarray,
    global_var: float | None = None,
) -> np.ndarray:
    """Variance (N, A) for the examples in ``rows`` (bool (N,)): per example (ddof=0, as LiRA's
    np.std) or pooled; examples with < 2 shadows or zero variance get the pooled variance.
    ``global_var``: this one value everywhere (``fixed_variance="global"``)."""
    if global_var is not None:
        return np.full(ss.shape, global_var)
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


def _global_variance(s: np.ndarray, m: np.ndarray, *, group: str, caller: str) -> float:
    """Variance (ddof=0) of every statistic s (K, N, A) of a group (mask m (K, N, 1)) pooled over
    examples, shadows and augmentations around their one overall mean: the published LiRA code's
    ``np.std(dat_in)`` squared (``fixed_variance="global"``)."""
    values = s[np.broadcast_to(m, s.shape)]
    var = float(np.var(values)) if values.size else math.nan
    if not (math.isfinite(var) and var > 0):
        raise ValueError(
            f"{caller}: cannot estimate the global {group.upper()} variance: fewer than two "
            f"distinct {group.upper()} shadow statistics. Train more shadow models."
        )
    return var


def _masked_median(s: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Median over shadows of s (K, N, A) where m (K, N, 1), per example and augmentation (the
    published LiRA code's np.median(dat, 1)); NaN where the group is empty → (N, A)."""
    mask = np.broadcast_to(m, s.shape)
    ordered = np.sort(np.where(mask, s, np.inf), axis=0)  # the group's values first, ascending
    n = mask.sum(axis=0)                                  # (N, A)
    lower = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    upper = np.take_along_axis(ordered, np.maximum(n // 2, 0)[None], axis=0)[0]
    # the two middle values averaged as np.median does (a sort, not np.nanmedian: 10× faster)
    return np.where(n > 0, np.mean(np.stack([lower, upper]), axis=0), np.nan)


def _check_lira_options(center: str, offline_test: str, fixed_variance: Any) -> None:
    """ValueError unless the LiRA options are among the supported values."""
    if center not in _CENTERS:
        raise ValueError(f"center must be one of {_CENTERS}; got {center!r}.")
    if offline_test not in _OFFLINE_TESTS:
        raise ValueError(f"offline_test must be one of {_OFFLINE_TESTS}; got {offline_test!r}.")
    if not (isinstance(fixed_variance, (bool, np.bool_))
            or (isinstance(fixed_variance, str) and fixed_variance == "global")):
        raise ValueError(
            f"fixed_variance must be False, True or 'global'; got {fixed_variance!r}."
        )


def _gauss_logpdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log N(x; mean, var), elementwise, float64."""
    return -0.5 * (x - mean) ** 2 / var - 0.5 * np.log(var) - 0.5 * _LOG_2PI


def _check_alternative(alternative: str) -> None:
    """ValueError unless ``alternative`` is "greater" or "less"."""
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


def _two_sided_out(t: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Offline density test of the published LiRA code, summed over A: Σ −log N(t; mean, var)
    (large when t is far from the OUT Gaussian on either side), (N,)."""
    return -_gauss_logpdf(t, mean, var).sum(axis=1)


def _offline_out(
    t: np.ndarray, mean: np.ndarray, var: np.ndarray, alternative: str, offline_test: str
) -> np.ndarray:
    """The offline test against the OUT Gaussian selected by ``offline_test``, (N,)."""
    if offline_test == "two_sided":
        return _two_sided_out(t, mean, var)
    return _one_sided_out(t, mean, var, alternative)


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
    centers: dict[str, np.ndarray] | None = None,
    global_var: dict[str, float] | None = None,
    offline_test: str = "one_sided",
) -> None:
    """Fill ``score`` in place for examples lacking IN (offline test vs OUT) or OUT shadows
    (one-sided test vs IN), with a warning naming how many. Used only where the missing group is
    empty for *every* example (no IN − OUT shift to impute it from), so all of them get the same
    test. ``centers``: Gaussian locations per group (default the means); ``global_var``: one
    variance per group."""
    num = t.shape[0]
    centers = centers or {g: groups[g][1] for g in ("in", "out")}
    global_var = global_var or {}
    if np.any(rows_no_in):
        n_out, _, ss_out = groups["out"]
        var = _resolve_variance(
            n_out, ss_out, fixed=fixed_variance, group="out", caller=caller, rows=rows_no_in,
            global_var=global_var.get("out"),
        )
        score[rows_no_in] = _offline_out(
            t[rows_no_in], centers["out"][rows_no_in], var[rows_no_in], alternative, offline_test
        )
        warnings.warn(
            f"{caller}: {int(rows_no_in.sum())} of {num} example(s) have no IN shadow statistics; "
            "their scores fall back to the offline test against the OUT Gaussian "
            "(−log p-value or −log density, on a different scale from the online log-likelihood "
            "ratio). Use more shadow models so that every example is IN for some of them.",
            stacklevel=3,
        )
    if np.any(rows_no_out):
        n_in, _, ss_in = groups["in"]
        var = _resolve_variance(
            n_in, ss_in, fixed=fixed_variance, group="in", caller=caller, rows=rows_no_out,
            global_var=global_var.get("in"),
        )
        score[rows_no_out] = _one_sided_in(
            t[rows_no_out], centers["in"][rows_no_out], var[rows_no_out], alternative
        )
        warnings.warn(
            f"{caller}: {int(rows_no_out.sum())} of {num} example(s) have no OUT shadow "
            "statistics; their scores fall back to a one-sided test against the IN Gaussian "
            "(log p-value of the member hypothesis, on a different scale). Use more shadow "
            "models so that every example is OUT for some of them.",
            stacklevel=3,
        )


def _check_some_shadow(has_in: np.ndarray, has_out: np.ndarray, caller: str) -> None:
    """ValueError naming how many examples have neither IN nor OUT shadow statistics."""
    none = ~has_in & ~has_out
    if np.any(none):
        raise ValueError(
            f"{caller}: {int(none.sum())} example(s) have no shadow statistics at all (every "
            "entry masked out); give each example at least one shadow model."
        )


def _membership_shift(
    s: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, centers: dict[str, np.ndarray],
    has_in: np.ndarray, has_out: np.ndarray,
) -> np.ndarray | None:
    """Δ (A,), the typical IN − OUT shift of a statistic: the mean of centre_IN − centre_OUT over
    the examples with both groups; without such examples, the mean of all IN statistics minus
    the mean of all OUT statistics of s (K, N, A); None when a group is empty for every example."""
    if not (np.any(has_in) and np.any(has_out)):
        return None
    both = has_in & has_out
    if np.any(both):
        return np.mean(centers["in"][both] - centers["out"][both], axis=0)

    def overall_mean(m: np.ndarray) -> np.ndarray:
        return np.where(m, s, 0.0).sum(axis=(0, 1)) / np.broadcast_to(m, s.shape).sum(axis=(0, 1))

    return overall_mean(m_in) - overall_mean(m_out)


def _impute_centers(
    centers: dict[str, np.ndarray], delta: np.ndarray, has_in: np.ndarray, has_out: np.ndarray
) -> dict[str, np.ndarray]:
    """Group centres (N, A) with an empty group's centre imputed from the other one:
    centre_IN = centre_OUT + Δ where IN is empty, centre_OUT = centre_IN − Δ where OUT is."""
    c_in, c_out = centers["in"], centers["out"]
    return {
        "in": np.where(has_in[:, None], c_in, c_out + delta),
        "out": np.where(has_out[:, None], c_out, c_in - delta),
    }


def _warn_imputed(caller: str, group: str, rows: np.ndarray, stacklevel: int) -> None:
    """Warn how many examples had the Gaussian of ``group`` imputed (rows bool (N,))."""
    if not np.any(rows):
        return
    g, o = group.upper(), "OUT" if group == "in" else "IN"
    warnings.warn(
        f"{caller}: {int(rows.sum())} of {rows.size} example(s) have no {g} shadow statistics; "
        f"their {g} Gaussian is imputed (centre = their {o} centre {'+' if g == 'IN' else '−'} "
        f"the mean IN − OUT difference of the other examples), so that they get the same test "
        f"on the same scale as the others. Use more shadow models so that every example is "
        f"{g} for some of them.",
        stacklevel=stacklevel + 1,
    )


# ----------------------------------------------------------------------------------------------
# LiRA and the curvature likelihood tests


def lira(
    target_stat: Any,
    shadow_stats: Any,
    shadow_in: Any,
    *,
    online: bool = True,
    fixed_variance: bool | str = False,
    alternative: str = "greater",
    center: str = "mean",
    offline_test: str = "one_sided",
    shadow_mask: Any = None,
) -> np.ndarray:
    """Likelihood-ratio attack (Carlini et al. 2022) with per-example Gaussians fit to shadows.

    online:  Σ_a [log N(t_a; μ_in,a, σ²_in,a) − log N(t_a; μ_out,a, σ²_out,a)] (augmentations
             combined as a product of likelihoods);
    offline: Σ_a −log P[Z_a ≥ t_a], Z_a ~ N(μ_out,a, σ²_out,a) (one-sided; ``alternative="less"``
             uses −log P[Z_a ≤ t_a] for statistics that are smaller for members, e.g. losses).
    μ = mean, σ² = variance with ddof=0 (LiRA's np.std) over the shadows of each group;
    ``fixed_variance=True``: σ² pooled over examples (Σᵢ Σ (s − μᵢ)² / Σᵢ (nᵢ − 1)), per group and
    augmentation — better with few shadows. Examples with < 2 shadows or zero variance in a group
    use the pooled variance (warned). An example without IN (OUT) shadows gets its IN (OUT)
    Gaussian imputed: centre = the other group's centre ± Δ, Δ (per augmentation) the mean
    IN − OUT centre difference of the examples with both groups (of all IN minus all OUT
    statistics where none has both), variance pooled over examples (the other group's where no
    example has two of its shadows); it is then scored by the same test on the same scale as
    every other example (warned with a count). Which group is missing must not pick the test:
    with leave-one-model-out on few models that choice follows the target's membership, and
    one-sided fallbacks (≥ 0 offline, ≤ 0 against IN) ranked members below chance. Only where
    a group is empty for *every* example do they fall back to the offline test (no IN) or
    Σ_a log P[Z_a ≤ t_a], Z_a ~ N(μ_in,a, σ²_in,a) (no OUT; ≥ for ``alternative="less"``).
    These defaults follow the paper. The published code (carlini/privacy,
    research/mi_lira_2021/plot.py, ``generate_ours`` / ``generate_ours_offline``) differs, and
    each of its choices is an option:
    ``center="median"``: μ = median of each group's shadow statistics (its ``np.median(dat, 1)``;
    σ² stays the variance around the mean, as its ``np.std``);
    ``offline_test="two_sided"``: offline score Σ_a −log N(t_a; μ_out, σ²_out), the density of
    the OUT Gaussian (its ``-scipy.stats.norm.logpdf``), large on either side; ``alternative`` is
    then unused;
    ``fixed_variance="global"``: one variance per group over all examples, shadows and
    augmentations around their overall mean (its ``np.std(dat_in)``); online, like the published
    code (``std_out = np.std(dat_in)``), the IN group's global variance serves both Gaussians.
    The published code averages over augmentations where this sums (same ranking, ×A).
    target (N,) | (N, A); shadow_stats (K, N) | (K, N, A); shadow_in bool (K, N) → (N,);
    ``shadow_mask`` bool (K, N): False entries are ignored (used by ``leave_one_model_out``).
    """
    _check_alternative(alternative)
    _check_lira_options(center, offline_test, fixed_variance)
    t, s, m_in, m_out, _ = _prepare_shadow_inputs(target_stat, shadow_stats, shadow_in, shadow_mask)
    return _lira(
        t, s, m_in, m_out, online=online, fixed_variance=fixed_variance,
        alternative=alternative, caller="lira", center=center, offline_test=offline_test,
    )


def _lira(
    t: np.ndarray, s: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, *, online: bool,
    fixed_variance: bool | str, alternative: str, caller: str, center: str = "mean",
    offline_test: str = "one_sided",
) -> np.ndarray:
    """LiRA on validated t (N, A), s (K, N, A), masks (K, N, 1) → (N,)."""
    groups = {"in": _group_moments(s, m_in), "out": _group_moments(s, m_out)}
    has_in = groups["in"][0][:, 0] > 0
    has_out = groups["out"][0][:, 0] > 0
    _check_some_shadow(has_in, has_out, caller)
    if center == "median":  # the IN median only where a test uses it (online, or no OUT group)
        centers = {"out": _masked_median(s, m_out),
                   "in": _masked_median(s, m_in) if online or not np.all(has_out)
                   else groups["in"][1]}
    else:
        centers = {g: groups[g][1] for g in groups}
    global_var: dict[str, float] = {}
    if isinstance(fixed_variance, str):  # "global"
        if np.any(has_in) and (online or np.any(~has_out)):
            global_var["in"] = _global_variance(s, m_in, group="in", caller=caller)
        if online and "in" in global_var:  # the published code: std_out = np.std(dat_in)
            global_var["out"] = global_var["in"]
        elif np.any(has_out):
            global_var["out"] = _global_variance(s, m_out, group="out", caller=caller)
    fixed = bool(fixed_variance)
    delta = _membership_shift(s, m_in, m_out, centers, has_in, has_out)
    # with a shift Δ, an empty group is imputed and every example gets the same test
    imputed = {"in": ~has_in & online, "out": ~has_out} if delta is not None else {
        "in": np.zeros_like(has_in), "out": np.zeros_like(has_out)}
    if delta is not None:
        centers = _impute_centers(centers, delta, has_in, has_out)
    score = np.full(t.shape[0], np.nan)

    def variance(group: str, rows: np.ndarray) -> np.ndarray:
        """(N, A), valid at rows: the group's own variance, or where the group was imputed its
        variance pooled over examples (else the other group's)."""
        n, _, ss = groups[group]
        own = rows & (n[:, 0] > 0)
        var = _resolve_variance(n, ss, fixed=fixed, group=group, caller=caller, rows=own,
                                global_var=global_var.get(group))
        missing = rows & ~(n[:, 0] > 0)
        if np.any(missing):
            pooled = global_var.get(group)
            pooled = np.broadcast_to(_pooled_variance(n, ss) if pooled is None else pooled,
                                     t.shape[1:])
            if np.all(np.isfinite(pooled) & (pooled > 0)):
                fill = np.broadcast_to(pooled, var.shape)
            else:
                fill = variance("out" if group == "in" else "in", missing)
            var = np.where(missing[:, None], fill, var)
        return var

    if online:
        scored = (has_in | imputed["in"]) & (has_out | imputed["out"])
        if np.any(scored):
            var_in, var_out = variance("in", scored), variance("out", scored)
            tb = t[scored]
            llr = _gauss_logpdf(tb, centers["in"][scored], var_in[scored]) - _gauss_logpdf(
                tb, centers["out"][scored], var_out[scored]
            )
            score[scored] = llr.sum(axis=1)
        rows_no_in = ~has_in & ~imputed["in"]
    else:
        scored = has_out | imputed["out"]
        if np.any(scored):
            var_out = variance("out", scored)
            score[scored] = _offline_out(
                t[scored], centers["out"][scored], var_out[scored], alternative, offline_test
            )
        rows_no_in = np.zeros_like(has_in)
    _warn_imputed(caller, "in", imputed["in"], stacklevel=3)
    _warn_imputed(caller, "out", imputed["out"], stacklevel=3)
    _fallback_scores(
        score, t, groups, rows_no_in=rows_no_in, rows_no_out=~has_out & ~imputed["out"],
        fixed_variance=fixed, alternative=alternative, caller=caller, centers=centers,
        global_var=global_var, offline_test=offline_test,
    )
    return score


def _curvature_transform(
    t: np.ndarray, s: np.ndarray, *, log_transform: bool, paper_compatible: bool, caller: str
) -> tuple[np.ndarray, np.ndarray]:
    """x = log(curvature) (log(c + 1e-22) when ``paper_compatible``) of t and s, or unchanged."""
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


def _paper_moments(
    s: np.ndarray, m_in: np.ndarray, m_out: np.ndarray, caller: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    σ² the variance (ddof=0); an empty IN or OUT group imputed as in ``lira`` (alternative="less"
    where a group is empty everywhere: members have lower curvature). ``paper_compatible=True`` reproduces the published notebook:
    x = log(c + 1e-22); score = Σ_a φ(x_a; μ_in, v_in + ε) / (Σ_a φ(x_a; μ_out, v_out + ε) + ε),
    ε = 1e-22, φ(x; μ, s) = N(x; μ, s²), i.e. the variance v is used as the standard deviation
    and likelihoods (not log-likelihoods) are summed over augmentations.
    target (N,) | (N, A); shadows (K, N) | (K, N, A); shadow_in (K, N) → (N,); ``shadow_mask``
    bool (K, N): False entries are ignored.
    """
    _check_lira_options("mean", "one_sided", fixed_variance)
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
    (warned); an example without IN or OUT shadows gets that group's mean imputed as in ``lira``
    (μ_in = μ_out + Δ or μ_out = μ_in − Δ) and its present group's variance; one-sided tests
    (alternative="less") only where a group is empty for every example.
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
    _check_some_shadow(has_in, has_out, "curvature_nll")
    centers = {"in": mu_in, "out": mu_out}
    delta = _membership_shift(s, m_in, m_out, centers, has_in, has_out)
    if delta is None:
        scored = has_in & has_out
    else:  # an empty group is imputed; its example's variance is the other group's
        centers = _impute_centers(centers, delta, has_in, has_out)
        scored = np.ones_like(has_in)
    score = np.full(t.shape[0], np.nan)
    if np.any(scored):
        n_tot = n_in + n_out
        var = (ss_in + ss_out) / np.maximum(n_tot, 1.0)
        need = (var <= 0.0) & scored[:, None]
        if np.any(need):
            dof = np.maximum(n_in - 1.0, 0.0) + np.maximum(n_out - 1.0, 0.0)
            dof = np.where(scored[:, None], dof, 0.0).sum(axis=0)
            pooled = np.where(scored[:, None], ss_in + ss_out, 0.0).sum(axis=0) / np.maximum(dof, 1.0)
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
        tb = t[scored]
        d = ((tb - centers["out"][scored]) ** 2 - (tb - centers["in"][scored]) ** 2) / (
            2.0 * var[scored]
        )
        score[scored] = d.sum(axis=1)
    if delta is not None:
        _warn_imputed("curvature_nll", "in", ~has_in, stacklevel=2)
        _warn_imputed("curvature_nll", "out", ~has_out, stacklevel=2)
    _fallback_scores(
        score, t, groups, rows_no_in=~has_in & ~scored, rows_no_out=~has_out & ~scored,
        fixed_variance=False, alternative="less", caller="curvature_nll",
    )
    return score
