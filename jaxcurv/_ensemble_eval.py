"""Per-member evaluation of an ensemble (private; the public names are re-exported by
:mod:`jaxcurv.ensemble`): logits, accuracy, the one-example loss, and member × example input
curvature and black-box curvature, with the compiled estimators held on the Ensemble."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcurv import models
from jaxcurv._chunks import map_chunks
from jaxcurv._multiprocess import _gather_share, _process_share
from jaxcurv._tree import cast_floats, unstack
from jaxcurv.curvature import Curvature, make_input_curvature, make_zero_order_curvature
from jaxcurv.data import Dataset

Ensemble = Any  # jaxcurv.ensemble.Ensemble (annotation only: this module must not import it)
_EVAL_CHUNK = 1024

__all__ = ["predict", "accuracy", "member_loss_fn", "member_curvature",
           "member_zero_order_curvature"]



def _make_logits_fn(model: nn.Module, compute_dtype) -> Callable:
    """jit(variables, x (B, H, W, C)) -> float32 logits (B, C), in inference mode."""

    def logits(variables, x):
        out = model.apply(cast_floats(variables, compute_dtype), cast_floats(x, compute_dtype))
        return out.astype(jnp.float32)

    return jax.jit(logits)


def _member_logits(fn: Callable, variables, images, *, progress: bool = False) -> np.ndarray:
    """logits (K, N, C) of stacked members on images (N, H, W, C): a loop over members (a vmap
    over members turns convolutions into grouped ones, slower on CPU) and chunks of examples."""
    images = np.asarray(images)
    chunk = min(_EVAL_CHUNK, len(images))
    k_total = jax.tree.leaves(variables)[0].shape[0]
    out = []
    for k in tqdm(range(k_total), desc="predict", disable=not progress or k_total == 1, leave=False):
        member = unstack(variables, k)
        (logits,) = map_chunks(lambda x, idx, real: (fn(member, x),), (images,), step=chunk,
                               chunk=chunk)
        out.append(logits)
    return np.stack(out)


def _dtype_name(compute_dtype) -> str | None:
    return None if compute_dtype is None else jnp.dtype(compute_dtype).name


def predict(ensemble: Ensemble, images, *, compute_dtype=None, progress: bool = False) -> np.ndarray:
    """Logits (K, N, C) of every member on images (N, H, W, C), in inference mode.

    The compiled forward pass is held on ``ensemble``: later calls with the same image shape
    (and chunk size) do not recompile."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    fn = ensemble._kernel(("logits", _dtype_name(compute_dtype)),
                          lambda: _make_logits_fn(ensemble.model, compute_dtype))
    return _member_logits(fn, ensemble.variables, images, progress=progress)


def accuracy(ensemble: Ensemble, dataset: Dataset) -> np.ndarray:
    """Accuracy (K,) of each member on ``dataset``."""
    logits = predict(ensemble, dataset.images)
    return (logits.argmax(-1) == dataset.labels[None]).mean(axis=1)


def member_loss_fn(ensemble: Ensemble) -> Callable:
    """``loss_fn(variables, x, y) -> scalar``: cross-entropy of ONE example (H, W, C) under a
    member's flax variables, BatchNorm in inference mode (models.make_loss_fn of the ensemble's
    model). The same function object is returned on every call for this ensemble."""
    return ensemble._kernel("loss_fn", lambda: models.make_loss_fn(ensemble.model))


def _select_members(members, k_total: int) -> np.ndarray:
    if members is None:
        return np.arange(k_total)
    rows = np.asarray(members)
    if (rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer)
            or len(set(rows.tolist())) != rows.size or rows.min() < 0 or rows.max() >= k_total):
        raise ValueError(f"members must be distinct member indices in [0, {k_total}), "
                         f"got {members!r}")
    return rows.astype(np.int64)


def _stacked(estimate: Callable, variables, rows, keys, images, labels, *, progress: bool,
             desc: str) -> list:
    """[estimate(member rows[j], images, labels, keys[j])] with one compiled estimator."""
    return [estimate(unstack(variables, int(r)), images, labels, k)
            for r, k in zip(tqdm(rows, desc=desc, leave=False,
                                 disable=not progress or len(rows) == 1), keys)]


def _held_estimator(ensemble: Ensemble, make: Callable, image_shape: tuple, **config) -> Callable:
    """``make(member_loss_fn(ensemble), num_classes=C, **config)`` held on ``ensemble`` (built
    once per configuration; ``h`` is passed per call, so it is not part of the configuration).
    C, the model's output size, comes from an abstract evaluation: labels are checked against it."""

    def build():
        x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        out = jax.eval_shape(ensemble.model.apply, ensemble.member(0), x)
        return make(member_loss_fn(ensemble), num_classes=int(out.shape[-1]), **config)

    name = (make.__name__, tuple(image_shape), *sorted((k, repr(v)) for k, v in config.items()))
    return ensemble._kernel(name, build)


def member_curvature(ensemble: Ensemble, images, labels, key: jax.Array, *, num_probes: int = 10,
                     method: str = "hutchinson", h: float = 1e-3, batch_size: int | None = None,
                     compute_dtype=None, members: Sequence[int] | None = None,
                     progress: bool = False) -> Curvature:
    """Input curvature of the members at indices ``members`` (default all K) on every example:
    Curvature fields of shape (K', N).

    Row j equals ``input_curvature(member_loss_fn(ensemble), ensemble.member(k), images, labels,
    fold_in(key, member_ids[k]))`` for k = members[j], so rows do not depend on which members are
    computed together; the compiled kernel is held on the ensemble and reused by later calls.
    """
    rows = _select_members(members, ensemble.num_members)
    rows, share = _process_share(rows)  # a multi-process job: this process's block of rows
    estimate = _held_estimator(ensemble, make_input_curvature, np.shape(images)[1:],
                               num_probes=num_probes, method=method, batch_size=batch_size,
                               compute_dtype=compute_dtype)
    keys = [jax.random.fold_in(key, int(ensemble.member_ids[r])) for r in rows]
    out = _stacked(functools.partial(estimate, h=h), ensemble.variables, rows, keys, images,
                   labels, progress=progress, desc="member curvature")
    return _gather_share(Curvature(*(np.stack(field) for field in zip(*out))), share)


def member_zero_order_curvature(ensemble: Ensemble, images, labels, key: jax.Array, *,
                                num_probes: int = 10, h: float = 1e-3, method: str = "mixed",
                                compute_dtype=None, members: Sequence[int] | None = None,
                                progress: bool = False) -> np.ndarray:
    """Black-box curvature (K', N) of the members at indices ``members`` (default all K).

    Row j equals ``zero_order_curvature(member_loss_fn(ensemble), ensemble.member(m), images,
    labels, fold_in(key, m), method=method)`` for m = members[j] (the member's index in the
    ensemble); the compiled kernel is held on the ensemble and reused by later calls.
    ``compute_dtype=jnp.float64`` (CPU) keeps the finite differences' digits (see
    curvature.zero_order_curvature).
    """
    rows = _select_members(members, ensemble.num_members)
    rows, share = _process_share(rows)  # a multi-process job: this process's block of rows
    estimate = _held_estimator(ensemble, make_zero_order_curvature, np.shape(images)[1:],
                               num_probes=num_probes, method=method, compute_dtype=compute_dtype)
    keys = [jax.random.fold_in(key, int(r)) for r in rows]
    return _gather_share(np.stack(_stacked(functools.partial(estimate, h=h), ensemble.variables,
                                           rows, keys, images, labels, progress=progress,
                                           desc="member zero-order curvature")), share)
