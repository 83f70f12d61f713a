"""What the experiment scripts share beyond the workflow layer: the settings every experiment has,
dataset selection with a fallback, the trained-ensemble and curvature caches they share, output
folders, summary.json and the command line.

Every script defines a config dataclass extending :class:`Config`, named configs (at least
"small" for a CPU in minutes and "full" for the papers' protocol on a GPU) returned by
``get_config(name)``, a ``main(config) -> dict`` that writes CSV/JSON/PNG under
``results/<experiment>/<config name>/`` (or ``--out``) and returns the results, and runs as
``python -m experiments.<name> --config small``.

Dataset specs (``Config.datasets``): anything :func:`jaxcurv.data.load` accepts ("digits",
"cifar10", "cifar100", "tfds:<name>", "npz:<path>"). CIFAR files are found by
:func:`jaxcurv.data.locate` in ``--data-dir`` and then in ``$JAXCURV_DATA_DIR``; when a config
has a ``fallback_dataset`` and no local CIFAR copy is found, that dataset (digits in the small
configs) is used instead and the outputs say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcurv.workflow.config import OPTIMIZERS, apply_overrides

__all__ = [
    "Config",
    "Data",
    "TRAIN",
    "CURVATURE",
    "PROXIES",
    "ZERO_ORDER",
    "REFERENCE",
    "run_key",
    "key_data",
    "validate",
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
    "finish",
    "named_config",
    "parse_args",
    "cli",
]

# fold_in ids of the run key PRNGKey(config.seed), one per random stage
TRAIN, CURVATURE, PROXIES, ZERO_ORDER, REFERENCE = 1, 2, 3, 4, 5


# ----------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings every experiment shares (scripts subclass it and add their own).

    datasets: dataset specs (see the module docstring), one result folder each;
    fallback_dataset: used for a CIFAR spec without local files (None: fail with the fix).
    train_size / test_size: a seeded random subset of each split (None: the whole split).
    model / model_kwargs: jaxcurv.models.get_model name and options.
    members: ensemble members, each trained on a random ``fraction`` of the training set
    (balanced masks: every example is in round(fraction·members) of them).
    augment: random crop + flip while training (None: on for RGB images).
    out: output folder (None: results/<experiment>/<name>); cache_dir: trained ensembles
    (orbax checkpoints) and cached stages, reused by reruns and by other scripts.
    progress: progress bars (the command line turns them on; --no-progress turns them off).
    """

    name: str = "small"
    datasets: tuple[str, ...] = ("digits",)
    fallback_dataset: str | None = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    model: str = "cnn"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    members: int = 16
    fraction: float = 0.5
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    rho: float = 0.05
    augment: bool | None = None
    num_probes: int = 10
    seed: int = 0
    bootstrap: int = 200
    out: str | None = None
    cache_dir: str = "results/.cache"
    progress: bool = False


def validate(config: Config) -> None:
    """ValueError naming the first bad shared setting, before any data is read or trained."""
    from jaxcurv import models
    from jaxcurv._validate import check_float, check_int, check_positive, check_positive_int

    if not config.datasets:
        raise ValueError("datasets must name at least one dataset, e.g. "
                         "--set datasets='[\"digits\"]'")
    if config.model not in models.MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose one of {models.MODEL_NAMES}")
    for field in ("members", "epochs", "batch_size", "num_probes"):
        check_positive_int(field, getattr(config, field))
    for field in ("train_size", "test_size"):
        if getattr(config, field) is not None:
            check_int(f"{field} (None: whole split)", getattr(config, field), minimum=2)
    check_float("fraction", config.fraction, minimum=0.0, maximum=1.0, allow_minimum=False,
                allow_maximum=False)
    check_positive("learning_rate", config.learning_rate)
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    check_int("bootstrap", config.bootstrap, minimum=0)
    check_int("seed", config.seed)
    if not isinstance(config.model_kwargs, dict):
        raise ValueError(f"model_kwargs must be a dict, got {config.model_kwargs!r}")


def run_key(config: Config, purpose: int):
    """The key of one random stage: fold_in(PRNGKey(config.seed), purpose)."""
    import jax

    return jax.random.fold_in(jax.random.PRNGKey(config.seed), purpose)


# ----------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class Data:
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
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace("tfds:", "")).strip("-") or "data"


def _subset(dataset, size: int | None, seed: int) -> tuple[Any, np.ndarray]:
    n = len(dataset)
    if size is None or size >= n:
        return dataset, np.arange(n)
    index = np.sort(np.random.default_rng(seed).permutation(n)[:size])
    return dataset.take(index), index


def _source(spec: str, config: Config) -> tuple[str, str | None]:
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


def load_data(spec: str, config: Config) -> Data:
    """Train/test splits of ``spec`` (subsampled to config.train_size / test_size with
    config.seed); a CIFAR spec falls back to config.fallback_dataset without local files."""
    from jaxcurv import data as data_lib

    name, note = _source(spec, config)
    train, test = data_lib.train_test(name, data_dir=config.data_dir, progress=config.progress)
    train, train_index = _subset(train, config.train_size, config.seed)
    test, test_index = _subset(test, config.test_size, config.seed + 1)
    return Data(train, test, spec, _slug(name), name, train_index, test_index, note)


def each_dataset(config: Config, timer, notes: list, lines: list) -> Iterator[tuple[str, Data]]:
    """Yield (spec, Data) for each of ``config.datasets``: loading is timed, the data's note is
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


def build_model(config: Config, dataset, **overrides):
    """models.get_model(config.model, num_classes, **config.model_kwargs | overrides)."""
    from jaxcurv import models

    return models.get_model(config.model, dataset.num_classes, **{**config.model_kwargs,
                                                                   **overrides})


def optimizer_config(config: Config, *, name: str | None = None,
                     learning_rate: float | None = None):
    from jaxcurv.optim import OptimizerConfig

    return OptimizerConfig(name=name or config.optimizer,
                           learning_rate=learning_rate or config.learning_rate, rho=config.rho)


def augment_for(config: Config, dataset) -> bool:
    return bool(config.augment) if config.augment is not None else dataset.image_shape[-1] == 3


def key_data(key) -> np.ndarray:
    """The raw bits of a PRNG key (for cache keys)."""
    import jax

    return np.asarray(jax.random.key_data(key))


def train_ensemble(config: Config, data: Data, masks: np.ndarray, *, tag: str, key=None,
                   model=None, optimizer=None, dp=None, epochs: int | None = None,
                   batch_size: int | None = None, record_examples: bool = True,
                   record_curvature: int = 0):
    """ensemble.train with orbax checkpoints under ``<cache_dir>/ensembles/<tag>-<hash>``, the
    hash covering the data, masks and every training setting: a rerun (or another script with the
    same settings) restores the finished members instead of training them again, and a killed
    run resumes. key: default run_key(config, TRAIN)."""
    from jaxcurv import ensemble
    from jaxcurv.workflow import fingerprint, train_ensemble

    model = model if model is not None else build_model(config, data.train)
    key = key if key is not None else run_key(config, TRAIN)
    settings = ensemble.TrainConfig(
        epochs=epochs or config.epochs, batch_size=batch_size or config.batch_size,
        optimizer=optimizer if optimizer is not None else optimizer_config(config),
        augment=augment_for(config, data.train), dp=dp, record_examples=record_examples,
        record_curvature=record_curvature)
    spec = (repr(model), settings, key_data(key),
            data.source, data.train_index, data.test_index, data.train.labels, masks)
    folder = Path(config.cache_dir) / "ensembles" / f"{tag}-{fingerprint(*spec)[:16]}"
    return train_ensemble(model, data.train, masks, key, settings, test=data.test,
                          checkpoint_dir=folder, checkpoint_every=settings.epochs,
                          progress=config.progress)


def stage_cache(config: Config, timer=None):
    """The stage cache shared by all experiments: ``<cache_dir>/stages``."""
    from jaxcurv.workflow import StageCache

    return StageCache(Path(config.cache_dir) / "stages", timer=timer)


def member_curvature(config: Config, ens, images: np.ndarray, labels: np.ndarray, *, key,
                     num_probes: int | None = None, method: str = "hutchinson",
                     tag: str = "curvature"):
    """ensemble.member_curvature (Curvature of (K, N) fields), cached per ensemble, images,
    labels, key and estimator settings."""
    from jaxcurv import ensemble
    from jaxcurv.curvature import Curvature
    from jaxcurv.workflow import ensemble_fingerprint

    num_probes = num_probes or config.num_probes
    cache_key = (ensemble_fingerprint(ens), images, labels, key_data(key), num_probes, method)

    def compute():
        return ensemble.member_curvature(ens, images, labels, key, num_probes=num_probes,
                                         method=method, progress=config.progress)._asdict()

    return Curvature(**stage_cache(config).run(tag, cache_key, compute))


def estimator_note(config: Config) -> str:
    """Why finite-difference / zero-order curvature is (not) meaningful for this model."""
    activation = config.model_kwargs.get("activation",
                                         "relu" if config.model.startswith("resnet18") else "gelu")
    kinks = activation == "relu" or (config.model == "fastnet"
                                     and config.model_kwargs.get("pool", "max") == "max")
    if not kinks:
        return (f"model {config.model} ({activation}) is smooth: finite-difference and zero-order "
                "curvature at h=1e-3 estimate the same Hessian as the exact HVPs.")
    return (f"model {config.model} has ReLU or max-pool kinks: the exact-HVP white-box curvature "
            "is its Gauss-Newton part, and finite-difference / zero-order estimates at h=1e-3 "
            "are dominated by the kinks, not by curvature (use a GELU model or fastnet "
            "pool='avg' when those estimators matter).")


# ----------------------------------------------------------------------------------------------
# outputs


def output_dir(config: Config, experiment: str) -> Path:
    out = Path(config.out) if config.out else Path("results") / experiment / config.name
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def _sanity_warnings(config: Config, results: Mapping[str, Any]) -> list[str]:
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


def finish(out: Path, experiment: str, config: Config, results: Mapping[str, Any], *,
           timer, notes: Sequence[str | None], lines: Sequence[str],
           warnings: Sequence[str] = ()) -> None:
    """summary.json (experiment, config echo, environment, notes, warnings, results, timings)
    and the printed summary with the total runtime: every script's last step. A "tiny" config
    says it is a smoke test; test accuracies near chance are warned about, after the script's
    own ``warnings``."""
    from jaxcurv import report
    from jaxcurv.workflow import environment

    timings = timer.total()
    smoke = [_SMOKE_TEST] if config.name == "tiny" else []
    notes = list(dict.fromkeys([*smoke, *(n for n in notes if n)]))
    warnings = [*warnings, *_sanity_warnings(config, results)]
    report.write_json(out / "summary.json", {
        "experiment": experiment, "config": dataclasses.asdict(config),
        "environment": environment(), "notes": notes, "warnings": warnings,
        "results": results, "timings_s": timings})
    print(f"== {experiment} ({config.name}) ==")
    for line in [*smoke, *(f"warning: {w}" for w in warnings),
                 *(line for line in lines if line not in smoke),
                 f"runtime {timings['total']:.1f} s"]:
        print(f"  {line}")
    print(f"  outputs: {out}")


# ----------------------------------------------------------------------------------------------
# command line


def named_config(configs: Mapping[str, Config], name: str) -> Config:
    """``configs[name]``, or ValueError listing the names."""
    if name not in configs:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(configs)}")
    return configs[name]


def parse_args(configs: Mapping[str, Config], argv: Sequence[str] | None = None, *,
               description: str = "") -> Config:
    """--config NAME plus --out, --seed, --data-dir, --progress/--no-progress and repeated
    --set KEY=VALUE overrides (jaxcurv.workflow.apply_overrides)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=sorted(configs),
                        help="named configuration (default small: CPU, minutes; full: the "
                        "papers' protocol, GPU)")
    parser.add_argument("--out", default=None, help="output folder (default results/<experiment>/"
                        "<config>)")
    parser.add_argument("--seed", type=int, default=None, help="seed for subsets, keys, noise")
    parser.add_argument("--data-dir", default=None, help="folder with dataset files (CIFAR "
                        "python files or archive, cifar10.npz / cifar10-jpeg.npz, a TFDS "
                        "data_dir); else $JAXCURV_DATA_DIR")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (JSON value), e.g. --set members=8 "
                        "--set 'datasets=[\"digits\"]'; repeatable")
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {"progress": args.progress}
    for name in ("out", "seed", "data_dir"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    config = apply_overrides(named_config(configs, args.config), changes)
    return apply_overrides(config, args.set)


def cli(configs: Mapping[str, Config], main: Callable[[Config], Any], *, description: str,
        argv: Sequence[str] | None = None) -> None:
    """Parse the command line into a config and run ``main(config)``."""
    main(parse_args(configs, argv, description=description))
