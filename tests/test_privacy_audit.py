"""Auditing: Clopper–Pearson ε lower bounds and the one-run audit against direct binomial math."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxcurv.privacy import (
    OneRunAudit,
    canary_inclusion,
    epsilon,
    private_gradient,
    epsilon_lower_bound,
    one_run_audit_scan,
    one_run_epsilon_from_counts,
    one_run_epsilon_lower_bound,
    one_run_max_epsilon,
    one_run_p_value,
)

# --- Clopper–Pearson multi-run bound -----------------------------------------------------------


def _reference_lb(tp, fp, p, n, delta, alpha):
    """Independent path: scipy.stats.binomtest(...).proportion_ci(method='exact') is Clopper–Pearson."""
    tpr = stats.binomtest(tp, p).proportion_ci(confidence_level=1 - alpha, method="exact")
    fpr = stats.binomtest(fp, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    cands = [((tpr.low - delta), fpr.high), ((1 - fpr.high - delta), 1 - tpr.low)]
    vals = [math.log(a / b) for a, b in cands if a > 0 and b > 0]
    return max([0.0] + vals)


def test_published_example():
    assert epsilon_lower_bound(900, 10, 1000, 1000) == pytest.approx(3.872, abs=1e-3)


@pytest.mark.parametrize(
    "tp,fp,p,n,delta,alpha",
    [
        (900, 10, 1000, 1000, 0.0, 0.05),
        (900, 10, 1000, 1000, 1e-3, 0.05),
        (50, 0, 100, 200, 0.0, 0.01),
        (100, 1, 100, 100, 0.0, 0.05),
        (990, 500, 1000, 1000, 0.0, 0.05),  # the TNR/FNR branch carries the bound
        (5, 95, 100, 100, 0.0, 0.05),  # worse than chance: nothing certified
        (500, 500, 1000, 1000, 0.0, 0.05),
    ],
)
def test_matches_binomtest_reference(tp, fp, p, n, delta, alpha):
    got = epsilon_lower_bound(tp, fp, p, n, delta=delta, alpha=alpha)
    assert got == pytest.approx(_reference_lb(tp, fp, p, n, delta, alpha), abs=1e-9)


def test_lower_bound_properties():
    base = epsilon_lower_bound(900, 10, 1000, 1000)
    assert epsilon_lower_bound(500, 500, 1000, 1000) == 0.0  # chance level certifies nothing
    assert epsilon_lower_bound(900, 10, 1000, 1000, delta=0.05) < base  # δ only loosens
    assert epsilon_lower_bound(900, 10, 1000, 1000, alpha=0.001) < base  # more confidence, less ε
    assert epsilon_lower_bound(950, 10, 1000, 1000) > base
    # Swapping the neighbouring datasets' roles (TP, FP, P, N) -> (N - FP, P - TP, N, P) swaps the
    # two branches and leaves the bound unchanged.
    assert epsilon_lower_bound(990, 100, 1000, 1000) == pytest.approx(base, abs=1e-12)
    # Here the TNR/FNR branch is the larger one.
    tnr_branch = epsilon_lower_bound(990, 500, 1000, 1000)
    assert tnr_branch > 2.0 and epsilon_lower_bound(990, 500, 1000, 1000, delta=0.4) < tnr_branch


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((11, 0, 10, 10), {}, "true_positives"),
        ((0, 11, 10, 10), {}, "false_positives"),
        ((1, 1, 0, 10), {}, "num_positives"),
        ((-1, 1, 10, 10), {}, "true_positives"),
        ((1, 1, 10, 10), {"alpha": 0.0}, "alpha"),
        ((1, 1, 10, 10), {"delta": 1.0}, "delta"),
        ((1.5, 1, 10, 10), {}, "true_positives"),
    ],
)
def test_lower_bound_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        epsilon_lower_bound(*args, **kwargs)


# --- one-run audit -----------------------------------------------------------------------------


def _paper_p_value(m, r, v, eps, delta):
    """The p-value loop as written in the paper's appendix (independent of our vectorized version)."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, acc = 0.0, 0.0
    for i in range(1, v + 1):
        acc += stats.binom.pmf(v - i, r, q)
        if acc > i * alpha:
            alpha = acc / i
    return min(beta + alpha * delta * 2 * m, 1.0)


def test_canary_inclusion_is_seeded_and_fair():
    a = canary_inclusion(20_000, seed=3)
    assert a.dtype == np.bool_ and a.shape == (20_000,)
    np.testing.assert_array_equal(a, canary_inclusion(20_000, seed=3))
    assert not np.array_equal(a, canary_inclusion(20_000, seed=4))
    # Binomial(m, 1/2) two-sided test; a biased coin (0.45 / 0.55) is rejected at this m.
    assert stats.binomtest(int(a.sum()), a.size, 0.5).pvalue > 1e-3
    assert stats.binomtest(int(a.sum()), a.size, 0.45).pvalue < 1e-6
    assert stats.binomtest(int(a.sum()), a.size, 0.55).pvalue < 1e-6
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(
        canary_inclusion(50, seed=gen), canary_inclusion(50, seed=np.random.default_rng(7))
    )


@pytest.mark.parametrize(
    "m,r,v,eps,delta",
    [
        (1000, 100, 80, 1.0, 0.0),
        (1000, 100, 80, 1.0, 1e-5),
        (500, 200, 150, 0.5, 1e-3),
        (100, 10, 0, 2.0, 1e-2),
    ],
)
def test_p_value_matches_paper_loop(m, r, v, eps, delta):
    assert one_run_p_value(m, r, v, eps, delta=delta) == pytest.approx(
        _paper_p_value(m, r, v, eps, delta), rel=1e-10, abs=1e-300
    )


def test_pure_p_value_is_binomial_tail_and_monotone():
    m, r, v = 1000, 200, 130
    for eps in (0.0, 0.5, 1.0):
        q = math.exp(eps) / (1 + math.exp(eps))
        assert one_run_p_value(m, r, v, eps) == pytest.approx(stats.binom.sf(v - 1, r, q), rel=1e-12)
    ps = [one_run_p_value(m, r, v, e) for e in np.linspace(0, 3, 20)]
    assert all(a <= b for a, b in zip(ps, ps[1:]))


def test_epsilon_from_counts_is_the_rejection_boundary():
    m, r, v, conf = 1000, 200, 140, 0.95
    for delta in (0.0, 1e-5):
        eps = one_run_epsilon_from_counts(m, r, v, delta=delta, confidence=conf)
        assert eps > 0
        assert one_run_p_value(m, r, v, eps, delta=delta) < 1 - conf  # rejected at the bound
        assert one_run_p_value(m, r, v, eps + 1e-4, delta=delta) >= 1 - conf  # not beyond it
    # Monotone: more correct guesses ⇒ larger bound; larger δ ⇒ smaller bound.
    by_v = [one_run_epsilon_from_counts(m, r, vv) for vv in (110, 130, 150, 170)]
    assert all(a < b for a, b in zip(by_v, by_v[1:]))
    by_delta = [one_run_epsilon_from_counts(m, r, 170, delta=d) for d in (0.0, 1e-6, 1e-4)]
    assert all(a > b for a, b in zip(by_delta, by_delta[1:]))
    assert one_run_epsilon_from_counts(m, r, 100) == 0.0  # chance level


def test_paper_example_value():
    # The appendix example of the paper: m = 1000, r = v = 600, δ = 1e-5, 95% confidence.
    eps = one_run_epsilon_from_counts(1000, 600, 600, delta=1e-5, confidence=0.95)
    p = _paper_p_value(1000, 600, 600, eps, 1e-5)
    assert p < 0.05 <= _paper_p_value(1000, 600, 600, eps + 1e-4, 1e-5)


def test_max_epsilon_closed_form():
    for r in (10, 100, 1000):
        eps = one_run_max_epsilon(r)
        assert (special.expit(eps)) ** r == pytest.approx(0.05, rel=1e-9)
        assert one_run_epsilon_from_counts(10 * r, r, r) == pytest.approx(eps, abs=1e-5)


def test_perfect_separation_reaches_the_maximum():
    m = 1000
    included = canary_inclusion(m, seed=0)
    scores = np.where(included, 1.0, 0.0) + np.random.default_rng(1).uniform(0, 0.5, m)
    k = 100
    res = one_run_epsilon_lower_bound(
        scores, included, num_guesses_positive=k, num_guesses_negative=k
    )
    assert isinstance(res, OneRunAudit)
    assert res.num_correct == 2 * k
    assert res.epsilon == pytest.approx(one_run_max_epsilon(2 * k), abs=1e-5)
    # The scan with a Bonferroni correction over K candidates: max at significance 0.05 / K.
    scan = one_run_audit_scan(scores, included)
    num_cands = 14  # default grid: 7 sizes × {(k, 0), (k, k)} for m = 1000
    assert scan.significance == pytest.approx(0.05 / num_cands)
    r = scan.num_guesses_positive + scan.num_guesses_negative
    assert scan.num_correct == r
    assert scan.epsilon == pytest.approx(one_run_max_epsilon(r, confidence=1 - 0.05 / num_cands), abs=1e-5)


def test_random_scores_certify_nothing_at_the_stated_rate():
    # Type-I check: scores independent of inclusion (an ε = 0 mechanism). At 95% confidence the
    # scan must report ε_LB > 0 in at most ~5% of runs (binomial upper limit over 200 runs).
    m, runs = 500, 200
    rng = np.random.default_rng(11)
    positives = 0
    values = []
    for i in range(runs):
        included = canary_inclusion(m, seed=rng)
        scores = rng.normal(size=m)
        res = one_run_audit_scan(scores, included)
        values.append(res.epsilon)
        positives += res.epsilon > 0
    assert positives <= stats.binom.ppf(0.999, runs, 0.05)
    assert np.median(values) == 0.0
    # Without the union bound the best of 14 looks is positive far more often — the correction matters.
    uncorrected = sum(
        one_run_audit_scan(rng.normal(size=m), canary_inclusion(m, seed=rng), correction="none").epsilon > 0
        for _ in range(100)
    )
    assert uncorrected > positives * 100 / runs


def test_randomized_response_audit_is_valid_and_tight():
    # An ε₀-DP "training run": randomized response on each canary's inclusion (correct with
    # probability e^{ε₀}/(1+e^{ε₀})), the worst case the theorem is tight for. Validity: ε_LB > ε₀
    # in at most ~5% of runs. Tightness: with m = 20,000 guesses the typical bound is close to ε₀.
    eps0, m, runs = 1.0, 20_000, 40
    rng = np.random.default_rng(5)
    bounds = []
    for _ in range(runs):
        included = canary_inclusion(m, seed=rng)
        truthful = rng.random(m) < special.expit(eps0)
        reported = np.where(truthful, included, ~included)
        num_in = int(reported.sum())
        scores = reported + rng.uniform(0, 0.01, m)  # continuous scores, same ranking
        res = one_run_epsilon_lower_bound(
            scores, included, num_guesses_positive=num_in, num_guesses_negative=m - num_in
        )
        bounds.append(res.epsilon)
    bounds = np.asarray(bounds)
    assert np.sum(bounds > eps0) <= stats.binom.ppf(0.999, runs, 0.05)
    assert 0.9 * eps0 < np.median(bounds) <= eps0
    # A 2ε₀ mechanism audited the same way would exceed ε₀ almost always: the test can fail.
    included = canary_inclusion(m, seed=rng)
    reported = np.where(rng.random(m) < special.expit(2 * eps0), included, ~included)
    num_in = int(reported.sum())
    res = one_run_epsilon_lower_bound(
        reported + rng.uniform(0, 0.01, m), included,
        num_guesses_positive=num_in, num_guesses_negative=m - num_in,
    )
    assert res.epsilon > 1.5 * eps0


def test_guess_counting_against_a_loop():
    rng = np.random.default_rng(2)
    m = 300
    included = canary_inclusion(m, seed=rng)
    scores = rng.normal(size=m) + 0.8 * included
    kp, kn = 40, 25
    order = sorted(range(m), key=lambda i: -scores[i])
    correct = sum(included[i] for i in order[:kp]) + sum(not included[i] for i in order[m - kn :])
    res = one_run_epsilon_lower_bound(scores, included, num_guesses_positive=kp, num_guesses_negative=kn)
    assert res.num_correct == correct
    assert res.epsilon == pytest.approx(one_run_epsilon_from_counts(m, kp + kn, correct), abs=1e-12)


def test_one_run_validation():
    inc = canary_inclusion(10, seed=0)
    s = np.arange(10.0)
    with pytest.raises(ValueError, match="exceeds"):
        one_run_epsilon_lower_bound(s, inc, num_guesses_positive=8, num_guesses_negative=3)
    with pytest.raises(ValueError, match="at least one guess"):
        one_run_epsilon_lower_bound(s, inc, num_guesses_positive=0)
    with pytest.raises(ValueError, match="bool"):
        one_run_epsilon_lower_bound(s, inc.astype(int), num_guesses_positive=2)
    with pytest.raises(ValueError, match="finite"):
        one_run_epsilon_lower_bound(np.r_[s[:-1], np.nan], inc, num_guesses_positive=2)
    with pytest.raises(ValueError, match="confidence"):
        one_run_epsilon_lower_bound(s, inc, num_guesses_positive=2, confidence=1.0)
    with pytest.raises(ValueError, match="correction"):
        one_run_audit_scan(s, inc, correction="holm")
    with pytest.raises(ValueError, match="num_correct"):
        one_run_p_value(10, 5, 6, 1.0)
    with pytest.raises(ValueError, match="delta"):
        one_run_epsilon_from_counts(10, 5, 5, delta=-0.1)


def test_audit_of_a_dp_sgd_step_stays_below_its_accounted_epsilon():
    # White-box one-run audit of one full-batch DP-SGD step: canary i's gradient is a large spike on
    # coordinate i (clipped to C), so the noisy update's coordinate i scores canary i. The audited
    # ε_LB must stay below the PLD-accounted ε; an implementation that secretly uses 0.15× the
    # claimed noise is caught (its audit exceeds the claim).
    m, clip, sigma, delta = 1000, 1.0, 2.0, 1e-5
    included = canary_inclusion(m, seed=21)
    spikes = {"w": jnp.asarray(np.eye(m, dtype=np.float32) * 10.0)}
    step = jax.jit(private_gradient)
    accounted = epsilon(sigma, 1.0, 1, delta, accountant="pld")
    key = jax.random.PRNGKey(4)
    kw = dict(l2_clip=clip, expected_batch_size=1.0)
    honest, _ = step(spikes, included, key, noise_multiplier=sigma, **kw)
    audit = one_run_audit_scan(np.asarray(honest["w"]), included, delta=delta)
    assert 0.0 < audit.epsilon < accounted
    buggy, _ = step(spikes, included, key, noise_multiplier=0.15 * sigma, **kw)
    assert one_run_audit_scan(np.asarray(buggy["w"]), included, delta=delta).epsilon > accounted
