"""Feldman–Zhang memorization, its proxies, and the data-side helpers the audit plots from.

Shapes: K ensemble members, N examples, E epochs, C classes. Host-side statistics are float64
numpy; the adversarial search is jit-compiled and vmapped over examples and target classes, with
a host loop over members.

- ``feldman_zhang``: mem(i) = P̂[correct on i | i in] − P̂[correct on i | i out] over an ensemble
  trained on random subsets (Feldman & Zhang 2020), with its binomial standard error.
- ``proxies``: per-example proxies of memorization from an ``ensemble.Ensemble`` in one call
  (confidence, loss, learning time, curvature at the end of and over training, adversarial
  distance); ``learning_time`` and ``adversarial_distance`` are also public on their own.
- ``correlations``, ``top_memorized``, ``bin_by``: what the mem-vs-proxy figures need.
- ``rank_flipped``: how well a score ranks mislabeled (flipped) examples first.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats
from sklearn import metrics as _skm
from tqdm.auto import tqdm

from jaxcurv import ensemble as _ensemble
from jaxcurv._chunks import map_chunks

__all__ = [
    "feldman_zhang",
    "cross_fitted_memorization",
    "masked_mean",
    "correctness",
    "learning_time",
    "AdversarialDistance",
    "adversarial_distance",
    "proxies",
    "PROXY_NAMES",
    "correlations",
    "top_memorized",
    "BinStats",
    "bin_by",
    "rank_flipped",
    "STDERR_METHODS",
]

STDERR_METHODS = ("plugin", "agresti_caffo")

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
    "curvature_sq_in",
    "curvature_sq_out",
    "curvature_train_in",
    "curvature_train_out",
    "adversarial_distance",
)


# ----------------------------------------------------------------------------------------------
# validation helpers (host side, before any compute)


def _as_bool(name: str, a: Any) -> np.ndarray:
    """Bool array from a bool array or a numeric array holding only 0 and 1."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (only True/False or 0/1); it holds other values "
                         "(NaN, fractions or counts): pass a bool array")
    return arr.astype(bool)


def _as_float(name: str, a: Any, *, ndim: int = 1) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of values (K, N) where mask (K, N); NaN where a column has no True."""
    values = np.asarray(values, np.float64)
    count = mask.sum(0)
    total = np.where(mask, values, 0.0).sum(0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


# ----------------------------------------------------------------------------------------------
# Feldman–Zhang memorization


def feldman_zhang(correct, in_mask, *,
                  stderr_method: str = "plugin") -> tuple[np.ndarray, np.ndarray]:
    """Feldman–Zhang memorization of each example from an ensemble: (mem, stderr), each (N,).

    correct, in_mask: bool (K, N) — member k classifies example i correctly / trained on it.
    mem(i) = p_in − p_out with p_in = mean of correct[k, i] over the n_in members with i in their
    subset and p_out over the n_out others. ``stderr_method``: "plugin" (default, as in FZ):
    √(p_in(1−p_in)/n_in + p_out(1−p_out)/n_out) — exactly 0 when both p are 0 or 1, which with
    few members understates the uncertainty; "agresti_caffo": the same formula with
    p̃ = (successes + 1)/(n + 2) and n + 2 (Agresti & Caffo 2000), never 0 (mem stays the plug-in
    difference). Examples never in or never out get NaN (one warning says how many).
    """
    if stderr_method not in STDERR_METHODS:
        raise ValueError(f"unknown stderr_method {stderr_method!r}; choose one of {STDERR_METHODS}")
    c = _as_bool("correct", correct)
    m = _as_bool("in_mask", in_mask)
    if c.ndim != 2 or c.shape != m.shape:
        raise ValueError(f"correct and in_mask must both be (K, N) with the same shape, got "
                         f"{c.shape} and {m.shape}")
    if c.shape[0] < 2:
        raise ValueError(f"feldman_zhang needs K >= 2 models (some with the example in, some "
                         f"out), got K = {c.shape[0]}")
    n_in, n_out = m.sum(0), (~m).sum(0)
    x_in, x_out = (c & m).sum(0), (c & ~m).sum(0)
    bad = (n_in == 0) | (n_out == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_in, p_out = x_in / n_in, x_out / n_out
        mem = p_in - p_out
        if stderr_method == "agresti_caffo":
            t_in, t_out = n_in + 2.0, n_out + 2.0
            q_in, q_out = (x_in + 1.0) / t_in, (x_out + 1.0) / t_out
            var = q_in * (1 - q_in) / t_in + q_out * (1 - q_out) / t_out
        else:
            var = p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out
    mem = np.where(bad, np.nan, mem)
    stderr = np.where(bad, np.nan, np.sqrt(np.maximum(var, 0.0)))
    if bad.any():
        warnings.warn(f"feldman_zhang: {int((n_in == 0).sum())} example(s) are in no model's "
                      f"subset and {int((n_out == 0).sum())} in every model's; their mem and "
                      "stderr are NaN (use more models or balanced subset_masks)", stacklevel=2)
    return mem.astype(np.float64), stderr.astype(np.float64)


def cross_fitted_memorization(correct, in_mask) -> np.ndarray:
    """(K, N): row k holds each example's FZ memorization estimated only from the members of the
    other half (members split by index parity), so an analysis of member k's outcomes per
    memorization bin does not select on member k's own correctness. NaN (no warning) where that
    half never holds an example in or out."""
    correct, in_mask = _as_bool("correct", correct), _as_bool("in_mask", in_mask)
    if correct.shape != in_mask.shape or correct.ndim != 2:
        raise ValueError(f"correct {correct.shape} and in_mask {in_mask.shape} must be the same (K, N)")
    k = correct.shape[0]
    if k < 4:
        raise ValueError(f"cross-fitting needs K >= 4 members (two per half), got {k}")
    odd = np.arange(k) % 2 == 1
    out = np.empty(correct.shape)
    for estimate in (odd, ~odd):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mem, _ = feldman_zhang(correct[estimate], in_mask[estimate])
        out[~estimate] = mem
    return out


def correctness(logits, labels) -> np.ndarray:
    """correct[k, i] = (argmax_c logits[k, i, c] == labels[i]); logits (K, N, C), labels (N,) →
    bool (K, N)."""
    logits, labels = _check_logits(logits, labels)
    return logits.argmax(-1) == labels[None]


def _check_logits(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (K, N, C), got shape {logits.shape}")
    if labels.shape != logits.shape[1:2] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape (N={logits.shape[1]},), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[2]):
        raise ValueError(f"labels must lie in [0, C={logits.shape[2]})")
    return logits, labels


# ----------------------------------------------------------------------------------------------
# learning time


def learning_time(correct_history) -> np.ndarray:
    """Learning time (K, N) from per-epoch correctness (E, K, N) bool (row e = after epoch e + 1).

    1-based: t = the smallest epoch e ∈ {1, …, E} such that the example is correct after every
    epoch e, e + 1, …, E; t = E + 1 when it is wrong after the last epoch (not learned within E
    epochs). E.g. [F, T, F, T, T] → 4, [T, T, T] → 1, [T, T, F] → 4.
    """
    c = _as_bool("correct_history", correct_history)
    if c.ndim < 1 or c.shape[0] < 1:
        raise ValueError(f"correct_history must be (E, ...) with E >= 1 epochs, got {c.shape}")
    stays = np.logical_and.accumulate(c[::-1], axis=0)  # correct from epoch e to the end
    return (c.shape[0] + 1 - stays.sum(0)).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# adversarial distance


class AdversarialDistance(NamedTuple):
    """Per-example (N,) results of :func:`adversarial_distance`.

    ``distance``: smallest searched L2 radius at which the attack flipped the prediction (0 if the
    clean prediction is already wrong, +inf if no flip within max_norm); ``lower``: largest
    searched radius at which it did not (0 when none failed; max_norm when distance is inf).
    For an exact attack the true minimal distance lies in [lower, distance].
    """

    distance: np.ndarray
    lower: np.ndarray


def _pgd_success(logits_fn, params, x, y, target, radius, *, pgd_steps: int):
    """Targeted L2 PGD on the margin z_target − z_y in the ball ‖δ‖₂ ≤ radius: does any iterate
    (δ₀ = 0, …, δ_T) have argmax z(x + δ) ≠ y?  Step δ ← Π(δ + α g/‖g‖), α = 2.5·radius/T."""
    tiny = jnp.asarray(1e-12, x.dtype)
    alpha = 2.5 * radius / pgd_steps

    def margin(d):
        z = logits_fn(params, x + d)
        return z[target] - z[y], z

    grad_fn = jax.grad(margin, has_aux=True)
    d = jnp.zeros_like(x)
    success = jnp.zeros((), bool)
    for _ in range(pgd_steps):  # unrolled: XLA on CPU runs convolutions inside loops slowly
        g, z = grad_fn(d)
        success = success | (jnp.argmax(z) != y)
        d = d + alpha * g / jnp.maximum(jnp.linalg.norm(g.reshape(-1)), tiny)
        norm = jnp.linalg.norm(d.reshape(-1))
        d = d * jnp.minimum(1.0, radius / jnp.maximum(norm, tiny))
    z = logits_fn(params, x + d)
    return success | (jnp.argmax(z) != y)


@functools.lru_cache(maxsize=32)
def _adversarial_kernels(logits_fn: Callable, pgd_steps: int, num_targets: int | None):
    """Jitted batch kernels (start, step): start(params, x, y, max_norm) → (lo, hi) after testing
    max_norm; step(params, x, y, lo, hi, min_norm) → (lo, hi) after one log-bisection step."""

    def example_success(params, x, y, radius):
        z = logits_fn(params, x)
        c = z.shape[-1]
        k = c - 1 if num_targets is None else min(num_targets, c - 1)
        others = jnp.where(jnp.arange(c) == y, -jnp.inf, z)
        targets = jnp.argsort(-others)[:k]  # the k other classes with the highest logits
        attack = lambda t: _pgd_success(logits_fn, params, x, y, t, radius, pgd_steps=pgd_steps)
        return jax.vmap(attack)(targets).any()

    batched = jax.vmap(example_success, in_axes=(None, 0, 0, 0))

    def clean_wrong(params, x, y):
        z = jax.vmap(lambda xi: logits_fn(params, xi))(x)
        return jnp.argmax(z, axis=-1) != y

    def step(params, x, y, lo, hi, min_norm):
        # bisection in log radius on [max(lo, min_norm), hi]: relative, not absolute, precision
        radius = jnp.sqrt(jnp.maximum(lo, min_norm) * hi)
        active = jnp.isfinite(hi) & (hi > 0)
        s = batched(params, x, y, jnp.where(active, radius, 0.0).astype(x.dtype))
        hi_new = jnp.where(active & s, radius, hi)
        lo_new = jnp.where(active & ~s, radius, lo)
        return lo_new, hi_new

    def start(params, x, y, max_norm):
        wrong = clean_wrong(params, x, y)
        s = batched(params, x, y, jnp.full(x.shape[:1], max_norm, x.dtype))
        hi = jnp.where(wrong, 0.0, jnp.where(s, max_norm, jnp.inf))
        lo = jnp.where(wrong | s, 0.0, max_norm)
        return lo.astype(x.dtype), hi.astype(x.dtype)

    return jax.jit(start), jax.jit(step)


def _check_adversarial(max_norm, min_norm, pgd_steps, search_steps, num_targets,
                       batch_size) -> None:
    for name, v, lo in (("pgd_steps", pgd_steps, 1), ("search_steps", search_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    for name, v in (("num_targets", num_targets), ("batch_size", batch_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
    for name, v in (("max_norm", max_norm), ("min_norm", min_norm)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.floating))
                              or not math.isfinite(v) or v <= 0):
            raise ValueError(f"{name} must be None or a finite number > 0, got {v!r}")
    if max_norm is not None and min_norm is not None and min_norm >= max_norm:
        raise ValueError(f"min_norm ({min_norm}) must be smaller than max_norm ({max_norm})")


def adversarial_distance(logits_fn: Callable, params, x, y, *, max_norm: float | None = None,
                         min_norm: float | None = None, pgd_steps: int = 10, search_steps: int = 12,
                         num_targets: int | None = None, batch_size: int | None = None,
                         progress: bool = False) -> AdversarialDistance:
    """Smallest L2 perturbation radius that flips the prediction of each example; (N,) arrays.

    ``logits_fn(params, x) -> (C,)`` for ONE example x (unbatched); x (N, ...) float, y (N,) int.
    Success at radius r: for each of ``num_targets`` target classes t ≠ y (default all C − 1;
    else the highest-logit ones), targeted L2 PGD on z_t − z_y with ``pgd_steps`` normalized
    gradient steps of size 2.5r/T projected on ‖δ‖₂ ≤ r (T = 1 is the fast gradient method);
    success if any iterate of any target has argmax ≠ y. Search: test r = max_norm (default √D,
    D = x[0].size; no flip → +inf), then ``search_steps`` bisection steps in log r on the bracket
    [max(lower, min_norm), distance] (r = geometric mean; min_norm default max_norm·1e-6):
    distance/lower ≤ (max_norm/min_norm)^(2^−search_steps) once some radius failed (0.34 % for the
    defaults); distances below min_norm come back as ≈ min_norm with lower = 0. Exact for linear
    models up to that bracket; no [0, 1] box constraint. Already-misclassified examples get 0.
    Cost per example ≈ (search_steps + 1)·num_targets·pgd_steps gradients.
    """
    _check_adversarial(max_norm, min_norm, pgd_steps, search_steps, num_targets, batch_size)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a float array (N, ...) of examples, got {x.dtype} {x.shape}")
    if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer labels of shape (N={x.shape[0]},), got {y.dtype} "
                         f"{y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf; clean the inputs first")
    if max_norm is None:
        max_norm = math.sqrt(math.prod(x.shape[1:]))
    if min_norm is None:
        min_norm = max_norm * 1e-6
    if min_norm >= max_norm:
        raise ValueError(f"min_norm ({min_norm}) must be smaller than max_norm ({max_norm})")
    max_norm, min_norm = float(max_norm), float(min_norm)
    params = jax.device_put(params)
    start, step = _adversarial_kernels(logits_fn, int(pgd_steps),
                                       None if num_targets is None else int(num_targets))
    chunk = min(batch_size or 256, len(x))

    def run(xs, ys, idx, real):
        lo, hi = start(params, xs, ys, max_norm)
        for _ in range(search_steps):
            lo, hi = step(params, xs, ys, lo, hi, min_norm)
        return hi, lo

    distance, lower = map_chunks(run, (x, y.astype(np.int32)), step=chunk, chunk=chunk,
                                 progress=progress, desc="adversarial distance")
    return AdversarialDistance(distance.astype(np.float64), lower.astype(np.float64))


# ----------------------------------------------------------------------------------------------
# proxies


@functools.lru_cache(maxsize=32)
def _example_logits_fn(model) -> Callable:
    """logits_fn(variables, x) -> (C,) float32 for one example, inference mode (one per model, so
    the adversarial kernels compile once)."""

    def fn(variables, x):
        return model.apply(variables, x[None], train=False)[0].astype(jnp.float32)

    return fn


def _log_softmax_true(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y (K, N) in float64 from logits (K, N, C)."""
    logp = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
    return np.take_along_axis(logp, labels[None, :, None].astype(np.int64), axis=-1)[..., 0]


def _check_curvature(curvature, k: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(trace, trace_sq or None), each (K, N), from a Curvature of (K, N) fields or a (K, N) tr(H)
    array (an ndarray has a .trace method, so look for trace_sq)."""
    if hasattr(curvature, "trace_sq"):
        fields = (curvature.trace, curvature.trace_sq)
        names = ("curvature.trace", "curvature.trace_sq")
    else:
        fields, names = (curvature, None), ("curvature", None)
    out = []
    for a, name in zip(fields, names):
        if name is None:
            out.append(None)
            continue
        arr = np.asarray(a)
        if arr.shape != (k, n) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be a real (K={k}, N={n}) array (a Curvature from "
                             "ensemble.member_curvature, or its trace), got "
                             f"{arr.dtype} {arr.shape}")
        out.append(arr.astype(np.float64))
    return out[0], out[1]


def proxies(ensemble, dataset, key: jax.Array, *, logits=None, curvature=None,
            end_curvature: bool = True, num_probes: int = 10, adversarial: bool = False,
            adversarial_options: Mapping[str, Any] | None = None,
            progress: bool = True) -> dict[str, np.ndarray]:
    """Per-example memorization proxies of an ensemble on the data it was trained on: dict of (N,)
    float64 arrays (keys from ``PROXY_NAMES``; NaN for an example no member held in / out).

    IN / OUT = members whose subset ``ensemble.masks[k]`` holds / lacks the example; all values at
    the end of training unless stated.
      confidence, confidence_in: mean softmax p_y over OUT / IN members.
      loss, loss_out: mean cross-entropy −log p_y over IN / OUT members.
      learning_time: mean over IN members of :func:`learning_time` of history["correct"] (1-based,
        E + 1 = not learned); inverse_learning_time: mean over IN members of 1/t (not 1/mean t).
        Present when the ensemble was trained with ``record_examples=True``.
      curvature_in/_out, curvature_sq_in/_out: mean tr(H) / tr(H²) over IN / OUT members, from
        ``curvature`` — a Curvature of (K, N) fields already computed, or a (K, N) tr(H) array
        (then no curvature_sq_*) — or, with ``end_curvature``, from
        ensemble.member_curvature(…, key, num_probes=num_probes).
      curvature_train_in/_out: mean over epochs and IN / OUT members of history["curvature"]
        (present when trained with ``record_curvature``).
      adversarial_distance (with ``adversarial``): mean over IN members of
        :func:`adversarial_distance` (keywords from ``adversarial_options``), computed only on
        each member's IN examples; +inf if any IN member was never flipped within max_norm.
    ``logits`` (K, N, C): ``ensemble.predict(ensemble, dataset.images)`` if already computed.
    """
    masks = np.asarray(ensemble.masks, bool)
    k_total, n = masks.shape
    if len(dataset) != n:
        raise ValueError(f"dataset has {len(dataset)} examples but the ensemble's masks cover {n}; "
                         "pass the dataset the ensemble was trained on")
    labels = np.asarray(dataset.labels)
    if logits is not None:
        logits, _ = _check_logits(logits, labels)
        if logits.shape[0] != k_total:
            raise ValueError(f"logits must be (K={k_total}, N={n}, C), got {logits.shape}")
    if curvature is not None:
        curvature = _check_curvature(curvature, k_total, n)
    elif end_curvature and (isinstance(num_probes, bool)
                            or not isinstance(num_probes, (int, np.integer)) or num_probes < 1):
        raise ValueError(f"num_probes must be an integer >= 1, got {num_probes!r}")
    options = dict(adversarial_options or {})
    if adversarial:
        unknown = set(options) - {"max_norm", "min_norm", "pgd_steps", "search_steps",
                                  "num_targets", "batch_size"}
        if unknown:
            raise ValueError(f"unknown adversarial_options {sorted(unknown)}; allowed: max_norm, "
                             "min_norm, pgd_steps, search_steps, num_targets, batch_size")
        _check_adversarial(options.get("max_norm"), options.get("min_norm"),
                           options.get("pgd_steps", 10),
                           options.get("search_steps", 12), options.get("num_targets"),
                           options.get("batch_size"))
    history = ensemble.history or {}
    for name in ("correct", "curvature"):
        if name in history and np.shape(history[name])[1:] != (k_total, n):
            raise ValueError(f"history[{name!r}] must be (E, K={k_total}, N={n}), got "
                             f"{np.shape(history[name])}")

    if logits is None:
        logits = _ensemble.predict(ensemble, dataset.images, progress=progress)
    out_mask = ~masks
    logp = _log_softmax_true(logits, labels)
    result = {
        "confidence": masked_mean(np.exp(logp), out_mask),
        "confidence_in": masked_mean(np.exp(logp), masks),
        "loss": masked_mean(-logp, masks),
        "loss_out": masked_mean(-logp, out_mask),
    }
    if "correct" in history:
        t = learning_time(history["correct"])
        result["learning_time"] = masked_mean(t, masks)
        result["inverse_learning_time"] = masked_mean(1.0 / t, masks)
    if curvature is None and end_curvature:
        c = _ensemble.member_curvature(ensemble, dataset.images, labels, key,
                                       num_probes=num_probes, progress=progress)
        curvature = (c.trace, c.trace_sq)
    if curvature is not None:
        trace, trace_sq = curvature
        result["curvature_in"] = masked_mean(trace, masks)
        result["curvature_out"] = masked_mean(trace, out_mask)
        if trace_sq is not None:
            result["curvature_sq_in"] = masked_mean(trace_sq, masks)
            result["curvature_sq_out"] = masked_mean(trace_sq, out_mask)
    if "curvature" in history:
        over_epochs = np.asarray(history["curvature"], np.float64).mean(0)
        result["curvature_train_in"] = masked_mean(over_epochs, masks)
        result["curvature_train_out"] = masked_mean(over_epochs, out_mask)
    if adversarial:
        result["adversarial_distance"] = _member_adversarial(ensemble, dataset, masks, options,
                                                             progress=progress)
    return {name: result[name] for name in PROXY_NAMES if name in result}


def _member_adversarial(ensemble, dataset, masks, options, *, progress) -> np.ndarray:
    """(K, N) adversarial distance on each member's IN examples (NaN elsewhere) → mean over IN."""
    fn = _example_logits_fn(ensemble.model)
    k_total, n = masks.shape
    options = dict(options)
    options.setdefault("batch_size", min(256, int(masks.sum(1).max())))  # one shape for all members
    dist = np.full((k_total, n), np.nan)
    for k in tqdm(range(k_total), desc="adversarial distance", leave=False,
                  disable=not progress or k_total == 1):
        idx = np.flatnonzero(masks[k])
        dist[k, idx] = adversarial_distance(fn, ensemble.member(k), dataset.images[idx],
                                            dataset.labels[idx], **options).distance
    return masked_mean(np.where(masks, dist, 0.0), masks)


# ----------------------------------------------------------------------------------------------
# correlations, ranking, binning


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def correlations(mem, proxies: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Pearson and Spearman correlation (scipy.stats) of each proxy (N,) with mem (N,).

    name → {"pearson", "pearson_p", "spearman", "spearman_p", "n"}, over the n examples where
    both values are finite (NaN and ±inf pairs are dropped); NaN when n < 3 or an input is constant.
    """
    m = _as_float("mem", mem)
    out = {}
    for name, values in proxies.items():
        v = _as_float(f"proxies[{name!r}]", values)
        if v.shape != m.shape:
            raise ValueError(f"proxies[{name!r}] has shape {v.shape}; mem has {m.shape}")
        a, b = _finite_pairs(m, v)
        row = {"pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan,
               "spearman_p": math.nan, "n": int(a.size)}
        if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            pr, sr = stats.pearsonr(a, b), stats.spearmanr(a, b)
            row.update(pearson=float(pr.statistic), pearson_p=float(pr.pvalue),
                       spearman=float(sr.statistic), spearman_p=float(sr.pvalue))
        out[str(name)] = row
    return out


def top_memorized(mem, k: int) -> np.ndarray:
    """Indices of the k examples with the highest mem, highest first (ties: lower index first);
    NaN entries are skipped, so fewer than k come back when fewer are finite."""
    m = _as_float("mem", mem)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    idx = np.flatnonzero(~np.isnan(m))
    order = idx[np.argsort(-m[idx], kind="stable")]
    return order[:k]


class BinStats(NamedTuple):
    """Per-bin statistics (B,) of a target grouped by bins of values (see :func:`bin_by`)."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    value_mean: np.ndarray
    target_mean: np.ndarray
    target_stderr: np.ndarray


def bin_by(values, target, bins: int | Any = 10, *, strategy: str = "quantile") -> BinStats:
    """Mean and standard error (std ddof=1 / √n; NaN for n < 2) of target (N,) per bin of values
    (N,).

    bins: a count B with ``strategy`` "quantile" (equal-count bins of the sorted values; ties may
    straddle a border; lower/upper = the bin's smallest/largest value) or "uniform" (B equal-width
    bins over [min, max]); or an increasing array of B + 1 edges (values outside are dropped).
    Bins are [lower, upper) except the last, which is closed. Pairs with a non-finite entry are
    dropped. Empty bins have count 0 and NaN means.
    """
    v, t = _as_float("values", values), _as_float("target", target)
    if v.shape != t.shape:
        raise ValueError(f"values and target must have the same shape, got {v.shape} and {t.shape}")
    if strategy not in ("quantile", "uniform"):
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    v, t = _finite_pairs(v, t)
    if v.size == 0:
        raise ValueError("values and target have no finite pair to bin")
    if np.ndim(bins) == 0:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be an integer >= 1 or an array of edges, got {bins!r}")
        if strategy == "quantile":
            order = np.argsort(v, kind="stable")
            groups = np.array_split(order, int(bins))
            lower = np.array([v[g].min() if g.size else np.nan for g in groups])
            upper = np.array([v[g].max() if g.size else np.nan for g in groups])
            return _bin_stats(lower, upper, groups, v, t)
        edges = np.linspace(v.min(), v.max(), int(bins) + 1)
    else:
        edges = _as_float("bins", bins)
        if edges.size < 2 or not (np.diff(edges) > 0).all() or not np.isfinite(edges).all():
            raise ValueError("bins given as edges must be a finite, strictly increasing array of "
                             "length >= 2")
    b = len(edges) - 1
    which = np.searchsorted(edges, v, side="right") - 1
    which[v == edges[-1]] = b - 1  # the last bin is closed
    groups = [np.flatnonzero(which == j) for j in range(b)]
    return _bin_stats(edges[:-1], edges[1:], groups, v, t)


def _bin_stats(lower, upper, groups, v, t) -> BinStats:
    count = np.array([g.size for g in groups])
    vm = np.array([v[g].mean() if g.size else np.nan for g in groups])
    tm = np.array([t[g].mean() if g.size else np.nan for g in groups])
    se = np.array([t[g].std(ddof=1) / math.sqrt(g.size) if g.size > 1 else np.nan for g in groups])
    return BinStats(np.asarray(lower, np.float64), np.asarray(upper, np.float64), count, vm, tm, se)


def rank_flipped(score, flipped) -> dict[str, float]:
    """How well ``score`` (N,) ranks the mislabeled examples ``flipped`` (N,) bool first (higher
    score = more likely flipped): {"auroc", "average_precision", "precision_at_k", "k", "n"}.

    AUROC and average precision from sklearn.metrics; precision@k with k = number flipped: the
    fraction of flipped among the k highest scores, ties at the k-th score split pro rata (the
    expectation over random tie-breaking). NaN scores are dropped with a warning.
    """
    s = _as_float("score", score)
    f = _as_bool("flipped", flipped)
    if f.shape != s.shape:
        raise ValueError(f"score and flipped must have the same shape (N,), got {s.shape} and "
                         f"{f.shape}")
    nan = np.isnan(s)
    if nan.any():
        warnings.warn(f"rank_flipped: dropping {int(nan.sum())} example(s) with NaN score",
                      stacklevel=2)
        s, f = s[~nan], f[~nan]
    k = int(f.sum())
    if k == 0 or k == f.size:
        raise ValueError(f"rank_flipped needs both flipped and clean examples, got {k} flipped of "
                         f"{f.size} (with a finite score)")
    finite = np.nan_to_num(s, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    kth = np.sort(finite)[::-1][k - 1]
    above = finite > kth
    tied = finite == kth
    hits = f[above].sum() + (k - above.sum()) * f[tied].mean()
    return {"auroc": float(_skm.roc_auc_score(f, finite)),
            "average_precision": float(_skm.average_precision_score(f, finite)),
            "precision_at_k": float(hits / k), "k": k, "n": int(f.size)}
