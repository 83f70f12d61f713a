"""experiments.curvature_clues_table1: the shadow/target split, the attacks against naive
re-implementations of the authors' notebook statistics, the per-target tables, the stored
statistics, and one tiny end-to-end run that ``experiments.recompute`` rebuilds exactly."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from experiments import curvature_clues_table1 as cc  # noqa: E402
from experiments import recompute  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
EPS = 1e-22


# ----------------------------------------------------------------------------------------------
# synthetic statistics with a known membership signal


def _statistics(n=400, shadows=8, targets=2, views=2, signal=1.0, seed=0):
    """Per-model statistics where members have a higher confidence and a lower curvature by
    ``signal`` (in units of the per-model noise); signal = 0 is the null."""
    rng = np.random.default_rng(seed)
    masks, is_target = cc.shadow_target_masks(n, shadows, targets, seed=seed)
    k = masks.shape[0]
    member = masks[..., None].astype(float)
    difficulty = rng.normal(0, 2, (1, n, 1))
    conf = difficulty + 3 + signal * member + rng.normal(0, 1, (k, n, views))
    gap = np.where(rng.random((k, n, views)) < 0.2, rng.exponential(1, (k, n, views)), 0.0)
    log_curv = -difficulty - signal * member + rng.normal(0, 1, (k, n, views))
    z = 50
    return {"masks": masks, "is_target": is_target,
            "confidence": conf, "max_confidence_gap": gap,
            "modified_entropy": np.exp(-conf[..., 0]) + rng.exponential(0.1, (k, n)),
            "curvature": np.exp(log_curv), "zero_order": np.exp(log_curv + rng.normal(0, 0.3,
                                                                                    (k, n, views))),
            "test_confidence": rng.normal(2, 2, (k, z, views)),
            "test_max_confidence_gap": np.where(rng.random((k, z, views)) < 0.3, 1.0, 0.0)}


def _split(stats, target_row):
    sh = ~stats["is_target"]
    return sh, stats["masks"][sh]


def _notebook_nll(t, s, m):
    """get_nll_ratio of conditonal_mia_aug_cifar10.ipynb, one example and view at a time."""
    xt, xs = np.log(t + EPS), np.log(s + EPS)
    out = np.zeros(t.shape[0])
    for i in range(t.shape[0]):
        for a in range(t.shape[1]):
            x_in, x_out = xs[m[:, i], i, a], xs[~m[:, i], i, a]
            sd = x_in.var() + 1e-32
            nll = lambda mu: (xt[i, a] - mu) ** 2 / (2 * sd**2) + 0.5 * np.log(sd**2) \
                + 0.5 * np.log(2 * np.pi)  # noqa: E731
            out[i] += -(nll(x_in.mean()) - nll(x_out.mean()))
    return out


def _notebook_lr(xt, xs, m):
    """get_likelihood_ratio of the notebook on already transformed statistics."""
    lik_in, lik_out = np.zeros(xt.shape[0]), np.zeros(xt.shape[0])
    for i in range(xt.shape[0]):
        for a in range(xt.shape[1]):
            x_in, x_out = xs[m[:, i], i, a], xs[~m[:, i], i, a]
            for acc, grp in ((lik_in, x_in), (lik_out, x_out)):
                sd = grp.var() + EPS
                acc[i] += np.exp(-(xt[i, a] - grp.mean()) ** 2 / (2 * sd**2)
                                 - 0.5 * np.log(sd**2) - 0.5 * np.log(2 * np.pi))
    return lik_in / (lik_out + EPS)


# ----------------------------------------------------------------------------------------------
# who trains on what


def test_shadows_are_balanced_and_targets_are_independent_halves():
    masks, is_target = cc.shadow_target_masks(1000, 16, 3, seed=4)
    assert masks.shape == (19, 1000) and is_target.tolist() == [False] * 16 + [True] * 3
    assert np.all(masks[:16].sum(0) == 8)  # every example IN exactly 8 and OUT 8 shadows
    assert np.all(masks[16:].sum(1) == 500)  # each target on exactly half
    assert len({masks[k].tobytes() for k in range(16, 19)}) == 3
    again, _ = cc.shadow_target_masks(1000, 16, 3, seed=4)
    np.testing.assert_array_equal(masks, again)
    # a target's membership is independent of the shadows': IN-shadow counts match in both groups
    other, _ = cc.shadow_target_masks(1000, 16, 3, seed=5)
    assert not np.array_equal(masks, other)


def test_bad_configs_fail_before_any_work(tmp_path):
    tiny = dataclasses.replace(cc.get_config("tiny"), out=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="IN and >= 2 OUT"):
        cc.main(dataclasses.replace(tiny, models=5, targets=2))
    with pytest.raises(ConfigError, match="one dataset per run"):
        cc.main(dataclasses.replace(tiny, datasets=("digits", "cifar10")))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------
# the attacks


def test_paper_statistics_match_the_notebook():
    stats = _statistics(n=60, views=2)
    scores = cc.attack_scores(stats, cc.get_config("tiny"))
    sh, m = _split(stats, None)
    targets = np.flatnonzero(stats["is_target"])
    for t, k in enumerate(targets):
        zo = stats["zero_order"]
        np.testing.assert_allclose(scores[("zero_order_nll", "paper")][t],
                                   _notebook_nll(zo[k], zo[sh], m), rtol=1e-9)
        np.testing.assert_allclose(scores[("zero_order_lr", "paper")][t],
                                   _notebook_lr(np.log(zo[k] + EPS), np.log(zo[sh] + EPS), m),
                                   rtol=1e-9, atol=1e-300)
        # "Carlini et al.": logit_scale of the float32 max probability, then the notebook's LR
        p = 1 / (1 + np.exp(-(stats["confidence"] + stats["max_confidence_gap"])))
        p = p.astype(np.float32).astype(np.float64)
        x = np.log(p / (1 - p + EPS) + EPS)
        np.testing.assert_allclose(scores[("lira_max_prob", "paper")][t],
                                   _notebook_lr(x[k], x[sh], m), rtol=1e-9, atol=1e-300)
        # "Ye et al.": the 0.01 % quantile of the OUT losses minus the target's loss
        loss = np.log1p(np.exp(-stats["confidence"][..., 0]))
        quantile = [np.percentile(loss[sh][~m[:, i], i], 0.01) for i in range(loss.shape[1])]
        np.testing.assert_allclose(scores[("attack_r", "paper")][t], quantile - loss[k],
                                   rtol=1e-9)
        np.testing.assert_allclose(scores[("loss", "")][t], -loss[k], rtol=1e-12)
        # Watson et al. / Sablayrolles et al.
        mean_out = np.array([loss[sh][~m[:, i], i].mean() for i in range(loss.shape[1])])
        mean_in = np.array([loss[sh][m[:, i], i].mean() for i in range(loss.shape[1])])
        np.testing.assert_allclose(scores[("calibrated_loss", "")][t], mean_out - loss[k])
        np.testing.assert_allclose(scores[("calibrated_loss_midpoint", "")][t],
                                   (mean_in + mean_out) / 2 - loss[k])


def test_targets_are_attacked_with_the_shadows_only():
    stats = _statistics(n=80)
    base = cc.attack_scores(stats, cc.get_config("tiny"))
    first, second = np.flatnonzero(stats["is_target"])
    changed = {k: v.copy() for k, v in stats.items()}
    for name in ("confidence", "curvature", "zero_order", "test_confidence"):
        changed[name][second] *= 3.0  # another target's statistics must not enter target 0's test
    changed["masks"][second] = ~changed["masks"][second]
    after = cc.attack_scores(changed, cc.get_config("tiny"))
    for key in base:
        np.testing.assert_array_equal(after[key][0], base[key][0], err_msg=str(key))
        assert base[key].shape == (2, 80)


@pytest.mark.parametrize("signal, low, high", [(0.0, 0.42, 0.58), (1.5, 0.70, 1.0)])
def test_attacks_find_a_planted_signal_and_nothing_under_the_null(signal, low, high):
    stats = _statistics(n=2000, shadows=16, targets=2, signal=signal, seed=3)
    built = cc.tables(stats, cc.get_config("tiny"))
    rows = {(r["attack"], r["mode"]): r for r in built["table1"]}
    for key in [("zero_order_nll", "corrected"), ("curvature_lr", "corrected"),
                ("lira_online", ""), ("calibrated_loss", "")]:
        assert low <= rows[key]["auroc"] <= high, (key, rows[key]["auroc"])


def test_tables_are_per_target_metrics_with_the_published_numbers_beside():
    stats = _statistics(n=300)
    config = cc.get_config("tiny")
    built = cc.tables(stats, config)
    scores = cc.attack_scores(stats, config)
    targets = np.flatnonzero(stats["is_target"])
    per = {(r["attack"], r["mode"], r["target_model"]): r for r in built["per_target"]}
    for (attack, mode), s in scores.items():
        aucs = [skm.roc_auc_score(stats["masks"][k], s[t]) for t, k in enumerate(targets)]
        for t, k in enumerate(targets):
            assert per[(attack, mode, k)]["auroc"] == pytest.approx(aucs[t], abs=1e-12)
        row = next(r for r in built["table1"] if (r["attack"], r["mode"]) == (attack, mode))
        assert row["auroc"] == pytest.approx(np.mean(aucs))
        assert row["auroc_sd"] == pytest.approx(np.std(aucs))  # ddof 0, as the notebook
        published = cc.PAPER.get((attack, mode))
        if published is None:
            assert row["paper_auroc"] is None and row["difference_auroc"] is None
        else:
            assert row["paper_auroc"] == published["auroc"][0] / 100
            assert row["difference_auroc"] == pytest.approx(row["auroc"] - row["paper_auroc"])
    assert [r["auroc"] for r in built["table1"]] == sorted(
        (r["auroc"] for r in built["table1"]), reverse=True)
    assert set(cc.PAPER) <= set(scores) and set(scores) == set(cc.ATTACKS)
    probed = dataclasses.replace(config, zero_order_probes=3, num_probes=5)
    for row in cc.tables(stats, probed)["table1"]:  # each row states its statistic's probes
        expected = {"zero_order": 3, "curvature": 5}
        family = next((f for f in expected if row["attack"].startswith(f + "_")), None)
        assert row["probes"] == (expected[family] if family else None), row["attack"]
    protocol = built["protocol"]
    assert [p["target_model"] for p in protocol] == targets.tolist()
    assert all(p["in_shadows_min"] == p["in_shadows_max"] == 4 for p in protocol)


def test_stored_floats_keep_twelve_mantissa_bits():
    x = np.random.default_rng(0).lognormal(0, 5, 10_000).astype(np.float64)
    x[:3] = [0.0, 1.0, -2.5]
    stored = cc._stored(x)
    assert stored.dtype == np.float32
    rel = np.abs(stored[3:] - x[3:]) / np.abs(x[3:])
    assert rel.max() <= 2.0 ** -13 and rel.max() > 2.0 ** -16  # rounded, not truncated to 23 bits
    np.testing.assert_array_equal(stored[:3], [0.0, 1.0, -2.5])
    np.testing.assert_array_equal(cc._stored(stored), stored)  # idempotent
    masks = np.ones((2, 3), bool)
    assert cc._stored(masks) is masks


# ----------------------------------------------------------------------------------------------
# end to end: the tiny config, its tables rebuilt from statistics.npz


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc_table1")
    config = dataclasses.replace(cc.get_config("tiny"), out=str(root / "out"),
                                 cache_dir=str(root / "cache"))
    return config, cc.main(config)


def test_tiny_run_writes_the_evidence_and_recomputes_exactly(tiny_run):
    config, results = tiny_run
    out = Path(config.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "curvature_clues_table1"
    assert "held-out target models" in results["protocol"]
    assert set(results["cpu_seconds"]) >= {"train", "predict", "total"}
    for name in ("table1", "per_target", "members", "protocol", "signals"):
        assert (out / f"{name}.csv").is_file()
    markdown = (out / "table1.md").read_text().splitlines()
    assert markdown[0].startswith("| attack |") and len(markdown) == 2 + len(cc.ATTACKS)
    for rel in results["figures"]:
        assert (out / rel).read_bytes()[:8] == PNG
    stats = np.load(out / "statistics.npz")
    k, n = config.models, config.train_size
    assert stats["zero_order"].shape == (k, n, 2) and stats["zero_order"].dtype == np.float32
    assert stats["masks"].dtype == bool and stats["is_target"].sum() == config.targets
    assert recompute.main([str(out)]) == 0
    assert all(ok for _, ok, _ in recompute.recompute_folder(out))


def test_rerun_is_served_from_the_caches(tiny_run, tmp_path):
    config, results = tiny_run
    again = cc.main(dataclasses.replace(config, out=str(tmp_path / "again")))
    assert (tmp_path / "again" / "table1.csv").read_bytes() == \
        (Path(config.out) / "table1.csv").read_bytes()
    assert again["cpu_seconds"]["curvature (white-box and zero-order)"] < \
        results["cpu_seconds"]["curvature (white-box and zero-order)"]


def test_the_recorded_command_rebuilds_the_config():
    import shlex

    from jaxcurv.workflow import experiment as X

    config = dataclasses.replace(cc.get_config("cpu"), train_size=2000, out="results/a b",
                                 model_kwargs={"width": 8, "hidden": 64}, flip_view=False,
                                 progress=True)
    words = shlex.split(cc._command(config))
    assert words[:5] == ["python", "-m", "experiments.curvature_clues_table1", "--config", "cpu"]
    assert X.parse_args(cc.CONFIGS, words[3:]) == config
    assert cc._command(dataclasses.replace(cc.get_config("cpu"), progress=True)) == \
        "python -m experiments.curvature_clues_table1 --config cpu"
