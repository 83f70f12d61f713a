"""Membership inference with input-loss curvature: the Curvature Clues table.

Paper: Ravikumar et al., "Curvature Clues: Decoding Deep Learning Privacy with Input Loss
Curvature" (NeurIPS 2024). Protocol: shadow models on random 50 % splits; each of ``targets``
models in turn is attacked with the other members as its shadows (leave-one-model-out, one
opposite-group shadow dropped per example so IN/OUT shadow counts do not depend on the target's
membership); queries on the original image and its horizontal flip (RGB data); curvature with
h = 1e-3 and 10 probes. Signals per model, example and view:

- white-box tr(H²) = ‖∇²ₓℓ‖_F² by exact HVPs and Hutchinson probes;
- black-box zero-order |uᵀHv| ("mixed", losses only; float64 by default);
- the seed code's white-box score (jaxcurv.curvature.reference_score), the paper's own signal.

Attacks: curvature LR and NLL on each signal, in ``corrected`` mode (Gaussian statistics with a
standard deviation where one belongs) and ``paper_compatible`` mode (the published notebooks'
statistics); LiRA online/offline, RMIA (test split as population) and the loss, calibrated loss,
modified entropy and Attack-R baselines. Metrics over the target models × all training examples:
AUROC, balanced accuracy (max over thresholds, and at the EER point — what the paper reports),
TPR at 0.1 % / 1 % FPR, with example-cluster bootstrap intervals; the paper's published numbers
next to the matching rows.

    python -m experiments.mia_curvature --config small   # digits, 16 models, GELU CNN, CPU
    python -m experiments.mia_curvature --config full    # CIFAR-10 and CIFAR-100, 65 ResNet18
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "mia_curvature"

__all__ = ["MiaCurvConfig", "CONFIGS", "PAPER", "get_config", "main"]

# Curvature Clues (NeurIPS 2024), zero-order curvature NLL attack, in percent; "balanced
# accuracy" is the notebooks' value at the EER point (roc_metrics' balanced_accuracy_eer).
PAPER = {
    "cifar100": {"zero_order_nll": {"auroc": 93.48, "balanced_accuracy_eer": 84.47}},
    "cifar10": {"zero_order_nll": {"auroc": 68.95, "balanced_accuracy_eer": 61.96}},
}


@dataclasses.dataclass(frozen=True)
class MiaCurvConfig(X.ExperimentConfig):
    """The shared experiment settings plus the targets, the query views and the signals."""

    targets: int = setting(3, "models attacked in turn (the others are their shadows)", low=1,
                           high=100_000)
    flip_view: bool | None = setting(None, "also query the horizontal flip",
                                     none="for RGB images only")
    zero_order: bool = setting(True, "compute the zero-order (black-box) signal")
    zero_order_dtype: str = setting(
        "float64", "float64 (exact to ~1e-10 at h = 1e-3) or float32 (cancellation error "
        "≈ 1e-7·ℓ/h²)", choices=("float32", "float64"))
    reference_score: bool = setting(True, "compute the authors' published white-box score")
    reference_batch_size: int = setting(
        256, "the batch whose mean loss the authors' score differentiates (a scale 1/B common "
        "to all models)", low=1, high=1 << 20)


CONFIGS = {
    "tiny": MiaCurvConfig(name="tiny", train_size=200, test_size=100, models=6, epochs=2,
                          num_probes=2, targets=2, bootstrap=20),
    "small": MiaCurvConfig(name="small", models=16, epochs=12, num_probes=10, targets=3,
                           bootstrap=200),
    "full": MiaCurvConfig(name="full", datasets=("cifar10", "cifar100"), fallback_dataset=None,
                          model="resnet18", model_kwargs={"activation": "gelu"}, models=65,
                          epochs=100, batch_size=128, learning_rate=0.1, num_probes=10,
                          targets=3, flip_view=True, bootstrap=1000),
}


def get_config(name: str) -> MiaCurvConfig:
    """The named config: "tiny" (tests, seconds), "small" (CPU, minutes), "full" (GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: MiaCurvConfig) -> None:
    X.validate(config)
    if config.models < 6:
        raise ValueError("models must be >= 6: leave-one-model-out needs >= 2 IN and 2 OUT "
                         "shadows per example after balancing")
    if not 1 <= config.targets <= config.models:
        raise ValueError(f"targets must be in [1, models={config.models}], got {config.targets}")
    if not (math.isfinite(config.h) and config.h > 0):
        raise ValueError(f"h must be > 0, got {config.h}")
    if config.zero_order_dtype not in ("float32", "float64"):
        raise ValueError(f"zero_order_dtype must be 'float32' or 'float64', got "
                         f"{config.zero_order_dtype!r}")
    if config.reference_batch_size < 1:
        raise ValueError(f"reference_batch_size must be >= 1, got {config.reference_batch_size}")


def _views(config: MiaCurvConfig, images: np.ndarray) -> dict[str, np.ndarray]:
    flip = images.shape[-1] == 3 if config.flip_view is None else config.flip_view
    views = {"original": images}
    if flip:
        views["flip"] = np.ascontiguousarray(images[:, :, ::-1])
    return views


def _per_view(config, ens, views, labels, name: str, key, compute) -> np.ndarray:
    """compute(images, key) -> (K, N) for every view, stacked (K, N, A) and cached."""
    from jaxcurv.workflow import ensemble_fingerprint

    def run():
        return {"stat": np.stack([compute(x, key) for x in views.values()], axis=-1)}

    cache_key = (ensemble_fingerprint(ens), name, list(views), list(views.values()), labels,
                 X.key_data(key), config.num_probes, config.h, config.zero_order_dtype,
                 config.reference_batch_size)
    return X.stage_cache(config).run(f"{EXPERIMENT}-{name}", cache_key, run)["stat"]


def _reference_scores(config, ens, images, labels, key) -> np.ndarray:
    """The seed code's score of every member (K, N); member k's key is fold_in(key, k)."""
    import jax

    from jaxcurv import ensemble
    from jaxcurv.curvature import make_reference_score

    score = make_reference_score(ensemble.member_loss_fn(ens), num_probes=config.num_probes,
                                 h=config.h, batch_size=config.reference_batch_size)
    return np.stack([score(ens.member(k), images, labels, jax.random.fold_in(key, k))
                     for k in range(ens.num_members)])


def _signals(config: MiaCurvConfig, ens, views, labels) -> dict[str, np.ndarray]:
    """Positive curvature statistics (K, N, A) per signal name."""
    import jax.numpy as jnp

    from jaxcurv import ensemble

    trace_sq = np.stack([np.asarray(X.member_curvature(
        config, ens, x, labels, key=X.config_key(config, Stage.CURVATURE)).trace_sq)
        for x in views.values()], axis=-1)
    signals = {"curvature": np.abs(trace_sq)}
    if config.zero_order:
        dtype = jnp.float64 if config.zero_order_dtype == "float64" else None
        zero_order = ensemble.make_member_zero_order_curvature(
            ens.model, num_probes=config.num_probes, method="mixed", compute_dtype=dtype)
        signals["zero_order"] = _per_view(
            config, ens, views, labels, "zero_order", X.config_key(config, Stage.ZERO_ORDER),
            lambda x, key: zero_order(ens, x, labels, key, h=config.h,
                                      progress=config.progress))
    if config.reference_score:
        signals["reference"] = _per_view(
            config, ens, views, labels, "reference", X.config_key(config, Stage.REFERENCE_SCORE),
            lambda x, key: _reference_scores(config, ens, x, labels, key))
    return signals


def _attacks(config, logits, labels, masks, signals, test_logits, test_labels):
    """{(attack, mode): (K, N) leave-one-model-out scores}."""
    from jaxcurv import mia
    from jaxcurv.workflow import attack_scores

    corrected = attack_scores(logits, labels, masks, signals["curvature"],
                                       signals.get("zero_order"), test_logits, test_labels)
    scores = {(name, "corrected" if "curvature" in name or "zero_order" in name else "—"): s
              for name, s in corrected.items()}
    for signal, stat in signals.items():
        for test in ("lr", "nll"):
            attack = mia.curvature_lr if test == "lr" else mia.curvature_nll
            name = f"{signal}_{test}"
            if (name, "corrected") not in scores:
                scores[(name, "corrected")] = mia.leave_one_model_out(attack, stat, masks)
            scores[(name, "paper_compatible")] = mia.leave_one_model_out(
                attack, stat, masks, paper_compatible=True)
    return scores


_SIGNALS = {"curvature": "white-box tr(H²) (exact HVP)", "zero_order": "zero-order |uᵀHv|",
            "reference": "seed white-box score", "lira": "logit confidence", "rmia": "p_y",
            "mentr": "modified entropy", "": "loss"}


_ROC_BASELINES = ("lira_online", "lira_offline", "rmia", "loss")  # others: table only


def _signal(attack: str) -> str:
    return next(v for k, v in _SIGNALS.items() if attack.startswith(k))


def _row(name: str, mode: str, m: dict, every: dict, paper: dict) -> dict:
    """One row of the table: the metrics over the targets, the paper's numbers when it has them."""
    row = {"attack": name, "mode": mode, "signal": _signal(name),
           **{k: m[k] for k in ("auroc", "balanced_accuracy", "balanced_accuracy_eer",
                                "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct")},
           **{k: m.get(k) for k in ("auroc_ci", "balanced_accuracy_eer_ci",
                                    "tpr_at_fpr_0_1pct_ci")},
           "auroc_all_members_as_targets": every["auroc"],
           "paper_auroc": None, "paper_balanced_accuracy": None}
    if name in paper:
        row["paper_auroc"] = paper[name]["auroc"] / 100
        row["paper_balanced_accuracy"] = paper[name]["balanced_accuracy_eer"] / 100
    return row


def _table(config, scores, masks, paper: dict):
    """Metrics over the ``targets`` first members × all examples (example-cluster bootstrap):
    (rows sorted by AUROC, ROC curves per mode group, AUROC per curve label)."""
    from jaxcurv import mia

    rows_t = np.arange(config.targets)
    n = masks.shape[1]
    cluster = np.broadcast_to(np.arange(n), (config.targets, n))
    table, curves, aurocs = [], {"corrected": {}, "paper_compatible": {}}, {}
    for (name, mode), s in scores.items():
        m = mia.roc_metrics(s[rows_t], masks[rows_t], bootstrap=config.bootstrap,
                            seed=config.seed, cluster=cluster)
        table.append(_row(name, mode, m, mia.roc_metrics(s, masks), paper))
        label = f"{name} ({mode})" if mode != "—" else name
        if mode != "—" or name in _ROC_BASELINES:  # <= 10 curves: distinct colours
            for group in ([mode] if mode in curves else list(curves)):
                curves[group][name] = mia.roc_curve(s[rows_t], masks[rows_t])
        aurocs[label] = m["auroc"]
    table.sort(key=lambda r: -r["auroc"])
    return table, curves, aurocs


def main(config: MiaCurvConfig) -> dict:
    from scipy import stats

    from jaxcurv import data as data_lib
    from jaxcurv import ensemble, report
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer = Timer()
    results = {}
    notes = [X.estimator_note(config)]
    lines = []
    for spec, data in X.each_dataset(config, timer, notes, lines):
        train, test = data.train, data.test
        n = len(train)
        masks = data_lib.subset_masks(n, config.models, fraction=config.fraction, seed=config.seed)
        with timer(f"{spec}: train"):
            ens = X.train_ensemble(config, data, masks, tag=f"subsets-{data.slug}")
        views = _views(config, train.images)
        with timer(f"{spec}: predict"):
            logits = np.stack([ensemble.predict(ens, x, progress=False) for x in views.values()],
                              axis=1)                                           # (K, A, N, C)
            test_logits = ensemble.predict(ens, test.images, progress=False)    # (K, Z, C)
        with timer(f"{spec}: curvature signals"):
            signals = _signals(config, ens, views, train.labels)
        with timer(f"{spec}: attacks"):
            scores = _attacks(config, logits, train.labels, masks, signals, test_logits,
                              test.labels)
        paper = PAPER.get(data.slug, {})
        with timer(f"{spec}: metrics"):
            table, curves, aurocs = _table(config, scores, masks, paper)
        d = out / data.slug
        report.write_csv(d / "mia_table.csv", {k: [_cell(r[k]) for r in table] for k in table[0]})
        figures = [report.figure_roc(
            curves[group], d / f"roc_{group}.png",
            aurocs={k: aurocs[f"{k} ({group})" if f"{k} ({group})" in aurocs else k]
                    for k in curves[group]},
            title=f"{data.slug}: MIA, {group.replace('_', '-')} curvature statistics")
            for group in curves]
        results[data.slug] = {
            "data": data.describe(), "views": list(views),
            "protocol": f"{config.models} models on {config.fraction:.0%} splits; models "
                        f"0..{config.targets - 1} attacked in turn with the other "
                        f"{config.models - 1} as shadows (one opposite-group shadow dropped per "
                        f"example); metrics pooled over {config.targets} targets × {n} examples, "
                        "example-cluster bootstrap intervals",
            "test_accuracy": ens.history["test_accuracy"][-1],
            "train_accuracy_in": float((logits[:, 0].argmax(-1) == train.labels)[masks].mean()),
            "table": table, "paper": paper,
            "signal_spearman_vs_trace_sq": {
                name: float(stats.spearmanr(np.log(signals["curvature"].ravel() + 1e-30),
                                            np.log(v.ravel() + 1e-30)).statistic)
                for name, v in signals.items() if name != "curvature"},
            "figures": [str(p.relative_to(out)) for p in figures],
        }
        lines += _lines(data.slug, config, results[data.slug])
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines)
    return results


def _lines(slug: str, config, result: dict) -> list[str]:
    """The printed summary of one dataset."""
    views, table = result["views"], result["table"]
    lines = [f"[{slug}] {result['data']['train_examples']} examples, {config.models} models, "
             f"views {'+'.join(views)}, test acc {np.mean(result['test_accuracy']):.3f}; "
             f"{config.targets} targets (AUROC / bal.acc@EER / TPR@0.1%FPR):"]
    for r in table:
        paper_txt = (f"   paper {100 * r['paper_auroc']:.2f} / "
                     f"{100 * r['paper_balanced_accuracy']:.2f}") if r["paper_auroc"] else ""
        lines.append(f"  {r['attack']:<16} {r['mode']:<17} {r['auroc']:.3f} / "
                     f"{r['balanced_accuracy_eer']:.3f} / {r['tpr_at_fpr_0_1pct']:.3f}"
                     f"{paper_txt}")
    lines.append(f"[{slug}] Spearman of each signal with tr(H²) over models × examples × views: "
                 + ", ".join(f"{k} {v:+.3f}" for k, v in
                             result["signal_spearman_vs_trace_sq"].items()))
    return lines


def _cell(value):
    if isinstance(value, tuple):
        return f"[{value[0]:.4g}, {value[1]:.4g}]"
    return "" if value is None else value


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
