"""Tests for jaxcurv.models against independent ground truth (numpy, jax.hessian, lax.conv).

Compile time dominates on 2 CPU cores: small widths, and one compiled program per (model, shape)
computes everything the tests compare (see ``_built``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcurv import models as M

SHAPES = {"digits": (8, 8, 1), "cifar": (32, 32, 3)}
SMALL = {
    "mlp": {"hidden": 32},
    "cnn": {},
    "resnet18": {"width": 8},
    "resnet18_gn": {"width": 8, "num_groups": 4},
    "fastnet": {"width": 8},
}
C = 10
B = 3
BF16_EPS = 2.0**-8  # unit roundoff of bfloat16 (8 significand bits)
F32_EPS = float(np.finfo(np.float32).eps)
TOL32 = dict(rtol=1e-5, atol=1e-5)
LABELS = jnp.array([3, 0, 9])
MASK = jnp.array([True, True, False])
BF16_MODELS = ("cnn", "fastnet")
# Compiling random initializers dominates test time on CPU (≈0.25 s per parameter tensor, ≈4.5 s
# for a ResNet18 at any width). So: real init_variables on digits, with the "rbg" PRNG (same code
# path, faster to compile than threefry); on 32×32×3 the init is traced by jax.eval_shape (no
# compile) and filled on the host with N(0, 1/fan_in) kernels — the forward pass is real.
KEY = jax.random.key(0, impl="rbg")


def _host_init(model, shape: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    """Variables shaped by model.init (traced, not compiled), values drawn with numpy."""
    shapes = jax.eval_shape(functools.partial(model.init, train=False), KEY, jnp.zeros((1, *shape)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


@functools.cache
def _built(name: str, shape_key: str) -> dict[str, Any]:
    """A small model and everything the tests compare, from ONE compilation per (model, shape).

    variables: on digits from init_variables, and BN models carry running stats after one
    training-mode pass (non-trivial); logits: inference logits of x; alone: each example's logits
    computed on its own (B=1); train_x / train_other: training-mode logits (init variables) of x and
    of a batch sharing only example 0 with x; masked_stats: batch_stats of a training pass over
    x[MASK]; losses: make_loss_fn per example (smoothing 0; 0.2 for the cnn); bf16: logits of the
    bf16-cast model and its Dense_0 output.
    """
    shape = SHAPES[shape_key]
    model = M.get_model(name, C, **SMALL[name])
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(size=(B, *shape)), jnp.float32)
    other = x.at[1:].set(jnp.asarray(rng.uniform(size=x[1:].shape), jnp.float32))
    plain, smooth = M.make_loss_fn(model), M.make_loss_fn(model, label_smoothing=0.2)

    @jax.jit
    def build_digits(key, x, other):
        init_vars = M.init_variables(model, key, shape)
        out = dict(init_vars=init_vars)
        out["train_x"], out["train_stats"] = M.apply_train(model, init_vars, x)
        variables = init_vars
        if M.uses_batch_norm(init_vars):
            variables = {**init_vars, **out["train_stats"]}
        out.update(variables=variables, logits=model.apply(variables, x))
        if name in ("resnet18", "resnet18_gn", "fastnet"):
            out["alone"] = jax.vmap(lambda xi: model.apply(variables, xi[None])[0])(x)
            out["train_other"], _ = M.apply_train(model, init_vars, other)
        if name == "resnet18":
            out["masked_stats"] = M.apply_train(model, init_vars, x, mask=MASK)[1]["batch_stats"]
        if name in ("mlp", "cnn", "resnet18"):
            out["losses"] = jax.vmap(plain, (None, 0, 0))(variables, x, LABELS)
        if name == "cnn":
            out["losses_smooth"] = jax.vmap(smooth, (None, 0, 0))(variables, x, LABELS)
        return out

    @jax.jit
    def build_cifar(variables, x):
        out = dict(variables=variables, logits=model.apply(variables, x))
        if name in BF16_MODELS:
            v16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
            logits, inter = model.apply(v16, x.astype(jnp.bfloat16), capture_intermediates=True)
            out["bf16"] = logits
            out["bf16_dense"] = inter["intermediates"]["Dense_0"]["__call__"][0]
        return out

    out = build_digits(KEY, x, other) if shape_key == "digits" else build_cifar(_host_init(model, shape), x)
    return dict(out, model=model, x=x, other=other)


@pytest.mark.parametrize("shape_key", sorted(SHAPES))
@pytest.mark.parametrize("name", M.MODEL_NAMES)
def test_logits_shape_dtype_finite(name, shape_key):
    built = _built(name, shape_key)
    logits = built["logits"]
    assert logits.shape == (B, C)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert float(jnp.std(logits)) > 0  # not a constant output
    has_bn = name in ("resnet18", "fastnet")
    assert set(built["variables"]) == ({"params", "batch_stats"} if has_bn else {"params"})
    assert M.uses_batch_norm(built["variables"]) == has_bn


@pytest.mark.parametrize("name", ["resnet18", "resnet18_gn", "fastnet"])
def test_inference_is_batch_independent(name):
    """Example i's inference logits equal its logits alone (B=1). BatchNorm in train mode does
    couple the batch (so the check can fail); GroupNorm has no train/inference difference."""
    built = _built(name, "digits")
    np.testing.assert_allclose(built["alone"], built["logits"], **TOL32)
    if name == "resnet18_gn":
        assert built["train_stats"] == {}
        np.testing.assert_allclose(built["train_x"], built["logits"], **TOL32)
        np.testing.assert_allclose(built["train_other"][0], built["logits"][0], **TOL32)
    else:
        assert float(jnp.max(jnp.abs(built["train_other"][0] - built["train_x"][0]))) > 1e-3


def _stem_stats(kernel, x):
    """Ground truth for ResNet18's first BN: batch mean / biased var of lax.conv(x, stem kernel)."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = np.asarray(y, np.float64)
    return y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))


def test_train_mode_updates_batch_stats_with_momentum_and_mask():
    built = _built("resnet18", "digits")
    init_vars, x = built["init_vars"], built["x"]
    old = init_vars["batch_stats"]["BatchNorm_0"]
    np.testing.assert_array_equal(old["mean"], 0.0)
    np.testing.assert_array_equal(old["var"], 1.0)
    kernel = init_vars["params"]["Conv_0"]["kernel"]
    mean, var = _stem_stats(kernel, x)
    new = built["variables"]["batch_stats"]["BatchNorm_0"]  # after one apply_train on x
    tol = dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["mean"], 0.1 * mean, **tol)  # running ← 0.9·running + 0.1·batch
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var, **tol)
    masked = built["masked_stats"]["BatchNorm_0"]  # statistics of x[MASK] = the first two only
    mean2, var2 = _stem_stats(kernel, x[:2])
    np.testing.assert_allclose(masked["mean"], 0.1 * mean2, **tol)
    np.testing.assert_allclose(masked["var"], 0.9 + 0.1 * var2, **tol)
    assert not np.allclose(mean2, mean, rtol=1e-3)  # the mask made a difference


def test_batch_loss_padding_is_ignored():
    """Zero-weight (padding) examples change neither loss, gradient nor BN statistics."""
    built = _built("fastnet", "digits")
    model, variables, x = built["model"], built["variables"], built["x"]
    fn = jax.jit(jax.value_and_grad(M.make_batch_loss_fn(model, label_smoothing=0.1), has_aux=True))
    y = jnp.array([1, 2, 3])
    params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
    weights = jnp.array([1.0, 1.0, 0.0])
    (loss, (logits, new)), grads = fn(params, stats, x, y, weights)
    garbage = np.random.default_rng(3).uniform(size=x.shape[1:])
    x_pad = x.at[2].set(jnp.asarray(garbage, jnp.float32))  # the pad slot holds other data
    (loss_p, (_, new_p)), grads_p = fn(params, stats, x_pad, y.at[2].set(9), weights)
    (loss_all, _), _ = fn(params, stats, x, y, jnp.ones(3))
    tol = dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss_p, loss, **tol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), grads_p, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), new_p, new)
    ce = [_naive_ce(logits[i], int(y[i]), 0.1) for i in range(2)]
    np.testing.assert_allclose(float(loss), (ce[0] + ce[1]) / 2, rtol=1e-5)
    assert abs(float(loss_all) - float(loss)) > 1e-4  # the third example does count when weighted


def _naive_ce(logits, y, smoothing=0.0):
    """−Σ_c t_c log softmax(z)_c with t = (1 − α)·onehot(y) + α/C, in float64."""
    z = np.asarray(logits, np.float64)
    logp = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
    target = np.full(z.shape, smoothing / z.size)
    target[y] += 1.0 - smoothing
    return -float(np.sum(target * logp))


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_loss_fn_matches_naive_cross_entropy(name):
    """Single-example loss in inference mode (BN running stats) = −log softmax[y] of the batch's
    inference logits, also with label smoothing; float32 scalars."""
    built = _built(name, "digits")
    for i, y in enumerate(np.asarray(LABELS)):
        np.testing.assert_allclose(float(built["losses"][i]), _naive_ce(built["logits"][i], y), rtol=1e-5, atol=1e-6)
        if "losses_smooth" in built:
            np.testing.assert_allclose(float(built["losses_smooth"][i]), _naive_ce(built["logits"][i], y, 0.2),
                                       rtol=1e-5, atol=1e-6)
    assert built["losses"].dtype == jnp.float32
    assert name != "cnn" or "losses_smooth" in built


def test_loss_fn_compiles_once_per_shape():
    built = _built("mlp", "digits")
    traces = []
    loss_fn = M.make_loss_fn(built["model"])

    @jax.jit
    def counted(v, xi, yi):
        traces.append(1)
        return loss_fn(v, xi, yi)

    for i in range(B):
        got = counted(built["variables"], built["x"][i], LABELS[i])
        assert got.shape == () and got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), float(built["losses"][i]), **TOL32)
    assert len(traces) == 1


def test_loss_hessian_in_x_is_finite_and_symmetric():
    built = _built("cnn", "digits")
    hess = jax.jit(jax.hessian(M.make_loss_fn(built["model"]), argnums=1))(
        built["variables"], built["x"][0], jnp.int32(4))
    hess = np.asarray(hess, np.float64).reshape(64, 64)
    assert np.all(np.isfinite(hess))
    scale = np.abs(hess).max()
    assert scale > 0
    np.testing.assert_allclose(hess, hess.T, atol=50 * F32_EPS * scale)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_relu_input_hessian_is_gauss_newton(activation):
    """ReLU nets: ∇²ₓℓ = Jᵀ(diag p − ppᵀ)J exactly (curvature only from softmax); GELU adds more."""
    model = M.get_model("mlp", C, hidden=16, activation=activation)
    x = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 4, 1)), jnp.float32)

    @jax.jit
    def run(key, x):
        variables = M.init_variables(model, key, (4, 4, 1))
        variables = jax.tree.map(lambda a: 1.5 * a, variables)  # larger weights: visible nonlinearity
        logits_fn = lambda xi: model.apply(variables, xi[None])[0]  # noqa: E731
        hess = jax.hessian(M.make_loss_fn(model), argnums=1)(variables, x, jnp.int32(2))
        return hess, jax.jacobian(logits_fn)(x), jax.nn.softmax(logits_fn(x))

    hess, jac, p = (np.asarray(a, np.float64) for a in run(KEY, x))
    jac = jac.reshape(C, 16)
    gauss_newton = jac.T @ (np.diag(p) - np.outer(p, p)) @ jac
    err = np.abs(hess.reshape(16, 16) - gauss_newton).max() / np.abs(gauss_newton).max()
    if activation == "relu":
        assert err < 100 * F32_EPS
        assert np.linalg.eigvalsh(gauss_newton).min() > -1e-6 * np.abs(gauss_newton).max()
    else:
        assert err > 0.1  # smooth activations contribute Σ (p − y)·∇²f beyond Gauss–Newton


@pytest.mark.parametrize("name", BF16_MODELS)
def test_bfloat16_run_close_to_float32(name):
    built = _built(name, "cifar")
    ref, out = built["logits"], built["bf16"]
    assert out.dtype == jnp.float32
    assert built["bf16_dense"].dtype == jnp.bfloat16  # the layers really ran in bf16
    scale = float(jnp.max(jnp.abs(ref)))
    err = float(jnp.max(jnp.abs(out - ref)))
    assert err <= 8 * BF16_EPS * scale, (err, scale)  # measured ≈ 1.4–1.9 roundings of the max logit
    assert err > 0  # and not silently float32


def test_float64_run_stays_float64():
    """Under x64 a float64 model gives float64 logits and loss (the zero-order float64 path)."""
    built = _built("mlp", "digits")
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), built["variables"])
        x64 = np.asarray(built["x"], np.float64)
        loss_fn = M.make_loss_fn(built["model"])
        logits, loss = jax.jit(lambda v, x: (built["model"].apply(v, x), loss_fn(v, x[0], LABELS[0])))(v64, x64)
        assert logits.dtype == jnp.float64 and loss.dtype == jnp.float64
        np.testing.assert_allclose(logits, built["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(float(loss), _naive_ce(logits[0], int(LABELS[0])), rtol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_fastnet_avg_pool_has_no_max(pool):
    """pool="avg" removes every max (a kink source for finite-difference curvature); traced only."""
    model = M.get_model("fastnet", C, width=4, pool=pool)
    variables = _host_init(model, SHAPES["digits"])
    jaxpr = str(jax.make_jaxpr(model.apply)(variables, jnp.zeros((2, *SHAPES["digits"]))))
    has_max = "reduce_window_max" in jaxpr or "reduce_max" in jaxpr
    assert has_max == (pool == "max")


def test_count_params_resnet18_full_width_without_compiling():
    key = jax.random.key(0)
    x = jnp.zeros((1, 32, 32, 3))
    for name in ("resnet18", "resnet18_gn"):
        model = M.get_model(name, 10)
        shapes = jax.eval_shape(functools.partial(model.init, train=False), key, x)
        assert M.count_params(shapes) == 11_173_962  # the standard CIFAR ResNet18 count
    small = M.init_variables(M.get_model("mlp", 3, hidden=5), key, (2, 2, 1))
    assert M.count_params(small) == (4 * 5 + 5) + (5 * 5 + 5) + (5 * 3 + 3)


def test_fastnet_whitening_whitens_patches():
    variables = _built("fastnet", "digits")["variables"]
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(300, 9, 9, 1))  # > 256: the covariance is accumulated over 2 chunks
    images = (0.6 * base[:, :8, :8] + 0.4 * base[:, 1:, 1:]).astype(np.float32)  # correlated pixels
    new = M.init_fastnet_whitening(variables, images, eps=1e-9)
    kernel = np.asarray(new["params"]["whiten"]["kernel"], np.float64)
    bias = np.asarray(new["params"]["whiten"]["bias"], np.float64)
    assert kernel.shape == (2, 2, 1, 8)
    # ground truth: explicit loop over patch positions, output_c = Σ kernel[i,j,0,c]·patch[i,j] + bias_c
    outs = np.concatenate([
        np.einsum("nij,ijc->nc", images[:, r:r + 2, s:s + 2, 0], kernel[:, :, 0, :]) + bias
        for r in range(7) for s in range(7)
    ])
    np.testing.assert_allclose(outs.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(outs[:, :4], rowvar=False, bias=True), np.eye(4), atol=1e-3)
    np.testing.assert_allclose(outs[:, 4:], -outs[:, :4], atol=1e-5)
    assert new["params"]["Conv_0"] is variables["params"]["Conv_0"]  # everything else kept
    assert not np.allclose(variables["params"]["whiten"]["kernel"], kernel)  # input not mutated
    with pytest.raises(ValueError, match="whiten"):
        M.init_fastnet_whitening(_built("cnn", "digits")["variables"], images)
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        M.init_fastnet_whitening(variables, images[..., 0])


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="resnet18_gn"):  # lists the valid names
        M.get_model("resnet50", 10)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            M.get_model("mlp", bad)
    with pytest.raises(ValueError, match="unknown option"):
        M.get_model("mlp", 10, width=4)
    with pytest.raises(ValueError, match="activation"):
        M.get_model("cnn", 10, activation="swish2")
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        M.get_model("resnet18", 10, width=0)
    with pytest.raises(ValueError, match="num_groups"):
        M.get_model("resnet18_gn", 10, width=8)  # default 32 groups do not divide 8 channels
    with pytest.raises(ValueError, match="pool"):
        M.get_model("fastnet", 10, pool="min")
    with pytest.raises(ValueError, match="bn_momentum"):
        M.get_model("fastnet", 10, bn_momentum=1.0)
    model, variables = _built("mlp", "digits")["model"], _built("mlp", "digits")["variables"]
    with pytest.raises(ValueError, match="input_shape"):
        M.init_variables(model, jax.random.key(0), (8, 8))
    with pytest.raises(ValueError, match="label_smoothing"):
        M.make_loss_fn(model, label_smoothing=1.0)
    with pytest.raises(ValueError, match="ONE example"):
        M.make_loss_fn(model)(variables, jnp.zeros((2, 8, 8, 1)), jnp.int32(0))
    with pytest.raises(ValueError, match="batch"):
        model.apply(variables, jnp.zeros((8, 8, 1)))
