"""The small jobs of the ``jaxcurv`` command besides the audit: per-example curvature of one
trained model (``jaxcurv curvature``) and DP-SGD privacy accounting (``jaxcurv epsilon``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxcurv._validate import check_int, check_positive_int

__all__ = ["CurvatureConfig", "CURVATURE_METHODS", "run_curvature", "privacy_accounting"]

CURVATURE_METHODS = ("hutchinson", "exact", "finite_difference")


@dataclasses.dataclass(frozen=True)
class CurvatureConfig:
    """One model trained on ``dataset``, then tr(H), tr(H²) and their standard errors of every
    training example written to the CSV ``out``."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "cnn"
    epochs: int = 12
    batch_size: int = 64
    num_probes: int = 10
    method: str = "hutchinson"
    seed: int = 0
    out: str = "results/curvature.csv"
    progress: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        from jaxcurv import models

        if self.model not in models.MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {models.MODEL_NAMES}")
        for name in ("epochs", "batch_size", "num_probes"):
            check_positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.method not in CURVATURE_METHODS:
            raise ValueError(f"--method must be one of {CURVATURE_METHODS}, got {self.method!r}")
        check_int("--seed", self.seed)


def run_curvature(config: CurvatureConfig) -> Path:
    """Train one model and write index, label, curvature (tr(H)), curvature_stderr, curvature_sq
    (tr(H²)) and curvature_sq_stderr per training example to ``config.out``; returns the path."""
    import jax
    import numpy as np

    from jaxcurv import curvature, data, ensemble, models, report

    config.validate()
    train = data.load(config.dataset, split="train", data_dir=config.data_dir,
                      progress=config.progress)
    model = models.get_model(config.model, train.num_classes)
    key = jax.random.PRNGKey(config.seed)
    variables, _ = ensemble.fit_one(model, train, jax.random.fold_in(key, 0),
                                    epochs=config.epochs, batch_size=config.batch_size,
                                    progress=config.progress)
    c = curvature.input_curvature(models.make_loss_fn(model), variables, train.images,
                                  train.labels, jax.random.fold_in(key, 1),
                                  num_probes=config.num_probes, method=config.method)
    return report.write_csv(config.out, {
        "index": np.arange(len(train)), "label": train.labels, "curvature": c.trace,
        "curvature_stderr": c.trace_stderr, "curvature_sq": c.trace_sq,
        "curvature_sq_stderr": c.trace_sq_stderr})


def privacy_accounting(*, sampling_rate: float, steps: int, delta: float,
                       noise_multiplier: float | None = None,
                       target_epsilon: float | None = None,
                       accountant: str = "rdp") -> dict[str, float]:
    """Poisson-subsampled Gaussian DP-SGD: ε of σ (``noise_multiplier``), or the σ that spends
    ``target_epsilon``; give exactly one. Returns {"epsilon": …} or {"noise_multiplier": …}."""
    from jaxcurv.privacy import calibrate_noise_multiplier, epsilon

    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of --noise-multiplier and --target-epsilon")
    if target_epsilon is not None:
        return {"noise_multiplier": calibrate_noise_multiplier(
            target_epsilon, sampling_rate, steps, delta, accountant=accountant)}
    return {"epsilon": epsilon(noise_multiplier, sampling_rate, steps, delta,
                               accountant=accountant)}
