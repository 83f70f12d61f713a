"""What the benchmark scripts (``bench/<name>.py``) share: their settings and command line,
tables, the JSON of results, their data and the epoch clock of a training run.

- Settings: every script's config is a frozen dataclass of
  :func:`~jaxcurv.workflow.settings.setting` fields over :class:`BenchConfig` (``--quick``,
  ``--seed``, ``--out``, ``--tag``); a setting whose
  default differs between the full (GPU) protocol and ``--quick`` is declared once with
  :func:`per_mode` and filled in by :meth:`BenchSettings.resolved`, after the command line, so a
  value given there wins in either mode.
- Command line: :func:`parse_args` / :func:`cli`: one generated flag per setting and
  ``--set KEY=VALUE`` (:func:`jaxcurv.workflow.flags.add_settings`, as for the experiments);
  a :class:`~jaxcurv.errors.JaxcurvError` is one line on stderr.
- Output: :func:`print_table` (plain text) and :func:`write_results`:
  ``<out>/<name>[_quick|_<tag>].json`` written atomically (:func:`jaxcurv.report.write_json`)
  with the command that reproduces it, the config echo and the environment echo (versions,
  device, load average).
- Data: :func:`train_test` and :func:`cifar10` through :mod:`jaxcurv.data`, subsets drawn by
  :func:`subset`, i.e. :func:`jaxcurv.data.random_subset`, the sampler of the audit and the
  experiments (training split with ``seed``, test split with ``seed + 1``): the same seed gives
  the same examples everywhere; :func:`synthetic_cifar`, a CIFAR-shaped stand-in.
- Timing: :mod:`jaxcurv.workflow.timing` (``time_call``, ``time_interleaved``, ``Timer``) and
  :class:`EpochClock`, the ``workflow.train_ensemble`` callback that times epochs without
  compilation.

Jax-free at import.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from jaxcurv.errors import ConfigError, DataNotFound, JaxcurvError, OutputError
from jaxcurv.workflow.flags import HelpFormatter, add_settings, command_line, settings_from_args
from jaxcurv.workflow.settings import RunControl, check_settings, echo, redefault, setting

__all__ = [
    "BenchSettings",
    "BenchConfig",
    "Repeats",
    "per_mode",
    "remode",
    "check_choices",
    "parse_args",
    "one_line_errors",
    "cli",
    "format_table",
    "print_table",
    "results_path",
    "write_results",
    "subset",
    "train_test",
    "cifar10",
    "synthetic_cifar",
    "EpochClock",
]

MODES = "modes"  # field metadata: (full value, --quick value) of a per-mode setting
Config = TypeVar("Config", bound="BenchSettings")


# ----------------------------------------------------------------------------------------------
# settings


def _mode_text(full: Any, quick: Any) -> str:
    def text(value: Any) -> str:
        if isinstance(value, tuple):
            return " ".join(map(str, value))
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    return f"{text(full)}; {text(quick)} with --quick"


def per_mode(full: Any, quick: Any, help: str, **options: Any) -> Any:
    """A setting whose default is ``full`` for the full protocol and ``quick`` with ``--quick``
    (declared once: help, flag, bounds as for :func:`~jaxcurv.workflow.settings.setting`). The
    field holds None until :meth:`BenchSettings.resolved` fills it in."""
    options.setdefault("none", _mode_text(full, quick))
    field = setting(None, help, **options)
    return dataclasses.field(default=None, metadata={**field.metadata, MODES: (full, quick)})


def remode(group: type, name: str, full: Any, quick: Any) -> Any:
    """The per-mode setting ``name`` of ``group`` with other defaults (same help and bounds)."""
    spec = group.__dataclass_fields__[name].metadata["setting"]
    spec = dataclasses.replace(spec, none=_mode_text(full, quick))
    return dataclasses.field(default=None, metadata={"setting": spec, MODES: (full, quick)})


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What every benchmark config has: a seed and the resolution step of its settings."""

    seed: int = redefault(RunControl, "seed", 0)

    def resolved(self: Config) -> Config:
        """The config to run: per-mode settings left at None take their full or ``--quick``
        value, then :meth:`derive` fills the defaults computed from other settings, then every
        setting is checked (:meth:`check`); ConfigError names the first bad one."""
        quick = bool(getattr(self, "quick", False))
        filled = {f.name: f.metadata[MODES][quick] for f in dataclasses.fields(self)
                  if MODES in f.metadata and getattr(self, f.name) is None}
        config = dataclasses.replace(self, **filled).derive()
        check_settings(config)
        config.check()
        return config

    def derive(self: Config) -> Config:
        """Defaults computed from other settings (subclasses); this config by default."""
        return self

    def check(self) -> None:
        """Checks beyond each setting's type and bounds (subclasses raise ConfigError)."""


@dataclasses.dataclass(frozen=True)
class BenchConfig(BenchSettings):
    """The settings of a single-claim benchmark script: mode, seed, where the JSON goes."""

    quick: bool = setting(False, "small sizes for a CPU run of seconds to a few minutes; "
                          "without it the full protocol runs (GPU sizes)")
    out: str | None = setting(None, "folder for the JSON of results", metavar="DIR",
                              none="results/bench/ under the current folder")
    tag: str | None = setting(None, "suffix of the JSON file name, e.g. the device: "
                              "<name>_<tag>.json", metavar="TAG",
                              none="<name>.json, <name>_quick.json with --quick")


@dataclasses.dataclass(frozen=True)
class Repeats:
    """How often a timed call is repeated after its warm-up call."""

    repeats: int | None = per_mode(5, 3, "timed repeats after the warm-up call (the median is "
                                   "reported)", low=1, high=100_000)


def check_choices(label: str, values: Sequence[Any], choices: Sequence[Any]) -> None:
    """ConfigError unless ``values`` is a non-empty list of ``choices``."""
    if not values:
        raise ConfigError(f"{label} needs at least one of {', '.join(map(str, choices))}")
    for value in values:
        if value not in choices:
            raise ConfigError(f"{label}: unknown value {value!r}; choose from "
                              f"{', '.join(map(str, choices))}")


# ----------------------------------------------------------------------------------------------
# command line


def parse_args(config_type: type[Config], argv: Sequence[str] | None = None, *,
               description: str = "") -> Config:
    """The resolved config of ``config_type`` from the command line: one generated flag per
    setting, then ``--set KEY=VALUE`` overrides, then :meth:`BenchSettings.resolved`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                     allow_abbrev=False)
    add_settings(parser, config_type())
    args = parser.parse_args(argv)
    return settings_from_args(args, config_type()).resolved()


@contextlib.contextmanager
def one_line_errors(name: str) -> Iterator[None]:
    """A JaxcurvError raised in the block (a bad setting, missing data, a failed write) is
    printed as one line on stderr, ``bench.<name>: error: ...`` (missing data: with the fix),
    and exits with the error's exit code."""
    prefix = f"bench.{name}: error: "
    try:
        yield
    except DataNotFound as err:
        print("\n".join(err.lines(prefix)), file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except JaxcurvError as err:
        print(f"{prefix}{err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None


def cli(config_type: type[Config], main: Callable[[Config], Any], *, name: str,
        description: str, argv: Sequence[str] | None = None) -> None:
    """Parse the command line into a config and run ``main(config)`` under
    :func:`one_line_errors`; an integer returned by ``main`` is the exit status."""
    with one_line_errors(name):
        status = main(parse_args(config_type, argv, description=description))
    if isinstance(status, int) and status:
        raise SystemExit(status)


# ----------------------------------------------------------------------------------------------
# tables and the JSON of results


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of ``rows`` (dicts; ``columns`` default: the first row's keys), right
    aligned; floats with 4 significant digits (thousands separated from 10,000 on)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[dict[str, Any]],
                columns: Sequence[str] | None = None) -> None:
    """``== title`` and :func:`format_table` on stdout (flushed)."""
    print(f"\n== {title}")
    print(format_table(rows, columns), flush=True)


def results_path(config: BenchConfig, name: str, *, variant: str | None = None) -> Path:
    """``<out>/<name>_<tag>.json`` with ``--tag``, else ``<out>/<name>[_quick][_<variant>].json``;
    ``out`` defaults to results/bench/ under the current folder."""
    folder = Path(config.out) if config.out else Path("results") / "bench"
    if config.tag:
        parts = [name, config.tag]
    else:
        parts = [name, *(["quick"] if config.quick else []), *([variant] if variant else [])]
    return folder / ("_".join(parts) + ".json")


def write_results(config: BenchConfig, name: str, payload: dict[str, Any], *,
                  variant: str | None = None) -> Path:
    """Write ``{"command": ..., "environment": ..., "config": ..., **payload}`` to
    :func:`results_path` atomically (a temporary file renamed into place). ``command``: the
    command that reproduces the run, every setting that differs from the class default spelled
    out (per-mode ones included, so it stays exact when a default changes; ``--out`` left out);
    the environment echo holds the versions, device, date, commit and the machine's 1-minute load
    average at the end of the run; the config echo every setting. OutputError when the file
    cannot be written."""
    from jaxcurv import report
    from jaxcurv.workflow.environment import environment

    path = results_path(config, name, variant=variant)
    command = command_line(f"python -m bench.{name}", config, skip=("out",))
    try:
        report.write_json(path, {"command": command, "environment": environment(),
                                 "config": echo(config), **payload})
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err}") from err
    print(f"\nwrote {path}", flush=True)
    return path


# ----------------------------------------------------------------------------------------------
# data


def subset(dataset: Any, size: int | None, *, seed: int) -> Any:
    """``size`` examples of a :class:`jaxcurv.data.Dataset` drawn by
    :func:`jaxcurv.data.random_subset` (uniform, without replacement, in index order: CIFAR
    files are ordered by class, so a prefix would not do); the dataset itself when ``size`` is
    None or at least its length."""
    from jaxcurv import data

    if size is None or size >= len(dataset):
        return dataset
    return dataset.take(data.random_subset(len(dataset), size, seed=seed))


def train_test(name: str, *, data_dir: str | None = None, train_size: int | None = None,
               test_size: int | None = None, seed: int = 0, needed_for: str | None = None,
               progress: bool = False) -> tuple[Any, Any]:
    """Both splits of ``name`` (:func:`jaxcurv.data.train_test`), the training split subsampled
    to ``train_size`` with ``seed`` and the test split to ``test_size`` with ``seed + 1``, as the
    audit (``max_examples``) and the experiments (``train_size`` / ``test_size``) do.
    ``needed_for``: what needs the data, named in the DataNotFound raised when it is missing."""
    from jaxcurv import data

    try:
        train, test = data.train_test(name, data_dir=data_dir, progress=progress)
    except DataNotFound as err:
        if needed_for is None:
            raise
        raise DataNotFound(f"{needed_for} needs {name}, which was not found.",
                           command_line=err.command_line, looked_for=err.looked_for,
                           other_ways=err.other_ways) from None
    return subset(train, train_size, seed=seed), subset(test, test_size, seed=seed + 1)


def cifar10(data_dir: str | None, *, required: str | None = None, **sizes: Any
            ) -> tuple[Any, Any] | None:
    """CIFAR-10 (train, test) as :func:`train_test` gives it (``sizes``: train_size,
    test_size, seed). Without ``required``: None when :func:`jaxcurv.data.locate` finds no local
    files in ``data_dir`` or ``$JAXCURV_DATA_DIR`` (tensorflow-datasets is not tried);
    ``required`` names what needs the data, and a missing copy raises DataNotFound with the
    fix."""
    from jaxcurv import data

    if required is None and data.locate("cifar10", data_dir) is None:
        return None
    return train_test("cifar10", data_dir=data_dir, needed_for=required, **sizes)


def synthetic_cifar(n_train: int, n_test: int, seed: int) -> tuple[Any, Any]:
    """(train, test) CIFAR-shaped stand-in Datasets (N, 32, 32, 3) float32 in [0, 1] for runs
    without CIFAR-10 files: 10 smooth class prototypes (4×4 blocks of 8×8 pixels) averaged with
    uniform noise; 10 % of the training labels flipped to another class, so some examples can
    only be memorized."""
    import numpy as np

    from jaxcurv import data

    rng = np.random.default_rng(seed)
    prototypes = np.kron(rng.random((10, 4, 4, 3)), np.ones((1, 8, 8, 1)))

    def split(n: int, flip: bool) -> Any:
        y = rng.integers(0, 10, n)
        x = (0.5 * prototypes[y] + 0.5 * rng.random((n, 32, 32, 3))).astype(np.float32)
        if flip:
            y = np.where(rng.random(n) < 0.1, (y + rng.integers(1, 10, n)) % 10, y)
        return data.Dataset.from_arrays(x, y.astype(np.int32), num_classes=10, name="synthetic")

    return split(n_train, True), split(n_test, False)


# ----------------------------------------------------------------------------------------------
# timing a training run


class EpochClock:
    """A ``workflow.train_ensemble`` callback that reads the clock after every epoch, per chunk of
    members. An epoch's callback runs once its metrics have reached the host, so its device work
    is done; the differences between stamps within a chunk are steady epoch times (compilation,
    initialization and the chunk's first epoch excluded by construction). ``clock``: the time
    source (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start = clock()
        self.by_chunk: dict[int, list[float]] = {}
        self.members: dict[int, int] = {}

    def __call__(self, epoch: int, info: dict[str, Any]) -> None:
        chunk = int(info["chunk"])
        self.by_chunk.setdefault(chunk, []).append(self.clock())
        self.members[chunk] = len(info["members"])

    def steady_epoch_times(self) -> list[float]:
        """Seconds per epoch within each chunk, the first epoch of each chunk excluded."""
        return [b - a for stamps in self.by_chunk.values() for a, b in zip(stamps, stamps[1:])]

    def first_epoch(self) -> float:
        """Seconds from the clock's creation to the end of the first chunk's first epoch
        (compilation, initialization and one epoch)."""
        return self.by_chunk[0][0] - self.start

    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return self.clock() - self.start
