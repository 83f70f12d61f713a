"""Auditing your own model and data: ``jaxcurv.audit`` from Python (arrays or a Dataset; any model
kind) and ``jaxcurv audit --model package.module:factory`` on the command line, end to end at tiny
size; the same network written four ways gives the same scores; a bad factory path, a missing
attribute or a factory returning no model is one line on stderr before anything is trained."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

import jaxcurv
from jaxcurv import data
from jaxcurv.cli import main
from jaxcurv.errors import ConfigError
from tests.fixtures import my_models as my

TINY = dict(models=6, epochs=1, num_probes=2, zero_order=False, bootstrap=0)
TINY_FLAGS = ["--models", "6", "--epochs", "1", "--num-probes", "2", "--no-zero-order",
              "--bootstrap", "0", "--max-examples", "96", "--quiet"]
EQUINOX_REASON = "Equinox is the optional extra jaxcurv[equinox] and is not installed"


@pytest.fixture(scope="module")
def digits():
    full = data.load("digits")
    return full.take(np.arange(96)), full.take(np.arange(1000, 1040))


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_python_audit_of_an_nnx_model_on_arrays(digits, tmp_path):
    train, test = digits
    model = functools.partial(my.nnx_mlp, 10, 16)
    result = jaxcurv.audit(model, (train.images, train.labels), (test.images, test.labels),
                           out=tmp_path, **TINY)
    on_disk = pd.read_csv(tmp_path / "scores.csv")
    pd.testing.assert_frame_equal(result.scores, on_disk)
    assert len(result.scores) == 96 and {"curvature", "mem", "mia_rmia"} <= set(result.scores)
    assert result.summary == json.loads((tmp_path / "summary.json").read_text())
    assert result.report_path == tmp_path / "report.html" and result.report_path.is_file()
    assert result.summary["config"]["model"].startswith("python: nnx ")
    cache = _files(tmp_path / "cache")
    again = jaxcurv.audit(model, (train.images, train.labels), (test.images, test.labels),
                          out=tmp_path, **TINY)  # resumed: every stage from the cache
    pd.testing.assert_frame_equal(again.scores, result.scores)
    assert _files(tmp_path / "cache") == cache
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1


def test_python_audit_checks_its_arguments_before_any_compute(digits, tmp_path):
    train, _ = digits
    with pytest.raises(ConfigError, match="epochs"):
        jaxcurv.audit(my.linen_mlp(10), train, out=tmp_path, models=6, epochs=0)
    with pytest.raises(ConfigError, match="as arguments"):
        jaxcurv.audit(my.linen_mlp(10), train, out=tmp_path, dataset="digits")
    with pytest.raises(ConfigError, match="Dataset or a pair"):
        jaxcurv.audit(my.linen_mlp(10), train.images, out=tmp_path)
    with pytest.raises(ConfigError, match="no model"):
        jaxcurv.audit("tests.fixtures.my_models:not_a_model", train, out=tmp_path, **TINY)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_the_audit_gives_the_same_scores_for_the_four_kinds(digits, tmp_path):
    train, test = digits
    scores = {}
    for kind in ("functions", "linen", "nnx", "equinox"):
        if kind == "equinox":
            pytest.importorskip("equinox", reason=EQUINOX_REASON)
        scores[kind] = jaxcurv.audit(my.same_init(kind), train, test, out=tmp_path / kind,
                                     **TINY).scores
    reference = scores.pop("functions")
    for kind, got in scores.items():
        assert list(got.columns) == list(reference.columns)
        for column in reference.columns:
            np.testing.assert_allclose(got[column], reference[column], rtol=2e-4, atol=1e-5,
                                       err_msg=f"{kind}: {column}")


def test_command_line_audits_a_factory_model(tmp_path):
    out = tmp_path / "out"
    assert main(["audit", "--model", "tests.fixtures.my_models:nnx_mlp", "--model-kwargs",
                 '{"hidden": 16}', *TINY_FLAGS, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"] == "tests.fixtures.my_models:nnx_mlp"
    assert "--model tests.fixtures.my_models:nnx_mlp" in summary["command"]
    assert len(pd.read_csv(out / "scores.csv")) == 96


@pytest.mark.parametrize("model, needle", [
    ("no_such_package.models:mlp", "cannot import module 'no_such_package.models'"),
    ("tests.fixtures.my_models:missing", "has no attribute 'missing'"),
    ("tests.fixtures.my_models:not_a_model", "returned something that is no model"),
    ("tests.fixtures.my_models:nnx_batchnorm", "GroupNorm"),
    ("tests.fixtures.my_models", "unknown model"),
])
def test_bad_model_paths_are_one_line_errors_before_training(model, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["audit", "--model", model, *TINY_FLAGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (out / "checkpoints").exists()


def test_curvature_command_takes_a_factory_path(tmp_path):
    out = tmp_path / "curvature.csv"
    assert main(["curvature", "--model", "tests.fixtures.my_models:linen_mlp", "--model-kwargs",
                 '{"hidden": 16}', "--epochs", "1", "--num-probes", "2", "--quiet", "--out",
                 str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == len(data.load("digits")) and (table["curvature"] >= 0).all()


def test_source_digest_keys_the_code_of_a_model():
    from jaxcurv.workflow import model_spec

    nnx_a = functools.partial(my.nnx_mlp, 10, 16)
    assert model_spec.source_digest(nnx_a) == model_spec.source_digest(
        functools.partial(my.nnx_mlp, 10, 16))  # stable across calls
    assert model_spec.source_digest(nnx_a) != model_spec.source_digest(
        functools.partial(my.nnx_mlp, 10, 32))  # other arguments
    assert model_spec.source_digest(my.linen_mlp(10)) != model_spec.source_digest(
        my.functions_mlp(10))  # other code
    assert model_spec.factory_digest("tests.fixtures.my_models:nnx_mlp") == \
        model_spec.source_digest(my.nnx_mlp)
    assert model_spec.source_digest(my.functions_mlp(10, 16)) != model_spec.source_digest(
        my.functions_mlp(10, 32))  # the values a factory's functions close over
