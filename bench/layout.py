"""Benchmark: the cost of a training step under each layout of members and steps, and of
per-epoch records — what decides ``ensemble.train``'s defaults on CPU.

- ``steps``: milliseconds per member-step (gradient of the batch-mean loss and an SGD update,
  jitted) on one digits batch, for one model called directly, K members under ``vmap``, K members
  under ``lax.map``, 12 steps of one model in a ``lax.scan`` (rolled and fully unrolled), and the
  MLP directly and under ``vmap``. XLA:CPU runs convolutions inside loop bodies slowly and turns
  a vmap over conv weights into grouped convolutions; this table shows by how much.
- ``records``: wall seconds of ``ensemble.train`` (digits CNN, subset masks) without and with
  ``record_examples`` (per-epoch correctness and loss of every member on every example),
  compilation included.

    python -m bench.layout --quick        # CPU, about a minute
    python -m bench.layout                # K up to 32, 8 members × 15 epochs
"""

from __future__ import annotations

import dataclasses
import sys
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
    result = {"steps": steps(config, train, jax.random.fold_in(key, 0))}
    if config.records:
        result["records"] = records(config, train, jax.random.fold_in(key, 1))
    result["wall_s"] = timer.elapsed()
    B.write_results(config, "layout", result)


if __name__ == "__main__":
    B.cli(LayoutBench, main, name="layout", description=__doc__)
