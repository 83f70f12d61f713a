"""Curvature Clues (NeurIPS 2024), Table 1, CIFAR-10 row, in the paper's protocol.

Paper: Ravikumar, Soufleri & Roy, "Curvature Clues: Decoding Deep Learning Privacy with Input
Loss Curvature", NeurIPS 2024 (arXiv:2407.02747). Protocol, as the authors' published code runs
it (github.com/DeepakTatachar/Curvature-Clues): shadow models and held-out target models trained
on random halves of the training set with random crop + horizontal flip; each target's
membership is attacked with statistics of the shadows only (64 shadows, 3 targets); every model
is queried on the original image and its horizontal flip; zero-order curvature |uᵀHv| from
losses only, 10 probes, h = 1e-3; metrics per target, reported as mean ± sd over the targets.

Here: ``shadows = models − targets`` shadows whose halves are balanced (every example is IN
exactly round(fraction·shadows) of them), and ``targets`` held-out models, each on its own
random subset of round(fraction·N) examples; members are rows 0..S−1 (shadows) and S..K−1
(targets) of one ensemble. Signals per model, example and view: LiRA's logit confidence φ (from
which the loss and the true-class probability follow), the max-probability confidence the
authors' "Carlini et al." row uses, the modified entropy, white-box tr(H²) (exact HVPs,
Hutchinson probes) and zero-order |uᵀHv| ("mixed", float64). Attacks, each in the authors'
statistic (``paper``: ``paper_compatible=True`` in jaxcurv.mia) and the corrected one
(``corrected``) where they differ: zero-order and white-box curvature NLL and LR, LiRA on the
max-probability statistic, Attack-R; and the loss, modified-entropy, calibrated-loss (Watson et
al.; midpoint: Sablayrolles et al.) baselines, online and offline LiRA on the logit confidence and
RMIA. Metrics per target: AUROC, balanced accuracy at the equal-error-rate point (what the paper
reports) and at its best threshold, TPR at 0.1 % and 1 % FPR; mean ± sd (ddof 0, as the
authors' notebook) over the targets, beside the published numbers.

Every table is rebuilt from ``statistics.npz`` by :func:`tables`
(``python -m experiments.recompute DIR``).

    python -m experiments.curvature_clues_table1 --config tiny    # seconds (tests)
    python -m experiments.curvature_clues_table1 --config small   # digits, CPU, minutes
    python -m experiments.curvature_clues_table1 --config cpu     # 10,000 CIFAR-10 images, 2 cores
    python -m experiments.curvature_clues_table1 --config full    # all of CIFAR-10, 64 + 3 ResNet18
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping

import numpy as np

from jaxcurv.errors import ConfigError
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.keys import Stage
from jaxcurv.workflow.settings import setting

EXPERIMENT = "curvature_clues_table1"

__all__ = ["Table1Config", "CONFIGS", "PAPER", "PAPER_SOURCE", "ATTACKS", "get_config",
           "shadow_target_masks", "attack_scores", "tables", "markdown_table", "main"]

# The published CIFAR-10 row, in percent: (mean, sd over the 3 target models, np.std ddof 0), AUROC
# and balanced accuracy at the equal-error-rate threshold. Keys: (attack, mode) of this script.
PAPER_SOURCE = (
    "Curvature Clues (NeurIPS 2024, arXiv:2407.02747), Table 1, CIFAR-10 row, as printed by the "
    "authors' notebook conditonal_mia_aug_cifar10.ipynb (github.com/DeepakTatachar/"
    "Curvature-Clues, commit 627128f; its README: the notebook reproduces Table 1 for CIFAR10), "
    "64 ResNet18 shadows and 3 targets on random halves of CIFAR-10. These are the notebook's "
    "printed numbers; they were not checked against the typeset table of the paper")
PAPER = {
    ("zero_order_nll", "paper"): {"auroc": (68.95, 1.31), "balanced_accuracy_eer": (61.96, 0.87)},
    ("zero_order_lr", "paper"): {"auroc": (58.96, 0.46), "balanced_accuracy_eer": (55.04, 0.18)},
    ("lira_max_prob", "paper"): {"auroc": (61.79, 0.37), "balanced_accuracy_eer": (58.27, 0.34)},
    ("loss", ""): {"auroc": (60.44, 0.75), "balanced_accuracy_eer": (55.57, 0.52)},
    ("calibrated_loss_midpoint", ""): {"auroc": (61.50, 0.79),
                                       "balanced_accuracy_eer": (56.65, 0.56)},
    ("calibrated_loss", ""): {"auroc": (58.58, 0.86), "balanced_accuracy_eer": (54.86, 0.59)},
    ("attack_r", "paper"): {"auroc": (67.30, 1.25), "balanced_accuracy_eer": (59.62, 0.84)},
    ("mentr", ""): {"auroc": (60.42, 0.85), "balanced_accuracy_eer": (55.63, 0.61)},
}

# (attack, mode) → (the paper's name for it, the statistic it tests)
ATTACKS = {
    ("zero_order_nll", "paper"): ("Curv ZO NLL", "zero-order |uᵀHv|, the notebook's NLL"),
    ("zero_order_nll", "corrected"): ("Curv ZO NLL", "zero-order |uᵀHv|, pooled-σ NLL"),
    ("zero_order_lr", "paper"): ("Curv ZO LR", "zero-order |uᵀHv|, the notebook's LR"),
    ("zero_order_lr", "corrected"): ("Curv ZO LR", "zero-order |uᵀHv|, Gaussian LR"),
    ("curvature_nll", "paper"): ("Curv NLL", "white-box tr(H²), the notebook's NLL"),
    ("curvature_nll", "corrected"): ("Curv NLL", "white-box tr(H²), pooled-σ NLL"),
    ("curvature_lr", "paper"): ("Curv LR", "white-box tr(H²), the notebook's LR"),
    ("curvature_lr", "corrected"): ("Curv LR", "white-box tr(H²), Gaussian LR"),
    ("lira_max_prob", "paper"): ("Carlini et al.", "max probability (float32), the notebook's LR"),
    ("lira_max_prob", "corrected"): ("Carlini et al.", "max-probability logit, online LiRA"),
    ("attack_r", "paper"): ("Ye et al.", "loss vs 0.01 % quantile of OUT losses"),
    ("attack_r", "corrected"): ("Ye et al.", "quantile level of the loss among OUT losses"),
    ("loss", ""): ("Yeom et al.", "loss"),
    ("mentr", ""): ("Song et al.", "modified entropy"),
    ("calibrated_loss", ""): ("Watson et al.", "loss − mean OUT loss"),
    ("calibrated_loss_midpoint", ""): ("Sablayrolles et al.", "loss − (IN + OUT mean loss)/2"),
    ("lira_online", ""): ("LiRA online", "logit confidence φ, online LiRA"),
    ("lira_offline", ""): ("LiRA offline", "logit confidence φ, offline LiRA"),
    ("rmia", ""): ("RMIA", "true-class probability vs test population"),
}

_METRICS = ("auroc", "balanced_accuracy_eer", "balanced_accuracy", "tpr_at_fpr_0_1pct",
            "tpr_at_fpr_1pct")
_POOLED_BELOW = 64  # fewer shadows: LR tests pool the variance over examples (LiRA, §VI)
_PAPER_EPS = 1e-22  # the notebook's eps in log(p / (1 − p + eps) + eps)
_PREDICTIONS = ("confidence", "max_confidence_gap", "modified_entropy", "test_confidence",
                "test_max_confidence_gap")
_STORED_BITS = 12  # mantissa bits kept in statistics.npz (relative precision 2⁻¹³ ≈ 1.2e-4)


@dataclasses.dataclass(frozen=True)
class Table1Config(X.ExperimentConfig):
    """The shared experiment settings plus the shadow/target split, the views and the probes.
    ``models`` counts shadows and targets; ``num_probes`` is the white-box probe count."""

    targets: int = setting(3, "held-out target models (the other models are their shadows)",
                           low=1, high=1000)
    zero_order_probes: int = setting(10, "zero-order probes per example and view (the paper: "
                                     "10)", low=1, high=10_000)
    zero_order_dtype: str = setting(
        "float64", "float64 (exact to ~1e-10 at h = 1e-3) or float32 (cancellation error "
        "≈ 1e-7·ℓ/h², as a float32 GPU run)", choices=("float32", "float64"))
    flip_view: bool = setting(True, "also query the horizontal flip (the paper's second view)",
                              flag="--no-flip-view", negate=True)


_CIFAR = dict(datasets=("cifar10",), fallback_dataset=None, augment=True)
CONFIGS = {
    "tiny": Table1Config(name="tiny", train_size=120, test_size=60, models=6, targets=2,
                         epochs=2, model_kwargs={"width": 4, "hidden": 16}, num_probes=2,
                         zero_order_probes=2),
    "small": Table1Config(name="small", models=19, targets=3, epochs=12, num_probes=10),
    "cpu": Table1Config(name="cpu", **_CIFAR, train_size=10_000, test_size=2_000, models=19,
                        targets=3, model="cnn", model_kwargs={"width": 16, "hidden": 512},
                        epochs=20, batch_size=128, learning_rate=0.05, weight_decay=5e-4,
                        num_probes=2, zero_order_probes=2),
    "full": Table1Config(name="full", **_CIFAR, models=67, targets=3, model="resnet18",
                         model_kwargs={"activation": "gelu"}, epochs=100, batch_size=128,
                         learning_rate=0.1, weight_decay=5e-4, num_probes=10,
                         zero_order_probes=10),
}


def get_config(name: str) -> Table1Config:
    """The named config: "tiny" (tests, seconds), "small" (digits, CPU minutes), "cpu" (10,000
    CIFAR-10 images; 51.5 min measured on 2 idle cores) or "full" (all of CIFAR-10, 64 + 3
    ResNet18, GPU)."""
    return X.named_config(CONFIGS, name)


def _validate(config: Table1Config) -> None:
    """ConfigError naming the first bad setting, before any data is read or model trained."""
    X.validate(config)
    X.require_one_dataset(config)
    shadows = config.models - config.targets
    held = int(round(config.fraction * shadows))
    if shadows < 4 or not 2 <= held <= shadows - 2:
        raise ConfigError(
            f"models - targets = {shadows} shadows hold each example {held} times: the attacks "
            "need >= 2 IN and >= 2 OUT shadows per example; raise --models or lower --targets")


# ----------------------------------------------------------------------------------------------
# who trains on what


def shadow_target_masks(num_examples: int, shadows: int, targets: int, *, fraction: float = 0.5,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool (S + T, N), is_target bool (S + T,)): rows 0..S−1 are shadows with balanced
    halves (``jaxcurv.data.subset_masks``: each example IN exactly round(f·S) shadows, seed
    ``seed``), rows S..S+T−1 targets, target t trained on ``random_subset(N, round(f·N),
    seed=seed + 1000 + t)``, independent of the shadows and of each other."""
    from jaxcurv import data as data_lib

    shadow = data_lib.subset_masks(num_examples, shadows, fraction=fraction, seed=seed)
    target = np.zeros((targets, num_examples), bool)
    for t in range(targets):
        target[t, data_lib.random_subset(num_examples, int(round(fraction * num_examples)),
                                         seed=seed + 1000 + t)] = True
    return (np.concatenate([shadow, target]),
            np.concatenate([np.zeros(shadows, bool), np.ones(targets, bool)]))


# ----------------------------------------------------------------------------------------------
# the attacks and the tables, from the stored statistics only


def _check_statistics(statistics: Mapping[str, np.ndarray]) -> None:
    """ValueError naming the first missing or misshapen array."""
    need = ("masks", "is_target", "confidence", "max_confidence_gap", "modified_entropy",
            "curvature", "zero_order", "test_confidence", "test_max_confidence_gap")
    missing = [k for k in need if k not in statistics]
    if missing:
        raise ValueError(f"statistics lack {missing}; they come from this experiment's main()")
    k, n = statistics["masks"].shape
    views = statistics["confidence"].shape[-1]
    for name in ("confidence", "max_confidence_gap", "curvature", "zero_order"):
        if statistics[name].shape != (k, n, views):
            raise ValueError(f"{name} must be (K, N, A) = {(k, n, views)}, got "
                             f"{statistics[name].shape}")
    if statistics["modified_entropy"].shape != (k, n):
        raise ValueError(f"modified_entropy must be (K, N) = {(k, n)}")
    if statistics["is_target"].shape != (k,) or not statistics["is_target"].any():
        raise ValueError("is_target must be bool (K,) with at least one target")


def _paper_max_prob_statistic(max_confidence: np.ndarray) -> np.ndarray:
    """The notebook's "Carlini et al." statistic log(p / (1 − p + ε) + ε), ε = 1e-22, of the max
    probability p as its scores store it (float32: p rounds to 1 above a logit margin of ≈ 17,
    where the statistic saturates at log 1e22)."""
    from scipy import special

    p = special.expit(max_confidence).astype(np.float32).astype(np.float64)
    return np.log(p / (1.0 - p + _PAPER_EPS) + _PAPER_EPS)


def attack_scores(statistics: Mapping[str, np.ndarray], config: Table1Config
                  ) -> dict[tuple[str, str], np.ndarray]:
    """{(attack, mode): scores (T, N)}: row t attacks target t (the t-th row with is_target)
    with the statistics of the shadows (rows without is_target) only; higher = member. mode:
    "paper" (the authors' notebook's statistic), "corrected" (jaxcurv's), "" (one definition)."""
    from scipy import special

    from jaxcurv import mia

    _check_statistics(statistics)
    masks = statistics["masks"].astype(bool)
    target = statistics["is_target"].astype(bool)
    sh, tg = ~target, np.flatnonzero(target)
    conf = statistics["confidence"].astype(np.float64)                          # (K, N, A)
    max_conf = conf + statistics["max_confidence_gap"].astype(np.float64)
    loss = np.logaddexp(0.0, -conf[..., 0])                                     # (K, N)
    prob = special.expit(conf)
    test_prob = special.expit(statistics["test_confidence"].astype(np.float64))
    signals = {"zero_order": statistics["zero_order"].astype(np.float64),
               "curvature": statistics["curvature"].astype(np.float64)}
    paper_max = _paper_max_prob_statistic(max_conf)
    pooled = int(sh.sum()) < _POOLED_BELOW
    shadow_in = masks[sh]

    def each(fn) -> np.ndarray:
        return np.stack([fn(k) for k in tg])

    def shadow_test(attack, stat, **kw):
        return each(lambda k: attack(stat[k], stat[sh], shadow_in, **kw))

    scores = {}
    for name, stat in signals.items():
        floor = np.maximum(stat, 1e-30)  # an exact 0 (float32 underflow) ties at the floor
        scores[(f"{name}_nll", "paper")] = shadow_test(mia.curvature_nll, stat,
                                                       paper_compatible=True)
        scores[(f"{name}_nll", "corrected")] = shadow_test(mia.curvature_nll, floor)
        scores[(f"{name}_lr", "paper")] = shadow_test(mia.curvature_lr, stat,
                                                      paper_compatible=True)
        scores[(f"{name}_lr", "corrected")] = shadow_test(mia.curvature_lr, floor,
                                                          fixed_variance=pooled)
    scores[("lira_max_prob", "paper")] = shadow_test(
        mia.curvature_lr, paper_max, paper_compatible=True, log_transform=False)
    scores[("lira_max_prob", "corrected")] = shadow_test(mia.lira, max_conf,
                                                         fixed_variance=pooled)
    scores[("attack_r", "paper")] = shadow_test(mia.attack_r, loss, alpha=1e-4)
    scores[("attack_r", "corrected")] = shadow_test(mia.attack_r, loss)
    scores[("loss", "")] = each(lambda k: mia.loss_attack(loss[k]))
    scores[("mentr", "")] = each(lambda k: -statistics["modified_entropy"][k].astype(np.float64))
    scores[("calibrated_loss", "")] = shadow_test(mia.calibrated_loss, loss)
    scores[("calibrated_loss_midpoint", "")] = shadow_test(mia.calibrated_loss, loss,
                                                           reference="midpoint")
    scores[("lira_online", "")] = shadow_test(mia.lira, conf, fixed_variance=pooled)
    scores[("lira_offline", "")] = shadow_test(mia.lira, conf, online=False,
                                               fixed_variance=pooled)
    scores[("rmia", "")] = each(lambda k: mia.rmia(prob[k], prob[sh], test_prob[k],
                                                   test_prob[sh], reference_in=shadow_in))
    return scores


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def _table1_row(attack: str, mode: str, per_target: list[dict], config: Table1Config,
                views: int) -> dict:
    """One row of Table 1: the probes and views its statistic used (the paper: 10 zero-order
    probes, 2 views), mean and sd over the targets of each metric, the published numbers and
    the differences ours − published (AUROC and balanced accuracy at the EER threshold)."""
    paper_name, statistic = ATTACKS[(attack, mode)]
    probes = {"zero_order": config.zero_order_probes, "curvature": config.num_probes}.get(
        attack.rsplit("_", 1)[0])
    uses_views = attack.split("_")[0] in ("zero", "curvature", "lira", "rmia")
    row = {"attack": attack, "mode": mode, "paper_name": paper_name, "statistic": statistic,
           "probes": probes, "views": views if uses_views else 1}
    for metric in _METRICS:
        row[metric], row[f"{metric}_sd"] = _mean_sd([m[metric] for m in per_target])
    published = PAPER.get((attack, mode), {})
    for metric in ("auroc", "balanced_accuracy_eer"):
        mean_sd = published.get(metric)
        row[f"paper_{metric}"] = None if mean_sd is None else mean_sd[0] / 100
        row[f"paper_{metric}_sd"] = None if mean_sd is None else mean_sd[1] / 100
        row[f"difference_{metric}"] = (None if mean_sd is None
                                       else row[metric] - mean_sd[0] / 100)
    return row


def _members_table(statistics: Mapping[str, np.ndarray]) -> list[dict]:
    """Per model: its role, training-set size and accuracies (original view)."""
    masks = statistics["masks"].astype(bool)
    correct = statistics["max_confidence_gap"][..., 0] == 0       # arg-max is the label
    test_correct = statistics["test_max_confidence_gap"][..., 0] == 0
    rows = []
    for k, is_target in enumerate(statistics["is_target"].astype(bool)):
        rows.append({"model": k, "role": "target" if is_target else "shadow",
                     "train_examples": int(masks[k].sum()),
                     "train_accuracy": float(correct[k, masks[k]].mean()),
                     "heldout_accuracy": float(correct[k, ~masks[k]].mean()),
                     "test_accuracy": float(test_correct[k].mean())})
    return rows


def _protocol_table(statistics: Mapping[str, np.ndarray]) -> list[dict]:
    """Per target: members, non-members and the IN / OUT shadow counts per example."""
    masks = statistics["masks"].astype(bool)
    target = statistics["is_target"].astype(bool)
    ins = masks[~target].sum(0)
    outs = int((~target).sum()) - ins
    return [{"target_model": int(k), "members": int(masks[k].sum()),
             "nonmembers": int((~masks[k]).sum()), "shadows": int((~target).sum()),
             "in_shadows_min": int(ins.min()), "in_shadows_max": int(ins.max()),
             "out_shadows_min": int(outs.min()), "out_shadows_max": int(outs.max())}
            for k in np.flatnonzero(target)]


def _signals_table(statistics: Mapping[str, np.ndarray]) -> list[dict]:
    """Spearman correlations between the per-model signals over models × examples × views."""
    from scipy import stats

    loss = np.logaddexp(0.0, -statistics["confidence"].astype(np.float64))
    values = {"zero_order": statistics["zero_order"], "curvature": statistics["curvature"],
              "loss": loss}
    pairs = (("zero_order", "curvature"), ("zero_order", "loss"), ("curvature", "loss"))
    return [{"signal": a, "versus": b,
             "spearman": float(stats.spearmanr(values[a].ravel(), values[b].ravel()).statistic)}
            for a, b in pairs]


def tables(statistics: Mapping[str, np.ndarray], config: Table1Config) -> dict[str, list[dict]]:
    """Every table of the run from its per-model statistics (pure; ``experiments.recompute``):
    ``table1`` (mean ± sd over targets beside the published numbers, sorted by AUROC),
    ``per_target`` (each target's metrics), ``members``, ``protocol`` and ``signals``."""
    from jaxcurv import mia

    scores = attack_scores(statistics, config)
    masks = statistics["masks"].astype(bool)
    targets = np.flatnonzero(statistics["is_target"].astype(bool))
    per_target, table1 = [], []
    for (attack, mode), s in scores.items():
        metrics = [mia.roc_metrics(s[t], masks[k]) for t, k in enumerate(targets)]
        per_target += [{"attack": attack, "mode": mode, "target_model": int(k),
                        **{m: met[m] for m in _METRICS}} for k, met in zip(targets, metrics)]
        table1.append(_table1_row(attack, mode, metrics, config,
                                  statistics["confidence"].shape[-1]))
    table1.sort(key=lambda r: -r["auroc"])
    return {"table1": table1, "per_target": per_target, "members": _members_table(statistics),
            "protocol": _protocol_table(statistics), "signals": _signals_table(statistics)}


# ----------------------------------------------------------------------------------------------
# the run


@contextlib.contextmanager
def _stage(timer, cpu: dict, name: str) -> Iterator[None]:
    """Time a stage: wall seconds in ``timer``, process CPU seconds (all threads) in ``cpu``."""
    start = time.process_time()
    with timer(name):
        yield
    cpu[name] = round(cpu.get(name, 0.0) + time.process_time() - start, 1)


def _views(config: Table1Config, images: np.ndarray) -> list[np.ndarray]:
    """The query views: the images and, with flip_view, their horizontal flips."""
    views = [np.asarray(images, np.float32)]
    if config.flip_view:
        views.append(np.ascontiguousarray(views[0][:, :, ::-1]))
    return views


def _predictions(config, ens, data) -> dict[str, np.ndarray]:
    """The _PREDICTIONS arrays (cached): φ, the max-probability gap φ_max − φ (0 where the
    arg-max is the label) and the modified entropy (original view) of every model on every
    training example and view, φ and the gap on the test population."""
    from jaxcurv import ensemble, mia
    from jaxcurv.workflow import ensemble_fingerprint

    def compute():
        labels, test_labels = data.train.labels, data.test.labels
        conf, gap = [], []
        for x in _views(config, data.train.images):
            logits = ensemble.predict(ens, x)                                    # (K, N, C)
            conf.append(mia.logit_confidence(logits, labels[None]))
            gap.append(mia.logit_confidence(logits, logits.argmax(-1)) - conf[-1])
            if len(conf) == 1:
                mentr = mia.modified_entropy(logits, labels[None])
        test, test_gap = [], []
        for x in _views(config, data.test.images):
            logits = ensemble.predict(ens, x)
            test.append(mia.logit_confidence(logits, test_labels[None]))
            test_gap.append(mia.logit_confidence(logits, logits.argmax(-1)) - test[-1])
        return {"confidence": np.stack(conf, -1), "max_confidence_gap": np.stack(gap, -1),
                "modified_entropy": mentr, "test_confidence": np.stack(test, -1),
                "test_max_confidence_gap": np.stack(test_gap, -1)}

    key = (ensemble_fingerprint(ens), data.train.labels, data.test.labels, config.flip_view,
           data.train_index, data.test_index, _PREDICTIONS)
    return X.stage_cache(config).run(f"{EXPERIMENT}-predictions", key, compute)


def _per_member(config, ens, data, name: str, key, settings: tuple, compute_member
                ) -> np.ndarray:
    """compute_member(k, images, key) -> (N,) for every model k and view, (K, N, A), cached one
    model at a time (a killed run resumes at the model it was computing); ``settings``: the
    estimator settings the values depend on (part of the cache key)."""
    import jax

    from jaxcurv.workflow import ensemble_fingerprint

    views = _views(config, data.train.images)

    def chunk(k: int) -> dict[str, np.ndarray]:
        return {"value": np.stack([compute_member(k, x, jax.random.fold_in(key, a))
                                   for a, x in enumerate(views)], -1)[None]}

    cache_key = (ensemble_fingerprint(ens), name, data.train.labels, data.train_index,
                 X.key_data(key), config.flip_view, settings)
    return X.stage_cache(config).run_chunked(f"{EXPERIMENT}-{name}", cache_key, ens.num_members,
                                             chunk, require_finite=True)["value"]


def _curvature(config, ens, data) -> dict[str, np.ndarray]:
    """White-box tr(H²) (Hutchinson, num_probes) and zero-order |uᵀHv| ("mixed",
    zero_order_probes, h) of every model, example and view, (K, N, A) each."""
    import jax.numpy as jnp

    from jaxcurv import ensemble

    labels = data.train.labels
    dtype = jnp.float64 if config.zero_order_dtype == "float64" else None
    # one compiled kernel each, reused for every model and view
    white_box_fn = ensemble.make_member_curvature(ens.model, num_probes=config.num_probes)
    zero_order_fn = ensemble.make_member_zero_order_curvature(
        ens.model, num_probes=config.zero_order_probes, method="mixed", compute_dtype=dtype)

    def white_box(k, x, key):
        return white_box_fn(ens, x, labels, key, members=[k]).trace_sq[0]

    def zero_order(k, x, key):
        return zero_order_fn(ens, x, labels, key, h=config.h, members=[k])[0]

    return {"curvature": np.abs(_per_member(
                config, ens, data, "curvature", X.config_key(config, Stage.CURVATURE),
                (config.num_probes,), white_box)),
            "zero_order": _per_member(
                config, ens, data, "zero_order", X.config_key(config, Stage.ZERO_ORDER),
                (config.zero_order_probes, config.h, config.zero_order_dtype), zero_order)}


def _stored(value: np.ndarray) -> np.ndarray:
    """Floats rounded to _STORED_BITS mantissa bits (float32), so statistics.npz compresses to
    a few MB; integers and bools unchanged. The tables are computed from these values."""
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        return value
    bits = np.ascontiguousarray(value, np.float32).view(np.uint32)
    drop = 23 - _STORED_BITS
    rounded = (bits + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return rounded.view(np.float32)


def _percent(value, sd=None) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{100 * value:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")


def markdown_table(table1: list[dict]) -> str:
    """Table 1 as markdown (percent; mean ± sd over the targets; published = the authors'
    CIFAR-10 row; Δ = ours − published, in points)."""
    head = ("| attack | mode | statistic | probes × views | AUROC | published | Δ | bal. acc. "
            "@EER | published | Δ | best bal. acc. | TPR @ 0.1 % FPR | TPR @ 1 % FPR |")
    lines = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for r in table1:
        probes = f"{r['probes']} × {r['views']}" if r["probes"] else f"— × {r['views']}"
        delta = {m: ("—" if r[f"difference_{m}"] is None else f"{100 * r[f'difference_{m}']:+.2f}")
                 for m in ("auroc", "balanced_accuracy_eer")}
        lines.append(
            f"| {r['paper_name']} (`{r['attack']}`) | {r['mode'] or '—'} | {r['statistic']} | "
            f"{probes} | {_percent(r['auroc'], r['auroc_sd'])} | "
            f"{_percent(r['paper_auroc'], r['paper_auroc_sd'])} | {delta['auroc']} | "
            f"{_percent(r['balanced_accuracy_eer'], r['balanced_accuracy_eer_sd'])} | "
            f"{_percent(r['paper_balanced_accuracy_eer'], r['paper_balanced_accuracy_eer_sd'])} | "
            f"{delta['balanced_accuracy_eer']} | "
            f"{_percent(r['balanced_accuracy'], r['balanced_accuracy_sd'])} | "
            f"{_percent(r['tpr_at_fpr_0_1pct'], r['tpr_at_fpr_0_1pct_sd'])} | "
            f"{_percent(r['tpr_at_fpr_1pct'], r['tpr_at_fpr_1pct_sd'])} |")
    return "\n".join(lines) + "\n"


def _roc_figures(config, statistics, out) -> list[str]:
    """ROC curves (log-log), pooled over the targets: the authors' statistics and ours."""
    from jaxcurv import mia, report

    scores = attack_scores(statistics, config)
    members = statistics["masks"][statistics["is_target"].astype(bool)].astype(bool)
    groups = {"paper": [k for k in scores if k[1] == "paper"] + [("loss", "")],
              "corrected": [k for k in scores if k[1] == "corrected"]
              + [("lira_online", ""), ("rmia", "")]}
    paths = []
    for group, keys in groups.items():
        curves = {f"{a} ({m})" if m else a: mia.roc_curve(scores[(a, m)], members)
                  for a, m in keys}
        aurocs = {k: float(np.trapezoid(tpr, fpr)) for k, (fpr, tpr) in curves.items()}
        path = report.figure_roc(curves, out / f"roc_{group}.png", aurocs=aurocs,
                                 title=f"{group} statistics, {members.shape[0]} targets pooled")
        paths.append(str(path.relative_to(out)))
    return paths


def main(config: Table1Config) -> dict:
    """Train the shadows and targets, compute the signals, save the statistics, write every
    table (:func:`tables`), the ROC figures and summary.json; returns the results."""
    from jaxcurv.workflow import Timer

    _validate(config)
    out = X.output_dir(config, EXPERIMENT)
    timer, cpu = Timer(), {}
    notes = [X.estimator_note(config)]
    with _stage(timer, cpu, "data"):
        data = X.load_data(config.datasets[0], config)
    notes.append(data.note)
    shadows = config.models - config.targets
    masks, is_target = shadow_target_masks(len(data.train), shadows, config.targets,
                                           fraction=config.fraction, seed=config.seed)
    with _stage(timer, cpu, "train"):
        ens = X.train_ensemble(config, data, masks, tag=f"{EXPERIMENT}-{data.slug}",
                               record_examples=False)
    with _stage(timer, cpu, "predict"):
        predictions = _predictions(config, ens, data)
    with _stage(timer, cpu, "curvature (white-box and zero-order)"):
        curvature = _curvature(config, ens, data)
    arrays = {"masks": masks, "is_target": is_target, "labels": data.train.labels,
              "train_index": data.train_index, "test_index": data.test_index,
              **predictions, **curvature}
    stats = X.save_statistics(out, {k: _stored(v) for k, v in arrays.items()})
    with _stage(timer, cpu, "attacks and tables"):
        built = tables(stats, config)
        X.write_tables(out, built)
    (out / "table1.md").write_text(markdown_table(built["table1"]))
    with _stage(timer, cpu, "figures"):
        figures = _roc_figures(config, stats, out)
    results = _results(config, data, built, figures, cpu)
    lines = _lines(config, results)
    lagging = X.lagging_members(stats["max_confidence_gap"][..., 0] == 0, stats["masks"],
                                what="Table 1 models (shadows and targets)")
    X.finish(out, EXPERIMENT, config, results, timer=timer, notes=notes, lines=lines,
             warnings=lagging, command=_command(config), headlines=_headlines(built))
    return results


def _command(config: Table1Config) -> str:
    """The command line that rebuilds ``config``: its named config and a ``--set`` for every
    field that differs from it (progress output aside)."""
    import json
    import shlex

    base = get_config(config.name)
    words = ["python", "-m", f"experiments.{EXPERIMENT}", "--config", config.name]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name != "progress" and value != getattr(base, field.name):
            words += ["--set", f"{field.name}={json.dumps(value)}"]
    return shlex.join(words)


def _headlines(built: Mapping[str, list[dict]]) -> dict[str, dict]:
    """docs/measurements.md's figures: each attack's mean AUROC over the targets (interval:
    min–max over targets) beside the published one, and the models' accuracies."""
    members = built["members"]
    out = {}
    for what in ("train_accuracy", "test_accuracy"):
        values = [m[what] for m in members]
        out[what] = X.headline(np.mean(values), f"{what.replace('_', ' ')} of the models "
                               "(original view)", interval=[min(values), max(values)],
                               over=f"{len(values)} models, min–max")
    for row in built["table1"]:
        per = [r["auroc"] for r in built["per_target"]
               if (r["attack"], r["mode"]) == (row["attack"], row["mode"])]
        name = f"auroc_{row['attack']}" + (f"_{row['mode']}" if row["mode"] else "")
        out[name] = X.headline(row["auroc"], f"AUROC of {row['attack']} ({row['statistic']}), "
                               "mean over targets", interval=[min(per), max(per)],
                               over=f"{len(per)} targets, min–max", paper=row["paper_auroc"])
    return out


def _results(config, data, built, figures, cpu) -> dict:
    """summary.json's results: the protocol in words, accuracies, the table, CPU seconds."""
    members = built["members"]
    protocol = built["protocol"][0]
    shadows = config.models - config.targets
    return {
        "data": data.describe(),
        "protocol": (
            f"{shadows} shadow models on balanced random {config.fraction:.0%} subsets (each "
            f"example IN {protocol['in_shadows_min']}–{protocol['in_shadows_max']} and OUT "
            f"{protocol['out_shadows_min']}–{protocol['out_shadows_max']} shadows) and "
            f"{config.targets} held-out target models on independent random subsets of "
            f"{protocol['members']} examples; each target attacked with the shadows' statistics "
            f"only; views: {'original + horizontal flip' if config.flip_view else 'original'}; "
            f"zero-order curvature with {config.zero_order_probes} probes (h = {config.h}, "
            f"{config.zero_order_dtype}), white-box tr(H²) with {config.num_probes} Hutchinson "
            "probes; metrics per target, mean ± sd (ddof 0) over targets"),
        "paper_source": PAPER_SOURCE,
        "train_accuracy": float(np.mean([m["train_accuracy"] for m in members])),
        "test_accuracy": [m["test_accuracy"] for m in members],
        "table1": built["table1"],
        "protocol_per_target": built["protocol"],
        "signals": built["signals"],
        "figures": figures,
        "cpu_seconds": {**cpu, "total": round(time.process_time(), 1)},
    }


def _lines(config, results: dict) -> list[str]:
    """The printed summary: accuracies and Table 1 beside the published numbers."""
    lines = [f"{results['data']['train_examples']} examples, {config.models - config.targets} "
             f"shadows + {config.targets} targets; train accuracy "
             f"{results['train_accuracy']:.3f}, test accuracy "
             f"{np.mean(results['test_accuracy']):.3f}",
             "attack (mode): AUROC ± sd / bal. acc. @EER / TPR @0.1 % FPR [published AUROC]"]
    for r in results["table1"]:
        paper = (f"  [{100 * r['paper_auroc']:.2f}]" if r["paper_auroc"] is not None else "")
        lines.append(f"  {r['attack']:<26} {r['mode']:<10} {100 * r['auroc']:6.2f} ± "
                     f"{100 * r['auroc_sd']:4.2f} / {100 * r['balanced_accuracy_eer']:6.2f} / "
                     f"{100 * r['tpr_at_fpr_0_1pct']:5.2f}{paper}")
    lines.append("CPU seconds per stage: " + ", ".join(
        f"{k} {v}" for k, v in results["cpu_seconds"].items()))
    return lines


if __name__ == "__main__":
    X.cli(CONFIGS, main, description=__doc__)
