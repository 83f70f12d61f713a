"""Optimizers on optax: SGD (momentum, weight decay, schedules), Adam, and SAM.

SAM (Foret et al., 2021) minimizes max_{‖ε‖≤ρ} L(θ + ε): each step takes the gradient at
θ + ε̂ with ε̂ = ρ·g/‖g‖ (g = ∇L(θ)); adaptive SAM (Kwon et al., 2021) uses
ε̂ = ρ·|θ|²⊙g/‖|θ|⊙g‖. The base update (SGD with momentum here) then follows with that gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcurv._validate import check_float, check_positive, check_positive_int

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerConfig",
    "make_schedule",
    "make_optimizer",
    "sam_gradient",
]

OPTIMIZERS = ("sgd", "adam", "sam")
SCHEDULES = ("cosine", "constant", "linear", "onecycle")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """What to optimize with. ``name``: "sgd" | "adam" | "sam" (SGD base + SAM perturbation).

    ``learning_rate`` is the peak rate; ``schedule``: "cosine" (to 0), "linear" (to 0),
    "onecycle" (linear warm-up over ``warmup_fraction`` then linear decay to 0) or "constant";
    ``weight_decay`` is L2 on kernels only (not biases or norm scales); ``rho`` is SAM's radius.
    """

    name: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.0
    rho: float = 0.05
    adaptive: bool = False

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
        check_positive("rho", self.rho)

    @property
    def is_sam(self) -> bool:
        return self.name == "sam"


def make_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (0 … total_steps)."""
    check_positive_int("total_steps", total_steps)
    lr = config.learning_rate
    warmup = int(round(config.warmup_fraction * total_steps))
    if config.schedule == "constant":
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
    """The optax transformation for ``config`` (SAM's base is SGD; its perturbation is applied to
    the gradient by :func:`sam_gradient` in the training step)."""
    schedule = make_schedule(config, total_steps)
    parts = []
    if config.weight_decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(config.weight_decay), _kernel_mask))
    if config.name == "adam":
        parts.append(optax.adam(schedule))
    else:
        parts.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    return optax.chain(*parts)


def sam_gradient(grad_fn: Callable[[Any], tuple[Any, Any]], params: Any, *, rho: float,
                 adaptive: bool = False) -> tuple[Any, Any, Any]:
    """SAM's gradient ∇L(θ + ε̂), ε̂ = ρ g/‖g‖ (adaptive: ρ θ²⊙g/‖|θ|⊙g‖), g = ∇L(θ).

    ``grad_fn(params) -> (grads, aux)``; returns (sharpness-aware grads, aux at θ, aux at θ+ε̂).
    """
    grads, aux = grad_fn(params)
    if adaptive:
        scaled = jax.tree.map(lambda p, g: jnp.abs(p) * g, params, grads)
        norm = optax.tree_utils.tree_norm(scaled)
        eps = jax.tree.map(lambda p, g: rho * p * p * g / (norm + 1e-12), params, grads)
    else:
        norm = optax.tree_utils.tree_norm(grads)
        eps = jax.tree.map(lambda g: rho * g / (norm + 1e-12), grads)
    perturbed = jax.tree.map(lambda p, e: p + e.astype(p.dtype), params, eps)
    sam_grads, aux_perturbed = grad_fn(perturbed)
    return sam_grads, aux, aux_perturbed
