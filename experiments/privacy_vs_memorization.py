"""Memorization of the most memorized examples against the privacy budget ε: Figure 6.

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024),
Figure 6 and Thm 5.4 (ε-DP ⇒ mem ≤ 1 − e^{−ε}). For each ε of the grid an ensemble of
``members`` DP-SGD models (Poisson sampling, clip C, σ calibrated to ε at δ) is trained on the
same random 50 % subsets; Feldman–Zhang memorization from each ensemble. The "top memorized"
examples are chosen once, by a non-private ensemble on the same subsets, so their memorization
under DP is measured without the upward selection bias of taking the top-k of each noisy DP
estimate (that biased value is also in the JSON). Plotted on a log ε axis with the bound 1 − e^{−ε}.

    python -m experiments.privacy_vs_memorization --config small   # digits, ε ∈ {1, 10, 100}
    python -m experiments.privacy_vs_memorization --config full    # ResNet18-GN, ε from 1 to 100
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import PrivacySweep, redefault, setting

EXPERIMENT = "privacy_vs_memorization"

__all__ = ["PrivacyMemConfig", "CONFIGS", "get_config", "main"]

EPSILON_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)


@dataclasses.dataclass(frozen=True)
class PrivacyMemConfig(PrivacySweep, X.ExperimentConfig):
    """The shared experiment settings, the DP-SGD sweep (the DP learning rate defaults to the
    non-private one: 0.5 made ε <= 3 runs on digits diverge to train loss > ln 10), the
    repetitions and how many most-memorized examples to follow."""

    epsilons: tuple[float, ...] = redefault(PrivacySweep, "epsilons", (1.0, 10.0, 100.0))
    dp_learning_rate: float = redefault(PrivacySweep, "dp_learning_rate", 0.05)
    seeds: int = setting(1, "repetitions with new subsets and keys", low=1, high=1000)
    top: int = setting(20, "how many most-memorized examples to follow", low=1, high=10**7)


CONFIGS = {
    "tiny": PrivacyMemConfig(name="tiny", train_size=200, test_size=100,
                             model_kwargs={"width": 4, "hidden": 16}, models=4, epochs=2,
                             epsilons=(1.0, 100.0), top=5),
    "small": PrivacyMemConfig(name="small", model_kwargs={"width": 8, "hidden": 32}, models=12,
                              epochs=12, epsilons=(1.0, 10.0, 100.0), top=20),
    "full": PrivacyMemConfig(name="full", datasets=("cifar10", "cifar100"), fallback_dataset=None,
                             model="resnet18_gn", models=32, epochs=50, batch_size=256,
                             learning_rate=0.1, dp_learning_rate=0.1, epsilons=EPSILON_GRID,
                             seeds=3, top=500),
}


def get_config(name: str) -> PrivacyMemConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: PrivacyMemConfig) -> None:
    X.validate(config)
    if config.models < 2:
        raise ValueError("models must be >= 2: memorization needs models with and without "
                         "each example")
    if not config.epsilons or any(not (math.isfinite(e) and e > 0) for e in config.epsilons):
        raise ValueError(f"epsilons must be finite and > 0, got {config.epsilons}")
    if not 0 < config.dp_delta < 1 or not config.dp_clip > 0:
        raise ValueError(f"need 0 < delta < 1 and l2_clip > 0, got {config.dp_delta}, "
                         f"{config.dp_clip}")
    if config.seeds < 1 or config.top < 1:
        raise ValueError(f"seeds and top must be >= 1, got {config.seeds}, {config.top}")
    if config.model == "resnet18":
        raise ValueError("DP-SGD needs per-example gradients: use model resnet18_gn, not resnet18")


def _memorization(ens, train):
    from jaxcurv import ensemble, memorization

    logits = ensemble.predict(ens, train.images, progress=False)
    correct = logits.argmax(-1) == train.labels[None]
    return memorization.feldman_zhang(correct, ens.masks)


def _repetition(config, data, eps, s: int, top_k: int, timer, spec: str) -> list[dict]:
    """Repetition ``s`` (new subsets and keys): the non-private row (ε = inf) and one row per ε,
    the top-k picked by the non-private ensemble."""
    import jax

    from jaxcurv import data as data_lib
    from jaxcurv import memorization
    from jaxcurv.privacy import DPConfig, memorization_bound

    train = data.train
    masks = data_lib.subset_masks(len(train), config.models, fraction=config.fraction,
                                  seed=config.seed + 1000 * s)
    key = jax.random.fold_in(X.config_key(config, Stage.TRAIN), s)  # new keys per repetition
    with timer(f"{spec}: train non-private"):
        ref = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}-ref",
                               key=key, record_examples=False)
    mem_ref, _ = _memorization(ref, train)
    top = memorization.top_memorized(mem_ref, top_k)
    rows = [{"seed": s, "epsilon": math.inf, "top_mem_selected": float(mem_ref[top].mean()),
             "top_mem_self": float(mem_ref[top].mean()), "mean_mem": float(np.nanmean(mem_ref)),
             "max_mem": float(np.nanmax(mem_ref)), "bound": 1.0, "fraction_above_bound": 0.0,
             "test_accuracy": float(ref.history["test_accuracy"][-1].mean()),
             "noise_multiplier": 0.0, "epsilon_spent": math.inf}]
    for e in eps:
        dp = DPConfig(target_epsilon=float(e), delta=config.dp_delta, l2_clip=config.dp_clip,
                      accountant=config.accountant)
        with timer(f"{spec}: train DP"):
            ens = X.train_ensemble(
                config, data, masks, tag=f"{EXPERIMENT}-{data.slug}-dp", dp=dp,
                optimizer=X.optimizer_config(config, name="sgd",
                                             learning_rate=config.dp_learning_rate),
                key=key, record_examples=False)
        mem, mem_se = _memorization(ens, train)
        bound = memorization_bound(float(e))
        rows.append({
            "seed": s, "epsilon": float(e), "top_mem_selected": float(np.nanmean(mem[top])),
            "top_mem_selected_stderr": float(np.sqrt(np.nanmean(mem_se[top] ** 2) / top_k)),
            "top_mem_self": float(np.mean(mem[memorization.top_memorized(mem, top_k)])),
            "mean_mem": float(np.nanmean(mem)), "max_mem": float(np.nanmax(mem)),
            "bound": bound, "fraction_above_bound": float(np.nanmean(mem > bound)),
            "test_accuracy": float(ens.history["test_accuracy"][-1].mean()),
            "noise_multiplier": float(ens.privacy["noise_multiplier"]),
            "epsilon_spent": float(ens.privacy["epsilon_max"])})
    return rows


def _lines(slug: str, config, eps, mean_sel, rows, nonprivate: float, top_k: int) -> list[str]:
    from jaxcurv.privacy import memorization_bound

    lines = [f"[{slug}] top-{top_k} memorized (picked by a non-private ensemble of "
             f"{config.models}): mem {nonprivate:.3f} without DP"]
    for e, m in zip(eps, mean_sel):
        r = [x for x in rows if x["epsilon"] == e]
        lines.append(
            f"[{slug}] ε={e:g}: top-{top_k} mem {m:.3f} (bound {memorization_bound(e):.3f}), "
            f"self-selected top-{top_k} {np.mean([x['top_mem_self'] for x in r]):.3f}, "
            f"mean mem {np.mean([x['mean_mem'] for x in r]):.3f}, test acc "
            f"{np.mean([x['test_accuracy'] for x in r]):.3f}, σ {r[0]['noise_multiplier']:.3g}")
    return lines


def main(config: PrivacyMemConfig) -> dict:
    from jaxcurv import report
    from jaxcurv.privacy import memorization_bound
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    eps = np.asarray(sorted(config.epsilons), float)
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        top_k = min(config.top, len(data.train))
        rows = [r for s in range(config.seeds)
                for r in _repetition(config, data, eps, s, top_k, timer, spec)]
        # mean mem of the top-k (non-DP pick), (E, seeds)
        selected = np.array([[r["top_mem_selected"] for r in rows if r["epsilon"] == e]
                             for e in eps])
        d = out / data.slug
        report.write_csv(d / "mem_vs_epsilon.csv", {k: [r.get(k, np.nan) for r in rows]
                                                    for k in rows[-1]})
        fig = report.figure_mem_vs_epsilon(eps, selected, d / "fig6_mem_vs_epsilon.png",
                                           label=f"mean mem of the top-{top_k} (picked without DP)")
        mean_sel = np.nanmean(selected, axis=1)
        bounds = [memorization_bound(float(e)) for e in eps]
        nonprivate = float(np.mean([r["top_mem_selected"] for r in rows
                                    if not math.isfinite(r["epsilon"])]))
        results[data.slug] = {
            "data": data.describe(), "rows": rows, "top": top_k,
            "top_mem_selected_mean": dict(zip(map(str, eps), mean_sel)),
            "top_mem_nonprivate": nonprivate,
            "bound": dict(zip(map(str, eps), bounds)),
            "selected_mean_within_bound": bool(np.all(mean_sel <= bounds)),
            "figure": str(fig.relative_to(out)),
        }
        lines += _lines(data.slug, config, eps, mean_sel, rows, nonprivate, top_k)
    notes.append("Feldman–Zhang estimates from a finite ensemble are noisy: the top-k of an "
                 "ensemble's own estimates is biased upward (top_mem_self); the plotted series "
                 "follows examples picked by the non-private ensemble (top_mem_selected).")
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
