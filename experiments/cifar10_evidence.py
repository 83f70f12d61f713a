"""CIFAR-10 evidence on a CPU: the papers' claims on real images, in about an hour on 2 cores.

Two audits (:func:`jaxcurv.workflow.run_audit`) on a seeded subset of CIFAR-10:

1. clean labels, K members on random halves trained to interpolation: Fig. 2 of Ravikumar et al.
   (ICML 2024; lowest / highest curvature images), Fig. 3 (memorization vs curvature, Spearman),
   Fig. 9 of Curvature Clues (NeurIPS 2024; attack success by memorization bin) and the Curvature
   Clues attack table (AUROC, balanced accuracy, TPR at 0.1 % / 1 % FPR with bootstrap CIs) for
   LiRA online/offline, RMIA, loss, calibrated loss, white-box curvature LR/NLL and the black-box
   zero-order attacks (on the first ``zero_order_members`` members);
2. 10 % of the labels flipped, fewer members: how well memorization, curvature, loss and
   confidence rank the flipped labels first.

    python -m experiments.cifar10_evidence --config cpu --data-dir DIR   # DIR: cifar10-jpeg.npz
    python -m experiments.cifar10_evidence --config tiny                 # digits, seconds

Outputs under ``--out`` (default results/cifar10_evidence/<config>): ``summary.json`` (config
echo, environment, the headline numbers beside the papers'), ``table.csv`` / ``table.md``, and
the two audits' folders (``audit/``, ``label_noise/``: scores.csv, summary.json, figures,
report.html; their ``cache/`` and ``checkpoints/`` make a killed run resume).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxcurv.errors import ConfigError
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.settings import Attacks, LabelNoise, redefault, setting

EXPERIMENT = "cifar10_evidence"

__all__ = ["EvidenceConfig", "CONFIGS", "PAPER", "get_config", "main"]

# Curvature Clues (NeurIPS 2024), CIFAR-10, zero-order curvature NLL attack (ResNet18, 50,000
# training images, 64 shadow models), in percent; balanced accuracy at the EER point.
PAPER = {"zero_order_nll": {"auroc": 68.95, "balanced_accuracy_eer": 61.96}}


@dataclasses.dataclass(frozen=True)
class EvidenceConfig(LabelNoise, X.ExperimentConfig):
    """The shared experiment settings for the two audits: ``train_size`` is the seeded random
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
    noise_members: int = setting(8, "members of the planted-noise audit", low=6, high=100_000)
    label_noise: float = redefault(LabelNoise, "label_noise", 0.1)


CONFIGS = {
    "cpu": EvidenceConfig(),
    "small": EvidenceConfig(name="small", datasets=("digits",), train_size=1438, model="mlp",
                            model_kwargs={"hidden": 512, "depth": 2}, models=16, epochs=60,
                            batch_size=64, learning_rate=2e-3, num_probes=10),
    "full": EvidenceConfig(name="full", train_size=50000, model_kwargs={"width": 32,
                                                                       "hidden": 512},
                           models=64, epochs=40, batch_size=128, num_probes=10,
                           zero_order_members=64, noise_members=16, bootstrap=1000),
    "tiny": EvidenceConfig(name="tiny", datasets=("digits",), train_size=300, model="mlp",
                           model_kwargs={"hidden": 64, "depth": 1}, models=6, epochs=2,
                           batch_size=64, num_probes=2, zero_order_members=6, noise_members=6,
                           bootstrap=10),
}


def get_config(name: str) -> EvidenceConfig:
    """The named configuration ("cpu": CIFAR-10, under an hour on 2 CPU cores; "small": the same
    two audits on the embedded digits, minutes; "full": all 50,000 CIFAR-10 images and 64
    members, for a GPU; "tiny": a smoke test on digits whose numbers mean nothing)."""
    return X.named_config(CONFIGS, name)


def _audit_config(config: EvidenceConfig, out: Path, *, noisy: bool):
    from jaxcurv.workflow import AuditConfig

    return AuditConfig(
        dataset=config.datasets[0], data_dir=config.data_dir, max_examples=config.train_size,
        model=config.model, model_kwargs=config.model_settings,
        models=config.noise_members if noisy else config.models, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        optimizer=config.optimizer, weight_decay=config.weight_decay, augment=config.augment,
        num_probes=config.num_probes,
        zero_order=not noisy, zero_order_members=config.zero_order_members,
        label_noise=config.label_noise if noisy else 0.0, bootstrap=config.bootstrap,
        seed=config.seed, out=str(out / ("label_noise" if noisy else "audit")),
        progress=config.progress)


def _table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The attack table of the clean audit with the paper's numbers where it has them."""
    rows = []
    for row in summary["mia"]["metrics"]:
        paper = PAPER.get(row["attack"], {})
        ci = row.get("auroc_ci") or [None, None]
        rows.append({
            "attack": row["attack"], "auroc": row["auroc"], "auroc_ci_low": ci[0],
            "auroc_ci_high": ci[1], "balanced_accuracy": row["balanced_accuracy"],
            "tpr_at_fpr_0_1pct": row["tpr_at_fpr_0_1pct"],
            "tpr_at_fpr_1pct": row["tpr_at_fpr_1pct"],
            "paper_auroc": paper["auroc"] / 100 if paper else None,
            "paper_balanced_accuracy_eer": paper["balanced_accuracy_eer"] / 100 if paper else None,
        })
    return sorted(rows, key=lambda r: -r["auroc"])


def _markdown(rows: list[dict[str, Any]]) -> str:
    """The table as GitHub markdown (AUROC with its 95 % CI, TPRs in percent)."""
    def num(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    lines = ["| attack | AUROC [95 % CI] | balanced acc. | TPR @ 0.1 % FPR | TPR @ 1 % FPR | "
             "paper AUROC (CC, ResNet18, full CIFAR-10) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ci = (f" [{num(r['auroc_ci_low'])}, {num(r['auroc_ci_high'])}]"
              if r["auroc_ci_low"] is not None else "")
        lines.append(f"| {r['attack']} | {num(r['auroc'])}{ci} | {num(r['balanced_accuracy'])} | "
                     f"{num(r['tpr_at_fpr_0_1pct'], '{:.2%}')} | "
                     f"{num(r['tpr_at_fpr_1pct'], '{:.2%}')} | {num(r['paper_auroc'])} |")
    return "\n".join(lines) + "\n"


def _headline(clean: dict[str, Any], noisy: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README quotes, from the two audits' summaries."""
    acc = clean["accuracy"]
    noise = noisy["label_noise"]
    return {
        "test_accuracy_mean": acc["test_mean"], "train_in_accuracy": acc["train_in_mean"],
        "train_out_accuracy": acc["train_out_mean"],
        "spearman_mem_curvature": clean["correlations"]["spearman_mem_curvature"],
        "spearman_mem_curvature_trace": clean["correlations"]["spearman_mem_curvature_trace"],
        "memorization": clean["memorization"],
        "by_memorization": clean["mia"]["by_memorization"],
        "label_noise": {"flipped": noise["flipped"],
                        "flipped_train_in_accuracy": noise["flipped_train_in_accuracy"],
                        "noisy_members": noisy["config"]["models"],
                        "ranking": noise["ranking"], "best_ranker": noise["best_ranker"]},
        "figures": {"fig2_lowest_highest_curvature":
                    "audit/" + clean["figures"]["lowest_highest_curvature"],
                    "fig3_mem_vs_curvature": "audit/" + clean["figures"]["mem_vs_curvature"],
                    "fig9_mia_vs_memorization":
                    "audit/" + clean["figures"]["mia_vs_memorization"],
                    "roc": "audit/" + clean["figures"]["mia_roc"],
                    "label_noise": "label_noise/" + noisy["figures"]["label_noise"]},
    }


def main(config: EvidenceConfig) -> dict[str, Any]:
    from jaxcurv import report
    from jaxcurv.workflow import Timer, run_audit

    X.validate(config)
    if len(config.datasets) != 1:
        raise ConfigError(f"datasets takes one dataset here, got {list(config.datasets)}")
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    notes = ["smoke test: numbers are not meaningful"] if config.name == "tiny" else []
    with timer("clean audit"):
        clean = run_audit(_audit_config(config, out, noisy=False))
    with timer("label-noise audit"):
        noisy = run_audit(_audit_config(config, out, noisy=True))
    rows = _table(clean)
    report.write_csv(out / "table.csv", {k: [r[k] for r in rows] for k in rows[0]})
    (out / "table.md").write_text(_markdown(rows))
    headline = _headline(clean, noisy)
    results = {"table": rows, **headline,
               "stage_timings_s": {"audit": clean["timings_s"],
                                   "label_noise": noisy["timings_s"]}}
    best = rows[0]
    lines = [*notes,
             f"test accuracy {headline['test_accuracy_mean']:.3f}, train-in "
             f"{headline['train_in_accuracy']:.3f}; Spearman(mem, curvature) "
             f"{headline['spearman_mem_curvature']:.3f}",
             f"strongest attack {best['attack']}: AUROC {best['auroc']:.3f}, TPR@0.1%FPR "
             f"{best['tpr_at_fpr_0_1pct']:.3%}",
             "flipped labels (AUROC): " + ", ".join(
                 f"{k} {v['auroc']:.3f}" for k, v in headline["label_noise"]["ranking"].items())]
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
