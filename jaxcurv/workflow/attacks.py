"""Membership-inference attacks on an ensemble, leave-one-model-out: every attack's scores, the
attack success per memorization bin (Figure 9 of Curvature Clues) and an ε lower bound audit.

Protocol: each of the K members in turn is the target, the other K − 1 its shadow models
(:func:`jaxcurv.mia.leave_one_model_out`); scores (K, N), higher = more likely a member; the
membership labels of row k are ``masks[k]``. The zero-order (black-box curvature) attacks may
run on the first M ≤ K members only: their scores are (M, N), row k still member k, and the
other M − 1 of those members are the shadows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from jaxcurv import memorization, mia
from jaxcurv._numerics import cross_entropy
from jaxcurv._validate import (
    as_bool_array,
    as_float_array,
    check_int,
    check_masks,
    check_probability,
)

__all__ = ["MIA_ATTACKS", "MEMORIZATION_EDGES", "attack_scores", "mia_by_memorization",
           "epsilon_audit", "zero_order_fallback_examples"]

MIA_ATTACKS = ("loss", "mentr", "calibrated_loss", "attack_r", "lira_online", "lira_offline",
               "rmia", "curvature_lr", "curvature_nll", "zero_order_lr", "zero_order_nll")

_POOLED_BELOW = 64  # fewer shadows: one global variance per group (Carlini et al. 2022, §VI)


def _check_statistic(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = as_float_array(name, value)
    if arr.ndim not in (2, 3) or arr.shape[:2] != shape:
        raise ValueError(f"{name} must have shape (K, N) = {shape} or (K, N, A) over A views, "
                         f"got {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; recompute it or drop those examples")
    return arr


def _check_attack_inputs(logits, labels, masks, curvature, zero_order, test_logits, test_labels):
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (K, A, N, C) over A query views, got shape "
                         f"{logits.shape}; add a view axis with logits[:, None]")
    k, _, n, c = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape (N,) = ({n},), got {labels.dtype} "
                         f"{labels.shape}")
    masks = check_masks("masks", masks, n)
    if masks.shape[0] != k:
        raise ValueError(f"masks has {masks.shape[0]} members but logits has {k}")
    curvature = _check_statistic("curvature", curvature, (k, n))
    if zero_order is not None:
        m = np.shape(zero_order)[0] if np.ndim(zero_order) >= 2 else 0
        if not 2 <= m <= k:
            raise ValueError(f"zero_order must hold the first M members, 2 <= M <= K = {k}, "
                             f"as (M, N); got shape {np.shape(zero_order)}")
        zero_order = _check_statistic("zero_order", zero_order, (m, n))
    test_logits = np.asarray(test_logits)
    test_labels = np.asarray(test_labels)
    if test_logits.ndim != 3 or test_logits.shape[0] != k or test_logits.shape[-1] != c:
        raise ValueError(f"test_logits must be (K, Z, C) = ({k}, Z, {c}), got {test_logits.shape}")
    if test_labels.shape != test_logits.shape[1:2]:
        raise ValueError(f"test_labels must have shape (Z,) = ({test_logits.shape[1]},), got "
                         f"{test_labels.shape}")
    return logits, labels, masks, curvature, zero_order, test_logits, test_labels


def zero_order_fallback_examples(masks) -> int:
    """Examples that, for at least one target k of ``masks`` (M, N), have no IN or no OUT shadow
    among the other M − 1 members: the ones whose leave-one-model-out scores impute a group."""
    m = as_bool_array("masks", masks, ndim=2).astype(np.int64)
    ins = m.sum(0)[None] - m                     # IN shadows of example i when k is the target
    outs = (m.shape[0] - 1) - ins
    return int(np.sum(((ins == 0) | (outs == 0)).any(0)))


def attack_scores(logits, labels, masks, curvature, zero_order, test_logits, test_labels,
                  ) -> dict[str, np.ndarray]:
    """Leave-one-model-out scores (K, N) of every attack in MIA_ATTACKS (each member in turn the
    target, the others its shadows). logits (K, A, N, C) over A query views; labels (N,); masks
    bool (K, N); curvature (K, N) or (K, N, A) and zero_order (M, N) or (M, N, A) of the first
    M ≤ K members, positive statistics (tr(H²), |uᵀHv|; zero_order may be None: no zero_order_*
    attacks; its scores are (M, N)); test_logits (K, Z, C) and
    test_labels (Z,): the population for RMIA."""
    logits, labels, masks, curvature, zero_order, test_logits, test_labels = _check_attack_inputs(
        logits, labels, masks, curvature, zero_order, test_logits, test_labels)
    # the attacks take log c: an exact 0 (a saturated softmax's Hessian underflowing in float32)
    # ties at the floor instead of raising
    floor = lambda c: np.maximum(c, 1e-30)  # noqa: E731
    pooled = logits.shape[0] < _POOLED_BELOW
    lomo = mia.leave_one_model_out
    conf = np.moveaxis(mia.logit_confidence(logits, labels[None, None]), 1, -1)   # (K, N, A)
    loss = cross_entropy(logits[:, 0], labels[None])                               # (K, N)
    scores = {
        "loss": mia.loss_attack(loss),
        "mentr": mia.mentr_attack(logits[:, 0], labels[None]),
        "calibrated_loss": lomo(mia.calibrated_loss, loss, masks),
        "attack_r": lomo(mia.attack_r, loss, masks),
        "lira_online": lomo(mia.lira, conf, masks, online=True, fixed_variance=pooled),
        "lira_offline": lomo(mia.lira, conf, masks, online=False, fixed_variance=pooled),
        "curvature_lr": lomo(mia.curvature_lr, floor(curvature), masks, fixed_variance=pooled),
        "curvature_nll": lomo(mia.curvature_nll, floor(curvature), masks),
    }
    if zero_order is not None:
        sub = masks[:zero_order.shape[0]]
        with warnings.catch_warnings():  # one warning below instead of one per attack and side
            warnings.filterwarnings("ignore", category=UserWarning, message=(
                "leave_one_model_out: .* have no (IN|OUT) shadow statistics"))
            scores["zero_order_lr"] = lomo(mia.curvature_lr, floor(zero_order), sub,
                                           fixed_variance=pooled)
            scores["zero_order_nll"] = lomo(mia.curvature_nll, floor(zero_order), sub)
        lacking = zero_order_fallback_examples(sub)
        if lacking:
            warnings.warn(
                f"zero-order attacks on {sub.shape[0]} members: {lacking} of {sub.shape[1]} "
                "example(s) have no IN or no OUT shadow among them for some target; for those "
                "the missing Gaussian is imputed (the other group's shifted by the mean IN − OUT "
                "difference), a coarser test than with shadows on both sides. Compute zero-order "
                "curvature on more members (--zero-order-members).",
                UserWarning, stacklevel=2)
    probs = mia.true_class_probability(logits[:, 0], labels[None])                 # (K, N)
    population = mia.true_class_probability(test_logits, test_labels[None])        # (K, Z)
    scores["rmia"] = mia.rmia_leave_one_model_out(probs, masks, population)
    return {name: np.asarray(s, np.float64) for name, s in scores.items()}


# Figure 9's memorization bins; negative estimates (noise around 0) in a bin of their own
MEMORIZATION_EDGES = (-1.0, 0.0, 0.1, 0.3, 0.5, 0.7, 1.0)


def mia_by_memorization(scores, masks, correct, *, edges=MEMORIZATION_EDGES,
                        min_examples: int = 5) -> list[dict[str, float]]:
    """Figure 9 table: per memorization bin, AUROC and balanced accuracy of an attack on the
    (target member, example) pairs of that bin, and the in-member accuracy of those examples.
    scores (K, N), masks and correct bool (K, N); bins ``edges`` [lo, hi), the last closed
    (default: mem < 0 in its own bin, then 0, 0.1, 0.3, 0.5, 0.7, 1). mem outside the edges is
    clipped into the end bin, whose ``mem_lo`` / ``mem_hi`` then widen to the values it holds:
    each row's ``mem_center`` (the mean mem of its pairs) lies within [mem_lo, mem_hi].

    Cross-fitted (memorization.cross_fitted_memorization): a target's examples are binned by the
    memorization estimated from the other half of the members. Binning by a score computed from
    the target's own correctness would select on the outcome (e.g. mem < 0 picks examples the
    in-members got wrong) and bias the per-bin attack success.
    """
    masks = check_masks("masks", masks)
    scores = as_float_array("scores", scores, ndim=2)
    correct = as_bool_array("correct", correct, ndim=2)
    if scores.shape != masks.shape or correct.shape != masks.shape:
        raise ValueError(f"scores {scores.shape}, masks {masks.shape} and correct "
                         f"{correct.shape} must all be (K, N)")
    edges = tuple(float(e) for e in edges)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be >= 2 increasing values, got {edges}")
    min_examples = check_int("min_examples", min_examples, minimum=1)
    mem = memorization.cross_fitted_memorization(correct, masks).ravel()
    s, m, c = scores.ravel(), masks.ravel(), correct.ravel()
    clipped = np.clip(mem, edges[0], edges[-1])
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        sel = np.isfinite(mem) & (clipped >= lo) & ((clipped <= hi) if last else (clipped < hi))
        if sel.sum() < min_examples or m[sel].all() or not m[sel].any():
            continue
        metrics = mia.roc_metrics(s[sel], m[sel])
        lo = min(lo, float(mem[sel].min())) if i == 0 else lo
        hi = max(hi, float(mem[sel].max())) if last else hi
        rows.append({"mem_lo": lo, "mem_hi": hi,
                     "mem_center": float(np.mean(mem[sel])), "pairs": int(sel.sum()),
                     "auroc": float(metrics["auroc"]),
                     "balanced_accuracy": float(metrics["balanced_accuracy"]),
                     "train_accuracy": float(c[sel & m].mean())})
    return rows


def epsilon_audit(score, member, delta: float, seed: int) -> dict[str, Any]:
    """ε lower bound from one target model's scores (N,) and membership (N,): the threshold is
    chosen on a random half of the examples, the Clopper–Pearson bound (95 %) evaluated on the
    other half (no selection bias)."""
    from jaxcurv.privacy import epsilon_lower_bound

    score = as_float_array("score", score, ndim=1, finite=True)
    member = as_bool_array("member", member, ndim=1)
    if member.shape != score.shape:
        raise ValueError(f"member {member.shape} must match score {score.shape}")
    if score.size < 4:
        raise ValueError(f"epsilon_audit needs at least 4 examples, got {score.size}")
    delta = check_probability("delta", delta, open_high=True)
    seed = check_int("seed", seed)
    half = np.random.default_rng(seed).permutation(len(score)) < len(score) // 2

    def counts(threshold, where):
        guess, mem = score[where] >= threshold, member[where]
        return (int((guess & mem).sum()), int((guess & ~mem).sum()), int(mem.sum()),
                int((~mem).sum()))

    candidates = np.quantile(score[half], np.linspace(0.5, 0.999, 60))
    best = max(candidates, key=lambda t: epsilon_lower_bound(*counts(t, half), delta=delta))
    tp, fp, p, n = counts(best, ~half)
    return {"epsilon_lower_bound": epsilon_lower_bound(tp, fp, p, n, delta=delta),
            "threshold": float(best), "true_positives": tp, "false_positives": fp,
            "positives": p, "negatives": n, "confidence": 0.95}
