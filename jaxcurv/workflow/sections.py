"""The audit's summary and report: summary.json assembled from an audit run, its figures, and
the sections of report.html (each a title, optional text, tables and figures)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from jaxcurv import memorization, mia, report
from jaxcurv._numerics import cross_entropy
from jaxcurv.workflow.attacks import epsilon_audit, mia_by_memorization

__all__ = ["summary", "figures", "report_sections", "title", "describe", "spearman",
           "noise_rankers", "BY_MEMORIZATION_ATTACK", "CURVATURE_NOTE"]

CURVATURE_NOTE = (
    "curvature = Curv, the papers' per-example input-loss curvature: tr(H²) = ‖H‖_F² = E‖Hv‖² of "
    "H = ∇²ₓℓ (exact Hessian-vector products, Hutchinson probes), mean over the members trained "
    "on the example; it is what Figs. 3 and 5 of Ravikumar et al. (ICML 2024) and the white-box "
    "attack of Curvature Clues (NeurIPS 2024) use, and it is ≥ 0. curvature_trace = tr(H), the "
    "signed appendix variant (ICML 2024 Figs. 14–16), which goes negative on high-loss examples.")

BY_MEMORIZATION_ATTACK = "lira_online"  # the attack of the per-memorization table and ε audit
_METRICS = ("auroc", "balanced_accuracy", "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct")


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


def _correct(run) -> np.ndarray:
    return run.logits[:, 0].argmax(-1) == run.data.train.labels[None]


def _accuracy(run) -> dict[str, Any]:
    test_acc = np.asarray(run.ensemble.history["test_accuracy"][-1])
    correct, masks = _correct(run), run.data.masks
    return {"test_mean": float(test_acc.mean()), "test_min": float(test_acc.min()),
            "test_per_member": test_acc, "train_in_mean": float(correct[masks].mean()),
            "train_out_mean": float(correct[~masks].mean())}


def _mia(run) -> dict[str, Any]:
    """Pooled leave-one-model-out metrics of every attack and the per-memorization table."""
    config, masks = run.config, run.data.masks
    n = masks.shape[1]
    cluster = np.broadcast_to(np.arange(n), masks.shape).ravel()
    rows = []
    for name, s in run.scores.items():
        k = len(s)  # the zero-order attacks may cover the first M members only
        m = mia.roc_metrics(s.ravel(), masks[:k].ravel(), bootstrap=config.bootstrap,
                            seed=config.seed, cluster=cluster.reshape(masks.shape)[:k].ravel())
        rows.append({"attack": name, **{k: m[k] for k in _METRICS},
                     **({"auroc_ci": m["auroc_ci"]} if "auroc_ci" in m else {})})
    by_mem = mia_by_memorization(run.scores[BY_MEMORIZATION_ATTACK], masks, _correct(run))
    return {"protocol": f"leave-one-model-out over {masks.shape[0]} members (each member the "
                        "target, the others its shadows), pooled over members × examples",
            "metrics": rows, "by_memorization": {"attack": BY_MEMORIZATION_ATTACK,
                                                 "bins": by_mem}}


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
    """ε accounted vs audited, accuracy cost and shifts of mem and curvature against non-private."""
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
    }


def summary(run, columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """summary.json (without timings and figure paths): config echo, data, accuracy, curvature,
    memorization, correlations, MIA metrics, and label-noise ranking / privacy when they apply."""
    train, n = run.data.train, len(run.data.train)
    mem, curv_in, tr_in = columns["mem"], columns["curvature"], columns["curvature_trace"]
    finite_mem = np.sort(mem[np.isfinite(mem)])[::-1]
    out: dict[str, Any] = {
        "config": dataclasses.asdict(run.config),
        "data": {"dataset": train.name, "train_examples": n, "test_examples": len(run.data.test),
                 "image_shape": list(train.images.shape[1:]), "num_classes": train.num_classes},
        "accuracy": _accuracy(run),
        "curvature": describe(curv_in, "tr(H²), mean over members holding the example in")
        | {"note": CURVATURE_NOTE,
           "out": describe(columns["curvature_out"], "tr(H²) out")["summary"],
           "trace": describe(tr_in, "tr(H) in")["summary"],
           "trace_out": describe(columns["curvature_trace_out"], "tr(H) out")["summary"],
           "mean_probe_stderr": float(np.nanmean(run.curvature.trace_sq_stderr)),
           "mean_probe_stderr_trace": float(np.nanmean(run.curvature.trace_stderr))},
        "memorization": {"mean": float(np.nanmean(mem)),
                         "top_1pct_mean": float(np.mean(finite_mem[:max(1, n // 100)])),
                         "fraction_above_0_5": float(np.nanmean(mem > 0.5))},
        "correlations": {"spearman_mem_curvature": spearman(mem, curv_in),
                         "spearman_mem_curvature_trace": spearman(mem, tr_in),
                         "proxies": memorization.correlations(mem, run.proxies)},
        "mia": _mia(run),
    }
    if run.config.label_noise > 0:
        out["label_noise"] = _label_noise(run, columns)
    if run.reference is not None:
        out["privacy"] = _privacy(run, columns)
    return out


def figures(run, columns: dict[str, np.ndarray], summary: dict[str, Any],
            directory: str | Path) -> dict[str, Path]:
    """The audit's PNG figures under ``directory``, by name."""
    d = Path(directory)
    train, masks = run.data.train, run.data.masks
    mem, curv_in, tr_in = columns["mem"], columns["curvature"], columns["curvature_trace"]
    curves = {name: mia.roc_curve(s.ravel(), masks[:len(s)].ravel())
              for name, s in run.scores.items()}
    aurocs = {row["attack"]: float(row["auroc"]) for row in summary["mia"]["metrics"]}
    by_mem = summary["mia"]["by_memorization"]
    figs = {
        "extreme": report.figure_extreme_images(train.images, train.labels, curv_in,
                                                d / "lowest_highest_curvature.png",
                                                class_names=train.class_names,
                                                score_name="curvature tr(H²)"),
        "hist": report.figure_curvature_histogram(curv_in, columns["correct"] >= 0.5,
                                                  d / "curvature_histogram.png",
                                                  name="curvature tr(H²)"),
        "mem_curv": report.figure_mem_vs_curvature(mem, curv_in, d / "mem_vs_curvature.png",
                                                   name="curvature tr(H²)"),
        "proxies": report.figure_proxies_vs_mem(mem, run.proxies, d / "proxies_vs_mem.png"),
        "trace_sq": report.figure_trace_vs_trace_sq(tr_in, curv_in, mem,
                                                    d / "trace_vs_trace_sq.png"),
        "roc": report.figure_roc(curves, d / "mia_roc.png", aurocs=aurocs),
        "mia_mem": report.figure_mia_vs_mem({by_mem["attack"]: by_mem["bins"]},
                                            d / "mia_vs_memorization.png"),
    }
    if "label_noise" in summary:
        rankers = noise_rankers(columns)
        figs["noise"] = report.figure_label_noise(rankers, run.data.flipped,
                                                  d / "label_noise.png")
        for name in ("curvature", "mem"):
            figs[f"noise_top_{name}"] = report.figure_top_ranked(
                train.images, train.labels, run.data.true_labels, rankers[name],
                d / f"label_noise_top_{name}.png", score_name=name,
                class_names=train.class_names)
    if "privacy" in summary:
        p = summary["privacy"]
        figs["privacy"] = report.figure_privacy_bounds(
            mem, curv_in, p["epsilon_accounted"], d / "privacy_bounds.png",
            loss_bound=p["loss_bound_L"], num_examples=int(masks.sum(1).mean()))
    return figs


def title(run) -> str:
    """The report's title: data, model and members."""
    return (f"jaxcurv audit — {run.data.train.name}, {run.config.model}, "
            f"{run.config.models} members")


def report_sections(run, summary: dict[str, Any], figs: dict[str, Path]) -> list[dict[str, Any]]:
    """The sections of report.html, in order (see :func:`jaxcurv.report.write_html`)."""
    acc = summary["accuracy"]
    out = [
        {"title": "Accuracy", "tables": [[{
            "members": run.config.models, "epochs": run.config.epochs,
            "test accuracy (mean)": acc["test_mean"], "test accuracy (min)": acc["test_min"],
            "train accuracy (in)": acc["train_in_mean"],
            "held-out accuracy (out)": acc["train_out_mean"]}]]},
        {"title": "Curvature (Figure 2)", "text": CURVATURE_NOTE,
         "figures": [figs["extreme"], figs["hist"]]},
        {"title": "Memorization and curvature (Figures 3, 10–16)",
         "tables": [[{"proxy": name, **vals} for name, vals in
                     summary["correlations"]["proxies"].items()]],
         "figures": [figs["mem_curv"], figs["proxies"], figs["trace_sq"]]},
        {"title": "Membership inference", "text": summary["mia"]["protocol"],
         "tables": [summary["mia"]["metrics"], summary["mia"]["by_memorization"]["bins"]],
         "figures": [figs["roc"], figs["mia_mem"]]},
    ]
    if "label_noise" in summary:
        ranking = summary["label_noise"]["ranking"]
        noise = summary["label_noise"]
        out.append({"title": "Finding mislabeled examples",
                    "text": f"{noise['flipped']} labels flipped; the members fitted "
                            f"{noise['flipped_train_in_accuracy']:.3f} of the flipped labels they "
                            f"trained on. {noise['note']}.",
                    "tables": [[{"score": s, **r} for s, r in ranking.items()]],
                    "figures": [figs["noise"], figs["noise_top_curvature"],
                                figs["noise_top_mem"]]})
    if "privacy" in summary:
        out.append({"title": "Differential privacy",
                    "tables": [[{k: v for k, v in summary["privacy"].items()
                                 if not isinstance(v, (dict, list))}]],
                    "figures": [figs["privacy"]]})
    if "timings_s" in summary:
        out.append({"title": "Timings (s)", "tables": [[summary["timings_s"]]]})
    return out
