"""Leave-one-model-out evaluation: each ensemble member in turn is the target of an attack.

For an ensemble of K models trained on random subsets (membership ``in_mask`` bool (K, N)), row k
of the scores (K, N) attacks model k with the other K − 1 models as its shadow (reference) models;
its membership labels are ``in_mask[k]``. ``leave_one_model_out`` runs any shadow attack,
``rmia_leave_one_model_out`` runs ``rmia``. Per-example group sizes are balanced by default, and
the warnings of the K runs are merged into one per distinct message.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcurv._validate import as_bool_array
from jaxcurv.mia.rmia import rmia

__all__ = ["leave_one_model_out", "rmia_leave_one_model_out"]


def _collect_warnings(caught: list, k: int, store: dict[str, list[int]]) -> None:
    """Record in ``store`` (message → target models) the warnings caught while model k was the
    target."""
    for w in caught:
        store.setdefault(str(w.message), []).append(k)


def _reemit(store: dict[str, list[int]], num_models: int, caller: str) -> None:
    """Warn once per distinct message, naming the target models that raised it."""
    for msg, ks in store.items():
        warnings.warn(
            f"{caller}: target model(s) {ks[:8]}{'…' if len(ks) > 8 else ''} "
            f"({len(ks)} of {num_models}): {msg}",
            stacklevel=3,
        )


def _balancing_mask(m_others: np.ndarray, m_target: np.ndarray) -> np.ndarray:
    """Shadow mask (K-1, N) that drops, per example, the first shadow model (in model order) of
    the group opposite to the target's membership, so both groups lose one model."""
    opp = m_others != m_target[None]
    first = np.argmax(opp, axis=0)
    cols = np.flatnonzero(opp.any(axis=0))
    keep = np.ones(m_others.shape, dtype=bool)
    keep[first[cols], cols] = False
    return keep


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a parameter called ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False


def leave_one_model_out(
    attack: Callable[..., Any], stats: Any, in_mask: Any, *, balance: bool = True, **kwargs: Any
) -> np.ndarray:
    """Scores (K, N): row k = ``attack(stats[k], stats[others], in_mask[others], **kwargs)``.

    Each ensemble member is the target in turn; the other K − 1 members are its shadow models.
    The membership labels of row k are ``in_mask[k]`` (evaluate with ``roc_metrics(scores,
    in_mask)``). Works for every attack with the (target_stat, shadow_stats, shadow_in) signature:
    ``lira``, ``curvature_lr``, ``curvature_nll``, ``calibrated_loss``, ``attack_r``.
    ``balance=True``: for each example, one shadow of the group the target is *not* in is also
    left out (passed as ``shadow_mask``), so the IN/OUT shadow counts no longer depend on the
    target's membership — otherwise the target's own group is one model smaller, which biases
    plug-in likelihood tests (null AUROC ≈ 0.489 for online LiRA with K = 16; docs/design.md,
    "Membership inference").
    Balanced, an example IN k of the K members keeps k − 1 IN and K − 1 − k OUT shadows whatever
    the target's membership, so a group is empty exactly when k ≤ 1 or k ≥ K − 1 — for members
    and non-members alike; the likelihood tests then impute that group (``lira``) instead of
    switching to a one-sided test, so every pair is scored by the same test on one scale (with
    few members k carries membership, and one-sided fallbacks ranked members below chance:
    AUROC 0.37 at K = 3). Warnings raised for individual targets are merged into one per
    distinct message.
    stats (K, N) | (K, N, A); in_mask bool (K, N).
    """
    s = np.asarray(stats)
    m = as_bool_array("in_mask", in_mask)
    if s.ndim not in (2, 3) or m.shape != s.shape[:2]:
        raise ValueError(
            f"stats must be (K, N) or (K, N, A) and in_mask (K, N); got {s.shape} and {m.shape}."
        )
    num_models = s.shape[0]
    if num_models < 2:
        raise ValueError("leave_one_model_out needs K >= 2 models (one target, >= 1 shadow).")
    if balance and not _accepts(attack, "shadow_mask"):
        raise ValueError(
            "balance=True needs an attack with a shadow_mask keyword (all jaxcurv.mia shadow "
            "attacks have one); pass balance=False for other attacks."
        )
    out = np.empty(m.shape)
    store: dict[str, list[int]] = {}
    for k in range(num_models):
        others = np.arange(num_models) != k
        kw = dict(kwargs)
        if balance:
            kw["shadow_mask"] = _balancing_mask(m[others], m[k])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[k] = attack(s[k], s[others], m[others], **kw)
        _collect_warnings(caught, k, store)
    _reemit(store, num_models, "leave_one_model_out")
    return out


def rmia_leave_one_model_out(
    probs: Any, in_mask: Any, population_probs: Any, *, balance: bool = True, **kwargs: Any
) -> np.ndarray:
    """RMIA with each model in turn as the target and the others as reference models → (K, N).

    probs (K, N[, A]): every model's true-label probability on the targets; in_mask bool (K, N);
    population_probs (K, Z[, A]) on population samples that no model trained on (e.g. a test
    split). ``balance`` as in ``leave_one_model_out`` (via ``reference_mask``). kwargs go to
    ``rmia`` (online, offline_a, population_a, gamma, trim, population_reference_in (K, Z)).
    With a population that no model trained on, each target's p(z) uses the linear model with a
    fitted to that target's reference models (``rmia``), so the scores do not collapse to 0 or 1
    when the models fit their data weakly (DP-SGD, few epochs).
    """
    p = np.asarray(probs)
    m = as_bool_array("in_mask", in_mask)
    pop = np.asarray(population_probs)
    if p.ndim not in (2, 3) or m.shape != p.shape[:2] or pop.shape[0] != p.shape[0]:
        raise ValueError(
            "probs must be (K, N[, A]), in_mask (K, N) and population_probs (K, Z[, A]); got "
            f"{p.shape}, {m.shape}, {pop.shape}."
        )
    num_models = p.shape[0]
    if num_models < 2:
        raise ValueError("rmia_leave_one_model_out needs K >= 2 models.")
    pop_in = kwargs.pop("population_reference_in", None)
    pop_in = None if pop_in is None else as_bool_array("population_reference_in", pop_in)
    out = np.empty(m.shape)
    store: dict[str, list[int]] = {}
    for k in range(num_models):
        others = np.arange(num_models) != k
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[k] = rmia(
                p[k], p[others], pop[k], pop[others], reference_in=m[others],
                population_reference_in=None if pop_in is None else pop_in[others],
                reference_mask=_balancing_mask(m[others], m[k]) if balance else None, **kwargs,
            )
        _collect_warnings(caught, k, store)
    _reemit(store, num_models, "rmia_leave_one_model_out")
    return out
