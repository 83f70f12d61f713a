"""Memorization proxies of a trained ensemble in one call: confidence, loss, learning time, input
curvature at the end of and over training, and adversarial distance, each averaged per example
over the members that trained on it (IN) or did not (OUT).

Combines the primitives :mod:`jaxcurv.ensemble` (logits, per-member curvature),
:mod:`jaxcurv.memorization` (learning time) and :mod:`jaxcurv.adversarial`. Shapes: K members,
N examples, E epochs, C classes; results are (N,) float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcurv import ensemble as _ensemble
from jaxcurv._numerics import log_true_class_probability, masked_mean
from jaxcurv._validate import check_positive, check_positive_int
from jaxcurv.adversarial import make_adversarial_distance
from jaxcurv.memorization import learning_time

__all__ = ["PROXY_NAMES", "ADVERSARIAL_OPTIONS", "proxies"]

# Every key ``proxies`` can return, in a stable order (CSV columns).
PROXY_NAMES = (
    "confidence",
    "confidence_in",
    "loss",
    "loss_out",
    "learning_time",
    "inverse_learning_time",
    "curvature_in",
    "curvature_out",
    "curvature_trace_in",
    "curvature_trace_out",
    "curvature_train_in",
    "curvature_train_out",
    "adversarial_distance",
)

# The keys ``adversarial_options`` may hold (keywords of jaxcurv.adversarial.adversarial_distance).
ADVERSARIAL_OPTIONS = ("max_norm", "min_norm", "pgd_steps", "search_steps", "num_targets",
                       "batch_size")

_MAX_ADVERSARIAL_BATCH = 256


def _example_logits_fn(model) -> Callable:
    """logits_fn(variables, x) -> (C,) float32 for one example x, in inference mode."""

    def fn(variables, x):
        return model.apply(variables, x[None], train=False)[0].astype(jnp.float32)

    return fn


def _check_logits(logits, labels: np.ndarray, k: int, n: int) -> np.ndarray:
    """Real logits (K, N, C) with C above every label."""
    arr = np.asarray(logits)
    if (arr.ndim != 3 or arr.shape[:2] != (k, n) or arr.dtype == bool
            or not np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"logits must be (K={k}, N={n}, C) real numbers, got {arr.dtype} "
                         f"{arr.shape}")
    if labels.size and labels.max() >= arr.shape[2]:
        raise ValueError(f"logits have C={arr.shape[2]} classes but a label is {labels.max()}")
    return arr


def _check_curvature(curvature, k: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(trace, trace_sq or None), each (K, N), from a Curvature of (K, N) fields or a (K, N) tr(H)
    array (an ndarray has a .trace method, so look for trace_sq)."""
    if hasattr(curvature, "trace_sq"):
        fields = ((curvature.trace, "curvature.trace"), (curvature.trace_sq, "curvature.trace_sq"))
    else:
        fields = ((curvature, "curvature"),)
    out = []
    for a, name in fields:
        arr = np.asarray(a)
        if arr.shape != (k, n) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be a real (K={k}, N={n}) array (a Curvature from "
                             "ensemble.member_curvature, or its trace), got "
                             f"{arr.dtype} {arr.shape}")
        out.append(arr.astype(np.float64))
    return out[0], (out[1] if len(out) > 1 else None)


def _adversarial_search(model, masks: np.ndarray, options: Mapping[str, Any]):
    """(fn, norms): the search built once from ``options`` (batch_size default: the largest IN
    count, at most 256, so every member runs the same compiled shape) and its radius keywords."""
    unknown = set(options) - set(ADVERSARIAL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown adversarial_options {sorted(unknown)}; allowed: "
                         f"{', '.join(ADVERSARIAL_OPTIONS)}")
    norms = {name: options.get(name) for name in ("max_norm", "min_norm")}
    for name, value in norms.items():
        if value is not None:
            check_positive(name, value)
    if None not in norms.values() and norms["min_norm"] >= norms["max_norm"]:
        raise ValueError(f"min_norm ({norms['min_norm']}) must be smaller than max_norm "
                         f"({norms['max_norm']})")
    batch = options.get("batch_size", min(_MAX_ADVERSARIAL_BATCH, int(masks.sum(1).max())))
    fn = make_adversarial_distance(_example_logits_fn(model),
                                   pgd_steps=options.get("pgd_steps", 10),
                                   num_targets=options.get("num_targets"),
                                   search_steps=options.get("search_steps", 12), batch_size=batch)
    return fn, norms


def _check_history(history: Mapping[str, Any], k: int, n: int) -> None:
    for name in ("correct", "curvature"):
        if name in history and np.shape(history[name])[1:] != (k, n):
            raise ValueError(f"history[{name!r}] must be (E, K={k}, N={n}), got "
                             f"{np.shape(history[name])}")


def proxies(ensemble, dataset, key: jax.Array, *, logits=None, curvature=None,
            end_curvature: bool = True, num_probes: int = 10, adversarial: bool = False,
            adversarial_options: Mapping[str, Any] | None = None,
            progress: bool = False) -> dict[str, np.ndarray]:
    """Per-example memorization proxies of an ensemble on the data it was trained on: dict of (N,)
    float64 arrays (keys from ``PROXY_NAMES``; NaN for an example no member held in / out).

    IN / OUT = members whose subset ``ensemble.masks[k]`` holds / lacks the example; all values at
    the end of training unless stated.
      confidence, confidence_in: mean softmax p_y over OUT / IN members.
      loss, loss_out: mean cross-entropy −log p_y over IN / OUT members.
      learning_time: mean over IN members of :func:`jaxcurv.memorization.learning_time` of
        history["correct"] (1-based, E + 1 = not learned); inverse_learning_time: mean over IN
        members of 1/t (not 1/mean t). Present when trained with ``record_examples=True``.
      curvature_in/_out, curvature_trace_in/_out: mean tr(H²) (the papers' Curv) / tr(H) over
        IN / OUT members, from ``curvature`` — a Curvature of (K, N) fields already computed, or a
        (K, N) tr(H) array (then only curvature_trace_*) — or, with ``end_curvature``, from
        ensemble.member_curvature(…, key, num_probes=num_probes).
      curvature_train_in/_out: mean over epochs and IN / OUT members of history["curvature"]
        (tr(H²); present when trained with ``record_curvature``).
      adversarial_distance (with ``adversarial``): mean over IN members of
        :func:`jaxcurv.adversarial.adversarial_distance` (keywords from ``adversarial_options``),
        computed only on each member's IN examples; +inf if any IN member was never flipped
        within max_norm.
    ``logits`` (K, N, C): ``ensemble.predict(ensemble, dataset.images)`` if already computed.
    """
    masks = np.asarray(ensemble.masks, bool)
    k_total, n = masks.shape
    if len(dataset) != n:
        raise ValueError(f"dataset has {len(dataset)} examples but the ensemble's masks cover {n}; "
                         "pass the dataset the ensemble was trained on")
    labels = np.asarray(dataset.labels)
    if logits is not None:
        logits = _check_logits(logits, labels, k_total, n)
    if curvature is not None:
        curvature = _check_curvature(curvature, k_total, n)
    elif end_curvature:
        num_probes = check_positive_int("num_probes", num_probes)
    search = (_adversarial_search(ensemble.model, masks, dict(adversarial_options or {}))
              if adversarial else None)
    history = ensemble.history or {}
    _check_history(history, k_total, n)

    if logits is None:
        logits = _ensemble.predict(ensemble, dataset.images, progress=progress)
    if curvature is None and end_curvature:
        c = _ensemble.member_curvature(ensemble, dataset.images, labels, key,
                                       num_probes=num_probes, progress=progress)
        curvature = (c.trace, c.trace_sq)
    result = _end_of_training(logits, labels, masks, curvature)
    result.update(_over_training(history, masks))
    if search is not None:
        result["adversarial_distance"] = _member_adversarial(ensemble, dataset, masks, *search,
                                                             progress=progress)
    return {name: result[name] for name in PROXY_NAMES if name in result}


def _end_of_training(logits, labels, masks, curvature) -> dict[str, np.ndarray]:
    """Confidence, loss and (when given) curvature proxies from (K, N) per-member values."""
    out_mask = ~masks
    logp = log_true_class_probability(logits, labels[None])
    result = {
        "confidence": masked_mean(np.exp(logp), out_mask),
        "confidence_in": masked_mean(np.exp(logp), masks),
        "loss": masked_mean(-logp, masks),
        "loss_out": masked_mean(-logp, out_mask),
    }
    if curvature is not None:
        trace, trace_sq = curvature
        result["curvature_trace_in"] = masked_mean(trace, masks)
        result["curvature_trace_out"] = masked_mean(trace, out_mask)
        if trace_sq is not None:
            result["curvature_in"] = masked_mean(trace_sq, masks)
            result["curvature_out"] = masked_mean(trace_sq, out_mask)
    return result


def _over_training(history: Mapping[str, Any], masks: np.ndarray) -> dict[str, np.ndarray]:
    """Learning-time and training-curvature proxies from the per-epoch history, when recorded."""
    result = {}
    if "correct" in history:
        t = learning_time(history["correct"])
        result["learning_time"] = masked_mean(t, masks)
        result["inverse_learning_time"] = masked_mean(1.0 / t, masks)
    if "curvature" in history:
        over_epochs = np.asarray(history["curvature"], np.float64).mean(0)
        result["curvature_train_in"] = masked_mean(over_epochs, masks)
        result["curvature_train_out"] = masked_mean(over_epochs, ~masks)
    return result


def _member_adversarial(ensemble, dataset, masks, fn, norms, *, progress) -> np.ndarray:
    """(K, N) adversarial distance on each member's IN examples (NaN elsewhere) → mean over IN."""
    k_total, n = masks.shape
    dist = np.full((k_total, n), np.nan)
    for k in tqdm(range(k_total), desc="adversarial distance", leave=False,
                  disable=not progress or k_total == 1):
        idx = np.flatnonzero(masks[k])
        if idx.size:
            dist[k, idx] = fn(ensemble.member(k), dataset.images[idx], dataset.labels[idx],
                              **norms).distance
    return masked_mean(np.where(masks, dist, 0.0), masks)
