"""Benchmark: one DP-SGD step vs one non-private step, same model and batch, same process.

Both steps come from ``jaxcurv.training.make_train_step`` (jitted): the private one with
``dp=DPPlan(l2_clip, noise_multiplier, expected_batch_size)`` (per-example gradients by
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

import dataclasses
import sys
from pathlib import Path

if not __package__:  # python bench/dpsgd.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcurv import models  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.optim import OptimizerConfig, make_optimizer  # noqa: E402
from jaxcurv.privacy.plan import DPPlan  # noqa: E402
from jaxcurv.training import init_state, make_train_step  # noqa: E402
from jaxcurv.workflow import Timer, describe_device, load_average, time_interleaved  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.training import train_ensemble  # noqa: E402
from jaxcurv.workflow.settings import (  # noqa: E402
    MODEL_DEFAULTS,
    DataFolder,
    Training,
    redefault,
    setting,
)

GPU_TARGET = {"ratio": 2.0, "eps8_test_accuracy": 0.65}
STEP_MODELS = ("resnet18_gn", "cnn", "mlp")


@dataclasses.dataclass(frozen=True)
class DPSGDBench(DataFolder, B.Repeats, B.BenchConfig):
    """Settings of ``python -m bench.dpsgd``."""

    repeats: int | None = B.remode(B.Repeats, "repeats", 10, 5)
    batch_size: int = redefault(Training, "batch_size", 256)
    step_models: tuple[str, ...] | None = B.per_mode(
        ("resnet18_gn:32x32x3", "cnn:32x32x3"), ("cnn:32x32x3", "cnn:8x8x1", "mlp:8x8x1"),
        "models whose steps are timed, each MODEL[:HxWxC[:WIDTH]] with MODEL one of "
        + ", ".join(STEP_MODELS), metavar="SPEC")
    bf16: bool = setting(False, "also time both steps with bf16 compute")
    steps: bool = setting(True, "skip the step timing", flag="--no-steps", negate=True)
    train_eps8: bool = setting(False, "train ResNet18-GN on CIFAR-10 at ε = 8 (needs "
                               "dp-accounting and CIFAR-10)")
    eps8_epochs: int = setting(30, "--train-eps8: epochs", low=1, high=100_000)
    eps8_batch: int = setting(1024, "--train-eps8: expected (Poisson) batch size", low=1,
                              high=1 << 20)
    eps8_lr: float = setting(2.0, "--train-eps8: peak learning rate (cosine schedule)",
                             low=0.0, open_low=True, high=1e3)
    eps8_momentum: float = setting(0.0, "--train-eps8: SGD momentum (Nesterov when > 0)",
                                   low=0.0, high=1.0, open_high=True)
    eps8_augment: bool = setting(False, "--train-eps8: crop + flip augmentation")
    eps8_width: int = setting(32, "--train-eps8: ResNet18-GN width", low=1, high=4096)
    eps8_bf16: bool = setting(False, "--train-eps8: bf16 compute")
    limit_train: int | None = setting(
        None, "--train-eps8: a seeded random subset of N training and at most N test images "
        "(a smoke test on a CPU; 0: all)", metavar="N", low=2, high=10_000_000,
        parse="int_or_zero_none", none="all")
    lr_sweep: bool = setting(False, "DP test accuracy on digits by learning rate and ε (needs "
                             "dp-accounting)")
    sweep_epsilons: tuple[float, ...] = setting((1.0, 8.0), "--lr-sweep: the ε grid")
    sweep_lrs: tuple[float, ...] = setting((0.05, 0.2, 0.5), "--lr-sweep: peak learning rates")
    sweep_models: int = setting(2, "--lr-sweep: members per ε and learning rate, each on a "
                                "random half of the digits", metavar="K", low=1, high=100_000)
    sweep_epochs: int = setting(12, "--lr-sweep: epochs per member", low=1, high=100_000)

    def check(self) -> None:
        for spec in self.step_models:
            _parse_model(spec)
        for label, values in (("--sweep-epsilons", self.sweep_epsilons),
                              ("--sweep-lrs", self.sweep_lrs)):
            if not values or min(values) <= 0:
                raise ConfigError(f"{label} takes positive numbers, got {list(values)}")


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
    dp = DPPlan(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=float(batch))
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


def train_eps8(config) -> dict:
    """ResNet18-GN on CIFAR-10 at ε = 8, δ = 1e-5: test accuracy and wall time."""
    from jaxcurv import ensemble
    from jaxcurv.privacy import DPConfig

    train_set, test_set = B.cifar10(config.data_dir, required="--train-eps8",
                                    train_size=config.limit_train, test_size=config.limit_train,
                                    seed=config.seed)  # a limit: smoke test of the code path
    model = _model("resnet18_gn", config.eps8_width)
    dp = DPConfig(target_epsilon=8.0, delta=1e-5, l2_clip=1.0)
    # De et al. (2022)-style plain SGD (their WRN-16-4 recipe: lr 4, no momentum, batch 4096);
    # no augmentation by default (without augmentation multiplicity it costs accuracy under DP)
    optimizer = OptimizerConfig(name="sgd", learning_rate=config.eps8_lr,
                                momentum=config.eps8_momentum, nesterov=config.eps8_momentum > 0,
                                weight_decay=0.0, schedule="cosine", warmup_fraction=0.05)
    masks = np.ones((1, len(train_set)), bool)
    timer = Timer()
    ens = train_ensemble(model, train_set, masks, jax.random.PRNGKey(config.seed),
                         epochs=config.eps8_epochs, batch_size=config.eps8_batch,
                         optimizer=optimizer,
                         augment={"padding": 4, "flip": True} if config.eps8_augment else False,
                         dp=dp,
                         compute_dtype=jnp.bfloat16 if config.eps8_bf16 else None,
                         members_per_chunk=1, scan_steps=True, progress=True)
    wall = timer.elapsed()
    acc = float(ensemble.accuracy(ens, test_set)[0])
    row = {"model": f"resnet18_gn w={config.eps8_width}", "epochs": config.eps8_epochs,
           "lr": config.eps8_lr, "momentum": config.eps8_momentum, "augment": config.eps8_augment,
           "expected_batch": config.eps8_batch, "epsilon": ens.privacy["epsilon_max"],
           "noise_multiplier": ens.privacy["noise_multiplier"], "delta": 1e-5,
           "test_accuracy": acc, "wall_s": wall,
           "target_met": acc >= GPU_TARGET["eps8_test_accuracy"], "load": load_average()}
    B.print_table("DP-SGD ResNet18-GN on CIFAR-10 at ε = 8 — " + describe_device(), [row])
    return {"row": row, "privacy": ens.privacy, "optimizer": str(optimizer)}


def lr_sweep(config) -> list[dict]:
    """DP-SGD mean test accuracy on digits per (ε, learning rate); σ calibrated per ε."""
    from jaxcurv import data, ensemble
    from jaxcurv.privacy import DPConfig

    train_set, test_set = data.train_test("digits")
    model = models.get_model("cnn", train_set.num_classes)
    masks = data.subset_masks(len(train_set), config.sweep_models, fraction=0.5,
                              seed=config.seed)
    rows = []
    for eps in config.sweep_epsilons:
        for lr in config.sweep_lrs:
            timer = Timer()
            ens = ensemble.train(model, train_set, masks, jax.random.PRNGKey(config.seed),
                                 epochs=config.sweep_epochs, batch_size=64,
                                 optimizer=OptimizerConfig(name="sgd", learning_rate=lr),
                                 dp=DPConfig(target_epsilon=eps, delta=1e-5, l2_clip=1.0),
                                 test=test_set)
            acc = ens.history["test_accuracy"][-1]
            rows.append({"epsilon": eps, "learning_rate": lr, "members": config.sweep_models,
                         "epochs": config.sweep_epochs, "test_accuracy_mean": float(acc.mean()),
                         "test_accuracy_min": float(acc.min()),
                         "noise_multiplier": float(ens.privacy["noise_multiplier"]),
                         "wall_s": timer.elapsed()})
    B.print_table("DP-SGD on digits (GELU CNN, 50 % subsets, batch 64): test accuracy by ε and "
                  "peak learning rate", rows)
    return rows


def _parse_model(spec: str) -> tuple[str, tuple[int, ...], int | None]:
    """MODEL[:HxWxC[:WIDTH]] → (model, input shape (default 32×32×3), width or None)."""
    parts = spec.split(":")
    try:
        if parts[0] not in STEP_MODELS or len(parts) > 3:
            raise ValueError
        shape = tuple(int(v) for v in parts[1].split("x")) if len(parts) > 1 else (32, 32, 3)
        width = int(parts[2]) if len(parts) > 2 else None
        if len(shape) != 3 or min(shape) < 1 or (width is not None and width < 1):
            raise ValueError
    except ValueError:
        raise ConfigError(f"--step-models takes MODEL[:HxWxC[:WIDTH]] with MODEL one of "
                          f"{', '.join(STEP_MODELS)}, e.g. cnn:32x32x3:16; got {spec!r}") from None
    return parts[0], shape, width


def main(config: DPSGDBench) -> None:
    result = {"gpu_targets": GPU_TARGET}
    timer = Timer()
    print(describe_device())
    if config.steps:
        rows = []
        for spec in config.step_models:
            name, shape, width = _parse_model(spec)
            rows.append(measure_step(name, shape, config.batch_size, width=width,
                                     repeats=config.repeats, seed=config.seed))
            if config.bf16:
                rows.append(measure_step(name, shape, config.batch_size, width=width,
                                         repeats=config.repeats, compute_dtype=jnp.bfloat16,
                                         seed=config.seed))
        B.print_table("DP-SGD step vs non-private step (same model, batch, process; target ≤ 2×) — "
                      + describe_device(), rows,
                      ["model", "input", "batch", "dtype", "params", "nonprivate_ms", "dp_ms",
                       "ratio_dp_over_nonprivate", "dp_rows_ms", "ratio_whole_over_rows",
                       "dp_compile_s", "load"])
        result["steps"] = rows
    if config.train_eps8:
        result["eps8"] = train_eps8(config)
    if config.lr_sweep:
        result["lr_sweep"] = lr_sweep(config)
    result["wall_s"] = timer.elapsed()
    B.write_results(config, "dpsgd", result)


if __name__ == "__main__":
    B.cli(DPSGDBench, main, name="dpsgd", description=__doc__)
