"""``jaxcurv epsilon`` in-process: the text block, --json, calibration, excluded orders, errors
and help, against direct calls of jaxcurv.privacy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxcurv import privacy
from jaxcurv.cli import build_parser, main
from jaxcurv.privacy import accounting

Q = 256 / 60000


def _run(capsys, *args):
    rc = main(["epsilon", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _rows(text):
    """{label: value} of the block's indented lines."""
    rows = {}
    for line in text.splitlines()[1:]:
        label, value = line.strip().split("  ", 1)
        rows[label] = value.strip()
    return rows


def test_text_block_for_the_published_vector(capsys):
    rc, out, _ = _run(capsys, "--noise-multiplier", 1.1, "--sampling-rate", Q, "--steps", 14062)
    assert rc == 0
    rows = _rows(out)
    report = privacy.epsilon_report(1.1, Q, 14062, 1e-5)
    assert float(out.split()[-1]) == pytest.approx(report.epsilon, rel=1e-5)
    assert float(rows["epsilon"]) == pytest.approx(2.597, abs=1e-3)
    assert rows["delta"] == "1e-05" and rows["accountant"].startswith("rdp")
    assert rows["best RDP order"] == "8.1" == f"{report.best_order:g}"
    assert rows["orders excluded (no finite RDP)"] == "none"
    assert rows["orders dp_accounting could not evaluate"] == "none"
    n = len(report.orders_evaluated_numerically)
    assert rows["orders integrated numerically"].startswith(f"{n} orders from 1.1")


def test_orders_dp_accounting_cannot_evaluate_are_named(capsys):
    rc, out, _ = _run(capsys, "--noise-multiplier", 0.5, "--sampling-rate", 0.1, "--steps", 10000)
    rows = _rows(out)
    report = privacy.epsilon_report(0.5, 0.1, 10000, 1e-5)
    assert rc == 0 and report.orders_not_converged
    listed = [float(a) for a in rows["orders dp_accounting could not evaluate"].split(", ")]
    assert listed == list(report.orders_not_converged)
    assert float(rows["epsilon"]) == pytest.approx(807.1, rel=1e-3)
    assert rows["best RDP order"] == "1.1"


def test_excluded_orders_are_printed(capsys, monkeypatch):
    monkeypatch.setattr(
        accounting, "poisson_gaussian_rdp", lambda s, q, orders, steps: np.full(len(orders), np.inf)
    )
    rc, out, _ = _run(capsys, "--noise-multiplier", 0.5, "--sampling-rate", 0.1, "--steps", 10)
    excluded = _rows(out)["orders excluded (no finite RDP)"]
    report = privacy.epsilon_report(0.5, 0.1, 10, 1e-5)
    assert rc == 0 and report.orders_dropped
    assert [float(a) for a in excluded.split(", ")] == list(report.orders_dropped)
    rc, out, _ = _run(capsys, "--noise-multiplier", 0.5, "--sampling-rate", 0.1, "--steps", 10,
                      "--json")
    assert json.loads(out)["orders_dropped"] == list(report.orders_dropped)


def test_json_output_matches_epsilon_report(capsys):
    rc, out, _ = _run(capsys, "--noise-multiplier", 0.8, "--sampling-rate", 0.1, "--steps", 100,
                      "--delta", 1e-6, "--json")
    data = json.loads(out)
    report = privacy.epsilon_report(0.8, 0.1, 100, 1e-6)
    assert rc == 0
    assert data["epsilon"] == report.epsilon and data["delta"] == 1e-6
    assert data["best_order"] == report.best_order and data["accountant"] == "rdp"
    assert data["orders_evaluated_numerically"] == list(report.orders_evaluated_numerically)
    assert data["orders_not_converged"] == list(report.orders_not_converged)
    assert data["orders_dropped"] == []
    assert (data["noise_multiplier"], data["sampling_rate"], data["steps"]) == (0.8, 0.1, 100)
    assert "target_epsilon" not in data


def test_calibration_text_and_json(capsys):
    rc, out, _ = _run(capsys, "--target-epsilon", 2, "--sampling-rate", 0.01, "--steps", 100,
                      "--json")
    data = json.loads(out)
    sigma = privacy.calibrate_noise_multiplier(2.0, 0.01, 100, 1e-5)
    assert rc == 0 and data["noise_multiplier"] == sigma and data["target_epsilon"] == 2.0
    assert data["epsilon"] <= 2.0 and data["epsilon"] == privacy.epsilon(sigma, 0.01, 100, 1e-5)
    rc, out, _ = _run(capsys, "--target-epsilon", 2, "--sampling-rate", 0.01, "--steps", 100)
    last = out.strip().splitlines()[-1]
    assert last.split()[:2] == ["noise", "multiplier"]
    assert float(last.split()[-1]) == pytest.approx(sigma, rel=1e-5)


def test_pld_has_no_orders(capsys):
    rc, out, _ = _run(capsys, "--noise-multiplier", 2.0, "--sampling-rate", 0.1, "--steps", 20,
                      "--accountant", "pld")
    rows = _rows(out)
    assert rc == 0 and rows["accountant"].startswith("pld") and "best RDP order" not in rows
    assert float(rows["epsilon"]) == pytest.approx(
        privacy.epsilon(2.0, 0.1, 20, 1e-5, accountant="pld"), rel=1e-5)


@pytest.mark.parametrize(
    "args, match",
    [(["--sampling-rate", "0.1", "--steps", "10"], "exactly one"),
     (["--noise-multiplier", "1", "--target-epsilon", "2", "--sampling-rate", "0.1", "--steps",
       "10"], "exactly one"),
     (["--noise-multiplier", "1", "--sampling-rate", "0.1", "--steps", "10", "--delta", "1"],
      "delta"),
     (["--noise-multiplier", "1", "--sampling-rate", "0", "--steps", "10"], "--sampling-rate")],
)
def test_errors_exit_2_with_a_message(capsys, args, match):
    rc, out, err = _run(capsys, *args)
    assert rc == 2 and out == "" and "jaxcurv epsilon: error:" in err and match in err


def test_every_flag_has_help_with_its_default():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices["epsilon"]
    flags = [a for a in parser._actions if a.dest != "help"]
    assert {a.dest for a in flags} == {"noise_multiplier", "target_epsilon", "sampling_rate",
                                       "steps", "delta", "accountant", "json"}
    from jaxcurv.workflow.config import EpsilonConfig

    defaults = EpsilonConfig()
    for action in flags:
        assert action.help and ("default" in action.help or "required" in action.help), action
        value = getattr(defaults, action.dest)
        if value not in (None, False) and not action.required:
            assert f"(default: {value})" in action.help, action
