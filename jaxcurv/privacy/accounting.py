"""Privacy accounting for DP-SGD on dp_accounting: ε of a Poisson-subsampled Gaussian, and σ for a target ε.

One DP-SGD step with Poisson sampling rate q and noise multiplier σ is the DpEvent
``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``; T steps are its ``SelfComposedDpEvent`` (T ≥ 1,
dp_accounting rejects count 0). ε at a given δ comes from one of three accountants:

- ``"rdp"``: dp_accounting's ``RdpAccountant`` with its default order grid and the improved
  RDP → (ε, δ) conversion ε = min_α [RDP(α) + ln(1 − 1/α) − ln(δ α)/(α − 1)]
  (Balle et al. 2020, Prop. 12 of arXiv:2004.00010). This is the figure we report.
- ``"pld"``: dp_accounting's ``PLDAccountant`` (privacy loss distributions); the tightest of the
  three, slower (≈0.5 s per evaluation for 14k steps).
- ``"rdp_classic"``: the conversion and order grid of TF-Privacy's original ``rdp_accountant`` (the
  one behind the classic MNIST tutorial), ε = min_α [RDP(α) − ln δ/(α − 1)] (Mironov 2017,
  Prop. 3) over ``TF_PRIVACY_LEGACY_ORDERS``. Only for reproducing published numbers.

Published vector: N = 60,000, batch 256 (q = 256/60,000), σ = 1.1, 60 epochs (14,062 steps),
δ = 1e-5 gives ε = 2.597 with ``"rdp"``, 3.008 with ``"rdp_classic"`` (the TF-Privacy tutorial's
"ε = 3.01") and 2.382 with ``"pld"``. The 3.01 → 2.60 difference is the *conversion*, not the order
grid: dp_accounting with the legacy orders and the improved conversion also gives 2.597.

Fractional RDP orders. dp_accounting evaluates the RDP of the subsampled Gaussian exactly at
integer orders, but at fractional orders its series adds the *absolute values* of the binomial
terms (``_log_comb`` is log|C(α, k)|): an upper bound, loose where the terms alternate, and for
small σ with large q the series stops without converging and the order is excluded (with a
log warning). Both make ε looser than Opacus's RDP accountant (whose series keeps the signs), up
to 2.8× (σ = 0.5, q = 0.1, T = 10⁴, δ = 1e-5: 2231 instead of 807). Here every fractional order is
also evaluated by numerical integration (``jaxcurv.privacy.rdp``, error ≲ 1e-11 relative, rounded
up) and each order keeps the smaller of the two upper bounds; integer orders keep dp_accounting's
exact value. ε is then never looser than dp_accounting's and matches Opacus on the same orders.
During one call dp_accounting's warnings are held back by a filter on the absl logger (removed
afterwards; no logging setting changes); ``epsilon_report`` lists the orders it could not evaluate
(``orders_not_converged``), the orders whose value came from the integral and any order left
without a finite RDP (``orders_dropped``; excluded from the minimum, never silently).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import dp_accounting
import numpy as np
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant, compute_epsilon
from scipy import optimize

from jaxcurv._names import ACCOUNTANTS
from jaxcurv._validate import check_int, check_positive, check_positive_int, check_probability
from jaxcurv.privacy.rdp import poisson_gaussian_rdp

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "TF_PRIVACY_LEGACY_ORDERS",
    "EpsilonReport",
    "dpsgd_event",
    "epsilon",
    "epsilon_report",
    "calibrate_noise_multiplier",
    "steps_for",
]

# The RDP orders of TF-Privacy's original compute_dp_sgd_privacy (used by its MNIST tutorial).
TF_PRIVACY_LEGACY_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
)

_CALIBRATION_TOL = 1e-6  # tolerance on σ of calibrate_noise_multiplier
_SIGMA_SEARCH_LIMIT = 2**30


class EpsilonReport(NamedTuple):
    """ε of ``steps`` Poisson-subsampled Gaussian steps and how it was obtained.

    ``accountant``: the accountant that produced ε; ``fallback_from``: the one asked for when it
    could not give a finite ε ("pld" when dp_accounting's PLD overflows: ε then comes from
    ``"rdp"``, an upper bound, and a RuntimeWarning says so), else None.
    ``best_order``: the RDP order α attaining ε (None for ``"pld"``).
    ``orders_evaluated_numerically``: the orders whose RDP came from numerical integration
    (tighter than dp_accounting's bound, or where its series failed). ``orders_dropped``: orders
    left without a finite RDP, excluded from the minimum over α. ``orders_not_converged``: orders
    where dp_accounting's series failed (evaluated numerically instead). Orders are sorted tuples
    of floats; all empty for ``"pld"``.
    """

    epsilon: float
    delta: float
    accountant: str
    best_order: float | None
    orders_evaluated_numerically: tuple[float, ...]
    orders_dropped: tuple[float, ...]
    orders_not_converged: tuple[float, ...] = ()
    fallback_from: str | None = None


class _ClassicRdpAccountant(RdpAccountant):
    """RdpAccountant whose ε uses the basic conversion ε = min_α RDP(α) − ln δ/(α − 1)."""

    def __init__(self):
        super().__init__(orders=TF_PRIVACY_LEGACY_ORDERS)

    def get_epsilon(self, target_delta: float) -> float:
        return _classic_epsilon(self.orders, self.rdp, target_delta)[0]


def _classic_epsilon(orders, rdp, delta: float) -> tuple[float, float]:
    """(ε, α*) of the basic conversion ε = min_α RDP(α) − ln δ/(α − 1) (Mironov 2017, Prop. 3)."""
    orders = np.asarray(orders, dtype=np.float64)
    eps = np.asarray(rdp, dtype=np.float64) - math.log(delta) / (orders - 1.0)
    best = int(np.argmin(eps))
    return float(max(0.0, eps[best])), float(orders[best])


def _make_accountant(accountant: str) -> Callable[[], dp_accounting.PrivacyAccountant]:
    if accountant == "rdp":
        return RdpAccountant
    if accountant == "pld":
        return PLDAccountant
    if accountant == "rdp_classic":
        return _ClassicRdpAccountant
    raise ValueError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}")


def _check_common(sampling_rate, steps, delta, accountant) -> None:
    check_probability("delta", delta, open_low=True, open_high=True)
    check_probability("sampling_rate", sampling_rate, open_low=True)
    check_int("steps", steps, minimum=1)
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}")


def dpsgd_event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """The DpEvent of ``steps`` DP-SGD steps: SelfComposed(PoissonSampled(q, Gaussian(σ)), T)."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            float(sampling_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier))
        ),
        int(steps),
    )


class _DroppedOrders(logging.Filter):
    """Holds back dp_accounting's "failed to converge … Excluding this order" records and keeps
    their RDP orders α (the last argument of the message) in ``orders``."""

    def __init__(self):
        super().__init__()
        self.orders: list[float] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "Excluding this order" not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if args and isinstance(args[-1], (int, float)):
            self.orders.append(float(args[-1]))
        return False


@contextlib.contextmanager
def _dropped_rdp_orders() -> Iterator[list[float]]:
    """For one accounting call, collect (and keep off the log) the RDP orders dp_accounting drops.

    A filter on the absl logger, removed on exit: the logger's level, handlers and every other
    message are untouched. Dropping an order can only raise ε, never lower it.
    """
    logger = logging.getLogger("absl")
    dropped = _DroppedOrders()
    logger.addFilter(dropped)
    try:
        yield dropped.orders
    finally:
        logger.removeFilter(dropped)


def _tight_rdp(noise_multiplier: float, sampling_rate: float, steps: int, accountant: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """Orders (M,), RDP (M,) of T steps, a mask (M,) of the values taken from the integral and the
    orders dp_accounting could not evaluate. Integer orders keep dp_accounting's exact value;
    fractional ones the smaller of its bound and the numerical integral (both upper bounds)."""
    acc = _make_accountant(accountant)()
    with _dropped_rdp_orders() as dropped:
        acc.compose(dpsgd_event(noise_multiplier, sampling_rate, steps))
    orders = np.asarray(acc.orders, dtype=np.float64)
    rdp = np.asarray(acc.rdp, dtype=np.float64)
    failed = orders[~np.isfinite(rdp)]
    numeric = np.zeros(orders.shape, dtype=bool)
    frac = (orders != np.floor(orders)) & (orders > 1.0)
    if sampling_rate < 1.0 and np.any(frac):  # q = 1: dp_accounting's Gaussian RDP is exact
        values = np.full(orders.shape, np.inf)
        values[frac] = poisson_gaussian_rdp(noise_multiplier, sampling_rate, orders[frac],
                                            steps=steps)
        numeric = frac & (values < rdp)  # finite and tighter (dp_accounting's inf: failed)
        rdp = np.where(numeric, values, rdp)
    not_converged = tuple(sorted({*map(float, dropped), *map(float, failed)}))
    return orders, rdp, numeric, not_converged


def _epsilon_report(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
                    accountant: str) -> EpsilonReport:
    """``epsilon_report`` on validated arguments."""
    if accountant == "pld":
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            acc = PLDAccountant().compose(dpsgd_event(noise_multiplier, sampling_rate, steps))
            eps = float(acc.get_epsilon(float(delta)))
        if math.isfinite(eps):
            return EpsilonReport(eps, float(delta), accountant, None, (), ())
        # dp_accounting's PLD overflows for large ε (its discretized loss distribution loses all
        # mass); RDP is an upper bound on the same guarantee
        rdp = _epsilon_report(noise_multiplier, sampling_rate, steps, delta, "rdp")
        return rdp._replace(fallback_from="pld")
    orders, rdp, numeric, not_converged = _tight_rdp(noise_multiplier, sampling_rate, steps,
                                                     accountant)
    finite = np.isfinite(rdp)
    if not np.any(finite):
        eps, best = math.inf, None
    elif accountant == "rdp_classic":
        eps, best = _classic_epsilon(orders[finite], rdp[finite], float(delta))
    else:
        eps, best = compute_epsilon(orders[finite], rdp[finite], float(delta))
    return EpsilonReport(
        epsilon=float(eps), delta=float(delta), accountant=accountant,
        best_order=None if best is None else float(best),
        orders_evaluated_numerically=tuple(float(a) for a in orders[numeric]),
        orders_dropped=tuple(float(a) for a in orders[~finite]),
        orders_not_converged=not_converged,
    )


def epsilon_report(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
) -> EpsilonReport:
    """ε spent by ``steps`` Poisson-sampled Gaussian steps (rate q, noise multiplier σ) at δ, with
    the RDP order that attains it and the orders evaluated numerically or excluded. When the PLD
    accountant overflows (ε = inf; e.g. σ = 1.1, q = 0.1, 10⁵ steps) the RDP ε is reported instead,
    with ``accountant="rdp"``, ``fallback_from="pld"`` and a RuntimeWarning: never ε = inf from
    an overflow.

    RDP accountants: RDP(α) from dp_accounting at integer orders and the tighter of dp_accounting's
    bound and numerical integration at fractional ones (module docstring), then the conversion of
    ``accountant`` minimised over α. Never looser than dp_accounting alone.
    """
    return _reported(noise_multiplier, sampling_rate, steps, delta, accountant, stacklevel=3)


def _reported(noise_multiplier, sampling_rate, steps, delta, accountant: str, *,
              stacklevel: int) -> EpsilonReport:
    """The validated report, warning (at the caller's caller) when PLD fell back to RDP."""
    _check_common(sampling_rate, steps, delta, accountant)
    check_positive("noise_multiplier", noise_multiplier)
    report = _epsilon_report(noise_multiplier, sampling_rate, steps, delta, accountant)
    if report.fallback_from is not None:
        warnings.warn(f"the {report.fallback_from} accountant overflowed (dp_accounting returned "
                      f"ε = inf for σ = {noise_multiplier}, q = {sampling_rate}, {steps} steps, "
                      f"δ = {delta}); reporting the {report.accountant} ε = "
                      f"{report.epsilon:.6g} instead, an upper bound", RuntimeWarning,
                      stacklevel=stacklevel)
    return report


def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
) -> float:
    """ε spent by ``steps`` Poisson-sampled Gaussian steps (rate q, noise multiplier σ) at δ.

    σ is the noise std divided by the L2 clip norm. ``accountant`` is ``"rdp"`` (default),
    ``"pld"`` or ``"rdp_classic"`` (see the module docstring). Returns a Python float; the
    details (best order, orders evaluated numerically or excluded) are in ``epsilon_report``.
    Never inf from an overflow: where dp_accounting's PLD overflows, the RDP ε is returned with a
    RuntimeWarning.
    """
    return _reported(noise_multiplier, sampling_rate, steps, delta, accountant,
                     stacklevel=3).epsilon


def _smallest_sigma(gap: Callable[[float], float], lo: float, hi: float) -> float:
    """σ ∈ [lo, hi] with gap(σ) ≤ 0 within _CALIBRATION_TOL of the root of the decreasing gap
    (gap(lo) > 0 ≥ gap(hi)): Brent's method, then one step up or bisection to stay conservative."""
    root = optimize.brentq(gap, lo, hi, xtol=_CALIBRATION_TOL)
    if gap(root) <= 0:
        return float(root)
    if root + _CALIBRATION_TOL <= hi and gap(root + _CALIBRATION_TOL) <= 0:
        return float(root + _CALIBRATION_TOL)
    while hi - lo > _CALIBRATION_TOL:  # keeps gap(lo) > 0 ≥ gap(hi)
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if gap(mid) <= 0 else (mid, hi)
    return float(hi)


def calibrate_noise_multiplier(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
) -> float:
    """Smallest σ (within 1e-6) whose ε(σ, q, T, δ) ≤ ``target_epsilon``: conservative by construction.

    ε is ``epsilon`` (the tight RDP curve for the RDP accountants). Brackets σ by halving/doubling
    from 1, then Brent's method and a check that the returned σ does not exceed the budget.
    """
    _check_common(sampling_rate, steps, delta, accountant)
    target = check_positive("target_epsilon", target_epsilon)

    def eps_of(sigma: float) -> float:
        return _epsilon_report(sigma, sampling_rate, steps, delta, accountant).epsilon

    # Bracket ε(lo) > target ≥ ε(hi) (ε decreases in σ), growing by `factor` from a start guess.
    # PLD evaluations are slow (~0.5 s); start them from the cheap RDP answer (PLD needs ≤ σ).
    if accountant == "pld":
        start, factor = calibrate_noise_multiplier(target, sampling_rate, steps, delta), 1.25
    else:
        start, factor = 1.0, 2.0
    lo = hi = start
    if eps_of(hi) > target:
        while eps_of(hi) > target:
            lo, hi = hi, hi * factor
            if hi > _SIGMA_SEARCH_LIMIT:
                raise ValueError(
                    f"no noise multiplier up to {_SIGMA_SEARCH_LIMIT} reaches ε = {target} "
                    f"with q = {sampling_rate}, steps = {steps}, δ = {delta}; raise target_epsilon"
                )
    else:
        while eps_of(lo) <= target:
            hi, lo = lo, lo / factor
            if lo < 1e-6:
                raise ValueError(
                    f"ε = {target} is reached even with σ < 1e-6 (q = {sampling_rate}, "
                    f"steps = {steps}, δ = {delta}); train without DP or lower target_epsilon"
                )
    return _smallest_sigma(lambda s: eps_of(s) - target, lo, hi)


def steps_for(num_examples: int, batch_size: int, epochs: float) -> int:
    """Number of DP-SGD steps for ``epochs`` passes at expected batch size B: ⌈epochs · N / B⌉.

    (TF-Privacy's ``compute_dp_sgd_privacy`` convention; q = B / N is the sampling rate.)
    """
    n = check_positive_int("num_examples", num_examples)
    b = check_positive_int("batch_size", batch_size)
    if b > n:
        raise ValueError(f"batch_size {b} exceeds num_examples {n}")
    e = check_positive("epochs", epochs)
    return max(1, math.ceil(e * n / b - 1e-9))


class Accountant:
    """ε of a DP-SGD run as it goes: ``step(n)`` records n more steps, ``epsilon()`` is ε at δ.

    Every step is one Poisson-subsampled Gaussian step with the same noise multiplier σ and
    sampling rate q (e.g. ``PoissonSampler.sampling_rate``). ``epsilon()`` after T steps equals
    ``epsilon(σ, q, T, δ, accountant=...)`` (T = 0 gives 0.0: nothing released); ``report()``
    the :class:`EpsilonReport`. ``steps``: steps already taken (to resume a run). The last value
    is kept, so calling ``epsilon()`` again without a step costs nothing.
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float, delta: float, *,
                 accountant: str = "rdp", steps: int = 0):
        self.noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
        self.sampling_rate = check_probability("sampling_rate", sampling_rate, open_low=True)
        self.delta = check_probability("delta", delta, open_low=True, open_high=True)
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}")
        self.accountant = accountant
        self._steps = check_int("steps", steps, minimum=0)
        self._last: tuple[int, EpsilonReport] | None = None

    @property
    def steps(self) -> int:
        """The number of steps recorded so far."""
        return self._steps

    def step(self, n: int = 1) -> None:
        """Record ``n`` ≥ 0 more DP-SGD steps."""
        self._steps += check_int("n", n, minimum=0)

    def report(self) -> EpsilonReport:
        """:func:`epsilon_report` of the steps so far (ε = 0.0 and no orders before the first)."""
        if self._steps == 0:
            return EpsilonReport(0.0, self.delta, self.accountant, None, (), ())
        if self._last is None or self._last[0] != self._steps:
            self._last = (self._steps, _epsilon_report(self.noise_multiplier, self.sampling_rate,
                                                       self._steps, self.delta, self.accountant))
        return self._last[1]

    def epsilon(self) -> float:
        """ε spent by the steps so far at δ (a Python float)."""
        return self.report().epsilon

    def __repr__(self) -> str:
        return (f"Accountant(noise_multiplier={self.noise_multiplier}, sampling_rate="
                f"{self.sampling_rate:.6g}, delta={self.delta}, accountant={self.accountant!r}, "
                f"steps={self._steps})")
