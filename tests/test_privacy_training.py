"""DP-SGD inside ensemble.train: refusals, accounting of the run, per-member noise, and a one-run
audit whose ε lower bound must stay under the accounted ε (and exceed it without DP)."""

import jax
import numpy as np
import pytest

from jaxcurv import data, ensemble, models
from jaxcurv.privacy import DPConfig, canary_inclusion, epsilon, one_run_audit_scan

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def mlp():
    return models.get_model("mlp", 10, hidden=64, depth=1)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_batchnorm_model_refused_before_training(digits):
    masks = data.subset_masks(len(digits), 2, seed=0)
    with pytest.raises(ValueError, match="resnet18_gn"):
        ensemble.train(models.get_model("resnet18", 10, width=4), digits, masks, KEY, epochs=1,
                       dp=DPConfig(noise_multiplier=1.0))
    with pytest.raises(ValueError, match="SAM"):
        ensemble.train("mlp", digits, masks, KEY, epochs=1, optimizer="sam",
                       dp=DPConfig(noise_multiplier=1.0))


def test_dp_ensemble_accounts_and_trains(digits, mlp):
    tr = digits.take(np.arange(800))
    masks = data.subset_masks(len(tr), 2, seed=1)
    ens = ensemble.train(mlp, tr, masks, KEY, epochs=8, batch_size=64, learning_rate=0.5,
                         dp=DPConfig(target_epsilon=8.0, l2_clip=1.0), record_examples=True)
    report = ens.privacy
    sizes = masks.sum(1)
    assert report["steps"] == 8 * int(np.ceil(sizes.max() / 64))
    for eps, n in zip(report["epsilon"], sizes):
        direct = epsilon(report["noise_multiplier"], 64 / n, report["steps"], 1e-5)
        assert eps == pytest.approx(direct, rel=1e-9)
    assert max(report["epsilon"]) <= 8.0 + 1e-3 and max(report["epsilon"]) > 7.9
    assert report["max_batch_size"] > 64
    assert (ens.history["dp_nonfinite"] == 0).all()
    # private but useful: well above chance on the examples it trained on
    correct = ens.history["correct"][-1]
    assert correct[masks].mean() > 0.5


def test_each_member_draws_its_own_noise(digits, mlp):
    tr = digits.take(np.arange(300))
    masks = np.ones((2, len(tr)), bool)  # identical data: only noise and sampling differ
    kw = dict(epochs=1, batch_size=32, dp=DPConfig(noise_multiplier=1.0),
              members_per_chunk=2)
    ens = ensemble.train(mlp, tr, masks, KEY, **kw)
    a, b = (jax.tree.leaves(ens.member(k)["params"]) for k in range(2))
    assert not np.allclose(a[0], b[0])
    again = ensemble.train(mlp, tr, masks, KEY, **kw)  # but deterministic given the key
    for u, v in zip(jax.tree.leaves(ens.variables), jax.tree.leaves(again.variables)):
        np.testing.assert_array_equal(u, v)


def test_dp_microbatches_give_the_whole_batch_result(digits, mlp):
    """Per-example gradients one row at a time (the CPU default for dense models) train the same
    members as the whole padded batch at once, up to float summation order."""
    tr = digits.take(np.arange(300))
    masks = data.subset_masks(len(tr), 2, seed=2)
    kw = dict(epochs=2, batch_size=32, dp=DPConfig(noise_multiplier=1.0))
    whole = ensemble.train(mlp, tr, masks, KEY, dp_microbatch_size=10_000, **kw)
    rows = ensemble.train(mlp, tr, masks, KEY, dp_microbatch_size=1, **kw)
    default = ensemble.train(mlp, tr, masks, KEY, **kw)
    for u, v, w in zip(*(jax.tree.leaves(e.variables) for e in (whole, rows, default))):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(v, w)  # CPU default for a dense model: one row at a time
    def abstract(model):  # the parameters' shapes
        return jax.eval_shape(lambda k: models.init_variables(model, k, (8, 8, 1)), KEY)["params"]

    assert ensemble._cpu_dp_microbatch(abstract(mlp)) == 1
    assert ensemble._cpu_dp_microbatch(abstract(models.get_model("cnn", 10))) is None


def _audit(model, dp, digits, num_canaries=256):
    """Train once with random-noise canaries each included w.p. ½; one-run ε lower bound."""
    rng = np.random.default_rng(0)
    canary_x = rng.uniform(size=(num_canaries, 8, 8, 1)).astype(np.float32)
    canary_y = rng.integers(0, 10, num_canaries).astype(np.int32)
    included = canary_inclusion(num_canaries, seed=1)
    base = digits.take(np.arange(600))
    ds = data.Dataset(np.concatenate([base.images, canary_x]),
                      np.concatenate([base.labels, canary_y]), 10, "canaries")
    mask = np.concatenate([np.ones(len(base), bool), included])[None]
    ens = ensemble.train(model, ds, mask, KEY, epochs=30, batch_size=64,
                         learning_rate=0.5 if dp else 0.2, dp=dp)
    logits = ensemble.predict(ens, canary_x, progress=False)[0]
    loss = np.asarray(models.cross_entropy(logits, canary_y))
    return one_run_audit_scan(-loss, included), ens.privacy


def test_one_run_audit_of_dp_training_stays_below_accounted_epsilon(digits, mlp):
    audit, privacy = _audit(mlp, DPConfig(target_epsilon=2.0), digits)
    accounted = privacy["epsilon_max"]
    assert accounted == pytest.approx(2.0, abs=1e-3)
    assert audit.epsilon <= accounted
    # the same audit has the power to expose a non-private run (so the check above can fail)
    leaky, _ = _audit(mlp, None, digits)
    assert leaky.epsilon > accounted
