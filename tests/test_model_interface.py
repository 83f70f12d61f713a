"""The one model interface. The same network written four ways (flax linen, flax NNX, Equinox, pure
functions; tests/fixtures/my_models.py) with the same weights copied in gives the same logits (and
a numpy forward pass), input curvature (and jax.hessian), zero-order curvature and DP per-example
gradients; ensemble training on each gives the same members for the same seed; NNX and Equinox
parameters checkpoint and resume; state and objects that are no model are refused in one line."""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcurv import curvature, data, ensemble, models
from jaxcurv.errors import ConfigError, MissingDependency
from jaxcurv.model_interface import as_model
from jaxcurv.privacy.dpsgd import dp_gradient
from jaxcurv.workflow import train_ensemble
from tests.fixtures import my_models as my

C, HIDDEN, D = 10, 16, 64  # digits: 8 × 8 × 1 inputs
KEY = jax.random.PRNGKey(0)
KINDS = my.KINDS
EQUINOX_REASON = "Equinox is the optional extra jaxcurv[equinox] and is not installed"


def _needs(kind: str) -> None:
    if kind == "equinox":
        pytest.importorskip("equinox", reason=EQUINOX_REASON)


@pytest.fixture(scope="module")
def problem():
    """Canonical weights (non-trivial biases), 6 digits and their labels."""
    rng = np.random.default_rng(0)
    w = {"w1": rng.normal(size=(D, HIDDEN)) / 8.0, "b1": rng.normal(size=HIDDEN) * 0.1,
         "w2": rng.normal(size=(HIDDEN, C)) / 4.0, "b2": rng.normal(size=C) * 0.1}
    w = {k: jnp.asarray(v, jnp.float32) for k, v in w.items()}
    ds = data.load("digits").take(np.arange(6))
    return w, ds.images, ds.labels


def _numpy_logits(w, x):
    """The network in float64 numpy (tanh-approximate GELU, as jax.nn.gelu)."""
    h = x.reshape(len(x), -1).astype(np.float64) @ np.float64(w["w1"]) + np.float64(w["b1"])
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    return h @ np.float64(w["w2"]) + np.float64(w["b2"])


def _evaluate(kind: str, w, x, y) -> dict:
    """Everything compared across kinds, computed through ``kind``'s Model."""
    model = as_model(my.user_model(kind))
    to_kind, from_kind = my.layout(kind, model)
    variables = to_kind(w)
    loss_fn = models.make_loss_fn(model)
    key = jax.random.PRNGKey(7)
    curv = curvature.input_curvature(loss_fn, variables, x, y, key, num_probes=3)
    zero = curvature.zero_order_curvature(loss_fn, variables, x, y, key, num_probes=3,
                                          method="mixed", compute_dtype=jnp.float64)
    grads = jax.vmap(jax.grad(loss_fn), (None, 0, 0))(variables, x, y)
    dp, _ = dp_gradient(loss_fn, variables, x, y, np.arange(len(x)) < 5, key, l2_clip=0.5,
                        noise_multiplier=0.0, expected_batch_size=4.0)
    return {"model": model, "logits": np.asarray(model.apply(variables, x)),
            "trace": curv.trace, "trace_sq": curv.trace_sq, "zero_order": zero,
            "per_example_grads": from_kind(grads), "dp_gradient": from_kind(dp)}


@pytest.fixture(scope="module")
def reference(problem):
    return _evaluate("functions", *problem)


@pytest.mark.parametrize("kind", KINDS)
def test_same_weights_give_the_same_numbers_in_every_kind(kind, problem, reference):
    _needs(kind)
    w, x, y = problem
    got = _evaluate(kind, w, x, y)
    assert got["model"].kind == kind
    np.testing.assert_allclose(got["logits"], _numpy_logits(w, x), rtol=1e-5, atol=1e-5)
    for name in ("logits", "trace", "trace_sq"):
        np.testing.assert_allclose(got[name], reference[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(got["zero_order"], reference["zero_order"], rtol=1e-7,
                               atol=1e-9)
    for name in ("per_example_grads", "dp_gradient"):
        for leaf in reference[name]:
            np.testing.assert_allclose(got[name][leaf], reference[name][leaf], rtol=1e-5,
                                       atol=1e-6, err_msg=f"{name}[{leaf}]")


def test_exact_curvature_of_the_pure_functions_equals_jax_hessian(problem):
    w, x, y = problem
    loss_fn = models.make_loss_fn(my.functions_mlp(C, HIDDEN))
    got = curvature.input_curvature(loss_fn, w, x[:2], y[:2], KEY, method="exact")
    for i in range(2):
        hess = jax.hessian(loss_fn, argnums=1)(w, x[i], y[i]).reshape(D, D)
        np.testing.assert_allclose(got.trace[i], np.trace(hess), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.trace_sq[i], np.sum(hess**2), rtol=1e-4, atol=1e-6)


# --- ensembles ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits96():
    return data.load("digits").take(np.arange(96))


@pytest.fixture(scope="module")
def trained_reference(digits96):
    masks = data.subset_masks(len(digits96), 2, seed=1)
    ens = ensemble.train(my.same_init("functions"), digits96, masks, KEY, epochs=2,
                         batch_size=16, learning_rate=0.1, augment=True, record_examples=True)
    return masks, ens


@pytest.mark.parametrize("kind", ["linen", "nnx", "equinox"])
def test_ensemble_training_gives_the_same_members_in_every_kind(kind, digits96,
                                                                trained_reference):
    _needs(kind)
    masks, reference = trained_reference
    ens = ensemble.train(my.same_init(kind), digits96, masks, KEY, epochs=2, batch_size=16,
                         learning_rate=0.1, augment=True, record_examples=True)
    _, from_kind = my.layout(kind, ens.model)
    got = from_kind(ens.variables)
    for leaf, value in reference.variables.items():
        np.testing.assert_allclose(got[leaf], value, rtol=1e-4, atol=1e-5, err_msg=leaf)
    np.testing.assert_allclose(ens.history["train_loss"], reference.history["train_loss"],
                               rtol=1e-5)
    np.testing.assert_array_equal(ens.history["correct"], reference.history["correct"])


@pytest.mark.parametrize("kind", ["nnx", "equinox"])
def test_own_init_trains_checkpoints_and_resumes(kind, digits96, tmp_path):
    """Each member is built from its own key; a run killed after epoch 1 resumes from its orbax
    checkpoint (NNX's nested dicts, Equinox's module tree) to the uninterrupted result."""
    _needs(kind)
    masks = data.subset_masks(len(digits96), 2, seed=2)
    kw = dict(epochs=2, batch_size=16, learning_rate=0.1)
    model = my.user_model(kind)
    fresh = ensemble.train(model, digits96, masks, KEY, **kw)
    a, b = (jax.tree.leaves(fresh.member(k)) for k in range(2))
    assert not any(np.allclose(u, v) for u, v in zip(a, b))  # members start apart
    assert fresh.history["train_loss"][-1].max() < fresh.history["train_loss"][0].min()

    class Killed(Exception):
        pass

    def kill(epoch, info):
        raise Killed

    with pytest.raises(Killed):
        train_ensemble(model, digits96, masks, KEY, checkpoint_dir=tmp_path, callbacks=[kill],
                       **kw)
    seen = []
    resumed = train_ensemble(model, digits96, masks, KEY, checkpoint_dir=tmp_path,
                             callbacks=[lambda e, i: seen.append(e)], **kw)
    assert seen == [1]  # only the second epoch ran again
    for u, v in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(fresh.variables)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# --- refusals -----------------------------------------------------------------------------------


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_objects_that_are_no_model_are_refused_in_one_line():
    for bad, text in [(42, "cannot use int"), ("mlp", "get_model"),
                      (lambda x: x, "pair of pure functions"),
                      ((lambda k, x: {}, 3), "(init, apply) functions")]:
        with pytest.raises(ConfigError) as err:
            as_model(bad)
        assert text in _one_line(err)
    with pytest.raises(ConfigError) as err:  # a factory needing more than rngs
        as_model(my.nnx_mlp)
    assert "num_classes" in _one_line(err) and "functools.partial" in str(err.value)


def test_state_besides_parameters_is_refused_naming_group_norm(digits96):
    with pytest.raises(ConfigError) as err:
        as_model(functools.partial(my.nnx_batchnorm, C))
    assert "BatchStat" in _one_line(err) and "GroupNorm" in str(err.value)
    # linen BatchNorm is handled, except by DP-SGD
    from jaxcurv.privacy import DPConfig

    masks = data.subset_masks(len(digits96), 2, seed=0)
    with pytest.raises(ConfigError) as err:
        ensemble.train(models.get_model("resnet18", C, width=4), digits96, masks, KEY, epochs=1,
                       dp=DPConfig(noise_multiplier=1.0))
    assert "GroupNorm" in _one_line(err)


def test_equinox_state_is_refused_naming_group_norm():
    eqx = pytest.importorskip("equinox", reason=EQUINOX_REASON)

    class WithBatchNorm(eqx.Module):
        norm: eqx.nn.BatchNorm

        def __init__(self, key):
            self.norm = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")

    with pytest.raises(ConfigError) as err:
        as_model(lambda key: WithBatchNorm(key))
    assert "StateIndex" in _one_line(err) and "GroupNorm" in str(err.value)


def test_a_module_instance_has_fixed_weights_refused_for_several_members(digits96):
    net = my.nnx_mlp(C, HIDDEN, D, rngs=nnx.Rngs(3))
    model = as_model(net)
    assert model.fixed_init and "instance" in model.name
    x = digits96.images[:4]
    np.testing.assert_allclose(model.apply(model.init(KEY, x[:1]), x), net(x), rtol=1e-6)
    masks = data.subset_masks(len(digits96), 2, seed=0)
    with pytest.raises(ConfigError) as err:
        ensemble.train(net, digits96, masks, KEY, epochs=1)
    assert "factory" in _one_line(err)
    variables, _ = ensemble.fit_one(net, digits96, KEY, epochs=1, learning_rate=1e-9)
    np.testing.assert_allclose(model.apply(variables, x), net(x), rtol=1e-5)  # its own weights


def test_equinox_without_equinox_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "equinox", None)  # import equinox now raises ImportError
    with pytest.raises(MissingDependency) as err:
        as_model(functools.partial(my.equinox_mlp, C))
    assert "pip install 'jaxcurv[equinox]'" in _one_line(err)


def test_model_output_is_checked_before_training(digits96):
    masks = data.subset_masks(len(digits96), 2, seed=0)
    init, apply = my.functions_mlp(3, HIDDEN)  # 3 outputs, 10 classes
    with pytest.raises(ConfigError) as err:
        ensemble.train((init, apply), digits96, masks, KEY, epochs=1)
    assert "10 classes" in _one_line(err)
