"""DP-SGD device math as pure functions: per-example gradients, clipping, masking, Gaussian noise.

One DP-SGD step (Abadi et al. 2016) with clip norm C, noise multiplier σ and expected batch size B:

    g̃ = (Σ_{i in batch} gᵢ · min(1, C/‖gᵢ‖) + N(0, σ²C² I)) / B,

where ‖gᵢ‖ is the global L2 norm of example i's gradient over the whole parameter pytree. The batch
is Poisson-sampled on the host by :mod:`jaxcurv.privacy.plan` (each example independently with
rate q = B/N), padded to a fixed ``max_batch_size`` and masked on the device: padded rows and rows
whose gradient is not finite contribute exactly zero (``jnp.where``, so a NaN in such a row cannot
leak), and the noisy sum is divided by the *expected* batch size B, never by the realized one
(dividing by the realized size would leak it). The optax update follows. This module imports no
accounting library (it runs where dp_accounting is not installed).

Entry points: :func:`dp_value_and_grad` (your own loop: any params pytree, a batch tuple),
:func:`dp_gradient` (``loss_fn(params, x, y)``; the ensemble trainer's step) — both one core,
``_private_value_and_grad`` — :func:`private_gradient` (per-example gradients you already have),
and :func:`dense_dp_gradient` (models whose parameters all sit in flax Dense layers: the same
result from layer inputs and output gradients, without per-example gradients).

Noise layout: one draw ``z = jax.random.normal(key, (P,), dtype)`` with P the total number of
gradient entries and dtype = float32 promoted with the leaves' dtypes; leaf j of
``jax.tree_util.tree_leaves(grads)`` takes the next ``leaf.size`` entries of z (C order), scaled by
σC, and the noisy sum is cast back to the leaf's dtype. (Per-leaf keys would compile one Threefry
kernel per leaf: 0.7 s each on CPU, 43 s for a 60-leaf model, against 1.5 s for one draw.) One fresh
``key`` per step (and per ensemble member) is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcurv._tree import leading_size
from jaxcurv._validate import check_float, check_positive, check_positive_int

__all__ = [
    "PrivateGradientInfo",
    "clip_per_example",
    "private_gradient",
    "per_example_gradients",
    "dp_gradient",
    "dp_value_and_grad",
    "dense_dp_gradient",
    "dense_norms_apply",
]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class PrivateGradientInfo(NamedTuple):
    """Per-step diagnostics as device arrays (no host sync).

    ``num_examples``: rows used (mask true and finite); ``num_nonfinite``: mask-true rows dropped
    for a non-finite gradient; ``num_clipped``: used rows with ‖g‖ > C; ``mean_norm``: mean
    pre-clip ‖g‖ over used rows (0 if none); ``loss``: mean loss over used rows (NaN when the
    caller passed per-example gradients, not a loss).
    """

    num_examples: jax.Array
    num_nonfinite: jax.Array
    num_clipped: jax.Array
    mean_norm: jax.Array
    loss: jax.Array


def _concrete(value) -> np.ndarray | None:
    """``value`` as a numpy array, or None when it is traced (validated by the caller instead)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_concrete_positive(name: str, value) -> None:
    """Validate Python/numpy scalars at the boundary; traced values are left to the caller."""
    arr = _concrete(value)
    if arr is None:
        return
    if arr.ndim != 0 or not np.isfinite(arr) or not arr > 0:
        raise ValueError(f"{name} must be a finite scalar > 0, got {value!r}")


def _check_noise_multiplier(value) -> None:
    arr = _concrete(value)
    if arr is None:
        return
    if arr.ndim != 0 or not np.isfinite(arr) or not arr >= 0:
        raise ValueError(f"noise_multiplier must be a finite scalar >= 0, got {value!r}")


# ------------------------------------------------------------------------- device functions ---


def _leading_size(grads) -> int:
    return leading_size(grads, "the per-example gradients")


def _per_example_sq_norms(grads) -> jax.Array:
    """(n,) Σ over leaves and non-leading axes of g², accumulated in ≥ float32."""
    total = None
    for leaf in jax.tree_util.tree_leaves(grads):
        acc = jnp.promote_types(leaf.dtype, jnp.float32)
        sq = jnp.sum(jnp.square(leaf.astype(acc)).reshape(leaf.shape[0], -1), axis=1)
        total = sq if total is None else total + sq.astype(jnp.promote_types(total.dtype, sq.dtype))
    return total


def _scale_rows(grads, factor: jax.Array):
    def scale(leaf):
        f = factor.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return (leaf * f.astype(leaf.dtype)).astype(leaf.dtype)

    return jax.tree_util.tree_map(scale, grads)


def clip_per_example(grads, l2_clip):
    """Clip each example's gradient to global L2 norm ≤ C: gᵢ · min(1, C/‖gᵢ‖) (‖gᵢ‖ = 0 ⇒ unchanged).

    ``grads``: pytree whose leaves have a leading example axis n. Returns (clipped pytree of the
    same shapes/dtypes, norms (n,) of the unclipped gradients).
    """
    _check_concrete_positive("l2_clip", l2_clip)
    _leading_size(grads)
    norms = jnp.sqrt(_per_example_sq_norms(grads))
    factor = l2_clip / jnp.maximum(norms, l2_clip)  # = min(1, C/‖g‖); 1 when ‖g‖ = 0
    return _scale_rows(grads, factor), norms


def _row_finite(grads) -> jax.Array:
    ok = None
    for leaf in jax.tree_util.tree_leaves(grads):
        f = jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
        ok = f if ok is None else ok & f
    return ok


def _clip_and_sum(grads, mask: jax.Array, l2_clip, row_ok: jax.Array | None = None):
    """Sum of clipped gradients of usable rows (mask & finite [& row_ok]) and their statistics.

    The sum over examples is a dot product with the per-row factors fᵢ = min(1, C/‖gᵢ‖) (0 for
    unused rows, whose entries are also zeroed so a NaN cannot leak): Σᵢ fᵢ·gᵢ. XLA:CPU runs a
    reduction over the leading (example) axis several times slower than a matrix-vector product;
    the result equals clipping then summing up to float summation order (HIGHEST precision, so no
    TF32 on GPUs).
    """
    finite = _row_finite(grads)
    if row_ok is not None:
        finite = finite & row_ok
    use = mask & finite
    _leading_size(grads)
    # norms of the raw rows; rows not used get factor 0 and are excluded from the statistics
    norms = jnp.sqrt(_per_example_sq_norms(grads))
    factor = jnp.where(use, l2_clip / jnp.maximum(norms, l2_clip), 0.0)  # min(1, C/‖g‖)

    def weighted_sum(leaf):
        keep = use.reshape((-1,) + (1,) * (leaf.ndim - 1))
        rows = jnp.where(keep, leaf, jnp.zeros((), leaf.dtype))
        return jnp.tensordot(factor.astype(leaf.dtype), rows, axes=1,
                             precision=jax.lax.Precision.HIGHEST).astype(leaf.dtype)

    summed = jax.tree_util.tree_map(weighted_sum, grads)
    norms = jnp.where(use, norms, 0.0)
    stats_ = (
        jnp.sum(use, dtype=jnp.int32),
        jnp.sum(mask & ~finite, dtype=jnp.int32),
        jnp.sum(use & (norms > l2_clip), dtype=jnp.int32),
        jnp.sum(norms),
    )
    return summed, stats_


def _noise_dtype(leaves) -> jnp.dtype:
    return jnp.result_type(jnp.float32, *(leaf.dtype for leaf in leaves))


def _add_noise_and_scale(summed, key, noise_std, expected_batch_size):
    """(summed + noise_std · z) / B with z ~ N(0, I) drawn once: see the module docstring's layout."""
    leaves, treedef = jax.tree_util.tree_flatten(summed)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    z = jax.random.normal(key, (sum(sizes),), _noise_dtype(leaves))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for leaf, start, size in zip(leaves, offsets[:-1], sizes):
        noise = jax.lax.slice_in_dim(z, int(start), int(start) + size).reshape(leaf.shape)
        value = (leaf.astype(z.dtype) + noise_std * noise) / expected_batch_size
        out.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def _info(stats_, loss_sum) -> PrivateGradientInfo:
    used, nonfinite, clipped, norm_sum = stats_
    denom = jnp.maximum(used, 1).astype(norm_sum.dtype)
    mean_norm = norm_sum / denom
    loss = jnp.nan if loss_sum is None else loss_sum / jnp.maximum(used, 1).astype(loss_sum.dtype)
    return PrivateGradientInfo(used, nonfinite, clipped, mean_norm, jnp.asarray(loss, jnp.float32))


def _check_mask(mask, n: int) -> None:
    dtype = mask.dtype if hasattr(mask, "dtype") else np.asarray(mask).dtype
    shape = tuple(np.shape(mask))
    if shape != (n,) or dtype != np.bool_:
        raise ValueError(f"mask must be a bool array of shape ({n},), got {dtype} {shape}")


def private_gradient(
    per_example_grads,
    mask,
    key,
    *,
    l2_clip,
    noise_multiplier,
    expected_batch_size,
):
    """DP-SGD gradient from per-example gradients: (Σ_{mask & finite} clip_C(gᵢ) + N(0, (σC)²)) / B.

    ``per_example_grads``: pytree, leaves (n, ...); ``mask``: bool (n,), False for padding;
    ``key``: one PRNG key for this step (one normal draw laid out over the leaves). Returns
    (gradient pytree shaped like one example's gradient, :class:`PrivateGradientInfo`).
    """
    n = _leading_size(per_example_grads)
    _check_mask(mask, n)
    _check_concrete_positive("l2_clip", l2_clip)
    _check_noise_multiplier(noise_multiplier)
    _check_concrete_positive("expected_batch_size", expected_batch_size)
    summed, stats_ = _clip_and_sum(per_example_grads, jnp.asarray(mask, bool), l2_clip)
    grad = _add_noise_and_scale(summed, key, noise_multiplier * l2_clip, expected_batch_size)
    return grad, _info(stats_, None)


def per_example_gradients(loss_fn: LossFn, params, x, y):
    """∇_θ ℓ(θ, xᵢ, yᵢ) for every example: vmap(grad(loss_fn), in_axes=(None, 0, 0)); leaves (n, ...)."""
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(params, x, y)


def _pad_rows(a, rows: int):
    pad = [(0, rows)] + [(0, 0)] * (a.ndim - 1)
    return jnp.pad(a, pad)


def _check_params(params) -> None:
    """Every params leaf must be a floating array (gradients are taken with respect to all)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        raise ValueError("params is an empty pytree; pass the trainable arrays")
    for path, leaf in leaves:
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:
            dtype = None
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            where = jax.tree_util.keystr(path) or "params"
            raise ValueError(
                f"params leaf {where} is {type(leaf).__name__} of dtype {dtype}; DP-SGD "
                "differentiates every leaf, so pass only the trainable float arrays (flax NNX: "
                "nnx.split(model, nnx.Param, ...); Equinox: eqx.partition(model, "
                "eqx.is_inexact_array))"
            )


def _private_value_and_grad(loss_fn, params, inputs: tuple, mask, key, *, l2_clip,
                            noise_multiplier, expected_batch_size,
                            microbatch_size: int | None):
    """The one DP-SGD core behind :func:`dp_gradient` and :func:`dp_value_and_grad`.

    ``loss_fn(params, *example)`` → scalar loss of ONE example, where ``example`` is ``inputs``
    with the leading axis n removed. Per-example value_and_grad by vmap (``microbatch_size`` rows
    at a time under ``lax.scan`` when set), clip, masked sum, one noise draw, divide by B.
    Returns (gradient pytree like ``params``, :class:`PrivateGradientInfo`).
    """
    n = leading_size(inputs, "the batch")
    _check_mask(mask, n)
    _check_concrete_positive("l2_clip", l2_clip)
    _check_noise_multiplier(noise_multiplier)
    _check_concrete_positive("expected_batch_size", expected_batch_size)
    _check_params(params)
    mask = jnp.asarray(mask, bool)
    value_and_grads = jax.vmap(jax.value_and_grad(loss_fn),
                               in_axes=(None,) + (0,) * len(inputs))

    def chunk_sum(chunk_inputs, mc):
        losses, grads = value_and_grads(params, *chunk_inputs)
        loss_ok = jnp.isfinite(losses)
        summed, (used, nonfinite, clipped, norm_sum) = _clip_and_sum(grads, mc, l2_clip, loss_ok)
        use = mc & loss_ok & _row_finite(grads)
        loss_sum = jnp.sum(jnp.where(use, losses, 0.0)).astype(jnp.float32)
        return summed, (used, nonfinite, clipped, norm_sum.astype(jnp.float32), loss_sum)

    if microbatch_size is None or microbatch_size >= n:
        summed, (used, nonfinite, clipped, norm_sum, loss_sum) = chunk_sum(inputs, mask)
    else:
        mb = check_positive_int("microbatch_size", microbatch_size)
        chunks = -(-n // mb)
        extra = chunks * mb - n

        def split(a):
            a = _pad_rows(jnp.asarray(a), extra)
            return a.reshape((chunks, mb) + a.shape[1:])

        xs = jax.tree_util.tree_map(split, inputs)
        ms = split(mask)
        zero_sum = jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)),
                                          params)
        zero_stats = (
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.float32),
            jnp.zeros((), jnp.float32),
        )

        def body(carry, chunk):
            acc, acc_stats = carry
            s, st = chunk_sum(*chunk)
            acc = jax.tree_util.tree_map(lambda a, b: a + b.astype(a.dtype), acc, s)
            return (acc, tuple(a + b for a, b in zip(acc_stats, st))), None

        (summed, (used, nonfinite, clipped, norm_sum, loss_sum)), _ = jax.lax.scan(
            body, (zero_sum, zero_stats), (xs, ms)
        )
    grad = _add_noise_and_scale(summed, key, noise_multiplier * l2_clip, expected_batch_size)
    info = _info((used, nonfinite, clipped, norm_sum), loss_sum)
    return grad, info


def dp_gradient(
    loss_fn: LossFn,
    params,
    x,
    y,
    mask,
    key,
    *,
    l2_clip,
    noise_multiplier,
    expected_batch_size,
    microbatch_size: int | None = None,
):
    """Private gradient of a padded batch: per-example grads, clip, mask, sum, noise, divide by B.

    ``loss_fn(params, x, y)`` → scalar loss of ONE example; ``x``, ``y``: (n, ...) padded batch;
    ``mask``: bool (n,). ``microbatch_size``: if set, per-example gradients are formed for that
    many rows at a time (``lax.scan``), bounding memory at microbatch × #params; the result equals
    the one-shot computation up to summation order. Returns (gradient, :class:`PrivateGradientInfo`
    with the mean loss of used rows); an optax update follows. :func:`dp_value_and_grad` is the
    same computation for a batch of any number of arrays.
    """
    if np.shape(x)[:1] != np.shape(y)[:1]:
        raise ValueError(f"x and y need the same leading size, got {np.shape(x)[:1]} and "
                         f"{np.shape(y)[:1]}")
    return _private_value_and_grad(loss_fn, params, (x, y), mask, key, l2_clip=l2_clip,
                                   noise_multiplier=noise_multiplier,
                                   expected_batch_size=expected_batch_size,
                                   microbatch_size=microbatch_size)


def dp_value_and_grad(
    loss_fn: Callable[..., jax.Array],
    *,
    l2_clip: float,
    noise_multiplier: float,
    expected_batch_size: int,
    microbatch_size: int | None = None,
    return_info: bool = False,
) -> Callable:
    """DP-SGD for your own training loop: ``fn(params, batch, mask, key) -> (loss, private_grad)``.

    ``loss_fn(params, *example)`` → scalar loss of ONE example (the same ``loss_fn(params, x, y)``
    that :func:`jaxcurv.input_curvature` takes). ``params``: any pytree of float arrays (flax
    linen variables, the state of ``nnx.split(model, nnx.Param, ...)``, the arrays of
    ``eqx.partition(model, eqx.is_inexact_array)``, a dict). ``batch``: a tuple of arrays (or
    pytrees) with a leading axis n, e.g. ``(x, y)``, padded to a fixed n; ``mask``: bool (n,),
    False for padding (:class:`jaxcurv.privacy.PoissonSampler` yields both); ``key``: one fresh
    PRNG key per step. With clip norm C, noise multiplier σ and expected batch size B:

        private_grad = (Σ_{i: mask, finite} gᵢ · min(1, C/‖gᵢ‖) + N(0, σ²C² I)) / B,

    gᵢ = ∇_θ loss_fn(θ, exampleᵢ), ‖·‖ the global L2 norm over the pytree. B is the *expected*
    batch size of Poisson sampling (q·N), never the realized one. Rows whose loss or gradient is
    not finite are dropped (counted in the info). ``loss`` is the mean loss over the rows used:
    for monitoring only, it is not privatized. ``return_info=True`` returns
    ``(loss, private_grad, info)`` with :class:`PrivateGradientInfo`. ``microbatch_size``: form the
    per-example gradients that many rows at a time (memory ∝ microbatch × #params; same result up
    to summation order). Pure and jit-compatible: wrap it, or the whole train step, in ``jax.jit``
    (one compilation per batch shape). Accounting: :class:`jaxcurv.privacy.Accountant`.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable (params, *example) -> scalar, got {loss_fn!r}")
    check_positive("l2_clip", l2_clip)
    check_float("noise_multiplier", noise_multiplier, minimum=0.0)
    check_positive("expected_batch_size", expected_batch_size)
    if microbatch_size is not None:
        check_positive_int("microbatch_size", microbatch_size)
    settings = dict(l2_clip=float(l2_clip), noise_multiplier=float(noise_multiplier),
                    expected_batch_size=float(expected_batch_size),
                    microbatch_size=microbatch_size)

    def value_and_private_grad(params, batch, mask, key):
        if not isinstance(batch, tuple):
            raise ValueError(
                f"batch must be a tuple of arrays with a leading example axis, e.g. (x, y), got "
                f"{type(batch).__name__}; loss_fn is called as loss_fn(params, *example) (wrap a "
                "single array or dict as (batch,))"
            )
        grad, info = _private_value_and_grad(loss_fn, params, batch, mask, key, **settings)
        return (info.loss, grad, info) if return_info else (info.loss, grad)

    return value_and_private_grad


# ------------------------------------------------------------ dense layers: norms without rows ---
#
# For a dense layer y = a·W + b applied once per example (a (n, d_in), y (n, d_out)), example i's
# gradient is the outer product aᵢ δᵢᵀ for W and δᵢ for b, δᵢ = ∂ℓᵢ/∂yᵢ, so
# ‖gᵢ‖² = Σ_layers (‖aᵢ‖² + 1)·‖δᵢ‖² (the 1 only with a bias) without forming any gᵢ
# (Goodfellow 2015, "ghost" norms), and the clipped sum is Σᵢ fᵢ aᵢ δᵢᵀ = Aᵀ diag(f) Δ, one matrix
# product per layer, fᵢ = min(1, C/‖gᵢ‖). One forward and one backward pass to the layer outputs
# give every aᵢ and δᵢ: about the cost of a non-private step, where forming n rows of per-example
# gradients costs n outer products (XLA:CPU: 40–150× slower on the audit's MLP).


class _DenseCall(NamedTuple):
    """One ``nn.Dense`` call: its output's shape and dtype, the module's path in the params
    tree and whether it has a bias."""

    out: Any
    path: tuple
    bias: bool


def _leaf_paths(tree) -> list[tuple] | None:
    """Key paths (tuples of dict keys) of every leaf of a nested-dict pytree, else None."""
    paths = []
    for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not all(isinstance(k, jax.tree_util.DictKey) for k in key_path):
            return None
        paths.append(tuple(k.key for k in key_path))
    return paths


def _dense_calls(apply_fn, params, x) -> list[_DenseCall] | None:
    """The flax ``nn.Dense`` calls of ``apply_fn(params, x)`` in call order (traced abstractly),
    or None when the identities above do not cover the model: a Dense layer called twice or on
    inputs that are not (n, features), or parameters outside Dense layers (convolutions,
    normalization scales, …) or not laid out as params[path]["kernel" / "bias"]."""
    calls: list = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            module = context.module
            ok = args[0].ndim == 2 and out.ndim == 2 and module.scope is not None
            calls.append(_DenseCall(jax.ShapeDtypeStruct(out.shape, out.dtype),
                                    tuple(module.scope.path), bool(module.use_bias))
                         if ok else None)
        return out

    def trace(p, z):
        with nn.intercept_methods(record):
            apply_fn(p, z)
        return 0

    try:
        jax.eval_shape(trace, params, x)
    except Exception:  # noqa: BLE001 - a model we cannot trace abstractly: the general path
        return None
    if not calls or any(c is None for c in calls) or len({c.path for c in calls}) != len(calls):
        return None
    expected = sorted(c.path + (name,) for c in calls
                      for name in (("kernel", "bias") if c.bias else ("kernel",)))
    leaves = _leaf_paths(params)
    return calls if leaves is not None and sorted(leaves) == expected else None


def dense_norms_apply(apply_fn: Callable, params, x) -> bool:
    """True when :func:`dense_dp_gradient` applies to ``apply_fn(params, x_batch) -> logits``:
    every parameter belongs to a flax ``nn.Dense`` layer called once per forward pass on
    (batch, features) inputs, as params[module path]["kernel" / "bias"] (e.g. ``models.MLP``)."""
    return _dense_calls(apply_fn, params, x) is not None


def dense_dp_gradient(
    apply_fn: Callable,
    loss_of_logits: Callable,
    params,
    x,
    y,
    mask,
    key,
    *,
    l2_clip,
    noise_multiplier,
    expected_batch_size,
):
    """:func:`dp_gradient` for dense-only models, without per-example gradients.

    ``apply_fn(params, x_batch) -> logits`` (n, C) with no cross-example terms and every parameter
    in a flax ``nn.Dense`` layer (see :func:`dense_norms_apply`); ``loss_of_logits(logits, y) ->
    (n,)`` per-example losses. One forward and one backward pass give each layer's inputs aᵢ and
    output gradients δᵢ; ‖gᵢ‖² = Σ_layers (‖aᵢ‖² + 1_bias)·‖δᵢ‖², fᵢ = min(1, C/‖gᵢ‖) (0 for rows
    masked out or with a non-finite loss or norm, whose aᵢ, δᵢ are zeroed so a NaN cannot leak),
    and the clipped sum per layer is Aᵀ diag(f) Δ (kernel) and Σᵢ fᵢ δᵢ (bias); then noise and 1/B
    as in :func:`dp_gradient`, whose result this equals up to float rounding. Returns (gradient,
    :class:`PrivateGradientInfo`).
    """
    n = int(np.shape(x)[0])
    _check_mask(mask, n)
    _check_concrete_positive("l2_clip", l2_clip)
    _check_noise_multiplier(noise_multiplier)
    _check_concrete_positive("expected_batch_size", expected_batch_size)
    calls = _dense_calls(apply_fn, params, x)
    if calls is None:
        raise ValueError("dense_dp_gradient needs a model whose parameters all sit in nn.Dense "
                         "layers called once on (batch, features) inputs; use dp_gradient")
    mask = jnp.asarray(mask, bool)

    def tapped_loss(taps):
        inputs, remaining = [], iter(taps)

        def tap(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
                inputs.append(args[0])
                out = out + next(remaining)
            return out

        with nn.intercept_methods(tap):
            losses = loss_of_logits(apply_fn(params, x), y)
        return jnp.sum(losses), (losses, inputs)

    zeros = [jnp.zeros(c.out.shape, c.out.dtype) for c in calls]
    deltas, (losses, inputs) = jax.grad(tapped_loss, has_aux=True)(zeros)
    inputs = [a.astype(jnp.float32) for a in inputs]
    deltas = [d.astype(jnp.float32) for d in deltas]
    sq = jnp.zeros((n,), jnp.float32)
    for a, d, call in zip(inputs, deltas, calls):
        sq = sq + (jnp.sum(a * a, axis=1) + float(call.bias)) * jnp.sum(d * d, axis=1)
    norms = jnp.sqrt(sq)
    use = mask & jnp.isfinite(losses) & jnp.isfinite(norms)
    factor = jnp.where(use, l2_clip / jnp.maximum(norms, l2_clip), 0.0)
    summed = {}
    for a, d, call in zip(inputs, deltas, calls):
        a = jnp.where(use[:, None], a, 0.0)
        d = jnp.where(use[:, None], d, 0.0) * factor[:, None]
        summed[call.path + ("kernel",)] = jnp.matmul(a.T, d, precision=jax.lax.Precision.HIGHEST)
        if call.bias:
            summed[call.path + ("bias",)] = jnp.sum(d, axis=0)
    summed = jax.tree_util.tree_map_with_path(
        lambda kp, leaf: summed[tuple(k.key for k in kp)].astype(leaf.dtype), params)
    used_norms = jnp.where(use, norms, 0.0)
    stats_ = (jnp.sum(use, dtype=jnp.int32),
              jnp.sum(mask & ~(jnp.isfinite(losses) & jnp.isfinite(norms)), dtype=jnp.int32),
              jnp.sum(use & (norms > l2_clip), dtype=jnp.int32), jnp.sum(used_norms))
    loss_sum = jnp.sum(jnp.where(use, losses, 0.0)).astype(jnp.float32)
    grad = _add_noise_and_scale(summed, key, noise_multiplier * l2_clip, expected_batch_size)
    return grad, _info(stats_, loss_sum)
