"""The audit pipeline behind ``jaxcurv audit``: data → subset ensemble → curvature → memorization →
membership inference → (DP) → scores.csv, summary.json, figures and report.html.

Every stage that costs more than a moment is cached under ``<out>/cache`` with a fingerprint of
the configuration, and training is checkpointed under ``<out>/checkpoints``: a killed run,
started again with the same arguments, resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from jaxcurv import data as data_lib
from jaxcurv import ensemble as ens_lib
from jaxcurv import memorization, mia, models, report
from jaxcurv.memorization import masked_mean as member_mean
from jaxcurv.curvature import Curvature, zero_order_curvature
from jaxcurv.optim import OptimizerConfig

__all__ = ["AuditConfig", "run_audit", "MIA_ATTACKS", "attack_scores", "mia_by_memorization",
           "in_out_means", "member_mean", "epsilon_audit"]

MIA_ATTACKS = ("loss", "mentr", "calibrated_loss", "attack_r", "lira_online", "lira_offline",
               "rmia", "curvature_lr", "curvature_nll", "zero_order_lr", "zero_order_nll")


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything ``jaxcurv audit`` can be told; defaults run on the embedded digits in minutes."""

    dataset: str = "digits"
    model: str = "cnn"
    models: int = 32
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float | None = None
    fraction: float = 0.5
    num_probes: int = 10
    zero_order: bool = True
    adversarial: bool = False
    h: float = 1e-3
    label_noise: float = 0.0
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    optimizer: str = "sgd"
    rho: float = 0.05
    augment: bool | None = None
    seed: int = 0
    out: str = "results/audit"
    data_dir: str | None = None
    max_examples: int | None = None
    bootstrap: int = 100
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting, before any data is read or trained."""
        if self.model not in models.MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {models.MODEL_NAMES}")
        for name in ("models", "epochs", "batch_size", "num_probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.models < 6:
            raise ValueError("--models must be >= 6: each member in turn is an attack target "
                             "whose shadows need at least two members holding each example in "
                             "and two holding it out")
        if not 0 < self.fraction < 1:
            raise ValueError(f"--fraction must be in (0, 1), got {self.fraction}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"--label-noise must be in [0, 1), got {self.label_noise}")
        if self.dp_epsilon is not None and not (math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0):
            raise ValueError(f"--dp-epsilon must be > 0, got {self.dp_epsilon}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"--dp-delta must be in (0, 1), got {self.dp_delta}")
        if self.optimizer not in ("sgd", "adam", "sam"):
            raise ValueError(f"--optimizer must be sgd, adam or sam, got {self.optimizer!r}")
        if self.dp_epsilon is not None and self.optimizer == "sam":
            raise ValueError("--dp-epsilon cannot be combined with --optimizer sam")
        if self.dp_epsilon is not None and self.model == "resnet18":
            raise ValueError("DP-SGD needs a model without BatchNorm: use --model resnet18_gn")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not self.h > 0:
            raise ValueError(f"--h must be > 0, got {self.h}")
        if self.bootstrap < 0:
            raise ValueError("--bootstrap must be >= 0")
        if self.max_examples is not None and self.max_examples < 2 * self.models:
            raise ValueError(f"--max-examples must be >= 2 × --models = {2 * self.models}")


# ----------------------------------------------------------------------------------------------
# stage cache


class _Stages:
    """Caches stage outputs (dicts of arrays) as npz under out/cache, keyed by a fingerprint."""

    def __init__(self, out: Path, fingerprint: str, progress: bool):
        self.dir = out / "cache"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.progress = progress
        self.timings: dict[str, float | str] = {}

    @contextlib.contextmanager
    def timed(self, name: str):
        """Record the wall time of an uncached step."""
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)

    def run(self, name: str, fn: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        path = self.dir / f"{name}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if str(z["__fingerprint__"]) == self.fingerprint:
                    self.timings[name] = "cached"
                    self._say(f"{name}: cached")
                    return {k: z[k] for k in z.files if k != "__fingerprint__"}
        self._say(f"{name} …")
        with self.timed(name):
            result = fn()
        tmp = self.dir / f"{name}.tmp.npz"
        np.savez(tmp, __fingerprint__=np.asarray(self.fingerprint), **result)
        tmp.replace(path)
        self._say(f"{name}: {self.timings[name]} s")
        return result

    def _say(self, message: str) -> None:
        if self.progress:
            print(f"[jaxcurv audit] {message}", flush=True)


def _fingerprint(config: AuditConfig) -> str:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "progress")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# stages


def _load_data(config: AuditConfig):
    train = data_lib.load(config.dataset, split="train", data_dir=config.data_dir)
    test = data_lib.load(config.dataset, split="test", data_dir=config.data_dir)
    if config.max_examples is not None:  # a random subset of each split (seeded)
        rng = np.random.default_rng(config.seed)
        train, test = (d.take(np.sort(rng.choice(len(d), min(len(d), config.max_examples),
                                                 replace=False))) for d in (train, test))
    true_labels = train.labels
    flipped = np.zeros(len(train), bool)
    if config.label_noise > 0:
        noisy, flipped = data_lib.add_label_noise(train.labels, config.label_noise,
                                                  train.num_classes, seed=config.seed)
        train = data_lib.Dataset(train.images, noisy, train.num_classes, train.name,
                                 train.class_names)
    return train, test, true_labels, flipped


def _optimizer(config: AuditConfig) -> OptimizerConfig:
    """Peak learning rate 0.05 unless given: on digits, DP-SGD at ε = 1 reached 0.69 mean test
    accuracy with 0.05, 0.32 with 0.2 and 0.28 with 0.5 (BUILD_NOTES), so DP uses it too."""
    return OptimizerConfig(name=config.optimizer, learning_rate=config.learning_rate or 0.05,
                           rho=config.rho)


def _train(config: AuditConfig, train, test, masks, key, out: Path, *, private: bool):
    from jaxcurv.privacy import DPConfig

    dp = None
    if private:
        dp = DPConfig(target_epsilon=config.dp_epsilon, delta=config.dp_delta, l2_clip=config.dp_clip)
    augment = config.augment if config.augment is not None else train.images.shape[-1] == 3
    tag = "private" if private else "nonprivate"
    return ens_lib.train(config.model, train, masks, key, epochs=config.epochs,
                         batch_size=config.batch_size,
                         optimizer=_optimizer(config), augment=augment,
                         dp=dp, test=test, record_examples=True,
                         checkpoint_dir=out / "checkpoints" / f"{tag}-{_fingerprint(config)}",
                         progress=config.progress)


def _views(images: np.ndarray) -> np.ndarray:
    """Query views for the attacks, (A, N, H, W, C): the image and, for RGB, its mirror."""
    if images.shape[-1] == 3:
        return np.stack([images, images[:, :, ::-1]])
    return images[None]


def attack_scores(logits, labels, masks, curvature, zero_order, test_logits, test_labels,
                  ) -> dict[str, np.ndarray]:
    """Leave-one-model-out scores (K, N) of every attack in MIA_ATTACKS (each member in turn the
    target, the others its shadows). logits (K, A, N, C) over A query views; curvature and
    zero_order (K, N) positive statistics (tr(H²), |uᵀHv|) or None; test_logits (K, Z, C) of the
    population for RMIA."""
    k = logits.shape[0]
    floor = lambda c: np.maximum(c, 1e-30)  # the attacks take log c: an exact 0 (a saturated
    # softmax's Hessian underflowing in float32) ties at the floor instead of raising
    pooled = k < 64  # few shadows: one global variance per group (Carlini et al. 2022, §VI)
    conf = mia.logit_confidence(logits, labels[None, None])          # (K, A, N)
    conf = np.moveaxis(conf, 1, -1)                                   # (K, N, A)
    loss = mia.cross_entropy(logits[:, 0], labels[None])              # (K, N)
    scores = {
        "loss": mia.loss_attack(loss),
        "mentr": mia.mentr_attack(logits[:, 0], labels[None]),
        "calibrated_loss": mia.leave_one_model_out(mia.calibrated_loss, loss, masks),
        "attack_r": mia.leave_one_model_out(mia.attack_r, loss, masks),
        "lira_online": mia.leave_one_model_out(mia.lira, conf, masks, online=True,
                                               fixed_variance=pooled),
        "lira_offline": mia.leave_one_model_out(mia.lira, conf, masks, online=False,
                                                fixed_variance=pooled),
        "curvature_lr": mia.leave_one_model_out(mia.curvature_lr, floor(curvature), masks,
                                                fixed_variance=pooled),
        "curvature_nll": mia.leave_one_model_out(mia.curvature_nll, floor(curvature), masks),
    }
    if zero_order is not None:
        scores["zero_order_lr"] = mia.leave_one_model_out(mia.curvature_lr, floor(zero_order),
                                                          masks, fixed_variance=pooled)
        scores["zero_order_nll"] = mia.leave_one_model_out(mia.curvature_nll, floor(zero_order),
                                                           masks)
    probs = mia.true_class_probability(logits[:, 0], labels[None])           # (K, N)
    population = mia.true_class_probability(test_logits, test_labels[None])  # (K, Z)
    scores["rmia"] = mia.rmia_leave_one_model_out(probs, masks, population)
    assert all(s.shape == (k, len(labels)) for s in scores.values())
    return scores


def in_out_means(values: np.ndarray, masks: np.ndarray):
    """(mean over IN members, its stderr, mean over OUT members) per example."""
    mean_in = member_mean(values, masks)
    mean_out = member_mean(values, ~masks)
    n_in = masks.sum(0)
    dev = np.where(masks, values - mean_in[None], 0.0)
    sd = np.sqrt((dev**2).sum(0) / np.maximum(n_in - 1, 1))
    return mean_in, np.where(n_in > 1, sd / np.sqrt(np.maximum(n_in, 1)), np.nan), mean_out


def mia_by_memorization(scores, masks, correct, *, edges=(0.0, 0.1, 0.3, 0.5, 0.7, 1.0),
                        min_examples: int = 5) -> list[dict[str, float]]:
    """Figure 9 table: per memorization bin, AUROC and balanced accuracy of an attack on the
    (target member, example) pairs of that bin, and the in-member accuracy of those examples.

    Cross-fitted (memorization.cross_fitted_memorization): a target's examples are binned by the
    memorization estimated from the other half of the members. Binning by a score computed from
    the target's own correctness would select on the outcome (e.g. mem < 0 picks examples the
    in-members got wrong) and bias the per-bin attack success.
    """
    mem = memorization.cross_fitted_memorization(correct, masks).ravel()
    s, m, c = scores.ravel(), masks.ravel(), correct.ravel()
    clipped = np.clip(mem, edges[0], edges[-1])
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        sel = np.isfinite(mem) & (clipped >= lo) & ((clipped <= hi) if last else (clipped < hi))
        if sel.sum() < min_examples or m[sel].all() or not m[sel].any():
            continue
        metrics = mia.roc_metrics(s[sel], m[sel])
        rows.append({"mem_lo": float(lo), "mem_hi": float(hi),
                     "mem_center": float(np.mean(mem[sel])), "pairs": int(sel.sum()),
                     "auroc": float(metrics["auroc"]),
                     "balanced_accuracy": float(metrics["balanced_accuracy"]),
                     "train_accuracy": float(c[sel & m].mean())})
    return rows


def epsilon_audit(score: np.ndarray, member: np.ndarray, delta: float, seed: int) -> dict:
    """ε lower bound from one target model's scores: threshold chosen on a random half of the
    examples, Clopper–Pearson bound evaluated on the other half (no selection bias)."""
    from jaxcurv.privacy import epsilon_lower_bound

    rng = np.random.default_rng(seed)
    half = rng.permutation(len(score)) < len(score) // 2

    def counts(threshold, where):
        guess = score[where] >= threshold
        mem = member[where]
        return int((guess & mem).sum()), int((guess & ~mem).sum()), int(mem.sum()), int((~mem).sum())

    candidates = np.quantile(score[half], np.linspace(0.5, 0.999, 60))
    best = max(candidates, key=lambda t: epsilon_lower_bound(*counts(t, half), delta=delta))
    tp, fp, p, n = counts(best, ~half)
    return {"epsilon_lower_bound": epsilon_lower_bound(tp, fp, p, n, delta=delta),
            "threshold": float(best), "true_positives": tp, "false_positives": fp,
            "positives": p, "negatives": n, "confidence": 0.95}


# ----------------------------------------------------------------------------------------------
# the audit


def run_audit(config: AuditConfig) -> dict[str, Any]:
    """Run the whole audit; returns the summary (also written to <out>/summary.json)."""
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stages = _Stages(out, _fingerprint(config), config.progress)
    key = jax.random.PRNGKey(config.seed)
    with stages.timed("data"):
        train, test, true_labels, flipped = _load_data(config)
    n, k = len(train), config.models
    masks = data_lib.subset_masks(n, k, fraction=config.fraction, seed=config.seed)
    private = config.dp_epsilon is not None

    with stages.timed("train"):
        ens = _train(config, train, test, masks, jax.random.fold_in(key, 1), out, private=private)
    reference = None
    if private:
        with stages.timed("train_nonprivate_reference"):
            reference = _train(config, train, test, masks, jax.random.fold_in(key, 1), out,
                               private=False)

    def predictions():
        views = _views(train.images)
        logits = np.stack([ens_lib.predict(ens, v, progress=False) for v in views], axis=1)
        return {"logits": logits, "test_logits": ens_lib.predict(ens, test.images, progress=False)}

    pred = stages.run("predictions", predictions)
    logits = pred["logits"]                                          # (K, A, N, C)

    def curvature():
        c = ens_lib.member_curvature(ens, train.images, train.labels, jax.random.fold_in(key, 2),
                                     num_probes=config.num_probes, h=config.h,
                                     progress=config.progress)
        return {"trace": c.trace, "trace_sq": c.trace_sq, "trace_stderr": c.trace_stderr}

    curv = stages.run("curvature", curvature)

    zero = None
    if config.zero_order:
        def zero_order():
            loss_fn = ens_lib._loss_fn(ens.model)
            dtype = jnp.float64 if jax.default_backend() == "cpu" else None
            rows = [zero_order_curvature(loss_fn, ens.member(j), train.images, train.labels,
                                         jax.random.fold_in(jax.random.fold_in(key, 3), j),
                                         num_probes=config.num_probes, h=config.h,
                                         method="mixed", compute_dtype=dtype, progress=False)
                    for j in tqdm(range(k), desc="member zero-order curvature", leave=False,
                                  disable=not config.progress)]
            return {"zero_order": np.stack(rows)}

        zero = stages.run("zero_order", zero_order)["zero_order"]

    correct_final = logits[:, 0].argmax(-1) == train.labels[None]            # (K, N)
    loss_final = mia.cross_entropy(logits[:, 0], train.labels[None])          # (K, N)
    mem, mem_stderr = memorization.feldman_zhang(correct_final, masks)

    def proxies():
        p = memorization.proxies(
            ens, train, jax.random.fold_in(key, 4), logits=logits[:, 0],
            curvature=Curvature(curv["trace"], curv["trace_sq"], curv["trace_stderr"],
                                curv["trace_stderr"]),
            adversarial=config.adversarial, progress=config.progress,
            adversarial_options=dict(num_targets=3, pgd_steps=5, search_steps=8))
        return {name: np.asarray(v, float) for name, v in p.items()}

    proxy = stages.run("proxies", proxies)

    def attacks():
        return attack_scores(logits, train.labels, masks, np.abs(curv["trace_sq"]),
                              None if zero is None else zero, pred["test_logits"], test.labels)

    scores = stages.run("attacks", attacks)

    # ---- per-example table --------------------------------------------------------------------
    curv_in, curv_in_se, curv_out = in_out_means(curv["trace"], masks)
    sq_in, _, sq_out = in_out_means(curv["trace_sq"], masks)
    columns: dict[str, Any] = {
        "index": np.arange(n), "label": train.labels,
        "curvature": curv_in, "curvature_stderr": curv_in_se, "curvature_sq": sq_in,
        "curvature_out": curv_out, "curvature_sq_out": sq_out,
        "loss": member_mean(loss_final, masks),
        "correct": member_mean(correct_final.astype(float), masks),
        "mem": mem, "mem_stderr": mem_stderr,
    }
    if zero is not None:
        z_in, _, z_out = in_out_means(zero, masks)
        columns.update(zero_order=z_in, zero_order_out=z_out)
    for name in ("confidence", "learning_time", "inverse_learning_time", "adversarial_distance"):
        if name in proxy:
            columns[name] = proxy[name]
    if config.label_noise > 0:
        columns.update(true_label=true_labels, flipped=flipped)
    for name, s in scores.items():
        columns[f"mia_{name}"] = member_mean(s, masks)
    report.write_csv(out / "scores.csv", columns)

    # ---- summary ------------------------------------------------------------------------------
    figures_dir = out / "figures"
    test_acc = ens.history["test_accuracy"][-1]
    summary: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "data": {"dataset": train.name, "train_examples": n, "test_examples": len(test),
                 "image_shape": list(train.images.shape[1:]), "num_classes": train.num_classes},
        "accuracy": {"test_mean": float(test_acc.mean()), "test_min": float(test_acc.min()),
                     "test_per_member": test_acc,
                     "train_in_mean": float(correct_final[masks].mean()),
                     "train_out_mean": float(correct_final[~masks].mean())},
        "curvature": _describe(curv_in, "tr(H), mean over members holding the example in")
        | {"trace_sq": _describe(sq_in, "tr(H²) in")["summary"],
           "out": _describe(curv_out, "tr(H) out")["summary"],
           "mean_probe_stderr": float(np.nanmean(curv["trace_stderr"]))},
        "memorization": {"mean": float(np.nanmean(mem)), "top_1pct_mean": float(np.nanmean(
            np.sort(mem[np.isfinite(mem)])[::-1][:max(1, n // 100)])),
            "fraction_above_0_5": float(np.nanmean(mem > 0.5))},
        "correlations": {"spearman_mem_curvature": _rho(mem, curv_in),
                         "spearman_mem_curvature_sq": _rho(mem, sq_in),
                         "proxies": memorization.correlations(mem, proxy)},
    }
    pooled_member = masks.ravel()
    cluster = np.broadcast_to(np.arange(n), masks.shape).ravel()
    mia_rows, curves, aurocs = [], {}, {}
    for name, s in scores.items():
        metrics = mia.roc_metrics(s.ravel(), pooled_member, bootstrap=config.bootstrap,
                                  seed=config.seed, cluster=cluster)
        mia_rows.append({"attack": name, **{m: metrics[m] for m in (
            "auroc", "balanced_accuracy", "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct")},
            **({"auroc_ci": metrics["auroc_ci"]} if "auroc_ci" in metrics else {})})
        curves[name] = mia.roc_curve(s.ravel(), pooled_member)
        aurocs[name] = float(metrics["auroc"])
    summary["mia"] = {"protocol": f"leave-one-model-out over {k} members (each member the target, "
                                  "the others its shadows), pooled over members × examples",
                      "metrics": mia_rows}
    best = "lira_online"
    by_mem = mia_by_memorization(scores[best], masks, correct_final)
    summary["mia"]["by_memorization"] = {"attack": best, "bins": by_mem}

    figs = {
        "extreme": report.figure_extreme_images(train.images, train.labels, curv_in,
                                                figures_dir / "lowest_highest_curvature.png",
                                                class_names=train.class_names),
        "hist": report.figure_curvature_histogram(curv_in, columns["correct"] >= 0.5,
                                                  figures_dir / "curvature_histogram.png"),
        "mem_curv": report.figure_mem_vs_curvature(mem, curv_in, figures_dir / "mem_vs_curvature.png"),
        "proxies": report.figure_proxies_vs_mem(mem, proxy, figures_dir / "proxies_vs_mem.png"),
        "trace_sq": report.figure_trace_vs_trace_sq(curv_in, sq_in, mem,
                                                    figures_dir / "trace_vs_trace_sq.png"),
        "roc": report.figure_roc(curves, figures_dir / "mia_roc.png", aurocs=aurocs),
        "mia_mem": report.figure_mia_vs_mem({best: by_mem}, figures_dir / "mia_vs_memorization.png"),
    }
    sections = [
        {"title": "Accuracy", "tables": [[{"members": k, "epochs": config.epochs,
                                            "test accuracy (mean)": float(test_acc.mean()),
                                            "test accuracy (min)": float(test_acc.min()),
                                            "train accuracy (in)": float(correct_final[masks].mean()),
                                            "held-out accuracy (out)": float(correct_final[~masks].mean())}]]},
        {"title": "Curvature (Figure 2)", "text": "Per-example tr(∇²ₓℓ) by exact Hessian-vector "
         "products and Hutchinson probes, averaged over the members trained on the example.",
         "figures": [figs["extreme"], figs["hist"]]},
        {"title": "Memorization and curvature (Figures 3, 10–16)",
         "tables": [[{"proxy": name, **vals} for name, vals in
                     summary["correlations"]["proxies"].items()]],
         "figures": [figs["mem_curv"], figs["proxies"], figs["trace_sq"]]},
        {"title": "Membership inference", "text": summary["mia"]["protocol"],
         "tables": [mia_rows, by_mem], "figures": [figs["roc"], figs["mia_mem"]]},
    ]

    if config.label_noise > 0:
        ranking = {"curvature": memorization.rank_flipped(curv_in, flipped),
                   "curvature_sq": memorization.rank_flipped(sq_in, flipped),
                   "mem": memorization.rank_flipped(np.nan_to_num(mem, nan=-1), flipped),
                   "loss": memorization.rank_flipped(columns["loss"], flipped)}
        summary["label_noise"] = {"fraction": config.label_noise, "flipped": int(flipped.sum()),
                                  "ranking": ranking}
        figs["noise"] = report.figure_label_noise(
            {"curvature": curv_in, "mem": mem, "loss": columns["loss"]}, flipped,
            figures_dir / "label_noise.png")
        sections.append({"title": "Finding mislabeled examples",
                         "tables": [[{"score": s, **r} for s, r in ranking.items()]],
                         "figures": [figs["noise"]]})

    if private:
        summary["privacy"] = _privacy_summary(config, ens, reference, masks, mem, curv_in,
                                              loss_final, scores[best], train, figures_dir, figs)
        sections.append({"title": "Differential privacy",
                         "tables": [[{k2: v for k2, v in summary["privacy"].items()
                                      if not isinstance(v, (dict, list))}]],
                         "figures": [figs["privacy"]]})

    summary["timings_s"] = {**stages.timings, "total": round(time.perf_counter() - t_start, 2)}
    summary["figures"] = {name: str(Path(p).relative_to(out)) for name, p in figs.items()}
    sections.append({"title": "Timings (s)", "tables": [[summary["timings_s"]]]})
    report.write_json(out / "summary.json", summary)
    report.write_html(out / "report.html", title=f"jaxcurv audit — {train.name}, {config.model}, "
                      f"{k} members", sections=sections)
    return summary


def _describe(values, what: str) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return {"what": what, "summary": {"mean": float(v.mean()), "median": float(np.median(v)),
                                      "p05": float(np.quantile(v, 0.05)),
                                      "p95": float(np.quantile(v, 0.95)),
                                      "max": float(v.max())}}


def _rho(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def _privacy_summary(config, ens, reference, masks, mem, curv_in, loss_final, target_scores,
                     train, figures_dir, figs) -> dict:
    """ε accounted vs audited, accuracy cost and shifts of mem and curvature against non-private."""
    ref_logits = ens_lib.predict(reference, train.images, progress=False)
    ref_correct = ref_logits.argmax(-1) == train.labels[None]
    ref_mem, _ = memorization.feldman_zhang(ref_correct, masks)
    ref_curv = ens_lib.member_curvature(reference, train.images, train.labels,
                                        jax.random.PRNGKey(config.seed + 7),
                                        num_probes=config.num_probes, progress=False)
    ref_curv_in = member_mean(ref_curv.trace, masks)
    eps = float(ens.privacy["epsilon_max"])
    audit = epsilon_audit(target_scores[0], masks[0], config.dp_delta, config.seed)
    loss_bound = float(np.nanmax(loss_final))  # L: the largest training loss of any member
    figs["privacy"] = report.figure_privacy_bounds(mem, curv_in, eps, figures_dir /
                                                   "privacy_bounds.png", loss_bound=loss_bound,
                                                   num_examples=int(masks.sum(1).mean()))
    acc_dp = float(ens.history["test_accuracy"][-1].mean())
    acc_ref = float(reference.history["test_accuracy"][-1].mean())
    return {
        "epsilon_accounted": eps, "delta": config.dp_delta,
        "noise_multiplier": ens.privacy["noise_multiplier"], "l2_clip": config.dp_clip,
        "epsilon_audited_lower_bound": audit["epsilon_lower_bound"],
        "audit": audit | {"attack": "lira_online", "target": "member 0 (one training run)"},
        "test_accuracy_private": acc_dp, "test_accuracy_nonprivate": acc_ref,
        "accuracy_cost": acc_ref - acc_dp,
        "mem_mean_private": float(np.nanmean(mem)), "mem_mean_nonprivate": float(np.nanmean(ref_mem)),
        "mem_bound": 1 - math.exp(-eps),
        "fraction_mem_above_bound": float(np.nanmean(mem > 1 - math.exp(-eps))),
        "curvature_mean_private": float(np.nanmean(curv_in)),
        "curvature_mean_nonprivate": float(np.nanmean(ref_curv_in)),
        "loss_bound_L": loss_bound,
        "curvature_bound_thm_5_3": loss_bound * (masks.sum(1).mean() + 1) * (1 - math.exp(-eps)),
    }
