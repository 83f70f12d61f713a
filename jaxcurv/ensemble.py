"""Vectorized ensembles: K models trained on random subsets in one jit, vmapped over members.

Member k trains only on the examples where ``masks[k]`` is true, with its own init key, data order,
augmentation and (for DP) noise and Poisson sampling, all derived from (key, member id, epoch) so
that results do not depend on how members are chunked or sharded, and a killed run resumes to the
same result. Parameters of the K members are stacked on a leading axis. ``train`` takes a
:class:`TrainConfig` (or its fields as keywords); compiled functions are built once per call of
``train`` and, for ``predict`` / ``member_curvature`` / ``member_zero_order_curvature``, held on
the :class:`Ensemble`, so nothing is cached at module level. Training stops with
:class:`TrainingDiverged` at the first epoch whose loss explodes or parameters are not finite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcurv import distributed, models
from jaxcurv._checkpoints import Checkpoints, clean_checkpoints, fingerprint
from jaxcurv._tree import stack, unstack
from jaxcurv._validate import check_float, check_int, check_masks, check_positive_int
from jaxcurv.errors import TrainingDiverged
from jaxcurv.curvature import make_input_curvature
from jaxcurv.data import Dataset, augment as augment_image
from jaxcurv.optim import OptimizerConfig, make_optimizer
from jaxcurv._ensemble_eval import (
    _dtype_name,
    _make_logits_fn,
    _member_logits,
    _stacked,
    accuracy,
    member_curvature,
    member_loss_fn,
    member_zero_order_curvature,
    predict,
)
from jaxcurv._multiprocess import _process_block, _shared
from jaxcurv.training import (
    DPStep,
    TrainState,
    epoch_plan,
    init_state,
    make_epoch_fn,
    make_step_at,
    make_train_step,
    poisson_epoch_plan,
)

__all__ = [
    "Ensemble",
    "TrainConfig",
    "TrainingDiverged",
    "clean_checkpoints",
    "train",
    "fit_one",
    "predict",
    "accuracy",
    "member_loss_fn",
    "member_curvature",
    "member_zero_order_curvature",
]

_DIVERGED_LOSS = 1e4  # mean training cross-entropy beyond any fit (ln C ≤ 10 for C ≤ 22026)


@dataclasses.dataclass(eq=False)
class Ensemble:
    """K trained members. ``variables``: flax variables stacked on a leading K axis (host numpy);
    ``masks`` (K, N) bool training subsets; ``member_ids`` (K,) the ids their keys derive from;
    ``history``: per-epoch arrays ("train_loss", "train_accuracy" (E, K), "test_accuracy" (E, K),
    and when recorded "correct", "loss", "curvature" (E, K, N)); ``config`` echoes the run;
    ``privacy`` holds σ, δ, sampling rates and ε spent per member for DP runs (else None).
    The ensemble holds its compiled inference functions, so repeated ``predict`` calls reuse them.
    """

    model: nn.Module
    variables: dict
    masks: np.ndarray
    member_ids: np.ndarray
    history: dict
    config: dict
    privacy: dict | None = None
    _kernels: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def num_members(self) -> int:
        return int(self.masks.shape[0])

    def member(self, k: int) -> dict:
        """Flax variables of member k (unstacked)."""
        return unstack(self.variables, k)

    def _kernel(self, name: Any, build: Callable[[], Callable]) -> Callable:
        """The compiled function ``name`` of this ensemble, built on first use."""
        if name not in self._kernels:
            self._kernels[name] = build()
        return self._kernels[name]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains an ensemble; every field may also be passed to it as a keyword.

    ``optimizer``: "sgd" | "adam" | "sam" or an OptimizerConfig (``learning_rate`` overrides its
    rate). ``augment``: True (crop padding 4 for ≥16 px images, else 1; flip for RGB) or a dict of
    jaxcurv.data.augment keywords. ``dp``: a jaxcurv.privacy.DPConfig for DP-SGD.
    ``record_examples``: per-epoch correctness and loss of every member on every training example;
    ``record_curvature=P``: per-epoch input curvature tr(H) with P probes (costly).
    ``record_every=R``: the per-epoch records (test accuracy, examples, curvature) every R-th
    epoch and at the last one only (history rows = recorded epochs), since on a CPU evaluating
    every example each epoch costs nearly as much as the epoch itself.
    ``checkpoint_dir``: orbax checkpoints every ``checkpoint_every`` epochs; the same call resumes
    from the last one to the same result as an uninterrupted run (each checkpoint is verified
    against a checksum; a damaged one is discarded with a RuntimeWarning, never used).
    ``members_per_chunk``: members vmapped together (default: all on GPU/TPU; on CPU 1 for
    conv nets, where a vmap over conv weights runs as slower grouped convolutions, and for
    DP-SGD; dense-only models up to 1 GiB of training state), chunks run in turn, members
    sharded over ``devices`` (default all local). ``dp_microbatch_size``: DP-SGD's per-example
    gradients formed that many rows at a time (default: the whole padded batch; on CPU 1 for
    dense-only models, about 5× faster there). ``member_ids``: what member keys derive from (default 0..K−1).
    ``steps_per_epoch``: default ⌈largest subset / batch_size⌉. ``scan_steps``: an epoch as one
    lax.scan (default on GPU/TPU) or a host loop of async steps (CPU, where XLA runs convolutions
    in loop bodies slowly). ``init_transform``: fn(variables) -> variables for each member's
    initial variables (e.g. models.init_fastnet_whitening). ``callbacks``: fn(epoch, info).
    """

    epochs: int
    batch_size: int = 128
    optimizer: str | OptimizerConfig = "sgd"
    learning_rate: float | None = None
    augment: bool | dict = False
    label_smoothing: float = 0.0
    dp: Any = None
    record_examples: bool = False
    record_curvature: int = 0
    record_every: int = 1
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 1
    members_per_chunk: int | None = None
    dp_microbatch_size: int | None = None
    devices: Sequence[jax.Device] | None = None
    compute_dtype: Any = None
    member_ids: Sequence[int] | None = None
    steps_per_epoch: int | None = None
    scan_steps: bool | None = None
    init_transform: Callable[[dict], dict] | None = None
    progress: bool = False
    callbacks: Sequence[Callable[[int, dict], None]] = ()

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every", "record_every"):
            check_positive_int(name, getattr(self, name))
        for name in ("members_per_chunk", "dp_microbatch_size", "steps_per_epoch"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_int("record_curvature (0 = off, else a number of probes)", self.record_curvature,
                  minimum=0)
        check_float("label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0,
                    allow_maximum=False)
        _optimizer_config(self.optimizer, self.learning_rate)
        if self.augment is not None and not isinstance(self.augment, (bool, dict)):
            raise ValueError(f"augment must be a bool or a dict of augment() keywords, "
                             f"got {self.augment!r}")


# ----------------------------------------------------------------------------------------------
# validation


def _train_config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """``config`` with ``overrides`` (TrainConfig fields) applied; unknown names are refused."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"train got unknown keyword(s) {unknown}; the settings are the fields of "
                         f"TrainConfig: {fields}")
    if config is None:
        if "epochs" not in overrides:
            raise ValueError("train needs epochs=... (or a TrainConfig as config=)")
        return TrainConfig(**overrides)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides)


def _resolve_model(model, dataset: Dataset) -> nn.Module:
    if isinstance(model, str):
        return models.get_model(model, dataset.num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a flax.linen.Module or a model name, got {type(model)}")
    return model


def _check_member_ids(member_ids, k_total: int) -> np.ndarray:
    ids = np.arange(k_total) if member_ids is None else np.asarray(member_ids)
    if (ids.shape != (k_total,) or not np.issubdtype(ids.dtype, np.integer)
            or len(set(ids.tolist())) != k_total):
        raise ValueError(f"member_ids must be {k_total} distinct integers, got {member_ids!r}")
    return ids.astype(np.int64)


def _optimizer_config(optimizer, learning_rate) -> OptimizerConfig:
    if isinstance(optimizer, str):
        config = OptimizerConfig(name=optimizer)
    elif isinstance(optimizer, OptimizerConfig):
        config = optimizer
    else:
        raise ValueError(f"optimizer must be a name or an OptimizerConfig, got {optimizer!r}")
    if learning_rate is not None:
        config = dataclasses.replace(config, learning_rate=learning_rate)
    return config


def _augment_options(augment, image_shape) -> dict | None:
    """Keywords for jaxcurv.data.augment, or None when ``augment`` is off."""
    if not augment:
        return None
    if augment is True:
        h, _, c = image_shape
        return {"padding": 4 if h >= 16 else 1, "flip": c == 3}
    return augment


# Memory a CPU chunk of dense members may take for params, gradients and two optimizer moments.
_CPU_CHUNK_BYTES = 1 << 30


def _abstract_variables(model, input_shape) -> dict:
    """The model's variables as shapes and dtypes only (``jax.eval_shape``: nothing computed)."""
    return jax.eval_shape(lambda k: models.init_variables(model, k, input_shape),
                          jax.random.PRNGKey(0))


def _dense_only(abstract) -> bool:
    """No parameter of ``abstract`` (variables) has more than 2 axes: no convolution kernel."""
    leaves = jax.tree_util.tree_leaves(abstract.get("params", abstract))
    return all(len(leaf.shape) <= 2 for leaf in leaves)


def _cpu_members_per_chunk(abstract, k_total: int, private: bool) -> int:
    """Members vmapped together on a CPU: 1 for models with convolution kernels (a vmap over
    conv weights runs as slower grouped convolutions) and under DP-SGD (its per-example
    gradients already hold batch × params floats per member); for dense-only models as many as
    fit ``_CPU_CHUNK_BYTES`` (params, gradients, two moments in float32), since K batched matmuls
    run about twice as fast as K single ones (BUILD_NOTES, "Dense members on a CPU")."""
    if private or not _dense_only(abstract):
        return 1
    return max(1, min(k_total, _CPU_CHUNK_BYTES // max(16 * models.count_params(abstract), 1)))


def _cpu_dp_microbatch(abstract) -> int | None:
    """DP-SGD's per-example gradients on a CPU: one example at a time (``lax.scan``) for
    dense-only models, whose vmapped per-example outer products XLA:CPU forms about 5× slower
    than a scan of single gradients; the whole padded batch (None) for conv nets, where the
    vmap is faster (BUILD_NOTES, "Dense members on a CPU")."""
    return 1 if _dense_only(abstract) else None


# ----------------------------------------------------------------------------------------------
# DP resolution


def _resolve_dp(dp, subsets, batch_size: int, total_steps: int, abstract):
    """DPConfig → (DPStep, max batch size, privacy report); refuses BatchNorm models (from the
    model's ``abstract`` variables)."""
    if models.uses_batch_norm(abstract):
        raise ValueError(
            "DP-SGD needs per-example gradients, but this model has BatchNorm (statistics shared "
            "across examples): use 'resnet18_gn' (GroupNorm) or a model without BatchNorm"
        )
    smallest = min(len(s) for s in subsets)
    if batch_size > smallest:
        raise ValueError(f"batch_size {batch_size} exceeds a member's subset size {smallest}")
    # σ for the largest sampling rate; then each member's plan (its q, ε, padded batch size with
    # the overflow union bound over every step of every member) from DPConfig.resolve
    sigma = dp.resolve_noise_multiplier(batch_size / smallest, total_steps)
    fixed = dataclasses.replace(dp, noise_multiplier=sigma, target_epsilon=None)
    plans = [fixed.resolve(num_examples=len(s), batch_size=batch_size, steps=total_steps,
                           num_members=len(subsets)) for s in subsets]
    eps = [p.epsilon for p in plans]
    max_batch = max(p.max_batch_size for p in plans)
    report = {"noise_multiplier": sigma, "l2_clip": dp.l2_clip, "delta": dp.delta,
              "accountant": dp.accountant, "sampling_rates": [p.sampling_rate for p in plans],
              "steps": total_steps, "epsilon": eps, "epsilon_max": max(eps),
              "target_epsilon": dp.target_epsilon, "max_batch_size": int(max_batch)}
    return DPStep(dp.l2_clip, sigma, float(batch_size)), int(max_batch), report


# ----------------------------------------------------------------------------------------------
# training stages


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What :func:`train` derives from its inputs before compiling anything."""

    model: nn.Module
    masks: np.ndarray
    member_ids: np.ndarray
    subsets: list
    input_shape: tuple
    optimizer: OptimizerConfig
    steps_per_epoch: int
    total_steps: int
    dp_step: DPStep | None
    max_batch: int | None
    privacy: dict | None
    devices: tuple
    chunk_k: int
    dp_microbatch: int | None
    scan_steps: bool
    seed: int
    echo: dict


def _make_plan(model, dataset: Dataset, masks, key, cfg: TrainConfig) -> _Plan:
    """Validate the inputs against each other and resolve every default (host only)."""
    model = _resolve_model(model, dataset)
    masks = check_masks("masks", masks, len(dataset))
    k_total = masks.shape[0]
    member_ids = _check_member_ids(cfg.member_ids, k_total)
    if not np.isfinite(dataset.images).all():
        raise ValueError("dataset images contain NaN or inf")
    optimizer = _optimizer_config(cfg.optimizer, cfg.learning_rate)
    subsets = [np.flatnonzero(m) for m in masks]
    largest = max(len(s) for s in subsets)
    input_shape = tuple(dataset.images.shape[1:])
    steps = cfg.steps_per_epoch or math.ceil(largest / cfg.batch_size)
    on_cpu = jax.default_backend() == "cpu"
    abstract = (_abstract_variables(model, input_shape) if cfg.dp is not None or on_cpu
                else None)
    dp_step, max_batch, privacy = None, None, None
    if cfg.dp is not None:
        if optimizer.is_sam:
            raise ValueError("DP-SGD with SAM is not supported: use optimizer 'sgd' or 'adam'")
        dp_step, max_batch, privacy = _resolve_dp(cfg.dp, subsets, cfg.batch_size,
                                                  cfg.epochs * steps, abstract)
    elif steps * cfg.batch_size < largest:
        raise ValueError("steps_per_epoch × batch_size is smaller than a member's subset")
    devs = tuple(jax.local_devices() if cfg.devices is None else cfg.devices)
    chunk_k = cfg.members_per_chunk or (_cpu_members_per_chunk(abstract, k_total,
                                                               cfg.dp is not None)
                                        if on_cpu else k_total)
    chunk_k = -(-chunk_k // len(devs)) * len(devs)
    dp_microbatch = cfg.dp_microbatch_size
    if cfg.dp is not None and dp_microbatch is None and on_cpu:
        dp_microbatch = _cpu_dp_microbatch(abstract)
    seed = int(np.asarray(jax.random.randint(key, (), 0, 2**31 - 1)))
    echo = {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "optimizer": dataclasses.asdict(optimizer), "augment": cfg.augment,
            "label_smoothing": cfg.label_smoothing, "steps_per_epoch": steps, "dp": privacy,
            "record_examples": cfg.record_examples, "record_curvature": cfg.record_curvature,
            "record_every": cfg.record_every, "compute_dtype": str(cfg.compute_dtype), "dataset": dataset.name,
            "num_members": k_total, "model": type(model).__name__,
            "init_transform": getattr(cfg.init_transform, "__qualname__",
                                      repr(cfg.init_transform))}
    return _Plan(model, masks, member_ids, subsets, input_shape, optimizer, steps,
                 cfg.epochs * steps, dp_step, max_batch, privacy, devs, chunk_k, dp_microbatch,
                 (not on_cpu) if cfg.scan_steps is None else bool(cfg.scan_steps), seed, echo)


def _build_training(plan: _Plan, cfg: TrainConfig) -> tuple[Callable, Callable]:
    """(init_fn(keys) -> stacked TrainState, epoch_fn(state, images, labels, idx, w, keys)),
    jitted for this call of :func:`train`."""
    model = plan.model
    tx = make_optimizer(plan.optimizer, plan.total_steps)
    options = _augment_options(cfg.augment, plan.input_shape)
    augment = None if options is None else functools.partial(augment_image, **options)
    step = make_train_step(model, tx, config=plan.optimizer, dp=plan.dp_step, augment=augment,
                           label_smoothing=float(cfg.label_smoothing),
                           compute_dtype=cfg.compute_dtype, dp_microbatch_size=plan.dp_microbatch)
    init_fn = jax.jit(jax.vmap(lambda k: init_state(model, tx, k, plan.input_shape)))
    if plan.scan_steps:
        epoch_fn = jax.jit(jax.vmap(make_epoch_fn(step), in_axes=(0, None, None, 0, 0, 0)),
                           donate_argnums=0)
        return init_fn, epoch_fn
    step_fn = jax.jit(jax.vmap(make_step_at(step), in_axes=(0, None, None, 0, 0, 0, None)),
                      donate_argnums=0)

    def epoch_fn(state, images, labels, idx, w, keys):
        metrics = []
        for s in range(plan.steps_per_epoch):  # dispatched asynchronously: no host sync here
            state, m = step_fn(state, images, labels, idx, w, keys, s)
            metrics.append(m)
        return state, jax.tree.map(lambda *a: jnp.stack(a, axis=1), *metrics)

    return init_fn, epoch_fn


class _Compiled(NamedTuple):
    """The compiled functions and device-resident data of one :func:`train` call."""

    init_fn: Callable
    epoch_fn: Callable
    record: Callable
    member_sharding: Any
    images: jax.Array
    labels: jax.Array


def _make_recorder(plan: _Plan, cfg: TrainConfig, dataset: Dataset, test: Dataset | None,
                   logits_fn: Callable) -> Callable:
    """``record(state, metrics, member_ids, key) -> dict``: per-epoch host records, (K,) summaries
    and, when asked, (K, N) per-example arrays; its curvature estimator is built here, once."""
    curvature = None
    if cfg.record_curvature:
        curvature = make_input_curvature(models.make_loss_fn(plan.model),
                                         num_probes=cfg.record_curvature,
                                         compute_dtype=cfg.compute_dtype)

    def record(state: TrainState, metrics, member_ids, key) -> dict[str, np.ndarray]:
        count = np.asarray(metrics["count"])
        out = {}
        if "loss" in metrics:
            weight = np.maximum(count.sum(1), 1)
            out["train_loss"] = (np.asarray(metrics["loss"]) * count).sum(1) / weight
            out["train_accuracy"] = (np.asarray(metrics["accuracy"]) * count).sum(1) / weight
        else:
            out["dp_nonfinite"] = np.asarray(metrics["dp_num_nonfinite"]).sum(1)
        variables = _variables(state)
        if test is not None:
            logits = _member_logits(logits_fn, variables, test.images)
            out["test_accuracy"] = (logits.argmax(-1) == test.labels[None]).mean(1)
        if cfg.record_examples:
            logits = _member_logits(logits_fn, variables, dataset.images)
            out["correct"] = logits.argmax(-1) == dataset.labels[None]
            out["loss"] = np.asarray(models.cross_entropy(jnp.asarray(logits),
                                                          jnp.asarray(dataset.labels)[None]))
        if curvature is not None:
            keys = [jax.random.fold_in(key, int(m)) for m in member_ids]
            rows = _stacked(curvature, variables, range(len(member_ids)), keys, dataset.images,
                            dataset.labels, progress=False, desc="")
            out["curvature"] = np.stack([r.trace for r in rows])
        return out

    return record


def _variables(state: TrainState) -> dict:
    """Flax variables of a (stacked) TrainState: params, and batch_stats when there is BatchNorm."""
    variables = {"params": state.params}
    if models.uses_batch_norm({"batch_stats": state.batch_stats}):
        variables["batch_stats"] = state.batch_stats
    return variables


def _transform_init(state: TrainState, transform, sharding) -> TrainState:
    """Apply ``transform`` to each member's initial variables and restack."""
    variables = _variables(state)
    members = [transform(unstack(variables, k))
               for k in range(jax.tree.leaves(state.params)[0].shape[0])]
    stacked = jax.device_put(stack(members), sharding)
    return state._replace(params=stacked["params"],
                          batch_stats=stacked.get("batch_stats", state.batch_stats))


def _member_keys(key, member_ids, purpose: int):
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, int(m)), purpose)
                      for m in member_ids])


def _placement(devices: tuple) -> tuple[Any, Any]:
    """(sharding of the member axis, replicated sharding) over ``devices``."""
    if len(devices) == 1:
        return devices[0], devices[0]
    mesh = Mesh(np.asarray(devices), ("members",))
    return NamedSharding(mesh, P("members")), NamedSharding(mesh, P())


def _epoch_batches(plan: _Plan, batch_size: int, subsets, ids, epoch: int):
    """(idx, weights) (K, S, B) of one epoch: shuffled batches, or Poisson batches for DP."""
    if plan.dp_step is None:
        return epoch_plan(subsets, batch_size, steps=plan.steps_per_epoch, seed=plan.seed,
                          epoch=epoch, member_ids=ids)
    rates = [batch_size / len(s) for s in subsets]
    return poisson_epoch_plan(subsets, rates, steps=plan.steps_per_epoch,
                              max_batch_size=plan.max_batch, seed=plan.seed, epoch=epoch,
                              member_ids=ids)


@jax.jit
def _finite_members(variables, metrics) -> jax.Array:
    """(K,) bool: member k's variables are finite and its epoch-mean loss is at most
    _DIVERGED_LOSS (a cross-entropy no training reaches: a uniform guess costs ln C)."""
    count = metrics["count"]
    flags = [jnp.isfinite(a.reshape(count.shape[0], -1)).all(1)
             for a in jax.tree.leaves(variables)]
    if "loss" in metrics:
        loss = jnp.where(count > 0, metrics["loss"], 0.0)
        mean = (loss * count).sum(1) / jnp.maximum(count.sum(1), 1.0)
        flags.append(mean <= _DIVERGED_LOSS)  # False for NaN
    return jnp.stack(flags).all(0)


def _check_diverged(state: TrainState, metrics, ids: np.ndarray, epoch: int) -> None:
    """Raise TrainingDiverged when a real member's variables are not finite or its loss is NaN,
    inf or above _DIVERGED_LOSS (one host sync per epoch)."""
    finite = np.asarray(_finite_members(_variables(state), metrics))[:len(ids)]
    if not finite.all():
        member = int(ids[np.flatnonzero(~finite)[0]])
        raise TrainingDiverged(f"training diverged at epoch {epoch + 1} (member {member}): "
                               "lower --learning-rate")


def _bar_members(rows: np.ndarray, k_total: int) -> str:
    """The progress bar's "member 5/32" (or "members 1–8/32" for a chunk of several)."""
    lo, hi = int(rows[0]) + 1, int(rows[-1]) + 1
    return f"member {lo}/{k_total}" if lo == hi else f"members {lo}–{hi}/{k_total}"


def _train_chunk(c: int, rows: np.ndarray, plan: _Plan, cfg: TrainConfig, compiled: _Compiled,
                 key, checkpoints, bar) -> tuple[dict, dict]:
    """Train members ``rows`` (chunk ``c``) for every epoch not yet checkpointed; returns their
    host (variables, history)."""
    init_fn, epoch_fn, record, member_sharding, images, labels = compiled
    real = len(rows)
    rows = np.concatenate([rows, np.repeat(rows[:1], plan.chunk_k - real)])  # pad the last chunk
    ids, subsets = plan.member_ids[rows], [plan.subsets[r] for r in rows]
    state = init_fn(jax.device_put(_member_keys(key, ids, 0), member_sharding))
    if cfg.init_transform is not None:
        state = _transform_init(state, cfg.init_transform, member_sharding)
    history: dict[str, np.ndarray] = {}
    done = 0
    who = _bar_members(rows[:real], plan.masks.shape[0])
    bar.set_postfix_str("")
    if checkpoints is not None:
        restored = checkpoints.restore(c, state)
        if restored is not None:
            done, state, history = restored
            bar.set_description(f"resuming {who}: epoch {done}/{cfg.epochs} restored from "
                                "its checkpoint")
            bar.update(done)
    epoch_keys = _member_keys(key, ids, 1)
    for epoch in range(done, cfg.epochs):
        bar.set_description(f"{'DP-SGD' if cfg.dp is not None else 'training'} {who}, "
                            f"epoch {epoch + 1}/{cfg.epochs}")
        idx, w = _epoch_batches(plan, cfg.batch_size, subsets, ids, epoch)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(epoch_keys)
        state, metrics = epoch_fn(state, images, labels,
                                  *(jax.device_put(a, member_sharding) for a in (idx, w, keys)))
        _check_diverged(state, metrics, ids[:real], epoch)
        if (epoch + 1) % cfg.record_every == 0 or epoch + 1 == cfg.epochs:
            rec = record(state, metrics, ids, jax.random.fold_in(key, epoch))
            history = {k: np.concatenate([history[k], v[None]]) if k in history else v[None]
                       for k, v in rec.items()}
        if checkpoints is not None:
            checkpoints.save(c, epoch + 1, state, history, final=epoch + 1 == cfg.epochs)
        bar.update(1)
        bar.set_postfix({name: f"{np.mean(history[k][-1][:real]):.3f}" for k, name in
                         (("train_loss", "loss"), ("test_accuracy", "test acc"))
                         if k in history})
        for callback in cfg.callbacks:
            callback(epoch, {"chunk": c, "members": ids[:real], "history": history})
    variables = jax.tree.map(lambda a: np.asarray(a)[:real], _variables(state))
    return variables, {k: v[:, :real] for k, v in history.items()}

# ----------------------------------------------------------------------------------------------
# multi-process jobs: see jaxcurv._multiprocess


def _gathered_ensemble(ens: Ensemble, full: _Plan) -> Ensemble:
    """In a multi-process job, the ensemble of all K members from each process's block."""
    if jax.process_count() == 1:
        return ens
    k_total = full.masks.shape[0]
    block = distributed.process_members(k_total)
    n = len(block)
    history = {k: np.moveaxis(v, 1, 0)[:n] for k, v in ens.history.items()}
    variables, history = distributed.gather_members(
        (jax.tree.map(lambda a: np.asarray(a)[:n], ens.variables), history), block, k_total)
    out = Ensemble(ens.model, variables, full.masks, full.member_ids,
                   {k: np.moveaxis(v, 0, 1) for k, v in history.items()}, ens.config, ens.privacy)
    out._kernels.update(ens._kernels)
    return out


def train(model, dataset: Dataset, masks, key: jax.Array, config: TrainConfig | None = None, *,
          test: Dataset | None = None, **overrides: Any) -> Ensemble:
    """Train K members of ``model`` (a flax module or a name for models.get_model), member k on
    ``dataset`` rows where ``masks[k]`` (K, N) is true, members vmapped in one jit-compiled step
    over fixed-shape batches (smaller subsets are padded and masked, never recompiled).

    Settings: a :class:`TrainConfig` and/or its fields as keywords (``epochs`` is required;
    keywords override the config's fields), e.g. ``train(model, ds, masks, key, epochs=10,
    batch_size=128, optimizer="sgd", learning_rate=0.1, dp=None, checkpoint_dir=None)``.
    ``test``: a held-out Dataset whose accuracy is recorded per epoch ("test_accuracy").
    Raises :class:`TrainingDiverged` after the first epoch whose parameters are not finite or
    whose mean training loss is NaN, inf or above 1e4, before that epoch is checkpointed.
    """
    cfg = _train_config(config, overrides)
    if test is not None and test.images.shape[1:] != dataset.images.shape[1:]:
        raise ValueError(f"test images have shape {test.images.shape[1:]} but training images "
                         f"{dataset.images.shape[1:]}; both must have the same image shape")
    plan = _make_plan(model, dataset, masks, key, cfg)
    full_plan, plan, cfg = _process_block(plan, cfg)  # a multi-process job: this process's block
    checkpoints = None
    if cfg.checkpoint_dir is not None:
        run_id = fingerprint(plan.model, dataset, full_plan.masks, full_plan.member_ids,
                             plan.seed, plan.echo)
        checkpoints = _shared(Checkpoints(cfg.checkpoint_dir, run_id, cfg.checkpoint_every))
    member_sharding, replicated = _placement(plan.devices)
    logits_fn = _make_logits_fn(plan.model, cfg.compute_dtype)
    compiled = _Compiled(*_build_training(plan, cfg),
                         _make_recorder(plan, cfg, dataset, test, logits_fn), member_sharding,
                         jax.device_put(dataset.images, replicated),
                         jax.device_put(dataset.labels, replicated))
    k_total = plan.masks.shape[0]
    bar = tqdm(total=cfg.epochs * math.ceil(k_total / plan.chunk_k),
               desc=f"{'DP-SGD' if cfg.dp is not None else 'training'} {k_total} members",
               unit="epoch", disable=not cfg.progress)
    results = [_train_chunk(c, np.arange(start, min(start + plan.chunk_k, k_total)), plan, cfg,
                            compiled, key, checkpoints, bar)
               for c, start in enumerate(range(0, k_total, plan.chunk_k))]
    bar.close()
    variables = jax.tree.map(lambda *a: np.concatenate(a), *[r[0] for r in results])
    history = {k: np.concatenate([r[1][k] for r in results], axis=1) for k in results[0][1]}
    ens = Ensemble(plan.model, variables, plan.masks, plan.member_ids, history, plan.echo,
                   plan.privacy)
    ens._kernels[("logits", _dtype_name(cfg.compute_dtype))] = logits_fn
    return _gathered_ensemble(ens, full_plan)


def fit_one(model, dataset: Dataset, key: jax.Array, config: TrainConfig | None = None,
            **kwargs) -> tuple[dict, dict]:
    """Train one model on all of ``dataset`` (the K = 1 case of :func:`train`).

    Returns (variables, history) of that model; settings as for :func:`train`.
    """
    ens = train(model, dataset, np.ones((1, len(dataset)), bool), key, config, **kwargs)
    return ens.member(0), {k: v[:, 0] for k, v in ens.history.items()}
