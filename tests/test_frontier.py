"""The privacy–utility frontier experiment: its tiny configuration end to end, with the table's
attack metrics and means recomputed independently from the saved statistics, its tables rebuilt
byte for byte by experiments.recompute (and changed by a changed statistic), the contrasts, the
matched-accuracy interpolation against a hand computation, and its boundary checks."""

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
from experiments import recompute  # noqa: E402
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
    table = _rows(out / "frontier.csv")
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
    assert (out / "frontier.png").read_bytes()[:8] == PNG
    assert summary["statistics_sha256"] and summary["headlines"]["auroc_sgd"]["value"] == \
        pytest.approx(_num(table[0]["auroc"]), rel=1e-5)
    answer = results["answers"]["mitigation_beats_dp_sgd_at_matched_accuracy"]
    assert answer["answer"].split(":")[0] in ("yes", "no", "mixed", "not decidable at matched "
                                              "accuracy", "no significant difference at "
                                              "matched accuracy")
    assert set(answer["per_strength"]) == {"sam-gnr-0.4-0.04"}
    assert results["answers"]["reduction_vs_paper"]["paper_reduction"] == 0.41


def test_attack_metrics_and_means_match_independent_recomputation(tiny_run):
    cfg, results = tiny_run
    saved = X.load_statistics(cfg.out)
    masks = saved["masks"]
    for row in results["frontier"]:
        s = saved[f"{row['arm']}/score"].astype(np.float64)
        assert row["auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel(), s.ravel()),
                                             abs=1e-6)
        fpr, tpr, _ = skm.roc_curve(masks.ravel(), s.ravel(), drop_intermediate=False)
        assert row["tpr_at_fpr_1pct"] == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-6)
        correct = saved[f"{row['arm']}/correct"]
        curvature = saved[f"{row['arm']}/curvature"].astype(np.float64)
        mem, curv = [], []
        for i in range(masks.shape[1]):   # a loop over examples: IN − OUT accuracy, IN mean
            inside, outside = correct[masks[:, i], i], correct[~masks[:, i], i]
            if inside.size and outside.size:
                mem.append(inside.mean() - outside.mean())
            if inside.size:
                curv.append(curvature[masks[:, i], i].mean())
        assert row["mean_mem"] == pytest.approx(np.mean(mem), rel=1e-6, abs=1e-9)
        assert row["mean_curvature"] == pytest.approx(np.mean(curv), rel=1e-5)
        acc = saved[f"{row['arm']}/test_correct"].mean()
        assert row["test_accuracy"] == pytest.approx(acc)
        # FZ memorization from a balanced 6-member ensemble moves in steps of 1/3
        np.testing.assert_allclose(3 * np.array(mem), np.round(3 * np.array(mem)), atol=1e-9)


def test_the_tables_recompute_from_the_statistics(tiny_run, capsys):
    cfg, _ = tiny_run
    assert recompute.main([cfg.out]) == 0
    printed = capsys.readouterr().out
    for table in ("frontier", "versus", "sam_vs_sgd", "gain_by_memorization"):
        assert f"{table}.csv: matches" in printed


def test_a_changed_statistic_changes_the_table(tiny_run):
    cfg, _ = tiny_run
    saved = X.load_statistics(cfg.out)
    before = puf.tables(saved, cfg)
    flipped = saved["sam/test_correct"].copy()
    flipped[0, :5] = ~flipped[0, :5]        # member 0 of SAM now errs where it was right
    after = puf.tables({**saved, "sam/test_correct": flipped}, cfg)
    shift = (flipped.sum() - saved["sam/test_correct"].sum()) / flipped.size
    rows = {r["arm"]: r for r in before["frontier"]}, {r["arm"]: r for r in after["frontier"]}
    assert after["frontier"] != before["frontier"] and shift != 0
    assert rows[1]["sam"]["test_accuracy"] == pytest.approx(rows[0]["sam"]["test_accuracy"]
                                                            + shift)
    assert rows[1]["sgd"] == rows[0]["sgd"]     # only SAM's row (and SAM contrasts) move
    assert after["sam_vs_sgd"][0]["test_accuracy_gain"] == pytest.approx(
        before["sam_vs_sgd"][0]["test_accuracy_gain"] + shift)


def test_contrasts_follow_from_the_table(tiny_run):
    _, res = tiny_run
    point = {r["arm"]: r for r in res["frontier"]}
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
        lo, hi = row["auroc_minus_dp_lo"], row["auroc_minus_dp_hi"]
        assert row["auroc_sign"] == ("lower" if hi < 0 else "higher" if lo > 0 else "same")
    sam_sgd = res["sam_vs_sgd"][0]
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
                       (dict(gnr_hvp="fd"), "gnr.hvp"), (dict(model="resnet18"), "resnet18_gn"),
                       (dict(datasets=("digits", "digits")), "one dataset")]:
        with pytest.raises(ValueError, match=match):
            puf.main(dataclasses.replace(tiny, **bad))
    assert not (tmp_path / "x").exists()
