"""Benchmark: members trained per second, vmapped K members vs a loop of single runs.

Layouts, all through ``jaxcurv.workflow.train_ensemble`` in the same process, same data, recipe
and keys:

- ``vmap K + scan``: one call, ``members_per_chunk=K, scan_steps=True`` (the GPU default: K
  members vmapped in one step, an epoch as one lax.scan);
- ``vmap K + host loop``: ``members_per_chunk=K, scan_steps=False``;
- ``loop of single runs``: a Python loop of K calls, each with one mask row
  (``masks[k:k+1]``, ``member_ids=[k]``), ``scan_steps=True`` (``--loop-scan 0``: host loop);
- ``CPU default``: one call, ``members_per_chunk=1, scan_steps=False`` (what train() does on CPU).

Timing excludes compilation by construction: a callback
(``jaxcurv.workflow.benchmark.EpochClock``) stamps the clock after every epoch (the epoch's
metrics have reached the host, so the device work is done); the steady epoch time of a chunk is
the median of the stamps' differences within the chunk, excluding its first epoch, and
members/s = members in the chunk / (epochs × steady epoch time). The wall time of each call
(compilation, initialization and evaluation included) is reported next to it. ``train()`` builds
new jitted functions on every call, so each single run of the loop layout compiles again; the
"wall" columns show that cost.

Full mode (GPU target): fastnet on half-CIFAR-10 (each member trains on a random 50 %
of the 50,000 training images; balanced subset masks), airbench94-like recipe (label smoothing
0.2, Nesterov SGD momentum 0.85, peak lr 1.5 for the mean loss = airbench's 11.5 per 1024
examples, weight decay 2e-3 per step at peak, linear warm-up over 20 % then linear decay, batch
1024, flip + 2-pixel reflect translate, bf16 compute), members/hour, mean/min test accuracy per
K and the fastest K; targets ≥ 90 % mean test accuracy and ≥ 1,500 members/hour on one H100.

CIFAR-10 comes from ``--data-dir`` or ``$JAXCURV_DATA_DIR``.

    python -m bench.ensemble --quick                       # CPU: cnn on digits, K = 2, 4, 8
    python -m bench.ensemble --quick --model mlp --ks 8    # CPU: the default audit's members
    python -m bench.ensemble                               # GPU: fastnet, half-CIFAR-10
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

if not __package__:  # python bench/ensemble.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcurv import data, ensemble, models  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.optim import OptimizerConfig  # noqa: E402
from jaxcurv.workflow import Timer, describe_device, load_average  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.training import train_ensemble  # noqa: E402
from jaxcurv.workflow.settings import (  # noqa: E402
    LEARNING_RATES,
    MODEL_DEFAULTS,
    DataFolder,
    setting,
)

GPU_TARGET = {"mean_test_accuracy": 0.90, "members_per_hour": 1500.0, "ratio_vs_loop": 3.0}
FASTNET_LEARNING_RATE = 1.5  # airbench94's 11.5 per 1024 examples, for the mean loss


@dataclasses.dataclass(frozen=True)
class EnsembleBench(DataFolder, B.BenchConfig):
    """Settings of ``python -m bench.ensemble``."""

    ks: tuple[int, ...] | None = B.per_mode((16, 32), (2, 4, 8), "member counts K, one vmapped "
                                            "run each", metavar="K")
    epochs: int | None = B.per_mode(16, 4, "epochs per member (at least 2: the first epoch of "
                                    "a run includes compilation)", low=2, high=100_000)
    batch_size: int | None = setting(None, "batch size", low=1, high=1 << 20,
                                     none="128 for cnn, 64 for mlp, 1024 for fastnet")
    model: str = setting("cnn", "--quick's model: cnn or mlp (the default audit's members, "
                         "with its recipe) on digits, or fastnet on CIFAR-10",
                         choices=("cnn", "mlp", "fastnet"))
    width: int | None = B.per_mode(64, 16, "fastnet width", low=1, high=4096)
    learning_rate: float | None = setting(
        None, "fastnet's peak learning rate (one-cycle schedule)", low=0.0, open_low=True,
        high=1e3, none=str(FASTNET_LEARNING_RATE))
    bf16: bool = setting(True, "fastnet in float32 instead of bf16", flag="--no-bf16",
                         negate=True)
    loop_models: int | None = setting(
        None, "single-member runs actually made for the loop layout (its members/s is their "
        "median)", metavar="M", low=1, high=100_000, none="all K with --quick; 2")
    loop_scan: int = setting(1, "1: the single runs use scan_steps=True; 0: a host loop",
                             choices=(0, 1))
    all_layouts: bool = setting(False, "full mode: also the host-loop layouts")
    limit_train: int | None = setting(
        None, "a seeded random subset of N training (and at most N test) images, e.g. to smoke "
        "test a mode on a CPU (0: all)", metavar="N", low=2, high=10_000_000,
        parse="int_or_zero_none", none="all")

    def derive(self) -> EnsembleBench:
        return dataclasses.replace(
            self, loop_models=self.loop_models or (max(self.ks) if self.quick else 2))

    def check(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"--ks takes positive member counts, got {list(self.ks)}")


# ----------------------------------------------------------------------------------------------
# recipes


def quick_recipe(*, epochs: int, batch_size: int | None = None) -> dict:
    """Small CPU recipe: the audit's setting (cnn on digits), SGD, no augmentation."""
    return dict(epochs=epochs, batch_size=batch_size or 128,
                optimizer=OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9,
                                          weight_decay=5e-4, schedule="cosine"),
                augment=False, label_smoothing=0.0, compute_dtype=None)


def audit_recipe(*, epochs: int, batch_size: int | None = None) -> dict:
    """The default audit's members (``jaxcurv audit``): Adam 2e-3 cosine, no weight decay, batch
    64, no augmentation."""
    return dict(epochs=epochs, batch_size=batch_size or 64,
                optimizer=OptimizerConfig(name="adam", learning_rate=LEARNING_RATES["adam"],
                                          weight_decay=0.0, schedule="cosine"),
                augment=False, label_smoothing=0.0, compute_dtype=None)


def fastnet_recipe(*, epochs: int, batch_size: int | None = None,
                   learning_rate: float | None = None, bf16: bool = True) -> dict:
    """airbench94-like recipe expressed through train()'s knobs (see the module docstring).

    airbench94 (sum loss, batch 1024): lr = 11.5 / (1024·(1 + 1/(1 − 0.85))) per example-sum
    → 1.5 for the mean loss; its per-step decay wd = 0.0153·1024/7850 ≈ 2.0e-3 at peak, which
    optax's add_decayed_weights(w) before sgd(lr) gives with w = 2.0e-3 / 1.5 ≈ 1.33e-3.
    The data-dependent whitening init of the stem goes through train(init_transform=...)
    (see ``with_whitening``). Not reproducible through train(): freezing the stem for the first
    epochs, 64× lr on BatchNorm biases, lookahead EMA, and flip TTA.
    """
    lr = learning_rate if learning_rate is not None else FASTNET_LEARNING_RATE
    return dict(epochs=epochs, batch_size=batch_size or 1024,
                optimizer=OptimizerConfig(name="sgd", learning_rate=lr, momentum=0.85,
                                          nesterov=True, weight_decay=2.0e-3 / lr,
                                          schedule="onecycle", warmup_fraction=0.2),
                augment={"padding": 2, "flip": True, "pad_mode": "reflect"},
                label_smoothing=0.2,
                compute_dtype=jnp.bfloat16 if bf16 else None)


def with_whitening(recipe: dict, images) -> dict:
    """The recipe plus airbench's whitening init of fastnet's stem, computed from ≤ 5,000 training
    images (models.init_fastnet_whitening), applied to every member's initial variables."""
    sample = np.asarray(images[:5000])
    return {**recipe, "init_transform": lambda v: models.init_fastnet_whitening(v, sample)}


# ----------------------------------------------------------------------------------------------
# timing one train() call


def timed_train(model, dataset, masks, key, *, recipe, **kwargs):
    """(ensemble, its EpochClock, wall seconds) of one train() call."""
    clock = B.EpochClock()
    ens = train_ensemble(model, dataset, masks, key, callbacks=[clock], **recipe, **kwargs)
    return ens, clock, clock.elapsed()


def _layout_row(name, k, epochs, steady, wall, load, **extra):
    t = statistics.median(steady) if steady else float("nan")
    members_chunk = extra.pop("members_per_chunk", k)
    return {"layout": name, "K": k, "steady_epoch_s": t,
            "members_per_s": members_chunk / (epochs * t) if t == t else float("nan"),
            "wall_s_incl_compile": wall, "wall_members_per_s": k / wall, "load": load, **extra}


def run_layouts(model, dataset, masks_all, key, recipe, config) -> list[dict]:
    """Every layout for every K in ``config.ks``; rows with steady members/s."""
    rows = []
    epochs = recipe["epochs"]
    for k in config.ks:
        masks = masks_all[:k]
        layouts = [("vmap K + scan", dict(members_per_chunk=k, scan_steps=True))]
        if config.quick or config.all_layouts:
            layouts.append(("vmap K + host loop", dict(members_per_chunk=k, scan_steps=False)))
            layouts.append(("CPU default (1 member/chunk, host loop)",
                            dict(members_per_chunk=1, scan_steps=False)))
        for name, kw in layouts:
            _, clock, wall = timed_train(model, dataset, masks, key, recipe=recipe, **kw)
            rows.append(_layout_row(name, k, epochs, clock.steady_epoch_times(), wall,
                                    load_average(), members_per_chunk=kw["members_per_chunk"]))
            print(rows[-1], flush=True)
        # the Python loop over single-member runs (at most --loop-members of them are run)
        steady, wall_total = [], 0.0
        n_loop = min(k, config.loop_models)
        for m in range(n_loop):
            _, clock, wall = timed_train(model, dataset, masks[m:m + 1], key, recipe=recipe,
                                          member_ids=[m], members_per_chunk=1,
                                          scan_steps=bool(config.loop_scan))
            steady.extend(clock.steady_epoch_times())
            wall_total += wall
        steps = "scan" if config.loop_scan else "host loop"
        rows.append(_layout_row(f"loop of single runs ({steps})"
                                + ("" if n_loop == k else f", {n_loop} of {k} run"),
                                k, epochs, steady, wall_total * k / n_loop, load_average(),
                                members_per_chunk=1))
        print(rows[-1], flush=True)
    return rows


def ratio_rows(rows: list[dict]) -> list[dict]:
    out = []
    for k in sorted({r["K"] for r in rows}):
        mine = {r["layout"]: r for r in rows if r["K"] == k}
        loop = next(v for name, v in mine.items() if name.startswith("loop of single runs"))
        entry = {"K": k}
        for name, r in mine.items():
            if not name.startswith("loop"):
                entry[f"{name} / loop"] = r["members_per_s"] / loop["members_per_s"]
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# modes


def quick(config) -> dict:
    if config.model in ("cnn", "mlp"):
        train_set, _ = B.train_test("digits", train_size=config.limit_train, seed=config.seed)
        model = models.get_model(config.model, train_set.num_classes,
                                 **MODEL_DEFAULTS.get(config.model, {}))
        sizes = dict(epochs=config.epochs, batch_size=config.batch_size)
        recipe = (quick_recipe if config.model == "cnn" else audit_recipe)(**sizes)
    else:
        train_set, _ = _cifar(config)
        model = models.get_model("fastnet", 10, width=config.width)
        recipe = fastnet_recipe(epochs=config.epochs, batch_size=config.batch_size,
                                learning_rate=config.learning_rate, bf16=config.bf16)
    masks = data.subset_masks(len(train_set), max(max(config.ks), 2), fraction=0.5,
                              seed=config.seed)
    key = jax.random.PRNGKey(config.seed)
    print(f"{config.model} on {train_set.name} ({len(train_set)} train, 50 % subsets), "
          f"{recipe['epochs']} epochs, batch {recipe['batch_size']}; {describe_device()}")
    rows = run_layouts(model, train_set, masks, key, recipe, config)
    B.print_table("members trained per second (steady state, compile excluded)", rows,
                  ["layout", "K", "steady_epoch_s", "members_per_s", "wall_s_incl_compile",
                   "wall_members_per_s", "load"])
    ratios = ratio_rows(rows)
    B.print_table("ratio of members/s to the loop of single runs (same process)", ratios)
    return {"rows": rows, "ratios": ratios, "model": config.model, "dataset": train_set.name,
            "recipe": _echo(recipe)}


def _cifar(config):
    """CIFAR-10, subsets of --limit-train images (smoke tests of a mode on a CPU)."""
    return B.cifar10(config.data_dir, required="fastnet on CIFAR-10",
                     train_size=config.limit_train, test_size=config.limit_train,
                     seed=config.seed)


def full(config) -> dict:
    """fastnet on half-CIFAR-10: members/hour and test accuracy per K; loop baseline."""
    train_set, test_set = _cifar(config)
    model = models.get_model("fastnet", 10, width=config.width)
    recipe = with_whitening(fastnet_recipe(epochs=config.epochs, batch_size=config.batch_size,
                                           learning_rate=config.learning_rate, bf16=config.bf16),
                            train_set.images)
    masks_all = data.subset_masks(len(train_set), max(max(config.ks), 2), fraction=0.5,
                                  seed=config.seed)
    key = jax.random.PRNGKey(config.seed)
    epochs = recipe["epochs"]
    print(f"fastnet w={config.width} on half-CIFAR-10 ({len(train_set)} train images, "
          f"{masks_all.sum(1).min()} per member), {epochs} epochs, batch {recipe['batch_size']}, "
          f"bf16={config.bf16}; {describe_device()}")
    rows = []
    for k in config.ks:
        try:
            ens, clock, wall = timed_train(model, train_set, masks_all[:k], key, recipe=recipe,
                                            members_per_chunk=k, scan_steps=True)
        except Exception as err:  # out of device memory for a large K: report and go on
            rows.append({"K": k, "error": f"{type(err).__name__}: {str(err)[:200]}"})
            print(f"K={k}: {type(err).__name__}", flush=True)
            continue
        steady = statistics.median(clock.steady_epoch_times())
        first = clock.first_epoch()
        train_s = wall  # includes compile, init and per-epoch host records
        compile_s = max(first - steady, 0.0)
        timer = Timer()
        acc = ensemble.accuracy(ens, test_set)
        eval_s = timer.elapsed()
        rows.append({"K": k, "steady_epoch_s": steady,
                     "members_per_hour": 3600.0 * k / (epochs * steady),
                     "members_per_hour_wall_excl_compile":
                         3600.0 * k / max(train_s - compile_s, 1e-9),
                     "members_per_hour_wall": 3600.0 * k / train_s,
                     "s_per_member": epochs * steady / k,
                     "compile_s": compile_s, "eval_s": eval_s,
                     "mean_test_acc": float(acc.mean()), "min_test_acc": float(acc.min()),
                     "max_test_acc": float(acc.max()), "load": load_average()})
        print(rows[-1], flush=True)
    # loop baseline: single-member runs (each train() call compiles again; steady epochs only)
    steady, accs = [], []
    for m in range(config.loop_models):
        ens, clock, _ = timed_train(model, train_set, masks_all[m:m + 1], key, recipe=recipe,
                                     member_ids=[m], members_per_chunk=1, scan_steps=True)
        steady.extend(clock.steady_epoch_times())
        accs.append(float(ensemble.accuracy(ens, test_set)[0]))
    t1 = statistics.median(steady)
    loop = {"layout": f"loop of single runs ({config.loop_models} run)", "steady_epoch_s": t1,
            "members_per_hour": 3600.0 / (epochs * t1), "mean_test_acc": float(np.mean(accs)),
            "load": load_average()}
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        r["ratio_vs_loop"] = r["members_per_hour"] / loop["members_per_hour"]
    B.print_table("fastnet on half-CIFAR-10: vmapped K members (scan) — " + describe_device(),
                  rows, ["K", "members_per_hour", "members_per_hour_wall", "s_per_member",
                         "ratio_vs_loop", "mean_test_acc", "min_test_acc", "compile_s", "load"])
    B.print_table("loop of single runs (same recipe)", [loop])
    best = max(ok, key=lambda r: r["members_per_hour"]) if ok else None
    if best:
        B.print_table("targets (one H100: ≥ 90 % mean test accuracy, ≥ 1,500 members/hour, "
                      "≥ 3× the loop)", [{
                          "fastest_K": best["K"], "members_per_hour": best["members_per_hour"],
                          "mean_test_acc": best["mean_test_acc"],
                          "min_test_acc": best["min_test_acc"],
                          "ratio_vs_loop": best["ratio_vs_loop"],
                          "acc_met": best["mean_test_acc"] >= GPU_TARGET["mean_test_accuracy"],
                          "speed_met": best["members_per_hour"] >= GPU_TARGET["members_per_hour"]}])
    return {"rows": rows, "loop": loop, "best": best, "recipe": _echo(recipe)}


def _echo(recipe: dict) -> dict:
    return {k: (str(v) if k in ("optimizer", "compute_dtype") else v) for k, v in recipe.items()}


def main(config: EnsembleBench) -> None:
    timer = Timer()
    result = {"gpu_targets": GPU_TARGET}
    result.update(quick(config) if config.quick else full(config))
    result["wall_s"] = timer.elapsed()
    variant = config.model if config.quick and config.model != "cnn" else None
    B.write_results(config, "ensemble", result, variant=variant)


if __name__ == "__main__":
    B.cli(EnsembleBench, main, name="ensemble", description=__doc__)
