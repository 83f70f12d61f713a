"""Shared host-side inputs of the attacks: finite float64 statistics, validated shadow arrays
(target (N, A), shadows (K, N, A), IN/OUT masks (K, N, 1)) and per-example group moments."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcurv._validate import as_bool_array, as_float64_array

_FINITE_HINT = (
    "Check the model outputs (e.g. compute losses/logit confidences in float64) and drop or "
    "repair those examples before attacking."
)


def _finite(name: str, value: Any) -> np.ndarray:
    """``value`` as a finite float64 array (``as_float64_array``), with the attack-side hint."""
    try:
        return as_float64_array(name, value)
    except ValueError as err:
        raise ValueError(f"{err}. {_FINITE_HINT}") from None


def _prepare_shadow_inputs(
    target_stat: Any,
    shadow_stats: Any,
    shadow_in: Any,
    shadow_mask: Any = None,
    names: tuple[str, str, str, str] = ("target_stat", "shadow_stats", "shadow_in", "shadow_mask"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Validate and reshape to t (N, A), s (K, N, A), IN and OUT masks (K, N, 1) (entries with
    shadow_mask False belong to neither group); flag whether the A axis was absent."""
    t = np.asarray(target_stat)
    s = np.asarray(shadow_stats)
    m = np.asarray(shadow_in)
    tn, sn, mn, vn = names
    if t.ndim not in (1, 2):
        raise ValueError(f"{tn} must have shape (N,) or (N, A); got {t.shape}.")
    if s.ndim != t.ndim + 1 or s.shape[1:] != t.shape:
        raise ValueError(
            f"{sn} must have shape (K,) + {tn}.shape = (K, {', '.join(map(str, t.shape))}); "
            f"got {s.shape}."
        )
    if s.shape[0] < 1:
        raise ValueError(f"{sn} needs at least one shadow/reference model (K >= 1).")
    if m.shape != s.shape[:2]:
        raise ValueError(f"{mn} must have shape (K, N) = {s.shape[:2]}; got {m.shape}.")
    if shadow_mask is None:
        valid = np.ones(m.shape, dtype=bool)
    else:
        valid = np.asarray(shadow_mask)
        if valid.shape != m.shape:
            raise ValueError(f"{vn} must have shape (K, N) = {m.shape}; got {valid.shape}.")
        valid = as_bool_array(vn, valid)
    t = _finite(tn, t)
    s = _finite(sn, s)
    m = as_bool_array(mn, m)
    no_aug = t.ndim == 1
    if no_aug:
        t, s = t[:, None], s[..., None]
    return t, s, (m & valid)[..., None], (~m & valid)[..., None], no_aug


def _group_moments(s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example count n (N, 1), mean (N, A) (NaN where n = 0) and Σ(s − mean)² (N, A) of the
    statistics s (K, N, A) where the group mask m (K, N, 1) holds (sums over the K shadows as
    0/1-weighted einsums: no masked copies of s)."""
    w = m[..., 0].astype(s.dtype)                                      # (K, N)
    n = w.sum(axis=0)[:, None]                                         # (N, 1)
    total = np.einsum("kn,kna->na", w, s, optimize=True)
    mean = np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)
    dev = s - np.where(n > 0, mean, 0.0)[None]
    ss = np.einsum("kn,kna,kna->na", w, dev, dev, optimize=True)
    return n, mean, ss
