"""Eq. 15 — mem ≤ p₁·√m_sub·Curv + c₁ — fitted on the Figure 3 data as the paper bins it.

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024),
Thm 5.1 (mem ≤ Curv/L + c₁) with L ∝ m_sub^{−1/2}, fitted as eq. 15 (§6.3): the examples are
"divided into 50 bins based on memorization score" ("bin 0 includes samples with memorization
scores from 0 to 0.02"); each bin gives its average memorization and its "maximum curvature score
(since curvature is an upper bound)"; "we can treat each memorization bin as a sub-population",
so m_sub is the number of examples in the bin. Fit by jaxcurv.privacy.theory
.fit_memorization_curvature (p₁, c₁ ≥ 0); R² into summary.json.

The data are those of mem_vs_curvature.py (same config names, same cached ensemble):
Feldman–Zhang memorization and per-example tr(H²) (the papers' Curv) averaged three ways: over
the members that did NOT train on the example (OUT: Thm 5.1 bounds the curvature of models
trained on S without it), over all members (§6.3 averages every model) and over the members that
did (IN). One fit per source.

    python -m experiments.curvature_bound_fit --config small   # reuses mem_vs_curvature small
    python -m experiments.curvature_bound_fit --config full
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.settings import setting
from experiments import mem_vs_curvature as mvc

EXPERIMENT = "curvature_bound_fit"

__all__ = ["BoundFitConfig", "CONFIGS", "SOURCES", "get_config", "binned_bound_fit", "main"]

# curvature over which members: OUT (Thm 5.1), all (§6.3), IN (one model's own training data)
SOURCES = ("out", "all", "in")


@dataclasses.dataclass(frozen=True)
class BoundFitConfig(mvc.MemCurvConfig):
    """mem_vs_curvature's settings plus the memorization bins of the fit."""

    fit_bins: int = setting(50, "memorization bins of equal width over [0, 1] (the paper: 50)",
                            low=2, high=100_000)


CONFIGS = {name: BoundFitConfig(**dataclasses.asdict(cfg),
                                fit_bins=10 if name == "tiny" else 50)
           for name, cfg in mvc.CONFIGS.items()}


def get_config(name: str) -> BoundFitConfig:
    """The named config (the names of mem_vs_curvature, whose data it fits)."""
    return X.named_config(CONFIGS, name)


def binned_bound_fit(mem, curvature, bins: int) -> dict[str, Any]:
    """Fig. 3 as §6.3 computes it: ``bins`` memorization bins of width 1/bins over [0, 1] (mem
    clipped into it; empty bins dropped; NaN examples skipped); per bin its examples m_sub, mean
    mem, maximum and mean curvature; eq. 15 mem ≈ p₁·√m_sub·(max Curv) + c₁ (p₁, c₁ ≥ 0) fitted
    on the bins. Returns {"bins": rows with the fitted value, "p1", "c1", "r2"}."""
    from jaxcurv.privacy import theory

    mem, curvature = np.asarray(mem, np.float64), np.asarray(curvature, np.float64)
    ok = np.isfinite(mem) & np.isfinite(curvature)
    m, c = mem[ok], curvature[ok]
    which = np.minimum((np.clip(m, 0.0, 1.0) * bins).astype(int), bins - 1)
    rows = [{"bin": int(b), "mem_lo": b / bins, "mem_hi": (b + 1) / bins,
             "examples": int(np.sum(which == b)), "mem_mean": float(m[which == b].mean()),
             "curvature_max": float(c[which == b].max()),
             "curvature_mean": float(c[which == b].mean())} for b in np.unique(which)]
    fit = theory.fit_memorization_curvature([r["mem_mean"] for r in rows],
                                            [r["curvature_max"] for r in rows],
                                            [r["examples"] for r in rows])
    for r, f in zip(rows, fit.predicted):
        r["fitted"] = float(f)
    return {"bins": rows, "p1": fit.p1, "c1": fit.c1, "r2": fit.r2}


def main(config: BoundFitConfig) -> dict:
    from jaxcurv import report
    from jaxcurv.workflow import Timer

    X.validate(config)
    mvc.check_config(config)
    if config.fit_bins < 2:
        raise ValueError(f"need fit_bins >= 2, got {config.fit_bins}")
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        with timer(f"{spec}: mem_vs_curvature data (cached when it ran before)"):
            cols, facts = mvc.compute(config, data)
        mem = cols["mem"]
        fits, rows, panels = {}, [], {}
        for source in SOURCES:
            fit = binned_bound_fit(mem, cols[f"curvature_{source}"], config.fit_bins)
            rows += [{"source": source, **r} for r in fit["bins"]]
            fits[source] = {"p1": fit["p1"], "c1": fit["c1"], "r2": fit["r2"],
                            "bins": len(fit["bins"]),
                            "fraction_bins_above_fit": float(np.mean(
                                [r["mem_mean"] > r["fitted"] + 1e-12 for r in fit["bins"]]))}
            panels[f"curvature over {source.upper()} members, R² {fit['r2']:.3f}"] = {
                "curvature": cols[f"curvature_{source}"], "mem": mem,
                "bin_curvature": [r["curvature_max"] for r in fit["bins"]],
                "bin_mem": [r["mem_mean"] for r in fit["bins"]],
                "fitted": [r["fitted"] for r in fit["bins"]], "p1": fit["p1"], "c1": fit["c1"],
                "r2": fit["r2"]}
        d = out / data.slug
        report.write_csv(d / "bins.csv", {k: [r[k] for r in rows] for k in rows[0]})
        fig = report.figure_binned_bound_fits(panels, d / "eq15_bound_fit.png",
                                              xlabel="curvature tr(H²) (bins: their maximum)")
        results[data.slug] = {"data": data.describe(), "ensemble": facts, "fits": fits,
                              "bin_width": 1 / config.fit_bins,
                              "figure": str(fig.relative_to(out))}
        lines += [f"[{data.slug}] eq. 15 on memorization bins of width {1 / config.fit_bins:g}, "
                  f"curvature over {s.upper()} members: p1={f['p1']:.4g}, c1={f['c1']:.4g}, "
                  f"R²={f['r2']:.3f} ({f['bins']} bins)" for s, f in fits.items()]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
