"""The host-side plan of a private run: DP-SGD settings, their resolution, and Poisson batches.

A :class:`DPConfig` holds what the user chooses (clip norm C, σ or a target ε, δ, accountant).
:meth:`DPConfig.resolve` turns it into a :class:`DPPlan` for a run of T steps over N examples at
expected batch size B: σ (calibrated when a target ε was given), sampling rate q = B/N, the
padded batch size B_max and the ε spent. The training step reads C, σ and B from the plan
(``DPPlan(l2_clip, noise_multiplier, expected_batch_size)`` alone, with the run fields None).

Batches: :func:`poisson_plan` is the one Poisson planner. Member k of an ensemble includes each
example of its own subset independently with probability qₖ at every step (batch size ~
Binomial(nₖ, qₖ), then a uniform subset of that size, sorted), padded to B_max and masked; its
numpy generator is derived from ``(seed, epoch, member id)`` alone, so plans are reproducible,
resumable per epoch and the same whether members are planned together or in chunks.
:func:`poisson_batches`, :func:`ensemble_poisson_batches`, :class:`PoissonSampler` (the batches of
your own training loop) and ``training.poisson_epoch_plan`` are views of it, so every entry point
gives the same batches for the same seed.

This module imports no accounting library: ``resolve`` loads ``jaxcurv.privacy.accounting``
when it calibrates σ or computes ε.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from scipy import stats

from jaxcurv._names import ACCOUNTANTS
from jaxcurv._tree import leading_size
from jaxcurv._validate import (
    check_int,
    check_masks,
    check_positive,
    check_positive_int,
    check_probability,
)

__all__ = [
    "ACCOUNTANTS",
    "DPConfig",
    "DPPlan",
    "max_batch_size",
    "poisson_plan",
    "poisson_batches",
    "ensemble_poisson_batches",
    "PoissonSampler",
]


Seed = int | np.random.SeedSequence | np.random.Generator


# --------------------------------------------------------------------------- configuration ---


class DPPlan(NamedTuple):
    """A resolved DP-SGD run; the device step reads ``l2_clip`` (C), ``noise_multiplier`` (σ) and
    ``expected_batch_size`` (B, the divisor of the noisy sum).

    The other fields record the run: sampling rate q, steps T, padded batch size B_max, ε spent at
    ``delta`` under ``accountant``. They are None for a plan built directly for a step, e.g.
    ``DPPlan(l2_clip=1.0, noise_multiplier=1.1, expected_batch_size=256)``.
    """

    l2_clip: float
    noise_multiplier: float
    expected_batch_size: float
    sampling_rate: float | None = None
    steps: int | None = None
    max_batch_size: int | None = None
    epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: give exactly one of ``noise_multiplier`` (σ) or ``target_epsilon``.

    ``l2_clip`` is C; ``delta`` the target δ; ``accountant`` one of ``"rdp"``, ``"pld"``,
    ``"rdp_classic"``; ``overflow_probability`` bounds the chance that any Poisson batch exceeds the
    padded size over the whole run. The expected batch size is the trainer's batch size; call
    :meth:`resolve` with the run's sizes to get σ, q, the padded size and the ε spent, or
    :meth:`resolve_noise_multiplier` for σ alone.
    """

    l2_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    overflow_probability: float = 1e-9

    def __post_init__(self):
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "DPConfig needs exactly one of noise_multiplier or target_epsilon, got "
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}"
            )
        check_positive("l2_clip", self.l2_clip)
        if self.noise_multiplier is not None:
            check_positive("noise_multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            check_positive("target_epsilon", self.target_epsilon)
        check_probability("delta", self.delta, open_low=True, open_high=True)
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}; use one of {ACCOUNTANTS}")
        check_probability("overflow_probability", self.overflow_probability, open_low=True,
                          open_high=True)

    def resolve_noise_multiplier(self, sampling_rate: float, steps: int) -> float:
        """σ: the given ``noise_multiplier``, or the smallest σ meeting ``target_epsilon`` at (q, T, δ)."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        from jaxcurv.privacy.accounting import calibrate_noise_multiplier

        return calibrate_noise_multiplier(float(self.target_epsilon), sampling_rate, steps,
                                          float(self.delta), accountant=self.accountant)

    def resolve(self, *, num_examples: int, batch_size: int, steps: int,
                num_members: int = 1) -> DPPlan:
        """σ (calibrated if ``target_epsilon`` was given), q = B/N, padded size and ε spent.

        ``num_members``: ensemble members sharing the padded size (the overflow union bound covers
        all members' steps). Each member's ε is ``plan.epsilon`` (its own N examples, q, T steps).
        """
        n = check_positive_int("num_examples", num_examples)
        b = check_positive_int("batch_size", batch_size)
        t = check_positive_int("steps", steps)
        k = check_positive_int("num_members", num_members)
        if b > n:
            raise ValueError(f"batch_size {b} exceeds num_examples {n}; lower the batch size")
        from jaxcurv.privacy.accounting import epsilon

        q = b / n
        sigma = self.resolve_noise_multiplier(q, t)
        spent = epsilon(sigma, q, t, float(self.delta), accountant=self.accountant)
        b_max = max_batch_size(n, q, t * k, overflow_probability=float(self.overflow_probability))
        return DPPlan(l2_clip=float(self.l2_clip), noise_multiplier=sigma, expected_batch_size=b,
                      sampling_rate=q, steps=t, max_batch_size=b_max, epsilon=spent,
                      delta=float(self.delta), accountant=self.accountant)


# --------------------------------------------------------------------------- padded size ---


def max_batch_size(num_examples: int, sampling_rate: float, steps: int, *,
                   overflow_probability: float = 1e-9) -> int:
    """Smallest B_max with P[any of ``steps`` Binomial(N, q) batch sizes > B_max] ≤ overflow_probability.

    Union bound: per step P[Binomial(N, q) > B_max] ≤ overflow_probability / steps (binomial
    quantile from ``scipy.stats.binom.isf``). For an ensemble pass steps = members × steps.
    """
    n = check_positive_int("num_examples", num_examples)
    t = check_positive_int("steps", steps)
    q = check_probability("sampling_rate", sampling_rate, open_low=True)
    p = check_probability("overflow_probability", overflow_probability, open_low=True,
                          open_high=True)
    per_step = p / t
    b = int(stats.binom.isf(per_step, n, q))
    # guard the discrete quantile: smallest b with sf(b) <= per_step
    while b > 0 and stats.binom.sf(b - 1, n, q) <= per_step:
        b -= 1
    while b < n and stats.binom.sf(b, n, q) > per_step:
        b += 1
    return max(1, min(b, n))


_union_bound_size = max_batch_size  # for signatures whose max_batch_size argument shadows it


# --------------------------------------------------------------------------- the planner ---


def _root_seed(seed) -> np.random.SeedSequence:
    """The root SeedSequence of a plan: an int (or int sequence) seeds it, a SeedSequence is it, a
    Generator gives it four fresh 63-bit draws as entropy (advancing the generator)."""
    if seed is None or isinstance(seed, bool):
        raise ValueError("pass an explicit seed (int, np.random.SeedSequence or np.random.Generator)")
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(seed.integers(2**63, size=4, dtype=np.int64).tolist())
    try:
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"seed must be a non-negative int, np.random.SeedSequence or "
                         f"np.random.Generator, got {seed!r}: {err}") from None


def _member_rng(root: np.random.SeedSequence, epoch: int, member: int) -> np.random.Generator:
    """Generator of one (epoch, member): the root's child with spawn key (…, epoch, member)."""
    child = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, epoch, member),
                                   pool_size=root.pool_size)
    return np.random.default_rng(child)


def _member_batches(rng: np.random.Generator, n: int, q: float, steps: int, b_max: int,
                    member: int) -> tuple[np.ndarray, np.ndarray]:
    """Local indices int32 (T, B_max) into range(n) and mask bool (T, B_max) of one member."""
    sizes = rng.binomial(n, q, size=steps)
    if np.any(sizes > b_max):
        step = int(np.argmax(sizes > b_max))
        raise ValueError(
            f"Poisson batch overflow (member {member}): step {step} drew {int(sizes[step])} "
            f"examples > max_batch_size {b_max} (N = {n}, q = {q}, {steps} steps); use "
            "max_batch_size(...) with a smaller overflow_probability, or a larger max_batch_size"
        )
    indices = np.zeros((steps, b_max), dtype=np.int32)
    mask = np.arange(b_max)[None, :] < sizes[:, None]
    for i, size in enumerate(sizes):
        if size:
            indices[i, :size] = np.sort(rng.choice(n, size=int(size), replace=False))
    return indices, mask


def _check_rates(sampling_rates, num_members: int) -> list[float]:
    if np.ndim(sampling_rates) == 0:
        sampling_rates = [sampling_rates] * num_members
    rates = list(sampling_rates)
    if len(rates) != num_members:
        raise ValueError(f"sampling_rates must be one rate or one per member ({num_members}), "
                         f"got {len(rates)}")
    return [check_probability("sampling_rate", q, open_low=True) for q in rates]


def poisson_plan(subsets: Sequence[np.ndarray], sampling_rates, steps: int, *,
                 max_batch_size: int, seed: Seed, epoch: int = 0,
                 member_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Poisson batches of K members: (indices int32 (K, T, B_max), mask bool (K, T, B_max)).

    Member k samples from ``subsets[k]`` (indices into the full dataset) with rate
    ``sampling_rates[k]`` (one float for all members); padded slots hold index 0 with mask False;
    a batch larger than ``max_batch_size`` raises ValueError (never truncates). Member k's numpy
    generator is the child of ``seed`` with spawn key ``(epoch, member_ids[k])``
    (``member_ids`` defaults to 0..K−1): one member's batches do not depend on the others.
    """
    t = check_positive_int("steps", steps)
    b_max = check_positive_int("max_batch_size", max_batch_size)
    e = check_int("epoch", epoch, minimum=0)
    subsets = [np.asarray(s) for s in subsets]
    ids = (list(range(len(subsets))) if member_ids is None
           else [check_int("member_ids", i, minimum=0) for i in member_ids])
    if len(ids) != len(subsets) or not subsets:
        raise ValueError(f"need one member id per subset and at least one subset, got "
                         f"{len(ids)} ids for {len(subsets)} subsets")
    rates = _check_rates(sampling_rates, len(subsets))
    root = _root_seed(seed)
    idx = np.zeros((len(subsets), t, b_max), np.int32)
    mask = np.zeros((len(subsets), t, b_max), bool)
    for row, (subset, q, member) in enumerate(zip(subsets, rates, ids)):
        if subset.ndim != 1 or subset.size == 0:
            raise ValueError(f"member {member}'s subset must be a non-empty 1-d index array, "
                             f"got shape {subset.shape}")
        local, mask[row] = _member_batches(_member_rng(root, e, member), subset.size, q, t,
                                           b_max, member)
        idx[row] = np.where(mask[row], subset[local], 0)
    return idx, mask


def poisson_batches(num_examples: int, sampling_rate: float, steps: int, *,
                    max_batch_size: int, seed: Seed) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled batches padded to a fixed size: (indices int32 (T, B_max), mask bool (T, B_max)).

    One member training on all N examples: member 0 of :func:`poisson_plan` at epoch 0, so for the
    same seed it equals row 0 of ``ensemble_poisson_batches(np.ones((1, N), bool), q, T, ...)``.
    """
    n = check_positive_int("num_examples", num_examples)
    idx, mask = poisson_plan([np.arange(n)], sampling_rate, steps,
                             max_batch_size=max_batch_size, seed=seed)
    return idx[0], mask[0]


def ensemble_poisson_batches(member_masks, sampling_rate, steps: int, *, max_batch_size: int,
                             seed: Seed, epoch: int = 0,
                             member_ids: Sequence[int] | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-member Poisson batches from each member's own subset: indices int32 (K, T, B_max) into
    the full dataset and mask bool (K, T, B_max).

    ``member_masks``: bool (K, N), member k trains on ``flatnonzero(member_masks[k])``;
    ``sampling_rate``: one q or K of them. :func:`poisson_plan` on those subsets.
    """
    masks = check_masks("member_masks", member_masks)
    return poisson_plan([np.flatnonzero(m) for m in masks], sampling_rate, steps,
                        max_batch_size=max_batch_size, seed=seed, epoch=epoch,
                        member_ids=member_ids)


class PoissonSampler:
    """Poisson-sampled batches of one fixed shape with their masks, for your own DP-SGD loop.

    ``data``: a pytree of arrays with a common leading axis N (e.g. ``(x, y)``); each of ``steps``
    batches includes every example independently with probability q = B/N (B =
    ``expected_batch_size``), padded to ``max_batch_size`` rows (default: :func:`max_batch_size`
    with P[any batch overflows] ≤ ``overflow_probability`` by the union bound over the steps;
    ``overflow_probability`` is not used when ``max_batch_size`` is given).
    Iterating yields ``(batch, mask)``: ``batch`` is ``data`` indexed at the step's rows (same
    structure, leaves (B_max, ...); padded rows repeat example 0), ``mask`` bool (B_max,) is True
    for the real rows. All ``steps`` index plans are drawn at construction from ``seed`` by
    :func:`poisson_batches` (the planner the ensemble trainer uses), so a batch that would exceed
    the padded size raises ValueError here, before any training, never truncating.

    The sampler is one pass over the run: after ``steps`` batches it is exhausted, because a
    second pass would repeat the same subsamples, which DP accounting of Poisson sampling does not
    cover. ``start``: resume at that step (same seed ⇒ the same remaining batches). ``position``
    is the number of batches drawn so far (from ``start``); ``indices`` int32 (T, B_max) and
    ``masks`` bool (T, B_max) are the whole plan (read-only).
    """

    def __init__(self, data, *, expected_batch_size: int, steps: int, seed: Seed,
                 overflow_probability: float = 1e-9, max_batch_size: int | None = None,
                 start: int = 0):
        n = leading_size(data, "data")
        if n == 0:
            raise ValueError("data has no examples (N = 0)")
        b = check_positive_int("expected_batch_size", expected_batch_size)
        if b > n:
            raise ValueError(f"expected_batch_size {b} exceeds the {n} examples; lower it")
        t = check_positive_int("steps", steps)
        self.start = check_int("start", start, minimum=0, maximum=t)
        self.num_examples, self.expected_batch_size, self.steps = n, b, t
        self.sampling_rate = b / n
        if max_batch_size is None:
            max_batch_size = _union_bound_size(n, self.sampling_rate, t,
                                               overflow_probability=overflow_probability)
        self.max_batch_size = check_positive_int("max_batch_size", max_batch_size)
        self.indices, self.masks = poisson_batches(n, self.sampling_rate, t,
                                                   max_batch_size=self.max_batch_size, seed=seed)
        for a in (self.indices, self.masks):
            a.flags.writeable = False
        self._data = data
        self.position = self.start

    def __iter__(self) -> "PoissonSampler":
        return self

    def __next__(self) -> tuple:
        if self.position >= self.steps:
            raise StopIteration
        idx, mask = self.indices[self.position], self.masks[self.position]
        self.position += 1
        return jax.tree_util.tree_map(lambda a: a[idx], self._data), mask

    def __repr__(self) -> str:
        return (f"PoissonSampler(N={self.num_examples}, expected_batch_size="
                f"{self.expected_batch_size}, q={self.sampling_rate:.6g}, steps={self.steps}, "
                f"max_batch_size={self.max_batch_size}, position={self.position})")
