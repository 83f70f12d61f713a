"""Sharpness-aware minimization vs SGD: where SAM's accuracy gain goes, and what it does to privacy.

Seed paper on SAM and memorization: SAM's generalization gain concentrates on atypical, highly
memorized examples, and SAM models can be more exposed to membership inference. Two ensembles with
the same random 50 % subsets, initializations and data order, one trained with SGD and one with
SAM (OptimizerConfig(name="sam", rho=...)), repeated for ``seeds`` training seeds (each a new
seeded subset, new halves and new keys), so that every number has a spread over training runs.
Reported, per seed and across seeds (mean, sd, and the sign that holds in every seed):

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

Every table is computed by :func:`tables` from ``statistics.npz`` (per seed and optimizer: the
members' subset masks, correctness, logit-scaled confidence, loss and tr(H²) on the training
images, correctness on the test images), so ``python -m experiments.recompute DIR`` rebuilds them.

    python -m experiments.sam_vs_sgd --config cpu     # CIFAR-10 subset, 3 seeds, 2 CPU cores
    python -m experiments.sam_vs_sgd --config small   # digits, 16 + 16 models, CPU
    python -m experiments.sam_vs_sgd --config full    # CIFAR-10, ResNet18, 3 seeds
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "sam_vs_sgd"

__all__ = ["SamConfig", "CONFIGS", "get_config", "main", "gain_by_memorization",
           "paired_metric_difference", "attack_scores", "tables"]

# the attacks computed from the saved statistics (confidence, loss, tr(H²)); the same
# leave-one-model-out calls as jaxcurv.workflow.attack_scores
_ATTACKS = ("loss", "lira_online", "lira_offline", "curvature_lr", "curvature_nll")
_OPTIMIZERS = ("sgd", "sam")


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
    seeds: int = setting(1, "training seeds: seed, seed + 1, ... (each a new subset, halves and "
                         "keys)", low=1, high=1000)


CONFIGS = {
    "tiny": SamConfig(name="tiny", train_size=96, test_size=48, models=6, epochs=1,
                      model_kwargs={"width": 4, "hidden": 16}, num_probes=1, bootstrap=20,
                      edges=(0.0, 0.5, 1.0), seeds=2),
    "small": SamConfig(name="small", models=16, epochs=12, bootstrap=200),
    "cpu": SamConfig(name="cpu", datasets=("cifar10",), fallback_dataset=None, train_size=2000,
                     test_size=1000, model_kwargs={"width": 16, "hidden": 64}, models=10,
                     epochs=30, batch_size=64, learning_rate=0.1, augment=False, num_probes=4,
                     bootstrap=200, seeds=3),
    "full": SamConfig(name="full", datasets=("cifar10",), fallback_dataset=None,
                      model="resnet18", models=64, epochs=100, batch_size=128, learning_rate=0.1,
                      rho=0.05, bootstrap=1000, seeds=3),
}


def get_config(name: str) -> SamConfig:
    """The named config: "tiny" (tests, seconds), "small" (digits, CPU minutes), "cpu" (a
    2,000-image CIFAR-10 subset, 10 + 10 members, 3 seeds, the frontier's fitted recipe: about an
    hour on 2 CPU cores), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: SamConfig) -> None:
    X.validate(config)
    unknown = sorted(set(config.attacks) - set(_ATTACKS))
    if unknown or config.verdict_attack not in config.attacks:
        raise ValueError(f"attacks must come from {_ATTACKS} and include verdict_attack "
                         f"{config.verdict_attack!r}; unknown: {unknown}")
    X.require_one_dataset(config)
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


def _arm(config: SamConfig, data, masks, opt: str, timer, spec: str) -> dict[str, np.ndarray]:
    """One optimizer's ensemble on the shared subsets, as statistics: correctness, logit-scaled
    confidence, loss and tr(H²) on the training images (K, N), correctness on the test images
    (K, Z)."""
    from jaxcurv import ensemble, mia

    train, test = data.train, data.test
    with timer(f"{spec}: train {opt}"):
        ens = X.train_ensemble(config, data, masks, tag=f"subsets-{data.slug}",
                               optimizer=X.optimizer_config(config, name=opt))
    with timer(f"{spec}: predict, curvature ({opt})"):
        logits = ensemble.predict(ens, train.images, progress=False)
        test_logits = ensemble.predict(ens, test.images, progress=False)
        curv = X.member_curvature(config, ens, train.images, train.labels,
                                  key=X.config_key(config, Stage.CURVATURE))
    return {"correct": logits.argmax(-1) == train.labels[None],
            "confidence": mia.logit_confidence(logits, train.labels[None]),
            "loss": mia.cross_entropy(logits, train.labels[None]),
            "curvature": np.abs(np.asarray(curv.trace_sq)),
            "test_correct": test_logits.argmax(-1) == test.labels[None]}


def attack_scores(confidence, loss, curvature, masks, attacks) -> dict[str, np.ndarray]:
    """Leave-one-model-out scores (K, N) of ``attacks`` (from _ATTACKS) from the members'
    logit-scaled confidence, loss and tr(H²) (K, N): the calls jaxcurv.workflow.attack_scores
    makes for these attacks (one global variance per group below 64 shadows)."""
    from jaxcurv import mia

    lomo, pooled = mia.leave_one_model_out, masks.shape[0] < 64
    conf = np.asarray(confidence, np.float64)
    curv = np.maximum(np.asarray(curvature, np.float64), 1e-30)
    make = {"loss": lambda: mia.loss_attack(np.asarray(loss, np.float64)),
            "lira_online": lambda: lomo(mia.lira, conf, masks, online=True,
                                        fixed_variance=pooled),
            "lira_offline": lambda: lomo(mia.lira, conf, masks, online=False,
                                         fixed_variance=pooled),
            "curvature_lr": lambda: lomo(mia.curvature_lr, curv, masks, fixed_variance=pooled),
            "curvature_nll": lambda: lomo(mia.curvature_nll, curv, masks)}
    return {name: np.asarray(make[name](), np.float64) for name in attacks}


# ----------------------------------------------------------------------------------------------
# tables (pure: statistics -> rows)


def _seed_ids(statistics) -> list[int]:
    return sorted({int(k.split("_")[0][4:]) for k in statistics if k.startswith("seed")})


def _seed_tables(st, s: int, config) -> dict[str, list[dict[str, Any]]]:
    """One seed's rows: per optimizer, per attack, the SAM − SGD differences, the gain by
    memorization."""
    from jaxcurv import memorization, mia

    p = f"seed{s}_"
    masks = st[p + "masks"]
    arms = {o: {k: st[f"{p}{o}_{k}"] for k in ("correct", "confidence", "loss", "curvature",
                                                 "test_correct")} for o in _OPTIMIZERS}
    scores = {o: attack_scores(a["confidence"], a["loss"], a["curvature"], masks,
                               config.attacks) for o, a in arms.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        mem = {o: memorization.feldman_zhang(a["correct"], masks)[0] for o, a in arms.items()}
    per_arm, per_attack, diffs = [], [], []
    for o, a in arms.items():
        acc = a["test_correct"].mean(1)
        per_arm.append({"seed": s, "optimizer": o, "test_accuracy": float(acc.mean()),
                        "sd_test_accuracy_members": float(acc.std(ddof=1)),
                        "train_in_accuracy": float(a["correct"][masks].mean()),
                        "mean_memorization": float(np.nanmean(mem[o])),
                        "curvature_median_in": float(np.nanmedian(
                            memorization.masked_mean(a["curvature"].astype(np.float64), masks)))})
        for attack in config.attacks:
            m = mia.roc_metrics(scores[o][attack], masks)
            per_target = [mia.roc_metrics(scores[o][attack][k], masks[k])["auroc"]
                          for k in range(masks.shape[0])]
            per_attack.append({"seed": s, "optimizer": o, "attack": attack, "auroc": m["auroc"],
                               "auroc_sd_targets": float(np.std(per_target, ddof=1)),
                               "tpr_at_fpr_1pct": m["tpr_at_fpr_1pct"],
                               "tpr_at_fpr_0_1pct": m["tpr_at_fpr_0_1pct"]})
    test_gain = (arms["sam"]["test_correct"].mean(0) - arms["sgd"]["test_correct"].mean(0))
    rng = np.random.default_rng(config.seed + s)
    draws = rng.choice(test_gain, size=(config.bootstrap, test_gain.size)).mean(1)
    for attack in config.attacks:
        d = paired_metric_difference(scores["sgd"][attack], scores["sam"][attack], masks,
                                     bootstrap=config.bootstrap, seed=config.seed + s,
                                     alpha=config.alpha)
        diffs.append({"seed": s, "attack": attack,
                      "auroc_difference": d["auroc"]["difference"],
                      "auroc_difference_lo": d["auroc"]["ci"][0],
                      "auroc_difference_hi": d["auroc"]["ci"][1],
                      "tpr_at_fpr_1pct_difference": d["tpr_at_fpr_1pct"]["difference"],
                      "tpr_at_fpr_0_1pct_difference": d["tpr_at_fpr_0_1pct"]["difference"],
                      "test_accuracy_gain": float(test_gain.mean()),
                      "test_accuracy_gain_lo": float(np.quantile(draws, config.alpha / 2)),
                      "test_accuracy_gain_hi": float(np.quantile(draws, 1 - config.alpha / 2)),
                      "memorization_difference": float(np.nanmean(mem["sam"])
                                                       - np.nanmean(mem["sgd"]))})
    gains = [{"seed": s, **r} for r in gain_by_memorization(
        arms["sgd"]["correct"], arms["sam"]["correct"], masks, edges=config.edges,
        bootstrap=config.bootstrap, seed=config.seed + s, alpha=config.alpha)]
    return {"per_arm": per_arm, "mia": per_attack, "difference": diffs,
            "gain_by_memorization": gains}


def _across(rows, keys, by: str | None = None) -> list[dict[str, Any]]:
    """Per quantity (and group ``by``): the per-seed values, mean, sd, min, max and the sign
    that holds in every seed (+, − or mixed)."""
    out = []
    groups = sorted({r[by] for r in rows}) if by else [None]
    for g in groups:
        sel = [r for r in rows if by is None or r[by] == g]
        for key in keys:
            v = np.array([r[key] for r in sel], float)
            sign = "+" if (v > 0).all() else "-" if (v < 0).all() else "mixed"
            out.append({**({by: g} if by else {}), "quantity": key, "seeds": len(v),
                        "per_seed": [float(x) for x in v], "mean": float(v.mean()),
                        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                        "min": float(v.min()), "max": float(v.max()),
                        "sign_in_every_seed": sign})
    return out


def tables(statistics: dict[str, np.ndarray], config) -> dict[str, list[dict[str, Any]]]:
    """per_arm, mia, difference (SAM − SGD with paired example-bootstrap intervals) and
    gain_by_memorization per seed, and across_seeds (the spread over training seeds and the sign
    that holds in all), from ``statistics``."""
    per_seed = [_seed_tables(statistics, s, config) for s in _seed_ids(statistics)]
    out = {name: [r for t in per_seed for r in t[name]]
           for name in ("per_arm", "mia", "difference", "gain_by_memorization")}
    diff_keys = ("auroc_difference", "tpr_at_fpr_1pct_difference", "test_accuracy_gain",
                 "memorization_difference")
    arm_rows = [{"optimizer": r["optimizer"], **r} for r in out["per_arm"]]
    out["across_seeds"] = (_across(out["difference"], diff_keys, by="attack")
                           + _across(arm_rows, ("test_accuracy", "mean_memorization"),
                                     by="optimizer"))
    return out


# ----------------------------------------------------------------------------------------------
# outputs


def _verdicts(tabs, config) -> dict[str, Any]:
    """The verdict of each seed (paired-bootstrap interval) and the one that holds across
    seeds."""
    rows = [r for r in tabs["difference"] if r["attack"] == config.verdict_attack]
    per_seed = {r["seed"]: _verdict({"auroc": {"difference": r["auroc_difference"],
                                               "ci": (r["auroc_difference_lo"],
                                                      r["auroc_difference_hi"])},
                                     "tpr_at_fpr_1pct": {"difference":
                                                         r["tpr_at_fpr_1pct_difference"],
                                                         "ci": (None, None)}},
                                    config.verdict_attack, config.alpha)
                for r in rows}
    answers = {v["sam_raises_privacy_risk"] for v in per_seed.values()}
    return {"per_seed": per_seed, "across_seeds": answers.pop() if len(answers) == 1 else
            "the seeds disagree: " + "; ".join(f"seed {s}: {v['sam_raises_privacy_risk']}"
                                              for s, v in per_seed.items())}


def _figures(st, tabs, config, d) -> list:
    from jaxcurv import memorization, mia, report

    s = _seed_ids(st)[0]
    p = f"seed{s}_"
    masks = st[p + "masks"]
    gains = [r for r in tabs["gain_by_memorization"] if r["seed"] == s]
    curves, aurocs = {}, {}
    for o in _OPTIMIZERS:
        scores = attack_scores(st[p + o + "_confidence"], st[p + o + "_loss"],
                               st[p + o + "_curvature"], masks, (config.verdict_attack,))
        label = f"{o.upper()} {config.verdict_attack}"
        curves[label] = mia.roc_curve(scores[config.verdict_attack], masks)
        aurocs[label] = mia.roc_metrics(scores[config.verdict_attack], masks)["auroc"]
    curvature_in = {o.upper(): memorization.masked_mean(
        st[p + o + "_curvature"].astype(np.float64), masks) for o in _OPTIMIZERS}
    return [report.figure_gain_by_mem(gains, d / "gain_by_memorization_seed0.png",
                                      ylabel="held-out accuracy gain, SAM − SGD"),
            report.figure_roc(curves, d / "roc_sam_vs_sgd_seed0.png", aurocs=aurocs,
                              title=f"seed {s}: MIA, SAM vs SGD"),
            report.figure_distributions(curvature_in, d / "curvature_distributions_seed0.png",
                                        xlabel="curvature tr(H²), mean over IN members",
                                        title="curvature tr(H²), SGD vs SAM")]


def _headlines(tabs, config) -> dict[str, Any]:
    """SAM − SGD per attack and the arms' accuracy, each with its min–max over seeds."""
    out = {}
    for r in tabs["across_seeds"]:
        group = r.get("attack") or r.get("optimizer")
        if r.get("attack") not in (None, config.verdict_attack) and \
                r["quantity"] != "auroc_difference":
            continue
        what = (f"SAM − SGD {r['quantity'].replace('_', ' ')} ({group})" if "attack" in r
                else f"{group.upper()} {r['quantity'].replace('_', ' ')}")
        out[f"{group}_{r['quantity']}"] = X.headline(
            r["mean"], what, interval=[r["min"], r["max"]],
            over=f"{r['seeds']} seeds, min–max (sign in every seed: {r['sign_in_every_seed']})")
    return out


def _lines(tabs, verdicts) -> list[str]:
    lines = []
    for r in tabs["across_seeds"]:
        group = r.get("attack") or r.get("optimizer")
        lines.append(f"{group} {r['quantity']}: per seed " + ", ".join(
            f"{v:+.4f}" for v in r["per_seed"]) + f"; mean {r['mean']:+.4f} ± {r['sd']:.4f} "
            f"(sd over seeds); sign in every seed: {r['sign_in_every_seed']}")
    lines.append(f"verdict across seeds: {verdicts['across_seeds']}")
    return lines


def main(config: SamConfig) -> dict:
    from jaxcurv import data as data_lib
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    arrays, notes, lines, described = {}, [], [], {}
    for s in range(config.seeds):
        run = dataclasses.replace(config, seed=config.seed + s)
        for spec, data in X.each_dataset(run, timer, notes, lines):
            masks = data_lib.subset_masks(len(data.train), run.models, fraction=run.fraction,
                                          seed=run.seed)
            arrays[f"seed{s}_masks"] = masks
            for opt in _OPTIMIZERS:
                arrays |= {f"seed{s}_{opt}_{k}": v
                           for k, v in _arm(run, data, masks, opt, timer, spec).items()}
            described[s] = data.describe() | {"train_index_first": int(data.train_index[0])}
    st = X.save_statistics(out, arrays)
    tabs = tables(st, config)
    X.write_tables(out, tabs)
    figures = _figures(st, tabs, config, out)
    verdicts = _verdicts(tabs, config)
    results = {"data": described, "rho": config.rho, "across_seeds": tabs["across_seeds"],
               "difference": tabs["difference"], "per_arm": tabs["per_arm"],
               "verdict": verdicts, "figures": [str(p.relative_to(out)) for p in figures]}
    lagging = [w for s in range(config.seeds) for opt in _OPTIMIZERS
               for w in X.lagging_members(st[f"seed{s}_{opt}_correct"], st[f"seed{s}_masks"],
                                          what=f"seed {s}, {opt.upper()}")]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, warnings=lagging,
             lines=lines + _lines(tabs, verdicts), headlines=_headlines(tabs, config))
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
