"""Sharpness-aware minimization vs SGD: where SAM's accuracy gain goes, and what it does to privacy.

Seed paper on SAM and memorization: SAM's generalization gain concentrates on atypical, highly
memorized examples, and SAM models can be more exposed to membership inference. Two ensembles with
the same random 50 % subsets, initializations and data order, one trained with SGD and one with
SAM (OptimizerConfig(name="sam", rho=...)). Reported:

- accuracy gain of SAM over SGD per memorization bin, on each training example when it is held
  out (the generalization to that example) and when it is trained on. Cross-fitted: bins use the
  SGD memorization estimated from one half of the members, gains are measured on the other half
  (binning and measuring on the same members regresses to the mean and fakes a gain at high mem);
  95 % intervals from an example bootstrap;
- membership inference (leave-one-model-out: each member the target, the others its shadows)
  AUROC and TPR at 1 % / 0.1 % FPR for both, with example-cluster bootstrap intervals, and a
  paired bootstrap of the SAM − SGD differences;
- input-curvature distributions for both;
- a verdict in summary.json: does SAM raise the privacy risk on this data, with the intervals.

    python -m experiments.sam_vs_sgd --config small   # digits, 16 + 16 models, CPU
    python -m experiments.sam_vs_sgd --config full    # CIFAR-100 and CIFAR-10, ResNet18
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "sam_vs_sgd"

__all__ = ["SamConfig", "CONFIGS", "get_config", "main", "gain_by_memorization",
           "paired_metric_difference"]

_ATTACKS = ("loss", "mentr", "calibrated_loss", "attack_r", "lira_online", "lira_offline", "rmia",
            "curvature_lr", "curvature_nll")


@dataclasses.dataclass(frozen=True)
class SamConfig(X.ExperimentConfig):
    """The shared experiment settings (rho: SAM's radius) plus the attacks compared and the
    bins of the gain."""

    attacks: tuple[str, ...] = setting(("lira_online", "loss", "curvature_nll"),
                                       "MIA attacks compared (curvature_* on white-box tr(H²))")
    verdict_attack: str = setting("lira_online", "the attack the verdict is about")
    edges: tuple[float, ...] = setting(
        (0.0, 0.1, 0.3, 0.5, 0.7, 1.0),
        "memorization bins of the gain (mem clipped into [edges[0], edges[-1]])")
    alpha: float = setting(0.05, "1 − confidence of the intervals", low=0.0, high=0.5,
                           open_low=True)


CONFIGS = {
    "tiny": SamConfig(name="tiny", train_size=300, test_size=100, models=6, epochs=2,
                      num_probes=2, bootstrap=20, edges=(0.0, 0.5, 1.0)),
    "small": SamConfig(name="small", models=16, epochs=12, bootstrap=200),
    "full": SamConfig(name="full", datasets=("cifar100", "cifar10"), fallback_dataset=None,
                      model="resnet18", models=64, epochs=100, batch_size=128, learning_rate=0.1,
                      rho=0.05, bootstrap=1000),
}


def get_config(name: str) -> SamConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: SamConfig) -> None:
    X.validate(config)
    unknown = sorted(set(config.attacks) - set(_ATTACKS))
    if unknown or config.verdict_attack not in config.attacks:
        raise ValueError(f"attacks must come from {_ATTACKS} and include verdict_attack "
                         f"{config.verdict_attack!r}; unknown: {unknown}")
    if config.models < 6:
        raise ValueError("models must be >= 6 (leave-one-model-out needs >= 2 IN and 2 OUT "
                         "shadows per example after balancing)")
    if not config.rho > 0 or not 0 < config.alpha < 1 or config.bootstrap < 10:
        raise ValueError(f"need rho > 0, 0 < alpha < 1 and bootstrap >= 10, got {config.rho}, "
                         f"{config.alpha}, {config.bootstrap}")
    if len(config.edges) < 2 or any(b <= a for a, b in zip(config.edges, config.edges[1:])):
        raise ValueError(f"edges must be >= 2 increasing values, got {config.edges}")


def gain_by_memorization(correct_sgd, correct_sam, masks, *, edges, bootstrap: int, seed: int,
                         alpha: float) -> list[dict]:
    """Per memorization bin: mean SAM − SGD accuracy on held-out (OUT) and trained-on (IN)
    examples with (1 − alpha) example-bootstrap intervals, cross-fitted over two halves of the
    members (bins from SGD memorization on one half, gains from the other). correct_*: (K, N)."""
    from jaxcurv.memorization import cross_fitted_memorization, masked_mean

    k = masks.shape[0]
    mem_rows = cross_fitted_memorization(correct_sgd, masks)
    halves = [np.arange(k) % 2 == 1, np.arange(k) % 2 == 0]   # targets of each estimate half
    mem, gain_out, gain_in = [], [], []
    for tgt in halves:
        mt = masks[tgt]
        gain_out.append(masked_mean(correct_sam[tgt], ~mt) - masked_mean(correct_sgd[tgt], ~mt))
        gain_in.append(masked_mean(correct_sam[tgt], mt) - masked_mean(correct_sgd[tgt], mt))
        mem.append(mem_rows[tgt][0])
    mem, gain_out, gain_in = (np.concatenate(a) for a in (mem, gain_out, gain_in))
    clipped = np.clip(mem, edges[0], edges[-1])
    rng = np.random.default_rng(seed)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        sel = np.isfinite(mem) & (clipped >= lo) & ((clipped <= hi) if last else (clipped < hi))
        row = {"mem_lo": float(lo), "mem_hi": float(hi), "pairs": int(sel.sum())}
        if min(np.isfinite(gain_out[sel]).sum(), np.isfinite(gain_in[sel]).sum()) < 2:
            continue
        row["mem_center"] = float(mem[sel].mean())
        for name, g in (("gain", gain_out), ("gain_in", gain_in)):
            v = g[sel & np.isfinite(g)]
            draws = rng.choice(v, size=(bootstrap, v.size)).mean(1)
            lo_ci, hi_ci = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
            row.update({name: float(v.mean()), f"{name}_lo": float(lo_ci),
                        f"{name}_hi": float(hi_ci)})
        rows.append(row)
    return rows


def paired_metric_difference(scores_a, scores_b, member, *, bootstrap: int, seed: int,
                             alpha: float, keys=("auroc", "tpr_at_fpr_1pct",
                                                 "tpr_at_fpr_0_1pct")) -> dict:
    """b − a for roc_metrics keys on (K, N) leave-one-model-out scores of two models trained on
    the same subsets, with a paired (1 − alpha) bootstrap that resamples example columns (each
    column's K scores stay together and both models see the same draw)."""
    from jaxcurv import mia

    rng = np.random.default_rng(seed)
    n = member.shape[1]
    point_a, point_b = mia.roc_metrics(scores_a, member), mia.roc_metrics(scores_b, member)
    draws = {k: [] for k in keys}
    for _ in range(bootstrap):
        cols = rng.integers(0, n, n)
        m = member[:, cols]
        if m.all() or not m.any():
            continue
        a, b = mia.roc_metrics(scores_a[:, cols], m), mia.roc_metrics(scores_b[:, cols], m)
        for k in keys:
            draws[k].append(b[k] - a[k])
    out = {}
    for k in keys:
        lo, hi = np.quantile(draws[k], [alpha / 2, 1 - alpha / 2])
        out[k] = {"difference": point_b[k] - point_a[k], "ci": (float(lo), float(hi))}
    return out


def _verdict(diff: dict, attack: str, alpha: float) -> dict:
    lo, hi = diff["auroc"]["ci"]
    if lo > 0:
        answer = "yes: SAM raises the membership-inference risk"
    elif hi < 0:
        answer = "no: SAM lowers the membership-inference risk"
    else:
        answer = "no significant difference"
    return {"sam_raises_privacy_risk": answer, "attack": attack,
            "auroc_difference_sam_minus_sgd": diff["auroc"]["difference"],
            "auroc_difference_ci": diff["auroc"]["ci"],
            "tpr_at_1pct_fpr_difference": diff["tpr_at_fpr_1pct"]["difference"],
            "tpr_at_1pct_fpr_difference_ci": diff["tpr_at_fpr_1pct"]["ci"],
            "confidence": 1 - alpha,
            "rule": "yes if the paired-bootstrap interval of the AUROC difference lies above 0, "
                    "lowers if below 0, else no significant difference"}


def _arm(config: SamConfig, data, masks, opt: str, timer, spec: str) -> dict:
    """One optimizer's ensemble on the shared subsets: correctness (K, N), attack scores, member
    curvature, test correctness (K, Z) and memorization (N,)."""
    from jaxcurv import ensemble, memorization
    from jaxcurv.workflow import attack_scores

    train, test = data.train, data.test
    with timer(f"{spec}: train {opt}"):
        ens = X.train_ensemble(config, data, masks, tag=f"subsets-{data.slug}",
                               optimizer=X.optimizer_config(config, name=opt))
    with timer(f"{spec}: predict, curvature, attacks ({opt})"):
        logits = ensemble.predict(ens, train.images, progress=False)
        test_logits = ensemble.predict(ens, test.images, progress=False)
        curv = X.member_curvature(config, ens, train.images, train.labels,
                                  key=X.config_key(config, Stage.CURVATURE))
        scores = attack_scores(logits[:, None], train.labels, masks, np.abs(curv.trace_sq), None,
                               test_logits, test.labels)
    correct = logits.argmax(-1) == train.labels[None]
    return {"correct": correct, "scores": scores, "curvature": curv,
            "test_correct": test_logits.argmax(-1) == test.labels[None],
            "mem": memorization.feldman_zhang(correct, masks)[0]}


def _test_gain(config: SamConfig, arms: dict) -> tuple[float, tuple[float, float]]:
    """Mean SAM − SGD test accuracy with its (1 − alpha) bootstrap interval over test examples."""
    test_diff = arms["sam"]["test_correct"].mean(0) - arms["sgd"]["test_correct"].mean(0)  # (Z,)
    rng = np.random.default_rng(config.seed)
    draws = rng.choice(test_diff, size=(config.bootstrap, test_diff.size)).mean(1)
    lo, hi = np.quantile(draws, [config.alpha / 2, 1 - config.alpha / 2])
    return float(test_diff.mean()), (float(lo), float(hi))


def _mia(config: SamConfig, arms: dict, masks) -> tuple[list, dict, dict, dict]:
    """MIA metrics of both arms (rows), ROC curves and AUROCs by label, and the paired SAM − SGD
    differences per attack."""
    from jaxcurv import mia

    cluster = np.broadcast_to(np.arange(masks.shape[1]), masks.shape)
    rows, curves, aurocs, diffs = [], {}, {}, {}
    for attack in config.attacks:
        for opt, arm in arms.items():
            m = mia.roc_metrics(arm["scores"][attack], masks, bootstrap=config.bootstrap,
                                seed=config.seed, alpha=config.alpha, cluster=cluster)
            rows.append({"attack": attack, "optimizer": opt, **{
                k: m[k] for k in ("auroc", "auroc_ci", "balanced_accuracy", "tpr_at_fpr_1pct",
                                  "tpr_at_fpr_1pct_ci", "tpr_at_fpr_0_1pct",
                                  "tpr_at_fpr_0_1pct_ci")}})
            label = f"{opt.upper()} {attack}"
            curves[label] = mia.roc_curve(arm["scores"][attack], masks)
            aurocs[label] = m["auroc"]
        diffs[attack] = paired_metric_difference(
            arms["sgd"]["scores"][attack], arms["sam"]["scores"][attack], masks,
            bootstrap=config.bootstrap, seed=config.seed, alpha=config.alpha)
    return rows, curves, aurocs, diffs


def _figures(slug: str, gains, curves, aurocs, curv_in, sq_in, d) -> list:
    from jaxcurv import report

    nonpos = ", ".join(f"{k} {int(np.sum(v <= 0))}" for k, v in curv_in.items())
    return [
        report.figure_gain_by_mem(gains, d / "gain_by_memorization.png",
                                  ylabel="held-out accuracy gain, SAM − SGD"),
        report.figure_roc(curves, d / "roc_sam_vs_sgd.png", aurocs=aurocs,
                          title=f"{slug}: MIA, SAM vs SGD"),
        report.figure_distributions(curv_in, d / "curvature_distributions.png",
                                    xlabel="tr(H), mean over IN members",
                                    title=f"tr(H), SGD vs SAM (≤ 0 dropped: {nonpos})"),
        report.figure_distributions(sq_in, d / "curvature_sq_distributions.png",
                                    xlabel="tr(H²), mean over IN members",
                                    title="tr(H²), SGD vs SAM"),
    ]


def _lines(slug: str, config: SamConfig, result: dict) -> list[str]:
    acc = result["test_accuracy"]
    gain, (lo, hi) = result["test_accuracy_gain"]["gain"], result["test_accuracy_gain"]["ci"]
    gains, rows = result["gain_by_memorization"], result["mia"]
    lines = [f"[{slug}] test accuracy SGD {acc['sgd']:.4f}, SAM {acc['sam']:.4f} (ρ="
             f"{config.rho}); gain {gain:+.4f} [{lo:+.4f}, {hi:+.4f}]",
             f"[{slug}] held-out accuracy gain by SGD memorization (cross-fitted): "
             + "; ".join(f"mem≈{r['mem_center']:.2f}: {r['gain']:+.3f} [{r['gain_lo']:+.3f}, "
                         f"{r['gain_hi']:+.3f}]" for r in gains)]
    for attack, diff in result["mia_difference_sam_minus_sgd"].items():
        a_sgd, a_sam = (next(r["auroc"] for r in rows if r["attack"] == attack
                             and r["optimizer"] == o) for o in ("sgd", "sam"))
        d_lo, d_hi = diff["auroc"]["ci"]
        lines.append(f"[{slug}] {attack}: AUROC SGD {a_sgd:.4f}, SAM {a_sam:.4f}, difference "
                     f"{diff['auroc']['difference']:+.4f} [{d_lo:+.4f}, {d_hi:+.4f}]; "
                     f"TPR@1%FPR diff {diff['tpr_at_fpr_1pct']['difference']:+.4f}")
    return lines + [f"[{slug}] median tr(H) (in): " + ", ".join(
                        f"{k} {v:.3g}" for k, v in result["curvature_median_in"].items()),
                    f"[{slug}] verdict ({config.verdict_attack}): "
                    f"{result['verdict']['sam_raises_privacy_risk']}"]


def main(config: SamConfig) -> dict:
    from jaxcurv import data as data_lib
    from jaxcurv import memorization, report
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        train, n = data.train, len(data.train)
        masks = data_lib.subset_masks(n, config.models, fraction=config.fraction, seed=config.seed)
        arms = {opt: _arm(config, data, masks, opt, timer, spec) for opt in ("sgd", "sam")}
        with timer(f"{spec}: statistics"):
            gains = gain_by_memorization(arms["sgd"]["correct"], arms["sam"]["correct"], masks,
                                         edges=config.edges, bootstrap=config.bootstrap,
                                         seed=config.seed, alpha=config.alpha)
            test_gain, test_ci = _test_gain(config, arms)
            mia_rows, curves, aurocs, diffs = _mia(config, arms, masks)
        verdict = _verdict(diffs[config.verdict_attack], config.verdict_attack, config.alpha)
        curv_in, sq_in = ({opt.upper(): memorization.masked_mean(np.asarray(
            getattr(a["curvature"], field)), masks) for opt, a in arms.items()}
            for field in ("trace", "trace_sq"))
        d = out / data.slug
        report.write_csv(d / "gain_by_memorization.csv", {k: [r.get(k) for r in gains]
                                                          for k in gains[0]})
        report.write_csv(d / "mia.csv", {k: [str(r[k]) if isinstance(r[k], tuple) else r[k]
                                             for r in mia_rows] for k in mia_rows[0]})
        report.write_csv(d / "per_example.csv", {
            "index": np.arange(n), "label": train.labels, "mem_sgd": arms["sgd"]["mem"],
            "mem_sam": arms["sam"]["mem"], "curvature_sgd": curv_in["SGD"],
            "curvature_sam": curv_in["SAM"], "curvature_sq_sgd": sq_in["SGD"],
            "curvature_sq_sam": sq_in["SAM"]})
        figures = _figures(data.slug, gains, curves, aurocs, curv_in, sq_in, d)
        results[data.slug] = {
            "data": data.describe(), "rho": config.rho,
            "test_accuracy": {opt: float(a["test_correct"].mean()) for opt, a in arms.items()},
            "test_accuracy_gain": {"gain": test_gain, "ci": test_ci},
            "gain_by_memorization": gains,
            "mia": mia_rows, "mia_difference_sam_minus_sgd": diffs, "verdict": verdict,
            "curvature_median_in": {k: float(np.nanmedian(v)) for k, v in curv_in.items()},
            "curvature_sq_median_in": {k: float(np.nanmedian(v)) for k, v in sq_in.items()},
            "mean_memorization": {opt: float(np.nanmean(a["mem"])) for opt, a in arms.items()},
            "figures": [str(p.relative_to(out)) for p in figures],
        }
        lines += _lines(data.slug, config, results[data.slug])
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
