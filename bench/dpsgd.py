"""Benchmark (issue 5): one DP-SGD step vs one non-private step, same model and batch, same process.

Both steps come from ``jaxcurv.training.make_train_step`` (jitted): the private one with
``dp=DPStep(l2_clip, noise_multiplier, expected_batch_size)`` (per-example gradients by
vmap(grad), clipping, masked sum, Gaussian noise: jaxcurv.privacy.dpsgd.dp_gradient), the other
plain minibatch SGD. Timing: compile excluded, median of repeats, block_until_ready. Target: DP
step ≤ 2× the non-private step for the CNN on CPU (batch 256) and for resnet18_gn (batch 256) on
one H100. Each DP step is also timed with its per-example gradients one row at a time
(``dp_microbatch_size=1``, ``ratio_whole_over_rows``): the evidence for ensemble.train's CPU
default (rows for dense-only models, the whole batch for conv nets).

``--train-eps8`` (full mode, GPU): ResNet18-GN on CIFAR-10 at ε = 8, δ = 1e-5 through
``ensemble.train(..., dp=DPConfig(target_epsilon=8))`` — test accuracy and wall time (target
≥ 65 %). Only that run needs dp_accounting (σ is calibrated); the step timing imports no
accounting. CIFAR-10 from ``--data-dir`` or ``$JAXCURV_DATA_DIR``.

    python -m bench.dpsgd --quick          # CPU: cnn (32×32×3, 8×8×1), the audit's mlp; batch 256
    python -m bench.dpsgd                  # GPU: resnet18_gn and cnn, batch 256
    python -m bench.dpsgd --train-eps8     # GPU: + the ε = 8 CIFAR-10 training run

``--lr-sweep`` (CPU, minutes; needs dp_accounting): mean test accuracy of DP-SGD members on
digits (GELU CNN on 50 % subsets, as in the audit) for each learning rate × ε — the evidence for
the audit's peak rate of 0.05 under DP.

    python -m bench.dpsgd --no-steps --lr-sweep
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcurv import models
from jaxcurv.optim import OptimizerConfig, make_optimizer
from jaxcurv.training import DPStep, init_state, make_train_step
from jaxcurv.workflow import describe_device, load_average, time_interleaved, train_ensemble
from jaxcurv.workflow.config import MODEL_DEFAULTS

if __package__:  # python -m bench.dpsgd
    from bench import _common as C
else:  # python bench/dpsgd.py: this folder is sys.path[0]
    import _common as C

GPU_TARGET = {"ratio": 2.0, "eps8_test_accuracy": 0.65}


def _model(name: str, width: int | None):
    if name == "resnet18_gn":
        width = width or 64
        return models.get_model("resnet18_gn", 10, width=width, num_groups=min(32, width))
    if name == "cnn":
        return models.get_model("cnn", 10, **({"width": width} if width else {}))
    if name == "mlp":  # the default audit's members (hidden 512, depth 2)
        return models.get_model("mlp", 10, **{**MODEL_DEFAULTS["mlp"],
                                              **({"hidden": width} if width else {})})
    raise ValueError(name)


def measure_step(name: str, shape: tuple[int, int, int], batch: int, *, width, repeats: int,
                 compute_dtype=None, seed: int = 0, rows: bool | None = None) -> dict:
    """Median seconds of one jitted non-private step and of the DP step with its per-example
    gradients formed for the whole batch at once and one row at a time (``dp_microbatch_size=1``,
    the CPU default for dense models; ``rows`` None: on a CPU only), on the same batch,
    interleaved."""
    model = _model(name, width)
    config = OptimizerConfig(name="sgd", learning_rate=0.1)
    tx = make_optimizer(config, 1000)
    state = init_state(model, tx, jax.random.PRNGKey(seed), shape)
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.random((batch, *shape), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    weights = jnp.ones((batch,), jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    dp = DPStep(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=float(batch))
    steps = {
        "non-private": jax.jit(make_train_step(model, tx, config=config,
                                               compute_dtype=compute_dtype)),
        "DP-SGD": jax.jit(make_train_step(model, tx, config=config, dp=dp,
                                          compute_dtype=compute_dtype)),
    }
    if rows is None:
        rows = jax.default_backend() == "cpu"
    if rows:
        steps["DP-SGD, rows"] = jax.jit(make_train_step(model, tx, config=config, dp=dp,
                                                        compute_dtype=compute_dtype,
                                                        dp_microbatch_size=1))
    timings = time_interleaved(
        {label: (lambda step=step: step(state, images, labels, weights, key))
         for label, step in steps.items()}, repeats=repeats)
    by_row = timings["DP-SGD, rows"].median if rows else None
    row = {"model": name + (f" w={width}" if width else ""), "input": "×".join(map(str, shape)),
           "batch": batch, "dtype": "bf16" if compute_dtype is not None else "fp32",
           "params": models.count_params({"params": state.params}),
           "nonprivate_ms": 1e3 * timings["non-private"].median,
           "dp_ms": 1e3 * timings["DP-SGD"].median,
           "ratio_dp_over_nonprivate": timings["DP-SGD"].median / timings["non-private"].median,
           "dp_rows_ms": 1e3 * by_row if rows else float("nan"),
           "ratio_whole_over_rows": timings["DP-SGD"].median / by_row if rows else float("nan"),
           "dp_compile_s": timings["DP-SGD"].first, "load": timings["DP-SGD"].load}
    print(row, flush=True)
    return row


def train_eps8(args) -> dict:
    """ResNet18-GN on CIFAR-10 at ε = 8, δ = 1e-5: test accuracy and wall time."""
    from jaxcurv import ensemble
    from jaxcurv.privacy import DPConfig

    train_set, test_set = C.cifar10(args.data_dir, required="--train-eps8")
    if args.limit_train:  # smoke test of the code path (CPU)
        train_set = C.random_subset(train_set, args.limit_train, args.seed)
        test_set = C.random_subset(test_set, args.limit_train, args.seed + 1)
    model = _model("resnet18_gn", args.eps8_width)
    dp = DPConfig(target_epsilon=8.0, delta=1e-5, l2_clip=1.0)
    # De et al. (2022)-style plain SGD (their WRN-16-4 recipe: lr 4, no momentum, batch 4096);
    # no augmentation by default (without augmentation multiplicity it costs accuracy under DP)
    optimizer = OptimizerConfig(name="sgd", learning_rate=args.eps8_lr,
                                momentum=args.eps8_momentum, nesterov=args.eps8_momentum > 0,
                                weight_decay=0.0, schedule="cosine", warmup_fraction=0.05)
    masks = np.ones((1, len(train_set)), bool)
    start = time.perf_counter()
    ens = train_ensemble(model, train_set, masks, jax.random.PRNGKey(args.seed),
                         epochs=args.eps8_epochs, batch_size=args.eps8_batch,
                         optimizer=optimizer,
                         augment={"padding": 4, "flip": True} if args.eps8_augment else False,
                         dp=dp,
                         compute_dtype=jnp.bfloat16 if args.eps8_bf16 else None,
                         members_per_chunk=1, scan_steps=True, progress=True)
    wall = time.perf_counter() - start
    acc = float(ensemble.accuracy(ens, test_set)[0])
    row = {"model": f"resnet18_gn w={args.eps8_width}", "epochs": args.eps8_epochs,
           "lr": args.eps8_lr, "momentum": args.eps8_momentum, "augment": args.eps8_augment,
           "expected_batch": args.eps8_batch, "epsilon": ens.privacy["epsilon_max"],
           "noise_multiplier": ens.privacy["noise_multiplier"], "delta": 1e-5,
           "test_accuracy": acc, "wall_s": wall, "target_met": acc >= GPU_TARGET["eps8_test_accuracy"],
           "load": load_average()}
    C.print_table("DP-SGD ResNet18-GN on CIFAR-10 at ε = 8 — " + describe_device(), [row])
    return {"row": row, "privacy": ens.privacy, "optimizer": str(optimizer)}


def lr_sweep(args) -> list[dict]:
    """DP-SGD mean test accuracy on digits per (ε, learning rate); σ calibrated per ε."""
    from jaxcurv import data, ensemble
    from jaxcurv.privacy import DPConfig

    train_set, test_set = data.train_test("digits")
    model = models.get_model("cnn", train_set.num_classes)
    masks = data.subset_masks(len(train_set), args.sweep_members, fraction=0.5, seed=args.seed)
    rows = []
    for eps in args.sweep_epsilons:
        for lr in args.sweep_lrs:
            start = time.perf_counter()
            ens = ensemble.train(model, train_set, masks, jax.random.PRNGKey(args.seed),
                                 epochs=args.sweep_epochs, batch_size=64,
                                 optimizer=OptimizerConfig(name="sgd", learning_rate=lr),
                                 dp=DPConfig(target_epsilon=eps, delta=1e-5, l2_clip=1.0),
                                 test=test_set)
            acc = ens.history["test_accuracy"][-1]
            rows.append({"epsilon": eps, "learning_rate": lr, "members": args.sweep_members,
                         "epochs": args.sweep_epochs, "test_accuracy_mean": float(acc.mean()),
                         "test_accuracy_min": float(acc.min()),
                         "noise_multiplier": float(ens.privacy["noise_multiplier"]),
                         "wall_s": time.perf_counter() - start})
    C.print_table("DP-SGD on digits (GELU CNN, 50 % subsets, batch 64): test accuracy by ε and "
                  "peak learning rate", rows)
    return rows


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--models", default=None,
                   help="comma list of model[:HxWxC[:width]] (quick: cnn:32x32x3,cnn:8x8x1,"
                        "mlp:8x8x1; "
                        "full: resnet18_gn:32x32x3,cnn:32x32x3)")
    p.add_argument("--bf16", action="store_true", help="also time both steps with bf16 compute")
    p.add_argument("--train-eps8", action="store_true", help="ResNet18-GN CIFAR-10 at ε = 8")
    p.add_argument("--no-steps", action="store_true", help="skip the step timing")
    p.add_argument("--eps8-epochs", type=int, default=30)
    p.add_argument("--eps8-batch", type=int, default=1024, help="expected (Poisson) batch size")
    p.add_argument("--eps8-lr", type=float, default=2.0)
    p.add_argument("--eps8-momentum", type=float, default=0.0)
    p.add_argument("--eps8-augment", action="store_true", help="crop + flip augmentation")
    p.add_argument("--eps8-width", type=int, default=32)
    p.add_argument("--eps8-bf16", action="store_true")
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--lr-sweep", action="store_true",
                   help="DP test accuracy on digits by learning rate and ε")
    p.add_argument("--sweep-epsilons", default="1,8")
    p.add_argument("--sweep-lrs", default="0.05,0.2,0.5")
    p.add_argument("--sweep-members", type=int, default=2)
    p.add_argument("--sweep-epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 10)
    args.sweep_epsilons = [float(v) for v in args.sweep_epsilons.split(",")]
    args.sweep_lrs = [float(v) for v in args.sweep_lrs.split(",")]
    args.models = args.models or ("cnn:32x32x3,cnn:8x8x1,mlp:8x8x1" if args.quick
                                  else "resnet18_gn:32x32x3,cnn:32x32x3")
    return args


def _parse_model(spec: str):
    parts = spec.split(":")
    name = parts[0]
    shape = tuple(int(v) for v in parts[1].split("x")) if len(parts) > 1 else (32, 32, 3)
    width = int(parts[2]) if len(parts) > 2 else None
    return name, shape, width


def main(argv=None) -> None:
    args = parse_args(argv)
    result = {"config": vars(args), "gpu_targets": GPU_TARGET}
    start = time.perf_counter()
    print(describe_device())
    if not args.no_steps:
        rows = []
        for spec in args.models.split(","):
            name, shape, width = _parse_model(spec)
            rows.append(measure_step(name, shape, args.batch, width=width, repeats=args.repeats,
                                     seed=args.seed))
            if args.bf16:
                rows.append(measure_step(name, shape, args.batch, width=width,
                                         repeats=args.repeats, compute_dtype=jnp.bfloat16,
                                         seed=args.seed))
        C.print_table("DP-SGD step vs non-private step (same model, batch, process; target ≤ 2×) — "
                      + describe_device(), rows,
                      ["model", "input", "batch", "dtype", "params", "nonprivate_ms", "dp_ms",
                       "ratio_dp_over_nonprivate", "dp_rows_ms", "ratio_whole_over_rows",
                       "dp_compile_s", "load"])
        result["steps"] = rows
    if args.train_eps8:
        result["eps8"] = train_eps8(args)
    if args.lr_sweep:
        result["lr_sweep"] = lr_sweep(args)
    result["wall_s"] = time.perf_counter() - start
    C.write_json("dpsgd" + (f"_{args.tag}" if args.tag else ("_quick" if args.quick else "")),
                 result, out=args.out)


if __name__ == "__main__":
    main()
