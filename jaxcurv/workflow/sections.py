"""The audit's summary and report: summary.json assembled from an audit run (led by its
``findings``), its figures, and the sections of report.html (each a title, optional warnings,
text, bullets, tables and figures)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from jaxcurv import memorization, mia, report
from jaxcurv._names import quantity_label
from jaxcurv._numerics import cross_entropy
from jaxcurv.workflow.proxy_scores import PROXY_NAMES
from jaxcurv.workflow.attacks import (epsilon_audit, mia_by_memorization,
                                      zero_order_fallback_examples)

__all__ = ["summary", "findings", "findings_lines", "sanity_warnings", "fit_advice",
           "near_chance", "figures", "curvature_outlier_members", "OUTLIER_FACTOR",
           "member_fit", "lagging_member_ids", "LAGGING_FRACTION",
           "report_sections", "title", "describe", "spearman", "noise_rankers",
           "top_memorized_order", "highly_memorized", "BY_MEMORIZATION_ATTACK",
           "CURVATURE_NOTE", "HIGH_MEM", "MEM_CONFIDENCE", "NOISY_MEM_STDERR",
           "INFORMATIVE_AUROC", "PROXY_LABELS", "tpr_text"]

CURVATURE_NOTE = (
    "curvature = Curv, the papers' per-example input-loss curvature: tr(H²) = ‖H‖_F² = E‖Hv‖² of "
    "H = ∇²ₓℓ (exact Hessian-vector products, Hutchinson probes), mean over the members trained "
    "on the example; it is what Figs. 3 and 5 of Ravikumar et al. (ICML 2024) and the white-box "
    "attack of Curvature Clues (NeurIPS 2024) use, and it is ≥ 0. curvature_trace = tr(H), the "
    "signed appendix variant (ICML 2024 Figs. 14–16), which goes negative on high-loss examples.")

BY_MEMORIZATION_ATTACK = "lira_online"  # the attack of the per-memorization table and ε audit
HIGH_MEM = 0.5          # "highly memorized": mem's 95 % lower confidence bound above 0.5
MEM_CONFIDENCE = 0.95   # confidence of the per-example memorization intervals (Agresti–Caffo)
NOISY_MEM_STDERR = 0.1  # a median mem standard error above this makes per-example mem noise
INFORMATIVE_AUROC = 0.6  # a non-private reference below this best AUROC leaves DP nothing to remove
TOP_K = 16              # most memorized examples shown and listed in the findings
FITTED_FLIPPED = 0.9    # below this train-IN accuracy on flipped labels, the members did not fit
_METRICS = ("auroc", "balanced_accuracy", "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct")
_TPR_KEYS = ("tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct")

# What each memorization proxy is, for tables and figure axes (summary.json keeps the keys): its
# quantity's label, with the members it averages over when its name does not say.
_PROXY_GROUP = {"confidence": "out", "loss": "in", "learning_time": "in",
                "inverse_learning_time": "in", "adversarial_distance": "in"}
PROXY_LABELS = {name: quantity_label(f"{name}_{_PROXY_GROUP[name]}" if name in _PROXY_GROUP
                                     else name) for name in PROXY_NAMES}


def describe(values, what: str) -> dict[str, Any]:
    """Mean, median, 5th/95th percentiles and max of the finite values, with a description."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"what": what, "summary": None}
    return {"what": what, "summary": {"mean": float(v.mean()), "median": float(np.median(v)),
                                      "p05": float(np.quantile(v, 0.05)),
                                      "p95": float(np.quantile(v, 0.95)),
                                      "max": float(v.max())}}


def spearman(a, b) -> float:
    """Spearman correlation over the examples where both are finite."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def near_chance(accuracy: float, num_classes: int) -> bool:
    """True when ``accuracy`` is within 10 % of the way from chance (1/C) to perfect:
    accuracy < 1/C + 0.1 (1 − 1/C), e.g. below 0.19 for 10 classes."""
    chance = 1.0 / num_classes
    return bool(accuracy < chance + 0.1 * (1.0 - chance))


# A member whose median tr(H²) exceeds this multiple of the members' median is an outlier.
OUTLIER_FACTOR = 1e3


def _member_medians(trace_sq) -> np.ndarray:
    """(K,) median |tr(H²)| over examples of each member's row of ``trace_sq`` (K, N)."""
    return np.nanmedian(np.abs(np.asarray(trace_sq, np.float64)), axis=1)


def curvature_outlier_members(trace_sq, factor: float = OUTLIER_FACTOR) -> list[int]:
    """Members whose curvature is out of line with the others': ``trace_sq`` (K, N) per member ×
    example; member k is an outlier when its median |tr(H²)| over examples exceeds ``factor`` ×
    the median of the K member medians. One such member dominates every per-example mean over
    members (a model that diverged and recovered, or collapsed features under a norm layer)."""
    return _outliers(_member_medians(trace_sq), factor)


def _outliers(medians: np.ndarray, factor: float = OUTLIER_FACTOR) -> list[int]:
    reference = np.nanmedian(medians)
    if not np.isfinite(reference) or reference <= 0:
        return []
    return [int(k) for k in np.flatnonzero(medians > factor * reference)]


# A member that fits less than this fraction of its training subset, relative to the median
# member's fit, "lags": it may not have trained.
LAGGING_FRACTION = 0.5


def member_fit(correct, masks) -> np.ndarray:
    """(K,) accuracy of each member on its own training subset: ``correct``, ``masks`` (K, N)
    bool (member k predicts example n correctly / trained on it); NaN for an empty subset."""
    from jaxcurv._numerics import masked_mean

    return masked_mean(np.asarray(correct).T, np.asarray(masks, bool).T)


def lagging_member_ids(fit, fraction: float = LAGGING_FRACTION) -> list[int]:
    """Members whose training-subset accuracy ``fit`` (K,) (:func:`member_fit`) is below
    ``fraction`` × the median member's: one that did not train keeps finite parameters, so no
    divergence check stops it, yet it enters every attack and memorization estimate."""
    fit = np.asarray(fit, np.float64)
    median = np.nanmedian(fit) if np.isfinite(fit).any() else np.nan
    if not np.isfinite(median) or median <= 0:
        return []
    return [int(k) for k in np.flatnonzero(fit < fraction * median)]


def top_memorized_order(mem, curvature, k: int = TOP_K) -> np.ndarray:
    """Indices of the k most memorized examples: mem (N,) descending, ties (mem takes few values
    with few members; rounded to 9 decimals, so 1 − 1/3 ties with 2/3) broken by curvature (N,)
    descending; NaN mem last."""
    m = np.round(np.nan_to_num(np.asarray(mem, float), nan=-np.inf), 9)
    c = np.nan_to_num(np.asarray(curvature, float), nan=-np.inf)
    return np.lexsort((-c, -m))[:k]


def _members_needed(fraction: float, start: int, threshold: float = HIGH_MEM,
                    most: int = 4096) -> int | None:
    """The smallest ensemble size K ≥ ``start`` whose best case (an example right in all of its
    round(fraction·K) IN members, wrong in all OUT ones) has a lower confidence bound above
    ``threshold``; None when none up to ``most`` does."""
    for k in range(max(start, 2), most + 1):
        k_in = min(max(round(fraction * k), 1), k - 1)
        best, _ = memorization.agresti_caffo_interval(k_in, k_in, 0, k - k_in,
                                                      confidence=MEM_CONFIDENCE)
        if best > threshold:
            return k
    return None


def highly_memorized(mem, mem_lower, masks, *, fraction: float,
                     threshold: float = HIGH_MEM) -> dict[str, Any]:
    """How many examples are highly memorized, counting only what the ensemble can resolve.

    mem, mem_lower (N,): Feldman–Zhang memorization and the lower end of its 95 % Agresti–Caffo
    interval (memorization.memorization_interval); masks bool (K, N). ``count``: examples with
    mem_lower > threshold; ``count_point_estimate``: mem ≥ threshold (noise included);
    ``count_memorized``: mem_lower > 0. With K_in members holding an example and K_out not, mem
    moves in steps of ``resolution`` = 1/lcm(K_in, K_out) (1/K_in for halves) and no lower bound
    exceeds ``best_lower_bound`` (right in all IN, wrong in all OUT): when that is ≤ threshold
    the ensemble cannot call any example highly memorized (``resolvable`` False) and
    ``members_needed`` is the smallest --models that can (same ``fraction``)."""
    mem = np.nan_to_num(np.asarray(mem, float), nan=-np.inf)
    lower = np.nan_to_num(np.asarray(mem_lower, float), nan=-np.inf)
    masks = np.asarray(masks, bool)
    k_in = int(np.median(masks.sum(0)))
    k_out = masks.shape[0] - k_in
    best, _ = memorization.agresti_caffo_interval(k_in, k_in, 0, k_out, confidence=MEM_CONFIDENCE)
    resolvable = bool(best > threshold)
    count = int(np.sum(lower > threshold))
    return {"threshold": threshold, "confidence": MEM_CONFIDENCE,
            "criterion": f"lower end of mem's {_confidence(MEM_CONFIDENCE)} Agresti–Caffo "
                         f"interval above {threshold:g}",
            "count": count, "share": count / len(mem), "examples": int(len(mem)),
            "count_point_estimate": int(np.sum(mem >= threshold)),
            "count_memorized": int(np.sum(lower > 0)),
            "members_in": k_in, "members_out": k_out,
            "resolution": 1.0 / math.lcm(max(k_in, 1), max(k_out, 1)),
            "best_lower_bound": float(best), "resolvable": resolvable,
            "members_needed": None if resolvable else _members_needed(fraction, masks.shape[0],
                                                                       threshold)}


def _correct(run) -> np.ndarray:
    return run.logits[:, 0].argmax(-1) == run.data.train.labels[None]


def _accuracy(run) -> dict[str, Any]:
    test_acc = np.asarray(run.ensemble.history["test_accuracy"][-1])
    correct, masks = _correct(run), run.data.masks
    fit = member_fit(correct, masks)
    return {"test_mean": float(test_acc.mean()), "test_min": float(test_acc.min()),
            "test_per_member": test_acc, "train_in_mean": float(correct[masks].mean()),
            "train_in_per_member": fit, "lagging_members": lagging_member_ids(fit),
            "train_out_mean": float(correct[~masks].mean()),
            "chance": 1.0 / run.data.train.num_classes}


def _attack_metrics(scores: dict[str, np.ndarray], masks, config) -> list[dict[str, Any]]:
    """Pooled leave-one-model-out metrics of every attack, with bootstrap CIs (clusters =
    examples) when config.bootstrap > 0."""
    n = masks.shape[1]
    cluster = np.broadcast_to(np.arange(n), masks.shape)
    rows = []
    for name, s in scores.items():
        k = len(s)  # the zero-order attacks may cover the first M members only
        m = mia.roc_metrics(s.ravel(), masks[:k].ravel(), bootstrap=config.bootstrap,
                            seed=config.seed, cluster=cluster[:k].ravel())
        rows.append({"attack": name, **{key: m[key] for key in _METRICS},
                     **{f"{key}_ci": m[f"{key}_ci"] for key in _METRICS if f"{key}_ci" in m},
                     **{f"{key}_{part}": m[f"{key}_{part}"] for key in _TPR_KEYS
                        for part in ("resolvable", "note")},
                     "min_fpr": m["min_fpr"], "num_nonmembers": m["num_nonmembers"]})
    return rows


def _mia(run) -> dict[str, Any]:
    """Pooled leave-one-model-out metrics of every attack and the per-memorization table."""
    masks = run.data.masks
    by_mem = mia_by_memorization(run.scores[BY_MEMORIZATION_ATTACK], masks, _correct(run))
    return {"protocol": f"leave-one-model-out over {masks.shape[0]} members (each member the "
                        "target, the others its shadows), pooled over members × examples; "
                        "scores: higher = more likely a member",
            "metrics": _attack_metrics(run.scores, masks, run.config),
            "by_memorization": {"attack": BY_MEMORIZATION_ATTACK, "bins": by_mem}}


def noise_rankers(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scores (N,) that rank training examples as likely mislabeled, higher = more suspicious:
    memorization, curvature (tr(H²)), tr(H), the IN loss, low held-out confidence (1 − mean p_y
    over OUT members) and, when computed, the black-box curvature."""
    rankers = {"mem": np.nan_to_num(columns["mem"], nan=-1.0),
               "curvature": columns["curvature"], "curvature_trace": columns["curvature_trace"],
               "loss": columns["loss"]}
    if "confidence" in columns:
        rankers["low_confidence"] = 1.0 - columns["confidence"]
    if "zero_order" in columns:
        rankers["zero_order"] = columns["zero_order"]
    return {name: np.nan_to_num(np.asarray(v, float), nan=-np.inf) for name, v in rankers.items()}


def _label_noise(run, columns) -> dict[str, Any]:
    """How well each ranker finds the flipped labels, and whether the members fitted them."""
    flipped, masks = run.data.flipped, run.data.masks
    correct = _correct(run)
    ranking = {name: memorization.rank_flipped(score, flipped)
               for name, score in noise_rankers(columns).items()}
    best = max(ranking, key=lambda name: ranking[name]["auroc"])
    fitted = correct[masks & flipped[None]]
    return {"fraction": run.config.label_noise, "flipped": int(flipped.sum()),
            "flipped_train_in_accuracy": float(fitted.mean()) if fitted.size else None,
            "ranking": ranking, "best_ranker": best,
            "note": "AUROC / average precision / precision@k (k = number flipped) of each score "
                    "at ranking the flipped labels first; mem and curvature only find them when "
                    "the members fit the flipped labels they train on"}


def _loss_bound(run) -> float:
    """L: the largest training loss of any member on any example."""
    loss = cross_entropy(run.logits[:, 0], run.data.train.labels[None])
    return float(np.nanmax(loss))


def _privacy(run, columns) -> dict[str, Any]:
    """ε accounted vs audited, accuracy cost, the non-private reference's attack metrics, and
    shifts of mem and curvature against non-private."""
    config, masks, ref = run.config, run.data.masks, run.reference
    mem, curv_in = columns["mem"], columns["curvature"]
    eps = float(run.ensemble.privacy["epsilon_max"])
    audit = epsilon_audit(run.scores[BY_MEMORIZATION_ATTACK][0], masks[0], config.dp_delta,
                          config.seed)
    loss_bound = _loss_bound(run)
    acc_dp = float(np.mean(run.ensemble.history["test_accuracy"][-1]))
    acc_ref = float(np.mean(ref["test_accuracy"]))
    return {
        "epsilon_accounted": eps, "delta": config.dp_delta,
        "noise_multiplier": run.ensemble.privacy["noise_multiplier"], "l2_clip": config.dp_clip,
        "epsilon_audited_lower_bound": audit["epsilon_lower_bound"],
        "audit": audit | {"attack": BY_MEMORIZATION_ATTACK,
                          "target": "member 0 (one training run)"},
        "test_accuracy_private": acc_dp, "test_accuracy_nonprivate": acc_ref,
        "accuracy_cost": acc_ref - acc_dp,
        "mem_mean_private": float(np.nanmean(mem)),
        "mem_mean_nonprivate": float(np.nanmean(ref["mem"])),
        "mem_bound": 1 - math.exp(-eps),
        "fraction_mem_above_bound": float(np.nanmean(mem > 1 - math.exp(-eps))),
        "curvature_mean_private": float(np.nanmean(curv_in)),
        "curvature_mean_nonprivate": float(np.nanmean(ref["curvature_in"])),
        "loss_bound_L": loss_bound,
        "curvature_bound_thm_5_3": loss_bound * (masks.sum(1).mean() + 1) * (1 - math.exp(-eps)),
        "nonprivate_mia": _attack_metrics(ref["scores"], masks, config),
    }


def _strongest_attack(metrics: list[dict[str, Any]], by: str = "auroc") -> dict[str, Any]:
    """The attack with the highest ``by`` metric, with its AUROC and TPR at 0.1 % FPR, their CIs
    and whether that FPR is resolvable. A TPR metric ranks only the attacks whose scores resolve
    its FPR (``mia.fpr_resolution``); with none, ``attack`` is None and ``note`` says why (the
    note of the attack with the most non-member scores)."""
    keys = ("auroc", "auroc_ci", "tpr_at_fpr_0_1pct", "tpr_at_fpr_0_1pct_ci",
            "tpr_at_fpr_0_1pct_resolvable", "tpr_at_fpr_0_1pct_note")
    candidates = metrics
    if by in _TPR_KEYS:
        candidates = [r for r in metrics if r.get(f"{by}_resolvable", True)]
        if not candidates:
            widest = max(metrics, key=lambda r: r.get("num_nonmembers", 0))
            return {"attack": None, "chosen_by": by, f"{by}_resolvable": False,
                    "note": widest.get(f"{by}_note")}
    row = max(candidates, key=lambda r: r[by])
    return {"attack": row["attack"], "chosen_by": by, **{k: row[k] for k in keys if k in row},
            **({"resolvable_attacks": len(candidates)} if by in _TPR_KEYS else {})}


def _at_chance(row: dict[str, Any]) -> bool:
    """An attack whose AUROC CI holds 0.5 (without a CI: within 0.01 of 0.5)."""
    lo, hi = row.get("auroc_ci") or (row["auroc"] - 0.01, row["auroc"] + 0.01)
    return bool(lo <= 0.5 <= hi)


def _side_by_side(private: list[dict], nonprivate: list[dict]) -> list[dict[str, Any]]:
    """Each attack's AUROC and TPR at 0.1 % FPR (with its note where not resolvable), private
    vs the non-private reference (None when the reference did not run the attack, e.g. the
    zero-order ones)."""
    ref = {r["attack"]: r for r in nonprivate}
    keys = ("auroc", "auroc_ci", "tpr_at_fpr_0_1pct", "tpr_at_fpr_0_1pct_note")
    return [{"attack": r["attack"],
             **{f"{k}_private": r.get(k) for k in keys},
             **{f"{k}_nonprivate": ref.get(r["attack"], {}).get(k) for k in keys}}
            for r in private]


def fit_advice(config: Any, rgb: bool) -> str:
    """The settings that let members fit their training labels, named for a poor-fit warning:
    augmentation off (members are scored on the images, not on random crops of them), the
    measured CIFAR-10 CPU recipe, more epochs or a higher rate."""
    tips = []
    if rgb and getattr(config, "augment", None) is not False:
        tips.append("turn augmentation off (--augment off)")
    if str(getattr(config, "dataset", "")).startswith("cifar") and \
            getattr(config, "preset", None) != "cifar10-cpu":
        tips.append("start from --preset cifar10-cpu (measured to fit on a CPU)")
    tips.append("train longer (--epochs) or at a higher --learning-rate")
    return "; ".join(tips)


def _dp_comparison(out: dict[str, Any]) -> dict[str, Any]:
    """What the DP-vs-reference comparison can say: the reference's best attack AUROC, whether it
    is attackable enough for the comparison to be informative (≥ INFORMATIVE_AUROC), the attacks
    that are stronger on the DP-SGD members than on the reference, and whether mean mem is higher
    under DP."""
    p = out["privacy"]
    reference = {r["attack"]: r["auroc"] for r in p["nonprivate_mia"]}
    best = max(reference.values())
    stronger = [{"attack": r["attack"], "auroc_private": r["auroc"],
                 "auroc_nonprivate": reference[r["attack"]]}
                for r in out["mia"]["metrics"]
                if r["attack"] in reference and r["auroc"] > reference[r["attack"]]]
    return {"reference_best_auroc": float(best), "informative": bool(best >= INFORMATIVE_AUROC),
            "stronger_under_dp": stronger,
            "mem_higher_under_dp": bool(p["mem_mean_private"] > p["mem_mean_nonprivate"])}


def _memorization_warnings(out: dict[str, Any]) -> list[str]:
    """An ensemble too small to resolve memorization, or per-example mem that is mostly noise."""
    m = out.get("memorization", {})
    high, se = m.get("highly_memorized"), m.get("median_stderr", math.nan)
    if high is None:  # a summary without per-example memorization
        return []
    if not high["resolvable"]:
        need = ("more members (--models)" if high["members_needed"] is None
                else f"--models {high['members_needed']} or more")
        return [f"{out['config']['models']} members are too few to call any example memorized: "
                f"with {high['members_in']} holding each example and {high['members_out']} not, "
                f"mem moves in steps of {high['resolution']:.3g} (median standard error "
                f"{se:.2f}) and even mem = 1 has a {_confidence(high['confidence'])} lower bound "
                f"of only {high['best_lower_bound']:.2f}; the mem counts and rankings are mostly "
                f"noise: use {need}"]
    if np.isfinite(se) and se > NOISY_MEM_STDERR:
        return [f"the median standard error of mem is {se:.2f} (> {NOISY_MEM_STDERR}): "
                f"differences in mem below about {2 * se:.2f} are noise; more members (--models) "
                "shrink it as 1/√K"]
    return []


def _privacy_warnings(out: dict[str, Any]) -> list[str]:
    """A DP comparison against a reference with nothing to protect, and DP-SGD members that are
    more exposed or memorize more than the reference."""
    c, p = _dp_comparison(out), out["privacy"]
    w = []
    if not c["informative"]:
        w.append(f"the DP comparison is uninformative: the non-private reference is barely "
                 f"attackable (best attack AUROC {c['reference_best_auroc']:.3f} < "
                 f"{INFORMATIVE_AUROC}), so there is little exposure for DP-SGD to remove; train "
                 "the members until they fit their training data (raise --epochs) so the "
                 "reference memorizes")
    if c["stronger_under_dp"]:
        listed = ", ".join(f"{r['attack']} {r['auroc_private']:.3f} vs {r['auroc_nonprivate']:.3f}"
                           for r in c["stronger_under_dp"])
        w.append(f"attacks are stronger on the DP-SGD members than on the non-private reference "
                 f"(AUROC, DP vs non-private): {listed}; DP should not add exposure: unless the "
                 "95 % CIs separate them (more --models narrow them) this is noise")
    if c["mem_higher_under_dp"]:
        w.append(f"mean mem is higher under DP-SGD ({p['mem_mean_private']:.4f}) than without "
                 f"DP ({p['mem_mean_nonprivate']:.4f}); DP bounds memorization, so with this "
                 "ensemble the difference is estimation noise (more --models)")
    return w


def _zero_order_warnings(out: dict[str, Any]) -> list[str]:
    z = out.get("zero_order")
    if not z or not z["fallback_examples"]:
        return []
    return [f"zero-order attacks on {z['members']} members: {z['fallback_examples']} of "
            f"{out['data']['train_examples']} example(s) have no IN or no OUT shadow among them "
            "for some target; for those the missing Gaussian is imputed (the other group's "
            "shifted by the mean IN − OUT difference), a coarser test than with shadows on both "
            "sides; compute zero-order curvature on more members (--zero-order-members)"]


def sanity_warnings(out: dict[str, Any], num_classes: int, *,
                    advice: str = "train longer (--epochs)") -> list[str]:
    """Reasons the numbers of a summary may mean nothing: test accuracy near chance (mean or any
    member), members that did not fit their training set (non-private runs; ``advice`` names the
    settings that fix it, :func:`fit_advice`) or the flipped labels (label noise), too few members
    to resolve memorization (or a noisy mem), members that fit far less than the median member
    (:func:`lagging_member_ids`), attacks at chance (non-private runs, or a DP run's
    reference), a DP comparison against a reference too weakly attackable to inform it, DP-SGD
    members more exposed or memorizing more than the reference, curvature outlier members, and
    zero-order scores that imputed a missing shadow group."""
    acc, w = out["accuracy"], []
    chance = 1.0 / num_classes
    if near_chance(acc["test_mean"], num_classes):
        w.append(f"test accuracy {acc['test_mean']:.3f} is near chance ({chance:.3f}): the "
                 "members learned little, so memorization, curvature and attack results are not "
                 "meaningful; train longer (--epochs) or check the data")
    elif near_chance(acc["test_min"], num_classes):
        k = int(np.argmin(acc["test_per_member"]))
        w.append(f"member {k} reaches only {acc['test_min']:.3f} test accuracy (chance "
                 f"{chance:.3f}): it failed to train; per-example results mix it in")
    lagging = acc.get("lagging_members", [])
    if lagging:
        fit = np.asarray(acc["train_in_per_member"], float)
        w.append(f"member(s) {lagging} fit only "
                 + ", ".join(f"{fit[k]:.2f}" for k in lagging)
                 + f" of their training subsets against a median member's {np.nanmedian(fit):.2f}"
                 ": they may not have trained, and every attack and memorization estimate "
                 "includes them; retrain (another --seed) or train longer (--epochs)")
    if "privacy" not in out and acc["train_in_mean"] < 0.9:
        w.append(f"the members fit only {acc['train_in_mean']:.3f} of their training labels: "
                 f"memorization needs models that fit their data: {advice}")
    noise = out.get("label_noise")
    fitted = None if noise is None else noise["flipped_train_in_accuracy"]
    if fitted is not None and fitted < FITTED_FLIPPED:
        w.append(f"the members fitted only {fitted:.3f} of the flipped labels they trained on "
                 f"(< {FITTED_FLIPPED}): mem and curvature cannot single out labels the models "
                 "never learned; train longer (--epochs) or use a larger model")
    w += _memorization_warnings(out)
    dp = "privacy" in out
    metrics = out["privacy"]["nonprivate_mia"] if dp else out["mia"]["metrics"]
    at_chance = [r["attack"] for r in metrics if _at_chance(r)]
    where = " on the non-private reference" if dp else ""
    if dp:
        w += _privacy_warnings(out)
        if not _dp_comparison(out)["informative"]:
            at_chance = []  # said above: the reference is barely attackable
    if at_chance and len(at_chance) == len(metrics):
        w.append(f"every attack{where} is at chance (AUROC 95 % CI holds 0.5): these members "
                 "are not measurably exposed; more members (--models) narrow the intervals")
    elif at_chance:
        w.append(f"attacks at chance{where} (AUROC 95 % CI holds 0.5): " + ", ".join(at_chance))
    outliers = out.get("curvature", {}).get("outlier_members", [])
    if outliers:
        w.append(f"member(s) {outliers} have a median tr(H²) over {OUTLIER_FACTOR:g}× the "
                 "members' median: they dominate every per-example curvature mean (and the "
                 "curvature attacks' statistics); retrain them (another --seed) or use more "
                 "members (--models)")
    return w + _zero_order_warnings(out)


def findings(run, columns: dict[str, np.ndarray], out: dict[str, Any]) -> dict[str, Any]:
    """The headline of a summary ``out``: highly memorized examples, the top memorized ones, the
    strongest attack, with DP the cost and each attack private vs non-private, with label noise
    the best ranker, and sanity warnings."""
    mem, curv = columns["mem"], columns["curvature"]
    labels = run.data.train.labels
    order = top_memorized_order(mem, curv)
    noisy = run.config.label_noise > 0
    top = [{"index": int(i), "label": int(labels[i]), "mem": float(mem[i]),
            "mem_stderr": float(columns["mem_stderr"][i]), "curvature": float(curv[i]),
            **({"true_label": int(run.data.true_labels[i]),
                "flipped": bool(run.data.flipped[i])} if noisy else {})} for i in order]
    result: dict[str, Any] = {
        "highly_memorized": out["memorization"]["highly_memorized"],
        "top_memorized": {"k": len(top), "ranked_by": "mem descending, ties by curvature",
                          "figure": "top_memorized", "examples": top},
        "strongest_attack": _strongest_attack(out["mia"]["metrics"]),
        "strongest_attack_at_low_fpr": _strongest_attack(out["mia"]["metrics"],
                                                         "tpr_at_fpr_0_1pct"),
    }
    if "privacy" in out:
        p = out["privacy"]
        result["privacy"] = {
            "epsilon": p["epsilon_accounted"], "delta": p["delta"],
            "test_accuracy_private": p["test_accuracy_private"],
            "test_accuracy_nonprivate": p["test_accuracy_nonprivate"],
            "accuracy_cost": p["accuracy_cost"],
            "attacks": _side_by_side(out["mia"]["metrics"], p["nonprivate_mia"]),
            **_dp_comparison(out)}
    if "label_noise" in out:
        noise = out["label_noise"]
        best = noise["ranking"][noise["best_ranker"]]
        result["label_noise"] = {"best_ranker": noise["best_ranker"], **best,
                                 "flipped_train_in_accuracy": noise["flipped_train_in_accuracy"]}
    result["warnings"] = sanity_warnings(
        out, run.data.train.num_classes,
        advice=fit_advice(run.config, run.data.train.images.shape[-1] == 3))
    return result


def _ci(ci, fmt: str = "{:.3f}") -> str:
    return "" if ci is None else f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _confidence(fraction: float) -> str:
    """A confidence level as text: 0.95 → "95 %"."""
    return f"{100 * fraction:g} %"


def _highly_memorized_line(high: dict[str, Any]) -> str:
    """The memorization headline: the significant count, or plainly that the ensemble is too
    small, with the resolution of mem and the counts a point estimate would give."""
    conf = _confidence(high["confidence"])
    step = (f"mem moves in steps of {high['resolution']:.3g} ({high['members_in']} members hold "
            f"each example, {high['members_out']} do not)")
    points = (f"{high['count_point_estimate']} of {high['examples']} training examples have a "
              f"point estimate mem ≥ {high['threshold']:g} (noise included) and "
              f"{high['count_memorized']} are memorized at all ({conf} lower bound above 0)")
    if not high["resolvable"]:
        need = ("" if high["members_needed"] is None
                else f"; use --models {high['members_needed']} or more")
        return (f"Too few members to call any example highly memorized: {step}, and even mem = 1 "
                f"has a {conf} lower bound of only {high['best_lower_bound']:.2f} "
                f"(≤ {high['threshold']:g}){need}. {points[0].upper()}{points[1:]}.")
    return (f"{high['count']} of {high['examples']} training examples ({high['share']:.1%}) are "
            f"highly memorized: the lower end of mem's {conf} Agresti–Caffo interval is above "
            f"{high['threshold']:g}; {points}; {step}.")


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f} %"


def tpr_text(value: float | None, *, ci=None, note: str | None = None) -> str:
    """A TPR at low FPR as the report and the command print it: "12.34 %", with " [lo %, hi %]"
    when ``ci`` is given; ``note`` ("not resolvable at 0.1 % FPR: …", from ``mia.roc_metrics``)
    or a missing value (None/NaN) instead of a number — never 0 % for an FPR the scores cannot
    resolve."""
    if note:
        return note
    if value is None or not math.isfinite(value):
        return "—"
    ok_ci = ci is not None and all(v is not None and math.isfinite(v) for v in ci)
    return _percent(value) + (f" [{_percent(ci[0])}, {_percent(ci[1])}]" if ok_ci else "")


def findings_lines(f: dict[str, Any]) -> list[str]:
    """The findings as sentences (report.html's Findings block and the command's summary)."""
    s = f["strongest_attack"]
    tpr = tpr_text(s.get("tpr_at_fpr_0_1pct"), ci=s.get("tpr_at_fpr_0_1pct_ci"),
                   note=s.get("tpr_at_fpr_0_1pct_note"))
    lines = [_highly_memorized_line(f["highly_memorized"]),
             f"Strongest attack (by AUROC): {s['attack']}, AUROC {s['auroc']:.3f}"
             f"{_ci(s.get('auroc_ci'))}"
             + (f", TPR at 0.1 % FPR {tpr} (95 % bootstrap CIs)."
                if s.get("tpr_at_fpr_0_1pct_resolvable", True)
                else f" (95 % bootstrap CI); TPR {tpr}.")]
    low = f["strongest_attack_at_low_fpr"]
    if low["attack"] is None:
        lines.append(f"No attack is strongest at 0.1 % FPR: {low['note']}.")
    elif low["attack"] != s["attack"]:
        among = low.get("resolvable_attacks")
        lines.append(f"Strongest at 0.1 % FPR"
                     + (f" (of the {among} attacks whose scores resolve it)" if among else "")
                     + f": {low['attack']}, TPR "
                     f"{tpr_text(low['tpr_at_fpr_0_1pct'], ci=low.get('tpr_at_fpr_0_1pct_ci'))}"
                     f" (AUROC {low['auroc']:.3f}).")
    if "privacy" in f:
        p = f["privacy"]
        lines.append(f"DP-SGD spent ε = {p['epsilon']:.3g} (δ = {p['delta']:.3g}); test accuracy "
                     f"{p['test_accuracy_private']:.3f} vs {p['test_accuracy_nonprivate']:.3f} "
                     f"without DP: accuracy cost {p['accuracy_cost']:.3f}.")
        if not p["informative"]:
            lines.append(f"The DP comparison is uninformative: the non-private reference is "
                         f"barely attackable (best AUROC {p['reference_best_auroc']:.3f} < "
                         f"{INFORMATIVE_AUROC}), so DP-SGD had little exposure to remove.")
    if "label_noise" in f:
        n = f["label_noise"]
        lines.append(f"Best finder of the flipped labels: {n['best_ranker']}, precision@{n['k']} "
                     f"{n['precision_at_k']:.3f} (AUROC {n['auroc']:.3f}).")
    return lines


def summary(run, columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """summary.json (without timings and figure paths): findings first, then config echo, data,
    accuracy, curvature, memorization, correlations, MIA metrics, and label-noise ranking /
    privacy when they apply."""
    train, n = run.data.train, len(run.data.train)
    mem, curv_in, tr_in = columns["mem"], columns["curvature"], columns["curvature_trace"]
    member_medians = _member_medians(run.curvature.trace_sq)
    finite_mem = np.sort(mem[np.isfinite(mem)])[::-1]
    out: dict[str, Any] = {
        "config": dataclasses.asdict(run.config),
        "data": {"dataset": train.name, "train_examples": n, "test_examples": len(run.data.test),
                 "image_shape": list(train.images.shape[1:]), "num_classes": train.num_classes},
        "accuracy": _accuracy(run),
        "curvature": describe(curv_in, quantity_label("curvature_in"))
        | {"note": CURVATURE_NOTE,
           "out": describe(columns["curvature_out"], quantity_label("curvature_out"))["summary"],
           "trace": describe(tr_in, quantity_label("curvature_trace_in"))["summary"],
           "trace_out": describe(columns["curvature_trace_out"],
                                  quantity_label("curvature_trace_out"))["summary"],
           "mean_probe_stderr": float(np.nanmean(run.curvature.trace_sq_stderr)),
           "mean_probe_stderr_trace": float(np.nanmean(run.curvature.trace_stderr)),
           "member_medians": member_medians.tolist(),
           "outlier_members": _outliers(member_medians)},
        "memorization": {"mean": float(np.nanmean(mem)),
                         "top_1pct_mean": float(np.mean(finite_mem[:max(1, n // 100)])),
                         "fraction_at_least_0_5": float(np.mean(
                             np.nan_to_num(mem, nan=-np.inf) >= HIGH_MEM)),
                         "median_stderr": float(np.nanmedian(columns["mem_stderr"])),
                         "highly_memorized": highly_memorized(
                             mem, columns["mem_lower"], run.data.masks,
                             fraction=run.config.fraction)},
        "correlations": {"spearman_mem_curvature": spearman(mem, curv_in),
                         "spearman_mem_curvature_trace": spearman(mem, tr_in),
                         "proxies": memorization.correlations(mem, run.proxies)},
        "mia": _mia(run),
    }
    if run.zero_order is not None:
        members = len(run.zero_order)
        out["zero_order"] = {"members": members, "fallback_examples":
                             zero_order_fallback_examples(run.data.masks[:members])}
    if run.config.label_noise > 0:
        out["label_noise"] = _label_noise(run, columns)
    if run.reference is not None:
        out["privacy"] = _privacy(run, columns)
    return {"findings": findings(run, columns, out), **out}


def figures(run, columns: dict[str, np.ndarray], summary: dict[str, Any],
            directory: str | Path) -> dict[str, Path]:
    """The audit's PNG figures under ``directory``, keyed by their file names' stems."""
    d = Path(directory)
    train, masks = run.data.train, run.data.masks
    mem, curv_in, tr_in = columns["mem"], columns["curvature"], columns["curvature_trace"]
    curves = {name: mia.roc_curve(s.ravel(), masks[:len(s)].ravel())
              for name, s in run.scores.items()}
    aurocs = {row["attack"]: float(row["auroc"]) for row in summary["mia"]["metrics"]}
    by_mem = summary["mia"]["by_memorization"]
    noisy = "label_noise" in summary
    order = [e["index"] for e in summary["findings"]["top_memorized"]["examples"]]
    figs = {
        "top_memorized": report.figure_top_memorized(
            train.images, train.labels, mem, d / "top_memorized.png", order=order,
            class_names=train.class_names, true_labels=run.data.true_labels if noisy else None),
        "lowest_highest_curvature": report.figure_extreme_images(
            train.images, train.labels, curv_in, d / "lowest_highest_curvature.png",
            class_names=train.class_names, quantity="curvature_in", value_label="tr(H²)"),
        "curvature_histogram": report.figure_curvature_histogram(
            curv_in, columns["correct"] >= 0.5, d / "curvature_histogram.png",
            quantity="curvature_in"),
        "mem_vs_curvature": report.figure_mem_vs_curvature(
            mem, curv_in, d / "mem_vs_curvature.png", quantity="curvature_in",
            rho=summary["correlations"]["spearman_mem_curvature"]),
        "proxies_vs_mem": report.figure_proxies_vs_mem(mem, run.proxies, d / "proxies_vs_mem.png",
                                                       labels=PROXY_LABELS),
        "curvature_trace_vs_curvature": report.figure_trace_vs_trace_sq(
            tr_in, curv_in, mem, d / "curvature_trace_vs_curvature.png"),
        "mia_roc": report.figure_roc(curves, d / "mia_roc.png", aurocs=aurocs),
        "mia_vs_memorization": report.figure_mia_vs_mem({by_mem["attack"]: by_mem["bins"]},
                                                        d / "mia_vs_memorization.png"),
    }
    if noisy:
        rankers = noise_rankers(columns)
        figs["label_noise"] = report.figure_label_noise(rankers, run.data.flipped,
                                                        d / "label_noise.png")
        for name in ("curvature", "mem"):
            figs[f"label_noise_top_{name}"] = report.figure_top_ranked(
                train.images, train.labels, run.data.true_labels, rankers[name],
                d / f"label_noise_top_{name}.png", score_name=name,
                class_names=train.class_names)
    if "privacy" in summary:
        p = summary["privacy"]
        figs["privacy_bounds"] = report.figure_privacy_bounds(
            mem, curv_in, p["epsilon_accounted"], d / "privacy_bounds.png",
            loss_bound=p["loss_bound_L"], num_examples=int(masks.sum(1).mean()),
            quantity="curvature_in")
    return figs


def title(run) -> str:
    """The report's title: data, model, members, and ε / label noise when they apply."""
    c = run.config
    parts = [f"jaxcurv audit — {run.data.train.name}, {c.model}, {c.models} members"]
    if c.private:
        eps = run.ensemble.privacy["epsilon_max"] if run.ensemble.privacy else c.dp_epsilon
        parts.append(f"DP-SGD ε = {eps:.3g} (δ = {c.dp_delta:.3g})")
    if c.label_noise > 0:
        parts.append(f"{c.label_noise:.0%} labels flipped")
    return ", ".join(parts)


def _findings_section(summary: dict[str, Any], figs: dict[str, Path]) -> dict[str, Any]:
    f = summary["findings"]
    tables = []
    if "privacy" in f:
        tables.append({"caption": "Each attack, private (DP-SGD) vs the non-private reference "
                                  "(same members, data and settings without DP)",
                       "rows": [{"attack": r["attack"], "AUROC, DP-SGD": r["auroc_private"],
                                 "AUROC, non-private": r["auroc_nonprivate"],
                                 "TPR at 0.1 % FPR, DP-SGD": tpr_text(
                                     r["tpr_at_fpr_0_1pct_private"],
                                     note=r["tpr_at_fpr_0_1pct_note_private"]),
                                 "TPR at 0.1 % FPR, non-private": tpr_text(
                                     r["tpr_at_fpr_0_1pct_nonprivate"],
                                     note=r["tpr_at_fpr_0_1pct_note_nonprivate"])}
                                for r in f["privacy"]["attacks"]]})
    checks = [] if f["warnings"] else [
        "Sanity checks passed: test accuracy well above chance"
        + ("" if "privacy" in f else ", members fit their training data")
        + ", no member fitting far less than the others"
        + ", enough members to resolve memorization"
        + (", a non-private reference attackable enough to compare with" if "privacy" in f
           else "")
        + (", flipped labels fitted" if "label_noise" in f else "")
        + (", the non-private reference's attacks above chance." if "privacy" in f
           else ", attacks above chance.")]
    return {"title": "Findings", "lead": True, "warnings": f["warnings"],
            "bullets": findings_lines(f) + checks, "tables": tables,
            "figures": [figs["top_memorized"]]}


_PRIVACY_ROWS = (
    ("epsilon_accounted", "ε spent (accounted)", "the DP guarantee: an upper bound on what any "
     "attack can learn about one example, at probability δ of failure"),
    ("delta", "δ", "probability that the ε guarantee fails"),
    ("noise_multiplier", "noise multiplier σ", "Gaussian noise std / clip norm, calibrated to ε"),
    ("l2_clip", "clip norm C", "per-example gradient L2 clip"),
    ("epsilon_audited_lower_bound", "ε audited lower bound", "what the attack below proves "
     "empirically (Clopper–Pearson 95 %, one target member): ε is at least this; 0 means the "
     "attack found no leak it can certify, which is consistent with the accounted ε, not a "
     "contradiction"),
    ("test_accuracy_private", "test accuracy, DP-SGD", "mean over members"),
    ("test_accuracy_nonprivate", "test accuracy, non-private", "same members without DP"),
    ("accuracy_cost", "accuracy cost of DP", "non-private minus DP-SGD test accuracy"),
    ("mem_mean_private", "mean mem, DP-SGD", "Feldman–Zhang memorization"),
    ("mem_mean_nonprivate", "mean mem, non-private", ""),
    ("mem_bound", "mem bound 1 − e^(−ε)", "Thm 5.4: no example's mem can exceed it under ε-DP"),
    ("fraction_mem_above_bound", "share of examples above the mem bound", "estimation noise "
     "only, when the bound holds"),
    ("curvature_mean_private", "mean curvature tr(H²), DP-SGD", ""),
    ("curvature_mean_nonprivate", "mean curvature tr(H²), non-private", ""),
    ("loss_bound_L", "loss bound L", "largest training loss of any member on any example"),
    ("curvature_bound_thm_5_3", "curvature bound L(m+1)(1 − e^(−ε))", "Thm 5.3's bound on the "
     "mean curvature (m: examples per member)"))


def _privacy_section(summary: dict[str, Any], figs: dict[str, Path]) -> dict[str, Any]:
    p = summary["privacy"]
    rows = [{"quantity": label, "value": p[key], "meaning": meaning}
            for key, label, meaning in _PRIVACY_ROWS]
    audit = p["audit"]
    return {"title": "Differential privacy",
            "text": f"ε audit: attack {audit['attack']} on {audit['target']}, threshold chosen on "
                    f"half of the examples, bound evaluated on the other half "
                    f"({audit['true_positives']} true / {audit['false_positives']} false "
                    "positives).",
            "tables": [{"caption": "DP-SGD against the non-private reference", "rows": rows},
                       {"caption": "Non-private reference: every attack",
                        "rows": _mia_rows(p["nonprivate_mia"])}],
            "figures": [figs["privacy_bounds"]]}


def _mia_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of attack metrics; TPRs in percent with their CI, or why not resolvable."""
    keys = ("attack", "auroc", "auroc_ci", "balanced_accuracy")
    return [{**{k: r.get(k) for k in keys},
             **{key: tpr_text(r.get(key), ci=r.get(f"{key}_ci"), note=r.get(f"{key}_note"))
                for key in _TPR_KEYS}} for r in metrics]


def report_sections(run, summary: dict[str, Any], figs: dict[str, Path]) -> list[dict[str, Any]]:
    """The sections of report.html, in order, Findings first (see report.write_html)."""
    acc = summary["accuracy"]
    by_mem = summary["mia"]["by_memorization"]
    out = [
        _findings_section(summary, figs),
        {"title": "Accuracy", "tables": [[{
            "members": run.config.models, "epochs": run.config.epochs,
            "test accuracy (mean)": acc["test_mean"], "test accuracy (min)": acc["test_min"],
            "train accuracy (IN)": acc["train_in_mean"],
            "held-out accuracy (OUT)": acc["train_out_mean"], "chance": acc["chance"]}]]},
        {"title": "Curvature (Figure 2)", "text": CURVATURE_NOTE,
         "figures": [figs["lowest_highest_curvature"], figs["curvature_histogram"]]},
        {"title": "Memorization and curvature (Figures 3, 10–16)",
         "tables": [{"caption": "Correlation of each memorization proxy with mem",
                     "rows": [{"proxy": PROXY_LABELS.get(name, name), **vals} for name, vals in
                              summary["correlations"]["proxies"].items()]}],
         "figures": [figs["mem_vs_curvature"], figs["proxies_vs_mem"],
                     figs["curvature_trace_vs_curvature"]]},
        {"title": "Membership inference", "text": summary["mia"]["protocol"],
         "tables": [{"caption": "Every attack (95 % bootstrap CIs over examples)",
                     "rows": _mia_rows(summary["mia"]["metrics"])},
                    {"caption": f"Attack {by_mem['attack']} by memorization bin (bins of "
                                "memorization estimated from the other half of the members)",
                     "rows": by_mem["bins"]}],
         "figures": [figs["mia_roc"], figs["mia_vs_memorization"]]},
    ]
    if "label_noise" in summary:
        noise = summary["label_noise"]
        fitted = noise["flipped_train_in_accuracy"]
        out.append({"title": "Finding mislabeled examples",
                    "text": f"{noise['flipped']} labels flipped; the members fitted "
                            + ("—" if fitted is None else f"{fitted:.3f}")
                            + f" of the flipped labels they trained on. {noise['note']}.",
                    "tables": [[{"score": s, **r} for s, r in noise["ranking"].items()]],
                    "figures": [figs["label_noise"], figs["label_noise_top_curvature"],
                                figs["label_noise_top_mem"]]})
    if "privacy" in summary:
        out.append(_privacy_section(summary, figs))
    if "timings_s" in summary:
        out.append({"title": "Timings", "tables": [[{"stage": k, "seconds": v}
                                                    for k, v in summary["timings_s"].items()]]})
    return out
