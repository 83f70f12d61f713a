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

import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxcurv import data, ensemble, models
from jaxcurv.curvature import make_input_curvature, make_zero_order_curvature
from jaxcurv.workflow import describe_device, time_call

if __package__:  # python -m bench.estimators
    from bench import _common as C
else:  # python bench/estimators.py: this folder is sys.path[0]
    import _common as C

TABLES = ("precision", "activations", "timing")
ACTIVATION_MODELS = (("cnn", {"activation": "gelu"}), ("cnn", {"activation": "relu"}),
                     ("resnet18", {"width": 8, "activation": "relu"}),
                     ("resnet18", {"width": 8, "activation": "gelu"}))


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


def precision(args, train, key) -> list[dict]:
    """Zero-order "central" vs Hutchinson (float64, same probes) per h and dtype."""
    model, variables = _trained_cnn(train, epochs=args.epochs, key=jax.random.fold_in(key, 0))
    x, y = train.images[: args.examples], train.labels[: args.examples]
    loss_fn = models.make_loss_fn(model)
    probe_key = jax.random.fold_in(key, 1)
    exact = make_input_curvature(loss_fn, num_probes=args.num_probes,
                                 compute_dtype=jnp.float64)(variables, x, y, probe_key).trace
    rows = []
    for h in args.steps:
        row = {"h": h}
        for name, dtype in (("float32", None), ("float64", jnp.float64)):
            zero = make_zero_order_curvature(loss_fn, num_probes=args.num_probes, h=h,
                                             method="central", compute_dtype=dtype)
            estimate = zero(variables, x, y, probe_key)
            row[f"{name}_error"] = _error(estimate, exact)
            row[f"{name}_spearman"] = _rho(estimate, exact)
        rows.append(row)
    C.print_table(f"central zero-order vs exact-HVP Hutchinson, same probes (GELU CNN trained "
                  f"{args.epochs} epochs on digits, {len(x)} examples, {args.num_probes} probes; "
                  "error = median |Δ| / mean |tr H|)", rows)
    return rows


def activations(args, train, key) -> list[dict]:
    """Spearman with the exact tr H and errors vs Hutchinson, untrained models, float64."""
    x, y = train.images[: args.activation_examples], train.labels[: args.activation_examples]
    probe_key = jax.random.fold_in(key, 1)
    rows = []
    for name, kwargs in ACTIVATION_MODELS:
        model = models.get_model(name, train.num_classes, **kwargs)
        variables = models.init_variables(model, jax.random.fold_in(key, 2), x.shape[1:])
        loss_fn = models.make_loss_fn(model)

        def estimate(method, **extra):
            return make_input_curvature(loss_fn, num_probes=args.num_probes, method=method,
                                        compute_dtype=jnp.float64, **extra)(
                variables, x, y, probe_key).trace

        exact, hutchinson = estimate("exact"), estimate("hutchinson")
        fd = estimate("finite_difference", h=1e-3)
        zero = make_zero_order_curvature(loss_fn, num_probes=args.num_probes, h=1e-3,
                                         method="central", compute_dtype=jnp.float64)(
            variables, x, y, probe_key)
        rows.append({"model": f"{name}, {kwargs}", "hutchinson_rho": _rho(hutchinson, exact),
                     "fd_rho": _rho(fd, exact), "fd_error": _error(fd, hutchinson),
                     "zero_order_rho": _rho(zero, exact),
                     "zero_order_error": _error(zero, hutchinson)})
    C.print_table(f"estimators vs exact tr H, untrained models, {len(x)} digits, float64, "
                  f"{args.num_probes} probes, h = 1e-3 (error vs Hutchinson, same probes)", rows)
    return rows


def timing(args, train, key) -> list[dict]:
    """Seconds per pass over the training split of each held estimator."""
    model = models.get_model("cnn", train.num_classes, activation="gelu")
    variables = models.init_variables(model, jax.random.fold_in(key, 0), train.image_shape)
    loss_fn = models.make_loss_fn(model)
    x, y = train.images[: args.timing_examples], train.labels[: args.timing_examples]
    fns = {"hutchinson, probes vmapped": make_input_curvature(
               loss_fn, num_probes=args.num_probes, probe_batch=args.num_probes),
           "hutchinson, probe_batch=1": make_input_curvature(
               loss_fn, num_probes=args.num_probes, probe_batch=1)}
    for method in ("mixed", "central"):
        for name, dtype in (("float32", None), ("float64", jnp.float64)):
            fns[f"zero-order {method}, {name}"] = make_zero_order_curvature(
                loss_fn, num_probes=args.num_probes, method=method, compute_dtype=dtype)
    rows = []
    for label, fn in fns.items():
        t = time_call(lambda fn=fn: fn(variables, x, y, jax.random.fold_in(key, 1)),
                      repeats=args.repeats)
        rows.append({"estimator": label, "examples": len(x), "median_s": t.median,
                     "compile+first_s": t.first, "examples_per_s": len(x) / t.median,
                     "load": t.load})
    C.print_table(f"curvature estimators on {len(x)} digits, GELU CNN, {args.num_probes} probes "
                  f"— {describe_device()}", rows)
    return rows


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--tables", default=",".join(TABLES), help=f"comma list of {TABLES}")
    p.add_argument("--num-probes", type=int, default=10)
    p.add_argument("--steps", default="1e-1,1e-2,1e-3,1e-4", help="h values of the precision table")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (quick 3, full 10)")
    p.add_argument("--examples", type=int, default=None, help="precision examples (100 / 300)")
    p.add_argument("--activation-examples", type=int, default=None, help="(16 / 64)")
    p.add_argument("--timing-examples", type=int, default=None, help="(300 / all 1,438)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    for t in args.tables:
        if t not in TABLES:
            p.error(f"unknown table {t!r}; choose from {TABLES}")
    args.steps = [float(v) for v in args.steps.split(",")]
    args.epochs = args.epochs or (3 if args.quick else 10)
    args.examples = args.examples or (100 if args.quick else 300)
    args.activation_examples = args.activation_examples or (16 if args.quick else 64)
    args.timing_examples = args.timing_examples or (300 if args.quick else 1438)
    args.repeats = args.repeats or 3
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    train = data.load("digits", split="train")
    key = jax.random.PRNGKey(args.seed)
    start = time.perf_counter()
    result = {"config": vars(args)}
    run = {"precision": precision, "activations": activations, "timing": timing}
    for table in args.tables:
        result[table] = run[table](args, train, jax.random.fold_in(key, TABLES.index(table)))
    result["wall_s"] = time.perf_counter() - start
    C.write_json("estimators" + (f"_{args.tag}" if args.tag else ("_quick" if args.quick else "")),
                 result, out=args.out)


if __name__ == "__main__":
    main()
