"""`python -m experiments.recompute`: a folder's tables are rebuilt from its statistics, byte for
byte; a changed table or changed statistics is caught; and every committed evidence folder that
holds statistics recomputes exactly."""

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from experiments import recompute  # noqa: E402
from jaxcurv.workflow import Timer  # noqa: E402
from jaxcurv.workflow import experiment as X  # noqa: E402
from jaxcurv.workflow.settings import setting  # noqa: E402


@dataclasses.dataclass(frozen=True)
class _FakeConfig(X.ExperimentConfig):
    scale: float = setting(2.0, "a factor the table uses")


def _tables(statistics, config):
    """Mean of a per-member statistic over members holding each example, times ``scale``."""
    masks, value = statistics["masks"], statistics["value"]
    per_example = (value * masks).sum(0) / masks.sum(0) * config.scale
    return {"means": [{"example": i, "mean": float(v)} for i, v in enumerate(per_example)]}


@pytest.fixture
def fake_experiment(monkeypatch, tmp_path):
    module = types.ModuleType("experiments.fake_recompute")
    module.CONFIGS = {"tiny": _FakeConfig(name="tiny")}
    module.get_config = lambda name: X.named_config(module.CONFIGS, name)
    module.tables = _tables
    monkeypatch.setitem(sys.modules, "experiments.fake_recompute", module)
    config = dataclasses.replace(module.get_config("tiny"), scale=3.0, out=str(tmp_path))
    rng = np.random.default_rng(0)
    stats = X.save_statistics(tmp_path, {"masks": rng.random((4, 7)) < 0.5,
                                         "value": rng.normal(size=(4, 7))})
    X.write_tables(tmp_path, _tables(stats, config))
    X.finish(tmp_path, "fake_recompute", config, {}, timer=Timer(), notes=[], lines=[])
    return tmp_path


def test_statistics_are_stored_as_float32_and_bools(tmp_path):
    stats = X.save_statistics(tmp_path, {"a": np.arange(3, dtype=np.float64),
                                         "m": np.ones((2, 2), bool), "i": np.arange(2)})
    assert stats["a"].dtype == np.float32 and stats["m"].dtype == bool
    assert stats["i"].dtype.kind == "i"
    with pytest.raises(ValueError, match="numeric or bool"):
        X.save_statistics(tmp_path, {"s": np.array(["x"])})


def test_a_folder_recomputes_exactly(fake_experiment, capsys):
    assert recompute.main([str(fake_experiment)]) == 0
    assert "means.csv: matches (7 rows)" in capsys.readouterr().out


def test_a_changed_table_is_a_mismatch(fake_experiment, capsys):
    table = fake_experiment / "means.csv"
    lines = table.read_text().splitlines()
    example, mean = lines[3].split(",")
    lines[3] = f"{example},{float(mean) + 1e-3:.6g}"
    table.write_text("\n".join(lines) + "\n")
    assert recompute.main([str(fake_experiment)]) == 1
    assert "MISMATCH (line 4" in capsys.readouterr().out


def test_changed_statistics_are_refused(fake_experiment, capsys):
    stats = X.load_statistics(fake_experiment)
    np.savez_compressed(fake_experiment / X.STATISTICS_FILE,
                        **{**stats, "value": stats["value"] + 1})
    assert recompute.main([str(fake_experiment)]) == 2
    assert "sha256" in capsys.readouterr().err


def test_the_config_comes_from_the_echo(fake_experiment):
    summary = json.loads((fake_experiment / "summary.json").read_text())
    assert summary["config"]["scale"] == 3.0  # not the named config's 2.0
    assert recompute.recompute_folder(fake_experiment) == [("means", True, "7 rows")]


EVIDENCE = recompute.statistics_folders(ROOT / "results" / "evidence")


@pytest.mark.parametrize("folder", EVIDENCE, ids=[str(p.relative_to(ROOT)) for p in EVIDENCE])
def test_every_committed_evidence_folder_recomputes(folder):
    results = recompute.recompute_folder(folder)
    assert results and all(ok for _, ok, _ in results), results


def test_every_experiment_folder_under_evidence_is_recomputable():
    """A folder an experiment wrote under results/evidence holds its statistics (the parametrized
    test above then recomputes it); runs that cannot be recomputed live under results/archive."""
    made_by_experiments = [p.parent for p in (ROOT / "results" / "evidence").rglob("summary.json")
                           if json.loads(p.read_text()).get("experiment")]
    assert made_by_experiments
    missing = [str(p.relative_to(ROOT)) for p in made_by_experiments
               if not (p / X.STATISTICS_FILE).is_file()]
    assert not missing, f"evidence folders without {X.STATISTICS_FILE}: {missing}"


def test_committed_statistics_stay_small():
    """Each folder's statistics: float32 (or bool/int), compressed, at most 5 MB, so that the
    repository stays cloneable while every table remains recomputable."""
    for folder in EVIDENCE:
        path = folder / X.STATISTICS_FILE
        assert path.stat().st_size <= 5_000_000, f"{path.relative_to(ROOT)}: over 5 MB"
        with np.load(path) as stored:
            wide = [k for k in stored.files if stored[k].dtype.kind == "f"
                    and stored[k].dtype.itemsize > 4]
        assert not wide, f"{path.relative_to(ROOT)}: not float32: {wide}"


def test_a_column_mixing_none_and_floats_keeps_six_digits(tmp_path):
    rows = [{"name": "a", "value": None}, {"name": "b", "value": 1 / 3},
            {"name": "c", "value": np.float32(2.0)}]
    X.write_tables(tmp_path, {"mixed": rows})
    assert X.read_table(tmp_path / "mixed.csv") == [
        {"name": "a", "value": ""}, {"name": "b", "value": "0.333333"},
        {"name": "c", "value": "2"}]


def test_rewrite_puts_the_recomputed_table_in_place(fake_experiment, capsys):
    table = fake_experiment / "means.csv"
    original = table.read_bytes()
    lines = original.decode().splitlines()
    lines[2] = lines[2].split(",")[0] + ",0.123456789012"
    table.write_text("\n".join(lines) + "\n")
    assert recompute.main([str(fake_experiment), "--rewrite"]) == 0
    assert "means.csv: REWRITTEN (line 3" in capsys.readouterr().out
    assert table.read_bytes() == original
    assert recompute.main([str(fake_experiment)]) == 0


def test_a_key_only_some_rows_have_gets_its_own_column(tmp_path):
    rows = [{"attack": "loss", "mean": 0.5}, {"optimizer": "sam", "mean": 0.25}]
    X.write_tables(tmp_path, {"t": rows})
    assert X.read_table(tmp_path / "t.csv") == [
        {"attack": "loss", "mean": "0.5", "optimizer": ""},
        {"attack": "", "mean": "0.25", "optimizer": "sam"}]
