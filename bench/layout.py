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

import time

import jax
import jax.numpy as jnp

from jaxcurv import data, ensemble, models
from jaxcurv.workflow import describe_device, time_call

if __package__:  # python -m bench.layout
    from bench import _common as C
else:  # python bench/layout.py: this folder is sys.path[0]
    import _common as C

SCAN_STEPS = 12


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


def steps(args, train, key) -> list[dict]:
    x, y = jnp.asarray(train.images[: args.batch]), jnp.asarray(train.labels[: args.batch])
    rows = []
    for name, ks in (("cnn", args.ks), ("mlp", args.mlp_ks)):
        model = models.get_model(name, train.num_classes)
        layouts = _layouts(model, x, y, key, ks, loops=name == "cnn")
        for label, (fn, member_steps) in layouts.items():
            t = time_call(fn, repeats=args.repeats)
            rows.append({"model": name, "layout": label,
                         "ms_per_member_step": 1e3 * t.median / member_steps,
                         "compile+first_s": t.first, "load": t.load})
    C.print_table(f"ms per member-step, digits batch {args.batch} — {describe_device()}", rows)
    return rows


def records(args, train, key) -> list[dict]:
    model = models.get_model("cnn", train.num_classes)
    masks = data.subset_masks(len(train), args.members, fraction=0.5, seed=args.seed)
    rows = []
    for record in (False, True):
        start = time.perf_counter()
        ensemble.train(model, train, masks, key, epochs=args.epochs, batch_size=64,
                       record_examples=record)
        rows.append({"members": args.members, "epochs": args.epochs, "record_examples": record,
                     "wall_s_incl_compile": time.perf_counter() - start})
    C.print_table(f"ensemble.train, digits CNN — {describe_device()}", rows)
    return rows


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ks", default=None, help="CNN member counts (quick 2,4; full 2,4,8,32)")
    p.add_argument("--mlp-ks", default=None, help="MLP member counts (quick 8; full 8,32)")
    p.add_argument("--members", type=int, default=None, help="records: members (quick 4, full 8)")
    p.add_argument("--epochs", type=int, default=None, help="records: epochs (quick 3, full 15)")
    p.add_argument("--no-records", dest="records", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.ks = [int(v) for v in (args.ks or ("2,4" if args.quick else "2,4,8,32")).split(",")]
    args.mlp_ks = [int(v) for v in (args.mlp_ks or ("8" if args.quick else "8,32")).split(",")]
    args.members = args.members or (4 if args.quick else 8)
    args.epochs = args.epochs or (3 if args.quick else 15)
    args.repeats = args.repeats or (5 if args.quick else 10)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    train = data.load("digits", split="train")
    key = jax.random.PRNGKey(args.seed)
    start = time.perf_counter()
    result = {"config": vars(args), "steps": steps(args, train, jax.random.fold_in(key, 0))}
    if args.records:
        result["records"] = records(args, train, jax.random.fold_in(key, 1))
    result["wall_s"] = time.perf_counter() - start
    C.write_json("layout" + (f"_{args.tag}" if args.tag else ("_quick" if args.quick else "")),
                 result, out=args.out)


if __name__ == "__main__":
    main()
