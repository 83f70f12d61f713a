"""Experiment scripts: shared plumbing (named configs, overrides through the workflow's parser,
dataset fallback), the package form (``python -m experiments.<name>``), and one end-to-end run of
mem_vs_curvature's tiny config plus curvature_bound_fit on its cached data, with their outputs
checked against independent recomputations."""

import ast
import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from experiments import curvature_bound_fit as cbf  # noqa: E402
from experiments import mem_vs_curvature as mvc  # noqa: E402
from jaxcurv.workflow import apply_overrides  # noqa: E402
from jaxcurv.workflow import experiment as X  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
TOOLS = {"recompute"}  # commands over evidence folders, not experiments
SCRIPTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py")
                 if not p.stem.startswith("_") and p.stem not in TOOLS)


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------------------------
# shared plumbing


def test_overrides_parse_json_and_coerce_to_field_types():
    base = mvc.get_config("small")
    cfg = apply_overrides(base, ["models=8", 'datasets=["digits", "cifar10"]',
                                 "learning_rate=1", "model=mlp", "train_size=null",
                                 'model_kwargs={"hidden": 32}', "adversarial=false"])
    assert cfg.models == 8 and cfg.datasets == ("digits", "cifar10")
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.model == "mlp" and cfg.train_size is None and cfg.model_kwargs == {"hidden": 32}
    assert cfg.adversarial is False and base.models == 16  # the named config is untouched
    for bad, match in [(["nope=1"], "unknown setting"), (["models=abc"], "integer"),
                       (["models=2.5"], "integer"), (["models=0"], "--models must be an integer >= 1"), (["datasets=digits"], "list"),
                       (["members"], "KEY=VALUE"), (["adversarial=1"], "true or false")]:
        with pytest.raises(ValueError, match=match):
            apply_overrides(base, bad)


def test_parse_args_flags_and_set(tmp_path):
    cfg = X.parse_args(mvc.CONFIGS, ["--config", "tiny", "--out", str(tmp_path), "--seed", "3",
                                     "--data-dir", "/data", "--set", "top=7", "--models", "5",
                                     "--datasets", "digits", "cifar10", "--augment", "off",
                                     "--model-kwargs", '{"width": 4}'])
    assert (cfg.name, cfg.out, cfg.seed, cfg.data_dir, cfg.top) == ("tiny", str(tmp_path), 3,
                                                                    "/data", 7)
    assert (cfg.models, cfg.datasets, cfg.augment, cfg.model_kwargs) == (
        5, ("digits", "cifar10"), False, {"width": 4})
    assert cfg.epochs == mvc.get_config("tiny").epochs  # not given: the named config's value
    assert cfg.progress is True  # the command line shows progress unless told not to
    assert X.parse_args(mvc.CONFIGS, ["--quiet"]).progress is False
    with pytest.raises(SystemExit):
        X.parse_args(mvc.CONFIGS, ["--config", "nope"])
    with pytest.raises(SystemExit):  # no prefix matching: --model is not --models
        X.parse_args(mvc.CONFIGS, ["--mode", "3"])


def test_every_script_is_a_module_with_named_configs():
    import importlib

    for name in SCRIPTS:
        module = importlib.import_module(f"experiments.{name}")
        for config in ("tiny", "small", "full"):
            assert module.get_config(config).name == config, (name, config)
        with pytest.raises(ValueError, match="unknown config"):
            module.get_config("nope")
        source = (ROOT / "experiments" / f"{name}.py").read_text()
        imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)
                     for a in n.names}
        assert "sys" not in imported and not {"jaxcurv.pipeline", "jaxcurv.cli"} & imported, name
        assert "logging" not in imported, name


def test_script_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "experiments.curvature_clues_table1", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert "--config" in out.stdout and "Curvature Clues" in out.stdout


def test_cifar_without_local_files_falls_back_to_digits_with_a_note(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXCURV_DATA_DIR", raising=False)
    cfg = X.ExperimentConfig(datasets=("cifar10",), train_size=50, test_size=20,
                             data_dir=str(tmp_path))
    data = X.load_data("cifar10", cfg)
    assert data.slug == "digits" and data.train.name == "digits"
    assert "cifar10" in data.note and "digits" in data.note and "JAXCURV_DATA_DIR" in data.note
    assert (len(data.train), len(data.test)) == (50, 20)
    assert np.all(np.diff(data.train_index) > 0) and data.train_index.max() < 1438


def test_cifar_is_found_through_the_environment(fake_cifar10):
    fake_cifar10(4)
    data = X.load_data("cifar10", X.ExperimentConfig(train_size=12, seed=1))
    assert data.slug == "cifar10" and data.note is None and data.source == "cifar10"
    assert len(data.train) == 12 and len(data.test) == 10
    np.testing.assert_array_equal(data.train.labels, np.arange(30)[data.train_index] % 10)


def test_bad_settings_fail_before_any_work(tmp_path):
    tiny = dataclasses.replace(mvc.get_config("tiny"), out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="models must be >= 2"):
        mvc.main(dataclasses.replace(tiny, models=1))
    with pytest.raises(ValueError, match="unknown model"):
        mvc.main(dataclasses.replace(tiny, model="vgg"))
    with pytest.raises(ValueError, match="fraction"):
        mvc.main(dataclasses.replace(tiny, fraction=1.0))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------
# end to end: mem_vs_curvature tiny, its rerun from the cache, and curvature_bound_fit on it


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    cfg = dataclasses.replace(mvc.get_config("tiny"), out=str(root / "mvc"),
                              cache_dir=str(root / "cache"))
    results = mvc.main(cfg)
    return cfg, root, results


def test_mem_vs_curvature_writes_csv_json_and_figures(tiny_run):
    cfg, root, results = tiny_run
    out = Path(cfg.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "mem_vs_curvature"
    assert summary["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))  # config echo
    assert summary["command"] == "python -m experiments.mem_vs_curvature --config tiny"
    cols = _read_csv(out / "digits" / "scores.csv")
    assert len(cols["mem"]) == cfg.train_size == 300
    # 4 members, each example in exactly 2: mem = (correct_in − correct_out)/2 ∈ {−1, −½, 0, ½, 1}
    assert np.all(np.isfinite(cols["mem"]))
    np.testing.assert_array_equal(2 * cols["mem"], np.round(2 * cols["mem"]))
    assert np.abs(cols["mem"]).max() <= 1
    for name in ("curvature_in", "curvature_trace_in", "confidence", "learning_time"):
        assert np.isfinite(cols[name]).all(), name
    assert (cols["curvature_in"] > 0).all()  # the headline curvature is tr(H²) ≥ 0
    # the JSON's Spearman equals scipy's on the CSV columns (CSV keeps 6 significant digits)
    rho = stats.spearmanr(cols["mem"], cols["curvature_in"]).statistic
    assert summary["results"]["digits"]["spearman_mem_curvature"]["all"] == pytest.approx(
        rho, abs=1e-3)
    for rel in summary["results"]["digits"]["figures"]:
        assert (out / rel).read_bytes()[:8] == PNG
    assert summary["timings_s"]["total"] > 0


def test_rerun_is_served_from_the_cache_with_identical_results(tiny_run):
    cfg, root, _ = tiny_run
    before = (Path(cfg.out) / "digits" / "scores.csv").read_text()
    again = dataclasses.replace(cfg, out=str(root / "mvc_again"))
    mvc.main(again)
    summary = json.loads((root / "mvc_again" / "summary.json").read_text())
    assert (root / "mvc_again" / "digits" / "scores.csv").read_text() == before
    first = json.loads((Path(cfg.out) / "summary.json").read_text())["timings_s"]["total"]
    assert summary["timings_s"]["total"] < first


def test_curvature_bound_fit_reuses_the_data_and_reports_a_consistent_fit(tiny_run):
    cfg, root, _ = tiny_run
    fit_cfg = cbf.BoundFitConfig(**{**dataclasses.asdict(cfg), "out": str(root / "fit"),
                                    "fit_bins": 10})
    results = cbf.main(fit_cfg)["digits"]
    with open(root / "fit" / "digits" / "bins.csv") as f:
        rows = list(csv.DictReader(f))
    scores = _read_csv(Path(cfg.out) / "digits" / "scores.csv")
    for source in cbf.SOURCES:
        fit = results["fits"][source]
        bins = {k: np.array([float(r[k]) for r in rows if r["source"] == source])
                for k in rows[0] if k != "source"}
        line = fit["p1"] * np.sqrt(bins["examples"]) * bins["curvature_max"] + fit["c1"]
        np.testing.assert_allclose(bins["fitted"], line, rtol=1e-4, atol=1e-6)
        y = bins["mem_mean"]
        r2 = 1 - np.sum((y - line) ** 2) / np.sum((y - y.mean()) ** 2)
        assert fit["r2"] == pytest.approx(r2, abs=1e-4)
        assert fit["p1"] >= 0 and fit["c1"] >= 0
        # the paper's bins, by a naive loop: width 0.1 over [0, 1], mem clipped, max curvature
        curv = scores[f"curvature_{source}"]
        mem = np.clip(scores["mem"], 0, 1)
        for b, n, top in zip(bins["bin"].astype(int), bins["examples"], bins["curvature_max"]):
            members = [i for i in range(len(mem)) if min(int(mem[i] * 10), 9) == b]
            assert n == len(members)
            assert top == pytest.approx(max(curv[i] for i in members), rel=1e-5)
    assert (root / "fit" / "digits" / "eq15_bound_fit.png").read_bytes()[:8] == PNG


def test_a_member_that_did_not_train_is_named():
    """Naive check: member 2 fits 1 of its 4 examples while the others fit all of theirs."""
    from jaxcurv.workflow import experiment as X

    masks = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                      [1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 1, 1]], bool)
    correct = masks.copy()
    correct[2] = [1, 0, 0, 0, 0, 0, 0, 0]          # 1 of its 4 training examples
    warnings = X.lagging_members(correct, masks, what="seed 0, SGD")
    assert len(warnings) == 1 and warnings[0].startswith("seed 0, SGD: member 2 fit 0.25")
    assert "median of 1.00" in warnings[0]
    correct[2] = [1, 1, 0, 0, 1, 0, 0, 0]          # 3 of 4: within half of the median
    assert X.lagging_members(correct, masks, what="x") == []


def test_lagging_members_per_arm_names_each_arm_and_masks_none_means_all_trained():
    from jaxcurv.workflow import experiment as X

    correct = np.ones((2, 4, 6), bool)
    correct[1, 3, :5] = False                      # arm 1 (non-private), member 3: 1 of 6
    everywhere = np.ones((4, 6), bool)
    assert X.lagging_members_per_arm(correct, None, [8.0, np.inf], what="cifar10") == \
        X.lagging_members_per_arm(correct, everywhere, [8.0, np.inf], what="cifar10") == \
        X.lagging_members(correct[1], everywhere, what="cifar10, non-private")
    assert X.privacy_arm_label(8.0) == "DP-SGD ε = 8"
    assert X.privacy_arm_label(np.inf) == "non-private"
