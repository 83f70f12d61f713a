"""End-to-end: the `jaxcurv` command on small settings, its files, resume, and its errors."""

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxcurv.cli import main
from tests.fixtures.quantities import LabelRecorder, check_columns, check_labels

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--models", "6", "--epochs", "1", "--num-probes", "2", "--bootstrap", "10", "--quiet"]


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0])


AXIS_LABELS: list[str] = []  # every axis label the module's audit drew


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as patch:
        recorder = LabelRecorder(patch)
        assert main(["audit", *SMALL, "--out", str(out)]) == 0
        AXIS_LABELS.extend(recorder.labels)
    return out


def test_audit_writes_scores_summary_figures_report(audit_dir):
    rows, columns = _read_csv(audit_dir / "scores.csv")
    assert len(rows) == 1438  # digits training split
    for name in ["index", "label", "curvature", "curvature_stderr", "curvature_trace", "loss",
                 "correct", "mem", "mem_stderr", "confidence", "learning_time", "zero_order",
                 "mia_lira_online", "mia_curvature_lr", "mia_zero_order_nll", "mia_rmia"]:
        assert name in columns, name
    curvature = np.array([float(r["curvature"]) for r in rows if r["curvature"]])
    assert len(curvature) > 1400 and np.isfinite(curvature).all()
    # `curvature` is tr(H²) = ‖H‖_F² (never negative), not tr(H) (test_audit_memorizes checks
    # that it is the IN-member mean of the Curvature result's trace_sq)
    assert (curvature >= 0).all()
    trace = np.array([float(r["curvature_trace"]) for r in rows if r["curvature_trace"]])
    assert not np.allclose(trace, curvature)
    check_columns(columns, "scores.csv")
    check_labels(AXIS_LABELS)
    assert sum("tr(H²)" in label for label in AXIS_LABELS) >= 4
    summary = json.loads((audit_dir / "summary.json").read_text())
    assert summary["config"]["models"] == 6
    assert 0 < summary["accuracy"]["test_mean"] <= 1
    assert -1 <= summary["correlations"]["spearman_mem_curvature"] <= 1
    attacks = {row["attack"] for row in summary["mia"]["metrics"]}
    assert {"lira_online", "curvature_lr", "curvature_nll", "zero_order_lr", "rmia",
            "loss"} <= attacks
    for rel in summary["figures"].values():
        png = audit_dir / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (audit_dir / "report.html").read_text()
    for rel in summary["figures"].values():
        assert rel in page
    assert "Membership inference" in page


def test_audit_resumes_from_cache_with_identical_results(audit_dir):
    before = (audit_dir / "scores.csv").read_text()
    assert main(["audit", *SMALL, "--out", str(audit_dir)]) == 0
    summary = json.loads((audit_dir / "summary.json").read_text())
    assert summary["timings_s"]["curvature"] == "cached"
    assert summary["timings_s"]["attacks"] == "cached"
    assert (audit_dir / "scores.csv").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--models", "5"], "--models must be >= 6"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--label-noise", "1.5"], "--label-noise"),
    (["--model", "vgg"], "unknown model"),
    (["--dp-epsilon", "-1"], "--dp-epsilon"),
    (["--dp-epsilon", "2", "--model", "resnet18"], "resnet18_gn"),
    (["--dataset", "nope"], "nope"),
    (["--max-examples", "5"], "--max-examples must be >= 2"),
])
def test_audit_bad_input_fails_fast_with_a_clear_message(args, message, capsys, tmp_path):
    assert main(["audit", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_help_explains_every_knob():
    out = subprocess.run([sys.executable, "-m", "jaxcurv", "audit", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for knob in ["--dataset", "--model", "--models", "--epochs", "--num-probes", "--label-noise",
                 "--dp-epsilon", "--optimizer", "--seed", "--out"]:
        assert knob in out


@pytest.mark.parametrize("argv", [["--help"], ["audit", "--help"], ["curvature", "--help"]])
def test_help_imports_no_jax(argv):
    script = ("import sys\nfrom jaxcurv.cli import main\ntry:\n    main(%r)\n"
              "except SystemExit as e:\n    assert e.code == 0, e.code\n"
              "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', "
              "'jaxlib', 'flax', 'optax'))))\n" % (argv,))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "[]", (
        "building the parser imported jax (jaxcurv/__init__.py and jaxcurv/workflow/__init__.py "
        "must load their jax-backed names on first use): " + out.splitlines()[-1][:300])
    assert "usage: jaxcurv" in out


@pytest.mark.parametrize("command", ["audit", "curvature"])
def test_every_flag_states_its_default(command):
    from jaxcurv.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [a for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 10
    for action in flags:
        assert "default" in action.help, action.option_strings


def test_ctrl_c_stops_cleanly_with_the_resume_hint(monkeypatch, capsys, tmp_path):
    import jaxcurv.workflow

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxcurv.workflow, "run_audit", interrupted)
    assert main(["audit", "--out", str(tmp_path / "x")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err


def test_missing_data_message_leads_with_the_command_line_fix(tmp_path, capsys):
    from jaxcurv.errors import DataNotFound

    err = DataNotFound("CIFAR-10 was not found.", command_line="pass --data-dir DIR.",
                       looked_for=("a", "b"), other_ways=("From Python: load('cifar10').",))
    assert err.lines("jaxcurv audit: error: ") == [
        "jaxcurv audit: error: CIFAR-10 was not found.",
        "From the command line: pass --data-dir DIR.", "Looked for: a; b",
        "From Python: load('cifar10')."]
    assert isinstance(err, FileNotFoundError) and "Looked for: a; b." in str(err)
    assert main(["audit", "--dataset", f"npz:{tmp_path / 'none.npz'}", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("jaxcurv audit: error: npz file") and lines[1].startswith(
        "From the command line: --dataset npz:PATH")


def test_epsilon_command(capsys):
    assert main(["epsilon", "--noise-multiplier", "1.1", "--sampling-rate", str(256 / 60000),
                 "--steps", "14062", "--delta", "1e-5"]) == 0
    eps = float(capsys.readouterr().out.split()[-1])
    assert eps == pytest.approx(2.597, abs=2e-3)


def test_readme_leads_with_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)?\n(.+?)\n```", readme, flags=re.S)[:2]
    assert "jaxcurv audit" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command.strip() in ci


def test_ctrl_c_in_an_in_process_command_stops_the_test_run(tmp_path):
    """The command turns Ctrl-C into exit status 130; inside a test it must still stop pytest
    (tests/conftest.py), not let the suite run on."""
    (tmp_path / "test_interrupted.py").write_text(textwrap.dedent("""
        import os, signal, time
        import jaxcurv.workflow.commands as commands
        from jaxcurv.cli import main

        def test_first(monkeypatch):
            def ctrl_c(**kwargs):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
            monkeypatch.setattr(commands, "privacy_accounting", ctrl_c)
            assert main(["epsilon", "--noise-multiplier", "1", "--sampling-rate", "0.1",
                         "--steps", "10"]) == 130

        def test_second():
            pass
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p",
                          "no:cacheprovider", "-q", str(tmp_path / "test_interrupted.py")],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         # a suite started in the background inherits SIGINT ignored; a user's
                         # terminal delivers it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "KeyboardInterrupt" in out.stdout and "passed" not in out.stdout, out.stdout[-2000:]
    assert out.returncode != 0
