"""Configuration of the workflows: the audit's settings and the one ``key=value`` override parser.

:class:`AuditConfig` holds everything ``jaxcurv audit`` can be told; ``validate`` raises a
``ValueError`` naming the first bad setting before any data is read. :func:`apply_overrides`
returns a copy of any config dataclass with fields replaced from ``"key=value"`` strings (JSON
values, typed from the dataclass fields) or a mapping; the experiments' ``--set`` uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from jaxcurv._validate import check_float, check_int, check_positive, check_positive_int

__all__ = ["AuditConfig", "OPTIMIZERS", "apply_overrides", "parse_overrides"]

OPTIMIZERS = ("sgd", "adam", "sam", "sam-gnr")

# The default audit model: a GELU MLP wide and deep enough to fit every training label of a half
# of the 8x8 digits within 60 epochs, also with 10 % of the labels flipped (BUILD_NOTES, "A
# default audit that memorizes"). Other models keep models.get_model's defaults unless
# --model-kwargs says otherwise.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"mlp": {"hidden": 512, "depth": 2}}
# Peak learning rates when --learning-rate is not given.
LEARNING_RATES = {"sgd": 0.05, "adam": 2e-3, "sam": 0.05, "sam-gnr": 0.05}


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything ``jaxcurv audit`` can be told; defaults run on the embedded digits in minutes.

    models: ensemble members K, each trained on a random ``fraction`` of the training set;
    num_probes / h: Hutchinson and zero-order probes and the zero-order step; label_noise: fraction
    of flipped training labels; dp_*: DP-SGD (None: non-private); augment: crop + flip (None: on
    for RGB); max_examples: a seeded random subset of each split; bootstrap: resamples of the MIA
    confidence intervals; progress: progress output (off unless asked, e.g. by the CLI).
    model_kwargs: keyword arguments of models.get_model (None: MODEL_DEFAULTS of the model);
    learning_rate: peak rate (None: LEARNING_RATES of the optimizer); weight_decay: L2 on kernels
    (0 by default: memorization needs the members to fit their training labels);
    zero_order_members: black-box curvature on the first M members only (None or M ≥ models:
    all), since its
    float64 loss queries cost more than the white-box HVPs on a CPU; gnr_*: the SAM paper's
    mitigation strengths for --optimizer sam-gnr (None: the optimizer's defaults); clean: remove
    checkpoint folders under <out>/checkpoints that other configurations left.
    coordinator / num_processes / process_id: a multi-process job over several hosts
    (jaxcurv.distributed.initialize; None: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID or the cluster's launcher, else one process); ``out`` must then be a folder
    every process sees.
    """

    @property
    def model_settings(self) -> dict[str, Any]:
        """Keyword arguments for models.get_model: the given ones or the model's defaults."""
        if self.model_kwargs is not None:
            return dict(self.model_kwargs)
        return dict(MODEL_DEFAULTS.get(self.model, {}))

    @property
    def peak_learning_rate(self) -> float:
        """The given learning rate or the optimizer's default."""
        return self.learning_rate if self.learning_rate is not None else \
            LEARNING_RATES[self.optimizer]

    dataset: str = "digits"
    model: str = "mlp"
    model_kwargs: dict | None = None
    models: int = 32
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float | None = None
    weight_decay: float = 0.0
    fraction: float = 0.5
    num_probes: int = 10
    zero_order: bool = True
    zero_order_members: int | None = 8
    adversarial: bool = False
    h: float = 1e-3
    label_noise: float = 0.0
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    optimizer: str = "adam"
    rho: float = 0.05
    gnr_penalty: float | None = None
    gnr_noise: float | None = None
    augment: bool | None = None
    seed: int = 0
    out: str = "results/audit"
    data_dir: str | None = None
    max_examples: int | None = None
    bootstrap: int = 100
    clean: bool = False
    progress: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def private(self) -> bool:
        """True when the members are trained with DP-SGD."""
        return self.dp_epsilon is not None

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting, before any data is read or trained."""
        from jaxcurv import models

        if self.model not in models.MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {models.MODEL_NAMES}")
        for name, most in _LIMITS.items():  # sizes checked before anything is allocated
            check_int(_flag(name), getattr(self, name), minimum=1, maximum=most)
        if self.models < 6:
            raise ValueError("--models must be >= 6: each member in turn is an attack target "
                             "whose shadows need at least two members holding each example in "
                             "and two holding it out")
        check_float("--fraction", self.fraction, minimum=0.0, maximum=1.0, allow_minimum=False,
                    allow_maximum=False)
        check_float("--label-noise", self.label_noise, minimum=0.0, maximum=1.0,
                    allow_maximum=False)
        if self.dp_epsilon is not None:
            check_positive("--dp-epsilon", self.dp_epsilon)
        check_float("--dp-delta", self.dp_delta, minimum=0.0, maximum=1.0, allow_minimum=False,
                    allow_maximum=False)
        check_positive("--dp-clip", self.dp_clip)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.private and self.optimizer in ("sam", "sam-gnr"):
            raise ValueError("--dp-epsilon cannot be combined with --optimizer sam")
        if self.private and self.model == "resnet18":
            raise ValueError("DP-SGD needs a model without BatchNorm: use --model resnet18_gn")
        if self.learning_rate is not None:
            check_positive("--learning-rate", self.learning_rate)
        check_positive("--rho", self.rho)
        check_float("--weight-decay", self.weight_decay, minimum=0.0)
        for name in ("gnr_penalty", "gnr_noise"):
            if getattr(self, name) is not None:
                check_float(_flag(name), getattr(self, name), minimum=0.0)
                if self.optimizer != "sam-gnr":
                    raise ValueError(f"{_flag(name)} applies to --optimizer sam-gnr only")
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise ValueError(f"--model-kwargs must be a JSON object such as "
                             f"'{{\"hidden\": 256}}', got {self.model_kwargs!r}")
        if self.zero_order_members is not None:
            check_int("--zero-order-members", self.zero_order_members, minimum=6)
        check_positive("--h", self.h)
        check_int("--bootstrap", self.bootstrap, minimum=0)
        _check_processes(self.coordinator, self.num_processes, self.process_id)
        check_int("--seed", self.seed, minimum=0, maximum=2**63 - 1)
        if self.max_examples is not None:
            check_int("--max-examples", self.max_examples)
            if self.max_examples < 2 * self.models:
                raise ValueError(f"--max-examples must be >= 2 × --models = {2 * self.models}, "
                                 f"got {self.max_examples}")


# upper bounds that no real run reaches but that fail fast instead of after training
_LIMITS = {"models": 100_000, "epochs": 100_000, "batch_size": 1 << 20, "num_probes": 10_000}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_processes(coordinator, num_processes, process_id) -> None:
    """--coordinator HOST:PORT, --num-processes N >= 1, --process-id in [0, N)."""
    if coordinator is not None:
        host, _, port = str(coordinator).rpartition(":")
        if (not isinstance(coordinator, str) or not host or not port.isdigit()
                or not 0 < int(port) < 65536):
            raise ValueError(f"--coordinator must be HOST:PORT (process 0's address and a free "
                             f"port, e.g. node0:8476), got {coordinator!r}")
    if num_processes is not None:
        check_positive_int("--num-processes", num_processes)
    if process_id is not None:
        check_int("--process-id", process_id, minimum=0)
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"--process-id must be in [0, --num-processes = {num_processes}), "
                             f"got {process_id}")


# ----------------------------------------------------------------------------------------------
# overrides


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` → {key: value}: values are JSON (``8``, ``true``, ``null``,
    ``["a", "b"]``, ``{"width": 8}``); a value that is not JSON is taken as a bare string. Dashes
    in keys become underscores."""
    if isinstance(items, (str, bytes)):
        raise ValueError(f"overrides must be a list of KEY=VALUE strings, got {items!r}")
    pairs: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"an override takes KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ValueError(f"an override takes KEY=VALUE with a non-empty KEY, got {item!r}")
        try:
            pairs[key] = json.loads(raw)
        except json.JSONDecodeError:
            pairs[key] = raw
    return pairs


def apply_overrides(config: Any, overrides: Mapping[str, Any] | Sequence[str]) -> Any:
    """A copy of the dataclass ``config`` with fields replaced: a mapping, or ``"key=value"``
    strings (see :func:`parse_overrides`). Each value is checked and converted to its field's
    declared type (lists → tuples, integers → floats); unknown keys and wrong types raise
    ValueError. The config itself is not changed."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"config must be a dataclass instance, got {type(config).__name__}")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config) if f.init}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; settings of {type(config).__name__}: "
                             f"{sorted(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(config, **changes)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A JSON-decoded ``value`` as the field type ``hint``; ValueError saying what it takes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} takes a list, e.g. {name}='[1, 2]'; got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(name, v, inner) for v in value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
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
            raise ValueError(f"{name} takes a JSON object, e.g. {name}='{{\"width\": 8}}'; "
                             f"got {value!r}")
        return value
    return value
