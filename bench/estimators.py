"""Benchmark: precision and speed of the curvature estimators against exact Hessian-vector products.

Three tables:

- ``precision``: "central" zero-order curvature (ℓ(x+hv) − 2ℓ(x) + ℓ(x−hv))/h² against the
  exact-HVP Hutchinson estimate vᵀHv *with the same probes* (same key → same Rademacher v), on a
  GELU CNN trained on digits; per step h and dtype: median |zero-order − Hutchinson| / mean |tr H|
  and the Spearman correlation with Hutchinson. Shows the float32 cancellation at h = 1e-3.
- ``activations``: untrained models on digits in float64 (cnn and resnet18 width 8, GELU and
  ReLU): Spearman with the exact tr H (full Hessian) of Hutchinson, finite-difference and central
  zero-order estimates, and the error of the last two against Hutchinson with the same probes.
  On ReLU / max-pool networks finite differences and zero-order estimates measure kinks.
- ``timing``: seconds per pass over the digits training split of the held estimators
  (``make_input_curvature`` with all probes vmapped vs ``probe_batch=1``;
  ``make_zero_order_curvature`` "mixed" and "central" in float32 and float64), compile timed
  separately.

    python -m bench.estimators --quick      # CPU, about a minute
    python -m bench.estimators              # the full sizes (CPU, minutes)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if not __package__:  # python bench/estimators.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from jaxcurv import data, ensemble, models  # noqa: E402
from jaxcurv.curvature import make_input_curvature, make_zero_order_curvature  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.workflow import Timer, describe_device, time_call  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import CurvatureProbes, redefault, setting  # noqa: E402

TABLES = ("precision", "activations", "timing")
ACTIVATION_MODELS = (("cnn", {"activation": "gelu"}), ("cnn", {"activation": "relu"}),
                     ("resnet18", {"width": 8, "activation": "relu"}),
                     ("resnet18", {"width": 8, "activation": "gelu"}))


@dataclasses.dataclass(frozen=True)
class EstimatorsBench(B.Repeats, B.BenchConfig):
    """Settings of ``python -m bench.estimators``."""

    repeats: int | None = B.remode(B.Repeats, "repeats", 3, 3)
    tables: tuple[str, ...] = setting(TABLES, "which tables: " + ", ".join(TABLES))
    num_probes: int = redefault(CurvatureProbes, "num_probes", 10)
    steps: tuple[float, ...] = setting((1e-1, 1e-2, 1e-3, 1e-4), "zero-order steps h of the "
                                       "precision table", metavar="H")
    epochs: int | None = B.per_mode(10, 3, "precision: training epochs of the GELU CNN", low=1,
                                    high=100_000)
    examples: int | None = B.per_mode(300, 100, "precision: digits evaluated", metavar="N",
                                      low=2, high=1438)
    activation_examples: int | None = B.per_mode(64, 16, "activations: digits evaluated (the "
                                                 "exact tr H costs a full Hessian each)",
                                                 metavar="N", low=2, high=1438)
    timing_examples: int | None = B.per_mode(1438, 300, "timing: digits per pass", metavar="N",
                                             low=1, high=1438)

    def check(self) -> None:
        B.check_choices("--tables", self.tables, TABLES)
        if not self.steps or min(self.steps) <= 0:
            raise ConfigError(f"--steps takes positive step sizes h, got {list(self.steps)}")


def _rho(a, b) -> float:
    return float(stats.spearmanr(np.asarray(a), np.asarray(b)).statistic)


def _error(estimate, reference) -> float:
    """median |estimate − reference| / mean |reference|."""
    estimate, reference = np.asarray(estimate, float), np.asarray(reference, float)
    return float(np.median(np.abs(estimate - reference)) / np.mean(np.abs(reference)))


def _trained_cnn(train, *, epochs: int, key):
    model = models.get_model("cnn", train.num_classes, activation="gelu")
    variables, _ = ensemble.fit_one(model, train, key, epochs=epochs, batch_size=64)
    return model, variables


def precision(config, train, key) -> list[dict]:
    """Zero-order "central" vs Hutchinson (float64, same probes) per h and dtype."""
    model, variables = _trained_cnn(train, epochs=config.epochs, key=jax.random.fold_in(key, 0))
    x, y = train.images[: config.examples], train.labels[: config.examples]
    loss_fn = models.make_loss_fn(model)
    probe_key = jax.random.fold_in(key, 1)
    exact = make_input_curvature(loss_fn, num_probes=config.num_probes,
                                 compute_dtype=jnp.float64)(variables, x, y, probe_key).trace
    rows = []
    for h in config.steps:
        row = {"h": h}
        for name, dtype in (("float32", None), ("float64", jnp.float64)):
            zero = make_zero_order_curvature(loss_fn, num_probes=config.num_probes, h=h,
                                             method="central", compute_dtype=dtype)
            estimate = zero(variables, x, y, probe_key)
            row[f"{name}_error"] = _error(estimate, exact)
            row[f"{name}_spearman"] = _rho(estimate, exact)
        rows.append(row)
    B.print_table(f"central zero-order vs exact-HVP Hutchinson, same probes (GELU CNN trained "
                  f"{config.epochs} epochs on digits, {len(x)} examples, {config.num_probes} "
                  "probes; error = median |Δ| / mean |tr H|)", rows)
    return rows


def activations(config, train, key) -> list[dict]:
    """Spearman with the exact tr H and errors vs Hutchinson, untrained models, float64."""
    x, y = train.images[: config.activation_examples], train.labels[: config.activation_examples]
    probe_key = jax.random.fold_in(key, 1)
    rows = []
    for name, kwargs in ACTIVATION_MODELS:
        model = models.get_model(name, train.num_classes, **kwargs)
        variables = models.init_variables(model, jax.random.fold_in(key, 2), x.shape[1:])
        loss_fn = models.make_loss_fn(model)

        def estimate(method, **extra):
            return make_input_curvature(loss_fn, num_probes=config.num_probes, method=method,
                                        compute_dtype=jnp.float64, **extra)(
                variables, x, y, probe_key).trace

        exact, hutchinson = estimate("exact"), estimate("hutchinson")
        fd = estimate("finite_difference", h=1e-3)
        zero = make_zero_order_curvature(loss_fn, num_probes=config.num_probes, h=1e-3,
                                         method="central", compute_dtype=jnp.float64)(
            variables, x, y, probe_key)
        rows.append({"model": f"{name}, {kwargs}", "hutchinson_rho": _rho(hutchinson, exact),
                     "fd_rho": _rho(fd, exact), "fd_error": _error(fd, hutchinson),
                     "zero_order_rho": _rho(zero, exact),
                     "zero_order_error": _error(zero, hutchinson)})
    B.print_table(f"estimators vs exact tr H, untrained models, {len(x)} digits, float64, "
                  f"{config.num_probes} probes, h = 1e-3 (error vs Hutchinson, same probes)", rows)
    return rows


def timing(config, train, key) -> list[dict]:
    """Seconds per pass over the training split of each held estimator."""
    model = models.get_model("cnn", train.num_classes, activation="gelu")
    variables = models.init_variables(model, jax.random.fold_in(key, 0), train.image_shape)
    loss_fn = models.make_loss_fn(model)
    x, y = train.images[: config.timing_examples], train.labels[: config.timing_examples]
    fns = {"hutchinson, probes vmapped": make_input_curvature(
               loss_fn, num_probes=config.num_probes, probe_batch=config.num_probes),
           "hutchinson, probe_batch=1": make_input_curvature(
               loss_fn, num_probes=config.num_probes, probe_batch=1)}
    for method in ("mixed", "central"):
        for name, dtype in (("float32", None), ("float64", jnp.float64)):
            fns[f"zero-order {method}, {name}"] = make_zero_order_curvature(
                loss_fn, num_probes=config.num_probes, method=method, compute_dtype=dtype)
    rows = []
    for label, fn in fns.items():
        t = time_call(lambda fn=fn: fn(variables, x, y, jax.random.fold_in(key, 1)),
                      repeats=config.repeats)
        rows.append({"estimator": label, "examples": len(x), "median_s": t.median,
                     "compile+first_s": t.first, "examples_per_s": len(x) / t.median,
                     "load": t.load})
    B.print_table(f"curvature estimators on {len(x)} digits, GELU CNN, {config.num_probes} probes "
                  f"— {describe_device()}", rows)
    return rows


def main(config: EstimatorsBench) -> None:
    train = data.load("digits", split="train")
    key = jax.random.PRNGKey(config.seed)
    timer = Timer()
    result = {}
    run = {"precision": precision, "activations": activations, "timing": timing}
    for table in config.tables:
        result[table] = run[table](config, train, jax.random.fold_in(key, TABLES.index(table)))
    result["wall_s"] = timer.elapsed()
    B.write_results(config, "estimators", result)


if __name__ == "__main__":
    B.cli(EstimatorsBench, main, name="estimators", description=__doc__)
