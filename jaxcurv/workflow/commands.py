"""The small jobs of the ``jaxcurv`` command besides the audit: per-example curvature of one
trained model (``jaxcurv curvature``) and DP-SGD privacy accounting (``jaxcurv epsilon``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jaxcurv.errors import ConfigError
from jaxcurv.workflow.config import CurvatureConfig

__all__ = ["run_curvature", "privacy_accounting", "format_privacy_accounting"]


def run_curvature(config: CurvatureConfig) -> Path:
    """Train one model and write index, label, ``curvature`` (tr(H²)), ``curvature_stderr``,
    ``curvature_trace`` (tr(H)) and ``curvature_trace_stderr`` per training example to
    ``config.out``; returns the path. The output path is checked before anything is trained."""
    import jax
    import numpy as np

    from jaxcurv import curvature, data, ensemble, models, report
    from jaxcurv.workflow.model_spec import build_model
    from jaxcurv.workflow.training import train_ensemble

    config.validate()
    train = data.load(config.dataset, split="train", data_dir=config.data_dir,
                      progress=config.progress)
    model = build_model(config.model, train.num_classes, config.model_settings)
    key = jax.random.PRNGKey(config.seed)
    ens = train_ensemble(model, train, np.ones((1, len(train)), bool), jax.random.fold_in(key, 0),
                         ensemble.TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                                              optimizer=config.optimizer,
                                              learning_rate=config.peak_learning_rate),
                         progress=config.progress)
    variables = ens.member(0)
    c = curvature.input_curvature(models.make_loss_fn(model), variables, train.images,
                                  train.labels, jax.random.fold_in(key, 1),
                                  num_probes=config.num_probes, method=config.method, h=config.h)
    return report.write_csv(config.out, {
        "index": np.arange(len(train)), "label": train.labels, "curvature": c.trace_sq,
        "curvature_stderr": c.trace_sq_stderr, "curvature_trace": c.trace,
        "curvature_trace_stderr": c.trace_stderr})


def privacy_accounting(*, sampling_rate: float, steps: int, delta: float,
                       noise_multiplier: float | None = None,
                       target_epsilon: float | None = None,
                       accountant: str = "rdp") -> dict[str, Any]:
    """Poisson-subsampled Gaussian DP-SGD: ε of σ (``noise_multiplier``), or the σ that spends
    ``target_epsilon``; give exactly one. Returns noise_multiplier, sampling_rate, steps, delta,
    accountant, epsilon, best_order (None for PLD), the RDP orders evaluated by numerical
    integration, those dp_accounting could not evaluate and those excluded (lists), and
    target_epsilon when calibrating (``privacy.epsilon_report``)."""
    from jaxcurv.privacy import calibrate_noise_multiplier, epsilon_report

    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError("give exactly one of --noise-multiplier and --target-epsilon")
    sigma = noise_multiplier
    if target_epsilon is not None:
        sigma = calibrate_noise_multiplier(target_epsilon, sampling_rate, steps, delta,
                                           accountant=accountant)
    report = epsilon_report(sigma, sampling_rate, steps, delta, accountant=accountant)
    result: dict[str, Any] = {
        "noise_multiplier": float(sigma), "sampling_rate": float(sampling_rate),
        "steps": int(steps), "delta": report.delta, "accountant": report.accountant,
        "epsilon": report.epsilon, "best_order": report.best_order,
        "orders_evaluated_numerically": list(report.orders_evaluated_numerically),
        "orders_not_converged": list(report.orders_not_converged),
        "orders_dropped": list(report.orders_dropped),
    }
    if target_epsilon is not None:
        result["target_epsilon"] = float(target_epsilon)
    return result


_ACCOUNTANT_TEXT = {
    "rdp": "rdp (Renyi DP; fractional orders by numerical integration)",
    "rdp_classic": "rdp_classic (Renyi DP; TF-Privacy's original orders and conversion)",
    "pld": "pld (privacy loss distributions)",
}


def _orders_text(orders: list[float]) -> str:
    """'none', the orders themselves (up to 12), or their count and range."""
    if not orders:
        return "none"
    if len(orders) <= 12:
        return ", ".join(f"{a:g}" for a in orders)
    return f"{len(orders)} orders from {min(orders):g} to {max(orders):g}"


def format_privacy_accounting(result: dict[str, Any]) -> str:
    """The readable block ``jaxcurv epsilon`` prints for a ``privacy_accounting`` result; its
    last line is the answer (ε, or σ when calibrating)."""
    calibrated = "target_epsilon" in result
    head = (f"jaxcurv epsilon: DP-SGD with Poisson sampling rate q = {result['sampling_rate']:.6g}"
            f", {result['steps']} steps")
    rows = [("accountant", _ACCOUNTANT_TEXT.get(result["accountant"], result["accountant"])),
            ("delta", f"{result['delta']:.6g}")]
    if result["best_order"] is not None:
        rows += [
            ("best RDP order", f"{result['best_order']:g}"),
            ("orders integrated numerically", _orders_text(result["orders_evaluated_numerically"])),
            ("orders dp_accounting could not evaluate",
             _orders_text(result["orders_not_converged"])),
            ("orders excluded (no finite RDP)", _orders_text(result["orders_dropped"])),
        ]
    eps = f"{result['epsilon']:.6g}" if math.isfinite(result["epsilon"]) else "inf"
    if calibrated:
        rows += [("target epsilon", f"{result['target_epsilon']:.6g}"), ("epsilon", eps),
                 ("noise multiplier", f"{result['noise_multiplier']:.6g}")]
    else:
        rows += [("noise multiplier", f"{result['noise_multiplier']:.6g}"), ("epsilon", eps)]
    width = max(len(name) for name, _ in rows)
    return "\n".join([head] + [f"  {name:<{width}}  {value}" for name, value in rows])
