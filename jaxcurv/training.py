"""Pure training steps for one model, written so that ``jax.vmap`` lifts them to K members.

``make_train_step`` returns ``step(state, images, labels, weights, key) -> (state, metrics)``:
one optimizer update on a fixed-shape batch (B, H, W, C) where weights (B,) are 1 for real
examples and 0 for padding. ``make_epoch_fn`` scans that step over an epoch's index plan
(S, B) into a device-resident dataset, so an epoch is one compiled call with no host syncs.
The host side (``epoch_plan``, ``poisson_epoch_plan``) draws each member's data order from
``(seed, epoch, member)`` alone, which makes runs resumable and chunking-invariant; the DP-SGD
batches come from the one Poisson planner, ``jaxcurv.privacy.plan.poisson_plan``, and the DP
settings of a step are a ``jaxcurv.privacy.DPPlan``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcurv import models
from jaxcurv._tree import cast_floats
from jaxcurv.model_interface import Model, as_model, example_input
from jaxcurv._validate import check_int, check_positive_int
from jaxcurv.optim import OptimizerConfig, gnr_gradient, sam_gradient
from jaxcurv.privacy.dpsgd import dense_dp_gradient, dense_norms_apply, dp_gradient
from jaxcurv.privacy.plan import DPPlan, poisson_plan

__all__ = [
    "TrainState",
    "init_state",
    "variables_of",
    "make_train_step",
    "make_step_at",
    "make_epoch_fn",
    "epoch_plan",
    "poisson_epoch_plan",
]


class TrainState(NamedTuple):
    """params (what the optimizer trains), model_state (mutable state such as linen's
    {'batch_stats': …}; {} for stateless models), optax state, and the count of updates made."""

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array


def init_state(model: Any, optimizer: optax.GradientTransformation, key: jax.Array,
               input_shape: tuple[int, ...]) -> TrainState:
    """Initial state of one model (any kind ``as_model`` accepts) for examples of shape
    (H, W, C)."""
    model = as_model(model)
    params, model_state = model.split(model.init(key, example_input(tuple(input_shape))))
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))


def variables_of(model: Model, state: TrainState) -> Any:
    """The model's variables (params merged with its state) held by a TrainState."""
    return model.merge(state.params, state.model_state)


def make_train_step(model: Any, optimizer: optax.GradientTransformation, *,
                    config: OptimizerConfig | None = None, dp: DPPlan | None = None,
                    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                    label_smoothing: float = 0.0, compute_dtype=None,
                    dp_microbatch_size: int | None = None,
                    dp_dense_norms: bool | None = None) -> Callable:
    """``step(state, images, labels, weights, key) -> (state, metrics)`` for one model (any kind
    ``as_model`` accepts).

    Non-private: loss Σ wᵢℓᵢ / Σ wᵢ (BatchNorm statistics over wᵢ > 0 only), SAM when
    ``config.name == "sam"``, SAM-GNR (jaxcurv.optim.gnr_gradient, its noise key the second
    half of ``jax.random.split(key)``, the step key being fold_in(member key, step) in
    :func:`make_step_at`) when ``config.name == "sam-gnr"``; a batch with Σw = 0 leaves the
    state unchanged. DP-SGD (``dp``, a DPPlan):
    per-example gradients clipped to C, summed over wᵢ > 0, plus N(0, σ²C²) noise, divided by the
    expected batch size B (jaxcurv.privacy.dpsgd); every step updates, empty batches included.
    Models whose parameters all sit in dense layers (``models.MLP``) get their per-example norms
    and clipped sum without per-example gradients (``dense_dp_gradient``: one forward and one
    backward pass, the same result up to float rounding; ``dp_dense_norms=False`` turns it off,
    None uses it where it applies);
    otherwise per-example gradients are formed by vmap(grad), ``dp_microbatch_size`` rows at a
    time if given (``lax.scan``; the same result up to summation order, see ``dp_gradient``).
    ``augment(key, image) -> image`` is applied per example; ``compute_dtype`` (e.g. bfloat16)
    runs the model in that dtype with float32 parameters and gradients.
    """
    model = as_model(model)
    batch_loss = models.make_batch_loss_fn(model, label_smoothing=label_smoothing)
    use_sam = config is not None and config.is_sam
    use_gnr = use_sam and config.is_gnr
    if dp is not None and use_sam:
        raise ValueError("DP-SGD with SAM is not supported: choose optimizer 'sgd' or 'adam' with dp")

    def loss_in_dtype(params, model_state, x, y, w):
        loss, (logits, stats) = batch_loss(cast_floats(params, compute_dtype), model_state,
                                           cast_floats(x, compute_dtype), y, w)
        return loss, (logits, cast_floats(stats, jnp.float32))

    def batch_apply(params, x):  # DP-SGD: stateless models only
        return model.apply(model.merge(cast_floats(params, compute_dtype), {}),
                           cast_floats(x, compute_dtype), train=True)

    def loss_of_logits(logits, y):
        return models.cross_entropy(logits, y, label_smoothing=label_smoothing)

    def per_example_loss(params, x, y):  # DP-SGD: stateless models only
        logits = model.apply(model.merge(cast_floats(params, compute_dtype), {}),
                             cast_floats(x, compute_dtype)[None], train=True)[0]
        return models.cross_entropy(logits, y, label_smoothing=label_smoothing)

    def step(state: TrainState, images, labels, weights, key):
        k_aug, k_noise = jax.random.split(key)
        if augment is not None:
            keys = jax.random.split(k_aug, images.shape[0])
            images = jax.vmap(augment)(keys, images)
        weights = weights.astype(jnp.float32)
        count = weights.sum()
        metrics = {"count": count}
        if dp is not None:
            settings = dict(l2_clip=dp.l2_clip, noise_multiplier=dp.noise_multiplier,
                            expected_batch_size=dp.expected_batch_size)
            if dp_dense_norms is not False and dense_norms_apply(batch_apply, state.params,
                                                                 images):
                grads, info = dense_dp_gradient(batch_apply, loss_of_logits, state.params, images,
                                                labels, weights > 0, k_noise, **settings)
            else:
                grads, info = dp_gradient(per_example_loss, state.params, images, labels,
                                          weights > 0, k_noise, microbatch_size=dp_microbatch_size,
                                          **settings)
            model_state = state.model_state
            metrics.update({f"dp_{k}": v for k, v in info._asdict().items()})
        else:
            grad_fn = lambda p: _swap(jax.value_and_grad(loss_in_dtype, has_aux=True)(
                p, state.model_state, images, labels, weights))
            if use_gnr:
                grads, (loss, (logits, model_state)), _ = gnr_gradient(
                    grad_fn, state.params, k_noise, rho=config.rho, adaptive=config.adaptive,
                    penalty=config.gnr_penalty, noise=config.gnr_noise, hvp=config.gnr_hvp)
            elif use_sam:
                grads, (loss, (logits, model_state)), _ = sam_gradient(
                    grad_fn, state.params, rho=config.rho, adaptive=config.adaptive)
            else:
                grads, (loss, (logits, model_state)) = grad_fn(state.params)
            correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
            metrics.update(loss=loss, accuracy=(weights * correct).sum() / jnp.maximum(count, 1.0))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params, model_state, opt_state, state.step + 1)
        if dp is None:  # an all-padding batch (a member with fewer examples) is a no-op
            new_state = jax.tree.map(lambda new, old: jnp.where(count > 0, new, old),
                                     new_state, state)
        return new_state, metrics

    return step


def _swap(value_and_grads):
    (loss, aux), grads = value_and_grads
    return grads, (loss, aux)


def make_step_at(step: Callable) -> Callable:
    """``step_at(state, images, labels, idx (S,B), weights (S,B), key, s) -> (state, metrics)``:
    step s of an epoch plan, gathering its batch from the device-resident ``images`` (N,H,W,C)
    and ``labels`` (N,) with key fold_in(key, s). ``s`` may be traced (no recompilation)."""

    def step_at(state, images, labels, idx, weights, key, s):
        i, w = idx[s], weights[s]
        return step(state, images[i], labels[i], w, jax.random.fold_in(key, s))

    return step_at


def make_epoch_fn(step: Callable) -> Callable:
    """``epoch(state, images, labels, idx (S,B), weights (S,B), key) -> (state, metrics (S,))``:
    a lax.scan of :func:`make_step_at` over the S steps of the plan (one compiled call per epoch).

    On CPU prefer a host loop over a jitted ``make_step_at`` (dispatched without waiting): XLA:CPU
    runs convolutions inside loop bodies many times slower (jax#12868; docs/design.md, Training
    and ensembles).
    """
    step_at = make_step_at(step)

    def epoch(state, images, labels, idx, weights, key):
        body = lambda st, s: step_at(st, images, labels, idx, weights, key, s)
        return jax.lax.scan(body, state, jnp.arange(idx.shape[0]))

    return epoch


def _member_rng(seed: int, epoch: int, member: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(member)])


def epoch_plan(subsets: Sequence[np.ndarray], batch_size: int, *, steps: int, seed: int,
               epoch: int, member_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled fixed-shape batches for each member: (idx (K,S,B) int32, weights (K,S,B) f32).

    Member k visits each index of ``subsets[k]`` once per epoch in a random order drawn from
    (seed, epoch, member_ids[k]); the last partial batch is padded with other examples of the
    member's subset at weight 0, and steps beyond the member's ⌈nₖ/B⌉ are all-zero batches.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    steps = check_positive_int("steps", steps)
    check_int("epoch", epoch, minimum=0)
    k = len(subsets)
    idx = np.zeros((k, steps, batch_size), np.int32)
    weights = np.zeros((k, steps, batch_size), np.float32)
    for row, (subset, member) in enumerate(zip(subsets, member_ids)):
        rng = _member_rng(seed, epoch, member)
        order = rng.permutation(subset)
        n = len(order)
        if n > steps * batch_size:
            raise ValueError(f"member {member} has {n} examples, more than {steps}×{batch_size}")
        filler = rng.choice(subset, size=steps * batch_size - n, replace=True)
        idx[row] = np.concatenate([order, filler]).reshape(steps, batch_size)
        weights[row].reshape(-1)[:n] = 1.0
    return idx, weights


def poisson_epoch_plan(subsets: Sequence[np.ndarray], sampling_rates: Sequence[float], *,
                       steps: int, max_batch_size: int, seed: int, epoch: int,
                       member_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled batches for DP-SGD: each example of member k's subset joins each step
    independently with probability qₖ; padded to ``max_batch_size`` (overflow is an error).
    Returns (idx (K,S,B) int32 global indices, weights (K,S,B) float32 0/1).

    ``jaxcurv.privacy.plan.poisson_plan`` with the mask as float weights: the same batches as
    ``jaxcurv.privacy.ensemble_poisson_batches`` for the same seed, epoch and member ids.
    """
    idx, mask = poisson_plan(subsets, sampling_rates, steps, max_batch_size=max_batch_size,
                             seed=seed, epoch=epoch, member_ids=member_ids)
    return idx, mask.astype(np.float32)
