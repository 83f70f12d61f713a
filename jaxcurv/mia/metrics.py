"""Attack evaluation: ROC curve and metrics of membership scores against the true membership.

Thresholds "member iff score ≥ t" over scores and membership of any common shape (flattened):
``roc_curve`` (fpr, tpr) and ``roc_metrics`` (AUROC, balanced accuracy, TPR at 0.1 % / 1 % FPR
where the scores can resolve that FPR, optional stratified or cluster bootstrap intervals).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as _skm

from jaxcurv._validate import as_bool_array, check_int, check_probability
from jaxcurv.mia._common import _finite

__all__ = ["roc_curve", "roc_metrics", "fpr_resolution"]

_FPR_LEVELS = {"tpr_at_fpr_0_1pct": 1e-3, "tpr_at_fpr_1pct": 1e-2}
_METRIC_KEYS = ("auroc", "balanced_accuracy", "balanced_accuracy_eer", *_FPR_LEVELS)


def _metric_inputs(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated flat float64 scores and bool membership, with both classes present."""
    s = np.asarray(scores)
    y = np.asarray(is_member)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and is_member {y.shape} must have the same shape.")
    s = _finite("scores", s).ravel()
    y = as_bool_array("is_member", y).ravel()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"is_member must contain both members and non-members; got {n_pos} member(s) of "
            f"{y.size}."
        )
    return s, y


def _level_text(level: float) -> str:
    """An FPR level as the report writes it: 1e-3 → "0.1 %"."""
    return f"{100.0 * level:g} %"


def fpr_resolution(scores: Any, is_member: Any, level: float) -> dict[str, Any]:
    """Whether thresholds on ``scores`` can resolve an FPR of ``level`` (e.g. 1e-3 = 0.1 %).

    The smallest FPR above 0 that any threshold "member iff score ≥ t" reaches is
    min_fpr = t/n: the t non-members tied at the highest non-member score, of n non-members.
    The level is resolvable iff min_fpr ≤ level; otherwise the only point with FPR ≤ level is
    FPR = 0 and a "TPR at ``level`` FPR" would report that point (often 0) instead. Two causes:
    too few non-members (n < 1/level) or ties at the top (t > level·n).
    Returns resolvable (bool), min_fpr, top_ties (t), top_score, num_nonmembers (n),
    needs_nonmembers (⌈1/level⌉) and note (None, or "not resolvable at 0.1 % FPR: …" naming the
    cause). scores, is_member: same shape (any; flattened).
    """
    s, y = _metric_inputs(scores, is_member)
    level = check_probability("level", level, open_low=True)
    return _resolution(s, y, level)


def _resolution(s: np.ndarray, y: np.ndarray, level: float) -> dict[str, Any]:
    """``fpr_resolution`` on validated flat scores s and membership y."""
    neg = s[~y]
    n, top = neg.size, float(neg.max())
    ties = int(np.count_nonzero(neg == top))
    need = math.ceil(1.0 / level - 1e-9)
    resolvable = ties <= level * n * (1.0 + 1e-9)
    note = None
    if not resolvable:
        lv = _level_text(level)
        smallest = _level_text(float(f"{ties / n:.3g}"))
        if n < need:
            note = (f"not resolvable at {lv} FPR: needs ≥ {need} non-member scores, has {n} "
                    f"(smallest FPR above 0: {smallest})")
        else:
            note = (f"not resolvable at {lv} FPR: {ties} of {n} non-members tie at the top "
                    f"non-member score {top:.6g}, so the smallest FPR above 0 is {smallest}")
    return {"resolvable": bool(resolvable), "min_fpr": ties / n, "top_ties": ties,
            "top_score": top, "num_nonmembers": int(n), "needs_nonmembers": need, "note": note}


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


def _drop_intermediate(fpr: np.ndarray, tpr: np.ndarray, negatives: int, positives: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The points of sklearn's ``roc_curve(drop_intermediate=True)`` taken from its full curve
    (fpr, tpr: drop_intermediate=False, starting at (0, 0)): sklearn keeps the points where the
    second difference of the false- or true-positive counts is non-zero (and both ends); the
    counts are recovered exactly from the rates, and the kept rates are the same floats. One sort
    then serves the full curve, the notebooks' curve and roc_auc_score (the trapezoid over the
    kept points)."""
    fps, tps = np.rint(fpr[1:] * negatives), np.rint(tpr[1:] * positives)
    if fps.size <= 2:
        return fpr, tpr
    keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
    return np.r_[0.0, fpr[1:][keep]], np.r_[0.0, tpr[1:][keep]]


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
    FPR ≤ 0.1 % / 1 % (LiRA's convention without interpolation; LiRA's plot.py uses FPR < level),
    **NaN where the scores cannot resolve that FPR** (``fpr_resolution``: fewer than 1/level
    non-members, or more than level·n non-members tied at the top non-member score, so that no
    threshold has 0 < FPR ≤ level and the value would be the TPR at FPR = 0, typically 0). For
    each such key ``<key>_resolvable`` (bool) and ``<key>_note`` (None, or "not resolvable at
    0.1 % FPR: needs ≥ 1000 non-member scores, has 900 …" / "… 12 of 5000 non-members tie at
    the top non-member score 1, so the smallest FPR above 0 is 0.24 %"); ``min_fpr``: the smallest FPR above 0 that any
    threshold reaches; ``top_nonmember_ties``: the non-members tied at the top non-member score.
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
    alpha = check_probability("alpha", alpha, open_low=True, open_high=True)
    bootstrap = check_int("bootstrap", bootstrap, minimum=0)
    c = None if cluster is None else _cluster_ids(cluster, np.shape(scores))
    fpr, tpr, _ = _skm.roc_curve(y, s, drop_intermediate=False)
    point = _metrics_from_curve(fpr, tpr)
    fpr_d, tpr_d = _drop_intermediate(fpr, tpr, int(y.size - y.sum()), int(y.sum()))
    point["auroc"] = float(np.trapezoid(tpr_d, fpr_d))  # = roc_auc_score, bit for bit
    point["balanced_accuracy_eer"] = _metrics_from_curve(fpr_d, tpr_d)["balanced_accuracy_eer"]
    result: dict[str, Any] = {k: float(point[k]) for k in _METRIC_KEYS}
    result["num_members"] = int(y.sum())
    result["num_nonmembers"] = int(y.size - y.sum())
    unresolved = set()
    for key, level in _FPR_LEVELS.items():
        res = _resolution(s, y, level)
        result[f"{key}_resolvable"] = res["resolvable"]
        result[f"{key}_note"] = res["note"]
        if not res["resolvable"]:
            result[key] = math.nan
            unresolved.add(key)
    result["min_fpr"] = res["min_fpr"]  # the same for every level
    result["top_nonmember_ties"] = res["top_ties"]
    if bootstrap:
        draws = _bootstrap_draws(s, y, c, bootstrap=bootstrap, seed=seed)
        for k in _METRIC_KEYS:
            lo, hi = np.quantile(draws[k], [alpha / 2, 1 - alpha / 2])
            result[f"{k}_ci"] = (math.nan, math.nan) if k in unresolved else (float(lo), float(hi))
        result["bootstrap"] = int(bootstrap)
        result["ci_level"] = 1.0 - alpha
    return result


def _cluster_ids(cluster: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Cluster ids of the shape of the scores as flat integers 0..C−1 (C ≥ 2)."""
    c = np.asarray(cluster)
    if c.shape != shape:
        raise ValueError(f"cluster must have the shape of scores {shape}; got {c.shape}.")
    _, c = np.unique(c.ravel(), return_inverse=True)
    if c.max() < 1:
        raise ValueError("cluster needs at least 2 distinct clusters to bootstrap.")
    return c


def _bootstrap_draws(
    s: np.ndarray, y: np.ndarray, c: np.ndarray | None, *, bootstrap: int, seed: Any
) -> dict[str, np.ndarray]:
    """Each metric over ``bootstrap`` weighted resamples of scores s (n,) and membership y (n,):
    members and non-members resampled separately, or whole clusters c (n,) ids; replicates that
    miss a class are dropped (ValueError if more than 10 % do)."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    group_end = np.append(np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1)
    pos, neg = np.flatnonzero(y_sorted), np.flatnonzero(~y_sorted)
    c_sorted = None if c is None else c[order]
    num_clusters = 0 if c is None else int(c.max()) + 1
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
    return {k: np.concatenate(v) for k, v in draws.items()}
