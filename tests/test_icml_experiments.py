"""The ICML 2024 experiments (Figs. 3–6) and the SAM − SGD comparison over seeds: their pure parts
against independent ground truth (naive loops, scipy, the workflow's own attacks, closed forms),
and each tiny config end to end with every table rebuilt from statistics.npz by
``experiments.recompute``."""

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from experiments import cifar10_evidence as C10  # noqa: E402
from experiments import curvature_bound_fit as CBF  # noqa: E402
from experiments import privacy_vs_curvature as PVC  # noqa: E402
from experiments import privacy_vs_memorization as PVM  # noqa: E402
from experiments import recompute  # noqa: E402
from experiments import sam_vs_sgd as SAM  # noqa: E402
from jaxcurv import data, mia  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# pure parts


def test_partial_spearman_is_the_correlation_of_rank_residuals():
    rng = np.random.default_rng(0)
    z = rng.normal(size=400)
    x = z + rng.normal(size=400)
    y = np.exp(z) + 0.3 * x + rng.normal(size=400)
    rx, ry, rz = (stats.rankdata(a) for a in (x, y, z))

    def residual(a):
        return a - np.polyval(np.polyfit(rz, a, 1), rz)

    expected = stats.pearsonr(residual(rx), residual(ry)).statistic
    assert C10.partial_spearman(x, y, z) == pytest.approx(expected, abs=1e-10)
    # given an independent variable it is close to the plain Spearman; NaN rows are dropped
    w = rng.normal(size=400)
    assert C10.partial_spearman(x, y, w) == pytest.approx(stats.spearmanr(x, y).statistic,
                                                          abs=0.02)
    x[:5] = np.nan
    assert C10.partial_spearman(x, y, z) == pytest.approx(
        C10.partial_spearman(x[5:], y[5:], z[5:]), abs=1e-12)


def test_binned_bound_fit_recovers_eq15_with_bin_counts_and_bin_maxima():
    """Bins built so that mean mem = p₁·√(examples)·(max curvature) + c₁ exactly: the fit must
    find p₁ and c₁ with R² = 1, which it cannot with the bin mean or with another m_sub."""
    rng = np.random.default_rng(1)
    p1, c1, mem, curv = 0.004, 0.05, [], []
    for b in range(10):
        n = int(rng.integers(3, 40))
        level = (b + 0.5) / 10
        top = (level - c1) / (p1 * np.sqrt(n)) if level > c1 else 0.0
        mem += [level] * n
        curv += list(rng.uniform(0, top, n - 1)) + [top]
    mem, curv = np.array(mem), np.array(curv)
    mem[0] = -0.3                       # clipped into bin 0 (its mean is then below the level)
    curv_bad = curv.copy()
    curv_bad[-1] = np.nan               # skipped
    fit = CBF.binned_bound_fit(np.delete(mem, 0), np.delete(curv, 0), 10)
    assert [r["bin"] for r in fit["bins"]] == list(range(10))
    assert fit["p1"] == pytest.approx(p1, rel=1e-6) and fit["c1"] == pytest.approx(c1, abs=1e-8)
    assert fit["r2"] == pytest.approx(1.0)
    assert sum(r["examples"] for r in CBF.binned_bound_fit(mem, curv_bad, 10)["bins"]) == \
        len(mem) - 1


def test_arm_masks_hold_every_other_example_and_half_of_each_candidate_per_group():
    b = np.array([3, 7, 9, 20, 31, 32])
    masks, group = PVM.arm_masks(40, b, 3, 4, seed=5)
    assert masks.shape == (12, 40) and group.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert masks[:, np.setdiff1d(np.arange(40), b)].all()
    for g in range(3):
        np.testing.assert_array_equal(masks[group == g][:, b].sum(0), 2)
    again, _ = PVM.arm_masks(40, b, 3, 4, seed=5)
    np.testing.assert_array_equal(masks, again)
    assert not np.array_equal(masks[:4], masks[4:8])   # groups draw different halves


def _pvm_statistics(rng):
    n, b = 30, np.array([2, 5, 11, 17, 23, 29])
    ref_masks = data.subset_masks(n, 4, seed=0)
    masks, group = PVM.arm_masks(n, b, 2, 4, seed=0)
    arms = np.array([1.0, 10.0, np.inf])
    return {"reference_masks": ref_masks, "reference_correct": rng.random((4, n)) < 0.7,
            "candidates": b, "masks": masks, "group": group, "arm_epsilon": arms,
            "correct": rng.random((3, 8, n)) < 0.6, "test_accuracy": rng.random((3, 8)),
            "epsilon_spent": np.tile(arms[:, None], (1, 8)),
            "noise_multiplier": np.array([3.0, 0.8, 0.0])}


def test_privacy_vs_memorization_tables_match_a_naive_loop():
    st = _pvm_statistics(np.random.default_rng(2))
    config = dataclasses.replace(PVM.get_config("tiny"), top=2)
    tabs = PVM.tables(st, config)
    b = st["candidates"]
    for row in tabs["mem_vs_epsilon"]:
        a = int(np.flatnonzero(st["arm_epsilon"] == row["epsilon"])[0])
        rows = (range(8) if row["seed"] == "pooled"
                else [k for k in range(8) if st["group"][k] == row["seed"]])
        mems = []
        for i in b:
            ins = [st["correct"][a, k, i] for k in rows if st["masks"][k, i]]
            outs = [st["correct"][a, k, i] for k in rows if not st["masks"][k, i]]
            mems.append(np.mean(ins) - np.mean(outs))
        assert row["mem_candidates"] == pytest.approx(np.mean(mems))
        bound = 1 - math.exp(-row["epsilon"]) if math.isfinite(row["epsilon"]) else 1.0
        assert row["bound"] == pytest.approx(bound)
    summary = {r["epsilon"]: r for r in tabs["per_epsilon"]}
    for e, r in summary.items():
        groups = [x["mem_candidates"] for x in tabs["mem_vs_epsilon"]
                  if x["epsilon"] == e and x["seed"] != "pooled"]
        assert r["mem_candidates_mean"] == pytest.approx(np.mean(groups))
        assert r["mem_candidates_sd"] == pytest.approx(np.std(groups, ddof=1))
    assert tabs["reference"][0]["candidates"] == len(b)


def test_privacy_vs_curvature_tables_summarize_every_arm_and_fit_the_dp_ones():
    rng = np.random.default_rng(3)
    arms = np.array([0.0, 1.0, 2.0, 5.0, 10.0, 20.0, np.inf])
    a, s, n, z = len(arms), 3, 50, 20
    scale = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 9.0, 10.0])[:, None, None]
    st = {"arm_epsilon": arms, "noise_multiplier": np.array([np.inf, 5, 3, 2, 1, 0.7, 0]),
          "train_labels": np.zeros(n, int), "test_labels": np.zeros(z, int),
          "weight_norm": rng.random((a, s)) + 5, "epsilon_spent": np.tile(arms[:, None], (1, s)),
          "train_loss": 2.3 / scale * rng.uniform(0.9, 1.1, (a, s, n)),
          "train_correct": rng.random((a, s, n)) < 0.5,
          "test_loss": rng.random((a, s, z)), "test_correct": rng.random((a, s, z)) < 0.4,
          "train_curvature": scale * rng.lognormal(0, 2, (a, s, n)),
          "test_curvature": scale * rng.lognormal(0, 2, (a, s, z)),
          "train_curvature_trace": rng.normal(size=(a, s, n)),
          "test_curvature_trace": rng.normal(size=(a, s, z))}
    tabs = PVC.tables(st, PVC.get_config("tiny"))
    assert [r["arm"] for r in tabs["per_epsilon"]] == ["untrained"] + ["dp"] * 5 + \
        ["non-private"]
    for r in tabs["per_model"]:
        i = int(np.flatnonzero(arms == r["epsilon"])[0])
        assert r["curvature_mean"] == pytest.approx(st["train_curvature"][i, r["seed"]].mean())
        assert r["curvature_median"] == pytest.approx(
            np.median(st["train_curvature"][i, r["seed"]]))
        assert r["test_accuracy"] == pytest.approx(st["test_correct"][i, r["seed"]].mean())
    fits = {r["quantity"]: r for r in tabs["fits"]}
    means = st["train_curvature"][1:6].mean(axis=(1, 2))
    assert fits["curvature_mean"]["spearman_with_epsilon"] == pytest.approx(
        stats.spearmanr(arms[1:6], means).statistic)
    assert fits["train_loss_mean"]["spearman_with_epsilon"] < 0 < fits["train_loss_mean"]["r2"]


def test_sam_attack_scores_equal_the_workflows_attacks():
    from jaxcurv.workflow import attack_scores

    rng = np.random.default_rng(4)
    k, n, c = 6, 40, 3
    logits = rng.normal(size=(k, n, c)) * 3
    labels = rng.integers(0, c, n)
    masks = data.subset_masks(n, k, seed=1)
    curv = rng.lognormal(size=(k, n))
    ours = SAM.attack_scores(mia.logit_confidence(logits, labels[None]),
                             mia.cross_entropy(logits, labels[None]), curv, masks, SAM._ATTACKS)
    theirs = attack_scores(logits[:, None], labels, masks, curv, None,
                           rng.normal(size=(k, 5, c)), rng.integers(0, c, 5))
    for name in SAM._ATTACKS:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10, atol=1e-12)


def test_sam_across_seeds_reports_the_sign_that_holds_in_every_seed():
    rows = [{"attack": "a", "d": v} for v in (0.1, 0.3, 0.2)] + \
           [{"attack": "b", "d": v} for v in (-0.1, 0.2, -0.3)]
    out = {r["attack"]: r for r in SAM._across(rows, ("d",), by="attack")}
    assert out["a"]["sign_in_every_seed"] == "+" and out["b"]["sign_in_every_seed"] == "mixed"
    assert out["a"]["mean"] == pytest.approx(0.2)
    assert out["a"]["sd"] == pytest.approx(np.std([0.1, 0.3, 0.2], ddof=1))
    assert SAM._across([{"d": -1.0}, {"d": -2.0}], ("d",))[0]["sign_in_every_seed"] == "-"


# ----------------------------------------------------------------------------------------------
# tiny configs end to end, every table recomputed from the saved statistics


@pytest.mark.parametrize("module", [PVC, PVM, SAM], ids=lambda m: m.EXPERIMENT)
def test_tiny_config_runs_and_its_tables_recompute(module, tmp_path):
    config = dataclasses.replace(module.get_config("tiny"), out=str(tmp_path / "out"),
                                 cache_dir=str(tmp_path / "cache"), progress=False)
    module.main(config)
    out = tmp_path / "out"
    results = recompute.recompute_folder(out)
    assert results and all(ok for _, ok, _ in results), results
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG for p in pngs)
    st = np.load(out / "statistics.npz")
    assert all(st[k].dtype in (np.float32, np.bool_) or st[k].dtype.kind == "i" for k in st)


def test_summary_command_is_the_scripts_own_flags_when_it_ran_as_the_script(monkeypatch):
    from jaxcurv.workflow import experiment as X

    config = PVM.get_config("cpu")
    monkeypatch.setattr(sys, "argv", ["experiments/privacy_vs_memorization.py", "--config",
                                      "cpu", "--set", "epsilons=[1.0, 10.0]"])
    assert X._command(PVM.EXPERIMENT, config) == (
        "python -m experiments.privacy_vs_memorization --config cpu --set 'epsilons=[1.0, 10.0]'")
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])  # called from Python: the named config
    assert X._command(PVM.EXPERIMENT, config) == (
        "python -m experiments.privacy_vs_memorization --config cpu")


def test_privacy_vs_memorization_summary_keeps_spreads_apart_from_values():
    row = {"epsilon": 1.0, "test_accuracy_mean": 0.3, "test_accuracy_sd": 0.01,
           "mem_top_sd": 0.2, "mem_top_mean": 0.1}
    assert PVM._spread_apart(row) == {
        "epsilon": 1.0, "test_accuracy_mean": 0.3, "mem_top_mean": 0.1,
        "sd_over_seeds": {"sd_test_accuracy": 0.01, "sd_mem_top": 0.2}}
