"""Random keys of a run: one stage id each, one derivation, shared by the audit, the experiments
and the benchmarks.

Every random stage of a run draws from ``fold_in(PRNGKey(seed), stage)``; within a stage, member
``m`` (the global member id) draws from ``fold_in(stage key, m)``. The ids are fixed: changing one
changes every result that depends on it.
"""

from __future__ import annotations

import enum

import jax
import numpy as np

__all__ = ["Stage", "run_key", "key_data"]


class Stage(enum.IntEnum):
    """fold_in ids of the run key, one per random stage."""

    TRAIN = 1
    CURVATURE = 2
    ZERO_ORDER = 3
    PROXIES = 4
    REFERENCE_CURVATURE = 5
    REFERENCE_SCORE = 6


def run_key(seed: int, stage: Stage) -> jax.Array:
    """The key of one random stage of a run: fold_in(PRNGKey(seed), stage)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), int(stage))


def key_data(key: jax.Array) -> np.ndarray:
    """The raw bits of a PRNG key (for cache keys)."""
    return np.asarray(jax.random.key_data(key))
