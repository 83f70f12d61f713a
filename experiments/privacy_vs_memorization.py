"""Memorization of the most memorized examples against the privacy budget ε, in the paper's DP
recipe: Figure 6 of Ravikumar et al. (ICML 2024) and Thm 5.4 (ε-DP ⇒ mem ≤ 1 − e^{−ε}).

Paper (§6.5): set b = the 500 most memorized CIFAR-100 examples (Feldman & Zhang's scores), set
a = the rest; every model trains on a ∪ (a random half of b) with DP-SGD (the §6.1 recipe), 40
seeds per ε ∈ {1, 10, 20, 30, 40, 50}, δ = 1e-5; memorization of b from which half each model
held; plotted on a log ε axis against the bound.

Here, the same design on a seeded CIFAR-10 subset: b = the ``candidates`` examples with the
highest memorization under a non-private reference ensemble (``reference_models`` members on
random halves of the subset, trained to fit their halves as Feldman & Zhang's models do: by
default Adam at 0.001, cosine, 40 epochs, batch 32, no augmentation); every arm trains ``seeds`` ×
``models_per_seed`` members on a ∪ (half of b), the half balanced within each seed group (every
b example is held by exactly half of a group), the same masks and initializations at every ε
(only the DP noise and sampling differ) and one non-private arm (ε = ∞). Memorization of b per
seed group (an interval over training runs) and from all members (the pooled estimate), against
1 − e^{−ε}. b was chosen on other models than the ones measured, so the mean memorization of b is
not biased upward by the selection.

Every table is computed by :func:`tables` from ``statistics.npz``
(``python -m experiments.recompute DIR`` rebuilds them).

    python -m experiments.privacy_vs_memorization --config cpu    # CIFAR-10 subset, 2 CPU cores
    python -m experiments.privacy_vs_memorization --config small  # digits, minutes
    python -m experiments.privacy_vs_memorization --config full   # the paper's scale, GPU
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.privacy_vs_curvature import PaperDPConfig, dp_optimizer
from jaxcurv.errors import ConfigError
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import redefault, setting

EXPERIMENT = "privacy_vs_memorization"

__all__ = ["PrivacyMemConfig", "CONFIGS", "PAPER", "get_config", "arm_masks", "tables", "main"]

# §6.5: top 500 of CIFAR-100 by Feldman & Zhang, 40 seeds per ε, ε = 1, 10, 20, 30, 40, 50.
PAPER = {"candidates": 500, "seeds": 40, "epsilons": (1.0, 10.0, 20.0, 30.0, 40.0, 50.0),
         "dataset": "CIFAR-100", "model": "ResNet18"}


@dataclasses.dataclass(frozen=True)
class PrivacyMemConfig(PaperDPConfig):
    """The paper's DP settings (:class:`~experiments.privacy_vs_curvature.PaperDPConfig`) and
    the memorization design: ``candidates`` (set b), ``seeds`` groups of ``models_per_seed``
    members per arm, the ``reference_models`` that pick b, and the ``top`` of b reported apart."""

    models: int = redefault(X.ExperimentConfig, "models", 8)
    candidates: int = setting(200, "set b: the examples most memorized by the reference, each "
                              "held by half of every seed group", low=2, high=10**7)
    seeds: int = setting(3, "seed groups per arm (independent training runs; the interval of "
                         "every number)", low=1, high=1000)
    models_per_seed: int = setting(4, "members per seed group (even: each b example is held by "
                                   "half of them)", low=2, high=10_000)
    reference_optimizer: str = setting("adam", "the reference ensemble's optimizer (it picks b "
                                       "and should fit its halves)",
                                       choices=("sgd", "adam", "rmsprop"))
    reference_learning_rate: float = setting(1e-3, "the reference's peak rate (cosine)",
                                             low=0.0, open_low=True, high=1e3)
    reference_epochs: int = setting(40, "the reference's epochs", low=1, high=100_000)
    reference_batch_size: int = setting(32, "the reference's batch size", low=1, high=1 << 20)
    top: int = setting(50, "also report the TOP of b by the reference's memorization", low=1,
                       high=10**7)

    @property
    def reference_models(self) -> int:
        """The reference ensemble that picks b: ``models`` members on random halves."""
        return self.models


CONFIGS = {
    "tiny": PrivacyMemConfig(name="tiny", train_size=96, test_size=48, batch_size=32,
                             model_kwargs={"width": 4, "hidden": 16}, models=4, epochs=1,
                             reference_epochs=2,
                             epsilons=(1.0, 100.0), candidates=16, seeds=2, models_per_seed=2,
                             top=5, dp_learning_rate=1e-2),
    "small": PrivacyMemConfig(name="small", model_kwargs={"width": 8, "hidden": 32},
                              batch_size=64, epsilons=(1.0, 10.0, 100.0), candidates=150),
    "cpu": PrivacyMemConfig(name="cpu", datasets=("cifar10",), fallback_dataset=None,
                            train_size=1000, test_size=500,
                            model_kwargs={"width": 16, "hidden": 64}),
    "full": PrivacyMemConfig(name="full", datasets=("cifar100",), fallback_dataset=None,
                             model="resnet18_gn", models=32, candidates=500, seeds=4,
                             models_per_seed=10, epsilons=PAPER["epsilons"], top=100),
}


def get_config(name: str) -> PrivacyMemConfig:
    """The named config: "tiny" (tests, seconds), "small" (digits, minutes), "cpu" (a 1,000-image
    CIFAR-10 subset, ≤ 1 h on 2 CPU cores), "full" (the paper's scale, GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: PrivacyMemConfig) -> None:
    X.validate(config)
    if config.models < 2:
        raise ConfigError("models must be >= 2: the reference's memorization needs members "
                          "with and without each example")
    if not config.epsilons or any(not (math.isfinite(e) and e > 0) for e in config.epsilons):
        raise ConfigError(f"epsilons must be finite and > 0, got {config.epsilons}")
    if config.models_per_seed % 2:
        raise ConfigError(f"models_per_seed must be even (each b example is held by half of a "
                          f"seed group), got {config.models_per_seed}")
    if config.train_size is not None and config.candidates >= config.train_size:
        raise ConfigError(f"candidates ({config.candidates}) must be smaller than train_size "
                          f"({config.train_size})")
    if config.top > config.candidates:
        raise ConfigError(f"top ({config.top}) must be <= candidates ({config.candidates})")
    if config.model == "resnet18":
        raise ConfigError("DP-SGD needs per-example gradients: use model resnet18_gn")
    dp_optimizer(config)


def arm_masks(num_examples: int, candidates: np.ndarray, seeds: int, models_per_seed: int, *,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks (K, N), group (K,)) with K = seeds × models_per_seed: every example outside
    ``candidates`` in every member; each candidate in exactly half of the members of each seed
    group (group g's halves from jaxcurv.data.subset_masks with seed ``seed + 1000·(g + 1)``)."""
    from jaxcurv import data as data_lib

    masks = np.ones((seeds * models_per_seed, num_examples), bool)
    for g in range(seeds):
        rows = slice(g * models_per_seed, (g + 1) * models_per_seed)
        masks[rows, candidates] = data_lib.subset_masks(len(candidates), models_per_seed,
                                                        fraction=0.5, seed=seed + 1000 * (g + 1))
    return masks, np.repeat(np.arange(seeds), models_per_seed)


def _correct(ens, train) -> np.ndarray:
    from jaxcurv import ensemble

    logits = ensemble.predict(ens, train.images, progress=False)
    return logits.argmax(-1) == train.labels[None]


def _reference(config, data, timer, spec: str) -> dict[str, np.ndarray]:
    """The non-private reference on random halves: masks and correctness (K_ref, N)."""
    from jaxcurv import data as data_lib

    masks = data_lib.subset_masks(len(data.train), config.reference_models, fraction=0.5,
                                  seed=config.seed)
    key = X.config_key(config, Stage.TRAIN)
    optimizer = dataclasses.replace(
        X.optimizer_config(config, name=config.reference_optimizer,
                           learning_rate=config.reference_learning_rate), weight_decay=0.0)
    with timer(f"{spec}: reference ensemble"):
        ens = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}-pick",
                               key=key, optimizer=optimizer, epochs=config.reference_epochs,
                               batch_size=config.reference_batch_size, augment=False,
                               record_examples=False)
    return {"reference_masks": masks, "reference_correct": _correct(ens, data.train)}


def _arm(config, data, masks, dp, timer, spec: str) -> dict[str, Any]:
    """One arm (a DPConfig or None): correctness (K, N), test accuracy (K,), ε spent (K,)."""
    import jax

    key = jax.random.fold_in(X.config_key(config, Stage.TRAIN), 1)
    label = "DP" if dp is not None else "non-private"
    with timer(f"{spec}: train {label}"):
        ens = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}", key=key,
                               dp=dp, optimizer=dp_optimizer(config), record_examples=False)
    spent = (np.asarray(ens.privacy["epsilon"], float) if dp is not None
             else np.full(len(masks), np.inf))
    return {"correct": _correct(ens, data.train),
            "test_accuracy": np.asarray(ens.history["test_accuracy"][-1], float),
            "epsilon_spent": spent,
            "noise_multiplier": float(ens.privacy["noise_multiplier"]) if dp is not None else 0.0}


# ----------------------------------------------------------------------------------------------
# tables (pure: statistics -> rows)


def _candidates(statistics) -> tuple[np.ndarray, np.ndarray]:
    """(b, the reference's memorization of every example) from the reference statistics."""
    from jaxcurv import memorization

    mem, _ = memorization.feldman_zhang(statistics["reference_correct"],
                                        statistics["reference_masks"])
    return statistics["candidates"], mem


def _group_mem(correct, masks, b, rows) -> np.ndarray:
    """FZ memorization of the candidates b from the members ``rows``: (|b|,)."""
    from jaxcurv import memorization

    return memorization.feldman_zhang(correct[rows][:, b], masks[rows][:, b])[0]


def tables(statistics: dict[str, np.ndarray], config) -> dict[str, list[dict[str, Any]]]:
    """mem_vs_epsilon (per arm and seed group, and pooled over all members: mean memorization of
    b and of its top by the reference, the bound, test accuracy) and per_epsilon (mean and sd
    over the seed groups, the pooled value and its standard error)."""
    from jaxcurv import memorization
    from jaxcurv.privacy import memorization_bound

    b, mem_ref = _candidates(statistics)
    order = np.argsort(-mem_ref[b], kind="stable")
    top = order[:min(config.top, len(b))]
    arms = statistics["arm_epsilon"].astype(np.float64)
    masks, group = statistics["masks"], statistics["group"]
    rows, summary = [], []
    for a, e in enumerate(arms):
        correct = statistics["correct"][a]
        bound = memorization_bound(e) if math.isfinite(e) else 1.0
        arm = "dp" if math.isfinite(e) else "non-private"
        acc = statistics["test_accuracy"][a].astype(np.float64)
        per_group = []
        for g in np.unique(group):
            sel = np.flatnonzero(group == g)
            mem = _group_mem(correct, masks, b, sel)
            per_group.append((float(np.nanmean(mem)), float(np.nanmean(mem[top]))))
            rows.append({"arm": arm, "epsilon": e, "seed": int(g), "members": len(sel),
                         "mem_candidates": per_group[-1][0], "mem_top": per_group[-1][1],
                         "bound": bound, "test_accuracy": float(acc[sel].mean()),
                         "epsilon_spent": float(statistics["epsilon_spent"][a][sel].max())})
        pooled, pooled_se = memorization.feldman_zhang(correct[:, b], masks[:, b])
        values = np.asarray(per_group)
        sd = values.std(0, ddof=1) if len(values) > 1 else np.zeros(2)
        rows.append({"arm": arm, "epsilon": e, "seed": "pooled", "members": len(group),
                     "mem_candidates": float(np.nanmean(pooled)),
                     "mem_top": float(np.nanmean(pooled[top])), "bound": bound,
                     "test_accuracy": float(acc.mean()),
                     "epsilon_spent": float(statistics["epsilon_spent"][a].max())})
        summary.append({
            "arm": arm, "epsilon": e, "noise_multiplier": float(statistics["noise_multiplier"][a]),
            "bound": bound, "seeds": len(values),
            "mem_candidates_mean": float(values[:, 0].mean()), "mem_candidates_sd": float(sd[0]),
            "mem_top_mean": float(values[:, 1].mean()), "mem_top_sd": float(sd[1]),
            "mem_candidates_pooled": float(np.nanmean(pooled)),
            "mem_candidates_pooled_stderr": float(np.sqrt(np.nanmean(pooled_se ** 2)
                                                          / np.isfinite(pooled_se).sum())),
            "fraction_candidates_above_bound": float(np.nanmean(pooled > bound)),
            "test_accuracy_mean": float(acc.mean()),
            "test_accuracy_sd": float(acc.std(ddof=1)) if acc.size > 1 else 0.0})
    reference = [{"candidates": len(b), "top": len(top),
                  "reference_members": int(statistics["reference_masks"].shape[0]),
                  "reference_mem_candidates": float(np.nanmean(mem_ref[b])),
                  "reference_mem_top": float(np.nanmean(mem_ref[b][top])),
                  "reference_mem_all": float(np.nanmean(mem_ref)),
                  "reference_mem_threshold": float(np.nanmin(mem_ref[b]))}]
    return {"mem_vs_epsilon": rows, "per_epsilon": summary, "reference": reference}


# ----------------------------------------------------------------------------------------------
# outputs


def _figure(tabs, config, d):
    from jaxcurv import report

    rows = [r for r in tabs["mem_vs_epsilon"] if r["seed"] != "pooled"]
    eps = np.array(sorted({r["epsilon"] for r in rows if math.isfinite(r["epsilon"])}))
    seeds = sorted({r["seed"] for r in rows})

    def series(key):
        return np.array([[next(r[key] for r in rows if r["epsilon"] == e and r["seed"] == s)
                          for s in seeds] for e in eps])

    inf = [r for r in rows if math.isinf(r["epsilon"])]
    grid = np.geomspace(eps.min() / 2, eps.max() * 2, 200)
    ref = tabs["reference"][0]
    return report.figure_series_vs_epsilon(
        eps, {f"mean mem of b ({ref['candidates']} most memorized)": series("mem_candidates"),
              f"mean mem of the top {ref['top']} of b": series("mem_top")},
        d / "fig6_mem_vs_epsilon.png",
        fits={"bound 1 − e^(−ε) (Thm 5.4)": (grid, -np.expm1(-grid))},
        references={"non-private (ε = ∞), mean mem of b": [r["mem_candidates"] for r in inf]},
        ylabel="memorization score", title="Fig. 6: memorization vs privacy")


def _headlines(tabs) -> dict[str, Any]:
    """Mean memorization of b per ε with its min–max over seed groups."""
    rows = [r for r in tabs["mem_vs_epsilon"] if r["seed"] != "pooled"]
    out = {}
    for e in sorted({r["epsilon"] for r in rows}):
        v = [r["mem_candidates"] for r in rows if r["epsilon"] == e]
        tag = f"eps{e:g}" if math.isfinite(e) else "nonprivate"
        label = X.privacy_arm_label(e)
        out[f"mem_candidates_{tag}"] = X.headline(
            float(np.mean(v)), f"mean memorization of b (the {tabs['reference'][0]['candidates']}"
            f" most memorized by the reference), {label}", interval=[min(v), max(v)],
            over=f"{len(v)} seed groups, min–max")
    return out


def _spread_apart(row: Mapping[str, Any]) -> dict[str, Any]:
    """A per_epsilon row for summary.json with the spreads over seed groups (``*_sd``) under
    ``sd_over_seeds``, apart from the values (a small sd is not a near-chance accuracy)."""
    values = {k: v for k, v in row.items() if not k.endswith("_sd")}
    return {**values, "sd_over_seeds": {f"sd_{k[:-3]}": v for k, v in row.items()
                                        if k.endswith("_sd")}}


def _lines(slug, tabs) -> list[str]:
    ref = tabs["reference"][0]
    out = [f"[{slug}] b = the {ref['candidates']} examples most memorized by the reference "
           f"({ref['reference_members']} non-private members on halves; their own mem of b "
           f"{ref['reference_mem_candidates']:.3f}, biased upward by the selection; of all "
           f"{ref['reference_mem_all']:.3f})"]
    for r in tabs["per_epsilon"]:
        out.append(f"[{slug}] ε={r['epsilon']:g}: mem of b {r['mem_candidates_mean']:.3f} ± "
                   f"{r['mem_candidates_sd']:.3f} (sd over {r['seeds']} seeds; pooled "
                   f"{r['mem_candidates_pooled']:.3f} ± {r['mem_candidates_pooled_stderr']:.3f}), "
                   f"top-{ref['top']} {r['mem_top_mean']:.3f} ± {r['mem_top_sd']:.3f}, bound "
                   f"{r['bound']:.3f}; test acc {r['test_accuracy_mean']:.3f} ± "
                   f"{r['test_accuracy_sd']:.3f}; σ {r['noise_multiplier']:.3g}")
    return out


def main(config: PrivacyMemConfig) -> dict:
    from jaxcurv import memorization
    from jaxcurv.privacy import DPConfig
    from jaxcurv.workflow import Timer

    _validate(config)
    X.require_one_dataset(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    eps = np.asarray(sorted(config.epsilons), float)
    results, notes, lines, lagging = {}, [], [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        ref = _reference(config, data, timer, spec)
        mem_ref, _ = memorization.feldman_zhang(ref["reference_correct"], ref["reference_masks"])
        b = np.sort(memorization.top_memorized(mem_ref, config.candidates))
        masks, group = arm_masks(len(data.train), b, config.seeds, config.models_per_seed,
                                 seed=config.seed)
        arms = [_arm(config, data, masks, DPConfig(target_epsilon=float(e),
                                                   delta=config.dp_delta, l2_clip=config.dp_clip,
                                                   accountant=config.accountant), timer, spec)
                for e in eps]
        arms.append(_arm(config, data, masks, None, timer, spec))
        st = X.save_statistics(out, {
            **ref, "candidates": b, "masks": masks, "group": group,
            "arm_epsilon": np.append(eps, np.inf),
            **{k: np.stack([a[k] for a in arms]) for k in ("correct", "test_accuracy",
                                                            "epsilon_spent")},
            "noise_multiplier": np.array([a["noise_multiplier"] for a in arms])})
        tabs = tables(st, config)
        X.write_tables(out, tabs)
        fig = _figure(tabs, config, out)
        results[data.slug] = {"data": data.describe(),
                              "per_epsilon": [_spread_apart(r) for r in tabs["per_epsilon"]],
                              "reference": tabs["reference"][0], "paper": PAPER,
                              "figure": str(fig.relative_to(out))}
        lines += _lines(data.slug, tabs)
        headlines = _headlines(tabs)
        lagging += X.lagging_members(st["reference_correct"], st["reference_masks"],
                                     what=f"{data.slug}, non-private reference")
        lagging += X.lagging_members_per_arm(st["correct"], st["masks"], st["arm_epsilon"],
                                             what=data.slug)
    notes.append("b is picked by a separate non-private reference ensemble, so its measured "
                 "memorization is not biased upward by the selection; the interval of every "
                 "number is the spread over seed groups (independent training runs).")
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines,
             warnings=lagging, headlines=headlines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
