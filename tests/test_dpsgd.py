"""DP-SGD primitives against naive loops, closed forms and statistical tests that can fail."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxcurv.privacy import (
    DPConfig,
    DPPlan,
    PrivateGradientInfo,
    clip_per_example,
    dp_gradient,
    ensemble_poisson_batches,
    epsilon,
    max_batch_size,
    per_example_gradients,
    poisson_batches,
    private_gradient,
)

F32_EPS = float(np.finfo(np.float32).eps)
D, H, C = 5, 7, 3


_TRACES = []  # appended to whenever _loss_fn is traced (compilation counter)


def _init_params(seed):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(D, H)) / math.sqrt(D), jnp.float32),
        "b1": jnp.zeros((H,), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(H, C)) / math.sqrt(H), jnp.float32),
    }


def _loss_fn(params, x, y):
    """Cross-entropy of ONE example x (D,), label y ()."""
    _TRACES.append(1)
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"]
    return -jax.nn.log_softmax(logits)[y]


def _batch(seed, n, scale=3.0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(scale * rng.normal(size=(n, D)), jnp.float32)
    y = jnp.asarray(rng.integers(0, C, n), jnp.int32)
    return x, y


# One compilation per input shape: the float settings are traced, not static.
_dp_jit = jax.jit(dp_gradient, static_argnums=0, static_argnames="microbatch_size")
_private_jit = jax.jit(private_gradient)
_grad_one = jax.jit(jax.grad(_loss_fn))  # single example, no vmap: the naive loop's gradient
_loss_one = jax.jit(_loss_fn)
_normal = jax.jit(lambda key, n: jax.random.normal(key, (n,), jnp.float32), static_argnums=1)


_leaves = jax.tree_util.tree_leaves


def _np_tree(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _reference_dp_gradient(params, x, y, mask, key, l2_clip, sigma, batch):
    """Naive per-example Python loop: grad, global norm, clip, sum, per-leaf noise, divide."""
    leaves0, treedef = jax.tree_util.tree_flatten(params)
    total = [np.zeros(leaf.shape) for leaf in leaves0]
    for i in range(x.shape[0]):
        if not mask[i]:
            continue
        g = [np.asarray(leaf, np.float64) for leaf in _leaves(_grad_one(params, x[i], y[i]))]
        norm = math.sqrt(sum(float(np.sum(leaf**2)) for leaf in g))
        factor = min(1.0, l2_clip / norm) if norm > 0 else 1.0
        total = [t + factor * leaf for t, leaf in zip(total, g)]
    # Documented noise layout: one N(0, I) draw of all P entries, consumed leaf by leaf (C order).
    sizes = [leaf.size for leaf in leaves0]
    z = np.asarray(_normal(key, sum(sizes)), np.float64)
    pieces = np.split(z, np.cumsum(sizes)[:-1])
    out = [
        (t + sigma * l2_clip * piece.reshape(leaf.shape)) / batch
        for t, leaf, piece in zip(total, leaves0, pieces)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


@pytest.fixture(scope="module")
def setup():
    params = _init_params(0)
    x, y = _batch(1, 8)
    mask = np.array([True, True, False, True, True, True, False, True])
    return params, x, y, mask


# --- clipping ----------------------------------------------------------------------------------


def test_clip_per_example():
    rng = np.random.default_rng(3)
    scales = np.array([0.0, 0.01, 0.3, 1.0, 5.0, 100.0])
    grads = {
        "a": jnp.asarray(rng.normal(size=(6, 4, 3)) * scales[:, None, None] / math.sqrt(24), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(6, 5)) * scales[:, None] / math.sqrt(10), jnp.float32),
    }
    clip = 0.8
    clipped, norms = jax.jit(clip_per_example, static_argnums=1)(grads, clip)
    g = _np_tree(grads)
    ref_norms = np.sqrt(np.sum(g["a"].reshape(6, -1) ** 2, 1) + np.sum(g["b"] ** 2, 1))
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    c = _np_tree(clipped)
    new_norms = np.sqrt(np.sum(c["a"].reshape(6, -1) ** 2, 1) + np.sum(c["b"] ** 2, 1))
    assert np.all(new_norms <= clip * (1 + 4 * F32_EPS))
    below = ref_norms <= clip
    assert below.sum() >= 2 and (~below).sum() >= 2
    # Unchanged (bitwise) below C, including the all-zero row (no 0/0).
    for name in grads:
        np.testing.assert_array_equal(np.asarray(clipped[name])[below], np.asarray(grads[name])[below])
    np.testing.assert_allclose(new_norms[~below], clip, rtol=4 * F32_EPS)
    # Direction preserved above C.
    np.testing.assert_allclose(
        c["b"][~below], g["b"][~below] * (clip / ref_norms[~below])[:, None], rtol=1e-5
    )
    assert all(clipped[n].dtype == grads[n].dtype for n in grads)


def test_clip_validation():
    with pytest.raises(ValueError, match="l2_clip"):
        clip_per_example({"a": jnp.ones((2, 3))}, 0.0)
    with pytest.raises(ValueError, match="leading"):
        clip_per_example({"a": jnp.ones((2, 3)), "b": jnp.ones((3,))}, 1.0)


# --- the private update vs a naive loop --------------------------------------------------------


def test_dp_gradient_equals_naive_loop(setup):
    params, x, y, mask = setup
    key = jax.random.PRNGKey(42)
    kw = dict(l2_clip=0.5, noise_multiplier=1.3, expected_batch_size=6)
    ref = _reference_dp_gradient(params, x, y, mask, key, 0.5, 1.3, 6)
    got, info = _dp_jit(_loss_fn, params, x, y, mask, key, **kw)
    for name in params:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6)
        assert got[name].shape == params[name].shape and got[name].dtype == params[name].dtype
    assert isinstance(info, PrivateGradientInfo)
    assert int(info.num_examples) == int(mask.sum())
    losses = np.array([float(_loss_one(params, x[i], y[i])) for i in range(8)])
    assert float(info.loss) == pytest.approx(losses[mask].mean(), rel=1e-5)
    # Same result through per_example_gradients + private_gradient, and with micro-batching
    # (3 rows at a time, 8 rows ⇒ one padded row inside).
    pe = jax.jit(lambda p, x, y: per_example_gradients(_loss_fn, p, x, y))(params, x, y)
    got2, _ = _private_jit(pe, mask, key, **kw)
    got3, info3 = _dp_jit(_loss_fn, params, x, y, mask, key, microbatch_size=3, **kw)
    for name in params:
        np.testing.assert_allclose(got2[name], ref[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got3[name], ref[name], rtol=1e-5, atol=1e-6)
    for a, b in zip(info, info3):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_dp_gradient_info_matches_numpy(setup):
    params, x, y, mask = setup
    def norm(i):
        leaves = _leaves(_grad_one(params, x[i], y[i]))
        return math.sqrt(sum(float(np.sum(np.asarray(leaf, np.float64) ** 2)) for leaf in leaves))

    norms = np.array([norm(i) for i in range(8)])
    clip = float(np.median(norms[mask]))  # some rows clipped, some not
    _, info = _dp_jit(
        _loss_fn, params, x, y, mask, jax.random.PRNGKey(0), l2_clip=clip, noise_multiplier=1.0,
        expected_batch_size=6,
    )
    assert int(info.num_clipped) == int(np.sum(norms[mask] > clip))
    assert 0 < int(info.num_clipped) < int(mask.sum())
    assert float(info.mean_norm) == pytest.approx(norms[mask].mean(), rel=1e-5)
    assert int(info.num_nonfinite) == 0


def test_no_recompilation_across_steps(setup):
    params, x, y, mask = setup
    kw = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=6)
    out1, _ = _dp_jit(_loss_fn, params, x, y, mask, jax.random.PRNGKey(0), **kw)
    n_traces = len(_TRACES)
    # New values, mask, key and settings, same shapes: no new trace of the loss.
    out2, _ = _dp_jit(
        _loss_fn, params, x * 0.5, y, ~mask, jax.random.PRNGKey(1),
        l2_clip=0.3, noise_multiplier=2.0, expected_batch_size=5,
    )
    assert len(_TRACES) == n_traces
    assert not np.allclose(out1["w1"], out2["w1"])


def test_vmap_over_ensemble_members(setup):
    # Two members with their own params, masks and keys, as the vectorized trainer will call it.
    params, x, y, mask = setup
    params2 = _init_params(9)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, params2)
    masks = np.stack([mask, ~mask])
    keys = jnp.stack([jax.random.PRNGKey(5), jax.random.PRNGKey(6)])
    kw = dict(l2_clip=0.7, noise_multiplier=0.9, expected_batch_size=4)
    fn = jax.jit(jax.vmap(lambda p, m, k: dp_gradient(_loss_fn, p, x, y, m, k, **kw)[0]))
    got = fn(stacked, masks, keys)
    for j, p in enumerate((params, params2)):
        ref, _ = _dp_jit(_loss_fn, p, x, y, masks[j], keys[j], **kw)
        for name in p:
            np.testing.assert_allclose(got[name][j], ref[name], rtol=1e-5, atol=1e-6)


# --- noise ---------------------------------------------------------------------------------------


def test_noise_std_ks_and_rejects_wrong_scales():
    sigma, clip, batch = 1.7, 0.6, 32
    grads = {"big": jnp.zeros((4, 100, 150)), "twin": jnp.zeros((4, 100, 150))}
    mask = np.zeros(4, bool)  # nothing selected: the output is pure noise / B
    out, info = jax.jit(
        lambda g, m, k: private_gradient(
            g, m, k, l2_clip=clip, noise_multiplier=sigma, expected_batch_size=batch
        )
    )(grads, mask, jax.random.PRNGKey(7))
    assert int(info.num_examples) == 0
    noise = np.asarray(out["big"], np.float64).ravel()
    std = sigma * clip / batch
    assert stats.kstest(noise, stats.norm(scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(noise, stats.norm(scale=std * 2 / 3).cdf).pvalue < 1e-6
    assert stats.kstest(noise, stats.norm(scale=std * 3 / 2).cdf).pvalue < 1e-6
    # Two same-shaped leaves get independent noise, not copies.
    twin = np.asarray(out["twin"], np.float64).ravel()
    assert abs(np.corrcoef(noise, twin)[0, 1]) < 4 / math.sqrt(noise.size)


def test_noise_changes_with_key_and_vanishes_at_sigma_zero(setup):
    params, x, y, mask = setup
    kw = dict(l2_clip=1.0, expected_batch_size=6)
    k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    a, _ = _dp_jit(_loss_fn, params, x, y, mask, k0, noise_multiplier=1.0, **kw)
    b, _ = _dp_jit(_loss_fn, params, x, y, mask, k1, noise_multiplier=1.0, **kw)
    c, _ = _dp_jit(_loss_fn, params, x, y, mask, k0, noise_multiplier=0.0, **kw)
    c2, _ = _dp_jit(_loss_fn, params, x, y, mask, k1, noise_multiplier=0.0, **kw)
    assert not np.allclose(a["w1"], b["w1"])
    np.testing.assert_array_equal(c["w1"], c2["w1"])


# --- padding and non-finite rows -----------------------------------------------------------------


def _clipped_sum_reference(g, rows, l2_clip):
    """numpy: Σ over ``rows`` of gᵢ · min(1, C/‖gᵢ‖) with the global norm over leaves."""
    out = {k: np.zeros(v.shape[1:]) for k, v in g.items()}
    for i in rows:
        norm = math.sqrt(sum(float(np.sum(np.asarray(v[i], np.float64) ** 2)) for v in g.values()))
        factor = min(1.0, l2_clip / norm) if norm > 0 else 1.0
        for k, v in g.items():
            out[k] += factor * np.asarray(v[i], np.float64)
    return out


_PAD_SHAPES = {"a": (6, 4, 3), "b": (6, 5)}


def test_masked_padding_contributes_exactly_zero_even_if_nan():
    rng = np.random.default_rng(0)
    g = {k: rng.normal(size=shape).astype(np.float32) for k, shape in _PAD_SHAPES.items()}
    mask = np.array([True, True, True, False, True, False])
    poisoned = {k: v.copy() for k, v in g.items()}
    poisoned["a"][3] = np.nan
    poisoned["b"][3, 0] = np.inf
    poisoned["a"][5, 0, 0] = -np.inf
    zeroed = {k: np.where(mask.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0) for k, v in g.items()}
    kw = dict(l2_clip=1.0, expected_batch_size=4)
    key = jax.random.PRNGKey(3)
    out_p, info_p = _private_jit(poisoned, mask, key, noise_multiplier=0.8, **kw)
    out_z, _ = _private_jit(zeroed, mask, key, noise_multiplier=0.8, **kw)
    for k in g:
        assert np.all(np.isfinite(out_p[k]))
        np.testing.assert_array_equal(out_p[k], out_z[k])  # bitwise: padding adds exactly 0
    assert int(info_p.num_nonfinite) == 0  # padded rows are not counted as failures
    assert int(info_p.num_examples) == 4
    # Without noise the result is the clipped sum of the real rows only.
    out0, _ = _private_jit(poisoned, mask, key, noise_multiplier=0.0, **kw)
    ref = _clipped_sum_reference(g, np.flatnonzero(mask), 1.0)
    for k in g:
        np.testing.assert_allclose(out0[k], ref[k] / 4, rtol=1e-5, atol=1e-7)


def test_nonfinite_rows_zeroed_and_counted():
    rng = np.random.default_rng(1)
    g = {k: rng.normal(size=shape).astype(np.float32) for k, shape in _PAD_SHAPES.items()}
    g["a"][1, 2, 0] = np.nan
    g["b"][4, 0] = np.inf
    mask = np.ones(6, bool)
    out, info = _private_jit(
        g, mask, jax.random.PRNGKey(0), l2_clip=10.0, noise_multiplier=0.0, expected_batch_size=5
    )
    assert int(info.num_nonfinite) == 2 and int(info.num_examples) == 4
    ref = _clipped_sum_reference(g, [0, 2, 3, 5], 10.0)
    for k in g:
        np.testing.assert_allclose(out[k], ref[k] / 5, rtol=1e-5, atol=1e-7)


def test_nonfinite_loss_rows_counted_in_dp_gradient(setup):
    params, x, y, mask = setup
    x = np.asarray(x).copy()
    x[0, 0] = np.nan  # a used row with a NaN input
    x[2, 0] = np.nan  # a padded row with a NaN input
    out, info = _dp_jit(
        _loss_fn, params, x, y, mask, jax.random.PRNGKey(0), l2_clip=1.0, noise_multiplier=0.5,
        expected_batch_size=6,
    )
    assert int(info.num_nonfinite) == 1 and int(info.num_examples) == int(mask.sum()) - 1
    assert all(np.all(np.isfinite(v)) for v in out.values()) and np.isfinite(float(info.loss))


def test_private_gradient_validation():
    g = {"a": jnp.ones((3, 2))}
    key = jax.random.PRNGKey(0)
    kw = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=2)
    with pytest.raises(ValueError, match="mask"):
        private_gradient(g, np.ones(4, bool), key, **kw)
    with pytest.raises(ValueError, match="mask"):
        private_gradient(g, np.ones(3, np.int32), key, **kw)
    with pytest.raises(ValueError, match="l2_clip"):
        private_gradient(g, np.ones(3, bool), key, **{**kw, "l2_clip": -1.0})
    with pytest.raises(ValueError, match="noise_multiplier"):
        private_gradient(g, np.ones(3, bool), key, **{**kw, "noise_multiplier": -0.1})
    with pytest.raises(ValueError, match="expected_batch_size"):
        private_gradient(g, np.ones(3, bool), key, **{**kw, "expected_batch_size": 0})


# --- Poisson batches -----------------------------------------------------------------------------


def _chi2_binomial_pvalue(sizes, n, q):
    """Chi-square goodness of fit of observed sizes to Binomial(n, q), tails pooled to E ≥ 5."""
    lo, hi = int(stats.binom.ppf(1e-3, n, q)), int(stats.binom.isf(1e-3, n, q))
    edges = np.arange(lo, hi + 1)
    observed = np.array([np.sum(sizes < lo)] + [np.sum(sizes == k) for k in edges] + [np.sum(sizes > hi)])
    probs = np.concatenate(
        [[stats.binom.cdf(lo - 1, n, q)], stats.binom.pmf(edges, n, q), [stats.binom.sf(hi, n, q)]]
    )
    expected = probs * sizes.size
    # pool bins left to right until each has E >= 5
    obs_p, exp_p, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            obs_p.append(acc_o)
            exp_p.append(acc_e)
            acc_o = acc_e = 0.0
    obs_p[-1] += acc_o
    exp_p[-1] += acc_e
    exp_p = np.array(exp_p) * (np.sum(obs_p) / np.sum(exp_p))
    return stats.chisquare(obs_p, exp_p).pvalue


def test_poisson_batch_sizes_follow_binomial():
    n, q, steps = 1000, 0.05, 4000
    b_max = max_batch_size(n, q, steps)
    idx, mask = poisson_batches(n, q, steps, max_batch_size=b_max, seed=0)
    assert idx.shape == mask.shape == (steps, b_max)
    assert idx.dtype == np.int32 and mask.dtype == np.bool_
    sizes = mask.sum(1)
    assert _chi2_binomial_pvalue(sizes, n, q) > 1e-3
    assert _chi2_binomial_pvalue(sizes, n, q * 2 / 3) < 1e-6
    assert _chi2_binomial_pvalue(sizes, n, q * 3 / 2) < 1e-6
    # Every example is included with rate q, independently of its index.
    counts = np.bincount(idx[mask], minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert counts.sum() / (n * steps) == pytest.approx(q, rel=0.02)


def test_poisson_batch_layout():
    idx, mask = poisson_batches(200, 0.1, 50, max_batch_size=60, seed=np.random.default_rng(3))
    for row, m in zip(idx, mask):
        k = int(m.sum())
        assert np.all(m[:k]) and not np.any(m[k:])  # real rows first, then padding
        assert np.all(row[k:] == 0)
        assert np.all(np.diff(row[:k]) > 0)  # sorted, no duplicates
        assert row[:k].min(initial=0) >= 0 and row[:k].max(initial=0) < 200
    a = poisson_batches(200, 0.1, 50, max_batch_size=60, seed=5)
    b = poisson_batches(200, 0.1, 50, max_batch_size=60, seed=np.random.SeedSequence(5))
    c = poisson_batches(200, 0.1, 50, max_batch_size=60, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_poisson_overflow_raises_with_the_numbers():
    with pytest.raises(ValueError, match=r"overflow.*> max_batch_size 5 \(N = 1000, q = 0.05"):
        poisson_batches(1000, 0.05, 10, max_batch_size=5, seed=0)


def test_max_batch_size_is_the_union_bound_quantile():
    n, q, steps, p = 60_000, 256 / 60_000, 14_063, 1e-9
    b = max_batch_size(n, q, steps, overflow_probability=p)
    assert stats.binom.sf(b, n, q) <= p / steps < stats.binom.sf(b - 1, n, q)
    assert max_batch_size(n, q, 10 * steps, overflow_probability=p) >= b
    assert max_batch_size(10, 1.0, 5) == 10
    with pytest.raises(ValueError, match="sampling_rate"):
        max_batch_size(10, 0.0, 5)


def test_ensemble_poisson_batches():
    rng = np.random.default_rng(0)
    members = rng.random((3, 100)) < 0.5
    idx, mask = ensemble_poisson_batches(members, 0.2, 40, max_batch_size=30, seed=1)
    assert idx.shape == mask.shape == (3, 40, 30)
    for k in range(3):
        assert np.all(members[k][idx[k][mask[k]]])  # only the member's own examples
    assert not np.array_equal(mask[0], mask[1])
    idx2, _ = ensemble_poisson_batches(members, 0.2, 40, max_batch_size=30, seed=1)
    np.testing.assert_array_equal(idx, idx2)
    idx3, _ = ensemble_poisson_batches(members, 0.2, 40, max_batch_size=30, seed=np.random.default_rng(1))
    assert idx3.shape == idx.shape
    with pytest.raises(ValueError, match="explicit seed"):
        ensemble_poisson_batches(members, 0.2, 40, max_batch_size=30, seed=None)
    with pytest.raises(ValueError, match="explicit seed"):
        poisson_batches(10, 0.5, 3, max_batch_size=10, seed=None)


# --- configuration -----------------------------------------------------------------------------


def test_dpconfig_validation():
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig()
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig(noise_multiplier=1.0, target_epsilon=2.0)
    with pytest.raises(ValueError, match="l2_clip"):
        DPConfig(noise_multiplier=1.0, l2_clip=0.0)
    with pytest.raises(ValueError, match="delta"):
        DPConfig(noise_multiplier=1.0, delta=1.0)
    with pytest.raises(ValueError, match="accountant"):
        DPConfig(noise_multiplier=1.0, accountant="moments")
    with pytest.raises(ValueError, match="target_epsilon"):
        DPConfig(target_epsilon=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        DPConfig(noise_multiplier=1.0).resolve(num_examples=10, batch_size=20, steps=5)


def test_dpconfig_resolve():
    plan = DPConfig(noise_multiplier=1.1).resolve(num_examples=60_000, batch_size=256, steps=14_062)
    assert isinstance(plan, DPPlan)
    assert plan.sampling_rate == 256 / 60_000 and plan.expected_batch_size == 256
    assert plan.epsilon == pytest.approx(2.597, abs=1e-3)
    assert plan.max_batch_size == max_batch_size(60_000, 256 / 60_000, 14_062)
    target = DPConfig(target_epsilon=4.0, l2_clip=2.0).resolve(num_examples=5000, batch_size=100, steps=500)
    assert target.epsilon <= 4.0 and 4.0 - target.epsilon < 1e-3
    assert target.epsilon == epsilon(target.noise_multiplier, 0.02, 500, 1e-5)
    assert target.l2_clip == 2.0
    assert DPConfig(noise_multiplier=1.3).resolve_noise_multiplier(0.02, 500) == 1.3
    assert DPConfig(target_epsilon=4.0).resolve_noise_multiplier(0.02, 500) == target.noise_multiplier
    ens = DPConfig(noise_multiplier=1.0).resolve(num_examples=5000, batch_size=100, steps=500, num_members=8)
    assert ens.max_batch_size == max_batch_size(5000, 0.02, 4000)


# --- one planner -------------------------------------------------------------------------------


def test_every_poisson_entry_point_gives_the_same_batches():
    from jaxcurv.privacy.plan import poisson_plan
    from jaxcurv.training import poisson_epoch_plan

    rng = np.random.default_rng(0)
    members = rng.random((3, 120)) < 0.5
    subsets = [np.flatnonzero(m) for m in members]
    rates = [20 / len(s) for s in subsets]
    kw = dict(steps=25, max_batch_size=40, seed=7, epoch=2)
    # the DP ensemble path (training) and the public function: identical arrays
    idx_t, w_t = poisson_epoch_plan(subsets, rates, member_ids=[0, 1, 2], **kw)
    idx_p, mask_p = ensemble_poisson_batches(members, rates, kw["steps"], max_batch_size=40,
                                             seed=7, epoch=2)
    np.testing.assert_array_equal(idx_t, idx_p)
    np.testing.assert_array_equal(w_t, mask_p.astype(np.float32))
    assert w_t.dtype == np.float32 and mask_p.dtype == np.bool_
    # a member's batches depend on (seed, epoch, member id) only: planning in chunks changes nothing
    idx_c, mask_c = poisson_plan(subsets[1:], rates[1:], member_ids=[1, 2], **kw)
    np.testing.assert_array_equal(idx_c, idx_p[1:])
    np.testing.assert_array_equal(mask_c, mask_p[1:])
    # other epochs and members draw other batches
    idx_e, _ = poisson_epoch_plan(subsets, rates, member_ids=[0, 1, 2], **{**kw, "epoch": 3})
    assert not np.array_equal(idx_e, idx_t)
    # one member on all N examples: poisson_batches is row 0 of the ensemble planner
    n = 90
    a_idx, a_mask = poisson_batches(n, 0.1, 30, max_batch_size=25, seed=11)
    b_idx, b_mask = ensemble_poisson_batches(np.ones((1, n), bool), 0.1, 30, max_batch_size=25,
                                             seed=11)
    c_idx, c_w = poisson_epoch_plan([np.arange(n)], [0.1], steps=30, max_batch_size=25, seed=11,
                                    epoch=0, member_ids=[0])
    np.testing.assert_array_equal(a_idx, b_idx[0])
    np.testing.assert_array_equal(a_mask, b_mask[0])
    np.testing.assert_array_equal(a_idx, c_idx[0])
    np.testing.assert_array_equal(a_mask, c_w[0] > 0)


def test_dpplan_of_a_step_alone_has_no_run_fields():
    step = DPPlan(1.0, 1.1, 64.0)
    assert (step.l2_clip, step.noise_multiplier, step.expected_batch_size) == (1.0, 1.1, 64.0)
    assert step.epsilon is None and step.max_batch_size is None
    assert hash(step) == hash(DPPlan(l2_clip=1.0, noise_multiplier=1.1, expected_batch_size=64.0))


# --- dense layers: per-example norms without per-example gradients -----------------------------


def _flax_mlp():
    from jaxcurv import models

    model = models.get_model("mlp", C, hidden=6, depth=2)
    params = models.init_variables(model, jax.random.PRNGKey(4), (2, 3, 1))["params"]

    def apply_fn(p, xb):
        return model.apply({"params": p}, xb, train=True)

    def loss_of_logits(logits, yb):
        return -jax.nn.log_softmax(logits)[jnp.arange(yb.shape[0]), yb]

    def loss_fn(p, xi, yi):
        return loss_of_logits(apply_fn(p, xi[None]), yi[None])[0]

    return model, params, apply_fn, loss_of_logits, loss_fn


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_dense_dp_gradient_equals_the_naive_loop_with_nan_and_padded_rows(sigma):
    from jaxcurv.privacy import dense_dp_gradient

    _, params, apply_fn, loss_of_logits, loss_fn = _flax_mlp()
    rng = np.random.default_rng(5)
    x = (3.0 * rng.normal(size=(9, 2, 3, 1))).astype(np.float32)
    x[0, 0, 0, 0] = np.nan  # a used row with a NaN input: dropped and counted
    x[2, 1, 1, 0] = np.inf  # a padded row: ignored
    y = rng.integers(0, C, 9).astype(np.int32)
    mask = np.array([True, True, False, True, True, True, True, False, True])
    key = jax.random.PRNGKey(6)
    kw = dict(l2_clip=0.8, noise_multiplier=sigma, expected_batch_size=6.0)
    got, info = jax.jit(dense_dp_gradient, static_argnums=(0, 1))(
        apply_fn, loss_of_logits, params, x, y, mask, key, **kw)
    # the naive loop: each used row's gradient, global norm, clipped, summed; the same noise
    leaves0, treedef = jax.tree_util.tree_flatten(params)
    total = [np.zeros(leaf.shape) for leaf in leaves0]
    norms, grad_one = [], jax.jit(jax.grad(loss_fn))
    for i in np.flatnonzero(mask)[1:]:
        g = [np.asarray(leaf, np.float64) for leaf in _leaves(grad_one(params, x[i], y[i]))]
        norm = math.sqrt(sum(float(np.sum(leaf ** 2)) for leaf in g))
        norms.append(norm)
        total = [t + min(1.0, 0.8 / norm) * leaf for t, leaf in zip(total, g)]
    sizes = [leaf.size for leaf in leaves0]
    z = np.split(np.asarray(_normal(key, sum(sizes)), np.float64), np.cumsum(sizes)[:-1])
    want = jax.tree_util.tree_unflatten(treedef, [(t + sigma * 0.8 * p.reshape(t.shape)) / 6.0
                                                  for t, p in zip(total, z)])
    for a, b in zip(_leaves(got), _leaves(want)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert int(info.num_examples) == 6 and int(info.num_nonfinite) == 1
    assert int(info.num_clipped) == sum(n > 0.8 for n in norms)
    assert float(info.mean_norm) == pytest.approx(np.mean(norms), rel=1e-5)


def test_dense_norms_apply_only_where_every_parameter_is_in_a_dense_layer():
    from jaxcurv import models
    from jaxcurv.privacy import dense_dp_gradient, dense_norms_apply

    _, params, apply_fn, loss_of_logits, _ = _flax_mlp()
    x = np.zeros((4, 2, 3, 1), np.float32)
    assert dense_norms_apply(apply_fn, params, x)
    cnn = models.get_model("cnn", C, width=2, hidden=4)
    cnn_params = models.init_variables(cnn, jax.random.PRNGKey(0), (8, 8, 1))["params"]
    cnn_apply = lambda p, xb: cnn.apply({"params": p}, xb)  # noqa: E731
    xc = np.zeros((4, 8, 8, 1), np.float32)
    assert not dense_norms_apply(cnn_apply, cnn_params, xc)  # convolutions
    with pytest.raises(ValueError, match="use dp_gradient"):
        dense_dp_gradient(cnn_apply, loss_of_logits, cnn_params, xc, np.zeros(4, np.int32),
                          np.ones(4, bool), jax.random.PRNGKey(0), l2_clip=1.0,
                          noise_multiplier=0.0, expected_batch_size=4.0)
    shared = lambda p, xb: apply_fn(p, xb) + apply_fn(p, xb)  # noqa: E731 - a layer used twice
    assert not dense_norms_apply(shared, params, x)


def test_training_step_uses_dense_norms_with_the_vmapped_result():
    from jaxcurv.optim import OptimizerConfig, make_optimizer
    from jaxcurv.training import init_state, make_train_step

    model, _, _, _, _ = _flax_mlp()
    config = OptimizerConfig(name="sgd", learning_rate=0.1)
    tx = make_optimizer(config, 10)
    state = init_state(model, tx, jax.random.PRNGKey(1), (2, 3, 1))
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(7, 2, 3, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, C, 7), jnp.int32)
    w = jnp.asarray([1, 1, 0, 1, 1, 1, 0], jnp.float32)
    dp = DPPlan(0.5, 1.1, 5.0)
    dense = jax.jit(make_train_step(model, tx, config=config, dp=dp))
    vmapped = jax.jit(make_train_step(model, tx, config=config, dp=dp, dp_dense_norms=False))
    (a, ma), (b, mb) = dense(state, x, y, w, KEY_STEP), vmapped(state, x, y, w, KEY_STEP)
    for u, v in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    for name in ("dp_num_examples", "dp_num_clipped", "dp_mean_norm", "dp_loss"):
        assert float(ma[name]) == pytest.approx(float(mb[name]), rel=1e-5)


KEY_STEP = jax.random.PRNGKey(11)
