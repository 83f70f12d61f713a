"""Accounting against direct dp_accounting calls, published vectors and closed forms."""

import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant, rdp_privacy_accountant

from jaxcurv.privacy import (
    TF_PRIVACY_LEGACY_ORDERS,
    accounting,
    calibrate_noise_multiplier,
    dpsgd_event,
    epsilon,
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
    "sigma,q,steps", [(SIGMA, Q, STEPS), (0.7, 0.01, 500), (2.0, 1.0, 3), (1.0, 0.3, 1)]
)
def test_rdp_equals_direct_dp_accounting(sigma, q, steps):
    assert epsilon(sigma, q, steps, DELTA) == _direct(RdpAccountant(), sigma, q, steps, DELTA)


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
    assert epsilon(SIGMA, Q, STEPS, DELTA, accountant="rdp_classic") == pytest.approx(basic, rel=1e-12)


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


def test_dropped_rdp_orders_are_recorded_and_logging_is_left_alone(caplog):
    # σ = 0.5, q = 0.1: dp_accounting's series for the smallest fractional orders fails to converge.
    logger = logging.getLogger("absl")
    before = (logger.level, list(logger.filters), list(logger.handlers), logger.disabled)
    with caplog.at_level(logging.WARNING):
        eps, dropped = accounting._epsilon_and_dropped_orders(0.5, 0.1, 10, DELTA, "rdp")
        assert "Excluding this order" not in caplog.text
        direct = _direct(RdpAccountant(), 0.5, 0.1, 10, DELTA)  # the raw call does log them
        assert "Excluding this order" in caplog.text
    assert (logger.level, list(logger.filters), list(logger.handlers), logger.disabled) == before
    assert eps == direct == epsilon(0.5, 0.1, 10, DELTA)
    orders = set(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
    assert dropped and set(dropped) <= orders and all(a != int(a) for a in dropped)
    assert accounting._epsilon_and_dropped_orders(SIGMA, Q, STEPS, DELTA, "rdp")[1] == ()
