"""The configs of the ``jaxcurv`` commands, built from the setting groups of
:mod:`jaxcurv.workflow.settings`, and the named presets.

:class:`AuditConfig` is everything ``jaxcurv audit`` can be told; :class:`CurvatureConfig` what
``jaxcurv curvature`` can be told. Each setting is declared once in its group; ``validate`` checks
the declared types and bounds, then the rules that tie settings together, and raises
:class:`~jaxcurv.errors.ConfigError` naming the first bad one before any data is read.
A preset (``--preset NAME``, :data:`PRESETS`) is a named set of values that explicit flags
override.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jaxcurv._names import ACCOUNTANTS
from jaxcurv.errors import ConfigError
from jaxcurv.workflow.settings import (
    CURVATURE_METHODS,
    LEARNING_RATES,
    MODEL_DEFAULTS,
    OPTIMIZERS,
    Attacks,
    Augmentation,
    CurvatureProbes,
    DataSource,
    EnsembleSize,
    LabelNoise,
    ModelChoice,
    Privacy,
    Processes,
    RunControl,
    SharpnessAware,
    Subsample,
    Training,
    apply_overrides,
    check_settings,
    parse_overrides,
    redefault,
    setting,
)

__all__ = ["AuditConfig", "CurvatureConfig", "EpsilonConfig", "PRESETS", "OPTIMIZERS", "CURVATURE_METHODS",
           "MODEL_DEFAULTS", "LEARNING_RATES", "apply_overrides", "parse_overrides",
           "with_preset"]

# Named sets of audit settings; explicit flags override them. Each says what it is for.
PRESETS: dict[str, dict[str, Any]] = {
    # Measured on CIFAR-10 (2 shared CPU cores; results/evidence/audit-cifar10-cpu-preset): 1,000
    # training images, members on halves of 500, augmentation off (random crops are never the
    # images the members are scored on). Adam at 2e-3 with batch 32 fitted 2 members fully in 40
    # epochs (30: 0.93), 16 members to 0.977, hence 50. The GELU CNN with a 512-wide dense layer
    # is the CIFAR-10 evidence run's model; 16 members and zero-order curvature on 6 keep the run
    # within 15 minutes of 2 cores and 4 GB.
    "cifar10-cpu": {
        "description": "CIFAR-10 on a CPU in about 15 minutes: 1,000 training images, 16 GELU "
                       "CNN members that fit their halves (Adam 2e-3, batch 32, 50 epochs, no "
                       "augmentation), zero-order curvature on 6 members",
        "dataset": "cifar10", "max_examples": 1000, "model": "cnn",
        "model_kwargs": {"width": 16, "hidden": 512}, "models": 16, "epochs": 50,
        "batch_size": 32, "optimizer": "adam", "learning_rate": 2e-3, "augment": False,
        "zero_order_members": 6},
}


def _check_model_name(model: str) -> None:
    """A model of the zoo (models.MODEL_NAMES) or a ``package.module:factory`` path (its module
    imported and the factory looked up here; it is called once the data is known)."""
    from jaxcurv import models
    from jaxcurv.workflow.model_spec import check_factory_path, is_factory_path

    if is_factory_path(model):
        check_factory_path(model)
    elif model not in models.MODEL_NAMES:
        raise ConfigError(f"--model: unknown model {model!r}; choose one of "
                          f"{', '.join(models.MODEL_NAMES)}, or give package.module:factory")


@dataclasses.dataclass(frozen=True)
class AuditConfig(Processes, RunControl, Privacy, Attacks, CurvatureProbes, SharpnessAware,
                  Training, EnsembleSize, ModelChoice, Augmentation, LabelNoise, Subsample,
                  DataSource):
    """Everything ``jaxcurv audit`` can be told; the defaults run on the embedded digits in a
    couple of minutes on a CPU. Each field's help is its setting's (``jaxcurv audit --help``).
    """

    out: str = setting("results/audit", "output folder")
    clean: bool = setting(False, "remove checkpoint folders under OUT/checkpoints that other "
                          "configurations left")
    preset: str | None = setting(None, "a named set of settings that explicit flags override "
                                 "(see the README)", metavar="NAME", none="none")

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting, before any data is read or trained."""
        check_settings(self)
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(sorted(PRESETS)) or '(none)'}"
                              f"; got {self.preset!r}")
        _check_model_name(self.model)
        _check_ensemble(self.models, self.fraction)
        if self.private and self.optimizer in ("sam", "sam-gnr"):
            raise ConfigError("--dp-epsilon cannot be combined with --optimizer sam or sam-gnr: "
                              "use sgd or adam")
        if self.private and self.model == "resnet18":
            raise ConfigError("DP-SGD needs a model without BatchNorm: use --model resnet18_gn")
        for name in ("gnr_penalty", "gnr_noise"):
            if getattr(self, name) is not None and self.optimizer != "sam-gnr":
                raise ConfigError(f"--{name.replace('_', '-')} applies to --optimizer sam-gnr "
                                  "only")
        _check_processes(self.coordinator, self.num_processes, self.process_id)
        if self.max_examples is not None and self.max_examples < 2 * self.models:
            raise ConfigError(f"--max-examples must be >= 2 × --models = {2 * self.models}, got "
                              f"{self.max_examples}")


def _check_ensemble(models: int, fraction: float) -> None:
    """Leave-one-model-out attacks need, for every example, at least 2 IN and 2 OUT shadows once
    the target is left out: m = round(fraction·K) members hold each example, so m ≥ 3 and
    K − m ≥ 3."""
    if models < 6:
        raise ConfigError("--models must be >= 6: each member in turn is an attack target whose "
                          "shadows need at least two members holding each example in and two "
                          "holding it out")
    holding = int(round(fraction * models))
    if holding < 3 or models - holding < 3:
        raise ConfigError(
            f"--fraction {fraction:g} with --models {models} puts each example in {holding} of "
            f"{models} members; the attacks need at least 3 members holding it and 3 not: use "
            f"--fraction 0.5 or more --models")


def _check_processes(coordinator, num_processes, process_id) -> None:
    """--coordinator HOST:PORT; --process-id in [0, --num-processes); a process id or a count
    above 1 without a coordinator (flag, $JAX_COORDINATOR_ADDRESS or a cluster launcher) is
    refused here rather than by jax.distributed after startup."""
    if coordinator is not None:
        host, _, port = str(coordinator).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator must be HOST:PORT (process 0's address and a free "
                              f"port, e.g. node0:8476), got {coordinator!r}")
    if process_id is not None and num_processes is not None and process_id >= num_processes:
        raise ConfigError(f"--process-id must be in [0, --num-processes = {num_processes}), got "
                          f"{process_id}")
    several = process_id is not None or (num_processes or 1) > 1
    if several and coordinator is None and not _coordinator_from_environment():
        raise ConfigError("--process-id / --num-processes need --coordinator HOST:PORT (or "
                          "$JAX_COORDINATOR_ADDRESS, or a cluster launcher such as SLURM): "
                          "every process must know process 0's address")


def _coordinator_from_environment() -> bool:
    """JAX_COORDINATOR_ADDRESS or a launcher jax.distributed detects (SLURM, Open MPI, TPU)."""
    names = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri",
             "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
    return any(os.environ.get(name) for name in names)


@dataclasses.dataclass(frozen=True)
class CurvatureConfig(RunControl, CurvatureProbes, Training, ModelChoice, DataSource):
    """``jaxcurv curvature``: one model trained on ``dataset``, then tr(H²), tr(H) and their
    standard errors of every training example written to the CSV ``out``."""

    model: str = redefault(ModelChoice, "model", "cnn")
    epochs: int = redefault(Training, "epochs", 12)
    optimizer: str = redefault(Training, "optimizer", "sgd")
    method: str = setting("hutchinson", "hutchinson (exact Hessian-vector products, random "
                          "probes), exact (the full input Hessian; small inputs only) or "
                          "finite_difference (the papers' estimator)", choices=CURVATURE_METHODS)
    out: str = setting("results/curvature.csv", "CSV file to write", metavar="FILE")

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting, including an ``out`` that cannot be
        written (a folder, or a parent that cannot be created), before anything is trained."""
        check_settings(self)
        _check_model_name(self.model)
        from jaxcurv.report.files import check_writable_file

        check_writable_file("--out", self.out)


def with_preset(config_type: type, overrides: Mapping[str, Any] | None = None) -> Any:
    """``config_type()`` with the preset named in ``overrides["preset"]`` (if any) applied, then
    the other ``overrides``: how the command line and ``jaxcurv.audit`` build a config."""
    overrides = dict(overrides or {})
    base = config_type()
    name = overrides.get("preset")
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(sorted(PRESETS)) or '(none)'}"
                              f"; got {name!r}")
        base = apply_overrides(base, {k: v for k, v in PRESETS[name].items()
                                      if k != "description"})
    return apply_overrides(base, overrides)


@dataclasses.dataclass(frozen=True)
class EpsilonConfig:
    """``jaxcurv epsilon``: ε of Poisson-subsampled Gaussian DP-SGD, or σ for a target ε."""

    noise_multiplier: float | None = setting(
        None, "noise std / clip norm", metavar="SIGMA", low=0.0, open_low=True, high=1e6,
        none="none; give this or --target-epsilon")
    target_epsilon: float | None = setting(
        None, "calibrate sigma to spend this epsilon instead", metavar="EPS", low=0.0,
        open_low=True, high=1e6, none="none")
    sampling_rate: float = setting(
        0.01, "Poisson sampling rate q = expected batch size / N", metavar="Q", low=0.0,
        open_low=True, high=1.0, required=True)
    steps: int = setting(1000, "number of DP-SGD steps", low=1, high=10**9, required=True)
    delta: float = setting(1e-5, "delta", low=0.0, open_low=True, high=1.0, open_high=True)
    accountant: str = setting(
        "rdp", "rdp: Renyi DP, improved conversion; pld: privacy loss distributions (tightest, "
        "slower); rdp_classic: TF-Privacy's original orders and conversion",
        choices=ACCOUNTANTS)
    json: bool = setting(False, "print the result as JSON instead of text")

    def validate(self) -> None:
        """ConfigError naming the first bad setting; exactly one of σ and the target ε."""
        check_settings(self)
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("give exactly one of --noise-multiplier and --target-epsilon")
