"""Benchmark: per-sample tr(H) + tr(H²) of a CIFAR ResNet18, ours vs the published algorithm.

Ours: ``jaxcurv.curvature.make_input_curvature(..., method="hutchinson")`` (the compiled form of
``input_curvature``, held across the timed calls) — exact Hessian-vector products (forward over
reverse), all probes and examples in one compiled call per chunk.
Baseline ("authors" in the tables): a faithful JAX re-implementation of the algorithm of the
authors' published code — finite differences with the *batch-mean* loss L(X) = mean_i ℓ(xᵢ), one
jitted call per probe from a Python loop; each call differentiates L(X + V) − L(X) with
V = h·(R + 1e-7), R Rademacher (so ∇L(X) is recomputed every probe, as the published code does),
and accumulates per example vᵀ(Δg)/h (trace) and ‖Δg/h‖² (trace_sq) with
Δg = B·∇ₓᵢ[L(X+V) − L(X)] (per-example scale). A second baseline row hoists
∇L(X) out of the loop (a stronger baseline than the published code).

Both run on the same model, batch and dtype in the same process; samples/s = N / median wall time
of a full pass over the N benchmark examples (compile excluded, block_until_ready before reading
the clock). Also: Spearman of bf16 vs fp32 trace_sq (ours) on the benchmark batch, a sweep of
``batch_size`` × ``probe_batch`` (``--tune``), and scaling over 8 fake CPU devices
(``--multi-device``; on 2 real cores that measures sharding overhead, not speedup).

Model: models.get_model("resnet18", 10, width=w) with BatchNorm in inference mode
(models.make_loss_fn); the running statistics are set to the benchmark batch's statistics (one
train-mode pass) so the untrained network's logits are not degenerate. Inputs: CIFAR-10 test
images when local CIFAR-10 files are found (``--data-dir`` or ``$JAXCURV_DATA_DIR``), else uniform
noise.

    python -m bench.curvature --quick            # CPU, ~2 min
    python -m bench.curvature                    # full protocol: width 64, batch 512 (GPU)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # python bench/curvature.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from jaxcurv import models  # noqa: E402
from jaxcurv.curvature import make_input_curvature  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.workflow import (  # noqa: E402
    Timer,
    Timing,
    describe_device,
    time_call,
    time_interleaved,
)
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import CurvatureProbes, DataFolder, redefault, setting  # noqa: E402

_TRAIN_KEY, _PROBE_KEY = 7, 1  # fold_in ids of PRNGKey(--seed)
GPU_TARGET = {"bf16": 14_000.0, "fp32": 7_500.0, "ratio": 12.0, "spearman": 0.99}
DTYPES = {"fp32": None, "bf16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class CurvatureBench(DataFolder, B.Repeats, B.BenchConfig):
    """Settings of ``python -m bench.curvature``."""

    repeats: int | None = B.remode(B.Repeats, "repeats", 5, 3)
    width: int | None = B.per_mode(64, 16, "ResNet18 width", low=1, high=4096)
    batch: int | None = B.per_mode(512, 64, "benchmark examples N", metavar="N", low=1,
                                   high=1 << 20)
    num_probes: int = redefault(CurvatureProbes, "num_probes", 10)
    batch_size: int | None = setting(
        None, "input_curvature's batch_size", low=1, high=1 << 20,
        none="--batch (one chunk); with --quick the library's default, 256 per device")
    probe_batch: int | None = setting(
        None, "input_curvature's probe_batch", low=1, high=10_000,
        none="the library's: all probes on a CPU, 1 on a GPU")
    dtypes: tuple[str, ...] = setting(("fp32", "bf16"), "compute dtypes of the main table: "
                                      "fp32 and/or bf16")
    data: str = setting("auto", "auto: CIFAR-10 test images when local CIFAR-10 files are "
                        "found, else uniform noise; random: uniform noise",
                        choices=("auto", "random"))
    train_epochs: int | None = B.per_mode(2, 0, "train the ResNet18 on CIFAR-10 first (0: "
                                          "untrained, BatchNorm statistics of the benchmark "
                                          "batch)", low=0, high=10_000)
    train_examples: int | None = B.per_mode(50_000, 2_000, "CIFAR-10 training images for "
                                            "--train-epochs", low=1, high=10_000_000)
    main: bool = setting(True, "skip ours vs the published algorithm", flag="--no-main",
                         negate=True)
    hoisted_baseline: bool = setting(True, "skip the stronger baseline row with ∇L(X) hoisted",
                                     flag="--no-hoisted-baseline", negate=True)
    tune: bool = setting(False, "sweep input_curvature's batch_size × probe_batch")
    tune_batch_sizes: tuple[int, ...] | None = setting(
        None, "batch sizes of the --tune sweep", none="N/4, N/2 and N")
    tune_probe_batches: tuple[int, ...] = setting((1, 2, 5, 10), "probe batches of the --tune "
                                                  "sweep (divisors of --num-probes)")
    tune_dtype: str = setting("fp32", "compute dtype of the --tune sweep", choices=tuple(DTYPES))
    tune_repeats: int = setting(2, "timed repeats per --tune setting", low=1, high=100_000)
    multi_device: bool = setting(False, "also measure 8 fake CPU devices vs 1 (a subprocess; CPU "
                                 "only)")
    child_max_rss_gb: float = setting(8.0, "kill the 8-device child process above this resident "
                                      "memory (GB)", low=0.0, open_low=True, high=1e6)
    devices_child: bool = setting(False, "run as the 8-device child process", flag=None)

    def derive(self) -> CurvatureBench:
        n = self.batch
        return dataclasses.replace(
            self, batch_size=self.batch_size or (None if self.quick else n),
            tune_batch_sizes=self.tune_batch_sizes or tuple(sorted({max(1, n // 4),
                                                                    max(1, n // 2), n})))

    def check(self) -> None:
        B.check_choices("--dtypes", self.dtypes, tuple(DTYPES))
        for value in (*self.tune_batch_sizes, *self.tune_probe_batches):
            if value < 1:
                raise ConfigError(f"--tune-batch-sizes and --tune-probe-batches take positive "
                                  f"integers, got {value}")


# ----------------------------------------------------------------------------------------------
# set-up


def _images(n: int, source: str, seed: int, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    """(x (n, 32, 32, 3) float32 in [0, 1], y (n,) int32, description): n CIFAR-10 test images
    (the subset of seed + 1, as every benchmark draws test subsets) or uniform noise."""
    splits = B.cifar10(data_dir, test_size=n, seed=seed) if source == "auto" else None
    if splits is not None:
        test = splits[1]
        return test.images, test.labels, "CIFAR-10 test images"
    rng = np.random.default_rng(seed)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32), "uniform noise in [0, 1]"


def _calibrated_variables(model, variables, x: np.ndarray) -> dict:
    """BatchNorm running statistics := statistics of batch ``x``: one train-mode pass gives
    r₁ = 0.9·r₀ + 0.1·b (flax momentum 0.9), hence b = (r₁ − 0.9·r₀)/0.1 (variances floored at 0)."""
    _, r1 = models.apply_train(model, variables, jnp.asarray(x))

    def solve(path, new, old):
        batch = (new - 0.9 * old) / 0.1
        return jnp.maximum(batch, 0.0) if getattr(path[-1], "key", None) == "var" else batch

    out = dict(variables)
    out["batch_stats"] = jax.tree_util.tree_map_with_path(solve, r1, variables["batch_stats"])
    return out


def _trained_variables(model, variables, *, epochs: int, examples: int, seed: int,
                       data_dir) -> dict:
    """Variables after ``epochs`` of SGD on ``examples`` CIFAR-10 training images (realistic
    per-example curvature spread; an untrained net's spread is narrow, which makes rank
    agreement between dtypes look worse than on a trained model)."""
    from jaxcurv import ensemble

    train, _ = B.cifar10(data_dir, required="--train-epochs", train_size=examples, seed=seed)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TRAIN_KEY)
    member, _ = ensemble.fit_one(model, train, key,
                                 epochs=epochs, batch_size=128, learning_rate=0.05,
                                 augment=True)
    return jax.tree.map(jnp.asarray, member)


def _cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` cast to ``dtype`` (unchanged when dtype is None)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype,
                                                                     jnp.floating) else a, tree)


# ----------------------------------------------------------------------------------------------
# the published algorithm, re-implemented faithfully in JAX


def make_authors_curvature(model, *, h: float = 1e-3, compute_dtype=None, hoist_g0: bool = False):
    """The algorithm of the authors' published code: ``fn(variables, x, y, probe_keys) ->
    (trace, trace_sq)`` (N,) with a Python loop over probes.

    Per probe one jitted call: V = h·(R + 1e-7); Δg = ∇ₓ[L(X+V) − L(X)] with L the batch-mean loss
    (``hoist_g0``: ∇L(X) computed once before the loop instead); Hv ≈ B·Δg/h per example;
    accumulates vᵀHv ≈ Rᵀ(B·Δg)/h and ‖B·Δg/h‖².
    """

    def batch_loss(params_c, z, y):
        logits = model.apply(params_c, z.astype(compute_dtype or z.dtype), train=False)
        return models.cross_entropy(logits, y).mean()

    grad_l = jax.grad(batch_loss, argnums=1)

    @jax.jit
    def g0_fn(variables, x, y):
        return grad_l(_cast_floats(variables, compute_dtype), x, y)

    @jax.jit
    def probe(variables, x, y, key, g0, acc_tr, acc_sq):
        vc = _cast_floats(variables, compute_dtype)
        r = jax.random.rademacher(key, x.shape, x.dtype)
        v = h * (r + 1e-7)
        if g0 is None:
            dg = jax.grad(lambda z: batch_loss(vc, z + v, y) - batch_loss(vc, z, y))(x)
        else:
            dg = grad_l(vc, x + v, y) - g0
        hv = dg.astype(jnp.float32) * (x.shape[0] / h)
        axes = tuple(range(1, x.ndim))
        return acc_tr + jnp.sum(r * hv, axis=axes), acc_sq + jnp.sum(hv * hv, axis=axes)

    def curvature(variables, x, y, probe_keys):
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        g0 = g0_fn(variables, x, y) if hoist_g0 else None
        acc_tr = acc_sq = jnp.zeros(x.shape[0], jnp.float32)
        for key in probe_keys:  # the published code's loop over probes
            acc_tr, acc_sq = probe(variables, x, y, key, g0, acc_tr, acc_sq)
        p = len(probe_keys)
        return acc_tr / p, acc_sq / p

    return curvature


# ----------------------------------------------------------------------------------------------
# measurements


def _ours(loss_fn, variables, x, y, key, *, num_probes, dtype, batch_size, probe_batch,
          devices=None):
    """A call of the held estimator (compiled on its first call, reused by the repeats)."""
    estimate = make_input_curvature(loss_fn, num_probes=num_probes, method="hutchinson",
                                    batch_size=batch_size, probe_batch=probe_batch,
                                    compute_dtype=dtype, devices=devices)

    def run():
        return estimate(variables, x, y, key)

    return run


def _row(name, dtype, n, timing: Timing, **extra):
    return {"method": name, "dtype": dtype, "samples_per_s": n / timing.median,
            "median_s": timing.median, "compile+first_s": timing.first,
            "load": timing.load, **extra}


def measure_main(config, model, variables, x, y) -> dict:
    """Ours vs the published algorithm, fp32 and bf16; Spearman bf16 vs fp32."""
    loss_fn = models.make_loss_fn(model)
    key = jax.random.PRNGKey(config.seed)
    n = len(x)
    probe_keys = list(jax.random.split(jax.random.fold_in(key, _PROBE_KEY), config.num_probes))
    rows, ratios, outputs = [], [], {}
    labels = {"ours": "ours: input_curvature(hutchinson)",
              "seed": "seed: FD, batch-mean loss, probe loop",
              "hoisted": "seed, ∇L(X) hoisted out of the loop"}
    for name in config.dtypes:
        dtype = DTYPES[name]
        fns = {"ours": _ours(loss_fn, variables, x, y, key, num_probes=config.num_probes,
                             dtype=dtype, batch_size=config.batch_size,
                             probe_batch=config.probe_batch)}
        for label, hoist in (("authors", False), ("hoisted", True)):
            if hoist and not config.hoisted_baseline:
                continue
            authors_fn = make_authors_curvature(model, compute_dtype=dtype, hoist_g0=hoist)
            fns[label] = (lambda f=authors_fn: f(variables, x, y, probe_keys))
        # interleaved repeats: a change of machine load hits every method alike
        timings = time_interleaved(fns, repeats=config.repeats)
        for label, t in timings.items():
            rows.append(_row(labels[label], name, n, t))
        outputs[name] = fns["ours"]()
        if name == "fp32":
            outputs["authors_fp32"] = tuple(np.asarray(a) for a in fns["authors"]())
        ratio = {"dtype": name, "ours_samples_per_s": n / timings["ours"].median,
                 "authors_samples_per_s": n / timings["authors"].median,
                 "ratio_vs_authors": timings["authors"].median / timings["ours"].median}
        if "hoisted" in timings:
            ratio["ratio_vs_hoisted"] = timings["hoisted"].median / timings["ours"].median
        ratio["load"] = timings["ours"].load
        ratios.append(ratio)
    B.print_table(f"per-sample tr(H)+tr(H²), ResNet18 w={config.width}, N={n}, "
                  f"{config.num_probes} probes — {describe_device()}", rows,
                  ["method", "dtype", "samples_per_s", "median_s", "compile+first_s", "load"])
    B.print_table("ratio ours / published algorithm (same process, median of repeats)", ratios)
    agreement = {}
    if "fp32" in outputs and "bf16" in outputs:
        agreement["spearman_bf16_vs_fp32_curvature"] = float(
            stats.spearmanr(outputs["bf16"].trace_sq, outputs["fp32"].trace_sq).statistic)
        agreement["spearman_bf16_vs_fp32_curvature_trace"] = float(
            stats.spearmanr(outputs["bf16"].trace, outputs["fp32"].trace).statistic)
    if "fp32" in outputs and "authors_fp32" in outputs:
        # different probes: agreement is statistical (both estimate tr(H²) per example)
        agreement["spearman_authors_vs_ours_curvature_fp32"] = float(
            stats.spearmanr(outputs["authors_fp32"][1], outputs["fp32"].trace_sq).statistic)
        # ReLU nets: finite differences cross activation boundaries, so the authors' ‖Δg/h‖²
        # grows like 1/h and exceeds the exact tr(H²) by orders of magnitude (see README)
        agreement["median_curvature_authors_over_ours_fp32"] = float(
            np.median(outputs["authors_fp32"][1]) / np.median(outputs["fp32"].trace_sq))
    if agreement:
        B.print_table("agreement on the benchmark batch", [agreement])
    return {"rows": rows, "ratios": ratios, "agreement": agreement}


def measure_tune(config, model, variables, x, y) -> dict:
    """Sweep of input_curvature's batch_size × probe_batch (fp32 unless --tune-dtype)."""
    loss_fn = models.make_loss_fn(model)
    key = jax.random.PRNGKey(config.seed)
    n = len(x)
    rows = []
    for bs in config.tune_batch_sizes:
        for pb in config.tune_probe_batches:
            if config.num_probes % pb:
                continue
            run = _ours(loss_fn, variables, x, y, key, num_probes=config.num_probes,
                        dtype=DTYPES[config.tune_dtype], batch_size=bs, probe_batch=pb)
            try:
                t = time_call(run, repeats=config.tune_repeats)
            except Exception as err:  # e.g. out of memory for a large probe batch on a GPU
                rows.append({"batch_size": bs, "probe_batch": pb, "samples_per_s": float("nan"),
                             "error": type(err).__name__})
                continue
            rows.append({"batch_size": bs, "probe_batch": pb, "samples_per_s": n / t.median,
                         "median_s": t.median, "compile+first_s": t.first, "load": t.load})
    ok = [r for r in rows if r["samples_per_s"] == r["samples_per_s"]]
    best = max(ok, key=lambda r: r["samples_per_s"]) if ok else None
    B.print_table(f"tuning input_curvature ({config.tune_dtype}, N={n}, width {config.width}) — "
                  f"{describe_device()}", rows)
    if best:
        print(f"fastest: batch_size={best['batch_size']}, probe_batch={best['probe_batch']} "
              f"({best['samples_per_s']:.1f} samples/s)")
    return {"rows": rows, "best": best}


def measure_devices_child(config, model, variables, x, y) -> dict:
    """Run inside a process with 8 fake CPU devices: devices=None (all 8) vs one device."""
    loss_fn = models.make_loss_fn(model)
    key = jax.random.PRNGKey(config.seed)
    n = len(x)
    out = {"num_devices": jax.device_count()}
    fns = {label: _ours(loss_fn, variables, x, y, key, num_probes=config.num_probes, dtype=None,
                        batch_size=config.batch_size, probe_batch=config.probe_batch, devices=devs)
           for label, devs in (("all devices", None), ("one device", [jax.devices()[0]]))}
    timings = time_interleaved(fns, repeats=config.repeats)
    results = {label: fn() for label, fn in fns.items()}
    for label, t in timings.items():
        out[label] = {"samples_per_s": n / t.median, **t.as_dict()}
    out["max_abs_diff_curvature"] = float(np.max(np.abs(results["all devices"].trace_sq
                                                       - results["one device"].trace_sq)))
    return out


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def _run_watched(cmd, env, *, max_rss_gb: float):
    """Run ``cmd``; kill it (only it) if its resident memory exceeds ``max_rss_gb``, so 8 fake
    devices cannot exhaust the host. Returns (stdout, stderr, returncode, peak RSS GB)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _rss_gb(proc.pid))
            if peak > max_rss_gb:
                proc.kill()
                print(f"child killed: resident memory {peak:.1f} GB > {max_rss_gb} GB",
                      file=sys.stderr)
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), proc.returncode, peak


def measure_devices(config) -> dict:
    """Spawn this script with XLA_FLAGS=--xla_force_host_platform_device_count=8."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, __file__, "--set", "devices_child=true", "--width", str(config.width),
           "--batch", str(config.batch), "--num-probes", str(config.num_probes), "--repeats",
           str(config.repeats), "--data", config.data, "--seed", str(config.seed),
           "--train-epochs", "0", *(["--quick"] if config.quick else [])]
    for flag, value in (("--batch-size", config.batch_size), ("--probe-batch", config.probe_batch)):
        if value:
            cmd += [flag, str(value)]
    if config.data_dir:
        cmd += ["--data-dir", config.data_dir]
    stdout, stderr, returncode, peak = _run_watched(cmd, env, max_rss_gb=config.child_max_rss_gb)
    lines = [l for l in stdout.splitlines() if l.startswith("DEVICES_JSON ")]
    if returncode or not lines:
        print(stdout[-3000:], stderr[-3000:], file=sys.stderr)
        raise RuntimeError(f"the 8-fake-device child process failed (exit {returncode}, peak "
                           f"RSS {peak:.1f} GB)")
    res = json.loads(lines[-1][len("DEVICES_JSON "):])
    res["child_peak_rss_gb"] = peak
    one, alln = res["one device"], res["all devices"]
    row = {"devices": f"8 fake CPU devices vs 1 (on {os.cpu_count()} cores)",
           "samples_per_s_8": alln["samples_per_s"], "samples_per_s_1": one["samples_per_s"],
           "speedup_8_vs_1": alln["samples_per_s"] / one["samples_per_s"],
           "max_abs_diff_curvature": res["max_abs_diff_curvature"],
           "load": alln["load_avg_1min"]}
    B.print_table("scaling over devices (8 fake CPU devices share the same cores: this measures "
                  "sharding overhead, not a speedup)", [row])
    return {**res, "summary": row}


# ----------------------------------------------------------------------------------------------


def main(config: CurvatureBench) -> None:
    x, y, source = _images(config.batch, config.data, config.seed, config.data_dir)
    model = models.get_model("resnet18", 10, width=config.width)
    variables = models.init_variables(model, jax.random.PRNGKey(config.seed), x.shape[1:])
    if config.train_epochs:
        timer = Timer()
        variables = _trained_variables(model, variables, epochs=config.train_epochs,
                                       examples=config.train_examples, seed=config.seed,
                                       data_dir=config.data_dir)
        trained = (f"trained {config.train_epochs} epoch(s) on {config.train_examples} "
                   f"CIFAR-10 images in {timer.elapsed():.0f} s")
    else:
        variables = _calibrated_variables(model, variables, x)
        trained = "untrained (BatchNorm statistics of the benchmark batch)"
    if config.devices_child:
        child = measure_devices_child(config, model, variables, x, y)
        print("DEVICES_JSON " + json.dumps(child))
        return
    print(f"ResNet18 width {config.width} ({models.count_params(variables):,} params), "
          f"{trained}; N = {config.batch} {source}, {config.num_probes} probes; "
          f"{describe_device()}")
    result = {"data": source, "model": trained, "gpu_targets": GPU_TARGET}
    timer = Timer()
    if config.main:
        result["main"] = measure_main(config, model, variables, x, y)
    if config.tune:
        result["tune"] = measure_tune(config, model, variables, x, y)
    if config.multi_device:
        if jax.default_backend() != "cpu":
            print("--multi-device uses fake CPU devices; skipped on", jax.default_backend())
        else:
            result["devices"] = measure_devices(config)
    if jax.default_backend() == "gpu" and "main" in result:
        by = {r["dtype"]: r for r in result["main"]["ratios"]}
        checks = []
        for name in ("fp32", "bf16"):
            if name in by:
                checks.append({"dtype": name, "samples_per_s": by[name]["ours_samples_per_s"],
                               "target": GPU_TARGET[name],
                               "met": by[name]["ours_samples_per_s"] >= GPU_TARGET[name],
                               "ratio_vs_authors": by[name]["ratio_vs_authors"]})
        B.print_table("GPU targets (one H100: ≥14,000 bf16, ≥7,500 fp32 samples/s, ≈12× seed)",
                      checks)
    result["wall_s"] = timer.elapsed()
    B.write_results(config, "curvature", result)


if __name__ == "__main__":
    B.cli(CurvatureBench, main, name="curvature", description=__doc__)
