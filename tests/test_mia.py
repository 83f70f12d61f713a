"""Tests for jaxcurv.mia: signals, baselines, LiRA, RMIA, metrics, leave-one-model-out.

Ground truth: naive Python loops, scipy.stats, scikit-learn metrics, closed forms, and a real
tiny ensemble of scikit-learn models trained on random halves of the digits data.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import special, stats
from sklearn import metrics as skm
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from jaxcurv import mia
from jaxcurv.mia.metrics import _drop_intermediate, _metrics_from_curve, _weighted_roc

F64_TOL = dict(rtol=1e-12, atol=1e-12)


def _balanced_masks(num_models: int, num_examples: int, rng) -> np.ndarray:
    """Every example IN exactly K/2 models (as jaxcurv.data.subset_masks promises)."""
    order = np.argsort(rng.random((num_models, num_examples)), axis=0)
    m = np.zeros((num_models, num_examples), dtype=bool)
    m[order[: num_models // 2], np.arange(num_examples)] = True
    return m


# ----------------------------------------------------------------------------------------------
# signals


def _naive_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_logit_confidence_matches_naive_float64_formula():
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.normal(size=(40, 7))
    labels = rng.integers(0, 7, size=40)
    got = mia.logit_confidence(logits, labels)
    want = []
    for z, y in zip(logits, labels):
        p = _naive_softmax(z)
        want.append(math.log(p[y]) - math.log(sum(p[j] for j in range(7) if j != y)))
    np.testing.assert_allclose(got, want, **F64_TOL)
    assert got.dtype == np.float64


def test_logit_confidence_finite_when_p_y_rounds_to_one():
    got = mia.logit_confidence(np.array([[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]]), np.array([0, 0]))
    np.testing.assert_allclose(got, [1000.0 - math.log(2.0), -1000.0], rtol=1e-15)
    # float32 softmax of [40, 0, 0] rounds p_y to 1, so the usual log(p / (1 − p)) is +inf ...
    z32 = np.array([40.0, 0.0, 0.0], dtype=np.float32)
    p32 = np.exp(z32) / np.exp(z32).sum()
    with np.errstate(divide="ignore"):
        assert np.isinf(np.log(p32[0]) - np.log(1 - p32[0]))
    # ... while ours (float64 math on float32 input) is exact: 40 − log 2.
    np.testing.assert_allclose(mia.logit_confidence(z32, 0), 40.0 - math.log(2.0), rtol=1e-15)


def test_logit_confidence_broadcasts_labels_over_models_and_augmentations():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 2, 4))  # (K, N, A, C)
    labels = rng.integers(0, 4, size=5)
    got = mia.logit_confidence(logits, labels[:, None])
    assert got.shape == (3, 5, 2)
    for k in range(3):
        for a in range(2):
            np.testing.assert_allclose(
                got[k, :, a], mia.logit_confidence(logits[k, :, a], labels), **F64_TOL
            )


@pytest.mark.parametrize(
    "logits, labels, match",
    [
        (np.zeros((2, 3)), np.array([0, 3]), "labels must lie"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integers"),
        (np.zeros((2, 1)), np.array([0, 0]), "C >= 2"),
        (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), "broadcast"),
    ],
)
def test_logit_signals_validate(logits, labels, match):
    for fn in (mia.logit_confidence, mia.cross_entropy, mia.modified_entropy):
        with pytest.raises(ValueError, match=match):
            fn(logits, labels)


def test_cross_entropy_and_true_class_probability_match_scipy():
    rng = np.random.default_rng(2)
    logits = 4.0 * rng.normal(size=(30, 5))
    labels = rng.integers(0, 5, size=30)
    p = special.softmax(logits, axis=1)[np.arange(30), labels]
    np.testing.assert_allclose(mia.true_class_probability(logits, labels), p, **F64_TOL)
    np.testing.assert_allclose(mia.cross_entropy(logits, labels), -np.log(p), **F64_TOL)
    p_t = special.softmax(logits / 2.0, axis=1)[np.arange(30), labels]
    np.testing.assert_allclose(
        mia.true_class_probability(logits, labels, temperature=2.0), p_t, **F64_TOL
    )


def test_cross_entropy_keeps_relative_precision_when_confident():
    """−log p_y for logits [L, 0, 0] is log1p(2 e^{−L}) ≈ 2 e^{−L}; logsumexp(z) − z_y gives 0."""
    for big in (20.0, 40.0, 300.0):
        got = mia.cross_entropy(np.array([big, 0.0, 0.0]), 0)
        assert got == pytest.approx(math.log1p(2 * math.exp(-big)), rel=1e-14)
    assert special.logsumexp([40.0, 0.0, 0.0]) - 40.0 == 0.0  # the naive form underflows
    # and for confidently wrong predictions: −log p_y = L + log1p(e^{−L} + ...) ≈ L
    assert mia.cross_entropy(np.array([300.0, 0.0, 0.0]), 1) == pytest.approx(300.0, rel=1e-15)


def test_modified_entropy_matches_naive_loop():
    rng = np.random.default_rng(3)
    logits = 2.0 * rng.normal(size=(25, 6))
    labels = rng.integers(0, 6, size=25)
    want = []
    for z, y in zip(logits, labels):
        p = _naive_softmax(z)
        val = -(1 - p[y]) * math.log(p[y])
        for i in range(6):
            if i != y:
                val -= p[i] * math.log(1 - p[i])
        want.append(val)
    np.testing.assert_allclose(mia.modified_entropy(logits, labels), want, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(mia.mentr_attack(logits, labels), -np.array(want), rtol=1e-11)


@pytest.mark.parametrize("big", [30.0, 200.0])
def test_modified_entropy_exact_for_confident_predictions(big):
    """logits [L, 0, 0]: closed form with log1p (the naive 1 − p_y loses all digits)."""
    e = math.exp(-big)
    p1 = e / (1 + 2 * e)
    p0 = 1 / (1 + 2 * e)
    # label 0: −(1 − p0) log p0 − 2 p1 log(1 − p1), with 1 − p0 = 2e/(1 + 2e), log p0 = −log1p(2e)
    right = (2 * e / (1 + 2 * e)) * math.log1p(2 * e) - 2 * p1 * math.log1p(-p1)
    # label 1: −(1 − p1) log p1 − p0 log(1 − p0) − p2 log(1 − p2), log(1 − p0) = log(2e/(1 + 2e))
    log1m_p0 = math.log(2.0) - big - math.log1p(2 * e)
    wrong = -(1 - p1) * math.log(p1) - p0 * log1m_p0 - p1 * math.log1p(-p1)
    got = mia.modified_entropy(np.array([[big, 0.0, 0.0]] * 2), np.array([0, 1]))
    np.testing.assert_allclose(got, [right, wrong], rtol=1e-12)
    assert np.all(np.isfinite(got)) and np.all(got >= 0)


def test_loss_attack_negates():
    np.testing.assert_array_equal(mia.loss_attack([0.5, 2.0]), [-0.5, -2.0])


# ----------------------------------------------------------------------------------------------
# calibrated loss and Attack-R


@pytest.fixture(scope="module")
def loss_data():
    rng = np.random.default_rng(4)
    num_models, num = 10, 40
    m = _balanced_masks(num_models, num, rng)
    shadows = rng.gamma(2.0, 0.5, size=(num_models, num)) * np.where(m, 0.5, 1.0)
    target = rng.gamma(2.0, 0.5, size=num)
    keep = rng.random((num_models, num)) < 0.8
    keep[:2] = True  # at least one IN and one OUT kept per example is checked below
    return target, shadows, m, keep


def test_calibrated_loss_matches_naive_loop(loss_data):
    target, shadows, m, keep = loss_data
    for mask in (None, keep):
        use = np.ones_like(m) if mask is None else mask
        for ref in ("out", "midpoint"):
            want = []
            for i in range(target.size):
                outs = [shadows[k, i] for k in range(m.shape[0]) if use[k, i] and not m[k, i]]
                ins = [shadows[k, i] for k in range(m.shape[0]) if use[k, i] and m[k, i]]
                tau = np.mean(outs) if ref == "out" else 0.5 * (np.mean(outs) + np.mean(ins))
                want.append(tau - target[i])
            got = mia.calibrated_loss(target, shadows, m, reference=ref, shadow_mask=mask)
            np.testing.assert_allclose(got, want, **F64_TOL)


def test_attack_r_matches_ye_et_al_interpolation(loss_data):
    target, shadows, m, keep = loss_data
    for mask in (None, keep):
        use = np.ones_like(m) if mask is None else mask
        want = []
        for i in range(target.size):
            ref = np.array([shadows[k, i] for k in range(m.shape[0]) if use[k, i] and not m[k, i]])
            grid = np.sort(np.concatenate([ref, [1000.0, 0.0]]))
            want.append(-np.interp(target[i], grid, np.linspace(0, 1, ref.size + 2)))
        got = mia.attack_r(target, shadows, m, shadow_mask=mask)
        np.testing.assert_allclose(got, want, **F64_TOL)


def test_attack_r_ties_and_range():
    # refs [2, 2, 3]: grid [0, 2, 2, 3, 1000] at levels k/4; ℓ = 2 ties grid points 1 and 2.
    shadows = np.array([[2.0], [2.0], [3.0], [9.0]])
    shadow_in = np.array([[False], [False], [False], [True]])
    assert mia.attack_r(np.array([2.0]), shadows, shadow_in)[0] == pytest.approx(-0.375)
    assert mia.attack_r(np.array([0.0]), shadows, shadow_in)[0] == 0.0
    assert mia.attack_r(np.array([2000.0]), shadows, shadow_in)[0] == -1.0
    with pytest.raises(ValueError, match="losses"):
        mia.attack_r(np.array([-1.0]), shadows, shadow_in)
    with pytest.raises(ValueError, match="OUT"):
        mia.attack_r(np.array([1.0]), shadows, np.ones((4, 1), bool))


def test_attack_r_fixed_alpha_matches_curvature_clues_code(loss_data):
    target, shadows, m, _ = loss_data
    want = [
        np.percentile(shadows[~m[:, i], i], 1e-4 * 100) - target[i] for i in range(target.size)
    ]
    np.testing.assert_allclose(mia.attack_r(target, shadows, m, alpha=1e-4), want, **F64_TOL)


def test_loss_baselines_reject_augmented_inputs(loss_data):
    target, shadows, m, _ = loss_data
    with pytest.raises(ValueError, match="one statistic per example"):
        mia.calibrated_loss(target[:, None], shadows[..., None], m)


# ----------------------------------------------------------------------------------------------
# LiRA


@pytest.fixture(scope="module")
def gauss_data():
    rng = np.random.default_rng(5)
    num_models, num, num_aug = 12, 30, 2
    m = _balanced_masks(num_models, num, rng)
    mu = rng.normal(size=(num, num_aug))
    scale = rng.uniform(0.5, 2.0, size=(num, num_aug))
    shadows = mu + 0.8 * m[..., None] + scale * rng.normal(size=(num_models, num, num_aug))
    target = mu + scale * rng.normal(size=(num, num_aug))
    return target, shadows, m


def _naive_lira(target, shadows, m, *, online, fixed, alternative="greater"):
    num_models, num, num_aug = shadows.shape
    pooled = {}
    for grp, sel in (("in", m), ("out", ~m)):
        pooled[grp] = []
        for a in range(num_aug):
            ss = sum(((shadows[sel[:, i], i, a] - shadows[sel[:, i], i, a].mean()) ** 2).sum()
                     for i in range(num))
            dof = sum(sel[:, i].sum() - 1 for i in range(num))
            pooled[grp].append(math.sqrt(ss / dof))
    out = []
    for i in range(num):
        total = 0.0
        for a in range(num_aug):
            ins, outs = shadows[m[:, i], i, a], shadows[~m[:, i], i, a]
            sd_in = pooled["in"][a] if fixed else np.std(ins)
            sd_out = pooled["out"][a] if fixed else np.std(outs)
            t = target[i, a]
            if online:
                total += stats.norm.logpdf(t, ins.mean(), sd_in) - stats.norm.logpdf(
                    t, outs.mean(), sd_out
                )
            elif alternative == "greater":
                total -= stats.norm.logsf(t, outs.mean(), sd_out)
            else:
                total -= stats.norm.logcdf(t, outs.mean(), sd_out)
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed", [False, True])
def test_lira_matches_naive_scipy_loop(gauss_data, online, fixed):
    target, shadows, m = gauss_data
    got = mia.lira(target, shadows, m, online=online, fixed_variance=fixed)
    np.testing.assert_allclose(
        got, _naive_lira(target, shadows, m, online=online, fixed=fixed), rtol=1e-10, atol=1e-10
    )
    one = mia.lira(target[:, 0], shadows[..., 0], m, online=online, fixed_variance=fixed)
    np.testing.assert_allclose(
        one, _naive_lira(target[:, :1], shadows[..., :1], m, online=online, fixed=fixed),
        rtol=1e-10, atol=1e-10,
    )


def test_lira_offline_alternative_less(gauss_data):
    target, shadows, m = gauss_data
    got = mia.lira(target, shadows, m, online=False, alternative="less")
    want = _naive_lira(target, shadows, m, online=False, fixed=False, alternative="less")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="alternative"):
        mia.lira(target, shadows, m, alternative="two-sided")


def test_lira_recovers_neyman_pearson_optimal_auroc():
    """Per-example Gaussians, equal variances: the optimal test has AUROC Φ(Δ / (σ√2))."""
    rng = np.random.default_rng(6)
    num_models, num, delta, sigma = 128, 20000, 1.0, 1.0
    mu_out = 2.0 * rng.normal(size=num)
    mu_in = mu_out + delta
    m = rng.random((num_models, num)) < 0.5
    shadows = np.where(m, mu_in, mu_out) + sigma * rng.normal(size=(num_models, num))
    is_member = np.arange(num) < num // 2
    # stratified (quasi-random) target noise: the optimal test's empirical AUROC is the closed form
    q = stats.norm.ppf((np.arange(num // 2) + 0.5) / (num // 2))
    noise = np.concatenate([rng.permutation(q), rng.permutation(q)])
    target = np.where(is_member, mu_in, mu_out) + sigma * noise
    closed = stats.norm.cdf(delta / (sigma * math.sqrt(2.0)))
    oracle = skm.roc_auc_score(is_member, target - 0.5 * (mu_in + mu_out))
    assert abs(oracle - closed) < 1e-4
    for kw in ({}, {"fixed_variance": True}, {"online": False}):
        auroc = mia.roc_metrics(mia.lira(target, shadows, m, **kw), is_member)["auroc"]
        assert abs(auroc - closed) < 0.01, (kw, auroc, closed)
        for wrong in (2 / 3, 3 / 2):  # a wrong effect size would be rejected by the same check
            wrong_closed = stats.norm.cdf(wrong * delta / (sigma * math.sqrt(2.0)))
            assert abs(auroc - wrong_closed) > 0.01


def _pooled_group_variance(shadows, sel):
    """Σ_i Σ (s − mean_i)² / Σ_i (n_i − 1) over the examples i of a group (sel (K, N)), per aug."""
    num = shadows.shape[1]
    ss = sum(((shadows[sel[:, i], i] - shadows[sel[:, i], i].mean(0)) ** 2).sum(0)
             for i in range(num) if sel[:, i].any())
    return ss / sum(max(sel[:, i].sum() - 1, 0) for i in range(num))


def test_lira_imputes_a_missing_group_with_warning(gauss_data):
    """An example without IN (OUT) shadows gets the IN (OUT) Gaussian imputed: the other group's
    centre shifted by the mean IN − OUT difference Δ of the examples with both groups, the
    group's pooled variance; the same online test as every other example."""
    target, shadows, m = gauss_data
    m2 = m.copy()
    m2[:, :5] = False  # examples 0..4: no IN shadow
    m2[:, 5] = True  # example 5: no OUT shadow
    with pytest.warns(UserWarning) as record:
        got = mia.lira(target, shadows, m2)
    messages = " ".join(str(r.message) for r in record)
    assert "5 of 30 example(s) have no IN" in messages
    assert "1 of 30 example(s) have no OUT" in messages
    delta = np.mean([shadows[m2[:, i], i].mean(0) - shadows[~m2[:, i], i].mean(0)
                     for i in range(6, 30)], axis=0)
    var_in, var_out = _pooled_group_variance(shadows, m2), _pooled_group_variance(shadows, ~m2)
    for i in range(5):
        outs = shadows[:, i]
        want = (stats.norm.logpdf(target[i], outs.mean(0) + delta, np.sqrt(var_in))
                - stats.norm.logpdf(target[i], outs.mean(0), outs.std(0))).sum()
        assert got[i] == pytest.approx(want, rel=1e-10)
    ins = shadows[:, 5]
    want5 = (stats.norm.logpdf(target[5], ins.mean(0), ins.std(0))
             - stats.norm.logpdf(target[5], ins.mean(0) - delta, np.sqrt(var_out))).sum()
    assert got[5] == pytest.approx(want5, rel=1e-10)
    np.testing.assert_allclose(got[6:], mia.lira(target, shadows, m)[6:], **F64_TOL)


def test_lira_one_sided_tests_only_where_a_group_is_empty_everywhere(gauss_data):
    """No IN shadow for any example: online LiRA is offline LiRA for all of them; no OUT shadow
    for any: the one-sided test against the IN Gaussian, log P[Z ≤ t], for all of them."""
    target, shadows, m = gauss_data
    none_in = np.zeros_like(m)
    with pytest.warns(UserWarning, match="30 of 30 example\\(s\\) have no IN"):
        got = mia.lira(target, shadows, none_in)
    np.testing.assert_allclose(got, mia.lira(target, shadows, none_in, online=False), **F64_TOL)
    with pytest.warns(UserWarning, match="30 of 30 example\\(s\\) have no OUT"):
        got = mia.lira(target, shadows, ~none_in)
    want = stats.norm.logcdf(target, shadows.mean(0), shadows.std(0)).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_lira_rejects_examples_without_any_shadow(gauss_data):
    target, shadows, m = gauss_data
    mask = np.ones_like(m)
    mask[:, 3] = False
    for online in (True, False):
        with pytest.raises(ValueError, match="1 example\\(s\\) have no shadow statistics"):
            mia.lira(target, shadows, m, online=online, shadow_mask=mask)
    with pytest.raises(ValueError, match="no shadow statistics"):
        mia.curvature_nll(np.exp(target), np.exp(shadows), m, shadow_mask=mask)


def test_lira_pools_variance_for_single_shadow_groups_with_warning(gauss_data):
    target, shadows, m = gauss_data
    m2 = m.copy()
    m2[:, 0] = False
    m2[0, 0] = True  # example 0: exactly one IN shadow
    with pytest.warns(UserWarning, match="1 example\\(s\\) have fewer than 2 IN"):
        got = mia.lira(target, shadows, m2)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"target_stat": np.full(30, np.nan)}, "target_stat contains 30 NaN"),
        ({"shadow_stats": np.full((12, 30), np.inf)}, "shadow_stats contains"),
        ({"shadow_stats": np.zeros((12, 29))}, "shadow_stats must have shape"),
        ({"shadow_in": np.zeros((12, 29), bool)}, "shadow_in must have shape"),
        ({"shadow_in": np.full((12, 30), 2)}, "boolean"),
        ({"target_stat": np.zeros((30, 2, 2))}, "target_stat must have shape"),
    ],
)
def test_lira_validates_inputs(gauss_data, bad, match):
    target, shadows, m = gauss_data
    args = {"target_stat": target[:, 0], "shadow_stats": shadows[..., 0], "shadow_in": m}
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        mia.lira(**args)


def test_lira_accepts_jax_arrays(gauss_data):
    import jax.numpy as jnp

    target, shadows, m = gauss_data
    got = mia.lira(jnp.asarray(target, jnp.float32), jnp.asarray(shadows, jnp.float32), m)
    want = mia.lira(target.astype(np.float32), shadows.astype(np.float32), m)
    np.testing.assert_allclose(got, want, **F64_TOL)


# ----------------------------------------------------------------------------------------------
# RMIA


def _naive_rmia(px, ref_x, in_x, pz, ref_z, *, online, a, gamma):
    num_ref = ref_x.shape[0]

    def groups(i, ref, ref_in):
        ins = [ref[r, i] for r in range(num_ref) if ref_in[r, i]]
        outs = [ref[r, i] for r in range(num_ref) if not ref_in[r, i]]
        return ins, outs

    if online:  # a fitted to the targets: Σ(1 − mean_IN) / Σ(1 − mean_OUT), clipped to [0, 1]
        num = den = 0.0
        for i in range(px.shape[0]):
            ins, outs = groups(i, ref_x, in_x)
            if ins and outs:
                num += np.sum(1 - np.mean(ins, axis=0))
                den += np.sum(1 - np.mean(outs, axis=0))
        a = min(1.0, max(0.0, num / den))

    def marginal(i, ref, ref_in):
        ins, outs = groups(i, ref, ref_in)
        if online and ins:
            return 0.5 * (np.mean(ins, axis=0) + np.mean(outs, axis=0))
        return 0.5 * ((1 + a) * np.mean(outs, axis=0) + (1 - a))

    no_in_z = np.zeros(ref_z.shape[:2], bool)
    scores = []
    for i in range(px.shape[0]):
        ratio_x = px[i] / marginal(i, ref_x, in_x)
        count = 0
        for j in range(pz.shape[0]):
            lr = ratio_x / (pz[j] / marginal(j, ref_z, no_in_z))
            passed = np.atleast_1d(lr >= gamma)
            count += passed.sum() * 2 > passed.size
        scores.append(count / pz.shape[0])
    return np.array(scores)


@pytest.fixture(scope="module")
def rmia_data():
    rng = np.random.default_rng(7)
    num_ref, num, num_pop, num_aug = 8, 25, 40, 3
    in_x = _balanced_masks(num_ref, num, rng)
    logit_x = rng.normal(size=(num, num_aug))
    noise = 0.3 * rng.normal(size=(num_ref, num, num_aug))
    ref_x = special.expit(logit_x + 1.0 * in_x[..., None] + noise)
    is_member = rng.random(num) < 0.5
    px = special.expit(logit_x + 1.0 * is_member[:, None] + 0.3 * rng.normal(size=(num, num_aug)))
    logit_z = rng.normal(size=(num_pop, num_aug))
    ref_z = special.expit(logit_z + 0.3 * rng.normal(size=(num_ref, num_pop, num_aug)))
    pz = special.expit(logit_z + 0.3 * rng.normal(size=(num_pop, num_aug)))
    return px, ref_x, in_x, pz, ref_z, is_member


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("num_aug", [1, 3])
@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_rmia_matches_naive_loop(rmia_data, online, num_aug, gamma):
    px, ref_x, in_x, pz, ref_z, _ = rmia_data
    sl = (slice(None), 0) if num_aug == 1 else (slice(None), slice(None))
    args = (px[sl], ref_x[(slice(None),) + sl], pz[sl], ref_z[(slice(None),) + sl])
    got = mia.rmia(*args, reference_in=in_x, online=online, offline_a=0.3, gamma=gamma)
    want = _naive_rmia(args[0], args[1], in_x, args[2], args[3], online=online, a=0.3, gamma=gamma)
    np.testing.assert_allclose(got, want, **F64_TOL)


def test_rmia_beats_chance_on_synthetic_members():
    rng = np.random.default_rng(8)
    num_ref, num, num_pop = 8, 2000, 1000
    in_x = _balanced_masks(num_ref, num, rng)
    difficulty = 1.5 * rng.normal(size=num)
    ref_x = special.expit(difficulty + 1.0 * in_x + 0.5 * rng.normal(size=(num_ref, num)))
    is_member = rng.random(num) < 0.5
    px = special.expit(difficulty + 1.0 * is_member + 0.5 * rng.normal(size=num))
    dz = 1.5 * rng.normal(size=num_pop)
    ref_z = special.expit(dz + 0.5 * rng.normal(size=(num_ref, num_pop)))
    pz = special.expit(dz + 0.5 * rng.normal(size=num_pop))
    online = mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x)
    offline = mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, online=False)
    for scores in (online, offline):
        res = mia.roc_metrics(scores, is_member, bootstrap=200)
        assert res["auroc_ci"][0] > 0.6, res
    # the population ratio matters: a plain (target-only) loss attack is much weaker here
    plain = mia.roc_metrics(px, is_member)["auroc"]
    assert plain < mia.roc_metrics(online, is_member)["auroc"] - 0.05


def _dp_like_rmia_data(rng, num_ref, num=3000, num_pop=1500):
    """Weakly fit (DP-like) models as in a 6-member DP-SGD digits audit: true-label probabilities
    ≈ 0.08–0.18 (10 classes), logit = difficulty (sd 0.3) + 0.1·member + model noise (sd 0.05);
    the population is OUT of every model."""
    def probs(d, member, shape):
        return special.expit(d + 0.1 * member + 0.05 * rng.normal(size=shape))

    in_x = _balanced_masks(num_ref, num, rng)
    d_x = -2.0 + 0.3 * rng.normal(size=num)
    is_member = rng.random(num) < 0.5
    d_z = -2.0 + 0.3 * rng.normal(size=num_pop)
    return (probs(d_x, is_member, num), probs(d_x, in_x, in_x.shape), in_x,
            probs(d_z, 0, num_pop), probs(d_z, 0, (num_ref, num_pop)), is_member)


@pytest.mark.parametrize("num_ref", [2, 4, 8])
def test_rmia_beats_loss_and_is_not_degenerate_with_few_reference_models(num_ref):
    rng = np.random.default_rng(20 + num_ref)
    px, ref_x, in_x, pz, ref_z, is_member = _dp_like_rmia_data(rng, num_ref)
    loss_auroc = mia.roc_metrics(px, is_member)["auroc"]  # p(x|θ) alone: the loss attack
    scores = mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x)
    res = mia.roc_metrics(scores, is_member, bootstrap=100)
    assert np.unique(scores).size > 100 and 0.05 < scores.mean() < 0.95
    assert res["auroc_ci"][0] > loss_auroc + 0.03, (res["auroc"], loss_auroc)
    for kw in ({"trim": 0.2}, {"online": False, "offline_a": 1.0}):
        other = mia.roc_metrics(mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, **kw),
                                is_member)["auroc"]
        assert other > loss_auroc + 0.03, (kw, other, loss_auroc)
    # a fixed a = 0.33 (p_IN ≈ 0.33·p_OUT + 0.67, right for models that fit their data) puts
    # p(z) ≈ 0.41 against p(x) ≈ 0.12: every LR(x, z) ≥ 1, every score 1 (the audit's failure)
    fixed = mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, population_a=0.33)
    assert np.all(fixed == 1.0)


def test_rmia_leave_one_model_out_not_degenerate_in_a_six_member_ensemble():
    rng = np.random.default_rng(30)
    num, num_pop = 2000, 1000
    m = _balanced_masks(6, num, rng)
    d_x = -2.0 + 0.3 * rng.normal(size=num)
    probs = special.expit(d_x + 0.1 * m + 0.05 * rng.normal(size=(6, num)))
    d_z = -2.0 + 0.3 * rng.normal(size=num_pop)
    pop = special.expit(d_z + 0.05 * rng.normal(size=(6, num_pop)))
    scores = mia.rmia_leave_one_model_out(probs, m, pop)
    assert np.unique(scores).size > 100
    assert mia.roc_metrics(scores, m)["auroc"] > mia.roc_metrics(probs, m)["auroc"] + 0.03
    old = mia.rmia_leave_one_model_out(probs, m, pop, population_a=0.33)
    assert mia.roc_metrics(old, m)["auroc"] == 0.5


def test_rmia_fitted_a_recovers_the_linear_model():
    """p_IN = a·p_OUT + (1 − a) exactly: the fitted a is a, and then p(z) of a population sample
    equals the online p(x) of a target with the same OUT probabilities."""
    rng = np.random.default_rng(31)
    a_true, num = 0.6, 50
    p_out = rng.uniform(0.05, 0.9, size=num)
    in_x = _balanced_masks(4, num, rng)
    ref = np.where(in_x, a_true * p_out + 1 - a_true, p_out)
    rmia_mod = __import__("jaxcurv.mia.rmia", fromlist=["_fit_a"])
    t, s, m_in, m_out, _ = mia._common._prepare_shadow_inputs(p_out, ref, in_x)
    assert rmia_mod._fit_a(s, m_in, m_out) == pytest.approx(a_true, rel=1e-12)
    # targets and population with identical reference probabilities get identical ratios
    px = rng.uniform(0.05, 0.9, size=num)
    ref_z = np.broadcast_to(p_out, ref.shape)
    # (γ = 1 ∓ 1e-9: the self-pair has LR = 1 up to rounding, the two p(·) take different paths)
    got = mia.rmia(px, ref, px, ref_z, reference_in=in_x, gamma=1.0 - 1e-9)
    lr_equal = mia.rmia(px, ref, px, ref_z, reference_in=in_x, gamma=1.0 + 1e-9)
    ratio = px / (0.5 * ((1 + a_true) * p_out + 1 - a_true))  # the same r = p / p(·) both sides
    ranks = (np.argsort(np.argsort(ratio)) + 1) / num  # Pr_z[r_z ≤ r_x]
    np.testing.assert_allclose(got, ranks, atol=1e-12)
    np.testing.assert_allclose(lr_equal, ranks - 1 / num, atol=1e-12)


def test_rmia_zero_target_probability_scores_zero(rmia_data):
    px, ref_x, in_x, pz, ref_z, _ = rmia_data
    for sl in ((slice(None), 0), (slice(None), slice(None))):
        got = mia.rmia(0.0 * px[sl], ref_x[(slice(None),) + sl], pz[sl],
                       ref_z[(slice(None),) + sl], reference_in=in_x)
        np.testing.assert_array_equal(got, 0.0)


def test_rmia_validates(rmia_data):
    px, ref_x, in_x, pz, ref_z, _ = rmia_data
    with pytest.raises(ValueError, match="reference_in"):
        mia.rmia(px, ref_x, pz, ref_z)
    with pytest.raises(ValueError, match="gamma"):
        mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, gamma=0.0)
    with pytest.raises(ValueError, match="offline_a"):
        mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, offline_a=1.5)
    with pytest.raises(ValueError, match="probabilities must lie"):
        mia.rmia(px + 1.0, ref_x, pz, ref_z, reference_in=in_x)
    with pytest.raises(ValueError, match="population arrays must match"):
        mia.rmia(px, ref_x, pz[:, 0], ref_z[..., 0], reference_in=in_x)
    with pytest.raises(ValueError, match="population_a"):
        mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, population_a=-0.1)
    for bad in (-0.1, 0.5, float("nan")):
        with pytest.raises(ValueError, match="trim"):
            mia.rmia(px, ref_x, pz, ref_z, reference_in=in_x, trim=bad)


# ----------------------------------------------------------------------------------------------
# metrics


def _naive_threshold_metrics(scores, y):
    pos, neg = y.sum(), (~y).sum()
    rows = []
    for thr in np.append(np.unique(scores), np.inf):
        pred = scores >= thr
        rows.append(((pred & y).sum() / pos, (pred & ~y).sum() / neg))
    tpr, fpr = np.array(rows).T
    return {
        "balanced_accuracy": max(0.5 * (t + 1 - f) for t, f in zip(tpr, fpr)),
        "tpr_at_fpr_0_1pct": max(t for t, f in zip(tpr, fpr) if f <= 1e-3),
        "tpr_at_fpr_1pct": max(t for t, f in zip(tpr, fpr) if f <= 1e-2),
    }


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(9)
    y = rng.random(5000) < 0.4
    scores = np.round(rng.normal(size=5000) + 1.2 * y, 1)  # many ties
    scores[y & (rng.random(5000) < 0.05)] += 6.0  # a low-FPR tail of confident members
    return scores, y


def test_roc_metrics_agree_with_sklearn_and_naive_loops(scored):
    scores, y = scored
    res = mia.roc_metrics(scores, y)
    assert abs(res["auroc"] - skm.roc_auc_score(y, scores)) < 1e-9
    naive = _naive_threshold_metrics(scores, y)
    for key, val in naive.items():
        assert abs(res[key] - val) < 1e-9, key
    assert res["tpr_at_fpr_0_1pct"] > 0.02  # the tail makes the low-FPR metric non-trivial
    assert res["num_members"] == y.sum() and res["num_nonmembers"] == (~y).sum()
    fpr, tpr = mia.roc_curve(scores, y)
    fpr_sk, tpr_sk, _ = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_sk, atol=1e-9)
    np.testing.assert_allclose(tpr, tpr_sk, atol=1e-9)
    assert abs(np.trapezoid(tpr, fpr) - res["auroc"]) < 1e-9


def test_balanced_accuracy_eer_reproduces_curvature_clues_notebook(scored):
    scores, y = scored
    fpr, tpr, thr = skm.roc_curve(y, scores, pos_label=1)
    best = thr[np.argmin(np.abs(fpr + tpr - 1))]
    want = skm.balanced_accuracy_score(y, (scores >= best).astype(int))
    res = mia.roc_metrics(scores, y)
    assert abs(res["balanced_accuracy_eer"] - want) < 1e-9
    assert res["balanced_accuracy_eer"] <= res["balanced_accuracy"] + 1e-12


@pytest.mark.parametrize("ties", ["none", "rounded", "three values"])
def test_one_sort_gives_sklearns_dropped_curve_and_auroc_bit_for_bit(ties):
    """roc_metrics sorts once: the notebooks' curve (drop_intermediate=True) and roc_auc_score
    come from the full curve, equal to sklearn's own calls to the last bit."""
    rng = np.random.default_rng({"none": 0, "rounded": 1, "three values": 2}[ties])
    for _ in range(200):
        n = int(rng.integers(3, 300))
        s = {"none": rng.normal(size=n), "rounded": np.round(rng.normal(size=n), 1),
             "three values": rng.integers(0, 3, n).astype(float)}[ties]
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
        fpr_d, tpr_d = _drop_intermediate(fpr, tpr, int((~y).sum()), int(y.sum()))
        want_fpr, want_tpr, _ = skm.roc_curve(y, s)
        np.testing.assert_array_equal(fpr_d, want_fpr)
        np.testing.assert_array_equal(tpr_d, want_tpr)
        assert mia.roc_metrics(s, y)["auroc"] == skm.roc_auc_score(y, s)


def test_roc_metrics_ties_ranked_as_half():
    y = np.array([True, False, True, False])
    assert mia.roc_metrics(np.array([1.0, 1.0, 1.0, 1.0]), y)["auroc"] == 0.5
    assert mia.roc_metrics(np.array([2.0, 1.0, 1.0, 1.0]), y)["auroc"] == 0.75


def _sklearn_low_fpr(scores, y, level):
    """scikit-learn's ROC: the largest TPR with FPR ≤ level, and the smallest FPR above 0."""
    fpr, tpr, _ = skm.roc_curve(y, scores, drop_intermediate=False)
    return tpr[fpr <= level].max(), fpr[fpr > 0].min()


def test_low_fpr_metrics_without_ties_equal_sklearn():
    rng = np.random.default_rng(16)
    y = np.arange(6000) < 3000  # 3000 non-members: 0.1 % FPR = 3 false positives
    scores = rng.normal(size=6000) + 1.5 * y
    res = mia.roc_metrics(scores, y)
    for key, level in (("tpr_at_fpr_0_1pct", 1e-3), ("tpr_at_fpr_1pct", 1e-2)):
        want, smallest = _sklearn_low_fpr(scores, y, level)
        assert res[key] == pytest.approx(want, abs=1e-12) and want > 0
        assert res[f"{key}_resolvable"] and res[f"{key}_note"] is None
    assert res["min_fpr"] == pytest.approx(smallest) == pytest.approx(1 / 3000)
    assert res["top_nonmember_ties"] == 1


def test_low_fpr_metrics_with_ties_at_the_top_are_nan_with_a_note():
    """RMIA-like scores in [0, 1]: 12 of 5000 non-members (0.24 %) tie at the maximum 1.0, so no
    threshold has 0 < FPR ≤ 0.1 %; sklearn's curve jumps from FPR 0 to 0.24 %, and "TPR at
    0.1 % FPR" would be the FPR = 0 point (0 % here: no member scores above 1.0)."""
    rng = np.random.default_rng(17)
    y = np.arange(10000) < 5000
    scores = np.clip(rng.uniform(0.0, 0.99, 10000) + 0.2 * y, 0.0, 0.99)
    scores[np.flatnonzero(~y)[:12]] = 1.0
    scores[np.flatnonzero(y)[:40]] = 1.0
    res = mia.roc_metrics(scores, y, bootstrap=20)
    at_0_1, smallest = _sklearn_low_fpr(scores, y, 1e-3)
    assert at_0_1 == 0.0 and smallest == pytest.approx(12 / 5000)  # what was reported before
    assert math.isnan(res["tpr_at_fpr_0_1pct"]) and not res["tpr_at_fpr_0_1pct_resolvable"]
    assert all(math.isnan(v) for v in res["tpr_at_fpr_0_1pct_ci"])
    note = res["tpr_at_fpr_0_1pct_note"]
    assert note.startswith("not resolvable at 0.1 % FPR") and note.endswith("is 0.24 %")
    assert "12 of 5000 non-members tie at the top non-member score 1," in note
    assert res["min_fpr"] == pytest.approx(smallest) and res["top_nonmember_ties"] == 12
    want_1pct, _ = _sklearn_low_fpr(scores, y, 1e-2)
    assert res["tpr_at_fpr_1pct_resolvable"]
    assert res["tpr_at_fpr_1pct"] == pytest.approx(want_1pct, abs=1e-12)
    assert want_1pct > 40 / 5000
    lo, hi = res["tpr_at_fpr_1pct_ci"]
    assert lo <= res["tpr_at_fpr_1pct"] <= hi


@pytest.mark.parametrize("num_nonmembers, ties, resolvable", [
    (900, 1, False), (999, 1, False), (1000, 1, True), (1000, 2, False), (2000, 2, True),
    (2000, 3, False)])
def test_low_fpr_resolution_boundaries(num_nonmembers, ties, resolvable):
    """0.1 % FPR needs ≥ 1000 non-members and at most 0.1 % of them tied at the top."""
    rng = np.random.default_rng(num_nonmembers + ties)
    neg = rng.uniform(0.0, 1.0, num_nonmembers)
    neg[:ties] = 2.0
    scores = np.concatenate([neg, rng.uniform(0.5, 3.0, 500)])
    y = np.arange(scores.size) >= num_nonmembers
    res = mia.roc_metrics(scores, y)
    info = mia.fpr_resolution(scores, y, 1e-3)
    assert res["tpr_at_fpr_0_1pct_resolvable"] is info["resolvable"] is resolvable
    want, smallest = _sklearn_low_fpr(scores, y, 1e-3)
    assert info["min_fpr"] == pytest.approx(smallest) == pytest.approx(ties / num_nonmembers)
    if resolvable:
        assert res["tpr_at_fpr_0_1pct"] == pytest.approx(want, abs=1e-12)
        assert info["note"] is None
    else:
        assert math.isnan(res["tpr_at_fpr_0_1pct"])
        cause = "needs ≥ 1000 non-member scores" if num_nonmembers < 1000 else "tie at the top"
        assert cause in info["note"] == res["tpr_at_fpr_0_1pct_note"]
        if num_nonmembers < 1000:
            assert f"has {num_nonmembers}" in info["note"]
    assert info["needs_nonmembers"] == 1000 and info["num_nonmembers"] == num_nonmembers
    with pytest.raises(ValueError, match="level"):
        mia.fpr_resolution(scores, y, 0.0)


@pytest.mark.parametrize(
    "scores, y, match",
    [
        (np.array([0.1, np.nan]), np.array([True, False]), "NaN"),
        (np.array([0.1, 0.2]), np.array([True, True]), "both members and non-members"),
        (np.array([0.1, 0.2]), np.array([True, False, True]), "same shape"),
    ],
)
def test_roc_metrics_validate(scores, y, match):
    with pytest.raises(ValueError, match=match):
        mia.roc_metrics(scores, y)


def test_weighted_roc_core_equals_sklearn_on_resampled_data(scored):
    scores, y = scored
    rng = np.random.default_rng(10)
    order = np.argsort(-scores, kind="stable")
    s_sorted, y_sorted = scores[order], y[order]
    group_end = np.append(np.flatnonzero(np.diff(s_sorted) != 0), scores.size - 1)
    weights = rng.multinomial(scores.size, np.full(scores.size, 1 / scores.size), size=3)
    fpr, tpr = _weighted_roc(y_sorted, group_end, weights.astype(float))
    met = _metrics_from_curve(fpr, tpr)
    for b in range(3):
        rs, ry = np.repeat(s_sorted, weights[b]), np.repeat(y_sorted, weights[b])
        assert abs(met["auroc"][b] - skm.roc_auc_score(ry, rs)) < 1e-9
        naive = _naive_threshold_metrics(rs, ry)
        for key, val in naive.items():
            assert abs(met[key][b] - val) < 1e-9, key


def _binormal(rng, num, d):
    y = np.arange(num) < num // 2
    return rng.normal(size=num) + d * y, y


def test_bootstrap_ci_is_calibrated_covers_truth_and_shrinks():
    rng = np.random.default_rng(11)
    d, num = 1.0, 400
    truth = stats.norm.cdf(d / math.sqrt(2.0))
    # Monte Carlo sampling sd of the AUROC over independent datasets
    true_sd = np.std([skm.roc_auc_score(*_binormal(rng, num, d)[::-1]) for _ in range(300)])
    half_widths, covered = [], 0
    for rep in range(20):
        s, y = _binormal(rng, num, d)
        lo, hi = mia.roc_metrics(s, y, bootstrap=300, seed=rep)["auroc_ci"]
        half_widths.append((hi - lo) / 2)
        covered += lo <= truth <= hi
    ratio = np.mean(half_widths) / (stats.norm.ppf(0.975) * true_sd)
    assert 0.8 < ratio < 1.25, ratio
    assert not 0.8 < ratio * 2 / 3 < 1.25 and not 0.8 < ratio * 3 / 2 < 1.25
    assert covered >= 16, covered
    s4, y4 = _binormal(rng, 4 * num, d)
    lo4, hi4 = mia.roc_metrics(s4, y4, bootstrap=300)["auroc_ci"]
    shrink = (hi4 - lo4) / 2 / np.mean(half_widths)
    assert 0.4 < shrink < 0.62, shrink  # ≈ 1/√4


def test_bootstrap_keys_and_cluster_option(scored):
    scores, y = scored
    res = mia.roc_metrics(scores[:1000], y[:1000], bootstrap=50, seed=3)
    for key in ("auroc", "balanced_accuracy", "tpr_at_fpr_1pct"):
        lo, hi = res[f"{key}_ci"]
        assert lo <= hi
    # about 600 non-members cannot resolve 0.1 % FPR: no value, no interval
    assert not res["tpr_at_fpr_0_1pct_resolvable"] and res["num_nonmembers"] < 1000
    assert all(math.isnan(v) for v in res["tpr_at_fpr_0_1pct_ci"])
    assert res == mia.roc_metrics(scores[:1000], y[:1000], bootstrap=50, seed=3)
    cl = np.arange(1000) // 10
    res_c = mia.roc_metrics(scores[:1000], y[:1000], bootstrap=50, cluster=cl)
    assert res_c["auroc_ci"][0] < res["auroc"] < res_c["auroc_ci"][1]
    with pytest.raises(ValueError, match="cluster must have the shape"):
        mia.roc_metrics(scores, y, bootstrap=5, cluster=cl)
    with pytest.raises(ValueError, match="both members and non-members"):
        mia.roc_metrics(scores[:1000], y[:1000], bootstrap=20, cluster=y[:1000])


# ----------------------------------------------------------------------------------------------
# leave-one-model-out


def _naive_balancing_mask(m_others, m_target):
    keep = np.ones_like(m_others)
    for i in range(m_target.size):
        for j in range(m_others.shape[0]):
            if m_others[j, i] != m_target[i]:
                keep[j, i] = False
                break
    return keep


@pytest.mark.parametrize("balance", [False, True])
def test_leave_one_model_out_equals_manual_loop(gauss_data, balance):
    _, shadows, m = gauss_data
    got = mia.leave_one_model_out(mia.lira, shadows, m, balance=balance, fixed_variance=True)
    for k in range(m.shape[0]):
        o = np.arange(m.shape[0]) != k
        mask = _naive_balancing_mask(m[o], m[k]) if balance else None
        want = mia.lira(shadows[k], shadows[o], m[o], fixed_variance=True, shadow_mask=mask)
        np.testing.assert_allclose(got[k], want, **F64_TOL)


def test_leave_one_model_out_runs_every_shadow_attack(loss_data):
    _, shadows, m, _ = loss_data
    for attack, kw in (
        (mia.lira, {}), (mia.lira, {"online": False}), (mia.curvature_lr, {}),
        (mia.curvature_nll, {}), (mia.curvature_nll, {"paper_compatible": True}),
        (mia.calibrated_loss, {}), (mia.attack_r, {}),
    ):
        scores = mia.leave_one_model_out(attack, shadows, m, **kw)
        assert scores.shape == m.shape and np.all(np.isfinite(scores)), attack


def test_leave_one_model_out_balance_removes_the_null_bias():
    """No membership signal at all: the target's own group being one shadow smaller biases
    LiRA's plug-in likelihoods (null AUROC ≈ 0.489); balancing restores 0.5."""
    rng = np.random.default_rng(12)
    num_models, num = 16, 20000
    m = _balanced_masks(num_models, num, rng)
    stats_ = 2.0 * rng.normal(size=num) + rng.normal(size=(num_models, num))
    biased = mia.roc_metrics(mia.leave_one_model_out(mia.lira, stats_, m, balance=False), m)
    fair = mia.roc_metrics(mia.leave_one_model_out(mia.lira, stats_, m), m)
    assert biased["auroc"] < 0.495, biased["auroc"]
    assert abs(fair["auroc"] - 0.5) < 0.004, fair["auroc"]


def _naive_lomo_lira(stats_, m, *, fixed):
    """Leave-one-model-out online LiRA by plain loops over targets and examples: shadows balanced
    as ``_naive_balancing_mask``; an empty group's Gaussian imputed (centre = the other centre
    ± Δ, Δ = mean IN − OUT difference over the examples with both groups, else of all IN minus
    all OUT statistics; variance pooled over examples, else the other group's)."""
    num_models, num = m.shape
    out = np.empty((num_models, num))
    for k in range(num_models):
        o = [j for j in range(num_models) if j != k]
        keep = _naive_balancing_mask(m[o], m[k])
        grp = {g: [[stats_[o[r], i] for r in range(num_models - 1)
                    if keep[r, i] and m[o[r], i] == (g == "in")] for i in range(num)]
               for g in ("in", "out")}
        both = [i for i in range(num) if grp["in"][i] and grp["out"][i]]
        if both:
            delta = np.mean([np.mean(grp["in"][i]) - np.mean(grp["out"][i]) for i in both])
        else:
            delta = np.mean(sum(grp["in"], [])) - np.mean(sum(grp["out"], []))
        pooled = {}
        for g, lists in grp.items():
            dof = sum(len(x) - 1 for x in lists if x)
            ss = sum(((np.array(x) - np.mean(x)) ** 2).sum() for x in lists if x)
            pooled[g] = ss / dof if dof else math.nan
        for i in range(num):
            def var(g, i=i):
                x, other = grp[g][i], "out" if g == "in" else "in"
                if not x:
                    return pooled[g] if pooled[g] > 0 else var(other)
                return pooled[g] if fixed or len(x) < 2 or np.var(x) == 0 else np.var(x)

            ins, outs = grp["in"][i], grp["out"][i]
            c_in = np.mean(ins) if ins else np.mean(outs) + delta
            c_out = np.mean(outs) if outs else np.mean(ins) - delta
            t = stats_[k, i]
            out[k, i] = (stats.norm.logpdf(t, c_in, math.sqrt(var("in")))
                         - stats.norm.logpdf(t, c_out, math.sqrt(var("out"))))
    return out


@pytest.mark.parametrize("num_models", [3, 5])
@pytest.mark.parametrize("fixed", [False, True])
def test_leave_one_model_out_with_empty_groups_equals_naive_loop(num_models, fixed):
    """The first K members of a balanced 10-member design: some examples are IN all or none of
    a target's shadows, so their IN or OUT Gaussian is imputed."""
    rng = np.random.default_rng(15 + num_models)
    m = _balanced_masks(10, 40, rng)[:num_models]
    stats_ = rng.normal(size=40) + 0.8 * m + rng.normal(size=m.shape)
    assert np.any(m.sum(0) <= 1) and np.any(m.sum(0) >= num_models - 1)  # groups do go empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = mia.leave_one_model_out(mia.lira, stats_, m, fixed_variance=fixed)
    np.testing.assert_allclose(got, _naive_lomo_lira(stats_, m, fixed=fixed), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("num_models", [3, 5, 8])
def test_leave_one_model_out_balanced_is_not_inverted_with_few_models(num_models):
    """The first K of 16 balanced members (the audit's zero-order rows use K = 8): an example's
    count of IN members among them carries its membership, and with balancing the examples IN
    (almost) all of them lack an OUT group, those IN (almost) none an IN group. One-sided
    fallbacks put the former at scores ≤ 0 and the latter ≥ 0 and ranked members below chance
    (AUROC 0.37 at K = 3). With the imputed group every score is the same test: above chance,
    at most the Neyman–Pearson AUROC Φ(Δ/(σ√2)), and not worse than the unbalanced attack."""
    rng = np.random.default_rng(40 + num_models)
    num, delta, sigma = 4000, 1.0, 0.7
    m = _balanced_masks(16, num, rng)[:num_models]
    stats_ = rng.normal(size=num) + delta * m + sigma * rng.normal(size=m.shape)
    optimal = stats.norm.cdf(delta / (sigma * math.sqrt(2.0)))
    for attack, sign, kw in (
        (mia.lira, 1.0, {"fixed_variance": True}),
        (mia.lira, 1.0, {"fixed_variance": True, "online": False}),
        (mia.curvature_lr, -1.0, {"fixed_variance": True, "log_transform": False}),
        (mia.curvature_nll, -1.0, {"log_transform": False}),
    ):
        auroc = {}
        for balance in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = mia.leave_one_model_out(attack, sign * stats_, m, balance=balance, **kw)
            auroc[balance] = skm.roc_auc_score(m.ravel(), scores.ravel())
        assert 0.65 < auroc[True] < optimal + 0.01, (attack.__name__, kw, auroc, optimal)
        assert auroc[True] > auroc[False] - 0.02, (attack.__name__, kw, auroc)


def test_leave_one_model_out_merges_warnings_and_checks_attack():
    rng = np.random.default_rng(13)
    m = _balanced_masks(6, 6, rng)
    m[:, 0] = False
    m[0, 0] = True  # example 0 is IN model 0 only
    s = rng.normal(size=(6, 6))
    with pytest.warns(UserWarning) as record:
        mia.leave_one_model_out(mia.lira, s, m, balance=False)
    msgs = [str(r.message) for r in record]
    assert len(msgs) == 2, msgs
    # target 0: example 0 has no IN shadow; targets 1..5: example 0 has a single IN shadow
    assert any("target model(s) [0] (1 of 6)" in msg and "no IN" in msg for msg in msgs), msgs
    assert any("(5 of 6)" in msg and "fewer than 2 IN" in msg for msg in msgs), msgs
    with pytest.raises(ValueError, match="shadow_mask"):
        mia.leave_one_model_out(lambda t, s_, i: t, s, m)
    with pytest.raises(ValueError, match="K >= 2"):
        mia.leave_one_model_out(mia.lira, s[:1], m[:1])
    with pytest.raises(ValueError, match="in_mask"):
        mia.leave_one_model_out(mia.lira, s, m[:, :3])


def test_rmia_leave_one_model_out_equals_manual_loop(rmia_data):
    _, ref_x, in_x, _, ref_z, _ = rmia_data
    got = mia.rmia_leave_one_model_out(ref_x[..., 0], in_x, ref_z[..., 0], gamma=1.5)
    for k in range(in_x.shape[0]):
        o = np.arange(in_x.shape[0]) != k
        want = mia.rmia(
            ref_x[k, :, 0], ref_x[o, :, 0], ref_z[k, :, 0], ref_z[o, :, 0], reference_in=in_x[o],
            gamma=1.5, reference_mask=_naive_balancing_mask(in_x[o], in_x[k]),
        )
        np.testing.assert_allclose(got[k], want, **F64_TOL)


# ----------------------------------------------------------------------------------------------
# a real tiny ensemble: 16 logistic regressions on random halves of 300 digits


@pytest.fixture(scope="module")
def digits_ensemble():
    x_all, y_all = load_digits(return_X_y=True)
    rng = np.random.default_rng(14)
    perm = rng.permutation(len(x_all))
    idx, pop = perm[:300], perm[300:800]
    x, y = x_all[idx] / 16.0, y_all[idx]
    num_models = 16
    m = _balanced_masks(num_models, 300, rng)
    logits, logits_pop = [], []
    with threadpool_limits(1):  # tiny problems: BLAS threads only oversubscribe the cores
        for k in range(num_models):
            # weak regularization, 150 examples of 64 features: fits its training half exactly
            clf = LogisticRegression(C=100.0, max_iter=300)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lbfgs may stop at max_iter: still overfits
                clf.fit(x[m[k]], y[m[k]])
            logits.append(clf.decision_function(x))
            logits_pop.append(clf.decision_function(x_all[pop] / 16.0))
    return np.stack(logits), y, m, np.stack(logits_pop), y_all[pop], rng


def test_lira_on_a_real_overfit_ensemble(digits_ensemble):
    logits, y, m, _, _, rng = digits_ensemble
    acc = logits.argmax(-1) == y
    assert acc[m].mean() > acc[~m].mean() + 0.04  # the models overfit
    phi = mia.logit_confidence(logits, y)
    clusters = np.broadcast_to(np.arange(y.size), m.shape)
    scores = mia.leave_one_model_out(mia.lira, phi, m)
    res = mia.roc_metrics(scores, m, bootstrap=200, cluster=clusters)
    assert res["auroc"] > 0.6 and res["auroc_ci"][0] > 0.5, res
    # membership labels shuffled (a fresh balanced split, unrelated to training): ≈ chance
    fake = _balanced_masks(*m.shape, rng)
    null = mia.roc_metrics(
        mia.leave_one_model_out(mia.lira, phi, fake), fake, bootstrap=200, cluster=clusters
    )
    assert null["auroc_ci"][0] < 0.5 < null["auroc_ci"][1], null
    assert abs(null["auroc"] - 0.5) < 0.03


def test_rmia_and_baselines_on_the_real_ensemble(digits_ensemble):
    logits, y, m, logits_pop, y_pop, _ = digits_ensemble
    probs = mia.true_class_probability(logits, y)
    probs_pop = mia.true_class_probability(logits_pop, y_pop)
    loss = mia.cross_entropy(logits, y)
    results = {
        "rmia": mia.rmia_leave_one_model_out(probs, m, probs_pop),
        "rmia_offline": mia.rmia_leave_one_model_out(probs, m, probs_pop, online=False),
        "calibrated": mia.leave_one_model_out(mia.calibrated_loss, loss, m),
        "attack_r": mia.leave_one_model_out(mia.attack_r, loss, m),
        "loss": mia.loss_attack(loss),
        "mentr": mia.mentr_attack(logits, y),
    }
    for name, scores in results.items():
        assert mia.roc_metrics(scores, m)["auroc"] > 0.55, name
