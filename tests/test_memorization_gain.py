"""The SAM paper's per-example held-out gain and its memorization bins against naive Python loops,
and the calibration of its standard errors by simulation."""

import math
import warnings

import numpy as np
import pytest

from jaxcurv.memorization import GAIN_EDGES, bin_by, gain_by_memorization, held_out_gain


def _ensembles(rng, k, n, *, p_a, p_b, share=0.0):
    """Two (K, N) correctness arrays: a[k, i] ~ Bernoulli(p_a[i]); b[k, i] copies a[k, i] with
    probability ``share`` where p_a == p_b (keeping its marginal), else ~ Bernoulli(p_b[i])."""
    a = rng.random((k, n)) < p_a
    b = rng.random((k, n)) < p_b
    copy = (rng.random((k, n)) < share) & (p_a == p_b)
    return a, np.where(copy, a, b)


def _naive_gain(a, b, m, paired):
    k, n = a.shape
    gain, se = np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        d = [float(a[j, i]) - float(b[j, i]) for j in range(k) if not m[j, i]]
        if not d:
            continue
        gain[i] = sum(d) / len(d)
        if paired:
            if len(d) > 1:
                s2 = sum((x - gain[i]) ** 2 for x in d) / (len(d) - 1)
                se[i] = math.sqrt(s2 / len(d))
        else:
            pa = sum(a[j, i] for j in range(k) if not m[j, i]) / len(d)
            pb = sum(b[j, i] for j in range(k) if not m[j, i]) / len(d)
            se[i] = math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / len(d))
    return gain, se


@pytest.mark.parametrize("paired", [True, False])
def test_held_out_gain_equals_a_naive_loop(paired):
    rng = np.random.default_rng(0)
    k, n = 7, 60
    a = rng.random((k, n)) < 0.7
    b = rng.random((k, n)) < 0.6
    m = rng.random((k, n)) < 0.5
    m[:, 0] = True          # never out: NaN
    m[:, 1] = False         # always out
    m[:, 2] = True
    m[3, 2] = False         # one OUT member: paired stderr undefined
    never_out = int(((~m).sum(0) == 0).sum())
    assert never_out >= 1
    with pytest.warns(UserWarning, match=f"{never_out} example"):
        gain, se = held_out_gain(a, b, m, paired=paired)
    want_gain, want_se = _naive_gain(a, b, m, paired)
    np.testing.assert_allclose(gain, want_gain, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(se, want_se, rtol=1e-12, equal_nan=True)
    assert np.isnan(gain[0]) and np.isfinite(gain[2]) and np.isnan(se[2]) == paired
    # a − b is the negative of b − a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back, back_se = held_out_gain(b, a, m, paired=paired)
    np.testing.assert_allclose(back, -gain, equal_nan=True)
    np.testing.assert_allclose(back_se, se, equal_nan=True)


def test_held_out_gain_rejects_bad_shapes():
    a = np.ones((4, 5), bool)
    with pytest.raises(ValueError, match="same shape"):
        held_out_gain(a, a[:, :4], a)
    with pytest.raises(ValueError, match="same shape"):
        held_out_gain(a[0], a[0], a[0])


@pytest.mark.parametrize("paired,share", [(True, 0.8), (False, 0.0)])
def test_stderr_is_calibrated(paired, share):
    """z = (gain − true gain)/stderr over many examples has standard deviation ≈ 1; the same
    check rejects a stderr scaled by 2/3 or 3/2. Paired: the ensembles share most outcomes
    (as SAM and SGD members from the same keys do), which the unpaired formula would overstate."""
    rng = np.random.default_rng(1)
    k, n = 60, 6000
    p_a = rng.uniform(0.2, 0.8, n)
    p_b = np.where(np.arange(n) % 2 == 0, p_a, rng.uniform(0.2, 0.8, n))
    a, b = _ensembles(rng, k, n, p_a=p_a, p_b=p_b, share=share)
    m = np.zeros((k, n), bool)
    m[: k // 2] = True
    m = rng.permuted(m, axis=0)
    gain, se = held_out_gain(a, b, m, paired=paired)
    ok = se > 0
    z = (gain - (p_a - p_b))[ok] / se[ok]

    def calibrated(scale):
        return 0.92 < np.std(z / scale) < 1.08

    assert calibrated(1.0)
    assert not calibrated(2 / 3) and not calibrated(3 / 2)
    if paired:  # sharing outcomes makes the paired stderr smaller than the unpaired one
        _, se_unpaired = held_out_gain(a, b, m, paired=False)
        shared = p_a == p_b
        assert np.median(se[shared]) < 0.7 * np.median(se_unpaired[shared])


def _naive_bins(gain, mem, edges):
    rows = []
    for j in range(len(edges) - 1):
        lo, hi = edges[j], edges[j + 1]
        last = j == len(edges) - 2
        g, v = [], []
        for x, y in zip(mem, gain):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            c = min(max(x, edges[0]), edges[-1])
            if lo <= c < hi or (last and c == hi):
                g.append(y)
                v.append(x)
        mean = sum(g) / len(g) if g else math.nan
        sd = (math.sqrt(sum((y - mean) ** 2 for y in g) / (len(g) - 1)) / math.sqrt(len(g))
              if len(g) > 1 else math.nan)
        rows.append((len(g), sum(v) / len(v) if v else math.nan, mean, sd))
    return rows


def test_gain_by_memorization_equals_a_naive_loop():
    rng = np.random.default_rng(2)
    mem = rng.uniform(-0.3, 1.2, 400)
    mem[[0, 1]] = [0.1, 1.0]           # on an inner edge and on the closed last edge
    gain = rng.normal(0.05, 0.2, 400) + 0.1 * mem
    gain[5], mem[6] = np.nan, np.inf   # dropped pairs
    table = gain_by_memorization(gain, mem)
    want = _naive_bins(gain, mem, GAIN_EDGES)
    np.testing.assert_array_equal(table.count, [r[0] for r in want])
    assert table.count.sum() == 398   # clipping keeps every finite pair
    np.testing.assert_allclose(table.value_mean, [r[1] for r in want], rtol=1e-12)
    np.testing.assert_allclose(table.target_mean, [r[2] for r in want], rtol=1e-12)
    np.testing.assert_allclose(table.target_stderr, [r[3] for r in want], rtol=1e-12)
    # the end bins are labelled by the values they hold: the first from its smallest (negative)
    # mem, the last up to its largest, so each bin's mean mem lies within its label
    finite = np.isfinite(mem) & np.isfinite(gain)
    np.testing.assert_allclose(table.lower, [mem[finite].min(), *GAIN_EDGES[1:-1]])
    np.testing.assert_allclose(table.upper, [*GAIN_EDGES[1:-1], mem[finite].max()])
    assert np.all((table.lower <= table.value_mean) & (table.value_mean <= table.upper))
    inside = gain_by_memorization(gain, np.clip(mem, 0.0, 1.0))
    np.testing.assert_allclose(inside.lower, GAIN_EDGES[:-1])
    np.testing.assert_allclose(inside.upper, GAIN_EDGES[1:])
    # a bin count uses bin_by's equal-count bins on the unclipped values
    q = gain_by_memorization(gain, mem, bins=4)
    ref = bin_by(mem, gain, 4)
    np.testing.assert_allclose(q.target_mean, ref.target_mean)
    np.testing.assert_array_equal(q.count, ref.count)
    with pytest.raises(ValueError, match="same shape"):
        gain_by_memorization(gain, mem[:-1])
    with pytest.raises(ValueError, match="increasing"):
        gain_by_memorization(gain, mem, bins=[0.5, 0.1])
