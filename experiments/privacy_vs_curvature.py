"""Train loss and input curvature against the privacy budget ε, with the papers' fits: Figures 4,
5 and 16.

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024):
Fig. 4 (converged train loss vs ε, fitted L(ε) = a + b e^{−cε}), Fig. 5 (mean input curvature
vs ε, fitted eq. 16: Curv = (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂, the shape of Thm 5.3 with
that loss bound) and Fig. 16 (the same for tr(H²)). For every ε, ``members`` DP-SGD models
(seeds) are trained on the whole training set (m examples); loss and per-example tr(H), tr(H²)
(exact HVPs, Hutchinson probes) are averaged over the training set, then over seeds. Fits from
jaxcurv.privacy.theory; R² into summary.json. A non-private run is reported for reference (not
fitted).

    python -m experiments.privacy_vs_curvature --config small   # digits, 7 ε values, 2 seeds
    python -m experiments.privacy_vs_curvature --config full    # ResNet18-GN, ε from 1 to 100
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import PrivacySweep, redefault

EXPERIMENT = "privacy_vs_curvature"

__all__ = ["PrivacyCurvConfig", "CONFIGS", "get_config", "main"]


@dataclasses.dataclass(frozen=True)
class PrivacyCurvConfig(PrivacySweep, X.ExperimentConfig):
    """The shared experiment settings (``models``: seeds per ε, each trained on all m training
    examples) and the DP-SGD sweep (eq. 16 has 4 parameters: give >= 5 values of ε; the DP
    learning rate defaults to the non-private one: 0.5 made ε <= 3 runs on digits diverge to
    train loss > ln 10, far from the Fig. 4 regime)."""

    epsilons: tuple[float, ...] = redefault(PrivacySweep, "epsilons",
                                            (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 100.0))
    dp_learning_rate: float = redefault(PrivacySweep, "dp_learning_rate", 0.05)


CONFIGS = {
    "tiny": PrivacyCurvConfig(name="tiny", train_size=200, test_size=100,
                              model_kwargs={"width": 4, "hidden": 16}, models=1, epochs=2,
                              num_probes=2, epsilons=(1.0, 3.0, 10.0, 30.0)),
    "small": PrivacyCurvConfig(name="small", model_kwargs={"width": 8, "hidden": 32}, models=2,
                               epochs=12, num_probes=10),
    "full": PrivacyCurvConfig(name="full", datasets=("cifar10", "cifar100"), fallback_dataset=None,
                              model="resnet18_gn", models=3, epochs=50, batch_size=256,
                              learning_rate=0.1, dp_learning_rate=0.1, num_probes=10,
                              epsilons=(1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 20.0, 30.0, 50.0, 75.0,
                                        100.0)),
}


def get_config(name: str) -> PrivacyCurvConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: PrivacyCurvConfig) -> None:
    X.validate(config)
    if len(config.epsilons) < 4 or any(not (math.isfinite(e) and e > 0) for e in config.epsilons):
        raise ValueError(f"epsilons needs >= 4 finite values > 0 (eq. 16 has 4 parameters), got "
                         f"{config.epsilons}")
    if not 0 < config.dp_delta < 1 or not config.dp_clip > 0:
        raise ValueError(f"need 0 < delta < 1 and l2_clip > 0, got {config.dp_delta}, "
                         f"{config.dp_clip}")
    if config.model == "resnet18":
        raise ValueError("DP-SGD needs per-example gradients: use model resnet18_gn, not resnet18")


def _measure(config, ens, train, key) -> dict[str, np.ndarray]:
    """Per seed (K,): mean and max train loss, train accuracy, mean tr(H) and tr(H²)."""
    from jaxcurv import ensemble, mia

    logits = ensemble.predict(ens, train.images, progress=False)
    loss = mia.cross_entropy(logits, train.labels[None])
    curv = X.member_curvature(config, ens, train.images, train.labels, key=key)
    return {"loss_mean": loss.mean(1), "loss_max": loss.max(1),
            "train_accuracy": (logits.argmax(-1) == train.labels[None]).mean(1),
            "test_accuracy": ens.history["test_accuracy"][-1],
            "curvature": np.asarray(curv.trace).mean(1),
            "curvature_sq": np.asarray(curv.trace_sq).mean(1)}


def _train_and_measure(config, data, eps, timer, spec: str):
    """Per ε (list of dicts of (seeds,) arrays) and the non-private reference."""
    from jaxcurv.privacy import DPConfig

    masks = np.ones((config.models, len(data.train)), bool)
    curvature_key = X.config_key(config, Stage.CURVATURE)
    per_eps = []
    for e in eps:
        dp = DPConfig(target_epsilon=float(e), delta=config.dp_delta, l2_clip=config.dp_clip,
                      accountant=config.accountant)
        with timer(f"{spec}: train DP"):
            ens = X.train_ensemble(
                config, data, masks, tag=f"{EXPERIMENT}-{data.slug}", dp=dp,
                optimizer=X.optimizer_config(config, name="sgd",
                                             learning_rate=config.dp_learning_rate),
                record_examples=False)
        with timer(f"{spec}: loss, curvature"):
            per_eps.append(_measure(config, ens, data.train, curvature_key)
                           | {"noise_multiplier": ens.privacy["noise_multiplier"],
                              "epsilon_spent": ens.privacy["epsilon_max"]})
    with timer(f"{spec}: train non-private"):
        ref = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}-ref",
                               record_examples=False)
        nonprivate = _measure(config, ref, data.train, curvature_key)
    return per_eps, nonprivate


def _fits(eps, means, m: int) -> dict:
    """Fig. 4 loss fit and eq. 16 fits of tr(H) and tr(H²) to the per-ε means."""
    from jaxcurv.privacy import theory

    return {"loss": theory.fit_loss_bound(eps, means["loss_mean"]),
            "curvature": theory.fit_curvature_privacy(eps, means["curvature"], num_examples=m),
            "curvature_sq": theory.fit_curvature_privacy(eps, means["curvature_sq"],
                                                         num_examples=m)}


def _fit_dict(fit, num_eps: int) -> dict:
    """Fitted parameters, R², the points left after fitting, and whether the fit has the paper's
    shape (a, b >= 0: a bound that grows with ε)."""
    return {**{k: v for k, v in fit._asdict().items() if k != "predicted"},
            "residual_dof": num_eps - (len(fit) - 2),
            "paper_shape": bool(fit.a >= 0 and fit.b >= 0)}


def _figures(eps, values, fits, m: int, d):
    from jaxcurv import report
    from jaxcurv.privacy import theory

    grid = np.geomspace(eps.min() / 2, eps.max() * 2, 200)
    loss, curv, sq = fits["loss"], fits["curvature"], fits["curvature_sq"]

    def eq16(fit):
        return theory.curvature_bound_model(grid, fit.a, fit.b, fit.c, fit.c2, num_examples=m)

    return [
        report.figure_curve_vs_epsilon(
            eps, values["loss_mean"], d / "fig4_loss_vs_epsilon.png",
            fit=(grid, theory.loss_bound_model(grid, loss.a, loss.b, loss.c)),
            ylabel="train loss (mean over examples)",
            fit_label=f"a + b·e^(−cε), R² = {loss.r2:.3f}",
            title="Fig. 4: converged train loss vs privacy"),
        report.figure_curve_vs_epsilon(
            eps, values["curvature"], d / "fig5_curvature_vs_epsilon.png", fit=(grid, eq16(curv)),
            ylabel="mean input curvature tr(H)", fit_label=f"eq. 16 fit, R² = {curv.r2:.3f}",
            title="Fig. 5: curvature vs privacy"),
        report.figure_curve_vs_epsilon(
            eps, values["curvature_sq"], d / "fig16_curvature_sq_vs_epsilon.png",
            fit=(grid, eq16(sq)), ylabel="mean tr(H²)",
            fit_label=f"eq. 16 form, R² = {sq.r2:.3f}", title="tr(H²) vs privacy"),
    ]


def _lines(slug, config, eps, means, nonprivate, fits, trend, m: int) -> list[str]:
    loss, curv, sq = fits["loss"], fits["curvature"], fits["curvature_sq"]
    return [f"[{slug}] m={m}, {config.models} seed(s) per ε; ε: "
            + ", ".join(f"{e:g}" for e in eps),
            "  train loss: " + ", ".join(f"{v:.3f}" for v in means["loss_mean"])
            + f" (non-private {np.mean(nonprivate['loss_mean']):.3f}); fit "
            f"a={loss.a:.3g} b={loss.b:.3g} c={loss.c:.3g}, R²={loss.r2:.3f}",
            "  mean tr(H): " + ", ".join(f"{v:.3g}" for v in means["curvature"])
            + f" (non-private {np.mean(nonprivate['curvature']):.3g}); eq. 16 fit "
            f"a={curv.a:.3g} b={curv.b:.3g} c={curv.c:.3g} c2={curv.c2:.3g}, R²={curv.r2:.3f}",
            "  mean tr(H²): " + ", ".join(f"{v:.3g}" for v in means["curvature_sq"])
            + f"; eq. 16 form R²={sq.r2:.3f}",
            f"  Spearman with ε: loss {trend['loss_mean']:+.2f}, tr(H) "
            f"{trend['curvature']:+.2f}, tr(H²) {trend['curvature_sq']:+.2f} (paper: loss −, "
            "curvature +); eq. 16 fit with the paper's shape (a, b >= 0): "
            f"{_fit_dict(curv, len(eps))['paper_shape']}",
            "  test accuracy: " + ", ".join(f"{v:.3f}" for v in means["test_accuracy"])
            + f" (non-private {np.mean(nonprivate['test_accuracy']):.3f})"]


def main(config: PrivacyCurvConfig) -> dict:
    from scipy import stats

    from jaxcurv import report
    from jaxcurv.privacy import theory
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    eps = np.asarray(sorted(config.epsilons), float)
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        m = len(data.train)
        per_eps, nonprivate = _train_and_measure(config, data, eps, timer, spec)
        values = {k: np.stack([p[k] for p in per_eps]) for k in
                  ("loss_mean", "loss_max", "train_accuracy", "test_accuracy", "curvature",
                   "curvature_sq")}                                           # (E, seeds)
        means = {k: v.mean(1) for k, v in values.items()}
        fits = _fits(eps, means, m)
        d = out / data.slug
        report.write_csv(d / "curvature_vs_epsilon.csv", {
            "epsilon": np.repeat(eps, config.models),
            "seed": np.tile(np.arange(config.models), len(eps)),
            **{k: v.ravel() for k, v in values.items()},
            "noise_multiplier": np.repeat([p["noise_multiplier"] for p in per_eps],
                                          config.models)})
        figures = _figures(eps, values, fits, m, d)
        trend = {k: float(stats.spearmanr(eps, means[k]).statistic)
                 for k in ("loss_mean", "curvature", "curvature_sq")}
        loss = fits["loss"]
        results[data.slug] = {
            "data": data.describe(), "m": m, "epsilons": eps,
            "per_epsilon_mean": means, "per_seed": values,
            "noise_multiplier": [p["noise_multiplier"] for p in per_eps],
            "epsilon_spent": [p["epsilon_spent"] for p in per_eps],
            "nonprivate": {k: float(np.mean(v)) for k, v in nonprivate.items()},
            "fit_loss_bound": _fit_dict(loss, len(eps)),
            "fit_eq16_curvature": _fit_dict(fits["curvature"], len(eps)),
            "fit_eq16_curvature_sq": _fit_dict(fits["curvature_sq"], len(eps)),
            "spearman_with_epsilon": trend,
            "paper_trend": {"loss_decreases_with_epsilon": trend["loss_mean"] < 0,
                            "curvature_increases_with_epsilon": trend["curvature"] > 0},
            "thm_5_3_bound_with_fitted_loss": theory.curvature_bound(
                eps, loss_bound=1.0, num_examples=m) * theory.loss_bound_model(
                eps, loss.a, loss.b, loss.c),
            "figures": [str(p.relative_to(out)) for p in figures],
        }
        lines += _lines(data.slug, config, eps, means, nonprivate, fits, trend, m)
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
