"""The benchmarks' shared workflow module (jaxcurv.workflow.benchmark) and the bench/ scripts'
configs: one subset sampler for the audit, the experiments and the benchmarks; flags generated
from the configs, per-mode defaults, atomic results with the environment echo, the table
formatter, the CIFAR-10 lookup and the epoch clock."""

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from jaxcurv import data  # noqa: E402
from jaxcurv.errors import ConfigError, DataNotFound  # noqa: E402
from jaxcurv.workflow import AuditConfig  # noqa: E402
from jaxcurv.workflow import audit  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow import experiment as X  # noqa: E402
from jaxcurv.workflow.settings import setting  # noqa: E402

SCRIPTS = ("curvature", "distributed", "dpsgd", "ensemble", "estimators", "layout", "mia", "peers",
           "suite")
CONFIGS = {"curvature": "CurvatureBench", "distributed": "DistributedBench",
           "dpsgd": "DPSGDBench", "ensemble": "EnsembleBench", "estimators": "EstimatorsBench",
           "layout": "LayoutBench", "mia": "MIABench", "peers": "PeersBench",
           "suite": "SuiteConfig"}
# Scripts that time a peer's own training loop epoch by epoch (PyTorch) keep perf_counter stamps
# inside it; every other timing goes through jaxcurv.workflow.timing.
OWN_CLOCK = ("suite", "peers")


def _config_type(name: str):
    return getattr(importlib.import_module(f"bench.{name}"), CONFIGS[name])


# ----------------------------------------------------------------------------------------------
# one subset sampler


def _three_ways(dataset: str, size: int, seed: int):
    """(train, test) images as the audit, the experiments and the benchmarks subsample them."""
    a = audit.load_data(AuditConfig(dataset=dataset, max_examples=size, seed=seed, models=2,
                                    progress=False))
    e = X.load_data(dataset, X.ExperimentConfig(train_size=size, test_size=size, seed=seed,
                                                progress=False, fallback_dataset=None))
    b = B.train_test(dataset, train_size=size, test_size=size, seed=seed)
    return [(s.train.images, s.test.images) for s in (a, e)] + [(b[0].images, b[1].images)]


def _rows(images: np.ndarray, full: np.ndarray) -> set[int]:
    """Indices in ``full`` of each image of ``images`` (digits images are distinct)."""
    lookup = {row.tobytes(): i for i, row in enumerate(full)}
    return {lookup[row.tobytes()] for row in images}


def test_same_seed_same_digits_subset_in_audit_experiments_and_bench():
    train, test = data.train_test("digits")
    assert len(train) == 1438 and len(np.unique(train.images.reshape(1438, -1), axis=0)) == 1438
    picks = _three_ways("digits", 100, 0)
    chosen = [_rows(tr, train.images) for tr, _ in picks]
    assert len(chosen[0]) == 100 and chosen[0] == chosen[1] == chosen[2]
    for tr, te in picks[1:]:
        np.testing.assert_array_equal(tr, picks[0][0])  # same examples in the same order
        np.testing.assert_array_equal(te, picks[0][1])
    other = _rows(_three_ways("digits", 100, 1)[2][0], train.images)
    assert len(other & chosen[0]) < 30  # another seed: another subset (≈ 7 shared by chance)


def test_same_seed_same_cifar_subset_through_the_bench_cifar_lookup(fake_cifar10):
    fake_cifar10(4)
    b_train, b_test = B.cifar10(None, train_size=12, test_size=4, seed=3)
    e = X.load_data("cifar10", X.ExperimentConfig(train_size=12, test_size=4, seed=3,
                                                  progress=False, fallback_dataset=None))
    a = audit.load_data(AuditConfig(dataset="cifar10", max_examples=12, seed=3, models=2,
                                    progress=False))
    np.testing.assert_array_equal(b_train.images, e.train.images)
    np.testing.assert_array_equal(b_train.images, a.train.images)
    np.testing.assert_array_equal(b_test.labels, e.test.labels)
    full_train, _ = data.train_test("cifar10")
    index = data.random_subset(30, 12, seed=3)
    assert list(index) == sorted(index) and len(set(index.tolist())) == 12
    np.testing.assert_array_equal(b_train.images, full_train.images[index])


def test_cifar_lookup_without_files(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCURV_DATA_DIR", str(tmp_path))
    assert B.cifar10(tmp_path) is None  # optional: no TFDS attempt, no error

    def missing(name, **_):
        raise DataNotFound("CIFAR-10 was not found.", command_line="pass --data-dir DIR",
                           looked_for=(str(tmp_path),))

    monkeypatch.setattr(data, "train_test", missing)
    with pytest.raises(DataNotFound) as err:
        B.cifar10(tmp_path, required="--train-eps8")
    assert err.value.what.startswith("--train-eps8 needs cifar10")
    assert err.value.command_line == "pass --data-dir DIR"
    assert err.value.looked_for == (str(tmp_path),)


def test_subset_keeps_the_dataset_when_no_size():
    train, _ = data.train_test("digits")
    assert B.subset(train, None, seed=0) is train and B.subset(train, 5000, seed=0) is train
    assert len(B.subset(train, 7, seed=0)) == 7


# ----------------------------------------------------------------------------------------------
# configs and the command line


def test_every_script_is_a_config_over_the_workflow_with_no_twin():
    assert not (ROOT / "bench" / "_common.py").exists()
    for name in SCRIPTS:
        text = (ROOT / "bench" / f"{name}.py").read_text()
        assert "_common" not in text and "import argparse" not in text, name
        assert "from jaxcurv.workflow import benchmark as B" in text, name
        assert ".write_text(" not in text and "json.dump(" not in text, name  # atomic writers
        assert "perf_counter" not in text or name in OWN_CLOCK, name  # workflow timing
        config = _config_type(name)
        assert dataclasses.is_dataclass(config) and issubclass(config, B.BenchSettings)


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s not in ("suite", "peers")])
def test_quick_and_full_defaults_resolve_and_given_flags_win(name):
    config_type = _config_type(name)
    quick = B.parse_args(config_type, ["--quick", "--seed", "4", "--tag", "t"])
    full = B.parse_args(config_type, ["--out", "somewhere"])
    assert (quick.quick, quick.seed, quick.tag, full.out) == (True, 4, "t", "somewhere")
    per_mode = [f for f in dataclasses.fields(config_type) if B.MODES in f.metadata]
    for config, mode in ((full, 0), (quick, 1)):
        for field in per_mode:  # no setting is left at "per mode"
            assert getattr(config, field.name) is not None, (name, field.name)
            assert getattr(config, field.name) == field.metadata[B.MODES][mode], (name, field.name)
    for field in per_mode:  # a value given on the command line wins in quick mode
        value = field.metadata[B.MODES][0]
        flag = "--" + field.name.replace("_", "-")
        argv = [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
        assert getattr(B.parse_args(config_type, ["--quick", *argv]), field.name) == value
    with pytest.raises(SystemExit):  # no prefix matching
        B.parse_args(config_type, ["--qui"])


def test_bounds_choices_and_set_are_checked():
    curvature = _config_type("curvature")
    assert B.parse_args(curvature, ["--quick", "--set", "width=8"]).width == 8
    for argv, match in ((["--width", "0"], "--width must be an integer >= 1"),
                        (["--dtypes", "fp16"], "--dtypes: unknown value 'fp16'"),
                        (["--set", "nope=1"], "unknown setting"),
                        (["--tune-probe-batches", "0"], "positive integers")):
        with pytest.raises(ConfigError, match=match):
            B.parse_args(curvature, argv)
    with pytest.raises(ConfigError, match="MODEL"):
        B.parse_args(_config_type("dpsgd"), ["--step-models", "vit:32x32x3"])
    with pytest.raises(ConfigError, match="--epochs must be an integer >= 2"):
        B.parse_args(_config_type("ensemble"), ["--epochs", "1"])
    with pytest.raises(ConfigError, match="--tables: unknown value"):
        B.parse_args(_config_type("estimators"), ["--tables", "speed"])


def test_derived_defaults():
    curvature = _config_type("curvature")
    full = B.parse_args(curvature, ["--batch", "100"])
    assert full.batch_size == 100 and full.tune_batch_sizes == (25, 50, 100)
    assert B.parse_args(curvature, ["--quick"]).batch_size is None  # the library's default
    ensemble = _config_type("ensemble")
    assert B.parse_args(ensemble, ["--quick", "--ks", "2", "6"]).loop_models == 6
    assert B.parse_args(ensemble, []).loop_models == 2


def test_adding_a_setting_adds_its_flag():
    @dataclasses.dataclass(frozen=True)
    class Extended(_config_type("mia")):
        widgets: int = setting(3, "widgets per gadget", low=1)
        sizes: tuple[int, ...] | None = B.per_mode((8, 9), (1,), "sizes")

    config = B.parse_args(Extended, ["--widgets", "5", "--quick"])
    assert (config.widgets, config.sizes, config.targets) == (5, (1,), 5_000)
    assert B.parse_args(Extended, ["--sizes", "4", "5"]).sizes == (4, 5)


def test_suite_config_needs_out_and_a_positive_budget():
    suite = importlib.import_module("bench.suite")
    config = suite.parse_args(["--out", "o", "--tiny", "--budget-s", "60"])
    assert (config.out, config.tiny, config.budget_s, config.seed) == ("o", True, 60.0, 0)
    with pytest.raises(SystemExit):
        suite.parse_args([])
    with pytest.raises(ConfigError, match="--budget-s must be > 0"):
        suite.parse_args(["--out", "o", "--budget-s", "0"])


def test_cli_prints_one_line_and_exits_with_the_error_code(capsys):
    def main(config):
        raise DataNotFound("CIFAR-10 was not found.", command_line="pass --data-dir DIR")

    with pytest.raises(SystemExit) as exit_:
        B.cli(_config_type("mia"), main, name="mia", description="", argv=["--quick"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["bench.mia: error: CIFAR-10 was not found.",
                       "From the command line: pass --data-dir DIR"]
    with pytest.raises(SystemExit) as exit_:
        B.cli(_config_type("mia"), main, name="mia", description="", argv=["--shadows", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "bench.mia: error: --shadows must be an integer >= 2, got 1"
    with pytest.raises(SystemExit) as exit_:
        B.cli(_config_type("mia"), lambda c: 1, name="mia", description="", argv=[])
    assert exit_.value.code == 1


# ----------------------------------------------------------------------------------------------
# outputs


def test_results_path_names():
    mia = _config_type("mia")
    assert B.results_path(B.parse_args(mia, ["--quick"]), "mia") == Path("results/bench/"
                                                                         "mia_quick.json")
    assert B.results_path(B.parse_args(mia, []), "mia").name == "mia.json"
    tagged = B.parse_args(mia, ["--quick", "--tag", "h100", "--out", "o"])
    assert B.results_path(tagged, "mia", variant="mlp") == Path("o/mia_h100.json")
    quick = B.parse_args(mia, ["--quick"])
    assert B.results_path(quick, "ensemble", variant="mlp").name == "ensemble_quick_mlp.json"


def test_write_results_is_atomic_with_environment_and_config(tmp_path):
    config = B.parse_args(_config_type("mia"), ["--quick", "--out", str(tmp_path / "r")])
    path = B.write_results(config, "mia", {"rows": [{"x": np.float32(1.5), "y": float("nan")}]})
    assert path == tmp_path / "r" / "mia_quick.json"
    assert [p.name for p in path.parent.iterdir()] == ["mia_quick.json"]  # no temporary left
    written = json.loads(path.read_text())
    assert list(written)[:4] == ["command", "environment", "config", "rows"]
    assert written["command"].startswith("python -m bench.mia --quick --repeats 3 --targets 5000")
    again = B.parse_args(_config_type("mia"), written["command"].split()[3:])
    assert again == dataclasses.replace(config, out=None)  # the command reproduces the config
    assert written["rows"] == [{"x": 1.5, "y": None}]
    assert written["config"]["targets"] == 5_000 and written["config"]["quick"] is True
    env = written["environment"]
    assert {"jax", "backend", "device_kind", "load_avg_1min", "argv"} <= set(env)


def test_write_results_failure_is_an_output_error(tmp_path):
    from jaxcurv.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("")
    config = B.parse_args(_config_type("mia"), ["--out", str(blocker / "sub")])
    with pytest.raises(OutputError, match="cannot write"):
        B.write_results(config, "mia", {})


def test_format_table():
    rows = [{"name": "a", "rate": 12345.6, "ratio": 0.123456, "n": 3},
            {"name": "longer", "rate": float("nan"), "ratio": 2.0, "n": 10}]
    assert B.format_table(rows).splitlines() == [
        "  name    rate   ratio   n",
        "------  ------  ------  --",
        "     a  12,346  0.1235   3",
        "longer     nan       2  10"]
    assert B.format_table(rows, ["n"]).splitlines()[2:] == [" 3", "10"]
    assert B.format_table([]) == "(no rows)"


def test_epoch_clock():
    ticks = iter([10.0, 11.5, 12.0, 12.75, 20.0, 21.0, 22.5, 30.0])
    clock = B.EpochClock(clock=lambda: next(ticks))  # 10.0
    for chunk, members in ((0, [0, 1]), (0, [0, 1]), (0, [0, 1]), (1, [2]), (1, [2]), (1, [2])):
        clock(0, {"chunk": chunk, "members": members})
    assert clock.first_epoch() == 1.5
    assert clock.steady_epoch_times() == [0.5, 0.75, 1.0, 1.5]  # first epoch of each chunk out
    assert clock.members == {0: 2, 1: 1}
    assert clock.elapsed() == 20.0


def test_synthetic_cifar_has_its_documented_structure():
    train, test = B.synthetic_cifar(2000, 500, seed=1)
    assert train.images.shape == (2000, 32, 32, 3) and test.images.shape == (500, 32, 32, 3)
    assert train.images.dtype == np.float32 and 0 <= train.images.min() < train.images.max() <= 1
    again, _ = B.synthetic_cifar(2000, 500, seed=1)
    np.testing.assert_array_equal(again.images, train.images)

    def blocks(images):  # the 4×4×3 means of the 8×8 blocks: prototype / 2 + noise / 2
        return images.reshape(len(images), 4, 8, 4, 8, 3).mean((2, 4)).reshape(len(images), -1)

    prototypes = np.stack([blocks(test.images[test.labels == c]).mean(0) for c in range(10)])
    nearest = lambda ds: np.argmin(  # noqa: E731
        ((blocks(ds.images)[:, None] - prototypes[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest(test) != test.labels) < 0.01  # clean test labels
    flipped = np.mean(nearest(train) != train.labels)  # 10 % flipped, binomial sd 0.7 %
    assert 0.07 < flipped < 0.13, flipped


def test_layout_convs_times_every_pass_of_both_convolutions_and_the_rewrite():
    """bench.layout's convs table: the stride-2 convolution rewritten as a subsampled stride-1
    one equals it (against lax.conv with explicit padding (0, 1)), and every layer has its three
    passes timed, relative to its own forward pass."""
    import jax
    import jax.numpy as jnp

    from bench import layout as L

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    explicit = jax.lax.conv_general_dilated(x, w, (2, 2), [(0, 1), (0, 1)],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(L.strided_as_subsampled(w, x), explicit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(L.conv(2)(w, x), explicit, rtol=1e-5, atol=1e-5)
    config = B.parse_args(L.LayoutBench, ["--quick", "--repeats", "1", "--conv-batch", "2",
                                          "--conv-width", "4"])
    rows = L.convs(config, jax.random.PRNGKey(0))
    assert [(r["layer"], r["pass"]) for r in rows] == [
        (layer, p) for layer in ("conv1 3→4, stride 1", "conv2 4→8, stride 2",
                                 "conv2 as stride 1 + subsample")
        for p in ("forward", "input gradient", "weight gradient")]
    for r in rows:
        assert r["ms"] > 0 and np.isfinite(r["relative_to_forward"])
        if r["pass"] == "forward":
            assert r["relative_to_forward"] == 1.0
    heads = L.conv_headlines(rows)
    assert len(heads) == len(rows) and all(h["unit"] == "ms" for h in heads.values())
    assert heads["convs: conv2 4→8, stride 2, input gradient"]["value"] == rows[4]["ms"]
