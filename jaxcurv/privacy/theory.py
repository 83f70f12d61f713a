"""The privacy–memorization–curvature bounds of Ravikumar et al. and their empirical fits.

Reference: D. Ravikumar, E. Soufleri, A. Hashemi, K. Roy, "Unveiling Privacy, Memorization, and
Input Curvature Links", ICML 2024 (arXiv:2402.18726). Notation: m training examples, loss bounded
0 ≤ ℓ ≤ L, ε-DP training algorithm, Curv = tr(∇²ₓ ℓ).

- Lemma 5.2 (privacy ⇒ stability): an ε-DP algorithm is L(1 − e^{−ε}) error-stable
  (improving Wang et al. 2016's L(e^ε − 1)).
- Thm 5.3 (privacy ⇒ low curvature): E_{z,φ}[Curv_φ(z, S)] ≤ L(m + 1)(1 − e^{−ε}) + c₂
  with c₂ = (4m − 1)γ + 2(m − 1)Δ + (ρ/6)E‖α‖³ (generalization, model bias, Hessian-Lipschitz terms).
- Thm 5.4 (privacy ⇒ less memorization): mem(A, S, i) ≤ 1 − e^{−ε} for every i.
- Eq. 15 (fit of Thm 5.1 with L ∝ m_sub^{-1/2}): |mem| ≤ p₁ · √m_sub · E[Curv] + c₁, p₁, c₁ > 0.
- Fig. 4 model of the loss bound: L(ε) = a + b e^{−cε}.
- Eq. 16 (Thm 5.3 with that loss bound): E[Curv] ≤ (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂.

All bound functions broadcast over numpy arrays and return float64 arrays (Python floats for
scalar inputs). Fits use scipy.optimize (``curve_fit``/``lsq_linear``) and report R² = 1 − SS_res/SS_tot.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import optimize

from jaxcurv._validate import as_float_array

__all__ = [
    "memorization_bound",
    "stability_bound",
    "curvature_bound",
    "loss_bound_model",
    "curvature_bound_model",
    "MemorizationCurvatureFit",
    "LossBoundFit",
    "CurvaturePrivacyFit",
    "fit_memorization_curvature",
    "fit_loss_bound",
    "fit_curvature_privacy",
]


def _as_float(x):
    """A Python float for a scalar result, else the float64 array."""
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def _check_epsilon(epsilon) -> np.ndarray:
    eps = as_float_array("epsilon", epsilon, finite=True)
    if np.any(eps < 0):
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    return eps


def _check_positive(name: str, value) -> np.ndarray:
    """Elementwise finite and > 0 (``check_positive`` of _validate is for scalars)."""
    arr = as_float_array(name, value, finite=True)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return arr


def memorization_bound(epsilon):
    """Thm 5.4: mem(A, S, i) ≤ 1 − e^{−ε} for an ε-DP algorithm (elementwise, via −expm1(−ε))."""
    return _as_float(-np.expm1(-_check_epsilon(epsilon)))


def stability_bound(epsilon, *, loss_bound: float = 1.0):
    """Lemma 5.2: an ε-DP algorithm with 0 ≤ ℓ ≤ L is β-error-stable with β = L(1 − e^{−ε})."""
    L = _check_positive("loss_bound", loss_bound)
    return _as_float(L * -np.expm1(-_check_epsilon(epsilon)))


def curvature_bound(epsilon, *, loss_bound: float, num_examples: int, c2: float = 0.0):
    """Thm 5.3: E_{z,φ}[Curv] ≤ L(m + 1)(1 − e^{−ε}) + c₂ (m = ``num_examples``, L = ``loss_bound``)."""
    L = _check_positive("loss_bound", loss_bound)
    m = _check_positive("num_examples", num_examples)
    c2 = as_float_array("c2", c2, finite=True)
    return _as_float(L * (m + 1.0) * -np.expm1(-_check_epsilon(epsilon)) + c2)


def loss_bound_model(epsilon, a: float, b: float, c: float):
    """Fig. 4's model of the converged loss bound: L(ε) = a + b e^{−cε}."""
    eps = np.asarray(epsilon, dtype=np.float64)
    return _as_float(a + b * np.exp(-c * eps))


def curvature_bound_model(epsilon, a: float, b: float, c: float, c2: float, *, num_examples: int):
    """Eq. 16: (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂."""
    eps = np.asarray(epsilon, dtype=np.float64)
    return _as_float((a + b * np.exp(-c * eps)) * (num_examples + 1.0) * -np.expm1(-eps) + c2)


class MemorizationCurvatureFit(NamedTuple):
    """Eq. 15 fit mem ≈ p₁ √m_sub · Curv + c₁ (p₁, c₁ ≥ 0), with its R² and the fitted values."""

    p1: float
    c1: float
    r2: float
    predicted: np.ndarray


class LossBoundFit(NamedTuple):
    """Fit of L(ε) = a + b e^{−cε}, with its R² and the fitted values."""

    a: float
    b: float
    c: float
    r2: float
    predicted: np.ndarray


class CurvaturePrivacyFit(NamedTuple):
    """Eq. 16 fit Curv ≈ (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂, with R² and the fitted values."""

    a: float
    b: float
    c: float
    c2: float
    r2: float
    predicted: np.ndarray


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def _check_xy(name_x: str, x, name_y: str, y, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(name_x, x).reshape(-1)
    y = as_float_array(name_y, y).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{name_x} and {name_y} must have the same length, got {x.shape} and {y.shape}")
    if x.size < min_points:
        raise ValueError(f"need at least {min_points} points to fit, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name_x} and {name_y} must be finite (drop NaN/inf rows before fitting)")
    return x, y


def fit_memorization_curvature(memorization, curvature, subpopulation_size) -> MemorizationCurvatureFit:
    """Fit eq. 15, mem ≈ p₁ · √m_sub · Curv + c₁ with p₁, c₁ ≥ 0 (bounded linear least squares).

    ``memorization``, ``curvature``: (n,) per bin or per example (the paper uses the mean mem and the
    max curvature of 50 memorization bins); ``subpopulation_size``: (n,) m_sub of each point, or a
    scalar. Returns a :class:`MemorizationCurvatureFit`.
    """
    mem, curv = _check_xy("memorization", memorization, "curvature", curvature, 2)
    m_sub = np.broadcast_to(_check_positive("subpopulation_size", subpopulation_size), mem.shape)
    feature = np.sqrt(m_sub) * curv
    design = np.stack([feature, np.ones_like(feature)], axis=1)
    res = optimize.lsq_linear(design, mem, bounds=(0.0, np.inf), method="bvls")
    p1, c1 = (float(v) for v in res.x)
    pred = design @ res.x
    return MemorizationCurvatureFit(p1, c1, _r2(mem, pred), pred)


def _fit_exp_family(eps: np.ndarray, y: np.ndarray, basis, num_linear: int, c_max: float):
    """Variable projection: for each c on a grid solve the linear LSQ, then refine all with curve_fit."""
    best = None
    for c in np.concatenate([[0.0], np.geomspace(1e-3, c_max, 200)]):
        design = basis(eps, c)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ coef - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, c, coef)
    _, c0, coef0 = best

    def model(e, *params):
        *lin, c = params
        return basis(e, c) @ np.asarray(lin)

    p0 = [*coef0, max(c0, 1e-6)]
    lower = [-np.inf] * num_linear + [0.0]
    upper = [np.inf] * num_linear + [np.inf]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(model, eps, y, p0=p0, bounds=(lower, upper), maxfev=20000)
    except RuntimeError:  # curve_fit did not converge; the grid solution is still a valid fit
        params = np.asarray(p0)
    if np.sum((model(eps, *params) - y) ** 2) > best[0]:
        params = np.asarray(p0)
    return np.asarray(params, dtype=np.float64), model


def fit_loss_bound(epsilon, loss, *, c_max: float = 10.0) -> LossBoundFit:
    """Fit Fig. 4's L(ε) = a + b e^{−cε} (c ≥ 0) to converged losses; ``epsilon``, ``loss``: (n,)."""
    eps, y = _check_xy("epsilon", epsilon, "loss", loss, 3)
    _check_epsilon(eps)

    def basis(e, c):
        return np.stack([np.ones_like(e), np.exp(-c * e)], axis=1)

    (a, b, c), model = _fit_exp_family(eps, y, basis, 2, c_max)
    pred = model(eps, a, b, c)
    return LossBoundFit(float(a), float(b), float(c), _r2(y, pred), pred)


def fit_curvature_privacy(
    epsilon, curvature, *, num_examples: int, c_max: float = 10.0
) -> CurvaturePrivacyFit:
    """Fit eq. 16, Curv ≈ (a + b e^{−cε})(m + 1)(1 − e^{−ε}) + c₂ (c ≥ 0), m = ``num_examples``.

    ``epsilon``, ``curvature``: (n,) (the paper: mean curvature over seeds and examples per ε).
    a, b, c₂ enter linearly, so c is scanned on a grid in [0, ``c_max``] and then refined jointly
    with ``scipy.optimize.curve_fit``. Returns a :class:`CurvaturePrivacyFit`.
    """
    eps, y = _check_xy("epsilon", epsilon, "curvature", curvature, 4)
    _check_epsilon(eps)
    m = float(_check_positive("num_examples", num_examples))

    def basis(e, c):
        g = (m + 1.0) * -np.expm1(-e)
        return np.stack([g, g * np.exp(-c * e), np.ones_like(e)], axis=1)

    (a, b, c2, c), model = _fit_exp_family(eps, y, basis, 3, c_max)
    pred = model(eps, a, b, c2, c)
    return CurvaturePrivacyFit(float(a), float(b), float(c), float(c2), _r2(y, pred), pred)
