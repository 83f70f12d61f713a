"""One prepared GPU run that measures every figure the project promises, in 8 minutes.

``python -m bench.suite --out DIR [--budget-s 480] [--tiny] [--data-dir D]`` (or
``python bench/suite.py ...``) runs five parts in turn and rewrites ``DIR/suite.json`` after each
one, so a run cut short still reports what it finished (top-level keys ``environment``,
``curvature``, ``ensemble``, ``dpsgd``, ``evidence``, ``peers``, ``suite``); CSV and PNG files go
next to it.

- curvature: per-sample tr(H) + tr(H²) of a CIFAR ResNet18 (BatchNorm in inference mode), batch
  512, 10 probes: ours (``make_input_curvature``) at fp32 "highest" matmul precision, at the
  default precision (TF32 on NVIDIA GPUs) and in bf16; the authors' algorithm ported to JAX
  (``bench.curvature.make_authors_curvature``: finite differences of the batch-mean loss, a Python
  loop over probes); and, when torch imports, the authors' PyTorch algorithm on the same
  shapes. Samples/s, ratios from the same run, Spearman(bf16, fp32) on a briefly trained model.
- dpsgd: one DP-SGD step vs one non-private step, resnet18_gn, batch 256 (fixed σ = 1: no
  privacy accounting is imported).
- ensemble: fastnet (airbench94 architecture and recipe) on random halves of the training set:
  a loop of single-member runs first (its epoch time sizes K to the budget), then K members
  vmapped: members per GPU-hour, the ratio to the loop and the mean test accuracy.
- evidence: the CIFAR-10 membership-inference table on the ensemble's members: Feldman–Zhang
  memorization, tr(H²) and float32 zero-order curvature for every member × evaluated example,
  Spearman(mem, curvature), LiRA online/offline, RMIA, curvature LR/NLL (white-box and
  zero-order) with AUROC, balanced accuracy, TPR at 0.1 % / 1 % FPR and example-cluster bootstrap
  intervals, next to Curvature Clues' CIFAR-10 row. The zero-order step h is measured: the
  smallest h of ``H_GRID`` whose float32 estimate agrees with float64 at the same h and probes.
  The number of evaluated examples is sized from one timed chunk and the remaining budget.
- peers: ``bench.peers`` on this device (files in ``DIR/peers/``): curvature vs the authors'
  PyTorch algorithm and PyTorch HVPs, DP-SGD vs Opacus, members/hour vs PyTorch loops, LiRA and
  RMIA vs the published code, XLA FLOPs vs the limit; rows "missing" without PyTorch/Opacus.

Without local CIFAR-10 files the suite runs on a synthetic CIFAR-shaped data set and says so.
``--tiny`` runs every part at toy size (the peers part: its sections without training; CPU, about
100 s of CPU time); the test runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if not __package__:  # python bench/suite.py from a bare checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from jaxcurv import data, ensemble, memorization, mia, models, report  # noqa: E402
from jaxcurv.curvature import make_input_curvature, make_zero_order_curvature  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.workflow import (  # noqa: E402
    attack_scores,
    describe_device,
    environment,
    time_call,
    time_interleaved,
)
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import DataFolder, setting  # noqa: E402

if __package__:  # python -m bench.suite
    from bench import curvature as bench_curvature
    from bench import dpsgd as bench_dpsgd
    from bench import ensemble as bench_ensemble
    from bench import peers as bench_peers
else:  # python bench/suite.py: this folder is sys.path[0]
    import curvature as bench_curvature
    import dpsgd as bench_dpsgd
    import ensemble as bench_ensemble
    import peers as bench_peers

__all__ = ["TARGETS", "DESIGN_BUDGET_S", "PAPER_CIFAR10", "H_GRID", "Sizes", "FULL", "TINY",
           "main"]

# Targets on one H100/H200 (the figures).
TARGETS = {
    "curvature": {"tf32_samples_per_s": 7_500.0, "bf16_samples_per_s": 14_000.0,
                  "ratio_vs_authors_torch": 10.0, "spearman_bf16_vs_fp32": 0.99},
    "ensemble": {"members_per_hour": 1_500.0, "mean_test_accuracy": 0.90, "ratio_vs_loop": 3.0},
    "dpsgd": {"ratio_dp_over_nonprivate": 2.0},
}
# Design budget per part, seconds on one H100 (sum = 480 = the default --budget-s). --budget-s
# scales the training sizes of curvature/ensemble; the evidence part takes what is left.
DESIGN_BUDGET_S = {"startup": 25, "curvature": 110, "dpsgd": 40, "ensemble": 130,
                   "evidence": 120, "peers": 45, "margin": 10}
DESIGN_TOTAL_S = float(sum(DESIGN_BUDGET_S.values()))
# Ravikumar, Soufleri & Roy, "Curvature Clues: Decoding Deep Learning Privacy with Input Loss
# Curvature", NeurIPS 2024 (arXiv:2407.02747): the CIFAR-10 zero-order curvature NLL attack
# (ResNet18 shadows, 64 per target), as this repository records it in
# experiments/curvature_clues_table1.py (PAPER[("zero_order_nll", "paper")]; "balanced accuracy" is
# the notebooks' value at the EER threshold).
PAPER_CIFAR10 = {"attack": "zero_order_nll", "auroc": 0.6895, "balanced_accuracy_eer": 0.6196,
                 "source": "Curvature Clues (NeurIPS 2024), CIFAR-10 row, via "
                           "experiments/curvature_clues_table1.py PAPER"}
H_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)  # zero-order steps tried, largest first
H_TOLERANCE = 0.05  # float32 vs float64 median relative difference accepted at the chosen h
TABLE_ATTACKS = ("lira_online", "lira_offline", "rmia", "curvature_lr", "curvature_nll",
                 "zero_order_lr", "zero_order_nll", "loss", "calibrated_loss", "attack_r")
_GUARDED = {"dp_accounting", "tensorflow_datasets", "tensorflow"}
_PACKAGES = ("torch", "torchvision", "scipy", "sklearn", "matplotlib", "PIL", "tqdm",
             "dp_accounting", "tensorflow_datasets")
_KEYS = {"curvature_train": 11, "curvature_probe": 12, "ensemble": 13, "evidence_wb": 14,
         "evidence_zo": 15}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes of one suite run (``FULL`` on a GPU, ``TINY`` for the CPU test)."""

    curv_width: int
    curv_batch: int
    curv_probes: int
    curv_train_examples: int
    curv_train_epochs: int
    repeats: int
    ens_width: int
    ens_members: int
    ens_epochs: int
    ens_batch: int
    loop_members: int
    loop_epochs: int
    dp_width: int
    dp_batch: int
    ev_probes: int
    ev_bootstrap: int
    ev_h_examples: int
    ev_chunk: int
    ev_min_examples: int
    bf16: bool
    train_limit: int | None = None
    test_limit: int | None = None


FULL = Sizes(curv_width=64, curv_batch=512, curv_probes=10, curv_train_examples=10_000,
             curv_train_epochs=2, repeats=5, ens_width=64, ens_members=32, ens_epochs=16,
             ens_batch=1024, loop_members=1, loop_epochs=3, dp_width=64, dp_batch=256,
             ev_probes=10, ev_bootstrap=200, ev_h_examples=256, ev_chunk=1024,
             ev_min_examples=1024, bf16=True)
TINY = Sizes(curv_width=4, curv_batch=16, curv_probes=2, curv_train_examples=128,
             curv_train_epochs=1, repeats=2, ens_width=8, ens_members=8, ens_epochs=2,
             ens_batch=64, loop_members=1, loop_epochs=2, dp_width=8, dp_batch=32,
             ev_probes=2, ev_bootstrap=20, ev_h_examples=16, ev_chunk=64, ev_min_examples=64,
             bf16=True, train_limit=256, test_limit=128)


@dataclasses.dataclass
class _Context:
    """What the parts share: sizes, data, the clock and the ensemble the evidence reuses."""

    sizes: Sizes
    budget_s: float
    start: float
    out: Path
    seed: int
    train: Any = None
    test: Any = None
    data_info: dict = dataclasses.field(default_factory=dict)
    members: Any = None  # (Ensemble, masks) from the ensemble part

    @property
    def scale(self) -> float:
        return self.budget_s / DESIGN_TOTAL_S

    def allowance(self, part: str) -> float:
        return DESIGN_BUDGET_S[part] * self.scale

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def key(self, name: str) -> jax.Array:
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), _KEYS[name])


# ----------------------------------------------------------------------------------------------
# environment, data, output


def _environment() -> dict:
    """environment() plus which optional packages exist and which guarded modules were imported
    (dp_accounting / tensorflow_datasets must never be: the GPU machine has neither)."""
    env = environment()
    env["packages_available"] = {p: importlib.util.find_spec(p) is not None for p in _PACKAGES}
    env["guarded_modules_imported"] = sorted(m for m in sys.modules
                                             if m.split(".")[0] in _GUARDED)
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    return env


def _load_data(ctx: _Context, data_dir) -> None:
    """CIFAR-10 from ``data_dir`` / $JAXCURV_DATA_DIR, else the synthetic stand-in."""
    s = ctx.sizes
    found = data.locate("cifar10", data_dir)
    if found is not None:
        train, test = data.train_test("cifar10", data_dir=data_dir)
        info = {"dataset": "cifar10", "path": str(found), "fallback": False}
    else:
        train, test = B.synthetic_cifar(s.train_limit or 50_000, s.test_limit or 10_000,
                                        ctx.seed)
        info = {"dataset": "synthetic", "fallback": True,
                "note": "no CIFAR-10 files found (--data-dir or $JAXCURV_DATA_DIR): synthetic "
                        "32×32×3 stand-in, 10 classes, 10 % flipped training labels; accuracy "
                        "and attack figures are not CIFAR-10 figures"}
    train = B.subset(train, s.train_limit, seed=ctx.seed)
    test = B.subset(test, s.test_limit, seed=ctx.seed + 1)
    ctx.train, ctx.test = train, test
    ctx.data_info = {**info, "train_examples": len(train), "test_examples": len(test)}


def _table_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` (dicts) as a CSV, one column per key (tuples such as CIs as text)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: str(v) if isinstance(v, (tuple, list, dict)) or v is None else v  # noqa: E731
    report.write_csv(path, {k: [cell(r.get(k)) for r in rows] for k in keys})


def _precision(name: str | None):
    """Context for XLA's matmul/conv precision ("highest" = true fp32, None = the default)."""
    return jax.default_matmul_precision(name) if name else contextlib.nullcontext()


def _spearman(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    return float(stats.spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else float("nan")


# ----------------------------------------------------------------------------------------------
# curvature: ours vs the authors' algorithm (JAX port and the authors' PyTorch)


def _torch_resnet18(torch, width: int, num_classes: int = 10):
    """The CIFAR ResNet18 of jaxcurv.models in PyTorch (3×3 stem, 4 stages × 2 BasicBlocks)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.short(x))

    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage in range(4):
        for block in range(2):
            cout = width * 2**stage
            layers.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def _torch_seed(x: np.ndarray, y: np.ndarray, *, width: int, num_probes: int, h: float = 1e-3):
    """(fn, info): the authors' PyTorch algorithm on (x, y), or (None, info) without torch.

    Per probe: v = h·(R + 1e-7) with R Rademacher drawn as randint(0, 2) and its zeros set to −1
    example by example (as the authors' code does); Δg = ∂/∂x [L(x + v) − L(x)] with L the
    batch-mean cross-entropy (torch.autograd.grad); per example ‖Δg‖ and vᵀΔg accumulated on the
    host. Model in eval mode (BatchNorm running statistics), random weights (timing only).
    """
    try:
        import torch
    except ImportError as err:
        return None, {"available": False, "reason": f"torch is not importable ({err})"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = _torch_resnet18(torch, width).to(device).eval()
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    yb = torch.from_numpy(y.astype(np.int64)).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    n = xb.shape[0]

    def run():
        norms, quads = torch.zeros(n), torch.zeros(n)
        for _ in range(num_probes):
            v = torch.randint_like(xb, high=2)
            for v_i in v:
                v_i[v_i == 0] = -1
            v = h * (v + 1e-7)
            xr = xb.detach().requires_grad_()
            (dg,) = torch.autograd.grad(criterion(net(xr + v), yb) - criterion(net(xr), yb), xr)
            norms += dg.reshape(n, -1).norm(dim=1).cpu()
            quads += torch.diag(v.reshape(n, -1) @ dg.reshape(n, -1).T).cpu()
        return (quads / num_probes).numpy(), (norms / num_probes).numpy()

    info = {"available": True, "torch": torch.__version__, "device": device,
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    return run, info


def _ours(loss_fn, variables, x, y, key, *, probes: int, dtype, precision: str | None):
    estimate = make_input_curvature(loss_fn, num_probes=probes, batch_size=len(x),
                                    compute_dtype=dtype)

    def run():
        with _precision(precision):
            return estimate(variables, x, y, key)

    return run


def _curvature_model(ctx: _Context):
    """(model, variables, x, y, training record): ResNet18 trained briefly on the training set
    (a trained net's per-example curvature spreads, which the Spearman criterion needs)."""
    s = ctx.sizes
    model = models.get_model("resnet18", 10, width=s.curv_width)
    batch = B.subset(ctx.test, s.curv_batch, seed=ctx.seed)
    x, y = batch.images, batch.labels
    n_train = min(len(ctx.train), int(s.curv_train_examples * min(1.0, ctx.scale)))
    start = time.perf_counter()
    member, history = ensemble.fit_one(model, B.subset(ctx.train, n_train, seed=ctx.seed),
                                       ctx.key("curvature_train"), epochs=s.curv_train_epochs,
                                       batch_size=128, learning_rate=0.05, augment=True)
    record = {"train_examples": n_train, "epochs": s.curv_train_epochs,
              "train_accuracy": float(history["train_accuracy"][-1]),
              "train_s": time.perf_counter() - start}
    return model, jax.tree.map(jnp.asarray, member), x, y, record


def part_curvature(ctx: _Context) -> dict:
    s = ctx.sizes
    model, variables, x, y, trained = _curvature_model(ctx)
    loss_fn = models.make_loss_fn(model)
    key = ctx.key("curvature_probe")
    probe_keys = list(jax.random.split(key, s.curv_probes))
    ours = {"ours_fp32_highest": (None, "highest"), "ours_tf32_default": (None, None),
            "ours_bf16": (jnp.bfloat16, None)}
    fns = {name: _ours(loss_fn, variables, x, y, key, probes=s.curv_probes, dtype=d, precision=p)
           for name, (d, p) in ours.items()}
    authors_jax = bench_curvature.make_authors_curvature(model, h=1e-3)
    fns["authors_jax_tf32_default"] = lambda: authors_jax(variables, x, y, probe_keys)
    torch_fn, torch_info = _torch_seed(x, y, width=s.curv_width, num_probes=s.curv_probes)
    if torch_fn is not None:
        fns["authors_torch"] = torch_fn
    timings = time_interleaved(fns, repeats=s.repeats)
    n = len(x)
    rate = {name: n / t.median for name, t in timings.items()}
    rows = [{"method": name, "samples_per_s": rate[name], **t.as_dict()}
            for name, t in timings.items()]
    out = {name: fns[name]() for name in ours}
    ratios = {f"{a}_over_{b}": rate[a] / rate[b]
              for a in ours for b in rate if b.startswith("authors")}
    agreement = {
        "spearman_bf16_vs_fp32_curvature": _spearman(out["ours_bf16"].trace_sq,
                                                    out["ours_fp32_highest"].trace_sq),
        "spearman_tf32_vs_fp32_curvature": _spearman(out["ours_tf32_default"].trace_sq,
                                                    out["ours_fp32_highest"].trace_sq),
        "spearman_bf16_vs_fp32_curvature_trace": _spearman(out["ours_bf16"].trace,
                                                 out["ours_fp32_highest"].trace)}
    t = TARGETS["curvature"]
    met = {"tf32_samples_per_s": rate["ours_tf32_default"] >= t["tf32_samples_per_s"],
           "bf16_samples_per_s": rate["ours_bf16"] >= t["bf16_samples_per_s"],
           "spearman_bf16_vs_fp32": agreement["spearman_bf16_vs_fp32_curvature"]
           >= t["spearman_bf16_vs_fp32"]}
    if torch_fn is not None:
        met["ratio_vs_authors_torch"] = ratios["ours_tf32_default_over_authors_torch"] >= \
            t["ratio_vs_authors_torch"]
    _table_csv(ctx.out / "curvature_rows.csv",
               [{k: r[k] for k in ("method", "samples_per_s", "median_s", "first_s")}
                for r in rows])
    B.print_table(f"curvature: ResNet18 w={s.curv_width}, N={n}, {s.curv_probes} probes — "
                  f"{describe_device()}", rows, ["method", "samples_per_s", "median_s", "first_s"])
    return {"model": f"resnet18 width {s.curv_width}", "batch": n, "num_probes": s.curv_probes,
            "input_shape": list(x.shape[1:]), "trained": trained,
            "samples_per_s": rate, "rows": rows, "ratios": ratios, "agreement": agreement,
            "torch": torch_info, "targets": t, "target_met": met,
            "notes": "ours_* = make_input_curvature(hutchinson, batch_size=N); tf32_default = "
                     "XLA's default precision (TF32 on NVIDIA GPUs); authors_jax = "
                     "bench.curvature.make_authors_curvature (one jitted call per probe); "
                     "authors_torch: random weights, torch's default precision"}


# ----------------------------------------------------------------------------------------------
# DP-SGD step


def part_dpsgd(ctx: _Context) -> dict:
    s = ctx.sizes
    row = bench_dpsgd.measure_step("resnet18_gn", tuple(ctx.train.image_shape), s.dp_batch,
                                   width=s.dp_width, repeats=s.repeats, seed=ctx.seed,
                                   rows=False)
    ratio = row["ratio_dp_over_nonprivate"]
    t = TARGETS["dpsgd"]
    return {"row": row, "ratio_dp_over_nonprivate": ratio, "noise_multiplier": 1.0,
            "l2_clip": 1.0, "accounting": "none (fixed σ through privacy.DPPlan)",
            "targets": t, "target_met": {"ratio_dp_over_nonprivate":
                                         ratio <= t["ratio_dp_over_nonprivate"]}}


# ----------------------------------------------------------------------------------------------
# ensemble: vmapped members vs a loop of single runs


def _fastnet_recipe(ctx: _Context, model, *, epochs: int) -> dict:
    """bench.ensemble's airbench94-like recipe with the whitening stem computed once (it does
    not depend on a member's initial weights) and copied into every member."""
    s = ctx.sizes
    recipe = bench_ensemble.fastnet_recipe(epochs=epochs, batch_size=s.ens_batch, bf16=s.bf16)
    template = models.init_variables(model, jax.random.PRNGKey(0), ctx.train.image_shape)
    stem = models.init_fastnet_whitening(template, ctx.train.images[:5000])["params"]["whiten"]

    def whiten(variables):
        return {**variables, "params": {**variables["params"], "whiten": stem}}

    return {**recipe, "init_transform": whiten}


def _choose_members(design: int, seconds: float, *, epochs: int, member_epoch_s: float) -> int:
    """Largest K ≤ ``design`` (a multiple of 8 from 8 up, at least 6 for leave-one-model-out)
    whose vmapped training fits ``seconds``, assuming the target throughput of 3× the loop."""
    fits = int(seconds / max(epochs * member_epoch_s / TARGETS["ensemble"]["ratio_vs_loop"], 1e-9))
    k = min(design, fits)
    return max(6, k - k % 8 if k >= 8 else k)


def part_ensemble(ctx: _Context) -> dict:
    s = ctx.sizes
    part_start = time.perf_counter()
    model = models.get_model("fastnet", 10, width=s.ens_width)
    key = ctx.key("ensemble")
    n = len(ctx.train)
    loop_masks = data.subset_masks(n, max(2, s.loop_members), fraction=0.5, seed=ctx.seed + 1)
    recipe = _fastnet_recipe(ctx, model, epochs=s.ens_epochs)
    loop_recipe = {**recipe, "epochs": s.loop_epochs}  # only the epoch times are used
    steady, walls, firsts = [], [], []
    for m in range(s.loop_members):  # each train() call compiles again, as a loop of runs would
        _, stamps, wall = bench_ensemble.timed_train(model, ctx.train, loop_masks[m:m + 1], key,
                                                     recipe=loop_recipe, member_ids=[m],
                                                     members_per_chunk=1)
        steady += stamps.steady_epoch_times()
        walls.append(wall)
        firsts.append(stamps.first_epoch())
    t1 = statistics.median(steady)
    compile_s = max(statistics.median(firsts) - t1, 0.0)
    left = ctx.allowance("ensemble") - (time.perf_counter() - part_start) - 1.5 * compile_s
    k = _choose_members(s.ens_members, left, epochs=s.ens_epochs, member_epoch_s=t1)
    masks = data.subset_masks(n, k, fraction=0.5, seed=ctx.seed)
    ens, stamps, wall = bench_ensemble.timed_train(model, ctx.train, masks, key, recipe=recipe,
                                                   members_per_chunk=k)
    epoch_s = statistics.median(stamps.steady_epoch_times())
    acc = ensemble.accuracy(ens, ctx.test)
    ctx.members = (ens, masks)
    per_hour = 3600.0 * k / (s.ens_epochs * epoch_s)
    loop_per_hour = 3600.0 / (s.ens_epochs * t1)
    t = TARGETS["ensemble"]
    result = {
        "model": f"fastnet width {s.ens_width}", "members": k, "design_members": s.ens_members,
        "epochs": s.ens_epochs, "batch_size": s.ens_batch, "bf16": s.bf16,
        "examples_per_member": int(masks.sum(1).min()),
        "members_per_hour": per_hour, "members_per_hour_wall": 3600.0 * k / wall,
        "s_per_member": s.ens_epochs * epoch_s / k, "steady_epoch_s": epoch_s,
        "train_wall_s": wall, "compile_s": max(stamps.first_epoch() - epoch_s, 0.0),
        "mean_test_accuracy": float(acc.mean()), "min_test_accuracy": float(acc.min()),
        "test_accuracy": acc.tolist(),
        "loop": {"runs": s.loop_members, "epochs": s.loop_epochs, "steady_epoch_s": t1,
                 "members_per_hour": loop_per_hour, "wall_s": walls, "compile_s": compile_s},
        "ratio_vs_loop": per_hour / loop_per_hour,
        "recipe": bench_ensemble._echo(recipe), "targets": t}
    result["target_met"] = {
        "members_per_hour": per_hour >= t["members_per_hour"],
        "mean_test_accuracy": result["mean_test_accuracy"] >= t["mean_test_accuracy"],
        "ratio_vs_loop": result["ratio_vs_loop"] >= t["ratio_vs_loop"]}
    B.print_table(f"ensemble: fastnet w={s.ens_width}, K={k} vmapped vs loop — "
                  f"{describe_device()}", [{k2: result[k2] for k2 in (
                      "members", "members_per_hour", "ratio_vs_loop", "mean_test_accuracy",
                      "min_test_accuracy", "compile_s")}])
    return result


# ----------------------------------------------------------------------------------------------
# evidence: the CIFAR-10 membership-inference table


def _mixed_zero_order(loss_fn) -> Any:
    """jit(variables, x (n, ...), y (n,), u, v (P, n, ...), h) -> (n,): mean over probes of
    |ℓ(x+hv+hu) − ℓ(x−hv+hu) − ℓ(x+hv−hu) + ℓ(x−hv−hu)| / (4h²), in the dtype of the inputs.
    The same formula as zero_order_curvature(method="mixed"), with the probes passed in so that
    float32 and float64 see identical u, v (the library draws float64 probes under x64)."""

    def estimate(variables, x, y, u, v, h):
        def one(xi, yi, ui, vi):
            f = lambda z: loss_fn(variables, z, yi)  # noqa: E731
            a, b = h * ui, h * vi
            mixed = f(xi + b + a) - f(xi - b + a) - f(xi + b - a) + f(xi - b - a)
            return jnp.abs(mixed) / (4 * h * h)

        per_probe = jax.vmap(jax.vmap(one), in_axes=(None, None, 0, 0))(x, y, u, v)
        return per_probe.mean(0)

    return jax.jit(estimate)


def _choose_h(loss_fn, variables, x, y, *, probes: int, seed: int) -> tuple[list[dict], float]:
    """Float32 (matmul precision highest) against float64 zero-order "mixed" curvature of one
    member on (x, y), same probes, per h of H_GRID. Chosen h: the smallest whose median
    |f32 − f64| / median |f64| is ≤ H_TOLERANCE (else the most accurate): below it float32
    cancellation (≈ eps·ℓ/h²) dominates."""
    rng = np.random.default_rng(seed)
    u, v = (rng.choice(np.float32([-1.0, 1.0]), size=(probes, *x.shape)) for _ in range(2))
    fn = _mixed_zero_order(loss_fn)
    as64 = lambda t: jax.tree.map(  # noqa: E731
        lambda a: np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)
        else np.asarray(a), t)
    rows = []
    for h in H_GRID:
        with _precision("highest"):
            a = np.asarray(fn(variables, x, y, u, v, np.float32(h)), np.float64)
        with jax.enable_x64(True):
            b = np.asarray(fn(as64(variables), *as64((x, y, u, v)), np.float64(h)))
        err = float(np.median(np.abs(a - b)) / max(np.median(np.abs(b)), 1e-30))
        rows.append({"h": h, "median_rel_diff_f32_vs_f64": err,
                     "spearman_f32_vs_f64": _spearman(a, b), "median_f64": float(np.median(b))})
    ok = [r["h"] for r in rows if r["median_rel_diff_f32_vs_f64"] <= H_TOLERANCE]
    best = min(ok) if ok else min(rows, key=lambda r: r["median_rel_diff_f32_vs_f64"])["h"]
    return rows, float(best)


def _signal_rates(ctx, ens, loss_fn, h: float, chunk: int) -> tuple[Any, Any, dict]:
    """The held white-box (tr(H²)) and zero-order estimators, and their seconds per example of
    one member, timed on one chunk after a compile call."""
    s = ctx.sizes
    wb = make_input_curvature(loss_fn, num_probes=s.ev_probes, batch_size=chunk)
    zo = make_zero_order_curvature(loss_fn, num_probes=s.ev_probes, h=h, method="mixed",
                                   batch_size=chunk)
    x, y, member = ctx.train.images[:chunk], ctx.train.labels[:chunk], ens.member(0)
    t_wb = time_call(lambda: wb(member, x, y, ctx.key("evidence_wb")), repeats=1)

    def run_zo():
        with _precision("highest"):
            return zo(member, x, y, ctx.key("evidence_zo"))

    t_zo = time_call(run_zo, repeats=1)
    rates = {"white_box_s_per_example": t_wb.median / chunk,
             "zero_order_s_per_example": t_zo.median / chunk,
             "white_box_compile_s": t_wb.first, "zero_order_compile_s": t_zo.first}
    return wb, zo, rates


def _eval_examples(ctx, k: int, n: int, rates: dict, chunk: int) -> int:
    """Examples to evaluate: 70 % of the time left (after 20 s for attacks and files) spent on
    K members × both signals, in whole chunks, at least ``ev_min_examples``."""
    per_example = k * (rates["white_box_s_per_example"] + rates["zero_order_s_per_example"])
    fit = int(0.7 * max(ctx.left() - 20.0, 0.0) / max(per_example, 1e-9))
    fit -= fit % chunk
    return int(min(n, max(fit, min(ctx.sizes.ev_min_examples, n))))


def _attack_table(scores: dict, masks: np.ndarray, *, bootstrap: int, seed: int) -> list[dict]:
    """roc_metrics of each attack over (target member, example) pairs, example-cluster CIs."""
    cluster = np.broadcast_to(np.arange(masks.shape[1]), masks.shape)
    rows = []
    for name in TABLE_ATTACKS:
        m = mia.roc_metrics(scores[name], masks, bootstrap=bootstrap, seed=seed, cluster=cluster)
        row = {"attack": name, **{k: m[k] for k in ("auroc", "balanced_accuracy",
                                                    "balanced_accuracy_eer", "tpr_at_fpr_0_1pct",
                                                    "tpr_at_fpr_1pct")}}
        row.update({k: m[k] for k in m if k.endswith("_ci")})
        paper = PAPER_CIFAR10 if name == PAPER_CIFAR10["attack"] else {}
        row["paper_auroc"] = paper.get("auroc")
        row["paper_balanced_accuracy_eer"] = paper.get("balanced_accuracy_eer")
        rows.append(row)
    return rows


def _evidence_files(ctx, scores, masks, idx, mem, mem_se, curv_in, zo_in, rows, h_rows):
    labels = ctx.train.labels[idx]
    report.write_csv(ctx.out / "evidence_examples.csv", {
        "index": idx, "label": labels, "mem": mem[idx], "mem_stderr": mem_se[idx],
        "curvature_in_mean": curv_in, "zero_order_in_mean": zo_in})
    _table_csv(ctx.out / "evidence_attacks.csv", rows)
    _table_csv(ctx.out / "evidence_zero_order_h.csv", h_rows)
    curves = {name: mia.roc_curve(scores[name], masks) for name in TABLE_ATTACKS[:7]}
    aurocs = {r["attack"]: r["auroc"] for r in rows}
    report.figure_roc(curves, ctx.out / "evidence_roc.png", aurocs=aurocs,
                      title=f"{ctx.data_info['dataset']}: K={masks.shape[0]} targets")
    report.figure_mem_vs_curvature(mem[idx], curv_in, ctx.out / "evidence_mem_vs_curvature.png",
                                   quantity="curvature_in")


def _members_for_evidence(ctx: _Context):
    """The ensemble part's members, or (if that part failed) a new ensemble of the same recipe."""
    if ctx.members is not None:
        return (*ctx.members, "the ensemble part's members")
    s = ctx.sizes
    model = models.get_model("fastnet", 10, width=s.ens_width)
    masks = data.subset_masks(len(ctx.train), s.ens_members, fraction=0.5, seed=ctx.seed)
    ens = ensemble.train(model, ctx.train, masks, ctx.key("ensemble"),
                         **_fastnet_recipe(ctx, model, epochs=s.ens_epochs))
    return ens, masks, "trained here (the ensemble part did not finish)"


def part_evidence(ctx: _Context) -> dict:
    s = ctx.sizes
    ens, masks_all, source = _members_for_evidence(ctx)
    k, n = masks_all.shape
    images, labels = ctx.train.images, ctx.train.labels
    views = (images, np.ascontiguousarray(images[:, :, ::-1]))  # original + horizontal flip
    logits = np.stack([ensemble.predict(ens, v) for v in views], axis=1)        # (K, 2, N, C)
    test_logits = ensemble.predict(ens, ctx.test.images)                         # (K, Z, C)
    correct = logits[:, 0].argmax(-1) == labels[None]
    mem, mem_se = memorization.feldman_zhang(correct, masks_all)
    mem = np.round(mem, 12)  # p_in − p_out with other denominators: equal values tie exactly
    loss_fn = ensemble.member_loss_fn(ens)
    sample = data.random_subset(n, s.ev_h_examples, seed=ctx.seed + 2)
    h_rows, h = _choose_h(loss_fn, ens.member(0), images[sample], labels[sample],
                          probes=s.ev_probes, seed=ctx.seed)
    chunk = min(s.ev_chunk, n)
    wb, zo, rates = _signal_rates(ctx, ens, loss_fn, h, chunk)
    n_eval = _eval_examples(ctx, k, n, rates, chunk)
    idx = data.random_subset(n, n_eval, seed=ctx.seed)
    x, y, masks = images[idx], labels[idx], masks_all[:, idx]
    start = time.perf_counter()
    member_keys = [int(m) for m in ens.member_ids]
    curv = np.stack([wb(ens.member(j), x, y, jax.random.fold_in(ctx.key("evidence_wb"), m))
                     .trace_sq for j, m in enumerate(member_keys)])                 # (K, n)
    with _precision("highest"):
        zero = np.stack([zo(ens.member(j), x, y, jax.random.fold_in(ctx.key("evidence_zo"), m))
                         for j, m in enumerate(member_keys)])                        # (K, n)
    signals_s = time.perf_counter() - start
    scores = attack_scores(logits[:, :, idx], y, masks, np.abs(curv), np.abs(zero), test_logits,
                           ctx.test.labels)
    rows = _attack_table(scores, masks, bootstrap=s.ev_bootstrap, seed=ctx.seed)
    curv_in = memorization.masked_mean(curv, masks)
    zo_in = memorization.masked_mean(zero, masks)
    _evidence_files(ctx, scores, masks, idx, mem, mem_se, curv_in, zo_in, rows, h_rows)
    B.print_table(f"evidence: {ctx.data_info['dataset']}, K={k} targets × {n_eval} examples "
                  f"(paper: Curvature Clues CIFAR-10, zero-order NLL)", rows,
                  ["attack", "auroc", "balanced_accuracy", "balanced_accuracy_eer",
                   "tpr_at_fpr_0_1pct", "tpr_at_fpr_1pct", "paper_auroc",
                   "paper_balanced_accuracy_eer"])
    return {
        "dataset": ctx.data_info["dataset"], "members": k, "members_source": source,
        "train_examples": n, "evaluated_examples": n_eval, "num_probes": s.ev_probes,
        "mean_train_accuracy_in": float(correct[masks_all].mean()),
        "memorization": {"mean": float(np.nanmean(mem)), "examples": n,
                         "fraction_above_0_5": float(np.nanmean(mem > 0.5))},
        "spearman_mem_vs_curvature": _spearman(mem[idx], curv_in),
        "spearman_mem_vs_curvature_all_members": _spearman(mem[idx], curv.mean(0)),
        "spearman_mem_vs_zero_order": _spearman(mem[idx], zo_in),
        "zero_order": {"h": h, "dtype": "float32, matmul precision highest", "method": "mixed",
                       "h_table": h_rows, "tolerance": H_TOLERANCE,
                       "criterion": "smallest h of the grid whose float32 estimate is within "
                                    "the tolerance of float64 at the same h and probes"},
        "white_box": {"statistic": "tr(H²) (Hutchinson, exact HVPs)",
                      "precision": "XLA default (TF32 on NVIDIA GPUs)"},
        "rates": rates, "signals_s": signals_s, "table": rows, "paper": PAPER_CIFAR10,
        "views": ["original", "horizontal flip"],
        "notes": "curvature = tr(H²)-based; attacks leave-one-model-out over all K members "
                 "(jaxcurv.workflow.attack_scores); memorization over all training examples"}


# ----------------------------------------------------------------------------------------------
# the run


# ----------------------------------------------------------------------------------------------
# peers: every ratio of bench.peers on this device


# --tiny checks the wiring of this part with the two sections that need no training; every
# section's own tiny run is tests/test_peers.py (`python -m bench.peers --tiny`)
TINY_PEER_SECTIONS = ("attacks", "limit")


def part_peers(ctx: _Context) -> dict:
    """``bench.peers`` on this device (tiny mode: TINY sizes, TINY_PEER_SECTIONS): curvature vs
    the authors' PyTorch algorithm and torch.func HVPs, DP-SGD vs Opacus, members/hour vs PyTorch
    loops, LiRA/RMIA vs the published code, FLOPs vs the limit. Files in DIR/peers/."""
    tiny = ctx.sizes is TINY
    result = bench_peers.run(bench_peers.TINY if tiny else bench_peers.FULL,
                             out=ctx.out / "peers", seed=ctx.seed,
                             splits=(ctx.train, ctx.test, ctx.data_info), tiny=tiny,
                             sections=TINY_PEER_SECTIONS if tiny else bench_peers.SECTIONS)
    rows = [{k: r.get(k) for k in ("section", "name", "ours", "peer", "status", "speedup",
                                   "ours_rate", "peer_rate", "unit")} for r in result["rows"]]
    bad = [r["name"] for r in result["rows"] if r["status"] in ("failed", "check failed")]
    if bad:
        raise RuntimeError(f"bench.peers rows failed or disagreed: {bad} (see peers/peers.json)")
    return {"rows": rows, "files": ["peers/peers.json", "peers/peers.md"],
            "torch": result["environment"].get("torch"),
            "opacus": result["environment"].get("opacus")}


PARTS = (("curvature", part_curvature), ("dpsgd", part_dpsgd), ("ensemble", part_ensemble),
         ("evidence", part_evidence), ("peers", part_peers))


def _run_part(ctx: _Context, name: str, fn) -> dict:
    """fn(ctx) with its wall time and budget; an exception is recorded, not raised, so the other
    parts still run and report."""
    start, cpu = time.perf_counter(), time.process_time()
    print(f"\n### {name} (design budget {DESIGN_BUDGET_S[name]} s on one H100; "
          f"{ctx.left():.0f} s of the run's budget left)", flush=True)
    try:
        out = {"status": "ok", **fn(ctx)}
    except Exception as err:  # noqa: BLE001 - one failing part must not lose the others
        traceback.print_exc()
        out = {"status": "error", "error": f"{type(err).__name__}: {err}",
               "traceback": traceback.format_exc()[-4000:]}
    out["wall_s"] = time.perf_counter() - start
    out["cpu_s"] = time.process_time() - cpu  # this process's CPU time (shared hosts: see wall)
    out["design_budget_s"] = DESIGN_BUDGET_S[name]
    return out


@dataclasses.dataclass(frozen=True)
class SuiteConfig(DataFolder, B.BenchSettings):
    """Settings of ``python -m bench.suite``."""

    out: str | None = setting(None, "folder for suite.json, CSV and PNG files", metavar="DIR",
                              required=True)
    budget_s: float = setting(DESIGN_TOTAL_S, "seconds the whole run may take; sizes scale to "
                              "fit", low=0.0, open_low=True, high=1e6)
    tiny: bool = setting(False, "toy sizes (CPU, about 100 s of CPU time)")

    def check(self) -> None:
        if not self.out:
            raise ConfigError("the suite needs an output folder: --out DIR")


def parse_args(argv=None) -> SuiteConfig:
    return B.parse_args(SuiteConfig, argv, description=__doc__.split("\n\n")[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(sizes, args.budget_s, time.perf_counter(), out, args.seed)
    result: dict[str, Any] = {"environment": _environment(),
                              **{name: {"status": "not run"} for name, _ in PARTS}}
    result["suite"] = {"tiny": args.tiny, "budget_s": args.budget_s,
                       "design_budget_s": DESIGN_BUDGET_S, "design_total_s": DESIGN_TOTAL_S,
                       "design_device": "one H100", "sizes": dataclasses.asdict(sizes),
                       "targets": TARGETS, "command": sys.argv}
    print(f"bench.suite — {describe_device(result['environment'])}", flush=True)
    _load_data(ctx, args.data_dir)
    result["suite"]["data"] = ctx.data_info
    result["suite"]["startup_s"] = time.perf_counter() - ctx.start
    report.write_json(out / "suite.json", result)
    for name, fn in PARTS:
        result[name] = {"status": "running"}
        report.write_json(out / "suite.json", result)
        result[name] = _run_part(ctx, name, fn)
        result["environment"] = _environment()
        result["suite"]["elapsed_s"] = time.perf_counter() - ctx.start
        report.write_json(out / "suite.json", result)
    failed = [name for name, _ in PARTS if result[name]["status"] != "ok"]
    print(f"\nwrote {out / 'suite.json'} in {result['suite']['elapsed_s']:.0f} s"
          + (f"; failed parts: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    with B.one_line_errors("suite"):
        sys.exit(main())
