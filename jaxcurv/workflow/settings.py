"""Settings declared once: every field carries its help, its flag and its bounds.

A setting is a dataclass field made by :func:`setting`; its metadata holds what the command line
needs (flag name, help, metavar, choices, how the text is parsed) and what validation needs
(bounds, choices). Groups of related settings are small frozen dataclasses (``DataSource``,
``Training``, ``Curvature``, ...); the audit, the ``curvature`` command and the experiments build
their configs by inheriting the groups they use, so a setting has one declaration, one help text,
one default and one bound everywhere. From that tree :mod:`jaxcurv.workflow.flags` generates the
command-line flags, :func:`check_settings` validates a config, :func:`apply_overrides` applies
``--set key=value`` and :func:`echo` writes the config echo of a summary.

Jax-free: ``jaxcurv --help`` builds its parser from here without importing jax.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from jaxcurv._names import CURVATURE_METHODS, DATASET_SPECS, GNR_HVPS, OPTIMIZERS
from jaxcurv.errors import ConfigError

__all__ = [
    "setting",
    "Setting",
    "settings_of",
    "redefault",
    "check_settings",
    "apply_overrides",
    "parse_overrides",
    "echo",
    "flag_name",
    "OPTIMIZERS",
    "GNR_HVPS",
    "CURVATURE_METHODS",
    "DataFolder",
    "DataSource",
    "Subsample",
    "LabelNoise",
    "Augmentation",
    "ModelChoice",
    "Training",
    "EnsembleSize",
    "SharpnessAware",
    "CurvatureProbes",
    "Attacks",
    "PrivacyBudget",
    "Privacy",
    "PrivacySweep",
    "Processes",
    "RunControl",
]

# Peak learning rates when learning_rate is not given.
LEARNING_RATES = {"sgd": 0.05, "adam": 2e-3, "rmsprop": 1e-3, "sam": 0.05, "sam-gnr": 0.05}
# Keyword arguments of models.get_model when model_kwargs is not given: a GELU MLP wide and deep
# enough to fit every training label of a half of the 8x8 digits within 60 epochs, also with 10 %
# of the labels flipped (docs/design.md, "The audit").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"mlp": {"hidden": 512, "depth": 2}}


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the command line and validation know of one field.

    flag: the option (default ``--name-with-dashes``; None: no flag); low / high: bounds (inclusive
    unless ``open_low`` / ``open_high``); choices: allowed values; parse: how flag text becomes a
    value ("json" for objects and lists, "on_off" for a three-state bool, "int_or_zero_none":
    0 means None); negate: a bool flag that sets the field to False (e.g. ``--no-zero-order``);
    cli_default: the value the command line uses when the flag is not given (None: the
    field's default; e.g. progress bars on); ``none``: what None means, shown in the help; required: the command line must give it."""

    help: str
    flag: str | None = ""
    metavar: str | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | None = None
    parse: str | None = None
    negate: bool = False
    cli_default: Any = None
    none: str | None = None
    required: bool = False


def setting(default: Any, help: str, **options: Any) -> Any:
    """A dataclass field with default ``default`` and the :class:`Setting` ``options``."""
    spec = Setting(help=help, **options)
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value),
                                 metadata={"setting": spec})
    return dataclasses.field(default=default, metadata={"setting": spec})


def settings_of(config: Any) -> list[tuple[dataclasses.Field, Setting]]:
    """(field, Setting) of every declared setting of a config class or instance, in order."""
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(config)
            if "setting" in f.metadata]


def redefault(group: type, name: str, default: Any) -> Any:
    """The setting ``name`` of ``group`` with another default (same help, flag and bounds): a
    config whose use differs (e.g. the ``curvature`` command's CNN) declares only the default."""
    field = group.__dataclass_fields__[name]
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value),
                                 metadata=field.metadata)
    return dataclasses.field(default=default, metadata=field.metadata)


def flag_name(field: dataclasses.Field, spec: Setting) -> str | None:
    """The option string of a setting (None: not on the command line)."""
    if spec.flag is None:
        return None
    return spec.flag or "--" + field.name.replace("_", "-")


def _display(field: dataclasses.Field, spec: Setting) -> str:
    return flag_name(field, spec) or field.name


# ----------------------------------------------------------------------------------------------
# the groups


@dataclasses.dataclass(frozen=True)
class DataFolder:
    """Where local dataset files are found."""

    data_dir: str | None = setting(
        None, "folder with dataset files (CIFAR python files or archive, an npz, or a TFDS "
        "data_dir)", metavar="DIR", none="$JAXCURV_DATA_DIR, then tensorflow-datasets' data dir")


@dataclasses.dataclass(frozen=True)
class DataSource(DataFolder):
    """Which dataset, from where."""

    dataset: str = setting("digits", " | ".join(spec for spec, _ in DATASET_SPECS))


@dataclasses.dataclass(frozen=True)
class Subsample:
    """A seeded random subset of the data (jaxcurv.data.random_subset)."""

    max_examples: int | None = setting(
        None, "use a seeded random subset of N training (and at most N test) examples, e.g. to "
        "try CIFAR on a CPU", metavar="N", low=2, high=10_000_000, none="all")


@dataclasses.dataclass(frozen=True)
class LabelNoise:
    """Planted label noise."""

    label_noise: float = setting(
        0.0, "flip this fraction of training labels and report how well curvature and "
        "memorization find them", metavar="F", low=0.0, high=1.0, open_high=True)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation."""

    augment: bool | None = setting(
        None, "random crop + flip while training", parse="on_off",
        none="on for RGB images, off for grayscale")


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The network every member instantiates."""

    model: str = setting("mlp", "mlp | cnn | resnet18 | resnet18_gn | fastnet (mlp: a GELU MLP "
                         "that fits every training label of the digits), or "
                         "package.module:factory, a function called with num_classes= and the "
                         "--model-kwargs that returns a flax linen or NNX module, an NNX or "
                         "Equinox factory, or an (init, apply) pair")
    model_kwargs: dict | None = setting(
        None, "keyword arguments of the model as a JSON object, e.g. '{\"width\": 16, "
        "\"hidden\": 512}' for cnn", metavar="JSON", parse="json",
        none="the model's defaults; mlp: hidden 512, depth 2")

    @property
    def model_settings(self) -> dict[str, Any]:
        """Keyword arguments for models.get_model: the given ones or the model's defaults."""
        if self.model_kwargs is not None:
            return dict(self.model_kwargs)
        return dict(MODEL_DEFAULTS.get(self.model, {}))


@dataclasses.dataclass(frozen=True)
class Training:
    """How each member is trained."""

    epochs: int = setting(60, "epochs per member", low=1, high=100_000)
    batch_size: int = setting(64, "(expected) batch size", low=1, high=1 << 20)
    learning_rate: float | None = setting(
        None, "peak learning rate, cosine schedule", low=0.0, open_low=True, high=1e3,
        none="2e-3 for adam, 1e-3 for rmsprop, 0.05 for sgd, sam and sam-gnr")
    weight_decay: float = setting(
        0.0, "L2 on kernels (0: members must fit their training labels for memorization to "
        "show)", low=0.0, high=1e3)
    optimizer: str = setting(
        "adam", "sgd (momentum 0.9), adam, rmsprop, sam (SGD + sharpness-aware minimization) or sam-gnr "
        "(SAM + gradient-norm penalty + noise, the SAM paper's mitigation)", choices=OPTIMIZERS)

    @property
    def peak_learning_rate(self) -> float:
        """The given learning rate or the optimizer's default."""
        return self.learning_rate if self.learning_rate is not None else \
            LEARNING_RATES[self.optimizer]


@dataclasses.dataclass(frozen=True)
class SharpnessAware:
    """SAM and the SAM paper's mitigation (SAM-GNR)."""

    rho: float = setting(0.05, "SAM radius", low=0.0, open_low=True, high=1e3)
    gnr_penalty: float | None = setting(
        None, "sam-gnr: weight of the parameter-gradient-norm penalty", low=0.0, high=1e3,
        none="the optimizer's")
    gnr_noise: float | None = setting(
        None, "sam-gnr: standard deviation of the injected gradient noise", low=0.0, high=1e3,
        none="the optimizer's")


@dataclasses.dataclass(frozen=True)
class EnsembleSize:
    """How many members, each on which share of the data."""

    models: int = setting(32, "ensemble members, each trained on a random --fraction of the "
                          "data", metavar="K", low=1, high=100_000)
    fraction: float = setting(0.5, "fraction of the training set each member sees", low=0.0,
                              high=1.0, open_low=True, open_high=True)


@dataclasses.dataclass(frozen=True)
class CurvatureProbes:
    """The curvature estimators' probes and step."""

    num_probes: int = setting(10, "Hutchinson / zero-order probes per example", low=1,
                              high=10_000)
    h: float = setting(1e-3, "zero-order step size (inputs lie in [0, 1])", low=0.0,
                       open_low=True, high=0.5)


@dataclasses.dataclass(frozen=True)
class Attacks:
    """Which signals the attacks use and how their intervals are drawn."""

    zero_order: bool = setting(True, "skip the black-box (losses only) curvature attack",
                               flag="--no-zero-order", negate=True)
    zero_order_members: int | None = setting(
        8, "black-box curvature on the first M members only (0 = all): its float64 loss queries "
        "cost more than the white-box HVPs on a CPU", metavar="M", low=6, high=100_000,
        parse="int_or_zero_none")
    adversarial: bool = setting(
        False, "also compute the adversarial-distance proxy (smallest L2 PGD step that flips "
        "the prediction; slower)")
    bootstrap: int = setting(100, "bootstrap resamples for MIA confidence intervals", low=0,
                             high=100_000)


@dataclasses.dataclass(frozen=True)
class PrivacyBudget:
    """DP-SGD's δ and clip norm."""

    dp_delta: float = setting(1e-5, "DP delta", low=0.0, high=1.0, open_low=True, open_high=True)
    dp_clip: float = setting(1.0, "per-example gradient clip norm C", low=0.0, open_low=True,
                             high=1e6)


@dataclasses.dataclass(frozen=True)
class Privacy(PrivacyBudget):
    """DP-SGD for the members."""

    dp_epsilon: float | None = setting(
        None, "train with DP-SGD at this epsilon (noise calibrated; also trains a non-private "
        "reference to measure the cost)", metavar="E", low=0.0, open_low=True, high=1e6,
        none="no DP")

    @property
    def private(self) -> bool:
        """True when the members are trained with DP-SGD."""
        return self.dp_epsilon is not None


@dataclasses.dataclass(frozen=True)
class PrivacySweep(PrivacyBudget):
    """DP-SGD at several budgets (experiments): σ calibrated per ε, Poisson sampling."""

    epsilons: tuple[float, ...] = setting((1.0, 8.0, 64.0), "the ε grid of the DP-SGD runs")
    accountant: str = setting("rdp", "rdp (Renyi DP) or pld (privacy loss distributions)",
                              choices=("rdp", "pld"))
    dp_learning_rate: float = setting(0.1, "peak learning rate under DP-SGD", low=0.0,
                                      open_low=True, high=1e3)


@dataclasses.dataclass(frozen=True)
class Processes:
    """A job over several hosts (jaxcurv.distributed.initialize)."""

    coordinator: str | None = setting(
        None, "several hosts: process 0's address and a free port, the same on every process",
        metavar="HOST:PORT",
        none="$JAX_COORDINATOR_ADDRESS, else the cluster's launcher (SLURM, Open MPI, Cloud "
        "TPU), else one process")
    num_processes: int | None = setting(
        None, "several hosts: number of processes, one per host", metavar="N", low=1,
        high=1_000_000, none="$JAX_NUM_PROCESSES or the cluster's launcher, else 1")
    process_id: int | None = setting(
        None, "several hosts: this process's index in [0, N); process 0 writes the reports",
        metavar="I", low=0, high=1_000_000, none="$JAX_PROCESS_ID or the cluster's launcher")


@dataclasses.dataclass(frozen=True)
class RunControl:
    """Seed, progress output."""

    seed: int = setting(0, "seed for subsets, keys, noise", low=0, high=2**63 - 1)
    progress: bool = setting(False, "no progress bars or stage lines", flag="--quiet",
                             negate=True, cli_default=True)


# ----------------------------------------------------------------------------------------------
# validation


def _type_of(config: Any, name: str) -> Any:
    return typing.get_type_hints(type(config))[name]


def _check_value(label: str, value: Any, spec: Setting, hint: Any) -> None:
    """ConfigError naming ``label`` when ``value`` is not of ``hint`` or outside the bounds."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r}")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
    elif hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{label} must be a JSON object such as '{{\"hidden\": 256}}', "
                              f"got {value!r}")
    elif origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{label} must be a list, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{label} must be one of {', '.join(map(str, spec.choices))}; got "
                          f"{value!r}")
    kind = "an integer " if hint is int else ""
    if spec.low is not None and (value < spec.low or (spec.open_low and value == spec.low)):
        raise ConfigError(f"{label} must be {kind}{'>' if spec.open_low else '>='} "
                          f"{spec.low:g}, got {value!r}")
    if spec.high is not None and (value > spec.high or (spec.open_high and value == spec.high)):
        raise ConfigError(f"{label} must be {kind}{'<' if spec.open_high else '<='} "
                          f"{spec.high:g}, got {value!r}")


def check_settings(config: Any) -> None:
    """ConfigError naming the first setting of ``config`` whose value has the wrong type or lies
    outside its declared bounds or choices (flags named as on the command line)."""
    hints = typing.get_type_hints(type(config))
    for field, spec in settings_of(config):
        _check_value(_display(field, spec), getattr(config, field.name), spec, hints[field.name])


# ----------------------------------------------------------------------------------------------
# overrides and echo


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` → {key: value}: values are JSON (``8``, ``true``, ``null``,
    ``["a", "b"]``, ``{"width": 8}``); a value that is not JSON is taken as a bare string. Dashes
    in keys become underscores."""
    if isinstance(items, (str, bytes)):
        raise ConfigError(f"overrides must be a list of KEY=VALUE strings, got {items!r}")
    pairs: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"an override takes KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"an override takes KEY=VALUE with a non-empty KEY, got {item!r}")
        try:
            pairs[key] = json.loads(raw)
        except json.JSONDecodeError:
            pairs[key] = raw
    return pairs


def apply_overrides(config: Any, overrides: Mapping[str, Any] | Sequence[str]) -> Any:
    """A copy of the dataclass ``config`` with fields replaced: a mapping, or ``"key=value"``
    strings (see :func:`parse_overrides`). Each value is converted to its field's declared type
    (lists → tuples, integers → floats) and checked against the field's bounds; unknown keys and
    wrong types raise ConfigError. The config itself is not changed."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"config must be a dataclass instance, got {type(config).__name__}")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config) if f.init}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r}; settings of {type(config).__name__}: "
                              f"{sorted(fields)}")
        spec = fields[key].metadata.get("setting")
        label = key if spec is None else _display(fields[key], spec)
        value = _coerce(label, value, hints[key])
        if spec is not None:
            _check_value(label, value, spec, hints[key])
        changes[key] = value
    return dataclasses.replace(config, **changes)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A JSON-decoded ``value`` as the field type ``hint``; ConfigError saying what it takes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} takes a list, e.g. {name}='[1, 2]'; got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(name, v, inner) for v in value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise ConfigError(f"{name} takes a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} takes an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} takes true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} takes a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} takes a JSON object, e.g. {name}='{{\"width\": 8}}'; "
                              f"got {value!r}")
        return value
    return value


def echo(config: Any) -> dict[str, Any]:
    """The config echo of a summary: every init field by name (tuples as lists)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
