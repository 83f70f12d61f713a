"""Optimizers on optax: SGD (momentum, weight decay, schedules), Adam, RMSprop, SAM, and SAM-GNR.

RMSprop is PyTorch's default ``torch.optim.RMSprop`` (α = 0.99, ε = 1e-8 added after the square
root, no momentum, not centred): v ← αv + (1 − α)g², θ ← θ − η·g/(√v + ε). Schedules: cosine,
linear, one-cycle, constant, and "step" (PyTorch's MultiStepLR: the rate is multiplied by
``step_factor`` at each fraction of the run in ``step_fractions``).

SAM (Foret et al., 2021) minimizes max_{‖ε‖≤ρ} L(θ + ε): each step takes the gradient at
θ + ε̂ with ε̂ = ρ·g/‖g‖ (g = ∇L(θ)); adaptive SAM (Kwon et al., 2021) uses
ε̂ = ρ·|θ|²⊙g/‖|θ|⊙g‖. The base update (SGD with momentum here) then follows with that gradient.

SAM-GNR is the SAM paper's privacy mitigation, gradient regularization joined with noise
injection, on top of SAM: the update gradient is

    G = ∇L(θ + ε̂) + λ·∇_θ‖∇L(θ)‖₂ + σ_n·ξ,   ∇_θ‖∇L(θ)‖₂ = H(θ)·g/‖g‖,   ξ ~ N(0, I),

(:func:`gnr_gradient`), with H(θ)·u an exact Hessian-vector product (forward over reverse) or
its finite difference (∇L(θ + ρu) − ∇L(θ))/ρ, which is SAM's own perturbed gradient and so free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcurv._validate import check_float, check_positive, check_positive_int
from jaxcurv._names import GNR_HVPS, OPTIMIZERS


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerConfig",
    "make_schedule",
    "make_optimizer",
    "sam_gradient",
    "gnr_gradient",
    "GNR_HVPS",
]

SCHEDULES = ("cosine", "constant", "linear", "onecycle", "step")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """What to optimize with. ``name``: "sgd" | "adam" | "rmsprop" (PyTorch's defaults, see the
    module docstring) | "sam" (SGD base + SAM perturbation) | "sam-gnr" (SAM + gradient-norm
    penalty + gradient noise, :func:`gnr_gradient`).

    ``learning_rate`` is the peak rate; ``schedule``: "cosine" (to 0), "linear" (to 0),
    "onecycle" (linear warm-up over ``warmup_fraction`` then linear decay to 0), "constant" or
    "step" (the rate times ``step_factor`` from step round(f·total_steps) on, for each f in
    ``step_fractions``: (0.6, 0.8) with 0.1 over 20 epochs is PyTorch's MultiStepLR with
    milestones at epochs 12 and 16, gamma 0.1);
    ``weight_decay`` is L2 on kernels only (not biases or norm scales); ``rho`` is SAM's radius.

    SAM-GNR only (ignored by the others): ``gnr_penalty`` λ ≥ 0 weighs the penalty λ‖∇L(θ)‖₂;
    ``gnr_noise`` σ_n ≥ 0 is the standard deviation of the Gaussian noise added to every
    coordinate of the update gradient (absolute, in the units of ∇L); ``gnr_hvp``: "exact"
    (forward-over-reverse H·u) or "finite_difference" (SAM's perturbed gradient reused, no extra
    cost; needs ``adaptive=False``).

    Defaults λ = 0.1, σ_n = 0.01: mild strengths, for the regime of the paper's mitigation (a
    small accuracy cost, reported < 0.8 %). λ: to first order SAM is itself this penalty with
    λ = ρ (∇L(θ + ρu) ≈ g + ρHu), so λ = 0.1 = 2ρ at the default ρ = 0.05 triples SAM's pressure
    on ‖∇L‖; λ ≳ 10ρ costs accuracy (digits, ``experiments.privacy_utility_frontier --config
    small``: λ = 0.6 / 0.8 with σ_n = λ/10 cost 1.1 % / 8.1 % test accuracy; 0.1 costs none).
    σ_n (absolute, per coordinate): DP-SGD adds N(0, (σC/B)²) per coordinate to its mean
    gradient, so σ_n = 0.01 is DP-SGD's noise at σC/B = 0.01 (σ = 0.64 at C = 1, B = 64) without
    clipping (no DP guarantee); on the 38,282-parameter digits CNN the noise vector has norm
    σ_n·√#params ≈ 2. Being absolute, σ_n should be scaled by √(#params_ref/#params) for a model
    of another size.
    """

    name: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.0
    step_fractions: tuple[float, ...] = (0.6, 0.8)
    step_factor: float = 0.1
    rho: float = 0.05
    adaptive: bool = False
    gnr_penalty: float = 0.1
    gnr_noise: float = 0.01
    gnr_hvp: str = "exact"

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        check_positive("learning_rate", self.learning_rate)
        check_float("momentum", self.momentum, minimum=0.0, maximum=1.0, allow_maximum=False)
        check_float("weight_decay", self.weight_decay, minimum=0.0)
        check_float("warmup_fraction", self.warmup_fraction, minimum=0.0, maximum=1.0,
                    allow_maximum=False)
        fractions = tuple(self.step_fractions)
        if (not fractions or any(not 0.0 < f < 1.0 for f in fractions)
                or any(b <= a for a, b in zip(fractions, fractions[1:]))):
            raise ValueError(f"step_fractions must be increasing fractions of the run in (0, 1), "
                             f"e.g. (0.6, 0.8); got {self.step_fractions!r}")
        check_float("step_factor", self.step_factor, minimum=0.0, maximum=1.0,
                    allow_minimum=False)
        check_positive("rho", self.rho)
        check_float("gnr_penalty", self.gnr_penalty, minimum=0.0)
        check_float("gnr_noise", self.gnr_noise, minimum=0.0)
        if self.gnr_hvp not in GNR_HVPS:
            raise ValueError(f"unknown gnr_hvp {self.gnr_hvp!r}; choose one of {GNR_HVPS}")
        if self.name == "sam-gnr" and self.gnr_hvp == "finite_difference" and self.adaptive:
            raise ValueError("gnr_hvp='finite_difference' reuses SAM's perturbed gradient, which "
                             "adaptive SAM moves off the gradient direction: use gnr_hvp='exact' "
                             "or adaptive=False")

    @property
    def is_sam(self) -> bool:
        """True for the optimizers that take SAM's perturbed gradient ("sam", "sam-gnr")."""
        return self.name in ("sam", "sam-gnr")

    @property
    def is_gnr(self) -> bool:
        """True for SAM-GNR (SAM + gradient-norm penalty + gradient noise)."""
        return self.name == "sam-gnr"


def make_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (0 … total_steps)."""
    check_positive_int("total_steps", total_steps)
    lr = config.learning_rate
    warmup = int(round(config.warmup_fraction * total_steps))
    if config.schedule == "step":
        boundaries: dict[int, float] = {}
        for f in config.step_fractions:  # steps counted from the end of the warm-up
            at = max(1, int(round(f * total_steps)) - warmup)
            boundaries[at] = boundaries.get(at, 1.0) * config.step_factor
        decay = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    else:  # linear and onecycle both decay linearly to zero after the warm-up
        decay = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    if config.schedule == "onecycle" and warmup == 0:
        warmup = max(1, total_steps // 5)
        decay = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _kernel_mask(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation for ``config`` (SAM's and SAM-GNR's base is SGD; their gradient
    is made by :func:`sam_gradient` / :func:`gnr_gradient` in the training step)."""
    schedule = make_schedule(config, total_steps)
    parts = []
    if config.weight_decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(config.weight_decay), _kernel_mask))
    if config.name == "adam":
        parts.append(optax.adam(schedule))
    elif config.name == "rmsprop":  # torch.optim.RMSprop's defaults: eps after the square root
        parts.append(optax.rmsprop(schedule, decay=0.99, eps=1e-8, eps_in_sqrt=False))
    else:
        parts.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    return optax.chain(*parts)


def _sam_point(params: Any, grads: Any, *, rho: float, adaptive: bool) -> Any:
    """θ + ε̂: ε̂ = ρ g/‖g‖, or adaptive ρ θ²⊙g/‖|θ|⊙g‖."""
    if adaptive:
        scaled = jax.tree.map(lambda p, g: jnp.abs(p) * g, params, grads)
        norm = optax.tree_utils.tree_norm(scaled)
        eps = jax.tree.map(lambda p, g: rho * p * p * g / (norm + 1e-12), params, grads)
    else:
        norm = optax.tree_utils.tree_norm(grads)
        eps = jax.tree.map(lambda g: rho * g / (norm + 1e-12), grads)
    return jax.tree.map(lambda p, e: p + e.astype(p.dtype), params, eps)


def sam_gradient(grad_fn: Callable[[Any], tuple[Any, Any]], params: Any, *, rho: float,
                 adaptive: bool = False) -> tuple[Any, Any, Any]:
    """SAM's gradient ∇L(θ + ε̂), ε̂ = ρ g/‖g‖ (adaptive: ρ θ²⊙g/‖|θ|⊙g‖), g = ∇L(θ).

    ``grad_fn(params) -> (grads, aux)``; returns (sharpness-aware grads, aux at θ, aux at θ+ε̂).
    """
    grads, aux = grad_fn(params)
    sam_grads, aux_perturbed = grad_fn(_sam_point(params, grads, rho=rho, adaptive=adaptive))
    return sam_grads, aux, aux_perturbed


def _tree_noise(key: jax.Array, like: Any, scale: float) -> Any:
    """scale·N(0, I) shaped like ``like``: leaf j (jax.tree.leaves order) draws
    jax.random.normal(fold_in(key, j), leaf.shape, leaf.dtype)."""
    leaves, treedef = jax.tree.flatten(like)
    noise = [scale * jax.random.normal(jax.random.fold_in(key, j), jnp.shape(x), jnp.result_type(x))
             for j, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, noise)


def gnr_gradient(grad_fn: Callable[[Any], tuple[Any, Any]], params: Any, key: jax.Array, *,
                 rho: float, penalty: float, noise: float, adaptive: bool = False,
                 hvp: str = "exact") -> tuple[Any, Any, Any]:
    """SAM-GNR's update gradient G = ∇L(θ + ε̂) + λ·H(θ)g/‖g‖ + σ_n·ξ (λ = ``penalty``,
    σ_n = ``noise``, ε̂ as in :func:`sam_gradient`, g = ∇L(θ), ξ ~ N(0, I): leaf j of the
    parameter tree (jax.tree.leaves order) draws jax.random.normal(fold_in(key, j))).

    H(θ)g/‖g‖ = ∇_θ‖∇L(θ)‖₂ is the gradient of the penalty: ``hvp="exact"`` by forward-over-
    reverse differentiation (jax.linearize of the gradient: exact to float precision, about one
    more gradient of cost); ``"finite_difference"`` by (∇L(θ + ρu) − ∇L(θ))/ρ, u = g/‖g‖: SAM's
    own perturbed gradient, so no extra cost (G = (1 + λ/ρ)∇L(θ + ε̂) − (λ/ρ)g + σ_n·ξ; only
    with ``adaptive=False``). λ and σ_n are static: a term whose strength is 0 is not computed,
    so λ = σ_n = 0 gives SAM's gradient exactly. ``grad_fn(params) -> (grads, aux)``; returns
    (G, aux at θ, aux at θ + ε̂).
    """
    if hvp not in GNR_HVPS:
        raise ValueError(f"unknown hvp {hvp!r}; choose one of {GNR_HVPS}")
    penalty = check_float("penalty (a Python number: it is static)", penalty, minimum=0.0)
    noise = check_float("noise (a Python number: it is static)", noise, minimum=0.0)
    if hvp == "finite_difference" and adaptive:
        raise ValueError("hvp='finite_difference' needs adaptive=False (it reuses SAM's "
                         "perturbed gradient along g/‖g‖)")
    if penalty > 0 and hvp == "exact":
        grads, lin, aux = jax.linearize(grad_fn, params, has_aux=True)
    else:
        grads, aux = grad_fn(params)
    update, aux_perturbed = grad_fn(_sam_point(params, grads, rho=rho, adaptive=adaptive))
    if penalty > 0:
        if hvp == "exact":
            norm = optax.tree_utils.tree_norm(grads)
            hu = lin(jax.tree.map(lambda g: g / (norm + 1e-12), grads))
        else:
            hu = jax.tree.map(lambda gs, g: (gs - g) / rho, update, grads)
        update = jax.tree.map(lambda u, h: u + penalty * h.astype(u.dtype), update, hu)
    if noise > 0:
        update = jax.tree.map(jnp.add, update, _tree_noise(key, update, noise))
    return update, aux, aux_perturbed
