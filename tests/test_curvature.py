"""Curvature core against independent ground truth: jax.hessian, closed forms, naive loops."""

import logging
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxcurv.curvature import (
    Curvature,
    hvp,
    input_curvature,
    make_curvature_fn,
    make_input_curvature,
    make_reference_score,
    make_zero_order_curvature,
    reference_score,
    zero_order_curvature,
    zero_order_queries,
)

KEY = jax.random.PRNGKey(0)


# --- small test models (defined here so the tests do not depend on jaxcurv.models) ---------


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.tanh(nn.Dense(16)(x))
        return nn.Dense(5)(x)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Conv(4, (3, 3))(x))
        x = nn.gelu(nn.Conv(6, (3, 3), strides=2)(x))
        return nn.Dense(5)(x.mean(axis=(1, 2)))


def _loss_fn(module):
    def loss_fn(params, x, y):
        logits = module.apply(params, x[None])[0]
        return -jax.nn.log_softmax(logits)[y]

    return loss_fn


def _setup(module, n=6, shape=(6, 6, 2), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *shape)).astype(dtype)
    y = rng.integers(0, 5, size=n).astype(np.int32)
    params = module.init(jax.random.PRNGKey(seed), jnp.asarray(x[:1]))
    return params, x, y


def _hessian_ground_truth(loss_fn, params, x, y):
    hessian = jax.jit(jax.hessian(lambda z, yi: loss_fn(params, z, yi)))
    traces, fros = [], []
    for xi, yi in zip(x, y):
        hess = np.asarray(hessian(jnp.asarray(xi), yi)).reshape(xi.size, xi.size)
        traces.append(np.trace(hess))
        fros.append(np.sum(hess**2))
    return np.array(traces), np.array(fros)


def _quadratic(dim=12, n=1, seed=0):
    """ℓ(A, x, y) = ½ xᵀAx with a random symmetric A: tr(H) = tr(A), tr(H²) = ‖A‖_F²."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(dim, dim))
    a = (m + m.T) / 2
    x = rng.normal(size=(n, dim))
    y = np.zeros(n, np.int32)
    loss_fn = lambda A, xi, yi: 0.5 * xi @ A @ xi
    return loss_fn, a, x, y


# --- hvp -----------------------------------------------------------------------------------


def test_hvp_matches_hessian_times_vector():
    f = lambda z: jnp.sum(jnp.sin(z) * z**2) + jnp.prod(z[:3])
    x = jnp.linspace(-1.0, 1.0, 7)
    v = jnp.arange(7.0) - 3
    np.testing.assert_allclose(hvp(f, x, v), jax.hessian(f)(x) @ v, rtol=1e-5, atol=1e-5)


# --- exact against jax.hessian --------------------------------------------------------------


@pytest.mark.parametrize("module", [_MLP(), _CNN()], ids=["mlp", "cnn"])
def test_exact_matches_jax_hessian_float64(module):
    with jax.enable_x64(True):
        params, x, y = _setup(module, dtype=np.float64)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        loss_fn = _loss_fn(module)
        tr, fro = _hessian_ground_truth(loss_fn, params, x, y)
        c = input_curvature(loss_fn, params, x, y, KEY, method="exact", progress=False)
    assert c.trace.dtype == np.float64
    np.testing.assert_allclose(c.trace, tr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.trace_sq, fro, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(c.trace_stderr, 0.0)


def test_exact_float32_close_to_float64_ground_truth():
    module = _CNN()
    params, x, y = _setup(module)
    loss_fn = _loss_fn(module)
    c = input_curvature(loss_fn, params, x, y, KEY, method="exact", batch_size=4, progress=False)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        tr, fro = _hessian_ground_truth(loss_fn, p64, x.astype(np.float64), y)
    np.testing.assert_allclose(c.trace, tr, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(c.trace_sq, fro, rtol=1e-3, atol=1e-4)


def test_exact_on_quadratic_closed_form():
    loss_fn, a, x, y = _quadratic(n=3)
    with jax.enable_x64(True):
        c = input_curvature(loss_fn, a, x, y, KEY, method="exact", progress=False)
    np.testing.assert_allclose(c.trace, np.trace(a), rtol=1e-12)
    np.testing.assert_allclose(c.trace_sq, np.sum(a**2), rtol=1e-12)


# --- Hutchinson: unbiased, calibrated stderr ------------------------------------------------


def test_hutchinson_quadratic_many_probes_within_stderr():
    loss_fn, a, x, y = _quadratic(n=4)
    with jax.enable_x64(True):
        c = input_curvature(loss_fn, a, x, y, KEY, num_probes=4000, progress=False)
    z_tr = (c.trace - np.trace(a)) / c.trace_stderr
    z_sq = (c.trace_sq - np.sum(a**2)) / c.trace_sq_stderr
    assert np.all(np.abs(z_tr) < 4.5) and np.all(np.abs(z_sq) < 4.5)
    # and the stderr is the right size: Var(vᵀAv) = 2 Σ_{i≠j} A_ij² for Rademacher v
    offdiag = np.sum(a**2) - np.sum(np.diag(a) ** 2)
    np.testing.assert_allclose(c.trace_stderr, np.sqrt(2 * offdiag / 4000), rtol=0.1)


def test_hutchinson_stderr_is_calibrated():
    """z-scores over many examples have spread ≈ 1; a stderr off by ×2 (or ×½) fails."""
    loss_fn, a, x, y = _quadratic(dim=10, n=600, seed=1)
    with jax.enable_x64(True):
        c = input_curvature(loss_fn, a, x, y, KEY, num_probes=24, progress=False)
    for est, se, truth in [(c.trace, c.trace_stderr, np.trace(a)),
                           (c.trace_sq, c.trace_sq_stderr, np.sum(a**2))]:
        z = (est - truth) / se
        spread = np.std(z)
        assert 0.85 < spread < 1.3, spread
        assert not 0.85 < np.std((est - truth) / (2 * se)) < 1.3
        assert not 0.85 < np.std((est - truth) / (0.5 * se)) < 1.3
        assert abs(np.mean(z)) < 0.2  # unbiased (600 examples: mean z has sd ≈ 0.04)


def test_hutchinson_on_network_agrees_with_exact():
    module = _MLP()
    params, x, y = _setup(module, n=8, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    exact = input_curvature(loss_fn, params, x, y, KEY, method="exact", progress=False)
    est = input_curvature(loss_fn, params, x, y, KEY, num_probes=800, progress=False)
    assert np.all(np.abs(est.trace - exact.trace) < 5 * est.trace_stderr + 1e-6)
    assert np.all(np.abs(est.trace_sq - exact.trace_sq) < 5 * est.trace_sq_stderr + 1e-6)


def test_single_probe_has_nan_stderr():
    loss_fn, a, x, y = _quadratic(n=2)
    c = input_curvature(loss_fn, a, x, y, KEY, num_probes=1, progress=False)
    assert np.all(np.isnan(c.trace_stderr)) and np.all(np.isfinite(c.trace))


# --- finite differences and zero-order ------------------------------------------------------


def test_finite_difference_converges_to_hvp_as_h_shrinks():
    module = _CNN()
    params, x, y = _setup(module, n=4)
    loss_fn = _loss_fn(module)
    kw = dict(num_probes=3, compute_dtype=jnp.float64)
    exact = input_curvature(loss_fn, params, x, y, KEY, method="hutchinson", **kw)
    finite_difference = make_input_curvature(loss_fn, method="finite_difference", **kw)
    errors = []
    for h in (1e-1, 1e-2, 1e-3, 1e-4):  # one held estimator: h is a per-call input
        fd = finite_difference(params, x, y, KEY, h=h)
        errors.append(np.max(np.abs(fd.trace - exact.trace) + np.abs(fd.trace_sq - exact.trace_sq)))
    assert all(e2 < e1 / 5 for e1, e2 in zip(errors, errors[1:])), errors  # O(h)
    assert errors[-1] < 1e-3


def test_zero_order_central_matches_quadratic_form_float64():
    """Same key → same probes as Hutchinson: central differences equal vᵀHv up to O(h²)."""
    module = _CNN()
    params, x, y = _setup(module, n=5)
    loss_fn = _loss_fn(module)
    hutch = input_curvature(loss_fn, params, x, y, KEY, num_probes=4,
                            compute_dtype=jnp.float64, progress=False)
    central = zero_order_curvature(loss_fn, params, x, y, KEY, num_probes=4, h=1e-3,
                                   compute_dtype=jnp.float64, progress=False)
    assert central.dtype == np.float64
    np.testing.assert_allclose(central, hutch.trace, rtol=1e-5, atol=1e-6)


def test_zero_order_mixed_matches_naive_on_quadratic():
    loss_fn, a, x, y = _quadratic(n=3, seed=2)
    h, num_probes = 1e-2, 7
    got = zero_order_curvature(loss_fn, a, x, y, KEY, num_probes=num_probes, h=h, method="mixed",
                               compute_dtype=jnp.float64, progress=False)
    expected = []
    with jax.enable_x64(True):  # the float64 path draws its probes in float64
        for i in range(3):
            vals = []
            for k in jax.random.split(jax.random.fold_in(KEY, np.int32(i)), num_probes):
                ku, kv = jax.random.split(k)
                u = np.asarray(jax.random.rademacher(ku, (12,), dtype=jnp.float64))
                v = np.asarray(jax.random.rademacher(kv, (12,), dtype=jnp.float64))
                vals.append(abs(u @ a @ v))  # quadratic: mixed difference is exactly 4h² uᵀAv
            expected.append(np.mean(vals))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_zero_order_float32_loses_digits_float64_does_not():
    module = _CNN()
    params, x, y = _setup(module, n=6)
    loss_fn = _loss_fn(module)
    kw = dict(num_probes=4, h=1e-3, progress=False)
    ref = input_curvature(loss_fn, params, x, y, KEY, num_probes=4, compute_dtype=jnp.float64,
                          progress=False).trace
    err32 = np.abs(zero_order_curvature(loss_fn, params, x, y, KEY, **kw) - ref).max()
    err64 = np.abs(zero_order_curvature(loss_fn, params, x, y, KEY, compute_dtype=jnp.float64,
                                        **kw) - ref).max()
    assert err64 < 1e-5 < err32


def test_zero_order_queries():
    assert zero_order_queries(10, "central") == 21
    assert zero_order_queries(10, "mixed") == 40
    with pytest.raises(ValueError, match="unknown method"):
        zero_order_queries(10, "forward")


# --- reference score -------------------------------------------------------------------------


def test_reference_score_equals_naive_seed_loop():
    module = _MLP()
    params, x, y = _setup(module, n=10, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    h, num_probes, batch = 1e-3, 3, 4
    got = reference_score(loss_fn, params, x, y, KEY, num_probes=num_probes, h=h,
                          batch_size=batch, progress=False)

    def batch_mean_loss(xb, yb):
        return jnp.mean(jax.vmap(lambda xi, yi: loss_fn(params, xi, yi))(xb, yb))

    grad_batch = jax.grad(batch_mean_loss)
    expected = np.zeros(len(x))
    for start in range(0, len(x), batch):
        xb, yb = jnp.asarray(x[start:start + batch]), jnp.asarray(y[start:start + batch])
        per_example_keys = [jax.random.split(jax.random.fold_in(KEY, start + j), num_probes)
                            for j in range(len(xb))]
        for p in range(num_probes):  # a Python loop over probes, like the authors' published code
            v = jnp.stack([h * (jax.random.rademacher(ks[p], xb.shape[1:], dtype=jnp.float32)
                                + 1e-7) for ks in per_example_keys])
            diff = grad_batch(xb + v, yb) - grad_batch(xb, yb)
            expected[start:start + len(xb)] += np.linalg.norm(
                np.asarray(diff).reshape(len(xb), -1), axis=1) / num_probes
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_reference_score_relation_to_trace_sq():
    """(B·s/h)² ≈ (E‖Hv‖)² ≤ tr(H²): the seed score is a norm scaled by h/B."""
    module = _MLP()
    params, x, y = _setup(module, n=8, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    kw = dict(num_probes=200, compute_dtype=jnp.float64, progress=False)
    s8 = reference_score(loss_fn, params, x, y, KEY, batch_size=8, **kw)
    s4 = reference_score(loss_fn, params, x, y, KEY, batch_size=4, **kw)
    np.testing.assert_allclose(s4, 2 * s8, rtol=1e-6)  # scales with 1/B
    tr2 = input_curvature(loss_fn, params, x, y, KEY, method="exact", progress=False).trace_sq
    ratio = (8 * s8 / 1e-3) ** 2 / tr2
    assert np.all(ratio <= 1.02) and np.all(ratio > 0.6), ratio


# --- dtypes, jit, compilation, chunking ------------------------------------------------------


def test_bf16_compute_close_to_float32_and_accumulates_in_float32():
    module = _CNN()
    params, x, y = _setup(module, n=40)
    loss_fn = _loss_fn(module)
    f32 = input_curvature(loss_fn, params, x, y, KEY, num_probes=4, progress=False)
    bf16 = input_curvature(loss_fn, params, x, y, KEY, num_probes=4,
                           compute_dtype=jnp.bfloat16, progress=False)
    assert bf16.trace.dtype == np.float32
    assert stats.spearmanr(f32.trace_sq, bf16.trace_sq).statistic > 0.97
    np.testing.assert_allclose(bf16.trace_sq, f32.trace_sq, rtol=0.1, atol=0.05 * f32.trace_sq.max())


def test_results_do_not_depend_on_batch_size():
    module = _MLP()
    params, x, y = _setup(module, n=13, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    a = input_curvature(loss_fn, params, x, y, KEY, num_probes=3, batch_size=5, progress=False)
    b = input_curvature(loss_fn, params, x, y, KEY, num_probes=3, batch_size=13, progress=False)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_probe_batch_does_not_change_results():
    module = _MLP()
    params, x, y = _setup(module, n=5, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    a = input_curvature(loss_fn, params, x, y, KEY, num_probes=6, probe_batch=2, progress=False)
    b = input_curvature(loss_fn, params, x, y, KEY, num_probes=6, probe_batch=6, progress=False)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    z1 = zero_order_curvature(loss_fn, params, x, y, KEY, num_probes=6, probe_batch=3,
                              progress=False)
    z2 = zero_order_curvature(loss_fn, params, x, y, KEY, num_probes=6, progress=False)
    np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-5)


def test_make_curvature_fn_under_jit_equals_input_curvature():
    module = _MLP()
    params, x, y = _setup(module, n=7, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    fn = jax.jit(make_curvature_fn(loss_fn, num_probes=5))
    got = fn(params, jnp.asarray(x), jnp.asarray(y), KEY)
    assert isinstance(got, Curvature) and got.trace.shape == (7,)
    ref = input_curvature(loss_fn, params, x, y, KEY, num_probes=5, progress=False)
    for u, v in zip(got, ref):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_no_recompilation_across_calls_and_last_chunk(caplog):
    module = _MLP()
    params, x, y = _setup(module, n=11, shape=(4, 4, 1))
    loss_fn = _loss_fn(module)
    fn = make_input_curvature(loss_fn, num_probes=2, batch_size=4)
    zero = make_zero_order_curvature(loss_fn, num_probes=2, batch_size=4)

    def kernel_compiles():
        return [r for r in caplog.records if "Compiling jit(example_kernel" in r.getMessage()]

    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        fn(params, x, y, KEY)  # compiles once (3 chunks, the last one padded)
        zero(params, x, y, KEY)
        assert len(kernel_compiles()) == 2
        caplog.clear()
        fn(params, x, y, jax.random.PRNGKey(5))
        fn(params, x[:9], y[:9], KEY)  # other N, same chunk shape
        zero(jax.tree.map(lambda a: a + 1, params), x, y, KEY)  # other params, same shapes
        assert not kernel_compiles()
        fn(params, x[:3], y[:3], KEY)  # a new chunk shape compiles
        assert len(kernel_compiles()) == 1


def test_held_estimators_equal_one_call_conveniences():
    loss_fn, a, x, y = _quadratic(n=5, seed=3)
    zero = make_zero_order_curvature(loss_fn, num_probes=3, h=0.1, method="mixed")
    # h is a per-call input of the held function: same result as a function built with that h
    np.testing.assert_allclose(zero(a, x, y, KEY, h=0.2), zero_order_curvature(
        loss_fn, a, x, y, KEY, num_probes=3, h=0.2, method="mixed"), rtol=1e-5)
    held = make_reference_score(loss_fn, num_probes=3, batch_size=2)(a, x, y, KEY)
    np.testing.assert_allclose(held, reference_score(loss_fn, a, x, y, KEY, num_probes=3,
                                                     batch_size=2), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown method"):  # settings checked at construction
        make_zero_order_curvature(loss_fn, method="hutchinson")
    with pytest.raises(ValueError, match="h must be"):
        zero(a, x, y, KEY, h=0.0)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_probes=0), "num_probes"),
        (dict(num_probes=2.5), "num_probes"),
        (dict(h=0.0), "h must be"),
        (dict(h=-1e-3), "h must be"),
        (dict(method="lanczos"), "unknown method"),
        (dict(batch_size=0), "batch_size"),
        (dict(compute_dtype=jnp.int32), "compute_dtype"),
        (dict(num_probes=6, probe_batch=4), "probe_batch"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_config_raises(kwargs, match):
    loss_fn, a, x, y = _quadratic(n=2)
    with pytest.raises(ValueError, match=match):
        input_curvature(loss_fn, a, x, y, KEY, progress=False, **kwargs)


def test_bad_data_raises_before_compute():
    calls = []

    def loss_fn(params, x, y):
        calls.append(1)
        return jnp.sum(x**2)

    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="same number of examples"):
        input_curvature(loss_fn, None, x, np.zeros(2), KEY)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 example"):
        input_curvature(loss_fn, None, bad, np.zeros(3), KEY)
    with pytest.raises(ValueError, match="floating"):
        input_curvature(loss_fn, None, x.astype(np.int32), np.zeros(3), KEY)
    with pytest.raises(ValueError, match="unknown method"):
        zero_order_curvature(loss_fn, None, x, np.zeros(3), KEY, method="hutchinson")
    with pytest.raises(ValueError, match="same number of examples"):
        reference_score(loss_fn, None, x, np.zeros(4), KEY)
    with pytest.raises(ValueError, match=r"class indices in \[0, num_classes=2\)"):
        input_curvature(loss_fn, None, x, np.array([0, 1, 2]), KEY, num_classes=2)
    with pytest.raises(ValueError, match="integer class labels"):
        input_curvature(loss_fn, None, x, np.zeros(3), KEY, num_classes=2)
    assert not calls
    input_curvature(loss_fn, None, x, -np.ones(3), KEY, num_probes=1)  # float targets: any sign
    assert calls


# --- sharding over 8 fake CPU devices ---------------------------------------------------------


def test_sharded_equals_single_device(run_on_fake_devices):
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jaxcurv.curvature import input_curvature, zero_order_curvature, reference_score
        assert jax.local_device_count() == 8, jax.local_devices()
        rng = np.random.default_rng(0)
        W = jnp.asarray(rng.normal(size=(12, 5)) * 0.5, jnp.float32)
        def loss_fn(W, x, y):
            return -jax.nn.log_softmax(jnp.tanh(x.reshape(-1)) @ W)[y]
        x = rng.uniform(size=(21, 3, 4)).astype(np.float32)
        y = rng.integers(0, 5, 21)
        key = jax.random.PRNGKey(3)
        one = [jax.devices()[0]]
        for method in ["hutchinson", "exact"]:
            a = input_curvature(loss_fn, W, x, y, key, method=method, batch_size=10, progress=False)
            b = input_curvature(loss_fn, W, x, y, key, method=method, batch_size=10, devices=one,
                                progress=False)
            for u, v in zip(a, b):
                np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
        # finite differences at h = 1e-3 are rounding-dominated in float32 (any change of fusion
        # changes them): compare them in float64, where they are well conditioned
        f64 = dict(compute_dtype=jnp.float64, progress=False)
        for method in ["central", "mixed"]:
            a = zero_order_curvature(loss_fn, W, x, y, key, method=method, **f64)
            b = zero_order_curvature(loss_fn, W, x, y, key, method=method, devices=one, **f64)
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)
        a = reference_score(loss_fn, W, x, y, key, batch_size=7, **f64)
        b = reference_score(loss_fn, W, x, y, key, batch_size=7, devices=one, **f64)
        np.testing.assert_allclose(a, b, rtol=1e-8)
        print("SHARDED_OK")
        """
    )
    run_on_fake_devices(script)


def test_default_chunks_bound_the_vmapped_evaluations_not_the_results():
    from jaxcurv import curvature as cv

    # 256 examples × 10 HVP probes per device by default; zero-order "mixed" vmaps 4 evaluations
    # per probe (and float64 counts twice), so its default chunk is smaller
    assert cv._chunk_sizes(1000, None, 1, 0, False, 10) == (256, 256)
    assert cv._chunk_sizes(1000, None, 1, 0, False, 40) == (64, 64)
    assert cv._chunk_sizes(1000, None, 1, 0, False, 80) == (32, 32)
    assert cv._chunk_sizes(1000, None, 2, 0, False, 80) == (64, 64)  # per device
    assert cv._chunk_sizes(1000, 100, 1, 0, False, 80) == (100, 100)  # an explicit size wins
    assert cv._chunk_sizes(10, None, 1, 0, False, 10**6) == (1, 1)
    loss_fn, a, x, y = _quadratic(dim=5, n=70)
    params, x = np.asarray(a, np.float32), np.asarray(x, np.float32)
    key = jax.random.PRNGKey(2)
    default = cv.make_zero_order_curvature(loss_fn, num_probes=10, method="mixed")
    one_chunk = cv.make_zero_order_curvature(loss_fn, num_probes=10, method="mixed",
                                             batch_size=70)
    np.testing.assert_allclose(default(params, x, y, key), one_chunk(params, x, y, key),
                               rtol=1e-6)
