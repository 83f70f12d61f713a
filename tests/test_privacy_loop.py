"""DP-SGD in your own loop: dp_value_and_grad, PoissonSampler and Accountant against a naive
Python loop over examples, statistical tests that can fail, and dp_accounting itself."""

import math

import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from flax import nnx
from scipy import stats

from jaxcurv import privacy

D, H, C, N = 6, 5, 3, 10
DELTA = 1e-5


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(size=(D, H)).astype(np.float32) / math.sqrt(D),
            "b1": rng.normal(size=(H,)).astype(np.float32) * 0.1,
            "w2": rng.normal(size=(H, C)).astype(np.float32) / math.sqrt(H),
            "b2": np.zeros((C,), np.float32)}


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


# --- the same two-layer network written four ways; each gives (params, loss_fn, first kernel) ---


def _plain(w):
    params = {k: jnp.asarray(v) for k, v in w.items()}

    def loss_fn(p, x, y):
        return _xent(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"], y)

    return params, loss_fn, lambda g: g["w1"]


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(C, name="out")(jnp.tanh(nn.Dense(H, name="hidden")(x)))


def _linen(w):
    model = _LinenMLP()
    variables = {"params": {"hidden": {"kernel": w["w1"], "bias": w["b1"]},
                            "out": {"kernel": w["w2"], "bias": w["b2"]}}}
    variables = jax.tree_util.tree_map(jnp.asarray, variables)

    def loss_fn(v, x, y):
        return _xent(model.apply(v, x[None])[0], y)

    return variables, loss_fn, lambda g: g["params"]["hidden"]["kernel"]


class _NnxMLP(nnx.Module):
    def __init__(self, *, rngs):
        self.hidden = nnx.Linear(D, H, rngs=rngs)
        self.out = nnx.Linear(H, C, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _nnx(w):
    model = _NnxMLP(rngs=nnx.Rngs(0))
    for layer, kernel, bias in ((model.hidden, "w1", "b1"), (model.out, "w2", "b2")):
        layer.kernel[...], layer.bias[...] = jnp.asarray(w[kernel]), jnp.asarray(w[bias])
    graphdef, state = nnx.split(model)

    def loss_fn(s, x, y):
        return _xent(nnx.merge(graphdef, s)(x), y)

    return state, loss_fn, lambda g: g["hidden"]["kernel"][...]


def _equinox(w):
    eqx = pytest.importorskip("equinox", reason="Equinox is an optional extra: pip install "
                              "'jaxcurv[equinox]'")

    class Mlp(eqx.Module):
        hidden: eqx.nn.Linear
        out: eqx.nn.Linear

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    k1, k2 = jax.random.split(jax.random.key(0))
    model = Mlp(eqx.nn.Linear(D, H, key=k1), eqx.nn.Linear(H, C, key=k2))
    model = eqx.tree_at(lambda m: (m.hidden.weight, m.hidden.bias, m.out.weight, m.out.bias),
                        model, tuple(jnp.asarray(a) for a in
                                     (w["w1"].T, w["b1"], w["w2"].T, w["b2"])))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(p, x, y):
        return _xent(eqx.combine(p, static)(x), y)

    return params, loss_fn, lambda g: g.hidden.weight.T


KINDS = {"plain": _plain, "linen": _linen, "nnx": _nnx, "equinox": _equinox}


def _data(seed=1, n=N, scale=2.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, D)).astype(np.float32) * scale,
            rng.integers(0, C, n).astype(np.int32))


def _naive(loss_fn, params, x, y, mask, l2_clip, batch):
    """Loop over examples: grad of one example, global norm, clip, sum of the masked rows, ÷ B."""
    leaves0, treedef = jax.tree_util.tree_flatten(params)
    total = [np.zeros(np.shape(leaf)) for leaf in leaves0]
    losses = []
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))  # one example at a time, no vmap
    for i in range(x.shape[0]):
        if not mask[i]:
            continue
        loss, grad = value_and_grad(params, x[i], y[i])
        g = [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(grad)]
        norm = math.sqrt(sum(float(np.sum(leaf ** 2)) for leaf in g))
        factor = min(1.0, l2_clip / norm) if norm > 0 else 1.0
        total = [t + factor * leaf for t, leaf in zip(total, g)]
        losses.append(float(loss))
    return jax.tree_util.tree_unflatten(treedef, [t / batch for t in total]), float(np.mean(losses))


@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_and_sum_equal_a_naive_loop_for_every_params_pytree(kind):
    params, loss_fn, _ = KINDS[kind](_weights())
    x, y = _data()
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 0], bool)
    clip, batch = 0.4, 8  # B = 8 expected rows while 7 are real: the divisor is B
    fn = jax.jit(privacy.dp_value_and_grad(loss_fn, l2_clip=clip, noise_multiplier=0.0,
                                           expected_batch_size=batch, return_info=True))
    loss, grad, info = fn(params, (x, y), mask, jax.random.key(0))
    ref, ref_loss = _naive(loss_fn, params, x, y, mask, clip, batch)
    assert jax.tree_util.tree_structure(grad) == jax.tree_util.tree_structure(params)
    for got, want in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-7)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert int(info.num_examples) == 7 and 0 < int(info.num_clipped) <= 7


def test_the_four_kinds_with_the_same_weights_give_the_same_private_gradient():
    x, y = _data()
    mask = np.ones(N, bool)
    firsts = []
    for kind, make in KINDS.items():
        if kind == "equinox":
            pytest.importorskip("equinox", reason="Equinox is an optional extra: pip install "
                                "'jaxcurv[equinox]'")
        params, loss_fn, first = make(_weights())
        fn = jax.jit(privacy.dp_value_and_grad(loss_fn, l2_clip=0.5, noise_multiplier=0.0,
                                               expected_batch_size=N))
        firsts.append(np.asarray(first(fn(params, (x, y), mask, jax.random.key(0))[1])))
    for other in firsts[1:]:
        np.testing.assert_allclose(other, firsts[0], rtol=1e-5, atol=1e-7)


def test_microbatches_and_dp_gradient_share_the_result():
    params, loss_fn, _ = _plain(_weights())
    x, y = _data()
    mask = np.array([1, 0, 1, 1, 1, 1, 0, 1, 1, 1], bool)
    key = jax.random.key(3)
    kw = dict(l2_clip=0.3, noise_multiplier=1.2, expected_batch_size=7)
    _, whole = jax.jit(privacy.dp_value_and_grad(loss_fn, **kw))(params, (x, y), mask, key)
    _, micro = jax.jit(privacy.dp_value_and_grad(loss_fn, microbatch_size=4, **kw))(
        params, (x, y), mask, key)
    direct, _ = jax.jit(lambda p, x, y, m, k: privacy.dp_gradient(loss_fn, p, x, y, m, k, **kw))(
        params, x, y, mask, key)
    for a, b, c in zip(*(jax.tree_util.tree_leaves(t) for t in (whole, micro, direct))):
        np.testing.assert_array_equal(a, c)  # one core, one program: bit-identical
        np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-7)


def test_padding_rows_cannot_leak_even_when_not_finite():
    params, loss_fn, _ = _plain(_weights())
    x, y = _data()
    mask = np.arange(N) < 6
    x_nan = x.copy()
    x_nan[~mask] = np.nan
    fn = jax.jit(privacy.dp_value_and_grad(loss_fn, l2_clip=1.0, noise_multiplier=0.0,
                                           expected_batch_size=6))
    clean = fn(params, (x, y), mask, jax.random.key(0))
    dirty = fn(params, (x_nan, y), mask, jax.random.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(clean), jax.tree_util.tree_leaves(dirty)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_noise_std_is_sigma_c_over_b_and_rejects_wrong_scales():
    sigma, clip, batch = 1.3, 0.7, 16
    params = {"a": jnp.zeros((120, 100)), "b": jnp.zeros((20_000,))}

    def loss_fn(p, x):
        return jnp.sum(p["a"]) * x + jnp.sum(p["b"]) * x

    fn = jax.jit(privacy.dp_value_and_grad(loss_fn, l2_clip=clip, noise_multiplier=sigma,
                                           expected_batch_size=batch))
    _, grad = fn(params, (jnp.ones(4),), np.zeros(4, bool), jax.random.key(11))
    noise = np.concatenate([np.asarray(leaf, np.float64).ravel()
                            for leaf in jax.tree_util.tree_leaves(grad)])
    std = sigma * clip / batch
    assert stats.kstest(noise, stats.norm(scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(noise, stats.norm(scale=std * 2 / 3).cdf).pvalue < 1e-6
    assert stats.kstest(noise, stats.norm(scale=std * 3 / 2).cdf).pvalue < 1e-6
    # A new key gives new noise; the same key the same noise.
    _, again = fn(params, (jnp.ones(4),), np.zeros(4, bool), jax.random.key(11))
    _, other = fn(params, (jnp.ones(4),), np.zeros(4, bool), jax.random.key(12))
    np.testing.assert_array_equal(np.asarray(grad["a"]), np.asarray(again["a"]))
    assert abs(np.corrcoef(np.asarray(grad["b"]), np.asarray(other["b"]))[0, 1]) < 0.05


def test_validation_names_the_problem():
    params, loss_fn, _ = _plain(_weights())
    x, y = _data()
    mask = np.ones(N, bool)
    fn = privacy.dp_value_and_grad(loss_fn, l2_clip=1.0, noise_multiplier=1.0,
                                   expected_batch_size=4)
    with pytest.raises(ValueError, match=r"batch must be a tuple.*\(batch,\)"):
        fn(params, [x, y], mask, jax.random.key(0))
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(10,\)"):
        fn(params, (x, y), np.ones(9, bool), jax.random.key(0))
    with pytest.raises(ValueError, match="same leading example axis"):
        fn(params, (x, y[:9]), mask, jax.random.key(0))
    with pytest.raises(ValueError, match=r"params leaf \['step'\].*nnx.split.*eqx.partition"):
        fn({**params, "step": jnp.zeros((), jnp.int32)}, (x, y), mask, jax.random.key(0))
    for bad in (dict(l2_clip=0.0), dict(noise_multiplier=-1.0), dict(expected_batch_size=0)):
        kw = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=4) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            privacy.dp_value_and_grad(loss_fn, **kw)


# --- the sampler ----------------------------------------------------------------------------


def test_sampler_yields_fixed_shape_batches_of_the_planner():
    x, y = _data(n=50)
    s = privacy.PoissonSampler((x, y), expected_batch_size=10, steps=30, seed=4)
    assert s.sampling_rate == 10 / 50 and s.num_examples == 50
    assert s.max_batch_size == privacy.max_batch_size(50, 0.2, 30)
    idx, masks = privacy.poisson_batches(50, 0.2, 30, max_batch_size=s.max_batch_size, seed=4)
    np.testing.assert_array_equal(s.indices, idx)
    np.testing.assert_array_equal(s.masks, masks)
    seen = list(s)
    assert len(seen) == 30 and s.position == 30 and list(s) == []  # one pass over the run
    for t, ((bx, by), m) in enumerate(seen):
        assert bx.shape == (s.max_batch_size, D) and by.shape == (s.max_batch_size,)
        assert m.dtype == np.bool_ and m.shape == (s.max_batch_size,)
        np.testing.assert_array_equal(bx, x[idx[t]])
        np.testing.assert_array_equal(by[m], y[idx[t][m]])
    resumed = privacy.PoissonSampler((x, y), expected_batch_size=10, steps=30, seed=4, start=25)
    rest = list(resumed)
    assert len(rest) == 5
    for (a, ma), (b, mb) in zip(rest, seen[25:]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(ma, mb)


def test_sampler_inclusion_frequency_is_q_for_every_example_independently():
    n, b, steps = 200, 20, 3000
    s = privacy.PoissonSampler({"i": np.arange(n)}, expected_batch_size=b, steps=steps, seed=0)
    counts = np.zeros(n)
    sizes = []
    for batch, mask in s:
        counts += np.bincount(batch["i"][mask], minlength=n)
        sizes.append(mask.sum())

    def per_example_p(q):  # Σ_i z_i² ~ χ²_n when every example is included with rate q
        z2 = (counts - steps * q) ** 2 / (steps * q * (1 - q))
        return stats.chi2.sf(z2.sum(), n)

    q = b / n
    assert per_example_p(q) > 1e-3
    assert per_example_p(q * 2 / 3) < 1e-6 and per_example_p(q * 3 / 2) < 1e-6
    # Poisson, not a fixed-size subset: the batch size varies as Binomial(N, q).
    sizes = np.asarray(sizes, np.float64)
    var_stat = (steps - 1) * sizes.var(ddof=1) / (n * q * (1 - q))
    assert 1e-3 < stats.chi2.cdf(var_stat, steps - 1) < 1 - 1e-3
    assert abs(sizes.mean() - n * q) < 4 * math.sqrt(n * q * (1 - q) / steps)


def test_sampler_overflow_is_an_error_before_training_never_a_truncation():
    x, y = _data(n=100)
    with pytest.raises(ValueError, match=r"overflow.*> max_batch_size 12"):
        privacy.PoissonSampler((x, y), expected_batch_size=10, steps=200, seed=0,
                               max_batch_size=12)
    with pytest.raises(ValueError, match="exceeds the 100 examples"):
        privacy.PoissonSampler((x, y), expected_batch_size=101, steps=5, seed=0)
    with pytest.raises(ValueError, match="same leading example axis"):
        privacy.PoissonSampler((x, y[:50]), expected_batch_size=10, steps=5, seed=0)
    with pytest.raises(ValueError, match="explicit seed"):
        privacy.PoissonSampler((x, y), expected_batch_size=10, steps=5, seed=None)


def test_a_private_loop_compiles_once_and_learns():
    traces = []
    params, loss_fn0, _ = _plain(_weights())

    def loss_fn(p, x, y):
        traces.append(1)
        return loss_fn0(p, x, y)

    x, y = _data(seed=5, n=200, scale=1.0)
    y = (x[:, 0] > 0).astype(np.int32)  # a learnable rule
    sampler = privacy.PoissonSampler((x, y), expected_batch_size=50, steps=60, seed=0)
    grad_fn = privacy.dp_value_and_grad(loss_fn, l2_clip=1.0, noise_multiplier=0.5,
                                        expected_batch_size=50)
    opt = optax.sgd(0.5)

    @jax.jit
    def step(p, s, batch, mask, key):
        loss, g = grad_fn(p, batch, mask, key)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    state, key = opt.init(params), jax.random.key(0)
    first = None
    for t, (batch, mask) in enumerate(sampler):
        params, state, loss = step(params, state, batch, mask, jax.random.fold_in(key, t))
        first = float(loss) if first is None else first
    assert len(traces) <= 2  # value_and_grad traces loss_fn once (plus jax.grad's own pass)
    assert float(loss) < 0.6 * first


# --- the accountant --------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "pld", "rdp_classic"])
def test_accountant_tracks_privacy_epsilon(accountant):
    sigma, q = 1.1, 0.01
    acct = privacy.Accountant(sigma, q, DELTA, accountant=accountant)
    assert acct.steps == 0 and acct.epsilon() == 0.0
    acct.step()
    acct.step(99)
    assert acct.steps == 100
    assert acct.epsilon() == privacy.epsilon(sigma, q, 100, DELTA, accountant=accountant)
    acct.step(400)
    assert acct.epsilon() == privacy.epsilon(sigma, q, 500, DELTA, accountant=accountant)
    resumed = privacy.Accountant(sigma, q, DELTA, accountant=accountant, steps=500)
    assert resumed.epsilon() == acct.epsilon()


def _dp_accounting_stepwise(acc, sigma, q, steps):
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    for _ in range(steps):
        acc.compose(event)
    return acc.get_epsilon(DELTA)


def test_accountant_against_dp_accounting_composed_step_by_step():
    # dp_accounting's own accountants composing one event per step (slow: a few steps only)
    sigma, q = 0.9, 0.05
    rdp = privacy.Accountant(sigma, q, DELTA, accountant="rdp")
    pld = privacy.Accountant(sigma, q, DELTA, accountant="pld")
    for _ in range(4):
        pld.step()
    assert pld.epsilon() == pytest.approx(
        _dp_accounting_stepwise(PLDAccountant(), sigma, q, 4), rel=1e-6)
    for _ in range(20):
        rdp.step()
    direct_rdp = _dp_accounting_stepwise(RdpAccountant(), sigma, q, 20)
    # RDP: dp_accounting's orders, never looser (fractional orders are evaluated exactly here).
    assert direct_rdp * (1 - 1e-3) <= rdp.epsilon() <= direct_rdp
    pld.step(16)
    assert pld.epsilon() < rdp.epsilon()


def test_accountant_validation():
    for args, match in [((0.0, 0.1, DELTA), "noise_multiplier"), ((1.0, 0.0, DELTA), "sampling"),
                        ((1.0, 0.1, 1.0), "delta")]:
        with pytest.raises(ValueError, match=match):
            privacy.Accountant(*args)
    with pytest.raises(ValueError, match="unknown accountant"):
        privacy.Accountant(1.0, 0.1, DELTA, accountant="gdp")
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        privacy.Accountant(1.0, 0.1, DELTA).step(-1)
