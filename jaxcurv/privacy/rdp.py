"""Rényi DP of the Poisson-subsampled Gaussian mechanism by numerical integration.

One step with sampling rate q and noise multiplier σ has, at order α > 1 (Mironov, Talwar & Zhang
2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3),

    RDP(α) = log A_α / (α − 1),   A_α = E_{z~N(0, σ²)}[g(z)^α],
    g(z) = (1 − q) + q·exp((2z − 1) / (2σ²)),

the quantity dp_accounting and Opacus expand in a binomial series. At fractional α
dp_accounting's series (``_compute_log_a_frac``) adds the terms' absolute values (an upper
bound) and stops without converging for small σ and large q; Opacus's keeps their signs but loses
digits to cancellation. This module integrates the expectation instead.

Method: the trapezoidal rule on a uniform grid of step h over [−40σ, α + σ·L], L = √(α(α−1)/σ²
+ 1600). Since E[g] = 1, A_α − 1 = E[H(g − 1)] with H(u) = (1 + u)^α − 1 − αu ≥ 0, which is summed
directly (no cancellation when A_α is close to 1; a power series in u where |u| is small), then
log A_α = log1p(E[H]). When the integrand would overflow, log A_α is a log-sum-exp over the grid.

Error bound. The integrand is analytic in the strip |Im z| < d with d = min(πσ²/2, 2σ): there
Re g > 0, so g^α is analytic, |g(x + iy)| ≤ g(x) and |φ(x + iy)| ≤ e²·φ(x). The trapezoidal
rule's error on ℝ is then at most 2M / (e^{2πd/h} − 1) with M ≤ e²(A_α + 1 + 2α) (Trefethen &
Weideman 2014, SIAM Review 56, Thm. 5.1); with h = d/12 that is ≤ 2e²(A_α + 1 + 2α)·e^{−75},
and the truncated tails are below e^{−800}·max(1, A_α). What remains is rounding: ≲ 1e-11
relative for orders α ≥ 1.01. The returned RDP is rounded *up* by a relative 1e-10 so that it
bounds the exact value (accounting must not understate ε). Orders whose grid would exceed 2²¹
points (σ ≲ 0.01, where ε is astronomically large anyway) are not evaluated and return inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from jaxcurv._validate import check_positive, check_probability

__all__ = ["poisson_gaussian_log_a", "poisson_gaussian_rdp", "ROUND_UP"]

ROUND_UP = 1e-10  # relative margin added to every numerically integrated RDP value
_STEPS_PER_D = 12  # h = d / 12: quadrature error ≤ 2M e^{-2π·12}
_LEFT_SIGMAS = 40.0  # left end −40σ: the neglected mass is below Φ(−40) < e^{−800}
_RIGHT_LOG_TAIL = 1600.0  # right end: tail ≤ e^{α(α−1)/(2σ²)} Φ̄(L) with L²/2 ≥ that + 800
_SERIES_TERMS = 30  # binomial series of H(u) where |u| ≤ min(1e-2, 1/α)
_OVERFLOW_LOG = 600.0  # above this log-integrand, integrate in log space
_MAX_POINTS = 1 << 21  # larger grids (σ ≲ 0.01) are not evaluated: log A_α = inf


def _h_series(u: np.ndarray, alpha: float) -> np.ndarray:
    """H(u) = Σ_{k≥2} C(α, k) uᵏ for |u| ≤ min(1e-2, 1/α). Each term is at most 1/(k + 1) of the
    previous one (|α − k|·|u| ≤ 1), so 30 terms leave < 1e-33 of the first."""
    coef = alpha * (alpha - 1.0) / 2.0
    power = u * u
    total = coef * power
    for k in range(2, _SERIES_TERMS):
        coef *= (alpha - k) / (k + 1.0)
        power = power * u
        total = total + coef * power
    return total


def _excess_integrand(log_phi: np.ndarray, x: np.ndarray, q: float, alpha: float) -> np.ndarray:
    """φ(z)·H(u(z)) with u = q·expm1(x), H(u) = (1 + u)^α − 1 − αu (u > −1, α > 1), to ≲ 1e-11
    relative: the series where |u| ≤ min(1e-2, 1/α); φ·(expm1(α log1p u) − αu) (relative error
    ≤ 4ε/((α − 1)|u|)) up to (1 + u)^α = e^700; above, where 1 + αu is negligible, exp(log φ +
    α log(1 + u)) with log(1 + u) from a log-add (no overflow)."""
    log_g = np.logaddexp(math.log1p(-q), math.log(q) + x)
    huge = alpha * log_g > 700.0
    u = np.zeros_like(x)
    u[~huge] = q * np.expm1(x[~huge])
    small = ~huge & (np.abs(u) <= min(1e-2, 1.0 / alpha))
    mid = ~huge & ~small
    h = np.empty_like(x)
    h[small] = _h_series(u[small], alpha)
    h[mid] = np.expm1(alpha * np.log1p(u[mid])) - alpha * u[mid]
    out = np.exp(log_phi) * np.where(huge, 0.0, h)
    out[huge] = np.exp(log_phi[huge] + alpha * log_g[huge])
    return out


def _grid(sigma: float, alpha: float) -> tuple[np.ndarray | None, float]:
    """Uniform grid z (n,) and its step h for the trapezoidal rule (module docstring); None for
    z when n would exceed _MAX_POINTS."""
    d = min(math.pi * sigma * sigma / 2.0, 2.0 * sigma)
    step = d / _STEPS_PER_D
    lo = -_LEFT_SIGMAS * sigma
    hi = alpha + sigma * math.sqrt(alpha * (alpha - 1.0) / (sigma * sigma) + _RIGHT_LOG_TAIL)
    n = int(math.ceil((hi - lo) / step)) + 1
    if n > _MAX_POINTS:
        return None, step
    return lo + step * np.arange(n, dtype=np.float64), step


def poisson_gaussian_log_a(noise_multiplier: float, sampling_rate: float, order: float) -> float:
    """log A_α of one Poisson-subsampled Gaussian step (q, σ) at order α > 1 by the trapezoidal rule
    (module docstring: error ≤ 2e²(A_α + 1 + 2α)e^{−75} plus ≲ 1e-11 relative rounding); inf
    where the grid would exceed 2²¹ points."""
    sigma = check_positive("noise_multiplier", noise_multiplier)
    q = check_probability("sampling_rate", sampling_rate, open_low=True)
    alpha = float(order)
    if not (math.isfinite(alpha) and alpha > 1.0):
        raise ValueError(f"order must be a finite RDP order > 1, got {order!r}")
    if q == 1.0:  # the Gaussian mechanism: A_α = exp(α(α − 1)/(2σ²))
        return alpha * (alpha - 1.0) / (2.0 * sigma * sigma)
    z, step = _grid(sigma, alpha)
    if z is None:
        return math.inf
    x = (2.0 * z - 1.0) / (2.0 * sigma * sigma)
    log_phi = -0.5 * (z / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2.0 * math.pi)
    # log of the integrand φ·g^α, g = (1 − q) + q eˣ by a log-add (no overflow for large x)
    log_f = log_phi + alpha * np.logaddexp(math.log1p(-q), math.log(q) + x)
    if float(np.max(log_f)) < _OVERFLOW_LOG:  # A_α − 1 = E[H(g − 1)] summed directly
        return math.log1p(step * float(np.sum(_excess_integrand(log_phi, x, q, alpha))))
    return float(special.logsumexp(log_f)) + math.log(step)


def poisson_gaussian_rdp(
    noise_multiplier: float, sampling_rate: float, orders: Sequence[float], *, steps: int = 1
) -> np.ndarray:
    """RDP (len(orders),) of ``steps`` composed Poisson-subsampled Gaussian steps:
    steps · log A_α / (α − 1) · (1 + ROUND_UP), an upper bound of the exact value (inf where not
    evaluated, see ``poisson_gaussian_log_a``)."""
    return np.array([
        steps * poisson_gaussian_log_a(noise_multiplier, sampling_rate, a) / (float(a) - 1.0)
        * (1.0 + ROUND_UP)
        for a in orders
    ], dtype=np.float64)
