"""Feldman–Zhang memorization and the host-side (numpy, float64) statistics around it.

Shapes: K ensemble members, N examples, E epochs, C classes.

- ``feldman_zhang``: mem(i) = P̂[correct on i | i in] − P̂[correct on i | i out] over an ensemble
  trained on random subsets (Feldman & Zhang 2020), with its binomial standard error;
  ``memorization_interval`` its Agresti–Caffo confidence interval (``agresti_caffo_interval``
  from the counts), what a claim "example i is memorized" needs with few members;
  ``cross_fitted_memorization`` estimates it from the other half of the members.
- ``held_out_gain``: the SAM paper's per-example metric, P̂[a correct on i | i out] −
  P̂[b correct on i | i out] of two ensembles trained on the same subsets with the same keys
  (e.g. SAM vs SGD), with its standard error; ``gain_by_memorization`` bins it by memorization.
- ``correctness``, ``learning_time``: per-member outcomes the estimators and proxies start from.
- ``correlations``, ``top_memorized``, ``bin_by``: what the mem-vs-proxy figures need.
- ``rank_flipped``: how well a score ranks mislabeled (flipped) examples first.
- ``masked_mean``: the mean over the members a mask selects (IN or OUT), per example.

Kept for compatibility, loaded on first use from their own modules: ``adversarial_distance`` and
``AdversarialDistance`` (:mod:`jaxcurv.adversarial`), ``proxies`` and ``PROXY_NAMES``
(:mod:`jaxcurv.workflow.proxy_scores`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn import metrics as _skm

from jaxcurv._numerics import masked_mean
from jaxcurv._validate import as_bool_array, as_float_array, check_positive_int, check_probability

__all__ = [
    "feldman_zhang",
    "agresti_caffo_interval",
    "memorization_interval",
    "cross_fitted_memorization",
    "held_out_gain",
    "gain_by_memorization",
    "GAIN_EDGES",
    "masked_mean",
    "correctness",
    "learning_time",
    "correlations",
    "top_memorized",
    "BinStats",
    "bin_by",
    "rank_flipped",
    "STDERR_METHODS",
]

STDERR_METHODS = ("plugin", "agresti_caffo")
GAIN_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)

# ----------------------------------------------------------------------------------------------
# Feldman–Zhang memorization


def feldman_zhang(correct, in_mask, *,
                  stderr_method: str = "plugin") -> tuple[np.ndarray, np.ndarray]:
    """Feldman–Zhang memorization of each example from an ensemble: (mem, stderr), each (N,).

    correct, in_mask: bool (K, N) — member k classifies example i correctly / trained on it.
    mem(i) = p_in − p_out with p_in = mean of correct[k, i] over the n_in members with i in their
    subset and p_out over the n_out others. ``stderr_method``: "plugin" (default, as in FZ):
    √(p_in(1−p_in)/n_in + p_out(1−p_out)/n_out) — exactly 0 when both p are 0 or 1, which with
    few members understates the uncertainty; "agresti_caffo": the same formula with
    p̃ = (successes + 1)/(n + 2) and n + 2 (Agresti & Caffo 2000), never 0 (mem stays the plug-in
    difference). Examples never in or never out get NaN (one warning says how many).
    """
    if stderr_method not in STDERR_METHODS:
        raise ValueError(f"unknown stderr_method {stderr_method!r}; choose one of {STDERR_METHODS}")
    c = as_bool_array("correct", correct)
    m = as_bool_array("in_mask", in_mask)
    if c.ndim != 2 or c.shape != m.shape:
        raise ValueError(f"correct and in_mask must both be (K, N) with the same shape, got "
                         f"{c.shape} and {m.shape}")
    if c.shape[0] < 2:
        raise ValueError(f"feldman_zhang needs K >= 2 models (some with the example in, some "
                         f"out), got K = {c.shape[0]}")
    n_in, n_out = m.sum(0), (~m).sum(0)
    x_in, x_out = (c & m).sum(0), (c & ~m).sum(0)
    bad = (n_in == 0) | (n_out == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_in, p_out = x_in / n_in, x_out / n_out
        mem = p_in - p_out
        if stderr_method == "agresti_caffo":
            t_in, t_out = n_in + 2.0, n_out + 2.0
            q_in, q_out = (x_in + 1.0) / t_in, (x_out + 1.0) / t_out
            var = q_in * (1 - q_in) / t_in + q_out * (1 - q_out) / t_out
        else:
            var = p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out
    mem = np.where(bad, np.nan, mem)
    stderr = np.where(bad, np.nan, np.sqrt(np.maximum(var, 0.0)))
    if bad.any():
        warnings.warn(f"feldman_zhang: {int((n_in == 0).sum())} example(s) are in no model's "
                      f"subset and {int((n_out == 0).sum())} in every model's; their mem and "
                      "stderr are NaN (use more models or balanced subset_masks)", stacklevel=2)
    return mem.astype(np.float64), stderr.astype(np.float64)


def agresti_caffo_interval(x_in, n_in, x_out, n_out, *,
                           confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Agresti–Caffo confidence interval (lo, hi) for p_in − p_out from counts (broadcast arrays):
    x_in successes of n_in trials and x_out of n_out. With p̃ = (x + 1)/(n + 2) on each side,
    (p̃_in − p̃_out) ± z·√(p̃_in(1 − p̃_in)/(n_in + 2) + p̃_out(1 − p̃_out)/(n_out + 2)),
    z = Φ⁻¹(1 − (1 − confidence)/2), clipped to [−1, 1] (Agresti & Caffo 2000). Unlike the
    plug-in (Wald) interval it never has zero width, so 4 of 4 against 0 of 4 is not "certain".
    NaN where n_in or n_out is 0."""
    conf = check_probability("confidence", confidence, open_low=True, open_high=True)
    x_in, n_in, x_out, n_out = (np.asarray(a, np.float64) for a in (x_in, n_in, x_out, n_out))
    if np.any(x_in < 0) or np.any(x_out < 0) or np.any(x_in > n_in) or np.any(x_out > n_out):
        raise ValueError("agresti_caffo_interval needs 0 <= x_in <= n_in and 0 <= x_out <= n_out")
    z = stats.norm.ppf(0.5 + conf / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_in, q_out = (x_in + 1) / (n_in + 2), (x_out + 1) / (n_out + 2)
        center = q_in - q_out
        half = z * np.sqrt(q_in * (1 - q_in) / (n_in + 2) + q_out * (1 - q_out) / (n_out + 2))
    bad = (n_in <= 0) | (n_out <= 0)
    lo = np.where(bad, np.nan, np.clip(center - half, -1.0, 1.0))
    hi = np.where(bad, np.nan, np.clip(center + half, -1.0, 1.0))
    return lo, hi


def memorization_interval(correct, in_mask, *,
                          confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval (lo, hi), each (N,), of each example's Feldman–Zhang memorization
    from correct, in_mask bool (K, N): :func:`agresti_caffo_interval` of the IN and OUT counts.
    An example is memorized at this confidence when lo > 0, highly memorized when lo exceeds the
    threshold (e.g. 0.5). NaN (no warning) where an example is never in or never out."""
    c = as_bool_array("correct", correct, ndim=2)
    m = as_bool_array("in_mask", in_mask, ndim=2)
    if c.shape != m.shape:
        raise ValueError(f"correct and in_mask must both be (K, N), got {c.shape} and {m.shape}")
    return agresti_caffo_interval((c & m).sum(0), m.sum(0), (c & ~m).sum(0), (~m).sum(0),
                                  confidence=confidence)


def cross_fitted_memorization(correct, in_mask) -> np.ndarray:
    """(K, N): row k holds each example's FZ memorization estimated only from the members of the
    other half (members split by index parity), so an analysis of member k's outcomes per
    memorization bin does not select on member k's own correctness. NaN (no warning) where that
    half never holds an example in or out."""
    correct, in_mask = as_bool_array("correct", correct), as_bool_array("in_mask", in_mask)
    if correct.shape != in_mask.shape or correct.ndim != 2:
        raise ValueError(f"correct {correct.shape} and in_mask {in_mask.shape} must be the same "
                         "(K, N)")
    k = correct.shape[0]
    if k < 4:
        raise ValueError(f"cross-fitting needs K >= 4 members (two per half), got {k}")
    odd = np.arange(k) % 2 == 1
    out = np.empty(correct.shape)
    for estimate in (odd, ~odd):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mem, _ = feldman_zhang(correct[estimate], in_mask[estimate])
        out[~estimate] = mem
    return out


def held_out_gain(correct_a, correct_b, in_mask, *,
                  paired: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Held-out accuracy gain of ensemble a over ensemble b on each example: (gain, stderr) (N,).

    correct_a, correct_b, in_mask: bool (K, N); member k of a and member k of b trained on the
    same subset ``in_mask[k]`` (and, for ``paired``, from the same keys). Over the n_out members
    that leave example i out, gain(i) = mean_k a[k, i] − mean_k b[k, i] = mean_k d_k with
    d_k = a[k, i] − b[k, i]. ``paired`` (default): stderr = s_d/√n_out with s_d the sample
    standard deviation (ddof = 1) of the d_k (NaN when n_out < 2); else the independent-binomial
    plug-in √(p_a(1 − p_a) + p_b(1 − p_b))/√n_out, as :func:`feldman_zhang`. Examples that no
    member leaves out get NaN (one warning says how many).
    """
    a = as_bool_array("correct_a", correct_a)
    b = as_bool_array("correct_b", correct_b)
    m = as_bool_array("in_mask", in_mask)
    if a.ndim != 2 or a.shape != b.shape or a.shape != m.shape:
        raise ValueError(f"correct_a, correct_b and in_mask must all be (K, N) with the same "
                         f"shape, got {a.shape}, {b.shape} and {m.shape}")
    out = ~m
    n_out = out.sum(0)
    d = a.astype(np.float64) - b.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = (d * out).sum(0) / n_out
        if paired:
            ss = (((d - gain) ** 2) * out).sum(0)
            var = ss / (n_out - 1) / n_out
            var = np.where(n_out < 2, np.nan, var)
        else:
            p_a, p_b = (a & out).sum(0) / n_out, (b & out).sum(0) / n_out
            var = (p_a * (1 - p_a) + p_b * (1 - p_b)) / n_out
    bad = n_out == 0
    if bad.any():
        warnings.warn(f"held_out_gain: {int(bad.sum())} example(s) are in every member's subset; "
                      "their gain and stderr are NaN (use balanced subset_masks)", stacklevel=2)
    gain = np.where(bad, np.nan, gain)
    return gain.astype(np.float64), np.sqrt(np.maximum(var, 0.0)).astype(np.float64)


def gain_by_memorization(gain, mem, *, bins: int | Any = GAIN_EDGES,
                         strategy: str = "quantile") -> BinStats:
    """The per-example gain (N,) binned by memorization mem (N,): a :class:`BinStats` of the mean
    gain (std ddof=1 / √n) per bin, ``value_mean`` the mean mem of the bin.

    ``bins``: memorization edges (default GAIN_EDGES; mem is clipped into [edges[0], edges[-1]]
    first, so negative estimates join the first bin and none is dropped; bins [lo, hi), the last
    closed; an end bin that holds values beyond its edge is labelled by them: ``lower[0]`` is
    min(edges[0], its smallest mem), ``upper[-1]`` max(edges[-1], its largest), so every bin's
    mean mem lies within its label) or a count B of bins (``strategy`` "quantile" | "uniform", as
    :func:`bin_by`). Pairs
    with a non-finite entry are dropped. Take mem from members other than those that measured
    the gain (e.g. :func:`cross_fitted_memorization`): binning an outcome by a score estimated
    from the same members selects on its noise.
    """
    g, m = as_float_array("gain", gain, ndim=1), as_float_array("mem", mem, ndim=1)
    if g.shape != m.shape:
        raise ValueError(f"gain and mem must have the same shape (N,), got {g.shape} and {m.shape}")
    if np.ndim(bins) == 0:
        return bin_by(m, g, bins, strategy=strategy)
    edges = as_float_array("bins", bins, ndim=1)
    if edges.size < 2 or not (np.diff(edges) > 0).all() or not np.isfinite(edges).all():
        raise ValueError("bins given as edges must be a finite, strictly increasing array of "
                         "length >= 2")
    m, g = _finite_pairs(m, g)
    if m.size == 0:
        raise ValueError("gain and mem have no finite pair to bin")
    groups = _edge_groups(np.clip(m, edges[0], edges[-1]), edges)
    lower, upper = edges[:-1].copy(), edges[1:].copy()
    if groups[0].size:
        lower[0] = min(lower[0], float(m[groups[0]].min()))
    if groups[-1].size:
        upper[-1] = max(upper[-1], float(m[groups[-1]].max()))
    return _bin_stats(lower, upper, groups, m, g)


def correctness(logits, labels) -> np.ndarray:
    """correct[k, i] = (argmax_c logits[k, i, c] == labels[i]); logits (K, N, C), labels (N,) →
    bool (K, N)."""
    logits, labels = _check_logits(logits, labels)
    return logits.argmax(-1) == labels[None]


def _check_logits(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (K, N, C), got shape {logits.shape}")
    if labels.shape != logits.shape[1:2] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape (N={logits.shape[1]},), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[2]):
        raise ValueError(f"labels must lie in [0, C={logits.shape[2]})")
    return logits, labels


# ----------------------------------------------------------------------------------------------
# learning time


def learning_time(correct_history) -> np.ndarray:
    """Learning time (K, N) from per-epoch correctness (E, K, N) bool (row e = after epoch e + 1).

    1-based: t = the smallest epoch e ∈ {1, …, E} such that the example is correct after every
    epoch e, e + 1, …, E; t = E + 1 when it is wrong after the last epoch (not learned within E
    epochs). E.g. [F, T, F, T, T] → 4, [T, T, T] → 1, [T, T, F] → 4.
    """
    c = as_bool_array("correct_history", correct_history)
    if c.ndim < 1 or c.shape[0] < 1:
        raise ValueError(f"correct_history must be (E, ...) with E >= 1 epochs, got {c.shape}")
    stays = np.logical_and.accumulate(c[::-1], axis=0)  # correct from epoch e to the end
    return (c.shape[0] + 1 - stays.sum(0)).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# correlations, ranking, binning


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def correlations(mem, proxies: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Pearson and Spearman correlation (scipy.stats) of each proxy (N,) with mem (N,).

    name → {"pearson", "pearson_p", "spearman", "spearman_p", "n"}, over the n examples where
    both values are finite (NaN and ±inf pairs are dropped); NaN when n < 3 or an input is constant.
    """
    m = as_float_array("mem", mem, ndim=1)
    out = {}
    for name, values in proxies.items():
        v = as_float_array(f"proxies[{name!r}]", values, ndim=1)
        if v.shape != m.shape:
            raise ValueError(f"proxies[{name!r}] has shape {v.shape}; mem has {m.shape}")
        a, b = _finite_pairs(m, v)
        row = {"pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan,
               "spearman_p": math.nan, "n": int(a.size)}
        if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            pr, sr = stats.pearsonr(a, b), stats.spearmanr(a, b)
            row.update(pearson=float(pr.statistic), pearson_p=float(pr.pvalue),
                       spearman=float(sr.statistic), spearman_p=float(sr.pvalue))
        out[str(name)] = row
    return out


def top_memorized(mem, k: int) -> np.ndarray:
    """Indices of the k examples with the highest mem, highest first (ties: lower index first);
    NaN entries are skipped, so fewer than k come back when fewer are finite."""
    m = as_float_array("mem", mem, ndim=1)
    k = check_positive_int("k", k)
    idx = np.flatnonzero(~np.isnan(m))
    order = idx[np.argsort(-m[idx], kind="stable")]
    return order[:k]


class BinStats(NamedTuple):
    """Per-bin statistics (B,) of a target grouped by bins of values (see :func:`bin_by`)."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    value_mean: np.ndarray
    target_mean: np.ndarray
    target_stderr: np.ndarray


def bin_by(values, target, bins: int | Any = 10, *, strategy: str = "quantile") -> BinStats:
    """Mean and standard error (std ddof=1 / √n; NaN for n < 2) of target (N,) per bin of values
    (N,).

    bins: a count B with ``strategy`` "quantile" (equal-count bins of the sorted values; ties may
    straddle a border; lower/upper = the bin's smallest/largest value) or "uniform" (B equal-width
    bins over [min, max]); or an increasing array of B + 1 edges (values outside are dropped).
    Bins are [lower, upper) except the last, which is closed. Pairs with a non-finite entry are
    dropped. Empty bins have count 0 and NaN means.
    """
    v, t = as_float_array("values", values, ndim=1), as_float_array("target", target, ndim=1)
    if v.shape != t.shape:
        raise ValueError(f"values and target must have the same shape, got {v.shape} and {t.shape}")
    if strategy not in ("quantile", "uniform"):
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    v, t = _finite_pairs(v, t)
    if v.size == 0:
        raise ValueError("values and target have no finite pair to bin")
    if np.ndim(bins) == 0:
        try:
            bins = check_positive_int("bins", bins)
        except ValueError:
            raise ValueError(f"bins must be an integer >= 1 or an array of edges, got {bins!r}"
                             ) from None
        if strategy == "quantile":
            order = np.argsort(v, kind="stable")
            groups = np.array_split(order, int(bins))
            lower = np.array([v[g].min() if g.size else np.nan for g in groups])
            upper = np.array([v[g].max() if g.size else np.nan for g in groups])
            return _bin_stats(lower, upper, groups, v, t)
        edges = np.linspace(v.min(), v.max(), int(bins) + 1)
    else:
        edges = as_float_array("bins", bins, ndim=1)
        if edges.size < 2 or not (np.diff(edges) > 0).all() or not np.isfinite(edges).all():
            raise ValueError("bins given as edges must be a finite, strictly increasing array of "
                             "length >= 2")
    return _bin_stats(edges[:-1], edges[1:], _edge_groups(v, edges), v, t)


def _edge_groups(v: np.ndarray, edges: np.ndarray) -> list[np.ndarray]:
    """Indices of v in each bin [edges[j], edges[j+1]) (the last closed); outside: none."""
    b = len(edges) - 1
    which = np.searchsorted(edges, v, side="right") - 1
    which[v == edges[-1]] = b - 1  # the last bin is closed
    return [np.flatnonzero(which == j) for j in range(b)]


def _bin_stats(lower, upper, groups, v, t) -> BinStats:
    count = np.array([g.size for g in groups])
    vm = np.array([v[g].mean() if g.size else np.nan for g in groups])
    tm = np.array([t[g].mean() if g.size else np.nan for g in groups])
    se = np.array([t[g].std(ddof=1) / math.sqrt(g.size) if g.size > 1 else np.nan for g in groups])
    return BinStats(np.asarray(lower, np.float64), np.asarray(upper, np.float64), count, vm, tm, se)


def rank_flipped(score, flipped) -> dict[str, float]:
    """How well ``score`` (N,) ranks the mislabeled examples ``flipped`` (N,) bool first (higher
    score = more likely flipped): {"auroc", "average_precision", "precision_at_k", "k", "n"}.

    AUROC and average precision from sklearn.metrics; precision@k with k = number flipped: the
    fraction of flipped among the k highest scores, ties at the k-th score split pro rata (the
    expectation over random tie-breaking). NaN scores are dropped with a warning.
    """
    s = as_float_array("score", score, ndim=1)
    f = as_bool_array("flipped", flipped)
    if f.shape != s.shape:
        raise ValueError(f"score and flipped must have the same shape (N,), got {s.shape} and "
                         f"{f.shape}")
    nan = np.isnan(s)
    if nan.any():
        warnings.warn(f"rank_flipped: dropping {int(nan.sum())} example(s) with NaN score",
                      stacklevel=2)
        s, f = s[~nan], f[~nan]
    k = int(f.sum())
    if k == 0 or k == f.size:
        raise ValueError(f"rank_flipped needs both flipped and clean examples, got {k} flipped of "
                         f"{f.size} (with a finite score)")
    finite = np.nan_to_num(s, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    kth = np.sort(finite)[::-1][k - 1]
    above = finite > kth
    tied = finite == kth
    hits = f[above].sum() + (k - above.sum()) * f[tied].mean()
    return {"auroc": float(_skm.roc_auc_score(f, finite)),
            "average_precision": float(_skm.average_precision_score(f, finite)),
            "precision_at_k": float(hits / k), "k": k, "n": int(f.size)}
