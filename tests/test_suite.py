"""bench/suite.py, the one-command GPU run: its --tiny form end to end on CPU (every part's keys,
types and internal consistency, no accounting or TFDS import), and its helpers against closed
forms (the zero-order kernel behind the choice of h, the member-count rule)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from bench import suite as S  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
OURS = ("ours_fp32_highest", "ours_tf32_default", "ours_bf16")


def _columns(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows])
            for k in rows[0]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `python -m bench.suite --tiny` in a fresh process, with no CIFAR-10 files to find."""
    out = tmp_path_factory.mktemp("suite")
    empty = tmp_path_factory.mktemp("no_data")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXCURV_DATA_DIR=str(empty))
    proc = subprocess.run([sys.executable, "-m", "bench.suite", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "suite.json").read_text())


@pytest.mark.slow
def test_tiny_run_fills_every_part_without_accounting_or_tfds(tiny_run):
    out, r = tiny_run
    assert {"environment", "curvature", "ensemble", "dpsgd", "evidence", "peers",
            "suite"} <= set(r)
    for part in ("curvature", "ensemble", "dpsgd", "evidence", "peers"):
        assert r[part]["status"] == "ok", r[part].get("traceback")
        assert r[part]["wall_s"] > 0 and r[part]["cpu_s"] > 0 and r[part]["design_budget_s"] > 0
    env = r["environment"]
    # sys.modules at the end of the run: the GPU machine has neither package
    assert env["guarded_modules_imported"] == []
    assert env["backend"] == "cpu" and isinstance(env["device_count"], int)
    assert sum(r["suite"]["design_budget_s"].values()) == 480
    data = r["suite"]["data"]
    assert data["fallback"] is True and data["dataset"] == "synthetic" and "note" in data
    for name in ("curvature_rows.csv", "evidence_attacks.csv", "evidence_examples.csv",
                 "evidence_zero_order_h.csv"):
        assert (out / name).stat().st_size > 0
    for name in ("evidence_roc.png", "evidence_mem_vs_curvature.png"):
        assert (out / name).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_tiny_curvature_part_is_consistent(tiny_run):
    c = tiny_run[1]["curvature"]
    rate = c["samples_per_s"]
    expected = {*OURS, "authors_jax_tf32_default"}
    torch_ok = importlib.util.find_spec("torch") is not None
    assert c["torch"]["available"] is torch_ok
    if torch_ok:
        expected.add("authors_torch")
    assert set(rate) == expected and all(v > 0 for v in rate.values())
    for row in c["rows"]:  # samples/s = N / median seconds of the same timing
        assert row["samples_per_s"] == pytest.approx(c["batch"] / row["median_s"])
    for a in OURS:
        for b in expected - set(OURS):
            assert c["ratios"][f"{a}_over_{b}"] == pytest.approx(rate[a] / rate[b])
    for value in c["agreement"].values():
        assert -1.0 <= value <= 1.0
    assert set(c["target_met"]) >= {"tf32_samples_per_s", "bf16_samples_per_s",
                                     "spearman_bf16_vs_fp32"}
    assert c["trained"]["epochs"] >= 1 and 0.0 <= c["trained"]["train_accuracy"] <= 1.0


@pytest.mark.slow
def test_tiny_ensemble_and_dpsgd_parts_are_consistent(tiny_run):
    e, d = tiny_run[1]["ensemble"], tiny_run[1]["dpsgd"]
    k = e["members"]
    assert k >= 6 and len(e["test_accuracy"]) == k
    assert e["mean_test_accuracy"] == pytest.approx(np.mean(e["test_accuracy"]))
    assert e["members_per_hour"] == pytest.approx(3600 * k / (e["epochs"] * e["steady_epoch_s"]))
    loop = e["loop"]
    assert loop["members_per_hour"] == pytest.approx(3600 / (e["epochs"] * loop["steady_epoch_s"]))
    assert e["ratio_vs_loop"] == pytest.approx(e["members_per_hour"] / loop["members_per_hour"])
    assert isinstance(e["target_met"]["members_per_hour"], bool)
    row = d["row"]
    assert d["ratio_dp_over_nonprivate"] == pytest.approx(row["dp_ms"] / row["nonprivate_ms"])
    assert d["noise_multiplier"] == 1.0 and row["batch"] == S.TINY.dp_batch


@pytest.mark.slow
def test_tiny_peers_part_has_every_row_and_its_files(tiny_run):
    out, r = tiny_run
    p = r["peers"]
    full = json.loads((out / "peers" / "peers.json").read_text())
    assert [row["name"] for row in p["rows"]] == [row["name"] for row in full["rows"]]
    # tiny mode runs the sections without training (each section's tiny run: tests/test_peers.py)
    assert {row["section"] for row in p["rows"]} == set(S.TINY_PEER_SECTIONS)
    assert full["tiny"] is True and full["data"]["fallback"] is True
    for row in p["rows"]:
        assert row["status"] in ("ok", "missing", "slower than the loop"), row
    assert (out / "peers" / "peers.md").stat().st_size > 0


@pytest.mark.slow
def test_tiny_evidence_part_is_consistent(tiny_run):
    out, r = tiny_run
    ev = r["evidence"]
    assert ev["members"] == r["ensemble"]["members"] and ev["members_source"].startswith("the ")
    table = {row["attack"]: row for row in ev["table"]}
    assert set(table) == set(S.TABLE_ATTACKS)
    for row in table.values():
        for key in ("auroc", "balanced_accuracy", "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct"):
            if row[key] is None:  # NaN: too few non-member scores (or ties) to resolve that FPR
                assert key.startswith("tpr_at_fpr") and row[f"{key}_ci"] == [None, None]
                continue
            assert 0.0 <= row[key] <= 1.0
            lo, hi = row[f"{key}_ci"]
            assert lo <= hi
        assert row["balanced_accuracy"] >= 0.5  # a max over thresholds includes the trivial ones
    assert table["zero_order_nll"]["paper_auroc"] == S.PAPER_CIFAR10["auroc"]
    assert table["lira_online"]["paper_auroc"] is None
    # the Spearman correlation re-derived from the per-example CSV
    ex = _columns(out / "evidence_examples.csv")
    assert len(ex["index"]) == ev["evaluated_examples"]
    ok = np.isfinite(ex["mem"]) & np.isfinite(ex["curvature_in_mean"])
    rho = stats.spearmanr(ex["mem"][ok], ex["curvature_in_mean"][ok]).statistic
    assert ev["spearman_mem_vs_curvature"] == pytest.approx(rho, abs=1e-6)  # CSV: 6 digits
    assert np.all(ex["curvature_in_mean"][ok] >= 0)
    # the chosen h follows the documented rule applied to the recorded table
    zo = ev["zero_order"]
    errs = {row["h"]: row["median_rel_diff_f32_vs_f64"] for row in zo["h_table"]}
    assert sorted(errs, reverse=True) == list(S.H_GRID)
    passing = [h for h, e in errs.items() if e <= S.H_TOLERANCE]
    assert zo["h"] == (min(passing) if passing else min(errs, key=errs.get))


def _quadratic_loss(variables, x, y):
    """ℓ(x) = c + ½ xᵀAx (x flattened): its mixed second difference is exactly uᵀAv."""
    z = x.reshape(-1)
    return variables["c"] + 0.5 * z @ variables["A"] @ z + 0.0 * y


def test_mixed_zero_order_kernel_matches_the_closed_form_in_float64():
    rng = np.random.default_rng(0)
    d, n, p = 6, 5, 3
    b = rng.normal(size=(d, d))
    variables = {"A": b + b.T, "c": np.float64(0.3)}
    x = rng.normal(size=(n, 2, 3))
    y = np.zeros(n, np.int32)
    u, v = (rng.choice([-1.0, 1.0], size=(p, n, 2, 3)) for _ in range(2))
    fn = S._mixed_zero_order(_quadratic_loss)
    with jax.enable_x64(True):
        got = np.asarray(fn(variables, x, y, u, v, np.float64(1e-2)))
    uav = np.einsum("pni,ij,pnj->pn", u.reshape(p, n, d), variables["A"], v.reshape(p, n, d))
    np.testing.assert_allclose(got, np.abs(uav).mean(0), rtol=1e-9)


def test_choose_h_rejects_steps_lost_to_float32_cancellation():
    # ℓ = 200 + ½ xᵀAx: float32 rounding of ℓ (≈ 200·6e-8) over 4h² swamps |uᵀAv| ≈ 1 for small
    # h, never for large h (a quadratic has no truncation error)
    rng = np.random.default_rng(1)
    b = rng.normal(size=(12, 12)) / 4
    variables = {"A": jnp.asarray(b + b.T, jnp.float32), "c": jnp.float32(200.0)}
    x = rng.normal(size=(8, 2, 2, 3)).astype(np.float32)
    rows, h = S._choose_h(_quadratic_loss, variables, x, np.zeros(8, np.int32), probes=4, seed=0)
    errs = {row["h"]: row["median_rel_diff_f32_vs_f64"] for row in rows}
    assert errs[1e-1] < 1e-3 < 0.2 < errs[1e-3]
    assert h == min(k for k, e in errs.items() if e <= S.H_TOLERANCE) and h > 1e-3


def test_choose_members_fits_the_budget_in_multiples_of_eight():
    # 3× the loop's throughput assumed: K·epochs·t/3 ≤ seconds
    assert S._choose_members(32, 100.0, epochs=10, member_epoch_s=0.3) == 32
    assert S._choose_members(32, 20.0, epochs=10, member_epoch_s=0.3) == 16  # 20 fit → 16
    assert S._choose_members(32, 7.0, epochs=10, member_epoch_s=0.3) == 7
    assert S._choose_members(32, 1.0, epochs=10, member_epoch_s=0.3) == 6  # leave-one-model-out floor
    assert S._choose_members(8, 1e6, epochs=10, member_epoch_s=0.3) == 8


def test_eval_examples_spend_70_percent_of_the_time_left_in_whole_chunks(tmp_path):
    ctx = S._Context(S.TINY, budget_s=100.0, start=time.perf_counter(), out=tmp_path, seed=0)
    rates = {"white_box_s_per_example": 0.01, "zero_order_s_per_example": 0.01}
    # 0.7 · (100 − 20) s / (8 members · 0.02 s) = 350 examples → 320 in chunks of 64
    assert S._eval_examples(ctx, 8, 1000, rates, 64) == 320
    assert S._eval_examples(ctx, 8, 200, rates, 64) == 200  # capped at N
    slow = {k: 10.0 for k in rates}
    assert S._eval_examples(ctx, 8, 1000, slow, 64) == S.TINY.ev_min_examples  # floor
