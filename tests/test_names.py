"""One name per quantity: tr(H²) is ``curvature`` and tr(H) is ``curvature_trace`` in every column,
key, file name and axis label (the table: jaxcurv._names.QUANTITIES)."""

import ast
import csv
import re
from pathlib import Path

import numpy as np
import pytest

from jaxcurv import report
from jaxcurv._names import QUALIFIERS, QUANTITIES, quantity_label
from tests.fixtures.quantities import LabelRecorder, check_columns, check_labels

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "jaxcurv").rglob("*.py")), *sorted((ROOT / "experiments").glob("*.py")),
           *sorted((ROOT / "bench").glob("*.py"))]


def test_quantity_label_reads_a_stem_and_its_qualifiers():
    assert quantity_label("curvature") == "curvature tr(H²)"
    assert quantity_label("curvature_trace") == "curvature tr(H)"
    assert quantity_label("curvature_trace_out") == "curvature tr(H) (OUT members)"
    assert quantity_label("curvature_all_median") == "curvature tr(H²) (all members, median)"
    assert quantity_label("zero_order_in") == "zero-order curvature |uᵀHv| (IN members)"
    for bad in ("curvature_sq", "trace_sq", "curvature_trace_sq", "curv", "curvature_inn"):
        with pytest.raises(KeyError, match="not a quantity name"):
            quantity_label(bad)
    # the two curvature labels can never be read one for the other
    assert QUANTITIES["curvature_trace"] not in QUANTITIES["curvature"]
    assert QUANTITIES["curvature"] not in QUANTITIES["curvature_trace"]
    assert not set(QUALIFIERS) & set(QUANTITIES)


def _string_literals(path: Path):
    """Every string constant of a module except docstrings, with its line."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


def test_no_column_key_or_file_is_named_after_a_squared_trace():
    """``curvature_sq`` / ``trace_sq`` as a name (a column, key or file) is the old naming that
    called tr(H) "curvature"; the Curvature result's field ``trace_sq`` and the figure builder's
    function name are the only identifiers that keep the mathematical spelling."""
    allowed = {"trace_sq", "trace_sq_stderr", "figure_trace_vs_trace_sq"}
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path in SOURCES
             for line, text in _string_literals(path)
             for word in re.findall(r"[A-Za-z0-9_.]*(?:curvature_sq|trace_sq)[A-Za-z0-9_.]*", text)
             if word not in allowed and not word.startswith("curvature.trace_sq")]
    assert not found, "\n".join(found)


def _committed_csv_columns():
    for path in sorted([*(ROOT / "results" / "evidence").rglob("*.csv"),
                        *(ROOT / "bench" / "results").rglob("*.csv")]):
        with open(path) as f:
            header = next(csv.reader(f), [])
        yield path, header


@pytest.mark.parametrize("path,header", list(_committed_csv_columns()),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "")
def test_every_committed_csv_names_its_quantities_from_the_table(path, header):
    check_columns(header, str(path.relative_to(ROOT)))


@pytest.mark.parametrize("quantity", ["curvature", "curvature_out", "curvature_trace_in",
                                      "zero_order_all"])
def test_figure_builders_label_their_axes_from_the_quantity_they_are_given(
        quantity, tmp_path, monkeypatch):
    rec = LabelRecorder(monkeypatch)
    rng = np.random.default_rng(0)
    values, mem = rng.lognormal(size=200), rng.uniform(-0.2, 1, 200)
    report.figure_curvature_histogram(values, mem > 0.5, tmp_path / "h.png", quantity=quantity)
    report.figure_mem_vs_curvature(mem, values, tmp_path / "m.png", quantity=quantity)
    report.figure_bound_fit(values, mem, values[:5], mem[:5], 0.1, 0.0, 10.0, 0.5,
                            tmp_path / "b.png", quantity=quantity)
    report.figure_privacy_bounds(mem, values, 4.0, tmp_path / "p.png", quantity=quantity)
    report.figure_proxies_vs_mem(mem, {quantity: values}, tmp_path / "x.png")
    images = rng.uniform(size=(40, 8, 8, 1))
    report.figure_extreme_images(images, np.arange(40) % 3, values[:40], tmp_path / "e.png", k=4,
                                 quantity=quantity)
    expected = quantity_label(quantity)
    quantity_labels = [label for label in rec.labels if "tr(H" in label or "|uᵀHv|" in label]
    assert len(quantity_labels) >= 5
    assert all(label.startswith(expected) for label in quantity_labels), rec.labels
    check_labels(rec.labels)


def test_trace_against_curvature_figure_names_both_axes(tmp_path, monkeypatch):
    rec = LabelRecorder(monkeypatch)
    rng = np.random.default_rng(1)
    report.figure_trace_vs_trace_sq(rng.normal(size=100), rng.lognormal(size=100),
                                    rng.uniform(size=100), tmp_path / "t.png", group="out")
    x, y = [label for label in rec.labels if "tr(H" in label]
    assert x.startswith("curvature tr(H) (OUT members)")
    assert y.startswith("curvature tr(H²) (OUT members)")
    check_labels(rec.labels)
