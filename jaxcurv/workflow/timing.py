"""Wall-clock timing: named stages of a run (:class:`Timer`) and repeated calls of a benchmark
(:func:`time_call`, :func:`time_interleaved`).

Benchmark rules: the first call (compile + run) is timed separately, the repeats after it are
summarized by their median, and every clock read follows ``jax.block_until_ready``. The machine's
1-minute load average is recorded with every timing (shared CPUs make timings noisy).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from jaxcurv._validate import check_positive_int

__all__ = ["Timer", "Timing", "block", "time_call", "time_interleaved", "load_average"]


class Timer:
    """Seconds per named stage since construction: ``with timer("train"): ...``.

    A stage entered twice adds up; ``mark(name, "cached")`` records a stage that was served from a
    cache instead of a time. ``total()`` adds the wall time since the timer was made.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float | str] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            before = self.seconds.get(name, 0.0)
            before = before if isinstance(before, float) else 0.0
            self.seconds[name] = round(before + time.perf_counter() - start, 2)

    def mark(self, name: str, value: float | str) -> None:
        """Record ``value`` (seconds or a word such as "cached") for stage ``name``."""
        self.seconds[name] = value

    def elapsed(self) -> float:
        """Seconds since the timer was made."""
        return round(time.perf_counter() - self._start, 2)

    def total(self) -> dict[str, float | str]:
        """The stages and ``total``: the wall time since the timer was made."""
        return {**self.seconds, "total": self.elapsed()}


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
    import jax

    return jax.block_until_ready(out)


def load_average() -> float:
    """1-minute load average of the machine (NaN where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float("nan")


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> Timing:
    """Time ``fn()`` (which returns arrays): ``warmup`` calls outside the median (the first one is
    reported as ``first``: compile + run), then ``repeats`` timed calls; median and minimum."""
    check_positive_int("repeats", repeats)
    check_positive_int("warmup", warmup)
    first = _timed(fn)
    for _ in range(warmup - 1):
        block(fn())
    times = [_timed(fn) for _ in range(repeats)]
    return Timing(first, statistics.median(times), min(times), tuple(times), load_average())


def time_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 5) -> dict[str, Timing]:
    """Time several ``fn()`` side by side: each is called once outside the median (compile;
    reported as ``first``), then the functions are called in turn, ``repeats`` rounds, so a change
    of machine load hits all of them alike. Medians per function."""
    check_positive_int("repeats", repeats)
    first = {name: _timed(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    load = load_average()
    return {name: Timing(first[name], statistics.median(t), min(t), tuple(t), load)
            for name, t in times.items()}
