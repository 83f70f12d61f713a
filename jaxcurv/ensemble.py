"""Vectorized ensembles: K models trained on random subsets, members vmapped in one jit.

Member k trains only on the examples where ``masks[k]`` is true, with its own init key, data
order, augmentation and (for DP) noise and Poisson sampling, all derived from (key, global member
id, epoch): results do not depend on how members are chunked or split over processes, and a run
continued from a saved state equals an uninterrupted one. Parameters of the K members are stacked
on a leading axis. Models: any kind :func:`jaxcurv.model_interface.as_model` accepts, or a name
for :func:`jaxcurv.models.get_model`.

Training, in pieces a caller can drive (``jaxcurv.workflow.train_ensemble`` adds checkpoints,
progress bars, callbacks and multi-process jobs on top of them):

- :func:`plan_training` validates the inputs and resolves every default on the host
  (:class:`TrainingPlan`); nothing is compiled.
- :func:`make_trainer` compiles the plan's functions (:class:`EnsembleTrainer`):
  ``init(rows)`` starts a chunk of members (:class:`MembersState`), ``epoch(state)`` trains one
  epoch, ``collect(state)`` brings the members to the host and ``ensemble(parts)`` assembles them.
- :func:`train` does all of it and returns an :class:`Ensemble`.

:class:`Ensemble` is an immutable pytree (variables, masks, member ids and history are its leaves;
the model, the settings echo and the privacy report are static metadata), so it passes through
``jax.jit``. Compiled inference kernels are built by :func:`make_predict`,
:func:`make_member_curvature` and :func:`make_member_zero_order_curvature` and kept by the caller;
:func:`predict`, :func:`member_curvature` and :func:`member_zero_order_curvature` build one per
call. Training stops with :class:`TrainingDiverged` at the first epoch whose loss explodes or
whose parameters are not finite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.core import FrozenDict
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcurv import models
from jaxcurv._ensemble_eval import (
    _make_logits_fn,
    _member_logits,
    _stacked,
    accuracy,
    make_member_curvature,
    make_member_zero_order_curvature,
    make_predict,
    member_curvature,
    member_loss_fn,
    member_zero_order_curvature,
    predict,
)
from jaxcurv._tree import stack, unstack
from jaxcurv._validate import check_float, check_int, check_masks, check_positive_int
from jaxcurv.curvature import make_input_curvature
from jaxcurv.data import Dataset, augment as augment_image
from jaxcurv.errors import ConfigError, TrainingDiverged
from jaxcurv.model_interface import Model, as_model, example_input
from jaxcurv.optim import OptimizerConfig, make_optimizer
from jaxcurv.privacy.plan import DPPlan
from jaxcurv.training import (
    TrainState,
    epoch_plan,
    init_state,
    make_epoch_fn,
    make_step_at,
    make_train_step,
    poisson_epoch_plan,
    variables_of,
)

__all__ = [
    "Ensemble",
    "TrainConfig",
    "TrainingPlan",
    "MembersState",
    "MembersResult",
    "EnsembleTrainer",
    "TrainingDiverged",
    "train_config",
    "plan_training",
    "make_trainer",
    "train",
    "fit_one",
    "make_predict",
    "make_member_curvature",
    "make_member_zero_order_curvature",
    "predict",
    "accuracy",
    "member_loss_fn",
    "member_curvature",
    "member_zero_order_curvature",
]

_DIVERGED_LOSS = 1e4  # mean training cross-entropy beyond any fit (ln C ≤ 10 for C ≤ 22026)

# Settings that moved to jaxcurv.workflow.train_ensemble (named in the error for a stray keyword).
_WORKFLOW_SETTINGS = ("checkpoint_dir", "checkpoint_every", "progress", "callbacks")


def _freeze(value: Any) -> Any:
    """A JSON-like value as hashable static metadata: mappings → FrozenDict, lists → tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@struct.dataclass
class Ensemble:
    """K trained members, an immutable pytree.

    Leaves: ``variables``, the members' variables stacked on a leading K axis; ``masks`` (K, N)
    bool training subsets; ``member_ids`` (K,) the global ids their keys derive from;
    ``history``: per recorded epoch ("train_loss", "train_accuracy" (E, K), "test_accuracy"
    (E, K), and when recorded "correct", "loss", "curvature" (tr(H²)), "curvature_trace" (tr(H))
    (E, K, N)). Static metadata:
    ``model`` (a :class:`~jaxcurv.model_interface.Model`; any model kind is converted),
    ``config`` (the settings echo) and ``privacy`` (σ, δ, sampling rates and ε spent per member
    for DP runs, else None), both read-only mappings.
    """

    model: Model = struct.field(pytree_node=False)
    variables: Any
    masks: Any
    member_ids: Any
    history: Any = struct.field(default_factory=dict)
    config: Any = struct.field(pytree_node=False, default=FrozenDict())
    privacy: Any = struct.field(pytree_node=False, default=None)

    def __post_init__(self):  # also runs when jax rebuilds the pytree: checks only
        if self.model is not None and not isinstance(self.model, Model):
            object.__setattr__(self, "model", as_model(self.model))
        for name in ("config", "privacy"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, FrozenDict):
                object.__setattr__(self, name, _freeze(value))

    @property
    def num_members(self) -> int:
        return int(self.masks.shape[0])

    def member(self, k: int) -> Any:
        """Variables of member k (unstacked)."""
        return unstack(self.variables, k)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How an ensemble trains; every field may also be passed to :func:`train` as a keyword.

    ``optimizer``: "sgd" | "adam" | "sam" | "sam-gnr" or an OptimizerConfig (``learning_rate``
    overrides its rate). ``augment``: True (crop padding 4 for ≥16 px images, else 1; flip for
    RGB) or a dict of jaxcurv.data.augment keywords. ``dp``: a jaxcurv.privacy.DPConfig for DP-SGD.
    ``record_examples``: per-epoch correctness and loss of every member on every training example;
    ``record_curvature=P``: per-epoch input curvature with P probes (costly): history
    "curvature" tr(H²) and "curvature_trace" tr(H).
    ``record_every=R``: the per-epoch records (test accuracy, examples, curvature) every R-th
    epoch and at the last one only (history rows = recorded epochs), since on a CPU evaluating
    every example each epoch costs nearly as much as the epoch itself.
    ``members_per_chunk``: members vmapped together (default: all on GPU/TPU; on CPU 1 for
    conv nets, where a vmap over conv weights runs as slower grouped convolutions, and for
    DP-SGD; dense-only models up to 1 GiB of training state), chunks run in turn, members
    sharded over ``devices`` (default all local). ``dp_microbatch_size``: DP-SGD's per-example
    gradients formed that many rows at a time (default: the whole padded batch; on CPU 1 for
    dense-only models, about 5× faster there). ``steps_per_epoch``: default ⌈largest subset /
    batch_size⌉. ``scan_steps``: an epoch as one lax.scan (default on GPU/TPU) or a host loop of
    async steps (CPU, where XLA runs convolutions in loop bodies slowly). ``init_transform``:
    fn(variables) -> variables for each member's initial variables (e.g.
    models.init_fastnet_whitening).
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
    members_per_chunk: int | None = None
    dp_microbatch_size: int | None = None
    devices: Sequence[jax.Device] | None = None
    compute_dtype: Any = None
    steps_per_epoch: int | None = None
    scan_steps: bool | None = None
    init_transform: Callable[[Any], Any] | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "record_every"):
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


def train_config(config: TrainConfig | None = None, **settings: Any) -> TrainConfig:
    """``config`` with ``settings`` (TrainConfig fields) applied; unknown names are refused."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    moved = sorted(set(settings) & set(_WORKFLOW_SETTINGS))
    if moved:
        raise ConfigError(f"ensemble training takes no {moved}: checkpoints, progress bars and "
                          "callbacks belong to jaxcurv.workflow.train_ensemble (same arguments)")
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ConfigError(f"unknown training setting(s) {unknown}; the settings are the fields "
                          f"of TrainConfig: {fields}")
    if config is None:
        if "epochs" not in settings:
            raise ConfigError("training needs epochs=... (or a TrainConfig)")
        return TrainConfig(**settings)
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    return dataclasses.replace(config, **settings)


def _resolve_model(model, dataset: Dataset) -> Model:
    if isinstance(model, str):
        return as_model(models.get_model(model, dataset.num_classes))
    return as_model(model)


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


def _check_outputs(model: Model, abstract, input_shape: tuple, num_classes: int) -> None:
    """The model maps (B, H, W, C) to logits (B, C') with C' ≥ the dataset's classes."""
    out = jax.eval_shape(model.apply, abstract, example_input(input_shape))
    if len(out.shape) != 2 or out.shape[-1] < num_classes:
        raise ConfigError(f"model {model.name} maps a (1, {', '.join(map(str, input_shape))}) "
                          f"batch to shape {tuple(out.shape)}; it must return logits (1, C) with "
                          f"C ≥ the dataset's {num_classes} classes")


# Memory a CPU chunk of dense members may take for params, gradients and two optimizer moments.
_CPU_CHUNK_BYTES = 1 << 30


def _dense_only(params) -> bool:
    """No parameter has more than 2 axes: no convolution kernel."""
    return all(len(leaf.shape) <= 2 for leaf in jax.tree_util.tree_leaves(params))


def _cpu_members_per_chunk(params, k_total: int, private: bool) -> int:
    """Members vmapped together on a CPU: 1 for models with convolution kernels (a vmap over
    conv weights runs as slower grouped convolutions) and under DP-SGD (its per-example
    gradients already hold batch × params floats per member); for dense-only models as many as
    fit ``_CPU_CHUNK_BYTES`` (params, gradients, two moments in float32), since K batched matmuls
    run about twice as fast as K single ones (measured: bench/ensemble.py --model mlp)."""
    if private or not _dense_only(params):
        return 1
    count = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
    return max(1, min(k_total, _CPU_CHUNK_BYTES // max(16 * count, 1)))


def _cpu_dp_microbatch(params) -> int | None:
    """DP-SGD's per-example gradients on a CPU: one example at a time (``lax.scan``) for
    dense-only models, whose vmapped per-example outer products XLA:CPU forms about 5× slower
    than a scan of single gradients; the whole padded batch (None) for conv nets, where the
    vmap is faster (measured: bench/dpsgd.py)."""
    return 1 if _dense_only(params) else None


def _resolve_dp(dp, subsets, batch_size: int, total_steps: int, model: Model, abstract):
    """DPConfig → (DPPlan of a step, max batch size, privacy report); refuses models with state
    (BatchNorm statistics are shared across examples)."""
    if model.has_state(abstract):
        raise ConfigError(
            "DP-SGD needs per-example gradients, but this model keeps state shared across "
            "examples (BatchNorm statistics): use GroupNorm ('resnet18_gn', nn.GroupNorm) or a "
            "model without BatchNorm")
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
    return DPPlan(dp.l2_clip, sigma, float(batch_size)), int(max_batch), report


def _shapes_text(params) -> str:
    """Every parameter's path, shape and dtype on one line (deterministic; keys checkpoints)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return "; ".join(f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype}"
                     for path, leaf in leaves)


# ----------------------------------------------------------------------------------------------
# the plan


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Everything :func:`plan_training` derives before compiling anything (host only).

    Members are the rows of ``masks`` (K, N); ``member_ids`` (K,) are their global ids, from
    which their keys and data orders derive. ``chunks``: the member rows trained together.
    """

    model: Model
    config: TrainConfig
    dataset: Dataset = dataclasses.field(repr=False)
    masks: np.ndarray = dataclasses.field(repr=False)
    member_ids: np.ndarray
    subsets: tuple = dataclasses.field(repr=False)
    input_shape: tuple
    optimizer: OptimizerConfig
    steps_per_epoch: int
    total_steps: int
    dp_step: DPPlan | None
    max_batch: int | None
    privacy: dict | None
    devices: tuple
    chunk_size: int
    dp_microbatch: int | None
    scan_steps: bool
    seed: int
    key: jax.Array = dataclasses.field(repr=False)
    echo: dict = dataclasses.field(repr=False)

    @property
    def num_members(self) -> int:
        return int(self.masks.shape[0])

    @property
    def chunks(self) -> list[np.ndarray]:
        """Rows of the members trained together, in order."""
        k = self.num_members
        return [np.arange(s, min(s + self.chunk_size, k)) for s in range(0, k, self.chunk_size)]

    def select(self, rows: Sequence[int], *, chunk_size: int | None = None) -> TrainingPlan:
        """The plan of members ``rows`` only (their global ids kept; a row may repeat), chunked
        by ``chunk_size`` (default this plan's)."""
        rows = np.asarray(rows, np.int64)
        size = self.chunk_size if chunk_size is None else check_positive_int("chunk_size",
                                                                             chunk_size)
        return dataclasses.replace(self, masks=self.masks[rows], member_ids=self.member_ids[rows],
                                   subsets=tuple(self.subsets[r] for r in rows), chunk_size=size)


def plan_training(model, dataset: Dataset, masks, key: jax.Array,
                  config: TrainConfig | None = None, *, member_ids: Sequence[int] | None = None,
                  **settings: Any) -> TrainingPlan:
    """Validate the inputs against each other and resolve every default (host only; the model
    is evaluated abstractly). Settings: a :class:`TrainConfig` and/or its fields as keywords."""
    cfg = train_config(config, **settings)
    model = _resolve_model(model, dataset)
    masks = check_masks("masks", masks, len(dataset))
    k_total = masks.shape[0]
    if model.fixed_init and k_total > 1:
        raise ConfigError(f"model {model.name} is a module instance with fixed weights: all "
                          f"{k_total} members would start from the same weights; pass its class "
                          "or a factory (NNX: lambda rngs: Net(..., rngs=rngs); Equinox: "
                          "lambda key: Net(..., key=key))")
    member_ids = _check_member_ids(member_ids, k_total)
    if not np.isfinite(dataset.images).all():
        raise ValueError("dataset images contain NaN or inf")
    optimizer = _optimizer_config(cfg.optimizer, cfg.learning_rate)
    subsets = tuple(np.flatnonzero(m) for m in masks)
    largest = max(len(s) for s in subsets)
    input_shape = tuple(dataset.images.shape[1:])
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), example_input(input_shape))
    _check_outputs(model, abstract, input_shape, dataset.num_classes)
    params = model.split(abstract)[0]
    steps = cfg.steps_per_epoch or math.ceil(largest / cfg.batch_size)
    on_cpu = jax.default_backend() == "cpu"
    dp_step, max_batch, privacy = None, None, None
    if cfg.dp is not None:
        if optimizer.is_sam:
            raise ValueError("DP-SGD with SAM is not supported: use optimizer 'sgd' or 'adam'")
        dp_step, max_batch, privacy = _resolve_dp(cfg.dp, subsets, cfg.batch_size,
                                                  cfg.epochs * steps, model, abstract)
    elif steps * cfg.batch_size < largest:
        raise ValueError("steps_per_epoch × batch_size is smaller than a member's subset")
    devs = tuple(jax.local_devices() if cfg.devices is None else cfg.devices)
    chunk = cfg.members_per_chunk or (_cpu_members_per_chunk(params, k_total, cfg.dp is not None)
                                      if on_cpu else k_total)
    chunk = -(-chunk // len(devs)) * len(devs)
    dp_microbatch = cfg.dp_microbatch_size
    if cfg.dp is not None and dp_microbatch is None and on_cpu:
        dp_microbatch = _cpu_dp_microbatch(params)
    seed = int(np.asarray(jax.random.randint(key, (), 0, 2**31 - 1)))
    echo = {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "optimizer": dataclasses.asdict(optimizer), "augment": cfg.augment,
            "label_smoothing": cfg.label_smoothing, "steps_per_epoch": steps, "dp": privacy,
            "record_examples": cfg.record_examples, "record_curvature": cfg.record_curvature,
            "record_every": cfg.record_every, "compute_dtype": str(cfg.compute_dtype),
            "dataset": dataset.name, "num_members": k_total, "model": model.name,
            "parameters": _shapes_text(params),
            "init_transform": getattr(cfg.init_transform, "__qualname__",
                                      repr(cfg.init_transform))}
    return TrainingPlan(model, cfg, dataset, masks, member_ids, subsets, input_shape, optimizer,
                        steps, cfg.epochs * steps, dp_step, max_batch, privacy, devs, chunk,
                        dp_microbatch,
                        (not on_cpu) if cfg.scan_steps is None else bool(cfg.scan_steps), seed,
                        key, echo)


# ----------------------------------------------------------------------------------------------
# the compiled trainer


class MembersState(NamedTuple):
    """A chunk of members in training. ``rows``: their rows in the plan (R,); ``train``: the
    TrainState stacked over the chunk padded to the plan's chunk size (on device); ``history``:
    host arrays (recorded epochs, chunk size, ...); ``epoch``: epochs done."""

    rows: np.ndarray
    train: TrainState
    history: dict
    epoch: int


class MembersResult(NamedTuple):
    """Trained members on the host: ``rows`` (R,), ``variables`` stacked (R, ...), ``history``
    (recorded epochs, R, ...)."""

    rows: np.ndarray
    variables: Any
    history: dict


def _member_keys(key, member_ids, purpose: int):
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, int(m)), purpose)
                      for m in member_ids])


def _placement(devices: tuple) -> tuple[Any, Any]:
    """(sharding of the member axis, replicated sharding) over ``devices``."""
    if len(devices) == 1:
        return devices[0], devices[0]
    mesh = Mesh(np.asarray(devices), ("members",))
    return NamedSharding(mesh, P("members")), NamedSharding(mesh, P())


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` padded to ``size`` by repeating the first (the last chunk may be short)."""
    return np.concatenate([rows, np.repeat(rows[:1], size - len(rows))])


def _epoch_batches(plan: TrainingPlan, subsets, ids, epoch: int):
    """(idx, weights) (K, S, B) of one epoch: shuffled batches, or Poisson batches for DP."""
    batch_size = plan.config.batch_size
    if plan.dp_step is None:
        return epoch_plan(subsets, batch_size, steps=plan.steps_per_epoch, seed=plan.seed,
                          epoch=epoch, member_ids=ids)
    rates = [batch_size / len(s) for s in subsets]
    return poisson_epoch_plan(subsets, rates, steps=plan.steps_per_epoch,
                              max_batch_size=plan.max_batch, seed=plan.seed, epoch=epoch,
                              member_ids=ids)


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


def _build_training(plan: TrainingPlan) -> tuple[Callable, Callable]:
    """(init_fn(keys) -> stacked TrainState, epoch_fn(state, images, labels, idx, w, keys)),
    jitted for this plan."""
    cfg, model = plan.config, plan.model
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


def _make_recorder(plan: TrainingPlan, test: Dataset | None) -> Callable:
    """``record(state, metrics, member_ids, key) -> dict``: per-epoch host records, (K,) summaries
    and, when asked, (K, N) per-example arrays; its estimators are built here, once."""
    cfg, model, dataset = plan.config, plan.model, plan.dataset
    logits_fn = _make_logits_fn(model, cfg.compute_dtype)
    curvature = None
    if cfg.record_curvature:
        curvature = make_input_curvature(models.make_loss_fn(model),
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
        variables = variables_of(model, state)
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
            out["curvature"] = np.stack([r.trace_sq for r in rows])
            out["curvature_trace"] = np.stack([r.trace for r in rows])
        return out

    return record


def _read_only(tree: Any) -> Any:
    """``tree`` with its numpy leaves marked read-only (the ensemble's arrays are not edited)."""
    def freeze(a):
        a = np.asarray(a)
        a.setflags(write=False)
        return a

    return jax.tree.map(freeze, tree)


@dataclasses.dataclass(frozen=True)
class EnsembleTrainer:
    """The compiled functions of one :class:`TrainingPlan` (built by :func:`make_trainer`).

    ``init(rows)`` starts members ``rows`` of the plan; ``epoch(state)`` trains one epoch (it
    consumes ``state``: its device buffers are donated) and raises TrainingDiverged when a member
    diverged; ``collect(state)`` returns the members on the host; ``ensemble(parts)`` assembles
    collected parts, in order, into an :class:`Ensemble`.
    """

    plan: TrainingPlan
    init_fn: Callable = dataclasses.field(repr=False)
    epoch_fn: Callable = dataclasses.field(repr=False)
    record: Callable = dataclasses.field(repr=False)
    finite: Callable = dataclasses.field(repr=False)
    member_sharding: Any = dataclasses.field(repr=False)
    images: jax.Array = dataclasses.field(repr=False)
    labels: jax.Array = dataclasses.field(repr=False)

    def init(self, rows: Sequence[int]) -> MembersState:
        """Initial state of members ``rows`` (at most the plan's chunk size) at epoch 0."""
        plan = self.plan
        rows = np.asarray(rows, np.int64)
        if not 1 <= len(rows) <= plan.chunk_size:
            raise ValueError(f"a chunk holds 1 to {plan.chunk_size} members, got {len(rows)}")
        ids = plan.member_ids[_padded(rows, plan.chunk_size)]
        state = self.init_fn(jax.device_put(_member_keys(plan.key, ids, 0), self.member_sharding))
        transform = plan.config.init_transform
        if transform is not None:
            variables = variables_of(plan.model, state)
            members = [transform(unstack(variables, k)) for k in range(len(ids))]
            params, model_state = plan.model.split(
                jax.device_put(stack(members), self.member_sharding))
            state = state._replace(params=params, model_state=model_state)
        return MembersState(rows, state, {}, 0)

    def epoch(self, state: MembersState) -> MembersState:
        """Train epoch ``state.epoch`` of the chunk; one host sync (the divergence check)."""
        plan, epoch = self.plan, state.epoch
        if epoch >= plan.config.epochs:
            raise ValueError(f"all {plan.config.epochs} epochs are done")
        real = len(state.rows)
        padded = _padded(state.rows, plan.chunk_size)
        ids, subsets = plan.member_ids[padded], [plan.subsets[r] for r in padded]
        idx, w = _epoch_batches(plan, subsets, ids, epoch)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(_member_keys(plan.key, ids, 1))
        train, metrics = self.epoch_fn(state.train, self.images, self.labels,
                                       *(jax.device_put(a, self.member_sharding)
                                         for a in (idx, w, keys)))
        finite = np.asarray(self.finite(variables_of(plan.model, train), metrics))[:real]
        if not finite.all():
            member = int(ids[np.flatnonzero(~finite)[0]])
            raise TrainingDiverged(f"training diverged at epoch {epoch + 1} (member {member}): "
                                   "lower --learning-rate")
        history = state.history
        if (epoch + 1) % plan.config.record_every == 0 or epoch + 1 == plan.config.epochs:
            rec = self.record(train, metrics, ids, jax.random.fold_in(plan.key, epoch))
            history = {k: np.concatenate([history[k], v[None]]) if k in history else v[None]
                       for k, v in rec.items()}
        return MembersState(state.rows, train, history, epoch + 1)

    def collect(self, state: MembersState) -> MembersResult:
        """The chunk's real members on the host."""
        real = len(state.rows)
        variables = jax.tree.map(lambda a: np.asarray(a)[:real],
                                 variables_of(self.plan.model, state.train))
        return MembersResult(state.rows, variables,
                             {k: v[:, :real] for k, v in state.history.items()})

    def ensemble(self, parts: Sequence[MembersResult]) -> Ensemble:
        """An Ensemble of the collected ``parts`` (members in the order given)."""
        plan = self.plan
        rows = np.concatenate([p.rows for p in parts])
        variables = jax.tree.map(lambda *a: np.concatenate(a), *[p.variables for p in parts])
        history = {k: np.concatenate([p.history[k] for p in parts], axis=1)
                   for k in parts[0].history}
        return Ensemble(plan.model, _read_only(variables), _read_only(plan.masks[rows]),
                        _read_only(plan.member_ids[rows]), _read_only(history), plan.echo,
                        plan.privacy)


def make_trainer(plan: TrainingPlan, *, test: Dataset | None = None) -> EnsembleTrainer:
    """Compile the functions of ``plan``; ``test``: a held-out Dataset whose accuracy is
    recorded ("test_accuracy"). The trainer is kept by the caller and used for every chunk."""
    if not isinstance(plan, TrainingPlan):
        raise ConfigError(f"plan must be a TrainingPlan (from plan_training), got "
                          f"{type(plan).__name__}")
    shape = plan.input_shape
    if test is not None and test.images.shape[1:] != shape:
        raise ValueError(f"test images have shape {test.images.shape[1:]} but training images "
                         f"{shape}; both must have the same image shape")
    member_sharding, replicated = _placement(plan.devices)
    return EnsembleTrainer(plan, *_build_training(plan), _make_recorder(plan, test),
                           jax.jit(_finite_members), member_sharding,
                           jax.device_put(plan.dataset.images, replicated),
                           jax.device_put(plan.dataset.labels, replicated))


def train(model, dataset: Dataset, masks, key: jax.Array, config: TrainConfig | None = None, *,
          test: Dataset | None = None, member_ids: Sequence[int] | None = None,
          **settings: Any) -> Ensemble:
    """Train K members of ``model`` (any kind ``as_model`` accepts, or a name for
    models.get_model), member k on ``dataset`` rows where ``masks[k]`` (K, N) is true, members
    vmapped in one jit-compiled step over fixed-shape batches (smaller subsets are padded and
    masked, never recompiled).

    Settings: a :class:`TrainConfig` and/or its fields as keywords (``epochs`` is required;
    keywords override the config's fields), e.g. ``train(model, ds, masks, key, epochs=10,
    batch_size=128, optimizer="sgd", learning_rate=0.1, dp=None)``. ``test``: a held-out Dataset
    whose accuracy is recorded per epoch ("test_accuracy"). ``member_ids``: the global ids the
    members' keys derive from (default 0..K−1). Raises :class:`TrainingDiverged` after the first
    epoch whose parameters are not finite or whose mean training loss is NaN, inf or above 1e4.
    Checkpoints, progress bars, callbacks and multi-process jobs:
    ``jaxcurv.workflow.train_ensemble``.
    """
    plan = plan_training(model, dataset, masks, key, config, member_ids=member_ids, **settings)
    trainer = make_trainer(plan, test=test)
    parts = []
    for rows in plan.chunks:
        state = trainer.init(rows)
        while state.epoch < plan.config.epochs:
            state = trainer.epoch(state)
        parts.append(trainer.collect(state))
    return trainer.ensemble(parts)


def fit_one(model, dataset: Dataset, key: jax.Array, config: TrainConfig | None = None,
            **settings: Any) -> tuple[Any, dict]:
    """Train one model on all of ``dataset`` (the K = 1 case of :func:`train`).

    Returns (variables, history) of that model; settings as for :func:`train`.
    """
    ens = train(model, dataset, np.ones((1, len(dataset)), bool), key, config, **settings)
    return ens.member(0), {k: v[:, 0] for k, v in ens.history.items()}
