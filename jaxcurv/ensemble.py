"""Vectorized ensembles: K models trained on random subsets in one jit, vmapped over members.

Member k trains only on the examples where ``masks[k]`` is true, with its own init key, data order,
augmentation and (for DP) noise and Poisson sampling, all derived from (key, member id, epoch) so
that results do not depend on how members are chunked or sharded, and a killed run resumes to the
same result. Parameters of the K members are stacked on a leading axis.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcurv import models
from jaxcurv._chunks import map_chunks
from jaxcurv.curvature import Curvature, input_curvature
from jaxcurv.data import Dataset, augment as augment_image
from jaxcurv.optim import OptimizerConfig, make_optimizer
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
    "train",
    "fit_one",
    "predict",
    "accuracy",
    "member_curvature",
]

_EVAL_CHUNK = 1024


@dataclasses.dataclass(eq=False)
class Ensemble:
    """K trained members. ``variables``: flax variables stacked on a leading K axis (host numpy);
    ``masks`` (K, N) bool training subsets; ``member_ids`` (K,) the ids their keys derive from;
    ``history``: per-epoch arrays ("train_loss", "train_accuracy" (E, K), "test_accuracy" (E, K),
    and when recorded "correct", "loss", "curvature" (E, K, N)); ``config`` echoes the run;
    ``privacy`` holds σ, δ, sampling rates and ε spent per member for DP runs (else None)."""

    model: nn.Module
    variables: dict
    masks: np.ndarray
    member_ids: np.ndarray
    history: dict
    config: dict
    privacy: dict | None = None

    @property
    def num_members(self) -> int:
        return int(self.masks.shape[0])

    def member(self, k: int) -> dict:
        """Flax variables of member k (unstacked)."""
        return jax.tree.map(lambda a: a[k], self.variables)


# ----------------------------------------------------------------------------------------------
# validation


def _resolve_model(model, dataset: Dataset) -> nn.Module:
    if isinstance(model, str):
        return models.get_model(model, dataset.num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a flax.linen.Module or a model name, got {type(model)}")
    return model


def _check_masks(masks, n: int) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] != n:
        raise ValueError(f"masks must have shape (K, N={n}) matching the dataset, got {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (K, N): True where member k trains on example i")
        masks = masks.astype(bool)
    empty = np.flatnonzero(masks.sum(1) == 0)
    if empty.size:
        raise ValueError(f"member(s) {empty.tolist()} have no training example in masks")
    return masks


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


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


def _augmenter(augment, image_shape) -> Callable | None:
    """``augment``: False/None, True (crop padding 4 for ≥16 px images, 1 otherwise; flip for RGB),
    or a dict of jaxcurv.data.augment keywords."""
    if not augment:
        return None
    if augment is True:
        h, _, c = image_shape
        augment = {"padding": 4 if h >= 16 else 1, "flip": c == 3}
    if not isinstance(augment, dict):
        raise ValueError(f"augment must be a bool or a dict of augment() keywords, got {augment!r}")
    return functools.partial(augment_image, **augment)


# ----------------------------------------------------------------------------------------------
# DP resolution


def _resolve_dp(dp, subsets, batch_size: int, total_steps: int, model, input_shape):
    """DPConfig → (DPStep, max batch size, privacy report); refuses BatchNorm models."""
    abstract = jax.eval_shape(lambda k: models.init_variables(model, k, input_shape),
                              jax.random.PRNGKey(0))
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
# checkpoints


class _Checkpoints:
    """One orbax CheckpointManager per member chunk under ``directory``; run.json pins the config."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.every = every
        meta = self.directory / "run.json"
        if meta.exists():
            saved = json.loads(meta.read_text()).get("fingerprint")
            if saved != fingerprint:
                raise ValueError(
                    f"checkpoint_dir {self.directory} holds a run with a different configuration "
                    "(model, data, masks, key or training settings); use a new directory or "
                    "delete this one"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"fingerprint": fingerprint}))
        self._managers: dict[int, Any] = {}

    def _manager(self, chunk: int):
        if chunk not in self._managers:
            options = self._ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                         enable_async_checkpointing=False)
            self._managers[chunk] = self._ocp.CheckpointManager(
                self.directory / f"chunk_{chunk:04d}", options=options)
        return self._managers[chunk]

    def restore(self, chunk: int, like_state):
        """(epochs done, state, history dict) of the latest checkpoint, or None."""
        manager = self._manager(chunk)
        step = manager.latest_step()
        if step is None:
            return None
        args = self._ocp.args
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
            like_state)
        restored = manager.restore(step, args=args.Composite(
            state=args.StandardRestore(abstract), history=args.StandardRestore()))
        history = {k: np.asarray(v) for k, v in restored["history"].items()}
        return int(step), restored["state"], history

    def save(self, chunk: int, epoch: int, state, history: dict, *, final: bool) -> None:
        if not (final or epoch % self.every == 0):
            return
        args = self._ocp.args
        manager = self._manager(chunk)
        manager.save(epoch, args=args.Composite(state=args.StandardSave(state),
                                                history=args.StandardSave(history)), force=True)
        manager.wait_until_finished()


def _fingerprint(model, dataset: Dataset, masks, member_ids, seed, echo: dict) -> str:
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(json.dumps(echo, sort_keys=True, default=str).encode())
    for arr in (masks, np.asarray(member_ids), dataset.labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.float64(dataset.images.sum(dtype=np.float64)).tobytes())
    h.update(str((dataset.images.shape, seed)).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# per-member evaluation


@functools.lru_cache(maxsize=32)
def _logits_fn(model: nn.Module, compute_dtype) -> Callable:
    from jaxcurv._tree import cast_floats

    def fn(variables, x):
        out = model.apply(cast_floats(variables, compute_dtype), cast_floats(x, compute_dtype))
        return out.astype(jnp.float32)

    return jax.jit(fn)


def _unstack(variables, k: int):
    return jax.tree.map(lambda a: a[k], variables)


def _member_logits(model, variables, images, *, compute_dtype=None, progress=False) -> np.ndarray:
    """logits (K, N, C) of stacked members on images (N, H, W, C): a loop over members (a vmap
    over members turns convolutions into grouped ones, slower on CPU) and chunks of examples."""
    fn = _logits_fn(model, compute_dtype)
    images = np.asarray(images)
    chunk = min(_EVAL_CHUNK, len(images))
    k_total = jax.tree.leaves(variables)[0].shape[0]
    out = []
    for k in tqdm(range(k_total), desc="predict", disable=not progress or k_total == 1, leave=False):
        member = _unstack(variables, k)
        (logits,) = map_chunks(lambda x, idx, real: (fn(member, x),), (images,), step=chunk,
                               chunk=chunk, progress=False)
        out.append(logits)
    return np.stack(out)


def predict(ensemble: Ensemble, images, *, compute_dtype=None, progress: bool = True) -> np.ndarray:
    """Logits (K, N, C) of every member on images (N, H, W, C), in inference mode."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    return _member_logits(ensemble.model, ensemble.variables, images, compute_dtype=compute_dtype,
                          progress=progress)


def accuracy(ensemble: Ensemble, dataset: Dataset) -> np.ndarray:
    """Accuracy (K,) of each member on ``dataset``."""
    logits = predict(ensemble, dataset.images, progress=False)
    return (logits.argmax(-1) == dataset.labels[None]).mean(axis=1)


@functools.lru_cache(maxsize=32)
def _loss_fn(model: nn.Module) -> Callable:
    """One loss function object per model, so the curvature kernels compile once."""
    return models.make_loss_fn(model)


def _stacked_curvature(model, variables, member_ids, key, images, labels, *, progress,
                       **kwargs) -> Curvature:
    """Curvature (K, N) fields: member k = input_curvature with key fold_in(key, member_ids[k])."""
    loss_fn = _loss_fn(model)
    rows = []
    for k, member_id in enumerate(tqdm(member_ids, desc="member curvature", leave=False,
                                       disable=not progress or len(member_ids) == 1)):
        rows.append(input_curvature(loss_fn, _unstack(variables, k), images, labels,
                                    jax.random.fold_in(key, int(member_id)), progress=False,
                                    **kwargs))
    return Curvature(*(np.stack(field) for field in zip(*rows)))


def member_curvature(ensemble: Ensemble, images, labels, key: jax.Array, *, num_probes: int = 10,
                     method: str = "hutchinson", h: float = 1e-3, batch_size: int | None = None,
                     compute_dtype=None, progress: bool = True) -> Curvature:
    """Input curvature of every member on every example: Curvature fields of shape (K, N).

    Row k equals ``input_curvature(loss_fn, ensemble.member(k), images, labels,
    fold_in(key, member_ids[k]))`` with loss_fn = models.make_loss_fn(ensemble.model).
    """
    return _stacked_curvature(ensemble.model, ensemble.variables, ensemble.member_ids, key,
                              images, labels, progress=progress, num_probes=num_probes,
                              method=method, h=h, batch_size=batch_size,
                              compute_dtype=compute_dtype)


# ----------------------------------------------------------------------------------------------
# training


def _variables(state: TrainState) -> dict:
    """Flax variables of a (stacked) TrainState: params, and batch_stats when there is BatchNorm."""
    variables = {"params": state.params}
    if models.uses_batch_norm({"batch_stats": state.batch_stats}):
        variables["batch_stats"] = state.batch_stats
    return variables


def _transform_init(state: TrainState, transform, sharding) -> TrainState:
    """Apply ``transform`` to each member's initial variables and restack."""
    variables = _variables(state)
    members = [transform(_unstack(variables, k))
               for k in range(jax.tree.leaves(state.params)[0].shape[0])]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    stacked = jax.device_put(stacked, sharding)
    return state._replace(params=stacked["params"],
                          batch_stats=stacked.get("batch_stats", state.batch_stats))


def _hashable(value):
    """dicts (augment options) as sorted tuples, so they can key a cache."""
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return value


@functools.lru_cache(maxsize=16)
def _compiled_training(model, config, total_steps, dp_step, augment, label_smoothing,
                       compute_dtype, input_shape, scan_steps, steps_per_epoch):
    """(init_fn(keys) -> stacked TrainState, epoch_fn(state, images, labels, idx, w, keys)),
    jitted once per configuration: repeated ``train`` calls (e.g. one member at a time, or a
    resumed run) reuse the executables instead of recompiling."""
    tx = make_optimizer(config, total_steps)
    augment = dict(augment) if isinstance(augment, tuple) else augment
    step = make_train_step(model, tx, config=config, dp=dp_step,
                           augment=_augmenter(augment, input_shape),
                           label_smoothing=label_smoothing, compute_dtype=compute_dtype)
    init_fn = jax.jit(jax.vmap(lambda k: init_state(model, tx, k, input_shape)))
    if scan_steps:
        epoch_fn = jax.jit(jax.vmap(make_epoch_fn(step), in_axes=(0, None, None, 0, 0, 0)),
                           donate_argnums=0)
        return init_fn, epoch_fn
    step_fn = jax.jit(jax.vmap(make_step_at(step), in_axes=(0, None, None, 0, 0, 0, None)),
                      donate_argnums=0)

    def epoch_fn(state, images, labels, idx, w, keys):
        metrics = []
        for s in range(steps_per_epoch):  # dispatched asynchronously: no host sync here
            state, m = step_fn(state, images, labels, idx, w, keys, s)
            metrics.append(m)
        return state, jax.tree.map(lambda *a: jnp.stack(a, axis=1), *metrics)

    return init_fn, epoch_fn


def _member_keys(key, member_ids, purpose: int):
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, int(m)), purpose)
                      for m in member_ids])


def train(model, dataset: Dataset, masks, key: jax.Array, *, epochs: int, batch_size: int = 128,
          optimizer: str | OptimizerConfig = "sgd", learning_rate: float | None = None,
          augment: bool | dict = False, label_smoothing: float = 0.0, dp=None,
          test: Dataset | None = None, record_examples: bool = False, record_curvature: int = 0,
          checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1,
          members_per_chunk: int | None = None, devices: Sequence[jax.Device] | None = None,
          compute_dtype=None, member_ids: Sequence[int] | None = None,
          steps_per_epoch: int | None = None, scan_steps: bool | None = None,
          init_transform: Callable[[dict], dict] | None = None, progress: bool = True,
          callbacks: Sequence[Callable[[int, dict], None]] = ()) -> Ensemble:
    """Train K members of ``model`` (a flax module or a name for models.get_model), member k on
    ``dataset`` rows where ``masks[k]`` (K, N) is true, members vmapped in one jit-compiled step
    over fixed-shape batches (smaller subsets are padded and masked, never recompiled).

    ``optimizer``: "sgd" | "adam" | "sam" or an OptimizerConfig (``learning_rate`` overrides its
    rate). ``dp``: a jaxcurv.privacy.DPConfig for DP-SGD (Poisson sampling, clipping, noise).
    ``record_examples``: per-epoch correctness and loss of every member on every training example;
    ``record_curvature=P``: per-epoch input curvature tr(H) with P probes (costly).
    ``checkpoint_dir``: orbax checkpoints every ``checkpoint_every`` epochs; rerunning the same call
    resumes from the last one and ends with the same result as an uninterrupted run.
    ``members_per_chunk``: members vmapped together (default: all on GPU/TPU; 1 on CPU, where a
    vmap over conv weights runs as slower grouped convolutions); chunks run one after another and
    members are sharded over ``devices`` (default: all local devices). ``scan_steps``: run an
    epoch as one lax.scan (default on GPU/TPU) or as a host loop of async-dispatched steps
    (default on CPU, where XLA runs convolutions in loop bodies slowly).
    ``init_transform``: fn(variables) -> variables applied to each member's initial flax
    variables (e.g. ``lambda v: models.init_fastnet_whitening(v, images)``, airbench's data-based
    stem); the optimizer state is unaffected (zero moments). ``callbacks``: fn(epoch, info) after
    each epoch.
    """
    model = _resolve_model(model, dataset)
    masks = _check_masks(masks, len(dataset))
    k_total = masks.shape[0]
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
    member_ids = np.arange(k_total) if member_ids is None else np.asarray(member_ids, np.int64)
    if member_ids.shape != (k_total,) or len(set(member_ids.tolist())) != k_total:
        raise ValueError(f"member_ids must be {k_total} distinct integers, got {member_ids!r}")
    if not np.isfinite(dataset.images).all():
        raise ValueError("dataset images contain NaN or inf")
    record_curvature = int(record_curvature)
    if record_curvature < 0:
        raise ValueError("record_curvature must be 0 (off) or a number of probes >= 1")
    config = _optimizer_config(optimizer, learning_rate)
    subsets = [np.flatnonzero(m) for m in masks]
    input_shape = dataset.images.shape[1:]
    if steps_per_epoch is None:
        steps_per_epoch = math.ceil(max(len(s) for s in subsets) / batch_size)
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
    total_steps = epochs * steps_per_epoch

    dp_step, max_batch, privacy = None, None, None
    if dp is not None:
        if config.is_sam:
            raise ValueError("DP-SGD with SAM is not supported: use optimizer 'sgd' or 'adam'")
        dp_step, max_batch, privacy = _resolve_dp(dp, subsets, batch_size, total_steps, model,
                                                  input_shape)
    elif steps_per_epoch * batch_size < max(len(s) for s in subsets):
        raise ValueError("steps_per_epoch × batch_size is smaller than a member's subset")

    devs = tuple(jax.local_devices() if devices is None else devices)
    n_dev = len(devs)
    on_cpu = jax.default_backend() == "cpu"
    chunk_k = members_per_chunk or (1 if on_cpu else k_total)
    scan_steps = (not on_cpu) if scan_steps is None else bool(scan_steps)
    chunk_k = -(-_positive_int("members_per_chunk", chunk_k) // n_dev) * n_dev
    seed = int(np.asarray(jax.random.randint(key, (), 0, 2**31 - 1)))
    echo = {"epochs": epochs, "batch_size": batch_size, "optimizer": dataclasses.asdict(config),
            "augment": augment, "label_smoothing": label_smoothing, "steps_per_epoch":
            steps_per_epoch, "dp": privacy, "record_examples": record_examples,
            "record_curvature": record_curvature, "compute_dtype": str(compute_dtype),
            "dataset": dataset.name, "num_members": k_total, "model": type(model).__name__,
            "init_transform": getattr(init_transform, "__qualname__", repr(init_transform))}
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = _Checkpoints(checkpoint_dir, _fingerprint(model, dataset, masks, member_ids,
                                                                seed, echo), checkpoint_every)

    init_fn, epoch_fn = _compiled_training(
        model, config, total_steps, dp_step, _hashable(augment), float(label_smoothing),
        None if compute_dtype is None else jnp.dtype(compute_dtype), tuple(input_shape),
        scan_steps, steps_per_epoch)
    if n_dev > 1:
        mesh = Mesh(np.asarray(devs), ("members",))
        member_sharding, replicated = NamedSharding(mesh, P("members")), NamedSharding(mesh, P())
    else:
        member_sharding = replicated = devs[0]
    images = jax.device_put(dataset.images, replicated)
    labels = jax.device_put(dataset.labels, replicated)

    results = []
    bar = tqdm(total=epochs * math.ceil(k_total / chunk_k), desc="training", unit="epoch",
               disable=not progress)
    for c, start in enumerate(range(0, k_total, chunk_k)):
        rows = np.arange(start, min(start + chunk_k, k_total))
        real = len(rows)
        rows = np.concatenate([rows, np.repeat(rows[:1], chunk_k - real)])  # pad the last chunk
        ids, chunk_subsets = member_ids[rows], [subsets[r] for r in rows]
        state = init_fn(jax.device_put(_member_keys(key, ids, 0), member_sharding))
        if init_transform is not None:
            state = _transform_init(state, init_transform, member_sharding)
        history: dict[str, np.ndarray] = {}
        done = 0
        if checkpoints is not None:
            restored = checkpoints.restore(c, state)
            if restored is not None:
                done, state, history = restored
                bar.update(done)
        epoch_keys = _member_keys(key, ids, 1)
        for epoch in range(done, epochs):
            if dp_step is None:
                idx, w = epoch_plan(chunk_subsets, batch_size, steps=steps_per_epoch, seed=seed,
                                    epoch=epoch, member_ids=ids)
            else:
                rates = [batch_size / len(s) for s in chunk_subsets]
                idx, w = poisson_epoch_plan(chunk_subsets, rates, steps=steps_per_epoch,
                                            max_batch_size=max_batch, seed=seed, epoch=epoch,
                                            member_ids=ids)
            keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(epoch_keys)
            state, metrics = epoch_fn(state, images, labels,
                                      *(jax.device_put(a, member_sharding) for a in (idx, w, keys)))
            record = _epoch_record(model, state, metrics, dataset, test, ids,
                                   jax.random.fold_in(key, epoch),
                                   record_examples=record_examples,
                                   record_curvature=record_curvature, compute_dtype=compute_dtype)
            history = {k: np.concatenate([history[k], v[None]]) if k in history else v[None]
                       for k, v in record.items()}
            if checkpoints is not None:
                checkpoints.save(c, epoch + 1, state, history, final=epoch + 1 == epochs)
            bar.update(1)
            bar.set_postfix({k: f"{np.mean(v[-1][:real]):.3f}" for k, v in history.items()
                             if k in ("train_loss", "test_accuracy")})
            for callback in callbacks:
                callback(epoch, {"chunk": c, "members": ids[:real], "history": history})
        variables = jax.tree.map(lambda a: np.asarray(a)[:real], _variables(state))
        results.append((variables, {k: v[:, :real] for k, v in history.items()}))
    bar.close()

    stacked = jax.tree.map(lambda *a: np.concatenate(a), *[r[0] for r in results])
    history = {k: np.concatenate([r[1][k] for r in results], axis=1) for k in results[0][1]}
    return Ensemble(model, stacked, masks, member_ids, history, echo, privacy)


def _epoch_record(model, state: TrainState, metrics, dataset, test, member_ids, curvature_key, *,
                  record_examples, record_curvature, compute_dtype) -> dict[str, np.ndarray]:
    """Per-epoch host records: (K,) summaries and, when asked, (K, N) per-example arrays."""
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
        logits = _member_logits(model, variables, test.images, compute_dtype=compute_dtype)
        out["test_accuracy"] = (logits.argmax(-1) == test.labels[None]).mean(1)
    if record_examples:
        logits = _member_logits(model, variables, dataset.images, compute_dtype=compute_dtype)
        out["correct"] = logits.argmax(-1) == dataset.labels[None]
        out["loss"] = np.asarray(models.cross_entropy(jnp.asarray(logits),
                                                      jnp.asarray(dataset.labels)[None]))
    if record_curvature:
        curv = _stacked_curvature(model, variables, member_ids, curvature_key, dataset.images,
                                  dataset.labels, num_probes=record_curvature,
                                  compute_dtype=compute_dtype, progress=False)
        out["curvature"] = curv.trace
    return out


def fit_one(model, dataset: Dataset, key: jax.Array, **kwargs) -> tuple[dict, dict]:
    """Train one model on all of ``dataset`` (the K = 1 case of :func:`train`).

    Returns (variables, history) of that model; keywords as for :func:`train`.
    """
    ens = train(model, dataset, np.ones((1, len(dataset)), bool), key, **kwargs)
    return ens.member(0), {k: v[:, 0] for k, v in ens.history.items()}
