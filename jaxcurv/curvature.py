"""Per-example input-loss curvature: tr(H) and tr(H²) for H = ∇²ₓ ℓ(θ, x, y).

All estimators take a single-example ``loss_fn(params, x, y) -> scalar`` and are vmapped over the
leading example axis of ``x`` and ``y``. Every example i draws its probes from
``jax.random.fold_in(key, i)`` (i = its index in the full array), so results do not depend on
``batch_size`` or on the number of devices.

Estimators (v Rademacher, P probes):

- ``"hutchinson"``: exact Hessian-vector products Hv = jvp(∇ℓ)(x; v) (forward over reverse);
  tr(H) ≈ mean vᵀHv, tr(H²) = ‖H‖_F² ≈ mean ‖Hv‖².
- ``"exact"``: the full D×D Hessian (D = x.size): tr(H), ‖H‖_F² with zero error.
- ``"finite_difference"``: the papers' estimator Hv ≈ (∇ℓ(x + h v) − ∇ℓ(x)) / h.
- ``zero_order_curvature``: losses only; ``"central"`` vᵀHv ≈ (ℓ(x+hv) − 2ℓ(x) + ℓ(x−hv)) / h²,
  ``"mixed"`` |uᵀHv| ≈ |ℓ(x+hv+hu) − ℓ(x−hv+hu) − ℓ(x+hv−hu) + ℓ(x−hv−hu)| / (4h²).
- ``reference_score``: the authors' published code's white-box score (see its docstring).

``make_input_curvature``, ``make_zero_order_curvature`` and ``make_reference_score`` fix the
configuration and return ``fn(params, x, y, key, *, h=None, progress=False)``, which holds its
compiled kernel: the caller keeps ``fn`` and calls it again without recompiling (``h`` is a traced
input, so a sweep over h reuses it too). ``input_curvature``, ``zero_order_curvature`` and
``reference_score`` are one-call conveniences over them.

Checked before any compute (ConfigError, a ValueError, one line naming the contract): ``key``
must be one PRNG key; integer class labels must be ≥ 0, and < ``num_classes`` when given (a label
≥ num_classes is refused); ``loss_fn`` is traced abstractly (``jax.eval_shape``, no FLOPs) on
one example, once per input signature, and must accept (params, one unbatched x, its y) and
return a scalar: a batched loss_fn, variables of another model or labels shaped (N, 1) get a
hint instead of a raw shape error from inside the model. Examples whose loss is not finite get
NaN in every output, and the call warns once per held function ("loss_fn returned NaN for E
example(s)"); without ``num_classes`` that is what an out-of-range label gives with optax's
integer-label cross-entropy (a loss_fn that clamps the index cannot be detected: pass
``num_classes``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcurv._chunks import map_chunks
from jaxcurv._names import CURVATURE_METHODS as METHODS
from jaxcurv._names import ZERO_ORDER_METHODS
from jaxcurv._tree import cast_floats
from jaxcurv._validate import check_positive, check_positive_int
from jaxcurv.errors import ConfigError

__all__ = [
    "Curvature",
    "LossFn",
    "hvp",
    "input_curvature",
    "make_curvature_fn",
    "make_input_curvature",
    "make_zero_order_curvature",
    "make_reference_score",
    "zero_order_curvature",
    "zero_order_queries",
    "reference_score",
    "METHODS",
    "ZERO_ORDER_METHODS",
]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


# Default number of examples per compiled call (per device); exact Hessians use fewer, and so do
# estimators that vmap more model evaluations per example than tr(H²) with 10 probes: a chunk holds
# at most _CHUNK_EVALUATIONS float32 evaluations per device (zero-order "mixed" in float64 with all
# 10 probes vmapped held 5.7 GB for 256 CIFAR-10 images on a CPU; 1.1 GB for 32).
_DEFAULT_CHUNK_PER_DEVICE = 256
_CHUNK_EVALUATIONS = 2560
_EXACT_CHUNK_FLOATS = 2**26  # Hessian floats held per chunk for method="exact" (256 MiB in f32)


class Curvature(NamedTuple):
    """Per-example curvature estimates, each of shape (N,).

    ``trace`` ≈ tr(∇²ₓℓ), ``trace_sq`` ≈ tr((∇²ₓℓ)²) = ‖∇²ₓℓ‖_F²; the ``*_stderr`` fields are the
    standard errors of the probe means (std over probes with ddof=1, / √P); 0 for ``"exact"``,
    NaN when ``num_probes == 1``.
    """

    trace: Any
    trace_sq: Any
    trace_stderr: Any
    trace_sq_stderr: Any


def hvp(f: Callable[[jax.Array], jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
    """Hessian-vector product ∇²f(x)·v by forward-over-reverse differentiation; shape of ``x``."""
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


# ----------------------------------------------------------------------------------------------
# validation (host side, before any compute)


def _check_config(num_probes: int, h: float, batch_size, method: str, methods,
                  probe_batch: int | None = None) -> int:
    """Validate the estimator settings; returns the resolved probe batch (probes vmapped at once:
    all of them on CPU, where XLA runs convolutions inside loops slowly, one on accelerators)."""
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(map(repr, methods))}")
    num_probes = check_positive_int("num_probes", num_probes)
    check_positive("h", h)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    if probe_batch is None:
        return num_probes if jax.default_backend() == "cpu" else 1
    probe_batch = check_positive_int("probe_batch", probe_batch)
    if num_probes % probe_batch:
        raise ValueError(f"probe_batch must be None or a divisor of num_probes={num_probes}, "
                         f"got {probe_batch!r}")
    return probe_batch


def _check_num_classes(num_classes) -> int | None:
    return None if num_classes is None else check_positive_int("num_classes", num_classes)


def _check_labels(y_host: np.ndarray, num_classes: int | None) -> None:
    """Integer class labels (N,) must lie in [0, num_classes); negative ones are always refused
    (jnp indexing would wrap or clip them to another class without an error)."""
    integer = np.issubdtype(y_host.dtype, np.integer)
    if num_classes is not None and not (integer and y_host.ndim == 1):
        raise ValueError(f"num_classes applies to integer class labels y of shape (N,); got "
                         f"dtype {y_host.dtype} and shape {y_host.shape}: pass num_classes=None")
    if not integer or y_host.ndim != 1 or y_host.size == 0:
        return
    lo, hi = int(y_host.min()), int(y_host.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = "num_classes" if num_classes is None else f"num_classes={num_classes}"
        raise ValueError(f"labels y must be class indices in [0, {bound}); got range [{lo}, {hi}]"
                         ": pass the labels the model was trained on")


def _check_data(x, y, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    x_host = np.asarray(x)
    y_host = np.asarray(y)
    if x_host.ndim < 1 or x_host.shape[0] == 0:
        raise ValueError(f"x must have a leading example axis with N >= 1, got shape {x_host.shape}")
    if y_host.ndim < 1 or y_host.shape[0] != x_host.shape[0]:
        raise ValueError(
            f"x and y must have the same number of examples on axis 0: x has {x_host.shape[0]}, "
            f"y has shape {y_host.shape}"
        )
    if not np.issubdtype(x_host.dtype, np.floating):
        raise ValueError(f"x must be a floating array (images in [0, 1]), got dtype {x_host.dtype}")
    if not np.isfinite(x_host).all():
        bad = int((~np.isfinite(x_host.reshape(len(x_host), -1))).any(axis=1).sum())
        raise ValueError(f"x contains NaN or inf in {bad} example(s); clean the inputs first")
    _check_labels(y_host, num_classes)
    return x_host, y_host


def _check_key(key) -> None:
    """One PRNG key: a typed key (jax.random.key) of shape () or a raw uint32 key
    (jax.random.PRNGKey) of shape (2,) or (4,); per-example keys derive from it by fold_in."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()) or ())
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype is not None and not typed and np.dtype(dtype) == np.uint32
    if (typed and shape == ()) or (raw and shape in ((2,), (4,))):
        return
    what = (f"{type(key).__name__} {key!r}" if dtype is None
            else f"an array of dtype {dtype} and shape {shape}")
    raise ConfigError(f"key must be one JAX PRNG key, e.g. jax.random.key(0) or "
                      f"jax.random.PRNGKey(0), got {what}; each example's probes derive from it "
                      "by fold_in")


def _first_line(err: BaseException, most: int = 240) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text[:most]}" if text else type(err).__name__


def _check_loss_fn(loss_fn: LossFn, params, x0: np.ndarray, y0: np.ndarray,
                   compute_dtype) -> None:
    """Trace ``loss_fn`` abstractly (no FLOPs) on one example x0 with target y0: it must accept
    them with ``params`` and return a scalar; else one ConfigError naming the contract."""
    f = _scalar_loss(loss_fn, params, y0, compute_dtype)
    try:
        jax.eval_shape(f, x0)
    except ConfigError:
        raise
    except Exception as err:  # any failure inside the user's model: add the contract
        labels = (f"; y has shape (N, {y0.shape[0]}): pass integer class labels as (N,), e.g. "
                  "y.reshape(-1)" if y0.ndim == 1 and np.issubdtype(y0.dtype, np.integer)
                  else "")
        raise ConfigError(
            f"loss_fn(params, x, y) failed on one example (x of shape {x0.shape}, y of shape "
            f"{y0.shape}): {_first_line(err)}. loss_fn must take the variables its model was "
            "built with and ONE unbatched example (no batch axis) and return its scalar loss; "
            "for a batched loss pass lambda p, x, y: batched_loss(p, x[None], y[None])"
            f"{labels}") from err


def _signature(params, x: np.ndarray, y: np.ndarray) -> tuple:
    """What the loss_fn check depends on: per-example shapes and dtypes, the params' tree."""
    leaves, tree = jax.tree.flatten(params)
    return (x.shape[1:], x.dtype.str, y.shape[1:], y.dtype.str, tree,
            tuple((np.shape(leaf), str(getattr(leaf, "dtype", type(leaf)))) for leaf in leaves))


def _resolve_devices(devices: Sequence[jax.Device] | None) -> tuple[jax.Device, ...]:
    devs = tuple(jax.local_devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must be None (all local devices) or a non-empty sequence")
    return devs


def _check_compute_dtype(compute_dtype):
    if compute_dtype is None:
        return None
    try:
        dt = jnp.dtype(compute_dtype)
    except TypeError as err:
        raise ValueError(f"compute_dtype must be a floating dtype or None, got {compute_dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype or None, got {compute_dtype!r}")
    return dt


def _is_float64(dtype) -> bool:
    return dtype is not None and jnp.dtype(dtype) == jnp.float64


# ----------------------------------------------------------------------------------------------
# per-example kernels (pure, unbatched; vmapped below)


def _scalar_loss(loss_fn: LossFn, params, y, compute_dtype) -> Callable[[jax.Array], jax.Array]:
    """x ↦ ℓ(params, x, y) with the model run in ``compute_dtype``, result in x's dtype."""

    def f(x):
        xc = x if compute_dtype is None else x.astype(compute_dtype)
        loss = jnp.asarray(loss_fn(params, xc, y))
        if loss.size != 1:  # shapes are static: checked once, when the kernel is traced
            raise ConfigError(f"loss_fn must return the scalar loss of ONE example, got shape "
                             f"{loss.shape} for an input of shape {x.shape}: reduce it, or vmap "
                             "over the batch outside of loss_fn")
        return loss.astype(x.dtype).reshape(())

    return f


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def _mean_stderr(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = samples.shape[0]
    mean = samples.mean()
    if n == 1:
        return mean, jnp.full((), jnp.nan, samples.dtype)
    return mean, samples.std(ddof=1) / jnp.sqrt(n)


def _over_probes(probe: Callable, key, num_probes: int, probe_batch: int):
    """Evaluate ``probe(k)`` for the P keys split(key, P), ``probe_batch`` at a time (vmapped;
    groups run in a lax.map loop). Returns the stacked outputs (P, ...)."""
    keys = jax.random.split(key, num_probes)
    if probe_batch >= num_probes:
        return jax.vmap(probe)(keys)
    groups = keys.reshape(num_probes // probe_batch, probe_batch, *keys.shape[1:])
    out = jax.lax.map(jax.vmap(probe), groups)
    return jax.tree.map(lambda a: a.reshape(num_probes, *a.shape[2:]), out)


def _example_curvature(loss_fn, params, x, y, key, h, count, *, method, num_probes, probe_batch,
                       compute_dtype):
    """(trace, trace_sq, trace_stderr, trace_sq_stderr) for one example."""
    f = _scalar_loss(loss_fn, params, y, compute_dtype)
    if method == "exact":
        flat, unravel = x.reshape(-1), lambda z: z.reshape(x.shape)
        hess = jax.hessian(lambda z: f(unravel(z)))(flat)
        zero = jnp.zeros((), x.dtype)
        return jnp.trace(hess), jnp.sum(hess * hess), zero, zero

    if method == "finite_difference":
        grad_f = jax.grad(f)
        g0 = grad_f(x)
        apply_h = lambda v: (grad_f(x + h * v) - g0) / h
    else:
        apply_h = lambda v: hvp(f, x, v)

    def probe(k):
        v = _rademacher(k, x.shape, x.dtype)
        hv = apply_h(v)
        return jnp.vdot(v, hv), jnp.vdot(hv, hv)

    quad, sq = _over_probes(probe, key, num_probes, probe_batch)
    tr, tr_se = _mean_stderr(quad)
    tr2, tr2_se = _mean_stderr(sq)
    return tr, tr2, tr_se, tr2_se


def _example_zero_order(loss_fn, params, x, y, key, h, count, *, method, num_probes, probe_batch,
                        compute_dtype):
    """Zero-order vᵀHv (central) or |uᵀHv| (mixed) probe mean for one example."""
    f = _scalar_loss(loss_fn, params, y, compute_dtype)
    if method == "central":
        f0 = f(x)

        def probe(k):
            v = _rademacher(k, x.shape, x.dtype)
            return (f(x + h * v) - 2.0 * f0 + f(x - h * v)) / (h * h)

    else:

        def probe(k):
            ku, kv = jax.random.split(k)
            u = h * _rademacher(ku, x.shape, x.dtype)
            v = h * _rademacher(kv, x.shape, x.dtype)
            mixed = f(x + v + u) - f(x - v + u) - f(x + v - u) + f(x - v - u)
            return jnp.abs(mixed) / (4.0 * h * h)

    return (_over_probes(probe, key, num_probes, probe_batch).mean(),)


def _example_reference(loss_fn, params, x, y, key, h, count, *, num_probes, probe_batch,
                       compute_dtype):
    """Seed-code score for one example whose batch holds ``count`` real examples.

    ∇ₓᵢ of the batch-mean loss is ∇ℓᵢ / B exactly (eval-mode models have no cross-example terms).
    """
    f = _scalar_loss(loss_fn, params, y, compute_dtype)
    batch_mean_grad = jax.grad(lambda z: f(z) / count)
    g0 = batch_mean_grad(x)

    def probe(k):
        v = h * (_rademacher(k, x.shape, x.dtype) + 1e-7)
        return jnp.linalg.norm((batch_mean_grad(x + v) - g0).reshape(-1))

    return (_over_probes(probe, key, num_probes, probe_batch).mean(),)


# ----------------------------------------------------------------------------------------------
# batching, chunking and sharding


def _batched(example_fn: Callable, loss_fn: LossFn, *, check_loss: bool = False,
             **config) -> Callable:
    """kernel(params, x, y, idx, scalars, key) -> tuple of (B,) arrays, vmapped over examples.

    ``idx`` (B,) global example indices (probe keys are fold_in(key, idx)); ``scalars`` = [h,
    real examples in the batch] (traced, so sweeping h does not recompile). With ``check_loss``
    the tuple ends with isfinite(ℓ(x)) (B,) bool (one extra forward pass per example).
    """

    def example_kernel(params, x, y, idx, scalars, key):
        params_c = cast_floats(params, config["compute_dtype"])
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
        h, count = scalars[0], scalars[1]

        def per_example(xi, yi, ki):
            out = example_fn(loss_fn, params_c, xi, yi, ki, h, count, **config)
            if not check_loss:
                return out
            f = _scalar_loss(loss_fn, params_c, yi, config["compute_dtype"])
            return (*out, jnp.isfinite(f(xi)))

        return jax.vmap(per_example)(x, y, keys)

    return example_kernel


def _chunk_sizes(n: int, batch_size: int | None, num_devices: int, per_example_floats: int,
                 exact_batches: bool, evaluations: int = 1) -> tuple[int, int]:
    """(real examples per chunk, padded chunk length: a multiple of the device count).

    With ``exact_batches`` (reference_score) a chunk holds exactly ``batch_size`` real examples
    (default: all N); otherwise the chunk is rounded up and filled with real examples. The
    default chunk holds ≤ 256 examples and ≤ _CHUNK_EVALUATIONS vmapped model ``evaluations``
    (float32 equivalents per example) per device.
    """
    if batch_size is None:
        if exact_batches:
            batch_size = n
        else:
            per_device = max(1, min(_DEFAULT_CHUNK_PER_DEVICE, _CHUNK_EVALUATIONS // evaluations))
            batch_size = per_device * num_devices
            if per_example_floats:
                batch_size = max(1, min(batch_size, _EXACT_CHUNK_FLOATS // per_example_floats))
    real = min(batch_size, n)
    padded = -(-real // num_devices) * num_devices
    return (real if exact_batches else padded), padded


def _warn_nonfinite(results: tuple, checked: int, warned: list) -> tuple:
    """``results`` without their last entry, isfinite(loss) (N,), with NaN in every output of the
    examples whose loss is not finite (their curvature would be that of a meaningless loss, e.g.
    the log-sum-exp alone for a label outside the classes); warns once per held estimator when a
    loss or one of the first ``checked`` outputs is NaN/inf (host arrays: no device sync)."""
    *results, loss_ok = results
    bad_loss = ~np.asarray(loss_ok, bool)
    if bad_loss.any():
        results = [np.where(bad_loss, np.nan, np.asarray(a)).astype(np.asarray(a).dtype)
                   for a in results]
    if warned:
        return tuple(results)
    bad = bad_loss.copy()
    for a in results[:checked]:
        bad |= ~np.isfinite(a)
    if bad.any():
        warned.append(True)
        what = (f"loss_fn returned NaN for {int(bad_loss.sum())} example(s)" if bad_loss.any()
                else f"curvature is NaN/inf for {int(bad.sum())} example(s) with finite losses "
                     "(overflow: try compute_dtype=jnp.float64 or another h)")
        warnings.warn(f"{what}; check the params and inputs", RuntimeWarning, stacklevel=4)
    return tuple(results)


def _make_estimator(example_fn: Callable, loss_fn: LossFn, *, default_h: float,
                    batch_size: int | None, compute_dtype, devices, desc: str,
                    num_classes: int | None = None, checked_outputs: int = 1,
                    exact_batches: bool = False, hessian_memory: bool = False,
                    evaluations: int = 1, **config) -> Callable:
    """Host-level ``estimate(params, x, y, key, *, h=None, progress=False) -> tuple of host (N,)
    arrays``.

    The kernel is jitted (and, for several devices, shard_mapped over the example axis) once,
    here; every call feeds it fixed-shape chunks, so calls with the same chunk shape reuse one
    executable (h is a traced input: a call with another ``h`` reuses it too).
    ``compute_dtype=float64`` runs each call under x64 with float64 data and params. Labels are
    checked against ``num_classes`` on every call; the first call whose first ``checked_outputs``
    outputs hold NaN/inf warns (once per estimator). ``evaluations``: model evaluations vmapped
    per example (float32 equivalents), which bounds the default chunk.
    """
    num_classes = _check_num_classes(num_classes)
    warned: list = []
    devs = _resolve_devices(devices)
    x64 = _is_float64(compute_dtype)
    kernel = _batched(example_fn, loss_fn, check_loss=True,
                      compute_dtype=None if x64 else compute_dtype, **config)
    if len(devs) > 1:
        mesh = Mesh(np.asarray(devs), ("examples",))
        ex = P("examples")
        kernel = jax.shard_map(kernel, mesh=mesh, in_specs=(P(), ex, ex, ex, P(), P()),
                               out_specs=ex, check_vma=False)
        data_sharding, repl = NamedSharding(mesh, ex), NamedSharding(mesh, P())
    else:
        data_sharding = repl = devs[0]
    kernel = jax.jit(kernel)

    checked: set = set()

    def estimate(params, x, y, key, *, h: float | None = None,
                 progress: bool = False) -> tuple[np.ndarray, ...]:
        h = default_h if h is None else check_positive("h", h)
        _check_key(key)
        x_host, y_host = _check_data(x, y, num_classes)
        d = int(np.prod(x_host.shape[1:]))
        step, chunk = _chunk_sizes(x_host.shape[0], batch_size, len(devs),
                                   d * d if hessian_memory else 0, exact_batches,
                                   evaluations * (2 if x64 else 1))
        with jax.enable_x64(True) if x64 else contextlib.nullcontext():
            if x64:
                x_host = x_host.astype(np.float64)
                params = cast_floats(jax.tree.map(np.asarray, params), np.float64)
            signature = _signature(params, x_host, y_host)
            if signature not in checked:
                _check_loss_fn(loss_fn, params, x_host[0], y_host[0],
                               None if x64 else compute_dtype)
                checked.add(signature)
            params_d, key_d = jax.device_put(params, repl), jax.device_put(key, repl)

            def run(xs, ys, idx, real):
                scalars = jax.device_put(np.asarray([h, real], dtype=xs.dtype), repl)
                xs, ys, idx = (jax.device_put(a, data_sharding) for a in (xs, ys, idx))
                return kernel(params_d, xs, ys, idx, scalars, key_d)

            results = map_chunks(run, (x_host, y_host), step=step, chunk=chunk,
                                 progress=progress, desc=desc)
        return _warn_nonfinite(results, checked_outputs, warned)

    return estimate


# ----------------------------------------------------------------------------------------------
# public API: constructors (the caller holds the compiled estimator) and one-call conveniences


def make_curvature_fn(loss_fn: LossFn, *, num_probes: int = 10, method: str = "hutchinson",
                      h: float = 1e-3, compute_dtype=None, probe_batch: int | None = None) -> Callable:
    """A jit-able ``fn(params, x, y, key, idx=None) -> Curvature`` over a whole batch (N, ...).

    Same estimator and same per-example keys (fold_in(key, idx[i]), idx defaults to arange(N)) as
    :func:`input_curvature`, with no chunking, padding or host transfer, for use inside one's own
    jitted code. Outputs are device arrays of shape (N,).
    """
    probe_batch = _check_config(num_probes, h, None, method, METHODS, probe_batch)
    fn = _batched(_example_curvature, loss_fn, method=method, num_probes=int(num_probes),
                  probe_batch=probe_batch, compute_dtype=_check_compute_dtype(compute_dtype))

    def curvature_fn(params, x, y, key, idx=None):
        idx = jnp.arange(x.shape[0], dtype=jnp.int32) if idx is None else idx
        return Curvature(*fn(params, x, y, idx, jnp.asarray([h, x.shape[0]], x.dtype), key))

    return curvature_fn


def make_input_curvature(loss_fn: LossFn, *, num_probes: int = 10, method: str = "hutchinson",
                         h: float = 1e-3, batch_size: int | None = None, compute_dtype=None,
                         devices: Sequence[jax.Device] | None = None,
                         probe_batch: int | None = None,
                         num_classes: int | None = None) -> Callable:
    """``fn(params, x, y, key, *, h=None, progress=False) -> Curvature`` (host arrays (N,)): the
    chunked, sharded estimator of :func:`input_curvature` with its configuration fixed.

    The kernel compiles on the first call per chunk shape; hold ``fn`` and call it again (other
    params, keys, N with the same chunk shape, or another step ``h`` for "finite_difference")
    without recompiling. Settings are validated here; labels and the loss (see
    :func:`input_curvature`) on every call.
    """
    probe_batch = _check_config(num_probes, h, batch_size, method, METHODS, probe_batch)
    estimate = _make_estimator(_example_curvature, loss_fn, default_h=float(h),
                               batch_size=batch_size, devices=devices,
                               compute_dtype=_check_compute_dtype(compute_dtype),
                               desc=f"curvature ({method})", hessian_memory=method == "exact",
                               evaluations=probe_batch,
                               num_classes=num_classes, checked_outputs=2, method=method,
                               num_probes=int(num_probes), probe_batch=probe_batch)

    def curvature(params, x, y, key, *, h: float | None = None,
                  progress: bool = False) -> Curvature:
        return Curvature(*estimate(params, x, y, key, h=h, progress=progress))

    return curvature


def make_zero_order_curvature(loss_fn: LossFn, *, num_probes: int = 10, h: float = 1e-3,
                              method: str = "central", batch_size: int | None = None,
                              compute_dtype=None, devices: Sequence[jax.Device] | None = None,
                              probe_batch: int | None = None,
                              num_classes: int | None = None) -> Callable:
    """``fn(params, x, y, key, *, h=None, progress=False) -> host array (N,)``: the estimator of
    :func:`zero_order_curvature` with its configuration fixed (compiled once per chunk shape;
    ``h`` overrides the step per call; labels checked as in :func:`input_curvature`)."""
    probe_batch = _check_config(num_probes, h, batch_size, method, ZERO_ORDER_METHODS, probe_batch)
    estimate = _make_estimator(_example_zero_order, loss_fn, default_h=float(h),
                               batch_size=batch_size, devices=devices,
                               compute_dtype=_check_compute_dtype(compute_dtype),
                               desc=f"zero-order curvature ({method})",
                               evaluations=probe_batch * (4 if method == "mixed" else 2),
                               num_classes=num_classes, method=method,
                               num_probes=int(num_probes), probe_batch=probe_batch)

    def zero_order(params, x, y, key, *, h: float | None = None,
                   progress: bool = False) -> np.ndarray:
        return estimate(params, x, y, key, h=h, progress=progress)[0]

    return zero_order


def make_reference_score(loss_fn: LossFn, *, num_probes: int = 10, h: float = 1e-3,
                         batch_size: int | None = None, compute_dtype=None,
                         devices: Sequence[jax.Device] | None = None,
                         probe_batch: int | None = None,
                         num_classes: int | None = None) -> Callable:
    """``fn(params, x, y, key, *, h=None, progress=False) -> host array (N,)``:
    :func:`reference_score` with its configuration fixed (compiled once per batch shape; labels
    checked as in :func:`input_curvature`)."""
    probe_batch = _check_config(num_probes, h, batch_size, "reference", ("reference",), probe_batch)
    estimate = _make_estimator(_example_reference, loss_fn, default_h=float(h),
                               batch_size=batch_size, devices=devices,
                               compute_dtype=_check_compute_dtype(compute_dtype),
                               desc="reference score", exact_batches=True,
                               num_classes=num_classes,
                               num_probes=int(num_probes), probe_batch=probe_batch)

    def score(params, x, y, key, *, h: float | None = None, progress: bool = False) -> np.ndarray:
        return estimate(params, x, y, key, h=h, progress=progress)[0]

    return score


def input_curvature(loss_fn: LossFn, params, x, y, key, *, num_probes: int = 10,
                    method: str = "hutchinson", h: float = 1e-3, batch_size: int | None = None,
                    compute_dtype=None, devices: Sequence[jax.Device] | None = None,
                    probe_batch: int | None = None, num_classes: int | None = None,
                    progress: bool = False) -> Curvature:
    """Per-example tr(∇²ₓℓ) and tr((∇²ₓℓ)²) of a single-example ``loss_fn(params, x, y)``.

    x: (N, ...) float inputs, y: (N, ...) targets; returns :class:`Curvature` of host arrays (N,).
    ``method``: "hutchinson" (exact HVPs, ``num_probes`` Rademacher probes), "exact" (full
    D×D Hessian, D = x[0].size, for small inputs) or "finite_difference" (Hv ≈ (∇ℓ(x+hv)−∇ℓ(x))/h).
    Examples are processed in chunks of ``batch_size`` (default 256 per device, fewer when more
    than 10 probes are vmapped, in float64, or for zero-order estimators, so a chunk holds ≤ 2,560
    vmapped float32 model evaluations per device; "exact" so a chunk holds ≤ 2²⁶ Hessian
    entries), the last chunk padded so one compiled function serves
    all; ``devices`` (default all local devices) shard each chunk's example axis.
    ``compute_dtype=jnp.bfloat16`` runs the model in bf16 and accumulates in x's dtype (float32);
    ``compute_dtype=jnp.float64`` runs everything in float64 (enables x64 for the call; CPU).
    ``probe_batch`` probes are vmapped together (memory ∝ batch_size × probe_batch); default: all
    on CPU (XLA:CPU runs convolutions inside loops slowly), 1 on GPU/TPU (a lax.map over probes).
    One call compiles its kernel; to call repeatedly, hold :func:`make_input_curvature`'s function.

    Checked before any compute (ConfigError, a ValueError): ``key`` is one PRNG key; integer
    class labels y (N,) are ≥ 0, and < ``num_classes`` when it is given (the model's output size
    C: a label ≥ C is refused); ``loss_fn`` accepts (params, one unbatched x, its y) and returns a
    scalar (traced abstractly on one example; a batched loss_fn, mismatched variables or labels
    shaped (N, 1) get a hint naming this contract). When the loss is not finite for some
    examples the call warns once ("loss_fn returned NaN for E example(s)", RuntimeWarning) and
    returns NaN for them in every field: without ``num_classes`` an out-of-range label gives NaN
    this way with optax's integer-label cross-entropy (a loss that clamps the index gives a
    finite loss no check can tell from a right one: pass ``num_classes``).
    """
    fn = make_input_curvature(loss_fn, num_probes=num_probes, method=method, h=h,
                              batch_size=batch_size, compute_dtype=compute_dtype, devices=devices,
                              probe_batch=probe_batch, num_classes=num_classes)
    return fn(params, x, y, key, progress=progress)


def zero_order_queries(num_probes: int, method: str = "central") -> int:
    """Model queries (loss evaluations) per example: 2P + 1 for "central", 4P for "mixed"."""
    if method not in ZERO_ORDER_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {ZERO_ORDER_METHODS}")
    num_probes = check_positive_int("num_probes", num_probes)
    return 2 * num_probes + 1 if method == "central" else 4 * num_probes


def zero_order_curvature(loss_fn: LossFn, params, x, y, key, *, num_probes: int = 10,
                         h: float = 1e-3, method: str = "central", batch_size: int | None = None,
                         compute_dtype=None, devices: Sequence[jax.Device] | None = None,
                         probe_batch: int | None = None, num_classes: int | None = None,
                         progress: bool = False):
    """Black-box curvature from losses only; returns host array (N,).

    "central": mean over probes of (ℓ(x+hv) − 2ℓ(x) + ℓ(x−hv))/h² ≈ vᵀHv, unbiased for tr(H) up to
    O(h²); "mixed" (Curvature Clues): mean of |ℓ(x+hv+hu) − ℓ(x−hv+hu) − ℓ(x+hv−hu) + ℓ(x−hv−hu)|
    / (4h²) ≈ |uᵀHv| with independent u, v (its square has mean ‖H‖_F²). Costs
    :func:`zero_order_queries` model evaluations per example. In float32 the differences lose
    about eps·ℓ/h² ≈ 1e-7·ℓ/1e-6 ≈ 0.1·ℓ to cancellation at h = 1e-3: pass
    ``compute_dtype=jnp.float64`` (CPU) for a float64 evaluation. One call compiles its kernel;
    to call repeatedly, hold :func:`make_zero_order_curvature`'s function. Labels, the loss's
    shape and NaN losses are checked as in :func:`input_curvature`.
    """
    fn = make_zero_order_curvature(loss_fn, num_probes=num_probes, h=h, method=method,
                                   batch_size=batch_size, compute_dtype=compute_dtype,
                                   devices=devices, probe_batch=probe_batch,
                                   num_classes=num_classes)
    return fn(params, x, y, key, progress=progress)


def reference_score(loss_fn: LossFn, params, x, y, key, *, num_probes: int = 10, h: float = 1e-3,
                    batch_size: int | None = None, compute_dtype=None,
                    devices: Sequence[jax.Device] | None = None, probe_batch: int | None = None,
                    num_classes: int | None = None, progress: bool = False):
    """The authors' published code's white-box score, with its exact semantics; host array (N,).

    For each batch X of B real examples (``batch_size``; default: all N in one batch) and each
    probe V = h·(R + 1e-7), R Rademacher: sᵢ = mean_probes ‖∇ₓᵢ[L(X+V) − L(X)]‖₂ with L the
    *batch-mean* loss. Since ∇ₓᵢL = ∇ℓᵢ/B, sᵢ ≈ (h/B)·E‖H R‖ and (B sᵢ / h)² ≤ E‖HR‖² = tr(H²)
    (Jensen): a norm, not a squared norm, that scales with h/B. Use it only to compare with the
    papers' numbers; ``input_curvature`` gives tr(H²) directly. Held form: :func:`make_reference_score`.
    Labels, the loss's shape and NaN losses are checked as in :func:`input_curvature`.
    """
    fn = make_reference_score(loss_fn, num_probes=num_probes, h=h, batch_size=batch_size,
                              compute_dtype=compute_dtype, devices=devices, probe_batch=probe_batch,
                              num_classes=num_classes)
    return fn(params, x, y, key, progress=progress)
