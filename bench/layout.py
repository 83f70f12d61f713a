"""Benchmark: the cost of a training step under each layout of members and steps, and of
per-epoch records — what decides ``ensemble.train``'s defaults on CPU.

- ``steps``: milliseconds per member-step (gradient of the batch-mean loss and an SGD update,
  jitted) on one digits batch, for one model called directly, K members under ``vmap``, K members
  under ``lax.map``, 12 steps of one model in a ``lax.scan`` (rolled and fully unrolled), and the
  MLP directly and under ``vmap``. XLA:CPU runs convolutions inside loop bodies slowly and turns
  a vmap over conv weights into grouped convolutions; this table shows by how much.
- ``convs``: milliseconds of the forward pass, the input gradient and the weight gradient of
  each convolution of the ``cnn`` model on 32×32×3 batches (CIFAR-10's shape; random inputs),
  each relative to its forward pass (the FLOPs of the three are equal), and of its stride-2
  convolution written as a stride-1 convolution sampled at odd positions (the same output,
  checked first): where XLA:CPU spends the CNN's training step.
- ``records``: wall seconds of ``ensemble.train`` (digits CNN, subset masks) without and with
  ``record_examples`` (per-epoch correctness and loss of every member on every example),
  compilation included.

    python -m bench.layout --quick        # CPU, about a minute
    python -m bench.layout                # K up to 32, 8 members × 15 epochs
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

if not __package__:  # python bench/layout.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxcurv import data, ensemble, models  # noqa: E402
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.workflow import Timer, describe_device, time_call  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import Training, redefault, setting  # noqa: E402

SCAN_STEPS = 12


@dataclasses.dataclass(frozen=True)
class LayoutBench(B.Repeats, B.BenchConfig):
    """Settings of ``python -m bench.layout``."""

    repeats: int | None = B.remode(B.Repeats, "repeats", 10, 5)
    batch_size: int = redefault(Training, "batch_size", 64)
    ks: tuple[int, ...] | None = B.per_mode((2, 4, 8, 32), (2, 4), "steps: CNN member counts",
                                            metavar="K")
    mlp_ks: tuple[int, ...] | None = B.per_mode((8, 32), (8,), "steps: MLP member counts",
                                                metavar="K")
    models: int | None = B.per_mode(8, 4, "records: members, each on a random half of the "
                                    "digits", metavar="K", low=1, high=100_000)
    epochs: int | None = B.per_mode(15, 3, "records: epochs per member", low=1, high=100_000)
    records: bool = setting(True, "skip the records table", flag="--no-records", negate=True)
    conv_batch: int | None = B.per_mode(256, 32, "convs: batch of 32×32×3 images", low=1,
                                        high=1 << 16)
    conv_width: int = setting(16, "convs: the CNN's width (first convolution's channels)", low=1,
                              high=4096)

    def check(self) -> None:
        for label, ks in (("--ks", self.ks), ("--mlp-ks", self.mlp_ks)):
            if not ks or min(ks) < 1:
                raise ConfigError(f"{label} takes positive member counts, got {list(ks)}")


def _sgd_step(model, lr: float = 0.05):
    """step(params, x, y) -> params after one SGD step on the batch-mean cross-entropy."""

    def loss(params, x, y):
        return models.cross_entropy(model.apply({"params": params}, x), y).mean()

    def step(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads)

    return step


def _params(model, key, shape, k: int | None = None):
    """Parameters of one model, or of k models stacked on a leading axis."""
    if k is None:
        return models.init_variables(model, key, shape)["params"]
    keys = [jax.random.fold_in(key, i) for i in range(k)]
    return jax.tree.map(lambda *a: jnp.stack(a),
                        *[models.init_variables(model, kk, shape)["params"] for kk in keys])


def _layouts(model, x, y, key, ks, *, loops: bool) -> dict:
    """{label: (fn() -> arrays, member-steps per call)}; ``loops``: also lax.map and scan."""
    step = _sgd_step(model)
    one = _params(model, key, x.shape[1:])
    direct = jax.jit(step)
    out = {"direct": (lambda: direct(one, x, y), 1)}
    for k in ks:
        stacked = _params(model, key, x.shape[1:], k)
        vmapped = jax.jit(jax.vmap(step, in_axes=(0, None, None)))
        out[f"vmap K={k}"] = (lambda f=vmapped, p=stacked: f(p, x, y), k)
    if not loops:
        return out
    if ks:
        k = max(ks)
        stacked = _params(model, key, x.shape[1:], k)
        mapped = jax.jit(lambda p: jax.lax.map(lambda q: step(q, x, y), p))
        out[f"lax.map K={k}"] = (lambda: mapped(stacked), k)
    for unroll in (1, SCAN_STEPS):
        scanned = jax.jit(lambda p, u=unroll: jax.lax.scan(
            lambda q, _: (step(q, x, y), None), p, None, length=SCAN_STEPS, unroll=u)[0])
        label = f"scan {SCAN_STEPS} steps" + (" (unrolled)" if unroll > 1 else "")
        out[label] = (lambda f=scanned: f(one), SCAN_STEPS)
    return out


def steps(config, train, key) -> list[dict]:
    x = jnp.asarray(train.images[: config.batch_size])
    y = jnp.asarray(train.labels[: config.batch_size])
    rows = []
    for name, ks in (("cnn", config.ks), ("mlp", config.mlp_ks)):
        model = models.get_model(name, train.num_classes)
        layouts = _layouts(model, x, y, key, ks, loops=name == "cnn")
        for label, (fn, member_steps) in layouts.items():
            t = time_call(fn, repeats=config.repeats)
            rows.append({"model": name, "layout": label,
                         "ms_per_member_step": 1e3 * t.median / member_steps,
                         "compile+first_s": t.first, "load": t.load})
    B.print_table(f"ms per member-step, digits batch {config.batch_size} — {describe_device()}",
                  rows)
    return rows


def conv(stride: int) -> Callable:
    """conv(kernel (3, 3, C, F), images (B, H, W, C)) -> (B, H', W', F): NHWC "SAME"
    convolution with ``stride``, as ``nn.Conv`` in the ``cnn`` model computes it."""
    return lambda w, x: jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def strided_as_subsampled(w, x):
    """A stride-2 "SAME" 3×3 convolution of an even-sized input, as a stride-1 one sampled at
    odd positions: output i of the stride-2 one covers inputs 2i … 2i + 2 (padding (0, 1)),
    output 2i + 1 of the stride-1 one covers the same (padding (1, 1))."""
    return conv(1)(w, x)[:, 1::2, 1::2]


def _passes(fn, w, x, cotangent) -> dict[str, Callable]:
    """{pass: f() -> array} for y = fn(w, x): the forward pass and, from ⟨y, cotangent⟩ (linear,
    so XLA computes no forward for them), the input and the weight gradient. Every array is an
    argument of the compiled function (a captured one would be constant-folded at compile
    time)."""
    def product(ww, xx, ct):
        return jnp.vdot(fn(ww, xx), ct)

    forward = jax.jit(fn)
    d_input = jax.jit(jax.grad(product, argnums=1))
    d_weight = jax.jit(jax.grad(product, argnums=0))
    return {"forward": lambda: forward(w, x), "input gradient": lambda: d_input(w, x, cotangent),
            "weight gradient": lambda: d_weight(w, x, cotangent)}


def convs(config, key) -> list[dict]:
    width, b = config.conv_width, config.conv_batch
    k_x, k1, k2, k_c = jax.random.split(key, 4)
    x = jax.random.normal(k_x, (b, 32, 32, 3))
    w1 = jax.random.normal(k1, (3, 3, 3, width)) / 5.0
    h = jax.nn.gelu(conv(1)(w1, x))
    w2 = jax.random.normal(k2, (3, 3, width, 2 * width)) / (3.0 * width ** 0.5)
    if not jnp.allclose(conv(2)(w2, h), strided_as_subsampled(w2, h), rtol=1e-4, atol=1e-4):
        raise AssertionError("the subsampled stride-1 convolution differs from the stride-2 one")
    layers = {f"conv1 3→{width}, stride 1": (conv(1), w1, x),
              f"conv2 {width}→{2 * width}, stride 2": (conv(2), w2, h),
              "conv2 as stride 1 + subsample": (strided_as_subsampled, w2, h)}
    rows = []
    for layer, (fn, w, inputs) in layers.items():
        cotangent = jax.random.normal(k_c, jax.eval_shape(fn, w, inputs).shape)
        ms = {name: 1e3 * time_call(call, repeats=config.repeats).median
              for name, call in _passes(fn, w, inputs, cotangent).items()}
        rows += [{"layer": layer, "pass": name, "ms": t, "relative_to_forward": t / ms["forward"]}
                 for name, t in ms.items()]
    B.print_table(f"convolutions of the CNN, batch {b} of 32×32×3 — {describe_device()}", rows)
    return rows


def conv_headlines(rows: list[dict]) -> dict[str, dict]:
    """docs/measurements.md's figures of the convs table: each pass in milliseconds (median of
    the repeats), with its time relative to the same convolution's forward pass."""
    from jaxcurv.workflow.experiment import headline

    return {f"convs: {r['layer']}, {r['pass']}": headline(
        r["ms"], f"{r['pass']} of {r['layer']} ({r['relative_to_forward']:.2f}× its forward "
        "pass)", unit="ms", over="median of the repeats") for r in rows}


def records(config, train, key) -> list[dict]:
    model = models.get_model("cnn", train.num_classes)
    masks = data.subset_masks(len(train), config.models, fraction=0.5, seed=config.seed)
    rows = []
    for record in (False, True):
        timer = Timer()
        ensemble.train(model, train, masks, key, epochs=config.epochs, batch_size=64,
                       record_examples=record)
        rows.append({"members": config.models, "epochs": config.epochs, "record_examples": record,
                     "wall_s_incl_compile": timer.elapsed()})
    B.print_table(f"ensemble.train, digits CNN — {describe_device()}", rows)
    return rows


def main(config: LayoutBench) -> None:
    train = data.load("digits", split="train")
    key = jax.random.PRNGKey(config.seed)
    timer = Timer()
    result = {"steps": steps(config, train, jax.random.fold_in(key, 0)),
              "convs": convs(config, jax.random.fold_in(key, 2))}
    if config.records:
        result["records"] = records(config, train, jax.random.fold_in(key, 1))
    result["wall_s"] = timer.elapsed()
    result["headlines"] = conv_headlines(result["convs"])
    B.write_results(config, "layout", result)


if __name__ == "__main__":
    B.cli(LayoutBench, main, name="layout", description=__doc__)
