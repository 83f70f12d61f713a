"""Membership-inference success by memorization score: Figure 9.

Paper: Ravikumar et al., "Curvature Clues: Decoding Deep Learning Privacy with Input Loss
Curvature" (NeurIPS 2024), Figure 9 (attack accuracy, AUROC and train accuracy per memorization
bin: highly memorized examples are the ones membership inference exposes). An ensemble on random
50 % subsets gives Feldman–Zhang memorization and doubles as shadow models: every member in turn
is the target, the others its shadows (jaxcurv.mia.leave_one_model_out); per memorization bin
(fixed edges) jaxcurv.workflow.mia_by_memorization gives AUROC, balanced accuracy (the attack
accuracy) and the in-model train accuracy, for LiRA and the curvature attacks. It is cross-fitted:
targets in one half of the members are binned by memorization estimated from the other half, so
the bins do not select on the targets' own outcomes.

    python -m experiments.lira_vs_memorization --config small   # digits, 16 models, CPU
    python -m experiments.lira_vs_memorization --config full    # CIFAR-100 and CIFAR-10, ResNet18
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "lira_vs_memorization"

__all__ = ["LiraMemConfig", "CONFIGS", "ATTACKS", "get_config", "main"]

# attacks of jaxcurv.workflow.attack_scores that need no zero-order signal
ATTACKS = ("loss", "mentr", "calibrated_loss", "attack_r", "lira_online", "lira_offline", "rmia",
           "curvature_lr", "curvature_nll")


@dataclasses.dataclass(frozen=True)
class LiraMemConfig(X.ExperimentConfig):
    """The shared experiment settings plus the attacks to bin and the bins."""

    attacks: tuple[str, ...] = setting(
        ("lira_online", "curvature_nll", "loss"),
        "attacks to bin (from ATTACKS; curvature_* use white-box tr(H²))")
    edges: tuple[float, ...] = setting(
        (0.0, 0.1, 0.3, 0.5, 0.7, 1.0),
        "memorization bin edges (mem is clipped into [edges[0], edges[-1]])")
    min_pairs: int = setting(5, "bins with fewer (member, example) pairs are dropped", low=1,
                             high=10**9)


CONFIGS = {
    "tiny": LiraMemConfig(name="tiny", train_size=300, test_size=100, models=6, epochs=2,
                          num_probes=2),
    "small": LiraMemConfig(name="small", models=16, epochs=12),
    "full": LiraMemConfig(name="full", datasets=("cifar100", "cifar10"), fallback_dataset=None,
                          model="resnet18", models=64, epochs=100, batch_size=128,
                          learning_rate=0.1, edges=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                    0.9, 1.0)),
}


def get_config(name: str) -> LiraMemConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def main(config: LiraMemConfig) -> dict:
    from jaxcurv import data as data_lib
    from jaxcurv import ensemble, memorization, report
    from jaxcurv.workflow import Timer, attack_scores, mia_by_memorization

    X.validate(config)
    unknown = sorted(set(config.attacks) - set(ATTACKS))
    if unknown or not config.attacks:
        raise ValueError(f"attacks must be a non-empty subset of {ATTACKS}; unknown: {unknown}")
    if config.models < 6:
        raise ValueError(f"need members >= 6 (leave-one-model-out needs >= 2 IN and 2 OUT shadows "
                         f"per example after balancing), got {config.models}")
    if len(config.edges) < 2 or any(b <= a for a, b in zip(config.edges, config.edges[1:])):
        raise ValueError(f"edges must be >= 2 increasing values, got {config.edges}")
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results, notes, lines = {}, [], []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        train, test = data.train, data.test
        masks = data_lib.subset_masks(len(train), config.models, fraction=config.fraction,
                                      seed=config.seed)
        with timer(f"{spec}: train"):
            ens = X.train_ensemble(config, data, masks, tag=f"subsets-{data.slug}")
        with timer(f"{spec}: predict, memorization"):
            logits = ensemble.predict(ens, train.images, progress=False)
            test_logits = ensemble.predict(ens, test.images, progress=False)
            correct = logits.argmax(-1) == train.labels[None]
            mem, mem_se = memorization.feldman_zhang(correct, masks)
        with timer(f"{spec}: curvature"):  # attack_scores needs it (cached per ensemble)
            curvature = np.abs(X.member_curvature(config, ens, train.images, train.labels,
                                                  key=X.config_key(config, Stage.CURVATURE)).trace_sq)
        with timer(f"{spec}: attacks"):
            scores = attack_scores(logits[:, None], train.labels, masks, curvature, None,
                                            test_logits, test.labels)
            tables = {a: mia_by_memorization(scores[a], masks, correct, edges=config.edges,
                                             min_examples=config.min_pairs)
                      for a in config.attacks}
        d = out / data.slug
        for attack, rows in tables.items():
            report.write_csv(d / f"by_memorization_{attack}.csv",
                             {k: [r[k] for r in rows] for k in rows[0]})
        figures = [report.figure_mia_vs_mem(
            tables, d / "fig9_mia_vs_memorization.png",
            title=f"{data.slug}: membership inference by memorization ({config.models} models, "
                  "leave-one-model-out)")]
        results[data.slug] = {
            "data": data.describe(),
            "protocol": f"leave-one-model-out over {config.models} members (each the target, the "
                        "others its shadows); per bin, AUROC and balanced accuracy over the "
                        "(member, example) pairs of that bin; bins cross-fitted (memorization "
                        "of a target's examples estimated from the other half of the members)",
            "test_accuracy_mean": float(ens.history["test_accuracy"][-1].mean()),
            "memorization": {"mean": float(np.nanmean(mem)),
                             "mean_stderr": float(np.nanmean(mem_se))},
            "by_memorization": tables,
            "figures": [str(p.relative_to(out)) for p in figures],
        }
        lines.append(f"[{data.slug}] {len(train)} examples, {config.models} members, test acc "
                     f"{results[data.slug]['test_accuracy_mean']:.3f}")
        for attack, rows in tables.items():
            lines.append(f"  {attack}: " + "; ".join(
                f"mem≈{r['mem_center']:.2f} (n={r['pairs']}) AUROC {r['auroc']:.3f} acc "
                f"{r['balanced_accuracy']:.3f} train {r['train_accuracy']:.3f}" for r in rows))
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
