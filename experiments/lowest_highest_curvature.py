"""The 16 lowest- and 16 highest-curvature training images: Figure 2.

Paper: Ravikumar et al., "Unveiling Privacy, Memorization, and Input Curvature Links" (ICML 2024),
Figure 2 (CIFAR images ranked by input-loss curvature; low curvature = prototypical, high =
atypical, ambiguous or mislabeled). The small config uses a ReLU CNN like the paper's ReLU
ResNet18. ``models`` models (seeds) are trained on the whole training set; each example's
curvature tr(H²) = ‖∇²ₓℓ‖_F², the papers' Curv (exact HVPs, Hutchinson probes; optionally also
averaged over the training epochs), is averaged over the seeds and the images at both ends are
shown with labels; tr(H) is written beside it (``curvature_trace``).

    python -m experiments.lowest_highest_curvature --config small   # CIFAR-10 subset (or digits)
    python -m experiments.lowest_highest_curvature --config full    # CIFAR-100, CIFAR-10, ResNet18

The small config reads CIFAR-10 files from --data-dir or $JAXCURV_DATA_DIR (the official python
files or archive, cifar10.npz or cifar10-jpeg.npz); without them it runs on the embedded digits
and says so in its outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcurv._names import quantity_label
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "lowest_highest_curvature"

__all__ = ["ExtremeConfig", "CONFIGS", "get_config", "main"]


@dataclasses.dataclass(frozen=True)
class ExtremeConfig(X.ExperimentConfig):
    """The shared experiment settings (``models``: seeds, each trained on all training
    examples) plus how many images to show at each end."""

    k: int = setting(16, "images shown at each end", low=1, high=10_000)
    record_curvature: int = setting(
        0, "probes per epoch to also average curvature over training (0: end only)", low=0,
        high=10_000)


CONFIGS = {
    "tiny": ExtremeConfig(name="tiny", datasets=("digits",), train_size=200, test_size=100,
                          models=1, epochs=2, num_probes=2, k=8),
    "small": ExtremeConfig(name="small", datasets=("cifar10",), train_size=2500,
                           test_size=1000, model_kwargs={"activation": "relu"}, models=2,
                           epochs=15, num_probes=5),
    "full": ExtremeConfig(name="full", datasets=("cifar100", "cifar10"), fallback_dataset=None,
                          model="resnet18", models=3, epochs=100, batch_size=128,
                          learning_rate=0.1, num_probes=10, record_curvature=0),
}


def get_config(name: str) -> ExtremeConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def main(config: ExtremeConfig) -> dict:
    from jaxcurv import report
    from jaxcurv.workflow import Timer

    X.validate(config)
    if config.k < 1:
        raise ValueError(f"k must be >= 1, got {config.k}")
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        train = data.train
        masks = np.ones((config.models, len(train)), bool)  # every seed trains on everything
        with timer(f"{spec}: train"):
            ens = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}",
                                   record_examples=False, record_curvature=config.record_curvature)
        with timer(f"{spec}: curvature"):
            curv = X.member_curvature(config, ens, train.images, train.labels,
                                      key=X.config_key(config, Stage.CURVATURE))
        per_seed = np.asarray(curv.trace_sq)  # (K, N) tr(H²)
        columns = {"index": np.arange(len(train)), "source_index": data.train_index,
                   "label": train.labels, "curvature": per_seed.mean(0),
                   "curvature_sd": per_seed.std(0),
                   "curvature_trace": np.asarray(curv.trace).mean(0)}
        score, what = columns["curvature"], "curvature"
        if "curvature" in ens.history:  # (E, K, N) per-epoch tr(H²)
            columns["curvature_train"] = ens.history["curvature"].mean((0, 1))
            score, what = columns["curvature_train"], "curvature_train"
        d = out / data.slug
        report.write_csv(d / "curvature.csv", columns)
        fig = report.figure_extreme_images(train.images, train.labels, score,
                                           d / "fig2_lowest_highest_curvature.png", k=config.k,
                                           class_names=train.class_names, quantity=what)
        order = np.argsort(score)
        k = min(config.k, len(train) // 2)
        ends = {"lowest": order[:k], "highest": order[::-1][:k]}
        names = train.class_names or tuple(str(c) for c in range(train.num_classes))
        test_acc = ens.history["test_accuracy"][-1]
        results[data.slug] = {
            "data": data.describe(), "test_accuracy_per_seed": test_acc,
            "score": what,
            "curvature": {"mean": float(columns["curvature"].mean()),
                          "median": float(np.median(columns["curvature"])),
                          "max": float(columns["curvature"].max()),
                          "seed_rank_agreement_spearman": _seed_agreement(per_seed)},
            **{end: {"index": idx, "source_index": data.train_index[idx],
                     "label": [names[int(c)] for c in train.labels[idx]],
                     "curvature": score[idx]} for end, idx in ends.items()},
            "figure": str(fig.relative_to(out)),
        }
        lines += [f"[{data.slug}] {len(train)} images, {config.models} seed(s), test acc "
                  f"{np.mean(test_acc):.3f}; {quantity_label(what)}: median {np.median(score):.3g}, lowest "
                  f"{score[ends['lowest'][0]]:.3g}, highest {score[ends['highest'][0]]:.3g}",
                  f"[{data.slug}] lowest-curvature labels: "
                  + ", ".join(names[int(c)] for c in train.labels[ends['lowest']]),
                  f"[{data.slug}] highest-curvature labels: "
                  + ", ".join(names[int(c)] for c in train.labels[ends['highest']])]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


def _seed_agreement(values: np.ndarray) -> float | None:
    """Mean pairwise Spearman correlation of the per-example curvature of different seeds."""
    from scipy import stats

    if values.shape[0] < 2:
        return None
    rhos = [stats.spearmanr(values[i], values[j]).statistic for i in range(len(values))
            for j in range(i + 1, len(values))]
    return float(np.mean(rhos))


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
