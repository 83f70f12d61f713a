"""Accounting against direct dp_accounting calls, published vectors, closed forms and independent
numerical integrals of the subsampled-Gaussian Rényi divergence."""

import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant, rdp_privacy_accountant
from scipy import integrate, special, stats

from jaxcurv.privacy import (
    TF_PRIVACY_LEGACY_ORDERS,
    EpsilonReport,
    accounting,
    calibrate_noise_multiplier,
    dpsgd_event,
    epsilon,
    epsilon_report,
    rdp,
    steps_for,
)

# The TF-Privacy MNIST tutorial vector: N = 60,000, batch 256, σ = 1.1, 60 epochs, δ = 1e-5.
N, BATCH, SIGMA, EPOCHS, DELTA = 60_000, 256, 1.1, 60, 1e-5
Q = BATCH / N
STEPS = 14_062  # 60 · 60000 / 256 = 14062.5


def _direct(accountant, sigma, q, steps, delta):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    return accountant.compose(event).get_epsilon(delta)


def test_event_structure():
    event = dpsgd_event(SIGMA, Q, STEPS)
    assert event == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(Q, dp_accounting.GaussianDpEvent(SIGMA)), STEPS
    )


@pytest.mark.parametrize(
    "sigma,q,steps,gap",
    [(SIGMA, Q, STEPS, 1e-9), (0.7, 0.01, 500, 2e-4), (2.0, 1.0, 3, 0.0), (1.0, 0.3, 1, 1e-7)],
)
def test_rdp_is_never_looser_than_direct_dp_accounting(sigma, q, steps, gap):
    # Where dp_accounting's series converges, its fractional orders are an upper bound (sum of
    # |terms|) within `gap` (relative, at the optimum) of the exact values used here.
    direct = _direct(RdpAccountant(), sigma, q, steps, DELTA)
    eps = epsilon(sigma, q, steps, DELTA)
    assert direct * (1 - gap) - 1e-12 <= eps <= direct
    if q == 1.0:  # the plain Gaussian: dp_accounting's closed form at every order
        assert eps == direct


def test_pld_equals_direct_dp_accounting():
    assert epsilon(2.0, 0.1, 20, DELTA, accountant="pld") == _direct(
        PLDAccountant(), 2.0, 0.1, 20, DELTA
    )


def test_published_vector_rdp_and_classic():
    # dp_accounting (improved RDP conversion, default orders): 2.60.
    assert epsilon(SIGMA, Q, STEPS, DELTA) == pytest.approx(2.5966, abs=1e-3)
    # TF-Privacy tutorial's "ε = 3.01": legacy orders with the basic conversion.
    assert epsilon(SIGMA, Q, STEPS, DELTA, accountant="rdp_classic") == pytest.approx(3.008, abs=1e-3)
    # Rounding the step count up (TF-Privacy's ceil) does not move either figure at this precision.
    assert steps_for(N, BATCH, EPOCHS) == STEPS + 1
    assert epsilon(SIGMA, Q, STEPS + 1, DELTA) == pytest.approx(2.597, abs=1e-3)


def test_classic_gap_is_the_conversion_not_the_order_grid():
    event = dpsgd_event(SIGMA, Q, STEPS)
    legacy = RdpAccountant(orders=TF_PRIVACY_LEGACY_ORDERS).compose(event)
    # Legacy grid + dp_accounting's improved conversion: still 2.60, not 3.01.
    assert legacy.get_epsilon(DELTA) == pytest.approx(2.597, abs=1e-3)
    # Legacy grid + basic conversion ε = min_α RDP(α) − ln δ/(α−1) (Mironov 2017, Prop. 3): 3.01.
    orders = np.asarray(legacy.orders)
    basic = float(np.min(legacy.rdp - math.log(DELTA) / (orders - 1)))
    assert basic == pytest.approx(3.008, abs=1e-3)
    # (ours uses the exact fractional-order RDP, ≤ dp_accounting's bound: 2e-9 tighter here)
    classic = epsilon(SIGMA, Q, STEPS, DELTA, accountant="rdp_classic")
    assert basic * (1 - 1e-8) <= classic <= basic


def test_pld_is_tighter_than_rdp():
    pld = epsilon(SIGMA, Q, STEPS, DELTA, accountant="pld")
    assert pld == pytest.approx(2.38, abs=0.01)
    assert pld < epsilon(SIGMA, Q, STEPS, DELTA)


def test_full_batch_pld_matches_exact_gaussian():
    # q = 1, T steps of σ compose to one Gaussian mechanism with σ/√T: exact ε from dp_accounting.
    exact = dp_accounting.get_epsilon_gaussian(4.0 / math.sqrt(10), DELTA)
    assert epsilon(4.0, 1.0, 10, DELTA, accountant="pld") == pytest.approx(exact, abs=2e-3)


def test_epsilon_monotone():
    sigmas = [0.6, 0.8, 1.0, 1.5, 3.0]
    eps = [epsilon(s, 0.02, 200, DELTA) for s in sigmas]
    assert all(a > b for a, b in zip(eps, eps[1:]))
    eps_t = [epsilon(1.0, 0.02, t, DELTA) for t in (10, 100, 1000)]
    assert all(a < b for a, b in zip(eps_t, eps_t[1:]))


@pytest.mark.parametrize("target,q,steps", [(0.5, 0.01, 1000), (2.0, Q, STEPS), (8.0, 0.02, 2000)])
def test_calibrate_rdp_within_1e3_and_conservative(target, q, steps):
    sigma = calibrate_noise_multiplier(target, q, steps, DELTA)
    eps = epsilon(sigma, q, steps, DELTA)
    assert eps <= target
    assert target - eps < 1e-3
    # A slightly smaller σ overshoots: the answer is (near-)minimal.
    assert epsilon(sigma * (1 - 1e-4), q, steps, DELTA) > target - 1e-3


def test_calibrate_reproduces_published_sigma():
    sigma = calibrate_noise_multiplier(epsilon(SIGMA, Q, STEPS, DELTA), Q, STEPS, DELTA)
    assert sigma == pytest.approx(SIGMA, abs=1e-4)


def test_calibrate_pld_full_batch_matches_analytic_gaussian():
    # q = 1: σ_total/√T must equal dp_accounting's exact Gaussian calibration.
    target, steps = 3.0, 10
    sigma = calibrate_noise_multiplier(target, 1.0, steps, DELTA, accountant="pld")
    eps = epsilon(sigma, 1.0, steps, DELTA, accountant="pld")
    assert eps <= target and target - eps < 1e-3
    expected = dp_accounting.get_sigma_gaussian(target, DELTA) * math.sqrt(steps)
    assert sigma == pytest.approx(expected, rel=2e-3)


def test_calibrate_classic():
    sigma = calibrate_noise_multiplier(3.008272, Q, STEPS, DELTA, accountant="rdp_classic")
    assert sigma == pytest.approx(SIGMA, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(delta=-1e-5), "delta"),
        (dict(sampling_rate=0.0), "sampling_rate"),
        (dict(sampling_rate=1.5), "sampling_rate"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(noise_multiplier=0.0), "noise_multiplier"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(accountant="moments"), "accountant"),
    ],
)
def test_epsilon_validation(kwargs, match):
    args = dict(noise_multiplier=1.0, sampling_rate=0.01, steps=10, delta=1e-5)
    accountant = kwargs.pop("accountant", "rdp")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        epsilon(
            args["noise_multiplier"], args["sampling_rate"], args["steps"], args["delta"],
            accountant=accountant,
        )


@pytest.mark.parametrize(
    "args,accountant,match",
    [
        ((0.0, 0.01, 10, 1e-5), "rdp", "target_epsilon"),
        ((-1.0, 0.01, 10, 1e-5), "rdp", "target_epsilon"),
        ((math.inf, 0.01, 10, 1e-5), "rdp", "finite"),
        ((1.0, 0.01, 10, 1.0), "rdp", "delta"),
        ((1.0, 0.0, 10, 1e-5), "rdp", "sampling_rate"),
        ((1.0, 0.01, 0, 1e-5), "rdp", "steps"),
        ((1.0, 0.01, 10, 1e-5), "gdp", "accountant"),
    ],
)
def test_calibrate_validation(args, accountant, match):
    with pytest.raises(ValueError, match=match):
        calibrate_noise_multiplier(*args, accountant=accountant)


def test_steps_for():
    assert steps_for(1000, 100, 3) == 30
    assert steps_for(1000, 128, 1) == 8
    assert steps_for(10, 3, 0.5) == 2
    with pytest.raises(ValueError, match="batch_size"):
        steps_for(10, 20, 1)
    with pytest.raises(ValueError, match="epochs"):
        steps_for(10, 2, 0)


def test_failed_orders_are_recorded_integrated_and_logging_is_left_alone(caplog):
    # σ = 0.5, q = 0.1: dp_accounting's series for the smallest fractional orders fails to converge.
    logger = logging.getLogger("absl")
    before = (logger.level, list(logger.filters), list(logger.handlers), logger.disabled)
    with caplog.at_level(logging.WARNING):
        report = epsilon_report(0.5, 0.1, 10, DELTA)
        assert "Excluding this order" not in caplog.text
        direct = _direct(RdpAccountant(), 0.5, 0.1, 10, DELTA)  # the raw call does log them
        assert "Excluding this order" in caplog.text
    assert (logger.level, list(logger.filters), list(logger.handlers), logger.disabled) == before
    logged = {float(r.args[-1]) for r in caplog.records if "Excluding this order" in str(r.msg)}
    failed = report.orders_not_converged
    assert failed and set(failed) == logged
    assert set(failed) <= set(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
    assert all(a != int(a) for a in failed)
    # every failed order was integrated instead of dropped; ε is never looser than dp_accounting's
    # (equal here: with T = 10 the best order is α = 2, exact in both)
    assert set(failed) <= set(report.orders_evaluated_numerically)
    assert report.orders_dropped == ()
    assert report.epsilon <= direct and report.epsilon == epsilon(0.5, 0.1, 10, DELTA)
    assert epsilon_report(SIGMA, Q, STEPS, DELTA).orders_not_converged == ()


def test_orders_without_any_value_are_reported_as_dropped(monkeypatch):
    # Without the integral, dp_accounting's failed orders have no RDP: excluded and listed.
    monkeypatch.setattr(
        accounting, "poisson_gaussian_rdp", lambda s, q, orders, steps: np.full(len(orders), np.inf)
    )
    report = epsilon_report(0.5, 0.1, 10, DELTA)
    assert report.orders_dropped and report.orders_dropped == report.orders_not_converged
    assert report.orders_evaluated_numerically == ()
    assert report.epsilon == _direct(RdpAccountant(), 0.5, 0.1, 10, DELTA)


# ----------------------------------------------------------------------------------------------
# Numerical RDP of the subsampled Gaussian against closed forms and independent integrals

_CONFIGS = [(SIGMA, Q), (0.5, 0.1), (0.8, 0.1), (2.0, 0.3), (0.3, 0.01), (5.0, 0.5)]


def _log_a_quad(sigma, q, alpha):
    """log E_{z~N(0,σ²)}[((1−q) + q e^{(2z−1)/(2σ²)})^α] by adaptive quadrature (scipy.quad) of
    the excess integrand φ·[g^α − 1 − α(g − 1)] (E[g] = 1), peaks at z = 0 and z = α."""

    def excess(z):
        x = (2 * z - 1) / (2 * sigma**2)
        log_g = np.logaddexp(math.log1p(-q), math.log(q) + x)
        if alpha * log_g > 700:  # 1 + α(g − 1) is negligible against g^α
            return math.exp(stats.norm.logpdf(z, 0.0, sigma) + alpha * log_g)
        u = q * math.expm1(x)
        return stats.norm.pdf(z, 0.0, sigma) * (math.expm1(alpha * math.log1p(u)) - alpha * u)

    pieces = [-40 * sigma, -2 * sigma, 0.0, 0.5, alpha, alpha + 40 * sigma]
    total = sum(
        integrate.quad(excess, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
        for a, b in zip(pieces, pieces[1:])
    )
    return math.log1p(total)


def _log_a_signed_series(sigma, q, alpha, terms=400):
    """Mironov et al. 2019, Sec. 3.3 (the signed form of TF-Privacy's original rdp_accountant and
    Opacus): A = Σ_i C(α,i) [(1−q)^{α−i} q^i e^{(i²−i)/(2σ²)} Φ(−(i−z0)/σ)
    + q^{α−i}(1−q)^i e^{((α−i)²−(α−i))/(2σ²)} Φ(−(z0−α+i)/σ)], z0 = σ² ln(1/q − 1) + ½;
    terms in log space with the signs of C(α, i)."""
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = np.arange(terms, dtype=np.float64)
    j = alpha - i
    log_c = special.gammaln(alpha + 1) - special.gammaln(i + 1) - special.gammaln(j + 1)
    sign = np.sign(special.binom(alpha, i))
    t0 = (log_c + j * math.log1p(-q) + i * math.log(q) + (i * i - i) / (2 * sigma**2)
          + special.log_ndtr(-(i - z0) / sigma))
    t1 = (log_c + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * sigma**2)
          + special.log_ndtr(-(z0 - j) / sigma))
    return float(special.logsumexp(np.concatenate([t0, t1]), b=np.concatenate([sign, sign])))


@pytest.mark.parametrize("sigma,q", _CONFIGS)
def test_numerical_log_a_equals_dp_accounting_at_integer_orders(sigma, q):
    orders = [a for a in rdp_privacy_accountant.DEFAULT_RDP_ORDERS if float(a).is_integer()]
    for alpha in orders[:: max(1, len(orders) // 12)] + [1024]:
        want = rdp_privacy_accountant._compute_log_a(q, sigma, alpha)  # exact binomial sum
        assert rdp.poisson_gaussian_log_a(sigma, q, alpha) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("sigma,q", _CONFIGS)
def test_numerical_log_a_at_fractional_orders_is_exact_and_below_dp_accounting(sigma, q):
    for alpha in (1.1, 1.5, 2.5, 3.7, 7.3):
        got = rdp.poisson_gaussian_log_a(sigma, q, alpha)
        assert got == pytest.approx(_log_a_quad(sigma, q, alpha), rel=1e-8)
        if alpha < 3 and q >= 0.1 and sigma <= 1:  # its cancellation grows with σ and 1/q
            assert got == pytest.approx(_log_a_signed_series(sigma, q, alpha), rel=1e-7)
        # dp_accounting sums |C(α, i)|·…: an upper bound at fractional orders (inf if it fails)
        assert got <= rdp_privacy_accountant._compute_log_a(q, sigma, alpha) * (1 + 1e-12)
    # the bound is loose: 28 % above the exact value at σ = 1.1, q = 0.1, α = 1.5
    if (sigma, q) == (0.8, 0.1):
        exact = rdp.poisson_gaussian_log_a(1.1, 0.1, 1.5)
        assert rdp_privacy_accountant._compute_log_a(0.1, 1.1, 1.5) > 1.2 * exact


def test_numerical_rdp_closed_forms_and_validation():
    # q = 1: the Gaussian mechanism, RDP = α/(2σ²) per step
    got = rdp.poisson_gaussian_rdp(2.0, 1.0, [1.5, 4.0], steps=3)
    np.testing.assert_allclose(got, [3 * 1.5 / 8, 3 * 4.0 / 8], rtol=1e-9)
    # the result is an upper bound: rounded up by ROUND_UP relative to log A / (α − 1)
    value = rdp.poisson_gaussian_rdp(0.8, 0.1, [2.5])[0]
    exact = _log_a_quad(0.8, 0.1, 2.5) / 1.5
    assert exact < value <= exact * (1 + 2 * rdp.ROUND_UP)
    # overflowing integrand (log A ≈ 2e4): the log-space path against the exact integer form
    big = rdp.poisson_gaussian_log_a(0.3, 0.1, 63)
    assert big == pytest.approx(rdp_privacy_accountant._compute_log_a(0.1, 0.3, 63), rel=1e-12)
    for bad, match in (((1.0, 0.1, 1.0), "order"), ((0.0, 0.1, 2.0), "noise_multiplier"),
                       ((1.0, 0.0, 2.0), "sampling_rate"), ((1.0, 0.1, math.nan), "order")):
        with pytest.raises(ValueError, match=match):
            rdp.poisson_gaussian_log_a(*bad)


# ----------------------------------------------------------------------------------------------
# The configurations where dp_accounting alone is loose, against Opacus's RDP accountant

# Opacus's default RDP orders (opacus.accountants.rdp.RDPAccountant.DEFAULT_ALPHAS)
_OPACUS_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def _opacus_style_epsilon(sigma, q, steps, delta):
    """Independent ε: RDP per order from the quadrature above (integer orders from the exact
    binomial sum A = Σ_k C(α,k)(1−q)^{α−k} q^k e^{(k²−k)/(2σ²)}), then Opacus's conversion
    ε = min_α T·RDP(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α). The fractional orders above 3 are
    skipped to keep the test fast (the optimum of these configurations is below 2; leaving
    orders out can only raise this reference)."""
    best = math.inf
    for alpha in [a for a in _OPACUS_ALPHAS if a < 3 or float(a).is_integer()]:
        if float(alpha).is_integer():
            k = np.arange(alpha + 1)
            log_terms = (special.gammaln(alpha + 1) - special.gammaln(k + 1)
                         - special.gammaln(alpha - k + 1) + (alpha - k) * math.log1p(-q)
                         + k * math.log(q) + (k * k - k) / (2 * sigma**2))
            log_a = special.logsumexp(log_terms)
        else:
            log_a = _log_a_quad(sigma, q, alpha)
        rdp_total = steps * log_a / (alpha - 1)
        eps = (rdp_total - (math.log(delta) + math.log(alpha)) / (alpha - 1)
               + math.log((alpha - 1) / alpha))
        best = min(best, eps)
    return best


@pytest.mark.parametrize(
    "sigma,q,steps,opacus,dp_only",
    [(0.5, 0.1, 10_000, 807, 2231), (0.8, 0.1, 10_000, 226, 325), (1.1, 0.1, 10_000, 110, 135),
     (0.5, 0.1, 100, 35.2, 37.0)],
)
def test_matches_opacus_where_dp_accounting_is_loose(sigma, q, steps, opacus, dp_only):
    report = epsilon_report(sigma, q, steps, DELTA)
    want = _opacus_style_epsilon(sigma, q, steps, DELTA)
    assert report.epsilon <= 1.01 * want and report.epsilon >= 0.99 * want
    assert report.epsilon <= 1.01 * opacus  # published Opacus values
    # dp_accounting alone is much looser here (it drops the small fractional orders)
    direct = _direct(RdpAccountant(), sigma, q, steps, DELTA)
    assert direct == pytest.approx(dp_only, rel=5e-3) and report.epsilon < 0.96 * direct
    assert report.best_order in report.orders_evaluated_numerically
    assert report.best_order < 2 and report.orders_dropped == ()


def test_epsilon_report_fields():
    report = epsilon_report(SIGMA, Q, STEPS, DELTA)
    assert isinstance(report, EpsilonReport)
    assert report.epsilon == epsilon(SIGMA, Q, STEPS, DELTA)
    assert (report.delta, report.accountant) == (DELTA, "rdp")
    # the optimum of the published vector is a fractional order
    assert report.best_order == 8.1 and 8.1 in report.orders_evaluated_numerically
    assert all(a != int(a) for a in report.orders_evaluated_numerically)
    assert report.orders_dropped == () and report.orders_not_converged == ()
    pld = epsilon_report(2.0, 0.1, 20, DELTA, accountant="pld")
    assert pld.best_order is None and pld.orders_evaluated_numerically == ()
    assert pld.epsilon == epsilon(2.0, 0.1, 20, DELTA, accountant="pld")
    classic = epsilon_report(SIGMA, Q, STEPS, DELTA, accountant="rdp_classic")
    assert classic.best_order in TF_PRIVACY_LEGACY_ORDERS
    o = classic.best_order
    legacy = RdpAccountant(orders=[o]).compose(dpsgd_event(SIGMA, Q, STEPS)).rdp[0]
    assert classic.epsilon == pytest.approx(legacy - math.log(DELTA) / (o - 1), rel=1e-8)
    with pytest.raises(ValueError, match="accountant"):
        epsilon_report(SIGMA, Q, STEPS, DELTA, accountant="moments")


def test_calibrate_uses_the_tight_epsilon():
    # ε(σ = 0.5, q = 0.1, T = 100) = 35.2: calibration inverts the tight curve, not dp_accounting's
    target = epsilon(0.5, 0.1, 100, DELTA)
    sigma = calibrate_noise_multiplier(target, 0.1, 100, DELTA)
    assert sigma == pytest.approx(0.5, abs=1e-4) and epsilon(sigma, 0.1, 100, DELTA) <= target
    assert _direct(RdpAccountant(), 0.5, 0.1, 100, DELTA) > target + 1.0


class _OverflowingPLD(PLDAccountant):
    """dp_accounting's PLD where it overflows (σ = 1.1, q = 0.1, 10⁵ steps gives ε = inf after
    ~30 s; simulated here for a fast test)."""

    def get_epsilon(self, target_delta):
        return math.inf


def test_pld_overflow_falls_back_to_rdp_saying_so(monkeypatch):
    monkeypatch.setattr(accounting, "PLDAccountant", _OverflowingPLD)
    with pytest.warns(RuntimeWarning, match="pld accountant overflowed.*reporting the rdp ε"):
        report = epsilon_report(1.1, 0.1, 50, DELTA, accountant="pld")
    assert math.isfinite(report.epsilon)
    assert (report.accountant, report.fallback_from) == ("rdp", "pld")
    assert report.epsilon == epsilon_report(1.1, 0.1, 50, DELTA).epsilon
    with pytest.warns(RuntimeWarning, match="overflowed"):
        assert epsilon(1.1, 0.1, 50, DELTA, accountant="pld") == report.epsilon
    assert epsilon_report(1.1, 0.1, 50, DELTA).fallback_from is None
    monkeypatch.undo()
    assert epsilon_report(2.0, 0.1, 20, DELTA, accountant="pld").fallback_from is None
