"""bench/peers.py: its --tiny run end to end (every row's status, checks and arithmetic; PyTorch
rows run where the `.[bench]` extra is installed and say "missing" where it is not), and the
reference implementations of the published attack code against closed forms and our attacks."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from bench import peers as P  # noqa: E402

TORCH = importlib.util.find_spec("torch") is not None
OPACUS = TORCH and importlib.util.find_spec("opacus") is not None
NEEDS_TORCH = pytest.mark.skipif(
    not TORCH, reason=f"PyTorch is the optional bench extra, not installed: {P.INSTALL_HINT}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One `python -m bench.peers --tiny` in a fresh process, with no CIFAR-10 files to find."""
    out = tmp_path_factory.mktemp("peers")
    empty = tmp_path_factory.mktemp("no_data")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXCURV_DATA_DIR=str(empty))
    proc = subprocess.run([sys.executable, "-m", "bench.peers", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "peers.json").read_text())


def _rows(result, section):
    return [r for r in result["rows"] if r["section"] == section]


@pytest.mark.slow
def test_tiny_run_writes_every_section_and_the_table(tiny):
    out, r = tiny
    assert set(r["sections"]) == set(P.SECTIONS)
    assert r["tiny"] is True and r["data"]["fallback"] is True
    assert r["environment"]["cores_used"] >= 1 and "load_avg_1min_end" in r["environment"]
    assert not [row for row in r["rows"] if row["status"] == "failed"]
    table = (out / "peers.md").read_text()
    assert "speedup (peer time / ours)" in table and r["command"] in table
    assert table.count("\n| ") == len(r["rows"]) + 1  # header + one line per row


@pytest.mark.slow
def test_tiny_attack_rows_equal_the_published_code_and_are_timed(tiny):
    rows = _rows(tiny[1], "attacks")
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "ok" and row["check"]["passed"], row["check"]
        assert row["check"]["max_abs_diff"] <= row["check"]["tolerance"]
        assert len(row["ours_times_s"]) == len(row["peer_times_s"]) == P.TINY.repeats >= 5
        assert row["ours_median_s"] == pytest.approx(np.median(row["ours_times_s"]))
        assert row["speedup"] == pytest.approx(row["peer_median_s"] / row["ours_median_s"])
        assert row["ours_rate"] == pytest.approx(P.TINY.attack_targets / row["ours_median_s"])
        assert 0.5 < row["check"]["auroc"] < 1.0  # the synthetic member effect is visible


@pytest.mark.slow
def test_tiny_limit_row_is_consistent(tiny):
    (row,) = _rows(tiny[1], "limit")
    s = P.TINY
    forward = P._forward_flops((32, 32, 3), s.width, s.hidden)
    assert row["forward_flops_analytic"] == forward
    assert row["analytic_flops_per_sample"] == s.probes * 4 * forward
    assert row["xla_over_analytic"] == pytest.approx(row["xla_flops_per_sample"]
                                                     / row["analytic_flops_per_sample"])
    # XLA counts at least the convolutions and dense layers of one forward pass per sample
    assert row["forward_flops_xla"] >= 0.9 * forward
    assert row["xla_flops_per_sample"] > row["forward_flops_xla"]
    assert row["fraction_of_peak"] == pytest.approx(row["achieved_flops_per_s"]
                                                    / row["peak_matmul_flops_per_s"])


@pytest.mark.slow
def test_tiny_torch_rows_run_or_say_missing(tiny):
    r = tiny[1]
    torch_rows = [row for row in r["rows"]
                  if row["section"] in ("curvature", "dpsgd", "ensemble")
                  and not row["name"].startswith("cost of privacy")]
    assert len(torch_rows) == 2 + 2 + 2
    for row in torch_rows:
        opacus_row = row["peer"].startswith("Opacus")
        if not TORCH or (opacus_row and not OPACUS):
            assert row["status"] == "missing" and P.INSTALL_HINT in row["reason"]
            assert row["speedup"] is None
        elif row["status"] == "slower than the loop":  # torch.func stacked: timed, not trained
            assert row["check"]["passed"] is None and row["speedup"] > 0
        else:
            assert row["status"] == "ok" and row["check"]["passed"], row["check"]
            assert row["speedup"] > 0
    (cost,) = [row for row in r["rows"] if row["name"].startswith("cost of privacy")]
    assert cost["overhead"] == pytest.approx(cost["ours_median_s"] / cost["peer_median_s"])


@NEEDS_TORCH
@pytest.mark.slow
def test_tiny_torch_checks_measured_agreement(tiny):
    r = tiny[1]
    curv = {row["peer"]: row["check"] for row in _rows(r, "curvature")}
    exact = next(c for name, c in curv.items() if "exact HVPs" in name)
    assert exact["max_rel_diff_curvature"] <= 1e-3
    fd = next(c for name, c in curv.items() if "finite differences" in name)
    assert fd["spearman_curvature"] >= 0.99
    for row in _rows(r, "dpsgd"):
        if row["status"] == "ok" and "max_rel_diff_update" in row["check"]:
            assert row["check"]["max_rel_diff_update"] <= 1e-3


def test_torch_rows_say_missing_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    peer = P._import_torch()
    assert peer.module is None and P.INSTALL_HINT in peer.reason
    assert P.INSTALL_HINT in peer.opacus_reason
    row = P._missing(P._row("curvature", "n", "ours", "peer"), peer.reason)
    assert row["status"] == "missing" and row["speedup"] is None
    cells = P._table_cells(row)
    assert cells["speedup (peer time / ours)"].startswith("missing: torch is not installed")


def test_lira_reference_matches_closed_form_and_ours():
    from jaxcurv import data, mia

    rng = np.random.default_rng(0)
    k, n, a = 8, 50, 2
    keep = data.subset_masks(n, k, fraction=0.5, seed=0)
    scores = rng.normal(size=(k, n, a))
    target = rng.normal(size=(n, a))
    ref = P.lira_reference(keep, scores, target, online=True)
    # closed form for example 3: mean over augmentations of log N(IN) − log N(OUT)
    j = 3
    s_in, s_out = scores[keep[:, j], j], scores[~keep[:, j], j]
    want = np.mean(stats.norm.logpdf(target[j], np.median(s_in, 0), np.std(s_in, 0))
                   - stats.norm.logpdf(target[j], np.median(s_out, 0), np.std(s_out, 0)))
    assert ref[j] == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(mia.lira(target, scores, keep, center="median"), a * ref,
                               rtol=1e-9)
    off = P.lira_reference(keep, scores, target, online=False)
    np.testing.assert_allclose(mia.lira(target, scores, keep, online=False, center="median",
                                        offline_test="two_sided"), a * off, rtol=1e-9)


def test_rmia_reference_matches_a_naive_loop_and_ours():
    from jaxcurv import data, mia

    rng = np.random.default_rng(1)
    n, z, k = 40, 30, 8
    shadows_in = data.subset_masks(n, k, fraction=0.5, seed=1)
    signals = rng.uniform(0.05, 0.95, (n, k + 2))
    population = rng.uniform(0.05, 0.95, (z, k + 2))
    member = np.column_stack([rng.random(n) < 0.5, rng.random(n) < 0.5, shadows_in.T])
    a = 0.3
    got = P.rmia_reference(signals, population, member, target=0, num_ref=k // 2, a=a, block=7)
    # naive loop: the OUT shadows (columns 2…) of x; the k/2 largest shadow signals of z
    for i in (0, 5, 17):
        p_x = (1 + a) / 2 * signals[i, 2:][~shadows_in[:, i]].mean() + (1 - a) / 2
        r_x = signals[i, 0] / p_x
        wins = 0
        for j in range(z):
            p_z = (1 + a) / 2 * np.sort(population[j, 2:])[::-1][:k // 2].mean() + (1 - a) / 2
            wins += r_x / (population[j, 0] / p_z) > 1.0
        assert got[i] == pytest.approx(wins / z)
    rank = np.argsort(np.argsort(-population[:, 2:].T, axis=0), axis=0)
    ours = mia.rmia(signals[:, 0], signals[:, 2:].T, population[:, 0], population[:, 2:].T,
                    reference_in=shadows_in, population_reference_in=rank >= k // 2,
                    online=False, offline_a=a)
    np.testing.assert_allclose(ours, got, atol=1e-12)


def test_same_padding_matches_flax():
    assert P._same_padding(32, 3, 2) == (0, 1)
    assert P._same_padding(32, 3, 1) == (1, 1)
    assert P._same_padding(8, 3, 2) == (0, 1)
    assert P._same_padding(7, 3, 2) == (1, 1)


def test_render_readme_replaces_only_the_marked_block(tmp_path, tiny):
    out, _ = tiny
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{P.README_BEGIN}\nold table\n{P.README_END}\nafter\n")
    P.render_readme(readme, out / "peers.json")
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\nbefore\n")
    assert text.endswith(f"{P.README_END}\nafter\n")
    assert "speedup (peer time / ours)" in text
    with pytest.raises(SystemExit, match="no"):
        (tmp_path / "bare.md").write_text("# nothing to replace\n")
        P.render_readme(tmp_path / "bare.md", out / "peers.json")
