"""Hand-written DP-SGD as pure functions: per-example clipping, Gaussian noise, Poisson batches.

One DP-SGD step (Abadi et al. 2016) with clip norm C, noise multiplier σ and expected batch size B:

    g̃ = (Σ_{i in batch} gᵢ · min(1, C/‖gᵢ‖) + N(0, σ²C² I)) / B,

where ‖gᵢ‖ is the global L2 norm of example i's gradient over the whole parameter pytree. The batch
is Poisson-sampled on the host (each example independently with rate q = B/N), padded to a fixed
``max_batch_size`` and masked on the device: padded rows and rows whose gradient is not finite
contribute exactly zero (``jnp.where``, so a NaN in such a row cannot leak), and the noisy sum is
divided by the *expected* batch size B, never by the realized one (dividing by the realized size
would leak it). The optax update follows.

Noise layout: one draw ``z = jax.random.normal(key, (P,), dtype)`` with P the total number of
gradient entries and dtype = float32 promoted with the leaves' dtypes; leaf j of
``jax.tree_util.tree_leaves(grads)`` takes the next ``leaf.size`` entries of z (C order), scaled by
σC, and the noisy sum is cast back to the leaf's dtype. (Per-leaf keys would compile one Threefry
kernel per leaf: 0.7 s each on CPU, 43 s for a 60-leaf model, against 1.5 s for one draw.) One fresh
``key`` per step (and per ensemble member) is the caller's job.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxcurv.privacy.accounting import ACCOUNTANTS, calibrate_noise_multiplier, epsilon

__all__ = [
    "DPConfig",
    "DPPlan",
    "PrivateGradientInfo",
    "clip_per_example",
    "private_gradient",
    "per_example_gradients",
    "dp_gradient",
    "max_batch_size",
    "poisson_batches",
    "ensemble_poisson_batches",
]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------- configuration ---


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: give exactly one of ``noise_multiplier`` (σ) or ``target_epsilon``.

    ``l2_clip`` is C; ``delta`` the target δ; ``accountant`` one of ``"rdp"``, ``"pld"``,
    ``"rdp_classic"``; ``overflow_probability`` bounds the chance that any Poisson batch exceeds the
    padded size over the whole run. The expected batch size is the trainer's batch size; call
    :meth:`resolve` with the run's sizes to get σ, q, the padded size and the ε spent, or
    :meth:`resolve_noise_multiplier` for σ alone.
    """

    l2_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    overflow_probability: float = 1e-9

    def __post_init__(self):
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "DPConfig needs exactly one of noise_multiplier or target_epsilon, got "
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}"
            )
        if not _is_real(self.l2_clip) or not 0 < self.l2_clip < math.inf:
            raise ValueError(f"l2_clip must be a finite number > 0, got {self.l2_clip!r}")
        if self.noise_multiplier is not None and (
            not _is_real(self.noise_multiplier) or not 0 < self.noise_multiplier < math.inf
        ):
            raise ValueError(f"noise_multiplier must be finite and > 0, got {self.noise_multiplier!r}")
        if self.target_epsilon is not None and (
            not _is_real(self.target_epsilon) or not 0 < self.target_epsilon < math.inf
        ):
            raise ValueError(f"target_epsilon must be finite and > 0, got {self.target_epsilon!r}")
        if not _is_real(self.delta) or not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}; use one of {ACCOUNTANTS}")
        if not _is_real(self.overflow_probability) or not 0 < self.overflow_probability < 1:
            raise ValueError(
                f"overflow_probability must be in (0, 1), got {self.overflow_probability!r}"
            )

    def resolve_noise_multiplier(self, sampling_rate: float, steps: int) -> float:
        """σ: the given ``noise_multiplier``, or the smallest σ meeting ``target_epsilon`` at (q, T, δ)."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        return calibrate_noise_multiplier(
            float(self.target_epsilon), sampling_rate, steps, float(self.delta), accountant=self.accountant
        )

    def resolve(
        self, *, num_examples: int, batch_size: int, steps: int, num_members: int = 1
    ) -> DPPlan:
        """σ (calibrated if ``target_epsilon`` was given), q = B/N, padded size and ε spent.

        ``num_members``: ensemble members sharing the padded size (the overflow union bound covers
        all members' steps). Each member's ε is ``plan.epsilon`` (its own N examples, q, T steps).
        """
        n = _check_int("num_examples", num_examples, 1)
        b = _check_int("batch_size", batch_size, 1)
        t = _check_int("steps", steps, 1)
        k = _check_int("num_members", num_members, 1)
        if b > n:
            raise ValueError(f"batch_size {b} exceeds num_examples {n}; lower the batch size")
        q = b / n
        sigma = self.resolve_noise_multiplier(q, t)
        spent = epsilon(sigma, q, t, float(self.delta), accountant=self.accountant)
        b_max = max_batch_size(
            n, q, t * k, overflow_probability=float(self.overflow_probability)
        )
        return DPPlan(
            l2_clip=float(self.l2_clip),
            noise_multiplier=sigma,
            sampling_rate=q,
            steps=t,
            expected_batch_size=b,
            max_batch_size=b_max,
            epsilon=spent,
            delta=float(self.delta),
            accountant=self.accountant,
        )


class DPPlan(NamedTuple):
    """Everything a DP-SGD run needs, resolved from a :class:`DPConfig` and the run's sizes."""

    l2_clip: float
    noise_multiplier: float
    sampling_rate: float
    steps: int
    expected_batch_size: int
    max_batch_size: int
    epsilon: float
    delta: float
    accountant: str


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


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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


def _leading_size(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("per-example gradients are an empty pytree")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "every per-example gradient leaf needs the same leading example axis, got leading "
            f"sizes {sorted(str(s) for s in sizes)}"
        )
    return sizes.pop()


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
    with the mean loss of used rows); an optax update follows.
    """
    n = int(np.shape(x)[0])
    if np.shape(y)[0] != n:
        raise ValueError(f"x and y need the same leading size, got {np.shape(x)[0]} and {np.shape(y)[0]}")
    _check_mask(mask, n)
    _check_concrete_positive("l2_clip", l2_clip)
    _check_noise_multiplier(noise_multiplier)
    _check_concrete_positive("expected_batch_size", expected_batch_size)
    mask = jnp.asarray(mask, bool)
    value_and_grads = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0, 0))

    def chunk_sum(xc, yc, mc):
        losses, grads = value_and_grads(params, xc, yc)
        loss_ok = jnp.isfinite(losses)
        summed, (used, nonfinite, clipped, norm_sum) = _clip_and_sum(grads, mc, l2_clip, loss_ok)
        use = mc & loss_ok & _row_finite(grads)
        loss_sum = jnp.sum(jnp.where(use, losses, 0.0)).astype(jnp.float32)
        return summed, (used, nonfinite, clipped, norm_sum.astype(jnp.float32), loss_sum)

    if microbatch_size is None or microbatch_size >= n:
        summed, (used, nonfinite, clipped, norm_sum, loss_sum) = chunk_sum(x, y, mask)
    else:
        mb = _check_int("microbatch_size", microbatch_size, 1)
        chunks = -(-n // mb)
        extra = chunks * mb - n
        xs, ys, ms = (_pad_rows(jnp.asarray(a), extra) for a in (x, y, mask))

        def split(a):
            return a.reshape((chunks, mb) + a.shape[1:])

        xs, ys, ms = split(xs), split(ys), split(ms)
        zero_sum = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params)
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
            body, (zero_sum, zero_stats), (xs, ys, ms)
        )
    grad = _add_noise_and_scale(summed, key, noise_multiplier * l2_clip, expected_batch_size)
    info = _info((used, nonfinite, clipped, norm_sum), loss_sum)
    return grad, info


# --------------------------------------------------------------------------- host sampling ---


def _rng(seed) -> np.random.Generator:
    if seed is None or isinstance(seed, bool):
        raise ValueError("pass an explicit seed (int, np.random.SeedSequence or np.random.Generator)")
    return np.random.default_rng(seed)


def max_batch_size(
    num_examples: int,
    sampling_rate: float,
    steps: int,
    *,
    overflow_probability: float = 1e-9,
) -> int:
    """Smallest B_max with P[any of ``steps`` Binomial(N, q) batch sizes > B_max] ≤ overflow_probability.

    Union bound: per step P[Binomial(N, q) > B_max] ≤ overflow_probability / steps (binomial
    quantile from ``scipy.stats.binom.isf``). For an ensemble pass steps = members × steps.
    """
    n = _check_int("num_examples", num_examples, 1)
    t = _check_int("steps", steps, 1)
    if not _is_real(sampling_rate) or not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if not _is_real(overflow_probability) or not 0 < overflow_probability < 1:
        raise ValueError(f"overflow_probability must be in (0, 1), got {overflow_probability!r}")
    per_step = overflow_probability / t
    b = int(stats.binom.isf(per_step, n, sampling_rate))
    # guard the discrete quantile: smallest b with sf(b) <= per_step
    while b > 0 and stats.binom.sf(b - 1, n, sampling_rate) <= per_step:
        b -= 1
    while b < n and stats.binom.sf(b, n, sampling_rate) > per_step:
        b += 1
    return max(1, min(b, n))


def poisson_batches(
    num_examples: int,
    sampling_rate: float,
    steps: int,
    *,
    max_batch_size: int,
    seed,
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled batches padded to a fixed size: (indices int32 (T, B_max), mask bool (T, B_max)).

    Each step includes every example independently with probability q (batch size ~ Binomial(N, q),
    then a uniform subset of that size, sorted). Padded slots hold index 0 with mask False. A batch
    larger than ``max_batch_size`` raises ValueError (never truncates). ``seed``: int,
    ``np.random.SeedSequence`` or ``np.random.Generator`` (one per ensemble member).
    """
    n = _check_int("num_examples", num_examples, 1)
    t = _check_int("steps", steps, 1)
    b_max = _check_int("max_batch_size", max_batch_size, 1)
    if not _is_real(sampling_rate) or not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    rng = _rng(seed)
    sizes = rng.binomial(n, sampling_rate, size=t)
    if np.any(sizes > b_max):
        step = int(np.argmax(sizes > b_max))
        raise ValueError(
            f"Poisson batch overflow: step {step} drew {int(sizes[step])} examples > max_batch_size "
            f"{b_max} (N = {n}, q = {sampling_rate}, {t} steps); use max_batch_size(...) with a "
            "smaller overflow_probability, or a larger max_batch_size"
        )
    indices = np.zeros((t, b_max), dtype=np.int32)
    mask = np.arange(b_max)[None, :] < sizes[:, None]
    for i, size in enumerate(sizes):
        if size:
            indices[i, :size] = np.sort(rng.choice(n, size=int(size), replace=False))
    return indices, mask


def ensemble_poisson_batches(
    member_masks,
    sampling_rate: float,
    steps: int,
    *,
    max_batch_size: int,
    seed,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-member Poisson batches from each member's own subset: indices int32 (K, T, B_max) into
    the full dataset and mask bool (K, T, B_max).

    ``member_masks``: bool (K, N), member k trains on ``flatnonzero(member_masks[k])``; member k
    samples with rate q from its subset with the k-th child of ``seed`` (``SeedSequence(seed)
    .spawn(K)`` for an int, ``.spawn(K)`` of a SeedSequence or Generator).
    """
    masks = np.asarray(member_masks)
    if masks.ndim != 2 or masks.dtype != np.bool_:
        raise ValueError(f"member_masks must be a bool (K, N) array, got {masks.dtype} {masks.shape}")
    if seed is None or isinstance(seed, bool):
        raise ValueError("pass an explicit seed (int, np.random.SeedSequence or np.random.Generator)")
    parent = seed if isinstance(seed, (np.random.SeedSequence, np.random.Generator)) else (
        np.random.SeedSequence(seed)
    )
    children = parent.spawn(masks.shape[0])
    all_idx, all_mask = [], []
    for k, child in enumerate(children):
        members = np.flatnonzero(masks[k])
        if members.size == 0:
            raise ValueError(f"member {k} has an empty training subset")
        idx, m = poisson_batches(
            members.size, sampling_rate, steps, max_batch_size=max_batch_size, seed=child
        )
        all_idx.append(np.where(m, members[idx], 0).astype(np.int32))
        all_mask.append(m)
    return np.stack(all_idx), np.stack(all_mask)
