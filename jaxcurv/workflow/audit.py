"""The audit behind ``jaxcurv audit``: data → subset ensemble → predictions → curvature →
zero-order curvature → memorization proxies → membership inference → (DP reference) →
scores.csv, summary.json, figures and report.html.

Each stage is a small function of the config and the outputs of earlier stages. Stages that cost
more than a moment are cached under ``<out>/cache`` (:class:`~jaxcurv.workflow.cache.StageCache`),
keyed on the data actually used and the settings the stage depends on; training is checkpointed
under ``<out>/checkpoints``. A killed run, started again with the same settings, resumes where it
stopped. Every random key is ``run_key(config.seed, Stage.<stage>)`` (:mod:`jaxcurv.workflow.keys`).

Each run owns its outputs: at its start the previous run's scores.csv, summary.json, figures/ and
report.html move to ``<out>/previous`` (so a run that fails or is killed never leaves them looking
current); its own are written into ``<out>/.staging`` and moved into place together at the end,
report.html last. A full disk gives one :class:`jaxcurv.errors.OutputError` line, no temporary
file, and a rerun after freeing space resumes from the cached stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcurv import data as data_lib
from jaxcurv import ensemble as ens_lib
from jaxcurv import memorization, report
from jaxcurv._numerics import cross_entropy, in_out_means, masked_mean
from jaxcurv.curvature import Curvature
from jaxcurv.errors import ConfigError, OutputError
from jaxcurv.optim import OptimizerConfig
from jaxcurv.workflow import sections
from jaxcurv.workflow.attacks import attack_scores
from jaxcurv.workflow.cache import StageCache, fingerprint
from jaxcurv.workflow.config import AuditConfig
from jaxcurv.workflow.environment import environment
from jaxcurv.workflow.flags import command_line
from jaxcurv.workflow.keys import Stage, run_key
from jaxcurv.workflow.lock import exclusive_lock
from jaxcurv.workflow.model_spec import (PYTHON_PREFIX, build_model, factory_digest,
                                         is_factory_path, python_label)
from jaxcurv.workflow.proxy_scores import proxies as _proxies
from jaxcurv.workflow.timing import Timer
from jaxcurv.workflow.training import clean_checkpoints, members_across_processes, train_ensemble

__all__ = ["audit", "AuditResult", "AuditData", "AuditRun", "run_audit", "load_data",
           "train_members", "predict_views",
           "member_curvature", "member_zero_order", "curvature_estimator",
           "zero_order_estimator", "zero_order_member_ids",
           "memorization_proxies", "mia_scores", "nonprivate_reference", "scores_table",
           "checkpoint_folders", "OUTPUTS", "audit_run"]

# settings that change the trained members (the data enters through its fingerprint)
_TRAIN_FIELDS = ("model", "model_kwargs", "models", "epochs", "batch_size", "learning_rate",
                 "weight_decay", "fraction", "optimizer", "rho", "gnr_penalty", "gnr_noise",
                 "augment", "seed")
_DP_FIELDS = ("dp_epsilon", "dp_delta", "dp_clip")
_ADVERSARIAL_OPTIONS = {"num_targets": 3, "pgd_steps": 5, "search_steps": 8}


class AuditData(NamedTuple):
    """The audited data: train (labels after noise) and test splits, the clean labels and which
    were flipped (N,), the members' subset masks bool (K, N) and a fingerprint of all of it."""

    train: data_lib.Dataset
    test: data_lib.Dataset
    true_labels: np.ndarray
    flipped: np.ndarray
    masks: np.ndarray
    fingerprint: str


class AuditRun(NamedTuple):
    """Everything the report is made from. logits (K, A, N, C) over A query views, test_logits
    (K, Z, C); curvature: Curvature of (K, N) fields; zero_order (K, N) or None; proxies and
    scores: dicts of (N,) and (K, N) arrays; reference: the non-private comparison (DP only)."""

    config: AuditConfig
    data: AuditData
    ensemble: Any
    logits: np.ndarray
    test_logits: np.ndarray
    curvature: Curvature
    zero_order: np.ndarray | None
    proxies: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    reference: dict[str, Any] | None


# ----------------------------------------------------------------------------------------------
# stages


def load_data(config: AuditConfig, *, train: data_lib.Dataset | None = None,
              test: data_lib.Dataset | None = None) -> AuditData:
    """Both splits (a seeded random subset of each with max_examples), label noise, masks.
    ``train`` / ``test``: datasets given from Python instead of ``config.dataset``; without
    ``test``, a seeded fifth of ``train`` is held out as the test split."""
    if train is None:
        train, test = data_lib.train_test(config.dataset, data_dir=config.data_dir,
                                          progress=config.progress)
    elif test is None:
        held = data_lib.random_subset(len(train), max(1, len(train) // 5), seed=config.seed)
        test = train.take(held)
        train = train.take(np.setdiff1d(np.arange(len(train)), held))
    if config.max_examples is not None:  # the one sampler: train with seed, test with seed + 1
        train = train.take(data_lib.random_subset(len(train), config.max_examples,
                                                  seed=config.seed))
        test = test.take(data_lib.random_subset(len(test), config.max_examples,
                                                seed=config.seed + 1))
    true_labels = train.labels
    flipped = np.zeros(len(train), bool)
    if config.label_noise > 0:
        noisy, flipped = data_lib.add_label_noise(train.labels, config.label_noise,
                                                  train.num_classes, seed=config.seed)
        train = data_lib.Dataset(train.images, noisy, train.num_classes, train.name,
                                 train.class_names)
    masks = data_lib.subset_masks(len(train), config.models, fraction=config.fraction,
                                  seed=config.seed)
    key = fingerprint(train.images, train.labels, test.images, test.labels, masks,
                      train.num_classes)
    return AuditData(train, test, true_labels, flipped, masks, key)


def _stage_key(config: AuditConfig, data: AuditData, *fields: str, private: bool) -> dict:
    """What a stage's result depends on: the data, the training settings and ``fields``."""
    names = _TRAIN_FIELDS + (_DP_FIELDS if private else ()) + fields
    key = {"data": data.fingerprint, "private": private,
           **{name: getattr(config, name) for name in names}}
    if is_factory_path(config.model):  # an edited factory trains again
        key["model_source"] = factory_digest(config.model)
    return key


def _optimizer(config: AuditConfig) -> OptimizerConfig:
    """The members' optimizer: peak rate from the config (or the optimizer's default), cosine
    schedule, no weight decay unless asked (the members must fit their training labels)."""
    extra = {name: getattr(config, name) for name in ("gnr_penalty", "gnr_noise")
             if getattr(config, name) is not None}
    return OptimizerConfig(name=config.optimizer, learning_rate=config.peak_learning_rate,
                           weight_decay=config.weight_decay, rho=config.rho, **extra)


def _model(config: AuditConfig, data: AuditData, model=None):
    """The model every member instantiates (a jaxcurv.model_interface.Model): ``model`` when
    given from Python, else the zoo's or the factory's ``config.model``."""
    if model is not None:
        return model
    return build_model(config.model, data.train.num_classes, config.model_settings)


def zero_order_member_ids(config: AuditConfig) -> np.ndarray:
    """Indices of the members whose black-box curvature the audit computes (the first M)."""
    m = config.models if config.zero_order_members is None else \
        min(config.zero_order_members, config.models)
    return np.arange(m)


def train_members(config: AuditConfig, data: AuditData, key: jax.Array, *, private: bool,
                  model=None):
    """The K members of ``model`` (default: ``config.model``) on their subsets (DP-SGD when
    ``private``), checkpointed under <out>/checkpoints/<private|nonprivate>-<hash of the settings
    and data>."""
    dp = None
    if private:
        from jaxcurv.privacy import DPConfig

        dp = DPConfig(target_epsilon=config.dp_epsilon, delta=config.dp_delta,
                      l2_clip=config.dp_clip)
    augment = config.augment if config.augment is not None else data.train.images.shape[-1] == 3
    settings = ens_lib.TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, optimizer=_optimizer(config),
        augment=augment, dp=dp, record_examples=True, record_every=_every(config.epochs))
    return train_ensemble(_model(config, data, model), data.train, data.masks, key, settings,
                          test=data.test, checkpoint_every=_every(config.epochs),
                          checkpoint_dir=Path(config.out) / "checkpoints"
                          / _checkpoint_folder(config, data, private), progress=config.progress)


def _every(epochs: int) -> int:
    """Record examples and checkpoint about 12 times per run: on a CPU evaluating every example
    and writing the K members' state each epoch cost nearly as much as the epochs themselves."""
    return max(1, round(epochs / 12))


def _views(images: np.ndarray) -> np.ndarray:
    """Query views for the attacks, (A, N, H, W, C): the image and, for RGB, its mirror."""
    if images.shape[-1] == 3:
        return np.stack([images, images[:, :, ::-1]])
    return images[None]


def predict_views(ens, data: AuditData) -> dict[str, np.ndarray]:
    """logits (K, A, N, C) of the training images over the query views; test_logits (K, Z, C)."""
    predict = ens_lib.make_predict(ens.model)
    logits = np.stack([predict(ens, v) for v in _views(data.train.images)], axis=1)
    return {"logits": logits, "test_logits": predict(ens, data.test.images)}


def member_curvature(config: AuditConfig, ens, data: AuditData, key: jax.Array, *,
                     members=None, estimate=None) -> Curvature:
    """tr(H), tr(H²) and their probe standard errors of the members ``members`` (default all) on
    every training example (exact HVPs, Hutchinson probes): Curvature of (K', N) fields.
    ``estimate``: ``curvature_estimator(config, ens)``, kept by callers that loop."""
    estimate = estimate or curvature_estimator(config, ens)
    return estimate(ens, data.train.images, data.train.labels, key, h=config.h, members=members,
                    progress=config.progress)


def curvature_estimator(config: AuditConfig, ens):
    """The members' curvature kernel (``ensemble.make_member_curvature``) of the audit."""
    return ens_lib.make_member_curvature(ens.model, num_probes=config.num_probes)


def zero_order_estimator(config: AuditConfig, ens):
    """The members' black-box curvature kernel of the audit: "mixed" estimator, float64 on CPU
    (float32 loses most digits to cancellation at h = 1e-3)."""
    dtype = jnp.float64 if jax.default_backend() == "cpu" else None
    return ens_lib.make_member_zero_order_curvature(ens.model, num_probes=config.num_probes,
                                                    method="mixed", compute_dtype=dtype)


def member_zero_order(config: AuditConfig, ens, data: AuditData, key: jax.Array, *,
                      members=None, estimate=None) -> np.ndarray:
    """Black-box curvature |uᵀHv| from losses only of the members ``members`` (default
    ``zero_order_member_ids``) on every training example, (M, N) (``zero_order_estimator``;
    ``estimate``: that kernel, kept by callers that loop)."""
    estimate = estimate or zero_order_estimator(config, ens)
    members = zero_order_member_ids(config).tolist() if members is None else members
    return np.asarray(estimate(ens, data.train.images, data.train.labels, key, h=config.h,
                               members=members, progress=config.progress))


def memorization_proxies(config: AuditConfig, ens, data: AuditData, logits: np.ndarray,
                         curvature: Curvature, key: jax.Array) -> dict[str, np.ndarray]:
    """Memorization proxies (N,) each: confidence, learning time, curvature IN/OUT, and with
    ``config.adversarial`` the adversarial distance."""
    p = _proxies(ens, data.train, key, logits=logits[:, 0], curvature=curvature,
                        adversarial=config.adversarial,
                        adversarial_options=dict(_ADVERSARIAL_OPTIONS), progress=config.progress)
    return {name: np.asarray(v, float) for name, v in p.items()}


def mia_scores(data: AuditData, logits, test_logits, curvature: Curvature,
               zero: np.ndarray | None) -> dict[str, np.ndarray]:
    """Leave-one-model-out scores (K, N) of every attack (white-box curvature = tr(H²))."""
    return attack_scores(logits, data.train.labels, data.masks, np.abs(curvature.trace_sq), zero,
                         test_logits, data.test.labels)


def nonprivate_reference(config: AuditConfig, data: AuditData, cache: StageCache,
                         model=None) -> dict[str, Any]:
    """DP runs: the same members trained without DP, for the cost of privacy: their test accuracy
    (K,), Feldman–Zhang memorization (N,), mean IN tr(H²) and tr(H) (N,), and the scores (K, N)
    of every attack but the zero-order ones (``scores``), each stage cached."""
    timer = cache.timer if cache.timer is not None else Timer()
    if config.progress:
        _say("non-private reference: the same members trained without DP, to measure what DP "
             "costs and buys")
    with timer("train_nonprivate_reference"):
        ens = train_members(config, data, run_key(config.seed, Stage.TRAIN), private=False,
                            model=model)
    stage_key = _stage_key(config, data, "num_probes", "h", private=False)

    def compute():
        logits = ens_lib.predict(ens, data.train.images, progress=False)
        curv = ens_lib.member_curvature(ens, data.train.images, data.train.labels,
                                        run_key(config.seed, Stage.REFERENCE_CURVATURE),
                                        num_probes=config.num_probes, progress=config.progress)
        return {"correct": logits.argmax(-1) == data.train.labels[None], "trace": curv.trace,
                "trace_sq": curv.trace_sq}

    ref = cache.run("reference", stage_key, compute)
    pred = cache.run("reference_predictions", stage_key, lambda: predict_views(ens, data))
    scores = cache.run("reference_attacks", stage_key, lambda: attack_scores(
        pred["logits"], data.train.labels, data.masks, np.abs(ref["trace_sq"]), None,
        pred["test_logits"], data.test.labels))
    mem, _ = memorization.feldman_zhang(ref["correct"], data.masks)
    return {"test_accuracy": np.asarray(ens.history["test_accuracy"][-1]), "mem": mem,
            "curvature_in": masked_mean(ref["trace_sq"], data.masks),
            "curvature_trace_in": masked_mean(ref["trace"], data.masks), "scores": scores}


def scores_table(run: AuditRun) -> dict[str, np.ndarray]:
    """scores.csv: one row per training example (IN = mean over members holding it, OUT = over
    the others, ALL = over every member). ``curvature`` is the papers' Curv, the tr(H²) = E‖Hv‖²
    estimate (≥ 0; ICML 2024 Figs. 3, 5 and Curvature Clues) over IN members (what one trained
    model gives for its own training examples); ``curvature_out`` over OUT members (Thm 5.1
    bounds memorization by the curvature of models trained on S without the example) and
    ``curvature_all`` over all members (§6.3 averages every model); ``curvature_trace*`` the
    same for tr(H) (the appendix variant, Figs. 14–16), signed. ``mem_lower``: the lower end
    of mem's 95 % Agresti–Caffo interval (the findings count an example as highly memorized when
    it exceeds 0.5). ``mia_<attack>``: the attack's mean score over the members holding the
    example, higher = more likely a member."""
    data, masks, curv = run.data, run.data.masks, run.curvature
    logits = run.logits[:, 0]
    correct = logits.argmax(-1) == data.train.labels[None]
    mem, mem_stderr = memorization.feldman_zhang(correct, masks)
    mem_lower, _ = memorization.memorization_interval(correct, masks,
                                                      confidence=sections.MEM_CONFIDENCE)
    sq_in, sq_in_se, sq_out = in_out_means(curv.trace_sq, masks)
    tr_in, tr_in_se, tr_out = in_out_means(curv.trace, masks)
    columns: dict[str, Any] = {
        "index": np.arange(len(data.train)), "label": data.train.labels,
        "curvature": sq_in, "curvature_stderr": sq_in_se, "curvature_out": sq_out,
        "curvature_all": np.mean(np.asarray(curv.trace_sq, np.float64), axis=0),
        "curvature_trace": tr_in, "curvature_trace_stderr": tr_in_se,
        "curvature_trace_out": tr_out,
        "curvature_trace_all": np.mean(np.asarray(curv.trace, np.float64), axis=0),
        "loss": masked_mean(cross_entropy(logits, data.train.labels[None]), masks),
        "correct": masked_mean(correct.astype(float), masks),
        "mem": mem, "mem_stderr": mem_stderr, "mem_lower": mem_lower,
    }
    if run.zero_order is not None:
        z_in, _, z_out = in_out_means(run.zero_order, masks[:len(run.zero_order)])
        columns.update(zero_order=z_in, zero_order_out=z_out)
    for name in ("confidence", "learning_time", "inverse_learning_time", "adversarial_distance"):
        if name in run.proxies:
            columns[name] = run.proxies[name]
    if run.config.label_noise > 0:
        columns.update(true_label=data.true_labels, flipped=data.flipped)
    for name, s in run.scores.items():
        columns[f"mia_{name}"] = masked_mean(s, masks[:len(s)])
    return columns


# ----------------------------------------------------------------------------------------------
# the audit


def _say(message: str) -> None:
    print(f"[jaxcurv audit] {message}", flush=True)


def _stage_keys(config: AuditConfig, data: AuditData) -> dict[str, dict]:
    """What each cached stage depends on (each key chains the keys of its inputs)."""
    base = _stage_key(config, data, private=config.private)
    curv = {**base, "num_probes": config.num_probes, "h": config.h}
    keys = {"predictions": base, "curvature": curv,
            "proxies": {**curv, "adversarial": config.adversarial},
            "attacks": {**curv, "zero_order": config.zero_order,
                        "zero_order_members": zero_order_member_ids(config).tolist()}}
    if config.zero_order:
        keys["zero_order"] = {**curv, "backend": jax.default_backend(),
                              "members": zero_order_member_ids(config).tolist()}
    return keys


def _per_member(cache: StageCache, name: str, key: dict, members, compute, finite) -> dict:
    """A member-by-member stage saved one member at a time (a kill loses at most one member);
    in a multi-process job the members are split over the processes instead."""
    members = [int(m) for m in members]
    if jax.process_count() > 1:
        return cache.run(name, key, lambda: members_across_processes(
            lambda rows: compute(rows.tolist()), members), require_finite=finite)
    return cache.run_chunked(name, key, len(members), lambda i: compute([members[i]]),
                             require_finite=finite)


def _compute(config: AuditConfig, cache: StageCache, timer: Timer, given: dict) -> AuditRun:
    """Every stage up to the attack scores, cached where costly; ``given``: the model and
    datasets a Python caller passed (see :func:`run_audit`)."""
    with timer("data"):
        data = load_data(config, train=given.get("train"), test=given.get("test"))
    model = _model(config, data, given.get("model"))  # a factory is called here, before training
    keys = _stage_keys(config, data)
    resume = cache.describe_resume(keys)
    if resume and config.progress:
        _say(resume)
    with timer("train"):
        ens = train_members(config, data, run_key(config.seed, Stage.TRAIN),
                            private=config.private, model=model)
    pred = cache.run("predictions", keys["predictions"], lambda: predict_views(ens, data),
                     require_finite=True)
    quiet = dataclasses.replace(config, progress=False)  # one member at a time: no inner bars
    curvature_fn = curvature_estimator(config, ens)  # one compiled kernel for every member
    curv = Curvature(**_per_member(
        cache, "curvature", keys["curvature"], range(config.models),
        lambda ms: member_curvature(quiet, ens, data, run_key(config.seed, Stage.CURVATURE),
                                    members=ms, estimate=curvature_fn)._asdict(),
        ("trace", "trace_sq")))
    zero = None
    if config.zero_order:
        zero_fn = zero_order_estimator(config, ens)
        zero = _per_member(
            cache, "zero_order", keys["zero_order"], zero_order_member_ids(config),
            lambda ms: {"zero_order": member_zero_order(
                quiet, ens, data, run_key(config.seed, Stage.ZERO_ORDER), members=ms,
                estimate=zero_fn)},
            True)["zero_order"]
    proxy = cache.run("proxies", keys["proxies"],
                      lambda: memorization_proxies(config, ens, data, pred["logits"], curv,
                                                   run_key(config.seed, Stage.PROXIES)))
    with warnings.catch_warnings():  # the summary's warnings report it, also when cached
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="zero-order attacks on .* have no IN or no OUT shadow")
        scores = cache.run("attacks", keys["attacks"],
                           lambda: mia_scores(data, pred["logits"], pred["test_logits"], curv,
                                              zero),
                           require_finite=True)
    ref = nonprivate_reference(config, data, cache, model) if config.private else None
    if config.clean:
        removed = clean_checkpoints(Path(config.out) / "checkpoints",
                                    keep=checkpoint_folders(config, data))
        if removed and config.progress:
            _say(f"removed {len(removed)} checkpoint folder(s) of other configurations")
    return AuditRun(config, data, ens, pred["logits"], pred["test_logits"], curv, zero, proxy,
                    scores, ref)


def _checkpoint_folder(config: AuditConfig, data: AuditData, private: bool) -> str:
    """<private|nonprivate>-<hash of the training settings and data>: one folder per ensemble."""
    tag = "private" if private else "nonprivate"
    return f"{tag}-{fingerprint(_stage_key(config, data, private=private))[:16]}"


def checkpoint_folders(config: AuditConfig, data: AuditData) -> list[str]:
    """Names of the checkpoint folders under <out>/checkpoints this configuration uses."""
    names = [_checkpoint_folder(config, data, False)]
    if config.private:
        names.append(_checkpoint_folder(config, data, True))
    return names


class _ReadOnlyCache(StageCache):
    """The stage cache as processes other than 0 of a multi-process job use it: they read the
    entries process 0 writes (``out`` is shared) and write none themselves."""

    def _write(self, path: Path, full_key: str, name: str, arrays) -> dict[str, np.ndarray]:
        return {str(k): np.asarray(v) for k, v in arrays.items()}


def _per_target_auroc(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """AUROC of each target member's scores (K,) over its examples (members = its subset)."""
    from sklearn.metrics import roc_auc_score

    keep = [np.isfinite(s) for s in scores]
    return np.array([roc_auc_score(masks[k][keep[k]], scores[k][keep[k]])
                     for k in range(len(scores))])


def headlines(run: AuditRun, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The audit's headline figures for docs/measurements.md, each with an interval over the
    trained members (training randomness): test accuracy (min–max over members), each attack's
    AUROC (min–max over the members attacked in turn), Spearman(mem, curvature), ε when private,
    and how well each signal ranks flipped labels."""
    from jaxcurv.workflow.experiment import headline

    acc = summary["accuracy"]
    per_member = np.asarray(acc["test_per_member"], float)
    out = {"test_accuracy": headline(acc["test_mean"], "test accuracy, mean over members",
                                     interval=[per_member.min(), per_member.max()],
                                     over=f"{len(per_member)} members, min–max"),
           "train_in_accuracy": headline(acc["train_in_mean"], "accuracy of members on their "
                                         "own training examples"),
           "spearman_mem_curvature": headline(
               summary["correlations"]["spearman_mem_curvature"],
               "Spearman(memorization, curvature tr(H²)) over training examples")}
    masks = run.data.masks
    for row in summary["mia"]["metrics"]:
        scores = run.scores.get(row["attack"])
        if scores is None:
            continue
        per_target = _per_target_auroc(np.asarray(scores), masks[:len(scores)])
        out[f"auroc_{row['attack']}"] = headline(
            row["auroc"], f"AUROC of the {row['attack']} attack, pooled over targets",
            interval=[per_target.min(), per_target.max()],
            over=f"{len(per_target)} target members, min–max of per-target AUROC")
    if "privacy" in summary:
        out["epsilon"] = headline(summary["privacy"]["epsilon_accounted"],
                                  f"ε accounted (δ = {summary['privacy']['delta']:g})")
    for name, value in summary.get("label_noise", {}).get("ranking", {}).items():
        out[f"flipped_auroc_{name}"] = headline(value["auroc"], f"AUROC of {name} at ranking "
                                                "the flipped labels first")
    return out


def run_audit(config: AuditConfig, *, model=None, train: data_lib.Dataset | None = None,
              test: data_lib.Dataset | None = None) -> dict[str, Any]:
    """Run the whole audit; returns the summary (also written to <out>/summary.json).

    ``model``: a model object of any kind jaxcurv.model_interface.as_model accepts, instead of
    ``config.model`` (the summary then names it "python: <kind> <name> [<source digest>]", which
    also keys the cache); ``train`` / ``test``: Datasets instead of ``config.dataset`` (see
    :func:`load_data`). A multi-process job (config.coordinator / num_processes / process_id,
    JAX_COORDINATOR_ADDRESS etc., or a cluster launcher) runs it in every process: members and
    their curvature are split over the processes and gathered (jaxcurv.distributed), training
    checkpoints are saved by all processes together, process 0 alone writes the stage cache and
    the reports, and every process returns after the reports exist. ``out`` must then be a
    folder every process sees."""
    from jaxcurv import distributed
    from jaxcurv.model_interface import as_model

    if not isinstance(config, AuditConfig):
        raise ValueError(f"config must be an AuditConfig, got {type(config).__name__}")
    config.validate()
    given: dict[str, Any] = {}
    if model is not None:
        if config.model_kwargs is not None:
            raise ConfigError("model_kwargs applies to a zoo name or a factory path, not to a "
                              "model object: build the object with its options")
        given["model"] = as_model(model)
        config = dataclasses.replace(config, model=python_label(given["model"], model))
    if test is not None and train is None:
        raise ConfigError("test data without train data: give both, or neither (then "
                          "config.dataset is loaded)")
    if train is not None:
        given.update(train=train, test=test)
        config = dataclasses.replace(config, dataset=PYTHON_PREFIX + train.name)
    distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    writer = distributed.is_writer()
    config = config if writer else dataclasses.replace(config, progress=False)
    out = Path(config.out)
    with exclusive_lock(out) if writer else contextlib.nullcontext():
        return _run_locked(config, out, writer, given)


def audit_run(config: AuditConfig) -> AuditRun:
    """The audit's stages up to the attack scores, from the same cache and checkpoints as
    :func:`run_audit` with the same config (after it, nothing is recomputed), without writing
    reports: for experiments that need the per-member arrays (single process only)."""
    if not isinstance(config, AuditConfig):
        raise ValueError(f"config must be an AuditConfig, got {type(config).__name__}")
    config.validate()
    out = Path(config.out)
    with exclusive_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        timer = Timer()
        cache = StageCache(out / "cache", timer=timer, log=_say if config.progress else None)
        return _compute(config, cache, timer, {})


def _run_locked(config: AuditConfig, out: Path, writer: bool, given: dict) -> dict[str, Any]:
    """The audit, holding the lock on ``out`` (process 0 of a multi-process job)."""
    from jaxcurv import distributed

    out.mkdir(parents=True, exist_ok=True)
    distributed.barrier("jaxcurv audit: start")
    timer = Timer()
    cache = (StageCache if writer else _ReadOnlyCache)(
        out / "cache", timer=timer, log=_say if config.progress else None)
    if writer:
        cache.clean_temporary()
        previous = report.retire_outputs(out, OUTPUTS)
        if previous is not None and config.progress:
            _say(f"the previous run's outputs are now in {previous}")
    run = _compute(config, cache, timer, given)
    columns = scores_table(run)
    summary = sections.summary(run, columns)
    summary["command"] = command_line("jaxcurv audit", config)
    summary["environment"] = environment()
    summary["headlines"] = headlines(run, summary)
    if writer:
        _write_outputs(run, columns, summary, out, timer)
    else:
        summary["timings_s"], summary["figures"] = timer.total(), {}
    distributed.barrier("jaxcurv audit: reports written")
    return summary


# The audit's outputs in --out, in the order they are published (report.html last: a folder
# holding it holds the whole set of one run).
OUTPUTS = ("scores.csv", "summary.json", "figures", "report.html")


def _write_outputs(run: AuditRun, columns: dict[str, np.ndarray], summary: dict[str, Any],
                   out: Path, timer: Timer) -> None:
    """scores.csv, figures, summary.json and report.html written into <out>/.staging, then moved
    into ``out`` together (report.files.publish_outputs), so they always belong to this run. A
    failed write (disk full) raises OutputError; the cached stages stay valid for a rerun."""
    stage = out / report.STAGING
    try:
        if stage.exists():
            shutil.rmtree(stage)
        report.write_csv(stage / "scores.csv", columns)
        figures = sections.figures(run, columns, summary, stage / "figures")
        summary["timings_s"] = timer.total()
        summary["figures"] = {name: str(Path(p).relative_to(stage)) for name, p in figures.items()}
        report.write_json(stage / "summary.json", summary)
        report.write_html(stage / "report.html", title=sections.title(run),
                          sections=sections.report_sections(run, summary, figures))
        report.publish_outputs(stage, out, OUTPUTS)
    except OSError as err:
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
        reason = cause.strerror or str(cause) or type(cause).__name__
        raise OutputError(f"could not write the report under {out}: {reason}; free space there "
                          "(or pass another --out) and rerun the same command: the finished "
                          "stages are cached and are not computed again") from err


# ----------------------------------------------------------------------------------------------
# from Python


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """What :func:`audit` returns: ``scores`` (a pandas DataFrame with the columns of
    scores.csv, one row per training example), ``summary`` (the content of summary.json),
    ``report_path`` (report.html) and ``out`` (the output folder)."""

    scores: Any
    summary: dict[str, Any]
    report_path: Path
    out: Path


def _as_dataset(value: Any, what: str) -> data_lib.Dataset:
    """A Dataset, or (images, labels) numpy arrays made one (Dataset.from_arrays)."""
    if isinstance(value, data_lib.Dataset):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return data_lib.Dataset.from_arrays(*value, name=what)
    raise ConfigError(f"{what} must be a jaxcurv.data.Dataset or a pair (images (N, H, W[, C]), "
                      f"labels (N,)) of arrays, got {type(value).__name__}")


def audit(model, train, test=None, *, out: str | Path | None = None,
          **settings: Any) -> AuditResult:
    """Every stage of ``jaxcurv audit`` on your own model and data, with the same cache,
    checkpoints, resume and report.

    ``model``: a flax linen Module, a flax NNX Module class or factory ``f(rngs=...)``, an Equinox
    factory ``f(key=...)``, a pair of functions ``(init, apply)`` (jaxcurv.model_interface), or a
    zoo name / ``package.module:factory`` path as on the command line. ``train`` / ``test``:
    :class:`jaxcurv.data.Dataset` or (images, labels) numpy arrays (images (N, H, W[, C]) uint8 or
    float in [0, 1]); without ``test`` a seeded fifth of ``train`` is held out. ``out``: the output
    folder (default results/audit); ``settings``: any of ``jaxcurv audit``'s settings by field
    name (``jaxcurv.workflow.AuditConfig``, e.g. ``models=16, epochs=20, dp_epsilon=8``;
    ``preset=``), validated before anything is computed.
    """
    from jaxcurv.workflow.config import with_preset

    for name in ("model", "dataset", "data_dir"):
        if name in settings:
            raise ConfigError(f"audit() takes the model and the data as arguments, not as the "
                              f"setting {name!r}")
    train = _as_dataset(train, "train")
    test = None if test is None else _as_dataset(test, "test")
    if test is not None and test.num_classes != train.num_classes:
        classes = max(train.num_classes, test.num_classes)
        train, test = (dataclasses.replace(d, num_classes=classes) for d in (train, test))
    given = dict(settings, **({} if out is None else {"out": str(out)}))
    if isinstance(model, str):
        given["model"] = model
    config = with_preset(AuditConfig, given)
    run_audit(config, model=None if isinstance(model, str) else model, train=train, test=test)
    import json

    import pandas

    folder = Path(config.out)
    return AuditResult(pandas.read_csv(folder / "scores.csv"),
                       json.loads((folder / "summary.json").read_text()), folder / "report.html",
                       folder)
