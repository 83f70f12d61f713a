"""Memorization vs input curvature: Figure 3, proxies (Figures 10–13), tr(H) vs tr(H²) (14–16).

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024).
An ensemble of ``members`` models is trained on random 50 % subsets (balanced masks);
Feldman–Zhang memorization from its correctness; per-example tr(∇²ₓℓ) and tr((∇²ₓℓ)²) by exact
HVPs and Hutchinson probes on every member, averaged over the members that trained on the
example (IN, the headline), over the others (OUT) and over all members (ALL); the other proxies
from jaxcurv.workflow.proxy_scores. Correlations (Spearman,
Pearson) → JSON.

    python -m experiments.mem_vs_curvature --config small     # digits, CPU, ~1 min
    python -m experiments.mem_vs_curvature --config full      # CIFAR-100, CIFAR-10, ResNet18
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "mem_vs_curvature"

__all__ = ["MemCurvConfig", "CONFIGS", "get_config", "check_config", "compute", "main"]


@dataclasses.dataclass(frozen=True)
class MemCurvConfig(X.ExperimentConfig):
    """The shared experiment settings plus Figure 3's top-k, the proxies and the bins."""

    top: int = setting(100, "Figure 3 shows the TOP most memorized examples", low=1,
                       high=10**7)
    adversarial: bool = setting(
        True, "also the adversarial distance proxy (a PGD search per example, slow on large "
        "sets)")
    adversarial_options: dict = setting(
        {"num_targets": 2, "pgd_steps": 5, "search_steps": 8},
        "jaxcurv.adversarial.adversarial_distance keywords (the small config trades precision "
        "for speed: 2 target classes, 5 PGD steps, 8 bisection steps)", parse="json")
    record_curvature: int = setting(
        0, "probes per epoch for the curvature-averaged-over-training proxy (0: off)", low=0,
        high=10_000)
    bins: int = setting(10, "memorization bins of the binned curvature table", low=1,
                        high=10_000)


CONFIGS = {
    "tiny": MemCurvConfig(name="tiny", train_size=300, test_size=100, models=4, epochs=2,
                          num_probes=2, top=20, adversarial=False, bins=4),
    "small": MemCurvConfig(name="small", datasets=("digits",), models=16, epochs=12, top=100),
    "full": MemCurvConfig(name="full", datasets=("cifar100", "cifar10"), fallback_dataset=None,
                          model="resnet18", models=64, epochs=100, batch_size=128,
                          learning_rate=0.1, num_probes=10, top=1000, adversarial=False,
                          record_curvature=0, bins=50),
}


def get_config(name: str) -> MemCurvConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def check_config(config: MemCurvConfig) -> None:
    """ValueError for settings this experiment cannot use (after the shared checks)."""
    if config.models < 2:
        raise ValueError("models must be >= 2: memorization needs models with and without each "
                         "example")
    if config.top < 1 or config.bins < 1:
        raise ValueError(f"top and bins must be >= 1, got top={config.top}, bins={config.bins}")


def compute(config: MemCurvConfig, data: X.ExperimentData) -> tuple[dict[str, np.ndarray], dict]:
    """Per-example columns (mem, mem_stderr and every proxy, (N,) each) and ensemble facts."""
    from jaxcurv import data as data_lib
    from jaxcurv import ensemble, memorization
    from jaxcurv.workflow import ensemble_fingerprint, proxies

    train = data.train
    masks = data_lib.subset_masks(len(train), config.models, fraction=config.fraction,
                                  seed=config.seed)
    ens = X.train_ensemble(config, data, masks, tag=f"subsets-{data.slug}",
                           record_curvature=config.record_curvature)
    logits = ensemble.predict(ens, train.images, progress=config.progress)
    correct = logits.argmax(-1) == train.labels[None]
    mem, mem_stderr = memorization.feldman_zhang(correct, masks)
    curvature = X.member_curvature(config, ens, train.images, train.labels,
                                   key=X.config_key(config, Stage.CURVATURE))
    key = X.config_key(config, Stage.PROXIES)

    def compute_proxies():
        return proxies(ens, train, key, logits=logits, curvature=curvature,
                       adversarial=config.adversarial,
                       adversarial_options=config.adversarial_options, progress=config.progress)

    proxy = X.stage_cache(config).run(
        f"{EXPERIMENT}-proxies", (ensemble_fingerprint(ens), curvature._asdict(),
                                  config.adversarial, config.adversarial_options,
                                  X.key_data(key)), compute_proxies)
    test_acc = ens.history["test_accuracy"][-1]
    facts = {"test_accuracy_mean": float(test_acc.mean()),
             "test_accuracy_min": float(test_acc.min()),
             "train_accuracy_in": float(correct[masks].mean()),
             "heldout_accuracy_out": float(correct[~masks].mean()),
             "members": config.models, "subset_size_mean": float(masks.sum(1).mean())}
    everyone = {"curvature_all": np.asarray(curvature.trace_sq, np.float64).mean(0),
                "curvature_trace_all": np.asarray(curvature.trace, np.float64).mean(0)}
    return {"mem": mem, "mem_stderr": mem_stderr, **proxy, **everyone}, facts


def _proxy_panels(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The proxies of Figs. 10–13 that were measured, by their column names (the figure labels
    them from the names table, with the members each default column averages over)."""
    keys = ("curvature_in", "curvature_trace_in", "curvature_out", "curvature_all",
            "curvature_train_in", "confidence", "loss", "learning_time", "adversarial_distance")
    return {key: cols[key] for key in keys if key in cols}


def main(config: MemCurvConfig) -> dict:
    from jaxcurv import memorization, report
    from jaxcurv.workflow.sections import PROXY_LABELS
    from jaxcurv.workflow import Timer

    X.validate(config)
    check_config(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        with timer(f"{spec}: ensemble, curvature, proxies"):
            cols, facts = compute(config, data)
        d = out / data.slug
        train = data.train
        mem, curv, curv_trace = cols["mem"], cols["curvature_in"], cols["curvature_trace_in"]
        report.write_csv(d / "scores.csv", {"index": np.arange(len(train)),
                                            "source_index": data.train_index,
                                            "label": train.labels, **cols})
        top = memorization.top_memorized(mem, min(config.top, len(train)))
        figures = [
            report.figure_mem_vs_curvature(mem, curv, d / "fig3_mem_vs_curvature_top.png",
                                           top=config.top, quantity="curvature_in"),
            report.figure_mem_vs_curvature(mem, curv, d / "mem_vs_curvature_all.png",
                                           quantity="curvature_in"),
            report.figure_proxies_vs_mem(mem, _proxy_panels(cols),
                                         d / "fig10-13_proxies_vs_mem.png", labels=PROXY_LABELS),
            report.figure_trace_vs_trace_sq(curv_trace, curv, mem,
                                            d / "fig14-16_curvature_trace_vs_curvature.png"),
        ]
        proxy_cols = {k: v for k, v in cols.items() if k not in ("mem", "mem_stderr")}
        corr_all = memorization.correlations(mem, proxy_cols)
        corr_top = memorization.correlations(mem[top], {k: v[top] for k, v in proxy_cols.items()})
        binned = memorization.bin_by(mem, curv, min(config.bins, len(train)))
        results[data.slug] = {
            "data": data.describe(), "ensemble": facts,
            "memorization": {"mean": float(np.nanmean(mem)), "top_mean": float(np.mean(mem[top])),
                             "top": len(top), "mean_stderr": float(np.nanmean(cols["mem_stderr"]))},
            "spearman_mem_curvature": {"all": corr_all["curvature_in"]["spearman"],
                                       "top": corr_top["curvature_in"]["spearman"]},
            "spearman_mem_curvature_trace": {"all": corr_all["curvature_trace_in"]["spearman"],
                                             "top": corr_top["curvature_trace_in"]["spearman"]},
            "correlations_all": corr_all, "correlations_top": corr_top,
            "curvature_by_mem_bin": binned._asdict(),
            "figures": [str(p.relative_to(out)) for p in figures],
        }
        rho_all = ", ".join(f"{k} {v['spearman']:+.3f}" for k, v in corr_all.items())
        lines += [f"[{data.slug}] {len(train)} examples, {config.models} members, test acc "
                  f"{facts['test_accuracy_mean']:.3f}, mean mem {np.nanmean(mem):.3f}, "
                  f"top-{len(top)} mean mem {np.mean(mem[top]):.3f}",
                  f"[{data.slug}] Spearman(mem, curvature tr H²): all "
                  f"{corr_all['curvature_in']['spearman']:+.3f}, top-{len(top)} "
                  f"{corr_top['curvature_in']['spearman']:+.3f}; "
                  f"tr H: all {corr_all['curvature_trace_in']['spearman']:+.3f}",
                  f"[{data.slug}] Spearman with mem, all examples: {rho_all}",
                  f"[{data.slug}] mean tr(H²) by mem bin (low → high): "
                  + ", ".join(f"{v:.3g}" for v in binned.target_mean)]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
