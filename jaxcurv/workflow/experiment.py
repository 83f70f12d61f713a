"""What every experiment script is made of: its config, its data, its cached ensembles and
stages, its outputs (summary, tables, the per-member statistics they are computed from) and its
command line. ``experiments/<name>.py`` holds a ``get_config(name)`` and calls into this module
and the rest of the workflow; nothing is re-implemented there.

- :class:`ExperimentConfig`: the settings every experiment shares, from the same declarations as
  the audit's (:mod:`jaxcurv.workflow.settings`); scripts subclass it and declare their own with
  :func:`~jaxcurv.workflow.settings.setting`, so each field gets a flag and its help.
- Data: :func:`load_data` (the one subset sampler, :func:`jaxcurv.data.random_subset`; CIFAR
  falls back to ``fallback_dataset`` without local files, and says so).
- Training and stages: :func:`train_ensemble` (orbax checkpoints keyed on the data, masks and
  every training setting: a rerun restores, a killed run resumes), :func:`member_curvature` and
  :func:`stage_cache` (content-keyed, verified on read).
- Outputs: :func:`output_dir`, :func:`save_statistics` (compressed float32 arrays that every
  table is recomputed from, ``python -m experiments.recompute DIR``), :func:`write_tables`,
  :func:`finish` (summary.json with the config echo, environment, notes, warnings, timings).
- Command line: :func:`parse_args` / :func:`cli`: ``--config NAME``, one generated flag per
  setting and ``--set KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcurv.errors import ConfigError
from jaxcurv.workflow.keys import Stage, key_data, run_key
from jaxcurv.workflow.settings import (
    Augmentation,
    CurvatureProbes,
    DataFolder,
    EnsembleSize,
    ModelChoice,
    RunControl,
    SharpnessAware,
    Training,
    check_settings,
    echo,
    redefault,
    setting,
)

__all__ = [
    "ExperimentConfig",
    "ExperimentData",
    "Stage",
    "config_key",
    "key_data",
    "validate",
    "require_one_dataset",
    "load_data",
    "each_dataset",
    "build_model",
    "optimizer_config",
    "augment_for",
    "train_ensemble",
    "stage_cache",
    "member_curvature",
    "estimator_note",
    "output_dir",
    "STATISTICS_FILE",
    "save_statistics",
    "load_statistics",
    "write_tables",
    "read_table",
    "lagging_members",
    "lagging_members_per_arm",
    "privacy_arm_label",
    "headline",
    "finish",
    "named_config",
    "parse_args",
    "cli",
]

STATISTICS_FILE = "statistics.npz"


# ----------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(RunControl, CurvatureProbes, SharpnessAware, Training, EnsembleSize,
                       ModelChoice, Augmentation, DataFolder):
    """Settings every experiment shares (scripts subclass it and add their own). The defaults
    are the small CPU recipe (a GELU CNN, SGD with momentum at 0.05, weight decay 5e-4, 16
    members on halves, 12 epochs); named configs spell out what differs."""

    name: str = setting("small", "named configuration (set by --config)", flag=None)
    datasets: tuple[str, ...] = setting(
        ("digits",), "dataset specs, one result folder each (anything jaxcurv.data.load takes)")
    fallback_dataset: str | None = setting(
        "digits", "used for a CIFAR spec without local files (null: fail with the fix)",
        none="fail")
    train_size: int | None = setting(None, "seeded random training subset", metavar="N",
                                     low=2, high=10_000_000, none="the whole split")
    test_size: int | None = setting(None, "seeded random test subset", metavar="N", low=2,
                                    high=10_000_000, none="the whole split")
    model: str = redefault(ModelChoice, "model", "cnn")
    models: int = redefault(EnsembleSize, "models", 16)
    epochs: int = redefault(Training, "epochs", 12)
    learning_rate: float | None = redefault(Training, "learning_rate", 0.05)
    optimizer: str = redefault(Training, "optimizer", "sgd")
    weight_decay: float = redefault(Training, "weight_decay", 5e-4)
    bootstrap: int = setting(200, "bootstrap resamples of the intervals", low=0, high=100_000)
    out: str | None = setting(None, "output folder", metavar="DIR",
                              none="results/<experiment>/<config>")
    cache_dir: str = setting("results/.cache", "trained ensembles (orbax checkpoints) and "
                             "cached stages, shared by reruns and by other scripts", metavar="DIR")


def validate(config: ExperimentConfig) -> None:
    """ConfigError naming the first bad shared setting, before any data is read or trained."""
    from jaxcurv import models

    check_settings(config)
    if not config.datasets:
        raise ConfigError("datasets must name at least one dataset, e.g. --datasets digits")
    if config.model not in models.MODEL_NAMES:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {models.MODEL_NAMES}")


def require_one_dataset(config: ExperimentConfig) -> None:
    """ConfigError unless ``config.datasets`` names exactly one dataset (experiments that write one
    statistics file per output folder)."""
    if len(config.datasets) != 1:
        raise ConfigError(f"one dataset per run (one statistics file per folder), got "
                          f"{list(config.datasets)}; run once per dataset with --out")


def config_key(config: ExperimentConfig, stage: Stage):
    """The key of one random stage of an experiment: ``run_key(config.seed, stage)``."""
    return run_key(config.seed, stage)


# ----------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    """One dataset as an experiment uses it: (sub)sampled train/test splits and where they came
    from. ``train_index`` / ``test_index`` index the full splits; ``note`` says what was
    substituted (e.g. digits for missing CIFAR-10 files), else None."""

    train: Any
    test: Any
    spec: str
    slug: str
    source: str
    train_index: np.ndarray
    test_index: np.ndarray
    note: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, "name": self.train.name,
                "train_examples": len(self.train), "test_examples": len(self.test),
                "image_shape": list(self.train.image_shape),
                "num_classes": self.train.num_classes, "note": self.note}


def _slug(spec: str) -> str:
    if spec.startswith("npz:"):
        spec = Path(spec[4:]).stem
    elif spec.startswith("hf:"):
        spec = Path(spec[3:]).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace("tfds:", "")).strip("-") or "data"


def _source(spec: str, config: ExperimentConfig) -> tuple[str, str | None]:
    """(what to load, note): a CIFAR spec without local files becomes the fallback dataset."""
    from jaxcurv import data as data_lib

    if spec not in ("cifar10", "cifar100") or config.fallback_dataset is None:
        return spec, None
    if data_lib.locate(spec, config.data_dir) is not None:
        return spec, None
    return config.fallback_dataset, (
        f"no local {spec} files in --data-dir or ${data_lib.DATA_DIR_ENV}; used "
        f"{config.fallback_dataset!r} instead. Pass --data-dir or set ${data_lib.DATA_DIR_ENV} to "
        f"a folder with the {spec} files to run on {spec}.")


def load_data(spec: str, config: ExperimentConfig) -> ExperimentData:
    """Train/test splits of ``spec``, subsampled to config.train_size (seed config.seed) and
    test_size (seed config.seed + 1) by :func:`jaxcurv.data.random_subset`; a CIFAR spec falls
    back to config.fallback_dataset without local files."""
    from jaxcurv import data as data_lib

    name, note = _source(spec, config)
    train, test = data_lib.train_test(name, data_dir=config.data_dir, progress=config.progress)
    train_index = data_lib.random_subset(len(train), config.train_size, seed=config.seed)
    test_index = data_lib.random_subset(len(test), config.test_size, seed=config.seed + 1)
    return ExperimentData(train.take(train_index), test.take(test_index), spec, _slug(name),
                          name, train_index, test_index, note)


def each_dataset(config: ExperimentConfig, timer, notes: list, lines: list
                 ) -> Iterator[tuple[str, ExperimentData]]:
    """Yield (spec, data) for each of ``config.datasets``: loading is timed, the data's note is
    recorded in ``notes``, and after the loop body a "[slug] note: …" summary line is added to
    ``lines`` when there is a note."""
    for spec in config.datasets:
        with timer(f"{spec}: data"):
            data = load_data(spec, config)
        notes.append(data.note)
        yield spec, data
        if data.note:
            lines.append(f"[{data.slug}] note: {data.note}")


# ----------------------------------------------------------------------------------------------
# models, training, cached stages


def build_model(config: ExperimentConfig, dataset, **overrides):
    """models.get_model(config.model, num_classes, **config.model_settings | overrides)."""
    from jaxcurv import models

    return models.get_model(config.model, dataset.num_classes,
                            **{**config.model_settings, **overrides})


def optimizer_config(config: ExperimentConfig, *, name: str | None = None,
                     learning_rate: float | None = None):
    """The members' optimizer: ``name`` (default config.optimizer) at ``learning_rate``
    (default the config's peak rate), cosine schedule."""
    from jaxcurv.optim import OptimizerConfig

    return OptimizerConfig(name=name or config.optimizer,
                           learning_rate=learning_rate or config.peak_learning_rate,
                           rho=config.rho, weight_decay=config.weight_decay)


def augment_for(config: ExperimentConfig, dataset) -> bool:
    """config.augment, or on for RGB images when it is None."""
    return bool(config.augment) if config.augment is not None else dataset.image_shape[-1] == 3


def train_ensemble(config: ExperimentConfig, data: ExperimentData, masks: np.ndarray, *,
                   tag: str, key=None, model=None, optimizer=None, dp=None,
                   epochs: int | None = None, batch_size: int | None = None,
                   augment: bool | None = None, record_examples: bool = True,
                   record_curvature: int = 0):
    """ensemble.train with orbax checkpoints under ``<cache_dir>/ensembles/<tag>-<hash>``, the
    hash covering the data, masks and every training setting: a rerun (or another script with the
    same settings) restores the finished members instead of training them again, and a killed
    run resumes. key: default ``config_key(config, Stage.TRAIN)``."""
    from jaxcurv import ensemble
    from jaxcurv.workflow.cache import fingerprint
    from jaxcurv.workflow.training import train_ensemble as train

    model = model if model is not None else build_model(config, data.train)
    key = key if key is not None else config_key(config, Stage.TRAIN)
    augment = augment_for(config, data.train) if augment is None else augment
    settings = ensemble.TrainConfig(
        epochs=epochs or config.epochs, batch_size=batch_size or config.batch_size,
        optimizer=optimizer if optimizer is not None else optimizer_config(config),
        augment=augment, dp=dp, record_examples=record_examples,
        record_curvature=record_curvature)
    spec = (repr(model), settings, key_data(key), data.source, data.train_index, data.test_index,
            data.train.labels, masks)
    folder = Path(config.cache_dir) / "ensembles" / f"{tag}-{fingerprint(*spec)[:16]}"
    return train(model, data.train, masks, key, settings, test=data.test, checkpoint_dir=folder,
                 checkpoint_every=settings.epochs, progress=config.progress)


def stage_cache(config: ExperimentConfig, timer=None):
    """The stage cache shared by all experiments: ``<cache_dir>/stages`` (a progress bar over
    chunked stages unless ``--quiet``)."""
    from jaxcurv.workflow.cache import StageCache

    return StageCache(Path(config.cache_dir) / "stages", timer=timer,
                      progress=config.progress)


def member_curvature(config: ExperimentConfig, ens, images: np.ndarray, labels: np.ndarray, *,
                     key, num_probes: int | None = None, method: str = "hutchinson",
                     tag: str = "curvature"):
    """ensemble.member_curvature (Curvature of (K, N) fields), cached per ensemble, images,
    labels, key and estimator settings."""
    from jaxcurv import ensemble
    from jaxcurv.curvature import Curvature
    from jaxcurv.workflow.cache import ensemble_fingerprint

    num_probes = num_probes or config.num_probes
    cache_key = (ensemble_fingerprint(ens), images, labels, key_data(key), num_probes, method)

    def compute():
        return ensemble.member_curvature(ens, images, labels, key, num_probes=num_probes,
                                         method=method, progress=config.progress)._asdict()

    return Curvature(**stage_cache(config).run(tag, cache_key, compute))


def estimator_note(config: ExperimentConfig) -> str:
    """Why finite-difference / zero-order curvature is (not) meaningful for this model."""
    kwargs = config.model_settings
    activation = kwargs.get("activation", "relu" if config.model.startswith("resnet18")
                            else "gelu")
    kinks = activation == "relu" or (config.model == "fastnet"
                                     and kwargs.get("pool", "max") == "max")
    if not kinks:
        return (f"model {config.model} ({activation}) is smooth: finite-difference and zero-order "
                "curvature at h=1e-3 estimate the same Hessian as the exact HVPs.")
    return (f"model {config.model} has ReLU or max-pool kinks: the exact-HVP white-box curvature "
            "is its Gauss-Newton part, and finite-difference / zero-order estimates at h=1e-3 "
            "are dominated by the kinks, not by curvature (use a GELU model or fastnet "
            "pool='avg' when those estimators matter).")


# ----------------------------------------------------------------------------------------------
# outputs


# output folder -> the source commit when the run asked for it (its start): a run that spans a
# commit records the code it started with, and the commit at its end only when they differ
_COMMIT_AT_START: dict[str, str | None] = {}


def output_dir(config: ExperimentConfig, experiment: str) -> Path:
    """``config.out``, or results/<experiment>/<config name>; created. Also notes the source
    commit at the start of the run for :func:`finish`."""
    from jaxcurv.workflow.environment import source_commit

    out = Path(config.out) if config.out else Path("results") / experiment / config.name
    out.mkdir(parents=True, exist_ok=True)
    _COMMIT_AT_START[str(out.resolve())] = source_commit()
    return out


def _stored(value: np.ndarray) -> np.ndarray:
    """How an array is stored: floats as float32, integers and bools as they are."""
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32)
    if value.dtype == bool or np.issubdtype(value.dtype, np.integer):
        return value
    raise ConfigError(f"statistics hold numeric or bool arrays only, got dtype {value.dtype}")


def save_statistics(out: str | Path, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Write ``arrays`` (per-member statistics: masks, confidences, losses, curvature, ...) to
    ``<out>/statistics.npz``, compressed, floats as float32, and return them as stored — the
    tables must be computed from the returned arrays so that
    ``python -m experiments.recompute`` rebuilds them exactly from the file. The summary records
    the file's sha256 (:func:`finish`)."""
    from jaxcurv.report.files import atomic_path

    stored = {str(k): _stored(v) for k, v in arrays.items()}
    path = Path(out) / STATISTICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **stored)
    return load_statistics(out)


def load_statistics(folder: str | Path, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``<folder>/statistics.npz`` (checked against ``sha256`` when given)."""
    path = Path(folder) / STATISTICS_FILE
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise ConfigError(f"{path} does not match the sha256 its summary.json records "
                              f"({digest[:12]}… vs {sha256[:12]}…): the file was changed")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_tables(out: str | Path, tables: Mapping[str, Sequence[Mapping[str, Any]]]
                 ) -> list[Path]:
    """Each table (a list of row dicts) as ``<out>/<name>.csv`` (atomic; one column per key of
    any row, a key a row lacks and None empty; floats with 6 significant digits); returns the
    paths."""
    from jaxcurv import report

    paths = []
    for name, rows in tables.items():
        if not rows:
            raise ConfigError(f"table {name!r} has no rows")
        # every key of every row, in order of first appearance: a row with a key the first
        # row lacks (e.g. a group named by another key) keeps its value
        columns = list(dict.fromkeys(k for r in rows for k in r))
        # object columns keep each cell's type, so a column mixing None and floats still
        # writes its floats with 6 significant digits (a plain array would turn them to text)
        paths.append(report.write_csv(Path(out) / f"{name}.csv",
                                      {c: _object_column([_cell(r.get(c)) for r in rows])
                                       for c in columns}))
    return paths


def _object_column(values: list) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _cell(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                               for v in value) + "]"
    return "" if value is None else value


def read_table(path: str | Path) -> list[dict[str, str]]:
    """A table written by :func:`write_tables`, as rows of strings."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


_SMOKE_TEST = "smoke test: numbers are not meaningful"
_KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


def _numbers(value: Any) -> list[float]:
    """The finite numbers in a float, a list/array of them or a mapping of them."""
    if isinstance(value, Mapping):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    arr = np.asarray(value, dtype=object).ravel()
    out = []
    for v in arr:
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out.extend([float(v)] if np.isfinite(float(v)) else [])
        elif isinstance(v, (list, tuple, Mapping)):
            out.extend(_numbers(v))
    return out


def _test_accuracies(results: Any, num_classes: int | None, where: str = "") -> Iterator[
        tuple[str, list[float], int | None]]:
    """(path, numbers, classes) of every ``test_accuracy*`` entry in ``results``; classes from
    the nearest enclosing "data" description (else ``num_classes``)."""
    if isinstance(results, Mapping):
        data = results.get("data")
        if isinstance(data, Mapping) and isinstance(data.get("num_classes"), int):
            num_classes = data["num_classes"]
        for key, value in results.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key).startswith("test_accuracy") and "gain" not in str(key):
                numbers = _numbers(value)
                if numbers:
                    yield path, numbers, num_classes
            else:
                yield from _test_accuracies(value, num_classes, path)
    elif isinstance(results, (list, tuple)):
        for i, value in enumerate(results):
            yield from _test_accuracies(value, num_classes, f"{where}[{i}]")


def _sanity_warnings(config: Any, results: Mapping[str, Any]) -> list[str]:
    """A warning for each test accuracy in ``results`` near chance (mean, or its lowest value:
    one member, seed or setting), chance = 1/C from the results' data descriptions or the
    config's dataset name."""
    from jaxcurv.workflow.sections import near_chance

    names = getattr(config, "datasets", None) or (getattr(config, "dataset", None),)
    known = {_KNOWN_CLASSES.get(str(n)) for n in names}
    fallback = known.pop() if len(known) == 1 else None
    warnings = []
    for path, numbers, classes in _test_accuracies(results, fallback):
        if classes is None:
            continue
        mean, low = float(np.mean(numbers)), min(numbers)
        if near_chance(mean, classes):
            warnings.append(f"{path}: test accuracy {mean:.3f} is near chance ({1 / classes:.3f})"
                            ": the models learned little and the other numbers mean little")
        elif near_chance(low, classes):
            warnings.append(f"{path}: the lowest test accuracy {low:.3f} is near chance "
                            f"({1 / classes:.3f}): a member, seed or setting failed to train")
    return warnings


def lagging_members(correct: np.ndarray, masks: np.ndarray | None, *, what: str,
                    fraction: float | None = None) -> list[str]:
    """Warnings for members that fit less than ``fraction`` (default
    ``sections.LAGGING_FRACTION``) × the median member of their ensemble on their own training
    subsets (``sections.lagging_member_ids``): a member that did not train (finite parameters,
    so no divergence stop) still enters every attack and memorization estimate.
    correct, masks: (K, N) bool; masks None: every member trained on every example."""
    from jaxcurv.workflow import sections

    fraction = sections.LAGGING_FRACTION if fraction is None else fraction
    correct = np.asarray(correct)
    fit = sections.member_fit(correct, np.ones(correct.shape, bool) if masks is None else masks)
    median = float(np.nanmedian(fit))
    return [f"{what}: member {k} fit {fit[k]:.2f} of its training subset against a median of "
            f"{median:.2f}: it may not have trained, and every attack and memorization estimate "
            f"of this ensemble includes it" for k in sections.lagging_member_ids(fit, fraction)]


def privacy_arm_label(epsilon: float) -> str:
    """An ε sweep's arm in words: "DP-SGD ε = 8" for a finite ε, "non-private" for ∞."""
    return f"DP-SGD ε = {epsilon:g}" if np.isfinite(epsilon) else "non-private"


def lagging_members_per_arm(correct: np.ndarray, masks: np.ndarray | None,
                            epsilons: Sequence[float], *, what: str) -> list[str]:
    """:func:`lagging_members` of each arm of an ε sweep: ``correct`` (A, K, N), ``masks``
    (K, N) shared by the arms (None: every member trained on every example), ``epsilons`` (A,)
    name the arms in the warnings (``<what>, <privacy_arm_label>``)."""
    return [w for a, e in enumerate(epsilons)
            for w in lagging_members(correct[a], masks, what=f"{what}, {privacy_arm_label(e)}")]


def headline(value: float, what: str, *, interval: Sequence[float] | None = None,
             over: str | None = None, unit: str = "", paper: float | None = None
             ) -> dict[str, Any]:
    """One headline figure of a run, as docs/measurements.md shows it: ``value`` (``unit``), what
    it is, its ``interval`` and what the interval is ``over`` (e.g. "3 seeds, min–max" or "95 %
    bootstrap over examples"), and the paper's value when it reports one."""
    return {"value": float(value), "what": what, "unit": unit,
            "interval": None if interval is None else [float(v) for v in interval],
            "over": over, "paper": None if paper is None else float(paper)}


def _command(experiment: str, config: Any) -> str:
    """The command that ran: this process's own flags when it is the experiment's script (so
    ``--set`` overrides are part of it), else ``--config <name>``."""
    import shlex
    import sys

    head = f"python -m experiments.{experiment}"
    if Path(sys.argv[0]).name == f"{experiment}.py":
        return " ".join([head, *map(shlex.quote, sys.argv[1:])])
    return f"{head} --config {getattr(config, 'name', '?')}"


def finish(out: Path, experiment: str, config: Any, results: Mapping[str, Any], *,
           timer, notes: Sequence[str | None], lines: Sequence[str],
           warnings: Sequence[str] = (), command: str | None = None,
           headlines: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """summary.json (experiment, config echo, the command, environment (``commit``: the one the
    run started from, see :func:`output_dir`; ``commit_at_end`` only where that differs), notes,
    warnings, results, ``headlines`` (name → :func:`headline`), timings, and the sha256 of
    statistics.npz when the run saved one) and the printed summary with the total runtime: every script's last
    step. A "tiny" config says it is a smoke test; test accuracies near chance are warned about,
    after the script's own ``warnings``. Returns the summary."""
    from jaxcurv import report
    from jaxcurv.workflow.environment import environment

    timings = timer.total()
    smoke = [_SMOKE_TEST] if getattr(config, "name", None) == "tiny" else []
    notes = list(dict.fromkeys([*smoke, *(n for n in notes if n)]))
    warnings = [*warnings, *_sanity_warnings(config, results)]
    statistics = Path(out) / STATISTICS_FILE
    env = environment()
    started = _COMMIT_AT_START.pop(str(Path(out).resolve()), env["commit"])
    if started != env["commit"]:
        env["commit_at_end"] = env["commit"]
    env["commit"] = started
    summary = {
        "experiment": experiment, "config": echo(config),
        "command": command or _command(experiment, config),
        "environment": env, "notes": notes, "warnings": warnings,
        "headlines": dict(headlines or {}), "results": results, "timings_s": timings}
    if statistics.is_file():
        summary["statistics_sha256"] = hashlib.sha256(statistics.read_bytes()).hexdigest()
    report.write_json(Path(out) / "summary.json", summary)
    print(f"== {experiment} ({getattr(config, 'name', '')}) ==")
    for line in [*smoke, *(f"warning: {w}" for w in warnings),
                 *(line for line in lines if line not in smoke),
                 f"runtime {timings['total']:.1f} s"]:
        print(f"  {line}")
    print(f"  outputs: {out}")
    return summary


# ----------------------------------------------------------------------------------------------
# command line


def named_config(configs: Mapping[str, Any], name: str) -> Any:
    """``configs[name]``, or ConfigError listing the names."""
    if name not in configs:
        raise ConfigError(f"unknown config {name!r}; choose one of {sorted(configs)}")
    return configs[name]


def parse_args(configs: Mapping[str, Any], argv: Sequence[str] | None = None, *,
               description: str = "") -> Any:
    """``--config NAME`` (default "small"), one flag per declared setting of the configs' class
    (generated: adding a setting adds its flag), then repeated ``--set KEY=VALUE`` overrides of
    any field. Progress bars are on unless ``--quiet``."""
    from jaxcurv.workflow.flags import HelpFormatter, add_settings, settings_from_args

    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--config", default="small" if "small" in configs else next(iter(configs)),
                        choices=sorted(configs),
                        help="named configuration (e.g. tiny: a smoke test in seconds; small / "
                        "cpu: a CPU in minutes to an hour; full: the papers' protocol, GPU)")
    add_settings(parser, configs.get("small", next(iter(configs.values()))))
    args = parser.parse_args(argv)
    return settings_from_args(args, named_config(configs, args.config))


def cli(configs: Mapping[str, Any], main: Callable[[Any], Any], *, description: str,
        argv: Sequence[str] | None = None) -> None:
    """Parse the command line into a config and run ``main(config)``; a ConfigError is one line
    on stderr and exit status 2."""
    import sys

    try:
        config = parse_args(configs, argv, description=description)
        main(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
