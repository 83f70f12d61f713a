"""Image classifiers (flax.linen) and the loss functions the curvature code differentiates.

Every model maps a batch x (B, H, W, C), float in [0, 1], any H, W, C, to float32 logits
(B, num_classes): ``model.apply(variables, x)`` is a pure function of (variables, x) in inference
mode (BatchNorm uses its running averages). Layers infer their compute dtype from inputs and
params (flax ``dtype=None``), so casting both x and the variables to bfloat16 runs the model in
bf16; the logits are cast to at least float32 at the end (bf16 → float32; a float64 run under
x64 stays float64), so losses are computed in float32 or wider.

Models (``get_model(name, num_classes, **kwargs)``):

- ``"mlp"``: flatten → [Dense(hidden) → act] × depth → Dense(C).
- ``"cnn"``: Conv(w, 3×3) → act → Conv(2w, 3×3, stride 2) → act → average-pool to ≈4×4 →
  flatten → Dense(hidden) → act → Dense(C). Small enough to train 32 copies on digits on a CPU.
- ``"resnet18"``: CIFAR ResNet18 (3×3 stem, no max-pool, BasicBlocks [2, 2, 2, 2] with widths
  w·(1, 2, 4, 8), BatchNorm, ReLU, global average pool, Dense); 11,173,962 params at w=64, C=10.
- ``"resnet18_gn"``: the same with GroupNorm (no cross-example statistics, for DP-SGD).
- ``"fastnet"``: airbench94-style net (2×2 whitening conv stem, three [conv → max-pool → BN → GELU →
  conv → BN → GELU] blocks of widths w·(1, 4, 4), global max-pool, bias-free linear head × 1/9).

Activation and input curvature: for a piecewise-linear network (ReLU, max-pool) the logits f(x)
are linear inside each activation region, so the input Hessian of the loss is exactly the
Gauss–Newton term ∇²ₓℓ = Jᵀ(diag p − p pᵀ)J (J = ∂f/∂x, p = softmax(f)): positive semi-definite,
all of it coming from the softmax/log-loss. Smooth activations (GELU, softplus, ELU, SiLU) add
Σ_c (p_c − y_c) ∇²ₓ f_c, the curvature of the network itself. ``resnet18`` keeps ReLU as in the
papers; ``mlp``, ``cnn`` and ``fastnet`` default to GELU. Every model takes ``activation=``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcurv.model_interface import as_model, example_input
from jaxcurv._validate import (
    as_float64_array,
    check_float,
    check_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "MODEL_NAMES",
    "ACTIVATIONS",
    "MLP",
    "CNN",
    "ResNet18",
    "FastNet",
    "get_model",
    "init_variables",
    "uses_batch_norm",
    "count_params",
    "cross_entropy",
    "make_loss_fn",
    "make_batch_loss_fn",
    "apply_train",
    "init_fastnet_whitening",
]

MODEL_NAMES = ("mlp", "cnn", "resnet18", "resnet18_gn", "fastnet")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
    "elu": nn.elu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
}

Variables = Mapping[str, Any]


def _at_least_f32(x: jax.Array) -> jax.Array:
    """Cast bf16/f16 logits to float32; float32 stays, float64 (x64 runs) stays float64."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_batch(x: jax.Array) -> None:
    """Static (trace-time) shape check: models take a batch (B, H, W, C)."""
    if x.ndim != 4:
        raise ValueError(
            f"models take a batch of images (B, H, W, C); got shape {tuple(x.shape)}. "
            "Add a leading batch axis (x[None]) for one example."
        )


def _variance_scaling(scale: float, mode: str, distribution: str) -> Callable:
    """Kernel init with variance scale/fan (fans as in jax.nn.initializers.variance_scaling with
    in_axis=-2, out_axis=-1), drawn as a flat vector and reshaped: the same iid distribution, but
    threefry on a 1-D shape compiles in ~0.2 s on CPU where a 4-D conv-kernel shape took 3–13 s
    (jax 0.10, jax_threefry_partitionable=True, measured on 2 cores)."""

    def init(key, shape, dtype=jnp.float32):
        receptive = math.prod(shape[:-2])
        fan = {"fan_in": shape[-2] * receptive, "fan_out": shape[-1] * receptive}[mode]
        std = math.sqrt(scale / fan)
        n = math.prod(shape)
        if distribution == "uniform":
            flat = jax.random.uniform(key, (n,), dtype, -math.sqrt(3.0) * std, math.sqrt(3.0) * std)
        elif distribution == "normal":
            flat = std * jax.random.normal(key, (n,), dtype)
        else:  # truncated to ±2σ, rescaled to keep the variance (the constant jax uses)
            flat = std / 0.87962566103423978 * jax.random.truncated_normal(key, -2.0, 2.0, (n,), dtype)
        return flat.reshape(shape)

    return init


# flax's default (lecun normal): truncated normal, variance 1/fan_in.
_lecun_init = _variance_scaling(1.0, "fan_in", "truncated_normal")
# torch's default conv/linear init: U(±1/√fan_in), i.e. variance 1/(3·fan_in) (airbench uses it).
_torch_default_init = _variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torchvision ResNet init: kaiming normal, fan_out, gain² = 2.
_resnet_conv_init = _variance_scaling(2.0, "fan_out", "normal")


class MLP(nn.Module):
    """flatten → [Dense(hidden) → act] × depth → Dense(num_classes); (B,H,W,C) → (B,C) float32."""

    num_classes: int
    hidden: int = 256
    depth: int = 2
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
        del train, mask  # no normalization layers
        _check_batch(x)
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for _ in range(self.depth):
            x = act(nn.Dense(self.hidden, kernel_init=_lecun_init)(x))
        return _at_least_f32(nn.Dense(self.num_classes, kernel_init=_lecun_init)(x))


class CNN(nn.Module):
    """Conv(w) → act → Conv(2w, stride 2) → act → avg-pool to ≈4×4 → Dense(hidden) → act → Dense(C)

    The average pool uses window = stride = max(1, size // 4) per spatial axis, so an 8×8 input
    (4×4 after the strided conv) is not pooled and a 32×32 input (16×16) is pooled 4×4 → 4×4.
    """

    num_classes: int
    width: int = 16
    hidden: int = 64
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
        del train, mask  # no normalization layers
        _check_batch(x)
        act = ACTIVATIONS[self.activation]
        conv = functools.partial(nn.Conv, padding="SAME", kernel_init=_lecun_init)
        x = act(conv(self.width, (3, 3))(x))
        x = act(conv(2 * self.width, (3, 3), strides=(2, 2))(x))
        window = (max(1, x.shape[1] // 4), max(1, x.shape[2] // 4))
        if window != (1, 1):
            x = nn.avg_pool(x, window, strides=window, padding="VALID")
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(self.hidden, kernel_init=_lecun_init)(x))
        return _at_least_f32(nn.Dense(self.num_classes, kernel_init=_lecun_init)(x))


def _norm_layer(norm: str, train: bool, num_groups: int, mask: jax.Array | None) -> Callable:
    """A normalization layer applied to NHWC features: BatchNorm (running stats unless train)."""
    if norm == "batch":
        layer = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
        return lambda y: layer(y, mask=mask if train else None)
    layer = nn.GroupNorm(num_groups=num_groups, epsilon=1e-5)
    return layer


class _BasicBlock(nn.Module):
    """ResNet BasicBlock: act(norm(conv3(act(norm(conv3(x))))) + shortcut(x))."""

    features: int
    strides: int
    norm: str
    num_groups: int
    activation: str

    @nn.compact
    def __call__(self, x, train: bool, mask):
        act = ACTIVATIONS[self.activation]
        conv = lambda f, k, s, p: nn.Conv(  # noqa: E731
            f, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False,
            kernel_init=_resnet_conv_init,
        )
        y = conv(self.features, 3, self.strides, 1)(x)
        y = act(_norm_layer(self.norm, train, self.num_groups, mask)(y))
        y = conv(self.features, 3, 1, 1)(y)
        y = _norm_layer(self.norm, train, self.num_groups, mask)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.strides, 0)(x)
            x = _norm_layer(self.norm, train, self.num_groups, mask)(x)
        return act(y + x)


class ResNet18(nn.Module):
    """CIFAR ResNet18: conv3×3(w) → norm → act → 4 stages × 2 BasicBlocks (w, 2w, 4w, 8w; strides
    1, 2, 2, 2) → global average pool → Dense(C). ``norm`` is "batch" (running averages unless
    ``train``; pass ``mutable=["batch_stats"]`` when training) or "group" (``num_groups`` groups).
    ``mask`` (B,) selects the examples whose batch statistics count when ``train`` (padding)."""

    num_classes: int
    width: int = 64
    norm: str = "batch"
    num_groups: int = 32
    activation: str = "relu"
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
        _check_batch(x)
        act = ACTIVATIONS[self.activation]
        bmask = None if mask is None else jnp.reshape(mask, (-1, 1, 1, 1)).astype(bool)
        x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=_resnet_conv_init)(x)
        x = act(_norm_layer(self.norm, train, self.num_groups, bmask)(x))
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(self.width * 2**stage, strides, self.norm, self.num_groups,
                                self.activation)(x, train, bmask)
        x = jnp.mean(x, axis=(1, 2))
        return _at_least_f32(nn.Dense(self.num_classes, kernel_init=_torch_default_init)(x))


def _dirac_init(base: Callable) -> Callable:
    """Conv init whose first min(C_in, C_out) output channels are the identity (airbench's dirac_):
    kernel[kh//2, kw//2, j, j] = 1 and 0 elsewhere for those channels; the rest from ``base``."""

    def init(key, shape, dtype=jnp.float32):
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        diag = jnp.arange(n)
        eye = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2, diag, diag].set(1)
        return base(key, shape, dtype).at[..., :n].set(eye)

    return init


def _pool_2(x: jax.Array, kind: str) -> jax.Array:
    """2×2 max- or average-pool (floor mode, like torch's MaxPool2d(2)); a size-1 axis is kept."""
    window = (min(2, x.shape[1]), min(2, x.shape[2]))
    pool = nn.max_pool if kind == "max" else nn.avg_pool
    return pool(x, window, strides=window, padding="VALID")


class FastNet(nn.Module):
    """airbench94-style CIFAR net: whitening conv (k×k, 2·C·k² channels, VALID) → act →
    3 × [conv3×3 → max-pool 2 → BN → act → conv3×3 → BN → act] (widths w, 4w, 4w) →
    global max-pool → Dense(C, no bias) × ``scale``.

    As in airbench: convs are bias-free with identity ("dirac") init of the first channels, BN has
    no learned scale, BN momentum 0.6 (running ← 0.6·running + 0.4·batch), head scale 1/9. On 32×32
    the spatial sizes are 31 → 15 → 7 → 3 → 1, exactly airbench's. The stem kernel is meant to be
    set from data by ``init_fastnet_whitening`` and frozen (its bias trained for a few epochs).
    ``pool="avg"`` replaces every max-pool by an average pool: max-pooling is piecewise linear, so
    it adds kinks along which finite-difference curvature estimates jump (docs/design.md,
    Curvature).
    """

    num_classes: int
    width: int = 64
    whiten_kernel: int = 2
    scale: float = 1.0 / 9.0
    activation: str = "gelu"
    bn_momentum: float = 0.6
    pool: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
        _check_batch(x)
        act = ACTIVATIONS[self.activation]
        bmask = None if mask is None or not train else jnp.reshape(mask, (-1, 1, 1, 1)).astype(bool)
        k = self.whiten_kernel
        x = nn.Conv(2 * x.shape[-1] * k * k, (k, k), padding="VALID", use_bias=True,
                    kernel_init=_torch_default_init, name="whiten")(x)
        x = act(x)
        conv_init = _dirac_init(_torch_default_init)

        def bn(y):
            layer = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=1e-5, use_scale=False)
            return layer(y, mask=bmask)

        for features in (self.width, 4 * self.width, 4 * self.width):
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, kernel_init=conv_init)(x)
            x = act(bn(_pool_2(x, self.pool)))
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, kernel_init=conv_init)(x)
            x = act(bn(x))
        x = jnp.max(x, axis=(1, 2)) if self.pool == "max" else jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, use_bias=False, kernel_init=_torch_default_init)(x)
        return _at_least_f32(x * self.scale)


# ----------------------------------------------------------------------------------------------
# construction and validation

_KWARGS: dict[str, dict[str, type]] = {
    "mlp": {"hidden": int, "depth": int, "activation": str},
    "cnn": {"width": int, "hidden": int, "activation": str},
    "resnet18": {"width": int, "activation": str},
    "resnet18_gn": {"width": int, "num_groups": int, "activation": str},
    "fastnet": {"width": int, "whiten_kernel": int, "scale": float, "activation": str,
                "bn_momentum": float, "pool": str},
}


def _check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    allowed = _KWARGS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown option(s) {unknown}; it accepts {sorted(allowed)}."
        )
    for key, value in kwargs.items():
        kind = allowed[key]
        if kind is int:
            check_positive_int(f"model {name!r}: {key}", value)
        if kind is float:
            check_float(f"model {name!r}: {key}", value)
        if key == "activation" and value not in ACTIVATIONS:
            raise ValueError(
                f"model {name!r}: unknown activation {value!r}; choose one of {sorted(ACTIVATIONS)}."
            )
    if name == "fastnet" and kwargs.get("pool", "max") not in ("max", "avg"):
        raise ValueError(f"fastnet: pool must be 'max' or 'avg', got {kwargs['pool']!r}.")
    if name == "fastnet":
        check_float("fastnet: bn_momentum", kwargs.get("bn_momentum", 0.6), minimum=0.0,
                    maximum=1.0, allow_maximum=False)
    if name == "resnet18_gn":
        width, groups = int(kwargs.get("width", 64)), int(kwargs.get("num_groups", 32))
        if width % groups:
            raise ValueError(
                f"resnet18_gn: width={width} is not divisible by num_groups={groups}; every stage "
                "width (w, 2w, 4w, 8w) must split into equal groups. Pick num_groups dividing width."
            )


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a classifier by name (see ``MODEL_NAMES``); logits (B, num_classes) in float32.

    Options: mlp(hidden=256, depth=2, activation="gelu"); cnn(width=16, hidden=64,
    activation="gelu"); resnet18(width=64, activation="relu"); resnet18_gn(width=64, num_groups=32,
    activation="relu"); fastnet(width=64, whiten_kernel=2, scale=1/9, activation="gelu",
    bn_momentum=0.6, pool="max"|"avg"). ``width`` is the first stage's channel count; later
    stages scale with it.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}.")
    num_classes = check_int("num_classes", num_classes, minimum=2)
    _check_kwargs(name, kwargs)
    if name == "mlp":
        return MLP(num_classes, **kwargs)
    if name == "cnn":
        return CNN(num_classes, **kwargs)
    if name == "resnet18":
        return ResNet18(num_classes, norm="batch", **kwargs)
    if name == "resnet18_gn":
        return ResNet18(num_classes, norm="group", **kwargs)
    return FastNet(num_classes, **kwargs)


def init_variables(model: Any, key: jax.Array, input_shape: tuple[int, ...]) -> Any:
    """Initialize ``model`` (any kind jaxcurv.model_interface.as_model accepts) for one example's
    shape (H, W, C): for the linen models here {'params': …[, 'batch_stats': …]}.

    Compiled as one XLA program per call (op by op, compiling the random initializers on a CPU
    costs ≈0.25 s per parameter tensor); nothing is cached between calls."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise ValueError(
            f"input_shape must be one example's (H, W, C) of positive ints, got {input_shape!r}."
        )
    return jax.jit(as_model(model).init)(key, example_input(shape))


def uses_batch_norm(variables: Variables) -> bool:
    """True when ``variables`` hold non-empty 'batch_stats' (the model has BatchNorm layers)."""
    return "batch_stats" in variables and len(jax.tree_util.tree_leaves(variables["batch_stats"])) > 0


def count_params(variables: Variables) -> int:
    """Number of scalars in variables['params'] (all leaves if there is no 'params' collection).

    Works on arrays and on ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape`` output)."""
    tree = variables["params"] if "params" in variables else variables
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------------------------------------
# losses and training helpers


def _check_label_smoothing(label_smoothing: float) -> None:
    check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0, allow_maximum=False)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy in float32: logits (..., C), integer labels (...) → (...).

    With smoothing α the target is (1 − α)·onehot(y) + α/C."""
    logits = _at_least_f32(logits)
    if label_smoothing == 0.0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_loss_fn(model: Any, *, label_smoothing: float = 0.0) -> Callable:
    """``loss_fn(variables, x, y) -> scalar`` for ONE example x (H, W, C) with integer label y:
    ℓ = CE(apply(variables, x[None])[0], y), in inference mode (BatchNorm running stats, so the
    loss of one example never depends on other examples), float32. ``model``: any kind
    jaxcurv.model_interface.as_model accepts."""
    _check_label_smoothing(label_smoothing)
    model = as_model(model)

    def loss_fn(variables: Variables, x: jax.Array, y: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(
                f"loss_fn takes ONE example (H, W, C); got shape {tuple(x.shape)}. vmap it over a batch."
            )
        logits = model.apply(variables, x[None])[0]
        return cross_entropy(logits, y, label_smoothing=label_smoothing)

    return loss_fn


def apply_train(model: Any, variables: Any, x: jax.Array, *, mask: jax.Array | None = None
                ) -> tuple[jax.Array, Any]:
    """Training-mode forward pass: x (B, H, W, C) → (logits (B, C) float32, new state).

    The state is what ``as_model(model).split(variables)[1]`` holds: for linen models the
    collections besides params ({'batch_stats': …} with BatchNorm, else {}). BatchNorm normalizes
    with the statistics of the examples where ``mask`` (B,) is true (all when None) and returns
    updated running averages."""
    return as_model(model).apply_train(variables, x, mask)


def make_batch_loss_fn(model: Any, *, label_smoothing: float = 0.0) -> Callable:
    """``fn(params, state, x, y, weights) -> (loss, (logits, new_state))`` for training.

    loss = Σᵢ wᵢ ℓᵢ / max(Σᵢ wᵢ, 1) over a batch x (B, H, W, C), labels y (B,), weights (B,) ≥ 0
    (0 for padding; BatchNorm statistics use only examples with wᵢ > 0). ``params, state`` are
    ``as_model(model).split(variables)`` (state {} for stateless models). Differentiate in
    ``params`` with ``jax.value_and_grad(fn, has_aux=True)``."""
    _check_label_smoothing(label_smoothing)
    model = as_model(model)

    def fn(params, state, x, y, weights):
        logits, new_state = model.apply_train(model.merge(params, state), x, weights > 0)
        losses = cross_entropy(logits, y, label_smoothing=label_smoothing)
        weights = weights.astype(losses.dtype)
        loss = jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0)
        return loss, (logits, new_state)

    return fn


def init_fastnet_whitening(variables: Variables, images: Any, *, eps: float = 5e-4) -> dict[str, Any]:
    """Set FastNet's stem ("whiten") conv from data, as airbench does: returns new variables.

    With k×k patches p of ``images`` (N, H, W, C) (float64 on the host), mean m and covariance
    Σ = V diag(λ) Vᵀ (λ descending), the kernel's output channels are [V/√(λ+eps), −V/√(λ+eps)] and
    the bias is −kernelᵀm, so the stem computes the whitened, centred patch Wᵀ(p − m). Airbench then
    freezes the kernel during training (and trains the bias only for the first epochs)."""
    try:
        stem = variables["params"]["whiten"]
    except (KeyError, TypeError):
        raise ValueError(
            "variables have no params['whiten'] conv: pass FastNet variables (get_model('fastnet', …))."
        ) from None
    kh, kw, cin, cout = stem["kernel"].shape
    shape = np.shape(images)
    if len(shape) != 4 or shape[-1] != cin or shape[1] < kh or shape[2] < kw:
        raise ValueError(f"images must be (N, H, W, {cin}) with H ≥ {kh}, W ≥ {kw}; got {shape}.")
    images = as_float64_array("images", images)
    check_positive("eps", eps)
    d = kh * kw * cin
    if cout != 2 * d:
        raise ValueError(f"whiten conv has {cout} output channels; expected 2·k²·C = {2 * d}.")
    total, outer, count = np.zeros(d), np.zeros((d, d)), 0
    for start in range(0, len(images), 256):  # bounded memory: 256 images of patches at a time
        windows = np.lib.stride_tricks.sliding_window_view(images[start:start + 256], (kh, kw), axis=(1, 2))
        patches = np.moveaxis(windows, 3, -1).reshape(-1, d)  # N·h·w rows in the kernel's (kh, kw, C) order
        total, outer, count = total + patches.sum(axis=0), outer + patches.T @ patches, count + len(patches)
    mean = total / count
    eigvals, eigvecs = np.linalg.eigh(outer / count - np.outer(mean, mean))
    order = np.argsort(eigvals)[::-1]
    scaled = eigvecs[:, order] / np.sqrt(np.maximum(eigvals[order], 0.0) + eps)
    weights = np.concatenate([scaled, -scaled], axis=1)  # (d, 2d)
    dtype = stem["kernel"].dtype
    new_stem = dict(stem)
    new_stem["kernel"] = jnp.asarray(weights.reshape(kh, kw, cin, cout), dtype)
    new_stem["bias"] = jnp.asarray(-(mean @ weights), stem["bias"].dtype)
    new_vars = dict(variables)
    new_vars["params"] = {**variables["params"], "whiten": new_stem}
    return new_vars
