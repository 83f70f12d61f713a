"""Train loss and input curvature against the privacy budget ε, in the paper's DP recipe, with
the papers' fits: Figures 4, 5 and 16 of Ravikumar et al. (ICML 2024).

Paper (§6.1, §6.4): ResNet18 trained with DP-SGD (Opacus) for 20 epochs, maximum gradient norm
1.0, δ = 1e-5, initial learning rate 0.001 divided by 10 at epochs 12 and 16, batch 128, random
crop and horizontal flip; ε from 5 to 100 in steps of 5, 10 seeds per ε; curvature averaged over
the seeds and all training samples. Fig. 4: converged train loss vs ε with L(ε) = a + b e^{−cε};
Fig. 5: curvature vs ε with eq. 16, Curv = (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂. The text
names DP-SGD but not the optimizer it wraps: the authors' published code (train_dp.py) wraps
``torch.optim.RMSprop``, which is the default here (``dp_optimizer``).

Here: for every ε, ``models`` seeds (members trained on all m training examples; the same
initializations at every ε, only the DP noise and sampling differ); per example loss, accuracy,
tr(H²) (the papers' Curv) and tr(H) by exact HVPs with Hutchinson probes, on the training AND
the test images. Two reference arms with the same seeds: the untrained networks (ε = 0: they
saw no data) and the recipe without DP (ε = ∞). Curvature is heavy-tailed, so every table has the
mean over examples and the median. Fits on the per-ε means over seeds (Fig. 4 on the mean train
loss, eq. 16 on the mean and on the median tr(H²)); directions (Spearman with ε) per seed.

Every table is computed by :func:`tables` from ``statistics.npz`` (the per-model, per-example
statistics), so ``python -m experiments.recompute DIR`` rebuilds them.

    python -m experiments.privacy_vs_curvature --config cpu     # CIFAR-10 subset, 2 CPU cores
    python -m experiments.privacy_vs_curvature --config small   # digits, minutes
    python -m experiments.privacy_vs_curvature --config full    # ResNet18-GN, all of CIFAR-10, GPU
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxcurv.errors import ConfigError
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import PrivacySweep, redefault, setting

EXPERIMENT = "privacy_vs_curvature"

__all__ = ["DPRecipe", "PaperDPConfig", "PrivacyCurvConfig", "CONFIGS", "PAPER", "get_config", "dp_optimizer",
           "tables", "main"]

# The paper's recipe (§6.1, quoted): "20 epochs till the privacy budget is reached", "maximum
# gradient norm set to 1.0", "δ = 1 × 10⁻⁵", "initial learning rate was set to 0.001",
# "decreased by 10 at epochs 12 and 16", "batch size is set to 128", "random crop, and random
# horizontal flip"; §6.4: "privacy budgets ε ranging from 5 to 100, in increments of 5", "10
# seeds for every privacy budget".
PAPER = {"epochs": 20, "l2_clip": 1.0, "delta": 1e-5, "learning_rate": 1e-3,
         "lr_steps_at_epochs": (12, 16), "batch_size": 128, "seeds": 10,
         "epsilons": tuple(range(5, 101, 5)), "model": "ResNet18 (GroupNorm via Opacus)",
         "optimizer_in_authors_code": "torch.optim.RMSprop"}


@dataclasses.dataclass(frozen=True)
class DPRecipe:
    """The optimizer DP-SGD wraps and its schedule (Ravikumar et al. §6.1; the authors' code
    wraps RMSprop and steps the rate by 10× at 60 % and 80 % of the epochs)."""

    dp_optimizer: str = setting("rmsprop", "the optimizer DP-SGD's noisy gradient feeds",
                                choices=("sgd", "adam", "rmsprop"))
    dp_schedule: str = setting("step", "learning-rate schedule of the DP runs (step: the rate "
                               "times dp_step_factor at each of dp_step_fractions of the run)",
                               choices=("step", "cosine", "constant", "linear", "onecycle"))
    dp_step_fractions: tuple[float, ...] = setting((0.6, 0.8), "where the step schedule steps, "
                                                   "as fractions of the run")
    dp_step_factor: float = setting(0.1, "the step schedule's factor", low=0.0, open_low=True,
                                    high=1.0)


def dp_optimizer(config) -> Any:
    """The OptimizerConfig of the DP recipe (also used, without noise, for the non-private
    reference): ``dp_optimizer`` at ``dp_learning_rate`` on the ``dp_schedule``."""
    base = X.optimizer_config(config, name=config.dp_optimizer,
                              learning_rate=config.dp_learning_rate)
    return dataclasses.replace(base, schedule=config.dp_schedule,
                               step_fractions=tuple(config.dp_step_fractions),
                               step_factor=config.dp_step_factor)


@dataclasses.dataclass(frozen=True)
class PaperDPConfig(DPRecipe, PrivacySweep, X.ExperimentConfig):
    """The shared experiment settings, the DP-SGD sweep and the DP recipe with the paper's
    defaults (RMSprop at 0.001, steps at 60 % / 80 %, 20 epochs, batch 128, clip 1, δ = 1e-5,
    crop + flip, no weight decay) and the ε grid 1, 5, 10, 20, 50, 100."""

    epsilons: tuple[float, ...] = redefault(PrivacySweep, "epsilons",
                                            (1.0, 5.0, 10.0, 20.0, 50.0, 100.0))
    dp_learning_rate: float = redefault(PrivacySweep, "dp_learning_rate", 1e-3)
    epochs: int = redefault(X.ExperimentConfig, "epochs", 20)
    batch_size: int = redefault(X.ExperimentConfig, "batch_size", 128)
    weight_decay: float = redefault(X.ExperimentConfig, "weight_decay", 0.0)
    augment: bool | None = redefault(X.ExperimentConfig, "augment", True)


@dataclasses.dataclass(frozen=True)
class PrivacyCurvConfig(PaperDPConfig):
    """The paper's DP settings (:class:`PaperDPConfig`); ``models``: seeds per ε, each trained on
    all m training examples (eq. 16 has 4 parameters: give >= 5 values of ε)."""

    models: int = redefault(X.ExperimentConfig, "models", 3)
    nonprivate: bool = setting(True, "also train the recipe without DP (ε = ∞) and measure the "
                               "untrained networks (ε = 0)")


CONFIGS = {
    "tiny": PrivacyCurvConfig(name="tiny", train_size=96, test_size=48, batch_size=32,
                              model_kwargs={"width": 4, "hidden": 16}, models=2, epochs=1,
                              num_probes=1, epsilons=(1.0, 3.0, 10.0, 30.0),
                              dp_learning_rate=1e-2),
    "small": PrivacyCurvConfig(name="small", model_kwargs={"width": 8, "hidden": 32},
                               batch_size=64, num_probes=10),
    "cpu": PrivacyCurvConfig(name="cpu", datasets=("cifar10",), fallback_dataset=None,
                             train_size=1500, test_size=500,
                             model_kwargs={"width": 16, "hidden": 64}, num_probes=5),
    "cpu-sgd": PrivacyCurvConfig(name="cpu-sgd", datasets=("cifar10",), fallback_dataset=None,
                                 train_size=1500, test_size=500,
                                 model_kwargs={"width": 16, "hidden": 64}, num_probes=5,
                                 dp_optimizer="sgd", dp_learning_rate=0.1, dp_schedule="cosine"),
    "full": PrivacyCurvConfig(name="full", datasets=("cifar10", "cifar100"),
                              fallback_dataset=None, model="resnet18_gn", models=10,
                              num_probes=10, epsilons=tuple(float(e) for e in range(5, 101, 5))),
}


def get_config(name: str) -> PrivacyCurvConfig:
    """The named config: "tiny" (tests, seconds), "small" (digits, minutes), "cpu" (a 1,500-image
    CIFAR-10 subset, ≤ 1 h on 2 CPU cores), "cpu-sgd" (the same with the optimizer of the
    privacy-utility frontier instead of the paper's: SGD with Nesterov momentum at 0.1, cosine
    schedule), "full" (the paper's scale, GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: PrivacyCurvConfig) -> None:
    X.validate(config)
    if len(config.epsilons) < 4 or any(not (math.isfinite(e) and e > 0) for e in config.epsilons):
        raise ConfigError(f"epsilons needs >= 4 finite values > 0 (eq. 16 has 4 parameters), "
                          f"got {config.epsilons}")
    if config.model == "resnet18":
        raise ConfigError("DP-SGD needs per-example gradients: use model resnet18_gn, not "
                          "resnet18")
    dp_optimizer(config)  # the step fractions and factor, checked by OptimizerConfig


# ----------------------------------------------------------------------------------------------
# measurement


def untrained_ensemble(config, data, k: int):
    """``k`` untrained networks of the config's model (independent initializations from the
    experiment's TRAIN key folded with 2**20 + j), as an Ensemble whose masks hold every training
    example: the ε = 0 arm."""
    import jax

    from jaxcurv import ensemble, models

    model = X.build_model(config, data.train)
    key = jax.random.fold_in(X.config_key(config, Stage.TRAIN), 2**20)
    members = [models.init_variables(model, jax.random.fold_in(key, j), data.train.image_shape)
               for j in range(k)]
    variables = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *members)
    return ensemble.Ensemble(model, variables, np.ones((k, len(data.train)), bool),
                             np.arange(k), {}, {"untrained": True})


def _weight_norm(ens) -> np.ndarray:
    """(K,) global L2 norm of each member's parameters."""
    import jax

    leaves = jax.tree.leaves(ens.variables["params"])
    return np.sqrt(sum(np.square(np.asarray(a, np.float64)).reshape(a.shape[0], -1).sum(1)
                       for a in leaves))


def measure(config, ens, data, key) -> dict[str, np.ndarray]:
    """Per member: loss, correctness, tr(H²), tr(H) of every train (K, N) and test (K, Z)
    example, and the weight norm (K,)."""
    from jaxcurv import ensemble, mia

    out = {"weight_norm": _weight_norm(ens)}
    for split, ds in (("train", data.train), ("test", data.test)):
        logits = ensemble.predict(ens, ds.images, progress=False)
        curv = X.member_curvature(config, ens, ds.images, ds.labels, key=key,
                                  tag=f"{EXPERIMENT}-curvature")
        out |= {f"{split}_loss": mia.cross_entropy(logits, ds.labels[None]),
                f"{split}_correct": logits.argmax(-1) == ds.labels[None],
                f"{split}_curvature": np.asarray(curv.trace_sq),
                f"{split}_curvature_trace": np.asarray(curv.trace)}
    return out


def _arms(config, data, eps, timer, spec: str) -> tuple[list[float], list[dict], list[float]]:
    """(arm ε, measurements, noise multipliers): untrained (0), each DP ε, non-private (∞)."""
    from jaxcurv.privacy import DPConfig

    masks = np.ones((config.models, len(data.train)), bool)
    key = X.config_key(config, Stage.CURVATURE)
    arms, rows, sigmas = [], [], []
    if config.nonprivate:
        with timer(f"{spec}: untrained networks"):
            rows.append(measure(config, untrained_ensemble(config, data, config.models), data,
                                key) | {"epsilon_spent": np.zeros(config.models)})
        arms.append(0.0)
        sigmas.append(math.inf)
    for e in eps:
        dp = DPConfig(target_epsilon=float(e), delta=config.dp_delta, l2_clip=config.dp_clip,
                      accountant=config.accountant)
        with timer(f"{spec}: train DP"):
            ens = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}", dp=dp,
                                   optimizer=dp_optimizer(config), record_examples=False)
        with timer(f"{spec}: loss, curvature"):
            rows.append(measure(config, ens, data, key)
                        | {"epsilon_spent": np.asarray(ens.privacy["epsilon"], float)})
        arms.append(float(e))
        sigmas.append(float(ens.privacy["noise_multiplier"]))
    if config.nonprivate:
        with timer(f"{spec}: train non-private"):
            ref = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}-ref",
                                   optimizer=dp_optimizer(config), record_examples=False)
        with timer(f"{spec}: loss, curvature"):
            rows.append(measure(config, ref, data, key)
                        | {"epsilon_spent": np.full(config.models, np.inf)})
        arms.append(math.inf)
        sigmas.append(0.0)
    return arms, rows, sigmas


def statistics(arms, rows, sigmas, data) -> dict[str, np.ndarray]:
    """What the tables are computed from: per arm (A,) its ε (0 untrained, ∞ non-private) and
    noise multiplier; per arm and seed (A, S) ε spent and weight norm; per arm, seed and example
    (A, S, N) / (A, S, Z) train and test loss, correctness, tr(H²) and tr(H); the labels."""
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return {"arm_epsilon": np.asarray(arms, float), "noise_multiplier": np.asarray(sigmas),
            "train_labels": data.train.labels, "test_labels": data.test.labels, **stacked}


# ----------------------------------------------------------------------------------------------
# tables (pure: statistics -> rows)


_SUMMARIES = ("train_loss_mean", "train_accuracy", "test_loss_mean", "test_accuracy",
              "curvature_mean", "curvature_median", "curvature_mean_test",
              "curvature_median_test", "curvature_trace_mean", "curvature_trace_median",
              "weight_norm")


def _per_model(st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per arm and seed (A, S): the summaries over examples."""
    def mean(a):
        return np.mean(a.astype(np.float64), axis=-1)

    def median(a):
        return np.median(a.astype(np.float64), axis=-1)

    return {"train_loss_mean": mean(st["train_loss"]),
            "train_accuracy": mean(st["train_correct"]),
            "test_loss_mean": mean(st["test_loss"]), "test_accuracy": mean(st["test_correct"]),
            "curvature_mean": mean(st["train_curvature"]),
            "curvature_median": median(st["train_curvature"]),
            "curvature_mean_test": mean(st["test_curvature"]),
            "curvature_median_test": median(st["test_curvature"]),
            "curvature_trace_mean": mean(st["train_curvature_trace"]),
            "curvature_trace_median": median(st["train_curvature_trace"]),
            "weight_norm": st["weight_norm"].astype(np.float64)}


def _arm_name(e: float) -> str:
    return "untrained" if e == 0 else "non-private" if math.isinf(e) else "dp"


def _fit_rows(eps, per: dict[str, np.ndarray], dp: np.ndarray, m: int) -> list[dict[str, Any]]:
    """Fig. 4 (loss) and eq. 16 (mean, median tr(H²)) on the per-ε means over seeds, with the
    direction (Spearman with ε) of the means and of each seed."""
    from scipy import stats

    from jaxcurv.privacy import theory

    rows = []
    for quantity, fit_name in (("train_loss_mean", "loss_bound"),
                               ("curvature_mean", "eq16"), ("curvature_median", "eq16"),
                               ("curvature_mean_test", "eq16"), ("test_accuracy", None)):
        values = per[quantity][dp]                                       # (E, S)
        means = values.mean(1)
        per_seed = [float(stats.spearmanr(eps, values[:, s]).statistic)
                    for s in range(values.shape[1])]
        row = {"quantity": quantity, "fit": fit_name or "none",
               "spearman_with_epsilon": float(stats.spearmanr(eps, means).statistic),
               "spearman_per_seed_min": min(per_seed), "spearman_per_seed_max": max(per_seed),
               "a": None, "b": None, "c": None, "c2": None, "r2": None,
               "paper_shape": None}
        if fit_name == "loss_bound":
            f = theory.fit_loss_bound(eps, means)
            row.update(a=f.a, b=f.b, c=f.c, r2=f.r2, paper_shape=bool(f.b >= 0))
        elif fit_name == "eq16":
            f = theory.fit_curvature_privacy(eps, means, num_examples=m)
            row.update(a=f.a, b=f.b, c=f.c, c2=f.c2, r2=f.r2,
                       paper_shape=bool(f.a >= 0 and f.b >= 0))
        rows.append(row)
    return rows


def tables(statistics: dict[str, np.ndarray], config) -> dict[str, list[dict[str, Any]]]:
    """per_model (one row per arm and seed), per_epsilon (mean and sd over seeds per arm) and
    fits (Fig. 4 and eq. 16 on the DP arms, with the directions), from ``statistics``."""
    arms = statistics["arm_epsilon"].astype(np.float64)
    per = _per_model(statistics)
    seeds = per["weight_norm"].shape[1]
    spent = statistics["epsilon_spent"].astype(np.float64)
    sigma = statistics["noise_multiplier"].astype(np.float64)
    per_model = [{"arm": _arm_name(e), "epsilon": e, "seed": s, "epsilon_spent": spent[a, s],
                  "noise_multiplier": sigma[a] if math.isfinite(sigma[a]) else None,
                  **{q: per[q][a, s] for q in _SUMMARIES}}
                 for a, e in enumerate(arms) for s in range(seeds)]
    per_epsilon = [{"arm": _arm_name(e), "epsilon": e, "seeds": seeds,
                    **{f"{q}{suffix}": fn(per[q][a]) for q in _SUMMARIES
                       for suffix, fn in (("", np.mean), ("_sd", lambda v: np.std(v, ddof=1)
                                                          if v.size > 1 else 0.0))}}
                   for a, e in enumerate(arms)]
    dp = np.isfinite(arms) & (arms > 0)
    fits = _fit_rows(arms[dp], per, dp, len(statistics["train_labels"]))
    return {"per_model": per_model, "per_epsilon": per_epsilon, "fits": fits}


# ----------------------------------------------------------------------------------------------
# outputs


def _figures(st, tabs, config, d) -> list:
    from jaxcurv import report
    from jaxcurv.privacy import theory

    arms = st["arm_epsilon"].astype(float)
    dp = np.isfinite(arms) & (arms > 0)
    eps = arms[dp]
    per = _per_model(st)
    fits = {r["quantity"]: r for r in tabs["fits"]}
    grid = np.geomspace(eps.min() / 1.5, eps.max() * 1.5, 200)
    m = len(st["train_labels"])
    refs = {name: a for name, a in (("untrained (ε = 0)", arms == 0),
                                    ("non-private (ε = ∞)", np.isinf(arms)))}

    def references(q):
        return {name: per[q][sel][0] for name, sel in refs.items() if sel.any()}

    def eq16(q):
        f = fits[q]
        return (grid, theory.curvature_bound_model(grid, f["a"], f["b"], f["c"], f["c2"],
                                                   num_examples=m))

    loss = fits["train_loss_mean"]
    return [
        report.figure_series_vs_epsilon(
            eps, {"train loss": per["train_loss_mean"][dp]}, d / "fig4_loss_vs_epsilon.png",
            fits={f"a + b·e^(−cε), R² = {loss['r2']:.3f}": (
                grid, theory.loss_bound_model(grid, loss["a"], loss["b"], loss["c"]))},
            references=references("train_loss_mean"), ylabel="train loss (mean over examples)",
            title="Fig. 4: converged train loss vs privacy"),
        report.figure_series_vs_epsilon(
            eps, {"mean tr(H²), train": per["curvature_mean"][dp],
                  "median tr(H²), train": per["curvature_median"][dp],
                  "mean tr(H²), test": per["curvature_mean_test"][dp]},
            d / "fig5_curvature_vs_epsilon.png",
            fits={f"eq. 16 on the mean, R² = {fits['curvature_mean']['r2']:.3f}":
                  eq16("curvature_mean"),
                  f"eq. 16 on the median, R² = {fits['curvature_median']['r2']:.3f}":
                  eq16("curvature_median")},
            references={f"{k}, mean": v for k, v in references("curvature_mean").items()},
            ylabel="curvature tr(H²)", logy=True,
            title="Fig. 5: curvature vs privacy (all training examples)"),
        report.figure_series_vs_epsilon(
            eps, {"train accuracy": per["train_accuracy"][dp],
                  "test accuracy": per["test_accuracy"][dp]},
            d / "accuracy_vs_epsilon.png", references=references("test_accuracy"),
            ylabel="accuracy", title="accuracy of the DP members vs privacy"),
        report.figure_series_vs_epsilon(
            eps, {"weight norm": per["weight_norm"][dp]}, d / "weight_norm_vs_epsilon.png",
            references=references("weight_norm"), ylabel="‖θ‖₂",
            title="parameter norm vs privacy"),
    ]


def _summary(tabs) -> dict[str, Any]:
    """The headline numbers with their spread over seeds."""
    rows = tabs["per_epsilon"]
    keys = ("train_loss_mean", "train_accuracy", "test_accuracy", "curvature_mean",
            "curvature_median", "curvature_mean_test", "curvature_median_test", "weight_norm")
    return {"per_arm": {f"{r['arm']} ε={r['epsilon']:g}": {
                "mean_over_seeds": {k: r[k] for k in keys},
                "sd_over_seeds": {f"sd_{k}": r[f"{k}_sd"] for k in keys}} for r in rows},
            "fits": {r["quantity"]: r for r in tabs["fits"]}}


def _headlines(tabs) -> dict[str, Any]:
    """The figures docs/measurements.md shows, each with its min–max over seeds."""
    models = tabs["per_model"]
    fits = {r["quantity"]: r for r in tabs["fits"]}
    out = {}

    def spread(arm, e, q):
        v = [r[q] for r in models if r["arm"] == arm and r["epsilon"] == e]
        return float(np.mean(v)), [float(min(v)), float(max(v))], len(v)

    dp = sorted({r["epsilon"] for r in models if r["arm"] == "dp"})
    for arm, e, tag in (("untrained", 0.0, "untrained"), ("dp", dp[0], f"eps{dp[0]:g}"),
                        ("dp", dp[-1], f"eps{dp[-1]:g}"), ("non-private", math.inf,
                                                           "nonprivate")):
        for q, what in (("curvature_mean", "mean tr(H²) over the training examples"),
                        ("curvature_median", "median tr(H²) over the training examples"),
                        ("test_accuracy", "test accuracy")):
            value, interval, n = spread(arm, e, q)
            label = "untrained" if arm == "untrained" else X.privacy_arm_label(e)
            out[f"{q}_{tag}"] = X.headline(value, f"{what}, {label}", interval=interval,
                                           over=f"{n} seeds, min–max")
    for q, what in (("curvature_mean", "mean tr(H²)"), ("curvature_median", "median tr(H²)"),
                    ("train_loss_mean", "train loss")):
        f = fits[q]
        out[f"spearman_{q}_vs_epsilon"] = X.headline(
            f["spearman_with_epsilon"], f"Spearman of {what} with ε (DP arms)",
            interval=[f["spearman_per_seed_min"], f["spearman_per_seed_max"]],
            over="per seed, min–max", paper=1.0 if q != "train_loss_mean" else -1.0)
    out["loss_bound_fit_r2"] = X.headline(fits["train_loss_mean"]["r2"],
                                          "R² of L(ε) = a + b·e^(−cε) on the mean train loss")
    out["eq16_fit_r2_mean"] = X.headline(fits["curvature_mean"]["r2"],
                                         "R² of eq. 16 on the mean tr(H²)")
    return out


def _lines(slug, config, tabs) -> list[str]:
    rows = tabs["per_epsilon"]
    fits = {r["quantity"]: r for r in tabs["fits"]}
    out = [f"[{slug}] {config.models} seed(s) per ε; arms: "
           + ", ".join(f"{r['arm']} ε={r['epsilon']:g}" for r in rows)]
    for q, fmt in (("train_loss_mean", ".3f"), ("test_accuracy", ".3f"),
                   ("curvature_mean", ".3g"), ("curvature_median", ".3g"),
                   ("weight_norm", ".3g")):
        out.append(f"  {q}: " + ", ".join(f"{r[q]:{fmt}}±{r[q + '_sd']:{fmt}}" for r in rows))
    for q in ("train_loss_mean", "curvature_mean", "curvature_median", "curvature_mean_test"):
        f = fits[q]
        out.append(f"  {q}: Spearman with ε {f['spearman_with_epsilon']:+.2f} (seeds "
                   f"{f['spearman_per_seed_min']:+.2f} to {f['spearman_per_seed_max']:+.2f}); "
                   f"{f['fit']} R² = {f['r2']:.3f}, paper's shape: {f['paper_shape']}")
    return out


def main(config: PrivacyCurvConfig) -> dict:
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    eps = np.asarray(sorted(config.epsilons), float)
    results, notes, lines, lagging = {}, [], [], []
    X.require_one_dataset(config)
    for spec, data in X.each_dataset(config, timer, notes, lines):
        arms, rows, sigmas = _arms(config, data, eps, timer, spec)
        st = X.save_statistics(out, statistics(arms, rows, sigmas, data))
        tabs = tables(st, config)
        X.write_tables(out, tabs)
        figures = _figures(st, tabs, config, out)
        results[data.slug] = {"data": data.describe(), "m": len(data.train), **_summary(tabs),
                              "paper": PAPER,
                              "figures": [str(p.relative_to(out)) for p in figures]}
        lines += _lines(data.slug, config, tabs)
        headlines = _headlines(tabs)
        trained = st["arm_epsilon"] > 0  # the untrained networks are not checked
        lagging += X.lagging_members_per_arm(st["train_correct"][trained], None,
                                             st["arm_epsilon"][trained], what=data.slug)
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines,
             warnings=lagging, headlines=headlines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
