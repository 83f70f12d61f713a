"""Closed forms of the papers' bounds and fits that recover known parameters from noisy data."""

import math

import numpy as np
import pytest

from jaxcurv.privacy import (
    curvature_bound,
    curvature_bound_model,
    fit_curvature_privacy,
    fit_loss_bound,
    fit_memorization_curvature,
    loss_bound_model,
    memorization_bound,
    stability_bound,
)


def test_memorization_bound_closed_form():
    assert memorization_bound(0.0) == 0.0
    assert memorization_bound(1.0) == pytest.approx(1 - math.exp(-1), rel=1e-15)
    assert memorization_bound(100.0) == pytest.approx(1.0, abs=1e-15)
    eps = np.array([1e-12, 0.1, 1.0, 10.0])
    out = memorization_bound(eps)
    assert isinstance(out, np.ndarray) and out.shape == (4,)
    # Small-ε accuracy: 1 − e^{−ε} ≈ ε − ε²/2 (no cancellation in -expm1).
    assert out[0] == pytest.approx(1e-12, rel=1e-9)
    np.testing.assert_allclose(out[1:], 1 - np.exp(-eps[1:]), rtol=1e-14)
    assert np.all(np.diff(out) > 0) and np.all(out < 1)


def test_memorization_bound_is_the_dp_ratio_bound():
    # ε-DP: P_in ≤ e^ε P_out ⇒ P_in − P_out ≤ P_in (1 − e^{−ε}) ≤ 1 − e^{−ε}; tight at P_in = 1.
    eps = 0.7
    p_out = math.exp(-eps)
    assert memorization_bound(eps) == pytest.approx(1.0 - p_out)


def test_stability_and_curvature_bounds():
    assert stability_bound(2.0, loss_bound=3.0) == pytest.approx(3.0 * (1 - math.exp(-2.0)))
    assert stability_bound(2.0) == pytest.approx(memorization_bound(2.0))
    # Lemma 5.2 improves Wang et al.'s L(e^ε − 1): L(1 − e^{−ε}) = L(e^ε − 1)e^{−ε} ≤ L(e^ε − 1).
    for eps in (0.1, 1.0, 5.0):
        assert stability_bound(eps, loss_bound=2.0) <= 2.0 * math.expm1(eps)
    got = curvature_bound(np.array([0.5, 4.0]), loss_bound=2.5, num_examples=999, c2=0.3)
    np.testing.assert_allclose(got, 2.5 * 1000 * (1 - np.exp(-np.array([0.5, 4.0]))) + 0.3)
    assert curvature_bound(0.0, loss_bound=1.0, num_examples=10) == 0.0


@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (memorization_bound, {}),
        (stability_bound, {"loss_bound": 1.0}),
        (curvature_bound, {"loss_bound": 1.0, "num_examples": 10}),
    ],
)
def test_bounds_reject_bad_epsilon(fn, kwargs):
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon"):
            fn(bad, **kwargs)


def test_bound_parameter_validation():
    with pytest.raises(ValueError, match="loss_bound"):
        stability_bound(1.0, loss_bound=0.0)
    with pytest.raises(ValueError, match="num_examples"):
        curvature_bound(1.0, loss_bound=1.0, num_examples=-5)
    with pytest.raises(ValueError, match="c2"):
        curvature_bound(1.0, loss_bound=1.0, num_examples=5, c2=math.nan)


def test_fit_memorization_curvature_recovers_parameters():
    rng = np.random.default_rng(0)
    n = 50
    curv = rng.uniform(0.0, 2.0, n)
    m_sub = rng.integers(20, 500, n).astype(float)
    p1, c1 = 0.004, 0.05
    mem = p1 * np.sqrt(m_sub) * curv + c1 + rng.normal(0, 0.005, n)
    fit = fit_memorization_curvature(mem, curv, m_sub)
    assert fit.p1 == pytest.approx(p1, rel=0.05)
    assert fit.c1 == pytest.approx(c1, abs=0.005)
    assert fit.r2 > 0.98
    np.testing.assert_allclose(fit.predicted, fit.p1 * np.sqrt(m_sub) * curv + fit.c1)
    # Against an unconstrained least-squares solve (the constraints are inactive here).
    design = np.stack([np.sqrt(m_sub) * curv, np.ones(n)], axis=1)
    coef, *_ = np.linalg.lstsq(design, mem, rcond=None)
    np.testing.assert_allclose([fit.p1, fit.c1], coef, rtol=1e-6)


def test_fit_memorization_curvature_respects_positivity():
    curv = np.linspace(0, 1, 20)
    mem = -0.5 * curv + 0.4  # a negative slope is outside eq. 15's p₁ > 0
    fit = fit_memorization_curvature(mem, curv, 1.0)
    assert fit.p1 == 0.0 and fit.c1 == pytest.approx(np.mean(mem))
    assert fit.r2 == pytest.approx(0.0, abs=1e-12)


def test_fit_loss_bound_recovers_parameters():
    rng = np.random.default_rng(1)
    eps = np.linspace(0.5, 30, 40)
    a, b, c = 0.8, 2.5, 0.15
    loss = loss_bound_model(eps, a, b, c) + rng.normal(0, 0.01, eps.size)
    fit = fit_loss_bound(eps, loss)
    assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), rel=0.05)
    assert fit.r2 > 0.99


def test_fit_curvature_privacy_recovers_parameters():
    rng = np.random.default_rng(2)
    eps = np.arange(5.0, 101.0, 5.0)  # the paper's grid: ε = 5 … 100
    eps = np.concatenate([np.array([0.5, 1.0, 2.0, 3.0]), eps])
    m = 999
    a, b, c, c2 = 2e-4, 1e-3, 0.08, 0.02
    clean = curvature_bound_model(eps, a, b, c, c2, num_examples=m)
    curv = clean * (1 + rng.normal(0, 0.01, eps.size))
    fit = fit_curvature_privacy(eps, curv, num_examples=m)
    assert fit.a == pytest.approx(a, rel=0.1)
    assert fit.b == pytest.approx(b, rel=0.1)
    assert fit.c == pytest.approx(c, rel=0.15)
    assert fit.c2 == pytest.approx(c2, abs=0.01)
    assert fit.r2 > 0.99
    np.testing.assert_allclose(
        fit.predicted, curvature_bound_model(eps, fit.a, fit.b, fit.c, fit.c2, num_examples=m)
    )
    # The fit is the least-squares optimum: perturbing any parameter increases the residual.
    sse = np.sum((fit.predicted - curv) ** 2)
    for i, delta in enumerate([1e-5, 1e-4, 1e-3, 1e-3]):
        params = [fit.a, fit.b, fit.c, fit.c2]
        params[i] += delta
        assert np.sum((curvature_bound_model(eps, *params, num_examples=m) - curv) ** 2) > sse


def test_fit_r2_falls_for_the_wrong_model():
    # An oscillating curve has no structure eq. 16 can explain: R² must say so.
    eps = np.linspace(1, 50, 30)
    y = np.sin(eps)  # no structure the model can explain
    fit = fit_curvature_privacy(eps, y, num_examples=100)
    assert fit.r2 < 0.5


def test_fit_validation():
    with pytest.raises(ValueError, match="same length"):
        fit_memorization_curvature([0.1, 0.2], [1.0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        fit_loss_bound([1.0, 2.0, math.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least"):
        fit_curvature_privacy([1.0, 2.0], [1.0, 2.0], num_examples=10)
    with pytest.raises(ValueError, match="subpopulation_size"):
        fit_memorization_curvature([0.1, 0.2], [1.0, 2.0], 0.0)
