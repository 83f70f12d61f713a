"""CIFAR-10 evidence on a CPU: Fig. 3 of the ICML 2024 paper as the paper computes it, and the
label-noise comparison over training seeds, on real images in about an hour on 2 cores.

Audits (:func:`jaxcurv.workflow.run_audit`) on a seeded subset of CIFAR-10:

1. clean labels, K members on random halves trained to interpolation. Fig. 3 of Ravikumar et al.
   (ICML 2024, §6.3), as the paper computes it: examples in 50 memorization bins of width 0.02
   (mem clipped into [0, 1]); per bin its mean memorization and its MAXIMUM curvature ("since
   curvature is an upper bound"); eq. 15, mem ≤ p₁·√m_sub·Curv + c₁ with m_sub the examples of
   the bin ("we can treat each memorization bin as a sub-population"), fitted with p₁, c₁ ≥ 0.
   Curvature (tr(H²), the papers' Curv) three ways: over the OUT members (Thm 5.1 bounds
   memorization by the curvature of models trained on S without the example), over all members
   (§6.3 averages every model) and over the IN members (scores.csv's ``curvature``). Spearman of
   each with memorization, and the partial Spearman given the members' training (IN) loss: what
   curvature adds beyond the loss. Intervals: percentile bootstrap over the members (the K models
   resampled, memorization and curvature recomputed), i.e. over training randomness.
2. 10 % of the labels flipped, ``noise_members`` members, for ``noise_seeds`` seeds (each a new
   subset, new flips, new halves and keys): how well memorization, curvature, tr(H), the IN loss
   and low held-out confidence rank the flipped labels first (AUROC, average precision,
   precision@k), per seed and across seeds.

Every table is computed by :func:`tables` from ``statistics.npz`` (the per-member statistics:
masks, correctness, log p(label), tr(H²), tr(H), flips), so ``python -m experiments.recompute
DIR`` rebuilds them. The membership-inference table of the clean audit is in ``audit/``'s
summary only; the Curvature Clues attack table in that paper's protocol is
``experiments.curvature_clues_table1``.

    python -m experiments.cifar10_evidence --config cpu --data-dir DIR   # DIR: cifar10-jpeg.npz
    python -m experiments.cifar10_evidence --config tiny                 # digits, seconds

Outputs under ``--out`` (default results/cifar10_evidence/<config>): ``summary.json``,
``statistics.npz``, the tables as CSV, the figures, and the audits' folders (``audit/``,
``label_noise/seed-<s>/``: scores.csv, summary.json, figures, report.html; their ``cache/`` and
``checkpoints/`` make a killed run resume).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from experiments.curvature_bound_fit import SOURCES as CURVATURE_SOURCES
from experiments.curvature_bound_fit import binned_bound_fit
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.settings import Attacks, LabelNoise, redefault, setting

EXPERIMENT = "cifar10_evidence"

__all__ = ["EvidenceConfig", "CONFIGS", "PAPER", "CURVATURE_SOURCES", "get_config",
           "partial_spearman", "tables", "main"]

# Ravikumar et al. (ICML 2024) §6.3: Fig. 3 on CIFAR-100 (1,000 Inception models) and ImageNet
# (100 ResNet50) from Feldman & Zhang's 0.7-subset models; 50 memorization bins of width 0.02.
PAPER = {"fig3_bins": 50, "fig3_bin_width": 0.02, "fig3_bin_statistic": "max curvature",
         "fig3_models": {"CIFAR-100": 1000, "ImageNet": 100}, "subset_ratio": 0.7}


@dataclasses.dataclass(frozen=True)
class EvidenceConfig(LabelNoise, X.ExperimentConfig):
    """The shared experiment settings for the audits: ``train_size`` is the seeded random
    training subset (and at most as many test images); ``models`` the clean audit's ensemble
    (each member on a random half); the members train with Adam, a cosine schedule, no weight
    decay and no augmentation, so that they interpolate."""

    name: str = redefault(X.ExperimentConfig, "name", "cpu")
    datasets: tuple[str, ...] = redefault(X.ExperimentConfig, "datasets", ("cifar10",))
    fallback_dataset: str | None = redefault(X.ExperimentConfig, "fallback_dataset", None)
    train_size: int | None = redefault(X.ExperimentConfig, "train_size", 5000)
    model_kwargs: dict | None = redefault(X.ExperimentConfig, "model_kwargs",
                                          {"width": 16, "hidden": 512})
    models: int = redefault(X.ExperimentConfig, "models", 32)
    epochs: int = redefault(X.ExperimentConfig, "epochs", 40)
    batch_size: int = redefault(X.ExperimentConfig, "batch_size", 32)
    learning_rate: float | None = redefault(X.ExperimentConfig, "learning_rate", 1e-3)
    optimizer: str = redefault(X.ExperimentConfig, "optimizer", "adam")
    weight_decay: float = redefault(X.ExperimentConfig, "weight_decay", 0.0)
    augment: bool | None = redefault(X.ExperimentConfig, "augment", False)
    num_probes: int = redefault(X.ExperimentConfig, "num_probes", 4)
    zero_order_members: int | None = redefault(Attacks, "zero_order_members", 8)
    noise_members: int = setting(8, "members of each planted-noise audit", low=6, high=100_000)
    noise_seeds: int = setting(3, "planted-noise audits, seeds seed, seed + 1, ... (each a new "
                               "subset, flips, halves and keys)", low=1, high=1000)
    label_noise: float = redefault(LabelNoise, "label_noise", 0.1)
    fit_bins: int = setting(50, "Fig. 3: memorization bins of equal width over [0, 1]", low=2,
                            high=100_000)
    model_bootstrap: int = setting(200, "bootstrap resamples of the members for the intervals "
                                   "of the Fig. 3 correlations", low=0, high=100_000)


CONFIGS = {
    "cpu": EvidenceConfig(),
    "small": EvidenceConfig(name="small", datasets=("digits",), train_size=1438, model="mlp",
                            model_kwargs={"hidden": 512, "depth": 2}, models=16, epochs=60,
                            batch_size=64, learning_rate=2e-3, num_probes=10),
    "full": EvidenceConfig(name="full", train_size=50000, model_kwargs={"width": 32,
                                                                       "hidden": 512},
                           models=64, epochs=40, batch_size=128, num_probes=10,
                           zero_order_members=64, noise_members=16, bootstrap=1000),
    "tiny": EvidenceConfig(name="tiny", datasets=("digits",), train_size=200, model="mlp",
                           model_kwargs={"hidden": 64, "depth": 1}, models=6, epochs=2,
                           batch_size=64, num_probes=2, zero_order_members=6, noise_members=6,
                           noise_seeds=2, bootstrap=10, fit_bins=10, model_bootstrap=10),
}


def get_config(name: str) -> EvidenceConfig:
    """The named configuration ("cpu": CIFAR-10, 65 minutes measured on 2 CPU cores; "small": the same
    audits on the embedded digits, minutes; "full": all 50,000 CIFAR-10 images and 64 members,
    for a GPU; "tiny": a smoke test on digits whose numbers mean nothing)."""
    return X.named_config(CONFIGS, name)


def _audit_config(config: EvidenceConfig, out: Path, *, noise_seed: int | None = None):
    from jaxcurv.workflow import AuditConfig

    noisy = noise_seed is not None
    return AuditConfig(
        dataset=config.datasets[0], data_dir=config.data_dir, max_examples=config.train_size,
        model=config.model, model_kwargs=config.model_settings,
        models=config.noise_members if noisy else config.models, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        optimizer=config.optimizer, weight_decay=config.weight_decay, augment=config.augment,
        num_probes=config.num_probes,
        zero_order=not noisy, zero_order_members=config.zero_order_members,
        label_noise=config.label_noise if noisy else 0.0, bootstrap=config.bootstrap,
        seed=config.seed + (noise_seed or 0),
        out=str(out / (f"label_noise/seed-{noise_seed}" if noisy else "audit")),
        progress=config.progress)


def _member_statistics(run, prefix: str = "") -> dict[str, np.ndarray]:
    """Per-member statistics (K, N) of an audit run: masks, correctness, log p(label), tr(H²),
    tr(H) (first query view); the flips when labels were flipped."""
    from jaxcurv import mia

    logits, labels = run.logits[:, 0], run.data.train.labels
    out = {"masks": run.data.masks, "correct": logits.argmax(-1) == labels[None],
           "log_probability": -mia.cross_entropy(logits, labels[None]),
           "curvature": np.asarray(run.curvature.trace_sq),
           "curvature_trace": np.asarray(run.curvature.trace)}
    if run.config.label_noise > 0:
        out["flipped"] = run.data.flipped
    return {prefix + k: v for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# statistics -> tables (pure)


def partial_spearman(x, y, given) -> float:
    """Spearman correlation of x and y (N,) given z = ``given`` (N,): the Pearson correlation of
    the ranks' residuals, (r_xy − r_xz r_yz) / √((1 − r_xz²)(1 − r_yz²)) on Spearman r's, over
    the examples where all three are finite."""
    from scipy import stats

    x, y, z = (np.asarray(a, np.float64) for a in (x, y, given))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    r = stats.spearmanr(np.stack([x[ok], y[ok], z[ok]], axis=1)).statistic
    rxy, rxz, ryz = r[0, 1], r[0, 2], r[1, 2]
    return float((rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2)))


def _in_out_all(values, masks) -> dict[str, np.ndarray]:
    from jaxcurv.memorization import masked_mean

    values = np.asarray(values, np.float64)
    return {"in": masked_mean(values, masks), "out": masked_mean(values, ~masks),
            "all": values.mean(0)}


def _fig3_columns(st: dict[str, np.ndarray], members=None) -> dict[str, np.ndarray]:
    """mem, IN loss and curvature per source (N,) from the clean statistics (of ``members``)."""
    from jaxcurv import memorization

    rows = slice(None) if members is None else members
    masks, correct = st["masks"][rows], st["correct"][rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        mem = memorization.feldman_zhang(correct, masks)[0]
    curv = _in_out_all(st["curvature"][rows], masks)
    loss = _in_out_all(-st["log_probability"][rows].astype(np.float64), masks)["in"]
    return {"mem": mem, "loss": loss, **{f"curvature_{s}": curv[s] for s in CURVATURE_SOURCES}}


def _correlations(cols) -> dict[str, float]:
    from scipy import stats

    out = {}
    for s in CURVATURE_SOURCES:
        c = cols[f"curvature_{s}"]
        ok = np.isfinite(cols["mem"]) & np.isfinite(c) & np.isfinite(cols["loss"])
        out[f"spearman_{s}"] = float(stats.spearmanr(cols["mem"][ok], c[ok]).statistic)
        out[f"partial_{s}"] = partial_spearman(cols["mem"], c, cols["loss"])
        out[f"spearman_loss_{s}"] = float(stats.spearmanr(c[ok], cols["loss"][ok]).statistic)
    ok = np.isfinite(cols["mem"]) & np.isfinite(cols["loss"])
    out["spearman_loss_mem"] = float(stats.spearmanr(cols["mem"][ok], cols["loss"][ok]).statistic)
    return out


def _fig3_tables(st, config) -> tuple[list, list]:
    cols = _fig3_columns(st)
    point = _correlations(cols)
    rng = np.random.default_rng(config.seed)
    k = st["masks"].shape[0]
    with warnings.catch_warnings():  # a resample may hold an example only IN or only OUT
        warnings.simplefilter("ignore", RuntimeWarning)
        draws = [_correlations(_fig3_columns(st, rng.integers(0, k, k)))
                 for _ in range(config.model_bootstrap)]
    bins, fits = [], []
    for s in CURVATURE_SOURCES:
        fit = binned_bound_fit(cols["mem"], cols[f"curvature_{s}"], config.fit_bins)
        bins += [{"source": s, **r} for r in fit["bins"]]
        row = {"source": s, "p1": fit["p1"], "c1": fit["c1"], "r2": fit["r2"],
               "bins": len(fit["bins"])}
        for name, label in (("spearman", "spearman_mem"), ("partial", "partial_mem"),
                            ("spearman_loss", "spearman_loss")):
            values = np.array([d[f"{name}_{s}"] for d in draws])
            lo, hi = (np.nanquantile(values, [0.025, 0.975]) if values.size
                      else (np.nan, np.nan))
            row |= {label: point[f"{name}_{s}"], f"{label}_lo": float(lo),
                    f"{label}_hi": float(hi)}
        fits.append(row)
    return bins, fits


_RANKERS = ("mem", "curvature", "curvature_trace", "loss", "low_confidence")


def _noise_columns(st, p: str) -> dict[str, np.ndarray]:
    """The audit's label-noise rankers' inputs (N,) from one seed's statistics (prefix p)."""
    from jaxcurv import memorization
    from jaxcurv.memorization import masked_mean

    masks = st[p + "masks"]
    logp = st[p + "log_probability"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mem = memorization.feldman_zhang(st[p + "correct"], masks)[0]
    return {"mem": mem, "curvature": masked_mean(st[p + "curvature"].astype(np.float64), masks),
            "curvature_trace": masked_mean(st[p + "curvature_trace"].astype(np.float64), masks),
            "loss": masked_mean(-logp, masks), "confidence": masked_mean(np.exp(logp), ~masks)}


def _noise_tables(st) -> tuple[list, list]:
    from jaxcurv import memorization
    from jaxcurv.workflow.sections import noise_rankers

    seeds = sorted({int(k.split("_")[0][5:]) for k in st if k.startswith("noise")})
    rows = []
    for s in seeds:
        p = f"noise{s}_"
        flipped = st[p + "flipped"]
        fitted = st[p + "correct"][st[p + "masks"] & flipped[None]]
        for name, score in noise_rankers(_noise_columns(st, p)).items():
            r = memorization.rank_flipped(score, flipped)
            rows.append({"seed": s, "ranker": name, "auroc": r["auroc"],
                         "average_precision": r["average_precision"],
                         "precision_at_k": r["precision_at_k"], "flipped": int(flipped.sum()),
                         "flipped_train_in_accuracy": float(fitted.mean())})
    summary = []
    for name in _RANKERS:
        a = np.array([r["auroc"] for r in rows if r["ranker"] == name])
        ap = np.array([r["average_precision"] for r in rows if r["ranker"] == name])
        beats = [r["auroc"] > next(q["auroc"] for q in rows if q["seed"] == r["seed"]
                                   and q["ranker"] == "curvature")
                 for r in rows if r["ranker"] == name]
        summary.append({"ranker": name, "seeds": len(a), "auroc_mean": float(a.mean()),
                        "auroc_sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                        "auroc_min": float(a.min()), "auroc_max": float(a.max()),
                        "average_precision_mean": float(ap.mean()),
                        "reference_ranker": "curvature",
                        "seeds_above_reference": int(np.sum(beats))})
    return rows, summary


def tables(statistics: dict[str, np.ndarray], config) -> dict[str, list[dict[str, Any]]]:
    """fig3_bins and fig3_fits (per curvature source, with the correlations and their member-
    bootstrap intervals), label_noise (per seed and ranker) and label_noise_summary (across
    seeds), from ``statistics``."""
    bins, fits = _fig3_tables(statistics, config)
    noise, noise_summary = _noise_tables(statistics)
    return {"fig3_bins": bins, "fig3_fits": fits, "label_noise": noise,
            "label_noise_summary": noise_summary}


# ----------------------------------------------------------------------------------------------
# outputs


def _figures(st, tabs, out: Path) -> list[Path]:
    from jaxcurv import report
    from jaxcurv.workflow.sections import noise_rankers

    cols = _fig3_columns(st)
    fits = {r["source"]: r for r in tabs["fig3_fits"]}
    names = {"out": "OUT members (Thm 5.1)", "all": "all members (§6.3)",
             "in": "IN members (scores.csv `curvature`)"}
    panels = {}
    for s in CURVATURE_SOURCES:
        rows = [r for r in tabs["fig3_bins"] if r["source"] == s]
        f = fits[s]
        panels[f"{names[s]}: Spearman {f['spearman_mem']:.2f}, partial | loss "
               f"{f['partial_mem']:+.2f}"] = {
            "curvature": cols[f"curvature_{s}"], "mem": cols["mem"],
            "bin_curvature": [r["curvature_max"] for r in rows],
            "bin_mem": [r["mem_mean"] for r in rows], "fitted": [r["fitted"] for r in rows],
            "p1": f["p1"], "c1": f["c1"], "r2": f["r2"]}
    figs = [report.figure_binned_bound_fits(panels, out / "fig3_mem_vs_max_curvature.png",
                                            xlabel="curvature tr(H²) (bins: their maximum)")]
    seeds = sorted({r["seed"] for r in tabs["label_noise"]})
    p = f"noise{seeds[0]}_"
    figs.append(report.figure_label_noise(noise_rankers(_noise_columns(st, p)), st[p + "flipped"],
                                          out / f"label_noise_seed{seeds[0]}.png"))
    return figs


def _headlines(tabs) -> dict[str, Any]:
    """Fig. 3 per curvature source with member-bootstrap intervals; flipped-label AUROC per
    ranker with its min–max over seeds."""
    out = {}
    for f in tabs["fig3_fits"]:
        s = f["source"]
        out[f"spearman_mem_curvature_{s}"] = X.headline(
            f["spearman_mem"], f"Spearman(mem, tr(H²) over {s.upper()} members)",
            interval=[f["spearman_mem_lo"], f["spearman_mem_hi"]],
            over="95 % bootstrap over members")
        out[f"partial_spearman_{s}"] = X.headline(
            f["partial_mem"], f"partial Spearman(mem, tr(H²) over {s.upper()} | IN loss)",
            interval=[f["partial_mem_lo"], f["partial_mem_hi"]],
            over="95 % bootstrap over members")
        out[f"fig3_eq15_r2_{s}"] = X.headline(
            f["r2"], f"R² of eq. 15 on the memorization bins (max tr(H²) over {s.upper()})")
    for r in tabs["label_noise_summary"]:
        out[f"flipped_auroc_{r['ranker']}"] = X.headline(
            r["auroc_mean"], f"AUROC of {r['ranker']} at ranking flipped labels first",
            interval=[r["auroc_min"], r["auroc_max"]], over=f"{r['seeds']} seeds, min–max")
    return out


def _headline(tabs) -> dict[str, Any]:
    fits = {r["source"]: r for r in tabs["fig3_fits"]}
    return {"fig3": fits, "label_noise": tabs["label_noise_summary"],
            "label_noise_raw": tabs["label_noise"]}


def main(config: EvidenceConfig) -> dict[str, Any]:
    from jaxcurv.workflow import Timer
    from jaxcurv.workflow.audit import audit_run, run_audit

    X.validate(config)
    X.require_one_dataset(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    clean_config = _audit_config(config, out)
    with timer("clean audit"):
        clean = run_audit(clean_config)
        arrays = _member_statistics(audit_run(clean_config))
    noisy = {}
    for s in range(config.noise_seeds):
        noise_config = _audit_config(config, out, noise_seed=s)
        with timer("label-noise audits"):
            noisy[s] = run_audit(noise_config)
            arrays |= _member_statistics(audit_run(noise_config), prefix=f"noise{s}_")
    st = X.save_statistics(out, arrays)
    tabs = tables(st, config)
    X.write_tables(out, tabs)
    figures = _figures(st, tabs, out)
    results = {**_headline(tabs), "paper": PAPER,
               "test_accuracy_mean": clean["accuracy"]["test_mean"],
               "train_in_accuracy": clean["accuracy"]["train_in_mean"],
               "noise_test_accuracy": {s: n["accuracy"]["test_mean"] for s, n in noisy.items()},
               "figures": [str(p.relative_to(out)) for p in figures],
               "stage_timings_s": {"audit": clean["timings_s"],
                                   **{f"label_noise_seed{s}": n["timings_s"]
                                      for s, n in noisy.items()}}}
    fits = {r["source"]: r for r in tabs["fig3_fits"]}
    lines = [f"test accuracy {clean['accuracy']['test_mean']:.3f}, train-in "
             f"{clean['accuracy']['train_in_mean']:.3f}"]
    for s in CURVATURE_SOURCES:
        f = fits[s]
        lines.append(f"Fig. 3, curvature over {s.upper()} members: eq. 15 on {f['bins']} bins "
                     f"R² {f['r2']:.3f}; Spearman(mem, curv) {f['spearman_mem']:.3f} "
                     f"[{f['spearman_mem_lo']:.3f}, {f['spearman_mem_hi']:.3f}], partial | loss "
                     f"{f['partial_mem']:+.3f} [{f['partial_mem_lo']:+.3f}, "
                     f"{f['partial_mem_hi']:+.3f}], Spearman(curv, loss) "
                     f"{f['spearman_loss']:.3f}")
    lines.append("flipped labels, AUROC over seeds: " + ", ".join(
        f"{r['ranker']} {r['auroc_mean']:.3f} ± {r['auroc_sd']:.3f}"
        for r in tabs["label_noise_summary"]))
    lagging = X.lagging_members(st["correct"], st["masks"], what="clean ensemble") + [
        w for s in range(config.noise_seeds)
        for w in X.lagging_members(st[f"noise{s}_correct"], st[f"noise{s}_masks"],
                                   what=f"label-noise ensemble {s}")]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=[], lines=lines,
             warnings=lagging, headlines=_headlines(tabs))
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
