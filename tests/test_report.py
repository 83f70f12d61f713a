"""The audit's report: the Findings block of report.html and the ``findings`` of summary.json hold
the numbers a reader needs (checked against scores.csv, the cached attack scores and sklearn),
with and without DP and label noise; table formatting; figures on awkward inputs."""

import contextlib
import csv
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from jaxcurv import report
from jaxcurv.cli import main
from jaxcurv.data import subset_masks

TINY = ["--models", "6", "--epochs", "2", "--num-probes", "2", "--bootstrap", "10",
        "--max-examples", "300", "--no-zero-order"]
FIGURES = {"top_memorized", "lowest_highest_curvature", "curvature_histogram",
           "mem_vs_curvature", "proxies_vs_mem", "curvature_trace_vs_curvature", "mia_roc",
           "mia_vs_memorization"}


def _audit(out: Path, *extra: str) -> dict:
    """Run the command with progress on; its files, summary, page, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(["audit", *TINY, *extra, "--out", str(out)]) == 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    return {"out": out, "rows": rows, "summary": json.loads((out / "summary.json").read_text()),
            "page": (out / "report.html").read_text(), "stdout": stdout.getvalue(),
            "stderr": stderr.getvalue()}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _audit(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def dp_noise(tmp_path_factory):
    return _audit(tmp_path_factory.mktemp("dp_noise"), "--dp-epsilon", "4", "--label-noise", "0.1")


def _column(rows, name) -> np.ndarray:
    return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows])


def _cached(out: Path, stage: str) -> dict[str, np.ndarray]:
    (path,) = (out / "cache").glob(f"{stage}-*.npz")
    with np.load(path) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start:page.index("</section>", start)]


def _check_common_findings(run):
    s, rows, page = run["summary"], run["rows"], run["page"]
    f = s["findings"]
    assert list(s)[0] == "findings"
    # highly memorized, re-derived from scores.csv: only significant examples count; 6 members
    # (3 IN, 3 OUT per example) cannot call any example highly memorized, and say so
    mem, lower = _column(rows, "mem"), _column(rows, "mem_lower")
    high = f["highly_memorized"]
    count = int(np.sum(np.nan_to_num(lower, nan=-1) > 0.5))
    points = int(np.sum(np.nan_to_num(mem, nan=-1) >= 0.5))
    assert high["count"] == count == 0 and high["share"] == pytest.approx(count / len(rows))
    assert high["count_point_estimate"] == points
    assert high["count_memorized"] == int(np.sum(np.nan_to_num(lower, nan=-1) > 0))
    assert s["memorization"]["fraction_at_least_0_5"] == pytest.approx(points / len(rows))
    assert (high["members_in"], high["members_out"], high["resolvable"]) == (3, 3, False)
    assert high["resolution"] == pytest.approx(1 / 3) and high["best_lower_bound"] < 0.5
    assert np.all(np.nan_to_num(lower, nan=-1) <= high["best_lower_bound"] + 1e-6)
    assert any("too few to call any example memorized" in w for w in f["warnings"])
    # Figure 9's bins hold the values their labels say (negative mem in a bin of its own)
    for row in s["mia"]["by_memorization"]["bins"]:
        assert row["mem_lo"] <= row["mem_center"] <= row["mem_hi"], row
    # the 16 most memorized: mem descending, ties by curvature descending (naive sort)
    curv = _column(rows, "curvature")
    naive = sorted(range(len(rows)), key=lambda i: (-np.nan_to_num(mem[i], nan=-np.inf),
                                                    -curv[i]))[:16]
    top = f["top_memorized"]["examples"]
    assert [e["index"] for e in top] == naive
    assert [e["label"] for e in top] == [int(rows[i]["label"]) for i in naive]
    np.testing.assert_allclose([e["mem"] for e in top], mem[naive], rtol=1e-5)
    assert s["figures"]["top_memorized"] == "figures/top_memorized.png"
    # the strongest attack, re-derived with sklearn from the cached (K, N) scores
    masks = subset_masks(len(rows), 6, seed=0)
    scores = _cached(run["out"], "attacks")
    aurocs = {k: roc_auc_score(masks[:len(v)].ravel(), v.ravel()) for k, v in scores.items()}
    best = max(aurocs, key=aurocs.get)
    strongest = f["strongest_attack"]
    assert strongest["attack"] == best
    assert strongest["auroc"] == pytest.approx(aurocs[best], abs=1e-9)
    # TPR at 0.1 % FPR only where resolvable: the smallest FPR above 0 (non-members tied at the
    # top non-member score, sklearn's first positive FPR) must be ≤ 0.1 %
    low_fpr = {k: roc_curve(masks[:len(v)].ravel(), v.ravel(), drop_intermediate=False)
               for k, v in scores.items()}
    tpr_low = {k: t[f <= 1e-3].max() for k, (f, t, _) in low_fpr.items()
               if f[f > 0].min() <= 1e-3}
    if best in tpr_low:
        assert strongest["tpr_at_fpr_0_1pct"] == pytest.approx(tpr_low[best], abs=1e-12)
        assert len(strongest["tpr_at_fpr_0_1pct_ci"]) == 2
    else:
        assert strongest["tpr_at_fpr_0_1pct"] is None  # NaN in JSON, never 0
        assert strongest["tpr_at_fpr_0_1pct_note"].startswith("not resolvable at 0.1 % FPR")
    low = f["strongest_attack_at_low_fpr"]
    if tpr_low:
        assert tpr_low[low["attack"]] == max(tpr_low.values())
    else:
        assert low["attack"] is None and "not resolvable at 0.1 % FPR" in low["note"]
    lo, hi = strongest["auroc_ci"]
    assert lo <= strongest["auroc"] <= hi
    # the page: Findings first, holding those numbers, readable headers, readable figure keys
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Accuracy</h2>")
    block = _section(page, "Findings")
    assert "Too few members to call any example highly memorized" in block
    assert f"{points} of {len(rows)} training examples have a point estimate" in block
    assert f"{best}, AUROC {aurocs[best]:.3f}" in block
    assert "top_memorized.png" in block
    assert "<th>tpr_at_fpr_0_1pct</th>" not in page and "<th>TPR at 0.1 % FPR</th>" in page
    # TPRs in percent with the unit everywhere, or why not resolvable; never a bare 0 %
    mia_rows = re.findall(r"<tr>(.*?)</tr>", _section(page, "Membership inference"))
    attack_rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in mia_rows
                   if re.findall(r"<td[^>]*>(.*?)</td>", r)[:1] in ([a] for a in aurocs)]
    assert len(attack_rows) == len(aurocs)
    for cells in attack_rows:
        for cell in cells[-2:]:  # TPR at 0.1 % and at 1 % FPR
            assert re.fullmatch(r"\d+\.\d\d %( \[\d+\.\d\d %, \d+\.\d\d %\])?", cell) or (
                cell.startswith("not resolvable at")), cell
    for name, tpr in tpr_low.items():
        assert f"{100 * tpr:.2f} %" in _section(page, "Membership inference")
    if not tpr_low:
        assert "No attack is strongest at 0.1 % FPR: not resolvable" in block
    assert "TPR at 0.1 % FPR 0.00 %" not in block
    # the command's summary: TPR at 1 % FPR in percent with the unit too
    printed = re.findall(r"^    (\w+) +(\d\.\d{3})  +(.+?)(?:  +(?:\d\.\d{3}|—))?$",
                         run["stdout"], flags=re.M)
    assert {name for name, _, _ in printed} == set(aurocs)
    for _, _, tpr_1pct in printed:
        assert re.fullmatch(r"\d+\.\d\d %", tpr_1pct) or tpr_1pct.startswith(
            "not resolvable at 1 % FPR"), tpr_1pct
    assert FIGURES <= set(s["figures"]) and not {"extreme", "hist"} & set(s["figures"])
    for rel in s["figures"].values():
        assert (run["out"] / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rel in page
    # sanity warnings: in the JSON, red on the page and printed by the command
    acc = s["accuracy"]["test_mean"]
    assert any("near chance" in w for w in f["warnings"]) == (acc < 0.1 + 0.1 * 0.9)
    for warning in f["warnings"]:
        assert f"warning: {warning}" in run["stderr"]
        assert html.escape(warning).split("--")[0] in block
    if f["warnings"]:
        assert "<ul class='warnings'>" in block


def test_findings_without_dp_or_label_noise(plain):
    _check_common_findings(plain)
    s = plain["summary"]
    assert "privacy" not in s["findings"] and "label_noise" not in s["findings"]
    assert s["findings"]["strongest_attack"]["attack"] in plain["stdout"]
    assert "ε" not in re.search(r"<title>(.*?)</title>", plain["page"]).group(1)


def test_training_progress_names_member_and_epoch(plain):
    # the audit's dense members train in one vmapped chunk on a CPU: "members 1–6/6"
    assert re.search(r"training members 1–6/6, epoch 2/2", plain["stderr"])


def test_findings_with_dp_and_label_noise(dp_noise):
    _check_common_findings(dp_noise)
    s, rows, page = dp_noise["summary"], dp_noise["rows"], dp_noise["page"]
    f = s["findings"]
    # DP: ε spent, accuracy cost, each attack private vs non-private
    p = f["privacy"]
    assert p["epsilon"] == pytest.approx(4.0, abs=1e-3)
    assert p["accuracy_cost"] == pytest.approx(p["test_accuracy_nonprivate"]
                                               - p["test_accuracy_private"])
    assert 0 <= s["privacy"]["epsilon_audited_lower_bound"] <= s["privacy"]["epsilon_accounted"]
    masks = subset_masks(len(rows), 6, seed=0)
    reference = _cached(dp_noise["out"], "reference_attacks")
    private = {r["attack"]: r["auroc"] for r in s["mia"]["metrics"]}
    assert [r["attack"] for r in p["attacks"]] == list(private)
    for row in p["attacks"]:
        assert row["auroc_private"] == private[row["attack"]]
        expected = roc_auc_score(masks.ravel(), reference[row["attack"]].ravel())
        assert row["auroc_nonprivate"] == pytest.approx(expected, abs=1e-9)
    assert "ε = 4" in re.search(r"<title>(.*?)</title>", page).group(1)
    block = _section(page, "Findings")
    assert "AUROC, non-private" in block and f"cost {p['accuracy_cost']:.3f}" in block
    for row in re.findall(r"<tr>(.*?)</tr>", block)[1:]:  # TPR cells: percent, a reason or —
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)[3:]:
            assert re.fullmatch(r"\d+\.\d\d %|—", cell) or cell.startswith(
                "not resolvable at 0.1 % FPR"), cell
    dp_table = _section(page, "Differential privacy")
    assert "ε audited lower bound" in dp_table and "<th>meaning</th>" in dp_table
    # label noise: the best ranker and its precision@k, re-derived from scores.csv
    noise = s["label_noise"]
    assert {"flipped", "true_label"} <= set(rows[0])
    assert {r["flipped"] for r in rows} == {"True", "False"}  # booleans, not 0/1
    flipped = np.array([r["flipped"] == "True" for r in rows])
    pandas = pytest.importorskip("pandas", reason="pandas reads the booleans back as bool")
    frame = pandas.read_csv(dp_noise["out"] / "scores.csv")
    assert frame["flipped"].dtype == bool
    assert frame.loc[frame.flipped, "index"].tolist() == np.flatnonzero(flipped).tolist()
    assert flipped.sum() == round(0.1 * len(rows)) == noise["flipped"]
    assert f["label_noise"]["best_ranker"] == max(noise["ranking"],
                                                  key=lambda n: noise["ranking"][n]["auroc"])
    k = int(flipped.sum())
    loss = _column(rows, "loss")
    naive = flipped[np.argsort(-loss, kind="stable")[:k]].mean()
    assert noise["ranking"]["loss"]["precision_at_k"] == pytest.approx(naive, abs=1.5 / k)
    best = noise["ranking"][f["label_noise"]["best_ranker"]]
    assert f["label_noise"]["precision_at_k"] == best["precision_at_k"] and best["k"] == k
    assert f"precision@{k} {best['precision_at_k']:.3f}" in block
    unfitted = noise["flipped_train_in_accuracy"] < 0.9
    assert any("flipped labels" in w for w in f["warnings"]) == unfitted
    # the DP comparison: informative only with an attackable reference (re-derived with sklearn)
    best_reference = max(roc_auc_score(masks.ravel(), v.ravel()) for v in reference.values())
    assert p["reference_best_auroc"] == pytest.approx(best_reference, abs=1e-9)
    assert p["informative"] == (best_reference >= 0.6)
    assert any("DP comparison is uninformative" in w for w in f["warnings"]) != p["informative"]
    assert ("The DP comparison is uninformative" in block) != p["informative"]
    stronger = [r["attack"] for r in p["attacks"]
                if r["auroc_nonprivate"] is not None and r["auroc_private"] > r["auroc_nonprivate"]]
    assert [r["attack"] for r in p["stronger_under_dp"]] == stronger
    assert any("stronger on the DP-SGD members" in w for w in f["warnings"]) == bool(stronger)
    higher = s["privacy"]["mem_mean_private"] > s["privacy"]["mem_mean_nonprivate"]
    assert any("mean mem is higher under DP-SGD" in w for w in f["warnings"]) == higher
    assert "Sanity checks passed" not in block


def test_resumed_run_says_resuming_instead_of_training(plain):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["audit", *TINY, "--out", str(plain["out"])]) == 0
    text = stderr.getvalue()
    assert "resuming members 1–6/6" in text and "training member" not in text


def test_table_cells_are_readable(tmp_path):
    page = report.write_html(tmp_path / "r.html", title="t", sections=[{
        "title": "T", "warnings": ["accuracy near chance: rerun with --epochs 60"],
        "tables": [{"caption": "cap", "rows": [
            {"proxy": "a", "spearman_p": 0.0, "pearson_p": 1e-248, "auroc_ci": (0.51, 0.53)},
            {"proxy": "b", "spearman_p": 0.031, "pearson_p": float("nan"), "auroc_ci": None}]}]}])
    text = page.read_text()
    cells = re.findall(r"<td[^>]*>(.*?)</td>", text)
    assert cells == ["a", "&lt; 1e-16", "&lt; 1e-16", "[0.51, 0.53]", "b", "0.031", "—", "—"]
    assert re.findall(r"<th>(.*?)</th>", text) == ["proxy", "Spearman p-value", "Pearson p-value",
                                                   "AUROC 95 % CI"]
    assert "<caption>cap</caption>" in text and "<code>--epochs</code>" in text


@pytest.mark.parametrize("correct_count", [0, 1, 299])
def test_curvature_histogram_handles_tiny_groups_and_negative_values(tmp_path, correct_count):
    rng = np.random.default_rng(0)
    curvature = np.concatenate([-rng.lognormal(0, 1, 30), rng.lognormal(0, 3, 270)])
    correct = np.arange(300) < correct_count
    path = report.figure_curvature_histogram(curvature, correct, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_privacy_bounds_and_top_memorized_figures(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((40, 8, 8, 1))
    labels = rng.integers(0, 10, 40)
    mem = rng.random(40)
    for path in (report.figure_privacy_bounds(mem, rng.lognormal(1.9, 0.3, 40), 4.0,
                                              tmp_path / "p.png", loss_bound=2.0,
                                              num_examples=20),
                 report.figure_top_memorized(images, labels, mem, tmp_path / "t.png",
                                             true_labels=(labels + (mem > 0.9)) % 10)):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_figure_draws_ties_as_steps_from_the_smallest_achievable_fpr(tmp_path, monkeypatch):
    """RMIA-like scores: 12 of 5000 non-members (0.24 %) tie at the top score 1.0 with 40
    members, so no threshold has 0 < FPR < 0.24 %. The drawn line (read from the Axes) starts
    at FPR 0.24 %, consists of horizontal and vertical pieces only (no chord through a tie), and
    each horizontal piece is at the largest TPR of any threshold with FPR ≤ x (scikit-learn)."""
    from jaxcurv import mia
    from jaxcurv.report import figures

    drawn = {}

    def keep_figure(fig, path):
        drawn["fig"] = fig
        return Path(path)

    monkeypatch.setattr(figures, "_save", keep_figure)
    rng = np.random.default_rng(0)
    y = np.arange(10000) < 5000
    tied = np.clip(rng.uniform(0.0, 0.99, 10000) + 0.2 * y, 0.0, 0.99)
    tied[np.flatnonzero(~y)[:12]] = 1.0
    tied[np.flatnonzero(y)[:40]] = 1.0
    smooth = rng.normal(size=10000) + 1.0 * y
    curves = {name: mia.roc_curve(s, y) for name, s in (("tied", tied), ("smooth", smooth))}
    report.figure_roc(curves, tmp_path / "roc.png")
    lines = {line.get_label(): line for line in drawn["fig"].axes[0].get_lines()}
    for name, scores in (("tied", tied), ("smooth", smooth)):
        fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
        x, ty = lines[name].get_xdata(), lines[name].get_ydata()
        assert x.min() == pytest.approx(fpr[fpr > 0].min())  # nothing below the smallest FPR
        assert np.all(np.diff(x) >= 0)
        for xa, xb, ya, yb in zip(x[:-1], x[1:], ty[:-1], ty[1:]):
            assert xa == xb or ya == yb  # vertical or horizontal
            if xb > xa:
                assert ya == max(1e-5, tpr[fpr <= np.sqrt(xa * xb)].max())
        res = mia.roc_metrics(scores, y)
        at_1pct = ty[:-1][(x[:-1] <= 0.01) & (x[1:] > 0.01)]
        assert at_1pct.size == 1 and at_1pct[0] == pytest.approx(res["tpr_at_fpr_1pct"])
    assert lines["tied"].get_xdata().min() > 1e-3  # 0.1 % FPR: no point drawn, as in the table
    assert not mia.roc_metrics(tied, y)["tpr_at_fpr_0_1pct_resolvable"]


# --- headlines and sanity checks, on synthetic summaries ----------------------------------------

from jaxcurv.workflow import sections  # noqa: E402


def _ensemble_memorization(k: int, seed: int = 0):
    """mem, its lower bound and masks of a synthetic ensemble of k members on 300 examples, 60
    of them memorized (right IN, mostly wrong OUT)."""
    from jaxcurv import memorization

    rng = np.random.default_rng(seed)
    masks = subset_masks(300, k, seed=seed)
    memorized = np.arange(300) < 60
    correct = np.where(masks, rng.random((k, 300)) < 0.97,
                       rng.random((k, 300)) < np.where(memorized, 0.1, 0.9))
    mem, _ = memorization.feldman_zhang(correct, masks)
    lower, _ = memorization.memorization_interval(correct, masks)
    return mem, lower, masks


def test_highly_memorized_counts_only_what_the_ensemble_resolves():
    mem, lower, masks = _ensemble_memorization(32)
    high = sections.highly_memorized(mem, lower, masks, fraction=0.5)
    assert high["resolvable"] and high["members_needed"] is None
    assert (high["members_in"], high["members_out"]) == (16, 16)
    assert high["resolution"] == pytest.approx(1 / 16)
    assert high["count"] == int(np.sum(lower > 0.5)) and 40 <= high["count"] <= 60
    assert high["count_point_estimate"] == int(np.sum(mem >= 0.5)) >= high["count"]
    line = sections.findings_lines({"highly_memorized": high, **_STRONGEST})[0]
    assert line.startswith(f"{high['count']} of 300 training examples") and "steps of 0.0625" in line

    mem, lower, masks = _ensemble_memorization(8)
    small = sections.highly_memorized(mem, lower, masks, fraction=0.5)
    assert small["count"] == 0 and small["count_point_estimate"] > 40 and not small["resolvable"]
    assert small["best_lower_bound"] == pytest.approx(0.2449, abs=1e-4)
    line = sections.findings_lines({"highly_memorized": small, **_STRONGEST})[0]
    assert line.startswith("Too few members to call any example highly memorized")
    assert "steps of 0.25" in line and f"--models {small['members_needed']}" in line


def test_members_needed_is_the_smallest_ensemble_that_can_resolve_mem():
    from jaxcurv.memorization import agresti_caffo_interval

    def resolves(k, fraction):
        k_in = round(fraction * k)
        return agresti_caffo_interval(k_in, k_in, 0, k - k_in)[0] > 0.5

    for fraction in (0.5, 0.3):
        needed = sections._members_needed(fraction, 6)
        assert resolves(needed, fraction) and not any(resolves(k, fraction)
                                                      for k in range(6, needed))
    assert sections._members_needed(0.5, 6) == 15  # 8 members IN, 7 OUT


_STRONGEST = {"strongest_attack": {"attack": "loss", "auroc": 0.7, "tpr_at_fpr_0_1pct": 0.01},
              "strongest_attack_at_low_fpr": {"attack": "loss", "auroc": 0.7,
                                              "tpr_at_fpr_0_1pct": 0.01}}


def _synthetic_summary(*, models=32, reference_auroc=0.75, private_auroc=0.55,
                       mem_private=0.01, zero_order_fallback=0) -> dict:
    mem, lower, masks = _ensemble_memorization(models)
    attacks = ("loss", "lira_online")
    out = {"config": {"models": models}, "data": {"train_examples": 300},
           "accuracy": {"test_mean": 0.9, "test_min": 0.88, "test_per_member": [0.9] * models,
                        "train_in_mean": 1.0},
           "memorization": {"median_stderr": 0.05, "highly_memorized": sections.highly_memorized(
               mem, lower, masks, fraction=0.5)},
           "mia": {"metrics": [{"attack": a, "auroc": private_auroc, "auroc_ci": [0.52, 0.58]}
                               for a in attacks]},
           "curvature": {"outlier_members": []},
           "zero_order": {"members": 8, "fallback_examples": zero_order_fallback}}
    if reference_auroc is not None:
        out["privacy"] = {"nonprivate_mia": [{"attack": a, "auroc": reference_auroc,
                                              "auroc_ci": [reference_auroc - 0.02,
                                                           reference_auroc + 0.02]}
                                             for a in attacks],
                          "mem_mean_private": mem_private, "mem_mean_nonprivate": 0.05}
    return out


def test_sanity_checks_judge_what_the_dp_comparison_needs():
    assert sections.sanity_warnings(_synthetic_summary(), 10) == []
    weak = sections.sanity_warnings(_synthetic_summary(reference_auroc=0.55), 10)
    assert len(weak) == 1 and "DP comparison is uninformative" in weak[0] and "--epochs" in weak[0]
    worse = sections.sanity_warnings(_synthetic_summary(reference_auroc=0.65, private_auroc=0.7,
                                                        mem_private=0.08), 10)
    assert any("loss 0.700 vs 0.650, lira_online 0.700 vs 0.650" in w for w in worse)
    assert any("mean mem is higher under DP-SGD (0.0800) than without DP (0.0500)" in w
               for w in worse)
    small = sections.sanity_warnings(_synthetic_summary(models=8), 10)
    assert len(small) == 1 and "8 members are too few" in small[0] and "--models 15" in small[0]
    noisy = _synthetic_summary()
    noisy["memorization"]["median_stderr"] = 0.2
    assert any("median standard error of mem is 0.20" in w
               for w in sections.sanity_warnings(noisy, 10))


def test_zero_order_fallback_is_a_summary_warning():
    w = sections.sanity_warnings(_synthetic_summary(reference_auroc=None,
                                                    zero_order_fallback=7), 10)
    assert len(w) == 1 and "7 of 300 example(s) have no IN or no OUT shadow" in w[0]
    assert "--zero-order-members" in w[0]


def test_curvature_histogram_legend_has_no_empty_group(tmp_path, monkeypatch):
    from jaxcurv.report import figures

    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or Path(path))
    curvature = np.random.default_rng(0).lognormal(0, 1, 50)
    for correct in (np.ones(50, bool), np.arange(50) < 45):
        report.figure_curvature_histogram(curvature, correct, tmp_path / "h.png")
    legends = [[t.get_text() for t in fig.axes[0].get_legend().get_texts()] for fig in saved]
    assert legends[0] == ["correct (n=50)"]
    assert legends[1] == ["correct (n=45)", "misclassified (n=5, one ▼ each)"]
