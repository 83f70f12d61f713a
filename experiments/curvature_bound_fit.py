"""Eq. 15 — mem ≤ p₁·√m_sub·Curv + c₁ — fitted on the Figure 3 data.

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024),
Thm 5.1 (mem ≤ Curv/L + c₁) with L ∝ m_sub^{−1/2}, fitted as eq. 15. The data are those of
mem_vs_curvature.py (same config names, same cached ensemble): Feldman–Zhang memorization and
per-example tr(∇²ₓℓ) averaged over the members trained on the example. As in the paper, examples
are sorted by memorization and split into ``fit_bins`` equal-count bins; each bin contributes
(mean mem, max curvature, mean m_sub), m_sub = the number of training examples of the example's
class in a member's subset (fraction × class count). Fit by jaxcurv.privacy.theory
.fit_memorization_curvature (p₁, c₁ ≥ 0); R² into summary.json; the fitted line is drawn over the
scatter.

    python -m experiments.curvature_bound_fit --config small   # reuses mem_vs_curvature small
    python -m experiments.curvature_bound_fit --config full
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.settings import setting
from experiments import mem_vs_curvature as mvc

EXPERIMENT = "curvature_bound_fit"

__all__ = ["BoundFitConfig", "CONFIGS", "get_config", "main"]


@dataclasses.dataclass(frozen=True)
class BoundFitConfig(mvc.MemCurvConfig):
    """mem_vs_curvature's settings plus the bins of the fit."""

    fit_bins: int = setting(50, "equal-count memorization bins", low=2, high=100_000)
    bin_curvature: str = setting("max", "the curvature statistic per bin: max (the paper's "
                                 "choice) or mean", choices=("max", "mean"))


CONFIGS = {name: BoundFitConfig(**dataclasses.asdict(cfg),
                                fit_bins=10 if name == "tiny" else 50)
           for name, cfg in mvc.CONFIGS.items()}


def get_config(name: str) -> BoundFitConfig:
    """The named config (the names of mem_vs_curvature, whose data it fits)."""
    return X.named_config(CONFIGS, name)


def main(config: BoundFitConfig) -> dict:
    from jaxcurv import report
    from jaxcurv.privacy import theory
    from jaxcurv.workflow import Timer

    X.validate(config)
    mvc.check_config(config)
    if config.fit_bins < 2 or config.bin_curvature not in ("max", "mean"):
        raise ValueError(f"need fit_bins >= 2 and bin_curvature 'max' or 'mean', got "
                         f"{config.fit_bins}, {config.bin_curvature!r}")
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        with timer(f"{spec}: mem_vs_curvature data (cached when it ran before)"):
            cols, facts = mvc.compute(config, data)
        labels = data.train.labels
        mem, curv = cols["mem"], cols["curvature_in"]
        m_sub = config.fraction * np.bincount(labels, minlength=data.train.num_classes)[labels]
        ok = np.flatnonzero(np.isfinite(mem) & np.isfinite(curv))
        groups = np.array_split(ok[np.argsort(mem[ok], kind="stable")], min(config.fit_bins,
                                                                             len(ok)))
        reduce = np.max if config.bin_curvature == "max" else np.mean
        bin_mem = np.array([mem[g].mean() for g in groups])
        bin_curv = np.array([reduce(curv[g]) for g in groups])
        bin_msub = np.array([m_sub[g].mean() for g in groups])
        fit = theory.fit_memorization_curvature(bin_mem, bin_curv, bin_msub)
        per_example = theory.fit_memorization_curvature(mem[ok], curv[ok], m_sub[ok])
        line = fit.p1 * np.sqrt(bin_msub) * bin_curv + fit.c1
        d = out / data.slug
        report.write_csv(d / "bins.csv", {"bin": np.arange(len(groups)), "mem_mean": bin_mem,
                                          f"curvature_{config.bin_curvature}": bin_curv,
                                          "m_sub": bin_msub, "fitted": fit.predicted,
                                          "examples": [len(g) for g in groups]})
        fig = report.figure_bound_fit(curv, mem, bin_curv, bin_mem, fit.p1, fit.c1,
                               float(bin_msub.mean()), fit.r2, d / "eq15_bound_fit.png",
                               bin_label=f"{len(groups)} mem bins ({config.bin_curvature} tr(H²))",
                               quantity="curvature_in")
        results[data.slug] = {
            "data": data.describe(), "ensemble": facts,
            "fit_binned": {"p1": fit.p1, "c1": fit.c1, "r2": fit.r2, "bins": len(groups),
                           "bin_curvature": config.bin_curvature,
                           "fraction_bins_above_line": float(np.mean(bin_mem > line + 1e-12))},
            "fit_per_example": {"p1": per_example.p1, "c1": per_example.c1, "r2": per_example.r2,
                                "examples": int(len(ok))},
            "m_sub_mean": float(m_sub.mean()),
            "figure": str(fig.relative_to(out)),
        }
        lines += [f"[{data.slug}] eq. 15 on {len(groups)} memorization bins ({config.bin_curvature}"
                  f" curvature per bin): p1={fit.p1:.4g}, c1={fit.c1:.4g}, R²={fit.r2:.3f}; "
                  f"{np.mean(bin_mem > line + 1e-12):.0%} of bins above the line",
                  f"[{data.slug}] per-example fit ({len(ok)} examples): p1={per_example.p1:.4g}, "
                  f"c1={per_example.c1:.4g}, R²={per_example.r2:.3f}"]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
