"""Shared helpers of the benchmark scripts: timing, environment echo, tables, JSON output.

Timing rules (every script): compile/warm-up calls are made and timed separately, the measured
calls are repeated and summarized by their median, and every clock read follows
``jax.block_until_ready`` (or a host transfer, which implies it). Ratios are always measured side
by side in the same process. The machine's load average is recorded with every figure because the
CPU figures come from 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax

__all__ = [
    "Timing",
    "block",
    "time_call",
    "time_interleaved",
    "environment",
    "describe_device",
    "load_average",
    "format_table",
    "print_table",
    "write_json",
    "base_parser",
    "results_dir",
    "shared_cifar10_path",
    "random_subset",
]

_REPO = Path(__file__).resolve().parents[1]


class Timing(NamedTuple):
    """Wall times in seconds: ``first`` (compile + run), ``median``/``minimum`` of ``times``
    (the repeats after warm-up) and the 1-minute load average read right after the repeats."""

    first: float
    median: float
    minimum: float
    times: tuple[float, ...]
    load: float

    def as_dict(self) -> dict[str, Any]:
        return {"first_s": self.first, "median_s": self.median, "min_s": self.minimum,
                "times_s": list(self.times), "load_avg_1min": self.load}


def block(out: Any) -> Any:
    """Wait for every device array in ``out`` (numpy leaves pass through)."""
    return jax.block_until_ready(out)


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> Timing:
    """Time ``fn()`` (which returns arrays): ``warmup`` untimed-in-the-median calls (the first one
    is reported as ``first``: compile + run), then ``repeats`` timed calls; median and minimum."""
    if repeats < 1 or warmup < 1:
        raise ValueError("repeats and warmup must be >= 1 (the first call compiles)")
    start = time.perf_counter()
    block(fn())
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return Timing(first, statistics.median(times), min(times), tuple(times), load_average())


def time_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 5) -> dict[str, Timing]:
    """Time several ``fn()`` side by side: each is called once untimed-in-the-median (compile;
    reported as ``first``), then the functions are called in turn, ``repeats`` rounds, so a change
    of machine load hits all of them alike. Medians per function."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    first = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        block(fn())
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - start)
    load = load_average()
    return {name: Timing(first[name], statistics.median(t), min(t), tuple(t), load)
            for name, t in times.items()}


def load_average() -> float:
    """1-minute load average of the machine (NaN where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def environment() -> dict[str, Any]:
    """What ran the benchmark: backend, devices, versions, cores, flags, load."""
    devices = jax.devices()
    env = {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg_1min_start": load_average(),
        "argv": sys.argv,
    }
    try:
        import flax

        env["flax"] = flax.__version__
    except ImportError:  # pragma: no cover - flax is a dependency
        pass
    return env


def describe_device() -> str:
    """One line naming the device for the tables, e.g. 'cpu: cpu ×1 (2 cores, load 1.9)'."""
    env = environment()
    return (f"{env['backend']}: {env['device_kind']} ×{env['device_count']} "
            f"({env['cpu_count']} host cores, load {env['load_avg_1min_start']:.2f}, "
            f"jax {env['jax']})")


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
    path = Path(out) if out else _REPO / "results" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, payload: dict[str, Any], *, out: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (+ environment echo) to ``<out>/<name>.json`` (default results/bench/)."""
    path = results_dir(out) / f"{name}.json"
    payload = {"environment": environment(), **payload}
    from jaxcurv.report import to_jsonable

    path.write_text(json.dumps(to_jsonable(payload), indent=2))
    print(f"\nwrote {path}", flush=True)
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    """--quick (CPU, small), --repeats, --out (JSON folder), --tag (JSON file suffix)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a CPU run of seconds to a couple of minutes; "
                             "without it the full (GPU) protocol of the issue runs")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats after warm-up (median reported); default per mode")
    parser.add_argument("--out", default=None,
                        help="folder for the JSON of results (default results/bench/)")
    parser.add_argument("--tag", default="",
                        help="suffix for the JSON file name, e.g. the device")
    return parser


def shared_cifar10_path() -> Path | None:
    """The shared CIFAR-10 JPEG npz: ./.data/cifar10-jpeg.npz (carried to the GPU machine) or
    ../shared/data/cifar10-jpeg.npz beside the checkout; None when neither exists."""
    for path in (_REPO / ".data" / "cifar10-jpeg.npz",
                 _REPO.parent / "shared" / "data" / "cifar10-jpeg.npz"):
        if path.is_file():
            return path
    return None


def random_subset(dataset, n: int, seed: int):
    """``n`` examples of a jaxcurv Dataset drawn without replacement (CIFAR files are ordered by
    class, so a prefix would hold one class)."""
    import numpy as np

    n = min(int(n), len(dataset))
    return dataset.take(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n]))
