"""The attack options that reproduce published code, against re-derivations of that code.

LiRA: carlini/privacy, research/mi_lira_2021/plot.py (``generate_ours``, ``generate_ours_offline``):
median centre, the two-sided offline density test and the global fixed variance. RMIA: the ICML
2024 code (privacytrustlab/ml_privacy_meter, research/2023_rmia/main.py): trimmed means over the
reference models (``scipy.stats.trim_mean(..., proportiontocut)``, 0.2 in its configs). The
re-derivations below follow those scripts' array layout (examples × shadows × augmentations) and
call numpy/scipy directly, not jaxcurv.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from scipy import special

from jaxcurv import mia
from jaxcurv.mia.rmia import _trimmed_mean

F64_TOL = dict(rtol=1e-10, atol=1e-10)


def _balanced_masks(num_models, num_examples, rng):
    """Every example IN exactly K/2 models (the published scripts keep equal group sizes)."""
    order = np.argsort(rng.random((num_models, num_examples)), axis=0)
    m = np.zeros((num_models, num_examples), dtype=bool)
    m[order[: num_models // 2], np.arange(num_examples)] = True
    return m


@pytest.fixture(scope="module")
def lira_data():
    rng = np.random.default_rng(40)
    num_models, num, num_aug = 10, 40, 3
    keep = _balanced_masks(num_models, num, rng)  # (K, N), the scripts' keep.T
    mu = rng.normal(size=(num, num_aug))
    scale = rng.uniform(0.5, 2.0, size=(num, 1))
    scores = mu + 0.7 * keep[..., None] + scale * rng.normal(size=(num_models, num, num_aug))
    check = mu + scale * rng.normal(size=(num, num_aug))  # the target model's statistics
    return check, scores, keep


def _split(keep, scores):
    """dat_in, dat_out (N, K/2, A) exactly as generate_ours builds them."""
    dat_in = np.array([scores[keep[:, j], j, :] for j in range(scores.shape[1])])
    dat_out = np.array([scores[~keep[:, j], j, :] for j in range(scores.shape[1])])
    return dat_in, dat_out


def _generate_ours(keep, scores, check_scores, fix_variance):
    """Online LiRA of the published code: median centres, np.std (global if fix_variance, with
    the IN std for both groups), score = mean_a [−logpdf_in + logpdf_out] (lower = member)."""
    dat_in, dat_out = _split(keep, scores)
    mean_in, mean_out = np.median(dat_in, 1), np.median(dat_out, 1)
    if fix_variance:
        std_in = np.std(dat_in)
        std_out = np.std(dat_in)
    else:
        std_in, std_out = np.std(dat_in, 1), np.std(dat_out, 1)
    pr_in = -scipy.stats.norm.logpdf(check_scores, mean_in, std_in + 1e-30)
    pr_out = -scipy.stats.norm.logpdf(check_scores, mean_out, std_out + 1e-30)
    return (pr_in - pr_out).mean(1)


def _generate_ours_offline(keep, scores, check_scores, fix_variance):
    """Offline LiRA of the published code: −mean_a logpdf(check; median_out, std_out)."""
    _, dat_out = _split(keep, scores)
    mean_out = np.median(dat_out, 1)
    std_out = np.std(dat_out) if fix_variance else np.std(dat_out, 1)
    return -scipy.stats.norm.logpdf(check_scores, mean_out, std_out + 1e-30).mean(1)


@pytest.mark.parametrize("fix_variance", [False, True])
def test_lira_reproduces_the_published_online_code(lira_data, fix_variance):
    check, scores, keep = lira_data
    want = _generate_ours(keep, scores, check, fix_variance)
    got = mia.lira(check, scores, keep, center="median",
                   fixed_variance="global" if fix_variance else False)
    # ours sums over augmentations and is higher for members: −A × the script's prediction
    np.testing.assert_allclose(got, -check.shape[1] * want, **F64_TOL)


@pytest.mark.parametrize("fix_variance", [False, True])
def test_lira_reproduces_the_published_offline_code(lira_data, fix_variance):
    check, scores, keep = lira_data
    want = _generate_ours_offline(keep, scores, check, fix_variance)
    got = mia.lira(check, scores, keep, online=False, center="median",
                   offline_test="two_sided", fixed_variance="global" if fix_variance else False)
    np.testing.assert_allclose(got, check.shape[1] * want, **F64_TOL)


def test_each_lira_option_alone_matches_its_formula(lira_data):
    check, scores, keep = lira_data
    dat_in, dat_out = _split(keep, scores)
    num_aug = check.shape[1]
    # centre = median only: the paper's one-sided offline test around the OUT median
    got = mia.lira(check, scores, keep, online=False, center="median")
    want = -scipy.stats.norm.logsf(check, np.median(dat_out, 1), np.std(dat_out, 1)).sum(1)
    np.testing.assert_allclose(got, want, **F64_TOL)
    # two-sided only: density of the OUT Gaussian around the mean
    got = mia.lira(check, scores, keep, online=False, offline_test="two_sided")
    want = -scipy.stats.norm.logpdf(check, dat_out.mean(1), np.std(dat_out, 1)).sum(1)
    np.testing.assert_allclose(got, want, **F64_TOL)
    # global variance only, online: one IN variance (over everything) for both groups
    got = mia.lira(check, scores, keep, fixed_variance="global")
    sd = np.std(dat_in)
    want = (scipy.stats.norm.logpdf(check, dat_in.mean(1), sd)
            - scipy.stats.norm.logpdf(check, dat_out.mean(1), sd)).sum(1)
    np.testing.assert_allclose(got, want, **F64_TOL)
    # the global variance is not the pooled within-example one (the two options differ)
    pooled = mia.lira(check, scores, keep, fixed_variance=True)
    assert np.max(np.abs(pooled - got)) > 1e-3 * num_aug


def test_lira_defaults_are_unchanged(lira_data):
    check, scores, keep = lira_data
    for online in (True, False):
        np.testing.assert_array_equal(
            mia.lira(check, scores, keep, online=online),
            mia.lira(check, scores, keep, online=online, center="mean",
                     offline_test="one_sided", fixed_variance=False),
        )


def test_lira_options_with_masks_and_fallbacks(lira_data):
    check, scores, keep = lira_data
    m2 = keep.copy()
    m2[:, 0] = False  # example 0: no IN shadow → IN Gaussian imputed around OUT median + Δ
    with pytest.warns(UserWarning, match="no IN shadow"):
        got = mia.lira(check, scores, m2, center="median", offline_test="two_sided",
                       fixed_variance="global")
    sd = np.std(np.concatenate([scores[m2[:, j], j] for j in range(1, check.shape[0])]))
    delta = np.mean([np.median(scores[m2[:, j], j], 0) - np.median(scores[~m2[:, j], j], 0)
                     for j in range(1, check.shape[0])], axis=0)
    med_out = np.median(scores[:, 0], 0)
    want0 = (scipy.stats.norm.logpdf(check[0], med_out + delta, sd)
             - scipy.stats.norm.logpdf(check[0], med_out, sd)).sum()
    assert got[0] == pytest.approx(want0, rel=1e-10)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize(
    "kw, match",
    [({"center": "mode"}, "center"), ({"offline_test": "one-sided"}, "offline_test"),
     ({"fixed_variance": "pooled"}, "fixed_variance"), ({"fixed_variance": 1}, "fixed_variance")],
)
def test_lira_option_validation(lira_data, kw, match):
    check, scores, keep = lira_data
    with pytest.raises(ValueError, match=match):
        mia.lira(check, scores, keep, **kw)


# ----------------------------------------------------------------------------------------------
# RMIA trimmed mean (the ICML code)


def test_masked_trimmed_mean_equals_scipy_per_column():
    rng = np.random.default_rng(41)
    ref = rng.normal(size=(9, 30, 2))
    mask = rng.random((9, 30, 1)) < 0.7
    mask[:, 0] = False  # an empty column: NaN
    for trim in (0.0, 0.1, 0.2, 0.3):
        got = _trimmed_mean(ref, mask, trim)
        assert np.all(np.isnan(got[0]))
        for i in range(1, 30):
            for a in range(2):
                vals = ref[mask[:, i, 0], i, a]
                want = scipy.stats.trim_mean(vals, trim) if vals.size else np.nan
                np.testing.assert_allclose(got[i, a], want, rtol=1e-12, atol=1e-15)


def _icml_rmia(target, ref, keep, target_idx, pop_idx, *, trim, offline, a, gamma):
    """research/2023_rmia/main.py, aggregate_signals for softmax_relative: per example the first
    K/2 IN and K/2 OUT reference signals (online; OUT only offline), trim_mean over the references
    (axis 0), p(·) = mean (online) or (1+a)/2·mean + (1−a)/2 (offline), then for each
    augmentation the matrix [p(x|θ)/p(x)]·[p(z)/p(z|θ)] > γ, majority-voted (torch.mode: ties →
    False), averaged over z. target (N, A), ref (K, N, A), keep (K, N)."""
    half = ref.shape[0] // 2
    ins = np.stack([ref[keep[:, j], j][:half] for j in range(ref.shape[1])])
    outs = np.stack([ref[~keep[:, j], j][:half] for j in range(ref.shape[1])])
    refs = outs.transpose(1, 0, 2) if offline else np.concatenate([ins, outs], 1).transpose(1, 0, 2)
    mean_x = scipy.stats.trim_mean(refs[:, target_idx], proportiontocut=trim, axis=0)
    mean_z = scipy.stats.trim_mean(refs[:, pop_idx], proportiontocut=trim, axis=0)
    if offline:
        mean_x = (1 + a) / 2 * mean_x + (1 - a) / 2
        mean_z = (1 + a) / 2 * mean_z + (1 - a) / 2
    votes = []
    for k in range(target.shape[1]):
        ratio_x = target[target_idx, k] / mean_x[:, k]
        ratio_z_rev = 1 / (target[pop_idx, k] / mean_z[:, k])
        votes.append(np.outer(ratio_x, ratio_z_rev) > gamma)
    votes = np.stack(votes)
    majority = 2 * votes.sum(0) > votes.shape[0]
    return majority.mean(1)


@pytest.fixture(scope="module")
def rmia_ref_data():
    rng = np.random.default_rng(42)
    num_ref, num, num_aug = 10, 120, 3
    keep = _balanced_masks(num_ref, num, rng)
    logit = rng.normal(size=(num, num_aug))
    noise = 0.4 * rng.normal(size=(num_ref, num, num_aug))
    ref = special.expit(logit + 0.8 * keep[..., None] + noise)
    member = rng.random(num) < 0.5
    target = special.expit(logit + 0.8 * member[:, None] + 0.4 * rng.normal(size=(num, num_aug)))
    return target, ref, keep


@pytest.mark.parametrize("num_aug", [1, 3])
@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 1.3])
def test_rmia_trim_reproduces_the_icml_code(rmia_ref_data, num_aug, offline, gamma):
    target, ref, keep = rmia_ref_data
    target, ref = target[:, :num_aug], ref[..., :num_aug]
    tgt, pop = np.arange(0, 80), np.arange(80, 120)  # population: other examples of the pool
    want = _icml_rmia(target, ref, keep, tgt, pop, trim=0.2, offline=offline, a=0.3, gamma=gamma)
    sl = (slice(None), slice(None)) if num_aug > 1 else (slice(None), 0)
    got = mia.rmia(
        target[tgt][sl], ref[:, tgt][(slice(None),) + sl], target[pop][sl],
        ref[:, pop][(slice(None),) + sl], reference_in=keep[:, tgt],
        population_reference_in=keep[:, pop],
        online=not offline, offline_a=0.3, gamma=gamma, trim=0.2,
    )
    np.testing.assert_allclose(got, want, atol=1e-12)
    # trimming changes the scores here (10 references: 2 of 10 cut online, 1 of 5 offline)
    plain = mia.rmia(
        target[tgt][sl], ref[:, tgt][(slice(None),) + sl], target[pop][sl],
        ref[:, pop][(slice(None),) + sl], reference_in=keep[:, tgt],
        population_reference_in=keep[:, pop],
        online=not offline, offline_a=0.3, gamma=gamma,
    )
    assert np.any(plain != got)


def test_rmia_trim_zero_is_the_plain_estimator(rmia_ref_data):
    target, ref, keep = rmia_ref_data
    want = _icml_rmia(target, ref, keep, np.arange(80), np.arange(80, 120), trim=0.0,
                      offline=False, a=0.3, gamma=1.0)
    got = mia.rmia(target[:80], ref[:, :80], target[80:], ref[:, 80:], reference_in=keep[:, :80],
                   population_reference_in=keep[:, 80:])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_masked_median_equals_nanmedian_including_empty_groups():
    import warnings

    from jaxcurv.mia._common import _group_moments
    from jaxcurv.mia.likelihood import _masked_median

    rng = np.random.default_rng(7)
    for k, n, a in [(9, 40, 3), (8, 25, 1), (1, 6, 2)]:
        s = rng.normal(size=(k, n, a))
        m = rng.random((k, n, 1)) < 0.5
        m[:, 0] = False  # an empty group
        m[:, 1] = True   # a full one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(np.where(m, s, np.nan), axis=0)
            mean = np.nanmean(np.where(m, s, np.nan), axis=0)
        np.testing.assert_array_equal(_masked_median(s, m), want)
        count, got_mean, ss = _group_moments(s, m)
        np.testing.assert_array_equal(count[:, 0], m[..., 0].sum(0))
        np.testing.assert_allclose(got_mean, mean, rtol=1e-12, equal_nan=True)
        want_ss = np.where(m, (s - np.nan_to_num(mean)) ** 2, 0.0).sum(0)
        np.testing.assert_allclose(ss, want_ss, rtol=1e-12, atol=1e-12)
