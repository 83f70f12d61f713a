"""Memorization and proxies against naive loops, closed forms, scipy and scikit-learn."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxcurv import data, ensemble, models
from jaxcurv import memorization as mz
from jaxcurv.adversarial import make_adversarial_distance
from jaxcurv.curvature import Curvature
from jaxcurv.workflow.proxy_scores import PROXY_NAMES, proxies

KEY = jax.random.PRNGKey(0)


# --- Feldman–Zhang -----------------------------------------------------------------------------


def _naive_fz(correct, in_mask, method="plugin"):
    k, n = correct.shape
    mem, se = np.empty(n), np.empty(n)
    for i in range(n):
        ins = [bool(correct[j, i]) for j in range(k) if in_mask[j, i]]
        outs = [bool(correct[j, i]) for j in range(k) if not in_mask[j, i]]
        p_in, p_out = sum(ins) / len(ins), sum(outs) / len(outs)
        mem[i] = p_in - p_out
        if method == "plugin":
            se[i] = math.sqrt(p_in * (1 - p_in) / len(ins) + p_out * (1 - p_out) / len(outs))
        else:
            q_in, q_out = (sum(ins) + 1) / (len(ins) + 2), (sum(outs) + 1) / (len(outs) + 2)
            se[i] = math.sqrt(q_in * (1 - q_in) / (len(ins) + 2)
                              + q_out * (1 - q_out) / (len(outs) + 2))
    return mem, se


@pytest.mark.parametrize("method", mz.STDERR_METHODS)
def test_feldman_zhang_equals_naive_loop(method):
    rng = np.random.default_rng(0)
    in_mask = rng.random((9, 40)) < 0.4
    in_mask[0], in_mask[1] = True, False  # every example has in and out models
    correct = rng.random((9, 40)) < 0.7
    mem, se = mz.feldman_zhang(correct, in_mask, stderr_method=method)
    ref_mem, ref_se = _naive_fz(correct, in_mask, method)
    np.testing.assert_allclose(mem, ref_mem, rtol=0, atol=1e-15)
    np.testing.assert_allclose(se, ref_se, rtol=1e-14, atol=0)
    # 0/1 integer arrays are accepted as booleans
    mem01, _ = mz.feldman_zhang(correct.astype(np.int32), in_mask.astype(float),
                                stderr_method=method)
    np.testing.assert_array_equal(mem01, mem)


@pytest.mark.parametrize("method", mz.STDERR_METHODS)
def test_feldman_zhang_recovers_mem_with_calibrated_stderr(method):
    rng = np.random.default_rng(1)
    k, n = 400, 3000
    in_mask = data.subset_masks(n, k, seed=2)
    p_in = rng.uniform(0.1, 0.95, n)
    p_out = rng.uniform(0.05, 1.0, n) * p_in
    correct = rng.random((k, n)) < np.where(in_mask, p_in, p_out)
    mem, se = mz.feldman_zhang(correct, in_mask, stderr_method=method)
    z = (mem - (p_in - p_out)) / se
    assert np.abs(z).max() < 5.0  # recovered within a few stderr
    assert 0.94 < z.std() < 1.06
    assert abs(np.mean(np.abs(z) < 1.96) - 0.95) < 0.015
    for wrong in (2 / 3, 3 / 2, 2.0):  # a mis-scaled stderr is rejected by the same check
        assert not 0.94 < (z / wrong).std() < 1.06
    true_se = np.sqrt(p_in * (1 - p_in) / 200 + p_out * (1 - p_out) / 200)
    assert abs(np.mean(se / true_se) - 1) < 0.02


def test_stderr_at_extreme_proportions():
    correct = np.array([[True], [True], [False], [False]])
    in_mask = np.array([[True], [True], [False], [False]])
    mem, se = mz.feldman_zhang(correct, in_mask)
    assert mem[0] == 1.0 and se[0] == 0.0  # plug-in: zero uncertainty with p_in = 1, p_out = 0
    _, se_ac = mz.feldman_zhang(correct, in_mask, stderr_method="agresti_caffo")
    np.testing.assert_allclose(se_ac, [math.sqrt(2 * (3 / 4) * (1 / 4) / 4)], rtol=1e-15)


def test_never_in_or_never_out_gives_nan_and_one_warning():
    rng = np.random.default_rng(3)
    in_mask = rng.random((6, 10)) < 0.5
    in_mask[:3, :] = True
    in_mask[3:, :] = False
    in_mask[:, 2] = False  # never in
    in_mask[:, [5, 7]] = True  # never out
    correct = rng.random((6, 10)) < 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mem, se = mz.feldman_zhang(correct, in_mask)
    assert len(caught) == 1
    assert "1 example(s) are in no model's subset and 2 in every" in str(caught[0].message)
    bad = np.zeros(10, bool)
    bad[[2, 5, 7]] = True
    assert np.isnan(mem[bad]).all() and np.isnan(se[bad]).all()
    assert np.isfinite(mem[~bad]).all() and np.isfinite(se[~bad]).all()


@pytest.mark.parametrize(
    "correct, in_mask, kwargs, match",
    [
        (np.ones((3, 4), bool), np.ones((3, 5), bool), {}, "same shape"),
        (np.ones(4, bool), np.ones(4, bool), {}, r"\(K, N\)"),
        (np.ones((1, 4), bool), np.ones((1, 4), bool), {}, "K >= 2"),
        (np.full((3, 4), 0.5), np.ones((3, 4), bool), {}, "boolean"),
        (np.full((3, 4), 2), np.ones((3, 4), bool), {}, "boolean"),
        (np.ones((3, 4), bool), np.full((3, 4), np.nan), {}, "boolean"),
        (np.array([["a"]]), np.ones((1, 1), bool), {}, "boolean"),
        (np.ones((3, 4), bool), np.ones((3, 4), bool), {"stderr_method": "wald"}, "stderr_method"),
    ],
)
def test_feldman_zhang_errors(correct, in_mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mz.feldman_zhang(correct, in_mask, **kwargs)


def test_correctness_is_argmax_match():
    logits = np.array([[[0.0, 2.0], [3.0, 1.0]], [[5.0, 1.0], [0.0, 0.5]]])
    np.testing.assert_array_equal(mz.correctness(logits, np.array([1, 1])),
                                  [[True, False], [False, True]])
    with pytest.raises(ValueError, match="labels"):
        mz.correctness(logits, np.array([1, 2]))


# --- learning time --------------------------------------------------------------------------------


def test_learning_time_hand_made():
    patterns = {(0, 1, 0, 1, 1): 4, (1, 1, 1, 1, 1): 1, (1, 1, 1, 1, 0): 6, (0, 0, 0, 0, 0): 6,
                (0, 0, 0, 0, 1): 5, (1, 0, 1, 1, 1): 3}
    hist = np.array(list(patterns), bool).T  # (E=5, N)
    np.testing.assert_array_equal(mz.learning_time(hist), list(patterns.values()))
    np.testing.assert_array_equal(mz.learning_time(hist[:, None, :]), [list(patterns.values())])
    with pytest.raises(ValueError, match="E >= 1"):
        mz.learning_time(np.zeros((0, 3), bool))


# --- proxies from given arrays (no model needed) ------------------------------------------------


def _fake_ensemble(rng, k, n, c, e):
    masks = data.subset_masks(n, k, seed=5)
    history = {"correct": rng.random((e, k, n)) < 0.6,
               "curvature": rng.gamma(2.0, size=(e, k, n))}
    ens = ensemble.Ensemble(model=None, variables={}, masks=masks, member_ids=np.arange(k),
                            history=history, config={})
    ds = data.Dataset.from_arrays(rng.random((n, 2, 2, 1)), rng.integers(0, c, n), num_classes=c)
    logits = rng.normal(scale=3.0, size=(k, n, c)).astype(np.float32)
    curv = Curvature(*(rng.gamma(2.0, size=(k, n)) for _ in range(4)))
    return ens, ds, logits, curv


def test_proxies_from_arrays_equal_naive_loops():
    rng = np.random.default_rng(6)
    k, n, c, e = 6, 15, 4, 5
    ens, ds, logits, curv = _fake_ensemble(rng, k, n, c, e)
    got = proxies(ens, ds, KEY, logits=logits, curvature=curv, progress=False)
    assert list(got) == [p for p in PROXY_NAMES if p != "adversarial_distance"]
    lt = mz.learning_time(ens.history["correct"])
    for i in range(n):
        ins = [j for j in range(k) if ens.masks[j, i]]
        outs = [j for j in range(k) if not ens.masks[j, i]]
        y = ds.labels[i]
        prob = [math.exp(logits[j, i, y]) / sum(math.exp(v) for v in logits[j, i])
                for j in range(k)]
        expect = {
            "confidence": np.mean([prob[j] for j in outs]),
            "confidence_in": np.mean([prob[j] for j in ins]),
            "loss": np.mean([-math.log(prob[j]) for j in ins]),
            "loss_out": np.mean([-math.log(prob[j]) for j in outs]),
            "learning_time": np.mean([lt[j, i] for j in ins]),
            "inverse_learning_time": np.mean([1 / lt[j, i] for j in ins]),
            "curvature_trace_in": np.mean([curv.trace[j, i] for j in ins]),
            "curvature_trace_out": np.mean([curv.trace[j, i] for j in outs]),
            "curvature_in": np.mean([curv.trace_sq[j, i] for j in ins]),
            "curvature_out": np.mean([curv.trace_sq[j, i] for j in outs]),
            "curvature_train_in": np.mean([ens.history["curvature"][:, j, i] for j in ins]),
            "curvature_train_out": np.mean([ens.history["curvature"][:, j, i] for j in outs]),
        }
        for name, value in expect.items():
            np.testing.assert_allclose(got[name][i], value, rtol=1e-12, err_msg=name)
    # a bare (K, N) tr(H) array is accepted too (only the tr(H) proxies then)
    bare = proxies(ens, ds, KEY, logits=logits, curvature=curv.trace, progress=False)
    assert "curvature_in" not in bare
    np.testing.assert_array_equal(bare["curvature_trace_in"], got["curvature_trace_in"])


def test_proxies_validation():
    rng = np.random.default_rng(7)
    ens, ds, logits, curv = _fake_ensemble(rng, 4, 10, 3, 2)
    kw = dict(logits=logits, curvature=curv, progress=False)
    with pytest.raises(ValueError, match="trained on"):
        proxies(ens, ds.take(np.arange(9)), KEY, **kw)
    with pytest.raises(ValueError, match=r"logits must be \(K=4"):
        proxies(ens, ds, KEY, logits=logits[:3], curvature=curv, progress=False)
    with pytest.raises(ValueError, match=r"curvature must be a real \(K=4"):
        proxies(ens, ds, KEY, logits=logits, curvature=curv.trace[:, :3], progress=False)
    with pytest.raises(ValueError, match="curvature.trace"):
        proxies(ens, ds, KEY, logits=logits, curvature=Curvature(*(a[:2] for a in curv)),
                   progress=False)
    with pytest.raises(ValueError, match="num_probes"):
        proxies(ens, ds, KEY, logits=logits, num_probes=0, progress=False)
    with pytest.raises(ValueError, match="unknown adversarial_options"):
        proxies(ens, ds, KEY, adversarial=True, adversarial_options={"eps": 1.0}, **kw)
    with pytest.raises(ValueError, match="pgd_steps"):
        proxies(ens, ds, KEY, adversarial=True, adversarial_options={"pgd_steps": 0}, **kw)


# --- proxies on a tiny real ensemble ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    full = data.load("digits")
    ds = full.take(np.random.default_rng(0).choice(len(full), 200, replace=False))
    masks = data.subset_masks(len(ds), 4, seed=1)
    ens = ensemble.train(models.get_model("mlp", 10, hidden=32, depth=1), ds, masks, KEY,
                         epochs=3, batch_size=32, learning_rate=0.1, record_examples=True,
                         record_curvature=2)
    return ens, ds


def test_proxies_on_trained_ensemble(tiny):
    ens, ds = tiny
    adv = dict(pgd_steps=3, search_steps=6)
    key = jax.random.PRNGKey(3)
    got = proxies(ens, ds, key, num_probes=2, adversarial=True, adversarial_options=adv,
                     progress=False)
    assert list(got) == list(PROXY_NAMES)
    for name, value in got.items():
        assert value.shape == (200,) and value.dtype == np.float64, name
        assert np.isfinite(value).all(), name
    assert ((got["confidence"] >= 0) & (got["confidence"] <= 1)).all()
    assert ((got["learning_time"] >= 1) & (got["learning_time"] <= 4)).all()
    assert (got["adversarial_distance"] >= 0).all()
    # the end-of-training IN loss equals the loss recorded by training after the last epoch
    recorded = np.where(ens.masks, ens.history["loss"][-1], 0).sum(0) / ens.masks.sum(0)
    np.testing.assert_allclose(got["loss"], recorded, rtol=1e-5, atol=1e-6)
    # a precomputed Curvature gives the same result without recomputing it
    curv = ensemble.member_curvature(ens, ds.images, ds.labels, key, num_probes=2, progress=False)
    again = proxies(ens, ds, KEY, curvature=curv, progress=False)
    for name in ("curvature_in", "curvature_out", "curvature_trace_in", "curvature_trace_out"):
        np.testing.assert_allclose(again[name], got[name], rtol=1e-6, err_msg=name)
    # adversarial distance: naive loop over members on their IN examples with the public function
    def logits_fn(variables, x):
        return ens.model.apply(variables, x[None], train=False)[0].astype(jnp.float32)

    search = make_adversarial_distance(logits_fn, batch_size=int(ens.masks.sum(1).max()), **adv)
    total = np.zeros(200)
    for k in range(ens.num_members):
        idx = np.flatnonzero(ens.masks[k])
        total[idx] += search(ens.member(k), ds.images[idx], ds.labels[idx]).distance
    np.testing.assert_allclose(got["adversarial_distance"], total / ens.masks.sum(0), rtol=1e-6)


# --- correlations, ranking, binning -------------------------------------------------------------


def test_correlations_against_scipy():
    rng = np.random.default_rng(9)
    mem = rng.normal(size=100)
    a = mem + rng.normal(size=100)
    b = -np.exp(mem) + rng.normal(scale=0.1, size=100)
    mem[3], a[7], b[11] = np.nan, np.nan, np.inf
    got = mz.correlations(mem, {"a": a, "b": b, "const": np.ones(100)})
    for name, v in (("a", a), ("b", b)):
        keep = np.isfinite(mem) & np.isfinite(v)
        assert got[name]["n"] == keep.sum() == 98
        pr, sr = stats.pearsonr(mem[keep], v[keep]), stats.spearmanr(mem[keep], v[keep])
        np.testing.assert_allclose([got[name]["pearson"], got[name]["pearson_p"]],
                                   [pr.statistic, pr.pvalue], rtol=1e-12)
        np.testing.assert_allclose([got[name]["spearman"], got[name]["spearman_p"]],
                                   [sr.statistic, sr.pvalue], rtol=1e-12)
    assert math.isnan(got["const"]["pearson"]) and got["const"]["n"] == 99
    with pytest.raises(ValueError, match="shape"):
        mz.correlations(mem, {"short": a[:5]})


def test_rank_flipped_against_sklearn():
    rng = np.random.default_rng(10)
    flipped = rng.random(200) < 0.15
    score = flipped * 1.0 + rng.normal(size=200)
    got = mz.rank_flipped(score, flipped)
    k = int(flipped.sum())
    top = np.zeros(200, bool)
    top[np.argsort(-score)[:k]] = True
    assert got["k"] == k and got["n"] == 200
    np.testing.assert_allclose(got["auroc"], skm.roc_auc_score(flipped, score), rtol=1e-12)
    np.testing.assert_allclose(got["average_precision"],
                               skm.average_precision_score(flipped, score), rtol=1e-12)
    np.testing.assert_allclose(got["precision_at_k"], skm.precision_score(flipped, top), rtol=1e-12)
    # ties at the k-th score count pro rata: 1 sure hit + 1 slot among 3 tied holding 1 flipped
    tie = mz.rank_flipped([3.0, 2.0, 2.0, 2.0, 1.0], [True, False, True, False, False])
    np.testing.assert_allclose(tie["precision_at_k"], (1 + 1 / 3) / 2)
    with pytest.warns(UserWarning, match="dropping 1"):
        mz.rank_flipped([np.nan, 1.0, 2.0, np.inf], [True, False, True, False])
    with pytest.raises(ValueError, match="both flipped and clean"):
        mz.rank_flipped([1.0, 2.0], [False, False])


def test_top_memorized():
    mem = np.array([0.1, np.nan, 0.9, 0.5, 0.9, -0.2])
    np.testing.assert_array_equal(mz.top_memorized(mem, 3), [2, 4, 3])
    np.testing.assert_array_equal(mz.top_memorized(mem, 10), [2, 4, 3, 0, 5])
    with pytest.raises(ValueError, match="k must be"):
        mz.top_memorized(mem, 0)


def test_bin_by_against_naive_loops():
    rng = np.random.default_rng(11)
    v = rng.gamma(2.0, size=103)
    t = v + rng.normal(size=103)
    t[5] = np.nan
    keep = np.isfinite(t)
    q = mz.bin_by(v, t, 4)
    assert q.count.sum() == 102 and q.count.max() - q.count.min() <= 1
    order = np.argsort(v[keep])
    for j, g in enumerate(np.array_split(order, 4)):
        np.testing.assert_allclose(q.target_mean[j], t[keep][g].mean(), rtol=1e-12)
        np.testing.assert_allclose(q.target_stderr[j], stats.sem(t[keep][g]), rtol=1e-12)
        np.testing.assert_allclose([q.lower[j], q.upper[j]], [v[keep][g].min(), v[keep][g].max()])
    u = mz.bin_by(v, t, 5, strategy="uniform")
    counts, edges = np.histogram(v[keep], bins=5)
    np.testing.assert_array_equal(u.count, counts)
    np.testing.assert_allclose(u.lower, edges[:-1])
    for j in range(5):
        inside = keep & (v >= edges[j]) & ((v < edges[j + 1]) if j < 4 else (v <= edges[j + 1]))
        np.testing.assert_allclose(u.value_mean[j], v[inside].mean(), rtol=1e-12)
        np.testing.assert_allclose(u.target_mean[j], t[inside].mean(), rtol=1e-12)
    e = mz.bin_by(v, t, [0.0, 1.0, 2.0, 100.0])
    assert e.count.tolist() == [((v < 1) & keep).sum(), ((v >= 1) & (v < 2) & keep).sum(),
                                ((v >= 2) & keep).sum()]
    for bad, match in [(0, "bins must be"), ([1.0, 0.5], "increasing")]:
        with pytest.raises(ValueError, match=match):
            mz.bin_by(v, t, bad)


def test_masked_mean_and_cross_fitted_memorization_against_naive_loops():
    from jaxcurv.memorization import cross_fitted_memorization, masked_mean

    rng = np.random.default_rng(5)
    k, n = 8, 40
    masks = rng.random((k, n)) < 0.5
    masks[0], masks[1] = True, False  # every example is in and out of each parity half
    correct = rng.random((k, n)) < 0.7
    values = rng.normal(size=(k, n))
    naive = [values[masks[:, i], i].mean() for i in range(n)]
    np.testing.assert_allclose(masked_mean(values, masks), naive)
    got = cross_fitted_memorization(correct, masks)
    assert got.shape == (k, n)
    for row in range(k):
        others = [j for j in range(k) if j % 2 != row % 2]
        for i in range(n):
            ins = [correct[j, i] for j in others if masks[j, i]]
            outs = [correct[j, i] for j in others if not masks[j, i]]
            expected = np.mean(ins) - np.mean(outs) if ins and outs else np.nan
            np.testing.assert_allclose(got[row, i], expected, equal_nan=True)
    with pytest.raises(ValueError, match="K >= 4"):
        cross_fitted_memorization(correct[:3], masks[:3])


def _agresti_caffo_naive(x_in, n_in, x_out, n_out, z=1.959963984540054):
    """The Agresti–Caffo (2000) interval written out for one example, as in the paper: add one
    success and one failure to each group, then the Wald interval of the difference."""
    q_in, q_out = (x_in + 1) / (n_in + 2), (x_out + 1) / (n_out + 2)
    half = z * math.sqrt(q_in * (1 - q_in) / (n_in + 2) + q_out * (1 - q_out) / (n_out + 2))
    return max(-1.0, q_in - q_out - half), min(1.0, q_in - q_out + half)


def test_agresti_caffo_interval_equals_the_formula_and_a_hand_value():
    lo, hi = mz.agresti_caffo_interval(4, 4, 0, 4)  # 4 of 4 IN right, 0 of 4 OUT: mem = 1
    assert lo == pytest.approx(2 / 3 - 1.959964 * math.sqrt(2 * (5 / 6) * (1 / 6) / 6), abs=1e-6)
    assert lo == pytest.approx(0.2449, abs=1e-4) and hi == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    correct, in_mask = rng.random((12, 50)) < 0.7, data.subset_masks(50, 12, seed=1)
    lo, hi = mz.memorization_interval(correct, in_mask)
    for i in range(50):
        n_in = int(in_mask[:, i].sum())
        x_in = int((correct[:, i] & in_mask[:, i]).sum())
        x_out = int((correct[:, i] & ~in_mask[:, i]).sum())
        want = _agresti_caffo_naive(x_in, n_in, x_out, 12 - n_in)
        assert (lo[i], hi[i]) == pytest.approx(want, abs=1e-12)
    lo90, _ = mz.memorization_interval(correct, in_mask, confidence=0.9)
    assert np.all(lo90 > lo)
    with pytest.raises(ValueError, match="confidence"):
        mz.agresti_caffo_interval(1, 2, 0, 2, confidence=1.0)
    with pytest.raises(ValueError, match="x_in <= n_in"):
        mz.agresti_caffo_interval(3, 2, 0, 2)


@pytest.mark.parametrize("n, p_in, p_out", [(4, 0.95, 0.05), (8, 0.9, 0.4), (16, 0.7, 0.2)])
def test_memorization_lower_bound_holds_where_the_plugin_bound_does_not(n, p_in, p_out):
    """The lower end of the 95 % interval is below the true mem in ≥ 97 % of ensembles (one-sided
    97.5 %), also at the extremes where mem − 1.96·plug-in stderr is wrong two times in three."""
    rng = np.random.default_rng(0)
    x_in, x_out = rng.binomial(n, p_in, 20000), rng.binomial(n, p_out, 20000)
    lo, _ = mz.agresti_caffo_interval(x_in, n, x_out, n)
    assert np.mean(lo <= p_in - p_out) >= 0.97
    if p_in > 0.9:
        mem = x_in / n - x_out / n
        se = np.sqrt((x_in / n) * (1 - x_in / n) / n + (x_out / n) * (1 - x_out / n) / n)
        assert np.mean(mem - 1.96 * se <= p_in - p_out) < 0.5
