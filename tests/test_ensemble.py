"""Vectorized ensembles against independent single-model runs, naive loops and resumed runs;
the Ensemble pytree through jit; held kernels; no module-level caches."""

import ast
import dataclasses
import logging
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcurv import data, ensemble, models
from jaxcurv.curvature import make_input_curvature, make_zero_order_curvature
from jaxcurv.optim import OptimizerConfig, make_optimizer, make_schedule, sam_gradient
from jaxcurv.errors import ConfigError
from jaxcurv.training import epoch_plan
from jaxcurv.workflow import train_ensemble

KEY = jax.random.PRNGKey(0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    full = data.load("digits")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(full), 160, replace=False)
    return full.take(idx)


@pytest.fixture(scope="module")
def mlp():
    return models.get_model("mlp", 10, hidden=32, depth=1)


def _params(ens, k):
    return jax.tree.leaves(ens.member(k)["params"])


def _assert_tree_close(a, b, **tol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tol)


# --- host batching -----------------------------------------------------------------------------


def test_epoch_plan_visits_each_subset_example_once():
    subsets = [np.arange(0, 10), np.arange(5, 12)]
    idx, w = epoch_plan(subsets, 4, steps=3, seed=1, epoch=0, member_ids=[0, 1])
    assert idx.shape == w.shape == (2, 3, 4)
    for k, subset in enumerate(subsets):
        real = idx[k][w[k] > 0]
        assert sorted(real.tolist()) == subset.tolist()
        assert np.isin(idx[k], subset).all()  # padding rows hold subset examples at weight 0
    again, _ = epoch_plan(subsets, 4, steps=3, seed=1, epoch=0, member_ids=[0, 1])
    other, _ = epoch_plan(subsets, 4, steps=3, seed=1, epoch=1, member_ids=[0, 1])
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)


# --- members train only on their subsets; vmap == independent runs -----------------------------


def test_member_ignores_examples_outside_its_mask(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=3)
    out = np.flatnonzero(~masks[0])[:20]
    labels = small.labels.copy()
    labels[out] = (labels[out] + 1) % 10
    changed = data.Dataset(small.images, labels, 10, "changed")
    kw = dict(epochs=2, batch_size=16, members_per_chunk=2)
    a = ensemble.train(mlp, small, masks, KEY, **kw)
    # the same settings as a TrainConfig (keywords override its fields)
    config = ensemble.TrainConfig(**dict(kw, epochs=5))
    b = ensemble.train(mlp, changed, masks, KEY, config, epochs=2)
    _assert_tree_close(a.member(0), b.member(0), rtol=0, atol=0)  # member 0 never saw them
    assert not all(np.allclose(u, v) for u, v in zip(_params(a, 1), _params(b, 1)))


def test_vmapped_members_equal_independent_runs(small, mlp):
    masks = data.subset_masks(len(small), 3, seed=4)
    steps = int(np.ceil(masks.sum(1).max() / 16))
    kw = dict(epochs=2, batch_size=16, optimizer="sgd", learning_rate=0.1,
              steps_per_epoch=steps)
    together = ensemble.train(mlp, small, masks, KEY, members_per_chunk=3, **kw)
    for k in range(3):
        alone = ensemble.train(mlp, small, masks[k:k + 1], KEY, member_ids=[k], **kw)
        _assert_tree_close(together.member(k), alone.member(0), rtol=2e-5, atol=2e-6)


def test_scan_and_host_loop_give_the_same_result(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=5)
    kw = dict(epochs=2, batch_size=32, members_per_chunk=2, augment=True)
    a = ensemble.train(mlp, small, masks, KEY, scan_steps=True, **kw)
    b = ensemble.train(mlp, small, masks, KEY, scan_steps=False, **kw)
    _assert_tree_close(a.variables, b.variables, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(a.history["train_loss"], b.history["train_loss"], rtol=1e-5)


def test_training_learns_and_records(mlp):
    tr, te = data.train_test("digits")
    masks = data.subset_masks(len(tr), 2, seed=0)
    ens = ensemble.train(mlp, tr, masks, KEY, epochs=4, batch_size=64, learning_rate=0.2,
                         test=te, record_examples=True)
    e, k, n = 4, 2, len(tr)
    assert ens.history["correct"].shape == (e, k, n) and ens.history["correct"].dtype == bool
    assert ens.history["loss"].shape == (e, k, n)
    assert ens.history["test_accuracy"].shape == (e, k)
    assert ens.history["test_accuracy"][-1].min() > 0.85
    assert ens.history["train_loss"][-1].max() < ens.history["train_loss"][0].min()
    acc = ensemble.accuracy(ens, te)
    np.testing.assert_allclose(acc, ens.history["test_accuracy"][-1])
    logits = ensemble.predict(ens, te.images)
    assert logits.shape == (2, len(te), 10)
    manual = mlp.apply(ens.member(1), te.images)
    np.testing.assert_allclose(logits[1], manual, rtol=1e-5, atol=1e-5)
    # in-subset examples are fit better than held-out ones
    correct = ens.history["correct"][-1]
    assert (correct[masks]).mean() > (correct[~masks]).mean()
    loss = models.cross_entropy(jnp.asarray(logits[0]), te.labels)
    assert np.isfinite(loss).all()


def test_recorded_curvature_equals_member_curvature(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=2)
    ens = ensemble.train(mlp, small, masks, KEY, epochs=2, batch_size=32, record_curvature=2)
    assert ens.history["curvature"].shape == (2, 2, len(small))
    curv = ensemble.member_curvature(ens, small.images, small.labels, jax.random.fold_in(KEY, 1),
                                     num_probes=2)
    np.testing.assert_allclose(curv.trace_sq, ens.history["curvature"][-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(curv.trace, ens.history["curvature_trace"][-1], rtol=1e-4,
                               atol=1e-5)


def test_member_curvature_rows_equal_input_curvature(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=6)
    ens = ensemble.train(mlp, small, masks, KEY, epochs=1, batch_size=32, member_ids=[7, 3])
    key = jax.random.PRNGKey(9)
    curv = ensemble.member_curvature(ens, small.images, small.labels, key, num_probes=3)
    zero = ensemble.member_zero_order_curvature(ens, small.images[:20], small.labels[:20], key,
                                                num_probes=2, h=1e-2)
    assert curv.trace.shape == (2, len(small)) and zero.shape == (2, 20)
    reference = make_input_curvature(models.make_loss_fn(mlp), num_probes=3)
    zero_reference = make_zero_order_curvature(models.make_loss_fn(mlp), num_probes=2, h=1e-2,
                                               method="mixed")
    for k, member_id in enumerate([7, 3]):  # keys derive from the global member id, both ways
        member_key = jax.random.fold_in(key, member_id)
        ref = reference(ens.member(k), small.images, small.labels, member_key)
        np.testing.assert_allclose(curv.trace_sq[k], ref.trace_sq, rtol=1e-6)
        np.testing.assert_array_equal(zero[k], zero_reference(
            ens.member(k), small.images[:20], small.labels[:20], member_key))
    # stacked variables with explicit ids give the same rows as the Ensemble
    fn = ensemble.make_member_curvature(mlp, num_probes=3)
    again = fn(ens.variables, small.images, small.labels, key, member_ids=[7, 3], members=[1])
    np.testing.assert_array_equal(again.trace_sq[0], curv.trace_sq[1])


def _untrained_ensemble(model, n, k=2):
    variables = [models.init_variables(model, jax.random.fold_in(KEY, j), (8, 8, 1))
                 for j in range(k)]
    stacked = jax.tree.map(lambda *a: np.stack(a), *variables)
    return ensemble.Ensemble(model, stacked, np.ones((k, n), bool), np.arange(k), {}, {})


def _compiles(caplog, name="jit("):
    return [r for r in caplog.records if f"Compiling {name}" in r.getMessage()]


def test_held_kernels_compile_once(small, mlp, caplog):
    """make_* functions compile once and are reused across calls and members; the one-call
    conveniences give the same numbers."""
    ens = _untrained_ensemble(mlp, len(small), k=3)
    images, labels = small.images[:30], small.labels[:30]
    key = jax.random.PRNGKey(4)
    kw = dict(num_probes=2, method="mixed")
    predict = ensemble.make_predict(ens.model)
    curvature_fn = ensemble.make_member_curvature(mlp, num_probes=2)
    zero_fn = ensemble.make_member_zero_order_curvature(mlp, **kw)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        first = predict(ens, images)
        assert _compiles(caplog)
        caplog.clear()
        np.testing.assert_array_equal(predict(ens.variables, images), first)  # held
        assert not _compiles(caplog)
        full = curvature_fn(ens, images, labels, key)
        assert len(_compiles(caplog, "jit(example_kernel")) == 1  # one kernel for K members
        caplog.clear()
        rows = zero_fn(ens, images, labels, key, h=1e-2, members=[2, 0])
        assert len(_compiles(caplog, "jit(example_kernel")) == 1
        caplog.clear()  # one member at a time (a chunked stage): the held kernels are reused
        one = curvature_fn(ens, images, labels, key, members=[1])
        zero_one = zero_fn(ens, images, labels, key, h=1e-2, members=[0])
        assert not _compiles(caplog, "jit(example_kernel")
    for field, value in full._asdict().items():  # rows do not depend on the members computed
        np.testing.assert_array_equal(getattr(one, field)[0], value[1])
    np.testing.assert_array_equal(zero_one[0], rows[1])
    assert rows.shape == (2, len(images))
    np.testing.assert_array_equal(ensemble.predict(ens, images), first)
    convenience = ensemble.member_zero_order_curvature(ens, images, labels, key, h=1e-2,
                                                       members=[2, 0], **kw)
    np.testing.assert_array_equal(convenience, rows)
    reference = make_zero_order_curvature(models.make_loss_fn(mlp), h=1e-2, **kw)
    for j, member in enumerate([2, 0]):  # member m's key is fold_in(key, m)
        ref = reference(ens.member(member), images, labels, jax.random.fold_in(key, member))
        np.testing.assert_allclose(rows[j], ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="members"):
        zero_fn(ens, images, labels, key, members=[3])


# --- the Ensemble is an immutable pytree ---------------------------------------------------------


def test_ensemble_is_a_frozen_pytree_that_passes_through_jit(small, mlp, caplog):
    masks = data.subset_masks(len(small), 2, seed=11)
    ens = ensemble.train(mlp, small, masks, KEY, epochs=1, batch_size=32, test=small)
    leaves = jax.tree.leaves(ens)
    n_var = len(jax.tree.leaves(ens.variables))
    assert len(leaves) == n_var + 2 + len(ens.history)  # variables, masks, ids, history

    @jax.jit
    def shift(e):
        return e.replace(variables=jax.tree.map(lambda a: a + 1.0, e.variables)), e.num_members

    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        out, k = shift(ens)
        assert _compiles(caplog, "jit(shift")
        caplog.clear()
        shift(ens)
        assert not _compiles(caplog, "jit(shift")  # static metadata hashes stably
    assert isinstance(out, ensemble.Ensemble) and int(k) == 2
    assert out.model is ens.model and out.config == ens.config and out.privacy is None
    _assert_tree_close(out.variables, jax.tree.map(lambda a: a + 1.0, ens.variables),
                       rtol=0, atol=0)
    np.testing.assert_array_equal(out.masks, masks)
    np.testing.assert_allclose(out.history["test_accuracy"], ens.history["test_accuracy"],
                               rtol=1e-7)  # float64 history: float32 inside jit
    with pytest.raises(dataclasses.FrozenInstanceError):
        ens.masks = masks
    with pytest.raises(ValueError, match="immutable"):
        ens.config["epochs"] = 3
    with pytest.raises(ValueError, match="read-only"):
        ens.masks[0, 0] = not ens.masks[0, 0]
    assert ens.config["epochs"] == 1 and hash(ens.config)


# --- training driven epoch by epoch ---------------------------------------------------------------


def test_trainer_driven_epoch_by_epoch_equals_train(small, mlp):
    masks = data.subset_masks(len(small), 3, seed=12)
    config = ensemble.TrainConfig(epochs=2, batch_size=32, members_per_chunk=2,
                                  record_examples=True)
    reference = ensemble.train(mlp, small, masks, KEY, config)
    plan = ensemble.plan_training(mlp, small, masks, KEY, config)
    assert [c.tolist() for c in plan.chunks] == [[0, 1], [2]]
    trainer = ensemble.make_trainer(plan)
    parts = []
    for rows in reversed(plan.chunks):  # any order: members depend only on their ids
        state = trainer.init(rows)
        losses = []
        while state.epoch < config.epochs:
            state = trainer.epoch(state)
            losses.append(state.history["train_loss"][-1][:len(rows)])
        parts.append(trainer.collect(state))
        np.testing.assert_array_equal(np.stack(losses), reference.history["train_loss"][:, rows])
    ens = trainer.ensemble(parts[::-1])
    _assert_tree_close(ens.variables, reference.variables, rtol=0, atol=0)
    for name, values in reference.history.items():
        np.testing.assert_array_equal(ens.history[name], values)
    with pytest.raises(ValueError, match="epochs are done"):
        trainer.epoch(state)


def test_no_module_level_jit_or_function_caches():
    """Nothing under jaxcurv/ compiles or caches at module level: no @jax.jit / @functools.cache
    on a module-level function, no module-level ``name = jax.jit(...)``."""
    def cached(node) -> bool:
        text = ast.unparse(node)
        return any(word in text for word in ("jit", "functools.cache", "lru_cache", "cache"))

    found = []
    for path in sorted((ROOT / "jaxcurv").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found += [f"{path.name}:{node.name}" for d in node.decorator_list if cached(d)]
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and "jit" in ast.unparse(node.value.func):
                found.append(f"{path.name}:{ast.unparse(node.targets[0])}")
    assert not found, found


# --- checkpoints ---------------------------------------------------------------------------------


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_result(small, mlp, tmp_path):
    masks = data.subset_masks(len(small), 2, seed=7)
    kw = dict(epochs=3, batch_size=32, record_examples=True, augment=True,
              members_per_chunk=1)
    reference = ensemble.train(mlp, small, masks, KEY, **kw)

    def kill(epoch, info):
        if info["chunk"] == 1 and epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train_ensemble(mlp, small, masks, KEY, checkpoint_dir=tmp_path, callbacks=[kill], **kw)
    assert (tmp_path / "chunk_0000").exists() and (tmp_path / "chunk_0001").exists()
    seen = []
    resumed = train_ensemble(mlp, small, masks, KEY, checkpoint_dir=tmp_path,
                             callbacks=[lambda e, i: seen.append((i["chunk"], e))], **kw)
    assert seen == [(1, 2)]  # chunk 0 was complete, chunk 1 resumed after epoch index 1
    _assert_tree_close(resumed.variables, reference.variables, rtol=0, atol=0)
    for name, values in reference.history.items():
        np.testing.assert_array_equal(resumed.history[name], values)


def test_checkpoint_dir_of_another_run_is_refused(small, mlp, tmp_path):
    masks = data.subset_masks(len(small), 2, seed=8)
    train_ensemble(mlp, small, masks, KEY, epochs=1, batch_size=32, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        train_ensemble(mlp, small, masks, KEY, epochs=2, batch_size=32, checkpoint_dir=tmp_path)


# --- validation ----------------------------------------------------------------------------------


def test_bad_inputs_raise(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        ensemble.train(mlp, small, masks[:, :-1], KEY, epochs=1)
    empty = masks.copy()
    empty[1] = False
    with pytest.raises(ValueError, match="no training example"):
        ensemble.train(mlp, small, empty, KEY, epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        ensemble.train(mlp, small, masks, KEY, epochs=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        ensemble.train(mlp, small, masks, KEY, epochs=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="member_ids"):
        ensemble.train(mlp, small, masks, KEY, epochs=1, member_ids=[1, 1])
    with pytest.raises(ValueError, match="epoch_count"):  # unknown settings are named
        ensemble.train(mlp, small, masks, KEY, epochs=1, epoch_count=3)
    with pytest.raises(ValueError, match="epochs"):
        ensemble.train(mlp, small, masks, KEY, batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        ensemble.TrainConfig(epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="images"):
        ensemble.predict(ensemble.Ensemble(mlp, {}, masks, np.arange(2), {}, {}), small.images[0])
    for moved in ("checkpoint_dir", "progress", "callbacks"):  # the workflow's, named
        with pytest.raises(ConfigError, match="jaxcurv.workflow.train_ensemble"):
            ensemble.train(mlp, small, masks, KEY, epochs=1, **{moved: None})


# --- optimizers ----------------------------------------------------------------------------------


def test_sam_gradient_equals_naive_perturbation():
    f = lambda p: jnp.sum(jnp.sin(p["a"])) * jnp.sum(p["b"] ** 2) + jnp.sum(p["a"] ** 4)
    params = {"a": jnp.linspace(-1, 1, 5), "b": jnp.arange(3.0) - 1}
    g = jax.grad(f)(params)
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
    perturbed = jax.tree.map(lambda p, gi: p + 0.1 * gi / norm, params, g)
    grad_fn = lambda p: (jax.grad(f)(p), None)
    got, _, _ = sam_gradient(grad_fn, params, rho=0.1)
    _assert_tree_close(got, jax.grad(f)(perturbed), rtol=1e-6)
    # adaptive: ε = ρ θ²g / ‖|θ| g‖
    scaled = jnp.sqrt(sum(jnp.sum((p * gi) ** 2) for p, gi in
                          zip(jax.tree.leaves(params), jax.tree.leaves(g))))
    perturbed = jax.tree.map(lambda p, gi: p + 0.1 * p * p * gi / scaled, params, g)
    got, _, _ = sam_gradient(grad_fn, params, rho=0.1, adaptive=True)
    _assert_tree_close(got, jax.grad(f)(perturbed), rtol=1e-6)


def test_schedules_and_weight_decay():
    cos = make_schedule(OptimizerConfig(learning_rate=0.1, schedule="cosine"), 100)
    assert float(cos(0)) == pytest.approx(0.1) and float(cos(50)) == pytest.approx(0.05)
    assert float(cos(100)) == pytest.approx(0.0, abs=1e-9)
    one = make_schedule(OptimizerConfig(learning_rate=0.2, schedule="onecycle",
                                        warmup_fraction=0.25), 100)
    assert float(one(0)) == 0.0 and float(one(25)) == pytest.approx(0.2)
    assert float(one(100)) == pytest.approx(0.0, abs=1e-9)
    # weight decay applies to kernels only: zero gradient, constant lr, no momentum
    config = OptimizerConfig(learning_rate=0.1, schedule="constant", momentum=0.0,
                             weight_decay=0.5, nesterov=False)
    tx = make_optimizer(config, 10)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.05 * np.ones((2, 2)))
    np.testing.assert_allclose(updates["bias"], 0.0)
    with pytest.raises(ValueError, match="rho"):
        OptimizerConfig(name="sam", rho=0.0)


def test_sam_training_differs_from_sgd(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=9)
    kw = dict(epochs=1, batch_size=32, members_per_chunk=2)
    sgd = ensemble.train(mlp, small, masks, KEY, optimizer="sgd", **kw)
    sam = ensemble.train(mlp, small, masks, KEY, optimizer=OptimizerConfig(name="sam", rho=0.1),
                         **kw)
    assert np.isfinite(sam.history["train_loss"]).all()
    assert not np.allclose(_params(sgd, 0)[0], _params(sam, 0)[0])


# --- sharding members over 8 fake CPU devices -------------------------------------------------


def test_members_sharded_over_devices_equal_single_device(run_on_fake_devices):
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jaxcurv import data, ensemble, models
        assert jax.local_device_count() == 8
        ds = data.load("digits").take(np.arange(96))
        masks = data.subset_masks(96, 8, seed=0)
        model = models.get_model("mlp", 10, hidden=16, depth=1)
        kw = dict(epochs=2, batch_size=16, members_per_chunk=8, scan_steps=True)
        a = ensemble.train(model, ds, masks, jax.random.PRNGKey(1), **kw)
        b = ensemble.train(model, ds, masks, jax.random.PRNGKey(1), devices=jax.devices()[:1], **kw)
        for u, v in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
        print("SHARDED_OK")
        """
    )
    run_on_fake_devices(script)


def test_init_transform_sets_each_members_initial_variables(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=10)
    seen = []

    def zero_last_bias(variables):
        seen.append(1)
        params = jax.tree.map(lambda a: a, variables["params"])
        last = sorted(params)[-1]
        params[last] = dict(params[last], bias=jnp.full_like(params[last]["bias"], 3.0))
        return {**variables, "params": params}

    ens = ensemble.train(mlp, small, masks, KEY, epochs=1, batch_size=32, learning_rate=1e-6,
                         members_per_chunk=2, init_transform=zero_last_bias)
    assert len(seen) == 2
    last = sorted(ens.variables["params"])[-1]
    np.testing.assert_allclose(ens.variables["params"][last]["bias"], 3.0, atol=1e-3)


def test_cpu_chunk_default_vmaps_dense_members_only():
    """On a CPU, dense-only members share a vmapped chunk (up to the memory cap); conv nets and
    DP-SGD train one member at a time."""
    shape = (8, 8, 1)

    def params(model):
        return jax.eval_shape(lambda k: models.init_variables(model, k, shape), KEY)["params"]

    mlp = params(models.get_model("mlp", 10, hidden=32, depth=2))
    cnn = params(models.get_model("cnn", 10))
    assert ensemble._cpu_members_per_chunk(mlp, 32, private=False) == 32
    assert ensemble._cpu_members_per_chunk(mlp, 32, private=True) == 1
    assert ensemble._cpu_members_per_chunk(cnn, 32, private=False) == 1
    # ≈ 17 M params: 268 MB a member
    wide = params(models.get_model("mlp", 10, hidden=4096, depth=2))
    n = models.count_params(wide)
    assert ensemble._cpu_members_per_chunk(wide, 32, private=False) == (1 << 30) // (16 * n)


def test_step_schedule_is_multistep_lr():
    # PyTorch MultiStepLR(milestones=[12, 16], gamma=0.1) over 20 epochs of 5 steps
    step = make_schedule(OptimizerConfig(learning_rate=1e-3, schedule="step"), 100)
    expected = [1e-3 * 0.1 ** ((s >= 60) + (s >= 80)) for s in range(101)]
    np.testing.assert_allclose([float(step(s)) for s in range(101)], expected, rtol=1e-6)
    three = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="step",
                                          step_fractions=(0.5,), step_factor=0.5), 10)
    assert [float(three(s)) for s in (4, 5, 9)] == [1.0, 0.5, 0.5]
    for bad in [(), (0.8, 0.6), (0.0, 0.5), (0.5, 1.0)]:
        with pytest.raises(ValueError, match="step_fractions"):
            OptimizerConfig(schedule="step", step_fractions=bad)
    with pytest.raises(ValueError, match="step_factor"):
        OptimizerConfig(schedule="step", step_factor=0.0)


def test_rmsprop_matches_pytorch_update_rule():
    # torch.optim.RMSprop defaults: v <- 0.99 v + 0.01 g², θ <- θ − lr g / (√v + 1e-8)
    config = OptimizerConfig(name="rmsprop", learning_rate=1e-3, weight_decay=0.0,
                             schedule="constant")
    tx = make_optimizer(config, 10)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = tx.init(params)
    theta, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = rng.normal(size=3) * np.array([1.0, 1e-3, 10.0])
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        v = 0.99 * v + 0.01 * g ** 2
        theta = theta - 1e-3 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(params["w"], theta, rtol=1e-5)
