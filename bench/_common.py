"""What the benchmark scripts share beyond the workflow layer: the command line, CIFAR-10 lookup,
plain-text tables and the JSON of results.

Timing (``jaxcurv.workflow.time_call`` / ``time_interleaved``): compile/warm-up calls are timed
separately, the measured calls are repeated and summarized by their median, and every clock read
follows ``jax.block_until_ready``. Ratios are always measured side by side in the same process.
The machine's load average is recorded with every figure (shared CPUs make timings noisy).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_table", "print_table", "results_dir", "write_json", "base_parser",
           "cifar10", "random_subset", "synthetic_cifar"]


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of ``rows`` (dicts); floats get 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v):
        if isinstance(v, float):
            if v != v:  # NaN
                return "nan"
            return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None):
    print(f"\n== {title}")
    print(format_table(rows, columns), flush=True)


def results_dir(out: str | os.PathLike | None = None) -> Path:
    """``out``, or results/bench/ under the current folder."""
    path = Path(out) if out else Path("results") / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, payload: dict[str, Any], *, out: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (+ environment echo) to ``<out>/<name>.json`` (default results/bench/)."""
    from jaxcurv.report import to_jsonable
    from jaxcurv.workflow import environment

    path = results_dir(out) / f"{name}.json"
    path.write_text(json.dumps(to_jsonable({"environment": environment(), **payload}), indent=2))
    print(f"\nwrote {path}", flush=True)
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    """--quick (CPU, small), --repeats, --out (JSON folder), --tag (JSON file suffix),
    --data-dir (CIFAR-10 files; else $JAXCURV_DATA_DIR)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a CPU run of seconds to a couple of minutes; "
                             "without it the full (GPU) protocol runs")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats after warm-up (median reported); default per mode")
    parser.add_argument("--out", default=None,
                        help="folder for the JSON of results (default results/bench/)")
    parser.add_argument("--tag", default="",
                        help="suffix for the JSON file name, e.g. the device")
    parser.add_argument("--data-dir", default=None,
                        help="folder with CIFAR-10 (python files, archive, cifar10.npz or "
                             "cifar10-jpeg.npz); default $JAXCURV_DATA_DIR")
    return parser


def cifar10(data_dir: str | os.PathLike | None, *, required: str | None = None):
    """(train, test) CIFAR-10 Datasets from local files found by jaxcurv.data.locate in
    ``data_dir`` or $JAXCURV_DATA_DIR, or None when there are none. ``required``: what needs
    them; then a missing copy exits with the fix instead."""
    from jaxcurv import data

    if data.locate("cifar10", data_dir) is None:
        if required:
            raise SystemExit(f"{required} needs CIFAR-10: pass --data-dir DIR or set "
                             f"${data.DATA_DIR_ENV}=DIR, DIR holding cifar-10-batches-py/, "
                             "cifar-10-python.tar.gz, cifar10.npz or cifar10-jpeg.npz")
        return None
    return data.train_test("cifar10", data_dir=data_dir)


def random_subset(dataset, n: int, seed: int):
    """``n`` examples of a jaxcurv Dataset drawn without replacement (CIFAR files are ordered by
    class, so a prefix would hold one class)."""
    import numpy as np

    n = min(int(n), len(dataset))
    return dataset.take(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n]))


def synthetic_cifar(n_train: int, n_test: int, seed: int):
    """(train, test) CIFAR-shaped stand-in Datasets (N, 32, 32, 3): 10 smooth class prototypes +
    uniform noise; 10 % of the training labels flipped, so some examples can only be memorized."""
    import numpy as np

    from jaxcurv import data

    rng = np.random.default_rng(seed)
    protos = np.kron(rng.random((10, 4, 4, 3)), np.ones((1, 8, 8, 1)))

    def split(n: int, flip: bool):
        y = rng.integers(0, 10, n)
        x = (0.5 * protos[y] + 0.5 * rng.random((n, 32, 32, 3))).astype(np.float32)
        if flip:
            y = np.where(rng.random(n) < 0.1, (y + rng.integers(1, 10, n)) % 10, y)
        return data.Dataset.from_arrays(x, y.astype(np.int32), num_classes=10, name="synthetic")

    return split(n_train, True), split(n_test, False)
