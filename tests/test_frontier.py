"""The privacy–utility frontier experiment: its tiny configuration end to end, with the table's
attack metrics, means and contrasts recomputed from the written scores and per-example columns,
the matched-accuracy interpolation against a hand computation, and its boundary checks."""

import csv
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

from experiments import privacy_utility_frontier as puf  # noqa: E402
from jaxcurv.workflow import experiment as X  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _num(value):
    return float(value) if value not in ("", None) else np.nan


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    cfg = dataclasses.replace(puf.get_config("tiny"), out=str(root / "out"),
                              cache_dir=str(root / "cache"))
    return cfg, puf.main(cfg)


def test_tiny_run_writes_the_table_figure_and_answers(tiny_run):
    cfg, results = tiny_run
    out = Path(cfg.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "privacy_utility_frontier"
    assert summary["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
    table = _rows(out / "digits" / "frontier.csv")
    names = [a.name for a in puf.arms(cfg)]
    assert [r["arm"] for r in table] == names == ["sgd", "sam", "sam-gnr-0.4-0.04",
                                                  "dp-sgd-eps4", "dp-sgd-eps64"]
    assert [r["family"] for r in table] == ["SGD", "SAM", "SAM-GNR", "DP-SGD", "DP-SGD"]
    # 0.1 % FPR needs ≥ 1000 non-member scores: the tiny run's are NaN (not resolvable), not 0
    resolves_0_1pct = cfg.models * cfg.train_size // 2 >= 1000
    for r in table:
        for k in ("test_accuracy", "auroc", "tpr_at_fpr_0_1pct", "mean_mem", "mean_curvature"):
            if k == "tpr_at_fpr_0_1pct" and not resolves_0_1pct:
                assert np.isnan(_num(r[k])), (r, k)
                continue
            assert np.isfinite(_num(r[k])) and _num(r[f"{k}_lo"]) <= _num(r[f"{k}_hi"]), (r, k)
    dp = [r for r in table if r["family"] == "DP-SGD"]
    assert all(_num(r["epsilon"]) <= e * 1.0001 for r, e in zip(dp, (4.0, 64.0)))
    assert _num(dp[0]["noise_multiplier"]) > _num(dp[1]["noise_multiplier"]) > 0
    assert (out / "digits" / "frontier.png").read_bytes()[:8] == PNG
    answer = results["digits"]["answers"]["mitigation_beats_dp_sgd_at_matched_accuracy"]
    assert answer["answer"].split(":")[0] in ("yes", "no", "mixed", "not decidable at matched "
                                              "accuracy", "no significant difference at "
                                              "matched accuracy")
    assert set(answer["per_strength"]) == {"sam-gnr-0.4-0.04"}
    assert results["digits"]["answers"]["reduction_vs_paper"]["paper_reduction"] == 0.41


def test_attack_metrics_and_means_match_independent_recomputation(tiny_run):
    cfg, results = tiny_run
    d = Path(cfg.out) / "digits"
    saved = np.load(d / "scores.npz")
    masks = saved["masks"]
    per_example = _rows(d / "per_example.csv")
    for row in results["digits"]["table"]:
        s = saved[row["arm"]].astype(np.float64)
        assert row["auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel(), s.ravel()),
                                             abs=1e-6)
        fpr, tpr, _ = skm.roc_curve(masks.ravel(), s.ravel(), drop_intermediate=False)
        assert row["tpr_at_fpr_1pct"] == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-6)
        mem = np.array([_num(r[f"mem_{row['arm']}"]) for r in per_example])
        curv = np.array([_num(r[f"curvature_{row['arm']}"]) for r in per_example])
        assert row["mean_mem"] == pytest.approx(np.nanmean(mem), rel=1e-4, abs=1e-6)
        assert row["mean_curvature"] == pytest.approx(np.nanmean(curv), rel=1e-4)
        # FZ memorization from a balanced 6-member ensemble moves in steps of 1/3
        finite = mem[np.isfinite(mem)]
        np.testing.assert_allclose(3 * finite, np.round(3 * finite), atol=1e-4)


def test_contrasts_follow_from_the_table(tiny_run):
    _, results = tiny_run
    res = results["digits"]
    point = {r["arm"]: r for r in res["table"]}
    dp = [a for a in point if a.startswith("dp-sgd")]
    for row in res["versus"]:
        m, sam = point[row["arm"]], point["sam"]
        assert row["auroc_reduction"] == pytest.approx(
            1 - (m["auroc"] - 0.5) / (sam["auroc"] - 0.5))
        assert row["accuracy_cost"] == pytest.approx(sam["test_accuracy"] - m["test_accuracy"])
        acc = np.array([point[a]["test_accuracy"] for a in dp])
        auc = np.array([point[a]["auroc"] for a in dp])
        if acc.min() <= m["test_accuracy"] <= acc.max() and acc.max() > acc.min():
            ref = np.interp(m["test_accuracy"], np.sort(acc), auc[np.argsort(acc)])
            assert row["position"] == "matched"
        else:
            ref = auc[np.argmax(acc)] if m["test_accuracy"] > acc.max() else auc[np.argmin(acc)]
            assert row["position"] in ("above", "below")
        assert row["auroc_minus_dp"] == pytest.approx(m["auroc"] - ref)
        lo, hi = row["auroc_minus_dp_ci"]
        assert row["auroc_sign"] == ("lower" if hi < 0 else "higher" if lo > 0 else "same")
    sam_sgd = res["sam_vs_sgd"]
    assert sam_sgd["auroc_difference"] == pytest.approx(point["sam"]["auroc"]
                                                        - point["sgd"]["auroc"])
    bins = res["gain_by_memorization"]
    assert {b["arm"] for b in bins} == set(point) - {"sgd"}


def test_matched_reference_interpolates_between_bracketing_runs():
    where, w = puf.matched_reference(0.85, [0.9, 0.7, 0.8])
    assert where == "matched"
    np.testing.assert_allclose(w, [0.5, 0.0, 0.5])
    where, w = puf.matched_reference(0.95, [0.9, 0.7, 0.8])
    assert where == "above" and list(w) == [1.0, 0.0, 0.0]
    where, w = puf.matched_reference(0.6, [0.9, 0.7, 0.8])
    assert where == "below" and list(w) == [0.0, 1.0, 0.0]
    where, w = puf.matched_reference(0.9, [0.9, 0.7, 0.8])   # at the top end
    assert where == "matched" and w[0] == pytest.approx(1.0) and w.sum() == pytest.approx(1.0)


def test_configs_and_bad_settings(tmp_path, fake_cifar10):
    small = puf.get_config("small")
    assert len(small.mitigations) >= 3 and len(small.epsilons) >= 3
    cifar = puf.get_config("cifar10-cpu")
    assert cifar.datasets == ("cifar10",) and cifar.fallback_dataset is None
    # the CIFAR-10 configuration finds its files through the environment (a tiny fake here)
    fake_cifar10(32)
    data = X.load_data("cifar10", dataclasses.replace(cifar, train_size=20))
    assert data.slug == "cifar10" and data.train.images.shape == (20, 32, 32, 3)
    tiny = dataclasses.replace(puf.get_config("tiny"), out=str(tmp_path / "x"))
    for bad, match in [(dict(models=4), "models"), (dict(mitigations=()), "mitigations"),
                       (dict(mitigations=((0.1, -1.0),)), "mitigations"),
                       (dict(epsilons=(8.0,)), "epsilons"), (dict(attack="zero_order_lr"),
                                                             "attack"),
                       (dict(gnr_hvp="fd"), "gnr.hvp"), (dict(model="resnet18"), "resnet18_gn")]:
        with pytest.raises(ValueError, match=match):
            puf.main(dataclasses.replace(tiny, **bad))
    assert not (tmp_path / "x").exists()
