"""Result files: JSON (NaN/inf as null), CSV (one row per example) and the self-contained HTML
report, and the ownership of a run's outputs in a folder.

Every write is atomic: a temporary file beside the target, renamed into place. A write that fails
(disk full, no permission) removes its temporary file and raises
:class:`jaxcurv.errors.OutputError` (one line naming the file and the reason).

:func:`retire_outputs` and :func:`publish_outputs` make a folder's outputs (e.g. scores.csv,
summary.json, figures/, report.html) always belong to one run: a run first moves the previous
run's complete set into ``previous/`` (an incomplete set, left by a kill, is deleted), writes its
own set into a fresh staging folder and moves it into place at the end, report.html last. A run
that fails or is killed therefore never leaves the previous run's files looking current, nor a
mix of two runs. No matplotlib is imported."""

from __future__ import annotations

import contextlib
import csv
import html
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcurv.errors import OutputError

__all__ = ["to_jsonable", "write_json", "write_csv", "write_html", "write_text_atomic",
           "atomic_path", "check_writable_file", "output_error", "retire_outputs",
           "publish_outputs", "PREVIOUS", "STAGING"]

PREVIOUS = "previous"   # where retire_outputs keeps the previous run's complete outputs
STAGING = ".staging"    # where a run writes its outputs before publish_outputs moves them

def to_jsonable(value: Any) -> Any:
    """Convert numpy/jax scalars and arrays (recursively) to JSON types; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def output_error(path, err: OSError) -> OutputError:
    """The one-line OutputError for a failed write of ``path``."""
    reason = err.strerror or str(err) or type(err).__name__
    return OutputError(f"could not write {path}: {reason}; free space there (or write "
                       "elsewhere) and try again")


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write; renamed onto ``path`` when the block ends
    without an exception, removed otherwise (an OSError, e.g. a full disk, becomes a one-line
    OutputError naming ``path``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OutputError:
        _unlink_quietly(tmp)
        raise
    except OSError as err:
        _unlink_quietly(tmp)
        raise output_error(path, err) from err
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; OutputError when that fails."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, data: Mapping[str, Any]) -> Path:
    """``data`` as indented JSON (NaN/inf as null), written atomically."""
    return write_text_atomic(path, json.dumps(to_jsonable(data), indent=2))


def write_csv(path, columns: Mapping[str, Any]) -> Path:
    """One row per example from equal-length columns; floats with 6 significant digits,
    booleans as True/False; written atomically."""
    names = list(columns)
    arrays = [np.asarray(columns[n]) for n in names]
    n = len(arrays[0])
    for name, a in zip(names, arrays):
        if len(a) != n:
            raise ValueError(f"column {name!r} has {len(a)} rows, expected {n}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i in range(n):
            writer.writerow([_cell(a[i]) for a in arrays])
    return Path(path)


def _cell(value) -> str:
    """A CSV cell: booleans as True/False (pandas reads them back as bool), floats with 6
    significant digits, NaN/inf empty."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)


# Table headers a reader understands; other keys are shown with spaces for underscores.
_HEADERS = {
    "auroc": "AUROC", "balanced_accuracy": "balanced accuracy",
    "tpr_at_fpr_0_1pct": "TPR at 0.1 % FPR", "tpr_at_fpr_1pct": "TPR at 1 % FPR",
    "balanced_accuracy_eer": "balanced accuracy at EER", "pearson": "Pearson r",
    "pearson_p": "Pearson p-value", "spearman": "Spearman ρ", "spearman_p": "Spearman p-value",
    "n": "examples", "mem_lo": "mem from", "mem_hi": "mem to", "mem_center": "mean mem",
    "pairs": "(member, example) pairs", "train_accuracy": "train accuracy (IN)",
    "average_precision": "average precision", "precision_at_k": "precision@k",
    "k": "k (= flipped)",
}
_P_FLOOR = 1e-16  # below float64 resolution of 1 − p: printed as "< 1e-16"


def _header(name: str) -> str:
    if name.endswith("_ci"):
        return f"{_header(name[:-3])} 95 % CI"
    return _HEADERS.get(name, name.replace("_", " "))


def _table_html(table) -> str:
    """A list of row dicts, or {"caption": str, "rows": [...]}, as an HTML table."""
    caption = ""
    if isinstance(table, Mapping):
        caption = f"<caption>{html.escape(str(table['caption']))}</caption>"
        table = table["rows"]
    rows: Sequence[Mapping[str, Any]] = table
    if not rows:
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    head = "".join(f"<th>{html.escape(_header(str(c)))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell_html(r.get(c), str(c)) for c in cols) + "</tr>"
                   for r in rows)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell_html(value, column: str) -> str:
    """A table cell: numbers right-aligned, text left-aligned."""
    text = html.escape(_fmt(value, column))
    return f"<td class='text'>{text}</td>" if isinstance(value, str) else f"<td>{text}</td>"


def _fmt(value, column: str = "") -> str:
    """A cell: 4 significant digits, p-values below 1e-16 as "< 1e-16", (lo, hi) as an interval."""
    if isinstance(value, (float, np.floating)) and column.endswith("_p") and np.isfinite(value):
        return f"< {_P_FLOOR:.0e}" if value < _P_FLOOR else f"{float(value):.2g}"
    if isinstance(value, (float, np.floating)):
        return "—" if not np.isfinite(value) else f"{float(value):.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (float, np.floating)) for v in value):
        return f"[{value[0]:.3g}, {value[1]:.3g}]"
    return "—" if value is None else str(value)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;"
        "margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}"
        "caption{text-align:left;font-weight:600;padding:.3em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:right}td.text{text-align:left}"
        "th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee;margin:.4em 0}"
        "p.note{color:#555}section.lead{border:2px solid #336;border-radius:6px;"
        "padding:0 1em .6em;background:#f7f8fc}section.lead h2{border:none}"
        "code{white-space:nowrap;font-size:.95em}ul.warnings{color:#b00;font-weight:600}"
        "ul.warnings li::marker{content:'⚠ '}")


def _inline(text: str) -> str:
    """Escaped text with command-line flags (--name) kept on one line."""
    return re.sub(r"(--[a-z][a-z0-9-]*)", r"<code>\1</code>", html.escape(text))


def write_html(path, *, title: str, sections: Sequence[Mapping[str, Any]]) -> Path:
    """A self-contained report: each section has a heading and optional "warnings" (list of
    str, in red), "text", "bullets" (list of str), "tables" (lists of row dicts, or {"caption",
    "rows"}) and "figures" (PNG paths, linked relative to the report); "lead": True frames it."""
    path = Path(path)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append("<section class='lead'>" if section.get("lead") else "<section>")
        parts.append(f"<h2>{html.escape(section['title'])}</h2>")
        if section.get("warnings"):
            parts.append("<ul class='warnings'>" + "".join(
                f"<li>{_inline(w)}</li>" for w in section["warnings"]) + "</ul>")
        if section.get("text"):
            parts.append(f"<p class='note'>{_inline(section['text'])}</p>")
        if section.get("bullets"):
            parts.append("<ul>" + "".join(f"<li>{_inline(b)}</li>"
                                          for b in section["bullets"]) + "</ul>")
        for table in section.get("tables", []):
            parts.append(_table_html(table))
        for fig in section.get("figures", []):
            rel = os.path.relpath(fig, path.parent)
            parts.append(f"<img src='{html.escape(rel)}' alt='{html.escape(Path(fig).stem)}'>")
        parts.append("</section>")
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts))


def check_writable_file(flag: str, path) -> Path:
    """``path`` as a Path if a file can be written there: not an existing directory, and its
    parent folder exists or can be created (created here). ConfigError naming ``flag``
    otherwise; run it before any compute."""
    from jaxcurv.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; pass a file name such as "
                          f"{path / 'curvature.csv'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot create the folder {path.parent} ({err.strerror or err})"
                          "; pass a writable location") from None
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{flag}: the folder {path.parent} is not writable; pass a writable "
                          "location")
    return path


def _is_complete(folder: Path, names: Sequence[str]) -> bool:
    """A folder's output set is complete when its last output (written last) exists."""
    return (folder / names[-1]).exists()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def retire_outputs(folder, names: Sequence[str]) -> Path | None:
    """Before a run writes ``names`` (files or folders, the last one written last, e.g.
    report.html) into ``folder``: move a complete earlier set into ``folder/previous`` (replacing
    the one there) and delete an incomplete one (a killed run's partial set), with the staging
    folder of a killed run. Returns the ``previous`` folder when a set was kept there."""
    folder = Path(folder)
    try:
        for leftover in (STAGING, f".{PREVIOUS}.tmp", f".{PREVIOUS}.old"):
            if (folder / leftover).exists():
                _remove(folder / leftover)
        present = [n for n in names if (folder / n).exists()]
        if not present:
            return None
        if not _is_complete(folder, names):
            for name in present:
                _remove(folder / name)
            return None
        tmp, previous, old = (folder / f".{PREVIOUS}.tmp", folder / PREVIOUS,
                              folder / f".{PREVIOUS}.old")
        tmp.mkdir()
        for name in present:
            os.replace(folder / name, tmp / name)
        if previous.exists():
            os.replace(previous, old)
        os.replace(tmp, previous)
        if old.exists():
            _remove(old)
        return previous
    except OutputError:
        raise
    except OSError as err:
        raise output_error(folder, err) from err


def publish_outputs(staging, folder, names: Sequence[str]) -> None:
    """Move ``names`` from ``staging`` into ``folder`` (which :func:`retire_outputs` emptied of
    them), the last name last, then remove ``staging``: a reader sees either no report or all of
    this run's outputs beside it."""
    staging, folder = Path(staging), Path(folder)
    try:
        for name in names:
            if (folder / name).exists():  # not retired (a caller that skipped retire_outputs)
                _remove(folder / name)
            if (staging / name).exists():
                os.replace(staging / name, folder / name)
        _remove(staging)
    except OSError as err:
        raise output_error(folder, err) from err
