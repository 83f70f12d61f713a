"""SAM-GNR (SAM + gradient-norm penalty + gradient noise) against a naive implementation of its
update written here with plain jax.grad, against SAM at zero strengths, and vmapped members
against independent runs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcurv import data, models
from jaxcurv.optim import OptimizerConfig, gnr_gradient, make_optimizer, sam_gradient
from jaxcurv.privacy import DPPlan
from jaxcurv.training import init_state, make_train_step

KEY = jax.random.PRNGKey(3)
RHO, LAM, SIG = 0.1, 0.3, 0.05


def _loss(p):
    """A smooth non-quadratic loss of a two-leaf tree (non-constant Hessian)."""
    return (jnp.sum(jnp.sin(p["a"]) ** 2) * jnp.sum(p["b"] ** 2) + jnp.sum(p["a"] ** 4)
            + jnp.sum(jnp.exp(0.3 * p["b"])) * jnp.sum(p["a"]))


PARAMS = {"a": jnp.linspace(-1.0, 1.2, 5), "b": jnp.arange(3.0) - 0.5}


def _naive_update(params, key, *, rho, lam, sig, hvp="exact"):
    """G = ∇L(θ + ρ g/‖g‖) + λ ∇_θ‖∇L(θ)‖ + σ ξ, with leaf j of ξ ~ normal(fold_in(key, j)).

    exact: the penalty's gradient by reverse-over-reverse jax.grad of θ ↦ ‖∇L(θ)‖;
    finite_difference: (∇L(θ + ρ g/‖g‖) − ∇L(θ))/ρ."""
    names = sorted(params)  # jax.tree.leaves order of a dict
    g = jax.grad(_loss)(params)
    norm = jnp.sqrt(sum(jnp.sum(g[n] ** 2) for n in names))
    shifted = {n: params[n] + rho * g[n] / norm for n in names}
    g_sam = jax.grad(_loss)(shifted)
    if hvp == "exact":
        grad_norm = lambda p: jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.grad(_loss)(p).values()))
        pen = jax.grad(grad_norm)(params)
    else:
        pen = {n: (g_sam[n] - g[n]) / rho for n in names}
    out = {}
    for j, n in enumerate(names):
        xi = jax.random.normal(jax.random.fold_in(key, j), params[n].shape, params[n].dtype)
        out[n] = g_sam[n] + lam * pen[n] + sig * xi
    return out


def _grad_fn(p):
    return jax.grad(_loss)(p), None


def _assert_tree(a, b, exact=False, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        else:
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tol)


# --- the update ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_update_equals_naive_formula(hvp):
    traces = []

    def grad_fn(p):
        traces.append(1)
        return _grad_fn(p)

    fn = jax.jit(lambda p, k: gnr_gradient(grad_fn, p, k, rho=RHO, penalty=LAM, noise=SIG,
                                           hvp=hvp)[0])
    got = fn(PARAMS, KEY)
    _assert_tree(got, _naive_update(PARAMS, KEY, rho=RHO, lam=LAM, sig=SIG, hvp=hvp),
                 rtol=2e-5, atol=2e-6)
    # the penalty term is not negligible here: dropping it changes the result
    sam, _, _ = sam_gradient(_grad_fn, PARAMS, rho=RHO)
    assert max(float(jnp.abs(u - v).max()) for u, v in
               zip(jax.tree.leaves(got), jax.tree.leaves(sam))) > 0.1
    # other parameters and key, same shapes: no new trace
    n = len(traces)
    other = jax.tree.map(lambda x: x * 0.9 + 0.1, PARAMS)
    _assert_tree(fn(other, jax.random.PRNGKey(7)),
                 _naive_update(other, jax.random.PRNGKey(7), rho=RHO, lam=LAM, sig=SIG, hvp=hvp),
                 rtol=2e-5, atol=2e-6)
    assert len(traces) == n


def test_exact_and_finite_difference_penalties_agree_for_small_rho():
    # (∇L(θ + ρu) − ∇L(θ))/ρ → H u as ρ → 0: the two forms of the same penalty gradient
    exact = gnr_gradient(_grad_fn, PARAMS, KEY, rho=1e-2, penalty=1.0, noise=0.0)[0]
    fd = gnr_gradient(_grad_fn, PARAMS, KEY, rho=1e-2, penalty=1.0, noise=0.0,
                      hvp="finite_difference")[0]
    err = max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(exact),
                                                           jax.tree.leaves(fd)))
    scale = max(float(jnp.abs(u).max()) for u in jax.tree.leaves(exact))
    assert err < 0.05 * scale


def test_noise_has_the_requested_scale_and_independent_leaves():
    big = {"a": jnp.zeros(20_000), "b": jnp.zeros(20_000)}
    zero_grad = lambda p: (jax.tree.map(jnp.zeros_like, p), None)
    noise = gnr_gradient(zero_grad, big, KEY, rho=RHO, penalty=0.0, noise=0.2)[0]
    for leaf in jax.tree.leaves(noise):
        assert float(jnp.std(leaf)) == pytest.approx(0.2, rel=0.03)
        assert abs(float(jnp.mean(leaf))) < 0.01
    assert abs(float(jnp.corrcoef(noise["a"], noise["b"])[0, 1])) < 0.03
    again = gnr_gradient(zero_grad, big, jax.random.PRNGKey(4), rho=RHO, penalty=0.0,
                         noise=0.2)[0]
    assert not np.allclose(noise["a"], again["a"])


def test_zero_strengths_give_sam_exactly():
    got = gnr_gradient(_grad_fn, PARAMS, KEY, rho=RHO, penalty=0.0, noise=0.0)
    want = sam_gradient(_grad_fn, PARAMS, rho=RHO)
    _assert_tree(got[0], want[0], exact=True)
    # and a tiny strength is close to SAM but not equal (the comparison can fail)
    near = gnr_gradient(_grad_fn, PARAMS, KEY, rho=RHO, penalty=1e-3, noise=1e-4)[0]
    _assert_tree(near, want[0], rtol=0, atol=0.05)
    assert not all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(near),
                                                        jax.tree.leaves(want[0])))


def test_bad_settings_are_refused():
    for kw, match in [(dict(gnr_penalty=-0.1), "gnr_penalty"), (dict(gnr_noise=float("nan")),
                                                                 "gnr_noise"),
                      (dict(gnr_hvp="fd"), "gnr_hvp"),
                      (dict(gnr_hvp="finite_difference", adaptive=True), "adaptive")]:
        with pytest.raises(ValueError, match=match):
            OptimizerConfig(name="sam-gnr", **kw)
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimizerConfig(name="sam_gnr")
    with pytest.raises(ValueError, match="adaptive"):
        gnr_gradient(_grad_fn, PARAMS, KEY, rho=RHO, penalty=0.1, noise=0.0, adaptive=True,
                     hvp="finite_difference")
    config = OptimizerConfig(name="sam-gnr")
    assert config.is_sam and config.is_gnr and not OptimizerConfig(name="sam").is_gnr
    assert (config.gnr_penalty, config.gnr_noise, config.gnr_hvp) == (0.1, 0.01, "exact")
    model = models.get_model("mlp", 3, hidden=4, depth=1)
    with pytest.raises(ValueError, match="DP-SGD with SAM"):
        make_train_step(model, make_optimizer(config, 10), config=config,
                        dp=DPPlan(1.0, 1.0, 8.0))


# --- the training step ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch():
    d = data.load("digits")
    return (jnp.asarray(d.images[:24]), jnp.asarray(d.labels[:24]),
            jnp.asarray(np.r_[np.ones(20), np.zeros(4)], jnp.float32))


@pytest.fixture(scope="module")
def mlp():
    return models.get_model("mlp", 10, hidden=16, depth=1)


def _plain(name, **kw):
    """No momentum, no weight decay, constant rate: params' = params − lr·G."""
    return OptimizerConfig(name=name, learning_rate=0.1, momentum=0.0, nesterov=False,
                           weight_decay=0.0, schedule="constant", rho=RHO, **kw)


def test_train_step_applies_the_naive_update(batch, mlp):
    images, labels, weights = batch
    config = _plain("sam-gnr", gnr_penalty=LAM, gnr_noise=SIG)
    tx = make_optimizer(config, 10)
    state = init_state(mlp, tx, KEY, images.shape[1:])
    step = jax.jit(make_train_step(mlp, tx, config=config))
    step_key = jax.random.PRNGKey(11)
    new, metrics = step(state, images, labels, weights, step_key)
    # naive: the weighted batch loss, its SAM/penalty/noise update with the step's noise key
    batch_loss = models.make_batch_loss_fn(mlp)
    loss = lambda p: batch_loss(p, {}, images, labels, weights)[0]
    noise_key = jax.random.split(step_key)[1]

    @jax.jit
    def naive(params):
        g = jax.grad(loss)(params)
        norm = optax.tree_utils.tree_norm(g)
        g_sam = jax.grad(loss)(jax.tree.map(lambda p, gi: p + RHO * gi / norm, params, g))
        pen = jax.grad(lambda p: optax.tree_utils.tree_norm(jax.grad(loss)(p)))(params)
        leaves, tdef = jax.tree.flatten(params)
        xi = jax.tree.unflatten(tdef, [jax.random.normal(jax.random.fold_in(noise_key, j),
                                                         x.shape) for j, x in enumerate(leaves)])
        return jax.tree.map(lambda p, a, b, c: p - 0.1 * (a + LAM * b + SIG * c),
                            params, g_sam, pen, xi)

    want = naive(state.params)
    _assert_tree(new.params, want, rtol=1e-4, atol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(loss(state.params)), rel=1e-5)


def test_train_step_with_zero_strengths_equals_sam(batch, mlp):
    images, labels, weights = batch
    results = []
    for config in (_plain("sam"), _plain("sam-gnr", gnr_penalty=0.0, gnr_noise=0.0)):
        tx = make_optimizer(config, 10)
        state = init_state(mlp, tx, KEY, images.shape[1:])
        step = jax.jit(make_train_step(mlp, tx, config=config))
        for s in range(3):
            state, _ = step(state, images, labels, weights, jax.random.fold_in(KEY, s))
        results.append(state.params)
    _assert_tree(*results, exact=True)


def test_vmapped_members_equal_independent_runs(batch, mlp):
    images, labels, weights = batch
    config = dataclasses.replace(_plain("sam-gnr", gnr_penalty=LAM, gnr_noise=SIG),
                                 momentum=0.9)
    tx = make_optimizer(config, 10)
    step = make_train_step(mlp, tx, config=config)
    init_keys = jax.random.split(KEY, 2)
    step_keys = jax.random.split(jax.random.PRNGKey(5), 2)
    # member 1 sees the batch in another order with other padding
    perm = jnp.asarray(np.random.default_rng(0).permutation(24))
    xs, ys = jnp.stack([images, images[perm]]), jnp.stack([labels, labels[perm]])
    ws = jnp.stack([weights, weights[perm]])
    states = jax.vmap(lambda k: init_state(mlp, tx, k, images.shape[1:]))(init_keys)
    vstep = jax.jit(jax.vmap(step))
    solo = jax.jit(step)
    singles = [init_state(mlp, tx, k, images.shape[1:]) for k in init_keys]
    for s in range(2):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, s))(step_keys)
        states, _ = vstep(states, xs, ys, ws, keys)
        singles = [solo(singles[m], xs[m], ys[m], ws[m], keys[m])[0] for m in range(2)]
    for m in range(2):
        _assert_tree(jax.tree.map(lambda x: x[m], states.params), singles[m].params, rtol=1e-5,
                     atol=1e-6)
    a, b = (jax.tree.leaves(jax.tree.map(lambda x: x[m], states.params))[0] for m in range(2))
    assert not np.allclose(a, b)  # the members differ (own init, data and noise)
