"""Benchmark (issue 4): members trained per second, vmapped K members vs a loop of single runs.

Layouts, all through ``jaxcurv.ensemble.train`` in the same process, same data, recipe and keys:

- ``vmap K + scan``: one call, ``members_per_chunk=K, scan_steps=True`` (the GPU default: K
  members vmapped in one step, an epoch as one lax.scan);
- ``vmap K + host loop``: ``members_per_chunk=K, scan_steps=False``;
- ``loop of single runs``: a Python loop of K calls, each with one mask row
  (``masks[k:k+1]``, ``member_ids=[k]``), ``scan_steps=True`` (``--loop-scan 0``: host loop);
- ``CPU default``: one call, ``members_per_chunk=1, scan_steps=False`` (what train() does on CPU).

Timing excludes compilation by construction: a callback stamps the clock after every epoch (the
epoch's metrics have reached the host, so the device work is done); the steady epoch time of a
chunk is the median of the stamps' differences within the chunk, excluding its first epoch, and
members/s = members in the chunk / (epochs × steady epoch time). The wall time of each call
(compilation, initialization and evaluation included) is reported next to it. ``train()`` builds
new jitted functions on every call, so each single run of the loop layout compiles again; the
"wall" columns show that cost.

Full mode (GPU, issue 4 target): fastnet on half-CIFAR-10 (each member trains on a random 50 %
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

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcurv import data, ensemble, models
from jaxcurv.workflow import train_ensemble
from jaxcurv.optim import OptimizerConfig
from jaxcurv.workflow import describe_device, load_average
from jaxcurv.workflow.config import LEARNING_RATES, MODEL_DEFAULTS

if __package__:  # python -m bench.ensemble
    from bench import _common as C
else:  # python bench/ensemble.py: this folder is sys.path[0]
    import _common as C

GPU_TARGET = {"mean_test_accuracy": 0.90, "members_per_hour": 1500.0, "ratio_vs_loop": 3.0}


# ----------------------------------------------------------------------------------------------
# recipes


def quick_recipe(args) -> dict:
    """Small CPU recipe: the audit's setting (cnn on digits), SGD, no augmentation."""
    return dict(epochs=args.epochs, batch_size=args.batch_size or 128,
                optimizer=OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9,
                                          weight_decay=5e-4, schedule="cosine"),
                augment=False, label_smoothing=0.0, compute_dtype=None)


def audit_recipe(args) -> dict:
    """The default audit's members (``jaxcurv audit``): Adam 2e-3 cosine, no weight decay, batch
    64, no augmentation."""
    return dict(epochs=args.epochs, batch_size=args.batch_size or 64,
                optimizer=OptimizerConfig(name="adam", learning_rate=LEARNING_RATES["adam"],
                                          weight_decay=0.0, schedule="cosine"),
                augment=False, label_smoothing=0.0, compute_dtype=None)


def fastnet_recipe(args) -> dict:
    """airbench94-like recipe expressed through train()'s knobs (see the module docstring).

    airbench94 (sum loss, batch 1024): lr = 11.5 / (1024·(1 + 1/(1 − 0.85))) per example-sum
    → 1.5 for the mean loss; its per-step decay wd = 0.0153·1024/7850 ≈ 2.0e-3 at peak, which
    optax's add_decayed_weights(w) before sgd(lr) gives with w = 2.0e-3 / 1.5 ≈ 1.33e-3.
    The data-dependent whitening init of the stem goes through train(init_transform=...)
    (see ``with_whitening``). Not reproducible through train(): freezing the stem for the first
    epochs, 64× lr on BatchNorm biases, lookahead EMA, and flip TTA.
    """
    lr = args.lr if args.lr is not None else 1.5
    return dict(epochs=args.epochs, batch_size=args.batch_size or 1024,
                optimizer=OptimizerConfig(name="sgd", learning_rate=lr, momentum=0.85,
                                          nesterov=True, weight_decay=2.0e-3 / lr,
                                          schedule="onecycle", warmup_fraction=0.2),
                augment={"padding": 2, "flip": True, "pad_mode": "reflect"},
                label_smoothing=0.2,
                compute_dtype=jnp.bfloat16 if args.bf16 else None)


def with_whitening(recipe: dict, images) -> dict:
    """The recipe plus airbench's whitening init of fastnet's stem, computed from ≤ 5,000 training
    images (models.init_fastnet_whitening), applied to every member's initial variables."""
    sample = np.asarray(images[:5000])
    return {**recipe, "init_transform": lambda v: models.init_fastnet_whitening(v, sample)}


# ----------------------------------------------------------------------------------------------
# timing one train() call


class _Stamps:
    """train() callback: clock after each epoch, grouped by chunk."""

    def __init__(self):
        self.start = time.perf_counter()
        self.by_chunk: dict[int, list[float]] = {}
        self.members: dict[int, int] = {}

    def __call__(self, epoch: int, info: dict) -> None:
        self.by_chunk.setdefault(int(info["chunk"]), []).append(time.perf_counter())
        self.members[int(info["chunk"])] = len(info["members"])

    def steady_epoch_times(self) -> list[float]:
        """Epoch durations within chunks, first epoch of each chunk excluded."""
        out = []
        for stamps in self.by_chunk.values():
            out.extend(np.diff(stamps).tolist())
        return out

    def first_epoch(self) -> float:
        return self.by_chunk[0][0] - self.start


def timed_train(model, dataset, masks, key, *, recipe, **kwargs):
    """(ensemble, stamps, wall seconds) of one train() call."""
    stamps = _Stamps()
    ens = train_ensemble(model, dataset, masks, key, callbacks=[stamps], **recipe, **kwargs)
    return ens, stamps, time.perf_counter() - stamps.start


def _layout_row(name, k, epochs, steady, wall, load, **extra):
    t = statistics.median(steady) if steady else float("nan")
    members_chunk = extra.pop("members_per_chunk", k)
    return {"layout": name, "K": k, "steady_epoch_s": t,
            "members_per_s": members_chunk / (epochs * t) if t == t else float("nan"),
            "wall_s_incl_compile": wall, "wall_members_per_s": k / wall, "load": load, **extra}


def run_layouts(model, dataset, masks_all, key, recipe, args) -> list[dict]:
    """Every layout for every K in ``args.ks``; rows with steady members/s."""
    rows = []
    epochs = recipe["epochs"]
    for k in args.ks:
        masks = masks_all[:k]
        layouts = [("vmap K + scan", dict(members_per_chunk=k, scan_steps=True))]
        if args.quick or args.all_layouts:
            layouts.append(("vmap K + host loop", dict(members_per_chunk=k, scan_steps=False)))
            layouts.append(("CPU default (1 member/chunk, host loop)",
                            dict(members_per_chunk=1, scan_steps=False)))
        for name, kw in layouts:
            _, stamps, wall = timed_train(model, dataset, masks, key, recipe=recipe, **kw)
            rows.append(_layout_row(name, k, epochs, stamps.steady_epoch_times(), wall,
                                    load_average(), members_per_chunk=kw["members_per_chunk"]))
            print(rows[-1], flush=True)
        # the Python loop over single-member runs (at most --loop-members of them are run)
        steady, wall_total = [], 0.0
        n_loop = min(k, args.loop_members)
        for m in range(n_loop):
            _, stamps, wall = timed_train(model, dataset, masks[m:m + 1], key, recipe=recipe,
                                          member_ids=[m], members_per_chunk=1,
                                          scan_steps=bool(args.loop_scan))
            steady.extend(stamps.steady_epoch_times())
            wall_total += wall
        rows.append(_layout_row(f"loop of single runs ({'scan' if args.loop_scan else 'host loop'})"
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


def quick(args) -> dict:
    if args.model in ("cnn", "mlp"):
        train_set, test_set = data.load("digits", split="train"), data.load("digits", split="test")
        model = models.get_model(args.model, train_set.num_classes,
                                 **MODEL_DEFAULTS.get(args.model, {}))
    else:
        train_set, test_set = _cifar(args)
        model = models.get_model("fastnet", 10, width=args.width or 16)
    if args.limit_train:
        train_set = C.random_subset(train_set, args.limit_train, args.seed)
    recipe = {"cnn": quick_recipe, "mlp": audit_recipe, "fastnet": fastnet_recipe}[args.model](args)
    masks = data.subset_masks(len(train_set), max(max(args.ks), 2), fraction=0.5, seed=args.seed)
    key = jax.random.PRNGKey(args.seed)
    print(f"{args.model} on {train_set.name} ({len(train_set)} train, 50 % subsets), "
          f"{recipe['epochs']} epochs, batch {recipe['batch_size']}; {describe_device()}")
    rows = run_layouts(model, train_set, masks, key, recipe, args)
    C.print_table("members trained per second (steady state, compile excluded)", rows,
                  ["layout", "K", "steady_epoch_s", "members_per_s", "wall_s_incl_compile",
                   "wall_members_per_s", "load"])
    ratios = ratio_rows(rows)
    C.print_table("ratio of members/s to the loop of single runs (same process)", ratios)
    return {"rows": rows, "ratios": ratios, "model": args.model, "dataset": train_set.name,
            "recipe": _echo(recipe)}


def _cifar(args):
    return C.cifar10(args.data_dir, required="fastnet on CIFAR-10")


def full(args) -> dict:
    """fastnet on half-CIFAR-10: members/hour and test accuracy per K; loop baseline."""
    train_set, test_set = _cifar(args)
    if args.limit_train:  # smoke test of the full code path on a CPU
        train_set = C.random_subset(train_set, args.limit_train, args.seed)
        test_set = C.random_subset(test_set, args.limit_train, args.seed + 1)
    model = models.get_model("fastnet", 10, width=args.width or 64)
    recipe = with_whitening(fastnet_recipe(args), train_set.images)
    masks_all = data.subset_masks(len(train_set), max(max(args.ks), 2), fraction=0.5,
                                  seed=args.seed)
    key = jax.random.PRNGKey(args.seed)
    epochs = recipe["epochs"]
    print(f"fastnet w={args.width or 64} on half-CIFAR-10 ({len(train_set)} train images, "
          f"{masks_all.sum(1).min()} per member), {epochs} epochs, batch {recipe['batch_size']}, "
          f"bf16={args.bf16}; {describe_device()}")
    rows = []
    for k in args.ks:
        try:
            ens, stamps, wall = timed_train(model, train_set, masks_all[:k], key, recipe=recipe,
                                            members_per_chunk=k, scan_steps=True)
        except Exception as err:  # out of device memory for a large K: report and go on
            rows.append({"K": k, "error": f"{type(err).__name__}: {str(err)[:200]}"})
            print(f"K={k}: {type(err).__name__}", flush=True)
            continue
        steady = statistics.median(stamps.steady_epoch_times())
        first = stamps.first_epoch()
        train_s = wall  # includes compile, init and per-epoch host records
        compile_s = max(first - steady, 0.0)
        t0 = time.perf_counter()
        acc = ensemble.accuracy(ens, test_set)
        eval_s = time.perf_counter() - t0
        rows.append({"K": k, "steady_epoch_s": steady,
                     "members_per_hour": 3600.0 * k / (epochs * steady),
                     "members_per_hour_wall_excl_compile": 3600.0 * k / max(train_s - compile_s, 1e-9),
                     "members_per_hour_wall": 3600.0 * k / train_s,
                     "s_per_member": epochs * steady / k,
                     "compile_s": compile_s, "eval_s": eval_s,
                     "mean_test_acc": float(acc.mean()), "min_test_acc": float(acc.min()),
                     "max_test_acc": float(acc.max()), "load": load_average()})
        print(rows[-1], flush=True)
    # loop baseline: single-member runs (each train() call compiles again; steady epochs only)
    steady, accs = [], []
    for m in range(args.loop_members):
        ens, stamps, _ = timed_train(model, train_set, masks_all[m:m + 1], key, recipe=recipe,
                                     member_ids=[m], members_per_chunk=1, scan_steps=True)
        steady.extend(stamps.steady_epoch_times())
        accs.append(float(ensemble.accuracy(ens, test_set)[0]))
    t1 = statistics.median(steady)
    loop = {"layout": f"loop of single runs ({args.loop_members} run)", "steady_epoch_s": t1,
            "members_per_hour": 3600.0 / (epochs * t1), "mean_test_acc": float(np.mean(accs)),
            "load": load_average()}
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        r["ratio_vs_loop"] = r["members_per_hour"] / loop["members_per_hour"]
    C.print_table("fastnet on half-CIFAR-10: vmapped K members (scan) — " + describe_device(),
                  rows, ["K", "members_per_hour", "members_per_hour_wall", "s_per_member",
                         "ratio_vs_loop", "mean_test_acc", "min_test_acc", "compile_s", "load"])
    C.print_table("loop of single runs (same recipe)", [loop])
    best = max(ok, key=lambda r: r["members_per_hour"]) if ok else None
    if best:
        C.print_table("targets (one H100: ≥ 90 % mean test accuracy, ≥ 1,500 members/hour, "
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


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ks", default=None, help="comma list of K (quick: 2,4,8; full: 16,32)")
    p.add_argument("--epochs", type=int, default=None, help="quick: 4; full: 16")
    p.add_argument("--batch-size", type=int, default=None, help="quick: 128; fastnet: 1024")
    p.add_argument("--model", default="cnn", choices=("cnn", "mlp", "fastnet"),
                   help="quick mode's model: cnn or mlp (the default audit's members, with "
                        "its recipe) on digits, or fastnet on CIFAR-10")
    p.add_argument("--width", type=int, default=None, help="fastnet width (quick 16, full 64)")
    p.add_argument("--lr", type=float, default=None, help="fastnet peak learning rate (1.5)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fastnet in float32")
    p.add_argument("--loop-members", type=int, default=None,
                   help="single runs actually made for the loop layout (quick: all K; full: 2)")
    p.add_argument("--loop-scan", type=int, default=1, help="1: single runs use scan_steps=True")
    p.add_argument("--all-layouts", action="store_true", help="full mode: also the host-loop layouts")
    p.add_argument("--limit-train", type=int, default=0,
                   help="use only the first N training images (smoke test of a mode)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.ks = [int(v) for v in (args.ks or ("2,4,8" if args.quick else "16,32")).split(",")]
    args.epochs = args.epochs or (4 if args.quick else 16)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch includes compilation)")
    args.loop_members = args.loop_members or (max(args.ks) if args.quick else 2)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    result = {"config": vars(args), "gpu_targets": GPU_TARGET}
    result.update(quick(args) if args.quick else full(args))
    result["wall_s"] = time.perf_counter() - start
    suffix = args.tag or ("quick" + ("" if args.model == "cnn" else f"_{args.model}")
                          if args.quick else "")
    C.write_json("ensemble" + (f"_{suffix}" if suffix else ""), result, out=args.out)


if __name__ == "__main__":
    main()
