"""Per-member evaluation of an ensemble (private; the public names are re-exported by
:mod:`jaxcurv.ensemble`): logits, accuracy, the one-example loss, and member × example input
curvature and black-box curvature.

``make_predict`` / ``make_member_curvature`` / ``make_member_zero_order_curvature`` take a model
(any kind ``as_model`` accepts) and return a function that holds its compiled kernel, applied to an
Ensemble or to stacked variables; callers that evaluate repeatedly keep that function. Member k's
random key is ``fold_in(key, member_ids[k])``: rows do not depend on which members are computed
together, nor on how members are split over processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcurv import models
from jaxcurv._chunks import map_chunks
from jaxcurv._tree import cast_floats, unstack
from jaxcurv.curvature import Curvature, make_input_curvature, make_zero_order_curvature
from jaxcurv.data import Dataset
from jaxcurv.model_interface import Model, as_model

Ensemble = Any  # jaxcurv.ensemble.Ensemble (annotation only: this module must not import it)
_EVAL_CHUNK = 1024

__all__ = ["make_predict", "make_member_curvature", "make_member_zero_order_curvature", "predict",
           "accuracy", "member_loss_fn", "member_curvature", "member_zero_order_curvature"]


def _make_logits_fn(model: Model, compute_dtype) -> Callable:
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


def _members(ensemble, member_ids) -> tuple[Any, np.ndarray]:
    """(stacked variables, member ids (K,)) of an Ensemble or of stacked variables (ids given or
    0..K−1)."""
    variables = getattr(ensemble, "variables", ensemble)
    leaves = jax.tree.leaves(variables)
    if not leaves or any(np.ndim(a) == 0 for a in leaves):
        raise ValueError("expected an Ensemble or variables stacked on a leading member axis")
    k_total = int(leaves[0].shape[0])
    if member_ids is None:
        member_ids = getattr(ensemble, "member_ids", None)
    ids = np.arange(k_total) if member_ids is None else np.asarray(member_ids)
    if ids.shape != (k_total,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"member_ids must be {k_total} integers, got {member_ids!r}")
    return variables, ids.astype(np.int64)


def _check_images(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    return images


def make_predict(model, *, compute_dtype=None) -> Callable:
    """``predict(ensemble, images, *, progress=False) -> logits (K, N, C)`` (host, float32) of
    every member in inference mode; ``ensemble``: an Ensemble or variables stacked on a leading
    K axis. The forward pass is compiled once and reused by every call of the same image shape."""
    logits_fn = _make_logits_fn(as_model(model), compute_dtype)

    def predict_fn(ensemble, images, *, progress: bool = False) -> np.ndarray:
        images = _check_images(images)
        variables, _ = _members(ensemble, None)
        return _member_logits(logits_fn, variables, images, progress=progress)

    return predict_fn


def predict(ensemble: Ensemble, images, *, compute_dtype=None,
            progress: bool = False) -> np.ndarray:
    """Logits (K, N, C) of every member on images (N, H, W, C), in inference mode (compiles its
    kernel; callers that predict repeatedly keep ``make_predict(ensemble.model)``)."""
    return make_predict(ensemble.model, compute_dtype=compute_dtype)(ensemble, images,
                                                                     progress=progress)


def accuracy(ensemble: Ensemble, dataset: Dataset) -> np.ndarray:
    """Accuracy (K,) of each member on ``dataset``."""
    logits = predict(ensemble, dataset.images)
    return (logits.argmax(-1) == dataset.labels[None]).mean(axis=1)


def member_loss_fn(ensemble_or_model) -> Callable:
    """``loss_fn(variables, x, y) -> scalar``: cross-entropy of ONE example (H, W, C) under a
    member's variables, inference mode (models.make_loss_fn of the ensemble's model)."""
    return models.make_loss_fn(getattr(ensemble_or_model, "model", ensemble_or_model))


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


def _per_member(model, make: Callable, desc: str, **config) -> Callable:
    """``fn(ensemble, images, labels, key, *, h, members, member_ids, progress) -> list`` of
    ``make(loss_fn, num_classes=C, **config)`` applied to each selected member with key
    fold_in(key, member id). The estimator is built once per image shape (C, the model's output
    size, from an abstract evaluation: labels are checked against it) and held here."""
    model = as_model(model)
    loss_fn = models.make_loss_fn(model)
    estimators: dict[tuple, Callable] = {}

    def estimator(variables, image_shape: tuple) -> Callable:
        if image_shape not in estimators:
            x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
            out = jax.eval_shape(model.apply, unstack(variables, 0), x)
            estimators[image_shape] = make(loss_fn, num_classes=int(out.shape[-1]), **config)
        return estimators[image_shape]

    def run(ensemble, images, labels, key, *, h: float, members, member_ids, progress: bool):
        variables, ids = _members(ensemble, member_ids)
        rows = _select_members(members, len(ids))
        estimate = estimator(variables, tuple(np.shape(images)[1:]))
        keys = [jax.random.fold_in(key, int(ids[r])) for r in rows]
        return _stacked(functools.partial(estimate, h=h), variables, rows, keys, images, labels,
                        progress=progress, desc=desc)

    return run


def make_member_curvature(model, *, num_probes: int = 10, method: str = "hutchinson",
                          batch_size: int | None = None, compute_dtype=None) -> Callable:
    """``fn(ensemble, images, labels, key, *, h=1e-3, members=None, member_ids=None,
    progress=False) -> Curvature`` of (K', N) fields: the input curvature of the members at
    indices ``members`` (default all K) on every example.

    Row j equals ``input_curvature(models.make_loss_fn(model), member k's variables, images,
    labels, fold_in(key, member_ids[k]))`` for k = members[j] (member ids: the Ensemble's, or
    ``member_ids``, or 0..K−1 for stacked variables). One compiled kernel serves every member
    and every call of the same image shape."""
    run = _per_member(model, make_input_curvature, "member curvature", num_probes=num_probes,
                      method=method, batch_size=batch_size, compute_dtype=compute_dtype)

    def curvature_fn(ensemble, images, labels, key, *, h: float = 1e-3, members=None,
                     member_ids=None, progress: bool = False) -> Curvature:
        out = run(ensemble, images, labels, key, h=h, members=members, member_ids=member_ids,
                  progress=progress)
        return Curvature(*(np.stack(field) for field in zip(*out)))

    return curvature_fn


def make_member_zero_order_curvature(model, *, num_probes: int = 10, method: str = "mixed",
                                     compute_dtype=None) -> Callable:
    """``fn(ensemble, images, labels, key, *, h=1e-3, members=None, member_ids=None,
    progress=False) -> (K', N)``: black-box curvature of the members at indices ``members``
    (default all K). Row j equals ``zero_order_curvature(models.make_loss_fn(model), member k's
    variables, images, labels, fold_in(key, member_ids[k]), method=method)`` for k = members[j].
    ``compute_dtype=jnp.float64`` (CPU) keeps the finite differences' digits (see
    curvature.zero_order_curvature)."""
    run = _per_member(model, make_zero_order_curvature, "member zero-order curvature",
                      num_probes=num_probes, method=method, compute_dtype=compute_dtype)

    def zero_order_fn(ensemble, images, labels, key, *, h: float = 1e-3, members=None,
                      member_ids=None, progress: bool = False) -> np.ndarray:
        return np.stack(run(ensemble, images, labels, key, h=h, members=members,
                            member_ids=member_ids, progress=progress))

    return zero_order_fn


def member_curvature(ensemble: Ensemble, images, labels, key: jax.Array, *, num_probes: int = 10,
                     method: str = "hutchinson", h: float = 1e-3, batch_size: int | None = None,
                     compute_dtype=None, members: Sequence[int] | None = None,
                     progress: bool = False) -> Curvature:
    """Input curvature (Curvature of (K', N) fields) of an Ensemble's members at indices
    ``members`` (default all): ``make_member_curvature`` for one call (it compiles its kernel;
    callers that loop keep the function ``make_member_curvature`` returns)."""
    fn = make_member_curvature(ensemble.model, num_probes=num_probes, method=method,
                               batch_size=batch_size, compute_dtype=compute_dtype)
    return fn(ensemble, images, labels, key, h=h, members=members, progress=progress)


def member_zero_order_curvature(ensemble: Ensemble, images, labels, key: jax.Array, *,
                                num_probes: int = 10, h: float = 1e-3, method: str = "mixed",
                                compute_dtype=None, members: Sequence[int] | None = None,
                                progress: bool = False) -> np.ndarray:
    """Black-box curvature (K', N) of an Ensemble's members at indices ``members`` (default
    all): ``make_member_zero_order_curvature`` for one call (callers that loop keep the
    function it returns)."""
    fn = make_member_zero_order_curvature(ensemble.model, num_probes=num_probes, method=method,
                                          compute_dtype=compute_dtype)
    return fn(ensemble, images, labels, key, h=h, members=members, progress=progress)
