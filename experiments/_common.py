"""Shared plumbing of the experiment scripts: configs and the command line, dataset selection,
cached ensembles and stages, output folders, the config echo and the printed summary.

Every script defines a config dataclass that extends :class:`Config`, a ``CONFIGS`` dict of named
configs (at least "small" for a CPU in minutes and "full" for the papers' protocol on a GPU), a
``main(config) -> dict`` that writes CSV/JSON/PNG under ``results/<experiment>/<config name>/``
(or ``--out``) and returns the summary, and ends with ``cli(CONFIGS, main, ...)``.

Dataset specs (``Config.datasets``): anything :func:`jaxcurv.data.load` accepts ("digits",
"cifar10", "cifar100", "tfds:<name>", "npz:<path>"), plus "cifar10-npz": a copy of the
cifar10-jpeg.npz file (JPEG-coded CIFAR-10) found at ``$JAXCURV_CIFAR10_NPZ``, in ``--data-dir``,
or in ``shared/data`` / ``../shared/data`` next to the repository. When it is missing the
config's ``fallback_dataset`` (digits in the small configs) is used and the outputs say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Config",
    "Data",
    "CIFAR10_NPZ_SPEC",
    "find_cifar10_npz",
    "load_data",
    "output_dir",
    "validate",
    "build_model",
    "optimizer_config",
    "augment_for",
    "train_ensemble",
    "cached_arrays",
    "ensemble_key",
    "member_curvature",
    "estimator_note",
    "environment",
    "write_summary",
    "print_summary",
    "finish",
    "each_dataset",
    "apply_overrides",
    "parse_args",
    "cli",
    "Timer",
    "quiet_dp_accounting",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CIFAR10_NPZ_SPEC = "cifar10-npz"
_CIFAR10_NPZ_FILE = "cifar10-jpeg.npz"
_CIFAR10_NPZ_ENV = "JAXCURV_CIFAR10_NPZ"


# ----------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings every experiment shares (scripts subclass it and add their own).

    datasets: dataset specs (see the module docstring), one result folder each.
    train_size / test_size: a seeded random subset of each split (None: the whole split).
    model / model_kwargs: jaxcurv.models.get_model name and options.
    members: ensemble members, each trained on a random ``fraction`` of the training set
    (balanced masks: every example is in round(fraction·members) of them).
    augment: random crop + flip while training (None: on for RGB images).
    out: output folder (None: results/<experiment>/<name>); cache_dir: trained ensembles
    (orbax checkpoints) and cached stages, reused by reruns and by other scripts.
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

    if not config.datasets:
        raise ValueError("datasets must name at least one dataset, e.g. "
                         "--set datasets='[\"digits\"]'")
    if config.model not in models.MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose one of {models.MODEL_NAMES}")
    for field in ("members", "epochs", "batch_size", "num_probes"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
    for field in ("train_size", "test_size"):
        value = getattr(config, field)
        bad = isinstance(value, bool) or not isinstance(value, int) or value < 2
        if value is not None and bad:
            raise ValueError(f"{field} must be None (whole split) or an integer >= 2, "
                             f"got {value!r}")
    if not 0 < config.fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {config.fraction}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    if config.optimizer not in ("sgd", "adam", "sam"):
        raise ValueError(f"optimizer must be sgd, adam or sam, got {config.optimizer!r}")
    if config.bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {config.bootstrap}")
    if not isinstance(config.model_kwargs, dict):
        raise ValueError(f"model_kwargs must be a dict, got {config.model_kwargs!r}")


# ----------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class Data:
    """One dataset as an experiment uses it: (sub)sampled train/test splits and where they came
    from. ``train_index`` / ``test_index`` index the full splits; ``note`` says what was
    substituted (e.g. digits for a missing CIFAR-10 file), else None."""

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


def _cifar10_npz_candidates(data_dir: str | None) -> list[Path]:
    out = []
    env = os.environ.get(_CIFAR10_NPZ_ENV)
    if env:
        out.append(Path(env).expanduser())
    if data_dir:
        out.append(Path(data_dir).expanduser() / _CIFAR10_NPZ_FILE)
    out += [REPO_ROOT / "shared" / "data" / _CIFAR10_NPZ_FILE,
            REPO_ROOT.parent / "shared" / "data" / _CIFAR10_NPZ_FILE]
    return out


def find_cifar10_npz(data_dir: str | None = None) -> Path | None:
    """The first existing cifar10-jpeg.npz among $JAXCURV_CIFAR10_NPZ, <data_dir>/, and
    shared/data/ inside or next to the repository; None if there is none."""
    for path in _cifar10_npz_candidates(data_dir):
        if path.is_file():
            return path
    return None


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


def load_data(spec: str, config: Config) -> Data:
    """Train/test splits of ``spec`` (subsampled to config.train_size / test_size with
    config.seed). "cifar10-npz" falls back to config.fallback_dataset when the file is missing."""
    from jaxcurv import data as data_lib

    note = None
    slug = _slug(spec)
    name = spec
    if spec == CIFAR10_NPZ_SPEC:
        path = find_cifar10_npz(config.data_dir)
        if path is None:
            looked = ", ".join(str(p) for p in _cifar10_npz_candidates(config.data_dir))
            if config.fallback_dataset is None:
                raise FileNotFoundError(
                    f"{_CIFAR10_NPZ_FILE} not found (looked in: {looked}); set "
                    f"${_CIFAR10_NPZ_ENV} to its path, pass --data-dir, or use --set "
                    "datasets='[\"cifar10\"]' with CIFAR-10 files or tensorflow-datasets")
            note = (f"{_CIFAR10_NPZ_FILE} not found (looked in: {looked}); used "
                    f"{config.fallback_dataset!r} instead. Set ${_CIFAR10_NPZ_ENV} or --data-dir "
                    "to run on CIFAR-10.")
            name = config.fallback_dataset
            slug = _slug(name)
        else:
            name = f"npz:{path}"
            slug = "cifar10"
    train, test = data_lib.train_test(name, data_dir=config.data_dir)
    train, train_index = _subset(train, config.train_size, config.seed)
    test, test_index = _subset(test, config.test_size, config.seed + 1)
    return Data(train, test, spec, slug, name, train_index, test_index, note)


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


def _hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _data_fingerprint(data: Data) -> str:
    h = hashlib.sha256()
    h.update(data.source.encode())
    for a in (data.train_index, data.test_index, data.train.labels):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def train_ensemble(config: Config, data: Data, masks: np.ndarray, *, tag: str, model=None,
                   optimizer=None, dp=None, epochs: int | None = None,
                   batch_size: int | None = None, key_seed: int | None = None,
                   record_examples: bool = True, record_curvature: int = 0):
    """ensemble.train with orbax checkpoints under ``<cache_dir>/ensembles/<tag>-<hash>``, the
    hash covering every training setting: a rerun (or another script with the same settings)
    restores the finished members instead of training them again, and a killed run resumes."""
    import jax

    from jaxcurv import ensemble

    model = model if model is not None else build_model(config, data.train)
    optimizer = optimizer if optimizer is not None else optimizer_config(config)
    epochs = epochs or config.epochs
    batch_size = batch_size or config.batch_size
    seed = config.seed if key_seed is None else key_seed
    augment = augment_for(config, data.train)
    spec = {"model": repr(model), "optimizer": dataclasses.asdict(optimizer),
            "dp": None if dp is None else dataclasses.asdict(dp), "epochs": epochs,
            "batch_size": batch_size, "seed": seed, "augment": augment,
            "data": _data_fingerprint(data), "masks": hashlib.sha256(
                np.ascontiguousarray(masks).tobytes()).hexdigest()[:16],
            "record_examples": record_examples, "record_curvature": record_curvature}
    checkpoint_dir = Path(config.cache_dir) / "ensembles" / f"{tag}-{_hash(spec)}"
    return ensemble.train(model, data.train, masks, jax.random.PRNGKey(seed), epochs=epochs,
                          batch_size=batch_size, optimizer=optimizer, augment=augment, dp=dp,
                          test=data.test, record_examples=record_examples,
                          record_curvature=record_curvature, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=epochs, progress=config.progress)


def cached_arrays(config: Config, name: str, key: Any,
                  compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays) cached as ``<cache_dir>/stages/<name>-<hash(key)>.npz``."""
    path = Path(config.cache_dir) / "stages" / f"{name}-{_hash(key)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    result = {k: np.asarray(v) for k, v in compute().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **result)
    os.replace(tmp, path)
    return result


def ensemble_key(ens) -> str:
    """A short hash of an ensemble's parameters and masks, for cache keys of derived stages."""
    import jax

    leaves = jax.tree.leaves(ens.variables)
    h = hashlib.sha256()
    for leaf in leaves[:4] + leaves[-4:]:
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    h.update(np.ascontiguousarray(ens.masks).tobytes())
    return h.hexdigest()[:16]


def member_curvature(config: Config, ens, images: np.ndarray, labels: np.ndarray, *,
                     key_seed: int, num_probes: int | None = None, method: str = "hutchinson",
                     tag: str = "curvature"):
    """ensemble.member_curvature (Curvature of (K, N) fields), cached per ensemble and images."""
    import jax

    from jaxcurv import ensemble
    from jaxcurv.curvature import Curvature

    num_probes = num_probes or config.num_probes
    key = (ensemble_key(ens), hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
           hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(), key_seed,
           num_probes, method)

    def compute():
        c = ensemble.member_curvature(ens, images, labels, jax.random.PRNGKey(key_seed),
                                      num_probes=num_probes, method=method,
                                      progress=config.progress)
        return c._asdict()

    return Curvature(**cached_arrays(config, tag, key, compute))


def estimator_note(config: Config) -> str | None:
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


def environment() -> dict[str, Any]:
    import jax

    return {"python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()],
            "cpu_count": os.cpu_count()}


def write_summary(out: Path, experiment: str, config: Config, results: Mapping[str, Any], *,
                  timings: Mapping[str, float], notes: Sequence[str] = ()) -> Path:
    """summary.json: experiment, config echo, environment, notes, results, timings."""
    from jaxcurv import report

    return report.write_json(out / "summary.json", {
        "experiment": experiment, "config": dataclasses.asdict(config),
        "environment": environment(), "notes": [n for n in notes if n],
        "results": results, "timings_s": dict(timings)})


def each_dataset(config: Config, timer: "Timer", notes: list, lines: list):
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


def finish(out: Path, experiment: str, config: Config, results: Mapping[str, Any], *,
           timer: "Timer", notes: Sequence[str], lines: Sequence[str]) -> None:
    """Write summary.json and print the summary with the total runtime (every script's last step)."""
    write_summary(out, experiment, config, results, timings=timer.total(), notes=notes)
    print_summary(experiment, config, [*lines, f"runtime {timer.total()['total']:.1f} s"], out)


def print_summary(experiment: str, config: Config, lines: Sequence[str], out: Path) -> None:
    print(f"== {experiment} ({config.name}) ==")
    for line in lines:
        print(f"  {line}")
    print(f"  outputs: {out}")


class Timer:
    """Wall-clock seconds per named stage: ``with timer("train"): ...``; ``timer.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(timer.seconds.get(name, 0.0)
                                            + time.perf_counter() - self.t, 2)

        return _Stage()

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self._start, 2)}


def quiet_dp_accounting() -> None:
    """dp_accounting logs a warning per excluded RDP order through absl; keep errors only."""
    logging.getLogger("absl").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------------------------
# command line


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """JSON-decoded ``value`` → the field's type (lists → tuples, ints → floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} takes a list, e.g. --set {name}='[1, 2]'; got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(name, v, inner) for v in value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} takes a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} takes an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} takes true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} takes a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} takes a JSON object, e.g. --set {name}='{{\"width\": 8}}'")
        return value
    return value


def apply_overrides(config: Config, overrides: Mapping[str, Any] | Sequence[str]) -> Config:
    """A copy of ``config`` with fields replaced: a mapping, or "key=value" strings whose value
    is JSON (strings may be given bare). Unknown keys and wrong types raise ValueError."""
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
            key, raw = item.split("=", 1)
            try:
                pairs[key.strip().replace("-", "_")] = json.loads(raw)
            except json.JSONDecodeError:
                pairs[key.strip().replace("-", "_")] = raw
        overrides = pairs
    hints = _field_types(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; settings of this experiment: "
                             f"{sorted(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(config, **changes)


def parse_args(configs: Mapping[str, Config], argv: Sequence[str] | None = None, *,
               description: str = "") -> Config:
    """--config NAME plus --out, --seed, --data-dir, --progress and --set KEY=VALUE overrides."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=sorted(configs),
                        help="named configuration (default small: CPU, minutes; full: the "
                        "papers' protocol, GPU)")
    parser.add_argument("--out", default=None, help="output folder (default results/<experiment>/"
                        "<config>)")
    parser.add_argument("--seed", type=int, default=None, help="seed for subsets, keys, noise")
    parser.add_argument("--data-dir", default=None, help="folder with dataset files (CIFAR "
                        "pickles, cifar10-jpeg.npz, an npz, or a TFDS data_dir)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (JSON value), e.g. --set members=8 "
                        "--set 'datasets=[\"digits\"]'; repeatable")
    args = parser.parse_args(argv)
    config = configs[args.config]
    changes: dict[str, Any] = {}
    if args.out is not None:
        changes["out"] = args.out
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.data_dir is not None:
        changes["data_dir"] = args.data_dir
    if args.progress:
        changes["progress"] = True
    config = apply_overrides(config, changes)
    return apply_overrides(config, args.set)


def cli(configs: Mapping[str, Config], main: Callable[[Config], Any], *, description: str,
        argv: Sequence[str] | None = None) -> None:
    """Parse the command line into a config and run ``main(config)``."""
    main(parse_args(configs, argv, description=description))
