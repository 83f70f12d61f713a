"""Curvature Clues attacks: corrected statistics vs the published notebooks' statistics.

The reference implementation below is transcribed from DeepakTatachar/Curvature-Clues,
conditonal_mia_aug_cifar100.ipynb (identical in the CIFAR-10 notebook): log_err, nll,
likelihood, get_score_dist_params, get_likelihood_ratio, get_nll_ratio. Only np.NaN → np.nan and
np.row_stack → np.vstack were changed (numpy 2).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from jaxcurv import mia

EPS = 1e-22


# ---- transcription of the published notebook ----------------------------------------------


def _nb_log_err(x):
    return np.log(x + EPS)


def _nb_nll(curv_score, mean, var):
    ll = (
        -(((curv_score - mean) ** 2) / (2 * (var**2)))
        - 0.5 * np.log(var**2)
        - 0.5 * np.log(2 * np.pi)
    )
    return -ll


def _nb_likelihood(curv_score, mean, var):
    nll = (
        -(((curv_score - mean) ** 2) / (2 * (var**2)))
        - 0.5 * np.log(var**2)
        - 0.5 * np.log(2 * np.pi)
    )
    return np.exp(nll)


def _nb_get_score_dist_params(scores, masks, num_augs):
    means_in, means_out, var_in, var_out = [], [], [], []
    for aug in range(num_augs):
        in_scores = np.where(masks == 1, scores[aug], np.nan)
        out_scores = np.where(masks == 0, scores[aug], np.nan)
        means_in.append(np.nanmean(in_scores, axis=1))
        means_out.append(np.nanmean(out_scores, axis=1))
        var_in.append(np.nanvar(in_scores, axis=1))
        var_out.append(np.nanvar(out_scores, axis=1))
    return {
        "means_in": np.vstack(means_in),
        "means_out": np.vstack(means_out),
        "var_in": np.vstack(var_in),
        "var_out": np.vstack(var_out),
    }


def _nb_get_likelihood_ratio(test_scores, dist_params, num_augs):
    in_likelihood = np.zeros((test_scores.shape[1]))
    out_likelihood = np.zeros_like(in_likelihood)
    for aug in range(num_augs):
        test_score_aug = test_scores[aug, :, 0]
        in_likelihood += _nb_likelihood(
            test_score_aug, dist_params["means_in"][aug], dist_params["var_in"][aug] + EPS
        )
        out_likelihood += _nb_likelihood(
            test_score_aug, dist_params["means_out"][aug], dist_params["var_out"][aug] + EPS
        )
    return in_likelihood / (out_likelihood + EPS)


def _nb_get_nll_ratio(test_scores, dist_params, num_augs):
    in_likelihood = np.zeros((test_scores.shape[1]))
    out_likelihood = np.zeros_like(in_likelihood)
    for aug in range(num_augs):
        test_score_aug = test_scores[aug, :, 0]
        in_likelihood += _nb_nll(
            test_score_aug, dist_params["means_in"][aug], dist_params["var_in"][aug] + 1e-32
        )
        out_likelihood += _nb_nll(
            test_score_aug, dist_params["means_out"][aug], dist_params["var_in"][aug] + 1e-32
        )
    return -(in_likelihood - out_likelihood)


# ---- data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curv_data():
    """Zero-order-like curvatures: log-normal, members lower, per-example spreads."""
    rng = np.random.default_rng(20)
    num_models, num, num_aug = 20, 60, 2
    m = np.zeros((num_models, num), bool)
    order = np.argsort(rng.random((num_models, num)), axis=0)
    m[order[: num_models // 2], np.arange(num)] = True
    mu = rng.normal(-4.0, 1.5, size=(num, num_aug))
    sd = rng.uniform(0.3, 1.5, size=(num, 1))
    shadows = np.exp(mu - 0.7 * m[..., None] + sd * rng.normal(size=(num_models, num, num_aug)))
    target = np.exp(mu + sd * rng.normal(size=(num, num_aug)))
    return target, shadows, m


def test_paper_compatible_reproduces_the_published_notebook(curv_data):
    target, shadows, m = curv_data
    num_aug = target.shape[1]
    scores = _nb_log_err(np.moveaxis(shadows, 0, -1).transpose(1, 0, 2))  # (A, N, K)
    params = _nb_get_score_dist_params(scores, m.T.astype(float), num_aug)
    test_scores = _nb_log_err(target.T[..., None])  # (A, N, 1)
    want_lr = _nb_get_likelihood_ratio(test_scores, params, num_aug)
    want_nll = _nb_get_nll_ratio(test_scores, params, num_aug)
    got_lr = mia.curvature_lr(target, shadows, m, paper_compatible=True)
    got_nll = mia.curvature_nll(target, shadows, m, paper_compatible=True)
    np.testing.assert_allclose(got_lr, want_lr, rtol=1e-10, atol=0)
    np.testing.assert_allclose(got_nll, want_nll, rtol=1e-9, atol=1e-9)
    # the corrected statistics are different numbers on the same data
    assert not np.allclose(mia.curvature_nll(target, shadows, m), want_nll, rtol=1e-3)
    corrected_lr = mia.curvature_lr(target, shadows, m)
    assert not np.allclose(corrected_lr, np.log(want_lr + 1e-300), rtol=1e-3)


def test_corrected_lr_is_lira_on_log_curvature(curv_data):
    target, shadows, m = curv_data
    got = mia.curvature_lr(target, shadows, m)
    np.testing.assert_allclose(got, mia.lira(np.log(target), np.log(shadows), m), rtol=1e-13)
    x, xs = np.log(target), np.log(shadows)
    want = [
        sum(
            stats.norm.logpdf(x[i, a], xs[m[:, i], i, a].mean(), xs[m[:, i], i, a].std())
            - stats.norm.logpdf(x[i, a], xs[~m[:, i], i, a].mean(), xs[~m[:, i], i, a].std())
            for a in range(x.shape[1])
        )
        for i in range(x.shape[0])
    ]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_corrected_nll_matches_naive_pooled_variance_loop(curv_data):
    target, shadows, m = curv_data
    x, xs = np.log(target), np.log(shadows)
    want = []
    for i in range(x.shape[0]):
        total = 0.0
        for a in range(x.shape[1]):
            ins, outs = xs[m[:, i], i, a], xs[~m[:, i], i, a]
            pooled = (((ins - ins.mean()) ** 2).sum() + ((outs - outs.mean()) ** 2).sum()) / (
                ins.size + outs.size
            )
            total += stats.norm.logpdf(x[i, a], ins.mean(), math.sqrt(pooled))
            total -= stats.norm.logpdf(x[i, a], outs.mean(), math.sqrt(pooled))
        want.append(total)
    np.testing.assert_allclose(mia.curvature_nll(target, shadows, m), want, rtol=1e-10, atol=1e-10)


def _two_point_groups(mu_in, mu_out, sd_in, sd_out, num_aug=1):
    """Per example: IN shadows μ_in ± sd_in, OUT shadows μ_out ± sd_out, so that the ddof=0
    variances are exactly sd_in² and sd_out²; (K=4, N, A) with models 0, 1 IN."""
    shadows = np.stack([mu_in - sd_in, mu_in + sd_in, mu_out - sd_out, mu_out + sd_out])
    shadow_in = np.zeros(shadows.shape[:2], bool)
    shadow_in[:2] = True
    return np.repeat(shadows[..., None], num_aug, axis=-1), shadow_in


def test_modes_agree_when_all_variances_are_one_and_a_single_augmentation():
    rng = np.random.default_rng(21)
    num = 50
    mu_in, mu_out = rng.normal(size=num), rng.normal(size=num) + 1.0
    shadows, shadow_in = _two_point_groups(mu_in, mu_out, 1.0, 1.0)
    target = (mu_in + mu_out)[:, None] / 2 + rng.uniform(-2, 2, size=(num, 1))
    kw = dict(log_transform=False)
    nll_paper = mia.curvature_nll(target, shadows, shadow_in, paper_compatible=True, **kw)
    nll_fixed = mia.curvature_nll(target, shadows, shadow_in, **kw)
    np.testing.assert_allclose(nll_paper, nll_fixed, rtol=1e-12, atol=1e-12)
    lr_paper = mia.curvature_lr(target, shadows, shadow_in, paper_compatible=True, **kw)
    lr_fixed = mia.curvature_lr(target, shadows, shadow_in, **kw)
    np.testing.assert_allclose(np.log(lr_paper), lr_fixed, rtol=1e-12, atol=1e-12)


def test_modes_differ_exactly_where_documented():
    rng = np.random.default_rng(22)
    num = 50
    mu_in, mu_out = rng.normal(size=num), rng.normal(size=num) + 1.0
    v_in, v_out = rng.uniform(0.3, 0.9, num), rng.uniform(1.2, 2.5, num)  # variances ≠ 1
    target = (mu_in + mu_out)[:, None] / 2 + rng.uniform(-1, 1, size=(num, 1))
    kw = dict(log_transform=False)
    shadows, shadow_in = _two_point_groups(mu_in, mu_out, np.sqrt(v_in), np.sqrt(v_out))
    t = target[:, 0]
    d = ((t - mu_out) ** 2 - (t - mu_in) ** 2) / 2
    pooled = (v_in + v_out) / 2
    # (1) NLL: corrected uses the pooled variance, the notebook the IN *variance* as a std
    nll_fixed = mia.curvature_nll(target, shadows, shadow_in, **kw)
    nll_paper = mia.curvature_nll(target, shadows, shadow_in, paper_compatible=True, **kw)
    np.testing.assert_allclose(nll_fixed, d / pooled, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nll_paper, d / v_in**2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nll_paper, nll_fixed * pooled / v_in**2, rtol=1e-12, atol=1e-12)
    # (2) LR, one augmentation: the notebook's σ is the variance, ours the standard deviation
    lr_fixed = mia.curvature_lr(target, shadows, shadow_in, **kw)
    lr_paper = mia.curvature_lr(target, shadows, shadow_in, paper_compatible=True, **kw)
    np.testing.assert_allclose(
        lr_fixed,
        stats.norm.logpdf(t, mu_in, np.sqrt(v_in)) - stats.norm.logpdf(t, mu_out, np.sqrt(v_out)),
        rtol=1e-12, atol=1e-12,
    )
    np.testing.assert_allclose(
        lr_paper,
        stats.norm.pdf(t, mu_in, v_in) / (stats.norm.pdf(t, mu_out, v_out) + EPS),
        rtol=1e-12,
    )
    assert np.max(np.abs(np.log(lr_paper) - lr_fixed)) > 0.1
    # (3) LR, two augmentations: likelihoods summed (notebook) vs log-likelihoods added (ours)
    shadows2, _ = _two_point_groups(mu_in, mu_out, np.sqrt(v_in), np.sqrt(v_out), num_aug=2)
    target2 = np.stack([t, t + rng.uniform(-0.5, 0.5, num)], axis=1)
    lr2_fixed = mia.curvature_lr(target2, shadows2, shadow_in, **kw)
    lr2_paper = mia.curvature_lr(target2, shadows2, shadow_in, paper_compatible=True, **kw)
    per_aug = [
        (stats.norm.logpdf(target2[:, a], mu_in, np.sqrt(v_in)),
         stats.norm.logpdf(target2[:, a], mu_out, np.sqrt(v_out)))
        for a in range(2)
    ]
    np.testing.assert_allclose(lr2_fixed, sum(i - o for i, o in per_aug), rtol=1e-12, atol=1e-12)
    summed = [
        (stats.norm.pdf(target2[:, a], mu_in, v_in), stats.norm.pdf(target2[:, a], mu_out, v_out))
        for a in range(2)
    ]
    np.testing.assert_allclose(
        lr2_paper, sum(i for i, _ in summed) / (sum(o for _, o in summed) + EPS), rtol=1e-12
    )


def test_log_transform_difference_is_the_paper_epsilon():
    shadow_in = np.array([[True], [True], [False], [False]])
    shadows = np.array([[1e-3], [2e-3], [3e-3], [5e-3]])
    for c in (1e-22, 1e-12, 1e-3):
        target = np.array([c])
        nll_paper = mia.curvature_nll(target, shadows, shadow_in, paper_compatible=True)
        # the same statistic computed on log(x + 1e-22) by hand
        x, xs = np.log(c + EPS), np.log(shadows[:, 0] + EPS)
        v_in = xs[:2].var()
        want = ((x - xs[2:].mean()) ** 2 - (x - xs[:2].mean()) ** 2) / (2 * v_in**2)
        assert nll_paper[0] == pytest.approx(want, rel=1e-12)
    # zero curvature: finite in the notebook's transform, rejected by the corrected log
    zero = mia.curvature_nll(np.array([0.0]), shadows, shadow_in, paper_compatible=True)
    assert np.isfinite(zero).all()
    with pytest.raises(ValueError, match="positive curvature"):
        mia.curvature_nll(np.array([0.0]), shadows, shadow_in)
    with pytest.raises(ValueError, match="negative curvature"):
        mia.curvature_lr(np.array([-1.0]), shadows, shadow_in, paper_compatible=True)
    signed = mia.curvature_lr(np.array([-1.0]), shadows - 4e-3, shadow_in, log_transform=False)
    assert np.isfinite(signed).all()


def test_paper_mode_needs_both_groups_corrected_mode_imputes(curv_data):
    """Examples 0..2 without IN shadows: the paper mode refuses; the corrected tests impute the
    IN Gaussian (centre = OUT mean + Δ, Δ = mean IN − OUT difference of the other examples, on
    log curvature) and score them with the same test as the others."""
    target, shadows, m = curv_data
    m2 = m.copy()
    m2[:, :3] = False
    x, xs = np.log(target), np.log(shadows)
    delta = np.mean([xs[m2[:, i], i].mean(0) - xs[~m2[:, i], i].mean(0) for i in range(3, 60)],
                    axis=0)
    ss_in = sum(((xs[m2[:, i], i] - xs[m2[:, i], i].mean(0)) ** 2).sum(0) for i in range(3, 60))
    var_in = ss_in / sum(m2[:, i].sum() - 1 for i in range(3, 60))  # pooled IN variance
    outs = xs[:, :3]  # (K, 3, A): every shadow is OUT for these examples
    c_in, c_out, v_out = outs.mean(0) + delta, outs.mean(0), outs.var(0)
    want = {
        mia.curvature_lr: (stats.norm.logpdf(x[:3], c_in, np.sqrt(var_in))
                           - stats.norm.logpdf(x[:3], c_out, np.sqrt(v_out))).sum(1),
        # NLL: one variance per example, here the OUT group's own (ddof = 0)
        mia.curvature_nll: (((x[:3] - c_out) ** 2 - (x[:3] - c_in) ** 2) / (2 * v_out)).sum(1),
    }
    for fn in (mia.curvature_lr, mia.curvature_nll):
        with pytest.raises(ValueError, match="at least one IN and one OUT"):
            fn(target, shadows, m2, paper_compatible=True)
        with pytest.warns(UserWarning, match="3 of 60 example\\(s\\) have no IN"):
            got = fn(target, shadows, m2)
        np.testing.assert_allclose(got[:3], want[fn], rtol=1e-10)
        np.testing.assert_allclose(got[3:], fn(target, shadows, m)[3:], rtol=1e-12)
    with pytest.raises(ValueError, match="fixed_variance"):
        mia.curvature_lr(target, shadows, m, paper_compatible=True, fixed_variance=True)


def test_corrected_statistics_attack_better_on_heteroscedastic_curvature():
    """Per-example spreads ≠ 1: the variance-as-std statistic mis-weights examples."""
    rng = np.random.default_rng(23)
    num_models, num, num_aug = 32, 4000, 2
    mu = rng.normal(-5.0, 2.0, size=(num, 1))
    sd = 0.3 * rng.uniform(0.5, 1.5, size=(num, 1))
    m = rng.random((num_models, num)) < 0.5
    shadows = np.exp(mu - 0.25 * m[..., None] + sd * rng.normal(size=(num_models, num, num_aug)))
    is_member = rng.random(num) < 0.5
    target = np.exp(mu - 0.25 * is_member[:, None] + sd * rng.normal(size=(num, num_aug)))
    auroc = {
        (fn.__name__, pc): mia.roc_metrics(fn(target, shadows, m, paper_compatible=pc), is_member)[
            "auroc"
        ]
        for fn in (mia.curvature_lr, mia.curvature_nll)
        for pc in (False, True)
    }
    assert auroc[("curvature_lr", False)] > auroc[("curvature_lr", True)] + 0.05, auroc
    assert auroc[("curvature_nll", False)] > auroc[("curvature_nll", True)], auroc
    assert min(auroc.values()) > 0.6, auroc
